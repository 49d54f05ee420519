//! How a rank learns who it is and where its peers are.
//!
//! Contract: [`JobInfo::from_env`] never blocks and never touches the network; [`rendezvous`] returns
//! the complete job table (one entry per rank, in rank order) or an error naming what went wrong,
//! within the rendezvous timeout.
//!
//! A process started by `boadrun` finds its rank, size and the rendezvous connection in the
//! environment (`boad_proto::env`): the connection is a Unix stream socket boadrun created for
//! this rank alone and left open across `exec` (`BOAD_RENDEZVOUS_FD` is its descriptor number), so no
//! other process can join the job in its place, nothing exists in the file system, and nothing is
//! left behind whatever happens to boadrun. A process started without it is a job of size 1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use boad_proto::env::{
    BIND_ADDR as ENV_BIND_ADDR, HOST_ID as ENV_HOST_ID, JOB as ENV_JOB,
    LOCAL_RANK as ENV_LOCAL_RANK, LOCAL_SIZE as ENV_LOCAL_SIZE, RANK as ENV_RANK,
    RENDEZVOUS_FD as ENV_RENDEZVOUS_FD, SIZE as ENV_SIZE,
};
use boad_proto::lines::{self as protocol, Line, PeerEntry};

/// Errors while finding the job and its peers.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
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
    #[error(
        "rendezvous with the launcher (descriptor {fd} of {ENV_RENDEZVOUS_FD}) failed: {source}"
    )]
    Io {
        /// The connection's descriptor.
        fd: RawFd,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `BOAD_RENDEZVOUS_FD` does not name a connection to the launcher this process may use.
    #[error("{ENV_RENDEZVOUS_FD}={fd} cannot be used: {why} (was this process started by boadrun, and did an earlier init in this process take it?)")]
    BadConnection {
        /// The descriptor.
        fd: RawFd,
        /// What is wrong with it.
        why: String,
    },
    /// Another launcher started this process as one of several, and boad cannot join its job.
    #[error(
        "this process was started by {launcher} as one of {size} ({var}={size}), but boad cannot \
         join that launcher's job yet: each process would run alone as a job of one rank. Start \
         the program with boadrun instead (boadrun -n N ..., or boadrun -H HOSTS ... across \
         machines)"
    )]
    ForeignLauncher {
        /// Which launcher.
        launcher: &'static str,
        /// The variable that says so.
        var: &'static str,
        /// How many processes it started.
        size: usize,
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
    /// Descriptor of the rendezvous connection (None for a singleton).
    pub rendezvous: Option<RawFd>,
}

fn var<T: std::str::FromStr>(name: &'static str) -> Result<Option<T>, JoinError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Err(_) => Ok(None),
        Ok(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|e: T::Err| JoinError::BadEnv {
                name,
                value: v,
                why: e.to_string(),
            }),
    }
}

/// Launchers whose jobs boad cannot join yet, each by the variable holding how many processes it
/// started (set for every process it starts).
const FOREIGN_LAUNCHERS: [(&str, &str); 4] = [
    ("Slurm (srun)", "SLURM_STEP_NUM_TASKS"),
    ("Open MPI (mpirun)", "OMPI_COMM_WORLD_SIZE"),
    ("a PMI launcher (MPICH's mpiexec)", "PMI_SIZE"),
    ("torchrun or a Kubernetes operator (env://)", "WORLD_SIZE"),
];

/// The first launcher of [`FOREIGN_LAUNCHERS`] whose variable, read through `get`, says it started
/// more than one process: `(launcher, variable, size)`.
fn foreign_launcher(
    get: impl Fn(&str) -> Option<String>,
) -> Option<(&'static str, &'static str, usize)> {
    FOREIGN_LAUNCHERS.iter().find_map(|&(launcher, var)| {
        let size = get(var)?.trim().parse::<usize>().ok()?;
        (size > 1).then_some((launcher, var, size))
    })
}

impl JobInfo {
    /// Reads the job from the environment; a process not started by `boadrun` is rank 0 of 1,
    /// unless another launcher started it as one of several (an error: [`JoinError::ForeignLauncher`]).
    pub fn from_env() -> Result<JobInfo, JoinError> {
        let Some(size) = var::<usize>(ENV_SIZE)? else {
            if let Some((launcher, var, size)) = foreign_launcher(|v| std::env::var(v).ok()) {
                return Err(JoinError::ForeignLauncher {
                    launcher,
                    var,
                    size,
                });
            }
            return Ok(JobInfo::singleton());
        };
        let bad = |name, value: String, why: &str| JoinError::BadEnv {
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
        let rendezvous = var::<RawFd>(ENV_RENDEZVOUS_FD)?;
        if size > 1 && rendezvous.is_none() {
            return Err(bad(
                ENV_RENDEZVOUS_FD,
                String::new(),
                "missing for a job of more than one rank",
            ));
        }
        if rendezvous.is_some_and(|fd| fd < 0) {
            return Err(bad(
                ENV_RENDEZVOUS_FD,
                format!("{rendezvous:?}"),
                "must be a descriptor number",
            ));
        }
        let bind = var::<IpAddr>(ENV_BIND_ADDR)?.unwrap_or(IpAddr::from([127, 0, 0, 1]));
        if bind.is_unspecified() || bind.is_multicast() {
            return Err(bad(
                ENV_BIND_ADDR,
                bind.to_string(),
                "ranks advertise this address to their peers, so it must be one they can reach: \
                 the address of this host's interface towards the other hosts (e.g. boadrun --bind \
                 10.1.2.3), or 127.0.0.1 (the default) for a job on one host",
            ));
        }
        Ok(JobInfo {
            rank,
            size,
            local_rank: var(ENV_LOCAL_RANK)?.unwrap_or(rank),
            local_size: var(ENV_LOCAL_SIZE)?.unwrap_or(size),
            job,
            host_id: var(ENV_HOST_ID)?.unwrap_or(0),
            bind,
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

/// The kernel path's communicator ids without a `KCOMMS` line.
const DEFAULT_COMMS: [u32; 2] = [
    boad_common::kernel::comm::WORLD,
    boad_common::kernel::comm::LEADERS,
];

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
    /// The kernel path's communicator ids: the job's and the host leaders' (`KCOMMS`; by default
    /// `boad_common::kernel::comm::WORLD` and `LEADERS`, what a launcher that attached the programs
    /// for this job alone fills; a kernel service gives each job ids of its own).
    pub kernel_comms: [u32; 2],
}

/// Whether this process took its rendezvous connection already (it can be taken once).
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes the inherited descriptor `fd` as the connection to the launcher, after checking that it
/// is one: a connected Unix stream socket whose peer runs as this user (or root). Marks it
/// close-on-exec, so that programs this rank starts do not inherit it.
fn take_connection(fd: RawFd) -> Result<UnixStream, JoinError> {
    let bad = |why: String| JoinError::BadConnection { fd, why };
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(bad("this process joined a job already".into()));
    }
    let int_opt = |level, name| -> Result<libc::c_int, JoinError> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes to `v`, a live c_int; `fd` is only read.
        let r = unsafe {
            libc::getsockopt(
                fd,
                level,
                name,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(bad(format!(
                "not a socket ({})",
                std::io::Error::last_os_error()
            )));
        }
        Ok(v)
    };
    if int_opt(libc::SOL_SOCKET, libc::SO_DOMAIN)? != libc::AF_UNIX
        || int_opt(libc::SOL_SOCKET, libc::SO_TYPE)? != libc::SOCK_STREAM
    {
        return Err(bad("not a Unix stream socket".into()));
    }
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes at most `len` bytes, the size of the live `ucred` it points to.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if r != 0 || cred.pid == 0 {
        return Err(bad("not connected".into()));
    }
    if cred.uid != me && cred.uid != 0 {
        return Err(bad(format!(
            "its other end belongs to user {} (this process runs as user {me})",
            cred.uid
        )));
    }
    // SAFETY: `fd` is an open socket (checked above) that nothing else in this process owns: the
    // launcher passed it to this process for the rendezvous, which takes it once (TAKEN).
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    // SAFETY: fcntl on an open descriptor this function now owns; FD_CLOEXEC has no other effect.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(stream)
}

/// Says HELLO with this rank's UDP address (data `port`, liveness `pulse` port, 0 for none) and
/// reads the job table.
pub fn rendezvous(
    info: &JobInfo,
    port: u16,
    pulse: u16,
    timeout: Duration,
) -> Result<Joined, JoinError> {
    let me = PeerEntry {
        rank: info.rank,
        host_id: info.host_id,
        ip: info.bind,
        port,
        pulse,
        pid: std::process::id(),
    };
    let Some(fd) = info.rendezvous else {
        return Ok(Joined {
            table: vec![me],
            conn: None,
            leftover: Vec::new(),
            kernel_trigger: None,
            kernel_leaders: false,
            kernel_comms: DEFAULT_COMMS,
        });
    };
    let io = |source| JoinError::Io { fd, source };
    let mut stream = take_connection(fd)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream
        .write_all(Line::Hello(me).format().as_bytes())
        .map_err(io)?;
    let mut reader = BufReader::new(stream.try_clone().map_err(io)?);
    let mut next = || -> Result<Line, JoinError> {
        let mut s = String::new();
        // At most MAX_LINE bytes: a longer line is cut, and then not a protocol line.
        let n = (&mut reader)
            .take(protocol::MAX_LINE as u64)
            .read_line(&mut s)
            .map_err(io)?;
        if n == 0 {
            return Err(JoinError::Protocol(
                "the launcher closed the connection".into(),
            ));
        }
        Line::parse(&s).ok_or_else(|| JoinError::Protocol(format!("unexpected line {s:?}")))
    };
    let n = match next()? {
        Line::Table(n) if n == info.size => n,
        Line::Abort(why) => return Err(JoinError::Aborted(why)),
        other => {
            return Err(JoinError::Protocol(format!(
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
                return Err(JoinError::Protocol(format!(
                    "expected entry {i}, got {other:?}"
                )))
            }
        }
    }
    let mut kernel_trigger = None;
    let mut kernel_leaders = false;
    let mut kernel_comms = DEFAULT_COMMS;
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
            Line::KernelComms { world, leaders } => kernel_comms = [world, leaders],
            other => return Err(JoinError::Protocol(format!("expected END, got {other:?}"))),
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
        kernel_comms,
    })
}

#[cfg(test)]
mod tests {
    use super::foreign_launcher;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn another_launchers_job_of_several_is_named_never_a_singleton() {
        assert_eq!(
            foreign_launcher(env(&[("SLURM_STEP_NUM_TASKS", "9"), ("SLURM_PROCID", "4")])),
            Some(("Slurm (srun)", "SLURM_STEP_NUM_TASKS", 9))
        );
        assert_eq!(
            foreign_launcher(env(&[("PMI_SIZE", "2"), ("PMI_RANK", "1")])),
            Some(("a PMI launcher (MPICH's mpiexec)", "PMI_SIZE", 2))
        );
        assert_eq!(
            foreign_launcher(env(&[("OMPI_COMM_WORLD_SIZE", " 4 ")])).map(|f| f.2),
            Some(4)
        );
        assert_eq!(
            foreign_launcher(env(&[("WORLD_SIZE", "8"), ("RANK", "0")])).map(|f| f.1),
            Some("WORLD_SIZE")
        );
        // One process, nothing, or a value that is not a count: a job of one rank, as before.
        for quiet in [
            &[("SLURM_STEP_NUM_TASKS", "1")][..],
            &[("WORLD_SIZE", "x")][..],
            &[("SLURM_NTASKS", "9")][..],
            &[][..],
        ] {
            assert_eq!(foreign_launcher(env(quiet)), None, "{quiet:?}");
        }
    }
}
