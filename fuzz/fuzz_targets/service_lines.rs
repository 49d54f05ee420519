//! The kernel service's lines (a client's JOB/MEMBER/STATUS/COUNTERS requests, the service's
//! GRANT/REFUSED/STATUS/COUNTERS replies) and its bounded line reader: arbitrary bytes never
//! panic, and what parses formats back to the same.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boad_proto::service::exercise(data));
