//! The rules of input streams, on the core alone: frames in, frames out, no runtime.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::super::{Core, CoreConfig, Limits};
use crate::protocol::{self, Frame, FrameBuf, Header, Message, Parts};

fn core() -> Core {
    Core::new(
        Instant::now(),
        CoreConfig {
            keepalive_interval: Duration::from_secs(3600),
            keepalive_timeout: Duration::from_secs(3600),
            idle_timeout: None,
            send_buffer: 1 << 20,
            limits: Limits {
                max_calls: 8,
                max_bytes: 1 << 20,
                max_deadline: None,
                services: 1,
            },
            peer_max_frame: 1 << 20,
            peer_max_calls: 8,
            max_message: Some(1 << 20),
        },
    )
}

fn payload(header: &Header, body: &[u8]) -> Bytes {
    let mut p = postcard::to_allocvec(header).unwrap();
    p.extend_from_slice(body);
    Bytes::from(p)
}

fn frame(header: &Header) -> Message {
    Frame::from(FrameBuf::new(header, 0).finish(usize::MAX).unwrap()).into()
}

/// The headers of everything the core has queued, written.
fn written(core: &mut Core) -> Vec<Header> {
    let mut out = Vec::new();
    while let Some(batch) = core.take_batch() {
        for f in &batch.frames {
            let bytes = [&f.head[..], &f.tail[..]].concat();
            out.push(protocol::split_frame(&bytes[4..]).unwrap().0);
        }
        core.written(batch);
    }
    out
}

fn request(id: u64) -> Header {
    Header::Request {
        id,
        service: 0,
        method: 0,
        timeout_ms: None,
        window: 0,
    }
}

/// A core with the peer's call 7 admitted and its input opened with a window of 2.
fn serving() -> Core {
    let mut c = core();
    let d = c
        .handle_frame(Instant::now(), payload(&request(7), &[]))
        .unwrap();
    assert!(d.is_some());
    assert!(c.open_input(7, 2));
    assert_eq!(written(&mut c), [Header::InputCredit { id: 7, items: 2 }]);
    c
}

fn poll_input(c: &mut Core, id: u64) -> std::task::Poll<Option<Result<Bytes, crate::Error>>> {
    c.poll_input(id, &futures_util::task::noop_waker())
}

#[test]
fn items_within_credit_are_read_in_order_then_the_end() {
    let mut c = serving();
    let now = Instant::now();
    c.handle_frame(now, payload(&Header::Input { id: 7 }, b"a"))
        .unwrap();
    c.handle_frame(now, payload(&Header::Input { id: 7 }, b"b"))
        .unwrap();
    assert!(poll_input(&mut c, 7).is_ready());
    assert!(matches!(poll_input(&mut c, 7), std::task::Poll::Ready(Some(Ok(b))) if &b[..] == b"b"));
    assert!(poll_input(&mut c, 7).is_pending());
    c.grant_input(7, 1);
    assert_eq!(written(&mut c), [Header::InputCredit { id: 7, items: 1 }]);
    c.handle_frame(now, payload(&Header::Input { id: 7 }, b"c"))
        .unwrap();
    c.handle_frame(now, payload(&Header::InputEnd { id: 7 }, &[]))
        .unwrap();
    assert!(matches!(poll_input(&mut c, 7), std::task::Poll::Ready(Some(Ok(b))) if &b[..] == b"c"));
    assert!(matches!(
        poll_input(&mut c, 7),
        std::task::Poll::Ready(None)
    ));
}

#[test]
fn an_item_beyond_the_credit_is_a_violation() {
    let mut c = serving();
    let now = Instant::now();
    for body in [b"1", b"2"] {
        c.handle_frame(now, payload(&Header::Input { id: 7 }, body))
            .unwrap();
    }
    let e = c
        .handle_frame(now, payload(&Header::Input { id: 7 }, b"3"))
        .unwrap_err();
    assert!(e.contains("beyond the credit"), "{e}");
    // The first part of an item beyond it too.
    let mut c = serving();
    for body in [b"1", b"2"] {
        c.handle_frame(now, payload(&Header::Input { id: 7 }, body))
            .unwrap();
    }
    let part = Header::Part {
        id: 7,
        reply: false,
        total: 10,
    };
    let e = c.handle_frame(now, payload(&part, b"01234")).unwrap_err();
    assert!(e.contains("beyond the credit"), "{e}");
}

#[test]
fn input_not_opened_after_the_end_or_an_end_mid_item_is_a_violation() {
    let now = Instant::now();
    // Admitted, but its input was never opened (a unary method, or before the credit).
    let mut c = core();
    c.handle_frame(now, payload(&request(7), &[])).unwrap();
    let e = c
        .handle_frame(now, payload(&Header::Input { id: 7 }, b"x"))
        .unwrap_err();
    assert!(e.contains("takes none"), "{e}");
    let e = c
        .handle_frame(now, payload(&Header::InputEnd { id: 7 }, &[]))
        .unwrap_err();
    assert!(e.contains("takes none"), "{e}");
    // After the end.
    let mut c = serving();
    c.handle_frame(now, payload(&Header::InputEnd { id: 7 }, &[]))
        .unwrap();
    let e = c
        .handle_frame(now, payload(&Header::Input { id: 7 }, b"x"))
        .unwrap_err();
    assert!(e.contains("after its end"), "{e}");
    let e = c
        .handle_frame(now, payload(&Header::InputEnd { id: 7 }, &[]))
        .unwrap_err();
    assert!(e.contains("second end"), "{e}");
    // The end in the middle of an item in parts.
    let mut c = serving();
    let part = Header::Part {
        id: 7,
        reply: false,
        total: 10,
    };
    c.handle_frame(now, payload(&part, b"01234")).unwrap();
    let e = c
        .handle_frame(now, payload(&Header::InputEnd { id: 7 }, &[]))
        .unwrap_err();
    assert!(e.contains("middle of an item"), "{e}");
}

#[test]
fn an_item_in_parts_is_put_together_and_counts_once() {
    let mut c = serving();
    let now = Instant::now();
    let part = Header::Part {
        id: 7,
        reply: false,
        total: 10,
    };
    c.handle_frame(now, payload(&part, b"01234")).unwrap();
    c.handle_frame(now, payload(&part, b"567")).unwrap();
    c.handle_frame(now, payload(&Header::Input { id: 7 }, b"89"))
        .unwrap();
    assert!(
        matches!(poll_input(&mut c, 7), std::task::Poll::Ready(Some(Ok(b))) if &b[..] == b"0123456789")
    );
    // One credit spent: one more item fits.
    c.handle_frame(now, payload(&Header::Input { id: 7 }, b"z"))
        .unwrap();
}

#[test]
fn late_input_is_ignored_and_the_reader_learns_the_call_ended() {
    let mut c = serving();
    let now = Instant::now();
    c.handle_frame(now, payload(&Header::Cancel { id: 7 }, &[]))
        .unwrap();
    assert!(matches!(
        poll_input(&mut c, 7),
        std::task::Poll::Ready(Some(Err(_)))
    ));
    // Items, parts of items and ends for a call that ended: dropped, nothing kept.
    let part = Header::Part {
        id: 7,
        reply: false,
        total: 10,
    };
    c.handle_frame(now, payload(&Header::Input { id: 7 }, b"x"))
        .unwrap();
    c.handle_frame(now, payload(&part, b"01234")).unwrap();
    c.handle_frame(now, payload(&Header::Input { id: 7 }, b"56789"))
        .unwrap();
    c.handle_frame(now, payload(&Header::InputEnd { id: 7 }, &[]))
        .unwrap();
    assert_eq!(c.inc.bytes(), 0);
    // Never opened by it: no credit for an unknown call.
    assert!(!c.open_input(99, 4));
    assert!(written(&mut c).is_empty());
}

/// This side's call 1, on the wire, taking input.
fn calling() -> Core {
    let mut c = core();
    let id = c
        .start_call(|id| Ok(frame(&request(id))), None, None, true)
        .unwrap();
    assert_eq!(id, 1);
    assert_eq!(written(&mut c), [request(1)]);
    c
}

fn ready(c: &mut Core, id: u64) -> std::task::Poll<bool> {
    c.poll_input_ready(id, &futures_util::task::noop_waker())
}

#[test]
fn the_caller_sends_only_with_credit_and_after_its_request() {
    let mut c = calling();
    let now = Instant::now();
    assert!(ready(&mut c, 1).is_pending(), "input before any credit");
    assert!(!c.send_input(1, frame(&Header::Input { id: 1 })));
    c.handle_frame(now, payload(&Header::InputCredit { id: 1, items: 2 }, &[]))
        .unwrap();
    for _ in 0..2 {
        assert_eq!(ready(&mut c, 1), std::task::Poll::Ready(true));
        assert!(c.send_input(1, frame(&Header::Input { id: 1 })));
    }
    assert!(ready(&mut c, 1).is_pending(), "beyond the credit");
    assert!(!c.send_input(1, frame(&Header::Input { id: 1 })));
    assert!(c.end_input(1));
    assert!(!c.end_input(1));
    assert_eq!(
        written(&mut c),
        [
            Header::Input { id: 1 },
            Header::Input { id: 1 },
            Header::InputEnd { id: 1 }
        ]
    );
    // The answer ends the call: the pump stops.
    c.handle_frame(
        now,
        payload(
            &Header::Response {
                id: 1,
                status: protocol::Status::Ok,
            },
            &[],
        ),
    )
    .unwrap();
    assert_eq!(ready(&mut c, 1), std::task::Poll::Ready(false));
    assert!(
        c.poll_input_gone(1, &futures_util::task::noop_waker())
            .is_ready()
    );
}

#[test]
fn a_call_given_up_after_credit_is_cancelled_even_if_its_items_were_withdrawn() {
    let mut c = calling();
    let now = Instant::now();
    c.handle_frame(now, payload(&Header::InputCredit { id: 1, items: 4 }, &[]))
        .unwrap();
    assert!(c.send_input(1, frame(&Header::Input { id: 1 })));
    // The item is still queued when the caller gives up: withdrawn, and a Cancel goes.
    c.abandon(1);
    assert_eq!(written(&mut c), [Header::Cancel { id: 1 }]);
    // A failing input stream does the same, and the call ends with its error.
    let mut c = calling();
    c.handle_frame(now, payload(&Header::InputCredit { id: 1, items: 4 }, &[]))
        .unwrap();
    c.fail_input(1, crate::Error::Encode("broken".into()));
    assert_eq!(written(&mut c), [Header::Cancel { id: 1 }]);
    let r = c.poll_unary(1, &futures_util::task::noop_waker());
    assert!(matches!(
        r,
        std::task::Poll::Ready(Err(crate::Error::Encode(_)))
    ));
}

#[test]
fn credit_for_a_call_without_input_or_not_on_the_wire_is_ignored() {
    let mut c = core();
    let now = Instant::now();
    let id = c
        .start_call(|id| Ok(frame(&request(id))), None, None, false)
        .unwrap();
    c.handle_frame(now, payload(&Header::InputCredit { id, items: 4 }, &[]))
        .unwrap();
    c.handle_frame(now, payload(&Header::InputCredit { id: 99, items: 4 }, &[]))
        .unwrap();
    assert_eq!(ready(&mut c, id), std::task::Poll::Ready(false));
    assert!(!c.send_input(id, frame(&Header::Input { id })));
}

#[test]
fn an_input_item_larger_than_a_frame_goes_in_parts_after_the_request() {
    let mut c = calling();
    let now = Instant::now();
    c.handle_frame(now, payload(&Header::InputCredit { id: 1, items: 1 }, &[]))
        .unwrap();
    let parts = Message::Parts(Box::new(Parts::new(
        Header::Input { id: 1 },
        [Bytes::from_static(b"0123456789")],
        64 + 4,
    )));
    assert!(c.send_input(1, parts));
    let w = written(&mut c);
    assert_eq!(w.last(), Some(&Header::Input { id: 1 }));
    assert!(w[..w.len() - 1].iter().all(|h| matches!(
        h,
        Header::Part {
            id: 1,
            reply: false,
            total: 10
        }
    )));
}
