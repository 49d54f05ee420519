//! How a rank learns who it is and where its peers are.
//!
//! Contract: [`JobInfo::from_env`] never blocks and never touches the network: it says which launcher
//! started this process ([`Launcher`]) and what that launcher's variables say, or why they cannot be
//! used (never a silent job of one rank when a launcher started several). [`Boot::open`] then meets
//! the launcher, and [`rendezvous`] returns the complete job table (one entry per rank, in rank
//! order) or an error naming what went wrong, within the rendezvous timeout.
//!
//! A process started by `boadrun` finds its rank, size and the rendezvous connection in the
//! environment (`boad_proto::env`): the connection is a Unix stream socket boadrun created for
//! this rank alone and left open across `exec` (`BOAD_RENDEZVOUS_FD` is its descriptor number), so no
//! other process can join the job in its place, nothing exists in the file system, and nothing is
//! left behind whatever happens to boadrun. A process another launcher started (Slurm, MPICH's
//! Hydra, an env:// store) joins through that launcher's key-value space ([`store`]); when all its
//! job's ranks are on one host and it asks for the kernel path, its rank 0 registers the job with
//! the host's kernel service and shares the grant through that space ([`kernel_step`]). A process
//! started by none is a job of size 1.

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
use boad_proto::service::{self, KernelGrant};
use boad_proto::TransportKind;

pub(crate) mod envstore;
pub(crate) mod pmi1;
pub(crate) mod pmi2;
pub(crate) mod store;

use store::{HostValue, Store};

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
    /// Another launcher started this process, and its job cannot be joined as it was started.
    #[error("this process was started by {launcher}, but boad cannot join its job: {why}")]
    Launcher {
        /// Which launcher.
        launcher: &'static str,
        /// Why not, and what to do.
        why: String,
    },
    /// This host's identity or addresses cannot be read.
    #[error("cannot tell which host this is: {0}")]
    Host(String),
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
    /// The launcher that started this process.
    pub launcher: Launcher,
}

/// Which launcher started a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launcher {
    /// `boadrun`.
    Boadrun,
    /// None: a job of one rank.
    Alone,
    /// MPICH's `mpiexec` (Hydra), through PMI-1 on `PMI_FD`.
    Hydra,
    /// Slurm's `srun --mpi=pmi2`, through PMI-2 on `PMI_FD`.
    Slurm,
    /// torchrun, a Kubernetes operator or a hand-set environment: `RANK`, `WORLD_SIZE`,
    /// `MASTER_ADDR`, `MASTER_PORT`; rank 0 serves the job's key-value store.
    Env,
}

impl Launcher {
    /// The launcher's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Launcher::Boadrun => "boadrun",
            Launcher::Alone => "no launcher (a job of one rank)",
            Launcher::Hydra => "MPICH's mpiexec (Hydra, PMI-1)",
            Launcher::Slurm => "Slurm's srun (PMI-2)",
            Launcher::Env => "env:// (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)",
        }
    }

    /// Whether its ranks meet through a key-value store (`Boot::Store`): every launcher but
    /// boadrun (and none).
    pub fn uses_store(self) -> bool {
        matches!(self, Launcher::Hydra | Launcher::Slurm | Launcher::Env)
    }
}

/// `boadrun`'s variable `name`, parsed.
fn var<T: std::str::FromStr>(name: &'static str) -> Result<Option<T>, JoinError>
where
    T::Err: std::fmt::Display,
{
    var_in(&|v: &str| std::env::var(v).ok(), name)
}

/// A launcher's variable `name`, read through `get` and parsed.
fn var_in<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Option<T>, JoinError>
where
    T::Err: std::fmt::Display,
{
    match get(name) {
        None => Ok(None),
        Some(v) => v
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

/// What another launcher's variables say: which launcher, this process's rank and the job's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Detected {
    /// The launcher.
    pub launcher: Launcher,
    /// This process's rank.
    pub rank: usize,
    /// Number of ranks.
    pub size: usize,
}

/// The launcher other than boadrun that started this process, read through `get` (the environment):
/// `Alone` when none did. A launcher whose job boad cannot join as started is an error naming it
/// and what to do, never a job of one rank.
pub(crate) fn detect(get: impl Fn(&str) -> Option<String>) -> Result<Detected, JoinError> {
    let refuse = |launcher, why: &str| JoinError::Launcher {
        launcher,
        why: why.to_string(),
    };
    let sized = |launcher: Launcher, rank_var, size_var| -> Result<Detected, JoinError> {
        let missing = |name: &'static str| JoinError::BadEnv {
            name,
            value: String::new(),
            why: format!(
                "missing ({} sets it for every process it starts)",
                launcher.name()
            ),
        };
        let rank = var_in::<usize>(&get, rank_var)?.ok_or_else(|| missing(rank_var))?;
        let size = var_in::<usize>(&get, size_var)?.ok_or_else(|| missing(size_var))?;
        if size == 0 || rank >= size {
            return Err(JoinError::BadEnv {
                name: rank_var,
                value: rank.to_string(),
                why: format!("must be below {size_var}={size}"),
            });
        }
        Ok(Detected {
            launcher,
            rank,
            size,
        })
    };
    let count = |name| get(name).and_then(|v| v.trim().parse::<usize>().ok());
    // Slurm's PMI-2 plugin sets these beside PMI_FD; Hydra's PMI-1 sets neither, even when
    // mpiexec runs inside a Slurm allocation (where SLURM_* variables are set too).
    let slurm = get("PMI_JOBID").is_some() || get("PMI2_SUN_PATH").is_some();
    if get("PMI_FD").is_some() {
        return if slurm {
            sized(Launcher::Slurm, "PMI_RANK", "PMI_SIZE")
        } else {
            sized(Launcher::Hydra, "PMI_RANK", "PMI_SIZE")
        };
    }
    if count("PMI_SIZE").is_some_and(|n| n > 1) {
        return Err(refuse(
            "a PMI launcher (PMI_SIZE without PMI_FD)",
            "boad speaks PMI over the descriptor in PMI_FD only (MPICH's mpiexec sets it); \
             PMI_PORT connections are not supported",
        ));
    }
    if count("SLURM_STEP_NUM_TASKS").is_some_and(|n| n > 1) {
        let pmix = get("PMIX_RANK").is_some() || get("PMIX_NAMESPACE").is_some();
        return Err(refuse(
            "Slurm's srun",
            if pmix {
                "srun started it with PMIx (--mpi=pmix), which boad does not speak: start it \
                 with srun --mpi=pmi2"
            } else {
                "srun started it without a PMI server (--mpi=none, Slurm's default), so the \
                 ranks cannot find each other: start it with srun --mpi=pmi2 (or set \
                 MpiDefault=pmi2 in slurm.conf)"
            },
        ));
    }
    if count("OMPI_COMM_WORLD_SIZE").is_some_and(|n| n > 1) {
        return Err(refuse(
            "Open MPI's mpirun",
            "mpirun serves its ranks through PMIx, which boad does not speak: start the program \
             with boadrun (boadrun -n N ..., boadrun -H HOSTS ... across machines), or with \
             MPICH's mpiexec",
        ));
    }
    if count("WORLD_SIZE").is_some_and(|n| n > 1) {
        let missing: Vec<&str> = ["RANK", "MASTER_ADDR", "MASTER_PORT"]
            .into_iter()
            .filter(|v| get(v).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(refuse(
                Launcher::Env.name(),
                &format!(
                    "WORLD_SIZE is set but {} {} not: an env:// job needs RANK, WORLD_SIZE, \
                     MASTER_ADDR and MASTER_PORT in every process",
                    missing.join(", "),
                    if missing.len() == 1 { "is" } else { "are" }
                ),
            ));
        }
        return sized(Launcher::Env, "RANK", "WORLD_SIZE");
    }
    Ok(Detected {
        launcher: Launcher::Alone,
        rank: 0,
        size: 1,
    })
}

impl JobInfo {
    /// Reads the job from the environment: `boadrun`'s variables, or another launcher's
    /// ([`detect`]: its rank and size; the rest comes from [`Boot::open`]), or none (rank 0 of 1).
    pub fn from_env() -> Result<JobInfo, JoinError> {
        let Some(size) = var::<usize>(ENV_SIZE)? else {
            let found = detect(|v| std::env::var(v).ok())?;
            let mut info = JobInfo::singleton();
            info.launcher = found.launcher;
            info.rank = found.rank;
            info.size = found.size;
            info.local_size = found.size;
            info.local_rank = found.rank;
            return Ok(info);
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
            launcher: Launcher::Boadrun,
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
            launcher: Launcher::Alone,
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
    /// Under another launcher than boadrun, on the rank that registered the job with the host's
    /// kernel service: the registration, to keep for as long as the rank runs (dropping it frees
    /// the job's communicator and trigger port in the service).
    pub service: Option<KernelGrant>,
}

/// Whether this process took its rendezvous connection already (it can be taken once).
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes the inherited descriptor `fd` as the connection to the launcher, after checking that it
/// is one: a connected Unix stream socket whose peer runs as this user (or root). Marks it
/// close-on-exec, so that programs this rank starts do not inherit it.
fn take_connection(fd: RawFd) -> Result<UnixStream, JoinError> {
    take_socket(fd).map_err(|why| JoinError::BadConnection { fd, why })
}

/// Takes `fd`, checked by [`check_socket`], as this process's connection to its launcher: once per
/// process (`taken` says whether it was), close-on-exec from then on. Returns the reason it cannot
/// be used, for the caller to name the variable.
pub(crate) fn take_socket_once(fd: RawFd, taken: &AtomicBool) -> Result<UnixStream, String> {
    check_socket(fd)?;
    if taken.swap(true, Ordering::SeqCst) {
        return Err("this process joined a job already (an earlier init took it)".into());
    }
    // SAFETY: `fd` is an open, connected socket (checked above) that nothing else in this process
    // owns: the launcher passed it to this process for the rendezvous, which takes it once.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    // SAFETY: fcntl on an open descriptor this function now owns; FD_CLOEXEC has no other effect.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(format!(
            "cannot mark it close-on-exec ({})",
            std::io::Error::last_os_error()
        ));
    }
    Ok(stream)
}

/// [`take_socket_once`] with the process's one rendezvous flag (boadrun's and PMI-2's descriptor).
pub(crate) fn take_socket(fd: RawFd) -> Result<UnixStream, String> {
    take_socket_once(fd, &TAKEN)
}

/// Checks that `fd` is an open, connected Unix stream socket (not a listening one) whose other end
/// runs as this user or root, without taking it: what every launcher (boadrun, Hydra's proxy,
/// slurmstepd) hands its processes.
pub(crate) fn check_socket(fd: RawFd) -> Result<(), String> {
    if fd < 0 {
        return Err("not a descriptor number".into());
    }
    // SAFETY: F_GETFD only reads the descriptor's flags; an unopened number gives -1 (EBADF).
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(format!(
            "not an open descriptor ({})",
            std::io::Error::last_os_error()
        ));
    }
    let int_opt = |name| -> Result<libc::c_int, String> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes to `v`, a live c_int; `fd` is only read.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(format!(
                "not a socket ({})",
                std::io::Error::last_os_error()
            ));
        }
        Ok(v)
    };
    if int_opt(libc::SO_DOMAIN)? != libc::AF_UNIX || int_opt(libc::SO_TYPE)? != libc::SOCK_STREAM {
        return Err("not a Unix stream socket".into());
    }
    if int_opt(libc::SO_ACCEPTCONN)? != 0 {
        return Err("a listening socket, not a connection".into());
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
        return Err("not connected".into());
    }
    if cred.uid != me && cred.uid != 0 {
        return Err(format!(
            "its other end belongs to user {} (this process runs as user {me})",
            cred.uid
        ));
    }
    Ok(())
}

/// What [`crate::check`] says about the launcher: which one started this process and what its
/// variables say, or why its job cannot be joined. Reads the environment only.
pub fn check_report() -> String {
    let info = match JobInfo::from_env() {
        Ok(i) => i,
        Err(e) => return format!("launcher: error: {e}\n"),
    };
    let mut report = match info.launcher {
        Launcher::Alone => format!("launcher: {}\n", info.launcher.name()),
        l => format!(
            "launcher: {}: rank {} of {}\n",
            l.name(),
            info.rank,
            info.size
        ),
    };
    if info.launcher == Launcher::Env {
        report += &envstore::check_lines(|v| std::env::var(v).ok());
    }
    report
}

/// How a rank meets its peers, once [`Boot::open`] has met its launcher.
pub(crate) enum Boot {
    /// `boadrun`'s connection, or nobody (a job of one rank).
    Launcher,
    /// Another launcher's key-value space, with every rank's host id.
    Store {
        /// The space.
        store: Box<dyn Store>,
        /// Host id of every rank.
        host_ids: Vec<u32>,
        /// The job's `BOAD_TRANSPORT`: whether it asks for the kernel path ([`kernel_step`]).
        transport: TransportKind,
    },
}

impl Boot {
    /// Meets the launcher that started this process. Under another launcher than boadrun this
    /// learns which ranks share this host, the job key and the address to bind, and fills them in
    /// `info` (`BOAD_BIND_ADDR` chooses the address instead). `transport` is the job's
    /// `BOAD_TRANSPORT`: a job on one host that asks for the kernel path, with the host's kernel
    /// service present, binds each rank to a loopback address of its own (`127.77.0.<rank + 1>`,
    /// as boadrun does: the programs on `lo` tell the ranks apart by address).
    pub fn open(
        info: &mut JobInfo,
        transport: TransportKind,
        timeout: Duration,
    ) -> Result<Boot, JoinError> {
        let mut store: Box<dyn Store> = match info.launcher {
            Launcher::Boadrun | Launcher::Alone => return Ok(Boot::Launcher),
            Launcher::Hydra => Box::new(pmi1::Pmi1::connect(info, timeout)?),
            Launcher::Slurm => Box::new(pmi2::Pmi2::connect(info, timeout)?),
            Launcher::Env => Box::new(envstore::EnvStore::connect(info, timeout)?),
        };
        let bind = var::<IpAddr>(ENV_BIND_ADDR)?;
        if let Some(b) = bind.filter(|b| b.is_unspecified() || b.is_multicast()) {
            return Err(JoinError::BadEnv {
                name: ENV_BIND_ADDR,
                value: b.to_string(),
                why: "ranks advertise this address to their peers, so it must be one they can \
                      reach"
                    .into(),
            });
        }
        let here = HostValue::here()?;
        let host_ids = store::prepare(store.as_mut(), info, &here, bind)?;
        if info.launcher == Launcher::Env {
            envstore::check_local_rank(info);
        }
        if bind.is_none()
            && info.bind.is_loopback()
            && service_wanted(transport, info)
            && info.rank < 250
            && service::present()
        {
            info.bind = IpAddr::from([127, 77, 0, info.rank as u8 + 1]);
        }
        Ok(Boot::Store {
            store,
            host_ids,
            transport,
        })
    }
}

/// Says HELLO with this rank's UDP address (data `port`, liveness `pulse` port, 0 for none) to
/// boadrun and reads the job table, or publishes it in another launcher's store and reads every
/// rank's ([`store::exchange`]).
pub fn rendezvous(
    info: &JobInfo,
    boot: Boot,
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
    if let Boot::Store {
        mut store,
        host_ids,
        transport,
    } = boot
    {
        let table = store::exchange(store.as_mut(), &host_ids, &me)?;
        let socket = service::socket_path();
        let KernelStep { grant, held } =
            kernel_step(store.as_mut(), info, &table, transport, &socket)?;
        store.finish()?;
        return Ok(Joined {
            table,
            conn: None,
            leftover: Vec::new(),
            kernel_trigger: grant.map(|g| g.trigger),
            kernel_leaders: grant.is_some_and(|g| g.leaders.is_some()),
            kernel_comms: grant.map_or(DEFAULT_COMMS, |g| [g.world, g.leaders.unwrap_or(u32::MAX)]),
            service: held,
        });
    }
    let Some(fd) = info.rendezvous else {
        return Ok(Joined {
            table: vec![me],
            conn: None,
            leftover: Vec::new(),
            kernel_trigger: None,
            kernel_leaders: false,
            kernel_comms: DEFAULT_COMMS,
            service: None,
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
        service: None,
    })
}

/// The store key under which rank 0 publishes the kernel service's grant.
const KERNEL_KEY: &str = "boad-kernel";
/// The store key prefix under which each host's leader publishes its service's free communicators
/// (followed by the leader's rank).
const FREE_KEY: &str = "boad-kfree-";
/// The store key prefix under which each host's leader but rank 0's says whether its service
/// granted the job what rank 0's did (followed by the leader's rank).
const GRANTED_KEY: &str = "boad-kok-";

/// Whether a job of one host under another launcher registers with the host's kernel service: it
/// asks for the kernel path (`BOAD_TRANSPORT=kernel`; `auto` on one host takes shared memory).
/// Every rank decides the same from the same settings and placement. (A job over several hosts
/// asks every host's service: [`kernel_step`].)
fn service_wanted(transport: TransportKind, info: &JobInfo) -> bool {
    transport == TransportKind::Kernel && info.size > 1 && info.local_size == info.size
}

/// What the kernel step gives a rank.
#[derive(Debug)]
struct KernelStep {
    /// What the services granted the job, when they did.
    grant: Option<service::Grant>,
    /// The registration, on the ranks that made one (each host's leader).
    held: Option<KernelGrant>,
}

impl KernelStep {
    const NONE: KernelStep = KernelStep {
        grant: None,
        held: None,
    };
}

/// The kernel step of a job under another launcher, between the table and the end of the store.
///
/// One host, `BOAD_TRANSPORT=kernel` ([`service_wanted`]): rank 0 registers the job's ranks
/// (`table`) with the host's kernel service (`boad_proto::service`, listening at `socket`) and
/// publishes the grant with one put; after one fence every rank reads it.
///
/// Several hosts, `BOAD_TRANSPORT=kernel` or `auto`: every host's service must give the job the
/// same communicator ids and trigger port, so the hosts' leaders (lowest rank of each host) agree
/// in three rounds of the store: each publishes the communicators its service has free (or `-`);
/// rank 0 registers with the lowest ids free on every host and publishes its grant; the other
/// leaders register with that trigger port and those ids and publish whether their service
/// granted them. The job takes the kernel path only if every host's service did; otherwise every
/// leader drops its registration.
///
/// Returns the grant and, on a leader, the registration to keep. Whatever fails, the job runs on
/// UDP: rank 0 says why once when the job asked for the kernel path (or, under `auto`, when some
/// host has a service), and a leader whose service refused says its reason.
fn kernel_step(
    store: &mut dyn Store,
    info: &JobInfo,
    table: &[PeerEntry],
    transport: TransportKind,
    socket: &std::path::Path,
) -> Result<KernelStep, JoinError> {
    let layout = boad_proto::Layout::of(table);
    if layout.leaders.len() > 1 {
        if info.size > 1 && transport.wants_kernel() {
            return kernel_step_hosts(store, info, table, &layout, transport, socket);
        }
        return Ok(KernelStep::NONE);
    }
    if !service_wanted(transport, info) {
        return Ok(KernelStep::NONE);
    }
    let mut held = None;
    if info.rank == 0 {
        let value = if !service::present_at(socket) {
            tracing::warn!(
                "boad: kernel path unavailable (no kernel service listens at {}; see README \
                 \"Installing the kernel service\"); collectives use UDP",
                socket.display()
            );
            "-".to_string()
        } else {
            let (value, grant) = register_first(socket, info, table, None);
            held = grant;
            value
        };
        store.put(KERNEL_KEY, &value)?;
    }
    store.fence()?;
    let grant = read_grant(store)?;
    Ok(KernelStep { grant, held })
}

/// [`kernel_step`] for a job over several hosts (`layout.leaders`: each host's leader).
fn kernel_step_hosts(
    store: &mut dyn Store,
    info: &JobInfo,
    table: &[PeerEntry],
    layout: &boad_proto::Layout,
    transport: TransportKind,
    socket: &std::path::Path,
) -> Result<KernelStep, JoinError> {
    let leader = layout.leaders.contains(&info.rank);
    let launcher = store.launcher();
    // Round 1: what each host's service has free.
    if leader {
        let value = if !service::present_at(socket) {
            "-".to_string()
        } else {
            match service::free_at(socket) {
                Ok(mask) => format!("{mask:016x}"),
                Err(e) => {
                    tracing::warn!("boad: rank {}: {e}", info.rank);
                    "-".to_string()
                }
            }
        };
        store.put(&format!("{FREE_KEY}{}", info.rank), &value)?;
    }
    store.fence()?;
    let mut free = u64::MAX;
    let mut without = Vec::new();
    for &l in &layout.leaders {
        let v = store.get(&format!("{FREE_KEY}{l}"))?;
        match parse_free(&v) {
            Some(Some(mask)) => free &= mask,
            Some(None) => without.push(l),
            None => {
                return Err(JoinError::Protocol(format!(
                "{launcher}: rank {l} published the free communicators {v:?}, which is not boad's"
            )))
            }
        }
    }
    let loud = transport == TransportKind::Kernel || without.len() < layout.leaders.len();
    if !without.is_empty() {
        if info.rank == 0 && loud {
            tracing::warn!(
                "boad: kernel path unavailable: no kernel service serves the host{} of rank{} {} \
                 (at {}; see README \"Installing the kernel service\"); collectives use UDP",
                if without.len() > 1 { "s" } else { "" },
                if without.len() > 1 { "s" } else { "" },
                list(&without),
                socket.display()
            );
        }
        return Ok(KernelStep::NONE);
    }
    let uses_leaders = layout.leaders.len() < info.size;
    let Some(comms) = service::Comms::lowest_free(free, uses_leaders) else {
        if info.rank == 0 {
            tracing::warn!(
                "boad: kernel path unavailable: no communicator is free on every host's kernel \
                 service; collectives use UDP"
            );
        }
        return Ok(KernelStep::NONE);
    };
    // Round 2: rank 0's service picks the trigger port.
    let mut held = None;
    if info.rank == 0 {
        let (value, grant) = register_first(socket, info, table, Some(comms));
        held = grant;
        store.put(KERNEL_KEY, &value)?;
    }
    store.fence()?;
    let Some(first) = read_grant(store)? else {
        return Ok(KernelStep::NONE);
    };
    if first.world != comms.world || first.leaders != comms.leaders {
        return Err(JoinError::Protocol(format!(
            "{launcher}: rank 0 published a kernel grant for other communicators than every rank \
             picked"
        )));
    }
    // Round 3: the other hosts' services, with the same trigger port and communicators.
    if leader && info.rank != 0 {
        let value =
            match service::register_at(socket, info.job, table, Some(first.trigger), Some(comms)) {
                Ok(g) if g.grant() == first => {
                    held = Some(g);
                    "1"
                }
                Ok(_) => {
                    tracing::warn!(
                        "boad: rank {}: the kernel service granted other communicators than asked",
                        info.rank
                    );
                    "-"
                }
                Err(e) => {
                    tracing::warn!("boad: rank {}: {e}", info.rank);
                    "-"
                }
            };
        store.put(&format!("{GRANTED_KEY}{}", info.rank), value)?;
    }
    store.fence()?;
    let mut refused = Vec::new();
    for &l in layout.leaders.iter().filter(|&&l| l != 0) {
        let v = store.get(&format!("{GRANTED_KEY}{l}"))?;
        match v.trim() {
            "1" => {}
            "-" => refused.push(l),
            _ => {
                return Err(JoinError::Protocol(format!(
                    "{launcher}: rank {l} published {v:?} for its kernel registration, which is \
                     not boad's"
                )))
            }
        }
    }
    if !refused.is_empty() {
        if info.rank == 0 {
            tracing::warn!(
                "boad: kernel path unavailable: the kernel service of the host{} of rank{} {} \
                 refused the job (that rank says why); collectives use UDP",
                if refused.len() > 1 { "s" } else { "" },
                if refused.len() > 1 { "s" } else { "" },
                list(&refused)
            );
        }
        // Dropping the registrations frees what every service gave.
        return Ok(KernelStep::NONE);
    }
    Ok(KernelStep {
        grant: Some(first),
        held,
    })
}

/// Rank 0's registration with its host's service (`comms`: the ids every host's service is to
/// give, or `None`: its service picks): what rank 0 publishes under [`KERNEL_KEY`] (the grant, or
/// `-` after saying why once) and the registration to keep.
fn register_first(
    socket: &std::path::Path,
    info: &JobInfo,
    table: &[PeerEntry],
    comms: Option<service::Comms>,
) -> (String, Option<KernelGrant>) {
    match service::register_at(socket, info.job, table, None, comms) {
        Ok(g) => (format_grant(&g.grant()), Some(g)),
        Err(e) => {
            tracing::warn!("boad: kernel path unavailable ({e}); collectives use UDP");
            ("-".to_string(), None)
        }
    }
}

/// `1, 4 and 7`.
fn list(ranks: &[usize]) -> String {
    let s: Vec<String> = ranks.iter().map(usize::to_string).collect();
    match s.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => s.concat(),
    }
}

/// A leader's free communicators as published: 16 hex digits, or `-` (no service): `Some`;
/// anything else `None`.
fn parse_free(v: &str) -> Option<Option<u64>> {
    let v = v.trim();
    if v == "-" {
        return Some(None);
    }
    (v.len() == 16 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(v, 16).ok().map(Some))
        .flatten()
}

/// The grant as rank 0 publishes it: `<trigger>,<world>` or `<trigger>,<world>,<leaders>`.
fn format_grant(g: &service::Grant) -> String {
    match g.leaders {
        Some(l) => format!("{},{},{l}", g.trigger, g.world),
        None => format!("{},{}", g.trigger, g.world),
    }
}

/// Reads the grant rank 0 published ([`KERNEL_KEY`]), checked.
fn read_grant(store: &mut dyn Store) -> Result<Option<service::Grant>, JoinError> {
    let v = store.get(KERNEL_KEY)?;
    parse_grant(&v).ok_or_else(|| {
        JoinError::Protocol(format!(
            "{}: rank 0 published the kernel grant {v:?}, which is not boad's",
            store.launcher()
        ))
    })
}

/// `<trigger>,<world>[,<leaders>]` (trigger port not 0, ids not `u32::MAX`, leaders not world),
/// or `-`: `Some(grant)`; anything else `None`.
fn parse_grant(v: &str) -> Option<Option<service::Grant>> {
    let v = v.trim();
    if v == "-" {
        return Some(None);
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = v.split(',').collect();
    if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| digits(p)) {
        return None;
    }
    let trigger = parts[0].parse::<u16>().ok().filter(|&t| t != 0)?;
    let id = |p: &str| p.parse::<u32>().ok().filter(|&w| w != u32::MAX);
    let world = id(parts[1])?;
    let leaders = match parts.get(2) {
        Some(l) => Some(id(l).filter(|&l| l != world)?),
        None => None,
    };
    Some(Some(service::Grant {
        trigger,
        world,
        leaders,
    }))
}

#[cfg(test)]
mod tests {
    use super::{
        detect, kernel_step, list, parse_free, parse_grant, Detected, JobInfo, JoinError, Launcher,
    };
    use crate::join::store::tests::ThreadStore;
    use boad_proto::lines::PeerEntry;
    use boad_proto::service::Grant;
    use boad_proto::TransportKind;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;
    use std::path::{Path, PathBuf};

    fn grant(trigger: u16, world: u32, leaders: Option<u32>) -> Option<Grant> {
        Some(Grant {
            trigger,
            world,
            leaders,
        })
    }

    #[test]
    fn grants_from_the_store_are_checked() {
        assert_eq!(parse_grant("-"), Some(None));
        assert_eq!(parse_grant("4000,7"), Some(grant(4000, 7, None)));
        assert_eq!(parse_grant("4000,7,1"), Some(grant(4000, 7, Some(1))));
        for bad in [
            "",
            "0,7",
            "4000",
            "4000,",
            ",7",
            "65536,1",
            "+4,1",
            "4, 1",
            "4000,4294967295",
            "4000,7,7",
            "4000,7,1,2",
            "4000,7,",
            "x",
        ] {
            assert_eq!(parse_grant(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn free_communicators_are_read() {
        assert_eq!(parse_free("-"), Some(None));
        assert_eq!(parse_free("00000000000000f0"), Some(Some(0xf0)));
        for bad in ["", "f0", "+000000000000001", "00000000000000f0 x", "x"] {
            assert_eq!(parse_free(bad), None, "{bad:?}");
        }
        assert_eq!(list(&[3]), "3");
        assert_eq!(list(&[3, 6, 9]), "3, 6 and 9");
    }

    /// A job of `n` ranks on `hosts` hosts (`n` a multiple of it; consecutive ranks share a host),
    /// through a thread store: every rank's (grant, holds the registration).
    fn kernel_job(
        n: usize,
        hosts: usize,
        transport: TransportKind,
        socket: &Path,
    ) -> Vec<(Option<Grant>, bool)> {
        let table: Vec<PeerEntry> = (0..n)
            .map(|r| PeerEntry {
                rank: r,
                host_id: (r * hosts / n) as u32,
                ip: std::net::IpAddr::from([127, 77, 0, r as u8 + 1]),
                port: 5000 + r as u16,
                pulse: 6000 + r as u16,
                pid: 100 + r as u32,
            })
            .collect();
        let handles: Vec<_> = ThreadStore::group(n)
            .into_iter()
            .enumerate()
            .map(|(rank, mut store)| {
                let table = table.clone();
                let socket = socket.to_path_buf();
                std::thread::spawn(move || {
                    let mut info = JobInfo::singleton();
                    info.launcher = Launcher::Env;
                    info.rank = rank;
                    info.size = n;
                    info.local_size = n / hosts;
                    info.job = 0x1234;
                    let step = kernel_step(&mut store, &info, &table, transport, &socket)
                        .expect("kernel step");
                    (step.grant, step.held.is_some())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank"))
            .collect()
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("boad-ks-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("scratch directory");
        dir
    }

    #[test]
    fn rank_0_registers_a_one_host_job_and_every_rank_reads_the_grant() {
        let dir = scratch("grant");
        let socket = dir.join("s.sock");
        let listener = UnixListener::bind(&socket).expect("listen");
        // A peer speaking the service's side of the protocol: reads the job, answers a grant and
        // reports what it was sent once the client closes the connection.
        let served = std::thread::spawn(move || {
            let (conn, _) = listener.accept().expect("accept");
            let mut r = BufReader::new(conn);
            let mut lines = Vec::new();
            for _ in 0..4 {
                let mut l = String::new();
                r.read_line(&mut l).expect("read");
                lines.push(l);
            }
            r.get_mut().write_all(b"GRANT 4000 7 -\n").expect("answer");
            let mut rest = String::new();
            let closed = r.read_line(&mut rest).expect("read") == 0;
            (lines, closed)
        });
        let got = kernel_job(3, 1, TransportKind::Kernel, &socket);
        assert_eq!(
            got,
            vec![
                (grant(4000, 7, None), true),
                (grant(4000, 7, None), false),
                (grant(4000, 7, None), false)
            ]
        );
        let (lines, closed) = served.join().expect("service");
        assert_eq!(lines[0], "JOB 0000000000001234 3\n");
        assert_eq!(lines[3], "MEMBER 0 127.77.0.3 5002\n");
        // Rank 0's registration was dropped with its thread: the service saw the connection close.
        assert!(closed);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A fake kernel service at `socket` for `conns` connections: answers FREE with the next of
    /// `masks` (in turn) and JOB with a grant of what was asked (trigger 4000 when the job lets it
    /// pick), or REFUSED when `refuse` says so of the JOB line. Returns the lines it was sent and
    /// whether every registered connection was closed by the client.
    fn fake_service(
        socket: &Path,
        conns: usize,
        masks: Vec<u64>,
        refuse: fn(&str) -> bool,
    ) -> std::thread::JoinHandle<(Vec<String>, bool)> {
        let listener = UnixListener::bind(socket).expect("listen");
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut held = Vec::new();
            let mut next_mask = masks.into_iter().cycle();
            for _ in 0..conns {
                let (conn, _) = listener.accept().expect("accept");
                let mut r = BufReader::new(conn);
                let mut l = String::new();
                r.read_line(&mut l).expect("read");
                lines.push(l.clone());
                let w: Vec<&str> = l.split_whitespace().collect();
                if w == ["FREE"] {
                    let m = next_mask.next().expect("a mask");
                    r.get_mut()
                        .write_all(format!("FREE {m:016x}\n").as_bytes())
                        .expect("answer");
                    continue;
                }
                let n: usize = w[2].parse().expect("members");
                for _ in 0..n {
                    let mut m = String::new();
                    r.read_line(&mut m).expect("member");
                }
                if refuse(&l) {
                    r.get_mut().write_all(b"REFUSED busy\n").expect("answer");
                    continue;
                }
                let trigger = w.get(3).filter(|t| **t != "-").unwrap_or(&"4000");
                let (world, leaders) = (w.get(4).unwrap_or(&"9"), w.get(5).unwrap_or(&"-"));
                r.get_mut()
                    .write_all(format!("GRANT {trigger} {world} {leaders}\n").as_bytes())
                    .expect("answer");
                held.push(r);
            }
            let closed = held.into_iter().all(|mut r| {
                let mut rest = String::new();
                r.read_line(&mut rest).expect("read") == 0
            });
            (lines, closed)
        })
    }

    #[test]
    fn a_job_over_several_hosts_gets_the_same_communicators_from_every_hosts_service() {
        let dir = scratch("hosts");
        // 6 ranks on 3 hosts: every host's leader (0, 2, 4) asks its service what is free (three
        // FREE), then registers (three JOB), with the lowest ids free everywhere.
        let socket = dir.join("s.sock");
        let masks = vec![0b1111_0000, 0b0111_1000, 0b1101_1000];
        let served = fake_service(&socket, 6, masks, |_| false);
        let got = kernel_job(6, 3, TransportKind::Auto, &socket);
        let want = grant(4000, 4, Some(6));
        for (rank, (g, held)) in got.iter().enumerate() {
            assert_eq!(*g, want, "rank {rank}");
            assert_eq!(*held, rank % 2 == 0, "rank {rank}: only leaders register");
        }
        let (lines, closed) = served.join().expect("service");
        assert_eq!(lines.iter().filter(|l| *l == "FREE\n").count(), 3);
        let jobs: Vec<&String> = lines.iter().filter(|l| l.starts_with("JOB")).collect();
        assert_eq!(jobs.len(), 3);
        // Rank 0's first, letting its service pick the trigger port; then the others with it.
        assert_eq!(jobs[0], "JOB 0000000000001234 6 - 4 6\n");
        assert_eq!(jobs[1], "JOB 0000000000001234 6 4000 4 6\n");
        assert_eq!(jobs[2], "JOB 0000000000001234 6 4000 4 6\n");
        assert!(closed);

        // One host's service refuses: nobody takes the kernel path, every registration is dropped.
        std::fs::remove_file(&socket).expect("remove");
        let served = fake_service(&socket, 6, vec![u64::MAX], |l| l.contains(" 4000 "));
        let got = kernel_job(6, 3, TransportKind::Kernel, &socket);
        assert_eq!(got, vec![(None, false); 6]);
        let (_, closed) = served.join().expect("service");
        assert!(closed, "rank 0's registration is dropped");

        // No communicator free on every host: nothing is registered.
        std::fs::remove_file(&socket).expect("remove");
        let served = fake_service(&socket, 2, vec![0b01, 0b10], |_| false);
        let got = kernel_job(2, 2, TransportKind::Kernel, &socket);
        assert_eq!(got, vec![(None, false); 2]);
        let (lines, _) = served.join().expect("service");
        assert!(lines.iter().all(|l| l == "FREE\n"), "{lines:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn without_a_service_or_a_kernel_request_nothing_is_granted() {
        let dir = scratch("none");
        let socket = dir.join("absent.sock");
        for (transport, hosts) in [
            (TransportKind::Kernel, 1),
            (TransportKind::Udp, 1),
            (TransportKind::Auto, 1),
            (TransportKind::Kernel, 3),
            (TransportKind::Auto, 3),
            (TransportKind::Udp, 3),
        ] {
            assert_eq!(
                kernel_job(3, hosts, transport, &socket),
                vec![(None, false); 3],
                "{transport:?} on {hosts} host(s)"
            );
        }
        // A service that refuses: UDP, never an error.
        let refusing = dir.join("r.sock");
        let listener = UnixListener::bind(&refusing).expect("listen");
        let t = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            conn.write_all(b"REFUSED no communicator free\n")
                .expect("answer");
        });
        assert_eq!(
            kernel_job(2, 1, TransportKind::Kernel, &refusing),
            vec![(None, false); 2]
        );
        t.join().expect("service");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn refused(vars: &[(&str, &str)]) -> String {
        match detect(env(vars)) {
            Err(e @ (JoinError::Launcher { .. } | JoinError::BadEnv { .. })) => e.to_string(),
            other => panic!("{vars:?}: {other:?}"),
        }
    }

    #[test]
    fn each_launcher_is_known_by_its_variables() {
        let d = |l, rank, size| Detected {
            launcher: l,
            rank,
            size,
        };
        assert_eq!(
            detect(env(&[
                ("PMI_FD", "5"),
                ("PMI_RANK", "3"),
                ("PMI_SIZE", "9")
            ]))
            .ok(),
            Some(d(Launcher::Hydra, 3, 9))
        );
        assert_eq!(
            detect(env(&[
                ("PMI_FD", "5"),
                ("PMI_RANK", "1"),
                ("PMI_SIZE", "2"),
                ("PMI_JOBID", "12.0"),
                ("SLURM_STEP_ID", "0"),
                ("SLURM_STEP_NUM_TASKS", "2"),
            ]))
            .ok(),
            Some(d(Launcher::Slurm, 1, 2))
        );
        // mpiexec inside a Slurm allocation: Hydra's PMI-1, whatever SLURM_* says.
        assert_eq!(
            detect(env(&[
                ("PMI_FD", "6"),
                ("PMI_RANK", "2"),
                ("PMI_SIZE", "4"),
                ("SLURM_JOB_ID", "77"),
                ("SLURM_STEP_NUM_TASKS", "1"),
            ]))
            .ok(),
            Some(d(Launcher::Hydra, 2, 4))
        );
        assert_eq!(
            detect(env(&[
                ("RANK", "7"),
                ("WORLD_SIZE", "8"),
                ("MASTER_ADDR", "198.18.0.1"),
                ("MASTER_PORT", "29500"),
            ]))
            .ok(),
            Some(d(Launcher::Env, 7, 8))
        );
        // One process, nothing, or a value that is not a count: a job of one rank.
        for quiet in [
            &[("SLURM_STEP_NUM_TASKS", "1")][..],
            &[("WORLD_SIZE", "1"), ("RANK", "0")][..],
            &[("WORLD_SIZE", "x")][..],
            &[("SLURM_NTASKS", "9")][..],
            &[][..],
        ] {
            assert_eq!(
                detect(env(quiet)).ok(),
                Some(d(Launcher::Alone, 0, 1)),
                "{quiet:?}"
            );
        }
    }

    #[test]
    fn a_launcher_whose_job_cannot_be_joined_is_named_never_a_singleton() {
        let e = refused(&[("SLURM_STEP_NUM_TASKS", "9"), ("SLURM_PROCID", "4")]);
        assert!(e.contains("srun") && e.contains("--mpi=pmi2"), "{e}");
        let e = refused(&[("SLURM_STEP_NUM_TASKS", "9"), ("PMIX_RANK", "4")]);
        assert!(e.contains("PMIx"), "{e}");
        let e = refused(&[("OMPI_COMM_WORLD_SIZE", " 4 ")]);
        assert!(e.contains("Open MPI") && e.contains("boadrun"), "{e}");
        let e = refused(&[("PMI_SIZE", "2"), ("PMI_RANK", "1")]);
        assert!(e.contains("PMI_FD"), "{e}");
        let e = refused(&[("WORLD_SIZE", "8"), ("RANK", "0")]);
        assert!(e.contains("MASTER_ADDR, MASTER_PORT are not"), "{e}");
        let e = refused(&[("PMI_FD", "5"), ("PMI_SIZE", "4")]);
        assert!(e.contains("PMI_RANK") && e.contains("missing"), "{e}");
        let e = refused(&[("PMI_FD", "5"), ("PMI_RANK", "4"), ("PMI_SIZE", "4")]);
        assert!(e.contains("below PMI_SIZE=4"), "{e}");
    }
}
