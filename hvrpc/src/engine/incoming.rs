//! The table of the peer's calls being handled here: admission, cancellation, credit.
//!
//! Invariants (each has a test below):
//!
//! 1. **Admission** follows one order: a duplicate id in flight is a protocol violation; then
//!    a connection going away refuses (`ShuttingDown`); an unknown service, a deadline already
//!    passed (`timeout_ms: 0`), more than `max_calls` calls, or more than `max_bytes` bytes of
//!    requests held are refused too. A refused call never runs and is not in the table.
//! 2. **One final frame.** An admitted call leaves the table exactly once — finished, cancelled
//!    by the peer, expired, or dropped with the connection — and only the first of these may
//!    send a final frame; after a Cancel nothing more is sent for it.
//! 3. **Deadlines** are the caller's, capped at `max_deadline`.
//! 4. **Credit.** A stream's producer sends an item only when it holds credit (the caller's
//!    window plus its grants).
//! 5. **Bytes held** are the sum of the bodies of the calls in the table and of the requests
//!    arriving in parts (counted by their announced length from their first part).
//! 6. **Requests in parts** are at most `max_calls` at once (each is a call the peer has on the
//!    wire: more is a protocol violation) and never for an id in flight; one over the bytes
//!    limit is not kept, and its Request is refused (`ResourceExhausted`) when its last frame
//!    comes; a Cancel drops it.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::time::Instant;

use super::assembly::{self, Partial};
use super::input::InputIn;
use super::outgoing::IdHasher;
use crate::error::ErrorCode;

/// A call's cancellation, shared by the table, the handler's task and its `Context`.
#[derive(Debug, Default)]
pub(crate) struct Cancel {
    flag: AtomicBool,
    waker: AtomicWaker,
}

impl Cancel {
    /// Cancels: the handler's task stops it at its next poll.
    pub(crate) fn cancel(&self) {
        self.flag.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether cancelled.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Ready once cancelled.
    pub(crate) fn poll_cancelled(&self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.is_cancelled() {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.is_cancelled() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// A call being handled.
#[derive(Debug)]
pub(crate) struct Served {
    body_len: usize,
    pub(crate) deadline: Option<Instant>,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) cancel: Arc<Cancel>,
    /// Items the caller accepts before it grants more (streams only matter).
    credit: u64,
    /// The producer waiting for credit, or for its last frame to be admitted.
    producer: Option<Waker>,
    /// The peer's input into the call, once opened (methods taking an input stream).
    pub(crate) input: Option<Box<InputIn>>,
}

impl Served {
    /// Wakes the producer (credit arrived, its frame was admitted, or the call ended), and
    /// the handler reading its input.
    pub(crate) fn wake_producer(&mut self, wake: &mut Vec<Waker>) {
        wake.extend(self.producer.take());
        if let Some(input) = self.input.as_mut() {
            input.wake(wake);
        }
    }
}

/// What admission decided.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Run it.
    Run {
        deadline: Option<Instant>,
        cancel: Arc<Cancel>,
    },
    /// Answer with this error; it does not run.
    Refuse(ErrorCode, String),
}

/// What admission needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request {
    pub(crate) id: u64,
    pub(crate) service: u32,
    pub(crate) body_len: usize,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) window: u32,
}

/// The limits admission enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_calls: u32,
    pub(crate) max_bytes: usize,
    pub(crate) max_deadline: Option<Duration>,
    pub(crate) services: usize,
}

/// The table of the peer's calls.
#[derive(Debug)]
pub(crate) struct Incoming {
    /// Keyed by ids the peer chose, hashed cheaply: the table holds at most `max_calls`
    /// entries, so even ids picked to collide cost at most that many probes.
    calls: HashMap<u64, Served, BuildHasherDefault<IdHasher>>,
    bytes: usize,
    limits: Limits,
    started: u64,
    /// Requests arriving in parts, by id.
    partial: HashMap<u64, Arriving, BuildHasherDefault<IdHasher>>,
}

/// A request arriving in parts.
#[derive(Debug)]
enum Arriving {
    Kept(Partial),
    /// Over the bytes limit: its parts are dropped, its Request refused.
    Refused {
        total: u64,
    },
}

/// A request's body, put together.
#[derive(Debug)]
pub(crate) enum Body {
    /// Its arguments.
    Whole(bytes::Bytes),
    /// It came in parts over the bytes limit: refuse it.
    Refused(ErrorCode, String),
}

impl Incoming {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            calls: HashMap::default(),
            bytes: 0,
            limits,
            started: 0,
            partial: HashMap::default(),
        }
    }

    /// A part of the peer's request `id`, announcing a message of `total` bytes; this side
    /// takes messages of at most `max_message`. `Err` is a protocol violation.
    pub(crate) fn part(
        &mut self,
        id: u64,
        total: u64,
        piece: &[u8],
        max_message: usize,
    ) -> Result<(), String> {
        if let Some(arriving) = self.partial.get_mut(&id) {
            return match arriving {
                Arriving::Kept(p) => p.push(total, piece),
                Arriving::Refused { total: t } if *t == total => Ok(()),
                Arriving::Refused { total: t } => Err(format!(
                    "a part announces {total} bytes, an earlier part of the same message {t}"
                )),
            };
        }
        if let Some(served) = self.calls.get_mut(&id) {
            // A call in flight: a part of one of its input items, if it takes input.
            return match served.input.as_mut() {
                Some(input) => input.part(id, total, piece, max_message),
                None => Err(format!("a part of request {id}, which is in flight")),
            };
        }
        if self.partial.len() >= self.limits.max_calls as usize {
            return Err(format!(
                "more requests in parts at once than the {} concurrent calls allowed",
                self.limits.max_calls
            ));
        }
        assembly::check_total(total, max_message)?;
        let len = usize::try_from(total).unwrap_or(usize::MAX);
        let arriving = if self.bytes.saturating_add(len) > self.limits.max_bytes {
            Arriving::Refused { total }
        } else {
            self.bytes += len;
            Arriving::Kept(Partial::start(total, max_message, piece)?)
        };
        self.partial.insert(id, arriving);
        Ok(())
    }

    /// The body of request `id`, whose ordinary frame carried `last`: with its parts if it had
    /// any (they leave the table: the request is admitted, or not, like any other).
    pub(crate) fn body(&mut self, id: u64, last: bytes::Bytes) -> Result<Body, String> {
        let Some(arriving) = self.partial.remove(&id) else {
            return Ok(Body::Whole(last));
        };
        match arriving {
            Arriving::Kept(p) => {
                self.bytes -= usize::try_from(p.total())
                    .unwrap_or(usize::MAX)
                    .min(self.bytes);
                p.finish(&last).map(Body::Whole)
            }
            Arriving::Refused { total } => Ok(Body::Refused(
                ErrorCode::ResourceExhausted,
                format!(
                    "too many bytes of requests waiting on this connection ({} held, {total} \
                     more in parts, limit {})",
                    self.bytes, self.limits.max_bytes
                ),
            )),
        }
    }

    /// The peer cancelled request `id`: whatever arrived of it in parts is dropped.
    pub(crate) fn drop_partial(&mut self, id: u64) {
        if let Some(Arriving::Kept(p)) = self.partial.remove(&id) {
            self.bytes -= usize::try_from(p.total())
                .unwrap_or(usize::MAX)
                .min(self.bytes);
        }
    }

    /// Decides on a request. `Err` is a protocol violation.
    pub(crate) fn admit(
        &mut self,
        req: Request,
        now: Instant,
        going_away: bool,
    ) -> Result<Admission, String> {
        if self.calls.contains_key(&req.id) {
            return Err(format!("duplicate request id {}", req.id));
        }
        let refuse = |code, msg: String| Ok(Admission::Refuse(code, msg));
        if going_away {
            return refuse(
                ErrorCode::ShuttingDown,
                "the server is shutting down".into(),
            );
        }
        if req.service as usize >= self.limits.services {
            return refuse(
                ErrorCode::UnknownService,
                format!("no service with index {}", req.service),
            );
        }
        if req.timeout_ms == Some(0) {
            return refuse(
                ErrorCode::DeadlineExceeded,
                "the call's deadline of 0 ms had passed when it arrived".into(),
            );
        }
        if self.calls.len() >= self.limits.max_calls as usize {
            return refuse(
                ErrorCode::ResourceExhausted,
                format!(
                    "too many concurrent calls on this connection (limit {})",
                    self.limits.max_calls
                ),
            );
        }
        if self.bytes.saturating_add(req.body_len) > self.limits.max_bytes {
            return refuse(
                ErrorCode::ResourceExhausted,
                format!(
                    "too many bytes of requests waiting on this connection ({} held, {} more \
                     asked, limit {})",
                    self.bytes, req.body_len, self.limits.max_bytes
                ),
            );
        }
        let timeout = req.timeout_ms.map(Duration::from_millis);
        let timeout = match (timeout, self.limits.max_deadline) {
            (Some(t), Some(max)) => Some(t.min(max)),
            (t, max) => t.or(max),
        };
        let deadline = timeout.and_then(|t| now.checked_add(t));
        let cancel = Arc::new(Cancel::default());
        self.bytes += req.body_len;
        self.started += 1;
        self.calls.insert(
            req.id,
            Served {
                body_len: req.body_len,
                deadline,
                timeout_ms: timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                cancel: Arc::clone(&cancel),
                credit: u64::from(req.window),
                producer: None,
                input: None,
            },
        );
        Ok(Admission::Run { deadline, cancel })
    }

    /// The call leaves the table (finished, cancelled, expired): `Some` the first time only.
    pub(crate) fn remove(&mut self, id: u64) -> Option<Served> {
        let served = self.calls.remove(&id)?;
        self.bytes -= served.body_len;
        Some(served)
    }

    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut Served> {
        self.calls.get_mut(&id)
    }

    /// The caller grants `items` more.
    pub(crate) fn grant(&mut self, id: u64, items: u32, wake: &mut Vec<Waker>) {
        if let Some(s) = self.calls.get_mut(&id) {
            s.credit = s.credit.saturating_add(u64::from(items));
            s.wake_producer(wake);
        }
    }

    /// Spends one credit of stream `id`: `Ready(true)` if there was one, `Ready(false)` if the
    /// call is gone, `Pending` (the producer is woken on the next grant) otherwise.
    pub(crate) fn poll_credit(&mut self, id: u64, waker: &Waker) -> Poll<bool> {
        match self.calls.get_mut(&id) {
            None => Poll::Ready(false),
            Some(s) if s.credit > 0 => {
                s.credit -= 1;
                Poll::Ready(true)
            }
            Some(s) => {
                s.producer = Some(waker.clone());
                Poll::Pending
            }
        }
    }

    /// Registers the producer of `id` to be woken when something changes for it.
    pub(crate) fn wait_producer(&mut self, id: u64, waker: &Waker) -> bool {
        match self.calls.get_mut(&id) {
            Some(s) => {
                s.producer = Some(waker.clone());
                true
            }
            None => false,
        }
    }

    /// The calls whose deadline is at or before `now` (removed), and the earliest left.
    pub(crate) fn expire(&mut self, now: Instant) -> (Vec<(u64, Served)>, Option<Instant>) {
        let mut next: Option<Instant> = None;
        let due: Vec<u64> = self
            .calls
            .iter()
            .filter_map(|(&id, s)| match s.deadline {
                Some(d) if d <= now => Some(id),
                Some(d) => {
                    next = Some(next.map_or(d, |n| n.min(d)));
                    None
                }
                None => None,
            })
            .collect();
        let expired = due
            .into_iter()
            .filter_map(|id| self.remove(id).map(|s| (id, s)))
            .collect();
        (expired, next)
    }

    /// Every call, removed (the connection is ending).
    pub(crate) fn drain(&mut self) -> Vec<(u64, Served)> {
        self.bytes = 0;
        self.partial.clear();
        self.calls.drain().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is in the table. (Requests still arriving in parts do not count: they
    /// neither keep a connection from being idle — a peer could hold it open with one part and
    /// pongs — nor hold up a shutdown, which refuses them when their last frame comes.)
    pub(crate) fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Calls admitted so far.
    pub(crate) fn started(&self) -> u64 {
        self.started
    }

    /// Bytes of requests held.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_calls: 2,
            max_bytes: 100,
            max_deadline: Some(Duration::from_secs(60)),
            services: 1,
        }
    }

    fn req(id: u64) -> Request {
        Request {
            id,
            service: 0,
            body_len: 10,
            timeout_ms: None,
            window: 0,
        }
    }

    fn refused(a: Admission) -> ErrorCode {
        match a {
            Admission::Refuse(code, _) => code,
            Admission::Run { .. } => panic!("admitted"),
        }
    }

    #[test]
    fn admission_checks_in_order_and_refused_calls_are_not_held() {
        let now = Instant::now();
        let mut t = Incoming::new(limits());
        assert!(matches!(
            t.admit(req(1), now, false),
            Ok(Admission::Run { .. })
        ));
        assert!(t.admit(req(1), now, false).is_err(), "duplicate id");
        // Going away comes before every other check.
        let unknown = Request {
            service: 5,
            ..req(2)
        };
        assert_eq!(
            refused(t.admit(unknown, now, true).unwrap()),
            ErrorCode::ShuttingDown
        );
        assert_eq!(
            refused(t.admit(unknown, now, false).unwrap()),
            ErrorCode::UnknownService
        );
        let zero = Request {
            timeout_ms: Some(0),
            ..req(2)
        };
        assert_eq!(
            refused(t.admit(zero, now, false).unwrap()),
            ErrorCode::DeadlineExceeded
        );
        let big = Request {
            body_len: 91,
            ..req(2)
        };
        assert_eq!(
            refused(t.admit(big, now, false).unwrap()),
            ErrorCode::ResourceExhausted
        );
        assert!(matches!(
            t.admit(req(2), now, false),
            Ok(Admission::Run { .. })
        ));
        assert_eq!(
            refused(t.admit(req(3), now, false).unwrap()),
            ErrorCode::ResourceExhausted,
            "over max_calls"
        );
        assert_eq!(t.len(), 2);
        assert_eq!(t.bytes(), 20);
    }

    #[test]
    fn a_call_leaves_once_and_gives_its_bytes_back() {
        let now = Instant::now();
        let mut t = Incoming::new(limits());
        t.admit(req(1), now, false).unwrap();
        assert!(t.remove(1).is_some());
        assert!(t.remove(1).is_none(), "a second final frame");
        assert_eq!(t.bytes(), 0);
        // The id may be used again once the call has left.
        assert!(matches!(
            t.admit(req(1), now, false),
            Ok(Admission::Run { .. })
        ));
    }

    #[test]
    fn deadlines_are_capped_and_expire() {
        let now = Instant::now();
        let mut t = Incoming::new(limits());
        let long = Request {
            timeout_ms: Some(3_600_000),
            ..req(1)
        };
        let Ok(Admission::Run { deadline, .. }) = t.admit(long, now, false) else {
            panic!()
        };
        assert_eq!(deadline, Some(now + Duration::from_secs(60)));
        let Ok(Admission::Run { deadline, .. }) = t.admit(req(2), now, false) else {
            panic!()
        };
        assert_eq!(
            deadline,
            Some(now + Duration::from_secs(60)),
            "none given: the cap"
        );
        let (expired, next) = t.expire(now + Duration::from_secs(59));
        assert!(expired.is_empty());
        assert_eq!(next, Some(now + Duration::from_secs(60)));
        let (expired, next) = t.expire(now + Duration::from_secs(60));
        assert_eq!(expired.len(), 2);
        assert_eq!(next, None);
        assert!(t.is_empty());
    }

    #[test]
    fn a_producer_spends_credit_and_waits_for_more() {
        let now = Instant::now();
        let mut t = Incoming::new(limits());
        t.admit(
            Request {
                window: 1,
                ..req(1)
            },
            now,
            false,
        )
        .unwrap();
        let waker = futures_util::task::noop_waker();
        assert_eq!(t.poll_credit(1, &waker), Poll::Ready(true));
        assert_eq!(t.poll_credit(1, &waker), Poll::Pending);
        let mut wake = Vec::new();
        t.grant(1, 2, &mut wake);
        assert_eq!(wake.len(), 1, "the producer is woken");
        assert_eq!(t.poll_credit(1, &waker), Poll::Ready(true));
        assert_eq!(t.poll_credit(1, &waker), Poll::Ready(true));
        assert_eq!(t.poll_credit(1, &waker), Poll::Pending);
        t.remove(1);
        assert_eq!(
            t.poll_credit(1, &waker),
            Poll::Ready(false),
            "the call is gone"
        );
    }

    #[test]
    fn cancellation_is_seen_by_every_holder() {
        let c = Arc::new(Cancel::default());
        let seen = Arc::clone(&c);
        assert!(!seen.is_cancelled());
        c.cancel();
        assert!(seen.is_cancelled());
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert_eq!(seen.poll_cancelled(&mut cx), Poll::Ready(()));
    }
}
