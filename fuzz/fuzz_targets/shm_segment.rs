//! A shared-memory segment a peer scribbled on: ring positions, record headers, messages, abort and call slots.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boad::fuzzing::shm_segment(data));
