//! [`axum`] 0.8 over every hvrpc transport (feature `axum`): [`Listener`] is an
//! `axum::serve::Listener` whose address type is [`PeerAddr`], and `ConnectInfo<PeerAddr>`
//! gives a handler the VM id, CID or VMM socket of its caller.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use axum::extract::ConnectInfo;
//! use axum::routing::get;
//! use hvrpc_transport::{Listener, PeerAddr};
//!
//! async fn health(ConnectInfo(peer): ConnectInfo<PeerAddr>) -> String {
//!     format!("ok, {peer}")
//! }
//!
//! // A Linux guest: the host's tools reach it on vsock port 0x5000.
//! let listener = Listener::bind(&"vsock://any:0x5000".parse().unwrap()).await?;
//! let app = axum::Router::new().route("/health", get(health));
//! axum::serve(listener, app.into_make_service_with_connect_info::<PeerAddr>()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Accept errors never end `axum::serve`: a connection that died in the backlog is skipped,
//! any other error (out of descriptors) is logged and accepting pauses briefly.

use std::io;

use ::axum::extract::connect_info::Connected;
use ::axum::serve::IncomingStream;

use crate::addr::{Endpoint, PeerAddr};
use crate::stream::{Listener, Stream};

impl ::axum::serve::Listener for Listener {
    type Io = Stream;
    type Addr = PeerAddr;

    async fn accept(&mut self) -> (Stream, PeerAddr) {
        crate::incoming::accept_next(self).await
    }

    /// The listener's own endpoint, in the form of a peer address (`Endpoint::Parent` never
    /// appears here: binding resolves it).
    fn local_addr(&self) -> io::Result<PeerAddr> {
        Ok(match self.local_endpoint().clone() {
            Endpoint::HvSocket(a) => PeerAddr::HvSocket(a),
            Endpoint::Vsock(a) => PeerAddr::Vsock(a),
            Endpoint::HybridVsock(a) => PeerAddr::HybridVsock(a),
            Endpoint::Unix(path) => PeerAddr::Unix(Some(path)),
            Endpoint::Tcp(a) => PeerAddr::Tcp(a),
            e @ Endpoint::Parent(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("{e} has no address of its own"),
                ));
            }
        })
    }
}

impl Connected<IncomingStream<'_, Listener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, Listener>) -> Self {
        stream.remote_addr().clone()
    }
}
