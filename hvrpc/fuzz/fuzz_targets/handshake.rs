//! Arbitrary bytes as a peer's whole side of a connection: preamble, Hello, and whatever
//! follows, against a server or a client.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hvrpc_fuzz::handshake(data));
