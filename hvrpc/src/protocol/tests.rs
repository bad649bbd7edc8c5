//! Wire-golden tests: the exact bytes of every frame kind, as documented in
//! `docs/PROTOCOL.md`. A change here is a wire-format change.
use super::*;
use bytes::{Bytes, BytesMut};

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
    assert_eq!(&PREAMBLE, b"HVRPC\x02\0\0");
    assert_eq!(&PREAMBLE[..5], MAGIC);
    assert_eq!(PREAMBLE[5], PROTOCOL_VERSION);
}

/// The Hello of a side serving `Echo { fn echo(text: String) -> String }` (the hashes are
/// those of `docs/PROTOCOL.md` §6's test vectors), wanting nothing.
fn example_hello() -> Hello {
    Hello {
        features: 0,
        max_frame: 4 * 1024 * 1024,
        max_concurrent_calls: 256,
        services: vec![ServiceDesc {
            name: "Echo".into(),
            strict: false,
            methods: vec![MethodDesc {
                name: "echo".into(),
                kind: 0,
                args: crate::schema::hash::fnv1a(&[20, 1, 14]),
                result: crate::schema::hash::fnv1a(&[14]),
            }],
        }],
        wants: vec![],
        agent: "hv".into(),
    }
}

/// The schema of `Echo` with `echo(text: String) -> String`, as a Schemas frame carries it.
fn example_schema() -> crate::schema::ServiceSchema {
    use crate::schema::{Arg, Graph, MethodKind, MethodSchema, Node, ServiceSchema};
    ServiceSchema {
        name: "Echo".into(),
        doc: String::new(),
        methods: vec![MethodSchema {
            name: "echo".into(),
            doc: String::new(),
            kind: MethodKind::Unary,
            args: vec![Arg {
                name: "text".into(),
                node: 0,
            }],
            result: 0,
        }],
        graph: Graph {
            nodes: vec![Node::Str],
        },
    }
}

#[test]
fn golden_schemas() {
    let mut body = BytesMut::new();
    encode_into(&vec![example_schema()], &mut body).unwrap();
    assert_eq!(
        frame(Header::Schemas, &body),
        [
            0, 0, 0, 26, // length
            9,  // kind 9: Schemas
            1,  // one service
            4, b'E', b'c', b'h', b'o', // name
            0,    // doc ""
            1,    // one method
            4, b'e', b'c', b'h', b'o', // name
            0,    // doc ""
            0,    // kind: unary
            1,    // one argument
            4, b't', b'e', b'x', b't', // its name
            0,    // its node
            0,    // the result's node
            1,    // one node
            14,   // Str
        ]
    );
}

#[test]
fn golden_hello() {
    let hello = example_hello();
    assert_eq!(hello.services[0].methods[0].args, 0x413b_7218_a6ec_3ff8);
    assert_eq!(hello.services[0].methods[0].result, 0xaf63_c34c_8601_c211);
    assert_eq!(
        frame(Header::Hello(hello), &[]),
        [
            0, 0, 0, 45, // length
            0,  // kind 0: Hello
            0,  // features
            0x80, 0x80, 0x80, 0x02, // max_frame 4194304 (varint)
            0x80, 0x02, // max_concurrent_calls 256
            1,    // services: 1
            4, b'E', b'c', b'h', b'o', // name "Echo"
            0,    // strict: false
            1,    // methods: 1
            4, b'e', b'c', b'h', b'o', // name "echo"
            0,    // kind 0: unary
            0xf8, 0xff, 0xb0, 0xb7, 0x8a, 0xc3, 0xdc, 0x9d, 0x41, // args 0x413b7218a6ec3ff8
            0x91, 0x84, 0x87, 0xb0, 0xc8, 0xe9, 0xf0, 0xb1, 0xaf,
            0x01, // result 0xaf63c34c8601c211
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
    let doc: String = include_str!("../../../docs/PROTOCOL.md")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut body = BytesMut::new();
    encode_into(&("a", 5u32), &mut body).unwrap();
    let mut schemas_body = BytesMut::new();
    encode_into(&vec![example_schema()], &mut schemas_body).unwrap();
    let frames = [
        frame(Header::Hello(example_hello()), &[]),
        frame(Header::Schemas, &schemas_body),
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
        frame(
            Header::Part {
                id: 3,
                reply: true,
                total: 300,
            },
            &[1, 2],
        ),
        frame(Header::Input { id: 3 }, &[9]),
        frame(Header::InputEnd { id: 3 }, &[]),
        frame(Header::InputCredit { id: 3, items: 8 }, &[]),
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
    let doc: String = include_str!("../../../docs/PROTOCOL.md")
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
fn header_encoding_matches_postcard() {
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Values of every varint length.
        rng >> (rng % 64)
    };
    for _ in 0..20_000 {
        let headers = [
            Header::Request {
                id: next(),
                service: next() as u32,
                method: next() as u32,
                timeout_ms: if next() % 2 == 0 { None } else { Some(next()) },
                window: next() as u32,
            },
            Header::Response {
                id: next(),
                status: Status::Ok,
            },
            Header::StreamItem { id: next() },
            Header::Credit {
                id: next(),
                items: next() as u32,
            },
            Header::Input { id: next() },
            Header::InputEnd { id: next() },
            Header::InputCredit {
                id: next(),
                items: next() as u32,
            },
        ];
        for h in headers {
            let mut ours = [0u8; 64];
            let n = encode_header(&h, &mut ours).unwrap();
            assert_eq!(&ours[..n], &postcard::to_allocvec(&h).unwrap()[..], "{h:?}");
        }
    }
    // Too small a buffer is an error, never a panic.
    let big = Header::StreamItem { id: u64::MAX };
    assert_eq!(encode_header(&big, &mut [0u8; 5]), None);
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
        let split = crate::body::Body::encode_args(&(7u32, "x"), Some(Bytes::from(data.clone())))
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
        let again = crate::body::Body::encode_args(&(7u32, "x"), Some(Bytes::from(data)))
            .unwrap()
            .into_frame(&header, limit - 1)
            .unwrap_err();
        assert_eq!(again, limit);
    }
}

#[test]
fn advancing_a_frame_crosses_from_head_to_tail() {
    let mut f = Frame {
        head: BytesMut::from(&b"abc"[..]),
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

#[test]
fn golden_part_and_hello_ext() {
    assert_eq!(
        frame(
            Header::Part {
                id: 3,
                reply: true,
                total: 300
            },
            &[1, 2]
        ),
        [
            0, 0, 0, 7,  // length
            10, // kind 10: Part
            3,  // id
            1,  // reply: true
            0xac, 0x02, // total 300
            1, 2, // the piece
        ]
    );
    let mut ext = BytesMut::new();
    encode_into(
        &HelloExt {
            max_message: 1 << 30,
        },
        &mut ext,
    )
    .unwrap();
    assert_eq!(&ext[..], [0x80, 0x80, 0x80, 0x80, 0x04]);
}

#[test]
fn golden_input_frames() {
    assert_eq!(frame(Header::Input { id: 3 }, &[9]), [0, 0, 0, 3, 11, 3, 9]);
    assert_eq!(frame(Header::InputEnd { id: 3 }, &[]), [0, 0, 0, 2, 12, 3]);
    assert_eq!(
        frame(Header::InputCredit { id: 3, items: 8 }, &[]),
        [0, 0, 0, 3, 13, 3, 8]
    );
}

/// What a message in parts looks like on the wire, for every size around a piece: the pieces
/// are the body in order (from both segments, uncopied), every frame fits, and the last frame
/// is the message's own.
#[test]
fn parts_cut_a_body_into_frames_that_fit_and_put_back_together_exactly() {
    let max_frame = 1024;
    let last = Header::StreamItem { id: 77 };
    let cases = [961usize, 1000, 1920, 1921, 5000, 20_000]
        .into_iter()
        .flat_map(|len| [(len, len / 3), (len, 3)]);
    for (len, split) in cases {
        let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        // A long segment, or a short one (a byte string's length) and the rest.
        let (a, b) = body.split_at(split);
        let mut parts = Parts::new(
            last.clone(),
            [Bytes::copy_from_slice(a), Bytes::copy_from_slice(b)],
            max_frame,
        );
        let mut got = Vec::new();
        let mut frames = 0;
        loop {
            let (f, is_last) = parts.next_frame();
            frames += 1;
            let bytes = [&f.head[..], &f.tail[..]].concat();
            assert_eq!(
                bytes.len() - 4,
                u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize
            );
            assert!(
                bytes.len() - 4 <= max_frame,
                "len {len}: a frame over the limit"
            );
            let (header, piece) = split_frame(&bytes[4..]).unwrap();
            got.extend_from_slice(piece);
            if is_last {
                assert_eq!(header, last);
                break;
            }
            assert_eq!(
                header,
                Header::Part {
                    id: 77,
                    reply: true,
                    total: len as u64
                }
            );
        }
        assert_eq!(got, body, "len {len}");
        assert!(frames >= len.div_ceil(960), "len {len}: {frames} frames");
        assert!(
            frames <= len.div_ceil(960) + 1,
            "len {len}: {frames} frames"
        );
    }
}
