//! The rendezvous handshake's server side, fed what a client (or anyone reaching the port) sends.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boad_proto::auth::exercise_server(data));
