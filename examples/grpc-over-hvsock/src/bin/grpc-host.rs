//! The host side: calls the guest's `GuestAgent` gRPC service.
//!
//! ```text
//! grpc-host --connect hybrid-vsock:///run/vm.sock:0x5001 ping hello
//! grpc-host --connect unix:///tmp/agent.sock count 3
//! ```

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use grpc_over_hvsock::{CountRequest, PingRequest};
use hvrpc_transport::Endpoint;

/// Calls the GuestAgent gRPC service (tonic) over Hyper-V sockets, vsock or a Unix socket.
#[derive(Parser)]
struct Args {
    /// The guest: hvsock://<vm>/<service>, vsock://<cid>:<port>, hybrid-vsock://<path>:<port>,
    /// unix://<path>, tcp://<ip>:<port>.
    #[arg(long)]
    connect: Endpoint,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    #[command(subcommand)]
    call: Call,
}

#[derive(Subcommand)]
enum Call {
    /// Echoes MESSAGE and prints the address the guest saw us as.
    Ping { message: String },
    /// Streams 0..N, one per line.
    Count { n: u32 },
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut client = grpc_over_hvsock::connect(args.connect.clone());
    let call = async {
        match args.call {
            Call::Ping { message } => {
                let reply = client.ping(PingRequest { message }).await?.into_inner();
                println!("{} (the guest saw us as {})", reply.message, reply.peer);
            }
            Call::Count { n } => {
                let mut items = client.count(CountRequest { n }).await?.into_inner();
                let mut stdout = std::io::stdout().lock();
                while let Some(item) = items.message().await? {
                    // `grpc-host … count 1000000 | head`: a closed pipe ends the call quietly
                    // (dropping the stream cancels it on the guest).
                    if writeln!(stdout, "{}", item.value).is_err() {
                        break;
                    }
                }
            }
        }
        Ok::<(), tonic::Status>(())
    };
    match tokio::time::timeout(Duration::from_secs(args.timeout), call).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(status)) => {
            eprintln!(
                "grpc-host: {}: {:?}: {}",
                args.connect,
                status.code(),
                status.message()
            );
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "grpc-host: {}: no answer in {} s",
                args.connect, args.timeout
            );
            ExitCode::FAILURE
        }
    }
}
