//! Byte strings (`Vec<u8>` and [`Bytes`]) as arguments and results, encoded as postcard
//! *bytes*: on the wire exactly a sequence of `u8` (a varint length, then the bytes), but
//! without a serde call per byte. The macro uses these for parameters and results declared
//! `Vec<u8>` or `Bytes`:
//!
//! * a byte string that is the **last** argument, or the result, is not copied into the frame:
//!   the frame is written as its head and then the bytes themselves (`Frame::tail`);
//! * a received `Bytes` argument or result is a view of the received frame (no copy); a
//!   received `Vec<u8>` is one copy out of it.

use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A type the macro treats as a byte string. Implemented for `Vec<u8>` and [`Bytes`] only; a
/// user type that happens to be called `Bytes` gets a compile error naming this trait.
pub trait ByteString: Sized {
    /// The bytes, without copying them where the type allows it.
    fn into_bytes(self) -> Bytes;
    /// The bytes, borrowed.
    fn as_byte_slice(&self) -> &[u8];
    /// The value for `part`, a slice of the received `frame`.
    fn from_frame(frame: &Bytes, part: &[u8]) -> Self;
}

impl ByteString for Vec<u8> {
    fn into_bytes(self) -> Bytes {
        Bytes::from(self)
    }
    fn as_byte_slice(&self) -> &[u8] {
        self
    }
    fn from_frame(_: &Bytes, part: &[u8]) -> Self {
        part.to_vec()
    }
}

impl ByteString for Bytes {
    fn into_bytes(self) -> Bytes {
        self
    }
    fn as_byte_slice(&self) -> &[u8] {
        self
    }
    fn from_frame(frame: &Bytes, part: &[u8]) -> Self {
        // `part` was decoded from `frame`, so it lies within it; anything else is copied
        // rather than trusted.
        let offset = (part.as_ptr() as usize).checked_sub(frame.as_ptr() as usize);
        match offset {
            Some(start) if start.saturating_add(part.len()) <= frame.len() => {
                frame.slice(start..start + part.len())
            }
            _ => Bytes::copy_from_slice(part),
        }
    }
}

/// Serializes borrowed bytes as bytes.
pub struct AsBytes<'a>(pub &'a [u8]);

impl Serialize for AsBytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// Deserializes bytes as a slice of the input (postcard decodes from a slice, so it always
/// can).
pub struct ByteSlice<'a>(pub &'a [u8]);

impl<'de> Deserialize<'de> for ByteSlice<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ByteSlice<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
                Ok(ByteSlice(v))
            }
        }
        d.deserialize_bytes(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_wire_form_as_a_sequence_of_u8() {
        for len in [0usize, 1, 127, 128, 300, 70_000] {
            let v: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let as_seq = postcard::to_allocvec(&v).unwrap();
            assert_eq!(
                postcard::to_allocvec(&AsBytes(&v)).unwrap(),
                as_seq,
                "len {len}"
            );
            let back: ByteSlice<'_> = postcard::from_bytes(&as_seq).unwrap();
            assert_eq!(back.0, &v[..], "len {len}");
        }
    }

    #[test]
    fn inside_a_tuple_like_the_arguments() {
        let v = vec![7u8; 5];
        let plain = postcard::to_allocvec(&(&1u64, &v, &"x")).unwrap();
        let fast = postcard::to_allocvec(&(&1u64, AsBytes(&v), &"x")).unwrap();
        assert_eq!(plain, fast);
        let (a, b, c): (u64, ByteSlice<'_>, String) = postcard::from_bytes(&plain).unwrap();
        assert_eq!((a, b.0, c.as_str()), (1, &v[..], "x"));
    }

    #[test]
    fn a_length_beyond_the_input_is_an_error() {
        // Varint length 1000, then only 3 bytes.
        assert!(postcard::from_bytes::<ByteSlice<'_>>(&[0xe8, 0x07, 1, 2, 3]).is_err());
    }

    #[test]
    fn received_bytes_are_a_view_of_the_frame() {
        let frame = Bytes::from(postcard::to_allocvec(&(5u8, vec![9u8; 100])).unwrap());
        let (_, s): (u8, ByteSlice<'_>) = postcard::from_bytes(&frame).unwrap();
        let b = Bytes::from_frame(&frame, s.0);
        assert_eq!(b, vec![9u8; 100]);
        assert_eq!(b.as_ptr(), s.0.as_ptr(), "not copied");
        // A slice from elsewhere is copied, not trusted.
        let other = vec![1u8, 2, 3];
        let c = Bytes::from_frame(&frame, &other);
        assert_eq!(c, other);
        assert_ne!(c.as_ptr(), other.as_ptr());
        assert_eq!(Vec::from_frame(&frame, s.0), vec![9u8; 100]);
    }
}
