//! The eBPF programs' per-CPU counters as userspace reads them back.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boad_ebpf_loader::readback::exercise_counters(data));
