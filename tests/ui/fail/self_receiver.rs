#[hvrpc::service(port = 1)]
pub trait S {
    async fn f(&self) -> u32;
}
fn main() {}
