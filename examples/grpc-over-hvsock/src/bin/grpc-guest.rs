//! The guest side: serves the `GuestAgent` gRPC service on an hvrpc-transport endpoint.
//!
//! ```text
//! grpc-guest --listen vsock://any:0x5001          # a Linux guest
//! grpc-guest --listen unix:///tmp/agent.sock      # anywhere, for a try
//! ```

use clap::Parser;
use hvrpc_transport::{Endpoint, Listener};

/// Serves the GuestAgent gRPC service (tonic) over Hyper-V sockets, vsock or a Unix socket.
#[derive(Parser)]
struct Args {
    /// Where to listen: vsock://any:<port>, hvsock://<vm>/<service>, parent://<port>,
    /// hybrid-vsock://<path>:<port>, unix://<path>, tcp://<ip>:<port>.
    #[arg(long)]
    listen: Endpoint,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let listener = match Listener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("grpc-guest: cannot listen on {}: {e}", args.listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("serving on {}", listener.local_endpoint());
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match grpc_over_hvsock::serve(listener, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("grpc-guest: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
