//! `-H` host lists and hostfiles: parsing, printing back, and placing ranks on what parsed.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boad_proto::hosts::exercise_hosts(data));
