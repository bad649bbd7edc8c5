//! A service's description as `#[hvrpc::service]` generates it ([`MethodDef`]), traced once per
//! process into a [`ServiceSpec`]: its schema, and what the handshake announces of it.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::trace::Tracer;
use super::{Arg, Graph, MethodKind, MethodSchema, Node, ServiceSchema, hash, translate};
use crate::protocol::{MethodDesc, ServiceDesc};

/// A method as `#[hvrpc::service]` describes it. Not a public API.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct MethodDef {
    /// Its name.
    pub name: &'static str,
    /// Its doc comment.
    pub doc: &'static str,
    /// How it exchanges values.
    pub kind: MethodKind,
    /// Its arguments' names.
    pub args: &'static [&'static str],
    /// Traces its argument tuple and its result (a stream's item) into the tracer.
    pub trace: TraceFn,
}

/// Traces a method's argument nodes and its result node. Not a public API.
#[doc(hidden)]
pub type TraceFn = fn(&mut Tracer) -> Result<(Vec<u32>, u32), String>;

impl std::fmt::Debug for MethodDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MethodDef")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Traces a method whose arguments are the tuple `A` and whose result is `R`. Not a public API.
#[doc(hidden)]
pub fn trace_method<A: DeserializeOwned, R: DeserializeOwned>(
    t: &mut Tracer,
) -> Result<(Vec<u32>, u32), String> {
    let args = t.trace::<A>()?;
    let args = match t.node(args) {
        Some(Node::Tuple(items)) => items.clone(),
        // No arguments: `()`.
        Some(Node::Unit) => Vec::new(),
        _ => return Err("the arguments are not a tuple".into()),
    };
    let result = t.trace::<R>()?;
    Ok((args, result))
}

/// What the reader of a value needs to read one written in another release's shape: the
/// writer's schema and the node the value starts at.
#[doc(hidden)]
#[derive(Debug)]
pub struct Reading {
    pub(crate) graph: Arc<Graph>,
    pub(crate) root: u32,
}

impl Reading {
    /// Reads a `T` from `bytes`, written as the writer's node.
    pub(crate) fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String> {
        translate::decode(bytes, &self.graph, self.root)
    }
}

/// Re-encodes arguments written in the peer's shape in this side's (a server's half of reading
/// a request across releases). Not a public API.
#[doc(hidden)]
pub fn retranslate<T: DeserializeOwned + Serialize>(
    bytes: &[u8],
    reading: &Reading,
) -> Result<Bytes, String> {
    let value: T = reading.decode(bytes)?;
    postcard::to_allocvec(&value)
        .map(Bytes::from)
        .map_err(|e| e.to_string())
}

/// A service traced: its schema, and its methods as the handshake announces them.
#[derive(Debug)]
pub struct ServiceSpec {
    pub(crate) schema: ServiceSchema,
    pub(crate) desc: ServiceDesc,
}

impl ServiceSpec {
    /// Traces the methods of service `name`.
    pub(crate) fn build(name: &str, doc: &str, defs: &[MethodDef]) -> Result<Self, String> {
        let mut t = Tracer::default();
        let mut methods = Vec::with_capacity(defs.len());
        let mut roots = Vec::with_capacity(defs.len());
        for d in defs {
            let (args, result) =
                (d.trace)(&mut t).map_err(|e| format!("{name}.{}: {e}", d.name))?;
            if args.len() != d.args.len() {
                return Err(format!(
                    "{name}.{}: the arguments do not trace as a tuple",
                    d.name
                ));
            }
            roots.push((args.clone(), result));
            methods.push(MethodSchema {
                name: d.name.to_owned(),
                doc: d.doc.to_owned(),
                kind: d.kind,
                args: d
                    .args
                    .iter()
                    .zip(args)
                    .map(|(n, node)| Arg {
                        name: (*n).to_owned(),
                        node,
                    })
                    .collect(),
                result,
            });
        }
        let graph = t.into_graph();
        let mut descs = Vec::with_capacity(methods.len());
        for m in &methods {
            descs.push(method_desc(&graph, m).map_err(|e| format!("{name}.{}: {e}", m.name))?);
        }
        Ok(Self {
            schema: ServiceSchema {
                name: name.to_owned(),
                doc: doc.to_owned(),
                methods,
                graph,
            },
            desc: ServiceDesc {
                name: name.to_owned(),
                strict: false,
                methods: descs,
            },
        })
    }

    /// The service's schema.
    pub fn schema(&self) -> &ServiceSchema {
        &self.schema
    }

    /// The service as the handshake announces it.
    pub fn desc(&self) -> &ServiceDesc {
        &self.desc
    }
}

/// A method as announced: its name, kind and the hashes of its argument tuple and result.
pub(crate) fn method_desc(graph: &Graph, m: &MethodSchema) -> Result<MethodDesc, String> {
    let args: Vec<u32> = m.args.iter().map(|a| a.node).collect();
    Ok(MethodDesc {
        name: m.name.clone(),
        kind: m.kind.code(),
        args: hash::hash_tuple(graph, &args)?,
        result: hash::hash(graph, m.result)?,
    })
}

/// Where generated code keeps its service's spec: traced on first use, once per process. Not a
/// public API.
#[doc(hidden)]
#[derive(Debug)]
pub struct SpecCell(OnceLock<Result<Arc<ServiceSpec>, Arc<str>>>);

impl SpecCell {
    /// An empty cell.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Self(OnceLock::new())
    }

    /// The spec, traced on first use.
    pub fn get(
        &self,
        name: &str,
        doc: &str,
        defs: impl FnOnce() -> Vec<MethodDef>,
    ) -> Result<Arc<ServiceSpec>, Arc<str>> {
        self.0
            .get_or_init(|| {
                ServiceSpec::build(name, doc, &defs())
                    .map(Arc::new)
                    .map_err(|e| Arc::from(format!("cannot describe service {e}")))
            })
            .clone()
    }
}
