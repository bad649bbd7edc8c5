//! Reflection: the full schemas of the services a server offers — types, methods, argument
//! names and doc comments — fetched on demand by a peer (`hvrpc describe`, `hvrpc call`), not
//! sent in every handshake (which carries only hashes). It is an ordinary hvrpc service,
//! `hvrpc.Reflection`, that every [`Server`](crate::Server) serves unless told not to
//! ([`Server::reflection`](crate::Server::reflection)); docs/PROTOCOL.md §10.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::schema::{ServiceSchema, ServiceSpec};
use crate::service::Context;

/// Why a server did not describe itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ReflectionError {
    /// The server's owner turned reflection off ([`Server::reflection`](crate::Server::reflection)).
    #[error("reflection is turned off on this server")]
    Disabled,
}

/// Describes what a server serves.
#[crate::service(port = 0x4856_5246, name = "hvrpc.Reflection", crate = "crate")]
pub trait Reflection {
    /// The schemas of every service the server offers on this connection, this one included.
    async fn describe() -> Result<Vec<ServiceSchema>, ReflectionError>;
}

/// The reflection a server serves: its services' specs, or a refusal.
pub(crate) struct Reflect {
    /// `None`: reflection is off.
    pub(crate) specs: Option<Vec<Arc<ServiceSpec>>>,
}

impl Reflection for Reflect {
    async fn describe(&self, _ctx: Context) -> Result<Vec<ServiceSchema>, ReflectionError> {
        let specs = self.specs.as_ref().ok_or(ReflectionError::Disabled)?;
        let mut out: Vec<ServiceSchema> = specs.iter().map(|s| s.schema().clone()).collect();
        if let Ok(me) = <ReflectionClient as crate::ServiceDef>::spec() {
            out.push(me.schema().clone());
        }
        Ok(out)
    }
}
