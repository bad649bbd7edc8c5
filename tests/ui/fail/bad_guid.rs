#[hvrpc::service(id = "6c4eb1be-40e8-4c8b-a4d6")]
pub trait S {
    async fn f();
}
fn main() {}
