//! The test vectors of `docs/PROTOCOL.md` §6: canonical forms, hashes and a translated value,
//! computed here and required to appear in the document, so that it cannot drift from the code.

// Fixtures: types only traced.
#![allow(dead_code, unreachable_pub)]

use serde::Deserialize;

use super::hash;
use super::trace::Tracer;
use super::translate;

#[derive(Deserialize)]
struct Memory {
    total: u64,
    free: Option<u64>,
}

#[derive(Deserialize)]
enum Shape {
    Point,
    Circle(f64),
    Line(i32, i32),
    Rect { w: u32, h: u32 },
}

#[derive(Deserialize)]
struct List {
    value: u8,
    next: Option<Box<List>>,
}

#[derive(Deserialize)]
struct Meters(u32);

#[derive(Deserialize)]
struct Marker;

mod v1 {
    use serde::{Deserialize, Serialize};
    /// The older release.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    pub struct Stat {
        pub size: u64,
        pub mode: u32,
    }
}

mod v2 {
    use serde::{Deserialize, Serialize};
    /// The newer release: a field inserted, with a default.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    pub struct Stat {
        pub size: u64,
        #[serde(default)]
        pub mtime: u64,
        pub mode: u32,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn doc() -> String {
    include_str!("../../../docs/PROTOCOL.md")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

/// A row of the §6 table, whitespace removed: `` `type` | `canonical` | `hash` | ``.
fn row<T: serde::de::DeserializeOwned>(label: &str) -> String {
    let mut t = Tracer::default();
    let root = t.trace::<T>().unwrap();
    let g = t.into_graph();
    let canon = hash::canonical(&g, root).unwrap();
    let h = hash::fnv1a(&canon);
    assert_eq!(h, hash::hash(&g, root).unwrap());
    format!("|`{label}`|`{}`|`{h:016x}`|", hex(&canon))
}

/// A row for an argument tuple.
fn args_row<T: serde::de::DeserializeOwned>(label: &str) -> String {
    let mut t = Tracer::default();
    let root = t.trace::<T>().unwrap();
    let g = t.into_graph();
    let nodes = match g.node(root).unwrap() {
        super::Node::Tuple(items) => items.clone(),
        other => panic!("not a tuple: {other:?}"),
    };
    let canon = hash::canonical_tuple(&g, &nodes).unwrap();
    let h = hash::fnv1a(&canon);
    assert_eq!(h, hash::hash_tuple(&g, &nodes).unwrap());
    format!("|`{label}`|`{}`|`{h:016x}`|", hex(&canon))
}

#[test]
fn protocol_doc_has_the_hash_vectors() {
    let doc = doc();
    let rows = [
        row::<String>("String"),
        row::<u64>("u64"),
        row::<i32>("i32"),
        row::<bool>("bool"),
        row::<()>("()"),
        row::<bytes::Bytes>("Bytes"),
        row::<Option<u32>>("Option<u32>"),
        row::<Vec<String>>("Vec<String>"),
        row::<std::collections::BTreeMap<String, u32>>("BTreeMap<String,u32>"),
        row::<(u8, bool)>("(u8,bool)"),
        row::<Meters>("structMeters(u32)"),
        row::<Marker>("structMarker"),
        row::<Memory>("structMemory{total:u64,free:Option<u64>}"),
        row::<Shape>("enumShape{Point,Circle(f64),Line(i32,i32),Rect{w:u32,h:u32}}"),
        row::<Result<u64, String>>("Result<u64,String>"),
        row::<List>("structList{value:u8,next:Option<Box<List>>}"),
        args_row::<(String,)>("(path:String)"),
        args_row::<(String, u64)>("(path:String,max:u64)"),
    ];
    let mut missing = Vec::new();
    for r in &rows {
        if !doc.contains(r.as_str()) {
            missing.push(r.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "docs/PROTOCOL.md §6 lacks these rows:\n{}",
        missing.join("\n")
    );
}

#[test]
fn protocol_doc_has_the_translated_value() {
    let doc = doc();
    let new = v2::Stat {
        size: 300,
        mtime: 5,
        mode: 0o644,
    };
    let written = postcard::to_allocvec(&new).unwrap();
    let mut t = Tracer::default();
    let root = t.trace::<v2::Stat>().unwrap();
    let g = t.into_graph();
    let old: v1::Stat = translate::decode(&written, &g, root).unwrap();
    assert_eq!(
        old,
        v1::Stat {
            size: 300,
            mode: 0o644
        }
    );
    let as_old = postcard::to_allocvec(&old).unwrap();
    // And back: the older writer, read by the newer release, which fills `mtime` in.
    let mut t = Tracer::default();
    let root = t.trace::<v1::Stat>().unwrap();
    let g = t.into_graph();
    let again: v2::Stat = translate::decode(&as_old, &g, root).unwrap();
    assert_eq!(
        again,
        v2::Stat {
            size: 300,
            mtime: 0,
            mode: 0o644
        }
    );
    for (what, bytes) in [("written", &written), ("read", &as_old)] {
        let needle = format!("`{}`", hex(bytes));
        assert!(
            doc.contains(&needle),
            "docs/PROTOCOL.md lacks the {what} bytes {needle}"
        );
    }
}
