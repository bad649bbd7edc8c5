//! The send path: which frames go on the wire, in which order, within which budget.
//!
//! Invariants (each has a test below):
//!
//! 1. **No splicing.** The writer takes whole frames, in batches, and only the holder of the
//!    write role writes; a batch is written to its end before another is taken. So the bytes of
//!    two frames never interleave, whoever writes.
//! 2. **Order.** Control frames (not bound to the order of any call's frames: pings, pongs,
//!    credits, cancels, go-aways, refusals) go before data frames not yet taken; data frames
//!    (requests, stream items, responses of admitted calls) leave in the order they were queued,
//!    per call: a frame of a call whose message goes in parts waits until its last part is
//!    taken.
//! 3. **Interleaving.** A message in parts ([`Message::Parts`]) gives up the line after each
//!    batch's worth of pieces: every batch takes the whole frames waiting first (up to
//!    [`BATCH_BYTES`]), then pieces of the messages in parts, round-robin (up to
//!    [`BATCH_BYTES`] more). A bulk transfer never keeps a small call's frame waiting for more
//!    than a batch.
//! 4. **Budget.** Data frames are admitted while fewer than `budget` bytes of data wait to be
//!    written; later ones wait in `blocked`, in order, and are admitted as bytes are written.
//!    A frame larger than the budget is admitted when nothing else waits, so it still goes. A
//!    message in parts counts one piece ([`Message::budget_len`]).
//! 5. **A stream stays close to the writer.** A stream's producer waits
//!    ([`SendQueue::is_blocked`]) while its items not yet taken reach [`AHEAD`] bytes, or
//!    one of them in parts is not taken whole, and is told when the writer takes them
//!    ([`SendQueue::take_freed`]). So a bulk stream keeps the writer busy but holds at most
//!    about one item ahead of it, and other calls' frames wait behind little of it.
//! 6. **A peer that does not read** lets control frames pile up: more than [`MAX_CONTROL`] is an
//!    overflow, and the connection ends.
//! 7. **Withdrawal.** A call's data frames not yet taken by the writer can be withdrawn (its
//!    call was cancelled or expired first); once taken, a frame goes out whole. Withdrawing a
//!    message in parts of which some part was taken drops the rest, and reports that the peer
//!    has seen some of it (so a request's Cancel goes out).
//! 8. **Sealing.** Once sealed (the connection is finishing) nothing more is accepted; what is
//!    queued still goes.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;

use super::outgoing::IdHasher;
use crate::protocol::{Frame, Message, Parts};

/// Bytes of a stream's items that may wait to be taken before its producer waits.
pub(crate) const AHEAD: usize = 256 * 1024;

/// Control frames that may wait; a peer that makes more pile up is not reading.
pub(crate) const MAX_CONTROL: usize = 4096;

/// Beyond its first frame, a batch takes whole data frames up to this many bytes, then pieces
/// of messages in parts up to as many again.
const BATCH_BYTES: usize = 256 * 1024;

/// Whose frame a data frame is, so that it can be withdrawn or its admission reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Tag {
    /// The request of this side's call `id`.
    Request(u64),
    /// A stream item or the response of the peer's call `id`.
    Reply(u64),
}

#[derive(Debug)]
struct Queued {
    msg: Message,
    tag: Tag,
    /// A stream item (counted in `SendQueue::ahead`).
    item: bool,
}

impl Queued {
    fn is_parts(&self) -> bool {
        matches!(self.msg, Message::Parts(_))
    }
}

/// A message in parts being written, and its call's frames queued behind it.
#[derive(Debug)]
struct Active {
    tag: Tag,
    parts: Box<Parts>,
    then: VecDeque<Queued>,
}

/// What the writer writes next: whole frames.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) frames: Vec<Frame>,
    /// Bytes of data frames in it (counted against the budget until written).
    data_bytes: usize,
}

/// The frames waiting to be written.
#[derive(Debug)]
pub(crate) struct SendQueue {
    control: VecDeque<Frame>,
    data: VecDeque<Queued>,
    blocked: VecDeque<Queued>,
    /// Messages in parts of which the writer has taken the first frames.
    active: VecDeque<Active>,
    /// Messages in parts anywhere in the queue (so that the common case looks for none).
    parted: usize,
    /// Calls whose message in parts was taken whole by the batch being written: reported as
    /// admitted once it is written (their producers may go on).
    finished: Vec<Tag>,
    /// Bytes of stream items (the peer's calls' output, this side's calls' input) not yet
    /// taken, by call.
    ahead: HashMap<Tag, usize, BuildHasherDefault<IdHasher>>,
    /// Streams that fell below [`AHEAD`] in the last batch taken.
    freed: Vec<Tag>,
    /// Bytes of data frames admitted and not yet written (queued or in the writer's batch).
    data_bytes: usize,
    budget: usize,
    /// [`BATCH_BYTES`] (smaller in the model test, to make every piece a batch of its own).
    batch: usize,
    writing: bool,
    sealed: bool,
    /// The frame vector of the last batch written, kept for the next one.
    spare: Vec<Frame>,
}

/// Why a frame was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The connection is finishing or closed.
    Sealed,
    /// Too many control frames wait: the peer is not reading.
    Overflow,
}

impl SendQueue {
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            control: VecDeque::new(),
            data: VecDeque::new(),
            blocked: VecDeque::new(),
            active: VecDeque::new(),
            parted: 0,
            finished: Vec::new(),
            ahead: HashMap::default(),
            freed: Vec::new(),
            data_bytes: 0,
            budget: budget.max(1),
            batch: BATCH_BYTES,
            writing: false,
            sealed: false,
            spare: Vec::new(),
        }
    }

    /// Sets the batch limit (the model test).
    #[cfg(test)]
    pub(crate) fn set_batch_bytes(&mut self, batch: usize) {
        self.batch = batch.max(1);
    }

    /// Queues a control frame.
    pub(crate) fn control(&mut self, frame: Frame) -> Result<(), Refused> {
        if self.sealed {
            return Err(Refused::Sealed);
        }
        if self.control.len() >= MAX_CONTROL {
            return Err(Refused::Overflow);
        }
        self.control.push_back(frame);
        Ok(())
    }

    /// Queues a data message; `Ok(false)` if it waits for budget (blocked).
    pub(crate) fn data(&mut self, msg: impl Into<Message>, tag: Tag) -> Result<bool, Refused> {
        self.queue(msg.into(), tag, false)
    }

    /// Queues a stream item: of the peer's stream call (`Tag::Reply`), or of this side's
    /// call's input (`Tag::Request`); see [`is_blocked`](Self::is_blocked).
    pub(crate) fn item(&mut self, msg: impl Into<Message>, tag: Tag) -> Result<bool, Refused> {
        self.queue(msg.into(), tag, true)
    }

    fn queue(&mut self, msg: Message, tag: Tag, item: bool) -> Result<bool, Refused> {
        if self.sealed {
            return Err(Refused::Sealed);
        }
        let q = Queued { msg, tag, item };
        if let (true, Message::Whole(f)) = (item, &q.msg) {
            *self.ahead.entry(tag).or_default() += f.len();
        }
        if q.is_parts() {
            self.parted += 1;
        }
        if self.blocked.is_empty() && self.data_bytes < self.budget {
            self.data_bytes += q.msg.budget_len();
            self.data.push_back(q);
            Ok(true)
        } else {
            self.blocked.push_back(q);
            Ok(false)
        }
    }

    /// Whether a frame of `tag` waits to be taken (queued or blocked).
    #[cfg(test)]
    pub(crate) fn is_queued(&self, tag: Tag) -> bool {
        self.data.iter().chain(&self.blocked).any(|q| q.tag == tag)
            || self.active.iter().any(|a| a.tag == tag)
    }

    /// Whether `tag`'s producer should wait before queuing more: a frame of it waits for
    /// budget, its items not yet taken reach [`AHEAD`] bytes, or a message of it in parts is
    /// not yet taken whole.
    pub(crate) fn is_blocked(&self, tag: Tag) -> bool {
        let ahead = self.ahead.get(&tag).copied().unwrap_or(0);
        ahead >= AHEAD
            || self.blocked.iter().any(|q| q.tag == tag)
            || (self.parted > 0
                && self
                    .data
                    .iter()
                    .chain(&self.blocked)
                    .any(|q| q.tag == tag && q.is_parts()))
    }

    /// Removes the data frames of `tag` not yet taken by the writer; whether any was there
    /// and the peer has seen nothing of it (no part of a message in parts was taken). The
    /// room freed lets blocked frames in (their tags are added to `admitted`).
    pub(crate) fn withdraw(&mut self, tag: Tag, admitted: &mut Vec<Tag>) -> bool {
        let mut found = false;
        let mut seen = false;
        let mut freed = 0;
        let mut parted = 0;
        let mut drop_it = |q: &Queued, counted: bool| {
            found = true;
            if counted {
                freed += q.msg.budget_len();
            }
            if q.is_parts() {
                parted += 1;
            }
        };
        self.data.retain(|q| {
            let keep = q.tag != tag;
            if !keep {
                drop_it(q, true);
            }
            keep
        });
        self.blocked.retain(|q| {
            let keep = q.tag != tag;
            if !keep {
                drop_it(q, false);
            }
            keep
        });
        if let Some(at) = self.active.iter().position(|a| a.tag == tag)
            && let Some(a) = self.active.remove(at)
        {
            for q in &a.then {
                drop_it(q, true);
            }
            found = true;
            seen = a.parts.is_started();
            freed += a.parts.piece_len();
            parted += 1;
        }
        self.parted -= parted;
        self.ahead.remove(&tag);
        self.data_bytes -= freed.min(self.data_bytes);
        self.admit(admitted);
        found && !seen
    }

    /// Moves blocked frames into the queue while there is room.
    fn admit(&mut self, admitted: &mut Vec<Tag>) {
        while self.data_bytes < self.budget {
            let Some(q) = self.blocked.pop_front() else {
                break;
            };
            self.data_bytes += q.msg.budget_len();
            admitted.push(q.tag);
            self.data.push_back(q);
        }
    }

    /// Takes the next batch and the write role, unless someone holds it or nothing waits.
    pub(crate) fn take(&mut self) -> Option<Batch> {
        if self.writing || !self.has_ready() {
            return None;
        }
        self.writing = true;
        let mut batch = Batch {
            frames: std::mem::take(&mut self.spare),
            data_bytes: 0,
        };
        batch.frames.extend(self.control.drain(..));
        let mut whole = 0;
        while whole < self.batch {
            let Some(q) = self.data.pop_front() else {
                break;
            };
            if self.parted > 0
                && let Some(a) = self.active.iter_mut().find(|a| a.tag == q.tag)
            {
                a.then.push_back(q);
                continue;
            }
            if q.item && q.is_parts() {
                // Its producer may queue the next item while this one goes.
                self.freed.push(q.tag);
            }
            match q.msg {
                Message::Whole(frame) => {
                    whole += frame.len();
                    if q.item {
                        self.taken_item(q.tag, frame.len());
                    }
                    batch.frames.push(frame);
                }
                Message::Parts(parts) => self.active.push_back(Active {
                    tag: q.tag,
                    parts,
                    then: VecDeque::new(),
                }),
            }
        }
        batch.data_bytes = whole;
        // Pieces up to a batch's worth: a piece that would go beyond it waits for the next
        // batch, unless it is the first.
        let mut pieces = 0;
        while let Some(next) = self.active.front() {
            if pieces > 0 && pieces + next.parts.piece_len() > self.batch {
                break;
            }
            let Some(mut a) = self.active.pop_front() else {
                break;
            };
            let (frame, last) = a.parts.next_frame();
            pieces += frame.len();
            batch.frames.push(frame);
            if last {
                batch.data_bytes += a.parts.piece_len();
                self.parted -= 1;
                self.finished.push(a.tag);
                // Its call's frames that waited behind it go next, in order.
                while let Some(q) = a.then.pop_back() {
                    self.data.push_front(q);
                }
            } else {
                self.active.push_back(a);
            }
        }
        Some(batch)
    }

    /// An item of `tag`'s stream, of `len` bytes, is taken.
    fn taken_item(&mut self, tag: Tag, len: usize) {
        if let Some(ahead) = self.ahead.get_mut(&tag) {
            let was = *ahead;
            *ahead -= len.min(*ahead);
            if *ahead == 0 {
                self.ahead.remove(&tag);
            }
            if was >= AHEAD && was - len.min(was) < AHEAD {
                self.freed.push(tag);
            }
        }
    }

    /// The streams whose producers may go on since the last batch was taken (their items
    /// fell below [`AHEAD`]), added to `into`.
    pub(crate) fn take_freed(&mut self, into: &mut Vec<Tag>) {
        into.append(&mut self.freed);
    }

    /// The batch taken last is written: its bytes leave the budget, blocked frames are
    /// admitted (their tags added to `admitted`, with those of messages in parts now written
    /// whole), and the write role is free again.
    pub(crate) fn written(&mut self, mut batch: Batch, admitted: &mut Vec<Tag>) {
        self.writing = false;
        self.data_bytes -= batch.data_bytes.min(self.data_bytes);
        admitted.append(&mut self.finished);
        self.admit(admitted);
        batch.frames.clear();
        self.spare = batch.frames;
    }

    /// Whether someone holds the write role.
    pub(crate) fn is_writing(&self) -> bool {
        self.writing
    }

    /// Whether nothing waits and nobody writes.
    pub(crate) fn is_drained(&self) -> bool {
        !self.writing
            && self.control.is_empty()
            && self.data.is_empty()
            && self.blocked.is_empty()
            && self.active.is_empty()
    }

    /// Whether frames wait that a writer could take now.
    pub(crate) fn has_ready(&self) -> bool {
        !self.control.is_empty() || !self.data.is_empty() || !self.active.is_empty()
    }

    /// Accepts nothing more; what is queued still goes.
    pub(crate) fn seal(&mut self) {
        self.sealed = true;
    }

    /// Drops everything (the connection is closed); the write role stays with its holder,
    /// whose batch is simply no longer wanted.
    pub(crate) fn clear(&mut self) {
        self.sealed = true;
        self.control.clear();
        self.data.clear();
        self.blocked.clear();
        self.active.clear();
        self.parted = 0;
        self.finished.clear();
        self.ahead.clear();
        self.freed.clear();
        self.data_bytes = 0;
    }
}

#[cfg(test)]
mod tests;
