//! What evolving services use: methods behind `cfg`, a `Result` behind an alias.
use serde::{Deserialize, Serialize};

/// An error.
#[derive(Debug, Serialize, Deserialize)]
pub struct AgentError(pub String);

/// The agent's own result alias.
pub type AgentResult<T> = Result<T, AgentError>;

/// An agent.
#[hvrpc::service(port = 9)]
pub trait Agent {
    /// Always there.
    async fn version() -> String;
    /// Only in builds with the feature; peers ask `peer_supports` before calling it.
    #[cfg(any())]
    async fn never_built() -> u32;
    /// A typed error through an alias.
    #[hvrpc(result)]
    async fn stat(path: String) -> AgentResult<u64>;
}

struct A;
impl Agent for A {
    async fn version(&self, _: hvrpc::Context) -> String {
        "1".into()
    }
    async fn stat(&self, _: hvrpc::Context, path: String) -> AgentResult<u64> {
        Err(AgentError(path))
    }
}

fn main() {
    use hvrpc::ServiceDef;
    assert_eq!(AgentClient::METHODS, ["version", "stat"]);
    let spec = AgentClient::spec().unwrap();
    assert_eq!(spec.desc().methods.len(), 2);
    let _server = hvrpc::Server::new().add_service(AgentServer::new(A));
    // The alias's error travels typed: the client's method returns `Result<u64, Error<AgentError>>`.
    #[allow(dead_code)]
    async fn typed(c: AgentClient) {
        let r: Result<u64, hvrpc::Error<AgentError>> = c.stat("x".into()).await;
        let _ = r;
    }
}
