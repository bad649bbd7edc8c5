//! The send path's rules, one test (or more) each.
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

/// The header of this side's request `id`.
fn request(id: u64) -> crate::protocol::Header {
    crate::protocol::Header::Request {
        id,
        service: 0,
        method: 0,
        timeout_ms: None,
        window: 0,
    }
}

/// A message in parts of `len` bytes for `tag`, in pieces of `PART_BYTES` less the room
/// for a header.
fn parts(tag: Tag, len: usize) -> Message {
    use crate::protocol::{Header, Status};
    let last = match tag {
        Tag::Request(id) => request(id),
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
        Tag::Request(id) => request(id),
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
fn a_stream_item_in_parts_counts_one_piece_against_the_budget_and_holds_its_producer() {
    let mut q = SendQueue::new(1 << 20);
    let mut admitted = Vec::new();
    let mut freed = Vec::new();
    assert!(
        q.item(parts(Tag::Reply(1), 10 << 20), Tag::Reply(1))
            .unwrap()
    );
    assert!(
        q.data(whole(Tag::Reply(2)), Tag::Reply(2)).unwrap(),
        "10 MiB in parts do not fill a 1 MiB budget"
    );
    assert!(q.is_blocked(Tag::Reply(1)), "its producer waits");
    assert!(!q.is_blocked(Tag::Reply(2)));
    // Once its first piece is taken, the producer may queue the next item behind it.
    let b = q.take().unwrap();
    q.take_freed(&mut freed);
    assert_eq!(freed, [Tag::Reply(1)], "its producer is told at once");
    assert!(!q.is_blocked(Tag::Reply(1)));
    q.written(b, &mut admitted);
    let mut batches = 1;
    q.item(parts(Tag::Reply(1), 1 << 20), Tag::Reply(1))
        .unwrap();
    assert!(q.is_blocked(Tag::Reply(1)), "but not a third");
    while q.has_ready() {
        let b = q.take().unwrap();
        batches += 1;
        q.written(b, &mut admitted);
    }
    assert_eq!(
        batches,
        41 + 5,
        "a piece of 256 KiB less 64 bytes per batch, the second item after the first"
    );
    assert!(q.is_drained());
    // Everything written is out of the budget.
    assert_eq!(q.data_bytes, 0);
}

#[test]
fn a_stream_holds_at_most_ahead_bytes_of_items_not_yet_taken() {
    let mut q = SendQueue::new(8 << 20);
    let mut freed = Vec::new();
    let item = || Frame::from(Bytes::from(vec![1u8; 100 * 1024]));
    q.item(item(), Tag::Reply(7)).unwrap();
    q.item(item(), Tag::Reply(7)).unwrap();
    assert!(!q.is_blocked(Tag::Reply(7)), "200 KiB ahead");
    q.item(item(), Tag::Reply(7)).unwrap();
    assert!(q.is_blocked(Tag::Reply(7)), "300 KiB ahead");
    assert!(!q.is_blocked(Tag::Reply(8)), "another stream goes on");
    // Unary responses are not items: they never hold anyone.
    q.data(item(), Tag::Reply(9)).unwrap();
    q.data(item(), Tag::Reply(9)).unwrap();
    q.data(item(), Tag::Reply(9)).unwrap();
    assert!(!q.is_blocked(Tag::Reply(9)));
    let b = q.take().unwrap();
    q.take_freed(&mut freed);
    assert_eq!(freed, [Tag::Reply(7)], "taken: the producer is told");
    assert!(!q.is_blocked(Tag::Reply(7)));
    // Withdrawn (cancelled) items stop counting.
    let mut admitted = Vec::new();
    q.written(b, &mut admitted);
    q.item(item(), Tag::Reply(7)).unwrap();
    q.item(item(), Tag::Reply(7)).unwrap();
    q.item(item(), Tag::Reply(7)).unwrap();
    q.withdraw(Tag::Reply(7), &mut admitted);
    assert!(!q.is_blocked(Tag::Reply(7)));
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
