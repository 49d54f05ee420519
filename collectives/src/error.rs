//! The crate's error type, composed of one error type per subsystem.

use crate::bootstrap::BootstrapError;
use crate::types::{DType, Op, Signature};

/// Result of every boad call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error boad returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Finding the job or its peers failed.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    /// A bad argument or setting on this rank.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// The network transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A collective could not complete because of another rank.
    #[error(transparent)]
    Collective(#[from] CollectiveError),
}

/// A bad argument or setting, found on this rank before anything was sent.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UsageError {
    /// The root is not a rank of the communicator.
    #[error("rank {rank}: root {root} is out of range for a communicator of {size} ranks")]
    InvalidRoot {
        /// This rank.
        rank: usize,
        /// The root given.
        root: usize,
        /// Communicator size.
        size: usize,
    },
    /// A buffer has the wrong length.
    #[error("rank {rank}: {what} has {got} elements but {expected} are needed")]
    BufferLength {
        /// This rank.
        rank: usize,
        /// Which buffer.
        what: &'static str,
        /// Elements needed.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// The op is not defined on the element type (bitwise and logical ops on floats).
    #[error("rank {rank}: op {op} is not defined on {dtype} (bitwise and logical ops take integers only)")]
    OpNotSupported {
        /// This rank.
        rank: usize,
        /// The op.
        op: Op,
        /// The dtype.
        dtype: DType,
    },
    /// A message would be larger than the wire format allows.
    #[error("rank {rank}: a message of {bytes} bytes is too large (at most {max})")]
    TooLarge {
        /// This rank.
        rank: usize,
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A binding (C, Python) rejected an argument of a collective.
    #[error("rank {rank}: {what}")]
    Invalid {
        /// This rank.
        rank: usize,
        /// What was wrong.
        what: String,
    },
    /// An environment setting is invalid.
    #[error("{name}={value:?} is invalid: {why}")]
    Config {
        /// Variable name.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        why: String,
    },
}

/// A failure of the network transport itself.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A socket call failed.
    #[error("rank {rank}: {what} failed: {source}")]
    Io {
        /// This rank.
        rank: usize,
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// A collective that failed because of what another rank did (or did not do).
#[derive(Debug, Clone, thiserror::Error)]
pub enum CollectiveError {
    /// A peer stayed silent past the timeout.
    #[error("rank {rank}: {call}: rank {peer} sent nothing for {waited_ms} ms (BOAD_TIMEOUT_MS={timeout_ms}); it may be hung, dead or not calling this collective")]
    Timeout {
        /// This rank.
        rank: usize,
        /// The collective, e.g. `allreduce #7`.
        call: String,
        /// The silent rank.
        peer: usize,
        /// How long it was silent.
        waited_ms: u64,
        /// The timeout.
        timeout_ms: u64,
    },
    /// A peer exited while this rank needed data from it.
    #[error("rank {rank}: {call}: rank {peer} exited with status {code} before sending the data this rank waits for")]
    PeerExited {
        /// This rank.
        rank: usize,
        /// The collective.
        call: String,
        /// The rank that exited.
        peer: usize,
        /// Its exit status (128+signal if killed).
        code: i32,
    },
    /// Two ranks made different calls for the same collective.
    #[error(
        "rank {rank}: collective #{seq}: this rank called {mine} but rank {peer} called {theirs}"
    )]
    Mismatch {
        /// This rank.
        rank: usize,
        /// Collective sequence number.
        seq: u32,
        /// The other rank.
        peer: usize,
        /// This rank's call.
        mine: Signature,
        /// The other rank's call.
        theirs: Signature,
    },
    /// Another rank reported that this collective failed.
    #[error("rank {rank}: collective #{seq} failed on rank {by}: {reason}")]
    Aborted {
        /// This rank.
        rank: usize,
        /// Collective sequence number.
        seq: u32,
        /// The rank that reported it.
        by: usize,
        /// Its error.
        reason: String,
    },
    /// A peer sent something inconsistent with the call.
    #[error("rank {rank}: {call}: {what}")]
    Protocol {
        /// This rank.
        rank: usize,
        /// The collective.
        call: String,
        /// What was wrong.
        what: String,
    },
}
