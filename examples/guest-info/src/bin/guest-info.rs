//! The host side: query a guest's agent, watch it live, or list guests that dial in.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use guest_info::copy;
use guest_info::files::GuestFilesClient;
use guest_info::report::{self, Report};
use guest_info::{GuestInfoClient, PORT};
use hvrpc::transport::{ConnectOptions, Listener, RetryPolicy};
use hvrpc::{Config, Connector, Endpoint, Server};

/// Ask guest-info agents about their guests.
///
/// Endpoints: a VM on a Windows host is hvsock://<vm-id>/18518; a nested Linux guest is
/// vsock://<cid>:18518; a Firecracker / Cloud Hypervisor / vhost-user-vsock guest is
/// hybrid-vsock://<vmm socket>:18518.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print a report about one guest.
    Query {
        /// The agent's endpoint.
        endpoint: Endpoint,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Keep trying to connect for this many seconds (the guest may still be booting).
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// Stream live load and memory samples.
    Watch {
        /// The agent's endpoint.
        endpoint: Endpoint,
        /// Milliseconds between samples (at least 100).
        #[arg(long, default_value_t = 1000)]
        interval_ms: u32,
        /// Stop after this many samples (default: until interrupted).
        #[arg(long)]
        count: Option<usize>,
        /// Print JSON lines instead of text.
        #[arg(long)]
        json: bool,
        /// Keep trying to connect for this many seconds.
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// Copy a file into or out of the guest (its agent runs with --files DIR; guest paths are
    /// inside DIR). One side is <endpoint>:<path>, e.g. vsock://3:18518:logs/boot.txt or
    /// hybrid-vsock:///run/vm.sock:18518:in.bin. The guest replaces its file atomically;
    /// a download is written to <local>.part and renamed when complete.
    Cp {
        /// Where from: <endpoint>:<path> or a local file.
        from: String,
        /// Where to: a local file or <endpoint>:<path>.
        to: String,
        /// Keep trying to connect for this many seconds.
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// Accept guests whose agents dial in (guest-info-agent --dial) and list each as it
    /// arrives, with its VM id / CID and host name.
    Listen {
        /// Where to listen, e.g. hvsock://wildcard/18518 on a Windows host.
        #[arg(default_value_t = Endpoint::Vsock(hvrpc::VsockAddr::any(PORT)))]
        endpoint: Endpoint,
        /// Print JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
}

async fn connect(endpoint: &Endpoint, wait: u64) -> Result<GuestInfoClient, hvrpc::Error> {
    let mut config = Config::default();
    if wait > 0 {
        config.connect = ConnectOptions::new().timeout(Duration::from_secs(5)).retry(
            RetryPolicy::attempts(u32::try_from(wait * 4).unwrap_or(u32::MAX))
                .backoff(Duration::from_millis(100), Duration::from_millis(500)),
        );
    }
    let connecting = GuestInfoClient::connect_with(endpoint, Connector::new().config(config));
    match tokio::time::timeout(Duration::from_secs(wait.max(10) + 5), connecting).await {
        Ok(r) => r,
        Err(_) => Err(hvrpc::Error::Connect(std::sync::Arc::new(
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no agent answered at {endpoint} within {wait} s"),
            ),
        ))),
    }
}

/// Why a command stopped early.
enum Stop {
    /// Whoever reads our output went away (`guest-info watch … | head`): not an error.
    OutputClosed,
    /// A failure, for stderr.
    Failed(String),
}

impl From<String> for Stop {
    fn from(e: String) -> Self {
        Stop::Failed(e)
    }
}

/// Writes `text` to stdout; a closed pipe stops the command quietly instead of panicking as
/// `println!` does.
fn out(text: std::fmt::Arguments<'_>) -> Result<(), Stop> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_fmt(text)
        .and_then(|()| stdout.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => Stop::OutputClosed,
            _ => Stop::Failed(format!("writing to stdout: {e}")),
        })
}

/// A progress bar on stderr, when stderr is a terminal.
fn progress_bar() -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bytes}/{total_bytes} [{bar:40}] {bytes_per_sec}, {eta} left",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    Some(bar)
}

async fn run(args: Args) -> Result<(), Stop> {
    match args.command {
        Command::Query {
            endpoint,
            json,
            wait,
        } => {
            let guest = connect(&endpoint, wait).await.map_err(|e| e.to_string())?;
            let report = Report::gather(&guest).await;
            if json {
                let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
                out(format_args!("{text}\n"))?;
            } else {
                out(format_args!("Guest at {endpoint}\n{report}"))?;
            }
            Ok(())
        }
        Command::Watch {
            endpoint,
            interval_ms,
            count,
            json,
            wait,
        } => {
            let guest = connect(&endpoint, wait).await.map_err(|e| e.to_string())?;
            let samples = guest.watch(interval_ms).await.map_err(|e| e.to_string())?;
            let mut samples = samples.take(count.unwrap_or(usize::MAX));
            while let Some(sample) = samples.next().await {
                let sample = sample.map_err(|e| e.to_string())?;
                if json {
                    let line = serde_json::to_string(&sample).map_err(|e| e.to_string())?;
                    out(format_args!("{line}\n"))?;
                } else {
                    out(format_args!("{}\n", report::sample_line(&sample)))?;
                }
            }
            Ok(())
        }
        Command::Cp { from, to, wait } => {
            let (endpoint, remote, local, up) =
                match (copy::parse_remote(&from), copy::parse_remote(&to)) {
                    (Some((ep, remote)), None) => (ep, remote, PathBuf::from(&to), false),
                    (None, Some((ep, remote))) => (ep, remote, PathBuf::from(&from), true),
                    (Some(_), Some(_)) => {
                        return Err("both sides are in a guest; one must be a local file"
                            .to_owned()
                            .into());
                    }
                    (None, None) => {
                        return Err(format!(
                            "neither {from:?} nor {to:?} is <endpoint>:<path> (e.g. \
                             vsock://3:18518:file.txt)"
                        )
                        .into());
                    }
                };
            let guest = connect(&endpoint, wait).await.map_err(|e| e.to_string())?;
            let files = GuestFilesClient::new(guest.channel().clone());
            let bar = progress_bar();
            let show = |done: u64, total: u64| {
                if let Some(b) = &bar {
                    b.set_length(total);
                    b.set_position(done);
                }
            };
            let copied = if up {
                copy::upload(&files, &local, &remote, show).await
            } else {
                copy::download(&files, &remote, &local, show).await
            };
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            let n = copied.map_err(|e| format!("{endpoint}: {e}"))?;
            eprintln!("copied {n} bytes");
            Ok(())
        }
        Command::Listen { endpoint, json } => {
            let listener = Listener::bind(&endpoint)
                .await
                .map_err(|e| format!("cannot listen on {endpoint}: {e}"))?;
            eprintln!(
                "listening on {}; waiting for agents to dial in",
                listener.local_endpoint()
            );
            let server = Server::new().on_connection(move |conn| {
                tokio::spawn(async move {
                    let peer = conn.peer().clone();
                    let guest = GuestInfoClient::new(conn);
                    let hostname = guest.hostname().await.map_err(|e| e.to_string());
                    let os = guest
                        .os_info()
                        .await
                        .map(|o| o.pretty_name)
                        .map_err(|e| e.to_string());
                    let shown = if json {
                        let line = serde_json::json!({
                            "peer": peer.to_string(),
                            "vm_id": peer.vm_id().map(|v| v.to_string()),
                            "cid": peer.cid(),
                            "hostname": hostname.as_ref().ok(),
                            "os": os.as_ref().ok(),
                        });
                        out(format_args!("{line}\n"))
                    } else {
                        out(format_args!(
                            "{peer}  {}  {}\n",
                            hostname.unwrap_or_else(|e| format!("(hostname: {e})")),
                            os.unwrap_or_else(|e| format!("(os: {e})"))
                        ))
                    };
                    match shown {
                        Ok(()) => {}
                        Err(Stop::OutputClosed) => std::process::exit(0),
                        Err(Stop::Failed(e)) => eprintln!("guest-info: {e}"),
                    }
                });
            });
            let ctrl_c = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            server.serve_with_shutdown(listener, ctrl_c).await;
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) | Err(Stop::OutputClosed) => ExitCode::SUCCESS,
        Err(Stop::Failed(e)) => {
            eprintln!("guest-info: {e}");
            ExitCode::FAILURE
        }
    }
}
