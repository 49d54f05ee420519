//! Replies of a PMI-2 server (Slurm's `srun --mpi=pmi2`), as a rank reads them: the init line,
//! length fields and messages never panic, what parses encodes back the same, and the checks of
//! each command's response hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| boad::fuzzing::pmi2_replies(data));
