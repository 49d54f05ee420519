//! Joining a job started the env:// way (torchrun, Kubernetes operators, a hand-set environment):
//! `RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT` in every process, and a secret the job's
//! processes share. Rank 0 serves a small key-value store on TCP; every rank, rank 0 too, is its
//! client.
//!
//! Contract:
//! - **The secret.** Every process needs the job's secret, 64 hexadecimal digits (32 random bytes,
//!   e.g. `openssl rand -hex 32`), never on a command line: either in `BOAD_SECRET` (as a
//!   Kubernetes Secret sets it through `env.valueFrom.secretKeyRef`) or in the file that
//!   `BOAD_SECRET_FILE` names (a regular file of this process's user, readable by it alone: mode
//!   0600 or 0400, as a Secret volume with `defaultMode: 0400` gives). Both set, neither set, a file
//!   others may read or that belongs to another user, or anything but 64 hex digits: an error
//!   saying how to provide it. There is no opt-out: the store hands out the addresses every rank
//!   will send its data to, and the job key.
//! - **Authentication.** Each connection starts with boad-proto's handshake
//!   ([`boad_proto::auth`]: mutual HMAC challenge-response over fresh nonces), the client's role
//!   being `rank R of N`. A peer without the secret is refused and dropped; the job goes on. What
//!   follows the handshake is neither encrypted nor authenticated (see `boad_proto::auth`).
//! - **Where rank 0 listens.** On `MASTER_PORT` of `MASTER_ADDR` when that name resolves to an
//!   address of this host (the common case on a machine or with a pod's own address), else on
//!   every address of this host (`0.0.0.0` or `[::]`: a Kubernetes Service name resolves to a
//!   virtual address no interface has). Rank 0 reaches its own store on the bound address (on
//!   loopback when it listens on every address).
//!   `BOAD_MASTER_PORT`, when set, is the port instead of `MASTER_PORT` (a program that also uses
//!   PyTorch's env:// store, which rank 0 serves on `MASTER_PORT` too).
//! - **Connecting.** Every other rank resolves `MASTER_ADDR` and connects, again every 100 to
//!   500 ms (names resolved anew: DNS may lag in a new pod) until the rendezvous timeout
//!   (`BOAD_TIMEOUT_MS`) since it started, since rank 0 may start later.
//! - **Protocol.** After the handshake, lines of at most [`MAX_LINE`] bytes: `PUT key value`,
//!   `FENCE`, `GET key`, `DONE` from a rank; `FENCED`, `VALUE value`, `NONE`, `ABORT reason` from the
//!   store. Keys and values are 1 to [`MAX_TEXT`] bytes of `[A-Za-z0-9._,:/-]`; a rank puts at most
//!   [`MAX_PUTS`] keys, each key once. Anything else from an authenticated rank, a second process
//!   claiming a rank, or a rank of another job size ends the rendezvous of every rank with an error
//!   naming it.
//! - **Fences.** The k-th fence completes when every one of the `WORLD_SIZE` ranks has reached its
//!   k-th fence. If some have not within the timeout after the first rank reached it, every rank
//!   fails with an error naming the missing ranks (and which of them never connected). A rank that
//!   closes its connection before `DONE` (it exited, was killed) makes every rank fail at once,
//!   naming it.
//! - **Lifetime.** Rank 0's server thread serves until every rank has said `DONE` (rank 0's
//!   [`Store::finish`] waits for that, bounded), then closes its socket; it never outlives the
//!   deadline of its rendezvous (a few timeouts), whatever the other ranks do.
//! - `LOCAL_RANK` is informative: placement comes from the host identity
//!   ([`super::store::prepare`]); when `LOCAL_RANK` says otherwise, [`check_local_rank`] warns.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use boad_proto::auth::{client_handshake, server_handshake, AuthError, Secret};

use super::store::Store;
use super::{JobInfo, JoinError, Launcher};

/// The variable holding the job's secret (64 hexadecimal digits).
pub const SECRET_VAR: &str = "BOAD_SECRET";
/// The variable naming a file holding the job's secret.
pub const SECRET_FILE_VAR: &str = "BOAD_SECRET_FILE";
/// The variable giving boad's store another port than `MASTER_PORT` (for a program that also
/// serves PyTorch's env:// store there).
pub const PORT_VAR: &str = "BOAD_MASTER_PORT";
/// Longest line of the protocol, newline included.
pub const MAX_LINE: usize = 160;
/// Longest key or value.
pub const MAX_TEXT: usize = 64;
/// Most keys one rank may put.
pub const MAX_PUTS: usize = 8;
/// Longest reason an `ABORT` carries.
pub const MAX_REASON: usize = MAX_LINE - "ABORT \n".len();
/// Largest job the store serves (a thread per rank on rank 0).
pub const MAX_RANKS: usize = 4096;
/// Handshakes under way at once; more connections are closed at once.
const MAX_HANDSHAKES: usize = 16;
/// How long a connection may take to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How much longer than the store a rank waits for an answer, so the store's explanation comes
/// first.
const GRACE: Duration = Duration::from_secs(3);

/// Longest secret file read (64 digits and some white space).
const MAX_SECRET_FILE: u64 = 4096;

fn refuse(why: impl Into<String>) -> JoinError {
    JoinError::Launcher {
        launcher: Launcher::Env.name(),
        why: why.into(),
    }
}

const SECRET_HOWTO: &str = "give every process of the job the same secret of 64 hexadecimal \
    digits (e.g. from `openssl rand -hex 32`), never on a command line: in BOAD_SECRET (a \
    Kubernetes Secret through env.valueFrom.secretKeyRef) or in a file of this user with mode 0600 \
    or 0400 named by BOAD_SECRET_FILE";

/// The job's secret, from `BOAD_SECRET` or the file `BOAD_SECRET_FILE` names (read through `get`,
/// the environment).
pub(crate) fn job_secret(get: &impl Fn(&str) -> Option<String>) -> Result<Secret, JoinError> {
    let bad = |why: String| refuse(format!("{why}: {SECRET_HOWTO}"));
    match (get(SECRET_VAR), get(SECRET_FILE_VAR)) {
        (Some(_), Some(_)) => Err(bad(format!(
            "both {SECRET_VAR} and {SECRET_FILE_VAR} are set; set one"
        ))),
        (None, None) => Err(bad(format!(
            "the job's store needs a secret, and neither {SECRET_VAR} nor {SECRET_FILE_VAR} is set"
        ))),
        (Some(text), None) => Secret::from_hex(text.trim())
            .map_err(|e| bad(format!("{SECRET_VAR} is not a secret ({e})"))),
        (None, Some(path)) => {
            let text = read_secret_file(&path)
                .map_err(|why| bad(format!("{SECRET_FILE_VAR}={path:?}: {why}")))?;
            Secret::from_hex(text.trim())
                .map_err(|e| bad(format!("{SECRET_FILE_VAR}={path:?} holds no secret ({e})")))
        }
    }
}

/// The text of a secret file: a regular file (symbolic links followed, as in a Kubernetes Secret
/// volume) of this process's user, that neither its group nor others may read or write; checked
/// on the opened file.
fn read_secret_file(path: &str) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("cannot open it: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat it: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(format!(
            "it belongs to user {}, not to this process's user {me}",
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "its mode is {:04o}: its group or others may use it (chmod 600 it)",
            meta.mode() & 0o7777
        ));
    }
    let mut text = String::new();
    file.take(MAX_SECRET_FILE)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read it: {e}"))?;
    Ok(text)
}

/// Whether `s` may be a key or a value: 1 to [`MAX_TEXT`] bytes of `[A-Za-z0-9._,:/-]`.
fn is_text(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_TEXT
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".,_:/-".contains(&b))
}

/// A line from a rank to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `PUT key value`.
    Put(String, String),
    /// `FENCE`.
    Fence,
    /// `GET key`.
    Get(String),
    /// `DONE`: this rank is done with the store.
    Done,
}

impl Request {
    /// The line, newline included.
    pub fn format(&self) -> String {
        match self {
            Request::Put(k, v) => format!("PUT {k} {v}\n"),
            Request::Fence => "FENCE\n".into(),
            Request::Get(k) => format!("GET {k}\n"),
            Request::Done => "DONE\n".into(),
        }
    }

    /// One line (its newline stripped, nothing else tolerated), or None.
    pub fn parse(line: &str) -> Option<Request> {
        let mut w = line.split(' ');
        let r = match (w.next()?, w.next(), w.next()) {
            ("PUT", Some(k), Some(v)) if is_text(k) && is_text(v) => {
                Request::Put(k.into(), v.into())
            }
            ("FENCE", None, None) => Request::Fence,
            ("GET", Some(k), None) if is_text(k) => Request::Get(k.into()),
            ("DONE", None, None) => Request::Done,
            _ => return None,
        };
        w.next().is_none().then_some(r)
    }
}

/// A line from the store to a rank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `FENCED`: every rank reached the fence.
    Fenced,
    /// `VALUE value`.
    Value(String),
    /// `NONE`: no rank put that key.
    None,
    /// `ABORT reason`: the rendezvous failed, for every rank.
    Abort(String),
}

/// A reason made fit for an `ABORT` line: printable ASCII, at most [`MAX_REASON`] bytes.
fn clean_reason(why: &str) -> String {
    let mut s: String = why
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if s.len() > MAX_REASON {
        s.truncate(MAX_REASON - 3);
        s.push_str("...");
    }
    if s.is_empty() {
        s.push('?');
    }
    s
}

impl Reply {
    /// The line, newline included (an abort's reason cleaned first).
    pub fn format(&self) -> String {
        match self {
            Reply::Fenced => "FENCED\n".into(),
            Reply::Value(v) => format!("VALUE {v}\n"),
            Reply::None => "NONE\n".into(),
            Reply::Abort(why) => format!("ABORT {}\n", clean_reason(why)),
        }
    }

    /// One line (its newline stripped), or None.
    pub fn parse(line: &str) -> Option<Reply> {
        match line.split_once(' ') {
            None if line == "FENCED" => Some(Reply::Fenced),
            None if line == "NONE" => Some(Reply::None),
            Some(("VALUE", v)) if is_text(v) => Some(Reply::Value(v.into())),
            Some(("ABORT", why))
                if !why.is_empty()
                    && why.len() <= MAX_REASON
                    && why.bytes().all(|b| b.is_ascii_graphic() || b == b' ') =>
            {
                Some(Reply::Abort(why.into()))
            }
            _ => None,
        }
    }
}

/// Why a line could not be read.
enum LineError {
    /// The peer closed the connection (at a line boundary or not).
    Closed,
    /// The read timeout expired.
    TimedOut,
    /// More than [`MAX_LINE`] bytes without a newline, or not UTF-8.
    Malformed,
    /// Another error.
    Io(std::io::Error),
}

/// Reads one line of at most [`MAX_LINE`] bytes, without its newline.
fn read_line(r: &mut impl BufRead) -> Result<String, LineError> {
    let mut buf = Vec::with_capacity(64);
    let n = r
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut buf)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => LineError::TimedOut,
            _ => LineError::Io(e),
        })?;
    if n == 0 {
        return Err(LineError::Closed);
    }
    if buf.pop() != Some(b'\n') {
        return Err(if n < MAX_LINE {
            LineError::Closed
        } else {
            LineError::Malformed
        });
    }
    String::from_utf8(buf).map_err(|_| LineError::Malformed)
}

/// What rank 0's server knows.
struct State {
    /// Each rank has an authenticated connection (or had one).
    connected: Vec<bool>,
    /// Each rank said `DONE`.
    done: Vec<bool>,
    /// Fences each rank has reached.
    fences: Vec<u32>,
    /// When the first rank reached each fence (index k-1 for fence k).
    fence_started: Vec<Instant>,
    /// The values, and who put them.
    values: HashMap<String, (usize, String)>,
    /// Keys each rank put.
    puts: Vec<usize>,
    /// Why the rendezvous failed, once it has.
    failed: Option<String>,
    /// Handshakes under way.
    handshakes: usize,
}

struct Shared {
    size: usize,
    timeout: Duration,
    /// When the server stops whatever happens.
    hard_stop: Instant,
    state: Mutex<State>,
    cond: Condvar,
    /// Rank 0 gave up (its store was dropped before finishing).
    closing: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the first failure and wakes every waiting connection.
    fn fail(&self, st: &mut State, why: String) {
        if st.failed.is_none() {
            tracing::debug!("env:// store: {why}");
            st.failed = Some(why);
        }
        self.cond.notify_all();
    }
}

/// Ranks as a short list: `1, 4, 7` (at most 16 named, then how many more).
fn list(ranks: impl Iterator<Item = usize>) -> String {
    let all: Vec<usize> = ranks.collect();
    let mut s = String::new();
    for (i, r) in all.iter().take(16).enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{r}");
    }
    if all.len() > 16 {
        let _ = write!(s, " and {} more", all.len() - 16);
    }
    s
}

/// Rank 0's server: a thread that accepts connections until every rank is done.
struct Server {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on `MASTER_PORT` of `addrs` (MASTER_ADDR resolved) if one is local, else on every
    /// address; returns the server and the address rank 0 connects to.
    fn start(
        addrs: &[SocketAddr],
        port: u16,
        size: usize,
        secret: Secret,
        timeout: Duration,
    ) -> Result<(Server, SocketAddr), JoinError> {
        let mut listener = None;
        for a in addrs {
            match TcpListener::bind(a) {
                Ok(l) => {
                    listener = Some((l, *a));
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {}
                Err(e) => {
                    return Err(refuse(format!(
                        "rank 0 cannot serve the job's store on {a} (MASTER_PORT): {e}"
                    )))
                }
            }
        }
        let (listener, reach) = match listener {
            Some(l) => l,
            None => {
                let v6 = addrs.first().is_some_and(SocketAddr::is_ipv6);
                let (any, lo) = if v6 {
                    (
                        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                        IpAddr::V6(Ipv6Addr::LOCALHOST),
                    )
                } else {
                    (
                        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                        IpAddr::V4(Ipv4Addr::LOCALHOST),
                    )
                };
                let l = TcpListener::bind((any, port)).map_err(|e| {
                    refuse(format!(
                        "rank 0 cannot serve the job's store on port {port} (MASTER_PORT) of \
                         every address: {e}"
                    ))
                })?;
                (l, SocketAddr::new(lo, port))
            }
        };
        listener
            .set_nonblocking(true)
            .map_err(|e| refuse(format!("the store's socket: {e}")))?;
        let shared = Arc::new(Shared {
            size,
            timeout,
            hard_stop: Instant::now() + timeout.saturating_mul(4) + GRACE,
            state: Mutex::new(State {
                connected: vec![false; size],
                done: vec![false; size],
                fences: vec![0; size],
                fence_started: Vec::new(),
                values: HashMap::new(),
                puts: vec![0; size],
                failed: None,
                handshakes: 0,
            }),
            cond: Condvar::new(),
            closing: AtomicBool::new(false),
        });
        let s = shared.clone();
        let secret = Arc::new(secret);
        let thread = std::thread::Builder::new()
            .name("boad-envstore".into())
            .spawn(move || serve(listener, s, secret))
            .map_err(|e| refuse(format!("cannot start the store's thread: {e}")))?;
        Ok((
            Server {
                shared,
                thread: Some(thread),
            },
            reach,
        ))
    }
}

/// The accept loop: one thread per connection, until every rank is done, rank 0 gives up, or the
/// hard stop.
fn serve(listener: TcpListener, shared: Arc<Shared>, secret: Arc<Secret>) {
    loop {
        {
            let st = shared.lock();
            if st.done.iter().all(|&d| d) {
                return;
            }
        }
        if shared.closing.load(Ordering::SeqCst) || Instant::now() >= shared.hard_stop {
            let mut st = shared.lock();
            let why = "rank 0 stopped serving the job's store".to_string();
            shared.fail(&mut st, why);
            return;
        }
        match listener.accept() {
            Ok((stream, from)) => {
                let admitted = {
                    let mut st = shared.lock();
                    let ok = st.handshakes < MAX_HANDSHAKES;
                    if ok {
                        st.handshakes += 1;
                    }
                    ok
                };
                if !admitted {
                    tracing::warn!("env:// store: too many handshakes at once; closed {from}");
                    continue;
                }
                let (s, k) = (shared.clone(), secret.clone());
                let spawned = std::thread::Builder::new()
                    .name("boad-envstore-conn".into())
                    .spawn(move || connection(stream, from, &s, &k));
                if spawned.is_err() {
                    shared.lock().handshakes -= 1;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                tracing::debug!("env:// store: accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Tells a rank why the rendezvous failed, then closes gently: its unread requests are drained
/// (briefly), so that closing does not reset the connection before it reads the reason.
fn abort_to(stream: &TcpStream, why: String) {
    let mut s = stream;
    let _ = s.write_all(Reply::Abort(why).format().as_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 512];
    for _ in 0..64 {
        if !matches!(s.read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
}

/// `rank R of N`.
fn role(rank: usize, size: usize) -> String {
    format!("rank {rank} of {size}")
}

fn parse_role(role: &[u8]) -> Option<(usize, usize)> {
    let s = std::str::from_utf8(role).ok()?;
    let rest = s.strip_prefix("rank ")?;
    let (r, n) = rest.split_once(" of ")?;
    // Decimal, no sign, no leading zero: one spelling per number.
    let digits = |t: &str| {
        !t.is_empty()
            && t.len() <= 10
            && t.bytes().all(|b| b.is_ascii_digit())
            && (t == "0" || !t.starts_with('0'))
    };
    if !digits(r) || !digits(n) {
        return None;
    }
    Some((r.parse().ok()?, n.parse().ok()?))
}

/// Serves one connection: the handshake, then the rank's requests.
fn connection(stream: TcpStream, from: SocketAddr, shared: &Shared, secret: &Secret) {
    let rank = admit(&stream, from, shared, secret);
    shared.lock().handshakes -= 1;
    let Some(rank) = rank else {
        return;
    };
    // A rank that sends nothing for a timeout is stuck (it never waits between two requests).
    let _ = stream.set_read_timeout(Some(shared.timeout));
    let _ = stream.set_write_timeout(Some(shared.timeout));
    let mut writer = &stream;
    let mut reader = BufReader::new(&stream);
    if let Err(why) = session(&mut reader, &mut writer, rank, shared) {
        let mut st = shared.lock();
        shared.fail(&mut st, why);
        let why = st.failed.clone().unwrap_or_default();
        drop(st);
        abort_to(&stream, why);
    }
}

/// The handshake and the rank's claim: the rank, or None (a stranger, refused; or a claim that
/// ends the rendezvous).
fn admit(stream: &TcpStream, from: SocketAddr, shared: &Shared, secret: &Secret) -> Option<usize> {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT));
    let mut s = stream;
    let role = match server_handshake(&mut s, secret) {
        Ok(role) => role,
        Err(e) => {
            tracing::warn!("env:// store: refused a connection from {from}: {e}");
            return None;
        }
    };
    let mut st = shared.lock();
    let claim = parse_role(&role);
    let why = match claim {
        None => format!(
            "a process at {from} with the job's secret gave the role {:?}, not `rank R of N`",
            String::from_utf8_lossy(&role)
        ),
        Some((_, n)) if n != shared.size => format!(
            "a process at {from} claims to be one of {n} ranks, but WORLD_SIZE is {} (is \
             WORLD_SIZE the same in every process?)",
            shared.size
        ),
        Some((r, _)) if r >= shared.size => {
            format!(
                "a process at {from} claims rank {r}, beyond WORLD_SIZE {}",
                shared.size
            )
        }
        Some((r, _)) if st.connected[r] => format!(
            "two processes claim rank {r} (the second from {from}): is RANK set right in every \
             process?"
        ),
        Some((r, _)) => {
            st.connected[r] = true;
            if let Some(why) = st.failed.clone() {
                drop(st);
                abort_to(stream, why);
                return None;
            }
            return Some(r);
        }
    };
    shared.fail(&mut st, why.clone());
    drop(st);
    abort_to(stream, why);
    None
}

/// A rank's requests until `DONE`; Err: why the rendezvous fails.
fn session(
    reader: &mut impl BufRead,
    writer: &mut impl Write,
    rank: usize,
    shared: &Shared,
) -> Result<(), String> {
    let secs = shared.timeout.as_secs_f64();
    loop {
        if let Some(why) = shared.lock().failed.clone() {
            return Err(why);
        }
        let line = match read_line(reader) {
            Ok(l) => l,
            Err(LineError::Closed) => {
                return Err(format!(
                    "rank {rank} closed its connection to the store before it was done (did it \
                     exit or was it killed?)"
                ))
            }
            Err(LineError::TimedOut) => {
                return Err(format!(
                    "rank {rank} sent nothing to the store for {secs:.0} s"
                ))
            }
            Err(LineError::Malformed) => {
                return Err(format!(
                    "rank {rank} sent the store a line that is not its protocol"
                ))
            }
            Err(LineError::Io(e)) => return Err(format!("rank {rank}'s connection failed: {e}")),
        };
        let Some(request) = Request::parse(&line) else {
            return Err(format!(
                "rank {rank} sent the store {:?}, which is not its protocol",
                clean_reason(&line)
            ));
        };
        let reply = match request {
            Request::Put(k, v) => {
                let mut st = shared.lock();
                if st.puts[rank] >= MAX_PUTS {
                    return Err(format!("rank {rank} put more than {MAX_PUTS} keys"));
                }
                if let Some((by, _)) = st.values.get(&k) {
                    return Err(format!("rank {rank} put {k}, which rank {by} had put"));
                }
                st.puts[rank] += 1;
                st.values.insert(k, (rank, v));
                continue;
            }
            Request::Get(k) => match shared.lock().values.get(&k) {
                Some((_, v)) => Reply::Value(v.clone()),
                None => Reply::None,
            },
            Request::Fence => fence(rank, shared)?,
            Request::Done => {
                let mut st = shared.lock();
                st.done[rank] = true;
                shared.cond.notify_all();
                return Ok(());
            }
        };
        writer
            .write_all(reply.format().as_bytes())
            .map_err(|e| format!("cannot answer rank {rank}: {e}"))?;
    }
}

/// Rank `rank` reached its next fence: waits until every rank has, or fails naming those that did
/// not within the timeout after the first one did.
fn fence(rank: usize, shared: &Shared) -> Result<Reply, String> {
    let mut st = shared.lock();
    st.fences[rank] += 1;
    let k = st.fences[rank];
    if st.fence_started.len() < k as usize {
        st.fence_started.push(Instant::now());
    }
    shared.cond.notify_all();
    let deadline = st.fence_started[k as usize - 1] + shared.timeout;
    loop {
        if let Some(why) = &st.failed {
            return Err(why.clone());
        }
        if st.fences.iter().all(|&f| f >= k) {
            return Ok(Reply::Fenced);
        }
        let now = Instant::now();
        if now >= deadline {
            let late = (0..shared.size).filter(|&r| st.fences[r] < k);
            let never: Vec<usize> = (0..shared.size).filter(|&r| !st.connected[r]).collect();
            let mut why = format!(
                "ranks {} did not reach fence {k} of the job's store within {:.0} s",
                list(late),
                shared.timeout.as_secs_f64()
            );
            if !never.is_empty() {
                let _ = write!(why, " (never connected: {})", list(never.into_iter()));
            }
            shared.fail(&mut st, why.clone());
            return Err(why);
        }
        st = shared
            .cond
            .wait_timeout(st, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// A rank's connection to the job's store (rank 0 also runs the store).
pub(crate) struct EnvStore {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// `MASTER_ADDR:MASTER_PORT`, for messages.
    master: String,
    timeout: Duration,
    server: Option<Server>,
}

/// `MASTER_ADDR` and `MASTER_PORT`, checked.
fn master(get: &impl Fn(&str) -> Option<String>) -> Result<(String, u16), JoinError> {
    let addr = get("MASTER_ADDR").unwrap_or_default().trim().to_string();
    if addr.is_empty()
        || addr.len() > 253
        || !addr
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:[]%".contains(&b))
    {
        return Err(JoinError::BadEnv {
            name: "MASTER_ADDR",
            value: addr,
            why: "must be the host name or address of rank 0's machine".into(),
        });
    }
    // BOAD_MASTER_PORT, when the program's other env:// store (PyTorch's) has MASTER_PORT.
    let name = if get(PORT_VAR).is_some() {
        PORT_VAR
    } else {
        "MASTER_PORT"
    };
    let raw = get(name).unwrap_or_default();
    let port = raw
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| JoinError::BadEnv {
            name,
            value: raw.clone(),
            why: "must be a TCP port (1 to 65535)".into(),
        })?;
    // An IPv6 literal may come in brackets.
    let host = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(&addr)
        .to_string();
    Ok((host, port))
}

fn resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    Ok((host, port).to_socket_addrs()?.collect())
}

impl EnvStore {
    /// Connects this rank to the job's store (rank 0 starts it first), and authenticates both ways.
    pub fn connect(info: &JobInfo, timeout: Duration) -> Result<EnvStore, JoinError> {
        let get = |v: &str| std::env::var(v).ok();
        let secret = job_secret(&get)?;
        let (host, port) = master(&get)?;
        Self::connect_to(info.rank, info.size, &host, port, secret, timeout)
    }

    fn connect_to(
        rank: usize,
        size: usize,
        host: &str,
        port: u16,
        secret: Secret,
        timeout: Duration,
    ) -> Result<EnvStore, JoinError> {
        if size > MAX_RANKS {
            return Err(refuse(format!(
                "WORLD_SIZE={size}: the env:// store serves at most {MAX_RANKS} ranks"
            )));
        }
        let master = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let start = Instant::now();
        let deadline = start + timeout;
        let (server, stream) = if rank == 0 {
            // Unresolvable here: listen on every address.
            let addrs = resolve(host, port).unwrap_or_default();
            let (server, reach) = Server::start(&addrs, port, size, secret.clone(), timeout)?;
            let stream = TcpStream::connect_timeout(&reach, timeout).map_err(|e| {
                refuse(format!("rank 0 cannot reach its own store at {reach}: {e}"))
            })?;
            (Some(server), stream)
        } else {
            (None, reach_master(host, port, &master, deadline, timeout)?)
        };
        let io = |what: &str, e: std::io::Error| refuse(format!("{what} ({master}): {e}"));
        stream
            .set_nodelay(true)
            .map_err(|e| io("the store's connection", e))?;
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(HANDSHAKE_TIMEOUT);
        stream
            .set_read_timeout(Some(remaining))
            .map_err(|e| io("the store's connection", e))?;
        stream
            .set_write_timeout(Some(timeout + GRACE))
            .map_err(|e| io("the store's connection", e))?;
        let mut s = &stream;
        client_handshake(&mut s, &secret, role(rank, size).as_bytes()).map_err(|e| {
            refuse(match e {
                AuthError::Refused => format!(
                    "the job's store at {master} refused this process's secret: is the secret \
                     the same in every process of the job?"
                ),
                AuthError::BadServerProof | AuthError::StaleProof => format!(
                    "the process at {master} does not have the job's secret: it is not this \
                     job's rank 0"
                ),
                AuthError::BadMagic | AuthError::UnsupportedVersion { .. } => format!(
                    "what answers at {master} is not boad's store ({e}): is MASTER_PORT used by \
                     something else?"
                ),
                AuthError::Truncated { .. } => format!(
                    "the job's store at {master} closed the connection during the handshake \
                     (did it refuse this process's secret?): {e}"
                ),
                e => format!("authenticating with the job's store at {master}: {e}"),
            })
        })?;
        let reader = BufReader::new(
            stream
                .try_clone()
                .map_err(|e| io("the store's connection", e))?,
        );
        Ok(EnvStore {
            reader,
            writer: stream,
            master,
            timeout,
            server,
        })
    }

    fn send(&mut self, r: &Request) -> Result<(), JoinError> {
        let Err(e) = self.writer.write_all(r.format().as_bytes()) else {
            return Ok(());
        };
        // The store may have said why it closed the connection.
        let _ = self.writer.set_read_timeout(Some(Duration::from_secs(1)));
        if let Ok(line) = read_line(&mut self.reader) {
            if let Some(Reply::Abort(why)) = Reply::parse(&line) {
                return Err(refuse(format!("the rendezvous failed: {why}")));
            }
        }
        let master = &self.master;
        Err(refuse(format!(
            "cannot write to the job's store at {master}: {e}"
        )))
    }

    fn receive(&mut self) -> Result<Reply, JoinError> {
        let master = self.master.clone();
        let _ = self.writer.set_read_timeout(Some(self.timeout + GRACE));
        let line = read_line(&mut self.reader).map_err(|e| {
            refuse(match e {
                LineError::Closed => {
                    format!("the job's store at {master} closed the connection (did rank 0 exit?)")
                }
                LineError::TimedOut => format!(
                    "the job's store at {master} did not answer within {:.0} s",
                    (self.timeout + GRACE).as_secs_f64()
                ),
                LineError::Malformed => {
                    format!("the job's store at {master} sent a line that is not its protocol")
                }
                LineError::Io(e) => format!("reading from the job's store at {master}: {e}"),
            })
        })?;
        match Reply::parse(&line) {
            Some(Reply::Abort(why)) => Err(refuse(format!("the rendezvous failed: {why}"))),
            Some(r) => Ok(r),
            None => Err(refuse(format!(
                "the job's store at {master} sent {:?}, which is not its protocol",
                clean_reason(&line)
            ))),
        }
    }
}

/// Connects to rank 0's store, again until `deadline` (names resolved again each time).
fn reach_master(
    host: &str,
    port: u16,
    master: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<TcpStream, JoinError> {
    let mut pause = Duration::from_millis(100);
    let mut last = String::from("no attempt");
    loop {
        match resolve(host, port) {
            Ok(addrs) if addrs.is_empty() => last = format!("{host} resolves to no address"),
            Ok(addrs) => {
                for a in addrs {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let wait = left.clamp(Duration::from_millis(10), Duration::from_secs(2));
                    match TcpStream::connect_timeout(&a, wait) {
                        Ok(s) => return Ok(s),
                        Err(e) => last = format!("{a}: {e}"),
                    }
                }
            }
            Err(e) => last = format!("cannot resolve {host}: {e}"),
        }
        if Instant::now() + pause >= deadline {
            return Err(refuse(format!(
                "rank 0's store at {master} (MASTER_ADDR:MASTER_PORT) did not answer within \
                 {:.0} s (last: {last}): is rank 0 running, and MASTER_ADDR its address?",
                timeout.as_secs_f64()
            )));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

impl Store for EnvStore {
    fn launcher(&self) -> &'static str {
        Launcher::Env.name()
    }

    fn put(&mut self, key: &str, value: &str) -> Result<(), JoinError> {
        if !is_text(key) || !is_text(value) {
            return Err(JoinError::Protocol(format!(
                "cannot put {key:?} = {value:?} in the env:// store"
            )));
        }
        self.send(&Request::Put(key.into(), value.into()))
    }

    fn fence(&mut self) -> Result<(), JoinError> {
        self.send(&Request::Fence)?;
        match self.receive()? {
            Reply::Fenced => Ok(()),
            other => Err(refuse(format!(
                "the job's store answered a fence with {other:?}"
            ))),
        }
    }

    fn get(&mut self, key: &str) -> Result<String, JoinError> {
        if !is_text(key) {
            return Err(JoinError::Protocol(format!(
                "cannot get {key:?} from the env:// store"
            )));
        }
        self.send(&Request::Get(key.into()))?;
        match self.receive()? {
            Reply::Value(v) => Ok(v),
            Reply::None => Err(refuse(format!("the job's store has no value for {key}"))),
            other => Err(refuse(format!(
                "the job's store answered a get with {other:?}"
            ))),
        }
    }

    fn finish(&mut self) -> Result<(), JoinError> {
        self.send(&Request::Done)?;
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        // Rank 0 serves until every rank is done (bounded by the server's hard stop).
        let shared = server.shared.clone();
        let mut st = shared.lock();
        loop {
            if st.done.iter().all(|&d| d) {
                break;
            }
            if let Some(why) = &st.failed {
                return Err(refuse(format!("the rendezvous failed: {why}")));
            }
            let now = Instant::now();
            if now >= shared.hard_stop {
                let late = (0..shared.size).filter(|&r| !st.done[r]);
                return Err(refuse(format!(
                    "ranks {} did not finish with the job's store",
                    list(late)
                )));
            }
            st = shared
                .cond
                .wait_timeout(st, shared.hard_stop - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(st);
        if let Some(t) = server.thread.take() {
            let _ = t.join();
        }
        Ok(())
    }
}

impl Drop for EnvStore {
    fn drop(&mut self) {
        // Rank 0 gave up before every rank was done: the others are told, the thread ends.
        if let Some(server) = &self.server {
            server.shared.closing.store(true, Ordering::SeqCst);
        }
    }
}

/// What `boad::check()` adds for an env:// job (read through `get`, the environment): where the
/// store is and whether the secret can be used, without connecting to anything.
pub(crate) fn check_lines(get: impl Fn(&str) -> Option<String>) -> String {
    let store = match master(&get) {
        Ok((host, port)) => format!("launcher: env:// store at {host} port {port}\n"),
        Err(e) => format!("launcher: error: {e}\n"),
    };
    let secret = match (job_secret(&get), get(SECRET_FILE_VAR)) {
        (Ok(_), Some(path)) => format!("launcher: env:// secret from {SECRET_FILE_VAR}={path}\n"),
        (Ok(_), None) => format!("launcher: env:// secret from {SECRET_VAR}\n"),
        (Err(e), _) => format!("launcher: error: {e}\n"),
    };
    store + &secret
}

/// Warns when `LOCAL_RANK` (informative: set by torchrun and some operators) disagrees with the
/// rank's place among the ranks of its host, which boad found from the hosts' identities
/// (`info.local_rank`, after [`super::store::prepare`]).
pub(crate) fn check_local_rank(info: &JobInfo) {
    let Ok(v) = std::env::var("LOCAL_RANK") else {
        return;
    };
    match v.trim().parse::<usize>() {
        Ok(l) if l == info.local_rank => {}
        Ok(l) => tracing::warn!(
            "LOCAL_RANK={l}, but rank {} is local rank {} of the {} ranks on its host (boad places \
             ranks by host identity: boot id and network namespace; LOCAL_RANK is not used)",
            info.rank,
            info.local_rank,
            info.local_size
        ),
        Err(_) => tracing::warn!("LOCAL_RANK={v:?} is not a number (boad does not use it)"),
    }
}

/// Fuzz and property-test harness: arbitrary bytes as lines from either side. A line that parses
/// formats back to itself (a reply's reason too), nothing panics, and a line never exceeds
/// [`MAX_LINE`].
#[cfg(any(test, feature = "fuzzing"))]
pub fn exercise_lines(data: &[u8]) {
    let mut r = data;
    for _ in 0..64 {
        match read_line(&mut r) {
            Ok(line) => {
                assert!(line.len() < MAX_LINE);
                if let Some(req) = Request::parse(&line) {
                    assert_eq!(req.format(), format!("{line}\n"));
                    assert!(req.format().len() <= MAX_LINE);
                }
                if let Some(rep) = Reply::parse(&line) {
                    assert_eq!(rep.format(), format!("{line}\n"));
                }
                if let Some((r, n)) = parse_role(line.as_bytes()) {
                    assert_eq!(role(r, n), line);
                }
            }
            Err(LineError::Closed) => return,
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::join::store::{exchange, prepare, HostValue};
    use boad_proto::lines::PeerEntry;
    use std::os::unix::fs::PermissionsExt;

    fn secret(b: u8) -> Secret {
        Secret::from_bytes([b; 32])
    }

    /// A port nobody listens on now (bound, then released).
    fn free_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    fn info(rank: usize, size: usize) -> JobInfo {
        let mut i = JobInfo::singleton();
        i.launcher = Launcher::Env;
        i.rank = rank;
        i.size = size;
        i
    }

    /// Rank `rank` of `size` joins through the store at 127.0.0.1:`port` and returns its table.
    fn join(
        rank: usize,
        size: usize,
        port: u16,
        key: Secret,
        timeout: Duration,
    ) -> Result<(JobInfo, Vec<PeerEntry>), JoinError> {
        let mut store = EnvStore::connect_to(rank, size, "127.0.0.1", port, key, timeout)?;
        let mut i = info(rank, size);
        let here = HostValue::here()?;
        let ids = prepare(&mut store, &mut i, &here, None)?;
        let me = PeerEntry {
            rank,
            host_id: i.host_id,
            ip: i.bind,
            port: 5000 + rank as u16,
            pulse: 6000 + rank as u16,
            pid: 100 + rank as u32,
        };
        let table = exchange(&mut store, &ids, &me)?;
        store.finish()?;
        Ok((i, table))
    }

    type Outcome = Result<(JobInfo, Vec<PeerEntry>), JoinError>;

    /// Ranks `ranks` of `size` join in threads (rank 0, if among them, last and 200 ms late).
    fn job(ranks: &[usize], size: usize, port: u16, timeout: Duration) -> Vec<(usize, Outcome)> {
        let handles: Vec<_> = ranks
            .iter()
            .map(|&r| {
                std::thread::spawn(move || {
                    if r == 0 {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    (r, join(r, size, port, secret(7), timeout))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank thread"))
            .collect()
    }

    fn assert_complete(out: Vec<(usize, Outcome)>, size: usize) {
        let mut tables = Vec::new();
        for (r, o) in out {
            let (i, table) = o.unwrap_or_else(|e| panic!("rank {r}: {e}"));
            assert_eq!((i.local_rank, i.local_size, i.host_id), (r, size, 0));
            assert_eq!(table.len(), size);
            assert_eq!(table[r].port, 5000 + r as u16);
            tables.push((i.job, table));
        }
        assert!(tables.windows(2).all(|w| w[0] == w[1]), "{tables:?}");
    }

    #[test]
    fn ranks_in_threads_meet_through_rank_0s_store_even_when_rank_0_starts_last() {
        let port = free_port();
        let out = job(&[1, 2, 3, 4, 0], 5, port, Duration::from_secs(20));
        assert_complete(out, 5);
        // The store closed once every rank was done.
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }

    #[test]
    fn a_stranger_without_the_secret_is_refused_and_the_job_goes_on() {
        let port = free_port();
        let timeout = Duration::from_secs(20);
        let ranks = std::thread::spawn(move || job(&[0, 1, 2], 3, port, timeout));
        // Wait for the store, then knock: garbage, a wrong secret, a silent connection.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut silent = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("no store: {e}"),
            }
        };
        let mut garbage = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let _ = garbage.write_all(&[0xAB; 300]);
        let mut wrong = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let e = client_handshake(&mut wrong, &secret(8), b"rank 1 of 3").expect_err("refused");
        assert!(matches!(e, AuthError::Refused), "{e}");
        assert_complete(ranks.join().expect("job"), 3);
        let mut buf = [0u8; 8];
        let _ = silent.set_read_timeout(Some(Duration::from_secs(1)));
        // The hello, then nothing more is ever said to it.
        let _ = silent.read(&mut buf);
    }

    #[test]
    fn a_rank_with_the_wrong_secret_is_refused_and_the_others_name_it() {
        let port = free_port();
        let timeout = Duration::from_secs(2);
        let others = std::thread::spawn(move || job(&[0, 2], 3, port, timeout));
        std::thread::sleep(Duration::from_millis(400));
        let e = join(1, 3, port, secret(9), timeout).expect_err("wrong secret");
        assert!(
            e.to_string().contains("refused this process's secret"),
            "{e}"
        );
        for (r, o) in others.join().expect("job") {
            let e = o.expect_err("rank 1 never joined").to_string();
            assert!(
                e.contains("ranks 1 did not reach fence 1") && e.contains("never connected: 1"),
                "rank {r}: {e}"
            );
        }
    }

    #[test]
    fn a_missing_rank_fails_everyone_within_the_timeout_naming_it() {
        let port = free_port();
        let t0 = Instant::now();
        for (r, o) in job(&[0, 1, 3], 4, port, Duration::from_secs(2)) {
            let e = o.expect_err("rank 2 never comes").to_string();
            assert!(e.contains("never connected: 2"), "rank {r}: {e}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2) + GRACE,
            "{:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn a_rank_that_leaves_mid_rendezvous_fails_everyone_at_once_naming_it() {
        let port = free_port();
        let timeout = Duration::from_secs(30);
        let others = std::thread::spawn(move || job(&[0, 1], 3, port, timeout));
        std::thread::sleep(Duration::from_millis(300));
        {
            let mut s =
                EnvStore::connect_to(2, 3, "127.0.0.1", port, secret(7), timeout).expect("rank 2");
            s.put("boad-h-2", "x").expect("put");
            // Once ranks 0 and 1 are in (they published their hosts and wait in the fence)...
            let start = Instant::now();
            while ["boad-h-0", "boad-h-1"].iter().any(|k| s.get(k).is_err()) {
                assert!(start.elapsed() < timeout, "ranks 0 and 1 never came");
                std::thread::sleep(Duration::from_millis(20));
            }
            // ... rank 2 is dropped without DONE: as if it exited.
        }
        let t0 = Instant::now();
        for (r, o) in others.join().expect("job") {
            let e = o.expect_err("rank 2 left").to_string();
            assert!(e.contains("rank 2 closed its connection"), "rank {r}: {e}");
        }
        // Long before the 30 s timeout (the margin is for a loaded machine: this tells "at once" from
        // "at the timeout", it does not time anything).
        assert!(t0.elapsed() < timeout / 2, "{:?}", t0.elapsed());
    }

    #[test]
    fn two_processes_claiming_one_rank_or_another_size_end_the_rendezvous() {
        let port = free_port();
        let timeout = Duration::from_secs(30);
        let others = std::thread::spawn(move || job(&[0, 1], 3, port, timeout));
        std::thread::sleep(Duration::from_millis(300));
        let e = join(1, 3, port, secret(7), timeout).expect_err("a second rank 1");
        assert!(e.to_string().contains("two processes claim rank 1"), "{e}");
        for (r, o) in others.join().expect("job") {
            let e = o.expect_err("ended").to_string();
            assert!(e.contains("two processes claim rank 1"), "rank {r}: {e}");
        }
        let port = free_port();
        let others = std::thread::spawn(move || job(&[0, 1], 3, port, timeout));
        std::thread::sleep(Duration::from_millis(300));
        let e = join(2, 4, port, secret(7), timeout).expect_err("another size");
        assert!(e.to_string().contains("WORLD_SIZE is 3"), "{e}");
        for (_, o) in others.join().expect("job") {
            assert!(o.is_err());
        }
    }

    #[test]
    fn no_store_at_master_addr_is_an_error_within_the_timeout() {
        let port = free_port();
        let t0 = Instant::now();
        let e = join(1, 2, port, secret(7), Duration::from_secs(1))
            .expect_err("nobody serves")
            .to_string();
        assert!(
            e.contains("did not answer within 1 s") && e.contains("is rank 0 running"),
            "{e}"
        );
        assert!(t0.elapsed() < Duration::from_secs(3));
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_secret_comes_from_the_variable_or_a_private_file_and_nowhere_else() {
        let hex = secret(0x3c).to_hex();
        let got = job_secret(&env(&[(SECRET_VAR, &format!(" {hex}\n"))])).expect("variable");
        assert_eq!(got, secret(0x3c));
        let e = job_secret(&env(&[])).expect_err("none").to_string();
        assert!(
            e.contains("BOAD_SECRET_FILE") && e.contains("openssl rand -hex 32"),
            "{e}"
        );
        let e = job_secret(&env(&[(SECRET_VAR, "abc")]))
            .expect_err("short")
            .to_string();
        assert!(e.contains("BOAD_SECRET is not a secret"), "{e}");

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, format!("{hex}\n")).expect("write");
        let p = path.to_str().expect("utf-8 path");
        let e = job_secret(&env(&[(SECRET_VAR, &hex), (SECRET_FILE_VAR, p)])).expect_err("both");
        assert!(e.to_string().contains("set one"), "{e}");
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o644, false),
            (0o640, false),
            (0o602, false),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let r = job_secret(&env(&[(SECRET_FILE_VAR, p)]));
            assert_eq!(r.is_ok(), ok, "mode {mode:o}: {r:?}");
            if let Err(e) = r {
                assert!(e.to_string().contains("chmod 600"), "{e}");
            }
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(&path, Some(65534), None).expect("chown");
            let e = job_secret(&env(&[(SECRET_FILE_VAR, p)])).expect_err("another user's");
            assert!(e.to_string().contains("belongs to user 65534"), "{e}");
        }
        let e = job_secret(&env(&[(SECRET_FILE_VAR, "/nonexistent/secret")])).expect_err("none");
        assert!(e.to_string().contains("cannot open it"), "{e}");
        let e = job_secret(&env(&[(SECRET_FILE_VAR, "/dev/null")])).expect_err("device");
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn check_says_where_the_store_is_and_whether_the_secret_is_usable() {
        let hex = secret(1).to_hex();
        let vars = [
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
            (SECRET_VAR, hex.as_str()),
        ];
        assert_eq!(
            check_lines(env(&vars)),
            "launcher: env:// store at node0 port 29500\nlauncher: env:// secret from BOAD_SECRET\n"
        );
        let text = check_lines(env(&vars[..2]));
        assert!(
            text.ends_with("\n")
                && text.lines().nth(1).is_some_and(
                    |l| l.starts_with("launcher: error: ") && l.contains("BOAD_SECRET_FILE")
                ),
            "{text}"
        );
    }

    #[test]
    fn master_addr_and_port_are_checked() {
        let ok = master(&env(&[("MASTER_ADDR", "[::1]"), ("MASTER_PORT", "29500")]));
        assert_eq!(ok.expect("v6"), ("::1".to_string(), 29500));
        let both = [
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "29500"),
            (PORT_VAR, "29600"),
        ];
        assert_eq!(master(&env(&both)).expect("override").1, 29600);
        let e = master(&env(&[
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1"),
            (PORT_VAR, "x"),
        ]));
        assert!(e.expect_err("bad").to_string().contains("BOAD_MASTER_PORT"));
        for (a, p) in [
            ("", "1"),
            ("a b", "1"),
            ("h", "0"),
            ("h", "70000"),
            ("h", "x"),
        ] {
            assert!(
                master(&env(&[("MASTER_ADDR", a), ("MASTER_PORT", p)])).is_err(),
                "{a:?} {p:?}"
            );
        }
    }

    #[test]
    fn lines_and_roles_parse_exactly() {
        assert_eq!(
            Request::parse("PUT boad-h-3 ab/1,198.18.0.1"),
            Some(Request::Put("boad-h-3".into(), "ab/1,198.18.0.1".into()))
        );
        assert_eq!(Request::parse("FENCE"), Some(Request::Fence));
        assert_eq!(Request::parse("GET k"), Some(Request::Get("k".into())));
        assert_eq!(Request::parse("DONE"), Some(Request::Done));
        for bad in [
            "",
            "PUT k",
            "PUT k v w",
            "PUT  k v",
            "FENCE ",
            "GET",
            "GET k\r",
            "PUT k v;",
            "done",
        ] {
            assert_eq!(Request::parse(bad), None, "{bad:?}");
        }
        let long = "k".repeat(MAX_TEXT + 1);
        assert_eq!(Request::parse(&format!("GET {long}")), None);
        assert_eq!(
            Reply::parse("ABORT rank 3 left"),
            Some(Reply::Abort("rank 3 left".into()))
        );
        for bad in ["ABORT ", "VALUE", "VALUE a b", "FENCED x", "ABORT \u{7}"] {
            assert_eq!(Reply::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Reply::Abort("x\ny".repeat(100)).format().len(), MAX_LINE);
        assert_eq!(parse_role(b"rank 3 of 9"), Some((3, 9)));
        for bad in [
            &b"rank 3 of"[..],
            b"rank 03 of 9",
            b"rank 3 of 09",
            b"rank -1 of 9",
            b"rank 3 of 9 ",
            b"rank 99999999999 of 9",
        ] {
            assert_eq!(parse_role(bad), None, "{bad:?}");
        }
        let mut r: &[u8] = &[b'x'; 400];
        assert!(matches!(read_line(&mut r), Err(LineError::Malformed)));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_as_store_lines_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            exercise_lines(&data);
        }
    }
}
