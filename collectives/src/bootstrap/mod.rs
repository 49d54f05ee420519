//! How a rank learns who it is and where its peers are.
//!
//! Contract: [`JobInfo::from_env`] never blocks and never touches the network; [`rendezvous`] returns
//! the complete job table (one entry per rank, in rank order) or an error naming what went wrong,
//! within the rendezvous timeout.
//!
//! A process started by `boadrun` finds its rank, size and the rendezvous socket in the environment
//! (the `ENV_*` names below). A process started without it is a job of size 1.

pub mod protocol;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use protocol::{Line, PeerEntry};

/// Rank of this process.
pub const ENV_RANK: &str = "BOAD_RANK";
/// Number of ranks in the job.
pub const ENV_SIZE: &str = "BOAD_SIZE";
/// Rank among the ranks on the same host.
pub const ENV_LOCAL_RANK: &str = "BOAD_LOCAL_RANK";
/// Number of ranks on the same host.
pub const ENV_LOCAL_SIZE: &str = "BOAD_LOCAL_SIZE";
/// Job key, 16 hex digits: datagrams carrying another key are ignored.
pub const ENV_JOB: &str = "BOAD_JOB";
/// Path of the launcher's rendezvous Unix socket.
pub const ENV_RENDEZVOUS: &str = "BOAD_RENDEZVOUS";
/// Host id of this rank (ranks with equal ids share a machine).
pub const ENV_HOST_ID: &str = "BOAD_HOST_ID";
/// IP address the rank binds its UDP socket to (default 127.0.0.1).
pub const ENV_BIND_ADDR: &str = "BOAD_BIND_ADDR";

/// Errors while finding the job and its peers.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// An environment variable set by the launcher does not parse.
    #[error("environment variable {name}={value:?} is invalid: {why}")]
    BadEnv {
        /// Variable name.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// Talking to the launcher failed.
    #[error("rendezvous with the launcher at {path} failed: {source}")]
    Io {
        /// Socket path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The launcher said the job cannot start.
    #[error("the launcher aborted the job: {0}")]
    Aborted(String),
    /// The launcher sent something that is not the protocol.
    #[error("rendezvous protocol error: {0}")]
    Protocol(String),
}

/// What the environment says about this process's place in the job.
#[derive(Clone, Debug)]
pub struct JobInfo {
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub size: usize,
    /// Rank on this host.
    pub local_rank: usize,
    /// Ranks on this host.
    pub local_size: usize,
    /// Job key.
    pub job: u64,
    /// Host id.
    pub host_id: u32,
    /// Address to bind to.
    pub bind: IpAddr,
    /// Rendezvous socket (None for a singleton).
    pub rendezvous: Option<PathBuf>,
}

fn var<T: std::str::FromStr>(name: &'static str) -> Result<Option<T>, BootstrapError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Err(_) => Ok(None),
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|e: T::Err| BootstrapError::BadEnv {
                name,
                value: v,
                why: e.to_string(),
            }),
    }
}

impl JobInfo {
    /// Reads the job from the environment; a process not started by `boadrun` is rank 0 of 1.
    pub fn from_env() -> Result<JobInfo, BootstrapError> {
        let Some(size) = var::<usize>(ENV_SIZE)? else {
            return Ok(JobInfo::singleton());
        };
        let bad = |name, value: String, why: &str| BootstrapError::BadEnv {
            name,
            value,
            why: why.into(),
        };
        let rank =
            var::<usize>(ENV_RANK)?.ok_or_else(|| bad(ENV_RANK, String::new(), "missing"))?;
        if size == 0 || rank >= size {
            return Err(bad(
                ENV_RANK,
                rank.to_string(),
                &format!("must be below {ENV_SIZE}={size}"),
            ));
        }
        let job = match std::env::var(ENV_JOB) {
            Ok(v) => u64::from_str_radix(v.trim(), 16)
                .map_err(|e| bad(ENV_JOB, v.clone(), &e.to_string()))?,
            Err(_) => 0,
        };
        let rendezvous = std::env::var_os(ENV_RENDEZVOUS).map(PathBuf::from);
        if size > 1 && rendezvous.is_none() {
            return Err(bad(
                ENV_RENDEZVOUS,
                String::new(),
                "missing for a job of more than one rank",
            ));
        }
        Ok(JobInfo {
            rank,
            size,
            local_rank: var(ENV_LOCAL_RANK)?.unwrap_or(rank),
            local_size: var(ENV_LOCAL_SIZE)?.unwrap_or(size),
            job,
            host_id: var(ENV_HOST_ID)?.unwrap_or(0),
            bind: var(ENV_BIND_ADDR)?.unwrap_or(IpAddr::from([127, 0, 0, 1])),
            rendezvous,
        })
    }

    /// A job of one rank.
    pub fn singleton() -> JobInfo {
        JobInfo {
            rank: 0,
            size: 1,
            local_rank: 0,
            local_size: 1,
            job: 0,
            host_id: 0,
            bind: IpAddr::from([127, 0, 0, 1]),
            rendezvous: None,
        }
    }
}

/// The outcome of a rendezvous.
#[derive(Debug)]
pub struct Joined {
    /// One entry per rank, in rank order.
    pub table: Vec<PeerEntry>,
    /// The launcher connection, which later carries `EXIT` lines (None for a singleton).
    pub conn: Option<UnixStream>,
    /// Bytes already read from `conn` after `END` (the start of later lines).
    pub leftover: Vec<u8>,
    /// The kernel path's trigger port, when the launcher attached the eBPF programs.
    pub kernel_trigger: Option<u16>,
    /// The launcher also filled the host leaders' communicator (the hierarchical path's network
    /// level may use the kernel path).
    pub kernel_leaders: bool,
}

/// The leader of every host of a job (its lowest rank), in order of those ranks: the ranks of the
/// hierarchical path's network level, leader `h` being the `h`-th. The launcher fills the kernel
/// path's leaders communicator from this, so both sides number the leaders the same way.
pub fn host_leaders(table: &[PeerEntry]) -> Vec<usize> {
    crate::transport::hier::Layout::of(table).leaders
}

/// Says HELLO with this rank's UDP address and reads the job table.
pub fn rendezvous(info: &JobInfo, port: u16, timeout: Duration) -> Result<Joined, BootstrapError> {
    let me = PeerEntry {
        rank: info.rank,
        host_id: info.host_id,
        ip: info.bind,
        port,
    };
    let Some(path) = &info.rendezvous else {
        return Ok(Joined {
            table: vec![me],
            conn: None,
            leftover: Vec::new(),
            kernel_trigger: None,
            kernel_leaders: false,
        });
    };
    let io = |source| BootstrapError::Io {
        path: path.clone(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream
        .write_all(Line::Hello(me).format().as_bytes())
        .map_err(io)?;
    let mut reader = BufReader::new(stream.try_clone().map_err(io)?);
    let mut next = || -> Result<Line, BootstrapError> {
        let mut s = String::new();
        // At most MAX_LINE bytes: a longer line is cut, and then not a protocol line.
        let n = (&mut reader)
            .take(protocol::MAX_LINE as u64)
            .read_line(&mut s)
            .map_err(io)?;
        if n == 0 {
            return Err(BootstrapError::Protocol(
                "the launcher closed the connection".into(),
            ));
        }
        Line::parse(&s).ok_or_else(|| BootstrapError::Protocol(format!("unexpected line {s:?}")))
    };
    let n = match next()? {
        Line::Table(n) if n == info.size => n,
        Line::Abort(why) => return Err(BootstrapError::Aborted(why)),
        other => {
            return Err(BootstrapError::Protocol(format!(
                "expected TABLE {}, got {other:?}",
                info.size
            )))
        }
    };
    let mut table = Vec::with_capacity(n);
    for i in 0..n {
        match next()? {
            Line::Entry(e) if e.rank == i => table.push(e),
            other => {
                return Err(BootstrapError::Protocol(format!(
                    "expected entry {i}, got {other:?}"
                )))
            }
        }
    }
    let mut kernel_trigger = None;
    let mut kernel_leaders = false;
    loop {
        match next()? {
            Line::End => break,
            Line::Kernel {
                trigger_port,
                leaders,
            } => {
                kernel_trigger = Some(trigger_port);
                kernel_leaders = leaders;
            }
            other => {
                return Err(BootstrapError::Protocol(format!(
                    "expected END, got {other:?}"
                )))
            }
        }
    }
    let leftover = reader.buffer().to_vec();
    stream.set_read_timeout(None).map_err(io)?;
    Ok(Joined {
        table,
        conn: Some(stream),
        leftover,
        kernel_trigger,
        kernel_leaders,
    })
}
