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

impl Error {
    /// The same error with every rank number it holds passed through `global` (a sub-transport of
    /// the hierarchical path numbers its members `0..k`; errors leave it with job ranks). Numbers
    /// inside free text (a `Protocol` error's `what`) cannot be translated: `note` is appended to
    /// such text to say how it counts.
    pub(crate) fn renumber(self, global: &dyn Fn(usize) -> usize, note: &str) -> Error {
        match self {
            Error::Bootstrap(e) => Error::Bootstrap(e),
            Error::Usage(e) => Error::Usage(match e {
                UsageError::InvalidRoot { rank, root, size } => UsageError::InvalidRoot {
                    rank: global(rank),
                    root,
                    size,
                },
                UsageError::BufferLength {
                    rank,
                    what,
                    expected,
                    got,
                } => UsageError::BufferLength {
                    rank: global(rank),
                    what,
                    expected,
                    got,
                },
                UsageError::OpNotSupported { rank, op, dtype } => UsageError::OpNotSupported {
                    rank: global(rank),
                    op,
                    dtype,
                },
                UsageError::TooLarge { rank, bytes, max } => UsageError::TooLarge {
                    rank: global(rank),
                    bytes,
                    max,
                },
                UsageError::Invalid { rank, what } => UsageError::Invalid {
                    rank: global(rank),
                    what,
                },
                e @ UsageError::Config { .. } => e,
            }),
            Error::Transport(TransportError::Io { rank, what, source }) => {
                Error::Transport(TransportError::Io {
                    rank: global(rank),
                    what,
                    source,
                })
            }
            Error::Collective(e) => Error::Collective(match e {
                CollectiveError::Timeout {
                    rank,
                    call,
                    peer,
                    waited_ms,
                    timeout_ms,
                } => CollectiveError::Timeout {
                    rank: global(rank),
                    call,
                    peer: global(peer),
                    waited_ms,
                    timeout_ms,
                },
                CollectiveError::PeerExited {
                    rank,
                    call,
                    peer,
                    code,
                } => CollectiveError::PeerExited {
                    rank: global(rank),
                    call,
                    peer: global(peer),
                    code,
                },
                CollectiveError::Mismatch {
                    rank,
                    seq,
                    peer,
                    mine,
                    theirs,
                } => CollectiveError::Mismatch {
                    rank: global(rank),
                    seq,
                    peer: global(peer),
                    mine,
                    theirs,
                },
                CollectiveError::Aborted {
                    rank,
                    seq,
                    by,
                    reason,
                } => CollectiveError::Aborted {
                    rank: global(rank),
                    seq,
                    by: global(by),
                    reason,
                },
                CollectiveError::Protocol { rank, call, what } => CollectiveError::Protocol {
                    rank: global(rank),
                    call,
                    what: format!("{what} ({note})"),
                },
            }),
        }
    }

    /// The collective an error another rank caused is about, when it says.
    pub(crate) fn seq(&self) -> Option<u32> {
        match self {
            Error::Collective(CollectiveError::Mismatch { seq, .. })
            | Error::Collective(CollectiveError::Aborted { seq, .. }) => Some(*seq),
            _ => None,
        }
    }
}
