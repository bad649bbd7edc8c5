#[hvrpc::service(port = 4294967296)]
pub trait S {
    async fn f();
}
fn main() {}
