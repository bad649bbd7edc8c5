//! `#[hvrpc::service]` expansion: cases that must compile, and one case per error with the
//! exact message it must give (`tests/ui/fail/*.stderr`).
//!
//! Not under Windows: trybuild runs cargo itself, which a test binary under Wine cannot; the
//! expansion does not depend on the target.
#![cfg(not(windows))]

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}
