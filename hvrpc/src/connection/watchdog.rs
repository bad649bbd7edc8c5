//! The watchdog: one thread for the whole process that notices a connection's task stuck in
//! user code — a handler that blocks its thread — and has a fresh task take over reading the
//! connection, so that the calls behind the stuck one, and the peer's pings, go on.
//!
//! It costs next to nothing per call: a connection's task marks when it enters and leaves user
//! code (two atomic stores of the watchdog's tick count, no clock read); the watchdog looks at
//! every connection every [`TICK`] while calls run, and sleeps, waking no one, after a second
//! without any.
//!
//! Invariants:
//!
//! 1. A task in user code for two ticks or more is replaced at the next look: between one and
//!    three ticks after it entered.
//! 2. The watchdog never runs user code and never takes a connection's core lock.
//! 3. A connection that is gone is forgotten at the next look.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// How often the watchdog looks while calls run.
pub(crate) const TICK: Duration = Duration::from_millis(10);

/// Ticks a connection's task may stay in one call's user code before another task takes over
/// the connection.
pub(crate) const STUCK_TICKS: u64 = 2;

/// How long the watchdog keeps looking after it last saw a connection in user code.
const LINGER: Duration = Duration::from_secs(1);

/// What the watchdog watches.
pub(crate) trait Watched: Send + Sync {
    /// Looks at the connection at tick `now`: replaces its task if it is stuck. Returns
    /// whether a task of it is in user code.
    fn check(self: Arc<Self>, now: u64) -> bool;
}

struct Watchdog {
    watched: Mutex<Vec<Weak<dyn Watched>>>,
    /// The thread is looking (rather than asleep on `wake`).
    looking: AtomicBool,
    /// Looks so far: the clock connections stamp their entries into user code with.
    ticks: AtomicU64,
    asleep: Mutex<()>,
    wake: Condvar,
}

fn watchdog() -> &'static Arc<Watchdog> {
    static WATCHDOG: OnceLock<Arc<Watchdog>> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        let w = Arc::new(Watchdog {
            watched: Mutex::new(Vec::new()),
            looking: AtomicBool::new(false),
            ticks: AtomicU64::new(1),
            asleep: Mutex::new(()),
            wake: Condvar::new(),
        });
        let thread = Arc::clone(&w);
        // If the thread cannot start, blocking handlers are not rescued; nothing else changes.
        let started = std::thread::Builder::new()
            .name("hvrpc-watchdog".into())
            .spawn(move || thread.run());
        if let Err(e) = started {
            tracing::warn!(error = %e, "cannot start the watchdog thread");
        }
        w
    })
}

impl Watchdog {
    fn run(&self) {
        let mut last_busy = Instant::now();
        loop {
            if !self.looking.load(Ordering::Acquire) {
                let guard = self.asleep.lock().unwrap_or_else(|p| p.into_inner());
                // Checked under the lock `wake_up` takes: no wake-up is lost.
                let _guard = self
                    .wake
                    .wait_while(guard, |()| !self.looking.load(Ordering::Acquire))
                    .unwrap_or_else(|p| p.into_inner());
                last_busy = Instant::now();
            }
            std::thread::sleep(TICK);
            let tick = self.ticks.fetch_add(1, Ordering::AcqRel) + 1;
            let now = Instant::now();
            let mut busy = false;
            let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
            watched.retain(|w| match w.upgrade() {
                Some(conn) => {
                    busy |= conn.check(tick);
                    true
                }
                None => false,
            });
            drop(watched);
            if busy {
                last_busy = now;
            } else if now.duration_since(last_busy) >= LINGER {
                self.looking.store(false, Ordering::Release);
            }
        }
    }
}

/// Watches `conn` from now on (until it is dropped).
pub(crate) fn watch(conn: Weak<dyn Watched>) {
    watchdog()
        .watched
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(conn);
}

/// Called when a connection's task enters user code: wakes the watchdog if it sleeps (a
/// relaxed load when it is already looking). Returns the tick to stamp the entry with.
pub(crate) fn entering_user_code() -> u64 {
    let w = watchdog();
    if !w.looking.load(Ordering::Relaxed) {
        let _guard = w.asleep.lock().unwrap_or_else(|p| p.into_inner());
        w.looking.store(true, Ordering::Release);
        w.wake.notify_one();
    }
    w.ticks.load(Ordering::Relaxed)
}

/// What the watchdog holds while it looks: every connection it watches, upgraded (for tests
/// that look at what a look keeps alive).
#[cfg(test)]
pub(crate) fn look() -> Vec<Arc<dyn Watched>> {
    watchdog()
        .watched
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect()
}
