//! Fuzzes the HTTP/1.1 fast path's codec (`proxy::h1::parse`): request heads, their
//! rewriting, response heads and chunked bodies, on arbitrary bytes. The properties are in
//! `../props/h1_request.rs` (shared with the bounded stable test
//! `crates/proxy/tests/h1_fuzz.rs`); the seeds in `seeds/h1_request/` are request
//! smuggling cases.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../props/h1_request.rs"]
mod props;

fuzz_target!(|data: &[u8]| props::check(data));
