//! Frames as they are written: [`Frame`] (a head and a tail written as they are) and
//! [`FrameBuf`], which builds one.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{Header, encode_into};

/// An encoded frame ready to write: `head` (length prefix, header and the start of the body)
/// and `tail`, a byte payload at the end of the body that is written as it is, without being
/// copied into `head` (empty for most frames). The head stays a `BytesMut`: it is written
/// once and dropped, and freezing it would cost an allocation per frame.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) head: BytesMut,
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

impl From<BytesMut> for Frame {
    fn from(head: BytesMut) -> Self {
        Frame {
            head,
            tail: Bytes::new(),
        }
    }
}

#[cfg(test)]
impl From<Bytes> for Frame {
    fn from(head: Bytes) -> Self {
        Frame::from(BytesMut::from(&head[..]))
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
    pub(super) buf: BytesMut,
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
    pub(crate) fn body<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> postcard::Result<()> {
        encode_into(value, &mut self.buf)
    }

    /// The payload length so far (header and body, without the length prefix).
    pub(crate) fn payload_len(&self) -> usize {
        self.buf.len() - 4
    }

    /// Fills in the length prefix and returns the frame's bytes, or the payload length if it
    /// exceeds `max`.
    pub(crate) fn finish(self, max: usize) -> Result<Bytes, usize> {
        self.finish_frame(max).map(|f| f.head.freeze())
    }

    /// [`finish`](Self::finish), as a [`Frame`] to queue.
    pub(crate) fn finish_frame(mut self, max: usize) -> Result<Frame, usize> {
        self.set_len(0, max)?;
        Ok(Frame::from(self.buf))
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
