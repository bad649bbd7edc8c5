//! A client with calls in flight fed a server's correct opening and then arbitrary frames.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hvrpc_fuzz::client_session(data);
});
