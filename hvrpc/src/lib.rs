//! hvrpc: RPC between a Hyper-V host and its VMs (and between a VM and its containers) over
//! Hyper-V sockets (`AF_HYPERV` on Windows, `AF_VSOCK` in Linux guests).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod client;
mod config;
mod connection;
mod error;
mod protocol;
mod server;
mod service;
mod streaming;

pub use client::{CallOptions, Channel, Connector};
pub use config::Config;
pub use connection::Connection;
pub use error::{Error, ErrorCode};
pub use protocol::{PROTOCOL_VERSION, ServiceInfo};
pub use server::Server;
pub use service::{Context, Service, ServiceDef};
pub use streaming::{StreamClosed, StreamSender, Streaming};

pub use hvrpc_macros::service;

/// The transport layer: addresses, listeners, streams, framing.
pub use hvrpc_transport as transport;
pub use hvrpc_transport::{Endpoint, PeerAddr, ServiceId, VmId, VsockAddr};

/// What generated code uses. Not a public API: it changes without notice.
#[doc(hidden)]
pub mod __private {
    pub use crate::client::{CallOptions, Channel, Connector, call_streaming, call_unary};
    pub use crate::error::{Error, ErrorCode};
    pub use crate::service::{Body, Context, Handler, Service, ServiceDef};
    pub use crate::streaming::Streaming;
    pub use bytes::Bytes;
    pub use hvrpc_transport::{Endpoint, ServiceId};
    pub use serde;
    pub use std::string::String;
    pub use std::time::Duration;

    /// Decodes a request's arguments, or says why not.
    pub fn decode_args<T: serde::de::DeserializeOwned>(
        service: &str,
        method: &str,
        bytes: &[u8],
    ) -> Result<T, (ErrorCode, String)> {
        crate::protocol::decode_exact(bytes).map_err(|e| {
            (
                ErrorCode::BadRequest,
                format!("cannot decode the arguments of {service}.{method}: {e}"),
            )
        })
    }

    /// The error for a method index the service does not have.
    pub fn unknown_method(service: &str, method: u32) -> (ErrorCode, String) {
        (
            ErrorCode::UnknownMethod,
            format!("{service} has no method with index {method}"),
        )
    }
}
