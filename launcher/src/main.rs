//! `boadrun`: starts the N ranks of a boad job on this machine, serves their rendezvous, forwards
//! their output and the signals it receives, and ends with the exit code of the first rank that
//! failed.
#![deny(missing_docs)]

mod cluster;
mod error;
mod program;
mod rendezvous;
mod spawn;

use std::ffi::OsString;
use std::io::Read;
use std::net::IpAddr;
use std::os::unix::net::UnixListener;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use boad::bootstrap::{ENV_JOB, ENV_RENDEZVOUS};
use clap::Parser;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGKILL, SIGTERM};
use signal_hook::iterator::Signals;

use error::Error;
use rendezvous::Server;
use spawn::{spawn_rank, Launch, Placement};

/// Collective timeout variable read by the library.
const ENV_TIMEOUT_MS: &str = "BOAD_TIMEOUT_MS";
/// Longest the main loop sleeps between checks.
const POLL: Duration = Duration::from_millis(100);
/// Time between SIGTERM and SIGKILL when the launcher stops ranks.
const TERM_TO_KILL: Duration = Duration::from_secs(1);
/// How long output of exited ranks may still be drained (from leftover background processes).
const DRAIN: Duration = Duration::from_secs(1);

/// Run N ranks of a boad program on this machine.
#[derive(Parser, Debug)]
#[command(
    name = "boadrun",
    version,
    override_usage = "boadrun [OPTIONS] [-n N] PROGRAM [ARGS]...",
    after_help = "Each rank gets BOAD_RANK, BOAD_SIZE, BOAD_LOCAL_RANK, BOAD_LOCAL_SIZE, BOAD_HOST_ID, \
BOAD_JOB, BOAD_RENDEZVOUS, BOAD_BIND_ADDR (and BOAD_TIMEOUT_MS if given) in its environment, \
/dev/null as stdin, and its own process group.\n\n\
Exit status: that of the first rank to exit non-zero (128+N if killed by signal N), else 0; \
127 if PROGRAM is not found, 126 if it cannot be executed, 125 if boadrun itself failed.\n\n\
SIGINT, SIGTERM and SIGHUP are forwarded to every rank's process group (a second SIGINT sends \
SIGKILL); ranks still running --kill-grace-ms later get SIGKILL. When a rank exits non-zero, the \
others get --kill-grace-ms to finish, then SIGTERM, then SIGKILL a second later."
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
    /// IP address the ranks bind their sockets to, exported as BOAD_BIND_ADDR.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Run the ranks on a virtual cluster of H hosts: network namespaces joined by veth pairs and a
    /// bridge (host h is 198.18.0.(h+1)), ranks placed in contiguous blocks. Needs root; everything
    /// is removed when boadrun exits, even by SIGKILL. Overrides --bind.
    #[arg(long, value_name = "H", value_parser = clap::value_parser!(u32).range(1..=cluster::MAX_HOSTS as i64))]
    hosts: Option<u32>,
    /// The program to run (searched in PATH if it has no '/'), then its arguments, passed as they
    /// are (options after PROGRAM belong to it).
    #[arg(value_name = "PROGRAM", required = true, num_args = 1..,
          trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<OsString>,
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

    let dir = tempfile::Builder::new()
        .prefix("boadrun-")
        .tempdir()
        .map_err(Error::setup("cannot create a temporary directory"))?;
    let sock = dir.path().join("rdv.sock");
    let listener = UnixListener::bind(&sock)
        .map_err(Error::setup(format!("cannot listen on {}", sock.display())))?;
    let server = Server::start(
        listener,
        size,
        Duration::from_millis(args.rendezvous_timeout_ms),
    );

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
    let cluster = match args.hosts {
        Some(h) => Some(cluster::Cluster::create(h as usize)?),
        None => None,
    };
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
                bind: cluster
                    .as_ref()
                    .map_or(args.bind, |c| IpAddr::V4(c.hosts[h].ip)),
                netns: cluster.as_ref().map(|c| c.hosts[h].netns_fd()),
            }
        })
        .collect();
    let mut env = vec![
        (ENV_JOB, format!("{:016x}", job_key()?).into()),
        (ENV_RENDEZVOUS, sock.clone().into_os_string()),
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
    for (r, place) in placements.iter().enumerate() {
        match spawn_rank(&launch, r, size, place, &done_tx) {
            Ok(child) => ranks.push(Rank {
                child,
                exited: false,
            }),
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
    drop(cluster);
    drop(dir);
    Ok(first_failure.unwrap_or(0))
}

fn main() {
    let args = Args::parse();
    let code = match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("boadrun: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}
