//! The frame codec against a reference parser: arbitrary limit, arbitrary bytes, delivered in
//! arbitrary pieces. Frames, errors and the bytes consumed must match; re-encoding the frames
//! gives back the input; buffer space never runs far ahead of what arrived.
#![no_main]

use bytes::BytesMut;
use hvrpc::transport::framing::{FrameCodec, FrameError};
use tokio_util::codec::{Decoder, Encoder};

/// How far the decoder may reserve ahead of the bytes that arrived (its 64 KiB step, plus
/// slack for the allocator's rounding).
const AHEAD: usize = 64 * 1024 + 4096;

#[derive(Debug, PartialEq)]
enum End {
    Clean,
    TooLarge(u64),
    Truncated { have: usize, need: u64 },
}

fn reference(mut b: &[u8], max: usize) -> (Vec<&[u8]>, End) {
    let mut out = Vec::new();
    loop {
        if b.is_empty() {
            return (out, End::Clean);
        }
        if b.len() < 4 {
            return (
                out,
                End::Truncated {
                    have: b.len(),
                    need: 4,
                },
            );
        }
        let len = u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        if len > max as u64 {
            return (out, End::TooLarge(len));
        }
        let need = 4 + len as usize;
        if b.len() < need {
            return (
                out,
                End::Truncated {
                    have: b.len(),
                    need: need as u64,
                },
            );
        }
        out.push(&b[4..need]);
        b = &b[need..];
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [m0, m1, m2, m3, piece, stream @ ..] = data else {
        return;
    };
    let max = u32::from_be_bytes([*m0, *m1, *m2, *m3]) as usize;
    let piece = usize::from(*piece).max(1);
    let (want, want_end) = reference(stream, max);

    let mut codec = FrameCodec::new(max);
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    let mut end = None;
    let mut fed = 0;
    'feed: for p in stream.chunks(piece) {
        buf.extend_from_slice(p);
        fed += p.len();
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => {
                    assert!(f.len() <= max);
                    got.push(f);
                }
                Ok(None) => break,
                Err(FrameError::TooLarge { len, max: m }) => {
                    assert_eq!(m, max);
                    end = Some(End::TooLarge(len));
                    break 'feed;
                }
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert!(
            buf.capacity() <= 2 * (fed + AHEAD),
            "{} bytes reserved after {fed} arrived",
            buf.capacity()
        );
    }
    let end = match end {
        Some(e) => e,
        None => match codec.decode_eof(&mut buf) {
            Ok(None) => End::Clean,
            Ok(Some(f)) => panic!("a frame ({} bytes) only at EOF", f.len()),
            Err(FrameError::Truncated { have, need }) => End::Truncated { have, need },
            Err(FrameError::TooLarge { len, .. }) => End::TooLarge(len),
            Err(e) => panic!("unexpected error at EOF: {e}"),
        },
    };
    assert_eq!(end, want_end);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(&g[..], *w);
    }
    // Re-encoding the frames gives back the bytes they came from.
    let mut again = BytesMut::new();
    for f in &want {
        codec
            .encode(*f, &mut again)
            .expect("a decoded frame re-encodes");
    }
    assert_eq!(&again[..], &stream[..again.len()]);
});
