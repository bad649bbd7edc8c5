#[hvrpc::service(port = 1)]
pub trait S {
    async fn f(ctx: u32);
}
fn main() {}
