//! A connection's lifecycle: open, going away, finishing, closed — and why.
//!
//! ```text
//! Open ──shutdown / idle──▶ GoingAway ──calls done and GoAway seen, or time up──▶ Finishing
//!   │                           │                                                    │
//!   └──violation / finish───────┴────────────────────────────────────────────────────┤
//!                                                                  queue written ──▶ Closed
//! any state ──close (error, peer gone, stall)──▶ Closed
//! ```
//!
//! Invariants (each has a test below):
//!
//! 1. **Forward only.** Phases only move right; the first reason given for ending is the one
//!    kept.
//! 2. **Going away** refuses new requests and new calls, and ends only when (a) no call of the
//!    peer's is in flight *and* the peer has seen the GoAway — its Pong to the Ping sent right
//!    after the GoAway arrived, so every request it sent before reading the GoAway has been
//!    answered — or (b) its time is up (a shutdown's grace period; an idle drain's bound).
//! 3. **Finishing** sends what is queued, accepts nothing new, then closes.

use std::sync::Arc;

use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GoingAway {
    /// The Ping sent right after the GoAway.
    pub(crate) fence: u64,
    pub(crate) fence_seen: bool,
    /// When going away ends regardless.
    pub(crate) until: Instant,
    /// Why (the reason the connection ends with).
    pub(crate) reason: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    Open,
    GoingAway(GoingAway),
    Finishing,
    Closed,
}

/// What going away should do now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Keep waiting.
    Wait,
    /// Time is up: stop the peer's calls still in flight, then finish.
    TimeUp(Arc<str>),
    /// Done: finish.
    Finish(Arc<str>),
}

#[derive(Debug)]
pub(crate) struct Lifecycle {
    phase: Phase,
    reason: Option<Arc<str>>,
    /// The peer sent GoAway (its reason): no new calls go to it.
    peer_going_away: Option<Arc<str>>,
}

impl Lifecycle {
    pub(crate) fn new() -> Self {
        Self {
            phase: Phase::Open,
            reason: None,
            peer_going_away: None,
        }
    }

    pub(crate) fn phase(&self) -> &Phase {
        &self.phase
    }

    pub(crate) fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether this side takes new calls from the peer.
    pub(crate) fn takes_requests(&self) -> bool {
        self.is_open()
    }

    /// Whether this side may start new calls.
    pub(crate) fn may_call(&self) -> bool {
        self.is_open() && self.peer_going_away.is_none()
    }

    pub(crate) fn peer_going_away(&self) -> Option<&Arc<str>> {
        self.peer_going_away.as_ref()
    }

    pub(crate) fn set_peer_going_away(&mut self, reason: Arc<str>) {
        self.peer_going_away.get_or_insert(reason);
    }

    /// Starts going away (only from `Open`).
    pub(crate) fn go_away(&mut self, fence: u64, until: Instant, reason: Arc<str>) -> bool {
        if !self.is_open() {
            return false;
        }
        self.phase = Phase::GoingAway(GoingAway {
            fence,
            fence_seen: false,
            until,
            reason,
        });
        true
    }

    /// The peer answered Ping `n`.
    pub(crate) fn pong(&mut self, n: u64) {
        if let Phase::GoingAway(g) = &mut self.phase
            && g.fence == n
        {
            g.fence_seen = true;
        }
    }

    /// When going away must be looked at again, if it is under way.
    pub(crate) fn until(&self) -> Option<Instant> {
        match &self.phase {
            Phase::GoingAway(g) => Some(g.until),
            _ => None,
        }
    }

    /// What going away does at `now`, with the peer's calls in flight or not.
    pub(crate) fn step(&self, now: Instant, peer_calls: bool) -> Step {
        let Phase::GoingAway(g) = &self.phase else {
            return Step::Wait;
        };
        if !peer_calls && g.fence_seen {
            Step::Finish(Arc::clone(&g.reason))
        } else if now >= g.until {
            Step::TimeUp(Arc::clone(&g.reason))
        } else {
            Step::Wait
        }
    }

    /// Starts finishing; `false` if finishing or closed already. The reason is kept unless
    /// one was given before.
    pub(crate) fn finish(&mut self, reason: Arc<str>) -> bool {
        if matches!(self.phase, Phase::Finishing | Phase::Closed) {
            return false;
        }
        self.reason.get_or_insert(reason);
        self.phase = Phase::Finishing;
        true
    }

    /// Closes; `false` if closed already.
    pub(crate) fn close(&mut self, reason: Arc<str>) -> bool {
        if self.is_closed() {
            return false;
        }
        self.reason.get_or_insert(reason);
        self.phase = Phase::Closed;
        true
    }

    /// Why the connection ended (or is ending).
    pub(crate) fn reason(&self) -> Option<&Arc<str>> {
        self.reason.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn phases_move_forward_and_keep_the_first_reason() {
        let mut l = Lifecycle::new();
        assert!(l.may_call() && l.takes_requests());
        assert!(l.finish("first".into()));
        assert!(!l.takes_requests());
        assert!(!l.go_away(1, Instant::now(), "late".into()), "no way back");
        assert!(!l.finish("again".into()));
        assert!(l.close("second".into()));
        assert!(!l.close("third".into()));
        assert_eq!(l.reason().map(|r| &**r), Some("first"));
    }

    #[test]
    fn going_away_waits_for_the_calls_and_the_fence_or_the_time() {
        let t0 = Instant::now();
        let until = t0 + Duration::from_secs(5);
        let mut l = Lifecycle::new();
        assert!(l.go_away(7, until, "shut down".into()));
        assert!(!l.takes_requests() && !l.may_call());
        assert_eq!(
            l.step(t0, false),
            Step::Wait,
            "the peer has not seen the GoAway"
        );
        l.pong(6);
        assert_eq!(l.step(t0, false), Step::Wait, "another ping's answer");
        l.pong(7);
        assert_eq!(l.step(t0, true), Step::Wait, "a call in flight");
        assert_eq!(l.step(t0, false), Step::Finish("shut down".into()));
        assert_eq!(l.step(until, true), Step::TimeUp("shut down".into()));
    }

    #[test]
    fn the_peer_going_away_stops_new_calls_only() {
        let mut l = Lifecycle::new();
        l.set_peer_going_away("bye".into());
        assert!(!l.may_call());
        assert!(
            l.takes_requests(),
            "its calls in flight may still be answered"
        );
    }
}
