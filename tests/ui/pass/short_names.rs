//! Single-letter names a user may pick must not collide with the macro's own generics.
use serde::{Deserialize, Serialize};

/// A user type called `T`.
#[derive(Debug, Serialize, Deserialize)]
pub struct T(pub u32);

/// A service called `S`.
#[hvrpc::service(port = 3)]
pub trait S {
    async fn f(t: T) -> T;
}

struct Imp;
impl S for Imp {
    async fn f(&self, _: hvrpc::Context, t: T) -> T {
        t
    }
}

fn main() {
    let _server = hvrpc::Server::new().add_service(SServer::new(Imp));
}
