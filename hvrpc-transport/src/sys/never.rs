//! Placeholders for socket families this platform does not have.
//!
//! [`Never`] has no values: a stream or listener of a missing family can never be created, so
//! the portable code matches on it without any `cfg`, and the constructors below return a clear
//! "not on this platform" error instead.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A socket type that does not exist on this platform.
#[derive(Debug)]
pub(crate) enum Never {}

impl Never {
    pub(crate) fn into_split(self) -> (Never, Never) {
        match self {}
    }

    pub(crate) fn local_addr<A>(&self) -> io::Result<A> {
        match *self {}
    }

    pub(crate) async fn accept<A>(&self) -> io::Result<(Never, A)> {
        match *self {}
    }
}

impl AsyncRead for Never {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match *self {}
    }
}

impl AsyncWrite for Never {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        match *self {}
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        match *self {}
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        match *self {}
    }
}

pub(crate) fn unsupported<T>(what: &str) -> io::Result<T> {
    Err(io::Error::new(io::ErrorKind::Unsupported, what.to_owned()))
}
