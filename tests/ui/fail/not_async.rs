#[hvrpc::service(port = 1)]
pub trait S {
    fn f(x: u32) -> u32;
}
fn main() {}
