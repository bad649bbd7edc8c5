//! The runtime under another path: re-exported by a facade crate (the same mechanism serves a
//! renamed dependency).

use hvrpc_tests::facade as my_rpc;

#[my_rpc::service(port = 11, crate = "hvrpc_tests::facade")]
pub trait Renamed {
    async fn hello(name: String) -> String;
}

struct Imp;

impl Renamed for Imp {
    async fn hello(&self, _ctx: my_rpc::Context, name: String) -> String {
        name
    }
}

fn main() {
    let _ = my_rpc::Server::new().add_service(RenamedServer::new(Imp));
}
