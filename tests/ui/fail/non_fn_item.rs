#[hvrpc::service(port = 1)]
pub trait S {
    const X: u32;
    async fn f();
}
fn main() {}
