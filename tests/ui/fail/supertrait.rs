#[hvrpc::service(port = 1)]
pub trait S: Clone {
    async fn f();
}
fn main() {}
