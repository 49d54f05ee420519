//! The kernel service's protocol and its client: `boadd`, a privileged per-host service, loads and
//! attaches boad's eBPF programs once and serves jobs of any user over a Unix socket
//! ([`socket_path`]). A job's registering process (boadrun, or a rank of a job another launcher
//! started) connects, registers the job's members, and keeps the connection open for as long as
//! the job runs: the service frees everything the job was given when the connection closes
//! (whatever ends the process, SIGKILL too).
//!
//! ```text
//! client -> service   FREE                        (any time before JOB)
//! service -> client   FREE <mask>                 (the communicators free now: bit i set = id i
//!                                                 free; 16 hex digits)
//! client -> service   JOB <key> <n> [<trigger|-> [<world> <leaders|->]]
//!                                                 (key: the job key, 16 hex digits, not 0; n: 1..=128
//!                                                 members; trigger: a UDP port the job wants as its
//!                                                 trigger port, `-` or absent: the service picks
//!                                                 one; world, leaders: the communicator ids the job
//!                                                 wants, given by a job over several hosts, whose
//!                                                 hosts' services must all give it the same ids;
//!                                                 absent: the service picks them)
//!                     MEMBER <host_id> <ipv4> <port>
//!                                                 (n lines, in rank order: each rank's socket)
//! service -> client   GRANT <trigger> <world> <leaders|->
//!                                                 (the kernel path is the job's: its trigger port,
//!                                                 the communicator ids of its ranks and, on a job
//!                                                 over several hosts with a host of several ranks,
//!                                                 of its host leaders)
//!                     REFUSED <reason...>         (instead, and the service closes the connection)
//! client -> service   STATUS                      (any time, also without a job)
//! service -> client   STATUS <jobs> <comms_used> <comms_max> <ports_used> <ports_max>
//! client -> service   COUNTERS                    (any time)
//! service -> client   COUNTERS <name>=<value>...  (the programs' counters, summed over every job
//!                                                 the service has served: host-wide)
//! ```
//!
//! The socket is a path, or, written `@name`, a name in the abstract namespace of the network
//! namespace (one service per network namespace under one name, as on hosts that are network
//! namespaces of one machine). Anyone can bind an abstract name, so a client talks only to a service
//! whose process runs as root or as the client's own user (its peer credentials), whatever the
//! socket.
//!
//! One job per connection. The service checks, before it fills anything, that every member whose
//! address is on its host is a UDP socket owned by the connecting process's user (its peer
//! credentials against the socket table), and bounds what a connection and a user may hold; see
//! `docs/security.md`. Lines are ASCII, newline-terminated, at most [`MAX_SERVICE_LINE`] bytes.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::lines::{Line, PeerEntry};

/// Where the service listens unless [`SOCKET_ENV`] says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/boad/boadd.sock";
/// The variable naming the service's socket, for the service and its clients alike.
pub const SOCKET_ENV: &str = "BOAD_SERVICE_SOCKET";
/// Longest line either side sends.
pub const MAX_SERVICE_LINE: usize = 512;
/// Most members a job may register (the kernel path's `MAX_RANKS`).
pub const MAX_MEMBERS: usize = 128;
/// How long the client waits for the service's answer.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// The service's socket: [`SOCKET_ENV`] if set and not empty, else [`DEFAULT_SOCKET`].
pub fn socket_path() -> PathBuf {
    std::env::var_os(SOCKET_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
}

/// Errors of the service's protocol and client.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A line that is not the protocol.
    #[error("not a kernel-service line: {0}")]
    Line(String),
    /// Talking to the service failed.
    #[error("kernel service {path}: {source}")]
    Io {
        /// The service's socket.
        path: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The service refused the job.
    #[error("the kernel service refused the job: {0}")]
    Refused(String),
    /// The process listening at the socket is neither root nor this user.
    #[error("kernel service {path}: the process listening there runs as uid {uid}, neither root nor this user; not used")]
    Untrusted {
        /// The service's socket.
        path: String,
        /// Its owner.
        uid: u32,
    },
    /// The job cannot be registered as given.
    #[error("the kernel service cannot serve this job: {0}")]
    Unfit(String),
}

/// A line from a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `JOB <key> <n> [<trigger|-> [<world> <leaders|->]]`
    Job {
        /// The job key (not 0).
        key: u64,
        /// Members that follow (1..=[`MAX_MEMBERS`]).
        members: usize,
        /// The trigger port the job asks for, if any.
        trigger: Option<u16>,
        /// The communicator ids the job asks for (world, leaders), if any.
        comms: Option<Comms>,
    },
    /// `FREE`
    Free,
    /// `MEMBER <host_id> <ipv4> <port>`
    Member {
        /// The member's host id (ranks with equal ids share a machine).
        host_id: u32,
        /// Its socket's address.
        ip: Ipv4Addr,
        /// Its socket's port (not 0).
        port: u16,
    },
    /// `STATUS`
    Status,
    /// `COUNTERS`
    Counters,
}

/// Communicator ids a job asks for: its ranks' and, if the job uses one, its host leaders'.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Comms {
    /// The communicator id of the job's ranks.
    pub world: u32,
    /// The communicator id of its host leaders (not `world`).
    pub leaders: Option<u32>,
}

impl Comms {
    /// The lowest communicator ids free in `mask` (bit `i` set: id `i` free, as `FREE` says): one
    /// for the job's ranks and, if `leaders`, one for its host leaders; None if too few are free.
    pub fn lowest_free(mask: u64, leaders: bool) -> Option<Comms> {
        let mut ids = (0..64u32).filter(|i| mask & (1 << i) != 0);
        let world = ids.next()?;
        let leaders = if leaders { Some(ids.next()?) } else { None };
        Some(Comms { world, leaders })
    }
}

/// What the service gives a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The job's trigger port (bound by the service for as long as the job is registered).
    pub trigger: u16,
    /// The communicator id of the job's ranks.
    pub world: u32,
    /// The communicator id of its host leaders, when filled.
    pub leaders: Option<u32>,
}

impl Grant {
    /// The rendezvous lines that tell the job's ranks about it (`KERNEL`, then `KCOMMS`), to send
    /// after the table and before `END`.
    pub fn lines(&self) -> Vec<Line> {
        vec![
            Line::Kernel {
                trigger_port: self.trigger,
                leaders: self.leaders.is_some(),
            },
            Line::KernelComms {
                world: self.world,
                // Unused without LEADERS; never a communicator of this job then.
                leaders: self.leaders.unwrap_or(u32::MAX),
            },
        ]
    }
}

/// What the service holds, as `STATUS` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// Jobs registered.
    pub jobs: usize,
    /// Communicators in use.
    pub comms_used: usize,
    /// Communicators the programs hold at most.
    pub comms_max: usize,
    /// Ports registered.
    pub ports_used: usize,
    /// Ports the programs hold at most.
    pub ports_max: usize,
}

/// A line from the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `GRANT <trigger> <world> <leaders|->`
    Grant(Grant),
    /// `REFUSED <reason>`
    Refused(String),
    /// `STATUS ...`
    Status(Status),
    /// `COUNTERS <name>=<value>...`
    Counters(Vec<(String, u64)>),
    /// `FREE <mask>`: bit `i` set = communicator `i` is free.
    Free(u64),
}

fn bad(line: &[u8]) -> ServiceError {
    let shown: String = String::from_utf8_lossy(&line[..line.len().min(80)])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    ServiceError::Line(shown)
}

/// The words of a line: ASCII, at most [`MAX_SERVICE_LINE`] bytes, without its newline.
fn words(line: &[u8]) -> Result<Vec<&str>, ServiceError> {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    if body.len() > MAX_SERVICE_LINE || !body.is_ascii() {
        return Err(bad(line));
    }
    let text = std::str::from_utf8(body).map_err(|_| bad(line))?;
    Ok(text.split(' ').collect())
}

fn number<T: std::str::FromStr>(w: &str) -> Option<T> {
    // Digits only: no sign, no spaces.
    (!w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()))
        .then(|| w.parse().ok())
        .flatten()
}

impl Request {
    /// The line as sent, with its newline.
    pub fn format(&self) -> String {
        match self {
            Request::Job {
                key,
                members,
                trigger,
                comms,
            } => {
                let t = trigger.map_or_else(|| "-".to_string(), |t| t.to_string());
                match (trigger, comms) {
                    (_, Some(c)) => format!(
                        "JOB {key:016x} {members} {t} {} {}\n",
                        c.world,
                        c.leaders.map_or_else(|| "-".to_string(), |l| l.to_string())
                    ),
                    (Some(_), None) => format!("JOB {key:016x} {members} {t}\n"),
                    (None, None) => format!("JOB {key:016x} {members}\n"),
                }
            }
            Request::Free => "FREE\n".into(),
            Request::Member { host_id, ip, port } => format!("MEMBER {host_id} {ip} {port}\n"),
            Request::Status => "STATUS\n".into(),
            Request::Counters => "COUNTERS\n".into(),
        }
    }

    /// Parses one line (with or without its newline).
    pub fn parse(line: &[u8]) -> Result<Request, ServiceError> {
        let w = words(line)?;
        let parsed = match w[..] {
            ["JOB", key, n, ref rest @ ..] if matches!(rest.len(), 0 | 1 | 3) => {
                let key = (key.len() == 16)
                    .then(|| u64::from_str_radix(key, 16).ok())
                    .flatten()
                    .filter(|&k| k != 0 && key.bytes().all(|b| b.is_ascii_hexdigit()));
                let members = number::<usize>(n).filter(|&n| (1..=MAX_MEMBERS).contains(&n));
                let trigger = match rest.first() {
                    None | Some(&"-") => Some(None),
                    Some(t) => number::<u16>(t).filter(|&t| t != 0).map(Some),
                };
                let comms = match rest {
                    [_, world, leaders] => {
                        let leaders = match *leaders {
                            "-" => Some(None),
                            l => number::<u32>(l).map(Some),
                        };
                        match (number::<u32>(world), leaders) {
                            (Some(world), Some(leaders)) if leaders != Some(world) => {
                                Some(Some(Comms { world, leaders }))
                            }
                            _ => None,
                        }
                    }
                    _ => Some(None),
                };
                match (key, members, trigger, comms) {
                    (Some(key), Some(members), Some(trigger), Some(comms)) => Some(Request::Job {
                        key,
                        members,
                        trigger,
                        comms,
                    }),
                    _ => None,
                }
            }
            ["FREE"] => Some(Request::Free),
            ["MEMBER", host, ip, p] => {
                match (
                    number::<u32>(host),
                    ip.parse::<Ipv4Addr>().ok(),
                    number::<u16>(p),
                ) {
                    (Some(host_id), Some(ip), Some(port)) if port != 0 => {
                        Some(Request::Member { host_id, ip, port })
                    }
                    _ => None,
                }
            }
            ["STATUS"] => Some(Request::Status),
            ["COUNTERS"] => Some(Request::Counters),
            _ => None,
        };
        parsed.ok_or_else(|| bad(line))
    }
}

impl Reply {
    /// The line as sent, with its newline.
    pub fn format(&self) -> String {
        match self {
            Reply::Grant(g) => match g.leaders {
                Some(l) => format!("GRANT {} {} {l}\n", g.trigger, g.world),
                None => format!("GRANT {} {} -\n", g.trigger, g.world),
            },
            Reply::Refused(why) => {
                let why: String = why
                    .chars()
                    .map(|c| {
                        if c.is_ascii() && !c.is_control() {
                            c
                        } else {
                            '?'
                        }
                    })
                    .take(MAX_SERVICE_LINE - "REFUSED ".len())
                    .collect();
                format!("REFUSED {why}\n")
            }
            Reply::Status(s) => format!(
                "STATUS {} {} {} {} {}\n",
                s.jobs, s.comms_used, s.comms_max, s.ports_used, s.ports_max
            ),
            Reply::Free(mask) => format!("FREE {mask:016x}\n"),
            Reply::Counters(c) => {
                let mut line = "COUNTERS".to_string();
                for (name, value) in c {
                    line += &format!(" {name}={value}");
                }
                line + "\n"
            }
        }
    }

    /// Parses one line (with or without its newline).
    pub fn parse(line: &[u8]) -> Result<Reply, ServiceError> {
        let w = words(line)?;
        let parsed = match w[..] {
            ["GRANT", t, world, leaders] => {
                let leaders = match leaders {
                    "-" => Some(None),
                    l => number::<u32>(l).map(Some),
                };
                match (
                    number::<u16>(t).filter(|&t| t != 0),
                    number::<u32>(world),
                    leaders,
                ) {
                    (Some(trigger), Some(world), Some(leaders)) if leaders != Some(world) => {
                        Some(Reply::Grant(Grant {
                            trigger,
                            world,
                            leaders,
                        }))
                    }
                    _ => None,
                }
            }
            ["FREE", mask] if mask.len() == 16 && mask.bytes().all(|b| b.is_ascii_hexdigit()) => {
                u64::from_str_radix(mask, 16).ok().map(Reply::Free)
            }
            ["REFUSED", ..] => {
                let body = line.strip_suffix(b"\n").unwrap_or(line);
                let why = std::str::from_utf8(&body[b"REFUSED".len()..])
                    .map_err(|_| bad(line))?
                    .trim_start_matches(' ');
                (!why.chars().any(char::is_control)).then(|| Reply::Refused(why.to_string()))
            }
            ["STATUS", a, b, c, d, e] => {
                match (number(a), number(b), number(c), number(d), number(e)) {
                    (
                        Some(jobs),
                        Some(comms_used),
                        Some(comms_max),
                        Some(ports_used),
                        Some(ports_max),
                    ) => Some(Reply::Status(Status {
                        jobs,
                        comms_used,
                        comms_max,
                        ports_used,
                        ports_max,
                    })),
                    _ => None,
                }
            }
            ["COUNTERS", ref pairs @ ..] => {
                let mut out = Vec::with_capacity(pairs.len());
                for p in pairs {
                    let (name, value) = p.split_once('=').ok_or_else(|| bad(line))?;
                    let ok_name = !name.is_empty()
                        && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
                    match (ok_name, number::<u64>(value)) {
                        (true, Some(v)) => out.push((name.to_string(), v)),
                        _ => return Err(bad(line)),
                    }
                }
                Some(Reply::Counters(out))
            }
            _ => None,
        };
        parsed.ok_or_else(|| bad(line))
    }
}

/// Reads one line of at most [`MAX_SERVICE_LINE`] bytes (plus its newline) from `r`; `Ok(None)` at
/// the end of the stream. A longer line is an error, and nothing past it is read.
pub fn read_line(r: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n =
        std::io::Read::take(&mut *r, MAX_SERVICE_LINE as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            if line.len() > MAX_SERVICE_LINE {
                "line too long"
            } else {
                "line cut short"
            },
        ));
    }
    line.pop();
    Ok(Some(line))
}

/// A job's registration with the kernel service: the kernel path is the job's while this lives
/// (its connection to the service stays open); dropping it (or the process ending) frees it.
#[derive(Debug)]
pub struct KernelGrant {
    grant: Grant,
    conn: BufReader<UnixStream>,
    path: String,
}

impl KernelGrant {
    /// What the service gave the job.
    pub fn grant(&self) -> Grant {
        self.grant
    }

    fn ask(&mut self, req: &Request) -> Result<Reply, ServiceError> {
        let io = |source| ServiceError::Io {
            path: self.path.clone(),
            source,
        };
        self.conn
            .get_mut()
            .write_all(req.format().as_bytes())
            .map_err(io)?;
        let line = read_line(&mut self.conn).map_err(|source| ServiceError::Io {
            path: self.path.clone(),
            source,
        })?;
        let line = line.ok_or_else(|| ServiceError::Io {
            path: self.path.clone(),
            source: std::io::ErrorKind::UnexpectedEof.into(),
        })?;
        Reply::parse(&line)
    }

    /// The programs' counters (host-wide: every job the service has served).
    pub fn counters(&mut self) -> Result<Vec<(String, u64)>, ServiceError> {
        match self.ask(&Request::Counters)? {
            Reply::Counters(c) => Ok(c),
            other => Err(ServiceError::Line(other.format())),
        }
    }
}

/// The abstract name `path` gives (`@name`), if it gives one.
fn abstract_name(path: &std::path::Path) -> Option<&[u8]> {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes().strip_prefix(b"@")
}

/// Connects to the service at `path` (a file, or `@name` in the abstract namespace) and checks
/// that the process that listens runs as root or as this process's user: an abstract name can be
/// bound by anyone, and a service's answers decide where a job's data goes.
fn connect(path: &std::path::Path) -> Result<UnixStream, ServiceError> {
    let io = |source| ServiceError::Io {
        path: path.display().to_string(),
        source,
    };
    let conn = match abstract_name(path) {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).map_err(io)?;
            UnixStream::connect_addr(&addr).map_err(io)?
        }
        None => UnixStream::connect(path).map_err(io)?,
    };
    let (uid, _) = crate::net::peer_cred(&conn).map_err(io)?;
    // SAFETY: getuid has no preconditions and cannot fail.
    let me = unsafe { libc::getuid() };
    if uid != 0 && uid != me {
        return Err(ServiceError::Untrusted {
            path: path.display().to_string(),
            uid,
        });
    }
    conn.set_read_timeout(Some(ANSWER_WAIT)).map_err(io)?;
    conn.set_write_timeout(Some(ANSWER_WAIT)).map_err(io)?;
    Ok(conn)
}

/// Whether a service listens at [`socket_path`] ([`present_at`]).
pub fn present() -> bool {
    present_at(&socket_path())
}

/// Whether a service may listen at `path`: a socket file is there, or, for an abstract name
/// (`@name`), something accepts connections under that name.
pub fn present_at(path: &std::path::Path) -> bool {
    if abstract_name(path).is_some() {
        return connect(path).is_ok();
    }
    std::fs::symlink_metadata(path).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_socket()
    })
}

/// Asks the service at `path` which communicators are free now (bit `i` set: id `i`).
pub fn free_at(path: &std::path::Path) -> Result<u64, ServiceError> {
    match ask_once(path, &Request::Free)? {
        Reply::Free(mask) => Ok(mask),
        Reply::Refused(why) => Err(ServiceError::Refused(why)),
        other => Err(ServiceError::Line(other.format())),
    }
}

/// Sends `req` on a connection of its own to the service at `path` and reads the answer.
fn ask_once(path: &std::path::Path, req: &Request) -> Result<Reply, ServiceError> {
    let mut conn = BufReader::new(connect(path)?);
    let io = |source| ServiceError::Io {
        path: path.display().to_string(),
        source,
    };
    conn.get_mut()
        .write_all(req.format().as_bytes())
        .map_err(io)?;
    let line = read_line(&mut conn)
        .map_err(io)?
        .ok_or_else(|| io(std::io::ErrorKind::UnexpectedEof.into()))?;
    Reply::parse(&line)
}

/// Registers job `key` whose ranks are `table` (every rank, in rank order, as the rendezvous table
/// has them) with the service at [`socket_path`], asking for trigger port `trigger` if given. The
/// calling process's user must own the sockets of every rank on this host. Keep the returned
/// [`KernelGrant`] for as long as the job runs; send its [`Grant::lines`] to the ranks.
pub fn register(
    key: u64,
    table: &[PeerEntry],
    trigger: Option<u16>,
) -> Result<KernelGrant, ServiceError> {
    register_at(&socket_path(), key, table, trigger, None)
}

/// [`register`] with the service listening at `path`, asking for communicator ids `comms` if
/// given (a job over several hosts asks every host's service for the same ids).
pub fn register_at(
    path: &std::path::Path,
    key: u64,
    table: &[PeerEntry],
    trigger: Option<u16>,
    comms: Option<Comms>,
) -> Result<KernelGrant, ServiceError> {
    if table.is_empty() || table.len() > MAX_MEMBERS {
        return Err(ServiceError::Unfit(format!(
            "{} ranks (the kernel path serves 1 to {MAX_MEMBERS})",
            table.len()
        )));
    }
    let mut text = Request::Job {
        key,
        members: table.len(),
        trigger,
        comms,
    }
    .format();
    for (i, p) in table.iter().enumerate() {
        let IpAddr::V4(ip) = p.ip else {
            return Err(ServiceError::Unfit(format!(
                "rank {i} has an IPv6 address ({}); the kernel path is IPv4 only",
                p.ip
            )));
        };
        text += &Request::Member {
            host_id: p.host_id,
            ip,
            port: p.port,
        }
        .format();
    }
    let mut conn = connect(path)?;
    let io = |source| ServiceError::Io {
        path: path.display().to_string(),
        source,
    };
    conn.write_all(text.as_bytes()).map_err(io)?;
    let mut conn = BufReader::new(conn);
    let line = read_line(&mut conn)
        .map_err(io)?
        .ok_or_else(|| io(std::io::ErrorKind::UnexpectedEof.into()))?;
    match Reply::parse(&line)? {
        Reply::Grant(grant) => {
            // The connection now only carries STATUS/COUNTERS answers; nothing times it out.
            conn.get_ref()
                .set_read_timeout(Some(ANSWER_WAIT))
                .map_err(io)?;
            Ok(KernelGrant {
                grant,
                conn,
                path: path.display().to_string(),
            })
        }
        Reply::Refused(why) => Err(ServiceError::Refused(why)),
        other => Err(ServiceError::Line(other.format())),
    }
}

/// Asks the service at `path` what it holds.
pub fn status_at(path: &std::path::Path) -> Result<Status, ServiceError> {
    match ask_once(path, &Request::Status)? {
        Reply::Status(s) => Ok(s),
        other => Err(ServiceError::Line(other.format())),
    }
}

/// Fuzzing entry point: parses `data` as a request and as a reply; whatever parses must format to a
/// line that parses back to it.
#[cfg(feature = "fuzzing")]
pub fn exercise(data: &[u8]) {
    if let Ok(r) = Request::parse(data) {
        assert_eq!(Request::parse(r.format().as_bytes()).ok(), Some(r));
    }
    if let Ok(r) = Reply::parse(data) {
        assert_eq!(Reply::parse(r.format().as_bytes()).ok(), Some(r));
    }
    let _ = read_line(&mut std::io::Cursor::new(data));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::Job {
                key: 0x1234_5678_9abc_def0,
                members: 128,
                trigger: None,
                comms: None,
            },
            Request::Job {
                key: 1,
                members: 1,
                trigger: Some(40000),
                comms: None,
            },
            Request::Job {
                key: 1,
                members: 9,
                trigger: None,
                comms: Some(Comms {
                    world: 4,
                    leaders: Some(5),
                }),
            },
            Request::Job {
                key: 1,
                members: 9,
                trigger: Some(40000),
                comms: Some(Comms {
                    world: 63,
                    leaders: None,
                }),
            },
            Request::Free,
            Request::Member {
                host_id: 3,
                ip: Ipv4Addr::new(127, 77, 0, 2),
                port: 5000,
            },
            Request::Status,
            Request::Counters,
        ] {
            assert_eq!(Request::parse(r.format().as_bytes()).ok(), Some(r));
        }
    }

    #[test]
    fn bad_requests_are_errors() {
        for bad in [
            &b"JOB 0000000000000000 2"[..],
            b"JOB 12 2",
            b"JOB 000000000000001g 2",
            b"JOB +00000000000001f 2",
            b"JOB 0000000000000001 0",
            b"JOB 0000000000000001 129",
            b"JOB 0000000000000001 2 0",
            b"JOB 0000000000000001 2 65536",
            b"JOB 0000000000000001 2 3 4",
            b"JOB 0000000000000001 2 - 4 4",
            b"JOB 0000000000000001 2 - x -",
            b"JOB 0000000000000001 2 - 1 - 2",
            b"FREE 1",
            b"JOB 0000000000000001 +2",
            b"MEMBER 0 127.0.0.1 0",
            b"MEMBER 0 ::1 5",
            b"MEMBER -1 127.0.0.1 5",
            b"MEMBER 0 127.0.0.1 5 6",
            b"MEMBER  0 127.0.0.1 5",
            b"STATUS x",
            b"",
            b"\xff",
        ] {
            assert!(
                Request::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = vec![b'S'; MAX_SERVICE_LINE + 1];
        assert!(Request::parse(&long).is_err());
    }

    #[test]
    fn replies_round_trip() {
        for r in [
            Reply::Grant(Grant {
                trigger: 4000,
                world: 2,
                leaders: Some(3),
            }),
            Reply::Grant(Grant {
                trigger: 4000,
                world: 2,
                leaders: None,
            }),
            Reply::Refused("port 5000 is not a UDP socket of uid 65534".into()),
            Reply::Status(Status {
                jobs: 1,
                comms_used: 1,
                comms_max: 64,
                ports_used: 3,
                ports_max: 1024,
            }),
            Reply::Counters(vec![("folded".into(), 7), ("wrong_source".into(), 0)]),
            Reply::Counters(Vec::new()),
            Reply::Free(0),
            Reply::Free(u64::MAX),
            Reply::Free(0x8000_0000_0000_0001),
        ] {
            assert_eq!(Reply::parse(r.format().as_bytes()).ok(), Some(r));
        }
        for bad in [
            &b"GRANT 0 1 -"[..],
            b"GRANT 5 1 1",
            b"GRANT 5 1",
            b"STATUS 1 2 3 4",
            b"COUNTERS folded",
            b"COUNTERS Folded=1",
            b"COUNTERS folded=-1",
            b"REFUSED a\x01b",
            b"FREE",
            b"FREE 1",
            b"FREE 0000000000000000 1",
            b"FREE +000000000000001",
        ] {
            assert!(
                Reply::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_lowest_free_communicators_are_picked() {
        let c = |world, leaders| Some(Comms { world, leaders });
        assert_eq!(Comms::lowest_free(0b1011_0000, false), c(4, None));
        assert_eq!(Comms::lowest_free(0b1011_0000, true), c(4, Some(5)));
        assert_eq!(Comms::lowest_free(1 << 63, false), c(63, None));
        assert_eq!(Comms::lowest_free(1 << 63, true), None);
        assert_eq!(Comms::lowest_free(0, false), None);
        assert_eq!(Comms::lowest_free(u64::MAX, true), c(0, Some(1)));
    }

    #[test]
    fn grant_lines_tell_the_ranks() {
        let g = Grant {
            trigger: 4000,
            world: 5,
            leaders: None,
        };
        let text: String = g.lines().iter().map(Line::format).collect();
        assert_eq!(text, format!("KERNEL 4000\nKCOMMS 5 {}\n", u32::MAX));
    }

    #[test]
    fn long_lines_are_refused_by_the_reader() {
        let mut data = vec![b'x'; MAX_SERVICE_LINE + 5];
        data.push(b'\n');
        assert!(read_line(&mut std::io::Cursor::new(data)).is_err());
        let mut ok = std::io::Cursor::new(b"STATUS\nCOUNTERS\n".to_vec());
        assert_eq!(read_line(&mut ok).ok().flatten(), Some(b"STATUS".to_vec()));
        assert_eq!(
            read_line(&mut ok).ok().flatten(),
            Some(b"COUNTERS".to_vec())
        );
        assert_eq!(read_line(&mut ok).ok().flatten(), None);
    }
}
