//! An HTTP health endpoint in a guest with [axum], and the host's check with a hyper client,
//! over any hvrpc-transport endpoint (Hyper-V sockets, vsock, hybrid vsock, Unix, TCP).
//!
//! * [`serve`]: `axum::serve` on an hvrpc-transport [`Listener`]; the handler reads its
//!   caller's [`PeerAddr`] through `ConnectInfo`.
//! * [`check`]: hyper-util's client with an [`hvrpc_transport::hyper::Connector`].

use std::time::Duration;

use axum::Json;
use axum::extract::ConnectInfo;
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hvrpc_transport::hyper::Connector;
use hvrpc_transport::{Endpoint, Listener, PeerAddr};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

/// What `GET /health` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `"ok"`.
    pub status: String,
    /// The caller as the guest's transport saw it.
    pub peer: String,
    /// Seconds since the server started.
    pub uptime_s: u64,
}

/// The largest health answer [`check`] reads.
const MAX_BODY: usize = 64 * 1024;

/// Serves `GET /health` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: Listener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let started = std::time::Instant::now();
    let app = axum::Router::new().route(
        "/health",
        get(move |ConnectInfo(peer): ConnectInfo<PeerAddr>| async move {
            Json(Health {
                status: "ok".to_owned(),
                peer: peer.to_string(),
                uptime_s: started.elapsed().as_secs(),
            })
        }),
    );
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<PeerAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Why a [`check`] failed.
#[derive(Debug)]
pub enum CheckError {
    /// No connection, or HTTP failed on it.
    Http(hyper_util::client::legacy::Error),
    /// The body could not be read.
    Body(String),
    /// Not `200 OK`.
    Status(u16, String),
    /// The answer is not a health report.
    Json(serde_json::Error),
    /// No answer in time.
    Timeout(Duration),
}

impl std::fmt::Display for CheckError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckError::Http(e) => {
                // hyper-util's error says only "client error (Connect)": the cause is below.
                let mut text = format!("HTTP request failed: {e}");
                let mut cause = std::error::Error::source(e);
                while let Some(c) = cause {
                    let c_text = c.to_string();
                    // Errors that print their source too would repeat it.
                    if !text.contains(&c_text) {
                        text = format!("{text}: {c_text}");
                    }
                    cause = c.source();
                }
                f.write_str(&text)
            }
            CheckError::Body(e) => write!(f, "reading the answer failed: {e}"),
            CheckError::Status(code, body) => write!(f, "answered {code}: {body}"),
            CheckError::Json(e) => write!(f, "not a health report: {e}"),
            CheckError::Timeout(t) => write!(f, "no answer in {} s", t.as_secs_f64()),
        }
    }
}

impl std::error::Error for CheckError {}

/// Asks the server at `endpoint` for its health.
pub async fn check(endpoint: Endpoint, timeout: Duration) -> Result<Health, CheckError> {
    let client: Client<Connector, Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build(Connector::new(endpoint));
    let ask = async {
        // The authority is only the Host header: the connector picks the socket.
        let uri = "http://guest/health"
            .parse()
            .map_err(|e| CheckError::Body(format!("{e}")))?;
        let response = client.get(uri).await.map_err(CheckError::Http)?;
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| CheckError::Body(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(CheckError::Status(
                status.as_u16(),
                String::from_utf8_lossy(&body).into_owned(),
            ));
        }
        serde_json::from_slice(&body).map_err(CheckError::Json)
    };
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| CheckError::Timeout(timeout))?
}
