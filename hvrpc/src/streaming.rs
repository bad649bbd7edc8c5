//! [`Streaming`]: a stream of items in either direction — a server stream's items, or the input
//! stream a caller sends into a client-streaming or bidirectional method.

use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::error::Error;
use crate::link::Shared;
use crate::link::{CallHandle, Write};
use crate::protocol;
use crate::schema::Reading;

/// Where a handler reads its caller's input stream from.
#[derive(Clone, Debug)]
pub(crate) struct InputSource {
    pub(crate) link: Arc<Shared>,
    pub(crate) id: u64,
    /// The credit granted at a time.
    pub(crate) window: u32,
    /// The caller's shape of the items, when it differs from this side's.
    pub(crate) reading: Option<Arc<Reading>>,
}

/// A stream of `T` produced by a server-streaming method (`-> hvrpc::Streaming<T>`).
///
/// A server builds one from any stream ([`Streaming::new`]) or a channel
/// ([`Streaming::channel`]); the runtime pulls items only as fast as the caller consumes them
/// (credit-based flow control), so a slow consumer never makes the server buffer without bound.
/// A client receives one and reads it as a `Stream` of `Result<T, hvrpc::Error>`; dropping it
/// cancels the call, which stops the producer.
pub struct Streaming<T> {
    inner: Inner<T>,
}

enum Inner<T> {
    Local(BoxStream<'static, Result<T, Error>>),
    Remote(Remote<T>),
    /// A caller's input stream, read by the handler of its call.
    Input(Input),
}

/// The input stream of one of the peer's calls, as its handler reads it.
struct Input {
    src: InputSource,
    consumed: u32,
}

impl Input {
    /// The next item's bytes, granting credit as items are taken.
    fn poll_raw(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Error>>> {
        let link = &self.src.link;
        let mut core = link.lock();
        let item = ready!(core.poll_input(self.src.id, cx.waker()));
        let mut write = Write::Later;
        if let Some(Ok(_)) = item {
            self.consumed += 1;
            // Grant more once half the window is read, so a caller that keeps up never waits.
            if self.consumed >= (self.src.window / 2).max(1) {
                core.grant_input(self.src.id, self.consumed);
                self.consumed = 0;
                write = Write::Now;
            }
        }
        link.release(core, write);
        Poll::Ready(item)
    }
}

struct Remote<T> {
    call: CallHandle,
    window: u32,
    consumed: u32,
    /// The peer's shape of the items, when it differs from this side's.
    reading: Option<Arc<Reading>>,
    _item: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Local(_) => f.write_str("Streaming(local)"),
            Inner::Remote(r) => write!(f, "Streaming(call {})", r.call.id),
            Inner::Input(i) => write!(f, "Streaming(input of call {})", i.src.id),
        }
    }
}

impl<T: Send + 'static> Streaming<T> {
    /// A stream of the items of `stream`.
    pub fn new(stream: impl Stream<Item = T> + Send + 'static) -> Self {
        Self::try_new(stream.map(Ok))
    }

    /// A stream that may end in an error, which the caller receives as its last item.
    pub fn try_new(stream: impl Stream<Item = Result<T, Error>> + Send + 'static) -> Self {
        Self {
            inner: Inner::Local(stream.boxed()),
        }
    }

    /// A stream of the given items.
    pub fn iter<I>(items: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        Self::new(futures_util::stream::iter(items))
    }

    /// A stream fed through a channel: the producer sends with [`StreamSender::send`], which
    /// waits while `buffer` items are unconsumed and fails once the caller has gone away.
    pub fn channel(buffer: usize) -> (StreamSender<T>, Self) {
        let (tx, mut rx) = mpsc::channel(buffer.max(1));
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        (StreamSender { tx }, Self::new(stream))
    }

    pub(crate) fn input(src: InputSource) -> Self {
        Self {
            inner: Inner::Input(Input { src, consumed: 0 }),
        }
    }

    pub(crate) fn remote(call: CallHandle, window: u32, reading: Option<Arc<Reading>>) -> Self {
        Self {
            inner: Inner::Remote(Remote {
                call,
                window,
                consumed: 0,
                reading,
                _item: PhantomData,
            }),
        }
    }
}

impl<T> Remote<T> {
    /// The next item's bytes, granting credit as items are taken.
    fn poll_raw(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Error>>> {
        let item = ready!(self.call.poll_item(cx));
        if let Some(Ok(_)) = item {
            self.consumed += 1;
            // Grant more once half the window is used, so the producer never stalls on a
            // consumer that keeps up.
            if self.consumed >= (self.window / 2).max(1) {
                self.call.grant(self.consumed);
                self.consumed = 0;
            }
        }
        Poll::Ready(item)
    }
}

/// The items of a server stream as their postcard bytes, for tools without the Rust types
/// ([`Connection::stream_raw`](crate::Connection::stream_raw)). Dropping it cancels the call.
pub struct RawStreaming {
    remote: Remote<()>,
}

impl fmt::Debug for RawStreaming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawStreaming(call {})", self.remote.call.id)
    }
}

impl RawStreaming {
    pub(crate) fn new(call: CallHandle, window: u32) -> Self {
        Self {
            remote: Remote {
                call,
                window,
                consumed: 0,
                reading: None,
                _item: PhantomData,
            },
        }
    }
}

impl Stream for RawStreaming {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.remote.poll_raw(cx)
    }
}

/// The sending side of [`Streaming::channel`].
#[derive(Debug)]
pub struct StreamSender<T> {
    tx: mpsc::Sender<T>,
}

impl<T> Clone for StreamSender<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

/// The consumer of a stream has gone away (the call was cancelled or ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the stream's consumer has gone away")]
pub struct StreamClosed;

impl<T> StreamSender<T> {
    /// Sends an item, waiting while the buffer is full.
    pub async fn send(&self, item: T) -> Result<(), StreamClosed> {
        self.tx.send(item).await.map_err(|_| StreamClosed)
    }

    /// Resolves when the consumer has gone away: a producer that waits for something else
    /// can stop early.
    pub async fn closed(&self) {
        self.tx.closed().await
    }

    /// Whether the consumer has gone away.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl<T: DeserializeOwned> Stream for Streaming<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let (raw, reading) = match &mut self.inner {
            Inner::Local(s) => return s.poll_next_unpin(cx),
            Inner::Remote(r) => (ready!(r.poll_raw(cx)), &r.reading),
            Inner::Input(i) => (ready!(i.poll_raw(cx)), &i.src.reading),
        };
        match raw {
            Some(Ok(bytes)) => Poll::Ready(Some(match reading {
                None => protocol::decode_exact(&bytes).map_err(|e| {
                    Error::Protocol(format!("cannot decode a stream item: {e}").into())
                }),
                Some(reading) => reading.decode(&bytes).map_err(|e| {
                    Error::Incompatible(
                        format!("cannot read a stream item (another release's shape): {e}").into(),
                    )
                }),
            })),
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => Poll::Ready(None),
        }
    }
}

/// The items of a server-streaming method whose items are `Result<T, E>`
/// (`-> hvrpc::Streaming<Result<T, E>>`), as the caller reads them: a `Stream` of
/// `Result<T, hvrpc::Error<E>>`, where the method's own error arrives typed as
/// [`Error::Application`] and **ends the stream** (a server stops after sending one). A
/// runtime failure (the connection lost, a deadline) ends it too. Dropping it cancels the call.
pub struct TypedStreaming<T, E> {
    inner: Option<Streaming<Result<T, E>>>,
}

impl<T, E> fmt::Debug for TypedStreaming<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Some(s) => write!(f, "TypedStreaming({s:?})"),
            None => f.write_str("TypedStreaming(ended)"),
        }
    }
}

impl<T, E> TypedStreaming<T, E> {
    /// Reads `stream`'s `Result` items as typed outcomes.
    pub fn new(stream: Streaming<Result<T, E>>) -> Self {
        Self {
            inner: Some(stream),
        }
    }
}

impl<T: DeserializeOwned, E: DeserializeOwned> Stream for TypedStreaming<T, E> {
    type Item = Result<T, Error<E>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let item = match ready!(inner.poll_next_unpin(cx)) {
            None => None,
            Some(Ok(Ok(v))) => return Poll::Ready(Some(Ok(v))),
            Some(Ok(Err(e))) => Some(Err(Error::Application(e))),
            Some(Err(e)) => Some(Err(e.with_application())),
        };
        // The end, typed or not: nothing more is read (dropping the call cancels whatever the
        // peer still had in flight).
        self.inner = None;
        Poll::Ready(item)
    }
}

/// A server's stream of `Result` items, ended after its first `Err` (which is sent): what the
/// generated server does with a method `-> Streaming<Result<T, E>>`. Not a public API.
#[doc(hidden)]
pub fn end_at_error<T: Send + 'static, E: Send + 'static>(
    stream: Streaming<Result<T, E>>,
) -> Streaming<Result<T, E>> {
    let Inner::Local(s) = stream.inner else {
        // A stream received from a peer, served on: it ends as the peer ends it.
        return stream;
    };
    // Nothing is pulled from the handler's stream after its error.
    let mut s = Some(s);
    Streaming::try_new(futures_util::stream::poll_fn(move |cx| {
        let Some(inner) = s.as_mut() else {
            return Poll::Ready(None);
        };
        let item = ready!(inner.poll_next_unpin(cx));
        if !matches!(item, Some(Ok(Ok(_)))) {
            s = None;
        }
        Poll::Ready(item)
    }))
}
