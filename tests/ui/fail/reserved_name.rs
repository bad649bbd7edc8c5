#[hvrpc::service(port = 1)]
pub trait S {
    async fn connect(x: u32);
}
fn main() {}
