//! Running the peer's calls: decoding their arguments and polling their handlers once
//! (user code), then answering, or moving them on: a handler that waits to a task of its own, a
//! method marked blocking to a blocking thread, a stream's producer to a task that sends items
//! only as credit allows.
//!
//! Invariants:
//!
//! 1. A panic in user code (decoding, the handler, the stream) becomes an `Internal` error for
//!    that call; the connection goes on.
//! 2. Every call run here ends in exactly one final frame, sent by the core's rules
//!    (`Core::respond`): a call cancelled or expired meanwhile gets nothing more.
//! 3. The answer of a handler that finishes in its first poll is queued, not written: the
//!    caller (the connection's task) writes the answers of a whole batch at once.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;

use futures_util::{FutureExt, StreamExt};
use tokio::time::Instant;
use tracing::Instrument;

use bytes::Bytes;

use super::Services;
use crate::body::Body;
use crate::engine::{Cancel, Dispatch, error_frame};
use crate::error::{Error, ErrorCode};
use crate::intercept::{self, CallInfo, Outcome, Watch};
use crate::link::{Shared, Write};
use crate::protocol::{Frame, FrameBuf, Header, Message, PeerLimits, Status};
use crate::service::{Context, Handler};
use crate::skew::{ArgsRoute, Readings};
use crate::streaming::InputSource;

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// What running a call needs.
pub(crate) struct Calls {
    pub(crate) link: Arc<Shared>,
    pub(crate) services: Arc<Services>,
    /// How the peer's arguments are read (another release's shape, translated).
    pub(crate) readings: Arc<Readings>,
    /// What the peer takes.
    pub(crate) peer: PeerLimits,
    /// The input items the peer may send into a call before it is granted more.
    pub(crate) input_window: u32,
}

impl Calls {
    /// Runs one call as far as it goes without waiting.
    pub(crate) fn dispatch(&self, call: Dispatch, now: Instant) {
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
                &mut None,
                Err((ErrorCode::UnknownService, format!("no service {service}"))),
            );
        };
        let method_name = svc.method_name(method).unwrap_or("?");
        // Only when debug events are wanted: even a disabled span costs a call's worth of
        // instructions where `tracing` forwards to `log`. The outcome and duration are
        // recorded into it when the call ends (`Watch::report`).
        let debug = tracing::enabled!(tracing::Level::DEBUG);
        let span = if debug {
            tracing::debug_span!(
                "hvrpc.serve",
                service = svc.name(),
                method = method_name,
                peer = %self.link.peer,
                id,
                outcome = tracing::field::Empty,
                took_us = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        // Watched only when something looks: the interceptor, or debug events.
        let interceptor = self.services.interceptor();
        let mut watch = if interceptor.is_some() || debug {
            let info = CallInfo {
                peer: Arc::clone(&self.link.peer),
                service: svc.name(),
                method: method_name,
                id,
                deadline,
            };
            let (w, refusal) = Watch::start(interceptor.cloned(), span.clone(), info);
            let mut w = Some(Box::new(w));
            if let Some(why) = refusal {
                return self.answer(id, &mut w, Err((ErrorCode::PermissionDenied, why)));
            }
            w
        } else {
            None
        };
        // Arguments in another release's shape are translated first (the reader's
        // `Deserialize` runs: inside the panic guard).
        let read = |body: Bytes| -> Result<Bytes, (ErrorCode, String)> {
            match self.readings.get(service, method) {
                ArgsRoute::Direct => Ok(body),
                ArgsRoute::Translate(reading, _) => {
                    svc.translate_args(method, &body, reading).map_err(|e| {
                        (
                            ErrorCode::BadRequest,
                            format!(
                                "cannot read the arguments of {}.{method_name} (sent by another \
                                 release): {e}",
                                svc.name()
                            ),
                        )
                    })
                }
                ArgsRoute::Unreadable(why) => Err((ErrorCode::BadRequest, why.to_string())),
            }
        };
        // A method taking an input stream reads it through its context; the stream opens
        // (its first credit goes out) once the handler has been made.
        let input = self
            .readings
            .takes_input(service, method)
            .then(|| InputSource {
                link: Arc::clone(&self.link),
                id,
                window: self.input_window,
                reading: match self.readings.get(service, method) {
                    ArgsRoute::Translate(_, input) => input.clone(),
                    _ => None,
                },
            });
        let opens_input = input.is_some();
        let ctx = Context {
            peer: Arc::clone(&self.link.peer),
            deadline,
            cancel: Arc::clone(&cancel),
            service: svc.name(),
            method: method_name,
            input,
        };
        let started = {
            let _entered = span.enter();
            std::panic::catch_unwind(AssertUnwindSafe(|| svc.call(method, ctx, read(body)?)))
        };
        if opens_input && matches!(started, Ok(Ok(_))) {
            let mut core = self.link.lock();
            core.open_input(id, self.input_window);
            self.link.release(core, Write::Later);
        }
        let handler = match started {
            Ok(Ok(h)) => h,
            Ok(Err(refusal)) => return self.answer(id, &mut watch, Err(refusal)),
            Err(p) => {
                let msg = panic_message(p.as_ref());
                tracing::warn!(id, panic = %msg, "decoding the arguments panicked");
                return self.answer(
                    id,
                    &mut watch,
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
        let peer = self.peer;
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
                        let (frame, outcome) = reply(&self.peer, id, body);
                        let mut core = link.lock();
                        let sent = core.respond(now, id, frame);
                        link.release(core, Write::Later);
                        if sent {
                            intercept::report(&mut watch, outcome);
                        }
                    }
                    Ok(Poll::Pending) => {
                        tokio::spawn(
                            async move {
                                let out =
                                    until_cancelled(&cancel, AssertUnwindSafe(fut).catch_unwind())
                                        .await;
                                if let Some(result) = out {
                                    finish(&link, &peer, id, result, &mut watch);
                                }
                            }
                            .instrument(span),
                        );
                    }
                    Err(p) => self.answer_panic(id, &mut watch, p),
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
                        finish(&link, &peer, id, result, &mut watch);
                    }
                }));
            }
            Handler::Streaming(fut) => {
                if window == 0 {
                    return self.answer(
                        id,
                        &mut watch,
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
                        until_cancelled(&cancel, produce(&link, &peer, id, fut, &mut watch)).await;
                    }
                    .instrument(span),
                );
            }
        }
    }

    fn answer(
        &self,
        id: u64,
        watch: &mut Option<Box<Watch>>,
        result: Result<(), (ErrorCode, String)>,
    ) {
        if let Err((code, message)) = result {
            let mut core = self.link.lock();
            let sent = core.respond_error(Instant::now(), id, code, message);
            self.link.release(core, Write::Later);
            if sent {
                intercept::report(watch, Outcome::Error(code));
            }
        }
    }

    fn answer_panic(
        &self,
        id: u64,
        watch: &mut Option<Box<Watch>>,
        p: Box<dyn std::any::Any + Send>,
    ) {
        let msg = panic_message(p.as_ref());
        tracing::warn!(id, panic = %msg, "handler panicked");
        self.answer(
            id,
            watch,
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

/// What answers a handler's result (an `Internal` error if it cannot be sent), and the
/// outcome it makes.
fn reply(peer: &PeerLimits, id: u64, body: Result<Body, Error>) -> (Message, Outcome) {
    let header = Header::Response {
        id,
        status: Status::Ok,
    };
    let failed = match &body {
        Ok(_) => None,
        Err(Error::Remote { code, .. }) => Some(*code),
        Err(_) => Some(ErrorCode::Internal),
    };
    match body_message(peer, id, &header, body) {
        Ok(m) => (m, Outcome::Ok),
        Err(f) => (
            Message::from(f),
            Outcome::Error(failed.unwrap_or(ErrorCode::Internal)),
        ),
    }
}

/// `body` after `header` for the peer, or (`Err`) the error response that takes its place.
fn body_message(
    peer: &PeerLimits,
    id: u64,
    header: &Header,
    body: Result<Body, Error>,
) -> Result<Message, Frame> {
    let error = |code, message: String| error_frame(peer.max_frame, id, code, message);
    match body {
        Ok(body) => body.into_message(header, peer).map_err(|e| {
            let why = match e {
                Error::FrameTooLarge { len, max } => {
                    format!("of {len} bytes exceeds the caller's frame limit of {max} bytes")
                }
                Error::MessageTooLarge { len, max } => format!(
                    "of {len} bytes exceeds the caller's maximum message size of {max} bytes"
                ),
                other => format!("cannot be sent: {other}"),
            };
            error(ErrorCode::Internal, format!("the response {why}"))
        }),
        Err(Error::Remote { code, message }) => Err(error(code, message.to_string())),
        Err(e) => Err(error(ErrorCode::Internal, e.to_string())),
    }
}

/// Sends the final frame of a handler that ran in a task of its own.
fn finish(
    link: &Shared,
    peer: &PeerLimits,
    id: u64,
    result: Result<Result<Body, Error>, Box<dyn std::any::Any + Send>>,
    watch: &mut Option<Box<Watch>>,
) {
    let (frame, outcome) = match result {
        Ok(body) => reply(peer, id, body),
        Err(p) => {
            let msg = panic_message(p.as_ref());
            tracing::warn!(id, panic = %msg, "handler panicked");
            let frame = error_frame(
                peer.max_frame,
                id,
                ErrorCode::Internal,
                format!("the handler panicked: {msg}"),
            );
            (Message::from(frame), Outcome::Error(ErrorCode::Internal))
        }
    };
    let mut core = link.lock();
    let sent = core.respond(Instant::now(), id, frame);
    link.release(core, Write::Now);
    if sent {
        intercept::report(watch, outcome);
    }
}

/// A server stream's producer: pulls an item only with credit in hand and the previous item
/// on its way, then ends the stream with its final Response.
async fn produce(
    link: &Shared,
    peer: &PeerLimits,
    id: u64,
    fut: futures_util::future::BoxFuture<
        'static,
        futures_util::stream::BoxStream<'static, Result<Body, Error>>,
    >,
    watch: &mut Option<Box<Watch>>,
) {
    let mut stream = match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(s) => s,
        Err(p) => return finish(link, peer, id, Err(p), watch),
    };
    loop {
        let go = std::future::poll_fn(|cx| link.lock().poll_send_item(id, cx.waker())).await;
        if !go {
            return;
        }
        match AssertUnwindSafe(stream.next()).catch_unwind().await {
            Ok(Some(Ok(body))) => {
                let item = body_message(peer, id, &Header::StreamItem { id }, Ok(body));
                let mut core = link.lock();
                let (sent, ended) = match item {
                    Ok(item) => (core.send_item(id, item), false),
                    // Too large to send: the stream ends with the error.
                    Err(error) => (false, core.respond(Instant::now(), id, error)),
                };
                link.release(core, Write::Now);
                if ended {
                    intercept::report(watch, Outcome::Error(ErrorCode::Internal));
                }
                if !sent {
                    return;
                }
            }
            Ok(Some(Err(e))) => return finish(link, peer, id, Ok(Err(e)), watch),
            Ok(None) => {
                let end = FrameBuf::new(
                    &Header::Response {
                        id,
                        status: Status::Ok,
                    },
                    0,
                )
                .finish_frame(usize::MAX)
                .unwrap_or_default();
                let mut core = link.lock();
                let sent = core.respond(Instant::now(), id, end);
                link.release(core, Write::Now);
                if sent {
                    intercept::report(watch, Outcome::Ok);
                }
                return;
            }
            Err(p) => return finish(link, peer, id, Err(p), watch),
        }
    }
}
