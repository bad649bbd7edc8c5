//! Length-prefixed framing over any byte stream.
//!
//! A frame is a 4-byte big-endian length `N` followed by `N` bytes of payload. The length does
//! not count itself. [`FrameCodec`] is a [`tokio_util::codec`] codec, so a stream becomes a
//! `Stream`/`Sink` of frames with [`Framed`](tokio_util::codec::Framed),
//! [`FramedRead`](tokio_util::codec::FramedRead) and
//! [`FramedWrite`](tokio_util::codec::FramedWrite).
//!
//! # Limits
//!
//! Every codec has a maximum payload size ([`DEFAULT_MAX_FRAME_LEN`] unless set otherwise). A
//! frame whose header announces more is rejected with [`FrameError::TooLarge`] as soon as the
//! four header bytes have arrived: nothing is allocated for it. Below the limit, buffer space
//! grows with the bytes that really arrive, never with what the peer merely announces, so a
//! peer that announces a large frame and then stalls costs only what it sent.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The size of a frame header: a big-endian `u32` payload length.
pub const HEADER_LEN: usize = 4;

/// The default maximum frame payload: 4 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 4 * 1024 * 1024;

/// How much buffer space the decoder reserves ahead of a partial frame: at most this much more
/// than what has arrived.
const RESERVE_STEP: usize = 64 * 1024;

/// A framing error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A frame's payload is larger than the limit: announced by the peer (decoding) or passed
    /// by the caller (encoding).
    #[error("frame of {len} bytes exceeds the maximum frame size of {max} bytes")]
    TooLarge {
        /// The payload length of the frame.
        len: u64,
        /// The limit in force.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("the stream ended inside a frame: {have} of {need} bytes received")]
    Truncated {
        /// Bytes of the frame (header included) that arrived.
        have: usize,
        /// Bytes the frame needed (header included); 4 if the header itself was cut.
        need: u64,
    },
    /// The underlying stream failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<FrameError> for io::Error {
    fn from(e: FrameError) -> io::Error {
        match e {
            FrameError::Io(e) => e,
            e @ FrameError::TooLarge { .. } => io::Error::new(io::ErrorKind::InvalidData, e),
            e @ FrameError::Truncated { .. } => io::Error::new(io::ErrorKind::UnexpectedEof, e),
        }
    }
}

/// The length-prefixed frame codec: a 4-byte big-endian length, then the payload.
///
/// ```
/// use bytes::BytesMut;
/// use hvrpc_transport::framing::FrameCodec;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = FrameCodec::new(16);
/// let mut buf = BytesMut::new();
/// codec.encode(&b"hello"[..], &mut buf)?;
/// assert_eq!(&buf[..], b"\0\0\0\x05hello");
/// assert_eq!(codec.decode(&mut buf)?.as_deref(), Some(&b"hello"[..]));
/// # Ok::<(), hvrpc_transport::framing::FrameError>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max: usize,
}

impl FrameCodec {
    /// A codec that accepts and produces payloads of at most `max_frame_len` bytes.
    ///
    /// `max_frame_len` is capped at `u32::MAX`, the largest length a header can express.
    pub fn new(max_frame_len: usize) -> Self {
        Self {
            max: max_frame_len.min(u32::MAX as usize),
        }
    }

    /// The maximum payload length.
    pub fn max_frame_len(&self) -> usize {
        self.max
    }

    /// Changes the maximum payload length (for example after a handshake agreed on one).
    pub fn set_max_frame_len(&mut self, max_frame_len: usize) {
        *self = Self::new(max_frame_len);
    }

    /// Checks a payload length against the limit.
    pub fn check_len(&self, len: usize) -> Result<(), FrameError> {
        if len > self.max {
            Err(FrameError::TooLarge {
                len: len as u64,
                max: self.max,
            })
        } else {
            Ok(())
        }
    }

    /// Writes the header for a payload of `len` bytes; the caller appends the payload. For
    /// writers that serialize straight into the output buffer.
    pub fn encode_header(&self, len: usize, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.check_len(len)?;
        let len = u32::try_from(len).map_err(|_| FrameError::TooLarge {
            len: len as u64,
            max: self.max,
        })?;
        dst.extend_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_LEN)
    }
}

/// Reads the announced payload length, if the header is complete.
fn peek_len(src: &[u8]) -> Option<u64> {
    let header: [u8; HEADER_LEN] = src.get(..HEADER_LEN)?.try_into().ok()?;
    Some(u64::from(u32::from_be_bytes(header)))
}

/// Whether `buf` starts with a whole frame (header and payload), i.e. whether the next
/// decode returns a frame without reading more.
pub fn frame_complete(buf: &[u8]) -> bool {
    peek_len(buf).is_some_and(|len| buf.len() as u64 >= HEADER_LEN as u64 + len)
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        let Some(len) = peek_len(src) else {
            return Ok(None);
        };
        if len > self.max as u64 {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        // `len <= max <= u32::MAX`, so this fits in usize on every supported platform.
        let need = HEADER_LEN + len as usize;
        if src.len() < need {
            // Grow with what arrives, not with what the peer announced.
            src.reserve((need - src.len()).min(RESERVE_STEP));
            return Ok(None);
        }
        // The whole frame is buffered: split it off, then drop its length prefix.
        let mut frame = src.split_to(need);
        frame.advance(HEADER_LEN);
        Ok(Some(frame))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated {
                have: src.len(),
                need: peek_len(src).map_or(HEADER_LEN as u64, |len| HEADER_LEN as u64 + len),
            }),
        }
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode(item.chunk(), dst)
    }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        dst.reserve(HEADER_LEN + item.len());
        self.encode_header(item.len(), dst)?;
        dst.extend_from_slice(item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_complete_needs_header_and_payload() {
        assert!(!frame_complete(&[]));
        assert!(!frame_complete(&[0, 0, 0]));
        assert!(frame_complete(&[0, 0, 0, 0]), "an empty payload");
        assert!(!frame_complete(&[0, 0, 0, 2, 9]));
        assert!(frame_complete(&[0, 0, 0, 2, 9, 9]));
        assert!(
            frame_complete(&[0, 0, 0, 2, 9, 9, 7]),
            "the next frame's first byte"
        );
        assert!(!frame_complete(&[0xff, 0xff, 0xff, 0xff, 1]));
    }
    use proptest::prelude::*;

    fn frame(len: u32, fill: u8) -> BytesMut {
        let mut b = BytesMut::new();
        b.extend_from_slice(&len.to_be_bytes());
        b.extend(std::iter::repeat_n(fill, len as usize));
        b
    }

    #[test]
    fn known_bytes() {
        let mut c = FrameCodec::default();
        let mut out = BytesMut::new();
        c.encode(&b""[..], &mut out).unwrap();
        c.encode(Bytes::from_static(b"ab"), &mut out).unwrap();
        assert_eq!(&out[..], b"\0\0\0\0\0\0\0\x02ab");
        assert_eq!(c.decode(&mut out).unwrap().unwrap().len(), 0);
        assert_eq!(&c.decode(&mut out).unwrap().unwrap()[..], b"ab");
        assert!(c.decode(&mut out).unwrap().is_none());
    }

    #[test]
    fn decode_limits() {
        const MAX: usize = 1000;
        for len in [MAX - 1, MAX] {
            let mut c = FrameCodec::new(MAX);
            let mut b = frame(len as u32, 7);
            let got = c.decode(&mut b).unwrap().unwrap();
            assert_eq!(got.len(), len);
            assert!(got.iter().all(|&x| x == 7));
            assert!(b.is_empty());
        }
        let mut c = FrameCodec::new(MAX);
        // Only the header of an oversized frame: rejected right away.
        let mut b = BytesMut::from(&((MAX + 1) as u32).to_be_bytes()[..]);
        match c.decode(&mut b) {
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!((len, max), (MAX as u64 + 1, MAX));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn encode_limits() {
        const MAX: usize = 1000;
        let mut c = FrameCodec::new(MAX);
        let mut out = BytesMut::new();
        c.encode(&vec![1u8; MAX - 1][..], &mut out).unwrap();
        c.encode(&vec![1u8; MAX][..], &mut out).unwrap();
        let before = out.len();
        let err = c.encode(&vec![1u8; MAX + 1][..], &mut out).unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::TooLarge {
                    len: 1001,
                    max: 1000
                }
            ),
            "{err}"
        );
        assert_eq!(out.len(), before, "nothing written for a rejected frame");
        assert_eq!(
            err.to_string(),
            "frame of 1001 bytes exceeds the maximum frame size of 1000 bytes"
        );
    }

    #[test]
    fn four_gib_header_rejected_without_allocating() {
        let mut c = FrameCodec::default();
        let mut b = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        let cap = b.capacity();
        assert!(matches!(
            c.decode(&mut b),
            Err(FrameError::TooLarge {
                len: 0xffff_ffff,
                ..
            })
        ));
        assert_eq!(b.capacity(), cap);
    }

    #[test]
    fn partial_frame_reserves_bounded() {
        let mut c = FrameCodec::new(u32::MAX as usize);
        let mut b = BytesMut::from(&(u32::MAX).to_be_bytes()[..]);
        assert!(c.decode(&mut b).unwrap().is_none());
        assert!(
            b.capacity() <= HEADER_LEN + RESERVE_STEP,
            "{}",
            b.capacity()
        );
    }

    #[test]
    fn truncated_at_eof() {
        let mut c = FrameCodec::default();
        let mut b = frame(10, 1);
        b.truncate(8);
        match c.decode_eof(&mut b) {
            Err(FrameError::Truncated { have: 8, need: 14 }) => {}
            other => panic!("{other:?}"),
        }
        let mut b = BytesMut::from(&[0u8, 0][..]);
        assert!(matches!(
            c.decode_eof(&mut b),
            Err(FrameError::Truncated { have: 2, need: 4 })
        ));
        assert!(c.decode_eof(&mut BytesMut::new()).unwrap().is_none());
    }

    proptest! {
        #[test]
        fn round_trip_any_split(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
            chunk in 1usize..50,
        ) {
            let mut c = FrameCodec::new(300);
            let mut wire = BytesMut::new();
            for p in &payloads {
                c.encode(&p[..], &mut wire).unwrap();
            }
            // Feed the wire in chunks, as a stream would deliver it.
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(f) = c.decode(&mut buf).unwrap() {
                    got.push(f.to_vec());
                }
            }
            prop_assert!(c.decode_eof(&mut buf).unwrap().is_none());
            prop_assert_eq!(got, payloads);
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), max in 0usize..64) {
            let mut c = FrameCodec::new(max);
            let mut b = BytesMut::from(&bytes[..]);
            while let Ok(Some(f)) = c.decode(&mut b) {
                prop_assert!(f.len() <= max);
            }
            let _ = c.decode_eof(&mut b);
        }
    }
}
