//! A type without serde's traits: reported at the type, saying what to derive (rustc's own
//! errors about the generated code follow).
pub struct Opaque;

#[hvrpc::service(port = 1)]
pub trait S {
    async fn take(x: Opaque) -> u32;
}
fn main() {}
