//! Schemas from a peer and values in another release's shape: the checks and the translator
//! must never panic, loop, recurse without bound or allocate without bound, whatever the graph
//! and the bytes. Two modes, by the first byte:
//!
//! * even: the rest is a postcard `(Graph, u32)` — a peer's schema, arbitrary — then value
//!   bytes. The graph is validated, hashed, checked against a reader type, and (when the check
//!   passes) the value is translated into it.
//! * odd: a real writer type's traced graph (one of several releases of the same types), a
//!   reader type, and arbitrary value bytes. A value the check passes either translates or
//!   fails with an error; a value the writer itself wrote translates.
//!
//! In both modes the value is also turned into JSON through the writer's schema
//! (`hvrpc::json`); JSON that comes out goes back in, and out again unchanged.
#![no_main]

use hvrpc::json::{Limits, from_json, to_json};
use hvrpc::schema::Graph;
use hvrpc::schema::fuzz::{check, hash, trace, translate};
use serde::{Deserialize, Serialize};

mod v1 {
    use serde::{Deserialize, Serialize};
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct Stat {
        pub size: u64,
        pub mode: u32,
        #[serde(default)]
        pub legacy: String,
    }
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub enum Event {
        Tick(u32),
        Stat(Stat),
        Tree(Vec<Event>),
    }
}

mod v2 {
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct Stat {
        pub size: u64,
        #[serde(default)]
        pub mtime: u64,
        pub mode: u32,
        pub owner: Option<String>,
    }
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub enum Event {
        Tick(u64),
        Stat(Stat),
        Tree(Vec<Event>),
        Note {
            text: String,
            tags: BTreeMap<String, i16>,
        },
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Everything {
    a: (bool, i8, i128, u128, f32, f64, char),
    b: Option<Box<Everything>>,
    c: Vec<(String, Vec<u8>)>,
    d: [u16; 3],
    e: (),
    f: Result<u32, String>,
}

/// Translates `value` from (`graph`, `root`) into reader type `R`, if the check lets it.
fn read_as<R>(graph: &Graph, root: u32, value: &[u8]) -> Option<Result<R, String>>
where
    R: serde::de::DeserializeOwned,
{
    let (rg, rr) = trace::<R>().expect("the reader types trace");
    check(graph, root, &rg, rr).ok()?;
    Some(translate::<R>(value, graph, root))
}

/// JSON out, in, and out again: the same JSON.
fn json_round_trip(graph: &Graph, root: u32, value: &[u8]) {
    let limits = Limits::default();
    let Ok(j) = to_json(value, graph, root, "", limits) else {
        return;
    };
    let bytes = from_json(&j, graph, root, "", limits).expect("JSON that came out goes back in");
    let again = to_json(&bytes, graph, root, "", limits).expect("and out again");
    assert_eq!(j, again);
}

fn any_reader(which: u8, graph: &Graph, root: u32, value: &[u8]) {
    json_round_trip(graph, root, value);
    match which % 5 {
        0 => drop(read_as::<v1::Event>(graph, root, value)),
        1 => drop(read_as::<v2::Event>(graph, root, value)),
        2 => drop(read_as::<v1::Stat>(graph, root, value)),
        3 => drop(read_as::<v2::Stat>(graph, root, value)),
        _ => drop(read_as::<Everything>(graph, root, value)),
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [mode, which, rest @ ..] = data else {
        return;
    };
    if mode % 2 == 0 {
        let Ok(((graph, root), value)) = postcard::take_from_bytes::<(Graph, u32)>(rest) else {
            return;
        };
        if graph.validate().is_err() {
            return;
        }
        let _ = hash(&graph, root);
        any_reader(*which, &graph, root, value);
        return;
    }
    // A real writer: its own graph, arbitrary bytes.
    let (graph, root) = match mode / 2 % 4 {
        0 => trace::<v1::Event>(),
        1 => trace::<v2::Event>(),
        2 => trace::<v1::Stat>(),
        _ => trace::<v2::Stat>(),
    }
    .expect("the writer types trace");
    any_reader(*which, &graph, root, rest);
    // What the writer writes itself always translates into its own type.
    if mode / 2 % 4 == 1
        && let Ok(event) = postcard::from_bytes::<v2::Event>(rest)
    {
        let again = postcard::to_allocvec(&event).unwrap();
        let back: v2::Event = translate(&again, &graph, root).expect("its own shape translates");
        assert_eq!(back, event);
    }
});
