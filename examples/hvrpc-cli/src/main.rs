//! `hvrpc`: service GUIDs and vsock ports, Hyper-V service registration, handshake pings, VM
//! discovery, and `describe`/`call` of any hvrpc server's methods in JSON.

mod dynamic;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args as ClapArgs, Parser, Subcommand};
use hvrpc::transport::{ConnectOptions, discovery, registry};
use hvrpc::{Config, Connector, Endpoint, ServiceId};
use serde_json::json;

/// Tools for Hyper-V socket services built with hvrpc.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// A service named by vsock port or by GUID.
#[derive(ClapArgs, Debug)]
#[group(required = true, multiple = false)]
struct ServiceArg {
    /// The service's vsock port (decimal or 0x…); registered as its template GUID.
    #[arg(long, value_parser = parse_port)]
    port: Option<u32>,
    /// The service's GUID (Windows-only services).
    #[arg(long)]
    id: Option<ServiceId>,
}

impl ServiceArg {
    fn service_id(&self) -> ServiceId {
        match (self.port, self.id) {
            (Some(p), _) => ServiceId::from_vsock_port(p),
            (None, Some(id)) => id,
            // clap's group makes exactly one of them required.
            (None, None) => ServiceId::VSOCK_TEMPLATE,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the Hyper-V service GUID of a vsock port.
    Guid {
        /// The port (decimal or 0x…).
        #[arg(value_parser = parse_port)]
        port: u32,
    },
    /// Print the vsock port of a service GUID (template GUIDs only).
    Port {
        /// The GUID.
        guid: ServiceId,
    },
    /// Register a service so that guests may connect to a listener on this Windows host
    /// (needs administrator rights).
    Register {
        /// A friendly name, shown in performance counters.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        service: ServiceArg,
    },
    /// Remove a service's registration (needs administrator rights).
    Unregister {
        #[command(flatten)]
        service: ServiceArg,
    },
    /// List the registered services (Windows host).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Connect and run the handshake: protocol version, implementation, services offered,
    /// and how long it took.
    Ping {
        /// The endpoint, e.g. hvsock://<vm-id>/18518, vsock://3:18518,
        /// hybrid-vsock:///run/vm.vsock:18518.
        endpoint: Endpoint,
        /// Give up after this long (`500ms`, `5s`, `1m`); 5 s if neither this nor
        /// --timeout-ms is given.
        #[arg(long, value_parser = parse_duration, conflicts_with = "timeout_ms")]
        timeout: Option<Duration>,
        /// Give up after this many milliseconds.
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show what a server offers: its services, each method's signature, and the types they
    /// use (from the server's reflection).
    Describe {
        /// The endpoint (every form the library takes: hvsock://, vsock://, parent://,
        /// hybrid-vsock://, unix://, tcp://).
        endpoint: Endpoint,
        /// Give up after this long (`500ms`, `5s`, `1m`); 5 s if neither this nor
        /// --timeout-ms is given.
        #[arg(long, value_parser = parse_duration, conflicts_with = "timeout_ms")]
        timeout: Option<Duration>,
        /// Give up after this many milliseconds.
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// Print the schemas as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Call a method with JSON arguments and print its result as JSON (a stream: one line per
    /// item, until it ends or Ctrl-C, which cancels it on the server).
    ///
    /// Exit status: 0 done; 3 the method's own error (its JSON on stderr); 4 connecting or the
    /// connection failed; 5 the deadline passed; 6 the arguments do not fit the method (or the
    /// result could not be read); 7 no such method, or the server failed the call; 130
    /// interrupted.
    #[command(verbatim_doc_comment)]
    Call {
        /// The endpoint, as for describe.
        endpoint: Endpoint,
        /// `Service.method`.
        method: String,
        /// The arguments: a JSON object by name (`{"path": "/etc"}`), an array by position,
        /// or `-` to read them from stdin. None for a method without arguments. A method that
        /// takes an input stream reads its items from stdin, one JSON value a line.
        args: Option<String>,
        /// The call's deadline, and the limit for connecting (`500ms`, `5s`, `1m`). If
        /// neither this nor --timeout-ms is given: 30 s for a unary call, none for a stream
        /// or an upload from stdin (they run until they end, or Ctrl-C).
        #[arg(long, value_parser = parse_duration, conflicts_with = "timeout_ms")]
        timeout: Option<Duration>,
        /// The same in milliseconds.
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// Print the result on one line.
        #[arg(long)]
        compact: bool,
    },
    /// List VMs: running compute systems on a Windows host (needs administrator rights), or
    /// VMM hybrid-vsock sockets matching --hybrid on a Linux/KVM host.
    Vms {
        /// A pattern for VMM sockets, e.g. '/run/firecracker/*.vsock' (Linux/KVM hosts).
        #[arg(long)]
        hybrid: Option<String>,
        /// Resolve one VM by name (or id) to its VM id instead of listing.
        #[arg(long)]
        resolve: Option<String>,
        /// Also handshake with each VM on this vsock port and show what it serves.
        #[arg(long, value_parser = parse_port)]
        probe_port: Option<u32>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A duration with its unit: `500ms`, `5s`, `1m 30s`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}): write e.g. 500ms, 5s or 1m"))
}

/// The timeout given as --timeout or --timeout-ms, else `default_ms`.
fn timeout_of(timeout: Option<Duration>, ms: Option<u64>, default_ms: u64) -> Duration {
    timeout.unwrap_or_else(|| Duration::from_millis(ms.unwrap_or(default_ms)))
}

fn parse_port(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| {
        format!("{s:?} is not a port: expected a number from 0 to 4294967295 (decimal or 0x…)")
    })
}

struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

async fn ping(endpoint: &Endpoint, timeout: Duration) -> Result<serde_json::Value, Failure> {
    let mut config = Config::default();
    config.handshake_timeout = timeout;
    config.connect = ConnectOptions::new().timeout(timeout);
    let started = Instant::now();
    let channel = tokio::time::timeout(timeout, Connector::new().config(config).connect(endpoint))
        .await
        .map_err(|_| Failure(format!("no handshake from {endpoint} within {timeout:?}")))??;
    let conn = channel.connection().await?;
    let rtt = started.elapsed();
    let services: Vec<_> = conn
        .peer_services()
        .iter()
        .map(|s| {
            let methods: Vec<&str> = s.methods.iter().map(|m| m.name.as_str()).collect();
            json!({"name": s.name, "methods": methods})
        })
        .collect();
    Ok(json!({
        "endpoint": endpoint.to_string(),
        "peer": conn.peer().to_string(),
        "protocol_version": hvrpc::PROTOCOL_VERSION,
        "agent": conn.peer_agent(),
        "services": services,
        "connect_and_handshake_ms": rtt.as_secs_f64() * 1000.0,
    }))
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Guid { port } => println!("{}", ServiceId::from_vsock_port(port)),
        Command::Port { guid } => match guid.vsock_port() {
            Some(p) => println!("{p}"),
            None => {
                return Err(Failure(format!(
                    "{guid} is not a vsock template GUID (<port>-facb-11e6-bd58-64006a7986d3), so it has no port"
                )));
            }
        },
        Command::Register { name, service } => {
            let id = service.service_id();
            registry::register(id, &name)?;
            println!("registered {id} as {name:?}");
        }
        Command::Unregister { service } => {
            let id = service.service_id();
            registry::unregister(id)?;
            println!("unregistered {id}");
        }
        Command::List { json } => {
            let services = registry::list()?;
            if json {
                let items: Vec<_> = services
                    .iter()
                    .map(|r| json!({"service_id": r.service_id.to_string(), "name": r.element_name, "port": r.vsock_port()}))
                    .collect();
                println!("{}", serde_json::Value::Array(items));
            } else {
                for r in services {
                    let port = r
                        .vsock_port()
                        .map_or_else(String::new, |p| format!("  port {p} (0x{p:x})"));
                    println!(
                        "{}  {}{port}",
                        r.service_id,
                        r.element_name.as_deref().unwrap_or("(no name)")
                    );
                }
            }
        }
        Command::Ping {
            endpoint,
            timeout,
            timeout_ms,
            json,
        } => {
            let info = ping(&endpoint, timeout_of(timeout, timeout_ms, 5000)).await?;
            if json {
                println!("{info}");
            } else {
                println!(
                    "{} answered in {:.1} ms: protocol {}, {}",
                    info["peer"].as_str().unwrap_or_default(),
                    info["connect_and_handshake_ms"]
                        .as_f64()
                        .unwrap_or_default(),
                    info["protocol_version"],
                    info["agent"].as_str().unwrap_or_default()
                );
                for s in info["services"].as_array().into_iter().flatten() {
                    let methods: Vec<&str> = s["methods"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|m| m.as_str())
                        .collect();
                    println!(
                        "  serves {}: {}",
                        s["name"].as_str().unwrap_or_default(),
                        methods.join(", ")
                    );
                }
            }
        }
        Command::Describe { .. } | Command::Call { .. } => {
            // main runs these itself, for their exit statuses.
        }
        Command::Vms {
            hybrid,
            resolve,
            probe_port,
            json,
        } => {
            if let Some(name) = resolve {
                println!("{}", discovery::resolve_vm(&name)?);
                return Ok(());
            }
            let (rows, endpoints): (Vec<serde_json::Value>, Vec<Option<Endpoint>>) = match hybrid {
                Some(pattern) => discovery::hybrid_sockets(&pattern)?
                    .into_iter()
                    .map(|path| {
                        let ep = probe_port.map(|p| {
                            Endpoint::HybridVsock(hvrpc::transport::HybridVsockAddr::new(&path, p))
                        });
                        (json!({"socket": path.display().to_string()}), ep)
                    })
                    .unzip(),
                None => discovery::list_vms()?
                    .into_iter()
                    .map(|vm| {
                        let ep = probe_port.map(|p| {
                            Endpoint::HvSocket(hvrpc::transport::HvSocketAddr::new(
                                vm.id,
                                ServiceId::from_vsock_port(p),
                            ))
                        });
                        (
                            json!({"id": vm.id.to_string(), "name": vm.name, "type": vm.system_type,
                                   "state": vm.state, "owner": vm.owner}),
                            ep,
                        )
                    })
                    .unzip(),
            };
            let mut rows = rows;
            for (row, ep) in rows.iter_mut().zip(endpoints) {
                if let Some(ep) = ep {
                    row["probe"] = match ping(&ep, Duration::from_secs(2)).await {
                        Ok(info) => info["services"].clone(),
                        Err(Failure(e)) => json!({"error": e}),
                    };
                }
            }
            if json {
                println!("{}", serde_json::Value::Array(rows));
            } else if rows.is_empty() {
                println!("no VMs found");
            } else {
                for row in rows {
                    println!("{row}");
                }
            }
        }
    }
    Ok(())
}

/// `describe` and `call`, with their own exit statuses.
async fn dynamic(command: Command) -> Result<(), dynamic::CallFailure> {
    match command {
        Command::Describe {
            endpoint,
            timeout,
            timeout_ms,
            json,
        } => {
            let timeout = timeout_of(timeout, timeout_ms, 5000);
            let conn = dynamic::connect(&endpoint, timeout).await?;
            let schemas = dynamic::schemas(&endpoint, &conn).await?;
            if json {
                let v = serde_json::to_value(&schemas).unwrap_or_default();
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", dynamic::describe_text(&schemas));
            }
            Ok(())
        }
        Command::Call {
            endpoint,
            method,
            args,
            timeout,
            timeout_ms,
            compact,
        } => {
            dynamic::call(
                &endpoint,
                &method,
                args,
                timeout_of(timeout, timeout_ms, 30_000),
                timeout.is_some() || timeout_ms.is_some(),
                compact,
            )
            .await
        }
        _ => Ok(()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Describe { .. } | Command::Call { .. }) {
        return match dynamic(cli.command).await {
            Ok(()) => ExitCode::SUCCESS,
            // The reader of the output went away: nothing more to say.
            Err(f) if f.code == 0 => ExitCode::SUCCESS,
            Err(f) => {
                if !f.message.is_empty() {
                    eprintln!("hvrpc: {}", f.message);
                }
                ExitCode::from(f.code)
            }
        };
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(e)) => {
            eprintln!("hvrpc: {e}");
            ExitCode::FAILURE
        }
    }
}
