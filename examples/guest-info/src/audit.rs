//! The agent's audit log (`guest-info-agent --audit`): every call, who made it and how it
//! ended, through hvrpc's server-side interceptor, and a count of calls per method.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use hvrpc::intercept::{CallInfo, Interceptor, Outcome};

/// Logs every call at `info` and counts calls per method.
#[derive(Debug, Default)]
pub struct Audit {
    counts: Mutex<BTreeMap<String, u64>>,
}

impl Audit {
    /// Calls seen so far, by `Service.method`.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Interceptor for Audit {
    fn after(&self, call: &CallInfo, outcome: &Outcome, took: Duration) {
        let method = format!("{}.{}", call.service(), call.method());
        tracing::info!(peer = %call.peer(), %method, ?outcome, ?took, "call");
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(method)
            .or_default() += 1;
    }
}
