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
//! Run it with `boadrun -n 4 ./app`. A program started without `boadrun` is a job of one rank
//! (unless another launcher, such as Slurm's srun or torchrun, started it as one of several: then
//! [`init`] is an error naming that launcher).
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
pub use join::JoinError;
pub use transport::Stats;
pub use types::{Coll, DType, Element, Op, Path, Signature};

/// The host's kernel service (`boadd`): a job another launcher started registers its ranks with it
/// ([`kernel_service::register`], from one process per host whose user owns that host's ranks'
/// sockets, kept for the job's life) and gets the kernel path without root
/// ([`kernel_service::Grant`]: the trigger port and communicator ids its ranks use, as the
/// `KERNEL`/`KCOMMS` lines of boadrun's rendezvous tell them). The same client boadrun uses.
pub use boad_proto::service as kernel_service;

#[cfg(not(target_endian = "little"))]
compile_error!("boad's wire format assumes a little-endian host");
