//! Cross-crate tests for hvrpc.
//!
//! The library re-exports the runtime under another path, as a facade crate would: the
//! `renamed_crate` UI case proves generated code works through `crate = "…"` from there.

/// hvrpc, re-exported under another name.
pub use hvrpc as facade;

/// The user guide, `docs/GUIDE.md`: included here so that `cargo test` compiles and runs
/// every Rust block in it.
#[doc = include_str!("../../docs/GUIDE.md")]
pub mod guide {}
