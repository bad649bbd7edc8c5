//! [`Server`]: accepts connections, runs the handshake, serves its services on each, and
//! enforces the connection limit, authorization and graceful shutdown.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hvrpc_transport::{Endpoint, Listener, PeerAddr, VmId};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::config::Config;
use crate::connection::{Connection, HandshakeParams, Services};
use crate::error::Error;
use crate::intercept::Interceptor;
use crate::reflection::{Reflect, ReflectionServer};
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
    reflection: bool,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("services", &self.services.names())
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
            reflection: true,
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

    /// Shows every call to `interceptor` before its handler runs (it may refuse the call)
    /// and after it ends, with its outcome: audit logs, metrics, extra authorization. One per
    /// server; a later call replaces it.
    pub fn intercept(mut self, interceptor: impl Interceptor) -> Self {
        self.services.intercept(Arc::new(interceptor));
        self
    }

    /// Calls `f` with every connection after its handshake: the way to call services the peer
    /// offers back over the same connection.
    pub fn on_connection(mut self, f: impl Fn(Connection) + Send + Sync + 'static) -> Self {
        self.on_connection = Some(Arc::new(f));
        self
    }

    /// Whether peers may fetch the full schemas of the services (`hvrpc.Reflection`, which
    /// `hvrpc describe` and `hvrpc call` use); on by default. Off, the reflection service
    /// still answers, with [`ReflectionError::Disabled`](crate::reflection::ReflectionError).
    /// The handshake's method names and hashes are sent either way.
    pub fn reflection(mut self, on: bool) -> Self {
        self.reflection = on;
        self
    }

    fn params(&self) -> HandshakeParams {
        let mut services = self.services.clone();
        let specs = self.reflection.then(|| {
            services
                .specs()
                .iter()
                .filter_map(|s| s.clone().ok())
                .collect()
        });
        services.push(Arc::new(ReflectionServer::new(Reflect { specs })));
        HandshakeParams {
            config: Arc::new(self.config.clone()),
            services: Arc::new(services),
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
        let per_vm = PerVm::new(self.config.max_connections_per_vm.max(1));
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
                        let Some(vm_slot) = per_vm.admit(&peer) else {
                            tracing::warn!(
                                %peer,
                                limit = self.config.max_connections_per_vm,
                                "per-VM connection limit reached; connection closed"
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
                            drop((permit, vm_slot));
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

/// Who a connection's VM is, for the per-VM connection limit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum VmKey {
    Partition(VmId),
    Cid(u32),
    /// One VMM's hybrid-vsock socket: one VM.
    Vmm(PathBuf),
}

impl VmKey {
    fn of(peer: &PeerAddr) -> Option<VmKey> {
        match peer {
            PeerAddr::HvSocket(a) => Some(VmKey::Partition(a.vm_id)),
            PeerAddr::Vsock(a) => Some(VmKey::Cid(a.cid)),
            PeerAddr::HybridVsock(a) => Some(VmKey::Vmm(a.path.clone())),
            _ => None,
        }
    }
}

/// Counts connections per VM.
#[derive(Clone)]
struct PerVm {
    limit: usize,
    open: Arc<Mutex<HashMap<VmKey, usize>>>,
}

/// One admitted connection's place in its VM's count; given back on drop.
struct VmSlot {
    key: Option<VmKey>,
    open: Arc<Mutex<HashMap<VmKey, usize>>>,
}

impl PerVm {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            open: Arc::default(),
        }
    }

    /// A slot for a connection from `peer`, or `None` if its VM holds `limit` already.
    /// Peers without a VM identity (Unix, TCP) always get one.
    fn admit(&self, peer: &PeerAddr) -> Option<VmSlot> {
        let key = VmKey::of(peer);
        if let Some(k) = &key {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let n = open.entry(k.clone()).or_insert(0);
            if *n >= self.limit {
                return None;
            }
            *n += 1;
        }
        Some(VmSlot {
            key,
            open: Arc::clone(&self.open),
        })
    }
}

impl Drop for VmSlot {
    fn drop(&mut self) {
        if let Some(k) = &self.key {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = open.get_mut(k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.remove(k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hvrpc_transport::{HvSocketAddr, HybridVsockAddr, ServiceId, VsockAddr};

    #[test]
    fn the_per_vm_limit_counts_each_vm_apart() {
        let per_vm = PerVm::new(2);
        let vm = |n: u8| {
            PeerAddr::HvSocket(HvSocketAddr::new(
                VmId::from_u128(u128::from(n)),
                ServiceId::from_vsock_port(1),
            ))
        };
        let a1 = per_vm.admit(&vm(1)).expect("first of VM 1");
        let a2 = per_vm.admit(&vm(1)).expect("second of VM 1");
        assert!(per_vm.admit(&vm(1)).is_none(), "third of VM 1");
        // Another VM, a vsock CID, a VMM socket: counted apart.
        let _b = per_vm.admit(&vm(2)).expect("VM 2");
        let cid = |port| PeerAddr::Vsock(VsockAddr::new(7, port));
        let _c1 = per_vm.admit(&cid(1000)).expect("CID 7");
        let _c2 = per_vm.admit(&cid(1001)).expect("CID 7 again, another port");
        assert!(per_vm.admit(&cid(1002)).is_none(), "CID 7 a third time");
        let vmm = PeerAddr::HybridVsock(HybridVsockAddr::new("/run/vm1.vsock", 5));
        let _d = per_vm.admit(&vmm).expect("VMM socket");
        // No VM identity: not limited here.
        let unix: Vec<_> = (0..10)
            .map(|_| per_vm.admit(&PeerAddr::Unix(None)).expect("unix"))
            .collect();
        assert_eq!(unix.len(), 10);
        // A slot comes back when its connection ends.
        drop(a1);
        let _a3 = per_vm.admit(&vm(1)).expect("VM 1 after one left");
        assert!(per_vm.admit(&vm(1)).is_none());
        drop(a2);
        drop(_a3);
        assert!(
            !per_vm
                .open
                .lock()
                .unwrap()
                .contains_key(&VmKey::Partition(VmId::from_u128(1))),
            "no entry left behind for a VM with no connection"
        );
    }
}
