#[hvrpc::service]
pub trait S {
    async fn f();
}
fn main() {}
