//! postcard → JSON, walking the writer's schema.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::{JsonError, Limits, nullable, string_keys};
use crate::schema::{Field, Graph, Node, VariantShape};

struct Reader<'a, 'g> {
    input: &'a [u8],
    graph: &'g Graph,
    limits: Limits,
    /// Output size so far, roughly (bytes of JSON text).
    size: usize,
}

type R<T> = Result<T, JsonError>;

fn fail<T>(path: &str, message: impl Into<String>) -> R<T> {
    Err(JsonError {
        path: path.to_owned(),
        message: message.into(),
    })
}

impl<'a> Reader<'a, '_> {
    fn take<T: serde::Deserialize<'a>>(&mut self, path: &str) -> R<T> {
        match postcard::take_from_bytes::<T>(self.input) {
            Ok((v, rest)) => {
                self.input = rest;
                Ok(v)
            }
            Err(e) => fail(path, format!("cannot read the value: {e}")),
        }
    }

    fn grow(&mut self, path: &str, n: usize) -> R<()> {
        self.size = self.size.saturating_add(n);
        if self.size > self.limits.max_bytes {
            return fail(
                path,
                format!(
                    "the value is larger than {} bytes of JSON",
                    self.limits.max_bytes
                ),
            );
        }
        Ok(())
    }

    /// A count of `n` elements, each at least `min` bytes: within the limits and the input.
    fn count(&mut self, path: &str, min: usize) -> R<usize> {
        let n: u64 = self.take(path)?;
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if n > self.limits.max_items {
            return fail(
                path,
                format!("{n} elements, more than {}", self.limits.max_items),
            );
        }
        if n.saturating_mul(min) > self.input.len() {
            return fail(
                path,
                format!("{n} elements claimed, {} bytes left", self.input.len()),
            );
        }
        // Elements that take no bytes still cost output.
        self.grow(path, n)?;
        Ok(n)
    }

    fn node(&mut self, i: u32, path: &str, depth: usize) -> R<Value> {
        if depth > self.limits.max_depth {
            return fail(
                path,
                format!("nested deeper than {}", self.limits.max_depth),
            );
        }
        let graph = self.graph;
        let Some(node) = graph.node(i) else {
            return fail(path, format!("schema node {i} does not exist"));
        };
        self.grow(path, 2)?;
        let d = depth + 1;
        Ok(match node {
            Node::Bool => Value::Bool(self.take(path)?),
            Node::I8 => Value::from(self.take::<i8>(path)?),
            Node::I16 => Value::from(self.take::<i16>(path)?),
            Node::I32 => Value::from(self.take::<i32>(path)?),
            Node::I64 => Value::from(self.take::<i64>(path)?),
            Node::U8 => Value::from(self.take::<u8>(path)?),
            Node::U16 => Value::from(self.take::<u16>(path)?),
            Node::U32 => Value::from(self.take::<u32>(path)?),
            Node::U64 => Value::from(self.take::<u64>(path)?),
            Node::I128 => {
                let v: i128 = self.take(path)?;
                i64::try_from(v).map_or_else(|_| Value::String(v.to_string()), Value::from)
            }
            Node::U128 => {
                let v: u128 = self.take(path)?;
                u64::try_from(v).map_or_else(|_| Value::String(v.to_string()), Value::from)
            }
            Node::F32 => float(f64::from(self.take::<f32>(path)?)),
            Node::F64 => float(self.take::<f64>(path)?),
            Node::Char => Value::String(self.take::<char>(path)?.to_string()),
            Node::Str => {
                let s: &str = self.take(path)?;
                self.grow(path, s.len())?;
                Value::String(s.to_owned())
            }
            Node::Bytes => {
                let b: &[u8] = self.take(path)?;
                self.grow(path, b.len() / 3 * 4 + 4)?;
                Value::String(base64::engine::general_purpose::STANDARD.encode(b))
            }
            Node::Unit | Node::UnitStruct { .. } => Value::Null,
            Node::Option(c) => match self.take::<u8>(path)? {
                0 => Value::Null,
                1 => {
                    let v = self.node(*c, path, d)?;
                    if nullable(graph, *c, 0) {
                        Value::Object(Map::from_iter([("Some".to_owned(), v)]))
                    } else {
                        v
                    }
                }
                t => return fail(path, format!("an option tagged {t}")),
            },
            Node::Seq(c) => {
                let n = self.count(path, min_size(graph, *c))?;
                let mut items = Vec::with_capacity(n.min(4096));
                for k in 0..n {
                    items.push(self.node(*c, &format!("{path}[{k}]"), d)?);
                }
                Value::Array(items)
            }
            Node::Map { key, value } => {
                let n = self.count(path, min_size(graph, *key).max(min_size(graph, *value)))?;
                if string_keys(graph, *key) {
                    let mut m = Map::new();
                    for _ in 0..n {
                        let Value::String(k) = self.node(*key, path, d)? else {
                            return fail(path, "a map key that is not a string");
                        };
                        let v = self.node(*value, &format!("{path}.{k}"), d)?;
                        m.insert(k, v);
                    }
                    Value::Object(m)
                } else {
                    let mut pairs = Vec::with_capacity(n.min(4096));
                    for k in 0..n {
                        let at = format!("{path}[{k}]");
                        let kv = self.node(*key, &format!("{at}[0]"), d)?;
                        let vv = self.node(*value, &format!("{at}[1]"), d)?;
                        pairs.push(Value::Array(vec![kv, vv]));
                    }
                    Value::Array(pairs)
                }
            }
            Node::Tuple(cs) | Node::TupleStruct { fields: cs, .. } => {
                Value::Array(self.list(cs, path, d)?)
            }
            Node::Newtype { inner, .. } => self.node(*inner, path, d)?,
            Node::Struct { fields, .. } => Value::Object(self.fields(fields, path, d)?),
            Node::Enum { variants, .. } => {
                let index: u32 = self.take(path)?;
                let Some(v) = variants.get(index as usize) else {
                    return fail(
                        path,
                        format!("variant {index} of {} does not exist", variants.len()),
                    );
                };
                let at = format!("{path}.{}", v.name);
                let held = match &v.shape {
                    VariantShape::Unit => return Ok(Value::String(v.name.clone())),
                    VariantShape::Newtype(c) => self.node(*c, &at, d)?,
                    VariantShape::Tuple(cs) => Value::Array(self.list(cs, &at, d)?),
                    VariantShape::Struct(fs) => Value::Object(self.fields(fs, &at, d)?),
                };
                Value::Object(Map::from_iter([(v.name.clone(), held)]))
            }
        })
    }

    fn list(&mut self, cs: &[u32], path: &str, d: usize) -> R<Vec<Value>> {
        cs.iter()
            .enumerate()
            .map(|(k, c)| self.node(*c, &format!("{path}[{k}]"), d))
            .collect()
    }

    fn fields(&mut self, fields: &[Field], path: &str, d: usize) -> R<Map<String, Value>> {
        let mut m = Map::new();
        for f in fields {
            let v = self.node(f.node, &format!("{path}.{}", f.name), d)?;
            m.insert(f.name.clone(), v);
        }
        Ok(m)
    }
}

/// Nodes [`min_size`] looks at, at most, for one answer: a peer's graph can share nodes so
/// that walking it as a tree takes exponential time.
const MIN_SIZE_VISITS: usize = 1024;

/// The fewest bytes a value of node `i` takes: 0 or 1 (enough to refuse counts that claim
/// more elements than the bytes left could hold). Conservatively 0 past a depth of 16 or
/// [`MIN_SIZE_VISITS`] nodes.
fn min_size(graph: &Graph, i: u32) -> usize {
    let mut visits = MIN_SIZE_VISITS;
    min_size_within(graph, i, 0, &mut visits)
}

fn min_size_within(graph: &Graph, i: u32, depth: usize, visits: &mut usize) -> usize {
    if depth > 16 || *visits == 0 {
        return 0;
    }
    *visits -= 1;
    let d = depth + 1;
    let taken = match graph.node(i) {
        None | Some(Node::Unit | Node::UnitStruct { .. }) => false,
        Some(Node::Newtype { inner, .. }) => min_size_within(graph, *inner, d, visits) > 0,
        Some(Node::Tuple(cs) | Node::TupleStruct { fields: cs, .. }) => {
            cs.iter().any(|&c| min_size_within(graph, c, d, visits) > 0)
        }
        Some(Node::Struct { fields, .. }) => fields
            .iter()
            .any(|f| min_size_within(graph, f.node, d, visits) > 0),
        Some(_) => true,
    };
    usize::from(taken)
}

fn float(v: f64) -> Value {
    match Number::from_f64(v) {
        Some(n) => Value::Number(n),
        None if v.is_nan() => Value::String("NaN".into()),
        None if v > 0.0 => Value::String("inf".into()),
        None => Value::String("-inf".into()),
    }
}

/// The JSON of the postcard `bytes` of a value of node `root` of `graph` (its writer's
/// schema). `path` names the value in errors (e.g. `.result`). Trailing bytes are an error.
pub fn to_json(
    bytes: &[u8],
    graph: &Graph,
    root: u32,
    path: &str,
    limits: Limits,
) -> Result<Value, JsonError> {
    let mut r = Reader {
        input: bytes,
        graph,
        limits,
        size: 0,
    };
    let v = r.node(root, path, 0)?;
    if !r.input.is_empty() {
        return fail(
            path,
            format!("{} unexpected bytes after the value", r.input.len()),
        );
    }
    Ok(v)
}
