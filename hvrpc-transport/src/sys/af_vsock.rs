//! Linux `AF_VSOCK` sockets: socket2 for the system calls, tokio's `AsyncFd` for readiness.
#![allow(
    unsafe_code,
    reason = "recv into uninitialized buffers, setsockopt and ioctl have no safe wrapper"
)]

use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::addr::VsockAddr;
use crate::options::SocketOptions;

/// `AF_VSOCK` socket option level.
const AF_VSOCK: libc::c_int = 40;
/// `SO_VM_SOCKETS_BUFFER_SIZE` (u64).
const SO_VM_SOCKETS_BUFFER_SIZE: libc::c_int = 0;
/// `SO_VM_SOCKETS_BUFFER_MAX_SIZE` (u64).
const SO_VM_SOCKETS_BUFFER_MAX_SIZE: libc::c_int = 2;
/// `SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD` (struct timeval; 64-bit on 64-bit targets).
const SO_VM_SOCKETS_CONNECT_TIMEOUT: libc::c_int = 6;
/// `IOCTL_VM_SOCKETS_GET_LOCAL_CID` on `/dev/vsock`.
const IOCTL_VM_SOCKETS_GET_LOCAL_CID: libc::c_ulong = 0x7b9;
/// Listen backlog.
const BACKLOG: libc::c_int = 128;

fn setsockopt<T>(
    socket: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(size_of::<T>())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "socket option too large"))?;
    // SAFETY: the descriptor is open for the duration of the call (borrowed from `socket`), and
    // `value` points to a live, initialized `T` of exactly `len` bytes that the kernel only reads.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (value as *const T).cast::<libc::c_void>(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn new_socket(opts: &SocketOptions) -> io::Result<Socket> {
    // socket2 sets SOCK_CLOEXEC on Linux.
    let socket = Socket::new(Domain::VSOCK, Type::STREAM.nonblocking(), None).map_err(|e| {
        if e.raw_os_error() == Some(libc::EAFNOSUPPORT) {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "vsock sockets are not available on this system (AF_VSOCK is not supported: \
                 load the vsock kernel modules, e.g. hv_sock or vmw_vsock_virtio_transport)",
            )
        } else {
            e
        }
    })?;
    if let Some(size) = opts.buffer_size {
        // hv_sock sizes its ring buffers from SO_SNDBUF/SO_RCVBUF; virtio and loopback use
        // SO_VM_SOCKETS_BUFFER_SIZE. Both must be set before connect()/listen().
        socket.set_send_buffer_size(size)?;
        socket.set_recv_buffer_size(size)?;
        let size = size as u64;
        setsockopt(&socket, AF_VSOCK, SO_VM_SOCKETS_BUFFER_MAX_SIZE, &size)?;
        setsockopt(&socket, AF_VSOCK, SO_VM_SOCKETS_BUFFER_SIZE, &size)?;
    }
    Ok(socket)
}

/// A connected vsock stream. Cloning the inner `Arc` is how the halves share the socket.
#[derive(Debug)]
pub(crate) struct VsockStream {
    fd: Arc<AsyncFd<Socket>>,
}

/// The read half of a [`VsockStream`].
#[derive(Debug)]
pub(crate) struct VsockReadHalf {
    fd: Arc<AsyncFd<Socket>>,
}

/// The write half of a [`VsockStream`].
#[derive(Debug)]
pub(crate) struct VsockWriteHalf {
    fd: Arc<AsyncFd<Socket>>,
}

/// Registers a socket with tokio's reactor.
fn register(socket: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: `Socket` owns its descriptor: it stays open, and `as_raw_fd` returns the same
    // descriptor, until the `Socket` (here owned by the `AsyncFd`) is dropped.
    Ok(unsafe { AsyncFd::register(socket) }?)
}

impl VsockStream {
    fn new(socket: Socket) -> io::Result<Self> {
        Ok(Self {
            fd: Arc::new(register(socket)?),
        })
    }

    pub(crate) fn into_split(self) -> (VsockReadHalf, VsockWriteHalf) {
        (
            VsockReadHalf {
                fd: Arc::clone(&self.fd),
            },
            VsockWriteHalf { fd: self.fd },
        )
    }
}

fn poll_read(
    fd: &AsyncFd<Socket>,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    loop {
        let mut guard = ready!(fd.poll_read_ready(cx))?;
        // SAFETY: `recv` only writes initialized bytes into the slice and never de-initializes
        // any; we mark exactly the `n` bytes it reports as initialized and filled.
        let unfilled: &mut [MaybeUninit<u8>] = unsafe { buf.unfilled_mut() };
        match guard.try_io(|inner| inner.get_ref().recv(unfilled)) {
            Ok(Ok(n)) => {
                // SAFETY: the kernel initialized the first `n` bytes of the unfilled part.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            Ok(Err(e)) => return Poll::Ready(Err(e)),
            Err(_would_block) => continue,
        }
    }
}

fn poll_write(fd: &AsyncFd<Socket>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
    loop {
        let mut guard = ready!(fd.poll_write_ready(cx))?;
        match guard.try_io(|inner| inner.get_ref().send_with_flags(buf, libc::MSG_NOSIGNAL)) {
            Ok(result) => return Poll::Ready(result),
            Err(_would_block) => continue,
        }
    }
}

/// One `sendmsg` of several buffers: the RPC layer writes a batch of frames at once.
fn poll_write_vectored(
    fd: &AsyncFd<Socket>,
    cx: &mut Context<'_>,
    bufs: &[io::IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    loop {
        let mut guard = ready!(fd.poll_write_ready(cx))?;
        match guard.try_io(|inner| {
            inner
                .get_ref()
                .send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL)
        }) {
            Ok(result) => return Poll::Ready(result),
            Err(_would_block) => continue,
        }
    }
}

fn shutdown_write(fd: &AsyncFd<Socket>) -> Poll<io::Result<()>> {
    Poll::Ready(match fd.get_ref().shutdown(std::net::Shutdown::Write) {
        // Already closed by the peer: nothing left to shut down.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        other => other,
    })
}

macro_rules! impl_read {
    ($t:ty) => {
        impl AsyncRead for $t {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                poll_read(&self.fd, cx, buf)
            }
        }
    };
}

macro_rules! impl_write {
    ($t:ty) => {
        impl AsyncWrite for $t {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                poll_write(&self.fd, cx, buf)
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                poll_write_vectored(&self.fd, cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }

            fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                shutdown_write(&self.fd)
            }
        }
    };
}

impl_read!(VsockStream);
impl_read!(VsockReadHalf);
impl_write!(VsockStream);
impl_write!(VsockWriteHalf);

fn vsock_addr_of(addr: &SockAddr) -> io::Result<VsockAddr> {
    addr.as_vsock_address()
        .map(|(cid, port)| VsockAddr::new(cid, port))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "peer address is not a vsock address",
            )
        })
}

/// The longest connect timeout the kernel takes: it refuses (`ERANGE`) seconds from
/// `MAX_SCHEDULE_TIMEOUT / HZ - 1` on, which on 32-bit kernels with `HZ` = 1000 is 2 147 482.
/// The caller's own timer bounds longer waits.
const MAX_CONNECT_TIMEOUT_SECS: u64 = 2_000_000;

/// `timeout` as the `timeval` of `SO_VM_SOCKETS_CONNECT_TIMEOUT`, clamped to what every
/// kernel accepts.
fn connect_timeout(timeout: Duration) -> libc::timeval {
    let clamped = timeout.min(Duration::from_secs(MAX_CONNECT_TIMEOUT_SECS));
    libc::timeval {
        // At most MAX_CONNECT_TIMEOUT_SECS, which fits every time_t.
        tv_sec: clamped.as_secs() as libc::time_t,
        // Always below 1_000_000, so it fits every suseconds_t.
        tv_usec: clamped.subsec_micros() as libc::suseconds_t,
    }
}

/// Connects to `addr`. The caller bounds the wait with its own timeout; the kernel's vsock
/// connect timeout (2 s by default) is raised to `timeout` so it does not cut the wait short.
pub(crate) async fn connect(
    addr: VsockAddr,
    opts: &SocketOptions,
    timeout: Duration,
) -> io::Result<VsockStream> {
    let socket = new_socket(opts)?;
    setsockopt(
        &socket,
        AF_VSOCK,
        SO_VM_SOCKETS_CONNECT_TIMEOUT,
        &connect_timeout(timeout),
    )?;
    match socket.connect(&SockAddr::vsock(addr.cid, addr.port)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = VsockStream::new(socket)?;
    loop {
        let mut guard = stream.fd.writable().await?;
        if let Some(e) = stream.fd.get_ref().take_error()? {
            return Err(e);
        }
        match stream.fd.get_ref().peer_addr() {
            Ok(_) => return Ok(stream),
            // Woken before the connection finished: wait for the next readiness change.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => guard.clear_ready(),
            Err(e) => return Err(e),
        }
    }
}

/// A vsock listener.
#[derive(Debug)]
pub(crate) struct VsockListener {
    fd: AsyncFd<Socket>,
}

impl VsockListener {
    pub(crate) fn bind(addr: VsockAddr, opts: &SocketOptions) -> io::Result<Self> {
        let socket = new_socket(opts)?;
        socket.bind(&SockAddr::vsock(addr.cid, addr.port))?;
        socket.listen(BACKLOG)?;
        Ok(Self {
            fd: register(socket)?,
        })
    }

    pub(crate) fn local_addr(&self) -> io::Result<VsockAddr> {
        vsock_addr_of(&self.fd.get_ref().local_addr()?)
    }

    pub(crate) async fn accept(&self) -> io::Result<(VsockStream, VsockAddr)> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|inner| inner.get_ref().accept()) {
                Ok(Ok((socket, addr))) => {
                    socket.set_nonblocking(true)?;
                    let peer = vsock_addr_of(&addr)?;
                    return Ok((VsockStream::new(socket)?, peer));
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// This machine's own CID, from `IOCTL_VM_SOCKETS_GET_LOCAL_CID` on `/dev/vsock`.
pub(crate) fn local_cid() -> io::Result<u32> {
    let dev = File::open("/dev/vsock").map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot open /dev/vsock to read the local CID: {e} (are the vsock modules loaded?)"
            ),
        )
    })?;
    let mut cid: u32 = 0;
    // SAFETY: the descriptor is open for the call, and this ioctl writes one u32 to the
    // pointer, which points to a live local.
    let rc = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            IOCTL_VM_SOCKETS_GET_LOCAL_CID as _,
            &mut cid as *mut u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_timeouts_are_clamped_to_what_the_kernel_takes() {
        let tv = connect_timeout(Duration::MAX);
        assert_eq!(tv.tv_sec, MAX_CONNECT_TIMEOUT_SECS as libc::time_t);
        assert_eq!(tv.tv_usec, 0);
        let tv = connect_timeout(Duration::from_millis(2500));
        assert_eq!((tv.tv_sec, tv.tv_usec), (2, 500_000));
    }
}
