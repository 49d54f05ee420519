//! The contract between boad's launcher (`boadrun`) and its ranks, one definition used by both sides:
//! the environment a rank is started with ([`env`]), the rendezvous lines and the job table
//! ([`lines`]), how ranks sit on hosts ([`layout`]), the data paths a job may take
//! ([`TransportKind`]), the settings a rank reads ([`SETTINGS`]), and the names of a job's
//! shared-memory segments ([`shm`]). For jobs over several machines: the `-H` host lists and
//! hostfiles and the placement of ranks on their slots ([`hosts`]), and the authenticated handshake
//! between the launcher and its agents on other machines ([`auth`]). Which processes share a host,
//! and this host's interfaces ([`net`]).
//! The kernel service's protocol and its client ([`service`]).
//!
//! Nothing here does I/O on its own behalf: parsing is pure, the handshake reads and writes only
//! the stream it is given, the only file operation ([`shm::remove_segment`]) removes what the
//! caller names, and the service client ([`service::register`]) connects only to the service's
//! socket.
#![deny(missing_docs)]

pub mod auth;
pub mod control;
pub mod hosts;
pub mod layout;
pub mod lines;
pub mod neigh;
pub mod net;
pub mod service;
pub mod shm;

pub use layout::Layout;
pub use lines::{Line, PeerEntry};

/// The environment variables `boadrun` sets for every rank.
pub mod env {
    /// Rank of this process.
    pub const RANK: &str = "BOAD_RANK";
    /// Number of ranks in the job.
    pub const SIZE: &str = "BOAD_SIZE";
    /// Rank among the ranks on the same host.
    pub const LOCAL_RANK: &str = "BOAD_LOCAL_RANK";
    /// Number of ranks on the same host.
    pub const LOCAL_SIZE: &str = "BOAD_LOCAL_SIZE";
    /// Job key, 16 hex digits: datagrams carrying another key are ignored.
    pub const JOB: &str = "BOAD_JOB";
    /// Descriptor of this rank's rendezvous connection to the launcher (a Unix stream socket it
    /// inherits).
    pub const RENDEZVOUS_FD: &str = "BOAD_RENDEZVOUS_FD";
    /// Host id of this rank (ranks with equal ids share a machine).
    pub const HOST_ID: &str = "BOAD_HOST_ID";
    /// IP address the rank binds its sockets to and advertises to its peers.
    pub const BIND_ADDR: &str = "BOAD_BIND_ADDR";
    /// The data path ([`TransportKind`](crate::TransportKind)).
    pub const TRANSPORT: &str = "BOAD_TRANSPORT";
    /// How long a peer may stay silent ([`SETTINGS`](crate::SETTINGS)).
    pub const TIMEOUT_MS: &str = "BOAD_TIMEOUT_MS";
}

/// Which data path a job takes (`BOAD_TRANSPORT`, `boadrun --transport`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// The fastest path available: shared memory when every rank is on one host; over several
    /// hosts with several ranks on some host, hierarchical (shared memory inside each host, the
    /// kernel path between one leader per host where the launcher attached it and the call fits it,
    /// else UDP); over hosts of one rank each, the kernel path where attached and the call fits,
    /// else UDP. The launcher attaches the kernel path for `auto` only on jobs over several hosts.
    #[default]
    Auto,
    /// Userspace UDP, rank to rank.
    Udp,
    /// Every rank on the eBPF kernel path where the call fits it, else UDP; the launcher must
    /// attach it (an error otherwise).
    Kernel,
    /// Shared memory; over several hosts, hierarchical with UDP between one leader per host.
    Shm,
}

impl TransportKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [TransportKind; 4] = [
        TransportKind::Auto,
        TransportKind::Kernel,
        TransportKind::Udp,
        TransportKind::Shm,
    ];

    /// `auto`, `udp`, `kernel` or `shm`.
    pub const fn name(self) -> &'static str {
        match self {
            TransportKind::Auto => "auto",
            TransportKind::Udp => "udp",
            TransportKind::Kernel => "kernel",
            TransportKind::Shm => "shm",
        }
    }

    /// Whether the launcher sets up the kernel path for this kind (when it can).
    pub const fn wants_kernel(self) -> bool {
        matches!(self, TransportKind::Auto | TransportKind::Kernel)
    }
}

impl std::str::FromStr for TransportKind {
    type Err = String;
    fn from_str(s: &str) -> Result<TransportKind, String> {
        TransportKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| "must be one of auto, kernel, udp, shm".to_string())
    }
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One `BOAD_*` variable a rank reads: what `boadrun --help` and the README list (a test checks that
/// they agree).
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// The variable.
    pub name: &'static str,
    /// Its default, as written in the docs.
    pub default: &'static str,
    /// What it does.
    pub meaning: &'static str,
}

/// Every setting a rank reads.
pub const SETTINGS: &[Setting] = &[
    Setting {
        name: env::TIMEOUT_MS,
        default: "60000",
        meaning: "how long a peer this rank waits for may stay silent: past it, a peer that is alive \
                  (busy outside boad) is waited for with a warning naming it every BOAD_TIMEOUT_MS, \
                  and one that shows no sign of life (lost network, stopped process) is a Timeout \
                  error naming it",
    },
    Setting {
        name: "BOAD_CHUNK_BYTES",
        default: "32768 on loopback, else 1400",
        meaning: "payload bytes per datagram (a multiple of 8, up to 65000)",
    },
    Setting {
        name: "BOAD_WINDOW",
        default: "1 MiB of chunks (4..256)",
        meaning: "unacknowledged datagrams per message",
    },
    Setting {
        name: "BOAD_DROP_RATE",
        default: "0",
        meaning: "drop this fraction of received datagrams (to test loss recovery)",
    },
    Setting {
        name: "BOAD_DROP_SEED",
        default: "1",
        meaning: "seed of the dropped datagrams (mixed with the rank)",
    },
    Setting {
        name: "BOAD_STATS",
        default: "off",
        meaning: "1: print each rank's counters at finalize",
    },
    Setting {
        name: "BOAD_LOG",
        default: "warn",
        meaning: "what the library logs on stderr: error, warn, info, debug or trace, or a \
                  tracing filter such as boad=debug",
    },
    Setting {
        name: env::TRANSPORT,
        default: "auto",
        meaning: "auto, kernel, udp or shm: the data path (see --transport)",
    },
    Setting {
        name: "BOAD_SHM_SPIN_US",
        default: "100 (0 with more ranks than cores)",
        meaning: "shared memory: how long a waiting rank polls before it yields",
    },
    Setting {
        name: "BOAD_SHM_YIELD_US",
        default: "0 (with more ranks than cores: 10000 up to 2 ranks per core, 100 above)",
        meaning: "shared memory: how long a waiting rank polls between sched_yields before it \
                  sleeps on its futex",
    },
    Setting {
        name: "BOAD_SHM_SLOT_BYTES",
        default: "4096 (the most)",
        meaning: "shared memory: the largest collective (bytes per rank) that goes through the \
                  ranks' slots instead of the rings; 0: never (rank 0's value holds for the job)",
    },
    Setting {
        name: "BOAD_FOLD_THREADS",
        default: "auto",
        meaning: "threads a rank folds a large buffer on: auto = the cores each rank of the host \
                  has to itself if at least 2, else 1 (one thread: the host is full or \
                  oversubscribed); or a number, 1 to 256",
    },
    Setting {
        name: "BOAD_FOLD_PAR_BYTES",
        default: "2097152",
        meaning: "the smallest buffer folded on several threads (when BOAD_FOLD_THREADS gives \
                  more than 1)",
    },
    Setting {
        name: "BOAD_SECRET",
        default: "unset",
        meaning: "env:// jobs (started without boadrun): the job's secret, 64 hex digits, that \
                  every rank proves to rank 0's store (or BOAD_SECRET_FILE)",
    },
    Setting {
        name: "BOAD_SECRET_FILE",
        default: "unset",
        meaning: "env:// jobs: a file of this user's, mode 0600 or 0400, holding the secret",
    },
    Setting {
        name: "BOAD_MASTER_PORT",
        default: "MASTER_PORT",
        meaning: "env:// jobs: the port of rank 0's store, when PyTorch's own store uses \
                  MASTER_PORT",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_names_round_trip() {
        for k in TransportKind::ALL {
            assert_eq!(k.name().parse::<TransportKind>(), Ok(k));
        }
        assert!("rdma".parse::<TransportKind>().is_err());
    }
}
