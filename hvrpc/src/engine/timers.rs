//! Time: keepalive, the idle check, and when to look at the calls' deadlines — all on one timer
//! that the driver arms for [`Timers::next`].
//!
//! Invariants (each has a test below):
//!
//! 1. **Keepalive.** After `interval` without a frame from the peer a Ping goes out; if
//!    nothing at all arrives within `timeout` of it, the peer is dead. Any frame counts.
//! 2. **Idle.** A connection is idle when no call is in flight either way at a tick and none
//!    started since the previous tick; idle for `idle` in a row, it goes away.
//! 3. **Deadlines.** The earliest deadline known is a wake-up time; a new deadline earlier than
//!    the armed timer asks the driver to re-arm (so a call's deadline is never postponed by a
//!    timer armed for later), a later one costs nothing.
//! 4. The timer never needs arithmetic beyond a day: huge configured durations are clamped.

use std::time::Duration;

use tokio::time::Instant;

const DAY: Duration = Duration::from_secs(86_400);

/// What a tick found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Tick {
    /// Send a keepalive Ping with this number.
    pub(crate) ping: Option<u64>,
    /// The peer answered nothing for this long after a Ping: it is dead.
    pub(crate) dead: Option<Duration>,
    /// Idle for the idle timeout: go away.
    pub(crate) idle: bool,
}

#[derive(Debug)]
pub(crate) struct Timers {
    interval: Duration,
    timeout: Duration,
    idle: Option<Duration>,
    tick: Duration,
    last_rx: Instant,
    ping_sent: Option<Instant>,
    pings: u64,
    idle_since: Option<Instant>,
    started_seen: u64,
    next_tick: Instant,
    deadline: Option<Instant>,
    armed: Option<Instant>,
}

impl Timers {
    pub(crate) fn new(
        now: Instant,
        interval: Duration,
        timeout: Duration,
        idle: Option<Duration>,
    ) -> Self {
        let interval = interval.clamp(Duration::from_millis(1), DAY);
        let tick = idle
            .map_or(interval, |i| interval.min(i / 2))
            .clamp(Duration::from_millis(10), DAY);
        Self {
            interval,
            timeout: timeout.min(DAY),
            idle: idle.map(|i| i.min(DAY)),
            tick,
            last_rx: now,
            ping_sent: None,
            pings: 0,
            idle_since: None,
            started_seen: 0,
            next_tick: now + tick,
            deadline: None,
            armed: None,
        }
    }

    /// A frame arrived.
    pub(crate) fn received(&mut self, now: Instant) {
        self.last_rx = now;
        self.ping_sent = None;
    }

    /// A number for a Ping of this side's (keepalive or fence): never repeats.
    pub(crate) fn ping_number(&mut self) -> u64 {
        self.pings += 1;
        self.pings
    }

    /// A call got deadline `d`: whether the driver must re-arm its timer.
    pub(crate) fn deadline_added(&mut self, d: Instant) -> bool {
        if self.deadline.is_none_or(|known| d < known) {
            self.deadline = Some(d);
        }
        self.armed.is_some_and(|a| d < a)
    }

    /// The deadlines were checked; `next` is the earliest left.
    pub(crate) fn deadlines_checked(&mut self, next: Option<Instant>) {
        self.deadline = next;
    }

    /// Whether deadlines are due at `now`.
    pub(crate) fn deadlines_due(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| d <= now)
    }

    /// When the driver's timer should fire next, given another wake-up time `also`; recorded
    /// as armed.
    pub(crate) fn next(&mut self, also: Option<Instant>) -> Instant {
        let mut at = self.next_tick;
        for t in [self.deadline, also].into_iter().flatten() {
            at = at.min(t);
        }
        self.armed = Some(at);
        at
    }

    /// Keepalive and idle, if a tick is due at `now`. `started` counts calls started either
    /// way so far; `busy` says whether any is in flight.
    pub(crate) fn tick(&mut self, now: Instant, started: u64, busy: bool) -> Tick {
        let mut out = Tick::default();
        if now < self.next_tick {
            return out;
        }
        self.next_tick = now + self.tick;
        match self.ping_sent {
            Some(at) if now.duration_since(at) >= self.timeout => {
                out.dead = Some(self.timeout);
                return out;
            }
            None if now.duration_since(self.last_rx) >= self.interval => {
                self.ping_sent = Some(now);
                out.ping = Some(self.ping_number());
            }
            _ => {}
        }
        if let Some(limit) = self.idle {
            let quiet = std::mem::replace(&mut self.started_seen, started) == started;
            if quiet && !busy {
                let since = *self.idle_since.get_or_insert(now);
                if now.duration_since(since) >= limit {
                    self.idle_since = None;
                    out.idle = true;
                }
            } else {
                self.idle_since = None;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_silent_peer_is_pinged_then_declared_dead() {
        let t0 = Instant::now();
        let mut t = Timers::new(t0, ms(100), ms(300), None);
        assert_eq!(t.tick(t0 + ms(50), 0, false), Tick::default(), "not due");
        let first = t.tick(t0 + ms(100), 0, false);
        assert_eq!(first.ping, Some(1));
        assert_eq!(
            t.tick(t0 + ms(200), 0, false),
            Tick::default(),
            "ping outstanding"
        );
        assert_eq!(t.tick(t0 + ms(400), 0, false).dead, Some(ms(300)));
    }

    #[test]
    fn any_frame_counts_as_a_sign_of_life() {
        let t0 = Instant::now();
        let mut t = Timers::new(t0, ms(100), ms(300), None);
        assert!(t.tick(t0 + ms(100), 0, false).ping.is_some());
        t.received(t0 + ms(150));
        assert_eq!(t.tick(t0 + ms(200), 0, false), Tick::default());
        let later = t.tick(t0 + ms(450), 0, false);
        assert_eq!(later.dead, None, "the frame answered the ping");
        assert!(later.ping.is_some(), "silent again: a new ping");
    }

    #[test]
    fn idle_needs_no_call_in_flight_and_none_started_between_ticks() {
        let t0 = Instant::now();
        let mut t = Timers::new(
            t0,
            Duration::from_secs(10),
            Duration::from_secs(20),
            Some(ms(100)),
        );
        // Ticks every 50 ms (half the idle timeout).
        assert!(!t.tick(t0 + ms(50), 0, false).idle);
        // A short call between ticks: not idle.
        assert!(!t.tick(t0 + ms(100), 1, false).idle);
        assert!(!t.tick(t0 + ms(150), 1, true).idle, "busy");
        assert!(!t.tick(t0 + ms(200), 1, false).idle);
        assert!(!t.tick(t0 + ms(250), 1, false).idle);
        assert!(t.tick(t0 + ms(300), 1, false).idle);
    }

    #[test]
    fn an_earlier_deadline_asks_for_a_new_timer_a_later_one_does_not() {
        let t0 = Instant::now();
        let mut t = Timers::new(t0, Duration::from_secs(10), Duration::from_secs(20), None);
        assert_eq!(t.next(None), t0 + Duration::from_secs(10));
        assert!(
            !t.deadline_added(t0 + Duration::from_secs(30)),
            "after the armed tick"
        );
        assert!(t.deadline_added(t0 + ms(200)), "before it");
        assert_eq!(t.next(None), t0 + ms(200));
        assert!(!t.deadlines_due(t0 + ms(199)));
        assert!(t.deadlines_due(t0 + ms(200)));
        t.deadlines_checked(None);
        assert_eq!(t.next(Some(t0 + ms(500))), t0 + ms(500));
    }

    #[test]
    fn huge_durations_are_clamped() {
        let t0 = Instant::now();
        let mut t = Timers::new(t0, Duration::MAX, Duration::MAX, Some(Duration::MAX));
        assert!(t.next(None) <= t0 + DAY);
        let _ = t.tick(t0 + DAY, 0, false);
    }
}
