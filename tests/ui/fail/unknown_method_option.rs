#[hvrpc::service(port = 1)]
pub trait S {
    #[hvrpc(fast)]
    async fn f();
}
fn main() {}
