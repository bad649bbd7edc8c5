//! Errors: [`Error`] for callers, [`ErrorCode`] on the wire.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Why a call failed in the runtime (as opposed to the handler's own error type), as carried
/// on the wire. Unknown codes from newer peers decode as [`ErrorCode::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "u32", into = "u32")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The peer does not serve the requested service.
    UnknownService,
    /// The service has no method with that index.
    UnknownMethod,
    /// The request's arguments could not be decoded.
    BadRequest,
    /// The call's deadline passed before it finished.
    DeadlineExceeded,
    /// The call was stopped by the server (shutdown grace period over).
    Cancelled,
    /// The handler panicked, or its response could not be encoded.
    Internal,
    /// The server is at a limit (concurrent calls).
    ResourceExhausted,
    /// The server is shutting down and takes no new calls.
    ShuttingDown,
    /// The server's interceptor refused the call (`Interceptor::before`).
    PermissionDenied,
    /// A code this version does not know.
    Unknown(u32),
}

impl From<ErrorCode> for u32 {
    fn from(c: ErrorCode) -> u32 {
        match c {
            ErrorCode::UnknownService => 1,
            ErrorCode::UnknownMethod => 2,
            ErrorCode::BadRequest => 3,
            ErrorCode::DeadlineExceeded => 4,
            ErrorCode::Cancelled => 5,
            ErrorCode::Internal => 6,
            ErrorCode::ResourceExhausted => 7,
            ErrorCode::ShuttingDown => 8,
            ErrorCode::PermissionDenied => 9,
            ErrorCode::Unknown(n) => n,
        }
    }
}

impl From<u32> for ErrorCode {
    fn from(n: u32) -> ErrorCode {
        match n {
            1 => ErrorCode::UnknownService,
            2 => ErrorCode::UnknownMethod,
            3 => ErrorCode::BadRequest,
            4 => ErrorCode::DeadlineExceeded,
            5 => ErrorCode::Cancelled,
            6 => ErrorCode::Internal,
            7 => ErrorCode::ResourceExhausted,
            8 => ErrorCode::ShuttingDown,
            9 => ErrorCode::PermissionDenied,
            n => ErrorCode::Unknown(n),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::UnknownService => f.write_str("unknown service"),
            ErrorCode::UnknownMethod => f.write_str("unknown method"),
            ErrorCode::BadRequest => f.write_str("bad request"),
            ErrorCode::DeadlineExceeded => f.write_str("deadline exceeded"),
            ErrorCode::Cancelled => f.write_str("cancelled"),
            ErrorCode::Internal => f.write_str("internal error"),
            ErrorCode::ResourceExhausted => f.write_str("resource exhausted"),
            ErrorCode::ShuttingDown => f.write_str("shutting down"),
            ErrorCode::PermissionDenied => f.write_str("permission denied"),
            ErrorCode::Unknown(n) => write!(f, "error code {n}"),
        }
    }
}

/// The error of an RPC call.
///
/// `E` is the method's own error type for methods declared `-> Result<T, E>`: such an error
/// arrives typed as [`Error::Application`]. For other methods `E` is [`Infallible`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E = Infallible> {
    /// The handler returned its own error.
    #[error("{0}")]
    Application(E),
    /// No connection could be made.
    #[error("{0}")]
    Connect(#[source] Arc<std::io::Error>),
    /// The connection broke while the call was in flight, or before it could be sent. The call
    /// was not retried: it may or may not have run on the server.
    #[error("connection lost: {0}")]
    ConnectionLost(Arc<str>),
    /// The call's deadline passed.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The handshake failed: not an hvrpc peer, an incompatible protocol version, or a service
    /// that the peer does not serve or defines differently.
    #[error("handshake failed: {0}")]
    Handshake(Arc<str>),
    /// The server reported a runtime failure: unknown service or method, undecodable request,
    /// a panic in the handler (`Internal`), a limit, shutdown.
    #[error("remote error ({code}): {message}")]
    Remote {
        /// What failed.
        code: ErrorCode,
        /// Details from the server.
        message: Arc<str>,
    },
    /// The peer broke the protocol (undecodable frames or values, unexpected frames).
    #[error("protocol error: {0}")]
    Protocol(Arc<str>),
    /// A request (or its response) is larger than the receiver's frame limit.
    #[error("frame of {len} bytes exceeds the peer's limit of {max} bytes")]
    FrameTooLarge {
        /// The frame's payload size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A request (or its response) is larger than the receiver's maximum message size
    /// (`Config::max_message`), which bounds a message sent in parts.
    #[error("message of {len} bytes exceeds the peer's maximum message size of {max} bytes")]
    MessageTooLarge {
        /// The message's body size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value could not be serialized.
    #[error("cannot encode: {0}")]
    Encode(Arc<str>),
    /// The peer does not have the method (another release, or another service): decided at the
    /// handshake, so nothing was sent. The message names the service and the method.
    #[error("unimplemented: {0}")]
    Unimplemented(Arc<str>),
    /// The peer has the method, but its release and this one cannot read each other's values
    /// for it (a field's type changed, a required field is missing): decided at the handshake,
    /// so nothing was sent; or the peer's result could not be translated (an enum variant this
    /// release does not know: the call did run). The message names the method and the path of
    /// the conflict, or the variant.
    #[error("incompatible: {0}")]
    Incompatible(Arc<str>),
}

impl<E> Error<E> {
    /// The method's own error, if this is one.
    pub fn into_application(self) -> Option<E> {
        match self {
            Error::Application(e) => Some(e),
            _ => None,
        }
    }

    /// The wire code, for [`Error::Remote`] and the local equivalents.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Remote { code, .. } => Some(*code),
            Error::DeadlineExceeded => Some(ErrorCode::DeadlineExceeded),
            _ => None,
        }
    }

    /// Whether the call may be retried on a new connection without duplicating work the caller
    /// cares about: only errors that prove the request never reached a handler.
    pub fn is_connect_error(&self) -> bool {
        matches!(
            self,
            Error::Connect(_) | Error::Handshake(_) | Error::Unimplemented(_)
        )
    }

    pub(crate) fn remote(code: ErrorCode, message: impl Into<Arc<str>>) -> Self {
        Error::Remote {
            code,
            message: message.into(),
        }
    }
}

impl Error<Infallible> {
    /// Converts a runtime error into the error type of a method with its own error type.
    pub fn with_application<E>(self) -> Error<E> {
        match self {
            Error::Application(never) => match never {},
            Error::Connect(e) => Error::Connect(e),
            Error::ConnectionLost(r) => Error::ConnectionLost(r),
            Error::DeadlineExceeded => Error::DeadlineExceeded,
            Error::Handshake(r) => Error::Handshake(r),
            Error::Remote { code, message } => Error::Remote { code, message },
            Error::Protocol(r) => Error::Protocol(r),
            Error::FrameTooLarge { len, max } => Error::FrameTooLarge { len, max },
            Error::MessageTooLarge { len, max } => Error::MessageTooLarge { len, max },
            Error::Encode(r) => Error::Encode(r),
            Error::Unimplemented(r) => Error::Unimplemented(r),
            Error::Incompatible(r) => Error::Incompatible(r),
        }
    }
}

// `Clone` by hand: only the application error needs to be `Clone` for the whole to be.
impl<E: Clone> Clone for Error<E> {
    fn clone(&self) -> Self {
        match self {
            Error::Application(e) => Error::Application(e.clone()),
            Error::Connect(e) => Error::Connect(Arc::clone(e)),
            Error::ConnectionLost(r) => Error::ConnectionLost(Arc::clone(r)),
            Error::DeadlineExceeded => Error::DeadlineExceeded,
            Error::Handshake(r) => Error::Handshake(Arc::clone(r)),
            Error::Remote { code, message } => Error::Remote {
                code: *code,
                message: Arc::clone(message),
            },
            Error::Protocol(r) => Error::Protocol(Arc::clone(r)),
            Error::FrameTooLarge { len, max } => Error::FrameTooLarge {
                len: *len,
                max: *max,
            },
            Error::MessageTooLarge { len, max } => Error::MessageTooLarge {
                len: *len,
                max: *max,
            },
            Error::Encode(r) => Error::Encode(Arc::clone(r)),
            Error::Unimplemented(r) => Error::Unimplemented(Arc::clone(r)),
            Error::Incompatible(r) => Error::Incompatible(Arc::clone(r)),
        }
    }
}
