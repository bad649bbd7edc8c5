//! What this side's callers do to the core: start calls, wait for their outcomes, grant stream
//! credit, give calls up. The rules are those of [`outgoing`](super::outgoing); the one that
//! spans parts lives here: a call given up after its request was taken by the writer is
//! cancelled with a Cancel frame, one whose request is still queued is withdrawn instead, so a
//! Cancel never overtakes its Request.

use std::sync::Arc;
use std::task::{Poll, Waker};

use bytes::Bytes;
use tokio::time::Instant;

use super::Core;
use super::lifecycle;
use super::outgoing::{self, Stage, StreamState};
use super::send::Tag;
use crate::error::{Error, ErrorCode};
use crate::protocol::{Header, Message};

impl Core {
    /// Why a call cannot start now, if it cannot.
    fn refuse_call(&self) -> Option<Error> {
        if self.life.may_call() {
            return None;
        }
        Some(match (self.life.phase(), self.life.peer_going_away()) {
            (lifecycle::Phase::Open, Some(reason)) => Error::remote(
                ErrorCode::ShuttingDown,
                format!("the peer is going away ({reason}); the call was not sent"),
            ),
            (lifecycle::Phase::GoingAway(_), _) => Error::remote(
                ErrorCode::ShuttingDown,
                "this side is going away; the call was not sent",
            ),
            _ => self.lost(),
        })
    }

    /// The error of calls on a connection that has ended.
    pub(crate) fn lost(&self) -> Error {
        Error::ConnectionLost(
            self.life
                .reason()
                .cloned()
                .unwrap_or_else(|| Arc::from("the connection is closed")),
        )
    }

    /// Starts a call: `frame(id)` builds its request. `stream` is the window of a call whose
    /// result streams; `input`: the call sends an input stream. Returns its id.
    pub(crate) fn start_call(
        &mut self,
        frame: impl FnOnce(u64) -> Result<Message, Error>,
        deadline: Option<Instant>,
        stream: Option<u32>,
        input: bool,
    ) -> Result<u64, Error> {
        if let Some(e) = self.refuse_call() {
            return Err(e);
        }
        let frame = frame(self.out.next_id())?;
        let stream = stream.map(|w| StreamState {
            credit: u64::from(w),
            items: Default::default(),
        });
        let (id, out) = self.out.start(frame, deadline, stream, input);
        if let Some(frame) = out {
            let _ = self.send.data(frame, Tag::Request(id));
        }
        if let Some(d) = deadline {
            self.rearm |= self.timers.deadline_added(d);
        }
        Ok(id)
    }

    /// Whether call `id` is the only one of this side's on the wire or held.
    pub(crate) fn is_alone(&self) -> bool {
        self.out.on_wire() <= 1 && !self.out.has_held()
    }

    /// The response of unary call `id`, once it has one; the call then leaves the table.
    pub(crate) fn poll_unary(&mut self, id: u64, waker: &Waker) -> Poll<Result<Bytes, Error>> {
        let Some(call) = self.out.get_mut(id) else {
            return Poll::Ready(Err(self.lost()));
        };
        match call.outcome.take() {
            Some(outcome) => {
                self.out.forget(id);
                Poll::Ready(outcome)
            }
            None => {
                call.waker = Some(waker.clone());
                Poll::Pending
            }
        }
    }

    /// The next item of stream call `id`: `Ready(None)` at its successful end, an error as
    /// the last item otherwise; the call leaves the table with its end.
    pub(crate) fn poll_item(
        &mut self,
        id: u64,
        waker: &Waker,
    ) -> Poll<Option<Result<Bytes, Error>>> {
        let Some(call) = self.out.get_mut(id) else {
            return Poll::Ready(Some(Err(self.lost())));
        };
        if let Some(item) = call.stream.as_mut().and_then(|s| s.items.pop_front()) {
            return Poll::Ready(Some(Ok(item)));
        }
        match call.outcome.take() {
            Some(end) => {
                self.out.forget(id);
                Poll::Ready(end.err().map(Err))
            }
            None => {
                call.waker = Some(waker.clone());
                Poll::Pending
            }
        }
    }

    /// Lets the peer send `items` more items of stream call `id`.
    pub(crate) fn grant(&mut self, id: u64, items: u32) {
        let granted = match self.out.get_mut(id) {
            Some(c) if c.stage == Stage::Sent => {
                if let Some(s) = c.stream.as_mut() {
                    s.credit = s.credit.saturating_add(u64::from(items));
                }
                true
            }
            _ => false,
        };
        if granted {
            self.control(&Header::Credit { id, items });
        }
    }

    /// The caller of `id` gave up (dropped its call or stream): the call leaves the table, and
    /// the peer is told to stop it if its request went out.
    pub(crate) fn abandon(&mut self, id: u64) {
        let seen = self.request_seen(id);
        if let Some(input) = self.out.get_mut(id).and_then(|c| c.input.as_mut()) {
            input.wake(&mut self.wakes);
        }
        if let outgoing::Ended::Abandoned(Stage::Sent) = self.out.forget(id) {
            if (!self.withdraw(Tag::Request(id)) || seen) && !self.life.is_closed() {
                self.control(&Header::Cancel { id });
            }
            self.release_held();
        }
    }
}
