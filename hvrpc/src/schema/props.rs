//! Property tests: values of one release, encoded by postcard, read through the schema as the
//! other release's type, equal what that release should see; every value reads back as itself;
//! and a schema alone is enough to walk any value of its type, byte for byte.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::trace::Tracer;
use super::translate;

mod old {
    use super::*;
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub(super) struct Stat {
        pub(super) size: u64,
        pub(super) mode: u32,
        #[serde(default)]
        pub(super) legacy: String,
    }
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub(super) enum Kind {
        File,
        Dir(String),
    }
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub(super) struct Listing {
        pub(super) entries: Vec<Stat>,
        pub(super) kind: Kind,
        pub(super) meta: BTreeMap<String, u16>,
        pub(super) depth: i8,
    }
}

mod new {
    use super::*;
    /// Fields reordered, one inserted with a default, an `Option` added, `legacy` removed.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub(super) struct Stat {
        pub(super) mode: u32,
        pub(super) size: u64,
        #[serde(default)]
        pub(super) mtime: u64,
        pub(super) owner: Option<String>,
    }
    /// A variant added.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub(super) enum Kind {
        File,
        Dir(String),
        Link { target: String },
    }
    /// Integers widened, a field added with a default, fields reordered.
    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    pub(super) struct Listing {
        pub(super) kind: Kind,
        pub(super) entries: Vec<Stat>,
        pub(super) meta: BTreeMap<String, u64>,
        pub(super) depth: i64,
        #[serde(default)]
        pub(super) note: String,
    }
}

/// Reads `value`'s postcard bytes, through `W`'s schema, as an `R`.
fn via<W: Serialize + serde::de::DeserializeOwned, R: serde::de::DeserializeOwned>(
    value: &W,
) -> Result<R, String> {
    let bytes = postcard::to_allocvec(value).unwrap();
    let mut t = Tracer::default();
    let root = t.trace::<W>().unwrap();
    translate::decode::<R>(&bytes, &t.into_graph(), root)
}

fn text() -> impl Strategy<Value = String> {
    "[a-zé/.]{0,6}"
}

fn old_listing() -> impl Strategy<Value = old::Listing> {
    let stat = (any::<u64>(), any::<u32>(), text()).prop_map(|(size, mode, legacy)| old::Stat {
        size,
        mode,
        legacy,
    });
    let kind = prop_oneof![Just(old::Kind::File), text().prop_map(old::Kind::Dir)];
    (
        prop::collection::vec(stat, 0..4),
        kind,
        prop::collection::btree_map(text(), any::<u16>(), 0..4),
        any::<i8>(),
    )
        .prop_map(|(entries, kind, meta, depth)| old::Listing {
            entries,
            kind,
            meta,
            depth,
        })
}

fn new_listing() -> impl Strategy<Value = new::Listing> {
    let stat = (
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        prop::option::of(text()),
    )
        .prop_map(|(mode, size, mtime, owner)| new::Stat {
            mode,
            size,
            mtime,
            owner,
        });
    let kind = prop_oneof![
        Just(new::Kind::File),
        text().prop_map(new::Kind::Dir),
        text().prop_map(|target| new::Kind::Link { target }),
    ];
    (
        kind,
        prop::collection::vec(stat, 0..4),
        prop::collection::btree_map(text(), any::<u64>(), 0..4),
        any::<i64>(),
        text(),
    )
        .prop_map(|(kind, entries, meta, depth, note)| new::Listing {
            kind,
            entries,
            meta,
            depth,
            note,
        })
}

/// A value of any shape, built by asking the translator what is there (`deserialize_any`):
/// what a tool without the Rust types sees through a schema alone.
#[derive(Debug, PartialEq)]
enum Dyn {
    Unit,
    Bool(bool),
    Int(i128),
    Uint(u128),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Seq(Vec<Dyn>),
    Map(Vec<(Dyn, Dyn)>),
    Some(Box<Dyn>),
    None,
    Variant(String, Box<Dyn>),
}

impl<'de> Deserialize<'de> for Dyn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DynVisitor)
    }
}

struct DynVisitor;

macro_rules! visit {
    ($($m:ident: $t:ty => $e:expr),* $(,)?) => {
        $(fn $m<E: serde::de::Error>(self, v: $t) -> Result<Dyn, E> {
            #[allow(clippy::redundant_closure_call)]
            Ok(($e)(v))
        })*
    };
}

impl<'de> serde::de::Visitor<'de> for DynVisitor {
    type Value = Dyn;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("anything")
    }
    visit! {
        visit_bool: bool => Dyn::Bool,
        visit_i64: i64 => |v| Dyn::Int(i128::from(v)),
        visit_i128: i128 => Dyn::Int,
        visit_u64: u64 => |v| Dyn::Uint(u128::from(v)),
        visit_u128: u128 => Dyn::Uint,
        visit_f64: f64 => Dyn::Float,
        visit_str: &str => |v: &str| Dyn::Str(v.to_owned()),
        visit_string: String => Dyn::Str,
        visit_bytes: &[u8] => |v: &[u8]| Dyn::Bytes(v.to_vec()),
        visit_byte_buf: Vec<u8> => Dyn::Bytes,
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Dyn, E> {
        Ok(Dyn::Unit)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Dyn, E> {
        Ok(Dyn::None)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Dyn, D::Error> {
        Ok(Dyn::Some(Box::new(Dyn::deserialize(d)?)))
    }
    fn visit_newtype_struct<D: serde::Deserializer<'de>>(self, d: D) -> Result<Dyn, D::Error> {
        Dyn::deserialize(d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Dyn, A::Error> {
        let mut v = Vec::new();
        while let Some(x) = a.next_element()? {
            v.push(x);
        }
        Ok(Dyn::Seq(v))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Dyn, A::Error> {
        let mut v = Vec::new();
        while let Some(kv) = a.next_entry()? {
            v.push(kv);
        }
        Ok(Dyn::Map(v))
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, a: A) -> Result<Dyn, A::Error> {
        use serde::de::VariantAccess;
        let (name, variant): (String, _) = a.variant()?;
        Ok(Dyn::Variant(
            name,
            Box::new(variant.newtype_variant::<Dyn>()?),
        ))
    }
}

fn old_stat(s: &new::Stat) -> old::Stat {
    old::Stat {
        size: s.size,
        mode: s.mode,
        legacy: String::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The newer release's values, as the older release reads them: fields by name, unknown
    /// ones skipped, defaults filled — or, for the variant it lacks, an error naming it.
    #[test]
    fn newer_values_read_by_the_older_release(v in new_listing()) {
        // `meta` and `depth` are wider in the newer release: the older cannot read them at all
        // (the handshake check refuses that pair); so read only `entries` and `kind` here, as a
        // struct of the older release with just those two fields would.
        #[derive(Deserialize, Debug, PartialEq)]
        struct Partial {
            entries: Vec<old::Stat>,
            kind: old::Kind,
        }
        let got = via::<new::Listing, Partial>(&v);
        match &v.kind {
            new::Kind::Link { .. } => {
                let e = got.unwrap_err();
                prop_assert!(e.contains("unknown variant `Link`"), "{}", e);
            }
            k => {
                let kind = match k {
                    new::Kind::File => old::Kind::File,
                    new::Kind::Dir(d) => old::Kind::Dir(d.clone()),
                    new::Kind::Link { .. } => unreachable!(),
                };
                let want = Partial { entries: v.entries.iter().map(old_stat).collect(), kind };
                prop_assert_eq!(got.unwrap(), want);
            }
        }
    }

    /// The older release's values, as the newer release reads them: integers widened, new
    /// fields filled in.
    #[test]
    fn older_values_read_by_the_newer_release(v in old_listing()) {
        let got: new::Listing = via(&v).unwrap();
        let want = new::Listing {
            kind: match &v.kind {
                old::Kind::File => new::Kind::File,
                old::Kind::Dir(d) => new::Kind::Dir(d.clone()),
            },
            entries: v
                .entries
                .iter()
                .map(|s| new::Stat { mode: s.mode, size: s.size, mtime: 0, owner: None })
                .collect(),
            meta: v.meta.iter().map(|(k, n)| (k.clone(), u64::from(*n))).collect(),
            depth: i64::from(v.depth),
            note: String::new(),
        };
        prop_assert_eq!(got, want);
    }

    /// A value read through its own schema is itself.
    #[test]
    fn values_read_through_their_own_schema_are_themselves(v in new_listing(), w in old_listing()) {
        prop_assert_eq!(via::<_, new::Listing>(&v).unwrap(), v);
        prop_assert_eq!(via::<_, old::Listing>(&w).unwrap(), w);
    }

    /// The schema alone walks every value exactly (no trailing bytes, nothing short), and
    /// sees the fields by name.
    #[test]
    fn a_schema_alone_reads_every_value(v in new_listing()) {
        let d: Dyn = via(&v).unwrap();
        let Dyn::Map(fields) = &d else { panic!("{d:?}") };
        let names: Vec<&Dyn> = fields.iter().map(|(k, _)| k).collect();
        let want = ["kind", "entries", "meta", "depth", "note"].map(|n| Dyn::Str(n.into()));
        prop_assert_eq!(names, want.iter().collect::<Vec<_>>());
        let (_, entries) = &fields[1];
        let Dyn::Seq(entries) = entries else { panic!("{entries:?}") };
        prop_assert_eq!(entries.len(), v.entries.len());
        let (_, kind) = &fields[0];
        let want_kind = match &v.kind {
            new::Kind::File => Dyn::Variant("File".into(), Box::new(Dyn::Unit)),
            new::Kind::Dir(d) => Dyn::Variant("Dir".into(), Box::new(Dyn::Str(d.clone()))),
            new::Kind::Link { target } => Dyn::Variant(
                "Link".into(),
                Box::new(Dyn::Map(vec![(Dyn::Str("target".into()), Dyn::Str(target.clone()))])),
            ),
        };
        prop_assert_eq!(kind, &want_kind);
        let (_, depth) = &fields[3];
        prop_assert_eq!(depth, &Dyn::Int(i128::from(v.depth)));
    }
}
