//! The handshake's I/O: preambles and Hellos both ways at once, the refusal, and — when the two
//! Hellos show that some method differs — the one Schemas frame each way. The rules it applies
//! are `crate::engine::handshake`'s (limits, versions) and `crate::skew`'s (services).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use hvrpc_transport::framing::{FrameCodec, FrameError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::FramedRead;

use super::HandshakeParams;
use crate::engine::handshake::{self, MAX_HELLO};
use crate::error::Error;
use crate::protocol::{self, FrameBuf, Header, Hello, HelloExt, PREAMBLE};
use crate::schema::{ServiceSchema, ServiceSpec};
use crate::skew::{self, Ours, PeerSchemas, Readings, Routes};

/// The largest Schemas payload accepted.
pub(crate) const MAX_SCHEMAS: usize = 1 << 20;

/// What the handshake settled.
pub(crate) struct Agreed {
    pub(crate) peer_hello: Hello,
    pub(crate) routes: Routes,
    pub(crate) readings: Readings,
    /// The peer's maximum message size, if it takes messages in parts.
    pub(crate) peer_max_message: Option<u64>,
    /// What the peer sent after its handshake frames, for the reader.
    pub(crate) leftover: BytesMut,
}

fn closed_early() -> Error {
    Error::Handshake("the peer closed the connection during the handshake".into())
}

/// Reads one frame of at most `max` bytes from `buffered`, then `r`; returns it and what was
/// read beyond it.
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buffered: BytesMut,
    max: usize,
    what: &str,
) -> Result<(Bytes, BytesMut), Error> {
    let mut chained = std::io::Cursor::new(buffered).chain(&mut *r);
    let mut frames = FramedRead::new(&mut chained, FrameCodec::new(max));
    let payload = match frames.next().await {
        Some(Ok(p)) => p.freeze(),
        Some(Err(FrameError::TooLarge { len, max })) => {
            return Err(Error::Handshake(
                format!("the peer's {what} is {len} bytes, more than {max}").into(),
            ));
        }
        Some(Err(e)) => {
            return Err(Error::Handshake(format!("reading the {what}: {e}").into()));
        }
        None => return Err(closed_early()),
    };
    let mut rest = frames.read_buffer().clone();
    drop(frames);
    let (cursor, _) = chained.into_inner();
    let at = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
    rest.extend_from_slice(cursor.get_ref().get(at..).unwrap_or_default());
    Ok((payload, rest))
}

/// The peer's Hello, with what follows it, read.
struct PeerHello {
    hello: Hello,
    /// Its maximum message size, if it takes messages in parts.
    max_message: Option<u64>,
    /// What came after the Hello frame.
    leftover: BytesMut,
}

/// Reads the fields after a Hello (newer ones beyond those known here are ignored).
fn read_ext(hello: &Hello, rest: &[u8]) -> Result<Option<u64>, Error> {
    if hello.features & protocol::FEATURE_PARTS == 0 {
        return Ok(None);
    }
    match postcard::take_from_bytes::<HelloExt>(rest) {
        Ok((ext, _)) => Ok(Some(ext.max_message)),
        Err(e) => Err(Error::Handshake(
            format!(
                "the peer announces messages in parts, but its handshake lacks their maximum \
                 size: {e}"
            )
            .into(),
        )),
    }
}

/// Reads the peer's preamble and Hello.
async fn read_hello<R: AsyncRead + Unpin>(r: &mut R) -> Result<PeerHello, Error> {
    let mut preamble = [0u8; PREAMBLE.len()];
    r.read_exact(&mut preamble).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            closed_early()
        } else {
            Error::ConnectionLost(format!("reading the handshake: {e}").into())
        }
    })?;
    handshake::check_preamble(&preamble)?;
    let (payload, leftover) = read_frame(r, BytesMut::new(), MAX_HELLO, "handshake").await?;
    match protocol::split_frame(&payload) {
        // Trailing bytes in a Hello are fields from a newer minor version: ignored.
        Ok((Header::Hello(hello), rest)) => Ok(PeerHello {
            max_message: read_ext(&hello, rest)?,
            hello,
            leftover,
        }),
        Ok((other, _)) => Err(Error::Handshake(
            format!("the peer's first frame is not a handshake: {other:?}").into(),
        )),
        Err(e) => Err(Error::Handshake(
            format!("the peer's handshake: {e}").into(),
        )),
    }
}

/// Reads the peer's Schemas frame: the schemas, or (undecodable) why every service it would
/// describe cannot be bridged.
async fn read_schemas<R: AsyncRead + Unpin>(
    r: &mut R,
    buffered: BytesMut,
    peer: &Hello,
) -> Result<(PeerSchemas, BytesMut), Error> {
    let (payload, leftover) = read_frame(r, buffered, MAX_SCHEMAS, "schemas").await?;
    let (header, body) = protocol::split_frame(&payload)
        .map_err(|e| Error::Handshake(format!("the peer's schemas: {e}").into()))?;
    match header {
        Header::Schemas => {}
        Header::GoAway { reason } => {
            return Err(Error::Handshake(
                format!("the peer refused the connection: {reason}").into(),
            ));
        }
        other => {
            return Err(Error::Handshake(
                format!("the peer sent {other:?} where its schemas belong").into(),
            ));
        }
    }
    let schemas = match protocol::decode_exact::<Vec<ServiceSchema>>(body) {
        Ok(list) => skew::peer_schemas(list),
        // Only the methods that differ need them: those become incompatible, the rest work.
        Err(e) => {
            let why: Arc<str> = Arc::from(format!("the peer's schemas cannot be decoded: {e}"));
            peer.services
                .iter()
                .chain(&peer.wants)
                .map(|s| (s.name.clone(), Err(Arc::clone(&why))))
                .collect()
        }
    };
    Ok((schemas, leftover))
}

/// Writes `bytes` and flushes.
async fn send<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> Result<(), Error> {
    async {
        w.write_all(bytes).await?;
        w.flush().await
    }
    .await
    .map_err(|e| Error::ConnectionLost(format!("sending the handshake: {e}").into()))
}

/// Tells the peer why this side refuses it (best effort), and returns the refusal.
async fn refuse<W: AsyncWrite + Unpin>(w: &mut W, e: Error) -> Error {
    let reason = match &e {
        Error::Handshake(r) => r.to_string(),
        other => other.to_string(),
    };
    let reason = format!("handshake refused: {reason}");
    if let Ok(frame) = FrameBuf::new(&Header::GoAway { reason }, 0).finish(usize::MAX) {
        let _ = tokio::time::timeout(Duration::from_secs(1), send(w, &frame)).await;
    }
    e
}

/// Specs of services: the ones this side serves, the ones it wants.
type ServedAndWanted = (Vec<Arc<ServiceSpec>>, Vec<Arc<ServiceSpec>>);

/// The specs of this side's services, or why one cannot be described.
fn specs(params: &HandshakeParams) -> Result<ServedAndWanted, Error> {
    let described = |r: &Result<Arc<ServiceSpec>, Arc<str>>| r.clone().map_err(Error::Handshake);
    let served = params
        .services
        .specs()
        .iter()
        .map(described)
        .collect::<Result<_, _>>()?;
    let wanted = params
        .wants
        .iter()
        .map(|w| described(&w.spec))
        .collect::<Result<_, _>>()?;
    Ok((served, wanted))
}

/// Runs the handshake (without its timeout).
pub(crate) async fn run<R, W>(
    r: &mut R,
    w: &mut W,
    params: &HandshakeParams,
) -> Result<Agreed, Error>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (served, wanted) = specs(params)?;
    let strict: Vec<bool> = params.wants.iter().map(|w| w.strict).collect();
    let config = &params.config;
    // What this side announces: never below the minimum a peer must accept.
    let max_frame = u32::try_from(config.max_frame)
        .unwrap_or(u32::MAX)
        .max(handshake::MIN_MAX_FRAME);
    let hello = Hello {
        features: protocol::FEATURE_PARTS,
        max_frame,
        max_concurrent_calls: config.max_concurrent_calls,
        services: served.iter().map(|s| s.desc().clone()).collect(),
        wants: wanted
            .iter()
            .zip(&strict)
            .map(|(s, &strict)| {
                let mut d = s.desc().clone();
                d.strict = strict;
                d
            })
            .collect(),
        agent: concat!("hvrpc/", env!("CARGO_PKG_VERSION")).to_owned(),
    };
    let mut first = BytesMut::from(&PREAMBLE[..]);
    let mut hello_frame = FrameBuf::new(&Header::Hello(hello), 0);
    let ext = HelloExt {
        max_message: config.max_message as u64,
    };
    hello_frame
        .body(&ext)
        .map_err(|e| Error::Encode(e.to_string().into()))?;
    let hello_frame = hello_frame.finish(MAX_HELLO).map_err(|len| {
        Error::Handshake(format!("our handshake is too large ({len} bytes)").into())
    })?;
    first.extend_from_slice(&hello_frame);
    let (sent, received) = tokio::join!(send(w, &first), read_hello(r));
    let PeerHello {
        hello: peer_hello,
        max_message: peer_max_message,
        leftover,
    } = received?;
    sent?;
    let ours = Ours {
        served: &served,
        wanted: &wanted,
    };
    let checked = handshake::check_limits(peer_hello.max_frame).and_then(|()| {
        skew::check_strict(&ours, &strict, &peer_hello).map_err(|e| Error::Handshake(e.into()))
    });
    if let Err(e) = checked {
        // The peer learns why before the connection closes.
        return Err(refuse(w, e).await);
    }
    let (schemas, leftover) = match skew::schemas_to_send(&ours, &peer_hello) {
        None => (PeerSchemas::new(), leftover),
        Some(list) => {
            let mut frame = FrameBuf::new(&Header::Schemas, 0);
            frame
                .body(&list)
                .map_err(|e| Error::Encode(e.to_string().into()))?;
            let frame = frame.finish(MAX_SCHEMAS).map_err(|len| {
                Error::Handshake(
                    format!("our schemas are {len} bytes, more than {MAX_SCHEMAS}").into(),
                )
            })?;
            let (sent, received) =
                tokio::join!(send(w, &frame), read_schemas(r, leftover, &peer_hello));
            sent?;
            received?
        }
    };
    let routes = skew::routes(&wanted, &peer_hello, &schemas);
    let readings = skew::readings(&served, &peer_hello, &schemas);
    Ok(Agreed {
        peer_hello,
        routes,
        readings,
        peer_max_message,
        leftover,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_announcing_parts_must_carry_its_maximum_message_size() {
        let mut hello = Hello::default();
        // No parts: whatever follows is a newer field, ignored.
        assert_eq!(read_ext(&hello, &[1, 2, 3]).unwrap(), None);
        hello.features = protocol::FEATURE_PARTS;
        assert_eq!(
            read_ext(&hello, &[0x80, 0x80, 0x80, 0x80, 0x04, 9]).unwrap(),
            Some(1 << 30),
            "further bytes after it are ignored"
        );
        let e = read_ext(&hello, &[]).unwrap_err();
        assert!(e.to_string().contains("lacks their maximum size"), "{e}");
    }
}
