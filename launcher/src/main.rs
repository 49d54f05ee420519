//! `boadrun`: starts the N ranks of a boad job on this machine, serves their rendezvous, forwards
//! their output and the signals it receives, and ends with the exit code of the first rank that
//! failed.
#![deny(missing_docs)]

mod cluster;
mod error;
mod janitor;
mod kernel;
mod program;
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

use boad_proto::Line;
use error::Error;
use kernel::{Setup, Transport, ENV_TRANSPORT};
use rendezvous::{Server, TableHook};
use spawn::{spawn_rank, Launch, Placement};

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
ranks joined and sends a KERNEL line in the rendezvous table. Everything is detached when boadrun \
exits, even by SIGKILL. With BOAD_STATS=1 boadrun prints the programs' counters at the end of the \
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
    /// Number of ranks to start.
    #[arg(short = 'n', long = "np", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    np: u32,
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
    /// bridge (host h is 198.18.0.(h+1)), ranks placed in contiguous blocks. Needs root; everything
    /// is removed when boadrun exits, even by SIGKILL. Overrides --bind.
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
    /// eBPF programs are compiled in and load) and the path a job would take, then exit.
    #[arg(long, conflicts_with_all = ["np", "hosts"])]
    check: bool,
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
    child: Child,
    exited: bool,
}

impl Rank {
    /// Sends `sig` to the rank's process group (its descendants too), or to the rank alone if it
    /// left that group. Only called before the rank is reaped, so its pid cannot have been reused.
    fn signal(&self, sig: i32) {
        if self.exited {
            return;
        }
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        // SAFETY: kill() has no memory-safety preconditions; `pid` is our unreaped child, which is
        // the leader of the process group it was started in.
        unsafe {
            if libc::kill(-pid, sig) != 0 {
                libc::kill(pid, sig);
            }
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

fn run(args: &Args) -> Result<i32, Error> {
    let Some((argv0, rest)) = args.command.split_first() else {
        return Err(Error::CommandNotFound(String::new()));
    };
    let program = program::resolve(argv0, std::env::var_os("PATH").as_deref())?;
    let size = args.np as usize;
    let grace = Duration::from_millis(args.kill_grace_ms);

    // One connection per rank: boadrun keeps one end, the rank inherits the other.
    let mut ours = Vec::with_capacity(size);
    let mut theirs = Vec::with_capacity(size);
    for _ in 0..size {
        let (a, b) = UnixStream::pair().map_err(Error::setup("cannot create a socket pair"))?;
        ours.push(a);
        theirs.push(b);
    }
    let job = job_key()?;
    let kernel: Arc<Mutex<Option<Setup>>> = Arc::new(Mutex::new(None));
    let server = Server::start(
        ours,
        Duration::from_millis(args.rendezvous_timeout_ms),
        Some(table_hook(Arc::clone(&kernel), job, args.transport.0)),
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

    let hosts = args.hosts.map_or(1, |h| h as usize);
    if hosts > size {
        return Err(Error::Usage(format!(
            "--hosts {hosts} needs at least as many ranks (-n {size})"
        )));
    }
    if args.wire_loss.is_some() {
        cluster::WireLoss::check_nft()?;
    }
    let cluster = match args.hosts {
        Some(h) => Some(cluster::Cluster::create(h as usize)?),
        None => None,
    };
    match (args.wire_loss, &cluster) {
        (Some(loss), Some(c)) => c.add_wire_loss(loss)?,
        (Some(_), None) => return Err(Error::Usage("--wire-loss needs --hosts".into())),
        (None, _) => {}
    }
    // A build without the programs says so for `--transport kernel` (and `--check`), not on every
    // `auto` job.
    // With `auto` the kernel path is set up only for a job over several hosts: on one host the
    // ranks use shared memory, and loading the programs costs seconds of verifier time.
    let transport = args.transport.0;
    if transport == TransportKind::Kernel
        || (transport.wants_kernel() && cfg!(feature = "kernel") && cluster.is_some())
    {
        let netns = match &cluster {
            Some(c) => c.netns_handles()?,
            None => Vec::new(),
        };
        match kernel::Folds::from_env().and_then(|folds| Setup::attach(netns, &folds)) {
            Ok(setup) => *lock(&kernel) = Some(setup),
            Err(why) if transport == TransportKind::Kernel => return Err(Error::Kernel(why)),
            Err(why) => fallback(&why),
        }
    }
    let kernel_on_lo = cluster.is_none() && lock(&kernel).is_some() && args.bind.is_loopback();
    let placements: Vec<Placement> = (0..size)
        .map(|r| {
            let h = cluster::host_of(r, size, hosts);
            let first = (0..size).position(|q| cluster::host_of(q, size, hosts) == h);
            let local_size = (0..size)
                .filter(|&q| cluster::host_of(q, size, hosts) == h)
                .count();
            Placement {
                host_id: h,
                local_rank: r - first.unwrap_or(r),
                local_size,
                bind: match &cluster {
                    Some(c) => IpAddr::V4(c.hosts[h].ip),
                    // Kernel path on `lo`: one loopback address per rank, so TC sees every
                    // clone as going to another address (same-address clones would need
                    // `accept_local` on the machine's own `lo`).
                    None if kernel_on_lo && r < 250 => IpAddr::from([127, 77, 0, r as u8 + 1]),
                    None => args.bind,
                },
                netns: cluster.as_ref().map(|c| c.hosts[h].netns_fd()),
            }
        })
        .collect();
    // Removes the job's shared-memory segment if the ranks did not (they unlink it once all mapped
    // it, so it is left only when a rank died before that), whatever way this function returns.
    let _shm = ShmCleanup {
        job,
        hosts: hosts as u32,
    };
    for host in 0..hosts as u32 {
        janitor.watch_file(&boad_proto::shm::segment_path(job, host));
    }
    let mut env = vec![
        (ENV_JOB, format!("{job:016x}").into()),
        (ENV_TRANSPORT, transport.name().into()),
    ];
    if let Some(ms) = args.timeout_ms {
        env.push((ENV_TIMEOUT_MS, ms.to_string().into()));
    }
    let launch = Launch {
        program: &program,
        argv0,
        args: rest,
        env,
        tag_output: args.tag_output,
    };
    let (done_tx, done_rx) = mpsc::channel();
    let mut ranks: Vec<Rank> = Vec::with_capacity(size);
    let mut groups = Vec::with_capacity(size);
    for (r, (place, conn)) in placements.iter().zip(theirs).enumerate() {
        let spawned = spawn_rank(&launch, r, size, place, conn.as_raw_fd(), &done_tx);
        // The rank has its copy; boadrun's must go, so that the rank's exit closes the connection.
        drop(conn);
        match spawned {
            Ok(child) => {
                if let Some(g) = janitor::Group::of(child.id()) {
                    janitor.watch_group(g);
                    groups.push(g);
                }
                ranks.push(Rank {
                    child,
                    exited: false,
                });
            }
            Err(e) => {
                for rank in &mut ranks {
                    rank.signal(SIGKILL);
                    let _ = rank.child.wait();
                }
                return Err(e);
            }
        }
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
    loop {
        for (r, rank) in ranks.iter_mut().enumerate().filter(|(_, rk)| !rk.exited) {
            let status = match rank.child.try_wait() {
                Ok(Some(status)) => status,
                Ok(None) => continue,
                Err(_) => ExitStatus::from_raw(125 << 8),
            };
            rank.exited = true;
            let code = exit_code(status);
            server.rank_exited(r, code);
            if code != 0 && first_failure.is_none() {
                first_failure = Some(code);
                if !stopping {
                    eprintln!(
                        "boadrun: rank {r} (pid {}) {}",
                        rank.child.id(),
                        describe(status)
                    );
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
            ranks.iter().for_each(|rk| rk.signal(SIGTERM));
            term_at = None;
            kill_at = Some(now + TERM_TO_KILL);
        }
        if term_at.is_some_and(|t| now >= t) {
            if !stopping {
                eprintln!("boadrun: terminating {live} remaining rank(s)");
            }
            stopping = true;
            ranks.iter().for_each(|rk| rk.signal(SIGTERM));
            term_at = None;
            kill_at = Some(now + TERM_TO_KILL);
        }
        if kill_at.is_some_and(|t| now >= t) {
            ranks.iter().for_each(|rk| rk.signal(SIGKILL));
            kill_at = None;
        }
        let wait = [term_at, kill_at]
            .into_iter()
            .flatten()
            .map(|t| t.saturating_duration_since(now))
            .fold(POLL, Duration::min);
        match sig_rx.recv_timeout(wait) {
            Ok(sig) if sig != SIGCHLD => {
                interrupts += usize::from(sig == SIGINT);
                let sig = if interrupts > 1 { SIGKILL } else { sig };
                stopping = true;
                ranks.iter().for_each(|rk| rk.signal(sig));
                if term_at.is_none() && kill_at.is_none() {
                    kill_at = Some(Instant::now() + grace);
                }
            }
            _ => {}
        }
    }

    // What the ranks left running in their process groups ends with the job.
    let left = janitor::end_groups(&groups, TERM_TO_KILL);
    if left > 0 {
        eprintln!("boadrun: ended {left} process(es) the ranks left running");
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
    if let (Some(loss), Some(c)) = (args.wire_loss, &cluster) {
        if kernel::stats_wanted() {
            match c.wire_loss_dropped() {
                Ok(per_host) => eprintln!("{}", wire_loss_line(&loss.percent(), &per_host)),
                Err(e) => eprintln!("boadrun: reading the wire-loss counters: {e}"),
            }
        }
    }
    drop(cluster);
    janitor.finish();
    if server.failure().is_some() {
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

/// Once all ranks joined: fills the kernel path's maps for job `job` and adds the `KERNEL` line to
/// the table. If that fails, `--transport kernel` aborts the job; `auto` detaches the programs,
/// says so, and sends the table without the line.
fn table_hook(kernel: Arc<Mutex<Option<Setup>>>, job: u64, transport: TransportKind) -> TableHook {
    Box::new(move |peers| {
        let mut slot = lock(&kernel);
        let Some(setup) = slot.as_mut() else {
            return Ok(Vec::new());
        };
        match setup.fill(job, peers) {
            Ok((trigger_port, leaders)) => Ok(vec![Line::Kernel {
                trigger_port,
                leaders,
            }]),
            Err(why) if transport == TransportKind::Kernel => Err(format!("kernel path: {why}")),
            Err(why) => {
                *slot = None;
                fallback(&why);
                Ok(Vec::new())
            }
        }
    })
}

fn main() {
    use clap::{CommandFactory, FromArgMatches};
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name() == Some(std::ffi::OsStr::new(janitor::ARGV0)) {
        janitor::run();
    }
    let matches = Args::command().after_help(after_help()).get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
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
