//! The wire protocol: the preamble, frame headers and the handshake. `docs/PROTOCOL.md` is the
//! specification; the golden tests at the bottom pin the bytes it documents.
//!
//! Every frame is `u32` big-endian length, then the postcard encoding of a [`Header`], then the
//! frame's body: for requests the postcard-encoded arguments, for responses and stream items the
//! postcard-encoded value. The frame length bounds the body, so the body has no length of its
//! own.

mod encode;
mod frame;
mod parts;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;

pub(crate) use encode::{decode_exact, encode_header, encode_into, split_frame};
pub(crate) use frame::{Frame, FrameBuf, INLINE_TAIL, put_len_varint};
pub(crate) use parts::{Message, Parts, PeerLimits, goes_in_parts};

/// The bytes each side sends first: `HVRPC`, the major protocol version, two reserved zeros.
pub(crate) const PREAMBLE: [u8; 8] = *b"HVRPC\x02\x00\x00";
/// The magic at the start of the preamble.
pub(crate) const MAGIC: &[u8; 5] = b"HVRPC";
/// The major protocol version; peers with different major versions refuse each other.
pub const PROTOCOL_VERSION: u8 = 2;

/// A frame header. The variant index is the frame kind on the wire: never reorder.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) enum Header {
    /// Kind 0: the handshake; the first frame in each direction, and only then.
    Hello(Hello),
    /// Kind 1: call `method` of the receiver's `service` (indexes into the receiver's Hello:
    /// its `services`, and that service's `methods`).
    /// The body is the postcard tuple of the arguments.
    Request {
        /// The caller's id for the call, unique on the connection in the caller's direction.
        id: u64,
        /// Index into the receiver's offered services.
        service: u32,
        /// Index of the method within the service (declaration order).
        method: u32,
        /// Relative deadline in milliseconds; `None` for none.
        timeout_ms: Option<u64>,
        /// For streaming methods: how many items the caller accepts before granting more
        /// with `Credit`; 0 for unary methods.
        window: u32,
    },
    /// Kind 2: the outcome of a call. For `Ok`, the body is the value (unary) or empty (the
    /// end of a stream).
    Response {
        /// The call.
        id: u64,
        /// How it ended.
        status: Status,
    },
    /// Kind 3: one item of a server stream; the body is the item.
    StreamItem {
        /// The call.
        id: u64,
    },
    /// Kind 4: the caller accepts `items` more stream items.
    Credit {
        /// The call.
        id: u64,
        /// Additional items.
        items: u32,
    },
    /// Kind 5: the caller gave up on a call; the receiver stops its handler and sends nothing
    /// more for it.
    Cancel {
        /// The call.
        id: u64,
    },
    /// Kind 6: keepalive probe; answered with `Pong` carrying the same value.
    Ping(u64),
    /// Kind 7: keepalive answer.
    Pong(u64),
    /// Kind 8: the sender is shutting down: it accepts no new calls, finishes the ones in
    /// flight, then closes.
    GoAway {
        /// Why, for logs.
        reason: String,
    },
    /// Kind 9: the schemas of the services whose methods the two Hellos show to differ; sent
    /// once, right after the Hello, by both sides or neither. The body is a postcard
    /// `Vec<ServiceSchema>`.
    Schemas,
    /// Kind 10 (only between peers that both announce [`FEATURE_PARTS`]): a piece of a message
    /// too large for one frame; the body is the piece. The message's pieces follow each other
    /// in order, and its ordinary last frame (Request, Response or StreamItem) carries the
    /// last piece: the receiver puts them together before it reads the message.
    Part {
        /// The call.
        id: u64,
        /// `false`: a piece of the sender's Request `id` (an id of the sender's calls);
        /// `true`: of a Response or StreamItem of the receiver's call `id`.
        reply: bool,
        /// The whole message's body length, the same in every part of it.
        total: u64,
    },
    /// Kind 11: one item of the input stream of the sender's call `id` (a method of kind 2 or
    /// 3); the body is the item. Sent only with credit from an [`InputCredit`](Self::InputCredit).
    Input {
        /// The call (an id of the sender's calls).
        id: u64,
    },
    /// Kind 12: the input stream of the sender's call `id` is complete; no body.
    InputEnd {
        /// The call (an id of the sender's calls).
        id: u64,
    },
    /// Kind 13: the receiver of call `id` accepts `items` more of its input items; the first
    /// one, right after it admits the call, opens the stream.
    InputCredit {
        /// The call (an id of the receiver's calls).
        id: u64,
        /// Additional items.
        items: u32,
    },
}

/// Hello `features` bit 0: the sender takes and sends messages larger than a frame in parts
/// (kind 10), and its Hello is followed by its [`HelloExt`].
pub(crate) const FEATURE_PARTS: u64 = 1;

/// What follows the Hello of a side announcing [`FEATURE_PARTS`] (new Hello fields go at its
/// end: an older reader ignores them).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct HelloExt {
    /// The largest message body (arguments or value, all parts together) the sender accepts.
    pub(crate) max_message: u64,
}

/// How a call ended.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    /// The handler returned; the body holds its value.
    Ok,
    /// The call failed in the runtime, not in the handler's own logic.
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// Human-readable details.
        message: String,
    },
}

/// The handshake message.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Hello {
    /// Optional features the sender supports ([`FEATURE_PARTS`]; unknown bits are ignored).
    pub(crate) features: u64,
    /// The largest frame payload the sender accepts.
    pub(crate) max_frame: u32,
    /// How many of the receiver's calls the sender runs at once.
    pub(crate) max_concurrent_calls: u32,
    /// The services the sender serves; requests address them (and their methods) by index.
    pub(crate) services: Vec<ServiceDesc>,
    /// The services the sender intends to call, so that the receiver knows which of its
    /// methods are called by another release, and which the caller requires exactly.
    pub(crate) wants: Vec<ServiceDesc>,
    /// Free text naming the implementation, e.g. `hvrpc/0.1.0`.
    pub(crate) agent: String,
}

/// A service as announced in the handshake.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceDesc {
    /// The service's name, e.g. `GuestInfo`.
    pub name: String,
    /// In `wants`: the sender requires the receiver's service to be exactly the same (every
    /// method, with the same schemas), or the connection is refused. Always `false` in
    /// `services`.
    pub strict: bool,
    /// Its methods, in the order of the definition; a Request's `method` indexes this list.
    pub methods: Vec<MethodDesc>,
}

impl ServiceDesc {
    /// A method by name, with its index.
    pub fn method(&self, name: &str) -> Option<(u32, &MethodDesc)> {
        self.methods
            .iter()
            .enumerate()
            .find(|(_, m)| m.name == name)
            .and_then(|(i, m)| Some((u32::try_from(i).ok()?, m)))
    }
}

/// A method as announced in the handshake.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
pub struct MethodDesc {
    /// Its name.
    pub name: String,
    /// How it exchanges values: 0 unary, 1 server stream; a receiver treats kinds it does not
    /// know as methods it cannot call.
    pub kind: u32,
    /// The hash of its argument tuple's schema (`docs/PROTOCOL.md` §6).
    pub args: u64,
    /// The hash of its result's schema (a stream's item).
    pub result: u64,
}
