//! The guest side: serves `GuestInfo` (listening, so the host can connect) and can also dial the
//! host and stay connected (so a host with a wildcard listener finds it).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use guest_info::audit::Audit;
use guest_info::files::{FileShare, GuestFilesServer};
use guest_info::{Agent, GuestInfoServer, PORT};
use hvrpc::transport::Listener;
use hvrpc::{Config, Connector, Endpoint, Server};
use tokio::sync::watch;

/// Serves guest information to the host over Hyper-V sockets (vsock in Linux guests).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Where to listen. The default accepts the parent partition (the host) on port 18518
    /// (0x4856): vsock://any:18518 in a Linux guest, hvsock://parent/18518 in a Windows guest.
    #[arg(long, default_value_t = Endpoint::parent_port(PORT))]
    listen: Endpoint,
    /// Do not listen; only dial (needs --dial).
    #[arg(long, requires = "dial")]
    no_listen: bool,
    /// Also dial this endpoint (e.g. parent://18518) and serve over that connection, dialling
    /// again with backoff whenever it breaks.
    #[arg(long)]
    dial: Option<Endpoint>,
    /// Exit once the first connection to the listener has closed (for demos and tests).
    #[arg(long, conflicts_with = "connections")]
    once: bool,
    /// Exit once this many connections to the listener have closed (for demos and tests).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    connections: Option<u32>,
    /// Log every call (peer, method, outcome, time taken), and the calls per method on exit.
    #[arg(long)]
    audit: bool,
    /// Serve reading and writing files inside DIR (and nowhere else) to the host, for
    /// `guest-info cp`. Off unless given. Only the host may use it (vsock CID 2, Hyper-V
    /// peers, or whoever may open a --listen unix:// socket), never TCP peers or the guest's
    /// own processes through vsock loopback.
    #[arg(long, value_name = "DIR")]
    files: Option<std::path::PathBuf>,
    /// Log more (also: RUST_LOG=debug).
    #[arg(short, long)]
    verbose: bool,
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Dials `endpoint` and serves over the connection; when it breaks, dials again with backoff
/// from 1 s up to 30 s.
async fn dial_loop(
    endpoint: Endpoint,
    stop: watch::Receiver<bool>,
    audit: Option<Arc<Audit>>,
    files: Option<Arc<FileShare>>,
) {
    let mut delay = Duration::from_secs(1);
    loop {
        let mut connector = Connector::new().serve(GuestInfoServer::new(Agent));
        if let Some(share) = &files {
            connector = connector.serve(GuestFilesServer::new(Arc::clone(share)));
        }
        if let Some(a) = &audit {
            connector = connector.intercept(Arc::clone(a));
        }
        let attempt = async {
            let channel = connector.connect(&endpoint).await?;
            channel.connection().await
        };
        let result = tokio::select! {
            r = attempt => r,
            () = stopped(stop.clone()) => return,
        };
        match result {
            Ok(conn) => {
                tracing::info!(%endpoint, "connected to the host");
                delay = Duration::from_secs(1);
                tokio::select! {
                    reason = conn.closed() => tracing::info!(%endpoint, %reason, "connection to the host closed"),
                    () = stopped(stop.clone()) => {
                        conn.shutdown(Duration::from_secs(2)).await;
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(%endpoint, error = %e, retry_in = ?delay, "cannot reach the host")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(stop.clone()) => return,
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = if args.verbose { "debug" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .init();

    let audit = args.audit.then(|| Arc::new(Audit::default()));
    let files = match &args.files {
        None => None,
        Some(dir) => match FileShare::new(dir) {
            Ok(share) => {
                tracing::info!(dir = %share.root().display(), "serving GuestFiles");
                let share = Arc::new(share);
                // Uploads a host abandoned (it crashed, or its connection broke) are removed.
                let sweeping = Arc::downgrade(&share);
                tokio::spawn(async move {
                    let mut every = tokio::time::interval(Duration::from_secs(60));
                    loop {
                        every.tick().await;
                        match sweeping.upgrade() {
                            Some(share) => share.sweep(),
                            None => return,
                        }
                    }
                });
                Some(share)
            }
            Err(e) => {
                eprintln!("guest-info-agent: cannot share {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
        },
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    if !args.no_listen {
        let listener = match Listener::bind(&args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("guest-info-agent: cannot listen on {}: {e}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(endpoint = %listener.local_endpoint(), "serving GuestInfo");
        let mut server = Server::new()
            .config(Config::server())
            .add_service(GuestInfoServer::new(Agent));
        if let Some(share) = &files {
            server = server.add_service(GuestFilesServer::new(Arc::clone(share)));
        }
        if let Some(a) = &audit {
            server = server.intercept(Arc::clone(a));
        }
        if let Some(n) = args.connections.or(args.once.then_some(1)) {
            let stop_tx = stop_tx.clone();
            let closed = Arc::new(std::sync::atomic::AtomicU32::new(0));
            server = server.on_connection(move |conn| {
                let stop_tx = stop_tx.clone();
                let closed = Arc::clone(&closed);
                tokio::spawn(async move {
                    let reason = conn.closed().await;
                    let done = closed.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    tracing::info!(%reason, done, of = n, "connection closed");
                    if done >= n {
                        tracing::info!("exiting after {n} connection(s)");
                        let _ = stop_tx.send(true);
                    }
                });
            });
        }
        tasks.spawn(server.serve_with_shutdown(listener, stopped(stop_rx.clone())));
    }
    if let Some(endpoint) = args.dial.clone() {
        tasks.spawn(dial_loop(
            endpoint,
            stop_rx.clone(),
            audit.clone(),
            files.clone(),
        ));
    }
    tokio::select! {
        () = shutdown_signal() => tracing::info!("shutting down"),
        () = stopped(stop_rx.clone()) => {}
    }
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    if let Some(a) = audit {
        tracing::info!(calls = ?a.counts(), "calls served, by method");
    }
    ExitCode::SUCCESS
}
