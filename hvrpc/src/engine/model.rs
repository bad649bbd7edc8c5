//! Exhaustive small-scope exploration of the core: every sequence (up to a depth) of what
//! callers, the peer, the clock, the writer and shutdown can do, replayed on a fresh core, with
//! the rules of exactly one outcome per call and of frame order checked after every step and at
//! the end. No runtime, no threads, no timing: the same sequences run every time.
//!
//! The scope: two calls of this side's (unary, with a deadline; the peer takes one at a time,
//! so the second waits for a slot), two calls of the peer's, a send budget of one byte (so
//! frames wait for room), a clock that jumps past every deadline, and a peer that answers,
//! cancels, pings back and goes away. With `large`, call 1 of each side sends its message in
//! three parts, so the rules are checked with parts interleaving with other frames too.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::*;
use crate::protocol::{FrameBuf, Header, Parts, Status};

/// What can happen next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ev {
    /// This side starts call `k`.
    Start(usize),
    /// The caller of `k` gives up.
    Abandon(usize),
    /// The caller of `k` looks for its outcome.
    Poll(usize),
    /// The peer answers this side's call `k` (if its request reached it).
    Answer(usize),
    /// The peer sends request `j`.
    Request(usize),
    /// The handler of the peer's call `j` finishes.
    Handle(usize),
    /// The peer cancels its call `j`.
    PeerCancel(usize),
    /// The peer says it is going away.
    PeerGoAway,
    /// The writer writes one batch.
    Write,
    /// The clock passes every deadline.
    Tick,
    /// A graceful shutdown starts.
    Shutdown,
    /// The peer answers the pings it has seen.
    Pong,
    /// The connection is closed.
    Close,
}

#[derive(Debug, PartialEq, Eq, Clone)]
enum Outcome {
    Answer,
    Deadline,
    Lost,
    NotSent,
}

#[derive(Debug, Default)]
struct Ours {
    id: u64,
    /// What must come out, by the first thing that happened to the call.
    expect: Option<Outcome>,
    taken: bool,
    abandoned: bool,
}

struct Sim {
    core: Core,
    now: Instant,
    ours: [Option<Ours>; 2],
    /// Frames written, in order.
    wire: Vec<Header>,
    /// The peer's view of this side's calls: requests seen, answered.
    seen: HashSet<u64>,
    answered: HashSet<u64>,
    /// The peer's calls: sent, dispatched (running here), cancelled by the peer.
    sent: [bool; 2],
    running: HashSet<u64>,
    /// The peer's calls admitted here (ever).
    admitted: HashSet<u64>,
    peer_cancelled: HashSet<u64>,
    /// Final frames written per peer call id.
    finals: HashMap<u64, usize>,
    pings: Vec<u64>,
    closed: bool,
    /// Call 1 of each side goes in parts.
    large: bool,
    /// Part frames written, per (reply, id).
    parts: HashMap<(bool, u64), usize>,
}

/// A message of 10 bytes in parts of 4 bytes (two Part frames, then the last frame).
fn in_parts(last: Header) -> Message {
    Message::Parts(Box::new(Parts::new(
        last,
        [Bytes::from_static(b"0123456789")],
        64 + 4,
    )))
}

fn peer_id(j: usize) -> u64 {
    100 + j as u64
}

fn payload(header: &Header) -> Bytes {
    let f = FrameBuf::new(header, 0).finish(usize::MAX).unwrap();
    f.slice(4..)
}

impl Sim {
    fn new(budget: usize, large: bool) -> Self {
        let now = Instant::now();
        let core = Core::new(
            now,
            CoreConfig {
                keepalive_interval: Duration::from_secs(3600),
                keepalive_timeout: Duration::from_secs(3600),
                idle_timeout: None,
                send_buffer: budget,
                limits: Limits {
                    max_calls: 8,
                    max_bytes: 1 << 20,
                    max_deadline: None,
                    services: 1,
                },
                peer_max_frame: 1 << 20,
                peer_max_calls: 1,
                max_message: Some(1 << 20),
            },
        );
        let mut core = core;
        if large {
            // Every batch a frame or a piece: parts and other frames interleave.
            core.send.set_batch_bytes(1);
        }
        Sim {
            core,
            now,
            ours: [None, None],
            wire: Vec::new(),
            seen: HashSet::new(),
            answered: HashSet::new(),
            sent: [false; 2],
            running: HashSet::new(),
            admitted: HashSet::new(),
            peer_cancelled: HashSet::new(),
            finals: HashMap::new(),
            pings: Vec::new(),
            closed: false,
            large,
            parts: HashMap::new(),
        }
    }

    fn enabled(&self, ev: Ev) -> bool {
        match ev {
            Ev::Start(k) => self.ours[k].is_none(),
            Ev::Abandon(k) | Ev::Poll(k) => self.ours[k]
                .as_ref()
                .is_some_and(|c| !c.taken && !c.abandoned),
            Ev::Answer(k) => self.ours[k]
                .as_ref()
                .is_some_and(|c| self.seen.contains(&c.id) && !self.answered.contains(&c.id)),
            Ev::Request(j) => !self.sent[j],
            Ev::Handle(j) => self.running.contains(&peer_id(j)),
            Ev::PeerCancel(j) => self.sent[j] && !self.peer_cancelled.contains(&peer_id(j)),
            Ev::Pong => !self.pings.is_empty(),
            Ev::PeerGoAway | Ev::Write | Ev::Tick | Ev::Shutdown | Ev::Close => !self.closed,
        }
    }

    /// Records the first thing that decides call `k`'s outcome.
    fn decide(&mut self, k: usize, outcome: Outcome) {
        if let Some(c) = self.ours[k].as_mut()
            && c.expect.is_none()
            && !c.abandoned
        {
            c.expect = Some(outcome);
        }
    }

    fn apply(&mut self, ev: Ev) {
        let waker = futures_util::task::noop_waker();
        match ev {
            Ev::Start(k) => {
                let deadline = Some(self.now + Duration::from_millis(10));
                let large = self.large && k == 1;
                let r = self.core.start_call(
                    |id| {
                        let header = Header::Request {
                            id,
                            service: 0,
                            method: 0,
                            timeout_ms: Some(10),
                            window: 0,
                        };
                        if large {
                            return Ok(in_parts(header));
                        }
                        Ok(
                            Frame::from(FrameBuf::new(&header, 0).finish(usize::MAX).unwrap())
                                .into(),
                        )
                    },
                    deadline,
                    None,
                    false,
                );
                let mut ours = Ours::default();
                match r {
                    Ok(id) => ours.id = id,
                    Err(Error::ConnectionLost(_)) => {
                        ours.expect = Some(Outcome::Lost);
                        ours.taken = true;
                    }
                    Err(_) => {
                        ours.expect = Some(Outcome::NotSent);
                        ours.taken = true;
                    }
                }
                self.ours[k] = Some(ours);
            }
            Ev::Abandon(k) => {
                let id = self.ours[k].as_ref().map(|c| c.id).unwrap_or(0);
                self.core.abandon(id);
                if let Some(c) = self.ours[k].as_mut() {
                    c.abandoned = true;
                }
            }
            Ev::Poll(k) => {
                let id = self.ours[k].as_ref().map(|c| c.id).unwrap_or(0);
                if let Poll::Ready(r) = self.core.poll_unary(id, &waker) {
                    let got = match r {
                        Ok(b) if &b[..] == b"answer" => Outcome::Answer,
                        Ok(other) => panic!("call {id} got someone else's body {other:?}"),
                        Err(Error::DeadlineExceeded) => Outcome::Deadline,
                        Err(Error::ConnectionLost(_)) => Outcome::Lost,
                        Err(Error::Remote {
                            code: ErrorCode::ShuttingDown,
                            ..
                        }) => Outcome::NotSent,
                        Err(e) => panic!("call {id}: unexpected {e:?}"),
                    };
                    let c = self.ours[k].as_mut().unwrap();
                    assert_eq!(
                        c.expect.as_ref(),
                        Some(&got),
                        "call {id} ended with {got:?} before anything decided it"
                    );
                    c.taken = true;
                } else if let Some(c) = self.ours[k].as_ref() {
                    assert!(
                        c.expect.is_none(),
                        "call {id} decided ({:?}) but not delivered",
                        c.expect
                    );
                }
            }
            Ev::Answer(k) => {
                let id = self.ours[k].as_ref().unwrap().id;
                self.answered.insert(id);
                let mut p = payload(&Header::Response {
                    id,
                    status: Status::Ok,
                })
                .to_vec();
                p.extend_from_slice(b"answer");
                let p = Bytes::from(p);
                self.core.handle_frame(self.now, p).unwrap();
                self.decide(k, Outcome::Answer);
            }
            Ev::Request(j) => {
                self.sent[j] = true;
                let header = Header::Request {
                    id: peer_id(j),
                    service: 0,
                    method: 0,
                    timeout_ms: Some(10),
                    window: 0,
                };
                if let Some(d) = self.core.handle_frame(self.now, payload(&header)).unwrap() {
                    self.running.insert(d.id);
                    self.admitted.insert(d.id);
                }
            }
            Ev::Handle(j) => {
                let id = peer_id(j);
                self.running.remove(&id);
                if self.large && j == 1 {
                    let last = Header::Response {
                        id,
                        status: Status::Ok,
                    };
                    self.core.respond(self.now, id, in_parts(last));
                    return self.after();
                }
                let f = FrameBuf::new(
                    &Header::Response {
                        id,
                        status: Status::Ok,
                    },
                    0,
                )
                .finish(usize::MAX)
                .unwrap();
                self.core.respond(self.now, id, Frame::from(f));
            }
            Ev::PeerCancel(j) => {
                let id = peer_id(j);
                self.peer_cancelled.insert(id);
                self.core
                    .handle_frame(self.now, payload(&Header::Cancel { id }))
                    .unwrap();
            }
            Ev::PeerGoAway => {
                self.core
                    .handle_frame(
                        self.now,
                        payload(&Header::GoAway {
                            reason: "bye".into(),
                        }),
                    )
                    .unwrap();
                for k in 0..2 {
                    let held = self.ours[k]
                        .as_ref()
                        .is_some_and(|c| !self.seen.contains(&c.id) && !self.queued(c.id));
                    if held {
                        self.decide(k, Outcome::NotSent);
                    }
                }
            }
            Ev::Write => {
                if let Some(batch) = self.core.take_batch() {
                    for f in &batch.frames {
                        let bytes = [&f.head[..], &f.tail[..]].concat();
                        let (h, _) = protocol::split_frame(&bytes[4..]).unwrap();
                        self.on_wire(h);
                    }
                    self.core.written(batch);
                }
            }
            Ev::Tick => {
                self.now += Duration::from_millis(20);
                self.core.handle_timeout(self.now);
                for k in 0..2 {
                    if self.ours[k].as_ref().is_some_and(|c| !c.abandoned) {
                        self.decide(k, Outcome::Deadline);
                    }
                }
            }
            Ev::Shutdown => self.core.shutdown(self.now, Duration::from_millis(50)),
            Ev::Pong => {
                for n in std::mem::take(&mut self.pings) {
                    self.core
                        .handle_frame(self.now, payload(&Header::Pong(n)))
                        .unwrap();
                }
            }
            Ev::Close => self.core.close("closed by the model"),
        }
        self.after();
    }

    /// What follows every event: the connection's end decides the calls still open.
    fn after(&mut self) {
        if self.core.is_closed() && !self.closed {
            self.closed = true;
            for k in 0..2 {
                self.decide(k, Outcome::Lost);
            }
        }
        // A call may have been ended by the core without an event of its own naming it (a
        // slot freed by another call's end lets a held call out; the lost connection). The
        // checks below compare with what the model decided.
    }

    /// Whether this side's request `id` waits in the send queue (not yet written).
    fn queued(&self, id: u64) -> bool {
        self.core.send.is_queued(Tag::Request(id))
    }

    /// Whether the peer has seen any of this side's request `id` (a part, or all of it).
    fn seen_any(&self, id: u64) -> bool {
        self.seen.contains(&id) || self.parts.contains_key(&(false, id))
    }

    fn on_wire(&mut self, h: Header) {
        match &h {
            Header::Part { id, reply, total } => {
                assert_eq!(*total, 10);
                let ended_before = !reply
                    && self.ours.iter().flatten().any(|c| {
                        c.id == *id && (c.abandoned || c.expect == Some(Outcome::Deadline))
                    });
                assert!(
                    !ended_before,
                    "a part of request {id} after its call had ended"
                );
                assert!(
                    !(*reply && self.peer_cancelled.contains(id)),
                    "a part for the peer's call {id} after it cancelled it"
                );
                let n = self.parts.entry((*reply, *id)).or_default();
                *n += 1;
                assert!(*n <= 2, "too many parts of {id}");
            }
            Header::Request { id, .. } => {
                if self.large && self.ours[1].as_ref().is_some_and(|c| c.id == *id) {
                    assert_eq!(
                        self.parts.get(&(false, *id)),
                        Some(&2),
                        "request {id} ended before its parts"
                    );
                }
                assert!(self.seen.insert(*id), "request {id} written twice");
                let ended_before =
                    self.ours.iter().flatten().any(|c| {
                        c.id == *id && (c.abandoned || c.expect == Some(Outcome::Deadline))
                    });
                assert!(
                    !ended_before,
                    "request {id} written after its call had ended"
                );
            }
            Header::Cancel { id } => {
                assert!(
                    self.seen_any(*id),
                    "a Cancel for {id} overtook its Request: {:?}",
                    self.wire
                );
            }
            Header::Response { id, status } => {
                // (A refusal queued before the Cancel may still go: the caller ignores frames
                // for calls it cancelled.)
                assert!(
                    !(self.peer_cancelled.contains(id) && self.admitted.contains(id)),
                    "a frame for the peer's call {id} after it cancelled it"
                );
                if self.large && *id == peer_id(1) && *status == Status::Ok {
                    assert_eq!(
                        self.parts.get(&(true, *id)),
                        Some(&2),
                        "the response of {id} before its parts"
                    );
                }
                let n = self.finals.entry(*id).or_default();
                *n += 1;
                assert_eq!(*n, 1, "two final frames for the peer's call {id}");
            }
            Header::Ping(n) => self.pings.push(*n),
            _ => {}
        }
        self.wire.push(h);
    }

    /// Ends the run: writes what is left, closes, and checks that every call had exactly one
    /// outcome and every admitted call of the peer's one final frame.
    fn finish(mut self) {
        for _ in 0..16 {
            self.apply(Ev::Write);
        }
        // Calls whose requests went out and that were given up must have been cancelled,
        // unless the connection was closed first.
        if !self.closed {
            for c in self.ours.iter().flatten() {
                let gave_up = c.abandoned || c.expect == Some(Outcome::Deadline);
                if gave_up && self.seen_any(c.id) && !self.answered.contains(&c.id) {
                    let cancelled = self
                        .wire
                        .iter()
                        .any(|h| matches!(h, Header::Cancel { id } if *id == c.id));
                    assert!(cancelled, "call {} was given up without a Cancel", c.id);
                }
            }
            for j in 0..2 {
                let id = peer_id(j);
                let live = self.sent[j] && !self.peer_cancelled.contains(&id);
                if live && !self.running.contains(&id) {
                    assert_eq!(
                        self.finals.get(&id).copied().unwrap_or(0),
                        1,
                        "the peer's call {id} got no final frame: {:?}",
                        self.wire
                    );
                }
            }
        }
        self.apply(Ev::Close);
        for k in 0..2 {
            if self.ours[k]
                .as_ref()
                .is_some_and(|c| !c.taken && !c.abandoned)
            {
                self.apply(Ev::Poll(k));
                assert!(self.ours[k].as_ref().unwrap().taken, "call {k} never ended");
            }
        }
    }
}

/// Runs every sequence of `alphabet` up to `depth` events, each on a fresh core.
fn explore(alphabet: &[Ev], depth: usize, budget: usize, large: bool) -> usize {
    fn go(
        prefix: &mut Vec<Ev>,
        alphabet: &[Ev],
        depth: usize,
        (budget, large): (usize, bool),
        n: &mut usize,
    ) {
        // Replay the prefix, then check its end state.
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut sim = Sim::new(budget, large);
            for &ev in prefix.iter() {
                sim.apply(ev);
            }
            let options: Vec<Ev> = alphabet
                .iter()
                .copied()
                .filter(|&e| sim.enabled(e))
                .collect();
            sim.finish();
            options
        }));
        let options = match run {
            Ok(o) => o,
            Err(p) => {
                eprintln!("failing sequence (send budget {budget}): {prefix:?}");
                std::panic::resume_unwind(p)
            }
        };
        *n += 1;
        if prefix.len() == depth {
            return;
        }
        for ev in options {
            prefix.push(ev);
            go(prefix, alphabet, depth, (budget, large), n);
            prefix.pop();
        }
    }
    let mut n = 0;
    go(&mut Vec::new(), alphabet, depth, (budget, large), &mut n);
    n
}

fn depth(default: usize) -> usize {
    std::env::var("HVRPC_MODEL_DEPTH")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(default)
}

#[test]
fn this_sides_calls_end_exactly_once_and_cancels_follow_their_requests() {
    use Ev::*;
    let alphabet = [
        Start(0),
        Start(1),
        Abandon(0),
        Abandon(1),
        Poll(0),
        Poll(1),
        Answer(0),
        Answer(1),
        Write,
        Tick,
        PeerGoAway,
        Close,
    ];
    for budget in [1, 1 << 20] {
        let n = explore(&alphabet, depth(6), budget, false);
        println!("this side's calls, send budget {budget}: {n} sequences");
        assert!(n > 10_000, "{n} sequences");
    }
}

#[test]
fn the_peers_calls_get_one_final_frame_and_nothing_after_a_cancel() {
    use Ev::*;
    let alphabet = [
        Request(0),
        Request(1),
        Handle(0),
        Handle(1),
        PeerCancel(0),
        PeerCancel(1),
        Write,
        Tick,
        Shutdown,
        Pong,
        Close,
    ];
    for budget in [1, 1 << 20] {
        let n = explore(&alphabet, depth(6), budget, false);
        println!("the peer's calls, send budget {budget}: {n} sequences");
        assert!(n > 10_000, "{n} sequences");
    }
}

#[test]
fn both_directions_at_once() {
    use Ev::*;
    let alphabet = [
        Start(0),
        Abandon(0),
        Poll(0),
        Answer(0),
        Request(0),
        Handle(0),
        PeerCancel(0),
        Write,
        Tick,
        Shutdown,
        Pong,
    ];
    let n = explore(&alphabet, depth(6), 1, false);
    println!("both directions: {n} sequences");
    assert!(n > 10_000, "{n} sequences");
}

#[test]
fn messages_in_parts_interleave_in_order_end_once_and_are_cancelled_after_a_part() {
    use Ev::*;
    let alphabet = [
        Start(0),
        Start(1),
        Abandon(1),
        Poll(1),
        Answer(1),
        Request(0),
        Request(1),
        Handle(1),
        PeerCancel(1),
        Write,
        Tick,
    ];
    for budget in [1, 1 << 20] {
        let n = explore(&alphabet, depth(6), budget, true);
        println!("messages in parts, send budget {budget}: {n} sequences");
        assert!(n > 10_000, "{n} sequences");
    }
}
