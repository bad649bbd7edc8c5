//! The dispatcher: runs the peer's calls. User code (decoding the arguments, the handler's
//! first poll) runs here, never on the reader.
//!
//! A handler that finishes in its first poll is answered from the dispatcher, and the answers
//! to all the calls it found queued go out in one write. A handler that waits moves to a task
//! of its own; a method marked blocking runs on a blocking thread; a stream's producer runs in
//! a task that sends items only as credit allows.
//!
//! Invariants:
//!
//! 1. A panic in user code (decoding, the handler, the stream) becomes an `Internal` error for
//!    that call; the dispatcher and the connection go on.
//! 2. A dispatcher stuck in user code for [`Dispatcher::STUCK`] is replaced: the calls queued
//!    behind it go to a fresh dispatcher task, so a blocking handler costs a worker thread,
//!    not the connection. The stuck one ends once its handler returns.
//! 3. Every dispatched call ends in exactly one final frame, sent by the core's rules
//!    (`Core::respond`): a call cancelled or expired meanwhile gets nothing more.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::time::Instant;
use tracing::Instrument;

use super::Services;
use crate::engine::{Cancel, Dispatch, error_frame};
use crate::error::{Error, ErrorCode};
use crate::link::{Shared, Write, lock};
use crate::protocol::{Frame, FrameBuf, Header, Status};
use crate::service::{Body, Context, Handler};

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// The peer's calls waiting to run, and the task running them.
pub(crate) struct Dispatcher {
    queue: Mutex<VecDeque<Dispatch>>,
    link: Arc<Shared>,
    /// The largest frame the peer takes.
    max_frame: usize,
    services: Arc<Services>,
    epoch: Instant,
    /// Milliseconds after `epoch` (plus one) at which the dispatcher entered user code; 0 when
    /// it is not in user code.
    busy_since: AtomicU64,
    /// The dispatcher task that should run; older ones end.
    generation: AtomicU64,
}

impl Dispatcher {
    /// How long the dispatcher may stay in one call's user code before the calls behind it are
    /// given to a new dispatcher.
    pub(crate) const STUCK: Duration = Duration::from_millis(10);

    pub(crate) fn start(link: Arc<Shared>, services: Arc<Services>) -> Arc<Self> {
        let max_frame = link.lock().peer_max_frame();
        let d = Arc::new(Self {
            queue: Mutex::new(VecDeque::new()),
            link,
            max_frame,
            services,
            epoch: Instant::now(),
            busy_since: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        });
        tokio::spawn(Arc::clone(&d).run(0));
        d
    }

    fn millis(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    fn stuck(&self, now: Instant) -> bool {
        let since = self.busy_since.load(Ordering::Acquire);
        since != 0
            && self.millis(now) + 1 >= since + u64::try_from(Self::STUCK.as_millis()).unwrap_or(0)
    }

    /// Queues calls to run; wakes the dispatcher, or replaces it if it is stuck. Returns
    /// whether the dispatcher is busy in user code (the reader then looks again later).
    pub(crate) fn push(self: &Arc<Self>, calls: &mut Vec<Dispatch>, now: Instant) -> bool {
        lock(&self.queue).extend(calls.drain(..));
        if self.stuck(now) {
            self.replace();
        } else {
            self.link.dispatcher.wake();
        }
        self.busy_since.load(Ordering::Acquire) != 0
    }

    /// The reader's second look: replaces a dispatcher stuck with calls waiting. Returns
    /// whether to look again.
    pub(crate) fn rescue(self: &Arc<Self>, now: Instant) -> bool {
        if lock(&self.queue).is_empty() {
            return false;
        }
        if self.stuck(now) {
            self.replace();
            return false;
        }
        self.busy_since.load(Ordering::Acquire) != 0
    }

    fn replace(self: &Arc<Self>) {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.busy_since.store(0, Ordering::Release);
        tracing::debug!(peer = %self.link.peer, "a handler blocks the dispatcher; starting another");
        tokio::spawn(Arc::clone(self).run(generation));
    }

    async fn run(self: Arc<Self>, generation: u64) {
        loop {
            if self.link.is_closed() || self.generation.load(Ordering::Acquire) != generation {
                return;
            }
            let next = lock(&self.queue).pop_front();
            let Some(call) = next else {
                // The answers of the calls run inline go out together.
                let core = self.link.lock();
                self.link.release(core, Write::Now);
                std::future::poll_fn(|cx| {
                    self.link.dispatcher.register(cx.waker());
                    if self.link.is_closed()
                        || !lock(&self.queue).is_empty()
                        || self.generation.load(Ordering::Acquire) != generation
                    {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                })
                .await;
                continue;
            };
            self.busy_since
                .store(self.millis(Instant::now()) + 1, Ordering::Release);
            self.dispatch(call);
            if self.generation.load(Ordering::Acquire) != generation {
                // Replaced while in user code: the new dispatcher has the queue.
                let core = self.link.lock();
                self.link.release(core, Write::Now);
                return;
            }
            self.busy_since.store(0, Ordering::Release);
        }
    }

    /// Runs one call as far as it goes without waiting.
    fn dispatch(&self, call: Dispatch) {
        let Dispatch {
            id,
            service,
            method,
            body,
            deadline,
            cancel,
            window,
        } = call;
        let Some(svc) = self.services.get(service) else {
            return self.answer(
                id,
                Err((ErrorCode::UnknownService, format!("no service {service}"))),
            );
        };
        let method_name = svc.method_name(method).unwrap_or("?");
        let ctx = Context {
            peer: Arc::clone(&self.link.peer),
            deadline,
            cancel: Arc::clone(&cancel),
            service: svc.name(),
            method: method_name,
        };
        let span = tracing::debug_span!(
            "hvrpc.serve",
            service = svc.name(),
            method = method_name,
            peer = %self.link.peer,
            id
        );
        let started = {
            let _entered = span.enter();
            std::panic::catch_unwind(AssertUnwindSafe(|| svc.call(method, ctx, body)))
        };
        let handler = match started {
            Ok(Ok(h)) => h,
            Ok(Err(refusal)) => return self.answer(id, Err(refusal)),
            Err(p) => {
                let msg = panic_message(p.as_ref());
                tracing::warn!(id, panic = %msg, "decoding the arguments panicked");
                return self.answer(
                    id,
                    Err((
                        ErrorCode::Internal,
                        format!(
                            "decoding the arguments of {}.{method_name} panicked: {msg}",
                            svc.name()
                        ),
                    )),
                );
            }
        };
        let link = Arc::clone(&self.link);
        let max = self.max_frame;
        match handler {
            Handler::Unary(mut fut) => {
                let polled = {
                    let _entered = span.enter();
                    let waker = futures_util::task::noop_waker();
                    let mut cx = std::task::Context::from_waker(&waker);
                    std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx)))
                };
                match polled {
                    Ok(Poll::Ready(body)) => {
                        let frame = reply_frame(self.max_frame, id, body);
                        let mut core = link.lock();
                        core.respond(Instant::now(), id, frame);
                        link.release(core, Write::Later);
                    }
                    Ok(Poll::Pending) => {
                        tokio::spawn(
                            async move {
                                let out =
                                    until_cancelled(&cancel, AssertUnwindSafe(fut).catch_unwind())
                                        .await;
                                if let Some(result) = out {
                                    finish(&link, max, id, result);
                                }
                            }
                            .instrument(span),
                        );
                    }
                    Err(p) => self.answer_panic(id, p),
                }
            }
            Handler::Blocking(fut) => {
                let rt = tokio::runtime::Handle::current();
                // Detached: its answer goes out through the core.
                drop(tokio::task::spawn_blocking(move || {
                    let _entered = span.enter();
                    let out = rt.block_on(until_cancelled(
                        &cancel,
                        AssertUnwindSafe(fut).catch_unwind(),
                    ));
                    if let Some(result) = out {
                        finish(&link, max, id, result);
                    }
                }));
            }
            Handler::Streaming(fut) => {
                if window == 0 {
                    return self.answer(
                        id,
                        Err((
                            ErrorCode::BadRequest,
                            format!(
                                "{}.{method_name} streams: its request needs a window > 0",
                                svc.name()
                            ),
                        )),
                    );
                }
                tokio::spawn(
                    async move {
                        until_cancelled(&cancel, produce(&link, max, id, fut)).await;
                    }
                    .instrument(span),
                );
            }
        }
    }

    fn answer(&self, id: u64, result: Result<(), (ErrorCode, String)>) {
        if let Err((code, message)) = result {
            let mut core = self.link.lock();
            core.respond_error(Instant::now(), id, code, message);
            self.link.release(core, Write::Later);
        }
    }

    fn answer_panic(&self, id: u64, p: Box<dyn std::any::Any + Send>) {
        let msg = panic_message(p.as_ref());
        tracing::warn!(id, panic = %msg, "handler panicked");
        self.answer(
            id,
            Err((ErrorCode::Internal, format!("the handler panicked: {msg}"))),
        );
    }
}

/// Runs `fut` until it ends or the call is cancelled (`None`).
async fn until_cancelled<F: Future>(cancel: &Cancel, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        if cancel.poll_cancelled(cx).is_ready() {
            return Poll::Ready(None);
        }
        fut.as_mut().poll(cx).map(Some)
    })
    .await
}

/// The frame for a handler's result (an `Internal` error if it cannot be sent).
fn reply_frame(max: usize, id: u64, body: Result<Body, Error>) -> Frame {
    let header = Header::Response {
        id,
        status: Status::Ok,
    };
    body_frame(max, id, &header, body)
}

/// `body` after `header`, or the error that takes its place, for a peer taking frames of `max`.
fn body_frame(max: usize, id: u64, header: &Header, body: Result<Body, Error>) -> Frame {
    let error = |code, message: String| error_frame(max, id, code, message);
    match body {
        Ok(body) => body.into_frame(header, max).unwrap_or_else(|len| {
            error(
                ErrorCode::Internal,
                format!(
                    "the response of {len} bytes exceeds the caller's frame limit of {max} bytes"
                ),
            )
        }),
        Err(Error::Remote { code, message }) => error(code, message.to_string()),
        Err(e) => error(ErrorCode::Internal, e.to_string()),
    }
}

/// Sends the final frame of a handler that ran in a task of its own.
fn finish(
    link: &Shared,
    max: usize,
    id: u64,
    result: Result<Result<Body, Error>, Box<dyn std::any::Any + Send>>,
) {
    let frame = match result {
        Ok(body) => reply_frame(max, id, body),
        Err(p) => {
            let msg = panic_message(p.as_ref());
            tracing::warn!(id, panic = %msg, "handler panicked");
            link.lock().error_frame(
                id,
                ErrorCode::Internal,
                format!("the handler panicked: {msg}"),
            )
        }
    };
    let mut core = link.lock();
    core.respond(Instant::now(), id, frame);
    link.release(core, Write::Now);
}

/// A server stream's producer: pulls an item only with credit in hand and the previous item
/// on its way, then ends the stream with its final Response.
async fn produce(
    link: &Shared,
    max: usize,
    id: u64,
    fut: futures_util::future::BoxFuture<
        'static,
        futures_util::stream::BoxStream<'static, Result<Body, Error>>,
    >,
) {
    let mut stream = match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(s) => s,
        Err(p) => return finish(link, max, id, Err(p)),
    };
    loop {
        let go = std::future::poll_fn(|cx| link.lock().poll_send_item(id, cx.waker())).await;
        if !go {
            return;
        }
        match AssertUnwindSafe(stream.next()).catch_unwind().await {
            Ok(Some(Ok(body))) => {
                let frame = body_frame(max, id, &Header::StreamItem { id }, Ok(body));
                let is_item = frame_is_item(&frame);
                let mut core = link.lock();
                if is_item {
                    core.send_item(id, frame);
                } else {
                    // Too large to send: the stream ends with the error.
                    core.respond(Instant::now(), id, frame);
                }
                link.release(core, Write::Now);
                if !is_item {
                    return;
                }
            }
            Ok(Some(Err(e))) => return finish(link, max, id, Ok(Err(e))),
            Ok(None) => {
                let end = FrameBuf::new(
                    &Header::Response {
                        id,
                        status: Status::Ok,
                    },
                    0,
                )
                .finish(usize::MAX)
                .unwrap_or_default()
                .into();
                let mut core = link.lock();
                core.respond(Instant::now(), id, end);
                link.release(core, Write::Now);
                return;
            }
            Err(p) => return finish(link, max, id, Err(p)),
        }
    }
}

/// Whether a frame built for a stream item is one (not the error that replaced it).
fn frame_is_item(frame: &Frame) -> bool {
    // The kind is the first byte after the 4-byte length: 3 is StreamItem.
    frame.head.get(4) == Some(&3)
}
