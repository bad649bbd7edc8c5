#[hvrpc::service(port = 1, version = 2)]
pub trait S {
    async fn f();
}
fn main() {}
