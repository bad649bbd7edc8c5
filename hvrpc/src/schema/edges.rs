//! Edges of the schema rules: integer widening, and peer graphs that repeat names.

// Fixtures: types only read.
#![allow(unreachable_pub)]

use serde::Serialize;

use super::compat::{self, Mismatch};
use super::trace::Tracer;
use super::translate;
use super::{Graph, Node, VariantShape};

fn traced<T: serde::de::DeserializeOwned>() -> (Graph, u32) {
    let mut t = Tracer::default();
    let root = t.trace::<T>().unwrap();
    (t.into_graph(), root)
}

fn check<W: serde::de::DeserializeOwned, R: serde::de::DeserializeOwned>() -> Result<(), Mismatch> {
    let (wg, w) = traced::<W>();
    let (rg, r) = traced::<R>();
    compat::check(&wg, w, &rg, r)
}

fn via<W: Serialize + serde::de::DeserializeOwned, R: serde::de::DeserializeOwned>(
    value: &W,
) -> Result<R, String> {
    let bytes = postcard::to_allocvec(value).unwrap();
    let (g, root) = traced::<W>();
    translate::decode::<R>(&bytes, &g, root)
}

#[test]
fn integers_widen_and_do_not_narrow() {
    mod a {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub struct Sizes {
            pub small: u8,
            pub count: u32,
            pub delta: i8,
            pub big: u64,
        }
    }
    mod b {
        #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
        pub struct Sizes {
            pub small: u16,
            pub count: u64,
            pub delta: i64,
            pub big: u128,
        }
    }
    check::<a::Sizes, b::Sizes>().unwrap();
    let m = check::<b::Sizes, a::Sizes>().unwrap_err();
    assert_eq!(
        (m.path.as_str(), m.reader.as_str(), m.writer.as_str()),
        (".small", "u8", "u16")
    );
    let v = a::Sizes {
        small: 200,
        count: 70_000,
        delta: -3,
        big: u64::MAX,
    };
    let w: b::Sizes = via(&v).unwrap();
    assert_eq!(
        w,
        b::Sizes {
            small: 200,
            count: 70_000,
            delta: -3,
            big: u128::from(u64::MAX)
        }
    );
    // Signedness is a change, whatever the width.
    assert!(check::<u32, i64>().is_err());
}

#[test]
fn repeated_field_or_variant_names_are_malformed() {
    let field = |name: &str| super::Field {
        name: name.into(),
        node: 0,
        optional: false,
    };
    let twice = Graph {
        nodes: vec![
            Node::U8,
            Node::Struct {
                name: "S".into(),
                fields: vec![field("a"), field("a")],
            },
        ],
    };
    assert!(twice.validate().unwrap_err().contains("repeats"));
    let variants = Graph {
        nodes: vec![Node::Enum {
            name: "E".into(),
            variants: ["A", "A"]
                .map(|n| super::Variant {
                    name: n.into(),
                    shape: VariantShape::Unit,
                })
                .to_vec(),
        }],
    };
    assert!(variants.validate().unwrap_err().contains("repeats"));
}
