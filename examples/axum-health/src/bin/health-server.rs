//! Serves `GET /health` (axum) on an hvrpc-transport endpoint.
//!
//! ```text
//! health-server --listen vsock://any:0x5000      # a Linux guest
//! health-server --listen unix:///tmp/health.sock # anywhere
//! ```

use std::process::ExitCode;

use clap::Parser;
use hvrpc_transport::{Endpoint, Listener};

/// Serves an HTTP health endpoint (axum) over Hyper-V sockets, vsock or a Unix socket.
#[derive(Parser)]
struct Args {
    /// Where to listen: vsock://any:<port>, hvsock://<vm>/<service>, parent://<port>,
    /// hybrid-vsock://<path>:<port>, unix://<path>, tcp://<ip>:<port>.
    #[arg(long)]
    listen: Endpoint,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let listener = match Listener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("health-server: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    println!("serving on {}", listener.local_endpoint());
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match axum_health::serve(listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("health-server: {e}");
            ExitCode::FAILURE
        }
    }
}
