//! The calls generated clients make, and their [`CallOptions`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::body::Body;
use crate::channel::Channel;
use crate::connection::Connection;
use crate::error::Error;
use crate::link::pump;
use crate::protocol;
use crate::schema::Reading;
use crate::service::ServiceDef;
use crate::streaming::Streaming;
use crate::wire_bytes::{ByteSlice, ByteString};

/// Per-call options; generated clients carry them (`client.with_timeout(…)`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallOptions {
    timeout: Timeout,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Timeout {
    /// The configuration's default deadline (unary calls only).
    #[default]
    Default,
    /// No deadline.
    Never,
    /// This long from when the call starts.
    After(Duration),
}

impl CallOptions {
    /// A deadline `timeout` after the call starts. It travels to the server as a relative
    /// duration, so the two clocks need not agree.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Timeout::After(timeout);
        self
    }

    /// No deadline at all.
    pub fn no_timeout(mut self) -> Self {
        self.timeout = Timeout::Never;
        self
    }

    fn resolve(&self, default: Option<Duration>, streaming: bool) -> Option<Duration> {
        match self.timeout {
            Timeout::Default if streaming => None,
            Timeout::Default => default,
            Timeout::Never => None,
            Timeout::After(d) => Some(d),
        }
    }
}

fn method_name<S: ServiceDef>(method: u32) -> &'static str {
    S::METHODS.get(method as usize).copied().unwrap_or("?")
}

/// Where a call goes on its connection, and how its result is read.
struct Target {
    conn: Connection,
    service: u32,
    method: u32,
    /// The peer's shape of the result, when it differs from this side's.
    reading: Option<Arc<Reading>>,
    /// What is left of the deadline.
    timeout: Option<Duration>,
}

/// The connection, where this side's `method` goes on it, and the time left of the call's
/// deadline (`timeout`, from now). Waiting for a dial counts against the deadline.
async fn prepare<S: ServiceDef>(
    channel: &Channel,
    method: u32,
    timeout: Option<Duration>,
) -> Result<Target, Error> {
    let conn = match channel.ready() {
        // The usual case: no timer, no waiting.
        Some(conn) => (conn, timeout),
        None => {
            let started = tokio::time::Instant::now();
            let conn = match timeout {
                Some(t) => tokio::time::timeout(t, channel.connection())
                    .await
                    .map_err(|_| Error::DeadlineExceeded)??,
                None => channel.connection().await?,
            };
            (conn, timeout.map(|t| t.saturating_sub(started.elapsed())))
        }
    };
    let (conn, left) = conn;
    if left == Some(Duration::ZERO) {
        return Err(Error::DeadlineExceeded);
    }
    let (service, method, reading) = conn.route(S::NAME, method, S::spec)?;
    Ok(Target {
        conn,
        service,
        method,
        reading,
        timeout: left,
    })
}

/// A unary call (used by generated clients). `tail` is a byte string that ends the arguments,
/// sent without copying.
pub async fn call_unary<S, A, R>(
    channel: &Channel,
    method: u32,
    args: &A,
    tail: Option<Bytes>,
    opts: &CallOptions,
) -> Result<R, Error>
where
    S: ServiceDef,
    A: Serialize + ?Sized,
    R: DeserializeOwned,
{
    let (body, reading) = unary_body::<S, A>(channel, method, args, tail, opts).await?;
    match reading {
        None => protocol::decode_exact(&body).map_err(|e| undecodable::<S>(method, e)),
        Some(r) => r.decode(&body).map_err(|e| untranslatable::<S>(method, e)),
    }
}

/// A unary call whose result is a byte string, taken from the response frame without copying
/// it where the type allows (used by generated clients).
pub async fn call_unary_bytes<S, A, R>(
    channel: &Channel,
    method: u32,
    args: &A,
    tail: Option<Bytes>,
    opts: &CallOptions,
) -> Result<R, Error>
where
    S: ServiceDef,
    A: Serialize + ?Sized,
    R: ByteString,
{
    let (body, reading) = unary_body::<S, A>(channel, method, args, tail, opts).await?;
    if let Some(r) = reading {
        let bytes = Bytes::from(
            r.decode::<Vec<u8>>(&body)
                .map_err(|e| untranslatable::<S>(method, e))?,
        );
        return Ok(R::from_frame(&bytes, &bytes));
    }
    let part: ByteSlice<'_> =
        protocol::decode_exact(&body).map_err(|e| undecodable::<S>(method, e))?;
    Ok(R::from_frame(&body, part.0))
}

async fn unary_body<S, A>(
    channel: &Channel,
    method: u32,
    args: &A,
    tail: Option<Bytes>,
    opts: &CallOptions,
) -> Result<(Bytes, Option<Arc<Reading>>), Error>
where
    S: ServiceDef,
    A: Serialize + ?Sized,
{
    // No span per call: entering and leaving one on every poll cost more than a tenth of a
    // call's instructions. What a call logs is logged where it happens (dialling has a span).
    let timeout = opts.resolve(channel.default_deadline(), false);
    let t = prepare::<S>(channel, method, timeout).await?;
    let body = t
        .conn
        .call_unary(t.service, t.method, args, tail, t.timeout)
        .await?;
    Ok((body, t.reading))
}

fn untranslatable<S: ServiceDef>(method: u32, e: String) -> Error {
    Error::Incompatible(
        format!(
            "{}.{}: cannot read the peer's result (another release's shape): {e}",
            S::NAME,
            method_name::<S>(method)
        )
        .into(),
    )
}

fn undecodable<S: ServiceDef>(method: u32, e: String) -> Error {
    Error::Protocol(
        format!(
            "cannot decode the response of {}.{}: {e}",
            S::NAME,
            method_name::<S>(method)
        )
        .into(),
    )
}

/// A server-streaming call (used by generated clients).
pub async fn call_streaming<S, A, T>(
    channel: &Channel,
    method: u32,
    args: &A,
    tail: Option<Bytes>,
    opts: &CallOptions,
) -> Result<Streaming<T>, Error>
where
    S: ServiceDef,
    A: Serialize + ?Sized,
    T: DeserializeOwned + Send + 'static,
{
    let timeout = opts.resolve(channel.default_deadline(), true);
    let t = prepare::<S>(channel, method, timeout).await?;
    let window = t.conn.stream_window();
    let call = t.conn.start_call(
        t.service,
        t.method,
        (args, tail),
        t.timeout,
        (Some(window), false),
    )?;
    Ok(Streaming::remote(call, window, t.reading))
}

/// How an input item becomes its frame's body: [`encode_item`] or [`encode_bytes_item`].
pub(crate) type ItemEncoder<T> = fn(T) -> Result<Body, Error>;

/// A client-streaming call (used by generated clients): the request, then the items of
/// `input` (each encoded by `encode`) as the peer grants credit, and the result. An error item
/// of `input` ends the call with that error (the peer is told to stop).
pub async fn call_client_stream<S, A, T, R>(
    channel: &Channel,
    method: u32,
    args: &A,
    tail: Option<Bytes>,
    (input, encode): (Streaming<T>, ItemEncoder<T>),
    opts: &CallOptions,
) -> Result<R, Error>
where
    S: ServiceDef,
    A: Serialize + ?Sized,
    T: DeserializeOwned + Send + 'static,
    R: DeserializeOwned,
{
    // An upload takes as long as it takes: like streams, no default deadline.
    let timeout = opts.resolve(channel.default_deadline(), true);
    let t = prepare::<S>(channel, method, timeout).await?;
    let mut call = t
        .conn
        .start_call(t.service, t.method, (args, tail), t.timeout, (None, true))?;
    tokio::spawn(pump(call.input_sink(t.conn.peer_limits()), input, encode));
    let body = std::future::poll_fn(|cx| call.poll_unary(cx)).await?;
    match t.reading {
        None => protocol::decode_exact(&body).map_err(|e| undecodable::<S>(method, e)),
        Some(r) => r.decode(&body).map_err(|e| untranslatable::<S>(method, e)),
    }
}

/// A bidirectional-streaming call (used by generated clients): `input` goes to the peer as it
/// grants credit, while the returned stream reads the peer's items; the two are independent.
/// Dropping the returned stream cancels the call (and stops reading `input`).
pub async fn call_bidi<S, A, T, U>(
    channel: &Channel,
    method: u32,
    args: &A,
    tail: Option<Bytes>,
    (input, encode): (Streaming<T>, ItemEncoder<T>),
    opts: &CallOptions,
) -> Result<Streaming<U>, Error>
where
    S: ServiceDef,
    A: Serialize + ?Sized,
    T: DeserializeOwned + Send + 'static,
    U: DeserializeOwned + Send + 'static,
{
    let timeout = opts.resolve(channel.default_deadline(), true);
    let t = prepare::<S>(channel, method, timeout).await?;
    let window = t.conn.stream_window();
    let call = t.conn.start_call(
        t.service,
        t.method,
        (args, tail),
        t.timeout,
        (Some(window), true),
    )?;
    tokio::spawn(pump(call.input_sink(t.conn.peer_limits()), input, encode));
    Ok(Streaming::remote(call, window, t.reading))
}

/// Encodes an input item with postcard (used by generated clients).
#[doc(hidden)]
pub fn encode_item<T: Serialize>(item: T) -> Result<Body, Error> {
    Body::encode(&item)
}

/// Encodes a byte-string input item without copying it (used by generated clients).
#[doc(hidden)]
pub fn encode_bytes_item<T: ByteString>(item: T) -> Result<Body, Error> {
    Ok(Body::from_bytes(item.into_bytes()))
}
