//! The send path: which frames go on the wire, in which order, within which budget.
//!
//! Invariants (each has a test below):
//!
//! 1. **No splicing.** The writer takes whole frames, in batches, and only the holder of the
//!    write role writes; a batch is written to its end before another is taken. So the bytes of
//!    two frames never interleave, whoever writes.
//! 2. **Order.** Control frames (not bound to the order of any call's frames: pings, pongs,
//!    credits, cancels, go-aways, refusals) go before data frames not yet taken; data frames
//!    (requests, stream items, responses of admitted calls) leave in the order they were queued.
//! 3. **Budget.** Data frames are admitted while fewer than `budget` bytes of data wait to be
//!    written; later ones wait in `blocked`, in order, and are admitted as bytes are written.
//!    A frame larger than the budget is admitted when nothing else waits, so it still goes.
//! 4. **A peer that does not read** lets control frames pile up: more than [`MAX_CONTROL`] is an
//!    overflow, and the connection ends.
//! 5. **Withdrawal.** A data frame not yet taken by the writer can be withdrawn (its call was
//!    cancelled or expired first); once taken, it goes out whole.
//! 6. **Sealing.** Once sealed (the connection is finishing) nothing more is accepted; what is
//!    queued still goes.

use std::collections::VecDeque;

use crate::protocol::Frame;

/// Control frames that may wait; a peer that makes more pile up is not reading.
pub(crate) const MAX_CONTROL: usize = 4096;

/// Beyond its first frame, a batch takes data frames up to this many bytes.
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
    frame: Frame,
    tag: Tag,
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

    /// Queues a data frame; `Ok(false)` if it waits for budget (blocked).
    pub(crate) fn data(&mut self, frame: Frame, tag: Tag) -> Result<bool, Refused> {
        if self.sealed {
            return Err(Refused::Sealed);
        }
        let q = Queued { frame, tag };
        if self.blocked.is_empty() && self.data_bytes < self.budget {
            self.data_bytes += q.frame.len();
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
    }

    /// Whether a frame of `tag` waits for budget.
    pub(crate) fn is_blocked(&self, tag: Tag) -> bool {
        self.blocked.iter().any(|q| q.tag == tag)
    }

    /// Removes the data frames of `tag` not yet taken by the writer; whether any was there.
    /// The room freed lets blocked frames in (their tags are added to `admitted`).
    pub(crate) fn withdraw(&mut self, tag: Tag, admitted: &mut Vec<Tag>) -> bool {
        let before = self.data.len() + self.blocked.len();
        let mut freed = 0;
        self.data.retain(|q| {
            let keep = q.tag != tag;
            if !keep {
                freed += q.frame.len();
            }
            keep
        });
        self.data_bytes -= freed;
        self.blocked.retain(|q| q.tag != tag);
        self.admit(admitted);
        before != self.data.len() + self.blocked.len()
    }

    /// Moves blocked frames into the queue while there is room.
    fn admit(&mut self, admitted: &mut Vec<Tag>) {
        while self.data_bytes < self.budget {
            let Some(q) = self.blocked.pop_front() else {
                break;
            };
            self.data_bytes += q.frame.len();
            admitted.push(q.tag);
            self.data.push_back(q);
        }
    }

    /// Takes the next batch and the write role, unless someone holds it or nothing waits.
    pub(crate) fn take(&mut self) -> Option<Batch> {
        if self.writing || (self.control.is_empty() && self.data.is_empty()) {
            return None;
        }
        self.writing = true;
        let mut batch = Batch {
            frames: std::mem::take(&mut self.spare),
            data_bytes: 0,
        };
        batch.frames.extend(self.control.drain(..));
        while let Some(q) = self.data.pop_front() {
            batch.data_bytes += q.frame.len();
            batch.frames.push(q.frame);
            if batch.data_bytes >= BATCH_BYTES {
                break;
            }
        }
        Some(batch)
    }

    /// The batch taken last is written: its bytes leave the budget, blocked frames are
    /// admitted (their tags added to `admitted`), and the write role is free again.
    pub(crate) fn written(&mut self, mut batch: Batch, admitted: &mut Vec<Tag>) {
        self.writing = false;
        self.data_bytes -= batch.data_bytes.min(self.data_bytes);
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
        !self.writing && self.control.is_empty() && self.data.is_empty() && self.blocked.is_empty()
    }

    /// Whether frames wait that a writer could take now.
    pub(crate) fn has_ready(&self) -> bool {
        !self.control.is_empty() || !self.data.is_empty()
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
}
