//! The guest side: serves the `GuestAgent` gRPC service on an hvrpc-transport endpoint.
//!
//! ```text
//! grpc-guest --listen vsock://any:0x5001          # a Linux guest
//! grpc-guest --listen unix:///tmp/agent.sock      # anywhere, for a try
//! ```

use std::pin::Pin;

use clap::Parser;
use grpc_over_hvsock::Agent;
use hvrpc_transport::{Endpoint, Listener};

/// Serves the GuestAgent gRPC service (tonic) over Hyper-V sockets, vsock or a Unix socket.
#[derive(Parser)]
struct Args {
    /// Where to listen: vsock://any:<port>, hvsock://<vm>/<service>, parent://<port>,
    /// hybrid-vsock://<path>:<port>, unix://<path>, tcp://<ip>:<port>.
    #[arg(long)]
    listen: Endpoint,
    /// Exit after answering this many calls (for test harnesses).
    #[arg(long, value_name = "N")]
    exit_after_calls: Option<u64>,
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
    let (agent, spent): (_, Pin<Box<dyn Future<Output = ()> + Send>>) = match args.exit_after_calls
    {
        Some(n) => {
            let (agent, spent) = Agent::stopping_after(n);
            (agent, Box::pin(spent))
        }
        None => (Agent::default(), Box::pin(std::future::pending())),
    };
    let shutdown = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = spent => {}
        }
    };
    match grpc_over_hvsock::serve(listener, agent, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("grpc-guest: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
