//! Generated code names everything by full path: it compiles without the prelude.
#![no_implicit_prelude]

extern crate hvrpc;
extern crate std;

#[hvrpc::service(port = 7)]
pub trait Hygienic {
    async fn get(key: std::string::String) -> std::option::Option<std::vec::Vec<u8>>;
    async fn try_it(n: u32) -> std::result::Result<u32, std::string::String>;
    async fn many(n: u32) -> hvrpc::Streaming<u32>;
}

fn main() {}
