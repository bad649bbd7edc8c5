//! The connection engine's core: the hvrpc protocol of one connection as a state machine with
//! no I/O and no runtime inside (after quinn-proto). It takes received frames, the clock, and
//! what callers and handlers do; it hands back frames to write (in batches), the dispatches of
//! the peer's calls, when to wake it next, and the wakers of whoever can go on. The driver
//! (`crate::connection`) does the reading, writing, spawning and sleeping around it, holding
//! the core in one mutex that no user code ever runs under.
//!
//! Each part owns one set of rules, written at its top and tested on its own:
//!
//! | part | owns |
//! |---|---|
//! | [`handshake`] | what makes a side refuse the other |
//! | [`assembly`] | messages in parts put back together, bounded before allocating |
//! | [`outgoing`] | this side's calls: ids, slots, deadlines, exactly one outcome each |
//! | [`incoming`] | the peer's calls: admission, cancellation, credit, one final frame each |
//! | [`input`] | input streams into calls, both ways: credit first, in order, late input ignored |
//! | [`send`] | frame order, no splicing, the byte budget, control-frame priority |
//! | [`timers`] | keepalive, the idle check, when deadlines are looked at |
//! | [`lifecycle`] | open, going away, finishing, closed, and why |
//!
//! This file holds the rules that span parts: a Cancel never overtakes its Request (it is sent
//! only for a request the writer has taken; one still queued is withdrawn instead); a stream's
//! items go before its final Response (both are data frames, in order); the peer's frames for
//! calls that ended are ignored. `model.rs` drives the core through every short interleaving of
//! callers, peer, clock and writer and checks these rules and the parts' own.

pub(crate) mod assembly;
mod calls;
pub(crate) mod handshake;
pub(crate) mod incoming;
mod input;
pub(crate) mod lifecycle;
pub(crate) mod outgoing;
pub(crate) mod send;
pub(crate) mod timers;

#[cfg(test)]
mod model;

use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::error::{Error, ErrorCode};
use crate::protocol::{self, Frame, FrameBuf, Header, Message, Status};

pub(crate) use incoming::{Admission, Cancel, Limits};
pub(crate) use send::Batch;

use incoming::{Body, Incoming, Request};
use lifecycle::{Lifecycle, Step};
use outgoing::{Outgoing, Stage};
use send::{Refused, SendQueue, Tag};
use timers::Timers;

/// How long an idle connection waits, after its GoAway, for the peer to show it has read it.
const IDLE_DRAIN: Duration = Duration::from_secs(2);

/// What the core needs to know.
#[derive(Debug, Clone)]
pub(crate) struct CoreConfig {
    pub(crate) keepalive_interval: Duration,
    pub(crate) keepalive_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) send_buffer: usize,
    pub(crate) limits: Limits,
    /// From the peer's Hello.
    pub(crate) peer_max_frame: usize,
    pub(crate) peer_max_calls: u32,
    /// This side's maximum message size, if both sides take messages in parts.
    pub(crate) max_message: Option<usize>,
}

/// A call of the peer's to run.
#[derive(Debug)]
pub(crate) struct Dispatch {
    pub(crate) id: u64,
    pub(crate) service: u32,
    pub(crate) method: u32,
    pub(crate) body: Bytes,
    pub(crate) deadline: Option<Instant>,
    pub(crate) cancel: Arc<Cancel>,
    pub(crate) window: u32,
}

/// The core of one connection.
#[derive(Debug)]
pub(crate) struct Core {
    out: Outgoing,
    inc: Incoming,
    send: SendQueue,
    timers: Timers,
    life: Lifecycle,
    peer_max_frame: usize,
    max_message: Option<usize>,
    keepalive_timeout: Duration,
    wakes: Vec<Waker>,
    /// The driver's timer must be re-armed (an earlier deadline, or the phase changed).
    rearm: bool,
    released: Vec<(u64, Message)>,
    admitted: Vec<Tag>,
}

/// Truncates `msg` to at most `max` bytes, at a character boundary.
fn truncate(mut msg: String, max: usize) -> String {
    if msg.len() > max {
        let mut end = max.saturating_sub(3);
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        msg.truncate(end);
        msg.push_str("...");
    }
    msg
}

/// An error response for call `id` whose message is cut to fit a peer's `max_frame`.
pub(crate) fn error_frame(max_frame: usize, id: u64, code: ErrorCode, message: String) -> Frame {
    // Header overhead: kind, id, status, code and the message's length: under 32 bytes.
    let message = truncate(message, max_frame.saturating_sub(32));
    Core::header_frame(&Header::Response {
        id,
        status: Status::Error { code, message },
    })
}

impl Core {
    pub(crate) fn new(now: Instant, cfg: CoreConfig) -> Self {
        Self {
            out: Outgoing::new(cfg.peer_max_calls),
            inc: Incoming::new(cfg.limits),
            send: SendQueue::new(cfg.send_buffer),
            timers: Timers::new(
                now,
                cfg.keepalive_interval,
                cfg.keepalive_timeout,
                cfg.idle_timeout,
            ),
            life: Lifecycle::new(),
            peer_max_frame: cfg.peer_max_frame,
            max_message: cfg.max_message,
            keepalive_timeout: cfg.keepalive_timeout,
            wakes: Vec::new(),
            rearm: false,
            released: Vec::new(),
            admitted: Vec::new(),
        }
    }

    // ---- frames ------------------------------------------------------------------------------

    /// A frame with only a header, for the control queue (small, so it fits any peer's limit).
    fn header_frame(header: &Header) -> Frame {
        FrameBuf::new(header, 0)
            .finish_frame(usize::MAX)
            .unwrap_or_default()
    }

    /// An error response for call `id`, its message cut to fit the peer's frame limit.
    pub(crate) fn error_frame(&self, id: u64, code: ErrorCode, message: String) -> Frame {
        error_frame(self.peer_max_frame, id, code, message)
    }

    fn control(&mut self, header: &Header) {
        if let Err(Refused::Overflow) = self.send.control(Self::header_frame(header)) {
            self.close("the peer is not reading (too many frames waiting to be sent)");
        }
    }

    /// Queues the final frame of the peer's call `id` after its other frames.
    fn final_frame(&mut self, id: u64, frame: impl Into<Message>) {
        let _ = self.send.data(frame, Tag::Reply(id));
    }

    // ---- what the peer sends -----------------------------------------------------------------

    /// Handles one frame from the peer: `Ok(Some(_))` is a call to run; `Err` a protocol
    /// violation (the caller ends the connection with [`violation`](Self::violation)).
    pub(crate) fn handle_frame(
        &mut self,
        now: Instant,
        payload: Bytes,
    ) -> Result<Option<Dispatch>, String> {
        if self.life.is_closed() {
            return Ok(None);
        }
        self.timers.received(now);
        let (header, body_len) = {
            let (header, body) = protocol::split_frame(&payload)?;
            (header, body.len())
        };
        let body = payload.slice(payload.len() - body_len..);
        match header {
            Header::Hello(_) => return Err("a second handshake on an open connection".into()),
            Header::Schemas => return Err("schemas after the handshake".into()),
            Header::Request {
                id,
                service,
                method,
                timeout_ms,
                window,
            } => {
                if matches!(self.life.phase(), lifecycle::Phase::Finishing) {
                    // Nothing could be sent any more: the call fails with the connection.
                    return Ok(None);
                }
                let (body, body_len) = match self.inc.body(id, body)? {
                    Body::Whole(b) => {
                        let len = b.len();
                        (b, len)
                    }
                    Body::Refused(code, message) => {
                        self.refuse(id, code, message);
                        return Ok(None);
                    }
                };
                let req = Request {
                    id,
                    service,
                    body_len,
                    timeout_ms,
                    window,
                };
                match self.inc.admit(req, now, !self.life.takes_requests())? {
                    Admission::Refuse(code, message) => self.refuse(id, code, message),
                    Admission::Run { deadline, cancel } => {
                        if let Some(d) = deadline {
                            self.rearm |= self.timers.deadline_added(d);
                        }
                        return Ok(Some(Dispatch {
                            id,
                            service,
                            method,
                            body,
                            deadline,
                            cancel,
                            window,
                        }));
                    }
                }
            }
            Header::Response { id, status } => {
                let result = match status {
                    Status::Ok => Ok(self.out.body(id, body)?),
                    Status::Error { code, message } => Err(Error::remote(code, message)),
                };
                if self.out.end(id, result, &mut self.wakes) == Some(Stage::Sent) {
                    self.release_held();
                }
            }
            Header::StreamItem { id } => {
                let body = self.out.body(id, body)?;
                self.out.item(id, body, &mut self.wakes)?;
            }
            Header::Part { id, reply, total } => {
                let Some(max) = self.max_message else {
                    return Err("a part of a message, but messages in parts were not agreed".into());
                };
                if reply {
                    self.out.part(id, total, &body, max)?;
                } else if !matches!(self.life.phase(), lifecycle::Phase::Finishing) {
                    self.inc.part(id, total, &body, max)?;
                }
            }
            Header::Credit { id, items } => self.inc.grant(id, items, &mut self.wakes),
            Header::Input { id } => self.input_item(id, body)?,
            Header::InputEnd { id } => self.input_end(id)?,
            Header::InputCredit { id, items } => self.input_credit(id, items),
            Header::Cancel { id } => {
                // Nothing more goes out for it, not even what is queued — its final frame
                // included, if the handler has just finished.
                self.withdraw(Tag::Reply(id));
                self.inc.drop_partial(id);
                if let Some(mut served) = self.inc.remove(id) {
                    served.cancel.cancel();
                    served.wake_producer(&mut self.wakes);
                    self.progress(now);
                }
            }
            Header::Ping(n) => self.control(&Header::Pong(n)),
            Header::Pong(n) => {
                self.life.pong(n);
                self.progress(now);
            }
            Header::GoAway { reason } => {
                let reason: Arc<str> = reason.into();
                self.life.set_peer_going_away(Arc::clone(&reason));
                // Calls held for a slot never reached the peer: they may go elsewhere.
                for id in self.out.take_held() {
                    self.out.end(
                        id,
                        Err(Error::remote(
                            ErrorCode::ShuttingDown,
                            format!("the peer is going away ({reason}); the call was not sent"),
                        )),
                        &mut self.wakes,
                    );
                }
            }
        }
        Ok(None)
    }

    /// Answers the peer's request `id` with an error, without running it.
    fn refuse(&mut self, id: u64, code: ErrorCode, message: String) {
        let frame = self.error_frame(id, code, message);
        if let Err(Refused::Overflow) = self.send.control(frame) {
            self.close("the peer is not reading (too many frames waiting to be sent)");
        }
    }

    /// The peer broke the protocol: it is told why (GoAway), then the connection finishes.
    pub(crate) fn violation(&mut self, reason: String) {
        let reason = format!("protocol violation by the peer: {reason}");
        self.control(&Header::GoAway {
            reason: truncate(reason.clone(), self.peer_max_frame.saturating_sub(16)),
        });
        self.finish(reason);
    }

    /// Reading failed or the peer closed the connection.
    pub(crate) fn read_ended(&mut self, reason: String) {
        let reason = match self.life.peer_going_away() {
            Some(said) => format!("{reason} (it said: {said})"),
            None => reason,
        };
        self.close(reason);
    }

    fn release_held(&mut self) {
        self.out.release(&mut self.released);
        for (id, frame) in std::mem::take(&mut self.released) {
            let _ = self.send.data(frame, Tag::Request(id));
        }
    }

    // ---- the peer's calls --------------------------------------------------------------------

    /// The final frame of the peer's call `id` (its response, or the end of its stream):
    /// queued if the call is still in the table, which it then leaves. `false` if it had left
    /// already (cancelled, expired, connection ending): the frame is dropped.
    pub(crate) fn respond(&mut self, now: Instant, id: u64, frame: impl Into<Message>) -> bool {
        let Some(mut served) = self.inc.remove(id) else {
            return false;
        };
        served.wake_producer(&mut self.wakes);
        self.final_frame(id, frame);
        self.progress(now);
        true
    }

    /// Ends the peer's call `id` with an error (see [`respond`](Self::respond)).
    pub(crate) fn respond_error(
        &mut self,
        now: Instant,
        id: u64,
        code: ErrorCode,
        message: String,
    ) -> bool {
        let frame = self.error_frame(id, code, message);
        self.respond(now, id, frame)
    }

    /// Whether the producer of stream `id` may send an item now: it holds credit (spent here)
    /// and its previous item is not waiting for the send budget. `Ready(false)`: the call is
    /// gone, stop producing.
    pub(crate) fn poll_send_item(&mut self, id: u64, waker: &Waker) -> Poll<bool> {
        if self.send.is_blocked(Tag::Reply(id)) {
            return if self.inc.wait_producer(id, waker) {
                Poll::Pending
            } else {
                Poll::Ready(false)
            };
        }
        self.inc.poll_credit(id, waker)
    }

    /// Queues an item of the peer's stream call `id` (after [`poll_send_item`] said yes);
    /// `false` if the call is gone.
    ///
    /// [`poll_send_item`]: Self::poll_send_item
    pub(crate) fn send_item(&mut self, id: u64, frame: impl Into<Message>) -> bool {
        if self.inc.get_mut(id).is_none() {
            return false;
        }
        self.send.item(frame, Tag::Reply(id)).is_ok()
    }

    /// How many of the peer's calls are in flight.
    pub(crate) fn incoming_calls(&self) -> usize {
        self.inc.len()
    }

    // ---- time --------------------------------------------------------------------------------

    /// When the driver's timer should fire next.
    pub(crate) fn next_timeout(&mut self) -> Instant {
        self.rearm = false;
        self.timers.next(self.life.until())
    }

    /// Whether the driver must re-arm its timer (and clears the flag).
    pub(crate) fn take_rearm(&mut self) -> bool {
        std::mem::take(&mut self.rearm)
    }

    /// Whatever time makes happen at `now`: keepalive, idle, deadlines, going away.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.life.is_closed() {
            return;
        }
        let busy = !self.out.is_empty() || !self.inc.is_empty();
        let tick = self
            .timers
            .tick(now, self.out.started() + self.inc.started(), busy);
        if let Some(silent) = tick.dead {
            self.close(format!("keepalive: the peer did not answer for {silent:?}"));
            return;
        }
        if let Some(n) = tick.ping {
            self.control(&Header::Ping(n));
        }
        if tick.idle && self.life.is_open() {
            self.go_away(
                now,
                now + IDLE_DRAIN.min(self.keepalive_timeout),
                "idle timeout",
            );
        }
        if self.timers.deadlines_due(now) {
            let mut on_wire = Vec::new();
            let next_out = self.out.expire(now, &mut self.wakes, &mut on_wire);
            for id in on_wire {
                let seen = self.request_seen(id);
                if !self.withdraw(Tag::Request(id)) || seen {
                    self.control(&Header::Cancel { id });
                }
            }
            self.release_held();
            let (expired, next_in) = self.inc.expire(now);
            for (id, mut served) in expired {
                served.cancel.cancel();
                served.wake_producer(&mut self.wakes);
                let ms = served.timeout_ms.unwrap_or(0);
                let frame = self.error_frame(
                    id,
                    ErrorCode::DeadlineExceeded,
                    format!("the call's deadline of {ms} ms passed"),
                );
                self.final_frame(id, frame);
            }
            let next = match (next_out, next_in) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            self.timers.deadlines_checked(next);
        }
        self.progress(now);
    }

    // ---- lifecycle ---------------------------------------------------------------------------

    /// Sends GoAway and a Ping right behind it, and starts going away until `until`.
    fn go_away(&mut self, now: Instant, until: Instant, reason: &str) {
        let fence = self.timers.ping_number();
        if self.life.go_away(fence, until, reason.into()) {
            self.control(&Header::GoAway {
                reason: reason.into(),
            });
            self.control(&Header::Ping(fence));
            self.rearm = true;
            self.progress(now);
        }
    }

    /// Graceful shutdown: GoAway, no new calls from the peer, those in flight get `grace` to
    /// finish, then the rest are cancelled and the connection finishes.
    pub(crate) fn shutdown(&mut self, now: Instant, grace: Duration) {
        let until = now
            .checked_add(grace)
            .unwrap_or(now + Duration::from_secs(86_400));
        self.go_away(now, until, "shut down");
    }

    /// Moves going away on if it can.
    fn progress(&mut self, now: Instant) {
        match self.life.step(now, !self.inc.is_empty()) {
            Step::Wait => {}
            Step::Finish(reason) => self.finish(reason.to_string()),
            Step::TimeUp(reason) => {
                for (id, mut served) in self.inc.drain() {
                    served.cancel.cancel();
                    served.wake_producer(&mut self.wakes);
                    let frame = self.error_frame(
                        id,
                        ErrorCode::Cancelled,
                        "the server shut down and its grace period is over".into(),
                    );
                    self.final_frame(id, frame);
                }
                self.finish(reason.to_string());
            }
        }
    }

    /// Ends the connection after writing what is queued: nothing new is queued, no more of the
    /// peer's calls run (those running are stopped; they could not be answered).
    pub(crate) fn finish(&mut self, reason: impl Into<Arc<str>>) {
        if !self.life.finish(reason.into()) {
            return;
        }
        self.send.seal();
        for (_, mut served) in self.inc.drain() {
            served.cancel.cancel();
            served.wake_producer(&mut self.wakes);
        }
        self.rearm = true;
        if self.send.is_drained() {
            self.close_now();
        }
    }

    /// Ends the connection at once: every call fails, every handler is stopped.
    pub(crate) fn close(&mut self, reason: impl Into<Arc<str>>) {
        if self.life.close(reason.into()) {
            self.close_now();
        }
    }

    fn close_now(&mut self) {
        let reason = self
            .life
            .reason()
            .cloned()
            .unwrap_or_else(|| "closed".into());
        self.life.close(Arc::clone(&reason));
        self.send.clear();
        self.out
            .fail_all(&Error::ConnectionLost(reason), &mut self.wakes);
        for (_, mut served) in self.inc.drain() {
            served.cancel.cancel();
            served.wake_producer(&mut self.wakes);
        }
        self.rearm = true;
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.life.is_closed()
    }

    /// Whether new calls may start.
    pub(crate) fn is_usable(&self) -> bool {
        self.life.may_call()
    }

    /// Why the connection ended or is ending.
    pub(crate) fn reason(&self) -> Option<Arc<str>> {
        self.life.reason().cloned()
    }

    // ---- writing -----------------------------------------------------------------------------

    /// The next frames to write, with the write role; `None` if someone writes or nothing
    /// waits.
    pub(crate) fn take_batch(&mut self) -> Option<Batch> {
        let batch = self.send.take();
        // Streams whose items the writer has just taken may go on while it writes them.
        self.send.take_freed(&mut self.admitted);
        self.wake_admitted();
        batch
    }

    /// The batch taken last is written (`data_bytes` from [`Batch`]): producers whose frames
    /// were waiting for room go on; a finishing connection closes once all is written.
    pub(crate) fn written(&mut self, batch: Batch) {
        self.send.written(batch, &mut self.admitted);
        self.wake_admitted();
        self.close_if_finished();
    }

    /// A finishing connection closes once nothing is left to write.
    fn close_if_finished(&mut self) {
        if matches!(self.life.phase(), lifecycle::Phase::Finishing) && self.send.is_drained() {
            self.close_now();
        }
    }

    /// Takes `tag`'s frames out of the send queue if the writer has not taken them.
    fn withdraw(&mut self, tag: Tag) -> bool {
        let withdrawn = self.send.withdraw(tag, &mut self.admitted);
        self.wake_admitted();
        // (What was withdrawn may have been the last frame a finishing connection waited for.)
        self.close_if_finished();
        withdrawn
    }

    /// Wakes the producers whose frames have just been let into the send queue.
    fn wake_admitted(&mut self) {
        for tag in std::mem::take(&mut self.admitted) {
            match tag {
                Tag::Reply(id) => {
                    if let Some(s) = self.inc.get_mut(id) {
                        s.wake_producer(&mut self.wakes);
                    }
                }
                Tag::Request(id) => {
                    if let Some(input) = self.out.get_mut(id).and_then(|c| c.input.as_mut()) {
                        input.wake(&mut self.wakes);
                    }
                }
            }
        }
    }

    /// Whether frames wait and nobody is writing them.
    pub(crate) fn wants_write(&self) -> bool {
        !self.send.is_writing() && self.send.has_ready()
    }

    /// Whether callers or producers wait to be woken.
    pub(crate) fn has_wakes(&self) -> bool {
        !self.wakes.is_empty()
    }

    /// The wakers of callers and producers that can go on; wake them after unlocking.
    pub(crate) fn take_wakes(&mut self, into: &mut Vec<Waker>) {
        into.append(&mut self.wakes);
    }
}
