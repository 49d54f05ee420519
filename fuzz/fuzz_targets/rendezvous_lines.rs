//! Rendezvous lines as ranks and the launcher read them: parsing, round trip, line splitting.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boad::fuzzing::rendezvous_lines(data));
