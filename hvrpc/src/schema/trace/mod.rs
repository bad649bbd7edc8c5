//! Tracing: the schema of a type, from what its `Deserialize` asks a deserializer for.
//!
//! The tracer is a `serde::Deserializer` that answers every request with a made-up value and
//! writes down what was asked: a struct's fields, an enum's variants, an option's inner type.
//! Driving a type's `Deserialize` through it gives the type's shape exactly as serde sees it.
//!
//! Invariants (each has a test below):
//!
//! 1. **Every variant.** A pass takes one variant of each enum it meets; passes repeat until
//!    every variant of every enum met has been taken.
//! 2. **Recursion ends.** A container met again inside itself (`Tree { children: Vec<Tree> }`)
//!    is a reference to its node, and is driven to its end with empty sequences, `None`s and a
//!    variant that does not recurse (found by trying).
//! 3. **Identity** is the Rust type (through its visitor's type name), not serde's name: two
//!    instantiations of a generic type, or two types with one name in different modules, are
//!    two nodes.
//! 4. **Optional fields** are found by asking: the struct is presented again as a map without
//!    the field, and serde either fills it in (`Option`, `#[serde(default)]`) or says it is
//!    missing.
//! 5. Made-up values that a type refuses (a `NonZero` from 0, a date from "") are retried with
//!    other samples before tracing gives up.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeOwned, Visitor};

use super::{Field, Graph, Node, Variant, VariantShape};

mod access;
mod probe;

use access::{Choice, Elements, Entries};

/// How deep a type may nest (and a recursive one be driven to its end) before tracing gives up.
const MAX_DEPTH: usize = 64;
/// Made-up strings, one per attempt.
const STRS: [&str; 4] = [
    "",
    "0",
    "1970-01-01T00:00:00Z",
    "00000000-0000-0000-0000-000000000000",
];
/// Made-up byte strings: 16 bytes fit fixed-size ids (UUIDs).
const BYTES: [&[u8]; 2] = [&[0u8; 16], &[]];
/// Attempts with other made-up values before tracing gives up.
const ATTEMPTS: usize = 8;
/// Passes of one type before tracing gives up (enums with very many variants, nested).
const MAX_PASSES: usize = 10_000;

/// Why tracing stopped.
#[derive(Debug)]
pub(crate) struct TraceError {
    msg: String,
    /// Set when recursion did not end in a container driven to its end.
    too_deep: Option<&'static str>,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for TraceError {}

impl de::Error for TraceError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        TraceError {
            msg: msg.to_string(),
            too_deep: None,
        }
    }
}

#[derive(Default)]
struct EnumState {
    /// Its name, as serde gives it.
    name: &'static str,
    explored: Vec<bool>,
    /// Visits so far while recording: the next one takes variant `cursor % n`.
    cursor: usize,
    /// The variant to take when the enum must end (inside itself), and whether it is known to.
    ending: usize,
}

/// Builds one graph from several root types.
#[derive(Default)]
pub struct Tracer {
    graph: Graph,
    /// Container identity → node.
    containers: HashMap<&'static str, u32>,
    /// Plain nodes, shared.
    interned: HashMap<Node, u32>,
    enums: HashMap<&'static str, EnumState>,
    /// Structs traced, for the optional-field probes: identity, node, and the enum variants
    /// taken on the way to it.
    structs: Vec<(&'static str, u32, Route)>,
    /// How many of `structs` have been probed.
    probed_upto: usize,
}

/// Enum choices on the way to a value: enum identity and variant index, outermost first.
type Route = Vec<(&'static str, usize)>;

/// What one pass does besides tracing: presenting one struct without one of its fields.
struct Probe {
    container: &'static str,
    omit: usize,
    /// The variants to take to reach the struct.
    route: Route,
}

struct Pass<'t> {
    t: &'t mut Tracer,
    /// Containers being traced, innermost last.
    stack: Vec<&'static str>,
    /// Inside a container met again inside itself: drive to the end, record nothing.
    ending: usize,
    attempt: usize,
    probe: Option<Probe>,
    probed: bool,
    /// The enum variants taken (while recording) on the way to the current value.
    route: Route,
    /// Enums being driven to their end, innermost last: when recursion does not end, the
    /// innermost one takes another variant next time.
    ending_enums: Vec<&'static str>,
    /// The node of the value just traced.
    last: u32,
}

fn err(msg: impl Into<String>) -> TraceError {
    TraceError {
        msg: msg.into(),
        too_deep: None,
    }
}

impl Tracer {
    fn intern(&mut self, node: Node) -> u32 {
        if let Some(&i) = self.interned.get(&node) {
            return i;
        }
        let i = self.push(node.clone());
        self.interned.insert(node, i);
        i
    }

    fn push(&mut self, node: Node) -> u32 {
        self.graph.nodes.push(node);
        (self.graph.nodes.len() - 1) as u32
    }

    fn has_unexplored(&self) -> bool {
        self.enums.values().any(|e| e.explored.iter().any(|x| !x))
    }

    /// Traces `T` into the graph; returns its node.
    pub(crate) fn trace<T: DeserializeOwned>(&mut self) -> Result<u32, String> {
        let mut attempt = 0;
        let mut passes = 0;
        let root = loop {
            passes += 1;
            if passes > MAX_PASSES {
                return Err(format!(
                    "{}: more than {MAX_PASSES} passes",
                    std::any::type_name::<T>()
                ));
            }
            let mut pass = Pass {
                t: self,
                stack: Vec::new(),
                ending: 0,
                attempt,
                probe: None,
                probed: false,
                route: Vec::new(),
                ending_enums: Vec::new(),
                last: u32::MAX,
            };
            match T::deserialize(&mut pass) {
                Ok(_) => {
                    let root = pass.last;
                    if !self.has_unexplored() {
                        break root;
                    }
                }
                Err(e) => match e.too_deep {
                    // The variant taken to end a recursive enum recursed: take the next.
                    Some(id) => {
                        let st = self.enums.entry(id).or_default();
                        st.ending += 1;
                        if st.ending >= st.explored.len().max(1) * 2 {
                            return Err(format!(
                                "{}: the recursive enum {} has no variant that ends",
                                std::any::type_name::<T>(),
                                st.name
                            ));
                        }
                    }
                    None if attempt + 1 < ATTEMPTS => attempt += 1,
                    None => {
                        return Err(format!("cannot trace {}: {e}", std::any::type_name::<T>()));
                    }
                },
            }
        };
        self.probe_optional::<T>(attempt);
        Ok(root)
    }

    /// Node `i` of the graph built so far.
    pub(crate) fn node(&self, i: u32) -> Option<&Node> {
        self.graph.node(i)
    }

    /// The graph built so far.
    pub(crate) fn into_graph(self) -> Graph {
        self.graph
    }
}

impl Pass<'_> {
    fn recording(&self) -> bool {
        self.ending == 0
    }

    fn leaf(&mut self, node: Node) {
        self.last = if self.recording() {
            self.t.intern(node)
        } else {
            u32::MAX
        };
    }

    /// Enters container `id`: `Some(node)` to trace it, `None` if it is being traced already
    /// further out (then it is driven to its end without recording).
    fn enter(
        &mut self,
        id: &'static str,
        placeholder: impl FnOnce() -> Node,
    ) -> Result<Option<u32>, TraceError> {
        if self.stack.len() + self.ending > MAX_DEPTH {
            return Err(TraceError {
                msg: format!("{id} nests deeper than {MAX_DEPTH}"),
                too_deep: self.ending_enums.last().copied(),
            });
        }
        if !self.recording() || self.stack.contains(&id) {
            self.ending += 1;
            return Ok(None);
        }
        let node = match self.t.containers.get(id) {
            Some(&n) => n,
            None => {
                let n = self.t.push(placeholder());
                self.t.containers.insert(id, n);
                n
            }
        };
        self.stack.push(id);
        Ok(Some(node))
    }

    fn leave(&mut self, id: &'static str, node: Option<u32>) {
        match node {
            Some(n) => {
                self.stack.pop();
                self.last = n;
            }
            None => {
                self.ending -= 1;
                self.last = self.t.containers.get(id).copied().unwrap_or(u32::MAX);
            }
        }
    }

    fn str_sample(&self) -> &'static str {
        STRS.get(self.attempt % STRS.len())
            .copied()
            .unwrap_or_default()
    }

    fn bytes_sample(&self) -> &'static [u8] {
        BYTES
            .get(self.attempt % BYTES.len())
            .copied()
            .unwrap_or_default()
    }
}

macro_rules! leaf {
    ($method:ident, $node:expr, $visit:ident, $value:expr) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
            self.leaf($node);
            visitor.$visit($value)
        }
    };
}

impl<'de> de::Deserializer<'de> for &mut Pass<'_> {
    type Error = TraceError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, TraceError> {
        Err(err(
            "a type that decides its shape from the data (deserialize_any: untagged or \
             internally tagged enums, flatten) cannot be sent with postcard",
        ))
    }

    leaf!(deserialize_bool, Node::Bool, visit_bool, false);
    leaf!(deserialize_i8, Node::I8, visit_i8, 1);
    leaf!(deserialize_i16, Node::I16, visit_i16, 1);
    leaf!(deserialize_i32, Node::I32, visit_i32, 1);
    leaf!(deserialize_i64, Node::I64, visit_i64, 1);
    leaf!(deserialize_i128, Node::I128, visit_i128, 1);
    leaf!(deserialize_u8, Node::U8, visit_u8, 1);
    leaf!(deserialize_u16, Node::U16, visit_u16, 1);
    leaf!(deserialize_u32, Node::U32, visit_u32, 1);
    leaf!(deserialize_u64, Node::U64, visit_u64, 1);
    leaf!(deserialize_u128, Node::U128, visit_u128, 1);
    leaf!(deserialize_f32, Node::F32, visit_f32, 0.0);
    leaf!(deserialize_f64, Node::F64, visit_f64, 0.0);
    leaf!(deserialize_char, Node::Char, visit_char, 'a');
    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.leaf(Node::Unit);
        visitor.visit_unit()
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.leaf(Node::Str);
        visitor.visit_str(self.str_sample())
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.leaf(Node::Str);
        visitor.visit_string(self.str_sample().to_owned())
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.leaf(Node::Bytes);
        visitor.visit_bytes(self.bytes_sample())
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        self.leaf(Node::Bytes);
        visitor.visit_byte_buf(self.bytes_sample().to_vec())
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        if !self.recording() {
            self.last = u32::MAX;
            return visitor.visit_none();
        }
        let value = visitor.visit_some(&mut *self)?;
        let inner = self.last;
        self.leaf(Node::Option(inner));
        Ok(value)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let id = std::any::type_name::<V>();
        let node = self.enter(id, || Node::UnitStruct { name: name.into() })?;
        let value = visitor.visit_unit()?;
        self.leave(id, node);
        Ok(value)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let id = std::any::type_name::<V>();
        let node = self.enter(id, || Node::Newtype {
            name: name.into(),
            inner: u32::MAX,
        })?;
        let value = visitor.visit_newtype_struct(&mut *self)?;
        if let Some(n) = node
            && let Some(Node::Newtype { inner, .. }) = self.t.graph.nodes.get_mut(n as usize)
        {
            *inner = self.last;
        }
        self.leave(id, node);
        Ok(value)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let n = usize::from(self.recording());
        let mut nodes = Vec::new();
        let value = visitor.visit_seq(Elements {
            pass: &mut *self,
            left: n,
            nodes: &mut nodes,
        })?;
        let item = nodes.first().copied();
        match item {
            // A sequence of u8 is a byte string on the wire.
            Some(i) if self.t.graph.node(i) == Some(&Node::U8) => self.leaf(Node::Bytes),
            Some(i) => self.leaf(Node::Seq(i)),
            None => self.last = u32::MAX,
        }
        Ok(value)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let mut items = Vec::new();
        let value = visitor.visit_seq(Elements {
            pass: &mut *self,
            left: len,
            nodes: &mut items,
        })?;
        // Fixed arrays are tuples to serde (and on the wire).
        self.leaf(Node::Tuple(items));
        Ok(value)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let id = std::any::type_name::<V>();
        let node = self.enter(id, || Node::TupleStruct {
            name: name.into(),
            fields: Vec::new(),
        })?;
        let mut items = Vec::new();
        let value = visitor.visit_seq(Elements {
            pass: &mut *self,
            left: len,
            nodes: &mut items,
        })?;
        if let Some(n) = node
            && let Some(Node::TupleStruct { fields, .. }) = self.t.graph.nodes.get_mut(n as usize)
            && fields.is_empty()
        {
            *fields = items;
        }
        self.leave(id, node);
        Ok(value)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        let n = usize::from(self.recording());
        let mut kv = Vec::new();
        let value = visitor.visit_map(Entries {
            pass: &mut *self,
            left: n,
            names: None,
            at: 0,
            nodes: &mut kv,
        })?;
        match kv.as_slice() {
            [key, value] => self.leaf(Node::Map {
                key: *key,
                value: *value,
            }),
            _ => self.last = u32::MAX,
        }
        Ok(value)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let id = std::any::type_name::<V>();
        let node = self.enter(id, || Node::Struct {
            name: name.into(),
            fields: Vec::new(),
        })?;
        let probing = node.is_some()
            && !self.probed
            && self.probe.as_ref().is_some_and(|p| p.container == id);
        let mut items = Vec::new();
        let value = if probing {
            self.probed = true;
            let omit = self.probe.as_ref().map_or(usize::MAX, |p| p.omit);
            visitor.visit_map(Entries {
                pass: &mut *self,
                left: fields.len(),
                names: Some((fields, omit)),
                at: 0,
                nodes: &mut items,
            })?
        } else {
            visitor.visit_seq(Elements {
                pass: &mut *self,
                left: fields.len(),
                nodes: &mut items,
            })?
        };
        if let Some(n) = node
            && !probing
        {
            let fresh = matches!(
                self.t.graph.nodes.get(n as usize),
                Some(Node::Struct { fields, .. }) if fields.is_empty()
            );
            if fresh && !fields.is_empty() {
                if let Some(Node::Struct { fields: fs, .. }) =
                    self.t.graph.nodes.get_mut(n as usize)
                {
                    *fs = fields
                        .iter()
                        .zip(&items)
                        .map(|(f, &node)| Field {
                            name: (*f).into(),
                            node,
                            optional: false,
                        })
                        .collect();
                }
                self.t.structs.push((id, n, self.route.clone()));
            }
        }
        self.leave(id, node);
        Ok(value)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let id = std::any::type_name::<V>();
        let node = self.enter(id, || Node::Enum {
            name: name.into(),
            variants: Vec::new(),
        })?;
        if variants.is_empty() {
            return Err(err(format!("the enum {name} has no variants")));
        }
        let st = self.t.enums.entry(id).or_insert_with(|| EnumState {
            name,
            explored: vec![false; variants.len()],
            cursor: 0,
            ending: 0,
        });
        let n = variants.len();
        // Probing: the variant on the way to the probed struct.
        let routed = self
            .probe
            .as_ref()
            .and_then(|p| p.route.iter().find(|(e, _)| *e == id))
            .map(|&(_, i)| i);
        let index = match (node, routed) {
            (Some(_), Some(i)) => i,
            // Round robin: each visit takes the next variant, so that enums reachable only
            // through a later variant are met again and again until they are explored too.
            (Some(_), None) => {
                st.cursor = st.cursor.wrapping_add(1);
                st.cursor.wrapping_sub(1) % n
            }
            // Ending: the variants from the last on, one more each time one recursed.
            (None, _) => (n - 1 + n - st.ending % n) % n,
        };
        let mut shape = None;
        if node.is_some() {
            self.route.push((id, index));
        } else {
            self.ending_enums.push(id);
        }
        let value = visitor.visit_enum(Choice {
            pass: &mut *self,
            index,
            shape: &mut shape,
        })?;
        if node.is_some() {
            self.route.pop();
            if let Some(slot) = self
                .t
                .enums
                .get_mut(id)
                .and_then(|st| st.explored.get_mut(index))
            {
                *slot = true;
            }
        } else {
            self.ending_enums.pop();
        }
        if let Some(n) = node
            && let Some(Node::Enum { variants: vs, .. }) = self.t.graph.nodes.get_mut(n as usize)
        {
            if vs.is_empty() {
                *vs = variants
                    .iter()
                    .map(|v| Variant {
                        name: (*v).into(),
                        shape: VariantShape::Unit,
                    })
                    .collect();
            }
            if let (Some(v), Some(shape)) = (vs.get_mut(index), shape) {
                v.shape = shape;
            }
        }
        self.leave(id, node);
        Ok(value)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, _: V) -> Result<V::Value, TraceError> {
        Err(err("an identifier outside a struct or enum"))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_unit()
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}
