//! Server-side interception: an [`Interceptor`] sees every call of the peer's before its
//! handler runs (and may refuse it) and after it ends, with its outcome — for audit logs
//! ("which host asked this guest for what"), metrics and extra authorization.
//!
//! Invariants:
//!
//! 1. `before` runs once for every call that reaches a service (after admission: limits and
//!    unknown services are refused without it), before its arguments are decoded; a refusal
//!    answers `PermissionDenied` and the handler never runs.
//! 2. `after` runs exactly once for every call `before` saw — answered, refused, failed,
//!    cancelled by the peer, expired, or dropped with the connection — and never for one it
//!    did not see.
//! 3. Without an interceptor (and with debug events off) a call pays one branch for all this.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use hvrpc_transport::PeerAddr;
use tokio::time::Instant;

use crate::error::ErrorCode;

/// What an interceptor sees of a call.
#[derive(Debug, Clone)]
pub struct CallInfo {
    pub(crate) peer: Arc<PeerAddr>,
    pub(crate) service: &'static str,
    pub(crate) method: &'static str,
    pub(crate) id: u64,
    pub(crate) deadline: Option<Instant>,
}

impl CallInfo {
    /// The authenticated peer (from the transport, not from anything the peer sent).
    pub fn peer(&self) -> &PeerAddr {
        &self.peer
    }

    /// The service's name.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// The method's name (`?` for a method number the service does not have).
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// The call's id on its connection (the peer's numbering; unique while it is in flight).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// When the call's deadline passes, if it has one (the caller's, capped by
    /// `Config::max_deadline`).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

/// How a call ended, as an interceptor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The handler returned a value and it was sent (for `-> Result<T, E>` methods this
    /// includes `Err(e)`: the method's own error is a value to the runtime); a stream ended.
    Ok,
    /// The call was answered with a runtime error: refused, undecodable arguments, a panic, a
    /// result too large, or a stream's error.
    Error(ErrorCode),
    /// The call's deadline passed on this side before it was answered.
    DeadlineExceeded,
    /// The call ended unanswered: the caller cancelled it, or the connection ended or shut down.
    ///
    /// A caller also cancels when *its* deadline passes, and that Cancel may arrive before
    /// this side's own deadline fires: this side counts the deadline from when the request
    /// arrived, so a little after the caller. Such a call reports `Cancelled` — this side
    /// cannot tell why its caller gave up — as it does in gRPC servers.
    Cancelled,
}

/// Sees every call a server (or a [`Connector`](crate::Connector) serving callbacks) runs.
/// Both methods run on the connection's tasks, before and after user code: keep them quick
/// and never block in them.
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use hvrpc::intercept::{CallInfo, Interceptor, Outcome};
///
/// /// Counts calls per method.
/// #[derive(Default)]
/// struct Count(Mutex<HashMap<&'static str, u64>>);
///
/// impl Interceptor for Count {
///     fn after(&self, call: &CallInfo, _outcome: &Outcome, _took: std::time::Duration) {
///         *self.0.lock().unwrap().entry(call.method()).or_default() += 1;
///     }
/// }
/// let server = hvrpc::Server::new().intercept(Count::default());
/// # let _ = server;
/// ```
pub trait Interceptor: Send + Sync + 'static {
    /// Before the call's handler runs. `Err(message)` refuses it: the caller gets
    /// `ErrorCode::PermissionDenied` with `message`, and the handler never runs.
    fn before(&self, call: &CallInfo) -> Result<(), String> {
        let _ = call;
        Ok(())
    }

    /// After the call ended (`took`: since `before`).
    fn after(&self, call: &CallInfo, outcome: &Outcome, took: Duration) {
        let _ = (call, outcome, took);
    }
}

/// An interceptor shared with the rest of the program (to read its counts, say).
impl<T: Interceptor> Interceptor for Arc<T> {
    fn before(&self, call: &CallInfo) -> Result<(), String> {
        (**self).before(call)
    }

    fn after(&self, call: &CallInfo, outcome: &Outcome, took: Duration) {
        (**self).after(call, outcome, took)
    }
}

/// Watches one call for its interceptor and its debug event: reports its outcome once, as
/// [`Outcome::Cancelled`] (or `DeadlineExceeded`) if it is dropped unreported.
pub(crate) struct Watch {
    interceptor: Option<Arc<dyn Interceptor>>,
    /// The call's `hvrpc.serve` span (disabled unless debug events are on): gets the
    /// outcome and duration recorded when the call ends.
    span: tracing::Span,
    info: CallInfo,
    started: Instant,
    reported: bool,
}

impl Watch {
    /// Starts watching `info`, with the interceptor's refusal of the call if it refuses it
    /// (report the refusal's outcome through the watch).
    pub(crate) fn start(
        interceptor: Option<Arc<dyn Interceptor>>,
        span: tracing::Span,
        info: CallInfo,
    ) -> (Watch, Option<String>) {
        let w = Watch {
            interceptor,
            span,
            info,
            started: Instant::now(),
            reported: false,
        };
        let Some(i) = &w.interceptor else {
            return (w, None);
        };
        // User code: a panic refuses the call instead of taking the connection down.
        let refusal = match std::panic::catch_unwind(AssertUnwindSafe(|| i.before(&w.info))) {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(why),
            Err(_) => Some("the server's interceptor panicked".to_owned()),
        };
        (w, refusal)
    }

    /// Reports how the call ended (only the first report counts).
    pub(crate) fn report(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.reported, true) {
            return;
        }
        let took = self.started.elapsed();
        let took_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.span.record("outcome", tracing::field::debug(&outcome));
        self.span.record("took_us", took_us);
        tracing::debug!(
            parent: &self.span,
            service = self.info.service,
            method = self.info.method,
            peer = %self.info.peer,
            id = self.info.id,
            outcome = ?outcome,
            took_us,
            "hvrpc call ended"
        );
        if let Some(i) = &self.interceptor
            && std::panic::catch_unwind(AssertUnwindSafe(|| i.after(&self.info, &outcome, took)))
                .is_err()
        {
            tracing::warn!(id = self.info.id, "the interceptor panicked after a call");
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let expired = self.info.deadline.is_some_and(|d| Instant::now() >= d);
        self.report(if expired {
            Outcome::DeadlineExceeded
        } else {
            Outcome::Cancelled
        });
    }
}

/// A call's watch, if anything watches it: report through this (a no-op without one). Boxed,
/// so that an unwatched call moves a null pointer around, not the whole watch.
pub(crate) fn report(watch: &mut Option<Box<Watch>>, outcome: Outcome) {
    if let Some(w) = watch {
        w.report(outcome);
    }
}
