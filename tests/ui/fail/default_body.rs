#[hvrpc::service(port = 1)]
pub trait S {
    async fn f() {}
}
fn main() {}
