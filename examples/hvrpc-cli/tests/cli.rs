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
