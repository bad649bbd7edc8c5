//! The wire protocol: the preamble, frame headers and the handshake. `docs/PROTOCOL.md` is the
//! specification; the golden tests at the bottom pin the bytes it documents.
//!
//! Every frame is `u32` big-endian length, then the postcard encoding of a [`Header`], then the
//! frame's body: for requests the postcard-encoded arguments, for responses and stream items the
//! postcard-encoded value. The frame length bounds the body, so the body has no length of its
//! own.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;

/// The bytes each side sends first: `HVRPC`, the major protocol version, two reserved zeros.
pub(crate) const PREAMBLE: [u8; 8] = *b"HVRPC\x01\x00\x00";
/// The magic at the start of the preamble.
pub(crate) const MAGIC: &[u8; 5] = b"HVRPC";
/// The major protocol version; peers with different major versions refuse each other.
pub const PROTOCOL_VERSION: u8 = 1;

/// A frame header. The variant index is the frame kind on the wire: never reorder.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) enum Header {
    /// Kind 0: the handshake; the first frame in each direction, and only then.
    Hello(Hello),
    /// Kind 1: call `method` of the receiver's `service` (indexes into the receiver's Hello).
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
    /// Optional features the sender supports (none defined yet; unknown bits are ignored).
    pub(crate) features: u64,
    /// The largest frame payload the sender accepts.
    pub(crate) max_frame: u32,
    /// How many of the receiver's calls the sender runs at once.
    pub(crate) max_concurrent_calls: u32,
    /// The services the sender serves; requests address them by index.
    pub(crate) services: Vec<ServiceInfo>,
    /// The services the sender intends to call, so that the receiver can report a mismatch
    /// from its side too.
    pub(crate) wants: Vec<ServiceInfo>,
    /// Free text naming the implementation, e.g. `hvrpc/0.1.0`.
    pub(crate) agent: String,
}

/// A service as announced in the handshake.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceInfo {
    /// The service's name, e.g. `GuestInfo`.
    pub name: String,
    /// The fingerprint of its method signatures.
    pub fingerprint: u64,
}

/// A postcard output that appends to a `BytesMut` a slice at a time.
struct BytesMutFlavor<'a>(&'a mut BytesMut);

impl postcard::ser_flavors::Flavor for BytesMutFlavor<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.put_u8(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends the postcard encoding of `value` to `out`.
pub(crate) fn encode_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut BytesMut,
) -> postcard::Result<()> {
    postcard::serialize_with_flavor(value, BytesMutFlavor(out))
}

/// Decodes a body that must be exactly one `T`, no trailing bytes.
pub(crate) fn decode_exact<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(format!("{} unexpected bytes after the value", rest.len())),
        Err(e) => Err(e.to_string()),
    }
}

/// An encoded frame ready to write: `head` (length prefix, header and the start of the body)
/// and `tail`, a byte payload at the end of the body that is written as it is, without being
/// copied into `head` (empty for most frames).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) head: Bytes,
    pub(crate) tail: Bytes,
}

impl Frame {
    /// Bytes on the wire, length prefix included.
    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    /// Whether nothing is left to write.
    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_empty() && self.tail.is_empty()
    }

    /// What is left to write: up to two slices.
    pub(crate) fn chunks(&self) -> [&[u8]; 2] {
        [&self.head, &self.tail]
    }

    /// Drops the first `n` bytes (written).
    pub(crate) fn advance(&mut self, n: usize) {
        let from_head = n.min(self.head.len());
        self.head.advance(from_head);
        self.tail.advance((n - from_head).min(self.tail.len()));
    }
}

impl From<Bytes> for Frame {
    fn from(head: Bytes) -> Self {
        Frame {
            head,
            tail: Bytes::new(),
        }
    }
}

/// Byte strings up to this long are copied into the frame's head: cheaper than a second
/// buffer to write.
pub(crate) const INLINE_TAIL: usize = 4096;

/// Appends the postcard encoding of a byte string's length (an unsigned varint): with the
/// bytes after it, this is exactly how postcard encodes `&[u8]` or `Vec<u8>`.
pub(crate) fn put_len_varint(n: usize, out: &mut BytesMut) {
    // Into a growable buffer this cannot fail.
    let _ = encode_into(&n, out);
}

/// Builds one frame in a fresh buffer: length placeholder, header, body.
pub(crate) struct FrameBuf {
    buf: BytesMut,
}

impl FrameBuf {
    /// Starts a frame with `header`, reserving `body_hint` bytes for the body.
    pub(crate) fn new(header: &Header, body_hint: usize) -> Self {
        let mut buf = BytesMut::with_capacity(4 + 24 + body_hint);
        buf.put_u32(0);
        // Headers are plain data: encoding into a growable buffer cannot fail.
        let _ = encode_into(header, &mut buf);
        Self { buf }
    }

    /// Appends the postcard encoding of `value` as (part of) the body.
    #[cfg(test)]
    pub(crate) fn body<T: Serialize + ?Sized>(&mut self, value: &T) -> postcard::Result<()> {
        encode_into(value, &mut self.buf)
    }

    /// The payload length so far (header and body, without the length prefix).
    pub(crate) fn payload_len(&self) -> usize {
        self.buf.len() - 4
    }

    /// Fills in the length prefix and returns the frame, or the payload length if it exceeds
    /// `max`.
    pub(crate) fn finish(mut self, max: usize) -> Result<Bytes, usize> {
        self.set_len(0, max)?;
        Ok(self.buf.freeze())
    }

    /// Fills in the length prefix for a payload of what is buffered plus `more` bytes, or
    /// returns that length if it exceeds `max`.
    fn set_len(&mut self, more: usize, max: usize) -> Result<(), usize> {
        let len = self.payload_len().saturating_add(more);
        if len > max {
            return Err(len);
        }
        let len32 = u32::try_from(len).map_err(|_| len)?;
        if let Some(prefix) = self.buf.get_mut(..4) {
            prefix.copy_from_slice(&len32.to_be_bytes());
        }
        Ok(())
    }
}

/// Splits a received frame payload into its header and body.
pub(crate) fn split_frame(payload: &[u8]) -> Result<(Header, &[u8]), String> {
    postcard::take_from_bytes::<Header>(payload).map_err(|e| format!("bad frame header: {e}"))
}

#[cfg(test)]
mod tests {
    //! Wire-golden tests: the exact bytes of every frame kind, as documented in
    //! `docs/PROTOCOL.md`. A change here is a wire-format change.
    use super::*;

    mod erased {
        /// Any serializable value, encoded with postcard.
        pub(super) trait Ser {
            fn bytes(&self) -> Vec<u8>;
        }
        impl<T: serde::Serialize> Ser for T {
            fn bytes(&self) -> Vec<u8> {
                postcard::to_allocvec(self).unwrap()
            }
        }
    }

    fn frame(header: Header, body: &[u8]) -> Vec<u8> {
        let mut f = FrameBuf::new(&header, body.len());
        f.buf.extend_from_slice(body);
        f.finish(usize::MAX).unwrap().to_vec()
    }

    #[test]
    fn preamble() {
        assert_eq!(&PREAMBLE, b"HVRPC\x01\0\0");
        assert_eq!(&PREAMBLE[..5], MAGIC);
        assert_eq!(PREAMBLE[5], PROTOCOL_VERSION);
    }

    #[test]
    fn golden_hello() {
        let hello = Hello {
            features: 0,
            max_frame: 4 * 1024 * 1024,
            max_concurrent_calls: 256,
            services: vec![ServiceInfo {
                name: "Echo".into(),
                fingerprint: 0x0123_4567_89ab_cdef,
            }],
            wants: vec![],
            agent: "hv".into(),
        };
        assert_eq!(
            frame(Header::Hello(hello), &[]),
            [
                0, 0, 0, 27, // length
                0,  // kind 0: Hello
                0,  // features
                0x80, 0x80, 0x80, 0x02, // max_frame 4194304 (varint)
                0x80, 0x02, // max_concurrent_calls 256
                1, 4, b'E', b'c', b'h', b'o', // services: 1 × name "Echo"
                0xef, 0x9b, 0xaf, 0xcd, 0xf8, 0xac, 0xd1, 0x91, 0x01, // fingerprint (varint)
                0,    // wants: none
                2, b'h', b'v', // agent
            ]
        );
    }

    #[test]
    fn golden_request() {
        let h = Header::Request {
            id: 1,
            service: 0,
            method: 2,
            timeout_ms: Some(30_000),
            window: 0,
        };
        // Body: the argument tuple ("a", 5u32).
        let mut body = BytesMut::new();
        encode_into(&("a", 5u32), &mut body).unwrap();
        assert_eq!(&body[..], [1, b'a', 5]);
        assert_eq!(
            frame(h, &body),
            [0, 0, 0, 12, 1, 1, 0, 2, 1, 0xb0, 0xea, 0x01, 0, 1, b'a', 5]
        );
        let unlimited_stream = Header::Request {
            id: 300,
            service: 1,
            method: 0,
            timeout_ms: None,
            window: 16,
        };
        assert_eq!(
            frame(unlimited_stream, &[]),
            [0, 0, 0, 7, 1, 0xac, 0x02, 1, 0, 0, 16]
        );
    }

    #[test]
    fn golden_response() {
        let ok = Header::Response {
            id: 1,
            status: Status::Ok,
        };
        assert_eq!(frame(ok, &[7]), [0, 0, 0, 4, 2, 1, 0, 7]);
        let err = Header::Response {
            id: 2,
            status: Status::Error {
                code: ErrorCode::UnknownMethod,
                message: "no".into(),
            },
        };
        assert_eq!(frame(err, &[]), [0, 0, 0, 7, 2, 2, 1, 2, 2, b'n', b'o']);
    }

    #[test]
    fn golden_control_frames() {
        assert_eq!(
            frame(Header::StreamItem { id: 3 }, &[9]),
            [0, 0, 0, 3, 3, 3, 9]
        );
        assert_eq!(
            frame(Header::Credit { id: 3, items: 8 }, &[]),
            [0, 0, 0, 3, 4, 3, 8]
        );
        assert_eq!(frame(Header::Cancel { id: 3 }, &[]), [0, 0, 0, 2, 5, 3]);
        assert_eq!(frame(Header::Ping(7), &[]), [0, 0, 0, 2, 6, 7]);
        assert_eq!(frame(Header::Pong(7), &[]), [0, 0, 0, 2, 7, 7]);
        assert_eq!(
            frame(
                Header::GoAway {
                    reason: "bye".into()
                },
                &[]
            ),
            [0, 0, 0, 5, 8, 3, b'b', b'y', b'e']
        );
    }

    /// Every golden frame above appears, as hex, in docs/PROTOCOL.md: the document cannot
    /// drift from the encoder.
    #[test]
    fn protocol_doc_matches_golden_bytes() {
        let doc: String = include_str!("../../docs/PROTOCOL.md")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let mut body = BytesMut::new();
        encode_into(&("a", 5u32), &mut body).unwrap();
        let frames = [
            frame(
                Header::Hello(Hello {
                    features: 0,
                    max_frame: 4 * 1024 * 1024,
                    max_concurrent_calls: 256,
                    services: vec![ServiceInfo {
                        name: "Echo".into(),
                        fingerprint: 0x0123_4567_89ab_cdef,
                    }],
                    wants: vec![],
                    agent: "hv".into(),
                }),
                &[],
            ),
            frame(
                Header::Request {
                    id: 1,
                    service: 0,
                    method: 2,
                    timeout_ms: Some(30_000),
                    window: 0,
                },
                &body,
            ),
            frame(
                Header::Request {
                    id: 300,
                    service: 1,
                    method: 0,
                    timeout_ms: None,
                    window: 16,
                },
                &[],
            ),
            frame(
                Header::Response {
                    id: 1,
                    status: Status::Ok,
                },
                &[7],
            ),
            frame(
                Header::Response {
                    id: 2,
                    status: Status::Error {
                        code: ErrorCode::UnknownMethod,
                        message: "no".into(),
                    },
                },
                &[],
            ),
            frame(Header::StreamItem { id: 3 }, &[9]),
            frame(Header::Credit { id: 3, items: 8 }, &[]),
            frame(Header::Cancel { id: 3 }, &[]),
            frame(Header::Ping(7), &[]),
            frame(Header::Pong(7), &[]),
            frame(
                Header::GoAway {
                    reason: "bye".into(),
                },
                &[],
            ),
        ];
        for f in frames {
            assert!(
                doc.contains(&hex(&f)),
                "docs/PROTOCOL.md lacks the frame {}",
                hex(&f)
            );
        }
        assert!(doc.contains(&hex(&PREAMBLE)));
    }

    /// The encoding examples of PROTOCOL.md §1 are what postcard writes.
    #[test]
    fn protocol_doc_encoding_examples_are_what_postcard_writes() {
        use std::time::Duration;
        let doc: String = include_str!("../../docs/PROTOCOL.md")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let hex = |b: Vec<u8>| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let enc = |v: &dyn erased::Ser| hex(v.bytes());
        // As the document writes them, whitespace removed: `value` → `bytes`.
        let examples: Vec<(&str, String)> = vec![
            ("`5u8`", enc(&5u8)),
            ("`300u16`", enc(&300u16)),
            ("`-1i32`", enc(&-1i32)),
            ("`1i32`", enc(&1i32)),
            ("`-2i64`", enc(&-2i64)),
            ("`true`", enc(&true)),
            ("`1.5f32`", enc(&1.5f32)),
            ("`'é'`", enc(&'é')),
            ("`\"a\"`", enc(&"a")),
            ("`Some(5u8)`", enc(&Some(5u8))),
            (
                "`{1u8:2u8}`",
                enc(&std::collections::BTreeMap::from([(1u8, 2u8)])),
            ),
            ("`[300u16;2]`", enc(&[300u16; 2])),
            ("1.5s", enc(&Duration::from_millis(1500))),
            ("10.0.0.1", enc(&std::net::IpAddr::from([10, 0, 0, 1]))),
            (
                "10.0.0.1:80",
                enc(&std::net::SocketAddr::from(([10, 0, 0, 1], 80))),
            ),
        ];
        for (name, bytes) in examples {
            let row = format!("{name}→`{bytes}`");
            assert!(doc.contains(&row), "docs/PROTOCOL.md lacks {row}");
        }
    }

    #[test]
    fn error_codes_are_stable() {
        let codes = [
            (ErrorCode::UnknownService, 1u32),
            (ErrorCode::UnknownMethod, 2),
            (ErrorCode::BadRequest, 3),
            (ErrorCode::DeadlineExceeded, 4),
            (ErrorCode::Cancelled, 5),
            (ErrorCode::Internal, 6),
            (ErrorCode::ResourceExhausted, 7),
            (ErrorCode::ShuttingDown, 8),
            (ErrorCode::Unknown(99), 99),
        ];
        for (code, n) in codes {
            assert_eq!(u32::from(code), n);
            assert_eq!(ErrorCode::from(n), code);
        }
    }

    #[test]
    fn split_rejects_garbage() {
        assert!(split_frame(&[]).is_err());
        assert!(split_frame(&[200]).is_err());
        assert!(
            split_frame(&[
                1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
            ])
            .is_err()
        );
        let (h, body) = split_frame(&[5, 3, 1, 2]).unwrap();
        assert_eq!(h, Header::Cancel { id: 3 });
        assert_eq!(body, [1, 2]);
    }

    #[test]
    fn decode_exact_rejects_trailing_bytes() {
        assert_eq!(decode_exact::<u8>(&[5]), Ok(5));
        assert!(
            decode_exact::<u8>(&[5, 6])
                .unwrap_err()
                .contains("1 unexpected bytes")
        );
        assert!(decode_exact::<String>(&[5, b'a']).is_err());
    }

    #[test]
    fn a_tail_frame_has_the_bytes_of_the_whole_encoding() {
        let header = Header::Request {
            id: 9,
            service: 0,
            method: 2,
            timeout_ms: None,
            window: 0,
        };
        for len in [0usize, 1, 127, 128, 16_383, 16_384, 100_000] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let mut whole = FrameBuf::new(&header, 0);
            whole.body(&(7u32, "x", &data)).unwrap();
            let whole = whole.finish(usize::MAX).unwrap();
            let split =
                crate::service::Body::encode_args(&(7u32, "x"), Some(Bytes::from(data.clone())))
                    .unwrap()
                    .into_frame(&header, usize::MAX)
                    .unwrap();
            assert_eq!(split.len(), whole.len(), "len {len}");
            assert_eq!(
                [&split.head[..], &split.tail[..]].concat(),
                whole,
                "len {len}"
            );
            // Long byte strings stay apart; the limit counts them.
            assert_eq!(split.tail.len(), if len > INLINE_TAIL { len } else { 0 });
            let limit = whole.len() - 4;
            let again = crate::service::Body::encode_args(&(7u32, "x"), Some(Bytes::from(data)))
                .unwrap()
                .into_frame(&header, limit - 1)
                .unwrap_err();
            assert_eq!(again, limit);
        }
    }

    #[test]
    fn advancing_a_frame_crosses_from_head_to_tail() {
        let mut f = Frame {
            head: Bytes::from_static(b"abc"),
            tail: Bytes::from_static(b"defgh"),
        };
        f.advance(2);
        assert_eq!(f.chunks(), [&b"c"[..], &b"defgh"[..]]);
        f.advance(3);
        assert_eq!(f.chunks(), [&b""[..], &b"fgh"[..]]);
        assert_eq!(f.len(), 3);
        f.advance(10);
        assert!(f.is_empty());
    }
}
