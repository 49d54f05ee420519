//! The eBPF programs' per-CPU counters as userspace reads them back.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boad::fuzzing::kernel_counters(data));
