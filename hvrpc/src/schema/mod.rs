//! Schemas: what serde writes for a method's arguments and result, as data — the basis of
//! version skew handling (methods compared by name, values translated between two releases of
//! a type) and of reflection.
//!
//! A schema is a graph of [`Node`]s in one flat vector (children are indices, so decoding a
//! schema from a peer never recurses); named containers — structs, enums — may refer to
//! themselves (recursive types). The graph is *traced* from the types' `Deserialize`
//! implementations (`trace`), so it is exactly what serde does, attributes (`rename`,
//! `skip`, `default`, `transparent`, `with`, `from`) and all, not what the source text says.
//!
//! | part | owns |
//! |---|---|
//! | `trace` | deriving the graph of a type from its `Deserialize` |
//! | `hash` | the canonical form and its hash (specified in `docs/PROTOCOL.md`) |
//! | `compat` | whether a reader can read what a writer writes, and where not |
//! | `translate` | reading a value written in one shape as a type of another |

pub(crate) mod compat;
#[doc(hidden)]
pub mod fuzz;
pub(crate) mod hash;
mod spec;
pub(crate) mod trace;
pub(crate) mod translate;

pub use spec::ServiceSpec;
pub(crate) use spec::method_desc;
#[doc(hidden)]
pub use spec::{MethodDef, Reading, SpecCell, TraceFn, retranslate, trace_method};
#[doc(hidden)]
pub use trace::Tracer;

use serde::{Deserialize, Serialize};

/// One node of a schema graph: the shape serde gives one type. Children are indices into the
/// graph's node list.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Node {
    /// `bool`.
    Bool,
    /// `i8`.
    I8,
    /// `i16`.
    I16,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `i128`.
    I128,
    /// `u8`.
    U8,
    /// `u16`.
    U16,
    /// `u32`.
    U32,
    /// `u64`.
    U64,
    /// `u128`.
    U128,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
    /// `char`.
    Char,
    /// A string.
    Str,
    /// A byte string (`Vec<u8>`, `Bytes`, `serde_bytes`: the same bytes on the wire).
    Bytes,
    /// `()`.
    Unit,
    /// `Option<T>`.
    Option(u32),
    /// A sequence: `Vec<T>`, a set, a slice.
    Seq(u32),
    /// A map.
    Map {
        /// The keys' node.
        key: u32,
        /// The values' node.
        value: u32,
    },
    /// A tuple, or a fixed-size array (`[T; N]` is a tuple of `N` elements to serde).
    Tuple(Vec<u32>),
    /// A unit struct.
    UnitStruct {
        /// Its name, as serde gives it.
        name: String,
    },
    /// A newtype struct `struct N(T)`.
    Newtype {
        /// Its name.
        name: String,
        /// The inner node.
        inner: u32,
    },
    /// A tuple struct.
    TupleStruct {
        /// Its name.
        name: String,
        /// The fields' nodes, in order.
        fields: Vec<u32>,
    },
    /// A struct with named fields.
    Struct {
        /// Its name.
        name: String,
        /// The fields, in the order serde writes them.
        fields: Vec<Field>,
    },
    /// An enum.
    Enum {
        /// Its name.
        name: String,
        /// The variants, by index.
        variants: Vec<Variant>,
    },
}

/// A struct field.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Field {
    /// Its name, as serde gives it.
    pub name: String,
    /// Its node.
    pub node: u32,
    /// Whether a reader fills it in when the writer does not send it (`Option` fields, and
    /// fields with `#[serde(default)]`).
    pub optional: bool,
}

/// An enum variant.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Variant {
    /// Its name, as serde gives it.
    pub name: String,
    /// What it holds.
    pub shape: VariantShape,
}

/// What an enum variant holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VariantShape {
    /// Nothing.
    Unit,
    /// One value.
    Newtype(u32),
    /// Several, by position.
    Tuple(Vec<u32>),
    /// Several, by name.
    Struct(Vec<Field>),
}

/// A schema graph: its nodes, and the index of the one a schema starts from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Graph {
    /// Every node.
    pub nodes: Vec<Node>,
}

impl Graph {
    /// The node at `i`, if it exists.
    pub fn node(&self, i: u32) -> Option<&Node> {
        self.nodes.get(i as usize)
    }

    /// Checks that every child index points into the graph; a graph from a peer must pass
    /// this before use.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.nodes.len() as u64;
        let ok = |i: &u32| u64::from(*i) < n;
        let field_ok = |f: &Field| ok(&f.node);
        for (i, node) in self.nodes.iter().enumerate() {
            let fine = match node {
                Node::Option(c) | Node::Seq(c) => ok(c),
                Node::Map { key, value } => ok(key) && ok(value),
                Node::Tuple(cs) | Node::TupleStruct { fields: cs, .. } => cs.iter().all(ok),
                Node::Newtype { inner, .. } => ok(inner),
                Node::Struct { fields, .. } => fields.iter().all(field_ok),
                Node::Enum { variants, .. } => variants.iter().all(|v| match &v.shape {
                    VariantShape::Unit => true,
                    VariantShape::Newtype(c) => ok(c),
                    VariantShape::Tuple(cs) => cs.iter().all(ok),
                    VariantShape::Struct(fs) => fs.iter().all(field_ok),
                }),
                _ => true,
            };
            if !fine {
                return Err(format!(
                    "schema node {i} refers to a node that does not exist"
                ));
            }
            // Fields and variants are matched by name: serde never repeats one.
            let repeated = match node {
                Node::Struct { fields, .. } => repeats(fields.iter().map(|f| &f.name)),
                Node::Enum { variants, .. } => {
                    repeats(variants.iter().map(|v| &v.name))
                        || variants.iter().any(|v| match &v.shape {
                            VariantShape::Struct(fs) => repeats(fs.iter().map(|f| &f.name)),
                            _ => false,
                        })
                }
                _ => false,
            };
            if repeated {
                return Err(format!("schema node {i} repeats a field or variant name"));
            }
        }
        Ok(())
    }
}

/// Whether a name occurs twice.
fn repeats<'a>(names: impl Iterator<Item = &'a String>) -> bool {
    let mut seen = std::collections::HashSet::new();
    names.into_iter().any(|n| !seen.insert(n))
}

/// How a method exchanges values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MethodKind {
    /// One request, one response.
    Unary,
    /// One request, a stream of items back.
    ServerStream,
    /// One request followed by a stream of input items, one response. The input's item type
    /// is the method's last argument (in its schema and hash); the request carries the others.
    ClientStream,
    /// A request and a stream of input items, a stream of items back, independently.
    BidiStream,
}

impl MethodKind {
    /// Its number in the handshake (`docs/PROTOCOL.md` §2).
    pub fn code(self) -> u32 {
        match self {
            MethodKind::Unary => 0,
            MethodKind::ServerStream => 1,
            MethodKind::ClientStream => 2,
            MethodKind::BidiStream => 3,
        }
    }

    /// The kind numbered `code`, if this side knows it.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(MethodKind::Unary),
            1 => Some(MethodKind::ServerStream),
            2 => Some(MethodKind::ClientStream),
            3 => Some(MethodKind::BidiStream),
            _ => None,
        }
    }

    /// How messages name it.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            MethodKind::Unary => "a unary method",
            MethodKind::ServerStream => "a server-streaming method",
            MethodKind::ClientStream => "a client-streaming method",
            MethodKind::BidiStream => "a bidirectional-streaming method",
        }
    }

    /// Whether the caller sends a stream of input items.
    pub fn takes_input(self) -> bool {
        matches!(self, MethodKind::ClientStream | MethodKind::BidiStream)
    }

    /// Whether the result is a stream of items.
    pub fn streams_result(self) -> bool {
        matches!(self, MethodKind::ServerStream | MethodKind::BidiStream)
    }
}

/// A method argument.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Arg {
    /// Its name in the service definition.
    pub name: String,
    /// Its node.
    pub node: u32,
}

/// A method's schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodSchema {
    /// Its name.
    pub name: String,
    /// Its doc comment, if the definition has one.
    pub doc: String,
    /// How it exchanges values.
    pub kind: MethodKind,
    /// Its arguments, in order (on the wire: a tuple of them).
    pub args: Vec<Arg>,
    /// Its result: the value of a unary method (`Result<T, E>` included), the item of a
    /// stream.
    pub result: u32,
}

impl MethodSchema {
    /// Its arguments' nodes, in order.
    pub fn arg_nodes(&self) -> Vec<u32> {
        self.args.iter().map(|a| a.node).collect()
    }
}

/// A service's schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSchema {
    /// Its name.
    pub name: String,
    /// Its doc comment.
    pub doc: String,
    /// Its methods, in the order of the definition.
    pub methods: Vec<MethodSchema>,
    /// The nodes its methods refer to.
    pub graph: Graph,
}

impl ServiceSchema {
    /// A method by name.
    pub fn method(&self, name: &str) -> Option<&MethodSchema> {
        self.methods.iter().find(|m| m.name == name)
    }

    /// Checks a schema from a peer: every node index in range.
    pub(crate) fn validate(&self) -> Result<(), String> {
        self.graph.validate()?;
        let n = self.graph.nodes.len() as u64;
        for m in &self.methods {
            if u64::from(m.result) >= n || m.args.iter().any(|a| u64::from(a.node) >= n) {
                return Err(format!(
                    "method {} refers to a node that does not exist",
                    m.name
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod edges;
#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod vectors;
