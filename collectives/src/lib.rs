//! boad: MPI-like collectives for Linux.
//!
//! ```no_run
//! use boad::Op;
//! let mut comm = boad::init()?;
//! let mut v = vec![comm.rank() as i64; 4];
//! comm.allreduce_in_place(&mut v, Op::Sum)?;
//! let n = comm.size() as i64;
//! assert_eq!(v, vec![n * (n - 1) / 2; 4]);
//! # Ok::<(), boad::Error>(())
//! ```
//!
//! Run it with `boadrun -n 4 ./app`, or under Slurm (`srun --mpi=pmi2 -n 4 ./app`), MPICH's
//! `mpiexec -n 4 ./app`, or an env:// environment (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`,
//! `MASTER_PORT`, as torchrun and Kubernetes operators set them). A program started by none of
//! them is a job of one rank; one started by a launcher boad cannot join (Open MPI's `mpirun`,
//! `srun` without PMI-2) gets an error from [`init`] naming it. [`check`] says which launcher
//! started the process.
#![deny(missing_docs)]

mod algorithms;
mod comm;
mod config;
mod engine;
mod error;
#[cfg(any(feature = "fuzzing", test))]
#[doc(hidden)]
pub mod fuzzing;
mod join;
mod log;
pub mod ops;
mod transport;
mod types;

pub use comm::{init, Communicator};
pub use config::{Config, TransportKind};
pub use error::{CollectiveError, Error, ErrorKind, Result, TransportError, UsageError};
pub use join::{JoinError, Launcher};

/// Which launcher started this process and what it says (rank and size), or why its job cannot be
/// joined, as lines of text. Reads the environment only: nothing is joined or sent.
pub fn check() -> String {
    join::check_report()
}
pub use transport::Stats;
pub use types::{Coll, DType, Element, Op, Path, Signature};

/// The host's kernel service (`boadd`): a job another launcher started registers its ranks with it
/// ([`kernel_service::register`], from one process per host whose user owns that host's ranks'
/// sockets, kept for the job's life) and gets the kernel path without root
/// ([`kernel_service::Grant`]: the trigger port and communicator ids its ranks use, as the
/// `KERNEL`/`KCOMMS` lines of boadrun's rendezvous tell them). The same client boadrun uses;
/// [`init`] uses it itself for a job on one host under another launcher with
/// `BOAD_TRANSPORT=kernel` (its rank 0 registers the job and holds the registration).
pub use boad_proto::service as kernel_service;

#[cfg(not(target_endian = "little"))]
compile_error!("boad's wire format assumes a little-endian host");
