//! Optional fields, found by asking: each struct traced is presented again as a map without one
//! of its fields, and serde either fills the field in (`Option`, `#[serde(default)]`) or says
//! it is missing.

use serde::de::DeserializeOwned;

use super::{Pass, Probe, Tracer};
use crate::schema::Node;

impl Tracer {
    /// Finds out, field by field, which fields serde fills in when they are missing.
    pub(super) fn probe_optional<T: DeserializeOwned>(&mut self, attempt: usize) {
        let structs = std::mem::take(&mut self.structs);
        for (container, node, route) in structs.get(self.probed_upto..).unwrap_or_default() {
            let (container, node) = (*container, *node);
            let count = match self.graph.nodes.get(node as usize) {
                Some(Node::Struct { fields, .. }) => fields.len(),
                _ => 0,
            };
            for omit in 0..count {
                let mut pass = Pass {
                    t: self,
                    stack: Vec::new(),
                    ending: 0,
                    attempt,
                    probe: Some(Probe {
                        container,
                        omit,
                        route: route.clone(),
                    }),
                    probed: false,
                    route: Vec::new(),
                    ending_enums: Vec::new(),
                    last: u32::MAX,
                };
                let result = T::deserialize(&mut pass);
                let probed = pass.probed;
                if !probed {
                    // Not reachable from this root (a struct traced for another root).
                    continue;
                }
                // Filled in, or (`missing field`, or any other refusal) required.
                let optional = result.is_ok();
                if let Some(Node::Struct { fields, .. }) = self.graph.nodes.get_mut(node as usize)
                    && let Some(f) = fields.get_mut(omit)
                {
                    f.optional = optional;
                }
            }
        }
        self.probed_upto = structs.len();
        self.structs = structs;
    }
}
