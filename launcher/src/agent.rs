//! `boadrun --agent`: the part of a multi-host job that runs on each host.
//!
//! boadrun starts one agent per host through the launch agent (`ssh HOST boadrun --agent`; on a
//! virtual cluster, `--hosts`, itself inside the host's network namespace) and writes it the job on
//! its standard input ([`AgentSpec`]). The agent checks that it runs the same
//! boad, connects to boadrun's rendezvous over TCP and proves it knows the job's secret (`auth`),
//! starts its host's ranks exactly as boadrun does on one machine (own process groups, killed if the
//! agent dies, a janitor for what they leave running), and then relays: the ranks' rendezvous
//! connections over the TCP connection (`relay`), their output lines, exits and the agent's own
//! failures as control lines on its standard output, signals from its standard input.
//!
//! Kernel path: when the job's transport wants it ([`kernel::across_hosts`]) and boadrun did not
//! attach it on this host itself (a virtual cluster's host, `AgentSpec::kernel_by_launcher`), the
//! agent sets it up before its ranks start and says how that went before `READY`. When the host's
//! kernel service (`boadd`) listens (at the job's `BOAD_SERVICE_SOCKET`, else the default socket),
//! the agent loads nothing, whatever its user: it asks the service which communicators are free
//! and says `KERNEL service MASK` ([`kernel::HostService`]). Otherwise, as root, it loads and
//! attaches the programs itself ([`kernel::HostSetup`], `KERNEL ok IFNAME`); else `KERNEL no
//! REASON`. Once every rank said HELLO boadrun sends it the job table (`KPEER` lines) and `KFILL`
//! with a trigger port and the communicator ids to use (the same on every host); the agent fills
//! its maps, or registers the job with its service and holds the registration (a trigger port
//! already bound on this host is `FILLED busy`, and boadrun tries another), and answers (`FILLED`);
//! `KOFF` detaches everything or ends the registration. With `BOAD_STATS` it reports the programs'
//! counters (`KSTATS`) when its ranks have exited: through the service those are host-wide (every
//! job the service served while this one was registered). Everything it attached is detached, and
//! its registration ends, when it ends, however it ends (the links and the service connection are
//! its descriptors, close-on-exec, so no rank holds one).
//!
//! Contract: the job on this host ends with the agent's input. When boadrun closes it, or the
//! connection carrying it is lost (ssh ended, boadrun killed), or the rendezvous connection is lost,
//! every rank of this host is killed (SIGKILL, their process groups too) and the agent exits. Nothing
//! the agent reads is trusted before it is checked (`control`), and the secret is read from standard
//! input only.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Child;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGKILL, SIGTERM};
use signal_hook::iterator::Signals;

use crate::kernel::{self, Folds, HostKernel, HostService, HostSetup};
use crate::relay::{self, RankEnd};
use crate::spawn::{signal_group, spawn_rank, Launch, Output, Placement};
use crate::{describe, exit_code, janitor, program};
use boad_proto::auth::{client_handshake, Secret};
use boad_proto::control::{
    read_line, AgentSpec, Filled, FromAgent, KernelOnHost, RendezvousAt, ToAgent,
};
use boad_proto::{service, PeerEntry, TransportKind};

/// The argument that makes `boadrun` an agent (not in `--help`: boadrun passes it itself).
pub const FLAG: &str = "--agent";
/// How long connecting and proving ourselves to the rendezvous may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes one control line to standard output (boadrun reads it on the other end).
fn say(m: &FromAgent) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(&m.encode()).and_then(|()| o.flush());
}

/// Runs the agent; never returns.
pub fn main() -> ! {
    let code = match run() {
        Ok(code) => code,
        Err(why) => {
            say(&FromAgent::Fail(why.clone()));
            1
        }
    };
    std::process::exit(code);
}

/// What the agent's main loop hears.
enum Event {
    /// A line from boadrun.
    Control(ToAgent),
    /// boadrun closed our input, or it was lost.
    InputEnded,
    /// The rendezvous connection was lost.
    RendezvousLost,
    /// A signal to the agent itself.
    Signal(i32),
}

/// The address of the rendezvous.
fn rendezvous_addr(at: &RendezvousAt) -> Result<SocketAddr, String> {
    match at {
        RendezvousAt::Addr(a) => Ok(*a),
        RendezvousAt::SshClient(port) => {
            let conn = std::env::var("SSH_CONNECTION").map_err(|_| {
                "boadrun could not resolve this host's name and SSH_CONNECTION is not set: \
                 give boadrun --rendezvous-addr"
                    .to_string()
            })?;
            let ip: IpAddr = conn
                .split(' ')
                .next()
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| format!("SSH_CONNECTION={conn:?} does not start with an address"))?;
            Ok(SocketAddr::new(ip, *port))
        }
    }
}

/// The value of variable `name` in the job's environment (the spec's, not the agent's own).
fn spec_var<'a>(spec: &'a AgentSpec, name: &str) -> Option<&'a str> {
    spec.env
        .iter()
        .rev()
        .find(|(k, _)| k == name.as_bytes())
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// The kernel service's socket for this job: the spec's `BOAD_SERVICE_SOCKET` if set and not
/// empty, else the default.
fn service_socket(spec: &AgentSpec) -> PathBuf {
    spec_var(spec, service::SOCKET_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(service::DEFAULT_SOCKET), PathBuf::from)
}

/// Sets up the kernel path for this host if the job wants it, saying how that went: through the
/// host's kernel service when it listens (nothing is loaded then; the agent reports the
/// communicators the service has free), else loaded and attached by the agent itself (root).
fn attach_kernel(spec: &AgentSpec, bind: IpAddr) -> Option<HostKernel> {
    let transport = spec_var(spec, boad_proto::env::TRANSPORT)
        .and_then(|t| t.parse::<TransportKind>().ok())
        .unwrap_or(TransportKind::Auto);
    if spec.kernel_by_launcher || !kernel::across_hosts(transport, spec.ranks.len() < spec.size) {
        return None;
    }
    if let Err(why) = kernel::host_ipv4(bind) {
        say(&FromAgent::Kernel(KernelOnHost::No(why)));
        return None;
    }
    let socket = service_socket(spec);
    let stats = kernel::stats_on(spec_var(spec, "BOAD_STATS"));
    // The service's answer when its socket is there but it could not serve us (a stale socket,
    // a service of another user): said with why the agent could not attach either.
    let mut service_why = None;
    if service::present_at(&socket) {
        match HostService::open(socket.clone(), stats) {
            Ok((s, free)) => {
                say(&FromAgent::Kernel(KernelOnHost::Service(free)));
                return Some(HostKernel::Service(s));
            }
            Err(why) => service_why = Some(why),
        }
    }
    let set_up = match kernel::missing_caps() {
        Some(why) => Err(match &service_why {
            Some(_) => why,
            None => format!(
                "{why}, or the kernel service boadd: none listens at {}",
                socket.display()
            ),
        }),
        None => spec_var(spec, kernel::ENV_FOLDS)
            .map_or_else(|| Ok(Folds::all()), Folds::parse)
            .and_then(|f| HostSetup::attach(bind, spec.host_id, &f))
            .map(|h| {
                let iface = h.iface().to_string();
                (HostKernel::Own(h), KernelOnHost::Attached(iface))
            }),
    };
    let set_up = set_up.map_err(|why| match service_why {
        Some(s) => format!("{s}; attaching the programs here: {why}"),
        None => why,
    });
    match set_up {
        Ok((k, said)) => {
            say(&FromAgent::Kernel(said));
            Some(k)
        }
        Err(why) => {
            say(&FromAgent::Kernel(KernelOnHost::No(why)));
            None
        }
    }
}

/// Checks the job table boadrun sent for a fill: every rank of the job once, in rank order, this
/// host's ranks on this host.
fn check_table(table: &[PeerEntry], spec: &AgentSpec) -> Result<(), String> {
    if table.len() != spec.size {
        return Err(format!(
            "boadrun sent a table of {} ranks for a job of {}",
            table.len(),
            spec.size
        ));
    }
    if let Some((i, e)) = table.iter().enumerate().find(|(i, e)| e.rank != *i) {
        return Err(format!("entry {i} of the table is rank {}", e.rank));
    }
    match spec
        .ranks
        .iter()
        .find(|&&r| table[r].host_id as usize != spec.host_id)
    {
        Some(r) => Err(format!(
            "the table puts rank {r}, one of this host's, on another host"
        )),
        None => Ok(()),
    }
}

fn run() -> Result<i32, String> {
    let mut input = std::io::BufReader::new(std::io::stdin());
    let spec = AgentSpec::read(&mut input).map_err(|e| e.to_string())?;
    let host = spec.host_id;
    if let Some(dir) = &spec.cwd {
        // As mpirun does: the launcher's directory if this host has it, else where we are.
        let _ = std::env::set_current_dir(OsStr::from_bytes(dir));
    }
    let argv0 = OsString::from_vec(spec.program.clone());
    let program =
        program::resolve(&argv0, std::env::var_os("PATH").as_deref()).map_err(|e| e.to_string())?;
    let secret = Secret::from_hex(&spec.secret).map_err(|e| e.to_string())?;
    let addr = rendezvous_addr(&spec.rendezvous)?;
    let mut tcp = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| format!("cannot reach boadrun's rendezvous at {addr}: {e}"))?;
    let _ = tcp.set_read_timeout(Some(CONNECT_TIMEOUT));
    let _ = tcp.set_write_timeout(Some(CONNECT_TIMEOUT));
    client_handshake(&mut tcp, &secret, format!("agent {host}").as_bytes())
        .map_err(|e| format!("rendezvous at {addr} refused us: {e}"))?;
    let _ = tcp.set_read_timeout(None);
    let _ = tcp.set_write_timeout(None);
    let _ = tcp.set_nodelay(true);
    // The ranks advertise the address this host reaches boadrun from.
    let bind = tcp
        .local_addr()
        .map_err(|e| format!("cannot read the rendezvous connection's address: {e}"))?
        .ip();

    // Before any rank starts, so that every rank's datagrams meet the programs.
    let mut kpath = attach_kernel(&spec, bind);
    // The job table while boadrun sends it (at most one entry per rank).
    let mut table: Vec<PeerEntry> = Vec::new();
    let mut table_overflow = false;

    let mut janitor = janitor::Janitor::start().map_err(|e| e.to_string())?;
    let (ev_tx, ev_rx) = mpsc::channel::<Event>();
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|e| format!("signal handlers: {e}"))?;
    let tx = ev_tx.clone();
    thread::spawn(move || {
        for s in signals.forever() {
            if tx.send(Event::Signal(s)).is_err() {
                break;
            }
        }
    });

    let args: Vec<OsString> = spec.args.iter().cloned().map(OsString::from_vec).collect();
    let env: Vec<(OsString, OsString)> = spec
        .env
        .iter()
        .map(|(k, v)| (OsString::from_vec(k.clone()), OsString::from_vec(v.clone())))
        .collect();
    let launch = Launch {
        program: &program,
        argv0: &argv0,
        args: &args,
        env: Vec::new(),
        extra_env: &env,
        output: Output::Framed,
    };
    let (done_tx, done_rx) = mpsc::channel();
    let mut ranks: Vec<(usize, Child, bool)> = Vec::new();
    let mut groups = Vec::new();
    let mut ends = Vec::new();
    let local_size = spec.ranks.len();
    for (local_rank, &rank) in spec.ranks.iter().enumerate() {
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| format!("cannot create a socket pair: {e}"))?;
        let place = Placement {
            host_id: host,
            local_rank,
            local_size,
            bind,
        };
        let spawned = spawn_rank(
            &launch,
            rank,
            spec.size,
            &place,
            theirs.as_raw_fd(),
            &done_tx,
        );
        drop(theirs);
        match spawned {
            Ok(child) => {
                if let Some(g) = janitor::Group::of(child.id()) {
                    janitor.watch_group(g);
                    groups.push(g);
                }
                ranks.push((rank, child, false));
                ends.push(RankEnd { rank, conn: ours });
            }
            Err(e) => {
                for (_, child, _) in &mut ranks {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(e.to_string());
            }
        }
    }
    drop(done_tx);
    let tx = ev_tx.clone();
    relay::run(tcp, ends, move || {
        let _ = tx.send(Event::RendezvousLost);
    });
    say(&FromAgent::Ready);

    // boadrun's lines; the end of our input ends the job here.
    let tx = ev_tx;
    thread::spawn(move || {
        while let Ok(Some(line)) = read_line(&mut input) {
            match ToAgent::parse(&line) {
                Ok(m) => {
                    if tx.send(Event::Control(m)).is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!("boadrun agent: ignoring {e}"),
            }
        }
        let _ = tx.send(Event::InputEnded);
    });

    let signal_all = |ranks: &[(usize, Child, bool)], sig: i32| {
        for (_, child, _) in ranks.iter().filter(|r| !r.2) {
            signal_group(child, sig);
        }
    };
    let mut code = 0;
    loop {
        for (rank, child, exited) in ranks.iter_mut().filter(|r| !r.2) {
            if let Ok(Some(status)) = child.try_wait() {
                *exited = true;
                say(&FromAgent::Exit {
                    rank: *rank,
                    code: exit_code(status),
                    pid: child.id(),
                    how: describe(status),
                });
            }
        }
        if ranks.iter().all(|r| r.2) {
            break;
        }
        match ev_rx.recv_timeout(Duration::from_millis(20)) {
            Ok(Event::Control(ToAgent::Signal(s))) => signal_all(&ranks, s),
            Ok(Event::Control(ToAgent::Peer(e))) => {
                if table.len() < spec.size {
                    table.push(e);
                } else {
                    table_overflow = true;
                }
            }
            Ok(Event::Control(ToAgent::Fill {
                job,
                trigger,
                comms,
            })) => {
                let answer = match kpath.as_mut() {
                    None => Filled::No("the kernel path is not attached on this host".into()),
                    Some(_) if table_overflow => {
                        Filled::No(format!("boadrun sent more than {} ranks", spec.size))
                    }
                    Some(k) => match check_table(&table, &spec) {
                        Ok(()) => k.fill(job, &table, trigger, comms),
                        Err(why) => Filled::No(why),
                    },
                };
                table.clear();
                table_overflow = false;
                say(&FromAgent::Filled(answer));
            }
            // The job runs without the kernel path: nothing stays attached or registered for it.
            Ok(Event::Control(ToAgent::KernelOff)) => kpath = None,
            Ok(Event::InputEnded | Event::RendezvousLost)
            | Err(mpsc::RecvTimeoutError::Disconnected) => {
                // boadrun is gone or ended the job: so does this host's part of it.
                signal_all(&ranks, SIGKILL);
                code = 1;
            }
            // A signal to the agent itself is passed on to its ranks.
            Ok(Event::Signal(s)) => signal_all(&ranks, s),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    if let Some(mut k) = kpath.take() {
        if kernel::stats_on(spec_var(&spec, "BOAD_STATS")) {
            match k.counters() {
                Ok(c) => say(&FromAgent::Stats(c)),
                Err(e) => eprintln!("boadrun agent: reading the kernel counters: {e}"),
            }
        }
        // `k` goes here: detached (or its registration ended) now, as it would be at our exit.
    }
    // What the ranks left running ends with them; their last output is passed on.
    janitor::end_groups(&groups, Duration::from_secs(1));
    let until = Instant::now() + Duration::from_secs(1);
    for _ in 0..2 * ranks.len() {
        if done_rx
            .recv_timeout(until.saturating_duration_since(Instant::now()))
            .is_err()
        {
            break;
        }
    }
    janitor.finish();
    Ok(code)
}
