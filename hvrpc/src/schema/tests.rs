//! The schema parts together: tracing what serde does, hashing, compatibility, translation.

// Fixtures: types only read, some only traced.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::compat::{self, Mismatch};
use super::hash;
use super::trace::Tracer;
use super::translate;
use super::{Graph, Node, VariantShape};

fn traced<T: serde::de::DeserializeOwned>() -> (Graph, u32) {
    let mut t = Tracer::default();
    let root = t.trace::<T>().unwrap();
    (t.into_graph(), root)
}

fn struct_fields(g: &Graph, n: u32) -> Vec<(String, bool)> {
    match g.node(n).unwrap() {
        Node::Struct { fields, .. } => fields
            .iter()
            .map(|f| (f.name.clone(), f.optional))
            .collect(),
        other => panic!("not a struct: {other:?}"),
    }
}

mod v1 {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct Memory {
        pub total_bytes: u64,
        pub free_bytes: u64,
        pub note: String,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub enum Error {
        NotFound(String),
        Denied,
    }
}

mod v2 {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct Memory {
        // Reordered, one removed (`note`), two added.
        pub free_bytes: u64,
        pub total_bytes: u64,
        pub swap_bytes: Option<u64>,
        #[serde(default)]
        pub tags: Vec<String>,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub enum Error {
        NotFound(String),
        Denied,
        Busy { retry_ms: u32 },
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct Changed {
        pub total_bytes: String,
    }

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub struct Required {
        pub total_bytes: u64,
        pub free_bytes: u64,
        pub note: String,
        pub new_required: u32,
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Tree {
    label: String,
    children: Vec<Tree>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Expr {
    Lit(i64),
    Add(Box<Expr>, Box<Expr>),
    Neg { inner: Box<Expr> },
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum List {
    Cons(u8, Box<List>),
    Nil,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Wrapper<T> {
    value: T,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(transparent)]
struct Meters(f64);

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Attrs {
    #[serde(rename = "id")]
    the_id: u32,
    long_name: String,
    #[serde(skip)]
    cache: u8,
    #[serde(default)]
    count: u16,
    meters: Meters,
    #[serde(with = "as_string")]
    via_string: u32,
}

mod as_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Everything {
    b: bool,
    i: i32,
    big: u128,
    neg: i128,
    f: f32,
    c: char,
    s: String,
    bytes: Vec<u8>,
    opt: Option<u16>,
    list: Vec<u32>,
    map: BTreeMap<String, u64>,
    tuple: (u8, String),
    array: [u16; 3],
    unit: (),
    nested: Option<Vec<Option<u8>>>,
    time: std::time::Duration,
    addr: std::net::IpAddr,
    e: v2::Error,
}

#[test]
fn tracing_sees_what_serde_writes_attributes_included() {
    let (g, root) = traced::<Attrs>();
    // rename, rename_all, skip (`cache` is gone), default, transparent, `with`.
    assert_eq!(
        struct_fields(&g, root),
        [
            ("id".into(), false),
            ("longName".into(), false),
            ("count".into(), true),
            ("meters".into(), false),
            ("viaString".into(), false),
        ]
    );
    let Node::Struct { fields, .. } = g.node(root).unwrap() else {
        panic!()
    };
    assert_eq!(
        g.node(fields[3].node),
        Some(&Node::F64),
        "transparent: the inner f64"
    );
    assert_eq!(
        g.node(fields[4].node),
        Some(&Node::Str),
        "with: serialized as a string"
    );
}

#[test]
fn every_kind_of_node_and_every_variant() {
    let (g, root) = traced::<Everything>();
    g.validate().unwrap();
    let fields = match g.node(root).unwrap() {
        Node::Struct { fields, .. } => fields.clone(),
        _ => panic!(),
    };
    let kind = |name: &str| {
        let f = fields.iter().find(|f| f.name == name).unwrap();
        g.node(f.node).unwrap().clone()
    };
    assert_eq!(kind("b"), Node::Bool);
    assert_eq!(kind("big"), Node::U128);
    assert_eq!(kind("neg"), Node::I128);
    assert_eq!(kind("c"), Node::Char);
    assert_eq!(kind("bytes"), Node::Bytes, "Vec<u8> is a byte string");
    assert!(matches!(kind("opt"), Node::Option(_)));
    assert!(matches!(kind("map"), Node::Map { .. }));
    assert!(matches!(kind("array"), Node::Tuple(ref t) if t.len() == 3));
    assert_eq!(kind("unit"), Node::Unit);
    let Node::Enum { variants, .. } = kind("e") else {
        panic!()
    };
    let names: Vec<_> = variants.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["NotFound", "Denied", "Busy"]);
    assert!(matches!(variants[0].shape, VariantShape::Newtype(_)));
    assert!(matches!(variants[1].shape, VariantShape::Unit));
    assert!(matches!(variants[2].shape, VariantShape::Struct(ref f) if f[0].name == "retry_ms"));
    let Node::Enum { variants, .. } = kind("addr") else {
        panic!()
    };
    assert_eq!(variants.len(), 2, "IpAddr: V4 and V6");
}

#[test]
fn recursive_types_end() {
    let (g, root) = traced::<Tree>();
    let Node::Struct { fields, .. } = g.node(root).unwrap() else {
        panic!()
    };
    assert_eq!(
        g.node(fields[1].node),
        Some(&Node::Seq(root)),
        "children: Vec<Tree>"
    );
    let (g, root) = traced::<Expr>();
    let Node::Enum { variants, .. } = g.node(root).unwrap() else {
        panic!()
    };
    assert!(matches!(&variants[1].shape, VariantShape::Tuple(t) if t.len() == 2));
    // Whose first variant recurses: the ending variant is found by trying.
    let (g, root) = traced::<List>();
    let Node::Enum { variants, .. } = g.node(root).unwrap() else {
        panic!()
    };
    assert!(matches!(&variants[0].shape, VariantShape::Tuple(t) if t.len() == 2));
    assert_ne!(hash::hash(&g, root).unwrap(), 0);
}

#[test]
fn generic_instantiations_are_different_nodes() {
    let mut t = Tracer::default();
    let a = t.trace::<Wrapper<u32>>().unwrap();
    let b = t.trace::<Wrapper<String>>().unwrap();
    let c = t.trace::<Wrapper<Vec<u16>>>().unwrap();
    let g = t.into_graph();
    assert_ne!(a, b);
    assert_ne!(b, c);
    assert_ne!(hash::hash(&g, a).unwrap(), hash::hash(&g, b).unwrap());
}

#[test]
fn hashes_see_structure_and_names_not_container_names() {
    mod a {
        #[derive(serde::Deserialize)]
        pub struct Point {
            pub x: i32,
            pub y: i32,
        }
    }
    mod b {
        #[derive(serde::Deserialize)]
        pub struct Spot {
            pub x: i32,
            pub y: i32,
        }
        #[derive(serde::Deserialize)]
        pub struct Swapped {
            pub y: i32,
            pub x: i32,
        }
        #[derive(serde::Deserialize)]
        pub struct Renamed {
            pub x: i32,
            pub z: i32,
        }
    }
    let h = |f: fn() -> (Graph, u32)| {
        let (g, r) = f();
        hash::hash(&g, r).unwrap()
    };
    let p = h(traced::<a::Point>);
    assert_eq!(p, h(traced::<b::Spot>), "another name, the same shape");
    assert_ne!(p, h(traced::<b::Swapped>), "fields in another order");
    assert_ne!(p, h(traced::<b::Renamed>), "a field renamed");
    assert_ne!(h(traced::<v1::Memory>), h(traced::<v2::Memory>));
}

fn check<W: serde::de::DeserializeOwned, R: serde::de::DeserializeOwned>() -> Result<(), Mismatch> {
    let (wg, w) = traced::<W>();
    let (rg, r) = traced::<R>();
    compat::check(&wg, w, &rg, r)
}

#[test]
fn compatible_changes_pass_and_incompatible_ones_name_the_path() {
    check::<v1::Memory, v2::Memory>().unwrap();
    check::<v2::Memory, v1::Memory>().unwrap_err();
    // v2 lacks `note`, which v1 needs.
    let m = check::<v2::Memory, v1::Memory>().unwrap_err();
    assert_eq!(m.path, ".note");
    check::<v1::Error, v2::Error>().unwrap();
    check::<v2::Error, v1::Error>().unwrap(); // a variant v1 lacks: the call that sends it fails
    let m = check::<v1::Memory, v2::Changed>().unwrap_err();
    assert_eq!(
        (m.path.as_str(), m.reader.as_str(), m.writer.as_str()),
        (".total_bytes", "string", "u64")
    );
    let m = check::<v1::Memory, v2::Required>().unwrap_err();
    assert_eq!(m.path, ".new_required");
    assert!(m.reader.contains("required"), "{m:?}");
    check::<Tree, Tree>().unwrap();
    check::<Expr, Expr>().unwrap();
}

fn via<W: Serialize + serde::de::DeserializeOwned, R: serde::de::DeserializeOwned>(
    value: &W,
) -> Result<R, String> {
    let bytes = postcard::to_allocvec(value).unwrap();
    let (g, root) = traced::<W>();
    translate::decode::<R>(&bytes, &g, root)
}

#[test]
fn translation_between_releases() {
    let old = v1::Memory {
        total_bytes: 16 << 30,
        free_bytes: 3 << 30,
        note: "ok".into(),
    };
    let new: v2::Memory = via(&old).unwrap();
    assert_eq!(
        new,
        v2::Memory {
            free_bytes: 3 << 30,
            total_bytes: 16 << 30,
            swap_bytes: None,
            tags: vec![],
        }
    );
    let back = v2::Memory {
        free_bytes: 1,
        total_bytes: 2,
        swap_bytes: Some(3),
        tags: vec!["x".into()],
    };
    let err = via::<v2::Memory, v1::Memory>(&back).unwrap_err();
    assert!(err.contains("missing field `note`"), "{err}");
    let e: v1::Error = via(&v2::Error::NotFound("/x".into())).unwrap();
    assert_eq!(e, v1::Error::NotFound("/x".into()));
    let err = via::<v2::Error, v1::Error>(&v2::Error::Busy { retry_ms: 5 }).unwrap_err();
    assert!(err.contains("unknown variant `Busy`"), "{err}");
}

#[test]
fn a_value_in_its_own_shape_translates_to_itself() {
    let v = Everything {
        b: true,
        i: -5,
        big: u128::MAX,
        neg: i128::MIN,
        f: 1.5,
        c: 'é',
        s: "text".into(),
        bytes: vec![1, 2, 3],
        opt: Some(9),
        list: vec![1, 300, 70_000],
        map: BTreeMap::from([("a".into(), 1), ("b".into(), u64::MAX)]),
        tuple: (7, "t".into()),
        array: [1, 2, 3],
        unit: (),
        nested: Some(vec![None, Some(4)]),
        time: std::time::Duration::from_millis(1500),
        addr: std::net::IpAddr::from([10, 0, 0, 1]),
        e: v2::Error::Busy { retry_ms: 77 },
    };
    let back: Everything = via(&v).unwrap();
    assert_eq!(back, v);
    let tree = Tree {
        label: "root".into(),
        children: vec![Tree {
            label: "leaf".into(),
            children: vec![],
        }],
    };
    assert_eq!(via::<Tree, Tree>(&tree).unwrap(), tree);
    let map: HashMap<u8, Vec<Option<String>>> = HashMap::from([(1, vec![None, Some("x".into())])]);
    assert_eq!(
        via::<_, HashMap<u8, Vec<Option<String>>>>(&map).unwrap(),
        map
    );
}

#[test]
fn trailing_bytes_and_garbage_fail_without_panicking() {
    let (g, root) = traced::<v1::Memory>();
    let mut bytes = postcard::to_allocvec(&v1::Memory {
        total_bytes: 1,
        free_bytes: 2,
        note: "n".into(),
    })
    .unwrap();
    bytes.push(0);
    let err = translate::decode::<v1::Memory>(&bytes, &g, root).unwrap_err();
    assert!(err.contains("1 unexpected bytes"), "{err}");
    for len in 0..64 {
        let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        let _ = translate::decode::<v2::Memory>(&junk, &g, root);
        let _ = translate::decode::<Everything>(&junk, &g, root);
    }
}

#[test]
fn hostile_graphs_are_refused_not_followed() {
    // A node that is its own child, and a long chain: no loop, no stack overflow.
    let cyclic = Graph {
        nodes: vec![Node::Option(0)],
    };
    assert!(hash::hash(&cyclic, 0).is_err());
    let _ = translate::decode::<Option<u8>>(&[1, 1, 1, 1, 1, 1, 1, 1], &cyclic, 0);
    let chain = Graph {
        nodes: (0..100_000u32)
            .map(|i| Node::Option(i + 1))
            .chain([Node::U8])
            .collect(),
    };
    assert!(hash::hash(&chain, 0).is_err());
    let dangling = Graph {
        nodes: vec![Node::Seq(7)],
    };
    assert!(dangling.validate().is_err());
    // Exponential sharing is capped by size.
    let mut nodes = vec![Node::U8];
    for i in 0..40u32 {
        nodes.push(Node::Tuple(vec![i, i]));
    }
    let wide = Graph { nodes };
    assert!(hash::hash(&wide, 40).is_err());
    compat::check(&cyclic, 0, &cyclic, 0).ok();
}

#[test]
fn sharing_does_not_make_checks_exponential() {
    let mut nodes = vec![Node::U8];
    for i in 0..60u32 {
        nodes.push(Node::Tuple(vec![i, i]));
    }
    let wide = Graph { nodes };
    compat::check(&wide, 60, &wide, 60).unwrap();
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Progress {
    done: u64,
    eta_ms: Option<u64>,
    #[serde(default)]
    stage: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Event {
    Started,
    Log(String),
    Progress(Progress),
}

#[test]
fn optional_fields_are_found_behind_any_variant() {
    let (g, root) = traced::<Event>();
    let Node::Enum { variants, .. } = g.node(root).unwrap() else {
        panic!()
    };
    let VariantShape::Newtype(p) = variants[2].shape else {
        panic!("{variants:?}")
    };
    assert_eq!(
        struct_fields(&g, p),
        [
            ("done".into(), false),
            ("eta_ms".into(), true),
            ("stage".into(), true)
        ]
    );
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Holder {
    e: Box<Chain>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Chain {
    Leaf,
    More(Holder),
}

#[test]
fn recursion_through_a_struct_ends_at_the_enum() {
    // Traced from the enum and from the struct: the cycle Chain → Holder → Chain ends either
    // way, with the variant that does not recurse found by trying.
    let (g, root) = traced::<Chain>();
    g.validate().unwrap();
    let Node::Enum { variants, .. } = g.node(root).unwrap() else {
        panic!()
    };
    let VariantShape::Newtype(h) = variants[1].shape else {
        panic!("{variants:?}")
    };
    let Node::Struct { fields, .. } = g.node(h).unwrap() else {
        panic!()
    };
    assert_eq!(fields[0].node, root);
    let (g, root) = traced::<Holder>();
    let v = Holder {
        e: Box::new(Chain::More(Holder {
            e: Box::new(Chain::Leaf),
        })),
    };
    let bytes = postcard::to_allocvec(&v).unwrap();
    assert_eq!(translate::decode::<Holder>(&bytes, &g, root).unwrap(), v);
}

#[test]
fn lengths_beyond_the_input_are_refused() {
    let (g, root) = traced::<Vec<u32>>();
    // A length of 2^62 and nothing after it.
    let bytes = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40];
    let err = translate::decode::<Vec<u32>>(&bytes, &g, root).unwrap_err();
    assert!(err.contains("bytes left"), "{err}");
    let (g, root) = traced::<Vec<()>>();
    let err = translate::decode::<Vec<()>>(&bytes, &g, root).unwrap_err();
    assert!(err.contains("bytes left"), "{err}");
    let ok = translate::decode::<Vec<()>>(&[3], &g, root).unwrap();
    assert_eq!(ok.len(), 3);
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Outer {
    A,
    B(Inner),
    C,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Inner {
    X,
    Y(u8),
    Z(String),
}

#[test]
fn enums_behind_a_later_variant_are_explored_too() {
    let (g, root) = traced::<Result<v1::Memory, v1::Error>>();
    let Node::Enum { name, variants } = g.node(root).unwrap() else {
        panic!()
    };
    assert_eq!(name, "Result");
    let VariantShape::Newtype(e) = variants[1].shape else {
        panic!("{variants:?}")
    };
    let Node::Enum { variants, .. } = g.node(e).unwrap() else {
        panic!()
    };
    assert!(
        matches!(variants[0].shape, VariantShape::Newtype(_)),
        "{variants:?}"
    );
    let (g, root) = traced::<Vec<Outer>>();
    let Node::Seq(o) = g.node(root).unwrap() else {
        panic!()
    };
    let Node::Enum { variants, .. } = g.node(*o).unwrap() else {
        panic!()
    };
    let VariantShape::Newtype(i) = variants[1].shape else {
        panic!("{variants:?}")
    };
    let Node::Enum { variants, .. } = g.node(i).unwrap() else {
        panic!()
    };
    assert!(matches!(variants[2].shape, VariantShape::Newtype(s) if g.node(s) == Some(&Node::Str)));
}
