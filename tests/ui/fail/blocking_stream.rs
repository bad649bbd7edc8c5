#[hvrpc::service(port = 1)]
pub trait S {
    #[hvrpc(blocking)]
    async fn tail(path: String) -> hvrpc::Streaming<String>;
}
fn main() {}
