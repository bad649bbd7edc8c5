//! At debug level every served call has an `hvrpc.serve` span, which ends with the call's
//! outcome and duration recorded into it. Its own test binary: `tracing`'s per-thread
//! subscriber (`set_default`) is unreliable while other tests' threads hit the same callsites.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hvrpc::{Context, Server};

#[hvrpc::service(port = 0x4871)]
pub trait Traced {
    /// Answered in its first poll.
    async fn add(a: u32, b: u32) -> u32;
    /// Waits `ms` first (runs in a task of its own).
    async fn sleep(ms: u64) -> u64;
    /// Panics.
    async fn boom() -> u32;
}

struct Impl;

impl Traced for Impl {
    async fn add(&self, _ctx: Context, a: u32, b: u32) -> u32 {
        a + b
    }
    async fn sleep(&self, _ctx: Context, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
    async fn boom(&self, _ctx: Context) -> u32 {
        panic!("boom")
    }
}

/// The fields of every `hvrpc.serve` span, as a subscriber sees them (creation and records).
#[derive(Clone, Default)]
struct ServeSpans(Arc<Mutex<std::collections::HashMap<u64, Fields>>>);

#[derive(Clone, Debug, Default)]
struct Fields(std::collections::BTreeMap<&'static str, String>);

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name(), value.to_string());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ServeSpans {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() == "hvrpc.serve" {
            let mut fields = Fields::default();
            attrs.record(&mut fields);
            self.0.lock().unwrap().insert(id.into_u64(), fields);
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Some(fields) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(fields);
        }
    }
}

/// With debug on (and no interceptor), every served call has an `hvrpc.serve` span with its
/// service, method, peer and id, into which the outcome and duration are recorded at its end.
#[tokio::test]
async fn at_debug_level_each_call_has_a_span_that_ends_with_its_outcome_and_duration() {
    use tracing_subscriber::layer::SubscriberExt;
    let spans = ServeSpans::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::DEBUG)
        .with(spans.clone());
    // This test's thread only: the current-thread runtime runs server and client here.
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let (listener, ep) = common::test_listener(&dir, "spans.sock").await;
    let server = Server::new().add_service(TracedServer::new(Impl));
    tokio::spawn(server.serve_with_shutdown(listener, std::future::pending()));
    let client = TracedClient::connect(&ep).await.unwrap();
    assert_eq!(client.add(2, 3).await.unwrap(), 5);
    assert_eq!(client.sleep(5).await.unwrap(), 5);
    assert!(client.boom().await.is_err());

    let mut seen = Vec::new();
    for _ in 0..1000 {
        seen = spans
            .0
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect::<Vec<_>>();
        if seen.len() == 3 && seen.iter().all(|f| f.0.contains_key("outcome")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    seen.sort_by_key(|f| f.0["id"].parse::<u64>().unwrap());
    let outline: Vec<(&str, &str)> = seen
        .iter()
        .map(|f| {
            assert_eq!(f.0["service"], "Traced");
            assert!(!f.0["peer"].is_empty());
            let took: u64 = f.0["took_us"].parse().unwrap();
            assert!(took < 60_000_000, "{took}");
            (f.0["method"].as_str(), f.0["outcome"].as_str())
        })
        .collect();
    assert_eq!(
        outline,
        [("add", "Ok"), ("sleep", "Ok"), ("boom", "Error(Internal)")]
    );
}
