//! `Vec<u8>` arguments and results as postcard *bytes*: on the wire exactly a sequence of `u8`
//! (a varint length, then the bytes), but encoded and decoded with one copy instead of one
//! serde call per byte. The macro uses these for parameters and results declared `Vec<u8>`.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Serializes borrowed bytes as bytes.
pub struct AsBytes<'a>(pub &'a [u8]);

impl Serialize for AsBytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// Serializes owned bytes as bytes (a handler's `Vec<u8>` result).
pub struct BytesOut(pub Vec<u8>);

impl Serialize for BytesOut {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

/// Deserializes bytes into a `Vec<u8>`.
pub struct ByteBuf(pub Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element()? {
                    v.push(b);
                }
                Ok(ByteBuf(v))
            }
        }
        d.deserialize_byte_buf(V)
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
            assert_eq!(
                postcard::to_allocvec(&BytesOut(v.clone())).unwrap(),
                as_seq,
                "len {len}"
            );
            let back: ByteBuf = postcard::from_bytes(&as_seq).unwrap();
            assert_eq!(back.0, v, "len {len}");
        }
    }

    #[test]
    fn inside_a_tuple_like_the_arguments() {
        let v = vec![7u8; 5];
        let plain = postcard::to_allocvec(&(&1u64, &v, &"x")).unwrap();
        let fast = postcard::to_allocvec(&(&1u64, AsBytes(&v), &"x")).unwrap();
        assert_eq!(plain, fast);
        let (a, b, c): (u64, ByteBuf, String) = postcard::from_bytes(&plain).unwrap();
        assert_eq!((a, b.0, c.as_str()), (1, v, "x"));
    }

    #[test]
    fn a_length_beyond_the_input_is_an_error() {
        // Varint length 1000, then only 3 bytes.
        assert!(postcard::from_bytes::<ByteBuf>(&[0xe8, 0x07, 1, 2, 3]).is_err());
    }
}
