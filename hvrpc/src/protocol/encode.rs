//! Encoding and decoding headers and values with postcard, and the direct encoder of the
//! headers on every call's path.

use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};

use super::{Header, Status};

/// Writes `v` as a varint at the start of `out`; returns the bytes written.
pub(crate) fn put_varint(mut v: u64, out: &mut [u8]) -> Option<usize> {
    let mut i = 0;
    loop {
        let byte = out.get_mut(i)?;
        if v < 0x80 {
            *byte = v as u8;
            return Some(i + 1);
        }
        *byte = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
}

/// Encodes `header` into `out` (exactly as postcard does), returning its length. The kinds on
/// every call's path — requests, successful responses, stream items — are written directly,
/// the rest through postcard; `header_encoding_matches_postcard` checks both agree.
/// (Input items are on a client stream's path, so they are written directly too.)
pub(crate) fn encode_header(header: &Header, out: &mut [u8]) -> Option<usize> {
    let mut at = 0;
    let mut put = |v: u64, at: &mut usize| -> Option<()> {
        *at += put_varint(v, out.get_mut(*at..)?)?;
        Some(())
    };
    match header {
        Header::Request {
            id,
            service,
            method,
            timeout_ms,
            window,
        } => {
            put(1, &mut at)?;
            put(*id, &mut at)?;
            put(u64::from(*service), &mut at)?;
            put(u64::from(*method), &mut at)?;
            match timeout_ms {
                None => put(0, &mut at)?,
                Some(ms) => {
                    put(1, &mut at)?;
                    put(*ms, &mut at)?;
                }
            }
            put(u64::from(*window), &mut at)?;
            Some(at)
        }
        Header::Response {
            id,
            status: Status::Ok,
        } => {
            put(2, &mut at)?;
            put(*id, &mut at)?;
            put(0, &mut at)?;
            Some(at)
        }
        Header::StreamItem { id } => {
            put(3, &mut at)?;
            put(*id, &mut at)?;
            Some(at)
        }
        Header::Input { id } => {
            put(11, &mut at)?;
            put(*id, &mut at)?;
            Some(at)
        }
        other => postcard::to_slice(other, out).ok().map(|h| h.len()),
    }
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

/// Splits a received frame payload into its header and body.
pub(crate) fn split_frame(payload: &[u8]) -> Result<(Header, &[u8]), String> {
    postcard::take_from_bytes::<Header>(payload).map_err(|e| format!("bad frame header: {e}"))
}
