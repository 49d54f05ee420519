//! Shared pieces of boad's benchmarks: the record every measurement is written as
//! ([`record::Record`], one JSON object per line in `results.jsonl`), the plots made from them
//! ([`plot`]), the userspace baselines ([`baseline`]), latency statistics ([`stats`]) and system
//! call counting ([`strace`]).
#![deny(missing_docs)]

pub mod baseline;
pub mod graph;
pub mod plot;
pub mod record;
pub mod report;
pub mod stats;
pub mod strace;
