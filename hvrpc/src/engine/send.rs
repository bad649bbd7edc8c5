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
//!    message in parts counts one piece ([`Message::budget_len`]); a stream's producer waits
//!    while its call has one queued ([`SendQueue::is_blocked`]), so it holds at most one.
//! 5. **A peer that does not read** lets control frames pile up: more than [`MAX_CONTROL`] is an
//!    overflow, and the connection ends.
//! 6. **Withdrawal.** A call's data frames not yet taken by the writer can be withdrawn (its
//!    call was cancelled or expired first); once taken, a frame goes out whole. Withdrawing a
//!    message in parts of which some part was taken drops the rest, and reports that the peer
//!    has seen some of it (so a request's Cancel goes out).
//! 7. **Sealing.** Once sealed (the connection is finishing) nothing more is accepted; what is
//!    queued still goes.

use std::collections::VecDeque;

use crate::protocol::{Frame, Message, Parts};

/// Control frames that may wait; a peer that makes more pile up is not reading.
pub(crate) const MAX_CONTROL: usize = 4096;

/// Beyond its first frame, a batch takes whole data frames up to this many bytes, then pieces
/// of messages in parts up to as many again.
const BATCH_BYTES: usize = 256 * 1024;

/// Whose frame a data frame is, so that it can be withdrawn or its admission reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// Bytes of data frames admitted and not yet written (queued or in the writer's batch).
    data_bytes: usize,
    budget: usize,
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
            data_bytes: 0,
            budget: budget.max(1),
            writing: false,
            sealed: false,
            spare: Vec::new(),
        }
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
        if self.sealed {
            return Err(Refused::Sealed);
        }
        let q = Queued {
            msg: msg.into(),
            tag,
        };
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
    /// budget, or a message of it in parts is not yet taken whole.
    pub(crate) fn is_blocked(&self, tag: Tag) -> bool {
        self.blocked.iter().any(|q| q.tag == tag)
            || (self.parted > 0
                && (self.active.iter().any(|a| a.tag == tag)
                    || self.data.iter().any(|q| q.tag == tag && q.is_parts())))
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
        while whole < BATCH_BYTES {
            let Some(q) = self.data.pop_front() else {
                break;
            };
            if self.parted > 0
                && let Some(a) = self.active.iter_mut().find(|a| a.tag == q.tag)
            {
                a.then.push_back(q);
                continue;
            }
            match q.msg {
                Message::Whole(frame) => {
                    whole += frame.len();
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
            if pieces > 0 && pieces + next.parts.piece_len() > BATCH_BYTES {
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
        self.data_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn f(bytes: &[u8]) -> Frame {
        Frame::from(Bytes::copy_from_slice(bytes))
    }

    fn drain(q: &mut SendQueue) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut admitted = Vec::new();
        while let Some(b) = q.take() {
            out.extend(
                b.frames
                    .iter()
                    .map(|fr| [&fr.head[..], &fr.tail[..]].concat()),
            );
            q.written(b, &mut admitted);
        }
        out
    }

    #[test]
    fn control_frames_go_before_data_not_yet_taken_and_data_keeps_its_order() {
        let mut q = SendQueue::new(1 << 20);
        q.data(f(b"d1"), Tag::Request(1)).unwrap();
        q.data(f(b"d2"), Tag::Request(2)).unwrap();
        q.control(f(b"c1")).unwrap();
        q.data(f(b"d3"), Tag::Reply(9)).unwrap();
        q.control(f(b"c2")).unwrap();
        assert_eq!(drain(&mut q), [b"c1", b"c2", b"d1", b"d2", b"d3"]);
        assert!(q.is_drained());
    }

    #[test]
    fn only_one_writer_at_a_time_and_a_batch_finishes_before_the_next() {
        let mut q = SendQueue::new(1 << 20);
        q.data(f(b"a"), Tag::Request(1)).unwrap();
        let first = q.take().expect("a batch");
        assert!(q.is_writing());
        // Frames queued meanwhile, even control ones, wait for the batch in progress.
        q.control(f(b"ping")).unwrap();
        q.data(f(b"b"), Tag::Request(2)).unwrap();
        assert!(q.take().is_none(), "a second writer while the first writes");
        let mut admitted = Vec::new();
        q.written(first, &mut admitted);
        let second = q.take().expect("the rest");
        let bytes: Vec<_> = second.frames.iter().map(|fr| fr.head.to_vec()).collect();
        assert_eq!(bytes, [b"ping".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn the_budget_blocks_data_in_order_and_admits_it_as_bytes_are_written() {
        let mut q = SendQueue::new(10);
        assert!(q.data(f(&[1; 8]), Tag::Reply(1)).unwrap());
        // 8 < 10: admitted even though it overshoots.
        assert!(q.data(f(&[2; 8]), Tag::Reply(2)).unwrap());
        assert!(
            !q.data(f(&[3; 1]), Tag::Reply(3)).unwrap(),
            "over the budget"
        );
        assert!(
            !q.data(f(&[4; 1]), Tag::Reply(4)).unwrap(),
            "behind a blocked frame"
        );
        assert!(q.is_blocked(Tag::Reply(3)));
        let b = q.take().unwrap();
        assert_eq!(b.frames.len(), 2);
        let mut admitted = Vec::new();
        q.written(b, &mut admitted);
        assert_eq!(admitted, [Tag::Reply(3), Tag::Reply(4)]);
        assert!(!q.is_blocked(Tag::Reply(3)));
        assert_eq!(drain(&mut q), [vec![3u8], vec![4u8]]);
    }

    #[test]
    fn a_frame_larger_than_the_budget_still_goes() {
        let mut q = SendQueue::new(4);
        assert!(q.data(f(&[7; 100]), Tag::Request(1)).unwrap());
        assert_eq!(drain(&mut q), [vec![7u8; 100]]);
    }

    #[test]
    fn control_frames_overflow_when_the_peer_does_not_read() {
        let mut q = SendQueue::new(10);
        for _ in 0..MAX_CONTROL {
            q.control(f(b"p")).unwrap();
        }
        assert_eq!(q.control(f(b"p")), Err(Refused::Overflow));
    }

    #[test]
    fn frames_not_yet_taken_can_be_withdrawn_taken_ones_cannot() {
        let mut q = SendQueue::new(3);
        q.data(f(b"aaa"), Tag::Request(1)).unwrap();
        q.data(f(b"bbb"), Tag::Request(2)).unwrap(); // blocked
        let mut admitted = Vec::new();
        assert!(
            q.withdraw(Tag::Request(2), &mut admitted),
            "a blocked frame"
        );
        let b = q.take().unwrap();
        assert!(
            !q.withdraw(Tag::Request(1), &mut admitted),
            "a frame in the writer's batch"
        );
        assert!(
            !q.withdraw(Tag::Request(3), &mut admitted),
            "a frame never queued"
        );
        q.written(b, &mut admitted);
        assert!(admitted.is_empty());
        q.data(f(b"ccc"), Tag::Request(4)).unwrap();
        assert!(q.withdraw(Tag::Request(4), &mut admitted), "a queued frame");
        assert!(q.is_drained());
        // Withdrawing gives its bytes back to the budget.
        assert!(q.data(f(b"d"), Tag::Request(5)).unwrap());
    }

    /// Found by the model test: withdrawing a queued frame frees room for the blocked ones,
    /// or they would wait for a write that never comes.
    #[test]
    fn withdrawing_a_frame_lets_blocked_frames_in() {
        let mut q = SendQueue::new(1);
        q.data(f(b"a"), Tag::Reply(1)).unwrap();
        assert!(!q.data(f(b"b"), Tag::Reply(2)).unwrap(), "blocked");
        let mut admitted = Vec::new();
        assert!(q.withdraw(Tag::Reply(1), &mut admitted));
        assert_eq!(admitted, [Tag::Reply(2)]);
        assert_eq!(drain(&mut q), [b"b"]);
    }

    #[test]
    fn a_sealed_queue_takes_nothing_more_but_sends_what_it_has() {
        let mut q = SendQueue::new(100);
        q.data(f(b"last"), Tag::Reply(1)).unwrap();
        q.seal();
        assert_eq!(q.control(f(b"x")), Err(Refused::Sealed));
        assert_eq!(q.data(f(b"y"), Tag::Reply(2)), Err(Refused::Sealed));
        assert_eq!(drain(&mut q), [b"last"]);
    }

    #[test]
    fn batches_are_bounded_beyond_their_first_frame() {
        let mut q = SendQueue::new(usize::MAX);
        for i in 0..10u64 {
            q.data(
                Frame::from(Bytes::from(vec![0u8; 100 * 1024])),
                Tag::Reply(i),
            )
            .unwrap();
        }
        let b = q.take().unwrap();
        assert_eq!(
            b.frames.len(),
            3,
            "256 KiB reached after three 100 KiB frames"
        );
    }

    /// A message in parts of `len` bytes for `tag`, in pieces of `PART_BYTES` less the room
    /// for a header.
    fn parts(tag: Tag, len: usize) -> Message {
        use crate::protocol::{Header, Status};
        let last = match tag {
            Tag::Request(id) => Header::Request {
                id,
                service: 0,
                method: 0,
                timeout_ms: None,
                window: 0,
            },
            Tag::Reply(id) => Header::Response {
                id,
                status: Status::Ok,
            },
        };
        Message::Parts(Box::new(Parts::new(
            last,
            [Bytes::from(vec![7u8; len])],
            1 << 20,
        )))
    }

    /// Each frame of a batch as (kind, id).
    fn kinds(b: &Batch) -> Vec<(u8, u64)> {
        use crate::protocol::{Header, split_frame};
        b.frames
            .iter()
            .map(|fr| {
                let bytes = [&fr.head[..], &fr.tail[..]].concat();
                match split_frame(&bytes[4..]).unwrap().0 {
                    Header::Request { id, .. } => (1, id),
                    Header::Response { id, .. } => (2, id),
                    Header::StreamItem { id } => (3, id),
                    Header::Part { id, .. } => (10, id),
                    _ => (0, 0),
                }
            })
            .collect()
    }

    fn whole(tag: Tag) -> Frame {
        use crate::protocol::{FrameBuf, Header};
        let header = match tag {
            Tag::Request(id) => Header::Request {
                id,
                service: 0,
                method: 0,
                timeout_ms: None,
                window: 0,
            },
            Tag::Reply(id) => Header::StreamItem { id },
        };
        FrameBuf::new(&header, 0).finish_frame(usize::MAX).unwrap()
    }

    #[test]
    fn other_calls_frames_go_between_the_parts_and_the_calls_own_wait_for_its_last() {
        let mut q = SendQueue::new(1 << 20);
        let mut admitted = Vec::new();
        // Three pieces: 2 x (256 KiB - 64) and the rest.
        q.data(parts(Tag::Reply(1), 600_000), Tag::Reply(1))
            .unwrap();
        q.data(whole(Tag::Reply(2)), Tag::Reply(2)).unwrap();
        // The same call's next frame (a stream's end) waits for the message's last part.
        q.data(whole(Tag::Reply(1)), Tag::Reply(1)).unwrap();
        let b = q.take().unwrap();
        assert_eq!(
            kinds(&b),
            [(3, 2), (10, 1)],
            "a small frame overtakes the bulk"
        );
        q.written(b, &mut admitted);
        q.data(whole(Tag::Request(5)), Tag::Request(5)).unwrap();
        let b = q.take().unwrap();
        assert_eq!(kinds(&b), [(1, 5), (10, 1)]);
        q.written(b, &mut admitted);
        let b = q.take().unwrap();
        assert_eq!(kinds(&b), [(2, 1)], "the last piece, in the Response");
        let sizes: usize = b.frames.iter().map(Frame::len).sum();
        assert!(sizes > 600_000 - 2 * 262_144, "{sizes}");
        q.written(b, &mut admitted);
        let b = q.take().unwrap();
        assert_eq!(kinds(&b), [(3, 1)], "then the call's own frame behind it");
        q.written(b, &mut admitted);
        assert!(q.is_drained());
    }

    #[test]
    fn messages_in_parts_take_turns() {
        let mut q = SendQueue::new(1 << 20);
        let mut admitted = Vec::new();
        q.data(parts(Tag::Request(1), 600_000), Tag::Request(1))
            .unwrap();
        q.data(parts(Tag::Request(2), 600_000), Tag::Request(2))
            .unwrap();
        let mut order = Vec::new();
        while let Some(b) = q.take() {
            order.extend(kinds(&b));
            q.written(b, &mut admitted);
        }
        assert_eq!(order, [(10, 1), (10, 2), (10, 1), (10, 2), (1, 1), (1, 2)]);
    }

    #[test]
    fn a_message_in_parts_counts_one_piece_against_the_budget_and_holds_its_producer() {
        let mut q = SendQueue::new(1 << 20);
        let mut admitted = Vec::new();
        assert!(
            q.data(parts(Tag::Reply(1), 10 << 20), Tag::Reply(1))
                .unwrap()
        );
        assert!(
            q.data(whole(Tag::Reply(2)), Tag::Reply(2)).unwrap(),
            "10 MiB in parts do not fill a 1 MiB budget"
        );
        assert!(q.is_blocked(Tag::Reply(1)), "its producer waits");
        assert!(!q.is_blocked(Tag::Reply(2)));
        let mut batches = 0;
        while q.has_ready() {
            assert!(q.is_blocked(Tag::Reply(1)), "until its last part is taken");
            let b = q.take().unwrap();
            batches += 1;
            q.written(b, &mut admitted);
        }
        assert_eq!(batches, 41, "a piece of 256 KiB less 64 bytes per batch");
        assert_eq!(admitted, [Tag::Reply(1)], "its producer is told");
        assert!(!q.is_blocked(Tag::Reply(1)));
        assert!(q.is_drained());
        // Everything written is out of the budget.
        assert_eq!(q.data_bytes, 0);
    }

    #[test]
    fn withdrawing_a_message_in_parts_reports_whether_the_peer_saw_some_of_it() {
        let mut q = SendQueue::new(1 << 20);
        let mut admitted = Vec::new();
        q.data(parts(Tag::Request(1), 600_000), Tag::Request(1))
            .unwrap();
        assert!(q.withdraw(Tag::Request(1), &mut admitted), "nothing taken");
        assert!(q.is_drained());
        q.data(parts(Tag::Request(2), 600_000), Tag::Request(2))
            .unwrap();
        q.data(whole(Tag::Reply(9)), Tag::Reply(9)).unwrap();
        let b = q.take().unwrap();
        assert!(
            !q.withdraw(Tag::Request(2), &mut admitted),
            "its first part is out: the peer must be told (Cancel)"
        );
        q.written(b, &mut admitted);
        assert!(q.take().is_none(), "nothing more of it goes");
        assert!(q.is_drained());
        assert_eq!(q.data_bytes, 0);
    }
}
