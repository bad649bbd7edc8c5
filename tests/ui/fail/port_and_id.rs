#[hvrpc::service(port = 1, id = "6c4eb1be-40e8-4c8b-a4d6-5b0f67d7e40f")]
pub trait S {
    async fn f();
}
fn main() {}
