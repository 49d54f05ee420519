//! The control channel between `boadrun` and the agent it starts on each host of a multi-host job
//! (`-H`, `--hostfile`, and the namespace hosts of `--hosts`): the launch agent's (ssh's) standard
//! input and output; and the frames of the relay that carries a host's rendezvous connections over
//! its agent's TCP connection ([`relay_frame`]).
//!
//! boadrun writes the agent an [`AgentSpec`] (text lines, ended by `GO`; `KERNEL-BY-LAUNCHER` when
//! boadrun attached the kernel path on the agent's host itself, a virtual cluster's), then, while
//! the job runs, [`SIGNAL`](ToAgent::Signal) lines and, for the kernel path, the job table
//! ([`KPEER`](ToAgent::Peer) lines ended by [`KFILL`](ToAgent::Fill), which names the trigger port
//! and the communicator ids every host fills) or [`KOFF`](ToAgent::KernelOff); closing the agent's
//! input ends the job on that host (its ranks are killed). The agent answers with [`FromAgent`]
//! lines: whether it attached the kernel path itself or its host's kernel service serves the job,
//! with the communicators the service has free (`KERNEL`, before `READY`; [`KernelOnHost`]),
//! `READY` once it has joined the rendezvous and started its ranks, whether it filled the kernel
//! path's maps or registered the job with its service (`FILLED`), every line its ranks write
//! (`OUT`/`ERR`), each rank's exit (`EXIT`, with its status and process id), the kernel counters at
//! the end (`KSTATS`), or why it could not start (`FAIL`).
//!
//! Contract: both directions are newline-framed and every decoder here is pure and bounded (line
//! length, number of lines, sizes): a line that does not parse is an error naming it, never a panic.
//! Arbitrary bytes (program, arguments, environment, working directory) travel hex-encoded; rank
//! output travels as it was written (a rank's line never contains a newline: the agent cuts it
//! there). The job's secret travels here (inside ssh's encrypted channel) and nowhere else: never on
//! a command line.

use std::io::BufRead;
use std::net::SocketAddr;

use crate::lines::{Line, PeerEntry};
use crate::service::Comms;

/// Version of this protocol: an agent speaking another refuses to start.
pub const PROTOCOL: u32 = 4;
/// The boad version both sides must run.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Longest control line accepted (an argument or variable of up to 64 KiB, hex-encoded).
pub const MAX_LINE: usize = 2 * (64 << 10) + 64;
/// Most lines a spec may have (arguments, variables and ranks together).
const MAX_SPEC_LINES: usize = 100_000;
/// Longest interface name (`IFNAMSIZ` - 1).
pub const MAX_IFNAME: usize = 15;
/// Most counters a `KSTATS` line may carry.
pub const MAX_STATS: usize = 32;
/// Longest counter name of a `KSTATS` line.
const MAX_STAT_NAME: usize = 32;

/// A control line that cannot be accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    /// The line is not one this side understands.
    #[error("malformed control line {line:?}: {why}")]
    Malformed {
        /// The line (cut to 80 bytes).
        line: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The other side runs another boad.
    #[error("boadrun {theirs} (control protocol {their_protocol}) started an agent that runs boad {ours} (protocol {PROTOCOL}): install the same boad on every host, or point --agent-path at it")]
    Version {
        /// The launcher's boad version.
        theirs: String,
        /// Its protocol version.
        their_protocol: u32,
        /// Ours.
        ours: &'static str,
    },
    /// The spec ended early or is incomplete.
    #[error("incomplete job description: {0}")]
    Incomplete(&'static str),
    /// Reading failed.
    #[error("reading the job description: {0}")]
    Io(String),
}

fn malformed(line: &[u8], why: &'static str) -> ControlError {
    let cut = &line[..line.len().min(80)];
    ControlError::Malformed {
        line: String::from_utf8_lossy(cut).into_owned(),
        why,
    }
}

/// Hex encoding of arbitrary bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Decodes [`hex`]; None if `text` is not lower- or upper-case hex of even length.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    b.chunks_exact(2)
        .map(|p| Some((digit(p[0])? * 16 + digit(p[1])?) as u8))
        .collect()
}

/// A number written in decimal digits only (no sign, no spaces), if it fits `T`.
fn digits<T: std::str::FromStr>(w: &str) -> Option<T> {
    (!w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()))
        .then(|| w.parse().ok())
        .flatten()
}

/// Where the agent finds the rendezvous.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RendezvousAt {
    /// This address.
    Addr(SocketAddr),
    /// This port on the address the agent's ssh connection came from (`SSH_CONNECTION`): used when
    /// boadrun could not resolve the host's name itself (an ssh alias).
    SshClient(u16),
}

/// What one agent is to run: its host's ranks of the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSpec {
    /// The rendezvous.
    pub rendezvous: RendezvousAt,
    /// The job's secret, hex (proves the agent to the rendezvous).
    pub secret: String,
    /// The host's id in the job.
    pub host_id: usize,
    /// Ranks in the job.
    pub size: usize,
    /// The host's ranks, in increasing order (local rank = position).
    pub ranks: Vec<usize>,
    /// The program as the user wrote it.
    pub program: Vec<u8>,
    /// Its arguments.
    pub args: Vec<Vec<u8>>,
    /// Variables for the ranks (boad's and the user's `-x`).
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    /// Working directory to try (else the agent's own).
    pub cwd: Option<Vec<u8>>,
    /// `KERNEL-BY-LAUNCHER`: boadrun itself attached the kernel path on this host (a host of a
    /// virtual cluster, on boadrun's own machine), so the agent does not.
    pub kernel_by_launcher: bool,
}

impl AgentSpec {
    /// The spec as control lines, ended by `GO`.
    pub fn encode(&self) -> String {
        let mut s = format!("BOAD-AGENT {PROTOCOL} {VERSION}\n");
        match &self.rendezvous {
            RendezvousAt::Addr(a) => s += &format!("RENDEZVOUS {a}\n"),
            RendezvousAt::SshClient(p) => s += &format!("RENDEZVOUS ssh-client:{p}\n"),
        }
        s += &format!("SECRET {}\n", self.secret);
        s += &format!("HOST {} {}\n", self.host_id, self.size);
        for r in &self.ranks {
            s += &format!("RANK {r}\n");
        }
        s += &format!("PROGRAM {}\n", hex(&self.program));
        for a in &self.args {
            s += &format!("ARG {}\n", hex(a));
        }
        for (k, v) in &self.env {
            s += &format!("ENV {} {}\n", hex(k), hex(v));
        }
        if let Some(d) = &self.cwd {
            s += &format!("CWD {}\n", hex(d));
        }
        if self.kernel_by_launcher {
            s += "KERNEL-BY-LAUNCHER\n";
        }
        s += "GO\n";
        s
    }

    /// Reads a spec up to its `GO` line: checks the version first, then every line.
    pub fn read(input: &mut impl BufRead) -> Result<AgentSpec, ControlError> {
        let mut rendezvous = None;
        let mut secret = None;
        let mut host = None;
        let mut ranks = Vec::new();
        let mut program = None;
        let mut args = Vec::new();
        let mut env = Vec::new();
        let mut cwd = None;
        let mut kernel_by_launcher = false;
        let mut first = true;
        for _ in 0..MAX_SPEC_LINES {
            let Some(line) = read_line(input)? else {
                return Err(ControlError::Incomplete("the input ended before GO"));
            };
            let text = std::str::from_utf8(&line).map_err(|_| malformed(&line, "not UTF-8"))?;
            let mut words = text.split(' ');
            let key = words.next().unwrap_or("");
            let rest: Vec<&str> = words.collect();
            if first {
                first = false;
                let [proto, version] = rest[..] else {
                    return Err(malformed(&line, "expected BOAD-AGENT PROTOCOL VERSION"));
                };
                if key != "BOAD-AGENT" {
                    return Err(malformed(&line, "expected BOAD-AGENT PROTOCOL VERSION"));
                }
                let their_protocol = proto
                    .parse()
                    .map_err(|_| malformed(&line, "bad protocol number"))?;
                if their_protocol != PROTOCOL || version != VERSION {
                    return Err(ControlError::Version {
                        theirs: version.chars().take(40).collect(),
                        their_protocol,
                        ours: VERSION,
                    });
                }
                continue;
            }
            let num = |s: &str| {
                s.parse::<usize>()
                    .map_err(|_| malformed(&line, "bad number"))
            };
            let bytes = |s: &str| unhex(s).ok_or_else(|| malformed(&line, "bad hex"));
            match (key, &rest[..]) {
                ("RENDEZVOUS", [a]) => {
                    rendezvous = Some(match a.strip_prefix("ssh-client:") {
                        Some(p) => RendezvousAt::SshClient(
                            p.parse().map_err(|_| malformed(&line, "bad port"))?,
                        ),
                        None => RendezvousAt::Addr(
                            a.parse().map_err(|_| malformed(&line, "bad address"))?,
                        ),
                    })
                }
                ("SECRET", [s]) => secret = Some((*s).to_string()),
                ("HOST", [id, size]) => host = Some((num(id)?, num(size)?)),
                ("RANK", [r]) => ranks.push(num(r)?),
                ("PROGRAM", [p]) => program = Some(bytes(p)?),
                ("ARG", [a]) => args.push(bytes(a)?),
                ("ENV", [k, v]) => {
                    let k = bytes(k)?;
                    if k.is_empty() || k.contains(&b'=') || k.contains(&0) {
                        return Err(malformed(&line, "bad variable name"));
                    }
                    env.push((k, bytes(v)?));
                }
                ("CWD", [d]) => cwd = Some(bytes(d)?),
                ("KERNEL-BY-LAUNCHER", []) => kernel_by_launcher = true,
                ("GO", []) => {
                    let (host_id, size) = host.ok_or(ControlError::Incomplete("no HOST"))?;
                    let spec = AgentSpec {
                        rendezvous: rendezvous.ok_or(ControlError::Incomplete("no RENDEZVOUS"))?,
                        secret: secret.ok_or(ControlError::Incomplete("no SECRET"))?,
                        host_id,
                        size,
                        ranks,
                        program: program.ok_or(ControlError::Incomplete("no PROGRAM"))?,
                        args,
                        env,
                        cwd,
                        kernel_by_launcher,
                    };
                    if spec.ranks.is_empty() {
                        return Err(ControlError::Incomplete("no RANK"));
                    }
                    if !spec.ranks.windows(2).all(|w| w[0] < w[1])
                        || spec.ranks.iter().any(|&r| r >= size)
                    {
                        return Err(ControlError::Incomplete(
                            "ranks must increase and be below the job's size",
                        ));
                    }
                    return Ok(spec);
                }
                _ => return Err(malformed(&line, "unknown key or wrong number of fields")),
            }
        }
        Err(ControlError::Incomplete("too many lines"))
    }
}

/// Reads one line (without its newline) of at most [`MAX_LINE`] bytes; None at the end of input.
pub fn read_line(input: &mut impl BufRead) -> Result<Option<Vec<u8>>, ControlError> {
    let mut line = Vec::new();
    let n = std::io::Read::take(&mut *input, MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| ControlError::Io(e.to_string()))?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() > MAX_LINE {
        return Err(malformed(&line, "line too long"));
    }
    Ok(Some(line))
}

/// What boadrun tells a running agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToAgent {
    /// Send this signal to every rank of the host (their process groups).
    Signal(i32),
    /// `KPEER <entry>`: one rank of the job table, as the rendezvous table has it (the kernel
    /// path's maps need every rank's address and port); a [`Fill`](ToAgent::Fill) ends them.
    Peer(PeerEntry),
    /// `KFILL <job> <trigger> <world> <leaders|->`: fill the kernel path's maps for job key `job`
    /// (hex) from the `KPEER` lines since the last `KFILL`, with `trigger` as the broadcast trigger
    /// port (bound by the agent, or by its host's kernel service, and kept) and `comms` as the
    /// communicator ids of the job's ranks and, when the job uses one, of its host leaders (the same
    /// on every host); the agent answers [`FromAgent::Filled`].
    Fill {
        /// The job key.
        job: u64,
        /// The trigger port candidate (not 0).
        trigger: u16,
        /// The communicator ids (`leaders` not `world`).
        comms: Comms,
    },
    /// `KOFF`: the job does not use the kernel path: detach it.
    KernelOff,
}

impl ToAgent {
    /// The line, with its newline.
    pub fn encode(&self) -> String {
        match self {
            ToAgent::Signal(s) => format!("SIGNAL {s}\n"),
            ToAgent::Peer(e) => format!("KPEER {}", Line::Entry(e.clone()).format()),
            ToAgent::Fill {
                job,
                trigger,
                comms,
            } => format!(
                "KFILL {job:016x} {trigger} {} {}\n",
                comms.world,
                comms
                    .leaders
                    .map_or_else(|| "-".to_string(), |l| l.to_string())
            ),
            ToAgent::KernelOff => "KOFF\n".into(),
        }
    }

    /// Parses a line (without newline).
    pub fn parse(line: &[u8]) -> Result<ToAgent, ControlError> {
        let text = std::str::from_utf8(line).map_err(|_| malformed(line, "not UTF-8"))?;
        if let Some(entry) = text.strip_prefix("KPEER ") {
            // Only an entry: a table line of another kind (or a number that is no rank) is refused.
            return match Line::parse(entry) {
                Some(Line::Entry(e)) if !entry.ends_with(['\n', '\r']) => Ok(ToAgent::Peer(e)),
                _ => Err(malformed(line, "bad table entry")),
            };
        }
        match text.split(' ').collect::<Vec<_>>()[..] {
            ["SIGNAL", s] => match s.parse::<i32>() {
                Ok(s) if (1..=64).contains(&s) => Ok(ToAgent::Signal(s)),
                _ => Err(malformed(line, "bad signal number")),
            },
            ["KFILL", job, trigger, world, leaders] => {
                let job = (job.len() == 16)
                    .then(|| u64::from_str_radix(job, 16).ok())
                    .flatten()
                    .ok_or_else(|| malformed(line, "bad job key"))?;
                let trigger = match digits::<u16>(trigger) {
                    Some(trigger) if trigger != 0 => trigger,
                    _ => return Err(malformed(line, "bad trigger port")),
                };
                let world =
                    digits::<u32>(world).ok_or_else(|| malformed(line, "bad communicator id"))?;
                let leaders = match leaders {
                    "-" => None,
                    l => match digits::<u32>(l) {
                        Some(l) if l != world => Some(l),
                        _ => return Err(malformed(line, "bad leaders' communicator id")),
                    },
                };
                Ok(ToAgent::Fill {
                    job,
                    trigger,
                    comms: Comms { world, leaders },
                })
            }
            ["KOFF"] => Ok(ToAgent::KernelOff),
            _ => Err(malformed(line, "unknown key")),
        }
    }
}

/// An agent's answer to [`ToAgent::Fill`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filled {
    /// `FILLED ok`: the maps are filled and the trigger port is bound (by the agent, or by the
    /// host's kernel service, which holds the job's registration until `KOFF` or the job's end).
    Ok,
    /// `FILLED busy`: the trigger port is taken on this host (boadrun tries another).
    PortBusy,
    /// `FILLED no REASON`: the kernel path cannot serve this job here.
    No(String),
}

/// What an agent says about the kernel path on its host (`KERNEL`, before `READY`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelOnHost {
    /// `KERNEL ok IFNAME`: the agent loaded and attached the programs itself (to `lo` and to
    /// interface IFNAME, the one towards the other hosts).
    Attached(String),
    /// `KERNEL service MASK`: the host's kernel service (`boadd`) serves the job; MASK (16 hex
    /// digits) are the communicators it has free (bit `i` set: id `i`, as its `FREE` says).
    Service(u64),
    /// `KERNEL no REASON`: neither.
    No(String),
}

/// Whether `name` is an interface name an agent may report.
fn ifname_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// Whether `name` is a counter name a `KSTATS` line may carry.
fn stat_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_STAT_NAME
        && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// What an agent tells boadrun.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FromAgent {
    /// Joined the rendezvous and started every rank.
    Ready,
    /// A line a rank wrote to stdout (`err`: stderr), without its newline.
    Output {
        /// The rank.
        rank: usize,
        /// Written to stderr.
        err: bool,
        /// The line.
        line: Vec<u8>,
    },
    /// A rank exited.
    Exit {
        /// The rank.
        rank: usize,
        /// Its status, or 128 + signal.
        code: i32,
        /// Its process id on the agent's host.
        pid: u32,
        /// How it ended, in words ("exited with status 3").
        how: String,
    },
    /// The agent cannot run the job on its host.
    Fail(String),
    /// `KERNEL ok IFNAME` / `KERNEL service MASK` / `KERNEL no REASON`: whether the agent attached
    /// the kernel path itself, found its host's kernel service, or neither ([`KernelOnHost`]), said
    /// before `READY` when the job's transport wants the kernel path.
    Kernel(KernelOnHost),
    /// The answer to [`ToAgent::Fill`].
    Filled(Filled),
    /// `KSTATS NAME=VALUE...`: the kernel path's counters on this host, at the end of the job
    /// (at most [`MAX_STATS`], names of lower-case letters and `_`).
    Stats(Vec<(String, u64)>),
}

impl FromAgent {
    /// The line, with its newline.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = match self {
            FromAgent::Ready => b"READY".to_vec(),
            FromAgent::Output { rank, err, line } => {
                let mut v = format!("{} {rank} ", if *err { "ERR" } else { "OUT" }).into_bytes();
                v.extend(line.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
                v
            }
            FromAgent::Exit {
                rank,
                code,
                pid,
                how,
            } => format!("EXIT {rank} {code} {pid} {}", how.replace('\n', " ")).into_bytes(),
            FromAgent::Fail(why) => format!("FAIL {}", why.replace('\n', " ")).into_bytes(),
            FromAgent::Kernel(KernelOnHost::Attached(iface)) => {
                format!("KERNEL ok {iface}").into_bytes()
            }
            FromAgent::Kernel(KernelOnHost::Service(mask)) => {
                format!("KERNEL service {mask:016x}").into_bytes()
            }
            FromAgent::Kernel(KernelOnHost::No(why)) => {
                format!("KERNEL no {}", why.replace('\n', " ")).into_bytes()
            }
            FromAgent::Filled(Filled::Ok) => b"FILLED ok".to_vec(),
            FromAgent::Filled(Filled::PortBusy) => b"FILLED busy".to_vec(),
            FromAgent::Filled(Filled::No(why)) => {
                format!("FILLED no {}", why.replace('\n', " ")).into_bytes()
            }
            FromAgent::Stats(pairs) => {
                let mut s = String::from("KSTATS");
                for (k, v) in pairs {
                    s += &format!(" {k}={v}");
                }
                s.into_bytes()
            }
        };
        v.push(b'\n');
        v
    }

    /// Parses a line (without newline).
    pub fn parse(line: &[u8]) -> Result<FromAgent, ControlError> {
        let (key, rest) = match line.iter().position(|&b| b == b' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &[][..]),
        };
        let split = |rest: &[u8]| -> Option<(usize, Vec<u8>)> {
            let i = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
            let rank = std::str::from_utf8(&rest[..i]).ok()?.parse().ok()?;
            Some((rank, rest.get(i + 1..).unwrap_or_default().to_vec()))
        };
        match key {
            b"READY" if rest.is_empty() => Ok(FromAgent::Ready),
            b"OUT" | b"ERR" => {
                let (rank, line) = split(rest).ok_or_else(|| malformed(line, "bad rank"))?;
                Ok(FromAgent::Output {
                    rank,
                    err: key == b"ERR",
                    line,
                })
            }
            b"EXIT" => {
                let (rank, more) = split(rest).ok_or_else(|| malformed(line, "bad rank"))?;
                let text = String::from_utf8_lossy(&more);
                let (code, more) = text.split_once(' ').unwrap_or((&text, ""));
                let code = code
                    .parse::<i32>()
                    .map_err(|_| malformed(line, "bad exit code"))?;
                let (pid, how) = more.split_once(' ').unwrap_or((more, ""));
                let pid = pid
                    .parse::<u32>()
                    .map_err(|_| malformed(line, "bad process id"))?;
                Ok(FromAgent::Exit {
                    rank,
                    code,
                    pid,
                    how: how.to_string(),
                })
            }
            b"FAIL" => Ok(FromAgent::Fail(String::from_utf8_lossy(rest).into_owned())),
            b"KERNEL" => {
                if let Some(iface) = rest.strip_prefix(b"ok ") {
                    match std::str::from_utf8(iface) {
                        Ok(name) if ifname_ok(name) => {
                            Ok(FromAgent::Kernel(KernelOnHost::Attached(name.to_string())))
                        }
                        _ => Err(malformed(line, "bad interface name")),
                    }
                } else if let Some(mask) = rest.strip_prefix(b"service ") {
                    std::str::from_utf8(mask)
                        .ok()
                        .filter(|m| m.len() == 16 && m.bytes().all(|b| b.is_ascii_hexdigit()))
                        .and_then(|m| u64::from_str_radix(m, 16).ok())
                        .map(|m| FromAgent::Kernel(KernelOnHost::Service(m)))
                        .ok_or_else(|| malformed(line, "bad communicator mask"))
                } else if let Some(why) = rest.strip_prefix(b"no ") {
                    Ok(FromAgent::Kernel(KernelOnHost::No(
                        String::from_utf8_lossy(why).into_owned(),
                    )))
                } else {
                    Err(malformed(
                        line,
                        "expected KERNEL ok IFNAME, KERNEL service MASK or KERNEL no REASON",
                    ))
                }
            }
            b"FILLED" => match rest {
                b"ok" => Ok(FromAgent::Filled(Filled::Ok)),
                b"busy" => Ok(FromAgent::Filled(Filled::PortBusy)),
                _ => match rest.strip_prefix(b"no ") {
                    Some(why) => Ok(FromAgent::Filled(Filled::No(
                        String::from_utf8_lossy(why).into_owned(),
                    ))),
                    None => Err(malformed(line, "expected FILLED ok, busy or no REASON")),
                },
            },
            b"KSTATS" => {
                let text = std::str::from_utf8(rest).map_err(|_| malformed(line, "not UTF-8"))?;
                let mut pairs: Vec<(String, u64)> = Vec::new();
                for word in text.split(' ').filter(|_| !rest.is_empty()) {
                    let (k, v) = word
                        .split_once('=')
                        .ok_or_else(|| malformed(line, "expected NAME=VALUE"))?;
                    let v = v
                        .parse::<u64>()
                        .map_err(|_| malformed(line, "bad counter value"))?;
                    if !stat_name_ok(k) || pairs.iter().any(|(n, _)| n == k) {
                        return Err(malformed(line, "bad or repeated counter name"));
                    }
                    if pairs.len() == MAX_STATS {
                        return Err(malformed(line, "too many counters"));
                    }
                    pairs.push((k.to_string(), v));
                }
                Ok(FromAgent::Stats(pairs))
            }
            _ => Err(malformed(line, "unknown key")),
        }
    }
}

/// A frame of the relay (`L RANK LINE`: a line of rank RANK's connection; `C RANK`: its end), as
/// `(kind, rank, line)`; None if malformed.
pub fn relay_frame(frame: &[u8]) -> Option<(u8, usize, &[u8])> {
    let (&kind, rest) = frame.split_first()?;
    let rest = rest.strip_prefix(b" ")?;
    let i = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    let rank = std::str::from_utf8(&rest[..i]).ok()?.parse().ok()?;
    let tail = rest.get(i + 1..).unwrap_or_default();
    match kind {
        b'L' if i < rest.len() => Some((kind, rank, tail)),
        b'C' if i == rest.len() => Some((kind, rank, tail)),
        _ => None,
    }
}

/// Fuzz entry point: arbitrary bytes as a job description, as agent lines, as boadrun's lines and
/// as relay frames. Never panics; what parses encodes back to what parses the same.
#[cfg(feature = "fuzzing")]
pub fn exercise_control(data: &[u8]) {
    if let Ok(spec) = AgentSpec::read(&mut &data[..]) {
        let again = AgentSpec::read(&mut spec.encode().as_bytes()).expect("an encoded spec parses");
        assert_eq!(again, spec);
    }
    for line in data.split(|&b| b == b'\n') {
        if let Ok(m) = FromAgent::parse(line) {
            let mut enc = m.encode();
            enc.pop();
            let back = FromAgent::parse(&enc).expect("an encoded agent line parses");
            assert_eq!(back, m);
        }
        if let Ok(m) = ToAgent::parse(line) {
            let enc = m.encode();
            assert!(enc.ends_with('\n') && !enc[..enc.len() - 1].contains('\n'));
            assert_eq!(ToAgent::parse(&enc.as_bytes()[..enc.len() - 1]), Ok(m));
        }
        let _ = relay_frame(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AgentSpec {
        AgentSpec {
            rendezvous: RendezvousAt::Addr("198.18.1.1:4242".parse().expect("addr")),
            secret: "ab".repeat(32),
            host_id: 1,
            size: 9,
            ranks: vec![3, 4, 5],
            program: b"./app with space".to_vec(),
            args: vec![b"--x=1".to_vec(), b"\n\0\xff".to_vec(), Vec::new()],
            env: vec![(b"BOAD_JOB".to_vec(), b"0123".to_vec())],
            cwd: Some(b"/home/u/run".to_vec()),
            kernel_by_launcher: false,
        }
    }

    #[test]
    fn a_spec_survives_the_wire() {
        let s = spec();
        let text = s.encode();
        let back = AgentSpec::read(&mut text.as_bytes()).expect("parses");
        assert_eq!(back, s);
        let mut ssh = spec();
        ssh.rendezvous = RendezvousAt::SshClient(4242);
        ssh.cwd = None;
        ssh.kernel_by_launcher = true;
        assert_eq!(
            AgentSpec::read(&mut ssh.encode().as_bytes()).expect("parses"),
            ssh
        );
    }

    #[test]
    fn a_bad_spec_is_refused_with_its_reason() {
        let good = spec().encode();
        let other = good.replacen(VERSION, "0.0.0-other", 1);
        assert!(matches!(
            AgentSpec::read(&mut other.as_bytes()),
            Err(ControlError::Version { .. })
        ));
        let cut = &good[..good.len() - 3];
        assert_eq!(
            AgentSpec::read(&mut cut.as_bytes()),
            Err(ControlError::Incomplete("the input ended before GO"))
        );
        for (bad, why) in [
            ("RANK x\n", "bad number"),
            ("ENV 3d 00\n", "bad variable name"),
            ("ARG 0\n", "bad hex"),
            ("FOO 1\n", "unknown key or wrong number of fields"),
        ] {
            let text = good.replacen("GO\n", &format!("{bad}GO\n"), 1);
            match AgentSpec::read(&mut text.as_bytes()) {
                Err(ControlError::Malformed { why: w, .. }) => assert_eq!(w, why, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let beyond = good.replacen("RANK 5\n", "RANK 5\nRANK 9\n", 1);
        assert!(matches!(
            AgentSpec::read(&mut beyond.as_bytes()),
            Err(ControlError::Incomplete(_))
        ));
        let long = format!("{}\n", "A".repeat(MAX_LINE + 10));
        assert!(matches!(
            AgentSpec::read(&mut long.as_bytes()),
            Err(ControlError::Malformed {
                why: "line too long",
                ..
            })
        ));
    }

    #[test]
    fn the_fuzz_seed_is_a_valid_spec() {
        // fuzz/make-seeds.py writes it; a seed that no longer parses would start the fuzzer from
        // the shallow end.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fuzz/seeds/control_lines/spec"
        );
        let seed = std::fs::read(path).expect("seed written by fuzz/make-seeds.py");
        let spec = AgentSpec::read(&mut &seed[..]).expect("the seed parses");
        assert_eq!(spec.ranks, [3, 4]);
    }

    #[cfg(feature = "fuzzing")]
    #[test]
    fn the_fuzz_seeds_pass_the_harness() {
        // Every line of the agent-lines seed parses, so the harness's round trips all run.
        for seed in ["spec", "agent-lines"] {
            let path = format!(
                "{}/../fuzz/seeds/control_lines/{seed}",
                env!("CARGO_MANIFEST_DIR")
            );
            exercise_control(&std::fs::read(path).expect("seed written by fuzz/make-seeds.py"));
        }
    }

    #[test]
    fn agent_lines_survive_the_wire() {
        for m in [
            FromAgent::Ready,
            FromAgent::Output {
                rank: 7,
                err: true,
                line: b"x y \xff".to_vec(),
            },
            FromAgent::Output {
                rank: 0,
                err: false,
                line: Vec::new(),
            },
            FromAgent::Exit {
                rank: 2,
                code: 137,
                pid: 4242,
                how: "was killed by signal SIGKILL".into(),
            },
            FromAgent::Fail("no such program".into()),
            FromAgent::Kernel(KernelOnHost::Attached("enp3s0".into())),
            FromAgent::Kernel(KernelOnHost::Service(0)),
            FromAgent::Kernel(KernelOnHost::Service(u64::MAX)),
            FromAgent::Kernel(KernelOnHost::Service(0x8000_0000_0000_0003)),
            FromAgent::Kernel(KernelOnHost::No("needs CAP_BPF (run as root)".into())),
            FromAgent::Filled(Filled::Ok),
            FromAgent::Filled(Filled::PortBusy),
            FromAgent::Filled(Filled::No("rank 3 has an IPv6 address".into())),
            FromAgent::Stats(vec![("folded".into(), 12), ("wrong_source".into(), 0)]),
            FromAgent::Stats(Vec::new()),
        ] {
            let mut line = m.encode();
            assert_eq!(line.pop(), Some(b'\n'));
            assert_eq!(FromAgent::parse(&line), Ok(m));
        }
        assert!(FromAgent::parse(b"EXIT 1 x").is_err());
        assert!(FromAgent::parse(b"EXIT 1 3 was killed").is_err());
        assert!(FromAgent::parse(b"EXIT 1 3 -5 exited").is_err());
        assert!(FromAgent::parse(b"OUT -1 x").is_err());
        assert!(FromAgent::parse(b"READY now").is_err());
        assert_eq!(
            ToAgent::parse(ToAgent::Signal(15).encode().trim_end().as_bytes()),
            Ok(ToAgent::Signal(15))
        );
        assert!(ToAgent::parse(b"SIGNAL 0").is_err());
        for bad in [
            &b"KERNEL ok"[..],
            b"KERNEL ok eth0 x",
            b"KERNEL ok a/b",
            b"KERNEL ok sixteen-letters-x",
            b"KERNEL maybe",
            b"KERNEL service",
            b"KERNEL service ",
            b"KERNEL service 3",
            b"KERNEL service 000000000000000g",
            b"KERNEL service 00000000000000001",
            b"KERNEL service +000000000000003",
            b"KERNEL service 0000000000000003 x",
            b"FILLED",
            b"FILLED nope",
            b"KSTATS folded",
            b"KSTATS folded=1 folded=2",
            b"KSTATS Folded=1",
            b"KSTATS folded=-1",
        ] {
            assert!(
                FromAgent::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let many: String = (0..=MAX_STATS)
            .map(|i| format!(" c_{}={i}", "x".repeat(i % 5)))
            .collect();
        assert!(FromAgent::parse(format!("KSTATS{many}").as_bytes()).is_err());
    }

    #[test]
    fn kernel_lines_to_the_agent_survive_the_wire() {
        let entry = PeerEntry {
            rank: 4,
            host_id: 1,
            ip: "198.18.1.3".parse().expect("ip"),
            port: 40000,
            pulse: 40001,
            pid: 77,
        };
        for m in [
            ToAgent::Peer(entry),
            ToAgent::Fill {
                job: 0x0123_4567_89ab_cdef,
                trigger: 33333,
                comms: Comms {
                    world: 0,
                    leaders: Some(1),
                },
            },
            ToAgent::Fill {
                job: 0,
                trigger: 1,
                comms: Comms {
                    world: 63,
                    leaders: None,
                },
            },
            ToAgent::Fill {
                job: u64::MAX,
                trigger: 65535,
                comms: Comms {
                    world: 5,
                    leaders: Some(2),
                },
            },
            ToAgent::KernelOff,
        ] {
            let line = m.encode();
            assert_eq!(ToAgent::parse(line.trim_end().as_bytes()), Ok(m), "{line}");
        }
        for bad in [
            &b"KPEER"[..],
            b"KPEER ",
            b"KPEER END",
            b"KPEER KERNEL 4000",
            b"KPEER 4 1 198.18.1.3 0 1 77",
            b"KPEER 4 1 198.18.1.3 40000 1",
            b"KPEER 4 1 nowhere 40000 1 77",
            b"KFILL 0123 33333 0 -",
            b"KFILL 0123456789abcdeg 33333 0 -",
            b"KFILL 0123456789abcdef 0 0 -",
            b"KFILL 0123456789abcdef 65536 0 -",
            b"KFILL 0123456789abcdef +3333 0 -",
            // Protocol 3's fill, without communicator ids.
            b"KFILL 0123456789abcdef 33333",
            b"KFILL 0123456789abcdef 33333 0",
            b"KFILL 0123456789abcdef 33333 0 0",
            b"KFILL 0123456789abcdef 33333 - 1",
            b"KFILL 0123456789abcdef 33333 x -",
            b"KFILL 0123456789abcdef 33333 +1 -",
            b"KFILL 0123456789abcdef 33333 0 -1",
            b"KFILL 0123456789abcdef 33333 4294967296 -",
            b"KFILL 0123456789abcdef 33333 0 1 2",
            b"KFILL 0123456789abcdef 33333 0  1",
            b"KOFF now",
        ] {
            assert!(
                ToAgent::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(unhex("0aFF"), Some(vec![10, 255]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }
}
