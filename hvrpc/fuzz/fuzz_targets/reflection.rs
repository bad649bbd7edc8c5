//! A reflection answer from a peer, and JSON from a user, through that answer's schemas — what
//! `hvrpc describe` and `hvrpc call` do with them: nothing may panic, loop, recurse without
//! bound or allocate without bound.
//!
//! The input is a postcard `Result<Vec<ServiceSchema>, ReflectionError>` (the answer of
//! `hvrpc.Reflection.describe`, decoded as its generated client decodes it), then JSON text.
//! Each schema that validates is hashed, and the JSON is encoded through every argument and
//! result of every method (`hvrpc::json::from_json`); what encodes comes back out as JSON
//! (`to_json`) and goes in again to the same bytes. The JSON text's own bytes are also read as
//! a value of each node (`to_json` of arbitrary postcard).
#![no_main]

use hvrpc::json::{Limits, from_json, to_json};
use hvrpc::reflection::ReflectionError;
use hvrpc::schema::ServiceSchema;
use hvrpc::schema::fuzz::hash;

type Answer = Result<Vec<ServiceSchema>, ReflectionError>;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok((answer, rest)) = postcard::take_from_bytes::<Answer>(data) else {
        return;
    };
    let Ok(schemas) = answer else {
        return;
    };
    let json: Option<serde_json::Value> = serde_json::from_slice(rest).ok();
    let mut limits = Limits::default();
    limits.max_bytes = 1 << 20;
    for s in &schemas {
        if s.graph.validate().is_err() {
            continue;
        }
        for m in &s.methods {
            let nodes = m.arg_nodes().into_iter().chain([m.result]);
            for node in nodes {
                if u64::from(node) >= s.graph.nodes.len() as u64 {
                    continue;
                }
                let _ = hash(&s.graph, node);
                let _ = to_json(rest, &s.graph, node, ".args", limits);
                let Some(j) = &json else { continue };
                let Ok(bytes) = from_json(j, &s.graph, node, ".args", limits) else {
                    continue;
                };
                let out = to_json(&bytes, &s.graph, node, "", Limits::default())
                    .expect("what encoded decodes");
                let again = from_json(&out, &s.graph, node, "", Limits::default())
                    .expect("what decoded encodes");
                assert_eq!(bytes, again, "JSON -> postcard -> JSON -> postcard changed the bytes");
            }
        }
    }
});
