//! [`Body`]: an encoded value with room in front for its frame header, so that a frame is
//! built around it without copying, and the byte payload at its end that is not copied at all.

use bytes::{Bytes, BytesMut};
use serde::Serialize;

use crate::error::Error;
use crate::protocol::{self, Frame, Header, Message, Parts, PeerLimits};

/// Room left in front of an encoded body for the length prefix and any frame header (a Request:
/// `4 + 1 + 10 + 5 + 5 + 11 + 5` bytes at most), so that the frame is built without copying.
const HEADROOM: usize = 48;

/// An encoded value with room in front for its frame header, and possibly a byte payload at
/// its end that is written without being copied (`tail`).
#[doc(hidden)]
#[derive(Debug)]
pub struct Body {
    buf: BytesMut,
    tail: Bytes,
}

impl Body {
    /// Encodes `value` with postcard.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Body, Error> {
        let mut buf = Self::headroom(64);
        protocol::encode_into(value, &mut buf).map_err(|e| Error::Encode(e.to_string().into()))?;
        Ok(Body {
            buf,
            tail: Bytes::new(),
        })
    }

    /// The arguments `args` of a request, then (if any) the byte string `tail` that ends them,
    /// encoded like `&[u8]` and not copied if it is long.
    pub(crate) fn encode_args<T: Serialize + ?Sized>(
        args: &T,
        tail: Option<Bytes>,
    ) -> Result<Body, Error> {
        let body = Self::encode(args)?;
        Ok(match tail {
            Some(tail) => {
                let mut buf = body.buf;
                protocol::put_len_varint(tail.len(), &mut buf);
                Self::ending_with(buf, tail)
            }
            None => body,
        })
    }

    /// `buf`, then `bytes`: copied into it if short, else kept as the tail (not copied).
    fn ending_with(mut buf: BytesMut, bytes: Bytes) -> Body {
        if bytes.len() <= protocol::INLINE_TAIL {
            buf.extend_from_slice(&bytes);
            return Body {
                buf,
                tail: Bytes::new(),
            };
        }
        Body { buf, tail: bytes }
    }

    /// An empty body with room for its header, and for `extra` bytes after it.
    fn headroom(extra: usize) -> BytesMut {
        let mut buf = BytesMut::with_capacity(HEADROOM + extra);
        buf.resize(HEADROOM, 0);
        buf
    }

    /// Bytes that are already the encoded value (a tool's raw call), not copied if long.
    pub(crate) fn raw(bytes: Bytes) -> Body {
        let inline = bytes.len() <= protocol::INLINE_TAIL;
        let buf = Self::headroom(if inline { bytes.len() } else { 0 });
        Self::ending_with(buf, bytes)
    }

    /// A byte string as the value, encoded exactly like `&[u8]` but without copying `bytes`.
    pub fn from_bytes(bytes: Bytes) -> Body {
        let inline = bytes.len() <= protocol::INLINE_TAIL;
        let mut buf = Self::headroom(10 + if inline { bytes.len() } else { 0 });
        protocol::put_len_varint(bytes.len(), &mut buf);
        Self::ending_with(buf, bytes)
    }

    /// The encoded length of the value.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - HEADROOM + self.tail.len()
    }

    /// `header` and the body as what goes to a peer with the limits `peer`: one frame if it
    /// fits the peer's `max_frame`, else parts if the peer takes them and the body is within
    /// its `max_message`; else the error saying which limit it exceeds.
    pub(crate) fn into_message(self, header: &Header, peer: &PeerLimits) -> Result<Message, Error> {
        let len = self.len();
        let max_frame = peer.max_frame;
        match peer.max_message {
            Some(max) if protocol::goes_in_parts(len, peer) => {
                if len > max {
                    return Err(Error::MessageTooLarge { len, max });
                }
                let mut buf = self.buf;
                bytes::Buf::advance(&mut buf, HEADROOM);
                Ok(Message::Parts(Box::new(Parts::new(
                    header.clone(),
                    [buf.freeze(), self.tail],
                    max_frame,
                ))))
            }
            _ => self
                .into_frame(header, max_frame)
                .map(Message::Whole)
                .map_err(|len| Error::FrameTooLarge {
                    len,
                    max: max_frame,
                }),
        }
    }

    /// Puts the length prefix and `header` in front of the body. `Err(len)` if the frame
    /// payload would exceed `max`.
    pub(crate) fn into_frame(mut self, header: &Header, max: usize) -> Result<Frame, usize> {
        let mut head = [0u8; HEADROOM];
        let (prefix, rest) = head.split_at_mut(4);
        let Some(hlen) = protocol::encode_header(header, rest) else {
            return Err(usize::MAX);
        };
        let payload = hlen + self.len();
        if payload > max {
            return Err(payload);
        }
        let len = u32::try_from(payload).map_err(|_| payload)?;
        prefix.copy_from_slice(&len.to_be_bytes());
        let start = HEADROOM - 4 - hlen;
        let src = head.get(..4 + hlen).ok_or(payload)?;
        self.buf
            .get_mut(start..HEADROOM)
            .ok_or(payload)?
            .copy_from_slice(src);
        // Skips the unused headroom in front without copying (and, unlike `split_to`, without
        // making the buffer shared, which costs an allocation).
        bytes::Buf::advance(&mut self.buf, start);
        Ok(Frame {
            head: self.buf,
            tail: self.tail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_frame_matches_framebuf() {
        let header = Header::Response {
            id: 300,
            status: protocol::Status::Ok,
        };
        let value = ("hello", 7u64);
        let via_body = Body::encode(&value)
            .unwrap()
            .into_frame(&header, 1000)
            .unwrap();
        let mut fb = protocol::FrameBuf::new(&header, 0);
        fb.body(&value).unwrap();
        assert_eq!(via_body, Frame::from(fb.finish(1000).unwrap()));
        // Largest header that must fit the headroom: u64::MAX id.
        let big = Header::StreamItem { id: u64::MAX };
        let f = Body::encode(&1u8).unwrap().into_frame(&big, 1000).unwrap();
        assert_eq!(&f.head[..4], &12u32.to_be_bytes());
        assert!(
            Body::encode(&[0u8; 10])
                .unwrap()
                .into_frame(&header, 5)
                .is_err()
        );
    }

    #[test]
    fn a_bytes_body_is_encoded_like_a_byte_slice() {
        let header = Header::Response {
            id: 3,
            status: protocol::Status::Ok,
        };
        for len in [0usize, 5, 200, 70_000] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let copied = Body::encode(&data).unwrap();
            let shared = Body::from_bytes(Bytes::from(data.clone()));
            assert_eq!(copied.len(), shared.len());
            let a = copied.into_frame(&header, usize::MAX).unwrap();
            let b = shared.into_frame(&header, usize::MAX).unwrap();
            assert_eq!(a.tail.len(), 0);
            // Short byte strings are copied into the head; long ones stay apart.
            let apart = if len > protocol::INLINE_TAIL { len } else { 0 };
            assert_eq!(b.tail.len(), apart);
            assert_eq!(
                [&a.head[..], &a.tail[..]].concat(),
                [&b.head[..], &b.tail[..]].concat()
            );
        }
        assert_eq!(
            Body::from_bytes(Bytes::from(vec![0u8; 10]))
                .into_frame(&header, 12)
                .unwrap_err(),
            14
        );
    }
}
