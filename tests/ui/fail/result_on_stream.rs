#[hvrpc::service(port = 1)]
pub trait S {
    #[hvrpc(result)]
    async fn watch() -> hvrpc::Streaming<u32>;
}
fn main() {}
