//! Fan-out: which of many candidate endpoints serve a service.
//!
//! Candidates come from [`hvrpc_transport::discovery`] (every running VM on a Windows host,
//! every VMM socket matching a pattern on a Linux/KVM host) or from a wildcard listener's
//! connections. Each is dialled in parallel with a short timeout, and the handshake decides:
//! only peers that serve the service (by name: any release of it) count.

use std::time::Duration;

use hvrpc_transport::{ConnectOptions, Endpoint, PeerAddr};

use crate::config::Config;
use crate::connection::Connection;
use crate::connector::Connector;
use crate::error::Error;
use crate::service::Client;

/// A candidate that serves the service.
#[derive(Debug, Clone)]
pub struct Found<C> {
    /// The endpoint it was found at.
    pub endpoint: Endpoint,
    /// Its peer address (VM id or CID).
    pub peer: PeerAddr,
    /// A client connected to it.
    pub client: C,
}

/// Dials every candidate at once (each bounded by `timeout`, connect and handshake together)
/// and returns the ones serving `C`, in candidate order, plus why each other one did not
/// qualify.
pub async fn find<C: Client>(
    candidates: impl IntoIterator<Item = Endpoint>,
    timeout: Duration,
) -> (Vec<Found<C>>, Vec<(Endpoint, Error)>) {
    let config = Config {
        handshake_timeout: timeout,
        connect: ConnectOptions::new().timeout(timeout),
        ..Config::default()
    };
    let probes = candidates.into_iter().map(|endpoint| {
        let connector = Connector::new().config(config.clone()).want::<C>();
        async move {
            let attempt = async {
                let channel = connector.connect(&endpoint).await?;
                let conn = channel.connection().await?;
                if !conn.peer_services().iter().any(|s| s.name == C::NAME) {
                    let served: Vec<&str> = conn
                        .peer_services()
                        .iter()
                        .map(|s| s.name.as_str())
                        .filter(|n| !n.starts_with("hvrpc."))
                        .collect();
                    return Err(Error::Unimplemented(
                        format!(
                            "the peer does not serve {} (it serves: {})",
                            C::NAME,
                            if served.is_empty() {
                                "nothing".to_owned()
                            } else {
                                served.join(", ")
                            }
                        )
                        .into(),
                    ));
                }
                Ok::<_, Error>((conn.peer().clone(), C::from_channel(channel)))
            };
            let result = match tokio::time::timeout(timeout, attempt).await {
                Ok(r) => r,
                Err(_) => Err(Error::Connect(std::sync::Arc::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no handshake within {timeout:?}"),
                )))),
            };
            (endpoint, result)
        }
    });
    let mut found = Vec::new();
    let mut failed = Vec::new();
    for (endpoint, result) in futures_util::future::join_all(probes).await {
        match result {
            Ok((peer, client)) => found.push(Found {
                endpoint,
                peer,
                client,
            }),
            Err(e) => failed.push((endpoint, e)),
        }
    }
    (found, failed)
}

/// The connections (for example from [`Server::on_connection`](crate::Server::on_connection)
/// on a wildcard listener) whose peer serves `C`, as clients over those connections.
///
/// Any release of `C` counts; on a connection whose handshake did not declare `C`, only the
/// methods the two releases share unchanged can be called (see [`Connection::peer_supports`]).
pub fn among<C: Client>(connections: impl IntoIterator<Item = Connection>) -> Vec<C> {
    connections
        .into_iter()
        .filter(|c| !c.is_closed() && c.peer_services().iter().any(|s| s.name == C::NAME))
        .map(|c| C::from_channel(c.into()))
        .collect()
}
