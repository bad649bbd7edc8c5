//! The table of this side's calls: ids, slots, deadlines, and exactly one outcome each.
//!
//! Invariants (each has a test below):
//!
//! 1. **Ids** count up from 1 and are never reused on a connection, so a late frame for a call
//!    that has ended can never be taken for another call's.
//! 2. **Exactly one outcome.** A call ends once, by the first of: its response (or the end of
//!    its stream), its deadline, its caller giving up, or the connection's end. Whatever comes
//!    later for its id is ignored. The outcome stays until the caller takes it.
//! 3. **Slots.** At most `limit` calls (the peer's `max_concurrent_calls`) are on the wire at
//!    once; later ones are held, in order, and go out as slots free up. A held call costs the
//!    peer nothing: it can end (deadline, cancel) without a frame.
//! 4. **Credit.** A stream accepts no more items than it has granted; one more is a protocol
//!    violation by the peer.
//! 5. **Replies in parts** are kept only for calls on the wire, one at a time per call (a
//!    stream's next item in parts only with credit for it), and dropped with the call's end.
//! 6. **Deadlines** are checked against the clock given to [`Outgoing::expire`]; no call
//!    outlives its deadline by more than the driver's timer resolution.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::task::Waker;

use bytes::Bytes;
use tokio::time::Instant;

use super::assembly::Partial;
use super::input::InputOut;
use crate::error::Error;
use crate::protocol::Message;

/// Fibonacci hashing of a `u64` call id: ids are chosen by this side (sequential), so a plain
/// multiplicative hash spreads them and a peer cannot pick colliding ones.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Where a call's request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Waiting for a slot; its frame is kept here.
    Held,
    /// Given to the send path (queued, or written).
    Sent,
    /// Ended; the outcome waits for the caller.
    Done,
}

/// What a stream call holds.
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    /// Items the peer may still send before this side grants more.
    pub(crate) credit: u64,
    /// Items received, not yet taken by the caller.
    pub(crate) items: VecDeque<Bytes>,
}

#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) stage: Stage,
    /// The request, while held.
    pub(crate) held: Option<Message>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) stream: Option<StreamState>,
    /// Unary: the response body; streams: the end (an empty body).
    pub(crate) outcome: Option<Result<Bytes, Error>>,
    pub(crate) waker: Option<Waker>,
    /// The reply arriving in parts.
    partial: Option<Partial>,
    /// This side's input into the call (methods taking an input stream).
    pub(crate) input: Option<InputOut>,
}

/// The table of this side's calls.
#[derive(Debug)]
pub(crate) struct Outgoing {
    next_id: u64,
    calls: HashMap<u64, Call, BuildHasherDefault<IdHasher>>,
    /// Calls held for a slot, oldest first (ids of calls that may have ended meanwhile).
    held: VecDeque<u64>,
    /// Calls on the wire (stage `Sent`).
    on_wire: usize,
    limit: usize,
    /// Calls started since the connection opened (for the idle check).
    started: u64,
}

/// How a call ended, as the caller sees it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// It had not ended: now it has (the caller gave up), and this is where its request was.
    Abandoned(Stage),
    /// It had already ended.
    Already,
    /// No such call.
    Unknown,
}

impl Outgoing {
    pub(crate) fn new(limit: u32) -> Self {
        Self {
            next_id: 1,
            calls: HashMap::default(),
            held: VecDeque::new(),
            on_wire: 0,
            limit: (limit as usize).max(1),
            started: 0,
        }
    }

    /// The id the next call gets.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Registers a call whose request is `frame` (built for [`next_id`](Self::next_id)).
    /// Returns its id and the frame if it may go out now, or `None` if it is held for a slot.
    pub(crate) fn start(
        &mut self,
        frame: impl Into<Message>,
        deadline: Option<Instant>,
        stream: Option<StreamState>,
        input: bool,
    ) -> (u64, Option<Message>) {
        let frame = frame.into();
        let id = self.next_id;
        self.next_id += 1;
        self.started += 1;
        // Calls that gave up while held leave their ids behind; they hold no place in line.
        while let Some(front) = self.held.front() {
            match self.calls.get(front) {
                Some(c) if c.stage == Stage::Held => break,
                _ => {
                    self.held.pop_front();
                }
            }
        }
        let free = self.on_wire < self.limit && self.held.is_empty();
        let (stage, held, out) = if free {
            self.on_wire += 1;
            (Stage::Sent, None, Some(frame))
        } else {
            self.held.push_back(id);
            (Stage::Held, Some(frame), None)
        };
        self.calls.insert(
            id,
            Call {
                stage,
                held,
                deadline,
                stream,
                outcome: None,
                waker: None,
                partial: None,
                input: input.then(InputOut::default),
            },
        );
        (id, out)
    }

    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut Call> {
        self.calls.get_mut(&id)
    }

    /// Ends call `id` with `outcome` unless it has ended already; wakes its caller. Returns
    /// the stage it was in (`None`: unknown or already ended — the outcome is dropped).
    pub(crate) fn end(
        &mut self,
        id: u64,
        outcome: Result<Bytes, Error>,
        wake: &mut Vec<Waker>,
    ) -> Option<Stage> {
        let call = self.calls.get_mut(&id)?;
        let was = call.stage;
        if was == Stage::Done {
            return None;
        }
        if was == Stage::Sent {
            self.on_wire -= 1;
        }
        call.stage = Stage::Done;
        call.held = None;
        call.partial = None;
        call.outcome = Some(outcome);
        wake.extend(call.waker.take());
        if let Some(input) = call.input.as_mut() {
            input.wake(wake);
        }
        Some(was)
    }

    /// Frames of held calls that may go out now that slots are free (in order).
    pub(crate) fn release(&mut self, out: &mut Vec<(u64, Message)>) {
        while self.on_wire < self.limit {
            let Some(id) = self.held.pop_front() else {
                break;
            };
            if let Some(call) = self.calls.get_mut(&id)
                && call.stage == Stage::Held
                && let Some(frame) = call.held.take()
            {
                call.stage = Stage::Sent;
                self.on_wire += 1;
                out.push((id, frame));
            }
        }
    }

    /// The caller is done with call `id` (took its outcome, or gave up): it leaves the table.
    pub(crate) fn forget(&mut self, id: u64) -> Ended {
        let Some(call) = self.calls.remove(&id) else {
            return Ended::Unknown;
        };
        match call.stage {
            Stage::Done => Ended::Already,
            Stage::Sent => {
                self.on_wire -= 1;
                Ended::Abandoned(Stage::Sent)
            }
            Stage::Held => Ended::Abandoned(Stage::Held),
        }
    }

    /// A part of the reply (response or stream item) of call `id`, announcing `total` bytes;
    /// this side takes messages of at most `max_message`. Parts for calls not on the wire
    /// are dropped; `Err` is a protocol violation.
    pub(crate) fn part(
        &mut self,
        id: u64,
        total: u64,
        piece: &[u8],
        max_message: usize,
    ) -> Result<(), String> {
        let Some(call) = self.calls.get_mut(&id) else {
            return Ok(());
        };
        if call.stage != Stage::Sent {
            return Ok(());
        }
        if call.stream.as_ref().is_some_and(|s| s.credit == 0) {
            return Err(format!(
                "a part of a stream item for call {id} beyond the granted window"
            ));
        }
        match call.partial.as_mut() {
            Some(p) => p.push(total, piece),
            None => {
                call.partial = Some(Partial::start(total, max_message, piece)?);
                Ok(())
            }
        }
    }

    /// The body of a reply of call `id` whose ordinary frame carried `last`: with its parts,
    /// if it had any.
    pub(crate) fn body(&mut self, id: u64, last: Bytes) -> Result<Bytes, String> {
        match self.calls.get_mut(&id).and_then(|c| c.partial.take()) {
            Some(p) => p.finish(&last),
            None => Ok(last),
        }
    }

    /// Takes one received item of stream `id`, checking and spending its credit: `Err` if the
    /// peer sent more than it was granted. Items for calls that ended are dropped.
    pub(crate) fn item(
        &mut self,
        id: u64,
        body: Bytes,
        wake: &mut Vec<Waker>,
    ) -> Result<(), String> {
        let Some(call) = self.calls.get_mut(&id) else {
            return Ok(());
        };
        if call.stage == Stage::Done {
            return Ok(());
        }
        let Some(stream) = call.stream.as_mut() else {
            return Err(format!("stream item for unary call {id}"));
        };
        if stream.credit == 0 {
            return Err(format!(
                "stream item for call {id} beyond the granted window"
            ));
        }
        stream.credit -= 1;
        stream.items.push_back(body);
        wake.extend(call.waker.take());
        Ok(())
    }

    /// Fails every call whose deadline is at or before `now`; returns those that were on the
    /// wire (the peer is told to stop them) and the earliest deadline left.
    pub(crate) fn expire(
        &mut self,
        now: Instant,
        wake: &mut Vec<Waker>,
        on_wire: &mut Vec<u64>,
    ) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut due = Vec::new();
        for (&id, call) in &self.calls {
            match call.deadline {
                Some(d) if call.stage != Stage::Done && d <= now => due.push(id),
                Some(d) if call.stage != Stage::Done => {
                    next = Some(next.map_or(d, |n| n.min(d)));
                }
                _ => {}
            }
        }
        for id in due {
            if self.end(id, Err(Error::DeadlineExceeded), wake) == Some(Stage::Sent) {
                on_wire.push(id);
            }
        }
        next
    }

    /// Ends every call with `err` (the connection is gone).
    pub(crate) fn fail_all(&mut self, err: &Error, wake: &mut Vec<Waker>) {
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for id in ids {
            self.end(id, Err(err.clone()), wake);
        }
        self.held.clear();
    }

    /// Calls on the wire.
    pub(crate) fn on_wire(&self) -> usize {
        self.on_wire
    }

    /// Whether any call waits for a slot.
    pub(crate) fn has_held(&self) -> bool {
        self.held
            .iter()
            .any(|id| self.calls.get(id).is_some_and(|c| c.stage == Stage::Held))
    }

    /// The calls waiting for a slot, oldest first; they are no longer in line (the caller
    /// ends them).
    pub(crate) fn take_held(&mut self) -> Vec<u64> {
        let calls = &self.calls;
        self.held
            .drain(..)
            .filter(|id| calls.get(id).is_some_and(|c| c.stage == Stage::Held))
            .collect()
    }

    /// Whether no call is in the table at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Calls started so far.
    pub(crate) fn started(&self) -> u64 {
        self.started
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::protocol::Frame;

    fn frame(id: u64) -> Frame {
        Frame::from(Bytes::from(id.to_be_bytes().to_vec()))
    }

    #[test]
    fn ids_count_up_and_are_never_reused() {
        let mut t = Outgoing::new(4);
        let mut seen = Vec::new();
        for _ in 0..3 {
            let id = t.next_id();
            let (got, out) = t.start(frame(id), None, None, false);
            assert_eq!(got, id);
            assert!(out.is_some());
            seen.push(got);
            let mut w = Vec::new();
            t.end(got, Ok(Bytes::new()), &mut w);
            assert_eq!(t.forget(got), Ended::Already);
        }
        assert_eq!(seen, [1, 2, 3]);
        assert_eq!(t.next_id(), 4);
    }

    #[test]
    fn a_call_ends_exactly_once_and_later_outcomes_are_dropped() {
        let mut t = Outgoing::new(4);
        let (id, _) = t.start(frame(1), None, None, false);
        let mut w = Vec::new();
        assert_eq!(
            t.end(id, Ok(Bytes::from_static(b"first")), &mut w),
            Some(Stage::Sent)
        );
        assert_eq!(t.end(id, Err(Error::DeadlineExceeded), &mut w), None);
        assert_eq!(t.end(99, Ok(Bytes::new()), &mut w), None, "unknown id");
        let outcome = t.get_mut(id).unwrap().outcome.take();
        assert_eq!(outcome.unwrap().unwrap(), Bytes::from_static(b"first"));
        assert_eq!(t.forget(id), Ended::Already);
        // After forgetting, a late response is ignored too.
        assert_eq!(t.end(id, Ok(Bytes::new()), &mut w), None);
    }

    #[test]
    fn calls_beyond_the_peers_limit_are_held_in_order_and_released_as_slots_free() {
        let mut t = Outgoing::new(2);
        let (a, fa) = t.start(frame(1), None, None, false);
        let (b, fb) = t.start(frame(2), None, None, false);
        let (c, fc) = t.start(frame(3), None, None, false);
        let (d, fd) = t.start(frame(4), None, None, false);
        assert!(fa.is_some() && fb.is_some());
        assert!(fc.is_none() && fd.is_none());
        let mut out = Vec::new();
        t.release(&mut out);
        assert!(out.is_empty(), "no slot free yet");
        // A held call that gives up costs nothing and frees nothing.
        assert_eq!(t.forget(c), Ended::Abandoned(Stage::Held));
        let mut w = Vec::new();
        t.end(a, Ok(Bytes::new()), &mut w);
        t.release(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, d, "the oldest held call still waiting goes first");
        let _ = b;
    }

    #[test]
    fn a_stream_accepts_no_item_beyond_its_credit() {
        let mut t = Outgoing::new(4);
        let (id, _) = t.start(
            frame(1),
            None,
            Some(StreamState {
                credit: 2,
                items: VecDeque::new(),
            }),
            false,
        );
        let mut w = Vec::new();
        t.item(id, Bytes::from_static(b"1"), &mut w).unwrap();
        t.item(id, Bytes::from_static(b"2"), &mut w).unwrap();
        let err = t.item(id, Bytes::from_static(b"3"), &mut w).unwrap_err();
        assert!(err.contains("beyond the granted window"), "{err}");
        // Items for a unary call are a violation; for unknown calls, ignored.
        let (u, _) = t.start(frame(2), None, None, false);
        assert!(t.item(u, Bytes::new(), &mut w).is_err());
        assert!(t.item(77, Bytes::new(), &mut w).is_ok());
    }

    #[test]
    fn deadlines_end_calls_held_or_on_the_wire_and_report_the_next_one() {
        let mut t = Outgoing::new(1);
        let now = Instant::now();
        let soon = now + Duration::from_millis(10);
        let later = now + Duration::from_secs(10);
        let (a, _) = t.start(frame(1), Some(soon), None, false);
        let (b, _) = t.start(frame(2), Some(soon), None, false); // held
        let (c, _) = t.start(frame(3), Some(later), None, false); // held
        let (mut w, mut on_wire) = (Vec::new(), Vec::new());
        assert_eq!(t.expire(now, &mut w, &mut on_wire), Some(soon));
        assert!(on_wire.is_empty());
        assert_eq!(t.expire(soon, &mut w, &mut on_wire), Some(later));
        assert_eq!(on_wire, [a], "only the call on the wire needs a Cancel");
        for id in [a, b] {
            let o = t.get_mut(id).unwrap().outcome.take().unwrap();
            assert!(matches!(o, Err(Error::DeadlineExceeded)));
        }
        // The slot a freed goes to c, the oldest held call still waiting.
        let mut out = Vec::new();
        t.release(&mut out);
        assert_eq!(out.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [c]);
    }
}
