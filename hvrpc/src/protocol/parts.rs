//! Messages as they are queued: one frame, or — a body larger than the peer's `max_frame` —
//! [`Parts`], cut into frames as the writer takes them (kind 10, `docs/PROTOCOL.md` §3).
//!
//! Invariants (each has a test in `tests.rs`):
//!
//! 1. The pieces, in order, are the body: nothing copied, nothing lost, nothing repeated.
//! 2. Every frame fits the peer's `max_frame`; every piece but the last goes in a Part frame
//!    carrying the message's call id, direction and whole length, and the last goes in the
//!    message's own frame (its Request, Response or StreamItem header).

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use super::{Frame, Header, INLINE_TAIL, encode_header};

/// Pieces are at most this long (less if the peer's `max_frame` is smaller): other calls'
/// frames go out between two of them, so one large message delays a small call by at most
/// about this many bytes' writing.
pub(crate) const PART_BYTES: usize = 256 * 1024;

/// Room for any header in front of a piece (the longest, a Request's, is under 40 bytes).
pub(crate) const HEADER_ROOM: usize = 64;

/// Whether a body of `len` bytes goes in parts to a peer with `limits`: it does not fit one
/// frame. (Cutting every body over a piece would let bulk frames give way to small calls
/// sooner, but costs the receiver a copy: 0.6× raw for a 1 MiB echo instead of 0.8–1.0×;
/// streams are kept close to the writer instead, see `engine::send`.)
pub(crate) fn goes_in_parts(len: usize, limits: &PeerLimits) -> bool {
    limits.max_message.is_some() && len.saturating_add(HEADER_ROOM) > limits.max_frame
}

/// What the peer takes, from its Hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerLimits {
    /// The largest frame payload.
    pub(crate) max_frame: usize,
    /// The largest message body in parts; `None` if the peer takes no parts.
    pub(crate) max_message: Option<usize>,
}

/// What a call has to send: a frame, or parts.
#[derive(Debug)]
pub(crate) enum Message {
    Whole(Frame),
    Parts(Box<Parts>),
}

impl From<Frame> for Message {
    fn from(frame: Frame) -> Self {
        Message::Whole(frame)
    }
}

impl Message {
    /// Bytes to count against the send budget while it waits: a frame's length; for parts,
    /// one piece (the rest is memory the sender holds anyway, and counting it would stop every
    /// other call's frames behind it).
    pub(crate) fn budget_len(&self) -> usize {
        match self {
            Message::Whole(f) => f.len(),
            Message::Parts(p) => p.piece,
        }
    }
}

/// A body too large for one frame, with the header of its last frame.
#[derive(Debug)]
pub(crate) struct Parts {
    last: Header,
    id: u64,
    reply: bool,
    total: u64,
    /// The body not yet cut off, as the segments it came in.
    rest: VecDeque<Bytes>,
    piece: usize,
    taken: bool,
}

impl Parts {
    /// `body` (its segments, in order) to go in parts, ending with `last` (a Request, an `Ok`
    /// Response, a StreamItem or an Input header), for a peer taking frames of `max_frame` bytes.
    pub(crate) fn new(
        last: Header,
        body: impl IntoIterator<Item = Bytes>,
        max_frame: usize,
    ) -> Self {
        let (id, reply) = match last {
            Header::Request { id, .. } | Header::Input { id } => (id, false),
            Header::Response { id, .. } | Header::StreamItem { id } => (id, true),
            _ => (0, true),
        };
        let rest: VecDeque<Bytes> = body.into_iter().filter(|b| !b.is_empty()).collect();
        let total = rest.iter().map(|b| b.len() as u64).sum();
        Self {
            last,
            id,
            reply,
            total,
            rest,
            piece: max_frame.min(PART_BYTES).saturating_sub(HEADER_ROOM).max(1),
            taken: false,
        }
    }

    /// The largest piece.
    pub(crate) fn piece_len(&self) -> usize {
        self.piece
    }

    /// Whether a frame of it has been taken.
    pub(crate) fn is_started(&self) -> bool {
        self.taken
    }

    /// The next frame to write, and whether it is the message's last.
    pub(crate) fn next_frame(&mut self) -> (Frame, bool) {
        self.taken = true;
        // A short segment before a long one (the length of a byte string before the bytes)
        // is copied in front of the next piece rather than sent alone.
        let mut inline = Bytes::new();
        if self.rest.len() > 1
            && let Some(front) = self.rest.front()
            && front.len() <= INLINE_TAIL
            && front.len() < self.piece
        {
            inline = self.rest.pop_front().unwrap_or_default();
        }
        let room = self.piece - inline.len();
        let piece = match self.rest.front_mut() {
            Some(seg) if seg.len() > room => seg.split_to(room),
            Some(_) => self.rest.pop_front().unwrap_or_default(),
            None => Bytes::new(),
        };
        let last = self.rest.is_empty();
        let header = if last {
            self.last.clone()
        } else {
            Header::Part {
                id: self.id,
                reply: self.reply,
                total: self.total,
            }
        };
        (with_tail(&header, &inline, piece), last)
    }
}

/// A frame of `header` whose body is `inline` (copied) then `tail` (not copied).
fn with_tail(header: &Header, inline: &[u8], tail: Bytes) -> Frame {
    let mut room = [0u8; HEADER_ROOM];
    let hlen = encode_header(header, &mut room).unwrap_or(0);
    let mut head = BytesMut::with_capacity(4 + hlen + inline.len());
    let len = u32::try_from(hlen + inline.len() + tail.len()).unwrap_or(u32::MAX);
    head.put_u32(len);
    head.extend_from_slice(room.get(..hlen).unwrap_or_default());
    head.extend_from_slice(inline);
    Frame { head, tail }
}
