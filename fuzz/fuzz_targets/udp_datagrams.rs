//! UDP datagrams from a peer's address or a stranger's: classification (header, source, chunk offsets, sizes), admission and message assembly.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boad::fuzzing::udp_datagrams(data));
