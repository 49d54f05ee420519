//! The env:// store's lines (a rank's requests, the store's replies, the handshake's role):
//! arbitrary bytes never panic, lines stay bounded, and what parses formats back the same.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boad::fuzzing::envstore_lines(data));
