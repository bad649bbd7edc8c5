//! JSON → postcard, walking the reader's schema.

use base64::Engine as _;
use serde_json::Value;

use super::{JsonError, Limits, kind, nullable, string_keys};
use crate::schema::{Field, Graph, Node, VariantShape};

struct Writer<'g> {
    out: Vec<u8>,
    graph: &'g Graph,
    limits: Limits,
}

type R<T> = Result<T, JsonError>;

fn fail<T>(path: &str, message: impl Into<String>) -> R<T> {
    Err(JsonError {
        path: path.to_owned(),
        message: message.into(),
    })
}

/// `got "fast"`, `got an object`, … for messages.
fn got(v: &Value) -> String {
    match v {
        Value::Null => "got null".into(),
        Value::Bool(b) => format!("got {b}"),
        Value::Number(n) => format!("got {n}"),
        Value::String(s) if s.chars().count() <= 40 => format!("got {s:?}"),
        Value::String(_) => "got a string".into(),
        Value::Array(a) => format!("got an array of {}", a.len()),
        Value::Object(_) => "got an object".into(),
    }
}

impl Writer<'_> {
    fn varint(&mut self, mut v: u128) {
        while v >= 0x80 {
            self.out.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.out.push(v as u8);
    }

    fn zigzag(&mut self, v: i128) {
        self.varint(((v << 1) ^ (v >> 127)) as u128);
    }

    fn check_size(&self, path: &str) -> R<()> {
        if self.out.len() > self.limits.max_bytes {
            return fail(
                path,
                format!("the value is larger than {} bytes", self.limits.max_bytes),
            );
        }
        Ok(())
    }

    fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u128);
        self.out.extend_from_slice(b);
    }

    fn mismatch<T>(&self, path: &str, i: u32, v: &Value) -> R<T> {
        fail(
            path,
            format!("expected {}, {}", kind(self.graph, i), got(v)),
        )
    }

    /// A signed integer within `[min, max]`: a JSON number, or for `wide` (128-bit) nodes
    /// also a decimal string.
    fn signed(&self, path: &str, i: u32, v: &Value, (min, max): (i128, i128)) -> R<i128> {
        let wide = max > i128::from(i64::MAX);
        let n = match v {
            Value::Number(n) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from)),
            Value::String(s) if wide => s.parse::<i128>().ok(),
            _ => None,
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            Some(_) => fail(
                path,
                format!("{v} is out of range for {}", kind(self.graph, i)),
            ),
            None => self.mismatch(path, i, v),
        }
    }

    /// An unsigned integer up to `max`, likewise.
    fn unsigned(&self, path: &str, i: u32, v: &Value, max: u128) -> R<u128> {
        let wide = max > u128::from(u64::MAX);
        // `Err`: a negative number.
        let n: Option<Result<u128, ()>> = match v {
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => Some(Ok(u128::from(u))),
                (None, Some(_)) => Some(Err(())),
                (None, None) => None,
            },
            Value::String(s) if wide => s.parse::<u128>().ok().map(Ok),
            _ => None,
        };
        match n {
            Some(Ok(n)) if n <= max => Ok(n),
            Some(_) => fail(
                path,
                format!("{v} is out of range for {}", kind(self.graph, i)),
            ),
            None => self.mismatch(path, i, v),
        }
    }

    fn node(&mut self, i: u32, v: &Value, path: &str, depth: usize) -> R<()> {
        if depth > self.limits.max_depth {
            return fail(
                path,
                format!("nested deeper than {}", self.limits.max_depth),
            );
        }
        self.check_size(path)?;
        let graph = self.graph;
        let Some(node) = graph.node(i) else {
            return fail(path, format!("schema node {i} does not exist"));
        };
        let d = depth + 1;
        match node {
            Node::Bool => match v {
                Value::Bool(b) => self.out.push(u8::from(*b)),
                _ => return self.mismatch(path, i, v),
            },
            Node::I8 => {
                let n = self.signed(path, i, v, (i8::MIN.into(), i8::MAX.into()))?;
                self.out.push(n as i8 as u8);
            }
            Node::I16 => {
                let n = self.signed(path, i, v, (i16::MIN.into(), i16::MAX.into()))?;
                self.zigzag(n);
            }
            Node::I32 => {
                let n = self.signed(path, i, v, (i32::MIN.into(), i32::MAX.into()))?;
                self.zigzag(n);
            }
            Node::I64 => {
                let n = self.signed(path, i, v, (i64::MIN.into(), i64::MAX.into()))?;
                self.zigzag(n);
            }
            Node::I128 => {
                let n = self.signed(path, i, v, (i128::MIN, i128::MAX))?;
                self.zigzag(n);
            }
            Node::U8 => {
                let n = self.unsigned(path, i, v, u8::MAX.into())?;
                self.out.push(n as u8);
            }
            Node::U16 => {
                let n = self.unsigned(path, i, v, u16::MAX.into())?;
                self.varint(n);
            }
            Node::U32 => {
                let n = self.unsigned(path, i, v, u32::MAX.into())?;
                self.varint(n);
            }
            Node::U64 => {
                let n = self.unsigned(path, i, v, u64::MAX.into())?;
                self.varint(n);
            }
            Node::U128 => {
                let n = self.unsigned(path, i, v, u128::MAX)?;
                self.varint(n);
            }
            Node::F32 => {
                let f = float(v).ok_or(()).or_else(|()| self.mismatch(path, i, v))?;
                self.out.extend_from_slice(&(f as f32).to_le_bytes());
            }
            Node::F64 => {
                let f = float(v).ok_or(()).or_else(|()| self.mismatch(path, i, v))?;
                self.out.extend_from_slice(&f.to_le_bytes());
            }
            Node::Char => match v {
                Value::String(s) if s.chars().count() == 1 => self.bytes(s.as_bytes()),
                _ => return self.mismatch(path, i, v),
            },
            Node::Str => match v {
                Value::String(s) => self.bytes(s.as_bytes()),
                _ => return self.mismatch(path, i, v),
            },
            Node::Bytes => match v {
                Value::String(s) => match base64::engine::general_purpose::STANDARD.decode(s) {
                    Ok(b) => self.bytes(&b),
                    Err(e) => return fail(path, format!("expected base64 bytes: {e}")),
                },
                _ => return self.mismatch(path, i, v),
            },
            Node::Unit | Node::UnitStruct { .. } => match v {
                Value::Null => {}
                _ => return self.mismatch(path, i, v),
            },
            Node::Option(c) => {
                let wrapped = nullable(graph, *c, 0);
                match v {
                    Value::Null => self.out.push(0),
                    Value::Object(m) if wrapped => match (m.len(), m.get("Some")) {
                        (1, Some(inner)) => {
                            self.out.push(1);
                            self.node(*c, inner, path, d)?;
                        }
                        _ => {
                            return fail(
                                path,
                                format!("expected null or {{\"Some\": …}}, {}", got(v)),
                            );
                        }
                    },
                    _ if wrapped => {
                        return fail(
                            path,
                            format!("expected null or {{\"Some\": …}}, {}", got(v)),
                        );
                    }
                    _ => {
                        self.out.push(1);
                        self.node(*c, v, path, d)?;
                    }
                }
            }
            Node::Seq(c) => {
                let Value::Array(items) = v else {
                    return self.mismatch(path, i, v);
                };
                self.items(path, items.len())?;
                self.varint(items.len() as u128);
                for (k, item) in items.iter().enumerate() {
                    self.node(*c, item, &format!("{path}[{k}]"), d)?;
                }
            }
            Node::Map { key, value } => {
                if string_keys(graph, *key) {
                    let Value::Object(m) = v else {
                        return self.mismatch(path, i, v);
                    };
                    self.items(path, m.len())?;
                    self.varint(m.len() as u128);
                    for (k, val) in m {
                        self.node(*key, &Value::String(k.clone()), path, d)?;
                        self.node(*value, val, &format!("{path}.{k}"), d)?;
                    }
                } else {
                    let Value::Array(pairs) = v else {
                        return fail(
                            path,
                            format!("expected an array of [key, value] pairs, {}", got(v)),
                        );
                    };
                    self.items(path, pairs.len())?;
                    self.varint(pairs.len() as u128);
                    for (k, pair) in pairs.iter().enumerate() {
                        let at = format!("{path}[{k}]");
                        let Value::Array(kv) = pair else {
                            return fail(
                                &at,
                                format!("expected a [key, value] pair, {}", got(pair)),
                            );
                        };
                        let [kj, vj] = kv.as_slice() else {
                            return fail(
                                &at,
                                format!("expected a [key, value] pair, {}", got(pair)),
                            );
                        };
                        self.node(*key, kj, &format!("{at}[0]"), d)?;
                        self.node(*value, vj, &format!("{at}[1]"), d)?;
                    }
                }
            }
            Node::Tuple(cs) | Node::TupleStruct { fields: cs, .. } => self.list(cs, v, path, d)?,
            Node::Newtype { inner, .. } => self.node(*inner, v, path, d)?,
            Node::Struct { fields, .. } => self.fields(fields, v, path, d)?,
            Node::Enum { variants, .. } => {
                let single = match v {
                    Value::Object(m) if m.len() == 1 => m.iter().next(),
                    _ => None,
                };
                let (name, held) = match (v, single) {
                    (Value::String(s), _) => (s.as_str(), None),
                    (_, Some((k, val))) => (k.as_str(), Some(val)),
                    _ => {
                        return fail(
                            path,
                            format!(
                                "expected a variant (\"Name\" or {{\"Name\": …}}), {}",
                                got(v)
                            ),
                        );
                    }
                };
                let Some((index, var)) = variants.iter().enumerate().find(|(_, x)| x.name == name)
                else {
                    let names: Vec<&str> = variants.iter().map(|x| x.name.as_str()).collect();
                    return fail(
                        path,
                        format!(
                            "unknown variant `{name}`, expected one of: {}",
                            names.join(", ")
                        ),
                    );
                };
                self.varint(index as u128);
                let at = format!("{path}.{name}");
                match (&var.shape, held) {
                    (VariantShape::Unit, None | Some(Value::Null)) => {}
                    (VariantShape::Newtype(c), Some(val)) => self.node(*c, val, &at, d)?,
                    (VariantShape::Tuple(cs), Some(val)) => self.list(cs, val, &at, d)?,
                    (VariantShape::Struct(fs), Some(val)) => self.fields(fs, val, &at, d)?,
                    (VariantShape::Unit, Some(val)) => {
                        return fail(&at, format!("a unit variant holds nothing, {}", got(val)));
                    }
                    (_, None) => return fail(&at, "this variant holds a value: {\"Name\": …}"),
                }
            }
        }
        Ok(())
    }

    fn items(&self, path: &str, n: usize) -> R<()> {
        if n > self.limits.max_items {
            return fail(
                path,
                format!("{n} elements, more than {}", self.limits.max_items),
            );
        }
        Ok(())
    }

    fn list(&mut self, cs: &[u32], v: &Value, path: &str, d: usize) -> R<()> {
        let Value::Array(items) = v else {
            return fail(
                path,
                format!("expected an array of {}, {}", cs.len(), got(v)),
            );
        };
        if items.len() != cs.len() {
            return fail(
                path,
                format!("expected an array of {}, {}", cs.len(), got(v)),
            );
        }
        for (k, (c, item)) in cs.iter().zip(items).enumerate() {
            self.node(*c, item, &format!("{path}[{k}]"), d)?;
        }
        Ok(())
    }

    fn fields(&mut self, fields: &[Field], v: &Value, path: &str, d: usize) -> R<()> {
        let Value::Object(m) = v else {
            return fail(path, format!("expected an object, {}", got(v)));
        };
        if let Some(unknown) = m.keys().find(|k| !fields.iter().any(|f| f.name == **k)) {
            let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
            return fail(
                &format!("{path}.{unknown}"),
                format!("no such field (the fields are: {})", names.join(", ")),
            );
        }
        for f in fields {
            let at = format!("{path}.{}", f.name);
            match m.get(&f.name) {
                Some(val) => self.node(f.node, val, &at, d)?,
                None if matches!(self.graph.node(f.node), Some(Node::Option(_))) => {
                    self.out.push(0);
                }
                None => {
                    return fail(
                        &at,
                        format!("missing field of type {}", kind(self.graph, f.node)),
                    );
                }
            }
        }
        Ok(())
    }
}

fn float(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "inf" => Some(f64::INFINITY),
            "-inf" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// The postcard bytes of `value` as a value of node `root` of `graph` (the reader's schema).
/// `path` names the value in errors (e.g. `.args`).
pub fn from_json(
    value: &Value,
    graph: &Graph,
    root: u32,
    path: &str,
    limits: Limits,
) -> Result<Vec<u8>, JsonError> {
    let mut w = Writer {
        out: Vec::new(),
        graph,
        limits,
    };
    w.node(root, value, path, 0)?;
    w.check_size(path)?;
    Ok(w.out)
}
