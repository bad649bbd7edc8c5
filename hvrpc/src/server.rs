//! [`Server`]: accepts connections, runs the handshake, serves its services on each, and
//! enforces the connection limit, authorization and graceful shutdown.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hvrpc_transport::{Endpoint, Listener, PeerAddr};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::config::Config;
use crate::connection::{Connection, HandshakeParams, Services};
use crate::error::Error;
use crate::service::Service;

type Authorize = Arc<dyn Fn(&PeerAddr) -> bool + Send + Sync>;
type OnConnection = Arc<dyn Fn(Connection) + Send + Sync>;

/// An hvrpc server: one or more services behind one listener.
///
/// ```no_run
/// # async fn demo(svc: impl hvrpc::Service) -> std::io::Result<()> {
/// hvrpc::Server::new()
///     .add_service(svc)
///     .serve(&"vsock://any:0x4856".parse().unwrap())
///     .await
/// # }
/// ```
#[derive(Clone)]
pub struct Server {
    services: Services,
    config: Config,
    authorize: Option<Authorize>,
    on_connection: Option<OnConnection>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("services", &self.services.infos())
            .field("config", &self.config)
            .finish()
    }
}

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}

impl Server {
    /// A server with [`Config::server`].
    pub fn new() -> Self {
        Self {
            services: Services::default(),
            config: Config::server(),
            authorize: None,
            on_connection: None,
        }
    }

    /// Uses `config`.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Adds a service. Several services share one listener (one registered port).
    pub fn add_service(mut self, service: impl Service) -> Self {
        self.services.push(Arc::new(service));
        self
    }

    /// Admits only peers for which `allow` returns true; others are closed before the
    /// handshake, so no handler ever runs for them. The peer address comes from the transport
    /// (the hypervisor), not from anything the peer sends.
    pub fn authorize(mut self, allow: impl Fn(&PeerAddr) -> bool + Send + Sync + 'static) -> Self {
        self.authorize = Some(Arc::new(allow));
        self
    }

    /// Calls `f` with every connection after its handshake: the way to call services the peer
    /// offers back over the same connection.
    pub fn on_connection(mut self, f: impl Fn(Connection) + Send + Sync + 'static) -> Self {
        self.on_connection = Some(Arc::new(f));
        self
    }

    fn params(&self) -> HandshakeParams {
        HandshakeParams {
            config: Arc::new(self.config.clone()),
            services: Arc::new(self.services.clone()),
            wants: Vec::new(),
        }
    }

    /// Binds `endpoint` and serves until an error in binding (never returns otherwise).
    pub async fn serve(self, endpoint: &Endpoint) -> std::io::Result<()> {
        let listener = Listener::bind_with(endpoint, &self.config.connect.socket).await?;
        self.serve_with_shutdown(listener, std::future::pending())
            .await;
        Ok(())
    }

    /// Serves connections from `listener` until `shutdown` resolves; then stops accepting,
    /// tells every peer (go-away), lets calls in flight finish for up to
    /// [`Config::shutdown_grace`], and returns when every connection is closed.
    pub async fn serve_with_shutdown(self, listener: Listener, shutdown: impl Future<Output = ()>) {
        let slots = Arc::new(Semaphore::new(self.config.max_connections.max(1)));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let grace = self.config.shutdown_grace;
        tokio::pin!(shutdown);
        tracing::debug!(endpoint = %listener.local_endpoint(), "serving");
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        if let Some(allow) = &self.authorize
                            && !allow(&peer)
                        {
                            tracing::warn!(%peer, "peer not authorized; connection closed");
                            continue;
                        }
                        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                            tracing::warn!(
                                %peer,
                                limit = self.config.max_connections,
                                "connection limit reached; connection closed"
                            );
                            continue;
                        };
                        let (r, w) = stream.into_split();
                        let params = self.params();
                        let on_connection = self.on_connection.clone();
                        let mut stop = stop_rx.clone();
                        let span = tracing::debug_span!("hvrpc.accepted", %peer);
                        tasks.spawn(async move {
                            let conn = match Connection::establish(r, w, peer.clone(), params).await {
                                Ok(c) => c,
                                Err(e) => {
                                    tracing::warn!(%peer, error = %e, "handshake failed; connection closed");
                                    return;
                                }
                            };
                            if let Some(f) = on_connection {
                                f(conn.clone());
                            }
                            let stopping = tokio::select! {
                                _ = conn.closed() => false,
                                r = stop.wait_for(|s| *s) => r.is_ok(),
                            };
                            if stopping {
                                conn.shutdown(grace).await;
                            }
                            drop(permit);
                        }.instrument(span));
                    }
                    Err(e) => {
                        // Out of descriptors, or a connection that died in the backlog: not a
                        // reason to stop serving everybody else.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        drop(listener);
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
    }

    /// Serves one already connected stream (a pipe, `tokio::io::duplex`, a custom transport)
    /// after running the handshake on it.
    pub async fn serve_io<IO>(&self, io: IO, peer: PeerAddr) -> Result<Connection, Error>
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(io);
        let conn = Connection::establish(r, w, peer, self.params()).await?;
        if let Some(f) = &self.on_connection {
            f(conn.clone());
        }
        Ok(conn)
    }
}
