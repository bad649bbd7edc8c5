//! Transports for hvrpc: Hyper-V sockets (`AF_HYPERV`, Windows), vsock (`AF_VSOCK`, Linux
//! guests), hybrid vsock (a Linux/KVM host reaching Firecracker, Cloud Hypervisor or
//! vhost-user-vsock guests through a Unix socket), plus Unix sockets and TCP for development.
//!
//! * [`addr`]: [`VmId`], [`ServiceId`], [`VsockAddr`], [`HvSocketAddr`], [`HybridVsockAddr`] and
//!   the [`Endpoint`] that names any of them, with textual forms that round-trip
//!   (`hvsock://<vm>/<service>`, `vsock://<cid>:<port>`, …) and the well-known VM ids.
//! * [`Listener`] and [`connect_with`]: one async API over every transport, with timeouts,
//!   retries and socket options ([`ConnectOptions`]).
//! * [`Stream`]: `AsyncRead + AsyncWrite`, splittable into owned halves.
//! * [`framing`]: length-prefixed frames with a size limit enforced before allocation.
//!
//! # The ecosystem (cargo features, off by default)
//!
//! | feature | gives | for |
//! |---|---|---|
//! | `hyper` | `hyper::Connector` (a `tower_service::Service<Uri>`) and its `hyper::Io` | hyper 1.x / hyper-util 0.1 clients |
//! | `tonic` | `Connected` for [`Stream`] (connect info: the [`PeerAddr`]), plus `hyper` | tonic 0.14: `serve_with_incoming(listener.incoming())`, `connect_with_connector` |
//! | `axum` | `axum::serve::Listener` for [`Listener`], `ConnectInfo<PeerAddr>` | axum 0.8 |
//!
//! [`Listener::incoming`] (always there) turns a listener into the stream of connections
//! such servers take. These versions are the ones supported and tested here; a new major
//! version of any of them is a new feature of this crate.
//!
//! # Quick start
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use hvrpc_transport::{Endpoint, Listener, connect};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! // In production: "vsock://any:0x4856" in a Linux guest, "hvsock://wildcard/0x4856" on a
//! // Windows host. TCP on loopback works everywhere.
//! let listener = Listener::bind(&"tcp://127.0.0.1:0".parse().unwrap()).await?;
//! let endpoint: Endpoint = listener.local_endpoint().clone();
//!
//! let server = tokio::spawn(async move {
//!     let (mut stream, _peer) = listener.accept().await?;
//!     let mut buf = [0u8; 5];
//!     stream.read_exact(&mut buf).await?;
//!     stream.write_all(&buf).await?;
//!     std::io::Result::Ok(())
//! });
//!
//! let mut stream = connect(&endpoint).await?;
//! stream.write_all(b"hello").await?;
//! let mut buf = [0u8; 5];
//! stream.read_exact(&mut buf).await?;
//! assert_eq!(&buf, b"hello");
//! server.await.unwrap()?;
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod addr;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
mod connect;
pub mod discovery;
pub mod framing;
#[cfg(feature = "hyper")]
#[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
pub mod hyper;
mod incoming;
mod options;
pub mod registry;
mod stream;
mod sys;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod tonic;

pub use addr::{
    AddrParseError, Endpoint, HvSocketAddr, HybridVsockAddr, PeerAddr, ServiceId, VmId, VsockAddr,
};
pub use connect::{connect, connect_with, is_retryable};
pub use incoming::Incoming;
pub use options::{ConnectOptions, RetryPolicy, SocketOptions};
pub use stream::{Listener, OwnedReadHalf, OwnedWriteHalf, Stream};

/// This machine's vsock context id (CID), from `IOCTL_VM_SOCKETS_GET_LOCAL_CID` on
/// `/dev/vsock`. Linux only; inside a guest without a vsock device it is 1
/// ([`VsockAddr::LOCAL_CID`]).
pub fn vsock_local_cid() -> std::io::Result<u32> {
    sys::vsock_local_cid()
}
