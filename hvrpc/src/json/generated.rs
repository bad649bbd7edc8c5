//! Generated schemas and values: for random graphs (every kind of node, nested) and random
//! canonical postcard values of them, postcard → JSON → postcard gives back the same bytes, and
//! JSON → postcard → JSON the same JSON.

use super::{Limits, from_json, to_json};
use crate::schema::{Field, Graph, Node, Variant, VariantShape};

struct Gen {
    rng: fastrand::Rng,
    nodes: Vec<Node>,
}

impl Gen {
    fn push(&mut self, n: Node) -> u32 {
        self.nodes.push(n);
        (self.nodes.len() - 1) as u32
    }

    fn node(&mut self, depth: usize) -> u32 {
        let leaf = depth >= 4 || self.rng.u8(..4) == 0;
        let kind = if leaf {
            self.rng.u8(..17)
        } else {
            self.rng.u8(17..26)
        };
        let n = match kind {
            0 => Node::Bool,
            1 => Node::I8,
            2 => Node::I16,
            3 => Node::I32,
            4 => Node::I64,
            5 => Node::I128,
            6 => Node::U8,
            7 => Node::U16,
            8 => Node::U32,
            9 => Node::U64,
            10 => Node::U128,
            11 => Node::F32,
            12 => Node::F64,
            13 => Node::Char,
            14 => Node::Str,
            15 => Node::Bytes,
            16 => Node::Unit,
            17 => Node::Option(self.node(depth + 1)),
            18 => Node::Seq(self.node(depth + 1)),
            19 => {
                // String keys half the time: those become JSON objects.
                let key = if self.rng.bool() {
                    self.push(Node::Str)
                } else {
                    self.node(depth + 1)
                };
                Node::Map {
                    key,
                    value: self.node(depth + 1),
                }
            }
            20 => Node::Tuple(self.children(depth)),
            21 => Node::UnitStruct { name: "U".into() },
            22 => Node::Newtype {
                name: "N".into(),
                inner: self.node(depth + 1),
            },
            23 => Node::TupleStruct {
                name: "T".into(),
                fields: self.children(depth),
            },
            24 => Node::Struct {
                name: "S".into(),
                fields: self.fields(depth),
            },
            _ => {
                let variants = (0..self.rng.usize(1..4))
                    .map(|k| Variant {
                        name: format!("V{k}"),
                        shape: match self.rng.u8(..4) {
                            0 => VariantShape::Unit,
                            1 => VariantShape::Newtype(self.node(depth + 1)),
                            2 => VariantShape::Tuple(self.children(depth)),
                            _ => VariantShape::Struct(self.fields(depth)),
                        },
                    })
                    .collect();
                Node::Enum {
                    name: "E".into(),
                    variants,
                }
            }
        };
        self.push(n)
    }

    fn children(&mut self, depth: usize) -> Vec<u32> {
        (0..self.rng.usize(0..4))
            .map(|_| self.node(depth + 1))
            .collect()
    }

    fn fields(&mut self, depth: usize) -> Vec<Field> {
        (0..self.rng.usize(0..4))
            .map(|k| Field {
                name: format!("f{k}"),
                node: self.node(depth + 1),
                optional: false,
            })
            .collect()
    }
}

struct Val<'g> {
    rng: fastrand::Rng,
    graph: &'g Graph,
    out: Vec<u8>,
}

impl Val<'_> {
    fn varint(&mut self, mut v: u128) {
        while v >= 0x80 {
            self.out.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.out.push(v as u8);
    }

    fn signed(&mut self, bits: u32) {
        let v = (self.rng.u128(..) as i128) >> (128 - bits);
        self.varint(((v << 1) ^ (v >> 127)) as u128);
    }

    fn unsigned(&mut self, bits: u32) {
        let v = self.rng.u128(..) >> (128 - bits);
        self.varint(v);
    }

    fn text(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| {
                self.rng
                    .choice(['a', 'é', '"', '\\', '€', '😀', '\n'])
                    .unwrap()
            })
            .collect()
    }

    fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u128);
        self.out.extend_from_slice(b);
    }

    fn value(&mut self, i: u32) {
        let graph = self.graph;
        match &graph.nodes[i as usize] {
            Node::Bool => {
                let b = self.rng.bool();
                self.out.push(u8::from(b));
            }
            Node::I8 => {
                let b = self.rng.u8(..);
                self.out.push(b);
            }
            Node::I16 => self.signed(16),
            Node::I32 => self.signed(32),
            Node::I64 => self.signed(64),
            Node::I128 => self.signed(128),
            Node::U8 => {
                let b = self.rng.u8(..);
                self.out.push(b);
            }
            Node::U16 => self.unsigned(16),
            Node::U32 => self.unsigned(32),
            Node::U64 => self.unsigned(64),
            Node::U128 => self.unsigned(128),
            Node::F32 => {
                let f = loop {
                    let f = f32::from_bits(self.rng.u32(..));
                    if !f.is_nan() {
                        break f;
                    }
                };
                self.out.extend_from_slice(&f.to_le_bytes());
            }
            Node::F64 => {
                let f = loop {
                    let f = f64::from_bits(self.rng.u64(..));
                    if !f.is_nan() {
                        break f;
                    }
                };
                self.out.extend_from_slice(&f.to_le_bytes());
            }
            Node::Char => {
                let s = self.text(1);
                self.bytes(s.as_bytes());
            }
            Node::Str => {
                let n = self.rng.usize(0..6);
                let s = self.text(n);
                self.bytes(s.as_bytes());
            }
            Node::Bytes => {
                let b: Vec<u8> = (0..self.rng.usize(0..9)).map(|_| self.rng.u8(..)).collect();
                self.bytes(&b);
            }
            Node::Unit | Node::UnitStruct { .. } => {}
            Node::Option(c) => {
                if self.rng.bool() {
                    self.out.push(1);
                    self.value(*c);
                } else {
                    self.out.push(0);
                }
            }
            Node::Seq(c) => {
                let n = self.rng.usize(0..4);
                self.varint(n as u128);
                for _ in 0..n {
                    self.value(*c);
                }
            }
            Node::Map { key, value } => {
                let n = self.rng.usize(0..4);
                self.varint(n as u128);
                let string_keys = matches!(graph.nodes[*key as usize], Node::Str);
                let char_keys = matches!(graph.nodes[*key as usize], Node::Char);
                for k in 0..n {
                    if char_keys {
                        // Distinct, likewise.
                        let c = ['😀', 'é', 'a', '"'][k];
                        self.bytes(c.to_string().as_bytes());
                    } else if string_keys {
                        // Distinct keys: a JSON object cannot hold one twice.
                        // Not in sorted order: JSON objects must keep the order they came in.
                        let s = format!("k{}{}", 3 - k, self.text(2));
                        self.bytes(s.as_bytes());
                    } else {
                        self.value(*key);
                    }
                    self.value(*value);
                }
            }
            Node::Tuple(cs) | Node::TupleStruct { fields: cs, .. } => {
                for c in cs {
                    self.value(*c);
                }
            }
            Node::Newtype { inner, .. } => self.value(*inner),
            Node::Struct { fields, .. } => {
                for f in fields {
                    self.value(f.node);
                }
            }
            Node::Enum { variants, .. } => {
                let k = self.rng.usize(..variants.len());
                self.varint(k as u128);
                match &variants[k].shape {
                    VariantShape::Unit => {}
                    VariantShape::Newtype(c) => self.value(*c),
                    VariantShape::Tuple(cs) => {
                        for c in cs {
                            self.value(*c);
                        }
                    }
                    VariantShape::Struct(fs) => {
                        for f in fs {
                            self.value(f.node);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn generated_schemas_and_values_round_trip_byte_for_byte() {
    let limits = Limits::default();
    for seed in 0..3000u64 {
        let mut g = Gen {
            rng: fastrand::Rng::with_seed(seed),
            nodes: Vec::new(),
        };
        let root = g.node(0);
        let graph = Graph { nodes: g.nodes };
        graph.validate().unwrap();
        for case in 0..4 {
            let mut v = Val {
                rng: fastrand::Rng::with_seed(seed * 31 + case),
                graph: &graph,
                out: Vec::new(),
            };
            v.value(root);
            let bytes = v.out;
            let j = to_json(&bytes, &graph, root, "", limits)
                .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{graph:?}\n{bytes:02x?}"));
            let again = from_json(&j, &graph, root, "", limits)
                .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{j}\n{graph:?}"));
            assert_eq!(again, bytes, "seed {seed}: {j}\n{graph:?}");
            assert_eq!(
                to_json(&again, &graph, root, "", limits).unwrap(),
                j,
                "seed {seed}"
            );
        }
    }
}
