//! The hvrpc wire format written by hand (docs/PROTOCOL.md), for tests that play a peer byte by
//! byte: raw_peer.rs and hostile.rs. Independent of the runtime's own encoder on purpose.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Appends `v` as an unsigned LEB128 varint (postcard's integer encoding).
pub(crate) fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint at `*at`, advancing it.
pub(crate) fn read_varint(p: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = p[*at];
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
    }
    v
}

/// A frame: 4-byte big-endian length, then the payload.
pub(crate) fn framed(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// Preamble + Hello { features 0, max_frame 1 MiB, 16 calls, no services, wants nothing }.
pub(crate) fn opening() -> Vec<u8> {
    let mut hello = vec![0u8, 0];
    varint(1 << 20, &mut hello);
    varint(16, &mut hello);
    hello.extend_from_slice(&[0, 0, 0]);
    let mut out = b"HVRPC\x02\0\0".to_vec();
    out.extend(framed(&hello));
    out
}

/// A Request frame: no deadline, window 0 (unary), then the encoded arguments.
pub(crate) fn request(id: u64, service: u64, method: u64, args: &[u8]) -> Vec<u8> {
    let mut p = vec![1u8];
    varint(id, &mut p);
    varint(service, &mut p);
    varint(method, &mut p);
    p.push(0); // no deadline
    p.push(0); // window 0: unary
    p.extend_from_slice(args);
    framed(&p)
}

/// One integer argument.
pub(crate) fn varint_arg(v: u64) -> Vec<u8> {
    let mut b = Vec::new();
    varint(v, &mut b);
    b
}

/// One string argument.
pub(crate) fn string_arg(s: &str) -> Vec<u8> {
    let mut b = varint_arg(s.len() as u64);
    b.extend_from_slice(s.as_bytes());
    b
}

/// A frame of `kind` whose header is one varint (`id`) and maybe a second.
pub(crate) fn id_frame(kind: u8, id: u64, second: Option<u64>) -> Vec<u8> {
    let mut p = vec![kind];
    varint(id, &mut p);
    if let Some(n) = second {
        varint(n, &mut p);
    }
    framed(&p)
}

/// Reads one frame's payload; `None` at EOF or on an error.
pub(crate) async fn read_frame<S: AsyncRead + Unpin>(io: &mut S) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await.ok()?;
    let mut p = vec![0u8; u32::from_be_bytes(len) as usize];
    io.read_exact(&mut p).await.ok()?;
    Some(p)
}

/// [`opening`], announcing messages in parts (features bit 0) of at most `max_message` bytes.
pub(crate) fn opening_with_parts(max_message: u64) -> Vec<u8> {
    let mut hello = vec![0u8, 1];
    varint(1 << 20, &mut hello);
    varint(16, &mut hello);
    hello.extend_from_slice(&[0, 0, 0]);
    varint(max_message, &mut hello);
    let mut out = b"HVRPC\x02\0\0".to_vec();
    out.extend(framed(&hello));
    out
}

/// A Part frame (kind 10) carrying `piece`.
pub(crate) fn part(id: u64, reply: bool, total: u64, piece: &[u8]) -> Vec<u8> {
    let mut p = vec![10u8];
    varint(id, &mut p);
    p.push(u8::from(reply));
    varint(total, &mut p);
    p.extend_from_slice(piece);
    framed(&p)
}

/// An Input frame (kind 11): one item of the input stream of call `id`.
pub(crate) fn input(id: u64, item: &[u8]) -> Vec<u8> {
    let mut p = vec![11u8];
    varint(id, &mut p);
    p.extend_from_slice(item);
    framed(&p)
}

/// The reason of a GoAway payload (kind 8).
pub(crate) fn go_away_reason(p: &[u8]) -> Option<String> {
    if p.first() != Some(&8) {
        return None;
    }
    let mut at = 1;
    let len = read_varint(p, &mut at) as usize;
    Some(String::from_utf8_lossy(p.get(at..at + len)?).into_owned())
}
