//! [`Connector`]: how to dial a peer, and what to serve back to it.

use std::fmt;
use std::sync::Arc;

use futures_util::FutureExt;
use hvrpc_transport::{Endpoint, PeerAddr, connect_with};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::channel::Channel;
use crate::config::Config;
use crate::connection::{Connection, HandshakeParams, Services, Want};
use crate::error::Error;
use crate::intercept::Interceptor;
use crate::service::{Service, ServiceDef};

/// How to dial a peer: configuration, the services this side offers on the connection (for
/// bidirectional use), and the services it intends to call (matched method by method at the
/// handshake, and bridged where the two releases differ compatibly).
#[derive(Clone, Default)]
pub struct Connector {
    config: Config,
    services: Services,
    wants: Vec<Want>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("config", &self.config)
            .field("serves", &self.services.names())
            .field(
                "wants",
                &self.wants.iter().map(|w| w.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Connector {
    /// A connector with the default [`Config`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `config`.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Serves `service` to the peer over the same connection: the peer can call it back.
    pub fn serve(mut self, service: impl Service) -> Self {
        self.services.push(Arc::new(service));
        self
    }

    /// Shows every call the peer makes of the services this side serves back
    /// ([`serve`](Self::serve)) to `interceptor`, as [`Server::intercept`](crate::Server::intercept)
    /// does for a server.
    pub fn intercept(mut self, interceptor: impl Interceptor) -> Self {
        self.services.intercept(Arc::new(interceptor));
        self
    }

    /// Declares that this side will call `S`. Its methods are matched to the peer's by name
    /// at the handshake: those the peer lacks fail with [`Error::Unimplemented`], those whose
    /// schemas conflict with [`Error::Incompatible`] (both without a round trip), and those
    /// that differ compatibly (a field added, a variant added) are translated. Generated
    /// clients' `connect` declares their service.
    pub fn want<S: ServiceDef>(self) -> Self {
        self.add_want::<S>(false)
    }

    /// Declares that this side will call `S` and requires the peer's `S` to be exactly the
    /// same (every method, with the same schemas): otherwise the handshake fails, on both
    /// sides, saying what differs. For those who want whole-service exact matching.
    pub fn require<S: ServiceDef>(self) -> Self {
        self.add_want::<S>(true)
    }

    fn add_want<S: ServiceDef>(mut self, strict: bool) -> Self {
        let want = Want {
            spec: S::spec(),
            strict,
        };
        match self.wants.iter_mut().find(|w| w.name() == want.name()) {
            Some(w) => w.strict |= strict,
            None => self.wants.push(want),
        }
        self
    }

    fn params(&self) -> HandshakeParams {
        HandshakeParams {
            config: Arc::new(self.config.clone()),
            services: Arc::new(self.services.clone()),
            wants: self.wants.clone(),
        }
    }

    /// Dials `endpoint` now (with the configured timeout and retries) and returns a channel
    /// that dials again for later calls if the connection breaks.
    pub async fn connect(self, endpoint: &Endpoint) -> Result<Channel, Error> {
        let channel = self.lazy(endpoint);
        channel.connection().await?;
        Ok(channel)
    }

    /// A channel that dials on its first call.
    pub fn lazy(self, endpoint: &Endpoint) -> Channel {
        let deadline = self.config.default_deadline;
        let connector = Arc::new(self);
        let target = endpoint.clone();
        Channel::dialling(
            endpoint.clone(),
            deadline,
            Arc::new(move || {
                let (connector, target) = (Arc::clone(&connector), target.clone());
                async move { connector.dial(&target).await }.boxed()
            }),
        )
    }

    /// Runs the handshake over an already connected stream (any `AsyncRead + AsyncWrite`: a
    /// pipe, `tokio::io::duplex`, a custom transport).
    pub async fn connect_io<IO>(self, io: IO, peer: PeerAddr) -> Result<Connection, Error>
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(io);
        Connection::establish(r, w, peer, self.params()).await
    }

    async fn dial(&self, endpoint: &Endpoint) -> Result<Connection, Error> {
        let stream = connect_with(endpoint, &self.config.connect)
            .await
            .map_err(|e| Error::Connect(Arc::new(e)))?;
        let peer = stream.peer_addr().clone();
        let (r, w) = stream.into_split();
        Connection::establish(r, w, peer, self.params()).await
    }
}
