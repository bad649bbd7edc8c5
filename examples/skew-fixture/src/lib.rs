//! Two releases of one service, `Agent`, for version-skew tests: release A (`agent-a`) and
//! release B (`agent-b`, later) differ in every way docs/PROTOCOL.md §6 discusses — methods
//! inserted, appended, removed and reordered; a struct field inserted with a default, an `Option`
//! field added, a field removed; enum variants added; an argument widened; a result type
//! changed. Each binary serves its release (`agent-X serve <endpoint>`) or calls every method
//! of its release on a peer (`agent-X call <endpoint>`), printing one line per call —
//! or prints its methods' schema hashes (`agent-X hashes`). Call lines:
//! `<call> ok <value>`, `<call> unimplemented <message>`, `<call> incompatible <message>`,
//! `<call> app-error <error>` or `<call> error <message>`. `tests/pairings.rs` runs the four
//! pairings and checks every line.

use std::fmt::Debug;
use std::future::Future;
use std::process::ExitCode;

use futures_util::{Stream, StreamExt};

use hvrpc::{Endpoint, Error, Server, Service, ServiceDef};

/// One line of output for a call's outcome.
pub fn outcome<T: Debug, E: Debug>(call: &str, r: Result<T, Error<E>>) -> String {
    match r {
        Ok(v) => format!("{call} ok {v:?}"),
        Err(Error::Unimplemented(m)) => format!("{call} unimplemented {m}"),
        Err(Error::Incompatible(m)) => format!("{call} incompatible {m}"),
        Err(Error::Application(e)) => format!("{call} app-error {e:?}"),
        Err(e) => format!("{call} error {e:?}"),
    }
}

/// What the command line asks for.
pub enum Mode {
    /// Serve the release on the endpoint: until killed, or until this many connections have
    /// come and gone.
    Serve(Endpoint, Option<usize>),
    /// Call every method on the endpoint.
    Call(Endpoint),
    /// Print the release's method hashes.
    Hashes,
}

/// Parses `serve <endpoint>` or `call <endpoint>`.
pub fn mode() -> Result<Mode, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        || "usage: agent-X serve <endpoint> [connections] | call <endpoint> | hashes".to_owned();
    let endpoint = |ep: &String| ep.parse::<Endpoint>().map_err(|e| format!("{ep}: {e}"));
    match args.as_slice() {
        [h] if h == "hashes" => Ok(Mode::Hashes),
        [c, ep] if c == "call" => Ok(Mode::Call(endpoint(ep)?)),
        [s, ep] if s == "serve" => Ok(Mode::Serve(endpoint(ep)?, None)),
        [s, ep, n] if s == "serve" => {
            let n = n
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{n}: not a positive number of connections"))?;
            Ok(Mode::Serve(endpoint(ep)?, Some(n)))
        }
        _ => Err(usage()),
    }
}

/// Serves `service` on `ep` until killed, or until `connections` connections have closed;
/// prints `listening` once bound.
pub async fn serve(
    ep: &Endpoint,
    connections: Option<usize>,
    service: impl Service,
) -> Result<(), String> {
    let listener = hvrpc::transport::Listener::bind(ep)
        .await
        .map_err(|e| format!("binding {ep}: {e}"))?;
    println!("listening");
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel::<()>();
    let server = Server::new()
        .add_service(service)
        .on_connection(move |conn| {
            let done_tx = done_tx.clone();
            tokio::spawn(async move {
                conn.closed().await;
                let _ = done_tx.send(());
            });
        });
    server
        .serve_with_shutdown(listener, async move {
            match connections {
                None => std::future::pending().await,
                Some(n) => {
                    for _ in 0..n {
                        done.recv().await;
                    }
                }
            }
        })
        .await;
    Ok(())
}

/// The service's methods as the handshake announces them: `name kind args result`, one per
/// line, hashes in hex (docs/PROTOCOL.md §6.3).
pub fn hashes<S: ServiceDef>() -> Result<String, String> {
    let spec = S::spec().map_err(|e| e.to_string())?;
    let desc = spec.desc();
    Ok(desc
        .methods
        .iter()
        .map(|m| {
            format!(
                "{}.{} {} {:016x} {:016x}\n",
                desc.name, m.name, m.kind, m.args, m.result
            )
        })
        .collect())
}

/// A stream's items as one line of text: `Tick(0), Tick(1), then <error>`.
pub async fn collect<T: Debug>(
    mut stream: impl Stream<Item = Result<T, Error>> + Unpin,
) -> Result<String, Error> {
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(e) => items.push(format!("{e:?}")),
            Err(e) => {
                items.push(format!("then {e}"));
                break;
            }
        }
    }
    Ok(items.join(", "))
}

/// Runs what the command line asks for: `serve` with `service`, `call` with `call`, `hashes`
/// for `S`.
pub async fn main<S, F, Fut>(name: &str, service: impl Service, call: F) -> ExitCode
where
    S: ServiceDef,
    F: FnOnce(Endpoint) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let r = match mode() {
        Ok(Mode::Serve(ep, n)) => serve(&ep, n, service).await,
        Ok(Mode::Call(ep)) => call(ep).await,
        Ok(Mode::Hashes) => hashes::<S>().map(|h| print!("{h}")),
        Err(e) => Err(e),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}
