//! Compatibility: can a reader of one shape read what a writer of another writes?
//!
//! The changes a service may make between releases (`docs/PROTOCOL.md` §6), seen from the
//! reader:
//!
//! | change | compatible |
//! |---|---|
//! | a struct field added by the writer | yes: the reader skips it |
//! | a field the reader has and the writer lacks | only if the reader fills it in (`Option`, `#[serde(default)]`) |
//! | fields reordered | yes: they are matched by name |
//! | an enum variant the reader lacks | yes, until one is sent: that call fails, naming the variant |
//! | a newtype wrapped around a type, or unwrapped | yes: the bytes are the same |
//! | an integer widened (`u32` → `u64`, `i8` → `i64`; same signedness) | yes; narrowed, no |
//! | a field's, element's or variant's type changed | no |
//! | a tuple's length changed | no |
//!
//! Invariants (each has a test below):
//!
//! 1. The answer is the same as translating would give: a value the writer can write either
//!    translates, or is stopped here (or is an enum variant the reader lacks).
//! 2. An incompatibility names its path (`.total_bytes`, `[item]`, `.Some`, `(arg)`) and the two
//!    kinds.
//! 3. Recursive types are checked without looping; a graph from a peer cannot make this recurse
//!    without bound.

use std::collections::HashSet;

use super::hash::MAX_DEPTH;
use super::{Field, Graph, Node, VariantShape};

/// Why a reader cannot read what a writer writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mismatch {
    /// Where, from the value's root: `.field`, `[item]`, `.Variant`, `{key}`, `{value}`.
    pub(crate) path: String,
    /// What the reader has there.
    pub(crate) reader: String,
    /// What the writer has there.
    pub(crate) writer: String,
}

/// A node's kind, for messages: `u64`, `string`, `struct Memory`, `Option`, …
pub(crate) fn kind(graph: &Graph, i: u32) -> String {
    match graph.node(i) {
        None => "nothing".into(),
        Some(n) => match n {
            Node::Bool => "bool".into(),
            Node::I8 => "i8".into(),
            Node::I16 => "i16".into(),
            Node::I32 => "i32".into(),
            Node::I64 => "i64".into(),
            Node::I128 => "i128".into(),
            Node::U8 => "u8".into(),
            Node::U16 => "u16".into(),
            Node::U32 => "u32".into(),
            Node::U64 => "u64".into(),
            Node::U128 => "u128".into(),
            Node::F32 => "f32".into(),
            Node::F64 => "f64".into(),
            Node::Char => "char".into(),
            Node::Str => "string".into(),
            Node::Bytes => "bytes".into(),
            Node::Unit => "()".into(),
            Node::Option(_) => "an Option".into(),
            Node::Seq(_) => "a sequence".into(),
            Node::Map { .. } => "a map".into(),
            Node::Tuple(cs) => format!("a tuple of {}", cs.len()),
            Node::UnitStruct { name } => format!("unit struct {name}"),
            Node::Newtype { name, .. } => format!("newtype {name}"),
            Node::TupleStruct { name, .. } => format!("tuple struct {name}"),
            Node::Struct { name, .. } => format!("struct {name}"),
            Node::Enum { name, .. } => format!("enum {name}"),
        },
    }
}

struct Check<'a> {
    w: &'a Graph,
    r: &'a Graph,
    /// Pairs checked, or being checked further out.
    assumed: HashSet<(u32, u32)>,
}

impl Check<'_> {
    fn fail(&self, path: &str, w: u32, r: u32) -> Result<(), Mismatch> {
        Err(Mismatch {
            path: path.to_owned(),
            reader: kind(self.r, r),
            writer: kind(self.w, w),
        })
    }

    fn check(&mut self, w: u32, r: u32, path: &str, depth: usize) -> Result<(), Mismatch> {
        if depth > MAX_DEPTH {
            return Err(Mismatch {
                path: path.to_owned(),
                reader: format!("nested deeper than {MAX_DEPTH}"),
                writer: "the same".into(),
            });
        }
        // A pair met before is either being checked further out (a recursive type: assumed
        // compatible, which the outer check decides) or was checked already (the whole check
        // stops at the first mismatch, so it passed). Either way once per pair: the check is
        // linear in the graphs, however much they share.
        if !self.assumed.insert((w, r)) {
            return Ok(());
        }
        self.check_nodes(w, r, path, depth + 1)
    }

    fn check_nodes(&mut self, w: u32, r: u32, path: &str, d: usize) -> Result<(), Mismatch> {
        let (Some(wn), Some(rn)) = (self.w.node(w), self.r.node(r)) else {
            return self.fail(path, w, r);
        };
        match (wn, rn) {
            // A newtype is its inner value on the wire: wrapping or unwrapping one is fine.
            (Node::Newtype { inner, .. }, other) if !matches!(other, Node::Newtype { .. }) => {
                self.check(*inner, r, path, d)
            }
            (other, Node::Newtype { inner, .. }) if !matches!(other, Node::Newtype { .. }) => {
                self.check(w, *inner, path, d)
            }
            (Node::Newtype { inner: a, .. }, Node::Newtype { inner: b, .. }) => {
                self.check(*a, *b, path, d)
            }
            (Node::Option(a), Node::Option(b)) => self.check(*a, *b, &format!("{path}.Some"), d),
            (Node::Seq(a), Node::Seq(b)) => self.check(*a, *b, &format!("{path}[item]"), d),
            (Node::Map { key: wk, value: wv }, Node::Map { key: rk, value: rv }) => {
                self.check(*wk, *rk, &format!("{path}{{key}}"), d)?;
                self.check(*wv, *rv, &format!("{path}{{value}}"), d)
            }
            (
                Node::Tuple(a) | Node::TupleStruct { fields: a, .. },
                Node::Tuple(b) | Node::TupleStruct { fields: b, .. },
            ) => {
                if a.len() != b.len() {
                    return self.fail(path, w, r);
                }
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    self.check(*x, *y, &format!("{path}.{i}"), d)?;
                }
                Ok(())
            }
            (Node::UnitStruct { .. } | Node::Unit, Node::UnitStruct { .. } | Node::Unit) => Ok(()),
            (Node::Struct { fields: wf, .. }, Node::Struct { fields: rf, .. }) => {
                self.fields(wf, rf, path, d)
            }
            (Node::Enum { variants: wv, .. }, Node::Enum { variants: rv, .. }) => {
                for v in wv {
                    // A variant the reader lacks fails the call that sends it, not this.
                    let Some(other) = rv.iter().find(|o| o.name == v.name) else {
                        continue;
                    };
                    let at = format!("{path}.{}", v.name);
                    match (&v.shape, &other.shape) {
                        (VariantShape::Unit, VariantShape::Unit) => {}
                        (VariantShape::Newtype(a), VariantShape::Newtype(b)) => {
                            self.check(*a, *b, &at, d)?;
                        }
                        (VariantShape::Tuple(a), VariantShape::Tuple(b)) if a.len() == b.len() => {
                            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                                self.check(*x, *y, &format!("{at}.{i}"), d)?;
                            }
                        }
                        (VariantShape::Struct(a), VariantShape::Struct(b)) => {
                            self.fields(a, b, &at, d)?;
                        }
                        (a, b) => {
                            return Err(Mismatch {
                                path: at,
                                reader: shape_kind(b),
                                writer: shape_kind(a),
                            });
                        }
                    }
                }
                Ok(())
            }
            (a, b) if same_leaf(a, b) => Ok(()),
            _ => self.fail(path, w, r),
        }
    }

    fn fields(&mut self, wf: &[Field], rf: &[Field], path: &str, d: usize) -> Result<(), Mismatch> {
        for f in rf {
            let at = format!("{path}.{}", f.name);
            match wf.iter().find(|g| g.name == f.name) {
                Some(g) => self.check(g.node, f.node, &at, d)?,
                None if f.optional => {}
                None => {
                    return Err(Mismatch {
                        path: at,
                        reader: format!("a required {}", kind(self.r, f.node)),
                        writer: "no such field".into(),
                    });
                }
            }
        }
        Ok(())
    }
}

fn shape_kind(s: &VariantShape) -> String {
    match s {
        VariantShape::Unit => "a unit variant".into(),
        VariantShape::Newtype(_) => "a newtype variant".into(),
        VariantShape::Tuple(cs) => format!("a tuple variant of {}", cs.len()),
        VariantShape::Struct(_) => "a struct variant".into(),
    }
}

/// The width of an integer node, and whether it is signed.
fn integer(n: &Node) -> Option<(u8, bool)> {
    use Node::*;
    Some(match n {
        I8 => (8, true),
        I16 => (16, true),
        I32 => (32, true),
        I64 => (64, true),
        I128 => (128, true),
        U8 => (8, false),
        U16 => (16, false),
        U32 => (32, false),
        U64 => (64, false),
        U128 => (128, false),
        _ => return None,
    })
}

/// A leaf the reader reads from the writer's leaf: the same kind, or an integer of the same
/// signedness that the writer has narrower (every value fits).
fn same_leaf(w: &Node, r: &Node) -> bool {
    use Node::*;
    if let (Some((ww, ws)), Some((rw, rs))) = (integer(w), integer(r)) {
        return ws == rs && ww <= rw;
    }
    matches!(
        (w, r),
        (Bool, Bool) | (F32, F32) | (F64, F64) | (Char, Char) | (Str, Str) | (Bytes, Bytes)
    )
}

/// Whether a reader whose type is node `r` of `reader` can read values written as node `w` of
/// `writer`.
pub(crate) fn check(writer: &Graph, w: u32, reader: &Graph, r: u32) -> Result<(), Mismatch> {
    Check {
        w: writer,
        r: reader,
        assumed: HashSet::new(),
    }
    .check(w, r, "", 0)
}
