//! Input streams: the items a caller sends into its call after the request (methods of kind 2,
//! client streams, and 3, bidirectional), flow-controlled with credit like server streams — in
//! both roles: the peer's input into calls handled here, and this side's into its own calls.
//!
//! Invariants (each has a test below):
//!
//! 1. **Credit first.** The receiver opens a call's input with its first InputCredit once the
//!    handler is about to run; a caller sends an item only with credit in hand. So a receiver
//!    holds at most the items it granted: an item (or the first part of one) beyond the credit,
//!    input for a call that takes none or was not opened, or input after the end, is a
//!    protocol violation.
//! 2. **After the request, in order.** Items and the end are data frames of the call's request
//!    tag: they leave after the request and in the order queued, and a call given up withdraws
//!    those not yet taken. A caller that has been granted credit knows the receiver has the
//!    request, so a call given up then is always cancelled, whatever was withdrawn.
//! 3. **Late input is ignored.** Input for a call no longer in flight here (answered,
//!    cancelled, expired) is dropped, with any parts of it; it opens nothing.
//! 4. **Ends are seen.** When a call leaves its table, whoever waits on its input — the
//!    handler reading it, the caller's pump feeding it — is woken, and learns it ended.

use std::collections::VecDeque;
use std::task::{Poll, Waker};

use bytes::Bytes;

use super::Core;
use super::assembly::Partial;
use super::outgoing::Stage;
use super::send::Tag;
use crate::error::{Error, ErrorCode};
use crate::protocol::{Header, Message};

/// The peer's input into one of its calls handled here.
#[derive(Debug, Default)]
pub(crate) struct InputIn {
    /// Items the peer may still send.
    credit: u64,
    /// Items received, not yet read by the handler.
    items: VecDeque<Bytes>,
    /// The peer's InputEnd came.
    ended: bool,
    /// The handler waiting for an item.
    consumer: Option<Waker>,
    /// An item arriving in parts.
    partial: Option<Partial>,
}

impl InputIn {
    /// Wakes the handler reading the input (an item came, the input ended, the call ended).
    pub(crate) fn wake(&mut self, wake: &mut Vec<Waker>) {
        wake.extend(self.consumer.take());
    }

    /// A part of an item, announcing `total` bytes. `Err` is a protocol violation.
    pub(crate) fn part(
        &mut self,
        id: u64,
        total: u64,
        piece: &[u8],
        max_message: usize,
    ) -> Result<(), String> {
        match self.partial.as_mut() {
            Some(p) => p.push(total, piece),
            None => {
                self.check(id)?;
                self.partial = Some(Partial::start(total, max_message, piece)?);
                Ok(())
            }
        }
    }

    /// Whether one more item may come.
    fn check(&self, id: u64) -> Result<(), String> {
        if self.ended {
            return Err(format!("input for call {id} after its end"));
        }
        if self.credit == 0 {
            return Err(format!(
                "an input item for call {id} beyond the credit granted"
            ));
        }
        Ok(())
    }
}

/// This side's input into one of its calls.
#[derive(Debug, Default)]
pub(crate) struct InputOut {
    /// Items the peer accepts before it grants more.
    credit: u64,
    /// Credit has come: the peer has the request.
    opened: bool,
    /// The end is queued.
    ended: bool,
    /// The pump waiting for credit or for room.
    pump: Option<Waker>,
}

impl InputOut {
    /// Wakes the pump (credit came, its item was admitted, the call ended).
    pub(crate) fn wake(&mut self, wake: &mut Vec<Waker>) {
        wake.extend(self.pump.take());
    }

    /// Whether the peer has the request (it granted credit).
    pub(crate) fn opened(&self) -> bool {
        self.opened
    }
}

impl Core {
    // ---- the peer's input --------------------------------------------------------------------

    /// Opens the input of the peer's call `id`, granting `window` items; `false` if the call
    /// is no longer in the table.
    pub(crate) fn open_input(&mut self, id: u64, window: u32) -> bool {
        let Some(served) = self.inc.get_mut(id) else {
            return false;
        };
        if served.input.is_some() {
            return true;
        }
        served.input = Some(Box::new(InputIn {
            credit: u64::from(window),
            ..InputIn::default()
        }));
        self.control(&Header::InputCredit { id, items: window });
        true
    }

    /// The peer's Input frame for its call `id`, carrying `body` (the last piece, if the item
    /// came in parts).
    pub(crate) fn input_item(&mut self, id: u64, body: Bytes) -> Result<(), String> {
        let Some(served) = self.inc.get_mut(id) else {
            // Late: the call has ended here. Parts of it were kept as a request's; drop them.
            self.inc.drop_partial(id);
            return Ok(());
        };
        let Some(input) = served.input.as_mut() else {
            return Err(format!(
                "input for call {id}, which takes none or was not granted credit"
            ));
        };
        let item = match input.partial.take() {
            Some(p) => p.finish(&body)?,
            None => {
                input.check(id)?;
                body
            }
        };
        input.credit -= 1;
        input.items.push_back(item);
        input.wake(&mut self.wakes);
        Ok(())
    }

    /// The peer's InputEnd for its call `id`.
    pub(crate) fn input_end(&mut self, id: u64) -> Result<(), String> {
        let Some(served) = self.inc.get_mut(id) else {
            return Ok(());
        };
        let Some(input) = served.input.as_mut() else {
            return Err(format!(
                "the end of the input of call {id}, which takes none or was not granted credit"
            ));
        };
        if input.ended {
            return Err(format!("a second end of the input of call {id}"));
        }
        if input.partial.is_some() {
            return Err(format!(
                "the end of the input of call {id} in the middle of an item in parts"
            ));
        }
        input.ended = true;
        input.wake(&mut self.wakes);
        Ok(())
    }

    /// The next input item of the peer's call `id`: `Ready(None)` once the peer ended its
    /// input and every item was read; an error if the call has ended.
    pub(crate) fn poll_input(
        &mut self,
        id: u64,
        waker: &Waker,
    ) -> Poll<Option<Result<Bytes, Error>>> {
        let gone = || {
            Poll::Ready(Some(Err(Error::remote(
                ErrorCode::Cancelled,
                "the call ended before its input did",
            ))))
        };
        let Some(input) = self.inc.get_mut(id).and_then(|s| s.input.as_mut()) else {
            return gone();
        };
        if let Some(item) = input.items.pop_front() {
            return Poll::Ready(Some(Ok(item)));
        }
        if input.ended {
            return Poll::Ready(None);
        }
        input.consumer = Some(waker.clone());
        Poll::Pending
    }

    /// Lets the peer send `items` more input items into its call `id`.
    pub(crate) fn grant_input(&mut self, id: u64, items: u32) {
        let Some(input) = self.inc.get_mut(id).and_then(|s| s.input.as_mut()) else {
            return;
        };
        if input.ended {
            return;
        }
        input.credit = input.credit.saturating_add(u64::from(items));
        self.control(&Header::InputCredit { id, items });
    }

    // ---- this side's input -------------------------------------------------------------------

    /// The peer's InputCredit for this side's call `id`. Credit for a call that is not on the
    /// wire, or that takes no input, is ignored (it may have crossed the call's end).
    pub(crate) fn input_credit(&mut self, id: u64, items: u32) {
        if let Some(call) = self.out.get_mut(id)
            && call.stage == Stage::Sent
            && let Some(input) = call.input.as_mut()
        {
            input.credit = input.credit.saturating_add(u64::from(items));
            input.opened = true;
            input.wake(&mut self.wakes);
        }
    }

    /// Whether the pump of call `id` may send an item now (it holds credit, and its previous
    /// item is not waiting to be written); `Ready(false)`: the call has ended, stop.
    pub(crate) fn poll_input_ready(&mut self, id: u64, waker: &Waker) -> Poll<bool> {
        let blocked = self.send.is_blocked(Tag::Request(id));
        let Some(call) = self.out.get_mut(id) else {
            return Poll::Ready(false);
        };
        let Some(input) = call.input.as_mut() else {
            return Poll::Ready(false);
        };
        if call.stage == Stage::Done || input.ended {
            return Poll::Ready(false);
        }
        if call.stage == Stage::Sent && input.credit > 0 && !blocked {
            return Poll::Ready(true);
        }
        input.pump = Some(waker.clone());
        Poll::Pending
    }

    /// `Ready` once call `id` has ended (or takes no input); else the pump is woken when it
    /// does (or when credit or room comes).
    pub(crate) fn poll_input_gone(&mut self, id: u64, waker: &Waker) -> Poll<()> {
        match self.out.get_mut(id) {
            Some(call) if call.stage != Stage::Done => match call.input.as_mut() {
                Some(input) => {
                    input.pump = Some(waker.clone());
                    Poll::Pending
                }
                None => Poll::Ready(()),
            },
            _ => Poll::Ready(()),
        }
    }

    /// The caller's input stream failed with `err`: the call ends with it, and the peer is
    /// told to stop (or its request withdrawn, if it was still queued).
    pub(crate) fn fail_input(&mut self, id: u64, err: Error) {
        let seen = self.request_seen(id);
        if self.out.end(id, Err(err), &mut self.wakes) == Some(Stage::Sent) {
            if (!self.withdraw(Tag::Request(id)) || seen) && !self.life.is_closed() {
                self.control(&Header::Cancel { id });
            }
            self.release_held();
        }
    }

    /// Queues an input item of call `id` (after [`poll_input_ready`](Self::poll_input_ready)
    /// said yes), spending a credit; `false` if the call has ended.
    pub(crate) fn send_input(&mut self, id: u64, item: impl Into<Message>) -> bool {
        match self.out.get_mut(id) {
            Some(call) if call.stage == Stage::Sent => match call.input.as_mut() {
                Some(input) if input.credit > 0 && !input.ended => input.credit -= 1,
                _ => return false,
            },
            _ => return false,
        }
        self.send.item(item, Tag::Request(id)).is_ok()
    }

    /// Queues the end of call `id`'s input; `false` if the call has ended.
    pub(crate) fn end_input(&mut self, id: u64) -> bool {
        match self.out.get_mut(id) {
            Some(call) if call.stage == Stage::Sent => match call.input.as_mut() {
                Some(input) if !input.ended => input.ended = true,
                _ => return false,
            },
            _ => return false,
        }
        let end = Self::header_frame(&Header::InputEnd { id });
        self.send.data(end, Tag::Request(id)).is_ok()
    }

    /// Whether the peer has seen call `id`'s request for certain (it granted its input
    /// credit): given up, the call must be cancelled even if frames of it were withdrawn.
    pub(crate) fn request_seen(&mut self, id: u64) -> bool {
        self.out
            .get_mut(id)
            .and_then(|c| c.input.as_ref())
            .is_some_and(InputOut::opened)
    }
}

#[cfg(test)]
mod tests;
