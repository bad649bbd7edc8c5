//! What the macro generates passes strict lints.
#![deny(missing_docs, unused_qualifications, unused_results, rust_2018_idioms, unreachable_pub)]
#![deny(clippy::all)]

//! A documented crate.

mod inner {
    /// A documented service.
    #[hvrpc::service(port = 9)]
    pub trait Strict {
        /// A documented method.
        async fn value(x: u32) -> u32;
        /// Another.
        async fn fallible() -> Result<(), String>;
    }
}

pub use inner::{Strict, StrictClient, StrictServer};

fn main() {}
