//! A live server fed a correct opening and then arbitrary frames.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hvrpc_fuzz::server_session(data);
});
