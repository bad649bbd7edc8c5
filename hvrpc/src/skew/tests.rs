//! The routing rules, on two releases of one service.

// Fixtures: types only traced.
#![allow(dead_code)]

use serde::{Deserialize, Serialize};

use super::*;
use crate::schema::{MethodDef, trace_method};

mod v1 {
    use super::*;

    #[derive(Serialize, Deserialize)]
    pub(super) struct Memory {
        pub(super) total_bytes: u64,
        pub(super) free_bytes: u64,
    }

    #[derive(Serialize, Deserialize)]
    pub(super) struct Stat {
        pub(super) size: u64,
    }
}

mod v2 {
    use super::*;

    #[derive(Serialize, Deserialize)]
    pub(super) struct Memory {
        pub(super) total_bytes: u64,
        pub(super) free_bytes: u64,
        pub(super) swap_bytes: Option<u64>,
    }

    #[derive(Serialize, Deserialize)]
    pub(super) struct Stat {
        pub(super) size: String,
    }

    #[derive(Serialize, Deserialize)]
    pub(super) struct Query {
        pub(super) path: String,
        #[serde(default)]
        pub(super) follow: bool,
    }
}

fn def(
    name: &'static str,
    args: &'static [&'static str],
    trace: crate::schema::TraceFn,
) -> MethodDef {
    MethodDef {
        name,
        doc: "",
        kind: MethodKind::Unary,
        args,
        trace,
    }
}

fn spec(defs: &[MethodDef]) -> Arc<ServiceSpec> {
    Arc::new(ServiceSpec::build("Agent", "", defs).unwrap())
}

/// Release 1: ping, memory, stat, retired.
fn release1() -> Arc<ServiceSpec> {
    spec(&[
        def("ping", &[], trace_method::<(), u32>),
        def("memory", &[], trace_method::<(), v1::Memory>),
        def("stat", &["path"], trace_method::<(String,), v1::Stat>),
        def("retired", &["x"], trace_method::<(u32,), u32>),
        def("query", &["path"], trace_method::<(String,), u64>),
    ])
}

/// Release 2: one inserted first, `retired` removed, `memory` with a field added, `stat`
/// with a field's type changed, `query` taking a struct.
fn release2() -> Arc<ServiceSpec> {
    spec(&[
        def("inserted", &[], trace_method::<(), u32>),
        def("ping", &[], trace_method::<(), u32>),
        def("memory", &[], trace_method::<(), v2::Memory>),
        def("stat", &["path"], trace_method::<(String,), v2::Stat>),
        def("query", &["q"], trace_method::<(v2::Query,), u64>),
    ])
}

fn hello(served: &[&Arc<ServiceSpec>], wants: &[(&Arc<ServiceSpec>, bool)]) -> Hello {
    Hello {
        features: 0,
        max_frame: 1 << 20,
        max_concurrent_calls: 16,
        services: served.iter().map(|s| s.desc().clone()).collect(),
        wants: wants
            .iter()
            .map(|(s, strict)| {
                let mut d = s.desc().clone();
                d.strict = *strict;
                d
            })
            .collect(),
        agent: "test".into(),
    }
}

/// The schemas `side` sends to `peer`, as the peer indexes them.
fn exchanged(side: &Ours<'_>, peer: &Hello) -> PeerSchemas {
    peer_schemas(schemas_to_send(side, peer).unwrap_or_default())
}

fn index_of(spec: &ServiceSpec, name: &str) -> usize {
    spec.desc
        .methods
        .iter()
        .position(|m| m.name == name)
        .unwrap()
}

#[test]
fn methods_are_matched_by_name_and_differences_checked_before_sending() {
    let (old, new) = (release1(), release2());
    // A new host calling an old guest.
    let guest = hello(&[&old], &[]);
    let host_side = Ours {
        served: &[],
        wanted: std::slice::from_ref(&new),
    };
    let guest_side = Ours {
        served: std::slice::from_ref(&old),
        wanted: &[],
    };
    let host = hello(&[], &[(&new, false)]);
    let from_guest = exchanged(&guest_side, &host);
    let route_of = |name| route(&new, index_of(&new, name), &guest, &from_guest);
    // `ping` is method 0 on the guest, 1 on the host: by name, and nothing to translate.
    assert!(matches!(
        route_of("ping"),
        Route::Call {
            service: 0,
            method: 0,
            result: None
        }
    ));
    // `memory` gained an Option field: read through the guest's shape.
    assert!(matches!(
        route_of("memory"),
        Route::Call {
            method: 1,
            result: Some(_),
            ..
        }
    ));
    match route_of("inserted") {
        Route::Unimplemented(m) => assert!(
            m.contains("Agent.inserted is not implemented by the peer"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    match route_of("stat") {
        Route::Incompatible(m) => {
            assert_eq!(&*m, "Agent.stat: result.size: string here, u64 on the peer")
        }
        other => panic!("{other:?}"),
    }
    match route_of("query") {
        Route::Incompatible(m) => assert_eq!(
            &*m,
            "Agent.query: args.q: struct Query here, string on the peer"
        ),
        other => panic!("{other:?}"),
    }
    // Nothing was exchanged from the host's side that the guest needs for `ping`; the guest
    // reads the host's `query` arguments only through a schema, which the host sent.
    let from_host = exchanged(&host_side, &guest);
    let readings = readings(&[Arc::clone(&old)], &host, &from_host);
    assert!(matches!(readings.get(0, 0), ArgsRoute::Direct));
    assert!(matches!(
        readings.get(0, index_of(&old, "query") as u32),
        ArgsRoute::Translate(_, None)
    ));
}

#[test]
fn identical_releases_exchange_nothing_and_route_directly() {
    let a = release2();
    let served = hello(&[&a], &[]);
    let wanting = hello(&[], &[(&a, false)]);
    let client = Ours {
        served: &[],
        wanted: std::slice::from_ref(&a),
    };
    let server = Ours {
        served: std::slice::from_ref(&a),
        wanted: &[],
    };
    assert!(schemas_to_send(&client, &served).is_none());
    assert!(schemas_to_send(&server, &wanting).is_none());
    let routes = routes(std::slice::from_ref(&a), &served, &PeerSchemas::new());
    for i in 0..a.desc.methods.len() {
        assert!(matches!(
            routes.get("Agent", i as u32),
            Some(Route::Call { result: None, method, .. }) if *method == i as u32
        ));
    }
}

#[test]
fn both_sides_or_neither_send_schemas() {
    let (old, new) = (release1(), release2());
    for (client_spec, server_spec) in [(&old, &new), (&new, &old)] {
        let client = Ours {
            served: &[],
            wanted: std::slice::from_ref(client_spec),
        };
        let server = Ours {
            served: std::slice::from_ref(server_spec),
            wanted: &[],
        };
        let client_hello = hello(&[], &[(client_spec, false)]);
        let server_hello = hello(&[server_spec], &[]);
        assert!(schemas_to_send(&client, &server_hello).is_some());
        assert!(schemas_to_send(&server, &client_hello).is_some());
    }
    // A service one side neither serves nor wants does not count.
    let other = Ours {
        served: &[],
        wanted: &[],
    };
    assert!(schemas_to_send(&other, &hello(&[&old], &[])).is_none());
}

#[test]
fn strict_wants_refuse_any_difference_from_either_side() {
    let (old, new) = (release1(), release2());
    let client = Ours {
        served: &[],
        wanted: std::slice::from_ref(&new),
    };
    let e = check_strict(&client, &[true], &hello(&[&old], &[])).unwrap_err();
    assert!(e.contains("service Agent is defined differently"), "{e}");
    assert!(e.contains("Connector::require"), "{e}");
    let server = Ours {
        served: std::slice::from_ref(&old),
        wanted: &[],
    };
    let e = check_strict(&server, &[], &hello(&[], &[(&new, true)])).unwrap_err();
    assert!(e.contains("service Agent is defined differently"), "{e}");
    // Identical: accepted; not strict: accepted.
    check_strict(&client, &[true], &hello(&[&new], &[])).unwrap();
    check_strict(&client, &[false], &hello(&[&old], &[])).unwrap();
    let e = check_strict(&client, &[true], &hello(&[], &[])).unwrap_err();
    assert!(
        e.contains("the peer does not serve Agent (it serves: nothing)"),
        "{e}"
    );
}

#[test]
fn a_bad_peer_schema_fails_its_methods_only() {
    let (old, new) = (release1(), release2());
    let guest = hello(&[&old], &[]);
    let mut broken = old.schema.clone();
    broken.graph.nodes.clear();
    let malformed = peer_schemas(vec![broken]);
    // A schema that does not hash to what the Hello said.
    let mut lying = old.schema.clone();
    if let Some(Node::Struct { fields, .. }) = lying
        .graph
        .nodes
        .iter_mut()
        .find(|n| matches!(n, Node::Struct { name, .. } if name == "Memory"))
    {
        fields.reverse();
    }
    let lying = peer_schemas(vec![lying]);
    for (schemas, why) in [
        (&malformed, "malformed"),
        (&lying, "does not match the hashes it announced"),
        (&PeerSchemas::new(), "the peer did not describe it"),
    ] {
        match route(&new, index_of(&new, "memory"), &guest, schemas) {
            Route::Incompatible(m) => assert!(m.contains(why), "{m}"),
            other => panic!("{other:?}"),
        }
        // Unchanged methods do not need the schema.
        assert!(matches!(
            route(&new, index_of(&new, "ping"), &guest, schemas),
            Route::Call { result: None, .. }
        ));
    }
}
