//! The Rust program of README.md ("Using it from Rust"), extracted by `build.rs`: run by
//! `scripts/check-readme.sh` under `boadrun -n 4`.
include!(concat!(env!("OUT_DIR"), "/readme.rs"));
