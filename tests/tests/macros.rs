//! `#[hvrpc::service]` expansion: cases that must compile, and one case per error with the
//! exact message it must give (`tests/ui/fail/*.stderr`).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}
