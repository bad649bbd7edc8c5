//! The connection's task: it reads frames into the core and runs the peer's calls that arrive,
//! the answers of a whole read going out in one write.
//!
//! It runs user code (argument decoding, first polls) itself: a handler that finishes at once
//! costs no task switch. A handler that blocks its thread would stop the reading, so the task
//! marks when it is in user code, and the watchdog has a fresh task take over — the calls
//! queued behind, and reading — once it has been there for a few of the watchdog's ticks
//! (10–30 ms). Keepalive and
//! deadlines are the timer task's and go on regardless.
//!
//! Invariants:
//!
//! 1. At most one task reads: the read half is taken out of its slot to read and put back
//!    before user code runs, so a replacement can take it.
//! 2. Calls wait in a queue shared by the connection's tasks; a stuck task leaves the ones
//!    behind its current call to its replacement.
//! 3. A task that has been replaced ends as soon as it is out of user code (having queued the
//!    answer it was working on).
//! 4. Once the connection is closed, the read half is dropped by the task that sees it, so the
//!    socket's end never waits for the last reference to the driver.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use futures_util::StreamExt;
use hvrpc_transport::framing::{FrameCodec, FrameError};
use tokio::io::AsyncRead;
use tokio::time::Instant;
use tokio_util::codec::{Decoder, FramedRead};

use super::dispatch::Calls;
use super::watchdog::{self, Watched};
use crate::engine::Dispatch;
use crate::link::{Shared, Write, lock};

/// The read half, framed.
pub(crate) type Frames = FramedRead<Pin<Box<dyn AsyncRead + Send>>, FrameCodec>;

pub(crate) struct Driver {
    calls: Calls,
    /// The read half, while no task is reading.
    frames: Mutex<Option<Frames>>,
    queue: Mutex<VecDeque<Dispatch>>,
    /// The watchdog tick at which the running task entered user code; 0 while it is not in
    /// user code.
    busy_since: AtomicU64,
    /// The task that should run; older ones end.
    generation: AtomicU64,
    max_frame: usize,
    runtime: tokio::runtime::Handle,
}

impl Driver {
    /// Starts the connection's task (and its watching).
    pub(crate) fn start(calls: Calls, frames: Frames, max_frame: usize) -> Arc<Self> {
        let driver = Arc::new(Self {
            calls,
            frames: Mutex::new(Some(frames)),
            queue: Mutex::new(VecDeque::new()),
            busy_since: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            max_frame,
            runtime: tokio::runtime::Handle::current(),
        });
        let weak: Weak<dyn Watched> = Arc::downgrade(&driver) as Weak<dyn Watched>;
        watchdog::watch(weak);
        tokio::spawn(Arc::clone(&driver).run(0));
        driver
    }

    fn link(&self) -> &Shared {
        &self.calls.link
    }

    fn current(&self, generation: u64) -> bool {
        self.generation.load(Ordering::Acquire) == generation
    }

    async fn run(self: Arc<Self>, generation: u64) {
        let mut buffered = FrameCodec::new(self.max_frame);
        let mut calls: Vec<Dispatch> = Vec::new();
        loop {
            if self.link().is_closed() {
                // The read half goes now, not with the last reference to this driver (the
                // watchdog may hold one for a moment): the peer sees the end at once.
                drop(lock(&self.frames).take());
                return;
            }
            if !self.current(generation) {
                return;
            }
            // The peer's calls waiting: run them, then write their answers together.
            if !lock(&self.queue).is_empty() {
                if !self.run_queued(generation, Instant::now()) {
                    return;
                }
                let core = self.link().lock();
                self.link().release(core, Write::Now);
                continue;
            }
            // Read.
            let Some(mut frames) = lock(&self.frames).take() else {
                return;
            };
            // Reads until a frame comes or the connection ends (woken through `link.task`).
            let frame = std::future::poll_fn(|cx| {
                self.link().task.register(cx.waker());
                if self.link().is_closed() {
                    return std::task::Poll::Ready(None);
                }
                frames.poll_next_unpin(cx).map(Some)
            })
            .await;
            let Some(frame) = frame else { return };
            let now = Instant::now();
            let mut core = self.link().lock();
            match frame {
                Some(Ok(payload)) => {
                    let mut result = core.handle_frame(now, payload.freeze());
                    // Every further frame already buffered, under the same lock.
                    loop {
                        match result {
                            Ok(Some(d)) => calls.push(d),
                            Ok(None) => {}
                            Err(violation) => {
                                tracing::warn!(peer = %self.link().peer, %violation, "protocol violation; closing");
                                core.violation(violation);
                                break;
                            }
                        }
                        match buffered.decode(frames.read_buffer_mut()) {
                            Ok(Some(p)) => result = core.handle_frame(now, p.freeze()),
                            Ok(None) => break,
                            Err(e) => {
                                core.violation(read_error(e));
                                break;
                            }
                        }
                    }
                }
                Some(Err(FrameError::TooLarge { len, max })) => {
                    tracing::warn!(peer = %self.link().peer, len, max, "oversized frame; closing");
                    core.violation(read_error(FrameError::TooLarge { len, max }));
                }
                Some(Err(e)) => core.read_ended(format!("reading from the peer failed: {e}")),
                None => core.read_ended("the peer closed the connection".to_owned()),
            }
            // Pongs, credits and refusals go out now; the calls' answers after they ran.
            self.link().release(core, Write::Now);
            *lock(&self.frames) = Some(frames);
            if !calls.is_empty() {
                lock(&self.queue).extend(calls.drain(..));
            }
        }
    }

    /// Runs the queued calls; `false` if this task was replaced meanwhile.
    fn run_queued(&self, generation: u64, now: Instant) -> bool {
        loop {
            let Some(call) = lock(&self.queue).pop_front() else {
                return true;
            };
            let tick = watchdog::entering_user_code();
            self.busy_since.store(tick, Ordering::Release);
            self.calls.dispatch(call, now);
            // Leaving user code and being replaced are decided on one atomic: the watchdog
            // replaces only by swapping a task's stamp for 0 first. (Checking the generation
            // alone would let this task read on while a replacement that the watchdog had
            // decided on, but not yet counted, found no read half and ended.)
            if self.busy_since.swap(0, Ordering::AcqRel) == 0 || !self.current(generation) {
                // Replaced while in user code: the new task has the queue and the reading.
                let core = self.link().lock();
                self.link().release(core, Write::Now);
                return false;
            }
        }
    }
}

impl Watched for Driver {
    fn check(self: Arc<Self>, now: u64) -> bool {
        let since = self.busy_since.load(Ordering::Acquire);
        if since == 0 || self.link().is_closed() {
            return false;
        }
        if now >= since.saturating_add(watchdog::STUCK_TICKS)
            && self
                .busy_since
                .compare_exchange(since, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // Still the same call in user code: hand the connection to a new task.
            let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
            tracing::debug!(peer = %self.link().peer, "a handler blocks its thread; another task takes the connection over");
            let runtime = self.runtime.clone();
            drop(runtime.spawn(Arc::clone(&self).run(generation)));
        }
        true
    }
}

fn read_error(e: FrameError) -> String {
    match e {
        FrameError::TooLarge { len, max } => {
            format!("the peer sent a frame of {len} bytes, over the limit of {max}")
        }
        other => format!("reading from the peer failed: {other}"),
    }
}
