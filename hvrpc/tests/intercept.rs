//! The server-side interceptor: it sees every call before and after, exactly once each, with
//! the outcome, and its refusal keeps the handler from running.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use hvrpc::intercept::{CallInfo, Interceptor, Outcome};
use hvrpc::{Context, Error, ErrorCode, Server};

#[hvrpc::service(port = 0x4870)]
pub trait Audited {
    /// Answered in its first poll.
    async fn add(a: u32, b: u32) -> u32;
    /// Waits `ms` first (runs in a task of its own).
    async fn sleep(ms: u64) -> u64;
    /// On a blocking thread.
    #[hvrpc(blocking)]
    async fn work(n: u32) -> u32;
    /// Panics.
    async fn boom() -> u32;
    /// Never allowed by the test's interceptor.
    async fn secret() -> String;
    /// Counts to `n`.
    async fn count(n: u32) -> hvrpc::Streaming<u32>;
}

#[derive(Default)]
struct Impl {
    ran_secret: AtomicUsize,
}

impl Audited for Arc<Impl> {
    async fn add(&self, _ctx: Context, a: u32, b: u32) -> u32 {
        a + b
    }
    async fn sleep(&self, _ctx: Context, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
    async fn work(&self, _ctx: Context, n: u32) -> u32 {
        std::thread::sleep(Duration::from_millis(5));
        n * 2
    }
    async fn boom(&self, _ctx: Context) -> u32 {
        panic!("boom")
    }
    async fn secret(&self, _ctx: Context) -> String {
        self.ran_secret.fetch_add(1, Ordering::SeqCst);
        "the secret".into()
    }
    async fn count(&self, _ctx: Context, n: u32) -> hvrpc::Streaming<u32> {
        hvrpc::Streaming::iter(0..n)
    }
}

/// Records every before and after.
#[derive(Default)]
struct Record {
    before: Mutex<Vec<(&'static str, u64)>>,
    after: Mutex<Vec<(&'static str, u64, Outcome)>>,
    panic_before: bool,
}

impl Interceptor for Record {
    fn before(&self, call: &CallInfo) -> Result<(), String> {
        // The transport's address of the peer (a Unix socket's, TCP's or vsock's here).
        assert!(!call.peer().to_string().is_empty());
        assert_eq!(call.service(), "Audited");
        if self.panic_before && call.method() == "add" {
            panic!("an interceptor bug");
        }
        self.before.lock().unwrap().push((call.method(), call.id()));
        if call.method() == "secret" {
            return Err(format!("{} may not ask for secrets", call.peer()));
        }
        Ok(())
    }

    fn after(&self, call: &CallInfo, outcome: &Outcome, _took: Duration) {
        self.after
            .lock()
            .unwrap()
            .push((call.method(), call.id(), outcome.clone()));
    }
}

impl Record {
    /// Waits until `n` afters were seen (handlers in tasks report when those end).
    async fn afters(&self, n: usize) -> Vec<(&'static str, u64, Outcome)> {
        for _ in 0..1000 {
            if self.after.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.after.lock().unwrap().clone()
    }
}

async fn start(record: Arc<Record>) -> (AuditedClient, Arc<Impl>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (listener, ep) = common::test_listener(&dir, "audited.sock").await;
    let imp = Arc::new(Impl::default());
    let server = Server::new()
        .add_service(AuditedServer::new(Arc::clone(&imp)))
        .intercept(record);
    tokio::spawn(server.serve_with_shutdown(listener, std::future::pending()));
    let client = AuditedClient::connect(&ep).await.unwrap();
    (client, imp, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_seen_before_and_after_once_with_its_outcome() {
    let record = Arc::new(Record::default());
    let (client, imp, _dir) = start(Arc::clone(&record)).await;

    assert_eq!(client.add(2, 3).await.unwrap(), 5);
    assert_eq!(client.sleep(20).await.unwrap(), 20);
    assert_eq!(client.work(21).await.unwrap(), 42);
    let e = client.boom().await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Remote {
                code: ErrorCode::Internal,
                ..
            }
        ),
        "{e}"
    );
    let e = client.secret().await.unwrap_err();
    match &e {
        Error::Remote {
            code: ErrorCode::PermissionDenied,
            message,
        } => assert!(message.contains("may not ask for secrets"), "{message}"),
        other => panic!("{other}"),
    }
    assert_eq!(
        imp.ran_secret.load(Ordering::SeqCst),
        0,
        "a refused handler ran"
    );
    let items: Vec<u32> = client
        .count(5)
        .await
        .unwrap()
        .map(|i| i.unwrap())
        .collect()
        .await;
    assert_eq!(items, [0, 1, 2, 3, 4]);
    // A deadline that passes while the handler waits.
    let e = client
        .with_timeout(Duration::from_millis(50))
        .sleep(10_000)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::DeadlineExceeded
                | Error::Remote {
                    code: ErrorCode::DeadlineExceeded,
                    ..
                }
        ),
        "{e}"
    );
    // A call the caller gives up on.
    let gave_up = tokio::time::timeout(Duration::from_millis(50), client.sleep(10_000)).await;
    assert!(gave_up.is_err());

    let afters = record.afters(8).await;
    let outcome = |m: &str| -> Vec<Outcome> {
        afters
            .iter()
            .filter(|(n, _, _)| *n == m)
            .map(|(_, _, o)| o.clone())
            .collect()
    };
    assert_eq!(outcome("add"), [Outcome::Ok]);
    assert_eq!(outcome("work"), [Outcome::Ok]);
    assert_eq!(outcome("count"), [Outcome::Ok]);
    assert_eq!(outcome("boom"), [Outcome::Error(ErrorCode::Internal)]);
    assert_eq!(
        outcome("secret"),
        [Outcome::Error(ErrorCode::PermissionDenied)]
    );
    let mut sleeps = outcome("sleep");
    sleeps.sort_by_key(|o| format!("{o:?}"));
    // The caller's Cancel at its own deadline races the server's deadline, which counts from
    // the request's arrival (a little later): the deadline call ends as either, once.
    assert!(
        sleeps == [Outcome::Cancelled, Outcome::DeadlineExceeded, Outcome::Ok]
            || sleeps == [Outcome::Cancelled, Outcome::Cancelled, Outcome::Ok],
        "{sleeps:?}"
    );
    // Exactly once each, and only for calls seen before.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut before: Vec<u64> = record.before.lock().unwrap().iter().map(|b| b.1).collect();
    let mut after: Vec<u64> = record.after.lock().unwrap().iter().map(|a| a.1).collect();
    before.sort_unstable();
    after.sort_unstable();
    assert_eq!(before.len(), 8);
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_interceptor_refuses_the_call_and_the_server_goes_on() {
    let record = Arc::new(Record {
        panic_before: true,
        ..Record::default()
    });
    let (client, _imp, _dir) = start(Arc::clone(&record)).await;
    let e = client.add(1, 2).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Remote {
                code: ErrorCode::PermissionDenied,
                ..
            }
        ),
        "{e}"
    );
    // The connection and the server survive.
    assert_eq!(client.sleep(1).await.unwrap(), 1);
    // The refused call was seen (before panicked in it): it ends once, refused.
    let mut afters = record.afters(2).await;
    afters.sort_by_key(|a| a.1);
    let seen: Vec<(&str, Outcome)> = afters.into_iter().map(|(m, _, o)| (m, o)).collect();
    assert_eq!(
        seen,
        [
            ("add", Outcome::Error(ErrorCode::PermissionDenied)),
            ("sleep", Outcome::Ok)
        ]
    );
}
