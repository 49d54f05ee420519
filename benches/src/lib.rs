//! Shared pieces of boad's benchmarks: the record every measurement is written as
//! ([`record::Record`], one JSON object per line in `results.jsonl`), the plots made from them
//! ([`plot`]), the userspace baselines ([`baseline`]), latency statistics ([`stats`]), what a collective costs the
//! machine (CPU, context switches: [`cost`]) and the `strace` fallback of system call counting
//! ([`strace`]; the counter itself is `boad_ebpf_loader::SyscallCounter`).
#![deny(missing_docs)]

pub mod baseline;
pub mod cost;
pub mod graph;
pub mod plot;
pub mod record;
pub mod report;
pub mod stats;
pub mod strace;
