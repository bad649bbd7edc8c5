//! A peer that writes protocol bytes by hand (see docs/PROTOCOL.md), as a buggy or hostile
//! implementation would: the server answers what deserves an answer, closes the connection on
//! protocol violations, and keeps serving everybody else.

mod common;

use common::wire::*;

use std::time::Duration;

use hvrpc::{Config, Context, Endpoint, Server};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

/// Echoes.
#[hvrpc::service(port = 6000)]
pub trait Echo {
    /// Echoes a string.
    async fn echo(s: String) -> String;
    /// Sleeps.
    async fn nap(ms: u64);
}

struct Imp;
impl Echo for Imp {
    async fn echo(&self, _: Context, s: String) -> String {
        s
    }
    async fn nap(&self, _: Context, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await
    }
}

#[derive(Debug, PartialEq)]
enum Reply {
    Ok { id: u64, body: Vec<u8> },
    Err { id: u64, code: u64, message: String },
    Other(u8),
    Closed,
}

struct Raw<S> {
    io: S,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    async fn start(mut io: S) -> Self {
        io.write_all(&opening()).await.unwrap();
        let mut preamble = [0u8; 8];
        io.read_exact(&mut preamble).await.unwrap();
        assert_eq!(&preamble, b"HVRPC\x02\0\0");
        let mut raw = Raw { io };
        assert_eq!(
            raw.frame().await.unwrap()[0],
            0,
            "the server's first frame is its Hello"
        );
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        // The server may already have closed: writing then fails, which the caller checks by
        // reading.
        let _ = self.io.write_all(bytes).await;
    }

    async fn frame(&mut self) -> Option<Vec<u8>> {
        let mut len = [0u8; 4];
        self.io.read_exact(&mut len).await.ok()?;
        let mut p = vec![0u8; u32::from_be_bytes(len) as usize];
        self.io.read_exact(&mut p).await.ok()?;
        Some(p)
    }

    /// The next frame that is not a keepalive ping.
    /// The connection ends, saying why first (a GoAway with the reason).
    async fn ends_saying(&mut self, why: &str) {
        let next = timeout(Duration::from_secs(10), async {
            loop {
                match self.frame().await {
                    Some(p) if p[0] == 6 => continue,
                    other => return other,
                }
            }
        })
        .await
        .expect("no reply from the server");
        let p = next.expect("the connection ended without a GoAway");
        assert_eq!(p[0], 8, "not a GoAway: {p:?}");
        let reason = String::from_utf8_lossy(&p[2..]).into_owned();
        assert!(reason.contains(why), "{reason}");
        assert_eq!(self.reply().await, Reply::Closed);
    }

    async fn reply(&mut self) -> Reply {
        let next = timeout(Duration::from_secs(10), async {
            loop {
                match self.frame().await {
                    Some(p) if p[0] == 6 => continue,
                    other => return other,
                }
            }
        })
        .await
        .expect("no reply from the server");
        let Some(p) = next else { return Reply::Closed };
        if p[0] != 2 {
            return Reply::Other(p[0]);
        }
        let mut at = 1;
        let id = read_varint(&p, &mut at);
        match p[at] {
            0 => Reply::Ok {
                id,
                body: p[at + 1..].to_vec(),
            },
            _ => {
                at += 1;
                let code = read_varint(&p, &mut at);
                let len = read_varint(&p, &mut at) as usize;
                let message = String::from_utf8_lossy(&p[at..at + len]).into_owned();
                Reply::Err { id, code, message }
            }
        }
    }
}

async fn server(config: Config) -> (Endpoint, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (listener, ep) = common::test_listener(&dir, "raw.sock").await;
    let server = Server::new()
        .config(config)
        .add_service(EchoServer::new(Imp));
    tokio::spawn(server.serve_with_shutdown(listener, std::future::pending()));
    (ep, dir)
}

async fn raw(ep: &Endpoint) -> Raw<hvrpc::transport::Stream> {
    Raw::start(hvrpc::transport::connect(ep).await.unwrap()).await
}

/// A well-behaved client still gets answers.
async fn still_serving(ep: &Endpoint) {
    let c = EchoClient::connect(ep).await.unwrap();
    assert_eq!(c.echo("still here".into()).await.unwrap(), "still here");
}

#[tokio::test]
async fn valid_request_by_hand() {
    let (ep, _d) = server(Config::server()).await;
    let mut r = raw(&ep).await;
    r.send(&request(1, 0, 0, &string_arg("hi"))).await;
    assert_eq!(
        r.reply().await,
        Reply::Ok {
            id: 1,
            body: string_arg("hi")
        }
    );
}

#[tokio::test]
async fn unknown_method_service_and_bad_arguments_get_error_responses() {
    let (ep, _d) = server(Config::server()).await;
    let mut r = raw(&ep).await;
    r.send(&request(1, 0, 99, &[])).await;
    match r.reply().await {
        Reply::Err {
            id: 1,
            code: 2,
            message,
        } => {
            assert_eq!(message, "Echo has no method with index 99")
        }
        other => panic!("{other:?}"),
    }
    r.send(&request(2, 7, 0, &[])).await;
    assert!(matches!(r.reply().await, Reply::Err { id: 2, code: 1, .. }));
    // A string whose length runs past the end of the frame, then trailing garbage.
    r.send(&request(3, 0, 0, &[10, b'a'])).await;
    match r.reply().await {
        Reply::Err {
            id: 3,
            code: 3,
            message,
        } => {
            assert!(
                message.starts_with("cannot decode the arguments of Echo.echo"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    r.send(&request(4, 0, 0, &[1, b'a', 0xff])).await;
    assert!(matches!(r.reply().await, Reply::Err { id: 4, code: 3, .. }));
    // The same connection still works.
    r.send(&request(5, 0, 0, &string_arg("ok"))).await;
    assert_eq!(
        r.reply().await,
        Reply::Ok {
            id: 5,
            body: string_arg("ok")
        }
    );
}

#[tokio::test]
async fn cancel_for_unknown_ids_is_ignored() {
    let (ep, _d) = server(Config::server()).await;
    let mut r = raw(&ep).await;
    let mut cancel = vec![5u8];
    varint(12345, &mut cancel);
    r.send(&framed(&cancel)).await;
    r.send(&request(1, 0, 0, &string_arg("x"))).await;
    assert_eq!(
        r.reply().await,
        Reply::Ok {
            id: 1,
            body: string_arg("x")
        }
    );
}

#[tokio::test]
async fn duplicate_request_id_ends_the_connection() {
    let (ep, _d) = server(Config::server()).await;
    let mut r = raw(&ep).await;
    let mut nap = Vec::new();
    varint(5_000, &mut nap);
    r.send(&request(1, 0, 1, &nap)).await;
    r.send(&request(1, 0, 1, &nap)).await;
    r.ends_saying("duplicate request id 1").await;
    still_serving(&ep).await;
}

#[tokio::test]
async fn four_gib_length_prefix_ends_the_connection() {
    let (ep, _d) = server(Config::server()).await;
    let mut r = raw(&ep).await;
    r.send(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).await;
    r.ends_saying("a frame of 4294967295 bytes").await;
    still_serving(&ep).await;
}

#[tokio::test]
async fn garbage_after_the_handshake_ends_the_connection() {
    let (ep, _d) = server(Config::server()).await;
    let mut r = raw(&ep).await;
    r.send(&framed(&[200, 1, 2, 3])).await;
    r.ends_saying("bad frame header").await;
    let mut r = raw(&ep).await;
    r.send(&framed(&[0, 0, 0, 0, 0, 0, 0])).await; // a second Hello
    r.ends_saying("a second handshake").await;
    still_serving(&ep).await;
}

#[tokio::test]
async fn calls_beyond_the_concurrency_limit_are_refused() {
    let mut config = Config::server();
    config.max_concurrent_calls = 4;
    let (ep, _d) = server(config).await;
    let mut r = raw(&ep).await;
    let mut nap = Vec::new();
    varint(2_000, &mut nap);
    for id in 1..=6 {
        r.send(&request(id, 0, 1, &nap)).await;
    }
    // Two refusals come at once; the four admitted calls finish later.
    for _ in 0..2 {
        match r.reply().await {
            Reply::Err {
                id,
                code: 7,
                message,
            } => {
                assert!(id == 5 || id == 6, "{id}");
                assert!(message.contains("limit 4"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
    let mut done = Vec::new();
    for _ in 0..4 {
        match r.reply().await {
            Reply::Ok { id, .. } => done.push(id),
            other => panic!("{other:?}"),
        }
    }
    done.sort();
    assert_eq!(done, [1, 2, 3, 4]);
}
