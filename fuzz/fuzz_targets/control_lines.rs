//! The control lines between boadrun and its agents (job descriptions, agent lines, signals) and
//! the relay's frames: arbitrary bytes never panic, and what parses encodes back the same.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boad_proto::control::exercise_control(data));
