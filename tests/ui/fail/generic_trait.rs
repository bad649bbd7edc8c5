#[hvrpc::service(port = 1)]
pub trait S<T> {
    async fn f(x: u32);
}
fn main() {}
