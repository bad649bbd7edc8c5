//! The canonical form of a schema and its hash (`docs/PROTOCOL.md` §6 says it byte by byte).
//!
//! The canonical form is structural: it holds what decides the bytes on the wire and how a
//! reader matches them — node kinds, field and variant names, in order — and not what does not:
//! the names of structs and enums, whether a field is optional, how the graph shares nodes.
//! Two types that serde writes alike and whose fields are named alike hash alike, whichever
//! crate, module or compiler they come from.
//!
//! Invariants (each has a test below):
//!
//! 1. Equal structure, equal hash; any difference in a kind, a name or an order, a different
//!    hash (up to FNV collisions).
//! 2. Recursion is written as a reference to the enclosing container by distance, so a
//!    recursive type has a finite form.
//! 3. A graph from a peer cannot make this loop, recurse without bound, or grow without bound:
//!    depth and size are capped, with an error.

use super::{Graph, Node, VariantShape};

/// Deeper than this, a schema is refused.
pub(crate) const MAX_DEPTH: usize = 128;
/// A canonical form longer than this is refused.
const MAX_LEN: usize = 1 << 20;

/// FNV-1a, 64 bit.
pub(crate) fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The reference to an enclosing container.
const REF: u8 = 0xff;

struct Canon<'g> {
    graph: &'g Graph,
    out: Vec<u8>,
    /// Containers being written, outermost first.
    stack: Vec<u32>,
}

impl Canon<'_> {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.out.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.out.push(v as u8);
    }

    fn name(&mut self, s: &str) {
        self.varint(s.len() as u64);
        self.out.extend_from_slice(s.as_bytes());
    }

    fn node(&mut self, i: u32, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("the schema nests deeper than {MAX_DEPTH}"));
        }
        if self.out.len() > MAX_LEN {
            return Err(format!(
                "the schema's canonical form is over {MAX_LEN} bytes"
            ));
        }
        let node = self
            .graph
            .node(i)
            .ok_or_else(|| format!("schema node {i} does not exist"))?;
        let container = matches!(
            node,
            Node::UnitStruct { .. }
                | Node::Newtype { .. }
                | Node::TupleStruct { .. }
                | Node::Struct { .. }
                | Node::Enum { .. }
        );
        if container && let Some(pos) = self.stack.iter().rposition(|&s| s == i) {
            self.out.push(REF);
            self.varint((self.stack.len() - pos) as u64);
            return Ok(());
        }
        self.out.push(tag(node));
        if container {
            self.stack.push(i);
        }
        let d = depth + 1;
        match node {
            Node::Option(c) | Node::Seq(c) => self.node(*c, d)?,
            Node::Map { key, value } => {
                self.node(*key, d)?;
                self.node(*value, d)?;
            }
            Node::Tuple(cs) | Node::TupleStruct { fields: cs, .. } => self.list(cs, d)?,
            Node::Newtype { inner, .. } => self.node(*inner, d)?,
            Node::Struct { fields, .. } => {
                self.varint(fields.len() as u64);
                for f in fields {
                    self.name(&f.name);
                    self.node(f.node, d)?;
                }
            }
            Node::Enum { variants, .. } => {
                self.varint(variants.len() as u64);
                for v in variants {
                    self.name(&v.name);
                    match &v.shape {
                        VariantShape::Unit => self.out.push(0),
                        VariantShape::Newtype(c) => {
                            self.out.push(1);
                            self.node(*c, d)?;
                        }
                        VariantShape::Tuple(cs) => {
                            self.out.push(2);
                            self.list(cs, d)?;
                        }
                        VariantShape::Struct(fields) => {
                            self.out.push(3);
                            self.varint(fields.len() as u64);
                            for f in fields {
                                self.name(&f.name);
                                self.node(f.node, d)?;
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        if container {
            self.stack.pop();
        }
        Ok(())
    }

    fn list(&mut self, items: &[u32], depth: usize) -> Result<(), String> {
        self.varint(items.len() as u64);
        for &c in items {
            self.node(c, depth)?;
        }
        Ok(())
    }
}

/// The kind byte of a node: its index in [`Node`].
fn tag(node: &Node) -> u8 {
    match node {
        Node::Bool => 0,
        Node::I8 => 1,
        Node::I16 => 2,
        Node::I32 => 3,
        Node::I64 => 4,
        Node::I128 => 5,
        Node::U8 => 6,
        Node::U16 => 7,
        Node::U32 => 8,
        Node::U64 => 9,
        Node::U128 => 10,
        Node::F32 => 11,
        Node::F64 => 12,
        Node::Char => 13,
        Node::Str => 14,
        Node::Bytes => 15,
        Node::Unit => 16,
        Node::Option(_) => 17,
        Node::Seq(_) => 18,
        Node::Map { .. } => 19,
        Node::Tuple(_) => 20,
        Node::UnitStruct { .. } => 21,
        Node::Newtype { .. } => 22,
        Node::TupleStruct { .. } => 23,
        Node::Struct { .. } => 24,
        Node::Enum { .. } => 25,
    }
}

/// The canonical form of node `root` of `graph`.
pub(crate) fn canonical(graph: &Graph, root: u32) -> Result<Vec<u8>, String> {
    let mut c = Canon {
        graph,
        out: Vec::new(),
        stack: Vec::new(),
    };
    c.node(root, 0)?;
    Ok(c.out)
}

/// The canonical form of the tuple of `items` (a method's arguments).
pub(crate) fn canonical_tuple(graph: &Graph, items: &[u32]) -> Result<Vec<u8>, String> {
    let mut c = Canon {
        graph,
        out: vec![20],
        stack: Vec::new(),
    };
    c.list(items, 1)?;
    Ok(c.out)
}

/// The hash of node `root`.
pub(crate) fn hash(graph: &Graph, root: u32) -> Result<u64, String> {
    canonical(graph, root).map(|c| fnv1a(&c))
}

/// The hash of the tuple of `items`.
pub(crate) fn hash_tuple(graph: &Graph, items: &[u32]) -> Result<u64, String> {
    canonical_tuple(graph, items).map(|c| fnv1a(&c))
}
