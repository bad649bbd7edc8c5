#[hvrpc::service(port = 1)]
pub trait S {
    async fn clone() -> u32;
}
fn main() {}
