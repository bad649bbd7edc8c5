//! The thin I/O shell around the engine's core that callers, handlers and the connection's
//! tasks share: the core in its mutex, the write half, and the write path.
//!
//! Invariants:
//!
//! 1. No user code runs under the core's lock, and no lock is held across an `.await`.
//! 2. Wakers taken from the core are woken after the lock is released.
//! 3. Only the holder of the write role (given by the core with a batch) writes, so frames
//!    never splice. A holder that cannot finish without waiting (the socket is full) parks the
//!    rest of its batch for the writer task, which keeps the role until it has written it.
//! 4. When the role is released with frames ready, someone writes them: the releaser itself,
//!    or the writer task, which it wakes.
//! 5. A write that makes no progress for the stall limit ends the connection.

mod calls;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use hvrpc_transport::PeerAddr;
use tokio::io::AsyncWrite;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::engine::{Batch, Core};
use crate::error::Error;

pub(crate) use calls::{CallHandle, pump};

/// Locks a mutex, recovering from poisoning: no code panics while holding these locks.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How the frames an operation queued get written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Write {
    /// From this thread, now, if nobody else is writing.
    Now,
    /// By the writer task, which gathers what several senders queued into one write.
    Soon,
    /// Not by this operation (it queued nothing, or its caller writes later).
    Later,
}

/// The most slices one vectored write is given.
const SLICES: usize = 64;

/// A batch being written: its frames from `next` on, the first of them maybe partly written.
struct Pending {
    batch: Batch,
    next: usize,
}

impl Pending {
    fn new(batch: Batch) -> Self {
        let mut p = Self { batch, next: 0 };
        p.advance(0);
        p
    }

    fn is_done(&self) -> bool {
        self.next >= self.batch.frames.len()
    }

    /// The unwritten bytes, as slices (at most [`SLICES`]) in `out`; returns how many.
    fn slices<'a>(&'a self, out: &mut [std::io::IoSlice<'a>; SLICES]) -> usize {
        let mut n = 0;
        for f in self.batch.frames.iter().skip(self.next) {
            for chunk in f.chunks() {
                if !chunk.is_empty() {
                    let Some(slot) = out.get_mut(n) else {
                        return n;
                    };
                    *slot = std::io::IoSlice::new(chunk);
                    n += 1;
                }
            }
        }
        n
    }

    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(f) = self.batch.frames.get_mut(self.next) else {
                return;
            };
            let len = f.len();
            if n >= len {
                n -= len;
                self.next += 1;
            } else {
                f.advance(n);
                n = 0;
            }
        }
        while self
            .batch
            .frames
            .get(self.next)
            .is_some_and(|f| f.is_empty())
        {
            self.next += 1;
        }
    }
}

/// The write half, and a buffer for streams without vectored writes.
pub(crate) struct Writer {
    io: Pin<Box<dyn AsyncWrite + Send>>,
    /// Small frames copied together for a stream that writes one buffer at a time.
    scratch: Vec<u8>,
}

/// Up to this much is copied together for a stream without vectored writes.
const COALESCE: usize = 64 * 1024;

impl Writer {
    /// One write of `slices`: vectored where the stream supports it; else the first slice, or
    /// the small leading slices copied together (one syscall for a batch of small frames).
    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        slices: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match slices {
            [] => Poll::Ready(Ok(0)),
            [one] => self.io.as_mut().poll_write(cx, one),
            many if self.io.is_write_vectored() => self.io.as_mut().poll_write_vectored(cx, many),
            [first, ..] if first.len() >= COALESCE / 4 => self.io.as_mut().poll_write(cx, first),
            many => {
                self.scratch.clear();
                for s in many {
                    if !self.scratch.is_empty() && self.scratch.len() + s.len() > COALESCE {
                        break;
                    }
                    self.scratch.extend_from_slice(s);
                }
                // What is written of the copy is written of the slices: same bytes, in order.
                let polled = self.io.as_mut().poll_write(cx, &self.scratch);
                if self.scratch.capacity() > COALESCE * 2 {
                    self.scratch = Vec::new();
                }
                polled
            }
        }
    }
}

/// What a connection's tasks, callers and handlers share.
pub(crate) struct Shared {
    core: Mutex<Core>,
    wr: Mutex<Writer>,
    parked: Mutex<Option<Pending>>,
    writer: Notify,
    /// The timer task: re-arm the timer, or stop (with `timer_signal` set).
    pub(crate) timer: AtomicWaker,
    timer_signal: AtomicBool,
    /// The connection's reading task, woken when the connection closes.
    pub(crate) task: AtomicWaker,
    is_closed: AtomicBool,
    /// Cleared once either side has said it is going away (or the connection ended): no new
    /// calls. Read without the lock on every call.
    usable: AtomicBool,
    closed: CancellationToken,
    pub(crate) peer: Arc<PeerAddr>,
    stall: Duration,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("peer", &self.peer).finish()
    }
}

impl Shared {
    pub(crate) fn new(
        core: Core,
        wr: Pin<Box<dyn AsyncWrite + Send>>,
        peer: PeerAddr,
        stall: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            core: Mutex::new(core),
            wr: Mutex::new(Writer {
                io: wr,
                scratch: Vec::new(),
            }),
            parked: Mutex::new(None),
            writer: Notify::new(),
            timer: AtomicWaker::new(),
            timer_signal: AtomicBool::new(false),
            task: AtomicWaker::new(),
            is_closed: AtomicBool::new(false),
            usable: AtomicBool::new(true),
            closed: CancellationToken::new(),
            peer: Arc::new(peer),
            stall,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        lock(&self.core)
    }

    /// Whether the connection has ended (without taking the lock).
    pub(crate) fn is_closed(&self) -> bool {
        self.is_closed.load(Ordering::Acquire)
    }

    /// Whether new calls may start (without taking the lock).
    pub(crate) fn is_usable(&self) -> bool {
        self.usable.load(Ordering::Acquire) && !self.is_closed()
    }

    /// Resolves when the connection has ended.
    pub(crate) async fn closed(&self) {
        self.closed.cancelled().await
    }

    /// The error of calls on this connection once it has ended.
    pub(crate) fn lost(&self) -> Error {
        self.lock().lost()
    }

    /// Ends an operation on the core: wakes whoever can go on, re-arms the timer, and gets
    /// what was queued written as `write` says.
    pub(crate) fn release(&self, mut core: MutexGuard<'_, Core>, write: Write) {
        let batch = match write {
            Write::Now => core.take_batch(),
            Write::Soon | Write::Later => None,
        };
        // (After taking the batch: taking it may free producers.)
        let mut wakes: Vec<Waker> = Vec::new();
        core.take_wakes(&mut wakes);
        let rearm = core.take_rearm();
        let closed = core.is_closed();
        let soon = write == Write::Soon && core.wants_write();
        if !core.is_usable() {
            self.usable.store(false, Ordering::Release);
        }
        let reason = if closed && !self.is_closed() {
            core.reason()
        } else {
            None
        };
        drop(core);
        for w in wakes {
            w.wake();
        }
        if closed {
            self.on_closed(reason);
        } else if rearm {
            self.signal_timer();
        }
        if let Some(batch) = batch {
            self.write_now(batch);
        }
        if soon {
            self.writer.notify_one();
        }
    }

    fn signal_timer(&self) {
        self.timer_signal.store(true, Ordering::Release);
        self.timer.wake();
    }

    /// Whether the timer was signalled since it last looked (and clears it).
    pub(crate) fn take_timer_signal(&self) -> bool {
        self.timer_signal.swap(false, Ordering::AcqRel)
    }

    fn on_closed(&self, reason: Option<Arc<str>>) {
        if !self.is_closed.swap(true, Ordering::AcqRel) {
            if let Some(reason) = reason {
                tracing::debug!(peer = %self.peer, %reason, "connection closed");
            }
            self.closed.cancel();
            self.signal_timer();
            self.task.wake();
            self.writer.notify_one();
        }
    }

    /// Closes the connection at once.
    pub(crate) fn close(&self, reason: impl Into<Arc<str>>) {
        let mut core = self.lock();
        core.close(reason);
        self.release(core, Write::Later);
    }

    /// Finishes the connection: what is queued is written, then it closes.
    pub(crate) fn finish(&self, reason: impl Into<Arc<str>>) {
        let mut core = self.lock();
        core.finish(reason);
        self.release(core, Write::Now);
    }

    /// Writes what the socket takes without waiting, and whatever was queued meanwhile, a few
    /// rounds at most; the rest goes to the writer task.
    fn write_now(&self, batch: Batch) {
        let mut pending = Pending::new(batch);
        for _round in 0..3 {
            match self.try_write(&mut pending) {
                Ok(true) => {}
                Ok(false) => {
                    *lock(&self.parked) = Some(pending);
                    self.writer.notify_one();
                    return;
                }
                Err(e) => {
                    self.close(format!("writing to the peer failed: {e}"));
                    return;
                }
            }
            let mut core = self.lock();
            core.written(pending.batch);
            let next = core.take_batch();
            self.release(core, Write::Later);
            match next {
                Some(b) => pending = Pending::new(b),
                None => return,
            }
        }
        // Still more: the writer task takes over, role and all.
        *lock(&self.parked) = Some(pending);
        self.writer.notify_one();
    }

    /// Writes without waiting: `Ok(true)` when all is written (and flushed), `Ok(false)`
    /// when the socket is full.
    fn try_write(&self, pending: &mut Pending) -> std::io::Result<bool> {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut w = lock(&self.wr);
        while !pending.is_done() {
            let mut slices = [std::io::IoSlice::new(&[]); SLICES];
            let n = pending.slices(&mut slices);
            let polled = w.poll_write(&mut cx, slices.get(..n).unwrap_or(&[]));
            match polled {
                Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    pending.advance(n);
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(false),
            }
        }
        Ok(matches!(
            w.io.as_mut().poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ))
    }

    /// Writes `pending` to its end, waiting for the socket, failing after the stall limit
    /// without progress.
    async fn write_all(&self, pending: &mut Pending) -> std::io::Result<()> {
        while !pending.is_done() {
            let n = self
                .progress(std::future::poll_fn(|cx| {
                    let mut slices = [std::io::IoSlice::new(&[]); SLICES];
                    let n = pending.slices(&mut slices);
                    lock(&self.wr).poll_write(cx, slices.get(..n).unwrap_or(&[]))
                }))
                .await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            pending.advance(n);
        }
        self.progress(std::future::poll_fn(|cx| {
            lock(&self.wr).io.as_mut().poll_flush(cx)
        }))
        .await
    }

    async fn progress<T>(
        &self,
        op: impl Future<Output = std::io::Result<T>>,
    ) -> std::io::Result<T> {
        tokio::time::timeout(self.stall, op)
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the peer has not read anything for {:?}", self.stall),
                ))
            })
    }

    /// The writer task: writes what senders left to it, gathering what several queued.
    pub(crate) async fn writer(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = self.writer.notified() => {}
                () = self.closed.cancelled() => break,
            }
            // Let the tasks already woken queue their frames first: one write for all.
            tokio::task::yield_now().await;
            loop {
                let parked = lock(&self.parked).take();
                let mut pending = match parked {
                    Some(p) => p,
                    None => {
                        let mut core = self.lock();
                        let batch = core.take_batch();
                        if core.has_wakes() {
                            // The producers whose items it took may go on.
                            self.release(core, Write::Later);
                        }
                        match batch {
                            Some(batch) => Pending::new(batch),
                            None => break,
                        }
                    }
                };
                if let Err(e) = self.write_all(&mut pending).await {
                    self.close(format!("writing to the peer failed: {e}"));
                    break;
                }
                let mut core = self.lock();
                core.written(pending.batch);
                self.release(core, Write::Later);
            }
            if self.is_closed() {
                break;
            }
        }
        // Release the write half now, not when the last handle goes: the stream closes once
        // the read half is let go of its half too.
        lock(&self.wr).io = Box::pin(tokio::io::sink());
    }
}

/// A user of the connection: the connection closes (after writing what is queued) when the
/// last one is gone.
pub(crate) struct Handle {
    pub(crate) link: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.link.finish("closed by this side");
    }
}
