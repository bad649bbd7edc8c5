//! The JSON mapping: what serde_json prints for the same types (bytes and non-string map keys
//! aside), byte-for-byte round trips through postcard, paths in errors, limits.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Limits, from_json, to_json};
use crate::schema::fuzz::trace;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Kind {
    File,
    Dir(String),
    Link { target: String, hops: u8 },
    Pair(i32, bool),
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Entry {
    name: String,
    size: u64,
    delta: i64,
    kind: Kind,
    owner: Option<String>,
    tags: Vec<String>,
    meta: BTreeMap<String, u32>,
    pos: (u16, i8),
    ratio: f64,
    big: u128,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Blob {
    data: serde_bytes_like::Bytes,
    by_id: BTreeMap<u32, String>,
    maybe: Option<Option<u8>>,
    unit: (),
}

/// `bytes::Bytes` is a byte string to serde.
mod serde_bytes_like {
    pub(super) type Bytes = bytes::Bytes;
}

fn text() -> impl Strategy<Value = String> {
    "[a-z é\"\\\\]{0,5}"
}

fn entry() -> impl Strategy<Value = Entry> {
    let kind = prop_oneof![
        Just(Kind::File),
        text().prop_map(Kind::Dir),
        (text(), any::<u8>()).prop_map(|(target, hops)| Kind::Link { target, hops }),
        (any::<i32>(), any::<bool>()).prop_map(|(a, b)| Kind::Pair(a, b)),
    ];
    (
        (
            text(),
            any::<u64>(),
            any::<i64>(),
            kind,
            prop::option::of(text()),
        ),
        (
            prop::collection::vec(text(), 0..3),
            prop::collection::btree_map(text(), any::<u32>(), 0..3),
            any::<(u16, i8)>(),
            -1e12f64..1e12,
            any::<u128>(),
        ),
    )
        .prop_map(
            |((name, size, delta, kind, owner), (tags, meta, pos, ratio, big))| Entry {
                name,
                size,
                delta,
                kind,
                owner,
                tags,
                meta,
                pos,
                ratio,
                big,
            },
        )
}

fn blob() -> impl Strategy<Value = Blob> {
    (
        prop::collection::vec(any::<u8>(), 0..40),
        prop::collection::btree_map(any::<u32>(), text(), 0..3),
        prop::option::of(prop::option::of(any::<u8>())),
    )
        .prop_map(|(data, by_id, maybe)| Blob {
            data: data.into(),
            by_id,
            maybe,
            unit: (),
        })
}

fn round_trip<T: Serialize + serde::de::DeserializeOwned>(v: &T) -> serde_json::Value {
    let (g, root) = trace::<T>().unwrap();
    let bytes = postcard::to_allocvec(v).unwrap();
    let j = to_json(&bytes, &g, root, "", Limits::default()).unwrap();
    let again = from_json(&j, &g, root, "", Limits::default()).unwrap();
    assert_eq!(again, bytes, "{j}");
    j
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// postcard → JSON → postcard gives back the same bytes; and the JSON is serde_json's,
    /// except for `u128` beyond 64 bits (a string here).
    #[test]
    fn entries_round_trip_and_match_serde_json(v in entry()) {
        let j = round_trip(&v);
        // serde_json cannot write a u128 beyond 64 bits at all.
        let mut want = serde_json::to_value(Entry { big: 0, ..v.clone() }).unwrap();
        if let Ok(b) = u64::try_from(v.big) {
            want["big"] = json!(b);
        } else {
            want["big"] = json!(v.big.to_string());
        }
        prop_assert_eq!(j, want);
    }

    /// Bytes are base64, maps with integer keys arrays of pairs, nested options explicit.
    #[test]
    fn blobs_round_trip(v in blob()) {
        let j = round_trip(&v);
        use base64::Engine as _;
        prop_assert_eq!(&j["data"], &json!(base64::engine::general_purpose::STANDARD.encode(&v.data)));
        let pairs: Vec<serde_json::Value> = v.by_id.iter().map(|(k, s)| json!([k, s])).collect();
        prop_assert_eq!(&j["by_id"], &json!(pairs));
        let maybe = match v.maybe {
            None => json!(null),
            Some(None) => json!({"Some": null}),
            Some(Some(n)) => json!({"Some": n}),
        };
        prop_assert_eq!(&j["maybe"], &maybe);
    }

    /// Arbitrary bytes never panic either way, whatever they claim.
    #[test]
    fn garbage_is_an_error_not_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let (g, root) = trace::<Entry>().unwrap();
        let _ = to_json(&bytes, &g, root, "", Limits::default());
    }
}

#[test]
fn extremes_are_exact() {
    let (g, root) = trace::<(u64, i64, u128, i128, f64, f32)>().unwrap();
    let v = (
        u64::MAX,
        i64::MIN,
        u128::MAX,
        i128::MIN,
        f64::NAN,
        f32::INFINITY,
    );
    let bytes = postcard::to_allocvec(&v).unwrap();
    let j = to_json(&bytes, &g, root, "", Limits::default()).unwrap();
    assert_eq!(
        j,
        json!([
            18_446_744_073_709_551_615u64,
            -9_223_372_036_854_775_808i64,
            "340282366920938463463374607431768211455",
            "-170141183460469231731687303715884105728",
            "NaN",
            "inf"
        ])
    );
    assert_eq!(
        from_json(&j, &g, root, "", Limits::default()).unwrap(),
        bytes
    );
}

#[test]
fn mismatches_name_the_json_path() {
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Args {
        interval_ms: u32,
        kind: Kind,
    }
    let (g, root) = trace::<Args>().unwrap();
    let e = |v: serde_json::Value| from_json(&v, &g, root, ".args", Limits::default()).unwrap_err();
    assert_eq!(
        e(json!({"interval_ms": "fast", "kind": "File"})).to_string(),
        ".args.interval_ms: expected u32, got \"fast\""
    );
    assert_eq!(
        e(json!({"interval_ms": 5_000_000_000u64, "kind": "File"})).to_string(),
        ".args.interval_ms: 5000000000 is out of range for u32"
    );
    assert_eq!(
        e(json!({"interval_ms": -1, "kind": "File"})).to_string(),
        ".args.interval_ms: -1 is out of range for u32"
    );
    assert_eq!(
        e(json!({"interval_ms": 1, "kind": "Socket"})).to_string(),
        ".args.kind: unknown variant `Socket`, expected one of: File, Dir, Link, Pair"
    );
    assert_eq!(
        e(json!({"interval_ms": 1, "kind": {"Link": {"target": "x"}}})).to_string(),
        ".args.kind.Link.hops: missing field of type u8"
    );
    assert_eq!(
        e(json!({"interval_ms": 1, "kind": "File", "extra": 1})).to_string(),
        ".args.extra: no such field (the fields are: interval_ms, kind)"
    );
    assert_eq!(
        e(json!({"kind": "File"})).to_string(),
        ".args.interval_ms: missing field of type u32"
    );
}

#[test]
fn limits_hold_both_ways() {
    let (g, root) = trace::<Vec<Vec<u8>>>().unwrap();
    let tight = Limits {
        max_depth: 4,
        max_items: 3,
        max_bytes: 1024,
    };
    let e = from_json(&json!([[1], [2], [3], [4]]), &g, root, "", tight).unwrap_err();
    assert_eq!(e.to_string(), "4 elements, more than 3");
    // A count of 2^40 with nothing after it: refused before anything is built.
    let e = to_json(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x20], &g, root, "", tight).unwrap_err();
    assert!(e.to_string().contains("more than 3"), "{e}");
    // 2^20 elements, within the default limits, but no bytes for them.
    let e = to_json(&[0x80, 0x80, 0x40], &g, root, "", Limits::default()).unwrap_err();
    assert!(e.to_string().contains("bytes left"), "{e}");
    // Deep nesting.
    let (g, root) = trace::<Option<Option<Option<Option<Option<u8>>>>>>().unwrap();
    let bytes = postcard::to_allocvec(&Some(Some(Some(Some(Some(1u8)))))).unwrap();
    let e = to_json(&bytes, &g, root, "", tight).unwrap_err();
    assert!(e.to_string().contains("nested deeper than 4"), "{e}");
    // Size.
    let (g, root) = trace::<String>().unwrap();
    let long = "x".repeat(4096);
    let e = to_json(&postcard::to_allocvec(&long).unwrap(), &g, root, "", tight).unwrap_err();
    assert!(e.to_string().contains("larger than 1024"), "{e}");
    let e = from_json(&json!(long), &g, root, "", tight).unwrap_err();
    assert!(e.to_string().contains("larger than 1024"), "{e}");
}

/// A peer's graph that shares nodes — each a tuple of many copies of the next — is a tree of
/// 50^40 nodes if walked as one. Reading a sequence of it stops at the output limit at once
/// (found by the `reflection` fuzz target: the element-size check walked the graph as a tree,
/// and this test never ended).
#[test]
fn a_graph_shared_to_explode_is_read_without_walking_it_whole() {
    use crate::schema::{Graph, Node};
    let mut nodes: Vec<Node> = (1..=40u32).map(|i| Node::Tuple(vec![i; 50])).collect();
    nodes.push(Node::Unit);
    nodes.push(Node::Seq(0));
    let graph = Graph { nodes };
    let limits = Limits {
        max_bytes: 4096,
        ..Limits::default()
    };
    // Three elements that take no bytes, each 50^40 nulls deep in arrays.
    let err = to_json(&[3], &graph, 41, "", limits).unwrap_err();
    assert!(err.to_string().contains("4096"), "{err}");
}
