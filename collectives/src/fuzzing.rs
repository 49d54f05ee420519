//! Entry points for the fuzz targets (`fuzz/`, feature `fuzzing`): each feeds arbitrary bytes to
//! one decoder of what boad reads from outside and panics on any inconsistency. Not an API.

/// UDP datagrams: classification (header, source address, chunk offsets, sizes) and the receive
/// path's admission and message assembly.
pub fn udp_datagrams(data: &[u8]) {
    let _ = crate::transport::udp::exercise_datagrams(data);
}

/// Rendezvous lines, as the ranks and the launcher read them.
pub fn rendezvous_lines(data: &[u8]) {
    boad_proto::lines::exercise_lines(data);
}

/// A shared-memory segment a peer scribbled on: record headers and messages read from a ring,
/// abort slots, call slots.
pub fn shm_segment(data: &[u8]) {
    let _ = crate::transport::shm::exercise_segment(data);
}

/// The env:// store's lines, as a rank and rank 0's store read them.
pub fn envstore_lines(data: &[u8]) {
    crate::join::envstore::exercise_lines(data);
}

/// Replies of a PMI-2 server (Slurm's srun --mpi=pmi2) as the client reads them: the init line,
/// length fields, messages, the checks of each command's response.
pub fn pmi2_replies(data: &[u8]) {
    crate::join::pmi2::exercise_replies(data);
}

/// Replies of MPICH's Hydra to a rank's PMI-1 requests: line parsing, the checks of each reply,
/// and a whole conversation fed those lines.
pub fn pmi1_replies(data: &[u8]) {
    let _ = crate::join::pmi1::exercise(data);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        // The fuzz targets' harnesses on random input, so a plain `cargo test` runs them too.
        #[test]
        fn udp_datagrams(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            super::udp_datagrams(&data);
        }

        #[test]
        fn rendezvous_lines(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            super::rendezvous_lines(&data);
        }

        #[test]
        fn pmi1_replies(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            super::pmi1_replies(&data);
        }

        #[test]
        fn shm_segment(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            super::shm_segment(&data);
        }

        #[test]
        fn pmi2_replies(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            super::pmi2_replies(&data);
        }
    }
}
