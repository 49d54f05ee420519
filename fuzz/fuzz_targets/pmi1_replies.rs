//! Replies of MPICH's Hydra to a rank's PMI-1 requests (`PMI_FD`): parsing, checks, a conversation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boad::fuzzing::pmi1_replies(data));
