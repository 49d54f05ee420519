//! Joining a job Slurm's `srun --mpi=pmi2` started: the PMI-2 wire protocol over the socket whose
//! descriptor is in `PMI_FD`.
//!
//! Contract: [`Pmi2::connect`] takes the inherited descriptor once (a connected Unix stream socket,
//! marked close-on-exec), says `init` (PMI-1 framing, as every PMI-2 client starts), then
//! `fullinit` (whose rank and size must be the `PMI_RANK` and `PMI_SIZE` the launcher set) and
//! `job-getid`; the [`Store`] calls are `kvs-put`, `kvs-fence`, `kvs-get` and `finalize`. Every
//! reply is read within the rendezvous timeout, is at most [`MAX_MESSAGE`] bytes, must be the
//! response to the command just sent, and must carry `rc=0`; anything else is an error naming
//! Slurm and what it said, never a wrong job.
//!
//! The protocol as Slurm's `mpi/pmi2` plugin (slurmstepd, one socket pair per task) serves it:
//! - first, one line in PMI-1 form, sent in one write (the server reads it with one `read`):
//!   `cmd=init pmi_version=2 pmi_subversion=0\n`, answered by
//!   `cmd=response_to_init rc=0 pmi_version=2 pmi_subversion=0\n`;
//! - then messages both ways: a 6-byte decimal length, left-aligned and padded with spaces, then that
//!   many bytes of `key=value;` pairs, the first being `cmd=NAME` (`;;` stands for a `;` in a value).
//!   The response to `NAME` is `cmd=NAME-response;rc=N;...`.
//! - `fullinit` (`pmijobid`, `pmirank`, `threaded`) answers `rank`, `size`, `appnum`,
//!   `pmi-version`, `pmi-subversion` and, for a job another one spawned, `spawner-jobid`;
//!   `job-getid` answers `jobid`; `kvs-get` (`jobid`, `srcid`, `key`) answers `found` and `value`;
//!   `kvs-fence` returns when every task of the step has called it; after `finalize`'s response
//!   the server closes the connection.

use std::io::{Read, Write};
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::store::Store;
use super::{JobInfo, JoinError, Launcher};

/// Longest message accepted from the server (its values are at most 1024 bytes, `PMI2_MAX_VALLEN`).
pub(crate) const MAX_MESSAGE: usize = 2048;
/// Bytes of the length field before every PMI-2 message.
const LEN_FIELD: usize = 6;
/// Longest `response_to_init` line accepted.
const MAX_INIT_LINE: usize = 128;
/// Longest key, and value, boad sends (PMI-2's limits: 64 and 1024 bytes).
const MAX_KEY: usize = 64;
const MAX_VALUE: usize = 1024;
/// Longest job id accepted from the environment or the server.
const MAX_JOBID: usize = 256;

const WHO: &str = "Slurm's srun (PMI-2)";

/// A PMI-2 message: its `key=value` pairs in order, `cmd` first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Message {
    pairs: Vec<(String, String)>,
}

impl Message {
    /// The command (`cmd`).
    pub fn cmd(&self) -> &str {
        &self.pairs[0].1
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The message as sent on the wire: length field, then the pairs (`;` in a value doubled).
    pub fn encode(&self) -> Vec<u8> {
        let mut body = String::new();
        for (k, v) in &self.pairs {
            body.push_str(k);
            body.push('=');
            body.push_str(&v.replace(';', ";;"));
            body.push(';');
        }
        let mut out = format!("{:<width$}", body.len(), width = LEN_FIELD).into_bytes();
        out.extend_from_slice(body.as_bytes());
        out
    }
}

/// A key as PMI-2 writes them: letters, digits, `-` and `_`.
fn is_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= MAX_KEY
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The length field of a message: decimal digits, padded with spaces, at most [`MAX_MESSAGE`] and
/// not 0.
pub(crate) fn parse_length(field: &[u8]) -> Result<usize, String> {
    let text = std::str::from_utf8(field)
        .ok()
        .map(|t| t.trim_matches(' '))
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("a message length that is not a number: {field:?}"))?;
    // At most 6 digits: parses as usize.
    let n: usize = text
        .parse()
        .map_err(|_| format!("a message length that is not a number: {field:?}"))?;
    if n == 0 || n > MAX_MESSAGE {
        return Err(format!(
            "a message of {n} bytes (at most {MAX_MESSAGE} are accepted, and none is empty)"
        ));
    }
    Ok(n)
}

/// A message's body: printable ASCII `key=value` pairs separated (and ended) by `;`, `;;` in a
/// value standing for `;`; the first key is `cmd`, no key repeats.
pub(crate) fn parse_body(body: &[u8]) -> Result<Message, String> {
    let shown = || String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
    if body.len() > MAX_MESSAGE || !body.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        return Err(format!(
            "a message that is not printable text of at most {MAX_MESSAGE} bytes: {:?}",
            shown()
        ));
    }
    // ASCII (checked above), so this cannot fail.
    let text = std::str::from_utf8(body).map_err(|_| shown())?;
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut segment = String::new();
    let mut chars = text.chars().peekable();
    let mut segments = Vec::new();
    while let Some(c) = chars.next() {
        if c == ';' {
            if chars.peek() == Some(&';') && segment.contains('=') {
                chars.next();
                segment.push(';');
            } else {
                segments.push(std::mem::take(&mut segment));
            }
        } else {
            segment.push(c);
        }
    }
    if !segment.is_empty() {
        segments.push(segment);
    }
    for s in segments {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not key=value in {:?}", shown()))?;
        if !is_key(k) {
            return Err(format!("{k:?} is not a key, in {:?}", shown()));
        }
        if pairs.iter().any(|(seen, _)| seen == k) {
            return Err(format!("the key {k:?} twice in {:?}", shown()));
        }
        pairs.push((k.to_string(), v.to_string()));
    }
    if pairs.first().map(|(k, _)| k.as_str()) != Some("cmd") {
        return Err(format!(
            "a message that does not start with cmd=: {:?}",
            shown()
        ));
    }
    Ok(Message { pairs })
}

/// The PMI-1 form `response_to_init` line (without its newline): space-separated `key=value`.
/// Returns the server's PMI version, after checking `rc=0`.
pub(crate) fn parse_init_response(line: &[u8]) -> Result<(u32, u32), String> {
    let text = std::str::from_utf8(line)
        .ok()
        .filter(|t| t.bytes().all(|b| (0x20..0x7f).contains(&b)))
        .ok_or_else(|| format!("a reply to init that is not text: {line:?}"))?;
    let mut cmd = None;
    let (mut rc, mut version, mut subversion) = (None, None, None);
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let (k, v) = word
            .split_once('=')
            .ok_or_else(|| format!("a reply to init that is not key=value: {text:?}"))?;
        let slot = match k {
            "cmd" => {
                cmd = Some(v);
                continue;
            }
            "rc" => &mut rc,
            "pmi_version" => &mut version,
            "pmi_subversion" => &mut subversion,
            _ => continue,
        };
        *slot = Some(
            v.parse::<i64>()
                .map_err(|_| format!("{k}={v:?} in the reply to init is not a number"))?,
        );
    }
    if cmd != Some("response_to_init") {
        return Err(format!("{text:?} in reply to init"));
    }
    match rc {
        Some(0) => {}
        Some(rc) => return Err(format!("init failed with rc={rc} ({text:?})")),
        None => return Err(format!("no rc in the reply to init: {text:?}")),
    }
    match (version, subversion) {
        (Some(v), Some(s)) => Ok((
            u32::try_from(v).map_err(|_| format!("pmi_version={v}"))?,
            u32::try_from(s).map_err(|_| format!("pmi_subversion={s}"))?,
        )),
        _ => Err(format!("no PMI version in the reply to init: {text:?}")),
    }
}

/// A value boad sends: printable ASCII without `;`, at most `max` bytes.
fn check_out(what: &str, v: &str, max: usize) -> Result<(), JoinError> {
    if v.len() > max || !v.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b';') {
        return Err(JoinError::Protocol(format!(
            "{WHO}: cannot send the {what} {v:?}: at most {max} printable characters, no ';'"
        )));
    }
    Ok(())
}

/// A PMI-2 connection: sends commands and reads their responses, each within `timeout` (the whole
/// exchange, however the server spreads its bytes).
pub(crate) struct Conn {
    stream: UnixStream,
    /// How long a response may take (also a fence: every rank must reach it by then).
    timeout: Duration,
    /// `PMI_FD=N`, for messages.
    name: String,
}

impl Conn {
    /// A connection over `stream` (blocking).
    pub fn new(stream: UnixStream, timeout: Duration, name: String) -> Conn {
        Conn {
            stream,
            timeout,
            name,
        }
    }

    fn io(&self, doing: &str, e: std::io::Error) -> JoinError {
        let why = match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
                "no answer within {:?} (every rank must reach the same point of the rendezvous: \
                 did one fail or not start?)",
                self.timeout
            ),
            std::io::ErrorKind::UnexpectedEof => "the PMI server closed the connection".into(),
            _ => e.to_string(),
        };
        JoinError::Launcher {
            launcher: WHO,
            why: format!("{doing} on {}: {why}", self.name),
        }
    }

    fn bad(&self, doing: &str, why: String) -> JoinError {
        JoinError::Protocol(format!(
            "{WHO}: {doing}: the PMI server on {} sent {why}",
            self.name
        ))
    }

    /// The PMI-1 form handshake; the server must agree to PMI-2.0.
    pub fn init(&mut self) -> Result<(), JoinError> {
        let doing = "init";
        let deadline = Instant::now() + self.timeout;
        self.send(
            b"cmd=init pmi_version=2 pmi_subversion=0\n",
            deadline,
            doing,
        )?;
        // One byte at a time: nothing after the newline may be taken from the stream.
        let mut line = Vec::new();
        loop {
            let mut b = [0u8; 1];
            self.receive(&mut b, deadline, doing)?;
            if b[0] == b'\n' {
                break;
            }
            if line.len() >= MAX_INIT_LINE {
                return Err(self.bad(
                    doing,
                    format!("a reply to init longer than {MAX_INIT_LINE} bytes"),
                ));
            }
            line.push(b[0]);
        }
        match parse_init_response(&line).map_err(|w| self.bad(doing, w))? {
            (2, 0) => Ok(()),
            (v, s) => Err(JoinError::Launcher {
                launcher: WHO,
                why: format!(
                    "its PMI server speaks PMI-{v}.{s} to this step, not PMI-2.0 (did another \
                     task of the step start with PMI-1?)"
                ),
            }),
        }
    }

    /// Sends `cmd` with `args` and returns the response, checked to be `cmd-response` with `rc=0`.
    pub fn call(&mut self, cmd: &str, args: &[(&str, &str)]) -> Result<Message, JoinError> {
        let mut pairs = vec![("cmd".to_string(), cmd.to_string())];
        pairs.extend(args.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let out = Message { pairs }.encode();
        let deadline = Instant::now() + self.timeout;
        self.send(&out, deadline, cmd)?;
        let reply = self.read_message(cmd, deadline)?;
        check_reply(cmd, &reply).map_err(|why| match why {
            Reply::Malformed(w) => self.bad(cmd, w),
            Reply::Failed(w) => JoinError::Launcher {
                launcher: WHO,
                why: format!("its PMI server refused {cmd}: {w}"),
            },
        })?;
        Ok(reply)
    }

    fn read_message(&mut self, doing: &str, deadline: Instant) -> Result<Message, JoinError> {
        let mut field = [0u8; LEN_FIELD];
        self.receive(&mut field, deadline, doing)?;
        let n = parse_length(&field).map_err(|w| self.bad(doing, w))?;
        let mut body = vec![0u8; n];
        self.receive(&mut body, deadline, doing)?;
        parse_body(&body).map_err(|w| self.bad(doing, w))
    }

    /// The time left before `deadline`, as a socket timeout (an error once it has passed).
    fn left(&self, deadline: Instant, doing: &str) -> Result<Duration, JoinError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.io(doing, std::io::ErrorKind::TimedOut.into()));
        }
        Ok(left)
    }

    /// Writes all of `bytes` before `deadline`.
    fn send(&mut self, bytes: &[u8], deadline: Instant, doing: &str) -> Result<(), JoinError> {
        let left = self.left(deadline, doing)?;
        self.stream
            .set_write_timeout(Some(left))
            .and_then(|()| self.stream.write_all(bytes))
            .map_err(|e| self.io(doing, e))
    }

    /// Fills `buf` before `deadline`.
    fn receive(&mut self, buf: &mut [u8], deadline: Instant, doing: &str) -> Result<(), JoinError> {
        let mut got = 0;
        while got < buf.len() {
            let left = self.left(deadline, doing)?;
            let n = self
                .stream
                .set_read_timeout(Some(left))
                .and_then(|()| self.stream.read(&mut buf[got..]));
            match n {
                Ok(0) => return Err(self.io(doing, std::io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(doing, e)),
            }
        }
        Ok(())
    }
}

/// Why a reply is not the success of the command sent.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Not the protocol's answer to it.
    Malformed(String),
    /// The server answered with an error (`rc` not 0).
    Failed(String),
}

/// Checks that `reply` answers `cmd` with `rc=0`.
pub(crate) fn check_reply(cmd: &str, reply: &Message) -> Result<(), Reply> {
    if reply.cmd() != format!("{cmd}-response") {
        return Err(Reply::Malformed(format!(
            "cmd={} in reply to {cmd}",
            reply.cmd()
        )));
    }
    let rc: i64 = reply
        .get("rc")
        .ok_or_else(|| Reply::Malformed(format!("no rc in the reply to {cmd}")))?
        .parse()
        .map_err(|_| Reply::Malformed(format!("rc={:?}", reply.get("rc"))))?;
    if rc != 0 {
        return Err(Reply::Failed(format!(
            "rc={rc}{}",
            reply
                .get("errmsg")
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        )));
    }
    Ok(())
}

/// What `fullinit` says about this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FullInit {
    pub rank: usize,
    pub size: usize,
    pub appnum: i64,
    /// Set when another job spawned this one.
    pub spawner: Option<String>,
}

/// The fields of a successful `fullinit-response`, checked.
pub(crate) fn parse_fullinit(reply: &Message) -> Result<FullInit, String> {
    let num = |k: &str| -> Result<i64, String> {
        let v = reply
            .get(k)
            .ok_or_else(|| format!("no {k} in the reply to fullinit"))?;
        v.parse()
            .map_err(|_| format!("{k}={v:?} in the reply to fullinit"))
    };
    let version = (num("pmi-version")?, num("pmi-subversion")?);
    if version != (2, 0) {
        return Err(format!(
            "PMI version {}.{} in the reply to fullinit",
            version.0, version.1
        ));
    }
    let rank = usize::try_from(num("rank")?).map_err(|_| "a negative rank".to_string())?;
    let size = usize::try_from(num("size")?).map_err(|_| "a negative size".to_string())?;
    if size == 0 || rank >= size {
        return Err(format!("rank {rank} of {size}"));
    }
    let appnum = match reply.get("appnum") {
        None => -1,
        Some(_) => num("appnum")?,
    };
    let spawner = reply.get("spawner-jobid").map(str::to_string);
    if let Some(s) = spawner.as_ref().filter(|s| !is_jobid(s)) {
        return Err(format!("spawner-jobid={s:?} in the reply to fullinit"));
    }
    Ok(FullInit {
        rank,
        size,
        appnum,
        spawner,
    })
}

/// A PMI job id (Slurm's is `JOBID.STEPID`): 1 to [`MAX_JOBID`] printable characters, none of
/// them a space, `;` or `=`.
fn is_jobid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_JOBID
        && id
            .bytes()
            .all(|b| (0x21..0x7f).contains(&b) && b != b';' && b != b'=')
}

/// Slurm's key-value space for this step, through the PMI-2 server of this node's slurmstepd.
pub(crate) struct Pmi2 {
    conn: Conn,
    /// The PMI job id (`job-getid`), which `kvs-get` names.
    jobid: String,
}

impl Pmi2 {
    /// Takes the descriptor in `PMI_FD` and introduces this rank to Slurm's PMI server: the rank
    /// and size it answers must be `info`'s (from `PMI_RANK`, `PMI_SIZE`).
    pub fn connect(info: &JobInfo, timeout: Duration) -> Result<Pmi2, JoinError> {
        let refuse = |why: String| JoinError::Launcher { launcher: WHO, why };
        let raw = std::env::var("PMI_FD").unwrap_or_default();
        let fd: RawFd = raw
            .trim()
            .parse()
            .ok()
            .filter(|&fd| fd >= 0)
            .ok_or_else(|| JoinError::BadEnv {
                name: "PMI_FD",
                value: raw.clone(),
                why: "must be a descriptor number".into(),
            })?;
        let jobid = std::env::var("PMI_JOBID").map_err(|_| JoinError::BadEnv {
            name: "PMI_JOBID",
            value: String::new(),
            why: "missing (srun --mpi=pmi2 sets it for every task, with PMI_FD)".into(),
        })?;
        if !is_jobid(&jobid) {
            return Err(JoinError::BadEnv {
                name: "PMI_JOBID",
                value: jobid,
                why: format!(
                    "not a PMI job id (1 to {MAX_JOBID} printable characters, no space, ';' or \
                     '=')"
                ),
            });
        }
        let stream = super::take_socket(fd)
            .map_err(|why| refuse(format!("PMI_FD={fd} cannot be used: {why}")))?;
        let io = |e: std::io::Error| refuse(format!("PMI_FD={fd}: {e}"));
        // Blocking, whatever it was inherited as; every read and write has a deadline.
        stream.set_nonblocking(false).map_err(io)?;
        Pmi2::over(stream, info, &jobid, timeout, format!("PMI_FD={fd}"))
    }

    /// The handshake over `stream`: `init`, `fullinit` as rank `info.rank` of job `jobid`,
    /// `job-getid`, each answered within `timeout`.
    pub fn over(
        stream: UnixStream,
        info: &JobInfo,
        jobid: &str,
        timeout: Duration,
        name: String,
    ) -> Result<Pmi2, JoinError> {
        let mut conn = Conn::new(stream, timeout, name);
        conn.init()?;
        let rank = info.rank.to_string();
        let reply = conn.call(
            "fullinit",
            &[
                ("pmijobid", jobid),
                ("pmirank", &rank),
                ("threaded", "FALSE"),
            ],
        )?;
        let full = parse_fullinit(&reply).map_err(|w| conn.bad("fullinit", w))?;
        if (full.rank, full.size) != (info.rank, info.size) {
            return Err(JoinError::Launcher {
                launcher: WHO,
                why: format!(
                    "its PMI server says this is rank {} of {}, but PMI_RANK={} and PMI_SIZE={}",
                    full.rank, full.size, info.rank, info.size
                ),
            });
        }
        let reply = conn.call("job-getid", &[])?;
        let jobid = reply
            .get("jobid")
            .filter(|j| is_jobid(j))
            .ok_or_else(|| {
                conn.bad(
                    "job-getid",
                    format!("no usable jobid: {:?}", reply.get("jobid")),
                )
            })?
            .to_string();
        Ok(Pmi2 { conn, jobid })
    }
}

impl Store for Pmi2 {
    fn launcher(&self) -> &'static str {
        Launcher::Slurm.name()
    }

    fn put(&mut self, key: &str, value: &str) -> Result<(), JoinError> {
        check_out("key", key, MAX_KEY)?;
        check_out("value", value, MAX_VALUE)?;
        self.conn
            .call("kvs-put", &[("key", key), ("value", value)])
            .map(drop)
    }

    fn fence(&mut self) -> Result<(), JoinError> {
        self.conn.call("kvs-fence", &[]).map(drop)
    }

    fn get(&mut self, key: &str) -> Result<String, JoinError> {
        check_out("key", key, MAX_KEY)?;
        let jobid = self.jobid.clone();
        let reply = self.conn.call(
            "kvs-get",
            &[("jobid", &jobid), ("srcid", "-1"), ("key", key)],
        )?;
        match (reply.get("found"), reply.get("value")) {
            (Some(f), Some(v)) if f.eq_ignore_ascii_case("TRUE") => Ok(v.to_string()),
            (Some(f), _) if f.eq_ignore_ascii_case("FALSE") => Err(JoinError::Protocol(format!(
                "{WHO}: no rank published {key:?} before the fence"
            ))),
            (f, v) => Err(self.conn.bad(
                "kvs-get",
                format!("found={f:?} value={v:?} in reply to kvs-get of {key:?}"),
            )),
        }
    }

    fn finish(&mut self) -> Result<(), JoinError> {
        self.conn.call("finalize", &[]).map(drop)
    }
}

/// The fuzz target's harness: `data` as replies from a PMI server, read as the client reads them.
/// Never panics; what parses encodes back to itself.
#[cfg(any(feature = "fuzzing", test))]
pub(crate) fn exercise_replies(data: &[u8]) {
    let (line, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let _ = parse_init_response(line);
    let mut rest = rest;
    while rest.len() >= LEN_FIELD {
        let Ok(n) = parse_length(&rest[..LEN_FIELD]) else {
            break;
        };
        assert!(n > 0 && n <= MAX_MESSAGE);
        let body = &rest[LEN_FIELD..(LEN_FIELD + n).min(rest.len())];
        rest = &rest[LEN_FIELD + body.len()..];
        let Ok(m) = parse_body(body) else {
            continue;
        };
        let wire = m.encode();
        let again = parse_length(&wire[..LEN_FIELD])
            .ok()
            .filter(|&n| n == wire.len() - LEN_FIELD)
            .and_then(|_| parse_body(&wire[LEN_FIELD..]).ok());
        // An encoding longer than MAX_MESSAGE (doubled ';') is refused, never misread.
        if wire.len() - LEN_FIELD <= MAX_MESSAGE {
            assert_eq!(again.as_ref(), Some(&m), "{m:?} encodes to {wire:?}");
        }
        for cmd in ["job-getid", "kvs-put", "kvs-fence", "kvs-get", "finalize"] {
            let _ = check_reply(cmd, &m);
        }
        if check_reply("fullinit", &m).is_ok() {
            if let Ok(f) = parse_fullinit(&m) {
                assert!(f.rank < f.size);
            }
        }
    }
}

#[cfg(test)]
mod tests;
