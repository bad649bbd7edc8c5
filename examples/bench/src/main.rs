//! `hvrpc-bench`: hvrpc against a raw framed echo (the practical limit of the stream) and
//! against tarpc, client and server in separate processes over the same transport.
//!
//! ```sh
//! cargo run --release -p hvrpc-bench -- run --quick     # smoke: every implementation works; ratios
//! cargo run --release -p hvrpc-bench -- report          # regenerates docs/BENCHMARKS.md and the plot
//! ```
//!
//! Linux only: it reads `/proc` for the servers' memory.

#[cfg(target_os = "linux")]
mod callgrind;
#[cfg(target_os = "linux")]
mod client;
#[cfg(target_os = "linux")]
mod machine;
#[cfg(target_os = "linux")]
mod model;
#[cfg(target_os = "linux")]
mod proto;
#[cfg(target_os = "linux")]
mod report;
#[cfg(target_os = "linux")]
mod run;
#[cfg(target_os = "linux")]
mod server;
#[cfg(target_os = "linux")]
mod transfer;
#[cfg(target_os = "linux")]
mod vm;

use std::process::ExitCode;

#[cfg(target_os = "linux")]
fn main() -> ExitCode {
    match cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hvrpc-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn main() -> ExitCode {
    eprintln!("hvrpc-bench runs on Linux only");
    ExitCode::FAILURE
}

#[cfg(target_os = "linux")]
mod cli {
    use std::path::{Path, PathBuf};

    use clap::{Parser, Subcommand, ValueEnum};

    use crate::model::Results;
    use crate::proto::Impl;
    use crate::run::{Plan, Transport};

    /// Benchmarks hvrpc against a raw framed echo and against tarpc.
    #[derive(Parser)]
    #[command(name = "hvrpc-bench")]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Clone, Copy, ValueEnum)]
    enum TransportArg {
        /// Unix sockets (native speed).
        Unix,
        /// AF_VSOCK loopback: only inside the test VM (HVRPC_IN_GUEST=1).
        Vsock,
    }

    #[derive(Subcommand)]
    enum Command {
        /// Runs the benchmark and prints the results with their ratios and the targets.
        Run {
            /// A smoke run (well under a minute): checks every implementation, prints ratios.
            #[arg(long)]
            quick: bool,
            /// The transport.
            #[arg(long, value_enum, default_value = "unix")]
            transport: TransportArg,
            /// Interleaved rounds per measurement (default: 3, or 1 with --quick).
            #[arg(long)]
            rounds: Option<usize>,
            /// Also write the results as JSON to this file (`-`: standard output, between
            /// marker lines).
            #[arg(long)]
            json: Option<PathBuf>,
        },
        /// Runs the benchmark and writes docs/BENCHMARKS.md and docs/benchmarks.png.
        Report {
            /// A quick run instead of the full one.
            #[arg(long)]
            quick: bool,
            /// Where to write BENCHMARKS.md and benchmarks.png (default: the workspace's docs/).
            #[arg(long)]
            out_dir: Option<PathBuf>,
            /// Report on results saved with `run --json` instead of running.
            #[arg(long)]
            from: Option<PathBuf>,
            /// Skip the AF_VSOCK run inside the test VM (.ci/vm/run).
            #[arg(long)]
            no_vm: bool,
            /// Use AF_VSOCK results saved with `run --transport vsock --json` instead of
            /// booting the VM.
            #[arg(long)]
            vm_from: Option<PathBuf>,
            /// Skip counting instructions per call under callgrind (valgrind).
            #[arg(long)]
            no_callgrind: bool,
        },
        /// One workload of one implementation for a while, for a profiler
        /// (`perf record -g -- hvrpc-bench profile …` follows the server process too).
        #[command(hide = true)]
        Profile {
            /// raw, hvrpc or tarpc.
            imp: String,
            /// `latency` (one call in flight; `--size 0` is `add`), `throughput` or `active`.
            workload: String,
            /// Echo payload bytes (latency); 0 for `add`.
            #[arg(long, default_value_t = 0)]
            size: usize,
            /// Calls in flight (throughput) or connections (active).
            #[arg(long, default_value_t = 64)]
            n: usize,
            /// Seconds to run.
            #[arg(long, default_value_t = 5.0)]
            secs: f64,
        },
        /// The server process (started by the benchmark itself).
        #[command(hide = true)]
        Serve {
            /// raw, hvrpc or tarpc.
            imp: String,
            /// Where to listen.
            endpoint: String,
        },
    }

    pub(crate) fn main() -> Result<(), String> {
        match Cli::parse().command {
            Command::Serve { imp, endpoint } => {
                let imp =
                    Impl::parse(&imp).ok_or_else(|| format!("unknown implementation {imp}"))?;
                let endpoint = endpoint
                    .parse()
                    .map_err(|e| format!("bad endpoint {endpoint}: {e}"))?;
                crate::server::main(imp, &endpoint)
            }
            Command::Profile {
                imp,
                workload,
                size,
                n,
                secs,
            } => {
                let imp =
                    Impl::parse(&imp).ok_or_else(|| format!("unknown implementation {imp}"))?;
                let dur = std::time::Duration::from_secs_f64(secs);
                let out = crate::run::profile(imp, &workload, size, n, dur)?;
                println!("{out}");
                Ok(())
            }
            Command::Run {
                quick,
                transport,
                rounds,
                json,
            } => {
                let transport = match transport {
                    TransportArg::Unix => Transport::Unix,
                    TransportArg::Vsock => {
                        // The machines this runs on are VMs whose vsock device is not ours.
                        if std::env::var("HVRPC_IN_GUEST").as_deref() != Ok("1") {
                            return Err("refusing AF_VSOCK outside the test VM \
                                        (HVRPC_IN_GUEST=1 is not set)"
                                .into());
                        }
                        Transport::Vsock
                    }
                };
                let mut plan = Plan::new(quick, transport);
                if let Some(rounds) = rounds {
                    plan.rounds = rounds.max(1);
                }
                let results = crate::run::run(&plan)?;
                print!("{}", crate::report::text(&results));
                match json.as_deref() {
                    Some(p) if p == Path::new("-") => {
                        println!("{}", crate::vm::BEGIN);
                        println!("{}", to_json(&results)?);
                        println!("{}", crate::vm::END);
                    }
                    Some(p) => write(p, to_json(&results)?.as_bytes())?,
                    None => {}
                }
                Ok(())
            }
            Command::Report {
                quick,
                out_dir,
                from,
                no_vm,
                vm_from,
                no_callgrind,
            } => {
                let out_dir = out_dir
                    .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs"));
                let mut results: Results = match &from {
                    Some(p) => read_json(p)?,
                    None => crate::run::run(&Plan::new(quick, Transport::Unix))?,
                };
                if !no_callgrind && results.instructions.is_none() {
                    match crate::callgrind::measure(16, if quick { 1.0 } else { 3.0 }) {
                        Ok(i) => results.instructions = Some(i),
                        Err(e) => eprintln!("[bench] no instruction counts: {e}"),
                    }
                }
                print!("{}", crate::report::text(&results));
                let vm: Result<Results, String> = match (&vm_from, no_vm) {
                    (Some(p), _) => read_json(p),
                    (None, true) => Err("skipped (`--no-vm`).".into()),
                    (None, false) => crate::vm::run_in_guest(),
                };
                if let Err(e) = &vm {
                    eprintln!("[bench] no AF_VSOCK results: {e}");
                }
                let notes_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("NOTES.md");
                let notes = std::fs::read_to_string(&notes_path).ok();
                let md = crate::report::markdown(
                    &results,
                    vm.as_ref().map_err(String::as_str),
                    notes.as_deref(),
                    "benchmarks.png",
                );
                std::fs::create_dir_all(&out_dir)
                    .map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
                let md_path = out_dir.join("BENCHMARKS.md");
                write(&md_path, md.as_bytes())?;
                let png_path = out_dir.join("benchmarks.png");
                crate::report::plot(&results, &png_path)?;
                eprintln!(
                    "[bench] wrote {} and {}",
                    md_path.display(),
                    png_path.display()
                );
                Ok(())
            }
        }
    }

    fn to_json(r: &Results) -> Result<String, String> {
        serde_json::to_string_pretty(r).map_err(|e| format!("encoding the results: {e}"))
    }

    fn read_json(p: &Path) -> Result<Results, String> {
        let text =
            std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
    }

    fn write(p: &Path, bytes: &[u8]) -> Result<(), String> {
        std::fs::write(p, bytes).map_err(|e| format!("writing {}: {e}", p.display()))
    }
}
