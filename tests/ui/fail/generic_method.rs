#[hvrpc::service(port = 1)]
pub trait S {
    async fn f<T>(x: u32);
}
fn main() {}
