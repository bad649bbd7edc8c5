//! Windows `AF_HYPERV` sockets.
//!
//! socket2 creates the sockets (overlapped, non-inheritable). tokio has no `AsyncFd` on Windows,
//! so a Hyper-V socket is handed to tokio as a `TcpStream` purely for readiness (mio polls it
//! through AFD like any socket) and for `read`/`write`; `accept` and `connect` completion are
//! done here with socket2. Nothing TCP-specific (`peer_addr`, `set_nodelay`) is ever called on
//! such a stream: the addresses are kept as [`HvSocketAddr`]s.
#![allow(
    unsafe_code,
    reason = "SOCKADDR_HV is built in socket2's raw storage and HVSOCKET_* options need setsockopt"
)]

use std::io;
use std::os::windows::io::AsRawSocket;

use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, SockRef, Socket, Type};
use tokio::io::Interest;
use tokio::net::TcpStream;
use windows_sys::Win32::Networking::WinSock::{
    AF_HYPERV, SOCKET, WSAEAFNOSUPPORT, WSAEPROTONOSUPPORT, WSAESOCKTNOSUPPORT, WSAEWOULDBLOCK,
    setsockopt,
};
use windows_sys::Win32::System::Hypervisor::{
    HV_PROTOCOL_RAW, HVSOCKET_CONNECT_TIMEOUT, HVSOCKET_CONNECT_TIMEOUT_MAX,
    HVSOCKET_CONNECTED_SUSPEND, SOCKADDR_HV,
};
use windows_sys::core::GUID;

use crate::addr::{HvSocketAddr, ServiceId, VmId};
use crate::options::SocketOptions;

/// Listen backlog.
const BACKLOG: i32 = 128;

/// The message for a system without Hyper-V sockets.
pub(crate) const UNAVAILABLE: &str = "Hyper-V sockets are not available on this system \
    (AF_HYPERV needs Windows 10 / Windows Server 2016 or later with Hyper-V)";

pub(crate) type HvStream = TcpStream;
pub(crate) type HvReadHalf = tokio::net::tcp::OwnedReadHalf;
pub(crate) type HvWriteHalf = tokio::net::tcp::OwnedWriteHalf;

fn guid_from(id: &uuid::Uuid) -> GUID {
    GUID::from_u128(id.as_u128())
}

fn u128_from(g: &GUID) -> u128 {
    (u128::from(g.data1) << 96)
        | (u128::from(g.data2) << 80)
        | (u128::from(g.data3) << 64)
        | u128::from(u64::from_be_bytes(g.data4))
}

/// Builds the socket2 address for `addr` from the Windows `SOCKADDR_HV` definition.
pub(crate) fn sockaddr(addr: &HvSocketAddr) -> SockAddr {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: SOCKADDR_HV (36 bytes, 4-byte aligned) fits in the 128-byte, 8-byte aligned
    // sockaddr_storage, and all-zero bytes are a valid SOCKADDR_HV.
    let hv = unsafe { storage.view_as::<SOCKADDR_HV>() };
    hv.Family = AF_HYPERV;
    hv.Reserved = 0;
    hv.VmId = guid_from(addr.vm_id.as_uuid());
    hv.ServiceId = guid_from(addr.service_id.as_uuid());
    let len = size_of::<SOCKADDR_HV>() as socket2::socklen_t;
    // SAFETY: the storage holds an initialized SOCKADDR_HV with family AF_HYPERV, and `len`
    // is its size.
    unsafe { SockAddr::new(storage, len) }
}

/// Reads a `SOCKADDR_HV` back from a socket2 address.
pub(crate) fn parse_sockaddr(addr: &SockAddr) -> io::Result<HvSocketAddr> {
    if addr.family() != AF_HYPERV || (addr.len() as usize) < size_of::<SOCKADDR_HV>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the peer address is not a Hyper-V socket address",
        ));
    }
    let mut storage = addr.clone().as_storage();
    // SAFETY: the family is AF_HYPERV and the length covers a whole SOCKADDR_HV, so the storage
    // holds an initialized SOCKADDR_HV.
    let hv = unsafe { storage.view_as::<SOCKADDR_HV>() };
    Ok(HvSocketAddr::new(
        VmId::from_u128(u128_from(&hv.VmId)),
        ServiceId::from_u128(u128_from(&hv.ServiceId)),
    ))
}

fn set_ulong_option(socket: &Socket, name: u32, value: u32) -> io::Result<()> {
    // SAFETY: the socket handle is open for the duration of the call, and `optval` points to a
    // live u32 whose size is passed as `optlen`; the call only reads it.
    let rc = unsafe {
        setsockopt(
            socket.as_raw_socket() as SOCKET,
            HV_PROTOCOL_RAW as i32,
            name as i32,
            (&value as *const u32).cast::<u8>(),
            size_of::<u32>() as i32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Maps "this address family does not exist here" to hvrpc's clear error.
pub(crate) fn map_create_error(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(WSAEAFNOSUPPORT | WSAEPROTONOSUPPORT | WSAESOCKTNOSUPPORT) => {
            io::Error::new(io::ErrorKind::Unsupported, UNAVAILABLE)
        }
        _ => e,
    }
}

fn new_socket(opts: &SocketOptions) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::from(i32::from(AF_HYPERV)),
        Type::STREAM,
        Some(Protocol::from(HV_PROTOCOL_RAW as i32)),
    )
    .map_err(map_create_error)?;
    if let Some(size) = opts.buffer_size {
        set_buffer_sizes(&socket, size);
    }
    if opts.hv_connected_suspend {
        set_ulong_option(&socket, HVSOCKET_CONNECTED_SUSPEND, 1)?;
    }
    Ok(socket)
}

/// `SO_SNDBUF`/`SO_RCVBUF` are not documented for `AF_HYPERV`: set them where the system
/// takes them, and never fail a bind or connect because it does not.
fn set_buffer_sizes(socket: &Socket, size: usize) {
    if let Err(e) = socket.set_send_buffer_size(size) {
        tracing::debug!(size, error = %e, "SO_SNDBUF not taken on a Hyper-V socket");
    }
    if let Err(e) = socket.set_recv_buffer_size(size) {
        tracing::debug!(size, error = %e, "SO_RCVBUF not taken on a Hyper-V socket");
    }
}

fn into_tokio(socket: Socket) -> io::Result<TcpStream> {
    socket.set_nonblocking(true)?;
    TcpStream::from_std(std::net::TcpStream::from(socket))
}

/// Connects to `addr`; the Hyper-V connect timeout is set to `timeout` (capped at the
/// platform's 300 s maximum) and the caller bounds the wait with the same timeout.
pub(crate) async fn connect(
    addr: HvSocketAddr,
    opts: &SocketOptions,
    timeout: std::time::Duration,
) -> io::Result<HvStream> {
    let socket = new_socket(opts)?;
    let ms = u32::try_from(timeout.as_millis())
        .unwrap_or(u32::MAX)
        .clamp(1, HVSOCKET_CONNECT_TIMEOUT_MAX);
    set_ulong_option(&socket, HVSOCKET_CONNECT_TIMEOUT, ms)?;
    socket.set_nonblocking(true)?;
    match socket.connect(&sockaddr(&addr)) {
        Ok(()) => {}
        Err(e)
            if e.raw_os_error() == Some(WSAEWOULDBLOCK)
                || e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    let stream = into_tokio(socket)?;
    stream.writable().await?;
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    Ok(stream)
}

/// A Hyper-V socket listener. The listening socket sits in a tokio `TcpStream` only so that
/// tokio reports its readiness (AFD reports pending connections as readable).
#[derive(Debug)]
pub(crate) struct HvListener {
    io: TcpStream,
    local: HvSocketAddr,
}

impl HvListener {
    pub(crate) fn bind(addr: HvSocketAddr, opts: &SocketOptions) -> io::Result<Self> {
        let socket = new_socket(opts)?;
        socket.bind(&sockaddr(&addr))?;
        socket.listen(BACKLOG)?;
        let local = socket
            .local_addr()
            .and_then(|a| parse_sockaddr(&a))
            .unwrap_or(addr);
        Ok(Self {
            io: into_tokio(socket)?,
            local,
        })
    }

    pub(crate) fn local_addr(&self) -> io::Result<HvSocketAddr> {
        Ok(self.local)
    }

    pub(crate) async fn accept(&self) -> io::Result<(HvStream, HvSocketAddr)> {
        loop {
            self.io.readable().await?;
            match self
                .io
                .try_io(Interest::READABLE, || SockRef::from(&self.io).accept())
            {
                Ok((socket, addr)) => {
                    let peer = parse_sockaddr(&addr)?;
                    return Ok((into_tokio(socket)?, peer));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use windows_sys::Win32::System::Hypervisor::{
        HV_GUID_BROADCAST, HV_GUID_CHILDREN, HV_GUID_LOOPBACK, HV_GUID_PARENT, HV_GUID_SILOHOST,
        HV_GUID_VSOCK_TEMPLATE, HV_GUID_ZERO,
    };

    #[test]
    fn well_known_ids_match_the_sdk() {
        for (ours, sdk) in [
            (VmId::WILDCARD, HV_GUID_ZERO),
            (VmId::BROADCAST, HV_GUID_BROADCAST),
            (VmId::CHILDREN, HV_GUID_CHILDREN),
            (VmId::LOOPBACK, HV_GUID_LOOPBACK),
            (VmId::PARENT, HV_GUID_PARENT),
            (VmId::SILOHOST, HV_GUID_SILOHOST),
        ] {
            assert_eq!(ours.as_uuid().as_u128(), u128_from(&sdk));
        }
        assert_eq!(
            ServiceId::VSOCK_TEMPLATE.as_uuid().as_u128(),
            u128_from(&HV_GUID_VSOCK_TEMPLATE)
        );
    }

    #[test]
    fn sockaddr_hv_matches_portable_bytes() {
        let addr = HvSocketAddr::new(VmId::PARENT, ServiceId::from_vsock_port(2761));
        let sa = sockaddr(&addr);
        assert_eq!(sa.len() as usize, 36);
        // SAFETY: `sa` holds `len` initialized bytes of address storage.
        let bytes =
            unsafe { std::slice::from_raw_parts(sa.as_ptr().cast::<u8>(), sa.len() as usize) };
        assert_eq!(bytes, &addr.to_sockaddr_bytes()[..]);
        assert_eq!(
            &bytes[20..36],
            &[
                0xc9, 0x0a, 0x00, 0x00, 0xcb, 0xfa, 0xe6, 0x11, 0xbd, 0x58, 0x64, 0x00, 0x6a, 0x79,
                0x86, 0xd3
            ]
        );
        assert_eq!(parse_sockaddr(&sa).unwrap(), addr);
    }

    #[test]
    fn create_errors_are_mapped() {
        for code in [WSAEAFNOSUPPORT, WSAEPROTONOSUPPORT, WSAESOCKTNOSUPPORT] {
            let e = map_create_error(io::Error::from_raw_os_error(code));
            assert_eq!(e.kind(), io::ErrorKind::Unsupported);
            assert_eq!(e.to_string(), UNAVAILABLE);
        }
        let other = map_create_error(io::Error::from_raw_os_error(10055));
        assert_eq!(other.raw_os_error(), Some(10055));
    }

    /// Reliability #14: a buffer size the socket refuses is logged, not fatal. (A TCP socket
    /// stands in: Wine has no AF_HYPERV.)
    #[test]
    fn refused_buffer_sizes_are_not_fatal() {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let refused = socket.set_send_buffer_size(usize::MAX).is_err();
        println!("SO_SNDBUF of usize::MAX refused by this system: {refused}");
        set_buffer_sizes(&socket, usize::MAX);
        set_buffer_sizes(&socket, 256 * 1024);
        assert!(socket.send_buffer_size().unwrap() > 0);
    }

    #[test]
    fn missing_hyperv_gives_clear_error() {
        // Under Wine (and on Windows without Hyper-V) socket() fails with WSAEAFNOSUPPORT.
        match new_socket(&SocketOptions::default()) {
            // CI's Wine run sets HVRPC_EXPECT_NO_HYPERV: there the socket must fail.
            Ok(_) if std::env::var_os("HVRPC_EXPECT_NO_HYPERV").is_some() => {
                panic!("AF_HYPERV socket() succeeded where no Hyper-V exists")
            }
            Ok(_) => eprintln!("this system has Hyper-V sockets; nothing to check"),
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{e}");
                assert!(
                    e.to_string()
                        .starts_with("Hyper-V sockets are not available on this system"),
                    "{e}"
                );
            }
        }
    }
}
