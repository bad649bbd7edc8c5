//! Asks a guest's health endpoint (hyper client) and prints the answer as JSON; exits 1 when
//! it is not healthy or does not answer.
//!
//! ```text
//! health-check --connect hybrid-vsock:///run/vm.sock:0x5000
//! ```

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use hvrpc_transport::Endpoint;

/// Checks an HTTP health endpoint over Hyper-V sockets, vsock or a Unix socket.
#[derive(Parser)]
struct Args {
    /// The server: hvsock://<vm>/<service>, vsock://<cid>:<port>, hybrid-vsock://<path>:<port>,
    /// unix://<path>, tcp://<ip>:<port>.
    #[arg(long)]
    connect: Endpoint,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match axum_health::check(args.connect.clone(), Duration::from_secs(args.timeout)).await {
        Ok(health) => {
            println!("{}", serde_json::to_string(&health).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("health-check: {}: {e}", args.connect);
            ExitCode::FAILURE
        }
    }
}
