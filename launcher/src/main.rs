//! `boadrun`: starts the N ranks of a boad job on this machine, serves their rendezvous, forwards
//! their output and the signals it receives, and ends with the exit code of the first rank that
//! failed.
#![deny(missing_docs)]

mod agent;
mod cluster;
mod error;
mod janitor;
mod kernel;
mod program;
mod relay;
mod remote;
mod rendezvous;
mod spawn;

use std::ffi::OsString;
use std::io::Read;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use boad_proto::env::JOB as ENV_JOB;
use boad_proto::TransportKind;
use clap::Parser;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGKILL, SIGTERM};
use signal_hook::iterator::Signals;

use boad_proto::control::{Filled, KernelOnHost, ToAgent};
use boad_proto::service;
use error::Error;
use kernel::{Setup, Transport, ENV_TRANSPORT};
use rendezvous::{Server, TableHook};
use spawn::{spawn_rank, Launch, Output, Placement};

/// Collective timeout variable read by the library.
const ENV_TIMEOUT_MS: &str = "BOAD_TIMEOUT_MS";
/// Longest the main loop sleeps between checks.
const POLL: Duration = Duration::from_millis(100);
/// Time between SIGTERM and SIGKILL when the launcher stops ranks.
const TERM_TO_KILL: Duration = Duration::from_secs(1);
/// How long output of exited ranks may still be drained.
const DRAIN: Duration = Duration::from_secs(1);
/// Exit status when the job ran past `--timeout`.
const DEADLINE_EXIT: i32 = 124;

/// What `boadrun --help` says after the options: the ranks' environment, exit status, signals,
/// the kernel path, and every `BOAD_*` setting with its default (from [`boad_proto::SETTINGS`]).
fn after_help() -> String {
    let mut s = String::from(
        "Each rank gets BOAD_RANK, BOAD_SIZE, BOAD_LOCAL_RANK, BOAD_LOCAL_SIZE, BOAD_HOST_ID, \
BOAD_JOB, BOAD_RENDEZVOUS_FD (its own connection to boadrun, an inherited socket), BOAD_BIND_ADDR, \
BOAD_TRANSPORT (and BOAD_TIMEOUT_MS if given) in its environment, /dev/null as stdin, and its own \
process group.\n\n\
Exit status: that of the first rank to exit non-zero (128+N if killed by signal N), else 0; \
124 if the job ran past --timeout; 127 if PROGRAM is not found, 126 if it cannot be executed, 125 if \
boadrun itself failed.\n\n\
SIGINT, SIGTERM and SIGHUP are forwarded to every rank's process group (a second SIGINT sends \
SIGKILL); ranks still running --kill-grace-ms later get SIGKILL. When a rank exits non-zero, the \
others get --kill-grace-ms to finish, then SIGTERM, then SIGKILL a second later. When the job ends \
(or boadrun is killed, even by SIGKILL), whatever the ranks left running in their process groups is \
ended and the job's shared-memory segments are removed.\n\n\
Kernel path (boadrun built with the kernel feature, the default; CAP_BPF + CAP_NET_ADMIN): with \
--transport auto or kernel, boadrun loads boad's eBPF programs once, attaches XDP and TC egress to lo \
(with --hosts, to lo and eth0 of every host) before starting the ranks, fills their maps once all \
ranks joined and sends a KERNEL line in the rendezvous table; with -H or --hostfile each host's \
agent does so on its own host (lo and the interface towards the other hosts), or registers the job \
with its host's kernel service when one listens there, and a host that cannot puts the job on the \
userspace path (auto) or fails it (kernel). Everything is detached when \
boadrun (or the agent) exits, even by SIGKILL. When the kernel service boadd listens \
(BOAD_SERVICE_SOCKET, default /run/boad/boadd.sock), a job on this machine registers with it instead \
of loading anything, for any user. With BOAD_STATS=1 boadrun prints the programs' counters at the end of the \
job (and, with --wire-loss, how many datagrams it dropped on each host).\n\nEnvironment (default in brackets):\n",
    );
    let folds = boad_proto::Setting {
        name: kernel::ENV_FOLDS,
        default: "all",
        meaning:
            "for boadrun: which reduction programs to load (all, none, or a list of OP, DTYPE \
                  or OP:DTYPE such as sum:i32,max), each a verifier run",
    };
    for st in boad_proto::SETTINGS.iter().chain([&folds]) {
        s += &format!("  {} [{}]\n      {}\n", st.name, st.default, st.meaning);
    }
    s
}

/// Run N ranks of a boad program on this machine.
#[derive(Parser, Debug)]
#[command(
    name = "boadrun",
    version,
    override_usage = "boadrun [OPTIONS] [-n N] PROGRAM [ARGS]..."
)]
struct Args {
    /// Number of ranks to start (with -H or --hostfile: every slot of the hosts) [default: 1].
    #[arg(short = 'n', long = "np", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    np: Option<u32>,
    /// Run the ranks on these machines, started over the launch agent (ssh): a comma-separated
    /// list of NAME or NAME:SLOTS (SLOTS default 1), like mpirun -H; may be repeated. A host named
    /// localhost runs its ranks without the launch agent. Ranks fill each host's slots in order
    /// (see --map-by).
    #[arg(short = 'H', long = "host", value_name = "HOSTS",
          conflicts_with_all = ["hosts", "bind", "hostfile"])]
    host: Vec<String>,
    /// Like -H, from a file in Open MPI's syntax: one "NAME [slots=N] [max_slots=N]" per line,
    /// '#' comments.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["hosts", "bind"])]
    hostfile: Option<std::path::PathBuf>,
    /// With -H or --hostfile, how ranks are placed: slot (fill the first host's slots, then the
    /// next's) or node (one rank per host in turn).
    #[arg(long, value_enum, value_name = "HOW", default_value = "slot")]
    map_by: MapByArg,
    /// With -H or --hostfile, allow more ranks than slots (placed round robin).
    #[arg(long)]
    oversubscribe: bool,
    /// With -H or --hostfile, the command that runs a program on another host, given the host's
    /// name and the command (like Open MPI's plm_rsh_agent); split at spaces. For ssh boadrun adds
    /// -o BatchMode=yes -o ConnectTimeout=10 (no password prompt; options given here come first).
    #[arg(long, value_name = "COMMAND", default_value = "ssh")]
    launch_agent: String,
    /// With -H or --hostfile, the boadrun run on each host as the agent that starts its ranks (the
    /// same boad version); a name is looked up in that host's PATH.
    #[arg(long, value_name = "PATH", default_value = "boadrun")]
    agent_path: String,
    /// With -H or --hostfile, the address the other hosts reach boadrun's rendezvous at (a TCP
    /// port the system chooses) [default: the address this machine routes to each host from].
    #[arg(long, value_name = "ADDR")]
    rendezvous_addr: Option<IpAddr>,
    /// With -H, --hostfile or --hosts, how long each host's agent has to start and join (with -H,
    /// for the kernel path, to load and attach the programs too), in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    launch_timeout: u64,
    /// Set an environment variable for the ranks: VAR=VALUE, or VAR to pass on boadrun's own value
    /// (like mpirun -x); may be repeated. Every BOAD_* variable of boadrun's environment reaches
    /// the ranks on every host without it.
    #[arg(short = 'x', long = "export", value_name = "VAR[=VALUE]")]
    export: Vec<String>,
    /// Prefix every line a rank writes to stdout or stderr with "[RANK] " (a last line without
    /// newline gets one in any case, so lines of different ranks never mix).
    #[arg(long)]
    tag_output: bool,
    /// Exported to the ranks as BOAD_TIMEOUT_MS: how long a rank waits for a silent peer.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: Option<u64>,
    /// Once a rank has exited non-zero (or boadrun got a signal), how long the remaining ranks may
    /// run on before they get SIGTERM, then SIGKILL one second later.
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    kill_grace_ms: u64,
    /// How long the ranks that use the rendezvous socket have, from launch, for all to join; then
    /// those that did are sent ABORT.
    #[arg(long, value_name = "MS", default_value_t = 60000)]
    rendezvous_timeout_ms: u64,
    /// IP address the ranks bind their sockets to and advertise to their peers, exported as
    /// BOAD_BIND_ADDR: the address of this host's interface towards the other hosts (not 0.0.0.0).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1", value_parser = parse_bind)]
    bind: IpAddr,
    /// End the job (SIGTERM, then SIGKILL) if it runs longer than this many seconds; boadrun then
    /// exits with 124.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
    /// Run the ranks on a virtual cluster of H hosts: network namespaces joined by veth pairs and a
    /// bridge (host h is 198.18.0.(h+1)), ranks placed in contiguous blocks, each host's ranks
    /// started by a boadrun agent inside its namespace as on real machines (-H). Needs root;
    /// everything is removed when boadrun exits, even by SIGKILL. Overrides --bind.
    #[arg(long, value_name = "H", value_parser = clap::value_parser!(u32).range(1..=cluster::MAX_HOSTS as i64))]
    hosts: Option<u32>,
    /// With --hosts: drop PERCENT of the boad datagrams each host sends (0.01..99.99), on the wire
    /// before the kernel programs see them (an nftables rule on every host's output hook, so XDP
    /// folds and TC clones meet real loss), to test loss recovery. Needs nftables (nft). With
    /// BOAD_STATS=1 boadrun prints how many it dropped on each host.
    #[arg(long, value_name = "PERCENT", requires = "hosts", value_parser = cluster::WireLoss::parse)]
    wire_loss: Option<cluster::WireLoss>,
    /// The program to run (searched in PATH if it has no '/'), then its arguments, passed as they
    /// are (options after PROGRAM belong to it).
    #[arg(value_name = "PROGRAM", required_unless_present = "check", num_args = 1..,
          trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<OsString>,
    /// Collective path between hosts, exported to the ranks as BOAD_TRANSPORT: auto (the kernel
    /// path if boadrun can attach it, else userspace, saying so once: hierarchical when a host has
    /// several ranks), kernel (or fail with exit 125), udp, shm (over several hosts hierarchical:
    /// shared memory inside each host, UDP between one leader per host).
    #[arg(long, value_enum, env = ENV_TRANSPORT, default_value = "auto", value_name = "PATH")]
    transport: Transport,
    /// Print what this machine offers the kernel path (kernel, BTF, capabilities, whether the
    /// eBPF programs are compiled in and load) and the path a job would take, then exit. With -H
    /// or --hostfile: the same report from every host (its boadrun run there through the launch
    /// agent), each under "== host NAME"; exit status 1 if a host could not be checked.
    #[arg(long, conflicts_with_all = ["np", "hosts"])]
    check: bool,
}

/// `--map-by`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum MapByArg {
    /// Fill each host's slots in turn.
    Slot,
    /// One rank per host in turn.
    Node,
}

/// `-x VAR[=VALUE]`: the variable and its value (boadrun's own if no value is given; None if it has
/// none).
fn export(item: &str) -> Result<Option<(OsString, OsString)>, Error> {
    let (name, value) = match item.split_once('=') {
        Some((n, v)) => (n, Some(OsString::from(v))),
        None => (item, None),
    };
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(Error::Usage(format!(
            "-x {item}: {name:?} is not a variable name"
        )));
    }
    Ok(value
        .or_else(|| std::env::var_os(name))
        .map(|v| (OsString::from(name), v)))
}

/// `--bind`: an address peers can reach (ranks advertise it).
fn parse_bind(text: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = text.parse().map_err(|e| format!("{e}"))?;
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(format!(
            "{ip} cannot be advertised to peers: pass the address of this host's interface towards \
             the other hosts (e.g. --bind 10.1.2.3), or keep the default 127.0.0.1 for a job on one host"
        ));
    }
    Ok(ip)
}

/// A started rank.
struct Rank {
    /// The process, if on this machine (else its host's agent started it).
    child: Option<Child>,
    exited: bool,
}

impl Rank {
    /// Sends `sig` to the rank's process group (its descendants too), or to the rank alone if it
    /// left that group. Only called before the rank is reaped, so its pid cannot have been reused.
    fn signal(&self, sig: i32) {
        if let Some(child) = self.child.as_ref().filter(|_| !self.exited) {
            spawn::signal_group(child, sig);
        }
    }
}

/// The exit code convention of the job: the status, or 128+signal.
fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(125)
}

/// The usual name of signal `s`, if it is a common one.
fn signal_name(s: i32) -> Option<&'static str> {
    use libc::*;
    let names = [
        (SIGHUP, "SIGHUP"),
        (SIGINT, "SIGINT"),
        (SIGQUIT, "SIGQUIT"),
        (SIGILL, "SIGILL"),
        (SIGTRAP, "SIGTRAP"),
        (SIGABRT, "SIGABRT"),
        (SIGBUS, "SIGBUS"),
        (SIGFPE, "SIGFPE"),
        (SIGKILL, "SIGKILL"),
        (SIGUSR1, "SIGUSR1"),
        (SIGSEGV, "SIGSEGV"),
        (SIGUSR2, "SIGUSR2"),
        (SIGPIPE, "SIGPIPE"),
        (SIGALRM, "SIGALRM"),
        (SIGTERM, "SIGTERM"),
        (SIGXCPU, "SIGXCPU"),
    ];
    names.iter().find(|(n, _)| *n == s).map(|(_, name)| *name)
}

/// "exited with status 3", "was killed by signal SIGSEGV (core dumped)".
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => {
            let name = signal_name(s).map_or_else(|| s.to_string(), str::to_string);
            let core = if status.core_dumped() {
                " (core dumped)"
            } else {
                ""
            };
            format!("was killed by signal {name}{core}")
        }
        (None, None) => format!("ended with {status}"),
    }
}

/// Removes the job's shared-memory segments (one per host) when dropped, if the ranks left them.
struct ShmCleanup {
    job: u64,
    hosts: u32,
}

impl Drop for ShmCleanup {
    fn drop(&mut self) {
        for host in 0..self.hosts {
            if let Err(e) = boad_proto::shm::remove_segment(self.job, host) {
                eprintln!("boadrun: cannot remove the job's shared-memory segment: {e}");
            }
        }
    }
}

/// A random job key.
fn job_key() -> Result<u64, Error> {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(Error::setup("cannot read /dev/urandom"))?;
    Ok(u64::from_le_bytes(b))
}

/// The hosts of a `-H` / `--hostfile` job and its size, or None for a job on this machine.
fn host_plan(args: &Args) -> Result<Option<(usize, Vec<remote::HostPlan>)>, Error> {
    let specs = if let Some(path) = &args.hostfile {
        let text = std::fs::read_to_string(path)
            .map_err(Error::setup(format!("cannot read {}", path.display())))?;
        boad_proto::hosts::parse_hostfile(&text)
            .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?
    } else if !args.host.is_empty() {
        boad_proto::hosts::parse_host_list(&args.host.join(","))
            .map_err(|e| Error::Usage(format!("-H: {e}")))?
    } else {
        return Ok(None);
    };
    let map_by = match args.map_by {
        MapByArg::Slot => boad_proto::hosts::MapBy::Slot,
        MapByArg::Node => boad_proto::hosts::MapBy::Node,
    };
    let placed = boad_proto::hosts::place(
        &specs,
        args.np.map(|n| n as usize),
        map_by,
        args.oversubscribe,
    )
    .map_err(|e| Error::Usage(e.to_string()))?;
    let plan = placed
        .hosts
        .iter()
        .map(|h| remote::HostPlan {
            name: h.name.clone(),
            ranks: h.ranks.clone(),
        })
        .collect();
    Ok(Some((placed.np(), plan)))
}

/// `--check -H ...`: every host's report; the exit code (0 if every host answered, 1 if not, 125 on a
/// usage error).
fn check_hosts(args: &Args) -> i32 {
    let names = match host_plan(args) {
        Ok(Some((_, plan))) => plan.into_iter().map(|h| h.name).collect::<Vec<_>>(),
        Ok(None) => Vec::new(),
        Err(e) => {
            eprintln!("boadrun: {e}");
            return e.exit_code();
        }
    };
    match remote::check_hosts(&names, &remote_options(args), args.transport.0.name()) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("boadrun: {e}");
            e.exit_code()
        }
    }
}

/// How boadrun reaches the hosts of a `-H` / `--hostfile` job.
fn remote_options(args: &Args) -> remote::Options {
    remote::Options {
        launch_agent: args
            .launch_agent
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        agent_path: args.agent_path.clone(),
        rendezvous_addr: args.rendezvous_addr,
        tag_output: args.tag_output,
        launch_timeout: Duration::from_secs(args.launch_timeout),
    }
}

/// The variables boadrun passes to the ranks on other hosts besides its own: every `BOAD_*` of its
/// environment that it does not set per rank.
fn forwarded_env() -> Vec<(OsString, OsString)> {
    use boad_proto::env::*;
    let set_here = [
        RANK,
        SIZE,
        LOCAL_RANK,
        LOCAL_SIZE,
        JOB,
        RENDEZVOUS_FD,
        HOST_ID,
        BIND_ADDR,
        TRANSPORT,
        TIMEOUT_MS,
    ];
    std::env::vars_os()
        .filter(|(k, _)| {
            let k = k.to_string_lossy();
            k.starts_with("BOAD_") && !set_here.contains(&k.as_ref())
        })
        .collect()
}

/// The ranks of a job on this machine, started.
struct Local {
    groups: Vec<janitor::Group>,
    _shm: ShmCleanup,
}

/// Starts the ranks of a job on this machine, `theirs[r]` being rank r's end of its rendezvous
/// connection.
#[allow(clippy::too_many_arguments)]
fn start_local(
    args: &Args,
    size: usize,
    job: u64,
    theirs: Vec<UnixStream>,
    kernel: &Mutex<Option<Setup>>,
    janitor: &mut janitor::Janitor,
    launch: &Launch<'_>,
    done_tx: &mpsc::Sender<()>,
) -> Result<(Vec<Rank>, Local), Error> {
    // A build without the programs says so for `--transport kernel` (and `--check`); with `auto`
    // a job on one host does not set up the kernel path: its ranks use shared memory, and loading
    // the programs costs seconds of verifier time.
    if args.transport.0 == TransportKind::Kernel {
        match kernel::Folds::from_env().and_then(|folds| Setup::attach(Vec::new(), &folds)) {
            Ok(setup) => *lock(kernel) = Some(setup),
            Err(why) => return Err(Error::Kernel(why)),
        }
    }
    let kernel_on_lo = lock(kernel).is_some() && args.bind.is_loopback();
    let placements: Vec<Placement> = (0..size)
        .map(|r| Placement {
            host_id: 0,
            local_rank: r,
            local_size: size,
            bind: if kernel_on_lo && r < 250 {
                // Kernel path on `lo`: one loopback address per rank, so TC sees every clone as
                // going to another address (same-address clones would need `accept_local` on the
                // machine's own `lo`).
                IpAddr::from([127, 77, 0, r as u8 + 1])
            } else {
                args.bind
            },
        })
        .collect();
    // Removes the job's shared-memory segment if the ranks did not (they unlink it once all mapped
    // it, so it is left only when a rank died before that), whatever way this function returns.
    let shm = ShmCleanup { job, hosts: 1 };
    janitor.watch_file(&boad_proto::shm::segment_path(job, 0));
    let mut ranks: Vec<Rank> = Vec::with_capacity(size);
    let mut groups = Vec::with_capacity(size);
    for (r, (place, conn)) in placements.iter().zip(theirs).enumerate() {
        let spawned = spawn_rank(launch, r, size, place, conn.as_raw_fd(), done_tx);
        // The rank has its copy; boadrun's must go, so that the rank's exit closes the connection.
        drop(conn);
        match spawned {
            Ok(child) => {
                if let Some(g) = janitor::Group::of(child.id()) {
                    janitor.watch_group(g);
                    groups.push(g);
                }
                ranks.push(Rank {
                    child: Some(child),
                    exited: false,
                });
            }
            Err(e) => {
                for rank in &mut ranks {
                    rank.signal(SIGKILL);
                    if let Some(c) = rank.child.as_mut() {
                        let _ = c.wait();
                    }
                }
                return Err(e);
            }
        }
    }
    Ok((ranks, Local { groups, _shm: shm }))
}

/// The hosts of a `--hosts H` job of `size` ranks: host h of the virtual cluster, named by its
/// address, runs the h-th contiguous block of ranks ([`cluster::host_of`]).
fn cluster_plan(hosts: usize, size: usize) -> Result<Vec<remote::HostPlan>, Error> {
    if hosts > size {
        return Err(Error::Usage(format!(
            "--hosts {hosts} needs at least as many ranks (-n {size})"
        )));
    }
    Ok((0..hosts)
        .map(|h| remote::HostPlan {
            name: cluster::host_ip(h).to_string(),
            ranks: (0..size)
                .filter(|&r| cluster::host_of(r, size, hosts) == h)
                .collect(),
        })
        .collect())
}

fn run(args: &Args) -> Result<i32, Error> {
    let Some((argv0, rest)) = args.command.split_first() else {
        return Err(Error::CommandNotFound(String::new()));
    };
    let plan = match args.hosts {
        Some(h) => {
            let size = args.np.map_or(1, |n| n as usize);
            Some((size, cluster_plan(h as usize, size)?))
        }
        None => host_plan(args)?,
    };
    let size = match &plan {
        Some((size, _)) => *size,
        None => args.np.map_or(1, |n| n as usize),
    };
    // On other hosts the agents find the program; on this machine (a virtual cluster's hosts
    // too) boadrun does, before anything starts.
    let program = match (&plan, args.hosts) {
        (Some(_), None) => None,
        _ => Some(program::resolve(
            argv0,
            std::env::var_os("PATH").as_deref(),
        )?),
    };
    let mut exports = Vec::new();
    for item in &args.export {
        exports.extend(export(item)?);
    }
    let grace = Duration::from_millis(args.kill_grace_ms);
    let transport = args.transport.0;
    // A job across machines: whether its hosts' agents set up the kernel path (on a virtual
    // cluster boadrun does).
    let across = args.hosts.is_none()
        && plan
            .as_ref()
            .is_some_and(|(_, hosts)| kernel::across_hosts(transport, hosts.len() > 1));
    let link = Arc::new(remote::KernelLink::default());

    // One connection per rank: boadrun keeps one end, the rank (or, on another host, the relay to
    // the rank's agent) the other.
    let mut ours = Vec::with_capacity(size);
    let mut theirs = Vec::with_capacity(size);
    for _ in 0..size {
        let (a, b) = UnixStream::pair().map_err(Error::setup("cannot create a socket pair"))?;
        ours.push(a);
        theirs.push(b);
    }
    let job = job_key()?;
    let kernel: Arc<Mutex<Option<Setup>>> = Arc::new(Mutex::new(None));
    let hook = if across {
        hosts_table_hook(Arc::clone(&link), job, transport)
    } else {
        table_hook(Arc::clone(&kernel), job, transport)
    };
    let server = Server::start(
        ours,
        Duration::from_millis(args.rendezvous_timeout_ms),
        Some(hook),
    );
    // Cleans up after the job even if boadrun is killed (see janitor.rs).
    let mut janitor = janitor::Janitor::start()?;

    // Handlers first, so that a signal arriving while ranks start is not lost.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGCHLD])
        .map_err(Error::setup("cannot install signal handlers"))?;
    let (sig_tx, sig_rx) = mpsc::channel::<i32>();
    thread::spawn(move || {
        for s in signals.forever() {
            if sig_tx.send(s).is_err() {
                break;
            }
        }
    });

    let mut env = vec![
        (ENV_JOB, format!("{job:016x}").into()),
        (ENV_TRANSPORT, transport.name().into()),
    ];
    if let Some(ms) = args.timeout_ms {
        env.push((ENV_TIMEOUT_MS, ms.to_string().into()));
    }
    let (done_tx, done_rx) = mpsc::channel();
    let mut local = None;
    let mut remote = None;
    // A virtual cluster and what it leaves in /dev/shm, kept until the job's end.
    let mut cluster = None;
    let mut cluster_shm = None;
    let mut ranks: Vec<Rank>;
    match (&plan, &program) {
        (Some((_, hosts)), _) => {
            let mut hosts_in = None;
            if let Some(h) = args.hosts {
                if args.wire_loss.is_some() {
                    cluster::WireLoss::check_nft()?;
                }
                let c = cluster::Cluster::create(h as usize)?;
                if let Some(loss) = args.wire_loss {
                    c.add_wire_loss(loss)?;
                }
                // The hosts share this machine's /dev/shm: what their ranks leave there goes
                // with the job.
                for host in 0..h {
                    janitor.watch_file(&boad_proto::shm::segment_path(job, host));
                }
                cluster_shm = Some(ShmCleanup { job, hosts: h });
                // The kernel path: loaded once, attached in every host's namespace before any
                // agent starts its ranks (see kernel.rs), with `auto` as with `kernel`.
                let transport = args.transport.0;
                if transport == TransportKind::Kernel
                    || (transport.wants_kernel() && cfg!(feature = "kernel"))
                {
                    let attached = c.netns_handles().map_err(|e| e.to_string()).and_then(|ns| {
                        kernel::Folds::from_env().and_then(|folds| Setup::attach(ns, &folds))
                    });
                    match attached {
                        Ok(setup) => *lock(&kernel) = Some(setup),
                        Err(why) if transport == TransportKind::Kernel => {
                            return Err(Error::Kernel(why))
                        }
                        Err(why) => fallback(&why),
                    }
                }
                hosts_in = Some(remote::Namespaces {
                    netns: c.hosts.iter().map(cluster::Host::netns_fd).collect(),
                    listener: c.head_listener()?,
                });
                cluster = Some(c);
            }
            let mut all_env: Vec<(OsString, OsString)> = forwarded_env();
            all_env.extend(
                env.iter()
                    .map(|(k, v): &(&str, OsString)| (OsString::from(k), v.clone())),
            );
            all_env.extend(exports);
            let opts = remote_options(args);
            let prog = remote::Program {
                argv0: argv0.clone(),
                args: rest.to_vec(),
                env: all_env,
            };
            remote = Some(remote::Remote::start(
                hosts, size, theirs, &prog, &opts, hosts_in, &link,
            )?);
            ranks = (0..size)
                .map(|_| Rank {
                    child: None,
                    exited: false,
                })
                .collect();
        }
        (None, Some(program)) => {
            let launch = Launch {
                program,
                argv0,
                args: rest,
                env,
                extra_env: &exports,
                output: Output::Direct {
                    tag: args.tag_output,
                },
            };
            let (r, l) = start_local(
                args,
                size,
                job,
                theirs,
                &kernel,
                &mut janitor,
                &launch,
                &done_tx,
            )?;
            ranks = r;
            local = Some(l);
        }
        (None, None) => return Err(Error::CommandNotFound(String::new())),
    }
    drop(done_tx);

    let mut first_failure: Option<i32> = None;
    let deadline = args
        .timeout
        .map(|s| Instant::now() + Duration::from_secs(s));
    let mut past_deadline = false;
    let mut term_at: Option<Instant> = None;
    let mut kill_at: Option<Instant> = None;
    let mut stopping = false; // boadrun is ending the job: rank deaths are no news
    let mut interrupts = 0;
    let mut host_failed = false;
    let signal_all = |ranks: &[Rank], remote: &Option<remote::Remote>, sig: i32| {
        ranks.iter().for_each(|rk| rk.signal(sig));
        if let Some(rem) = remote {
            rem.signal(sig);
        }
    };
    loop {
        // (rank, code, who, how) of every rank that exited since the last round.
        let mut exits: Vec<(usize, i32, String, String)> = Vec::new();
        for (r, rank) in ranks.iter_mut().enumerate().filter(|(_, rk)| !rk.exited) {
            let Some(child) = rank.child.as_mut() else {
                continue;
            };
            let status = match child.try_wait() {
                Ok(Some(status)) => status,
                Ok(None) => continue,
                Err(_) => ExitStatus::from_raw(125 << 8),
            };
            exits.push((
                r,
                exit_code(status),
                format!("pid {}", child.id()),
                describe(status),
            ));
        }
        let mut wait = POLL;
        if let Some(rem) = remote.as_mut() {
            // The hosts' news is what the loop waits for; signals are checked right after.
            wait = Duration::from_millis(20);
            for ev in rem.poll(POLL - wait) {
                match ev {
                    remote::Event::Exit {
                        rank,
                        code,
                        pid,
                        how,
                    } => {
                        let host = rem.host_of(rank).map_or("?", |h| rem.name(h));
                        exits.push((rank, code, format!("pid {pid} on {host}"), how));
                    }
                    remote::Event::Fail { host, why } => {
                        eprintln!("boadrun: host {}: {why}", rem.name(host));
                        host_failed = true;
                    }
                    remote::Event::Gone { host, how } => {
                        let name = rem.name(host).to_string();
                        let lost: Vec<usize> = (0..size)
                            .filter(|&r| rem.host_of(r) == Some(host) && !ranks[r].exited)
                            .filter(|r| !exits.iter().any(|e| e.0 == *r))
                            .collect();
                        if !stopping {
                            eprintln!(
                                "boadrun: host {name}: its agent ended ({how}) while rank(s) {} ran",
                                lost.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
                            );
                        }
                        for r in lost {
                            exits.push((
                                r,
                                255,
                                format!("on {name}"),
                                "was lost with its host".into(),
                            ));
                        }
                    }
                }
            }
            if transport == TransportKind::Kernel && across {
                // `--transport kernel`: a host without the kernel path fails the job at once.
                for (host, why) in link.take_refusals() {
                    eprintln!("boadrun: host {}: kernel path: {why}", rem.name(host));
                    host_failed = true;
                }
            }
            if host_failed && term_at.is_none() && kill_at.is_none() {
                term_at = Some(Instant::now());
            }
        }
        for (r, code, who, how) in exits {
            ranks[r].exited = true;
            server.rank_exited(r, code);
            if code != 0 && first_failure.is_none() {
                first_failure = Some(code);
                if !stopping {
                    eprintln!("boadrun: rank {r} ({who}) {how}");
                }
                if term_at.is_none() && kill_at.is_none() {
                    term_at = Some(Instant::now() + grace);
                }
            }
        }
        let live = ranks.iter().filter(|rk| !rk.exited).count();
        if live == 0 {
            break;
        }
        let now = Instant::now();
        if let Some(why) = server.check_timeout(now) {
            eprintln!("boadrun: {why}");
        }
        if !past_deadline && deadline.is_some_and(|d| now >= d) {
            past_deadline = true;
            eprintln!(
                "boadrun: the job ran longer than --timeout {} s; ending its {live} remaining rank(s)",
                args.timeout.unwrap_or(0)
            );
            stopping = true;
            signal_all(&ranks, &remote, SIGTERM);
            term_at = None;
            kill_at = Some(now + TERM_TO_KILL);
        }
        if term_at.is_some_and(|t| now >= t) {
            if !stopping || host_failed {
                eprintln!("boadrun: terminating {live} remaining rank(s)");
            }
            stopping = true;
            signal_all(&ranks, &remote, SIGTERM);
            term_at = None;
            kill_at = Some(now + TERM_TO_KILL);
        }
        if kill_at.is_some_and(|t| now >= t) {
            signal_all(&ranks, &remote, SIGKILL);
            kill_at = None;
            if let Some(rem) = remote.as_mut() {
                // Ranks on a host whose agent no longer answers are given up on.
                rem.end(TERM_TO_KILL);
                for (r, rank) in ranks.iter_mut().enumerate().filter(|(_, rk)| !rk.exited) {
                    rank.exited = true;
                    server.rank_exited(r, 255);
                }
            }
        }
        let wait = [term_at, kill_at]
            .into_iter()
            .flatten()
            .map(|t| t.saturating_duration_since(now))
            .fold(wait, Duration::min);
        match sig_rx.recv_timeout(wait) {
            Ok(sig) if sig != SIGCHLD => {
                interrupts += usize::from(sig == SIGINT);
                let sig = if interrupts > 1 { SIGKILL } else { sig };
                stopping = true;
                signal_all(&ranks, &remote, sig);
                if term_at.is_none() && kill_at.is_none() {
                    kill_at = Some(Instant::now() + grace);
                }
            }
            _ => {}
        }
    }

    if let Some(rem) = remote.as_mut() {
        // Every rank exited: the agents pass on the last output (and counters) and end.
        rem.end(DRAIN);
        let (per_host, service_hosts) = link.stats();
        if across && kernel::stats_wanted() && !per_host.is_empty() {
            let mut sum = Vec::new();
            for c in &per_host {
                kernel::add_counters(&mut sum, c);
            }
            let mut line = kernel::stats_line(&sum, per_host.len());
            if service_hosts > 0 {
                // Those hosts' counters are their services': host-wide, not this job's alone.
                line += &format!(" service_hosts={service_hosts}");
            }
            eprintln!("{line}");
        }
    }
    if let Some(l) = &local {
        // What the ranks left running in their process groups ends with the job.
        let left = janitor::end_groups(&l.groups, TERM_TO_KILL);
        if left > 0 {
            eprintln!("boadrun: ended {left} process(es) the ranks left running");
        }
    }
    // Let the forwarding threads finish writing what the ranks left in their pipes.
    let until = Instant::now() + DRAIN;
    for _ in 0..2 * size {
        if done_rx
            .recv_timeout(until.saturating_duration_since(Instant::now()))
            .is_err()
        {
            break;
        }
    }
    // Detach before the cluster's namespaces go.
    if let Some(setup) = lock(&kernel).take() {
        if kernel::stats_wanted() {
            kernel::print_stats(&setup);
        }
    }
    if let Some(c) = &cluster {
        if let Some(loss) = args.wire_loss {
            if kernel::stats_wanted() {
                match c.wire_loss_dropped() {
                    Ok(per_host) => eprintln!("{}", wire_loss_line(&loss.percent(), &per_host)),
                    Err(e) => eprintln!("boadrun: reading the wire-loss counters: {e}"),
                }
            }
        }
    }
    drop(local);
    drop(cluster);
    drop(cluster_shm);
    janitor.finish();
    if server.failure().is_some() || host_failed {
        return Ok(125);
    }
    if past_deadline {
        return Ok(DEADLINE_EXIT);
    }
    Ok(first_failure.unwrap_or(0))
}

/// The `BOAD_STATS` line of `--wire-loss`: the datagrams dropped in all and on each host.
fn wire_loss_line(percent: &str, per_host: &[u64]) -> String {
    let mut line = format!(
        "boadrun stats: wire-loss percent={percent} dropped={}",
        per_host.iter().sum::<u64>()
    );
    for (h, n) in per_host.iter().enumerate() {
        line += &format!(" host{h}={n}");
    }
    line
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The one line `--transport auto` prints when the kernel path cannot be used.
fn fallback(why: &str) {
    eprintln!("boadrun: kernel path unavailable ({why}); collectives use the userspace path");
}

/// Once all ranks joined: fills the kernel path's maps for job `job` (or registers it with the
/// kernel service) and adds the `KERNEL` line (and the service's `KCOMMS`) to the table. If that fails, `--transport kernel` aborts the job; `auto` detaches the programs,
/// says so, and sends the table without the line.
fn table_hook(kernel: Arc<Mutex<Option<Setup>>>, job: u64, transport: TransportKind) -> TableHook {
    Box::new(move |peers| {
        let mut slot = lock(&kernel);
        let Some(setup) = slot.as_mut() else {
            return Ok(Vec::new());
        };
        match setup.fill(job, peers) {
            Ok(lines) => Ok(lines),
            Err(why) if transport == TransportKind::Kernel => Err(format!("kernel path: {why}")),
            Err(why) => {
                *slot = None;
                fallback(&why);
                Ok(Vec::new())
            }
        }
    })
}

/// How long the table hook of a job across machines waits for the agents: to say whether they
/// attached the kernel path (they say so before starting their ranks, so this only covers lines
/// still on their way), and to fill its maps (next hops resolved within 3 s).
const AGENT_KERNEL_WAIT: Duration = Duration::from_secs(5);
/// Trigger ports tried before a job across machines gives up on the kernel path.
const TRIGGER_TRIES: u64 = 8;

/// The `attempt`-th trigger port tried for job `job`: below Linux's ephemeral ports (32768 up),
/// which the ranks' sockets take.
fn trigger_candidate(job: u64, attempt: u64) -> u16 {
    // splitmix64 of the job key and the attempt.
    let mut z = job ^ attempt.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    20000 + (z % 12000) as u16
}

/// The table hook of a job across machines whose hosts set up the kernel path: waits for every
/// agent to say whether it attached the programs or has its host's kernel service; if all did,
/// picks the job's communicator ids (the lowest free on every service-backed host; with no service,
/// any: each attaching agent has programs of its own), sends each agent the job table, a trigger
/// port (another if that port is taken on some host) and the ids, and waits for all to fill their
/// maps or register the job with their service, then adds the `KERNEL` and `KCOMMS` lines. If some
/// host cannot, `--transport kernel` aborts the job naming it; `auto` tells every agent to detach
/// (or end its registration), says once which host(s) could not and why, and sends the table
/// without the lines (one host without the kernel path puts the whole job on the userspace path).
fn hosts_table_hook(
    link: Arc<remote::KernelLink>,
    job: u64,
    transport: TransportKind,
) -> TableHook {
    Box::new(move |peers| {
        let names = link.names();
        let on = |host: usize, why: &str| format!("host {}: {why}", names[host]);
        let attached = link.attached(AGENT_KERNEL_WAIT);
        let mut why_not: Vec<String> = attached
            .iter()
            .enumerate()
            .filter_map(|(h, a)| match a {
                Some(KernelOnHost::Attached(_) | KernelOnHost::Service(_)) => None,
                Some(KernelOnHost::No(why)) => Some(on(h, why)),
                None => Some(on(
                    h,
                    "its agent did not say whether it attached the kernel path",
                )),
            })
            .collect();
        let comms = if why_not.is_empty() {
            pick_comms(&attached, kernel::uses_leaders(peers))
        } else {
            None
        };
        if why_not.is_empty() && comms.is_none() {
            why_not.push(
                "no communicator is free on every host's kernel service (each holds 64)".into(),
            );
        }
        if let (true, Some(comms)) = (why_not.is_empty(), comms) {
            let table: String = peers
                .iter()
                .map(|p| ToAgent::Peer(p.clone()).encode())
                .collect();
            for attempt in 0..TRIGGER_TRIES {
                let trigger = trigger_candidate(job, attempt);
                link.clear_filled();
                let fill = ToAgent::Fill {
                    job,
                    trigger,
                    comms,
                };
                let text = table.clone() + &fill.encode();
                why_not = (0..names.len())
                    .filter_map(|h| link.send(h, &text).err().map(|e| on(h, &e)))
                    .collect();
                if !why_not.is_empty() {
                    break;
                }
                let filled = link.filled(AGENT_KERNEL_WAIT);
                why_not = filled
                    .iter()
                    .enumerate()
                    .filter_map(|(h, f)| match f {
                        Some(Filled::Ok | Filled::PortBusy) => None,
                        Some(Filled::No(why)) => Some(on(h, why)),
                        None => Some(on(
                            h,
                            &format!(
                                "its agent did not fill the kernel path's maps within {} s",
                                AGENT_KERNEL_WAIT.as_secs()
                            ),
                        )),
                    })
                    .collect();
                let busy = filled.contains(&Some(Filled::PortBusy));
                if why_not.is_empty() && !busy {
                    return Ok(service::Grant {
                        trigger,
                        world: comms.world,
                        leaders: comms.leaders,
                    }
                    .lines());
                }
                if !why_not.is_empty() {
                    break;
                }
            }
            if why_not.is_empty() {
                why_not.push(format!(
                    "no trigger port free on every host in {TRIGGER_TRIES} tries"
                ));
            }
        }
        let why = why_not.join("; ");
        if transport == TransportKind::Kernel {
            return Err(format!("kernel path: {why}"));
        }
        for h in 0..names.len() {
            let _ = link.send(h, &ToAgent::KernelOff.encode());
        }
        fallback(&why);
        Ok(Vec::new())
    })
}

/// The communicator ids of a job across machines whose hosts said `attached` (every one attached
/// the programs or has a kernel service), with a second id for the host leaders if `leaders`: the
/// lowest free on every service-backed host (its `FREE` mask); with no such host, the lowest ids
/// (each host's programs are its agent's own). None if too few are free on every service.
fn pick_comms(attached: &[Option<KernelOnHost>], leaders: bool) -> Option<service::Comms> {
    let free = attached
        .iter()
        .filter_map(|a| match a {
            Some(KernelOnHost::Service(mask)) => Some(*mask),
            _ => None,
        })
        .fold(u64::MAX, |all, mask| all & mask);
    service::Comms::lowest_free(free, leaders)
}

fn main() {
    use clap::{CommandFactory, FromArgMatches};
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name() == Some(std::ffi::OsStr::new(janitor::ARGV0)) {
        janitor::run();
    }
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new(agent::FLAG)) {
        agent::main();
    }
    let matches = Args::command().after_help(after_help()).get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    if args.check {
        // A report and nothing else: when its reader goes (`boadrun --check | head`), end as
        // other such tools do instead of panicking in println!. (Jobs keep SIGPIPE ignored: boadrun
        // writes to ranks, agents and sockets that may go at any time.)
        // SAFETY: sets this process's SIGPIPE disposition back to the default, before any thread.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    if args.check && (!args.host.is_empty() || args.hostfile.is_some()) {
        std::process::exit(check_hosts(&args));
    }
    if args.check {
        kernel::check(args.transport.0);
        std::process::exit(0);
    }
    let code = match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("boadrun: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::{pick_comms, service::Comms, KernelOnHost};

    #[test]
    fn communicator_ids_are_free_on_every_service_backed_host() {
        let own = || Some(KernelOnHost::Attached("eth0".into()));
        let svc = |mask| Some(KernelOnHost::Service(mask));
        let c = |world, leaders| Some(Comms { world, leaders });
        // Hosts that attached the programs themselves take any ids: the lowest.
        assert_eq!(pick_comms(&[own(), own()], true), c(0, Some(1)));
        assert_eq!(pick_comms(&[own()], false), c(0, None));
        // The lowest ids free on every service, whatever the attaching hosts.
        assert_eq!(
            pick_comms(&[svc(0b1110_1100), own(), svc(0b0111_1010)], true),
            c(3, Some(5))
        );
        assert_eq!(pick_comms(&[svc(1 << 40), own()], false), c(40, None));
        // Too few free on every service: none.
        assert_eq!(pick_comms(&[svc(1 << 40), svc(1 << 41)], false), None);
        assert_eq!(pick_comms(&[svc(1 << 40)], true), None);
    }
}
