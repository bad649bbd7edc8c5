//! [`Stream`], its owned halves, and [`Listener`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::addr::{Endpoint, HybridVsockAddr, PeerAddr};
use crate::options::SocketOptions;
use crate::sys;

/// A connected byte stream over any hvrpc transport.
///
/// Implements [`AsyncRead`] and [`AsyncWrite`]; [`into_split`](Stream::into_split) gives owned
/// halves that can live in different tasks, so reading never waits for writing.
#[derive(Debug)]
pub struct Stream {
    kind: Kind,
    peer: PeerAddr,
}

#[derive(Debug)]
enum Kind {
    Tcp(TcpStream),
    Unix(sys::UnixSocketStream),
    Vsock(sys::VsockStream),
    Hv(sys::HvStream),
}

/// The read half of a [`Stream`].
#[derive(Debug)]
pub struct OwnedReadHalf {
    kind: ReadKind,
}

#[derive(Debug)]
enum ReadKind {
    Tcp(tokio::net::tcp::OwnedReadHalf),
    Unix(sys::UnixReadHalf),
    Vsock(sys::VsockReadHalf),
    Hv(sys::HvReadHalf),
}

/// The write half of a [`Stream`].
///
/// Unlike tokio's TCP and Unix halves, dropping it does not shut the stream down: the stream
/// closes when both halves are gone. End a conversation in-band (Hyper-V's half-close towards
/// Linux guests is unreliable), or call [`shutdown`](tokio::io::AsyncWriteExt::shutdown)
/// explicitly.
#[derive(Debug)]
pub struct OwnedWriteHalf {
    /// `None` only while being dropped.
    kind: Option<WriteKind>,
}

impl Drop for OwnedWriteHalf {
    fn drop(&mut self) {
        // tokio's halves shut the write direction down when dropped; `forget` leaves the
        // closing to the read half.
        match self.kind.take() {
            Some(WriteKind::Tcp(w)) => w.forget(),
            Some(WriteKind::Unix(w)) => sys::unix_forget(w),
            Some(WriteKind::Hv(w)) => sys::hv_forget(w),
            Some(WriteKind::Vsock(_)) | None => {}
        }
    }
}

#[derive(Debug)]
enum WriteKind {
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    Unix(sys::UnixWriteHalf),
    Vsock(sys::VsockWriteHalf),
    Hv(sys::HvWriteHalf),
}

impl Stream {
    pub(crate) fn tcp(stream: TcpStream) -> io::Result<Self> {
        // RPC frames are small and latency matters more than packet count.
        stream.set_nodelay(true)?;
        let peer = PeerAddr::Tcp(stream.peer_addr()?);
        Ok(Self {
            kind: Kind::Tcp(stream),
            peer,
        })
    }

    pub(crate) fn unix(stream: sys::UnixSocketStream, peer: PeerAddr) -> Self {
        Self {
            kind: Kind::Unix(stream),
            peer,
        }
    }

    pub(crate) fn vsock(stream: sys::VsockStream, peer: crate::VsockAddr) -> Self {
        Self {
            kind: Kind::Vsock(stream),
            peer: PeerAddr::Vsock(peer),
        }
    }

    pub(crate) fn hv(stream: sys::HvStream, peer: crate::HvSocketAddr) -> Self {
        Self {
            kind: Kind::Hv(stream),
            peer: PeerAddr::HvSocket(peer),
        }
    }

    /// The address of the other end.
    pub fn peer_addr(&self) -> &PeerAddr {
        &self.peer
    }

    /// Splits the stream into a read half and a write half that can be used from different
    /// tasks. No locking is involved.
    #[allow(
        unreachable_code,
        reason = "the variants of socket families this platform lacks hold an uninhabited type"
    )]
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        let (r, w) = match self.kind {
            Kind::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadKind::Tcp(r), WriteKind::Tcp(w))
            }
            Kind::Unix(s) => {
                let (r, w) = s.into_split();
                (ReadKind::Unix(r), WriteKind::Unix(w))
            }
            Kind::Vsock(s) => {
                let (r, w) = s.into_split();
                (ReadKind::Vsock(r), WriteKind::Vsock(w))
            }
            Kind::Hv(s) => {
                let (r, w) = s.into_split();
                (ReadKind::Hv(r), WriteKind::Hv(w))
            }
        };
        (OwnedReadHalf { kind: r }, OwnedWriteHalf { kind: Some(w) })
    }
}

/// Forwards a poll call to whichever variant is inside.
macro_rules! dispatch {
    ($value:expr, $enum:ident, $s:ident => $body:expr) => {
        match $value {
            $enum::Tcp($s) => $body,
            $enum::Unix($s) => $body,
            $enum::Vsock($s) => $body,
            $enum::Hv($s) => $body,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        dispatch!(&mut self.kind, Kind, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        dispatch!(&mut self.kind, Kind, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        dispatch!(&mut self.kind, Kind, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        dispatch!(&self.kind, Kind, s => s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(&mut self.kind, Kind, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(&mut self.kind, Kind, s => Pin::new(s).poll_shutdown(cx))
    }
}

impl AsyncRead for OwnedReadHalf {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        dispatch!(&mut self.kind, ReadKind, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl OwnedWriteHalf {
    fn kind(&mut self) -> io::Result<&mut WriteKind> {
        self.kind
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "the write half is gone"))
    }
}

impl AsyncWrite for OwnedWriteHalf {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let kind = self.kind()?;
        dispatch!(kind, WriteKind, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let kind = self.kind()?;
        dispatch!(kind, WriteKind, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.kind {
            Some(kind) => dispatch!(kind, WriteKind, s => s.is_write_vectored()),
            None => false,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let kind = self.kind()?;
        dispatch!(kind, WriteKind, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let kind = self.kind()?;
        dispatch!(kind, WriteKind, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// A listener on any hvrpc transport.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use hvrpc_transport::{Endpoint, Listener};
///
/// // A Linux guest agent: accept the host (and anyone else) on vsock port 0x4856.
/// let listener = Listener::bind(&"vsock://any:0x4856".parse().unwrap()).await?;
/// loop {
///     let (stream, peer) = listener.accept().await?;
///     println!("connection from {peer}");
///     # drop(stream);
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Listener {
    kind: ListenerKind,
    local: Endpoint,
}

#[derive(Debug)]
enum ListenerKind {
    Tcp(TcpListener),
    Unix(sys::UnixSocketListener),
    Hybrid(sys::UnixSocketListener, HybridVsockAddr),
    Vsock(sys::VsockListener),
    Hv(sys::HvListener),
}

impl Listener {
    /// Binds a listener with default socket options.
    pub async fn bind(endpoint: &Endpoint) -> io::Result<Self> {
        Self::bind_with(endpoint, &SocketOptions::default()).await
    }

    /// Binds a listener.
    ///
    /// | endpoint | listens on |
    /// |---|---|
    /// | `hvsock://<vm>/<service>` | `AF_HYPERV` (Windows); `<vm>` is usually [`VmId::WILDCARD`](crate::VmId::WILDCARD), [`VmId::CHILDREN`](crate::VmId::CHILDREN) or, in a VM, [`VmId::PARENT`](crate::VmId::PARENT) |
    /// | `vsock://<cid>:<port>` | `AF_VSOCK` (Linux); `<cid>` is usually `any` |
    /// | `parent://<port>` | connections from the parent: `hvsock://parent/<port>` on Windows, `vsock://any:<port>` on Linux |
    /// | `hybrid-vsock://<path>:<port>` | guest-initiated connections to host port `<port>`: the Unix socket `<path>_<port>` |
    /// | `unix://<path>`, `tcp://<ip>:<port>` | as named |
    ///
    /// A stale Unix socket file (left by a process that died) is replaced; one that somebody
    /// still listens on is an `AddrInUse` error.
    pub async fn bind_with(endpoint: &Endpoint, opts: &SocketOptions) -> io::Result<Self> {
        let (kind, local) = match endpoint {
            Endpoint::Tcp(addr) => {
                let l = TcpListener::bind(addr).await?;
                let local = Endpoint::Tcp(l.local_addr()?);
                (ListenerKind::Tcp(l), local)
            }
            Endpoint::Unix(path) => (ListenerKind::Unix(sys::unix_bind(path)?), endpoint.clone()),
            Endpoint::HybridVsock(addr) => (
                ListenerKind::Hybrid(sys::unix_bind(&addr.listener_path())?, addr.clone()),
                endpoint.clone(),
            ),
            Endpoint::Vsock(addr) => {
                let l = sys::vsock_bind(*addr, opts)?;
                let local = Endpoint::Vsock(l.local_addr()?);
                (ListenerKind::Vsock(l), local)
            }
            Endpoint::HvSocket(addr) => {
                let l = sys::hv_bind(*addr, opts)?;
                let local = Endpoint::HvSocket(l.local_addr()?);
                (ListenerKind::Hv(l), local)
            }
            Endpoint::Parent(service) => {
                let resolved = sys::parent_listen_endpoint(*service)?;
                return Box::pin(Self::bind_with(&resolved, opts)).await;
            }
        };
        tracing::debug!(endpoint = %local, "listening");
        Ok(Self { kind, local })
    }

    /// The endpoint this listener is bound to, with any "any port" resolved to the real one.
    pub fn local_endpoint(&self) -> &Endpoint {
        &self.local
    }

    /// The listener's connections as a stream (for tonic's `serve_with_incoming` and other
    /// servers that take one): accept errors are ridden out, never yielded — see [`Incoming`].
    ///
    /// [`Incoming`]: crate::Incoming
    pub fn incoming(self) -> crate::Incoming {
        crate::Incoming::new(self)
    }

    /// Waits for the next connection and returns it with its peer's address: the peer's VM id
    /// (Hyper-V sockets) or CID (vsock), even when the listener is bound to a wildcard.
    pub async fn accept(&self) -> io::Result<(Stream, PeerAddr)> {
        let stream = match &self.kind {
            ListenerKind::Tcp(l) => Stream::tcp(l.accept().await?.0)?,
            ListenerKind::Unix(l) => {
                let (s, path) = sys::unix_accept(l).await?;
                Stream::unix(s, PeerAddr::Unix(path))
            }
            ListenerKind::Hybrid(l, addr) => {
                let (s, _) = sys::unix_accept(l).await?;
                Stream::unix(s, PeerAddr::HybridVsock(addr.clone()))
            }
            ListenerKind::Vsock(l) => {
                let (s, peer) = l.accept().await?;
                Stream::vsock(s, peer)
            }
            ListenerKind::Hv(l) => {
                let (s, peer) = l.accept().await?;
                Stream::hv(s, peer)
            }
        };
        let peer = stream.peer_addr().clone();
        Ok((stream, peer))
    }
}
