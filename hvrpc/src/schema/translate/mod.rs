//! Translation: reading bytes written in one release's shape of a type as another release's
//! type, with both shapes known. A `serde::Deserializer` walks the *writer's* schema over the
//! postcard bytes and hands the *reader's* `Deserialize` what it asks for by name: structs as
//! maps keyed by field name (serde then skips fields it does not know, and fills in `Option`
//! and `#[serde(default)]` fields the writer did not send), enum variants by name (an unknown
//! one is the reader's own error, naming it).
//!
//! It runs only for methods whose two shapes differ; when they are the same, values are read
//! with postcard directly.
//!
//! Invariants (each has a test below):
//!
//! 1. A value written in the reader's own shape reads the same through here as through
//!    postcard.
//! 2. Every byte of the input is consumed, or the read fails (like `decode_exact`).
//! 3. Nothing from the peer makes this panic, loop, or recurse without bound.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Visitor};

use super::hash::MAX_DEPTH;

mod access;

use super::{Graph, Node, VariantShape};
use access::{Chosen, Entries, Fields, ItemNodes, Items};

/// Sequences of values that take no bytes (`Vec<()>`) longer than this are refused: their
/// length is not bounded by the input's.
const MAX_EMPTY_ITEMS: usize = 1 << 20;

/// Why a translation failed.
#[derive(Debug)]
pub(crate) struct TrError(String);

impl fmt::Display for TrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TrError {}

impl de::Error for TrError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        TrError(msg.to_string())
    }
}

fn pc(e: postcard::Error) -> TrError {
    TrError(e.to_string())
}

/// Reads one `T` with postcard from the front of `input`.
fn read<'de, T: Deserialize<'de>>(input: &mut &'de [u8]) -> Result<T, TrError> {
    let mut de = postcard::Deserializer::from_bytes(input);
    let value = T::deserialize(&mut de).map_err(pc)?;
    *input = de.finalize().map_err(pc)?;
    Ok(value)
}

/// Nodes [`may_be_empty`] looks at, at most, for one answer: a peer's graph can share nodes so
/// that walking it as a tree takes exponential time.
const EMPTY_VISITS: usize = 1024;

/// Whether a value of node `i` may take no bytes at all (conservatively no, past a depth of
/// 16 or [`EMPTY_VISITS`] nodes).
fn may_be_empty(graph: &Graph, i: u32) -> bool {
    let mut visits = EMPTY_VISITS;
    may_be_empty_within(graph, i, 0, &mut visits)
}

fn may_be_empty_within(graph: &Graph, i: u32, depth: usize, visits: &mut usize) -> bool {
    if depth > 16 || *visits == 0 {
        return false;
    }
    *visits -= 1;
    let d = depth + 1;
    match graph.node(i) {
        Some(Node::Unit | Node::UnitStruct { .. }) => true,
        Some(Node::Newtype { inner, .. }) => may_be_empty_within(graph, *inner, d, visits),
        Some(Node::Tuple(cs) | Node::TupleStruct { fields: cs, .. }) => {
            cs.iter().all(|&c| may_be_empty_within(graph, c, d, visits))
        }
        Some(Node::Struct { fields, .. }) => fields
            .iter()
            .all(|f| may_be_empty_within(graph, f.node, d, visits)),
        _ => false,
    }
}

/// Reads a `T` from `bytes` written as node `root` of the writer's `graph`; all of `bytes`.
pub(crate) fn decode<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
    graph: &Graph,
    root: u32,
) -> Result<T, String> {
    let mut input = bytes;
    let value = T::deserialize(At {
        input: &mut input,
        graph,
        node: root,
        depth: 0,
    })
    .map_err(|e| e.0)?;
    match input {
        [] => Ok(value),
        rest => Err(format!("{} unexpected bytes after the value", rest.len())),
    }
}

/// The deserializer at one writer node.
struct At<'a, 'de> {
    /// What is left of the input.
    input: &'a mut &'de [u8],
    graph: &'a Graph,
    node: u32,
    depth: usize,
}

impl<'a, 'de> At<'a, 'de> {
    fn node(&self) -> Result<&'a Node, TrError> {
        self.graph
            .node(self.node)
            .ok_or_else(|| TrError(format!("schema node {} does not exist", self.node)))
    }

    fn at(&mut self, node: u32) -> Result<At<'_, 'de>, TrError> {
        if self.depth >= MAX_DEPTH {
            return Err(TrError(format!("the value nests deeper than {MAX_DEPTH}")));
        }
        Ok(At {
            input: &mut *self.input,
            graph: self.graph,
            node,
            depth: self.depth + 1,
        })
    }

    fn mismatch(&self, wanted: &str) -> TrError {
        TrError(format!(
            "expected {wanted}, the peer wrote {}",
            super::compat::kind(self.graph, self.node)
        ))
    }

    /// A sequence's or map's length, which must fit in what is left of the input unless its
    /// items can take no bytes.
    fn len(&mut self, items: &[u32]) -> Result<usize, TrError> {
        let n: u64 = read(self.input)?;
        let n = usize::try_from(n).map_err(|_| TrError(format!("a length of {n} does not fit")))?;
        let empty = items.iter().all(|&i| may_be_empty(self.graph, i));
        if (!empty && n > self.input.len()) || n > MAX_EMPTY_ITEMS.max(self.input.len()) {
            return Err(TrError(format!(
                "a length of {n} with {} bytes left",
                self.input.len()
            )));
        }
        Ok(n)
    }

    /// Reads and discards one value of the writer's node.
    fn skip(mut self) -> Result<(), TrError> {
        match self.node()? {
            Node::Bool | Node::U8 | Node::I8 => {
                read::<u8>(self.input)?;
            }
            Node::I16
            | Node::I32
            | Node::I64
            | Node::I128
            | Node::U16
            | Node::U32
            | Node::U64
            | Node::U128 => {
                read::<u128>(self.input)?;
            }
            Node::F32 => {
                read::<f32>(self.input)?;
            }
            Node::F64 => {
                read::<f64>(self.input)?;
            }
            Node::Char | Node::Str => {
                read::<&str>(self.input)?;
            }
            Node::Bytes => {
                read::<&[u8]>(self.input)?;
            }
            Node::Unit | Node::UnitStruct { .. } => {}
            Node::Option(c) => {
                if read::<u8>(self.input)? == 1 {
                    self.at(*c)?.skip()?;
                }
            }
            Node::Seq(c) => {
                for _ in 0..self.len(&[*c])? {
                    self.at(*c)?.skip()?;
                }
            }
            Node::Map { key, value } => {
                for _ in 0..self.len(&[*key, *value])? {
                    self.at(*key)?.skip()?;
                    self.at(*value)?.skip()?;
                }
            }
            Node::Tuple(cs) | Node::TupleStruct { fields: cs, .. } => {
                for &c in cs {
                    self.at(c)?.skip()?;
                }
            }
            Node::Newtype { inner, .. } => self.at(*inner)?.skip()?,
            Node::Struct { fields, .. } => {
                for f in fields {
                    self.at(f.node)?.skip()?;
                }
            }
            Node::Enum { variants, .. } => {
                let i = read::<u32>(self.input)?;
                let v = variants
                    .get(i as usize)
                    .ok_or_else(|| TrError(format!("variant index {i} out of range")))?;
                match &v.shape {
                    VariantShape::Unit => {}
                    VariantShape::Newtype(c) => self.at(*c)?.skip()?,
                    VariantShape::Tuple(cs) => {
                        for &c in cs {
                            self.at(c)?.skip()?;
                        }
                    }
                    VariantShape::Struct(fs) => {
                        for f in fs {
                            self.at(f.node)?.skip()?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A writer newtype the reader does not ask for is its inner value.
    fn unwrapped(mut self) -> Result<Self, TrError> {
        match self.node()? {
            Node::Newtype { inner, .. } => {
                let inner = *inner;
                self.depth += 1;
                if self.depth >= MAX_DEPTH {
                    return Err(TrError(format!("the value nests deeper than {MAX_DEPTH}")));
                }
                self.node = inner;
                self.unwrapped()
            }
            _ => Ok(self),
        }
    }
}

/// An integer the reader asks for, read from the writer's integer of that width or narrower.
macro_rules! widening {
    ($method:ident, $what:literal, $ty:ty, $visit:ident, $byte:pat, $byte_ty:ty, $varint:pat) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TrError> {
            let me = self.unwrapped()?;
            match me.node()? {
                $byte => visitor.$visit(<$ty>::from(read::<$byte_ty>(me.input)?)),
                $varint => visitor.$visit(read::<$ty>(me.input)?),
                _ => Err(me.mismatch($what)),
            }
        }
    };
}

macro_rules! primitive {
    ($method:ident, $node:pat, $what:literal, $ty:ty, $visit:ident) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TrError> {
            let me = self.unwrapped()?;
            match me.node()? {
                $node => visitor.$visit(read::<$ty>(me.input)?),
                _ => Err(me.mismatch($what)),
            }
        }
    };
}

impl<'de> de::Deserializer<'de> for At<'_, 'de> {
    type Error = TrError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TrError> {
        match self.node()? {
            Node::Bool => self.deserialize_bool(visitor),
            Node::I8 => self.deserialize_i8(visitor),
            Node::I16 => self.deserialize_i16(visitor),
            Node::I32 => self.deserialize_i32(visitor),
            Node::I64 => self.deserialize_i64(visitor),
            Node::I128 => self.deserialize_i128(visitor),
            Node::U8 => self.deserialize_u8(visitor),
            Node::U16 => self.deserialize_u16(visitor),
            Node::U32 => self.deserialize_u32(visitor),
            Node::U64 => self.deserialize_u64(visitor),
            Node::U128 => self.deserialize_u128(visitor),
            Node::F32 => self.deserialize_f32(visitor),
            Node::F64 => self.deserialize_f64(visitor),
            Node::Char => self.deserialize_char(visitor),
            Node::Str => self.deserialize_string(visitor),
            Node::Bytes => self.deserialize_byte_buf(visitor),
            Node::Unit | Node::UnitStruct { .. } => self.deserialize_unit(visitor),
            Node::Option(_) => self.deserialize_option(visitor),
            Node::Seq(_) => self.deserialize_seq(visitor),
            Node::Map { .. } | Node::Struct { .. } => self.deserialize_map(visitor),
            Node::Tuple(cs) | Node::TupleStruct { fields: cs, .. } => {
                let n = cs.len();
                self.deserialize_tuple(n, visitor)
            }
            Node::Newtype { .. } => self.deserialize_newtype_struct("", visitor),
            Node::Enum { .. } => self.deserialize_enum("", &[], visitor),
        }
    }

    primitive!(deserialize_bool, Node::Bool, "bool", bool, visit_bool);
    primitive!(deserialize_i8, Node::I8, "i8", i8, visit_i8);
    // Integers widen: a writer's narrower integer of the same signedness is read as the
    // reader's wider one (`u8`/`i8` are one raw byte, the others varints).
    widening!(
        deserialize_i16,
        "i16",
        i16,
        visit_i16,
        Node::I8,
        i8,
        Node::I16
    );
    widening!(
        deserialize_i32,
        "i32",
        i32,
        visit_i32,
        Node::I8,
        i8,
        Node::I16 | Node::I32
    );
    widening!(
        deserialize_i64,
        "i64",
        i64,
        visit_i64,
        Node::I8,
        i8,
        Node::I16 | Node::I32 | Node::I64
    );
    widening!(
        deserialize_i128,
        "i128",
        i128,
        visit_i128,
        Node::I8,
        i8,
        Node::I16 | Node::I32 | Node::I64 | Node::I128
    );
    primitive!(deserialize_u8, Node::U8, "u8", u8, visit_u8);
    widening!(
        deserialize_u16,
        "u16",
        u16,
        visit_u16,
        Node::U8,
        u8,
        Node::U16
    );
    widening!(
        deserialize_u32,
        "u32",
        u32,
        visit_u32,
        Node::U8,
        u8,
        Node::U16 | Node::U32
    );
    widening!(
        deserialize_u64,
        "u64",
        u64,
        visit_u64,
        Node::U8,
        u8,
        Node::U16 | Node::U32 | Node::U64
    );
    widening!(
        deserialize_u128,
        "u128",
        u128,
        visit_u128,
        Node::U8,
        u8,
        Node::U16 | Node::U32 | Node::U64 | Node::U128
    );
    primitive!(deserialize_f32, Node::F32, "f32", f32, visit_f32);
    primitive!(deserialize_f64, Node::F64, "f64", f64, visit_f64);
    primitive!(deserialize_char, Node::Char, "char", char, visit_char);
    primitive!(
        deserialize_str,
        Node::Str,
        "string",
        &'de str,
        visit_borrowed_str
    );
    primitive!(
        deserialize_string,
        Node::Str,
        "string",
        &'de str,
        visit_borrowed_str
    );
    primitive!(
        deserialize_bytes,
        Node::Bytes,
        "bytes",
        &'de [u8],
        visit_borrowed_bytes
    );
    primitive!(
        deserialize_byte_buf,
        Node::Bytes,
        "bytes",
        &'de [u8],
        visit_borrowed_bytes
    );

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TrError> {
        let mut me = self.unwrapped()?;
        let Node::Option(inner) = me.node()? else {
            return Err(me.mismatch("an Option"));
        };
        let inner = *inner;
        match read::<u8>(me.input)? {
            0 => visitor.visit_none(),
            1 => visitor.visit_some(me.at(inner)?),
            t => Err(TrError(format!("bad Option tag {t}"))),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TrError> {
        let me = self.unwrapped()?;
        match me.node()? {
            Node::Unit | Node::UnitStruct { .. } => visitor.visit_unit(),
            _ => Err(me.mismatch("()")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, TrError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        mut self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, TrError> {
        match self.node()? {
            Node::Newtype { inner, .. } => {
                let inner = *inner;
                visitor.visit_newtype_struct(self.at(inner)?)
            }
            // The writer sent the inner value itself.
            _ => visitor.visit_newtype_struct(self),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TrError> {
        let mut me = self.unwrapped()?;
        match me.node()? {
            Node::Seq(item) => {
                let item = *item;
                let n = me.len(&[item])?;
                visitor.visit_seq(Items {
                    at: me,
                    nodes: ItemNodes::Repeat(item, n),
                })
            }
            // A byte string, read by a type that asks for a sequence of u8.
            Node::Bytes => {
                let bytes = read::<&[u8]>(me.input)?;
                visitor.visit_seq(de::value::SeqDeserializer::<_, TrError>::new(
                    bytes.iter().copied(),
                ))
            }
            _ => Err(me.mismatch("a sequence")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TrError> {
        let me = self.unwrapped()?;
        match me.node()? {
            Node::Tuple(cs) | Node::TupleStruct { fields: cs, .. } if cs.len() == len => visitor
                .visit_seq(Items {
                    at: me,
                    nodes: ItemNodes::List(cs, 0),
                }),
            _ => Err(me.mismatch(&format!("a tuple of {len}"))),
        }
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TrError> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TrError> {
        let mut me = self.unwrapped()?;
        match me.node()? {
            Node::Map { key, value } => {
                let (key, value) = (*key, *value);
                let n = me.len(&[key, value])?;
                visitor.visit_map(Entries {
                    at: me,
                    key,
                    value,
                    left: n,
                })
            }
            Node::Struct { fields, .. } => visitor.visit_map(Fields {
                at: me,
                fields,
                i: 0,
            }),
            _ => Err(me.mismatch("a map")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TrError> {
        let me = self.unwrapped()?;
        match me.node()? {
            Node::Struct { fields, .. } => visitor.visit_map(Fields {
                at: me,
                fields,
                i: 0,
            }),
            _ => Err(me.mismatch("a struct")),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TrError> {
        let me = self.unwrapped()?;
        let Node::Enum { variants, .. } = me.node()? else {
            return Err(me.mismatch("an enum"));
        };
        let i = read::<u32>(me.input)?;
        let v = variants
            .get(i as usize)
            .ok_or_else(|| TrError(format!("variant index {i} out of range")))?;
        visitor.visit_enum(Chosen {
            at: me,
            name: &v.name,
            shape: &v.shape,
        })
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TrError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TrError> {
        self.skip()?;
        visitor.visit_unit()
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}
