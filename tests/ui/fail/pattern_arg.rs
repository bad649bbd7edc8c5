#[hvrpc::service(port = 1)]
pub trait S {
    async fn f((a, b): (u32, u32));
}
fn main() {}
