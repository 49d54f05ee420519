//! Shared pieces of boad's benchmarks: the record every measurement is written as
//! ([`record::Record`], one JSON object per line in `results.jsonl`) and the plots made from them
//! ([`plot`]).
#![deny(missing_docs)]

pub mod graph;
pub mod plot;
pub mod record;
