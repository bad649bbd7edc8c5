//! The `hvrpc` tool as a user runs it.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_hvrpc");

fn hvrpc(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn guid_and_port_known_answers() {
    let o = hvrpc(&["guid", "2761"]);
    assert!(o.status.success());
    assert_eq!(stdout(&o), "00000ac9-facb-11e6-bd58-64006a7986d3\n");
    assert_eq!(
        stdout(&hvrpc(&["guid", "0x4856"])),
        "00004856-facb-11e6-bd58-64006a7986d3\n"
    );
    let o = hvrpc(&["port", "{00000AC9-FACB-11E6-BD58-64006A7986D3}"]);
    assert!(o.status.success());
    assert_eq!(stdout(&o), "2761\n");
}

#[test]
fn bad_input_is_a_clear_error() {
    let o = hvrpc(&["port", "5a7e3e8d-2c1b-4d3e-9f00-112233445566"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is not a vsock template GUID"),
        "{}",
        stderr(&o)
    );
    let o = hvrpc(&["port", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("expected a service id"),
        "{}",
        stderr(&o)
    );
    let o = hvrpc(&["guid", "4294967296"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not a port"), "{}", stderr(&o));
    let o = hvrpc(&[
        "register",
        "--name",
        "x",
        "--port",
        "1",
        "--id",
        "5a7e3e8d-2c1b-4d3e-9f00-112233445566",
    ]);
    assert_eq!(o.status.code(), Some(2), "--port and --id together");
    let o = hvrpc(&["ping", "vsock:/3"]);
    assert_eq!(o.status.code(), Some(2));
    let o = hvrpc(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(hvrpc(&["--help"]).status.success());
}

#[cfg(not(windows))]
#[test]
fn windows_only_commands_say_so() {
    for args in [
        &["list"][..],
        &["register", "--name", "svc", "--port", "18518"],
        &["unregister", "--port", "18518"],
        &["vms"],
    ] {
        let o = hvrpc(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&o).contains("Windows host"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}

#[cfg(unix)]
mod live {
    use super::*;
    use hvrpc::{Context, Server};

    /// A service to ping.
    #[hvrpc::service(port = 77)]
    pub trait Pingable {
        /// Answers.
        async fn hello() -> String;
    }

    struct Imp;
    impl Pingable for Imp {
        async fn hello(&self, _: Context) -> String {
            "hi".into()
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn ping_reports_the_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.sock");
        let listener = hvrpc::transport::Listener::bind(&hvrpc::Endpoint::unix(&path))
            .await
            .unwrap();
        tokio::spawn(
            Server::new()
                .add_service(PingableServer::new(Imp))
                .serve_with_shutdown(listener, std::future::pending()),
        );
        let ep = format!("unix://{}", path.display());
        let o = tokio::task::spawn_blocking(move || hvrpc(&["ping", &ep, "--json"]))
            .await
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let info: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(info["protocol_version"], 2);
        assert!(info["agent"].as_str().unwrap().starts_with("hvrpc/"));
        assert_eq!(info["services"][0]["name"], "Pingable");
        let methods: Vec<&str> = <PingableClient as hvrpc::ServiceDef>::METHODS.to_vec();
        assert_eq!(info["services"][0]["methods"], serde_json::json!(methods));

        // Nobody there: a clear error, exit 1.
        let missing = format!("unix://{}", dir.path().join("none.sock").display());
        let o =
            tokio::task::spawn_blocking(move || hvrpc(&["ping", &missing, "--timeout-ms", "500"]))
                .await
                .unwrap();
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr(&o).starts_with("hvrpc: cannot connect to unix://"),
            "{}",
            stderr(&o)
        );
    }

    #[test]
    fn vms_lists_hybrid_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let _a = std::os::unix::net::UnixListener::bind(dir.path().join("vm1.vsock")).unwrap();
        let pattern = format!("{}/*.vsock", dir.path().display());
        let o = hvrpc(&["vms", "--hybrid", &pattern, "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let rows: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(
            rows[0]["socket"],
            dir.path().join("vm1.vsock").display().to_string()
        );
    }
}

/// Serves the guest-info agent (the library's implementation) on TCP loopback in this process
/// (TCP, so that the tests run under Wine too); returns its endpoint.
async fn agent(server: hvrpc::Server) -> String {
    let ep: hvrpc::Endpoint = "tcp://127.0.0.1:0".parse().unwrap();
    let listener = hvrpc::transport::Listener::bind(&ep).await.unwrap();
    let bound = listener.local_endpoint().to_string();
    tokio::spawn(server.serve_with_shutdown(listener, std::future::pending()));
    bound
}

/// An endpoint nobody listens on: a loopback port just bound and released.
async fn nobody() -> String {
    let ep: hvrpc::Endpoint = "tcp://127.0.0.1:0".parse().unwrap();
    let listener = hvrpc::transport::Listener::bind(&ep).await.unwrap();
    listener.local_endpoint().to_string()
}

async fn hvrpc_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || Command::new(BIN).args(&args).output().unwrap())
        .await
        .unwrap()
}

/// The JSON's shape: keys and kinds of values, recursively (for values that change between
/// two calls, like free memory). IP addresses are left out: serde writes them as text for
/// human-readable formats (serde_json) and as an enum of octets for postcard, which is what
/// `hvrpc call` shows (hvrpc::json's documented caveat).
fn shape(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let s = if k == "addr" { Value::Null } else { shape(v) };
                    (k.clone(), s)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        Value::Number(_) => Value::String("number".into()),
        Value::String(_) => Value::String("string".into()),
        other => other.clone(),
    }
}

/// `hvrpc call` of every guest-info method prints what the typed client gets, as serde_json
/// writes it: exactly for the values that do not change between calls, by shape for the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_every_guest_info_method_as_the_typed_client_sees_it() {
    use guest_info::GuestInfoClient;
    let ep = agent(
        hvrpc::Server::new().add_service(guest_info::GuestInfoServer::new(guest_info::Agent)),
    )
    .await;
    let client = GuestInfoClient::connect(&ep.parse().unwrap())
        .await
        .unwrap();
    let call = |m: &str| hvrpc_async(vec!["call".into(), ep.clone(), format!("GuestInfo.{m}")]);
    macro_rules! compare {
        ($m:ident, $exact:expr) => {{
            let o = call(stringify!($m)).await;
            // The method's own error (a collector this platform lacks, under Wine) is printed
            // as JSON on stderr with exit status 3.
            let compared = match client.$m().await {
                Ok(v) => {
                    assert!(o.status.success(), "{}: {}", stringify!($m), stderr(&o));
                    let got: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
                    Some((got, serde_json::to_value(v).unwrap()))
                }
                Err(hvrpc::Error::Application(e)) => {
                    assert_eq!(
                        o.status.code(),
                        Some(3),
                        "{}: {}",
                        stringify!($m),
                        stderr(&o)
                    );
                    let got: serde_json::Value = serde_json::from_str(&stderr(&o)).unwrap();
                    // `{"Variant": "message"}`, as the typed error's Debug names it.
                    let variant = got.as_object().and_then(|o| o.keys().next()).unwrap();
                    assert!(
                        format!("{e:?}").starts_with(variant.as_str()),
                        "{got} vs {e:?}"
                    );
                    None
                }
                Err(e) => panic!("{}: {e}", stringify!($m)),
            };
            if let Some((got, typed)) = compared {
                if $exact {
                    assert_eq!(got, typed, "{}", stringify!($m));
                } else {
                    assert_eq!(shape(&got), shape(&typed), "{}", stringify!($m));
                }
            }
        }};
    }
    compare!(agent_info, true);
    compare!(os_info, true);
    compare!(hostname, true);
    compare!(users, true);
    compare!(time, false);
    compare!(load, false);
    compare!(memory, false);
    compare!(network_interfaces, false);
    compare!(filesystems, false);
    // A stream: one JSON line per item, as many as asked for.
    let o = tokio::task::spawn_blocking({
        let ep = ep.clone();
        move || {
            let mut child = Command::new(BIN)
                .args(["call", &ep, "GuestInfo.watch", r#"{"interval_ms": 100}"#])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut lines = Vec::new();
            let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
            for _ in 0..3 {
                let mut line = String::new();
                std::io::BufRead::read_line(&mut out, &mut line).unwrap();
                lines.push(line);
            }
            let _ = child.kill();
            let _ = child.wait();
            lines
        }
    })
    .await
    .unwrap();
    let typed = serde_json::to_value(
        futures_util::StreamExt::next(&mut client.watch(100).await.unwrap())
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    for line in o {
        let item: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(shape(&item), shape(&typed), "{line}");
    }
}

/// A bad argument names its JSON path; a missing method lists the real ones; an unreachable
/// endpoint is a transport error; each with its own exit status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_errors_have_their_own_exit_status_and_say_where() {
    let ep = agent(
        hvrpc::Server::new().add_service(guest_info::GuestInfoServer::new(guest_info::Agent)),
    )
    .await;
    let o = hvrpc_async(vec![
        "call".into(),
        ep.clone(),
        "GuestInfo.watch".into(),
        r#"{"interval_ms": "fast"}"#.into(),
    ])
    .await;
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(".args.interval_ms: expected u32, got \"fast\""),
        "{}",
        stderr(&o)
    );
    let o = hvrpc_async(vec!["call".into(), ep.clone(), "GuestInfo.nope".into()]).await;
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("it has: agent_info, os_info"),
        "{}",
        stderr(&o)
    );
    let nobody = nobody().await;
    let o = hvrpc_async(vec![
        "call".into(),
        nobody.clone(),
        "GuestInfo.hostname".into(),
        "--timeout-ms".into(),
        "500".into(),
    ])
    .await;
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains(&nobody), "{}", stderr(&o));
}

/// describe renders signatures and types; with reflection off, the server says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_and_reflection_turned_off() {
    let ep = agent(
        hvrpc::Server::new().add_service(guest_info::GuestInfoServer::new(guest_info::Agent)),
    )
    .await;
    let o = hvrpc_async(vec!["describe".into(), ep.clone()]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for want in [
        "service GuestInfo",
        "  /// The host name.\n  fn hostname() -> Result<String, InfoError>",
        "  fn watch(interval_ms: u32) -> Streaming<Sample>",
        "  enum InfoError { Unsupported(String), Failed(String) }",
        "service hvrpc.Reflection",
    ] {
        assert!(text.contains(want), "lacks {want:?}:\n{text}");
    }
    let o = hvrpc_async(vec!["describe".into(), ep.clone(), "--json".into()]).await;
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(json[0]["name"], "GuestInfo");
    let closed = agent(
        hvrpc::Server::new()
            .add_service(guest_info::GuestInfoServer::new(guest_info::Agent))
            .reflection(false),
    )
    .await;
    let o = hvrpc_async(vec!["describe".into(), closed]).await;
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("reflection is turned off on this server"),
        "{}",
        stderr(&o)
    );
}

/// Ctrl-C during a streamed call cancels it on the server: the agent's call ends, and the tool
/// exits 130.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_a_streamed_call_on_the_server() {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Option<hvrpc::Connection>>> = Arc::default();
    let ep = agent(
        hvrpc::Server::new()
            .add_service(guest_info::GuestInfoServer::new(guest_info::Agent))
            .on_connection({
                let seen = Arc::clone(&seen);
                move |c| *seen.lock().unwrap() = Some(c)
            }),
    )
    .await;
    let mut child = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["call", &ep, "GuestInfo.watch", r#"{"interval_ms": 100}"#])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    })
    .await
    .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        line
    })
    .await
    .unwrap();
    assert!(first.contains("uptime_seconds"), "{first}");
    let conn = seen.lock().unwrap().clone().expect("the tool connected");
    assert_eq!(conn.incoming_calls(), 1, "the stream runs on the server");
    // SAFETY: sending SIGINT to our own child process, whose pid we hold.
    #[allow(unsafe_code)]
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(sent, 0);
    let status = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(status.status.code(), Some(130), "{}", stderr(&status));
    assert!(stderr(&status).contains("cancelled"), "{}", stderr(&status));
    for _ in 0..100 {
        if conn.incoming_calls() == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the server still runs the call: {}", conn.incoming_calls());
}

/// A service with an input stream each way.
mod tally {
    use futures_util::StreamExt;
    use hvrpc::{Context, Streaming};

    #[hvrpc::service(port = 0x4873)]
    pub trait Tally {
        /// Adds the items to `start`.
        async fn sum(start: u64, items: Streaming<u64>) -> u64;
        /// Answers each line upper-cased, as it comes.
        async fn shout(input: Streaming<String>) -> Streaming<String>;
    }

    pub(crate) struct Imp;
    impl Tally for Imp {
        async fn sum(&self, _: Context, start: u64, mut items: Streaming<u64>) -> u64 {
            let mut total = start;
            while let Some(Ok(v)) = items.next().await {
                total += v;
            }
            total
        }
        async fn shout(&self, _: Context, input: Streaming<String>) -> Streaming<String> {
            Streaming::try_new(input.map(|line| line.map(|l| l.to_uppercase())))
        }
    }
}

/// `hvrpc` with `input` on its stdin.
async fn hvrpc_with_stdin(args: Vec<String>, input: impl Into<String>) -> Output {
    use std::io::Write as _;
    use std::process::Stdio;
    let input: String = input.into();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

/// A method that takes an input stream reads its items from stdin, one JSON value a line
/// (blank lines skipped); describe shows the stream; a bad line names its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_sends_an_input_stream_from_stdin_as_json_lines() {
    let ep = agent(hvrpc::Server::new().add_service(tally::TallyServer::new(tally::Imp))).await;
    let call = |m: &str, args: &[&str]| {
        let mut v = vec!["call".to_owned(), ep.clone(), m.to_owned()];
        v.extend(args.iter().map(|a| (*a).to_owned()));
        v
    };
    let o = hvrpc_with_stdin(call("Tally.sum", &[r#"{"start": 1}"#]), "2\n3\n\n4\n").await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "10");
    let o = hvrpc_with_stdin(call("Tally.sum", &["[5]"]), "").await;
    assert_eq!(stdout(&o).trim(), "5", "{}", stderr(&o));
    let o = hvrpc_with_stdin(call("Tally.shout", &[]), "\"ab\"\n\"cd\"\n").await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "\"AB\"\n\"CD\"\n");
    let o = hvrpc_with_stdin(call("Tally.sum", &[r#"{"start": 1}"#]), "2\n\"x\"\n").await;
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(".input[1]: expected u64"),
        "{}",
        stderr(&o)
    );
    let o = hvrpc_with_stdin(call("Tally.sum", &["-"]), "").await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("reads its input stream from stdin"));
    let o = hvrpc_async(vec!["describe".into(), ep.clone()]).await;
    let text = stdout(&o);
    for want in [
        "fn sum(start: u64, items: Streaming<u64>) -> u64",
        "fn shout(input: Streaming<String>) -> Streaming<String>",
    ] {
        assert!(text.contains(want), "lacks {want:?}:\n{text}");
    }
}

/// Every method of the agent's file service through `hvrpc call`, over a Unix socket (the file
/// service refuses TCP peers): results as the typed client gets them (bytes as base64, a
/// random upload id exact beyond 2^53), the method's own errors as JSON on stderr with exit
/// status 3, arguments from stdin with `-`, `--compact`, and `--timeout` ending a call with
/// exit status 5.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_every_guest_files_method_and_each_kind_of_outcome() {
    use guest_info::files::{FileShare, GuestFilesClient, GuestFilesServer};
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("hello.txt"), "hello\n").unwrap();
    let ep: hvrpc::Endpoint = format!("unix://{}", dir.path().join("agent.sock").display())
        .parse()
        .unwrap();
    let listener = hvrpc::transport::Listener::bind(&ep).await.unwrap();
    let server = hvrpc::Server::new()
        .add_service(GuestFilesServer::new(std::sync::Arc::new(
            FileShare::new(&share).unwrap(),
        )))
        .add_service(guest_info::GuestInfoServer::new(guest_info::Agent));
    tokio::spawn(server.serve_with_shutdown(listener, std::future::pending()));
    let typed = GuestFilesClient::connect(&ep).await.unwrap();
    let ep = ep.to_string();
    let args = |m: &str, rest: &[&str]| {
        let mut v = vec!["call".to_owned(), ep.clone(), format!("GuestFiles.{m}")];
        v.extend(rest.iter().map(|a| (*a).to_owned()));
        v
    };
    let json = |o: &Output| -> serde_json::Value {
        assert!(o.status.success(), "{}", stderr(o));
        serde_json::from_str(&stdout(o)).unwrap()
    };

    // stat: pretty by default, one line with --compact, the typed client's value either way.
    let want = serde_json::to_value(typed.stat("hello.txt".into()).await.unwrap()).unwrap();
    let o = hvrpc_async(args("stat", &[r#"{"path": "hello.txt"}"#])).await;
    assert_eq!(json(&o), want);
    assert!(stdout(&o).trim().contains('\n'), "pretty: {}", stdout(&o));
    let o = hvrpc_async(args("stat", &[r#"["hello.txt"]"#, "--compact"])).await;
    assert_eq!(json(&o), want);
    assert_eq!(
        stdout(&o).trim().lines().count(),
        1,
        "compact: {}",
        stdout(&o)
    );
    // Arguments from stdin.
    let o = hvrpc_with_stdin(args("stat", &["-"]), r#"{"path": "hello.txt"}"#).await;
    assert_eq!(json(&o), want);

    // The method's own error: JSON on stderr, exit status 3, as the typed client's error.
    let o = hvrpc_async(args("stat", &[r#"{"path": "nope.txt"}"#])).await;
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err: serde_json::Value = serde_json::from_str(&stderr(&o)).unwrap();
    let Err(hvrpc::Error::Application(typed_err)) = typed.stat("nope.txt".into()).await else {
        panic!("the typed client got no error");
    };
    assert_eq!(err, serde_json::to_value(typed_err).unwrap());
    assert!(err.get("NotFound").is_some(), "{err}");
    let o = hvrpc_async(args("stat", &[r#"{"path": "../etc/passwd"}"#])).await;
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("Refused"), "{}", stderr(&o));

    // read: a stream of Result<Bytes, FileError>: one line per item (bytes in base64); an
    // item that is the method's error ends it, as the method's own error.
    let o = hvrpc_async(args("read", &[r#"{"path": "hello.txt", "offset": 1}"#])).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "\"ZWxsbwo=\"\n");
    let o = hvrpc_async(args("read", &[r#"{"path": "nope.txt", "offset": 0}"#])).await;
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("NotFound"), "{}", stderr(&o));

    // The chunked upload: the random id goes back in exactly as it came out.
    let o = hvrpc_async(args("write_begin", &[r#"{"path": "w.txt"}"#, "--compact"])).await;
    // (A method's `Ok` value is printed as itself.)
    let id_num: u64 = stdout(&o)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no id in {}: {}", stdout(&o), stderr(&o)));
    let o = hvrpc_async(args(
        "write_chunk",
        &[&format!(
            r#"{{"id": {id_num}, "offset": 0, "data": "aGk="}}"#
        )],
    ))
    .await;
    assert_eq!(json(&o), serde_json::json!(2));
    let o = hvrpc_async(args(
        "write_commit",
        &[&format!(r#"{{"id": {id_num}, "size": 2}}"#)],
    ))
    .await;
    assert_eq!(json(&o), serde_json::json!(2));
    assert_eq!(std::fs::read_to_string(share.join("w.txt")).unwrap(), "hi");
    // The id is spent: abort now fails with the method's own error, naming it.
    let o = hvrpc_async(args("write_abort", &[&format!(r#"{{"id": {id_num}}}"#)])).await;
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains(&id_num.to_string()), "{}", stderr(&o));

    // upload: the data stream from stdin, one base64 string a line.
    let o = hvrpc_with_stdin(
        args("upload", &[r#"{"path": "up.txt"}"#]),
        "\"aGVs\"\n\"bG8=\"\n",
    )
    .await;
    assert_eq!(json(&o), serde_json::json!(5));
    assert_eq!(
        std::fs::read_to_string(share.join("up.txt")).unwrap(),
        "hello"
    );

    // The deadline: a stream that waits a minute between items ends at --timeout, exit 5.
    let o = hvrpc_async(vec![
        "call".into(),
        ep.clone(),
        "GuestInfo.watch".into(),
        r#"{"interval_ms": 60000}"#.into(),
        "--timeout".into(),
        "500ms".into(),
    ])
    .await;
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(stderr(&o).contains(&ep), "{}", stderr(&o));
    // A timeout that is not a duration is a usage error naming it.
    let o = hvrpc(&["call", &ep, "GuestInfo.hostname", "--timeout", "soon"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("\"soon\" is not a duration"),
        "{}",
        stderr(&o)
    );
}

/// A line's words as sh splits them (single quotes only: what the docs use).
#[cfg(unix)]
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                word.get_or_insert_with(String::new);
            }
            c if c.is_whitespace() && !quoted => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// The `hvrpc` commands in the guide's and the README's shell blocks are real: each line runs
/// with its endpoint swapped for one nobody serves and must fail at connecting, not at parsing
/// its flags (exit status 2), and
/// each `Service.method` a `call` names is one the agent (or this file's Tally) serves. (Unix
/// only: under Wine the source tree's paths are not the test's.)
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_in_the_docs_are_real() {
    use hvrpc::ServiceDef;
    let mut methods: Vec<String> = Vec::new();
    for spec in [
        guest_info::GuestInfoClient::spec(),
        guest_info::files::GuestFilesClient::spec(),
        tally::TallyClient::spec(),
    ] {
        let schema = spec.unwrap().schema().clone();
        methods.extend(
            schema
                .methods
                .iter()
                .map(|m| format!("{}.{}", schema.name, m.name)),
        );
    }
    let nobody = nobody().await;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let mut checked = 0;
    for doc in ["docs/GUIDE.md", "README.md"] {
        let text = std::fs::read_to_string(format!("{root}/{doc}")).unwrap();
        let mut in_sh = false;
        for line in text.lines() {
            if line.starts_with("```") {
                in_sh = line == "```sh";
                continue;
            }
            let line = line.split(" #").next().unwrap_or("").trim();
            let words = shell_words(line);
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            let args = match words.as_slice() {
                ["hvrpc", rest @ ..] => rest,
                ["cargo", "run", "-p", "hvrpc-cli", "--", rest @ ..] => rest,
                _ => continue,
            };
            if !in_sh {
                continue;
            }
            let [sub @ ("call" | "describe" | "ping"), endpoint, rest @ ..] = args else {
                continue;
            };
            assert!(
                endpoint.contains("://"),
                "{doc}: {line}: {endpoint} is not an endpoint"
            );
            if *sub == "call" {
                let method = rest.first().copied().unwrap_or_default();
                assert!(
                    methods.iter().any(|m| m == method),
                    "{doc}: {line}: no method {method} (there are: {methods:?})"
                );
            }
            // The same line against nobody: the flags parse, and it fails at connecting.
            let mut argv: Vec<String> = vec![(*sub).to_owned(), nobody.clone()];
            argv.extend(rest.iter().map(|a| (*a).to_owned()));
            let o = hvrpc_async(argv).await;
            assert_ne!(o.status.code(), Some(2), "{doc}: {line}: {}", stderr(&o));
            assert!(!o.status.success(), "{doc}: {line}: nobody answered?");
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} commands found in the docs");
}
