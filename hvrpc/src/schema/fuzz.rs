//! The schema parts, for the fuzz targets in `hvrpc/fuzz` (which build against this crate from
//! outside it). Not a public API: it changes without notice.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{Graph, compat, hash, trace::Tracer, translate};

/// Traces `T` into a graph of its own; returns the graph and `T`'s node.
pub fn trace<T: DeserializeOwned>() -> Result<(Graph, u32), String> {
    let mut t = Tracer::default();
    let root = t.trace::<T>()?;
    Ok((t.into_graph(), root))
}

/// The hash of node `root` (docs/PROTOCOL.md §6.3).
pub fn hash(graph: &Graph, root: u32) -> Result<u64, String> {
    hash::hash(graph, root)
}

/// Whether a reader of `reader`'s node `r` can read what `writer`'s node `w` writes.
pub fn check(writer: &Graph, w: u32, reader: &Graph, r: u32) -> Result<(), String> {
    compat::check(writer, w, reader, r)
        .map_err(|m| format!("{}: {} read, {} written", m.path, m.reader, m.writer))
}

/// Reads `bytes`, written as node `root` of `graph`, as a `T`.
pub fn translate<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
    graph: &Graph,
    root: u32,
) -> Result<T, String> {
    translate::decode(bytes, graph, root)
}
