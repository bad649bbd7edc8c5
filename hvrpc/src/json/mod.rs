//! JSON ⇄ postcard through a schema: how tools without the Rust types (`hvrpc call`, scripts,
//! other languages' debuggers) read and write hvrpc values. Behind the `json` feature.
//!
//! The mapping follows serde_json's for the same types, so that what a typed program prints
//! with `serde_json` is what this reads and writes, with three exceptions where serde_json's
//! choice would lose data or cannot be read back without the type:
//!
//! | schema node | JSON |
//! |---|---|
//! | bool | `true` / `false` |
//! | integers up to 64 bits | numbers, exact (`u64::MAX` is `18446744073709551615`, not rounded) |
//! | `i128`, `u128` | numbers when they fit 64 bits, else decimal strings (`"340282366920938463463374607431768211455"`) |
//! | `f32`, `f64` | numbers; NaN and infinities as the strings `"NaN"`, `"inf"`, `"-inf"` |
//! | char, string | strings |
//! | bytes | **base64** strings (standard alphabet, padded) — serde_json writes arrays of numbers |
//! | unit, unit struct | `null` |
//! | `Option` | `null` for none, the value for some — except when the value itself can be `null` (`Option<Option<T>>`, `Option<()>`): then `{"Some": value}` |
//! | sequence, tuple, tuple struct | arrays |
//! | newtype struct | its inner value |
//! | map with string or char keys | an object, its entries in the order the value has them (so that they read back byte for byte) |
//! | map with other keys | **an array of `[key, value]` pairs** — JSON objects only have string keys |
//! | struct | an object by field name, in field order (reading: any order; unknown fields refused; a missing `Option` field is `None`) |
//! | enum | a unit variant as its name (`"File"`), any other as `{"Name": value}` (newtype: the value; tuple: an array; struct: an object) |
//!
//! Types whose serde implementations depend on the format (`is_human_readable`) appear in
//! their compact form, the one postcard carries: `IpAddr` as `{"V4": [10, 0, 0, 1]}` where
//! serde_json would write `"10.0.0.1"`, `SocketAddr`, `Duration` as `{"secs": …, "nanos": …}`
//! (that one is the same), and other crates' types likewise (UUIDs as bytes, for instance).
//!
//! Both directions check [`Limits`] (nesting, elements, total size) and never panic on any
//! input; a mismatch names the JSON path (`.args.interval_ms: expected u32, got "fast"`).

#[cfg(test)]
mod generated;
mod read;
#[cfg(test)]
mod tests;
mod write;

use std::fmt;

use crate::schema::{Graph, Node};

pub use read::to_json;
pub use write::from_json;

/// Bounds on what a conversion may build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// How deeply values may nest.
    pub max_depth: usize,
    /// Elements of one sequence or map, at most.
    pub max_items: usize,
    /// Bytes of output (postcard or JSON text, roughly), at most.
    pub max_bytes: usize,
}

impl Default for Limits {
    /// Depth 128, 16 Mi elements per sequence, 64 MiB.
    fn default() -> Self {
        Self {
            max_depth: 128,
            max_items: 16 << 20,
            max_bytes: 64 << 20,
        }
    }
}

/// Why a conversion failed: where (a JSON path such as `.args.entries[3].name`) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonError {
    /// The JSON path of the value at fault (empty: the root).
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for JsonError {}

/// Whether the JSON of a value of node `i` can be `null` (so that an `Option` around it must
/// be written `{"Some": …}`).
fn nullable(graph: &Graph, i: u32, depth: usize) -> bool {
    if depth > 32 {
        return false;
    }
    match graph.node(i) {
        Some(Node::Unit | Node::UnitStruct { .. } | Node::Option(_)) => true,
        Some(Node::Newtype { inner, .. }) => nullable(graph, *inner, depth + 1),
        _ => false,
    }
}

/// Whether map keys of node `i` are written as JSON object keys.
fn string_keys(graph: &Graph, i: u32) -> bool {
    matches!(graph.node(i), Some(Node::Str | Node::Char))
}

/// The name of a node's kind in messages.
fn kind(graph: &Graph, i: u32) -> String {
    crate::schema::compat::kind(graph, i)
}
