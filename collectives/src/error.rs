//! The crate's error: the rank that reports it, and what happened — one error type per subsystem
//! (joining the job, a bad argument or setting, the transport's I/O, another rank).
//!
//! Every error is built through a constructor of [`Error`] that takes the reporting rank once; the
//! kinds carry the other ranks involved (`peer`, `by`), which [`Error::renumber`] maps when an error
//! leaves a level of the hierarchical path.

use crate::join::JoinError;
use crate::types::{DType, Op, Signature};

/// Result of every boad call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error boad returns: the rank that reports it (none for a setting or an environment that
/// does not parse), and what happened.
#[derive(Debug)]
pub struct Error {
    rank: Option<usize>,
    kind: ErrorKind,
}

/// What happened, by subsystem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Finding the job or its peers failed.
    #[error(transparent)]
    Join(#[from] JoinError),
    /// A bad argument or setting on this rank.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// The transport's own I/O failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A collective could not complete because of another rank.
    #[error(transparent)]
    Collective(#[from] CollectiveError),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.rank {
            Some(r) => write!(f, "rank {r}: {}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Transport(TransportError::Io { source, .. }) => Some(source),
            ErrorKind::Join(e) => e.source(),
            _ => None,
        }
    }
}

/// A bad argument or setting, found on this rank before anything was sent.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// The root is not a rank of the communicator.
    #[error("root {root} is out of range for a communicator of {size} ranks")]
    InvalidRoot {
        /// The root given.
        root: usize,
        /// Communicator size.
        size: usize,
    },
    /// A buffer has the wrong length.
    #[error("{what} has {got} elements but {expected} are needed")]
    BufferLength {
        /// Which buffer.
        what: &'static str,
        /// Elements needed.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// The op is not defined on the element type (bitwise and logical ops on floats).
    #[error("op {op} is not defined on {dtype} (bitwise and logical ops take integers only)")]
    OpNotSupported {
        /// The op.
        op: Op,
        /// The dtype.
        dtype: DType,
    },
    /// A message would be larger than the wire format allows.
    #[error("a message of {bytes} bytes is too large (at most {max})")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// A binding (C, Python) rejected an argument of a collective.
    #[error("{what}")]
    Invalid {
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

/// A failure of the transport itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A system call failed.
    #[error("{what} failed: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// A collective that failed because of what another rank did (or did not do).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CollectiveError {
    /// A peer stayed silent past the timeout, with no sign of life.
    #[error("{call}: rank {peer} sent nothing for {waited_ms} ms (BOAD_TIMEOUT_MS={timeout_ms}) and shows no sign of life (a lost network, a stopped or hung process)")]
    Timeout {
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
    #[error(
        "{call}: rank {peer} exited with status {code} before sending the data this rank waits for"
    )]
    PeerExited {
        /// The collective.
        call: String,
        /// The rank that exited.
        peer: usize,
        /// Its exit status (128+signal if killed).
        code: i32,
    },
    /// A peer's process ended (or left boad) while this rank needed data from it, seen without a
    /// launcher's word (a job started by Slurm, Hydra or env://; see `transport::gone`).
    #[error("{call}: rank {peer} is gone before sending the data this rank waits for: {how}")]
    PeerGone {
        /// The collective.
        call: String,
        /// The rank that is gone.
        peer: usize,
        /// How this rank knows, e.g. `its process (pid 4242) ended`.
        how: String,
    },
    /// Two ranks made different calls for the same collective.
    #[error("collective #{seq}: this rank called {mine} but rank {peer} called {theirs}")]
    Mismatch {
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
    #[error("collective #{seq} failed on rank {by}: {reason}")]
    Aborted {
        /// Collective sequence number.
        seq: u32,
        /// The rank that reported it.
        by: usize,
        /// Its error.
        reason: String,
    },
    /// A peer sent something inconsistent with the call.
    #[error("{call}: {what}")]
    Protocol {
        /// The collective.
        call: String,
        /// What was wrong.
        what: String,
    },
}

impl Error {
    /// An error of `kind` reported by `rank`.
    pub(crate) fn new(rank: usize, kind: impl Into<ErrorKind>) -> Error {
        Error {
            rank: Some(rank),
            kind: kind.into(),
        }
    }

    /// An error about no rank in particular (a setting or the environment).
    pub(crate) fn general(kind: impl Into<ErrorKind>) -> Error {
        Error {
            rank: None,
            kind: kind.into(),
        }
    }

    /// The rank that reports the error (None for a bad setting or environment).
    pub fn rank(&self) -> Option<usize> {
        self.rank
    }

    /// What happened.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// `rank` saw `peer` make call `theirs` where it made `mine`, in collective `seq`.
    pub(crate) fn mismatch(
        rank: usize,
        seq: u32,
        peer: usize,
        mine: Signature,
        theirs: Signature,
    ) -> Error {
        Error::new(
            rank,
            CollectiveError::Mismatch {
                seq,
                peer,
                mine,
                theirs,
            },
        )
    }

    /// `rank` was told by `by` that collective `seq` failed.
    pub(crate) fn aborted(rank: usize, seq: u32, by: usize, reason: String) -> Error {
        Error::new(rank, CollectiveError::Aborted { seq, by, reason })
    }

    /// `rank` found something inconsistent in `call`.
    pub(crate) fn protocol(rank: usize, call: String, what: String) -> Error {
        Error::new(rank, CollectiveError::Protocol { call, what })
    }

    /// `rank` failed doing `what`.
    pub(crate) fn io(rank: usize, what: &'static str, source: std::io::Error) -> Error {
        Error::new(rank, TransportError::Io { what, source })
    }

    /// A closure for `map_err` turning an I/O error met doing `what` into `rank`'s error.
    pub(crate) fn io_at(rank: usize, what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::io(rank, what, source)
    }

    /// The same error with every rank number it holds passed through `global` (a sub-transport of
    /// the hierarchical path numbers its members `0..k`; errors leave it with job ranks). Numbers
    /// inside free text (a `Protocol` error's `what`) cannot be translated: `note` is appended to
    /// such text to say how it counts.
    pub(crate) fn renumber(self, global: &dyn Fn(usize) -> usize, note: &str) -> Error {
        let kind = match self.kind {
            ErrorKind::Collective(c) => ErrorKind::Collective(match c {
                CollectiveError::Timeout {
                    call,
                    peer,
                    waited_ms,
                    timeout_ms,
                } => CollectiveError::Timeout {
                    call,
                    peer: global(peer),
                    waited_ms,
                    timeout_ms,
                },
                CollectiveError::PeerExited { call, peer, code } => CollectiveError::PeerExited {
                    call,
                    peer: global(peer),
                    code,
                },
                CollectiveError::PeerGone { call, peer, how } => CollectiveError::PeerGone {
                    call,
                    peer: global(peer),
                    how,
                },
                CollectiveError::Mismatch {
                    seq,
                    peer,
                    mine,
                    theirs,
                } => CollectiveError::Mismatch {
                    seq,
                    peer: global(peer),
                    mine,
                    theirs,
                },
                CollectiveError::Aborted { seq, by, reason } => CollectiveError::Aborted {
                    seq,
                    by: global(by),
                    reason,
                },
                CollectiveError::Protocol { call, what } => CollectiveError::Protocol {
                    call,
                    what: format!("{what} ({note})"),
                },
            }),
            other => other,
        };
        Error {
            rank: self.rank.map(global),
            kind,
        }
    }

    /// The collective an error another rank caused is about, when it says.
    pub(crate) fn seq(&self) -> Option<u32> {
        match &self.kind {
            ErrorKind::Collective(
                CollectiveError::Mismatch { seq, .. } | CollectiveError::Aborted { seq, .. },
            ) => Some(*seq),
            _ => None,
        }
    }
}

impl From<JoinError> for Error {
    fn from(e: JoinError) -> Error {
        Error::general(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Coll;

    #[test]
    fn messages_name_the_rank_once_and_renumbering_maps_every_rank() {
        let sig = Signature {
            coll: Coll::Barrier,
            op: None,
            dtype: None,
            count: 0,
            root: 0,
        };
        let e = Error::mismatch(1, 7, 2, sig, sig);
        assert_eq!(
            e.to_string(),
            "rank 1: collective #7: this rank called barrier() but rank 2 called barrier()"
        );
        let g = e.renumber(&|r| r + 10, "");
        assert_eq!(g.rank(), Some(11));
        assert!(
            matches!(
                g.kind(),
                ErrorKind::Collective(CollectiveError::Mismatch { peer: 12, .. })
            ),
            "{g:?}"
        );
        let c = Error::general(UsageError::Config {
            name: "BOAD_X",
            value: "y".into(),
            why: "no".into(),
        });
        assert_eq!(c.to_string(), "BOAD_X=\"y\" is invalid: no");
        assert_eq!(c.renumber(&|r| r + 1, "").rank(), None);
    }
}
