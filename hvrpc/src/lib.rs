//! hvrpc: RPC between a Hyper-V host and its VMs (and between a VM and its containers) over
//! Hyper-V sockets (`AF_HYPERV` on Windows, `AF_VSOCK` in Linux guests).
//!
//! Define a service as a trait with [`service`]; implement the generated server trait; serve it
//! with a [`Server`]; call it with the generated client.
//!
//! # Quick start
//!
//! ```
//! use hvrpc::{Context, Server};
//!
//! /// What a guest agent tells its host.
//! #[hvrpc::service(port = 0x4856)]
//! pub trait GuestInfo {
//!     /// The guest's host name.
//!     async fn hostname() -> String;
//!     /// Reads a file, or says why not.
//!     async fn read_file(path: String, max: u64) -> Result<Vec<u8>, String>;
//! }
//!
//! struct Agent;
//!
//! impl GuestInfo for Agent {
//!     async fn hostname(&self, _ctx: Context) -> String {
//!         "guest-1".into()
//!     }
//!     async fn read_file(&self, _ctx: Context, path: String, _max: u64) -> Result<Vec<u8>, String> {
//!         Err(format!("{path}: not allowed"))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // In a Linux guest the agent would serve `vsock://any:0x4856` and a Windows host would reach
//! // it as `hvsock://<vm-id>/0x4856`; TCP on loopback runs anywhere.
//! let listener = hvrpc::transport::Listener::bind(&"tcp://127.0.0.1:0".parse()?).await?;
//! let endpoint = listener.local_endpoint().clone();
//! let server = Server::new().add_service(GuestInfoServer::new(Agent));
//! tokio::spawn(server.serve_with_shutdown(listener, std::future::pending()));
//!
//! let guest = GuestInfoClient::connect(&endpoint).await?;
//! assert_eq!(guest.hostname().await?, "guest-1");
//! match guest.read_file("/etc/shadow".into(), 4096).await {
//!     Err(hvrpc::Error::Application(why)) => assert_eq!(why, "/etc/shadow: not allowed"),
//!     other => panic!("{other:?}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # What you get
//!
//! * One connection carries many concurrent calls; responses arrive in any order; reading never
//!   waits for writing.
//! * Deadlines travel as relative durations; dropping a call's future cancels it on the server.
//! * Streams both ways ([`Streaming`]): server, client (a `Streaming<T>` argument) and
//!   bidirectional, each direction with credit-based flow control; values larger than a frame
//!   travel in parts that interleave with other calls.
//! * Mixed releases keep working: methods are matched by name at the handshake and compatible
//!   schema differences are translated; an incompatible method fails alone, naming the path.
//! * Either end may serve and call: a guest that dials its host can be called back
//!   ([`Connector::serve`], [`Server::on_connection`]).
//! * Limits on frames, concurrent calls, connections and idle time; keepalive; graceful
//!   shutdown; reconnecting clients ([`Channel`]).
//!
//! The wire protocol is specified in `docs/PROTOCOL.md`.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod body;
mod channel;
mod client;
mod config;
mod connection;
mod connector;
pub mod discover;
mod engine;
mod error;
pub mod intercept;
#[cfg(feature = "json")]
pub mod json;
mod link;
mod protocol;
pub mod reflection;
pub mod schema;
mod server;
mod service;
mod skew;
mod streaming;
mod wire_bytes;

pub use channel::Channel;
pub use client::CallOptions;
pub use config::Config;
pub use connection::Connection;
pub use connector::Connector;
pub use error::{Error, ErrorCode};
pub use protocol::{MethodDesc, PROTOCOL_VERSION, ServiceDesc};
pub use server::Server;
pub use service::{Client, Context, Service, ServiceDef};
pub use streaming::{RawStreaming, StreamClosed, StreamSender, Streaming, TypedStreaming};

/// Defines a service: `#[hvrpc::service(port = 0x4856)] pub trait GuestInfo { … }`.
///
/// # Options
///
/// * `port = N` — the service's vsock port; on Hyper-V its service id is the vsock template
///   GUID for `N` (`NNNNNNNN-facb-11e6-bd58-64006a7986d3`). Reaches Linux and Windows guests.
/// * `id = "GUID"` — an explicit Hyper-V service id. **Windows only**: Linux guests reach only
///   port-based services.
/// * `name = "…"` — the name announced in the handshake (default: the trait's name).
/// * `crate = "path"` — where the runtime is, when `hvrpc` is renamed or re-exported.
///
/// Exactly one of `port` and `id` is required.
///
/// # Methods
///
/// Every item is an `async fn` without `self`, generics or patterns; arguments are owned
/// serde types. A method may return `T`, `Result<T, E>` (the error travels typed),
/// `hvrpc::Streaming<T>` (server streaming) or `hvrpc::Streaming<Result<T, E>>` (a stream that
/// may end with the method's own error). Methods are matched by name between the two sides:
/// their order does not matter (see *Evolving a service*).
///
/// Byte strings: arguments and results declared `Vec<u8>` or [`Bytes`] are encoded in one
/// piece (not byte by byte); declared as the *last* argument or as the result they are written
/// without being copied into the frame, and a received [`Bytes`] is a view of the received
/// frame. Use [`Bytes`] for bulk data. (The macro recognises these types by name: a type of
/// your own called `Bytes` is refused with an error naming `ByteString`.)
///
/// # What it generates, for `trait GuestInfo`
///
/// * `trait GuestInfo`: the server side. Each method gains `&self` and a [`Context`] and returns
///   a `Send` future: implement it with `async fn`. A handler that finishes without waiting is
///   answered by the connection's dispatcher task (no task of its own, which is what makes
///   small calls cheap); one that waits moves to a task of its own. Handlers never run on the
///   task that reads the connection, so keepalive and deadlines go on whatever they do; a
///   handler that blocks its thread holds up only the calls queued behind it on the same
///   connection, for a few milliseconds, until the connection moves them to a new dispatcher.
///   Mark a method that does blocking work (file I/O, running a process, a long computation)
///   `#[hvrpc(blocking)]`: it then runs on a thread meant for blocking work
///   (`tokio::task::spawn_blocking`) and costs no runtime worker at all — even a
///   single-threaded runtime stays responsive.
/// * `GuestInfoServer<HvrpcImpl>`: wraps an implementation for [`Server::add_service`] (or
///   [`Connector::serve`]).
/// * `GuestInfoClient`: one async method per RPC returning `Result<T, hvrpc::Error>`
///   (`Result<T, hvrpc::Error<E>>` for methods with their own error type `E`; a stream of
///   `Result<T, E>` items arrives as a [`TypedStreaming`] whose error item is typed and ends
///   the stream), plus `connect`,
///   `connect_with`, `connect_parent`, `new`, `with_timeout`, `with_options`, `channel`, and
///   `peer_supports("method")`, which says whether the connected peer serves that method in
///   a form this side can call (see *Evolving a service* below).
/// * [`ServiceDef`] for both, with `NAME`, `ID`, `METHODS` and `spec()` — the methods' schemas,
///   traced from their types' serde implementations ([`schema`]).
///
/// Method names that collide with the generated client's own methods (`connect`, `new`,
/// `channel`, `clone`, `peer_supports`, …) are rejected with an error naming the method.
///
/// # Evolving a service
///
/// Peers built from different releases of a service interoperate method by method: methods are
/// matched by *name* at the handshake (reordering, inserting, appending or removing methods is
/// fine), and each method's argument and result types are compared by their exact schema.
/// Compatible changes — a struct field added with `#[serde(default)]`, an `Option` field added,
/// a field the reader does not know removed, an enum variant added (as long as the older side
/// never receives it), a renamed method argument — are translated at the edge of the
/// connection; both sides of the same release pay nothing per call. A method whose types
/// changed incompatibly fails alone with [`Error::Incompatible`] naming the first differing
/// path (`Agent.stat: result.size: string here, u64 on the peer`); a method the peer does not
/// have fails with [`Error::Unimplemented`]. Nothing is refused at the handshake unless the
/// client asks for it with [`Connector::require`]. `docs/PROTOCOL.md` §6 lists the rules.
///
/// A method may sit behind `#[cfg(...)]`: builds without it simply do not announce it.
/// A `Result` spelled through an alias (`type AgentResult<T> = Result<T, AgentError>`) is
/// marked `#[hvrpc(result)]` on the method, so that its error still travels typed.
pub use hvrpc_macros::service;

/// The transport layer: addresses, listeners, streams, framing.
pub use hvrpc_transport as transport;
pub use hvrpc_transport::{Endpoint, PeerAddr, ServiceId, VmId, VsockAddr};

/// Cheaply cloneable bytes (from the `bytes` crate, with serde support): the zero-copy type for
/// byte-string arguments and results.
pub use bytes::Bytes;

/// What generated code uses. Not a public API: it changes without notice.
#[doc(hidden)]
pub mod __private {
    pub use crate::body::Body;
    pub use crate::channel::Channel;
    pub use crate::client::{
        CallOptions, call_bidi, call_client_stream, call_streaming, call_unary, call_unary_bytes,
        encode_bytes_item, encode_item,
    };
    pub use crate::connector::Connector;
    pub use crate::error::{Error, ErrorCode};
    pub use crate::schema::{
        MethodDef, MethodKind, Reading, ServiceSpec, SpecCell, retranslate, trace_method,
    };
    pub use crate::service::{Client, Context, Handler, Service, ServiceDef, input_stream};
    pub use crate::streaming::{Streaming, TypedStreaming, end_at_error};
    pub use crate::wire_bytes::{AsBytes, ByteSlice, ByteString};
    pub use bytes::Bytes;
    pub use hvrpc_transport::{Endpoint, ServiceId};
    pub use serde;
    pub use std::string::String;
    pub use std::time::Duration;

    /// Decodes a request's arguments, or says why not.
    pub fn decode_args<'a, T: serde::Deserialize<'a>>(
        service: &str,
        method: &str,
        bytes: &'a [u8],
    ) -> Result<T, (ErrorCode, String)> {
        crate::protocol::decode_exact(bytes).map_err(|e| {
            (
                ErrorCode::BadRequest,
                format!("cannot decode the arguments of {service}.{method}: {e}"),
            )
        })
    }

    /// What every argument, result and stream item is: serde both ways.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot travel in an hvrpc call: it needs serde's `Serialize` and `Deserialize`",
        label = "an argument or result type without serde's traits",
        note = "derive them on it: `#[derive(serde::Serialize, serde::Deserialize)]`"
    )]
    pub trait WireType: serde::Serialize + serde::de::DeserializeOwned {}
    #[diagnostic::do_not_recommend]
    impl<T: serde::Serialize + serde::de::DeserializeOwned> WireType for T {}

    /// Checks, where the macro calls it, that `T` can travel.
    pub fn wire_type<T: WireType>() {}

    /// The two parts of a `Result` named through an alias (`#[hvrpc(result)]`).
    pub trait ResultParts {
        /// The success type.
        type Ok;
        /// The error type.
        type Err;
        /// The `Result` itself.
        fn into_result(self) -> Result<Self::Ok, Self::Err>;
    }

    impl<T, E> ResultParts for Result<T, E> {
        type Ok = T;
        type Err = E;
        fn into_result(self) -> Result<T, E> {
            self
        }
    }

    /// The error for a method index the service does not have.
    pub fn unknown_method(service: &str, method: u32) -> (ErrorCode, String) {
        (
            ErrorCode::UnknownMethod,
            format!("{service} has no method with index {method}"),
        )
    }
}
