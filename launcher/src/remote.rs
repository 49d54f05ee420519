//! boadrun's side of a multi-host job (`-H`, `--hostfile`, and the virtual cluster of `--hosts`):
//! one agent per host, started through the launch agent (`ssh` by default), a TCP rendezvous the
//! agents connect to, and what they report.
//!
//! For each host boadrun runs `LAUNCH-AGENT [ssh options] HOST AGENT-PATH --agent` (a host named
//! `localhost`, `127.0.0.1` or `::1` runs `boadrun --agent` directly, without the launch agent; a
//! host of a virtual cluster runs this boadrun as its agent inside the host's network namespace,
//! [`Namespaces`]) and writes the agent its part of the job on its standard input (`control`),
//! including the job's secret: it never appears on a command line. The agents connect to a TCP
//! listener of boadrun's (port chosen by the system, on the address this machine routes to each
//! host from, or `--rendezvous-addr`; for a virtual cluster, the listener the cluster opened on its
//! bridge), prove they know the secret (`auth`, mutual challenge-response), and then carry their
//! ranks' rendezvous connections (`relay`) to the same rendezvous server a job on one machine uses,
//! which sees one socket per rank either way.
//!
//! Contract: every launch-agent process is in its own process group and dies with boadrun
//! (PR_SET_PDEATHSIG), and with it the agent's input, which ends that host's ranks. An agent that
//! cannot start, a connection that is refused, or a host whose agent did not report ready within the
//! launch timeout is an [`Event::Fail`] naming the host; an agent that ends while its ranks have not
//! all exited is an [`Event::Gone`]. A connection to the listener that does not prove the secret
//! within a few seconds is dropped, and at most one connection per host is accepted.
//!
//! Kernel path: what the agents say about it (`KERNEL`, `FILLED`, `KSTATS`) goes to a
//! [`KernelLink`] rather than to [`Remote::poll`], for the rendezvous' table hook (which waits for
//! it and sends the agents the job table through the same link) and for the end of the job.

use std::ffi::OsString;
use std::io::{BufReader, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket,
};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::relay::{self, RankEnd};
use crate::spawn::write_line;
use boad_proto::auth::{server_handshake, Secret};
use boad_proto::control::{
    read_line, AgentSpec, ControlError, Filled, FromAgent, KernelOnHost, RendezvousAt, ToAgent,
    MAX_LINE,
};

/// How long a connection to the rendezvous listener has to prove the secret.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an agent whose rendezvous connection was lost has to end before its ranks are
/// given up on.
const LOST_GRACE: Duration = Duration::from_secs(5);
/// How often the listener looks for a connection while agents are still to join.
const ACCEPT_POLL: Duration = Duration::from_millis(10);
/// Handshakes in progress at most (more connections wait in the listen queue).
const MAX_HANDSHAKES: usize = 32;

/// One host of the job and the ranks it runs.
#[derive(Clone, Debug)]
pub struct HostPlan {
    /// The name the user gave (passed to the launch agent).
    pub name: String,
    /// Its ranks, in increasing order.
    pub ranks: Vec<usize>,
}

/// How boadrun reaches the hosts.
pub struct Options {
    /// The launch agent's command words (`ssh -p 2222` is `["ssh", "-p", "2222"]`).
    pub launch_agent: Vec<String>,
    /// The `boadrun` to run on each host.
    pub agent_path: String,
    /// Where the agents find the rendezvous, if not where this machine routes to them from.
    pub rendezvous_addr: Option<IpAddr>,
    /// Prefix output lines with the rank.
    pub tag_output: bool,
    /// How long every agent has to report ready.
    pub launch_timeout: Duration,
}

/// Hosts that are network namespaces of this machine (the virtual cluster of `--hosts`), and the
/// rendezvous listener boadrun opened where every one of them reaches it.
pub struct Namespaces {
    /// A descriptor of each host's network namespace, in host order, open while the job starts:
    /// the host's agent is started in it (boadrun itself as the launch agent).
    pub netns: Vec<RawFd>,
    /// The rendezvous listener, in a namespace every host reaches (its address is where the agents
    /// connect).
    pub listener: TcpListener,
}

/// What every host's ranks run.
pub struct Program {
    /// The program as the user wrote it.
    pub argv0: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Variables for the ranks.
    pub env: Vec<(OsString, OsString)>,
}

/// What boadrun hears from the hosts.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A rank exited.
    Exit {
        /// The rank.
        rank: usize,
        /// Its status, or 128 + signal.
        code: i32,
        /// Its process id on its host.
        pid: u32,
        /// How, in words.
        how: String,
    },
    /// A host cannot run its part of the job (why, naming it).
    Fail {
        /// The host's index.
        host: usize,
        /// Why.
        why: String,
    },
    /// A host's agent ended before all its ranks exited.
    Gone {
        /// The host's index.
        host: usize,
        /// How the launch agent ended.
        how: String,
    },
}

/// An agent's standard input, shared by the threads that write to it; None once closed.
type AgentInput = Arc<Mutex<Option<ChildStdin>>>;

/// What one host's agent said about the kernel path.
#[derive(Default)]
struct HostKernel {
    name: String,
    input: Option<AgentInput>,
    /// `KERNEL`: the interface it attached to, its kernel service's free communicators, or why
    /// neither.
    attached: Option<KernelOnHost>,
    /// `FILLED`, since the last [`KernelLink::clear_filled`].
    filled: Option<Filled>,
    /// `KSTATS`.
    stats: Option<Vec<(String, u64)>>,
    /// Whether [`KernelLink::take_refusals`] returned its refusal.
    refusal_taken: bool,
}

/// The kernel path's side of the agents' control lines, shared by the threads that read them, the
/// rendezvous' table hook and the end of the job (see the module docs).
#[derive(Default)]
pub struct KernelLink {
    hosts: Mutex<Vec<HostKernel>>,
    changed: Condvar,
}

impl KernelLink {
    fn lock(&self) -> MutexGuard<'_, Vec<HostKernel>> {
        self.hosts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records what host `host`'s agent said.
    fn heard(&self, host: usize, m: FromAgent) {
        let mut hosts = self.lock();
        let Some(h) = hosts.get_mut(host) else { return };
        match m {
            FromAgent::Kernel(k) => h.attached = Some(k),
            FromAgent::Filled(f) => h.filled = Some(f),
            FromAgent::Stats(s) => h.stats = Some(s),
            _ => return,
        }
        self.changed.notify_all();
    }

    /// Waits at most `wait` until `done` holds for every host; returns `what` of each.
    fn wait_for<T>(
        &self,
        wait: Duration,
        done: impl Fn(&HostKernel) -> bool,
        what: impl Fn(&HostKernel) -> T,
    ) -> Vec<T> {
        let until = Instant::now() + wait;
        let mut hosts = self.lock();
        while !hosts.iter().all(&done) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            hosts = self
                .changed
                .wait_timeout(hosts, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        hosts.iter().map(what).collect()
    }

    /// The hosts' names, in host order.
    pub fn names(&self) -> Vec<String> {
        self.lock().iter().map(|h| h.name.clone()).collect()
    }

    /// Whether each host attached the kernel path (its interface), has a kernel service (its free
    /// communicators), or why neither, waiting at most `wait` for every agent to say; None for an
    /// agent that has not said.
    pub fn attached(&self, wait: Duration) -> Vec<Option<KernelOnHost>> {
        self.wait_for(wait, |h| h.attached.is_some(), |h| h.attached.clone())
    }

    /// The hosts that said they cannot attach the kernel path, and why, each once.
    pub fn take_refusals(&self) -> Vec<(usize, String)> {
        let mut hosts = self.lock();
        let mut refusals = Vec::new();
        for (i, h) in hosts.iter_mut().enumerate() {
            if let (Some(KernelOnHost::No(why)), false) = (&h.attached, h.refusal_taken) {
                h.refusal_taken = true;
                refusals.push((i, why.clone()));
            }
        }
        refusals
    }

    /// Forgets the hosts' answers to the last fill.
    pub fn clear_filled(&self) {
        for h in self.lock().iter_mut() {
            h.filled = None;
        }
    }

    /// Each host's answer to the last fill, waiting at most `wait` for every agent; None for an
    /// agent that has not answered.
    pub fn filled(&self, wait: Duration) -> Vec<Option<Filled>> {
        self.wait_for(wait, |h| h.filled.is_some(), |h| h.filled.clone())
    }

    /// The counters each host reported (`KSTATS`), of the hosts that did, and how many of those
    /// are a kernel service's (host-wide).
    pub fn stats(&self) -> (Vec<Vec<(String, u64)>>, usize) {
        let hosts = self.lock();
        let reported = || hosts.iter().filter(|h| h.stats.is_some());
        let service = reported()
            .filter(|h| matches!(h.attached, Some(KernelOnHost::Service(_))))
            .count();
        (
            reported().filter_map(|h| h.stats.clone()).collect(),
            service,
        )
    }

    /// Writes `text` (control lines) to host `host`'s agent.
    pub fn send(&self, host: usize, text: &str) -> Result<(), String> {
        // Not under the hosts' lock: the threads recording answers must not wait for a write.
        let input = self.lock().get(host).and_then(|h| h.input.clone());
        let input = input.ok_or("its agent is not running")?;
        let mut guard = input.lock().unwrap_or_else(PoisonError::into_inner);
        let stdin = guard.as_mut().ok_or("its agent's input is closed")?;
        stdin
            .write_all(text.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("cannot write to its agent: {e}"))
    }
}

/// What the threads pass to [`Remote::poll`].
enum Msg {
    Line(usize, FromAgent),
    Bad(usize, String),
    Eof(usize),
    Lost(usize),
}

struct Agent {
    name: String,
    ranks: Vec<usize>,
    exited: Vec<usize>,
    child: Child,
    stdin: AgentInput,
    ready: bool,
    eof: bool,
    gone: bool,
    failed: bool,
    /// When its rendezvous connection was lost while ranks ran.
    lost: Option<Instant>,
}

/// The hosts of a running job.
pub struct Remote {
    agents: Vec<Agent>,
    /// Tells the listener to close.
    stop: Arc<AtomicBool>,
    rx: Receiver<Msg>,
    started: Instant,
    launch_timeout: Duration,
}

/// Whether boadrun starts this host's agent itself rather than through the launch agent.
fn is_local(name: &str) -> bool {
    matches!(name, "localhost" | "127.0.0.1" | "::1" | "[::1]")
}

/// The address this machine sends from to reach `name`, if the name resolves.
fn route_source(name: &str) -> Option<IpAddr> {
    let host = name.trim_start_matches('[').trim_end_matches(']');
    let addr = (host, 9).to_socket_addrs().ok()?.next()?;
    let any: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = UdpSocket::bind(any).ok()?;
    s.connect(addr).ok()?;
    Some(s.local_addr().ok()?.ip())
}

/// Checks a word boadrun puts on the remote command line (the remote shell reads it).
fn plain_word(what: &str, w: &str) -> Result<(), Error> {
    let ok = !w.is_empty()
        && !w.starts_with('-')
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._+-~:@[]%".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "{what} {w:?} cannot be passed to the launch agent safely (letters, digits and /._+-~:@[]% only, not starting with '-')"
        )))
    }
}

/// The rendezvous listener for the named hosts of `plan` and where each host's agent finds it: on
/// `--rendezvous-addr`, or on the address this machine routes to the hosts from (loopback when
/// every host is this machine), a port the system chooses.
fn listen(plan: &[HostPlan], opts: &Options) -> Result<(TcpListener, Vec<RendezvousAt>), Error> {
    let sources: Vec<Option<IpAddr>> = plan.iter().map(|h| route_source(&h.name)).collect();
    let routed = plan
        .iter()
        .zip(&sources)
        .filter(|(h, _)| !is_local(&h.name))
        .find_map(|(_, s)| s.filter(|ip| !ip.is_loopback()));
    let bind_ip = match opts.rendezvous_addr {
        Some(ip) => ip,
        None if sources.iter().flatten().all(IpAddr::is_loopback) && routed.is_none() => {
            if plan.iter().all(|h| is_local(&h.name)) {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            }
        }
        None if sources.iter().flatten().any(IpAddr::is_ipv6) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let listener = TcpListener::bind((bind_ip, 0)).map_err(Error::setup(format!(
        "cannot listen for agents on {bind_ip}"
    )))?;
    let port = listener
        .local_addr()
        .map_err(Error::setup("cannot read the rendezvous address"))?
        .port();
    let at = plan
        .iter()
        .zip(&sources)
        .map(
            |(h, source)| match (opts.rendezvous_addr, is_local(&h.name), source) {
                (Some(ip), _, _) => RendezvousAt::Addr(SocketAddr::new(ip, port)),
                (None, true, _) => RendezvousAt::Addr(SocketAddr::new(
                    routed.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    port,
                )),
                (None, false, Some(ip)) => RendezvousAt::Addr(SocketAddr::new(*ip, port)),
                (None, false, None) => RendezvousAt::SshClient(port),
            },
        )
        .collect();
    Ok((listener, at))
}

impl Remote {
    /// Starts one agent per host of `plan` and the rendezvous listener; `rank_ends[r]` is the end
    /// of rank `r`'s rendezvous connection that stands for the rank (its partner is the server's).
    /// What the agents say about the kernel path goes to `link`.
    pub fn start(
        plan: &[HostPlan],
        size: usize,
        rank_ends: Vec<UnixStream>,
        program: &Program,
        opts: &Options,
        hosts_in: Option<Namespaces>,
        link: &Arc<KernelLink>,
    ) -> Result<Remote, Error> {
        *link.lock() = plan
            .iter()
            .map(|h| HostKernel {
                name: h.name.clone(),
                ..HostKernel::default()
            })
            .collect();
        for h in plan {
            plain_word("host name", &h.name)?;
        }
        plain_word("--agent-path", &opts.agent_path)?;
        let secret = Secret::random().map_err(|e| Error::Usage(e.to_string()))?;
        let in_namespaces = hosts_in.is_some();
        let (listener, rendezvous, netns) = match hosts_in {
            Some(Namespaces { netns, listener }) => {
                let at = listener
                    .local_addr()
                    .map_err(Error::setup("cannot read the rendezvous address"))?;
                let every = vec![RendezvousAt::Addr(at); plan.len()];
                (listener, every, netns)
            }
            None => {
                let (listener, at) = listen(plan, opts)?;
                (listener, at, Vec::new())
            }
        };
        if in_namespaces && netns.len() != plan.len() {
            // Never the launch agent for a namespace host: each must have its namespace.
            return Err(Error::Usage(format!(
                "{} namespaces for {} hosts",
                netns.len(),
                plan.len()
            )));
        }
        // Each host's rank ends, taken by the first connection that proves the secret as its agent.
        let mut ends: Vec<Option<RankEnd>> = rank_ends
            .into_iter()
            .enumerate()
            .map(|(rank, conn)| Some(RankEnd { rank, conn }))
            .collect();
        let slots: Vec<Option<Vec<RankEnd>>> = plan
            .iter()
            .map(|h| Some(h.ranks.iter().filter_map(|&r| ends[r].take()).collect()))
            .collect();
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        accept(
            listener,
            secret.clone(),
            slots,
            tx.clone(),
            Arc::clone(&stop),
        );

        let cwd = std::env::current_dir()
            .ok()
            .map(|d| d.as_os_str().as_bytes().to_vec());
        let mut agents = Vec::with_capacity(plan.len());
        for (host, (h, rendezvous)) in plan.iter().zip(rendezvous).enumerate() {
            let spec = AgentSpec {
                rendezvous,
                secret: secret.to_hex(),
                host_id: host,
                size,
                ranks: h.ranks.clone(),
                program: program.argv0.as_bytes().to_vec(),
                args: program.args.iter().map(|a| a.as_bytes().to_vec()).collect(),
                env: program
                    .env
                    .iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                    .collect(),
                cwd: cwd.clone(),
                kernel_by_launcher: in_namespaces,
            };
            let started = launch(host, h, &spec, opts, netns.get(host).copied(), &tx, link);
            match started {
                Ok(agent) => {
                    if let Some(k) = link.lock().get_mut(host) {
                        k.input = Some(Arc::clone(&agent.stdin));
                    }
                    agents.push(agent);
                }
                Err(e) => {
                    for a in &mut agents {
                        a.stdin
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .take();
                        let _ = a.child.kill();
                        let _ = a.child.wait();
                    }
                    stop.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
        Ok(Remote {
            agents,
            stop,
            rx,
            started: Instant::now(),
            launch_timeout: opts.launch_timeout,
        })
    }

    /// The name of host `host`.
    pub fn name(&self, host: usize) -> &str {
        &self.agents[host].name
    }

    /// Which host runs `rank`.
    pub fn host_of(&self, rank: usize) -> Option<usize> {
        self.agents.iter().position(|a| a.ranks.contains(&rank))
    }

    /// Sends `sig` to every rank still running, through their agents.
    pub fn signal(&self, sig: i32) {
        for a in &self.agents {
            let mut stdin = a.stdin.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(s) = stdin.as_mut() {
                let _ = s.write_all(ToAgent::Signal(sig).encode().as_bytes());
            }
        }
    }

    /// What happened since the last call; waits at most `wait` for the first news.
    pub fn poll(&mut self, wait: Duration) -> Vec<Event> {
        let mut events = Vec::new();
        let mut first = self.rx.recv_timeout(wait).ok();
        while let Some(msg) = first.take().or_else(|| self.rx.try_recv().ok()) {
            self.take(msg, &mut events);
        }
        let now = Instant::now();
        for (host, a) in self.agents.iter_mut().enumerate() {
            if !a.ready && !a.failed && !a.gone && now - self.started > self.launch_timeout {
                a.failed = true;
                events.push(Event::Fail {
                    host,
                    why: format!(
                        "its agent did not start within {} s (is the host reachable, and boadrun installed there?)",
                        self.launch_timeout.as_secs()
                    ),
                });
            }
            if !a.gone && a.lost.is_some_and(|t| now - t > LOST_GRACE) {
                // Its connection is gone and so, as far as we can tell, is the host.
                a.gone = true;
                let _ = a.child.kill();
                if a.exited.len() < a.ranks.len() {
                    events.push(Event::Gone {
                        host,
                        how: "its rendezvous connection was lost and it did not end".into(),
                    });
                }
            }
            if a.eof && !a.gone {
                if let Ok(Some(status)) = a.child.try_wait() {
                    a.gone = true;
                    if !a.ready && !a.failed {
                        a.failed = true;
                        events.push(Event::Fail {
                            host,
                            why: format!(
                                "its agent ended ({}) before starting the ranks",
                                crate::describe(status)
                            ),
                        });
                    }
                    if a.exited.len() < a.ranks.len() {
                        events.push(Event::Gone {
                            host,
                            how: crate::describe(status),
                        });
                    }
                }
            }
        }
        events
    }

    fn take(&mut self, msg: Msg, events: &mut Vec<Event>) {
        match msg {
            Msg::Line(host, FromAgent::Ready) => self.agents[host].ready = true,
            Msg::Line(
                host,
                FromAgent::Exit {
                    rank,
                    code,
                    pid,
                    how,
                },
            ) => {
                let a = &mut self.agents[host];
                if a.ranks.contains(&rank) && !a.exited.contains(&rank) {
                    a.exited.push(rank);
                    events.push(Event::Exit {
                        rank,
                        code,
                        pid,
                        how,
                    });
                } else {
                    events.push(Event::Fail {
                        host,
                        why: format!("its agent reported the exit of rank {rank}, not one of its"),
                    });
                }
            }
            // The reading thread gives these to the kernel link.
            Msg::Line(_, FromAgent::Kernel(_) | FromAgent::Filled(_) | FromAgent::Stats(_)) => {}
            Msg::Line(host, FromAgent::Fail(why)) => {
                self.agents[host].failed = true;
                events.push(Event::Fail { host, why });
            }
            // Output is written by the reading thread.
            Msg::Line(_, FromAgent::Output { .. }) => {}
            Msg::Bad(host, why) => events.push(Event::Fail {
                host,
                why: format!("protocol error from its agent: {why}"),
            }),
            Msg::Eof(host) => self.agents[host].eof = true,
            // The agent ends its ranks when it loses the connection, and then itself: its end
            // (or, if it does not come, the grace in `poll`) reports them.
            Msg::Lost(host) => {
                let a = &mut self.agents[host];
                if a.exited.len() < a.ranks.len() {
                    a.lost.get_or_insert_with(Instant::now);
                }
            }
        }
    }

    /// Ends the job on every host: closes the agents' input (which kills what is left of their
    /// ranks), gives them `grace` to exit and to pass on the last output, then kills the launch
    /// agents still running.
    pub fn end(&mut self, grace: Duration) {
        self.stop.store(true, Ordering::SeqCst);
        for a in &self.agents {
            a.stdin
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
        }
        let until = Instant::now() + grace;
        while Instant::now() < until && self.agents.iter().any(|a| !a.eof) {
            if let Ok(msg) = self.rx.recv_timeout(Duration::from_millis(20)) {
                let mut ignored = Vec::new();
                self.take(msg, &mut ignored);
            }
        }
        for a in &mut self.agents {
            if !matches!(a.child.try_wait(), Ok(Some(_))) {
                let _ = a.child.kill();
            }
            let _ = a.child.wait();
        }
    }
}

/// Accepts agents' connections: each one that proves the secret as `agent H` gets host `H`'s rank
/// ends (once), relayed until either side ends.
fn accept(
    listener: TcpListener,
    secret: Secret,
    slots: Vec<Option<Vec<RankEnd>>>,
    tx: Sender<Msg>,
    stop: Arc<AtomicBool>,
) {
    let left = slots.iter().filter(|s| s.is_some()).count();
    let slots = Arc::new(Mutex::new((slots, left)));
    let busy = Arc::new(AtomicUsize::new(0));
    // Polled, so that the listener closes as soon as every host's agent has joined (or the job
    // ended), not at the next connection.
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    thread::spawn(move || loop {
        if stop.load(Ordering::SeqCst)
            || slots.lock().unwrap_or_else(PoisonError::into_inner).1 == 0
        {
            // Every host's agent has joined: nobody else may.
            return;
        }
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(ACCEPT_POLL);
                continue;
            }
            Err(_) => continue,
        };
        if stream.set_nonblocking(false).is_err()
            || busy.fetch_add(1, Ordering::SeqCst) >= MAX_HANDSHAKES
        {
            busy.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let (shared, busy, secret, tx) = (
            Arc::clone(&slots),
            Arc::clone(&busy),
            secret.clone(),
            tx.clone(),
        );
        thread::spawn(move || {
            let _ = stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT));
            let role = server_handshake(
                &mut Deadline::new(&stream, Instant::now() + HANDSHAKE_TIMEOUT),
                &secret,
            );
            busy.fetch_sub(1, Ordering::SeqCst);
            let Ok(role) = role else { return };
            let host = std::str::from_utf8(&role)
                .ok()
                .and_then(|r| r.strip_prefix("agent "))
                .and_then(|h| h.parse::<usize>().ok());
            let mut guard = shared.lock().unwrap_or_else(PoisonError::into_inner);
            let (Some(host), Some(ends)) = (
                host,
                host.and_then(|h| guard.0.get_mut(h)).and_then(Option::take),
            ) else {
                return;
            };
            guard.1 -= 1;
            drop(guard);
            let _ = stream.set_read_timeout(None);
            let _ = stream.set_write_timeout(None);
            let _ = stream.set_nodelay(true);
            relay::run(stream, ends, move || {
                let _ = tx.send(Msg::Lost(host));
            });
        });
    });
}

/// A stream whose reads all end by one deadline, however slowly the peer trickles bytes.
struct Deadline<'a> {
    stream: &'a TcpStream,
    until: Instant,
}

impl<'a> Deadline<'a> {
    fn new(stream: &'a TcpStream, until: Instant) -> Deadline<'a> {
        Deadline { stream, until }
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        (&mut &*self.stream).read(buf)
    }
}

impl Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&mut &*self.stream).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        (&mut &*self.stream).flush()
    }
}

/// The command that runs boadrun on host `name` (arguments to follow): through the launch agent,
/// or, for `localhost`, this boadrun itself.
fn remote_command(name: &str, opts: &Options) -> Result<Command, Error> {
    if is_local(name) {
        let exe = std::env::current_exe().map_err(Error::setup("cannot find boadrun itself"))?;
        return Ok(Command::new(exe));
    }
    let (first, rest) = opts
        .launch_agent
        .split_first()
        .ok_or_else(|| Error::Usage("--launch-agent is empty".into()))?;
    let mut c = Command::new(first);
    c.args(rest);
    if std::path::Path::new(first).file_name() == Some(std::ffi::OsStr::new("ssh")) {
        // Never a password prompt, and a host that does not answer fails in bounded time.
        c.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]);
    }
    c.arg(name).arg(&opts.agent_path);
    Ok(c)
}

/// `boadrun --check -H ...`: runs `boadrun --check --transport T` on every host (through the
/// launch agent, as a job would start its agent) and prints each host's report under its name.
/// Returns whether every host answered.
pub fn check_hosts(names: &[String], opts: &Options, transport: &str) -> Result<bool, Error> {
    plain_word("--agent-path", &opts.agent_path)?;
    let mut all = true;
    for name in names {
        plain_word("host name", name)?;
        let mut cmd = remote_command(name, opts)?;
        cmd.args(["--check", "--transport", transport])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        println!("== host {name}");
        match cmd.output() {
            Ok(out) if out.status.success() => {
                print!("{}", String::from_utf8_lossy(&out.stdout));
                eprint!("{}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(out) => {
                all = false;
                let err = String::from_utf8_lossy(&out.stderr);
                println!(
                    "  cannot check this host ({}): {}",
                    crate::describe(out.status),
                    err.trim()
                );
            }
            Err(e) => {
                all = false;
                println!("  cannot start {:?}: {e}", opts.launch_agent.join(" "));
            }
        }
    }
    Ok(all)
}

/// Starts host `host`'s agent and the threads that read what it says.
/// With `netns`, the host is that network namespace of this machine: its agent is this boadrun,
/// started in it (entered between fork and exec, as a launch agent that enters the host would).
fn launch(
    host: usize,
    h: &HostPlan,
    spec: &AgentSpec,
    opts: &Options,
    netns: Option<RawFd>,
    tx: &Sender<Msg>,
    link: &Arc<KernelLink>,
) -> Result<Agent, Error> {
    let mut cmd = match netns {
        Some(_) => Command::new(
            std::env::current_exe().map_err(Error::setup("cannot find boadrun itself"))?,
        ),
        None => remote_command(&h.name, opts)?,
    };
    cmd.arg(crate::agent::FLAG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let launcher = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and calls only async-signal-safe
    // functions (prctl, getppid, setns, _exit); it allocates nothing and touches no lock. `netns`
    // is a descriptor the cluster keeps open while the job runs (close-on-exec, so the agent does
    // not keep it).
    unsafe {
        cmd.pre_exec(move || {
            crate::spawn::die_with(launcher)?;
            if let Some(fd) = netns {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
    };
    let mut child = cmd.spawn().map_err(|source| Error::Setup {
        what: format!(
            "cannot start the launch agent {:?} for host {}",
            opts.launch_agent.join(" "),
            h.name
        ),
        source,
    })?;
    let stdin = Arc::new(Mutex::new(child.stdin.take()));
    // The spec may be larger than a pipe holds before the agent reads it.
    let text = spec.encode();
    let writer = Arc::clone(&stdin);
    thread::spawn(move || {
        if let Some(s) = writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            let _ = s.write_all(text.as_bytes()).and_then(|()| s.flush());
        }
    });
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        let tag = opts.tag_output;
        let ranks = h.ranks.clone();
        let link = Arc::clone(link);
        thread::spawn(move || {
            let mut r = BufReader::new(out);
            loop {
                match read_line(&mut r) {
                    Ok(Some(line)) => match FromAgent::parse(&line) {
                        Ok(FromAgent::Output { rank, err, line }) if ranks.contains(&rank) => {
                            let _ = write_line(rank, err, tag, &line);
                        }
                        Ok(m @ FromAgent::Output { .. }) => {
                            let _ =
                                tx.send(Msg::Bad(host, format!("{m:?} names another host's rank")));
                        }
                        Ok(
                            m @ (FromAgent::Kernel(_) | FromAgent::Filled(_) | FromAgent::Stats(_)),
                        ) => {
                            link.heard(host, m);
                        }
                        Ok(m) => {
                            let _ = tx.send(Msg::Line(host, m));
                        }
                        Err(e) => {
                            let _ = tx.send(Msg::Bad(host, e.to_string()));
                        }
                    },
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Msg::Bad(host, e.to_string()));
                        break;
                    }
                }
            }
            let _ = tx.send(Msg::Eof(host));
        });
    }
    if let Some(err) = child.stderr.take() {
        // What the launch agent (ssh) or the agent itself says outside the protocol.
        let name = h.name.clone();
        thread::spawn(move || {
            // Read to the end whatever it writes (bounded lines, any bytes), so that it never
            // blocks on a full pipe.
            let mut r = BufReader::new(err);
            loop {
                match read_line(&mut r) {
                    Ok(Some(line)) => {
                        let text = String::from_utf8_lossy(&line);
                        eprintln!("boadrun: host {name}: {}", text.trim_end());
                    }
                    // A line too long: its first part was dropped, the rest is read on.
                    Err(ControlError::Malformed { .. }) => {
                        eprintln!(
                            "boadrun: host {name}: (a line of more than {MAX_LINE} bytes, cut)"
                        );
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        });
    }
    Ok(Agent {
        name: h.name.clone(),
        ranks: h.ranks.clone(),
        exited: Vec::new(),
        child,
        stdin,
        ready: false,
        eof: false,
        gone: false,
        failed: false,
        lost: None,
    })
}
