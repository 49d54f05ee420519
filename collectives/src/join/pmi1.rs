//! Joining a job MPICH's `mpiexec` (Hydra) started: a PMI-1 client over the descriptor in `PMI_FD`.
//!
//! Contract: [`Pmi1::connect`] takes the descriptor named by `PMI_FD` once per process, after
//! checking that it is a connected Unix stream socket whose other end runs as this user (or root),
//! and marks it close-on-exec; then it says `init` (PMI 1.1), reads the server's maximum lengths
//! (`get_maxes`) and the job's key-value space name (`get_my_kvsname`). The [`Store`] it gives
//! puts (`put`), fences (`barrier_in` / `barrier_out`), gets (`get`) and finishes (`finalize` /
//! `finalize_ack`) in that space.
//!
//! The wire protocol is one line per request and one per reply, `cmd=NAME key=value ...`, words
//! separated by spaces. Every reply is checked before it is used: it is at most [`MAX_LINE`] bytes
//! of printable ASCII; it is the reply to the request just sent (`response_to_init`, `maxes`,
//! `my_kvsname`, `put_result`, `barrier_out`, `get_result`, `finalize_ack`); its `rc` is `0` where
//! the server sends one (required for `init`, `put` and `get`); the lengths and values it gives
//! are within bounds (a key or value boad would send must fit the server's maxima; a value read
//! back must be boad's kind of text and fit `vallen_max`). The server may stay silent at most the
//! timeout given to `connect` (`BOAD_TIMEOUT_MS`) while a rank waits for a reply, a barrier
//! included (each read of the socket; a reply is at most [`MAX_LINE`] bytes). Any failure is a
//! [`JoinError::Launcher`] naming Hydra, the request and what was wrong.
//!
//! A process whose `PMI_FD` names no PMI server (a stale variable, a descriptor that is a file, a
//! pipe, or a socket to something else) fails here, with such an error, never as a job of one rank.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::store::Store;
use super::{JobInfo, JoinError, Launcher};

/// The variable naming the descriptor of the connection to Hydra's proxy.
const ENV_PMI_FD: &str = "PMI_FD";

/// Longest reply line accepted, newline included (Hydra's values are at most 1024 bytes).
pub(crate) const MAX_LINE: usize = 4096;

/// Most `key=value` words in a reply.
const MAX_FIELDS: usize = 16;

/// Largest maximum length a server may announce (anything above is not a PMI-1 server's answer).
const MAX_MAXES: usize = 1 << 20;

/// Whether this process took `PMI_FD` already (it can be taken once).
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Why a reply cannot be used, or the connection failed (turned into a [`JoinError`] by the caller).
type Why = String;

/// One reply from the server: its command and its `key=value` words, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The value of the first word, `cmd=`.
    pub cmd: String,
    /// The other words, split at their first `=`.
    pub fields: Vec<(String, String)>,
}

impl Reply {
    /// The value of `key`, if the reply has it.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Fails unless the reply has `rc=0` (or no `rc` at all, when `required` is false), saying
    /// what the server said instead.
    fn check_rc(&self, required: bool) -> Result<(), Why> {
        match self.field("rc") {
            Some("0") => Ok(()),
            None if !required => Ok(()),
            None => Err("the reply has no rc".into()),
            Some(rc) => Err(format!(
                "the server answered rc={rc}{}",
                self.field("msg")
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            )),
        }
    }

    /// The value of `key`, which the reply must have.
    fn need(&self, key: &str) -> Result<&str, Why> {
        self.field(key)
            .ok_or_else(|| format!("the reply has no {key}="))
    }

    #[cfg(any(feature = "fuzzing", test))]
    /// The line this reply was read from, as the server wrote it (without the newline).
    pub fn format(&self) -> String {
        let mut s = format!("cmd={}", self.cmd);
        for (k, v) in &self.fields {
            s.push(' ');
            s.push_str(k);
            s.push('=');
            s.push_str(v);
        }
        s
    }
}

/// A line as it can be shown in a message: printable, at most 120 characters.
fn shown(line: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(line)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(120)
        .collect();
    if line.len() > 120 {
        format!("{text:?}...")
    } else {
        format!("{text:?}")
    }
}

/// Parses one reply line (`cmd=NAME key=value ...`, an optional trailing newline): printable ASCII,
/// at most [`MAX_LINE`] bytes and [`MAX_FIELDS`] words after `cmd=`, each `key=value` with a key of
/// `[a-z0-9_]`, a value without `=`, and no key twice.
pub(crate) fn parse_reply(line: &[u8]) -> Result<Reply, Why> {
    let bad = |why: &str| format!("{why}: {}", shown(line));
    if line.len() > MAX_LINE {
        return Err(bad("the reply is too long"));
    }
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    if !body.iter().all(|&b| b == b' ' || b.is_ascii_graphic()) {
        return Err(bad("the reply is not a line of printable ASCII"));
    }
    // Checked above: every byte is ASCII.
    let text = std::str::from_utf8(body).map_err(|_| bad("the reply is not text"))?;
    let mut words = text.split(' ').filter(|w| !w.is_empty());
    let cmd = words
        .next()
        .and_then(|w| w.strip_prefix("cmd="))
        .filter(|c| !c.is_empty() && !c.contains('='))
        .ok_or_else(|| bad("the reply does not start with cmd=NAME"))?;
    let mut fields: Vec<(String, String)> = Vec::new();
    for w in words {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| bad("a word of the reply is not key=value"))?;
        let key_ok = !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !key_ok || v.contains('=') || k == "cmd" {
            return Err(bad("a word of the reply is not key=value"));
        }
        if fields.iter().any(|(seen, _)| seen == k) {
            return Err(bad(&format!("the reply has {k}= twice")));
        }
        if fields.len() == MAX_FIELDS {
            return Err(bad("the reply has too many words"));
        }
        fields.push((k.to_string(), v.to_string()));
    }
    Ok(Reply {
        cmd: cmd.to_string(),
        fields,
    })
}

/// The server's maximum lengths (`get_maxes`), each counting a C string's terminating NUL, so a
/// key or value must be shorter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Maxes {
    /// Longest key-value space name.
    pub kvsname: usize,
    /// Longest key.
    pub key: usize,
    /// Longest value.
    pub value: usize,
}

impl Maxes {
    /// Reads a `maxes` reply: the three maxima, each a number in `1..=MAX_MAXES`.
    pub fn of(reply: &Reply) -> Result<Maxes, Why> {
        let n = |key: &str| -> Result<usize, Why> {
            let v = reply.need(key)?;
            v.parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_MAXES).contains(n))
                .ok_or_else(|| format!("{key}={v:?} is not a length from 1 to {MAX_MAXES}"))
        };
        Ok(Maxes {
            kvsname: n("kvsname_max")?,
            key: n("keylen_max")?,
            value: n("vallen_max")?,
        })
    }
}

/// Whether `s` is text boad puts in a key-value space: 1 or more of `[A-Za-z0-9._,:/-]`.
fn is_boad_text(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._,:/-".contains(&b))
}

/// Reads a `my_kvsname` reply: a name shorter than the server's maximum.
pub(crate) fn kvsname_of(reply: &Reply, maxes: &Maxes) -> Result<String, Why> {
    let name = reply.need("kvsname")?;
    if name.is_empty() || name.len() >= maxes.kvsname {
        return Err(format!(
            "kvsname={name:?} is not a name shorter than kvsname_max={}",
            maxes.kvsname
        ));
    }
    Ok(name.to_string())
}

/// Reads a `get_result` reply for `key`: `rc=0` and a value of boad's kind, shorter than the
/// server's maximum.
pub(crate) fn value_of(reply: &Reply, maxes: &Maxes) -> Result<String, Why> {
    reply.check_rc(true)?;
    let value = reply.need("value")?;
    if value.len() >= maxes.value || !is_boad_text(value) {
        return Err(format!(
            "value={} is not a value boad puts",
            shown(value.as_bytes())
        ));
    }
    Ok(value.to_string())
}

/// A PMI-1 conversation over `S`: one request, one reply.
pub(crate) struct Client<S: Read + Write> {
    conn: BufReader<S>,
    /// How long the server may take to reply (for messages; the stream enforces it).
    timeout: Duration,
    maxes: Maxes,
    kvsname: String,
    finished: bool,
}

impl<S: Read + Write> Client<S> {
    /// Sends `request` (one line, newline included) and reads the reply, which must be `expect`.
    fn call(
        conn: &mut BufReader<S>,
        timeout: Duration,
        request: &str,
        expect: &str,
    ) -> Result<Reply, Why> {
        let name = request.split_whitespace().next().unwrap_or(request);
        let io = |what: &str, e: std::io::Error| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
                "no reply to {name} within {timeout:?} (BOAD_TIMEOUT_MS): is the descriptor in \
                 {ENV_PMI_FD} a PMI server's, and did every rank start?"
            ),
            _ => format!("cannot {what} {name}: {e}"),
        };
        conn.get_mut()
            .write_all(request.as_bytes())
            .and_then(|()| conn.get_mut().flush())
            .map_err(|e| io("send", e))?;
        let mut line = Vec::new();
        // One byte more than a line may have: a longer reply is refused, never buffered whole.
        (&mut *conn)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| io("read the reply to", e))?;
        if line.len() > MAX_LINE {
            return Err(format!(
                "the reply to {name} is longer than {MAX_LINE} bytes: {}",
                shown(&line)
            ));
        }
        if !line.ends_with(b"\n") {
            return Err(if line.is_empty() {
                format!("the server closed the connection instead of replying to {name}")
            } else {
                format!(
                    "the server closed the connection in the middle of its reply to {name}: {}",
                    shown(&line)
                )
            });
        }
        let reply = parse_reply(&line).map_err(|why| format!("reply to {name}: {why}"))?;
        if reply.cmd != expect {
            return Err(format!(
                "expected cmd={expect} in reply to {name}, got {}",
                shown(&line)
            ));
        }
        Ok(reply)
    }

    /// Starts the conversation on `conn` (a stream whose reads give up after `timeout`): `init`,
    /// `get_maxes`, `get_my_kvsname`.
    pub fn start(conn: S, timeout: Duration) -> Result<Client<S>, Why> {
        let mut conn = BufReader::with_capacity(MAX_LINE, conn);
        let init = Self::call(
            &mut conn,
            timeout,
            "cmd=init pmi_version=1 pmi_subversion=1\n",
            "response_to_init",
        )?;
        init.check_rc(true)
            .map_err(|why| format!("init (PMI version 1.1) refused: {why}"))?;
        if let Some(v) = init.field("pmi_version").filter(|&v| v != "1") {
            return Err(format!("init: the server speaks PMI version {v}, not 1"));
        }
        let maxes = Self::call(&mut conn, timeout, "cmd=get_maxes\n", "maxes")?;
        maxes
            .check_rc(false)
            .map_err(|why| format!("get_maxes: {why}"))?;
        let maxes = Maxes::of(&maxes).map_err(|why| format!("get_maxes: {why}"))?;
        let name = Self::call(&mut conn, timeout, "cmd=get_my_kvsname\n", "my_kvsname")?;
        name.check_rc(false)
            .map_err(|why| format!("get_my_kvsname: {why}"))?;
        let kvsname = kvsname_of(&name, &maxes).map_err(|why| format!("get_my_kvsname: {why}"))?;
        Ok(Client {
            conn,
            timeout,
            maxes,
            kvsname,
            finished: false,
        })
    }

    /// Checks that `key` (and `value`) are boad's kind of text, short enough for the server.
    fn check_args(&self, key: &str, value: Option<&str>) -> Result<(), Why> {
        if !is_boad_text(key) || key.len() >= self.maxes.key {
            return Err(format!(
                "the key {key:?} cannot be sent (keylen_max={})",
                self.maxes.key
            ));
        }
        if let Some(v) = value {
            if !is_boad_text(v) || v.len() >= self.maxes.value {
                return Err(format!(
                    "the value {v:?} of {key} cannot be sent (vallen_max={})",
                    self.maxes.value
                ));
            }
        }
        if self.finished {
            return Err("the conversation was finalized".into());
        }
        Ok(())
    }

    /// `put`: publishes `key` = `value`.
    pub fn put(&mut self, key: &str, value: &str) -> Result<(), Why> {
        self.check_args(key, Some(value))?;
        let request = format!("cmd=put kvsname={} key={key} value={value}\n", self.kvsname);
        Self::call(&mut self.conn, self.timeout, &request, "put_result")?
            .check_rc(true)
            .map_err(|why| format!("put of {key}: {why}"))
    }

    /// `barrier_in`: returns when every rank has entered the barrier.
    pub fn barrier(&mut self) -> Result<(), Why> {
        if self.finished {
            return Err("the conversation was finalized".into());
        }
        Self::call(
            &mut self.conn,
            self.timeout,
            "cmd=barrier_in\n",
            "barrier_out",
        )?
        .check_rc(false)
        .map_err(|why| format!("barrier: {why}"))
    }

    /// `get`: the value of `key`.
    pub fn get(&mut self, key: &str) -> Result<String, Why> {
        self.check_args(key, None)?;
        let request = format!("cmd=get kvsname={} key={key}\n", self.kvsname);
        let reply = Self::call(&mut self.conn, self.timeout, &request, "get_result")?;
        value_of(&reply, &self.maxes).map_err(|why| format!("get of {key}: {why}"))
    }

    /// `finalize`: ends the conversation.
    pub fn finalize(&mut self) -> Result<(), Why> {
        if self.finished {
            return Ok(());
        }
        Self::call(
            &mut self.conn,
            self.timeout,
            "cmd=finalize\n",
            "finalize_ack",
        )?
        .check_rc(false)
        .map_err(|why| format!("finalize: {why}"))?;
        self.finished = true;
        Ok(())
    }
}

/// An error naming Hydra and what failed.
fn hydra(why: impl Into<String>) -> JoinError {
    JoinError::Launcher {
        launcher: Launcher::Hydra.name(),
        why: why.into(),
    }
}

/// Takes `fd` (checked by [`super::check_socket`]) as this process's connection to Hydra: once per
/// process, close-on-exec from then on.
fn take_descriptor(fd: RawFd) -> Result<UnixStream, Why> {
    super::take_socket_once(fd, &TAKEN)
}

/// The job's key-value space, through Hydra's PMI-1 server.
pub(crate) struct Pmi1 {
    client: Client<UnixStream>,
}

impl Pmi1 {
    /// Takes the connection in `PMI_FD` and starts the PMI-1 conversation (see the module docs);
    /// each reply may take up to `timeout`.
    pub fn connect(_info: &JobInfo, timeout: Duration) -> Result<Pmi1, JoinError> {
        let text = std::env::var(ENV_PMI_FD).unwrap_or_default();
        let fd: RawFd = text.trim().parse().unwrap_or(-1);
        let stream = take_descriptor(fd)
            .map_err(|why| hydra(format!("{ENV_PMI_FD}={text:?} cannot be used: {why}")))?;
        let timeouts = stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)));
        timeouts.map_err(|e| hydra(format!("{ENV_PMI_FD}={fd}: cannot set timeouts: {e}")))?;
        let client = Client::start(stream, timeout)
            .map_err(|why| hydra(format!("PMI-1 over {ENV_PMI_FD}={fd}: {why}")))?;
        Ok(Pmi1 { client })
    }
}

impl Store for Pmi1 {
    fn launcher(&self) -> &'static str {
        Launcher::Hydra.name()
    }
    fn put(&mut self, key: &str, value: &str) -> Result<(), JoinError> {
        self.client
            .put(key, value)
            .map_err(|w| hydra(format!("PMI-1: {w}")))
    }
    fn fence(&mut self) -> Result<(), JoinError> {
        self.client
            .barrier()
            .map_err(|w| hydra(format!("PMI-1: {w}")))
    }
    fn get(&mut self, key: &str) -> Result<String, JoinError> {
        self.client
            .get(key)
            .map_err(|w| hydra(format!("PMI-1: {w}")))
    }
    fn finish(&mut self) -> Result<(), JoinError> {
        self.client
            .finalize()
            .map_err(|w| hydra(format!("PMI-1: {w}")))
    }
}

#[cfg(any(feature = "fuzzing", test))]
/// A stream for the fuzz harness: reads give `input`, writes are kept.
struct Scripted<'a> {
    input: &'a [u8],
    sent: Vec<u8>,
}

#[cfg(any(feature = "fuzzing", test))]
impl Read for Scripted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

#[cfg(any(feature = "fuzzing", test))]
impl Write for Scripted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sent.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(any(feature = "fuzzing", test))]
/// The fuzz harness: `data`'s lines are parsed as replies (a parsed one must format back to its
/// line), then fed as the server's replies to a whole conversation (init, maxes, kvsname, put,
/// barrier, get, finalize), which must end, succeed or fail, without panicking; every request it
/// sent must be one protocol line of boad's text. Returns how many steps succeeded.
pub(crate) fn exercise(data: &[u8]) -> usize {
    for line in data.split_inclusive(|&b| b == b'\n') {
        if let Ok(reply) = parse_reply(line) {
            let again = parse_reply(reply.format().as_bytes());
            assert_eq!(again.as_ref(), Ok(&reply), "{line:?}");
            if let Ok(m) = Maxes::of(&reply) {
                assert!(m.key >= 1 && m.value <= MAX_MAXES);
                if let Ok(v) = value_of(&reply, &m) {
                    assert!(is_boad_text(&v) && v.len() < m.value);
                }
            }
        }
    }
    let stream = Scripted {
        input: data,
        sent: Vec::new(),
    };
    let mut steps = 0;
    if let Ok(mut c) = Client::start(stream, Duration::from_secs(1)) {
        steps += 1;
        assert!(!c.kvsname.is_empty() && c.kvsname.len() < c.maxes.kvsname);
        let ok = c.put("boad-p-0", "127.0.0.1,5000,6000,42").is_ok()
            && c.barrier().is_ok()
            && c.get("boad-p-0").is_ok_and(|v| is_boad_text(&v))
            && c.finalize().is_ok();
        steps += usize::from(ok);
        let sent = &c.conn.get_ref().sent;
        assert!(sent.ends_with(b"\n"));
        for request in sent.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            assert!(request.starts_with(b"cmd="), "{request:?}");
            assert!(request.iter().all(|&b| b == b' ' || b.is_ascii_graphic()));
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::join::store::{exchange, prepare, HostValue};
    use boad_proto::lines::PeerEntry;
    use std::collections::HashMap;
    use std::os::fd::FromRawFd;
    use std::sync::{Arc, Barrier, Mutex};

    const T: Duration = Duration::from_secs(5);

    /// A small PMI-1 server for `n` clients, one thread per connection, with one key-value space
    /// and a barrier: what Hydra's proxy answers, as its replies were seen on the wire.
    fn server(n: usize) -> (Vec<UnixStream>, Vec<std::thread::JoinHandle<()>>) {
        let kvs = Arc::new((
            Mutex::new(HashMap::<String, String>::new()),
            Barrier::new(n),
        ));
        let mut clients = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..n {
            let (mine, theirs) = UnixStream::pair().expect("socketpair");
            clients.push(mine);
            let kvs = kvs.clone();
            threads.push(std::thread::spawn(move || {
                let mut w = theirs.try_clone().expect("clone");
                for line in BufReader::new(theirs).lines() {
                    let line = line.expect("request");
                    let req = parse_reply(line.as_bytes()).expect("a request is a PMI line");
                    let reply = match req.cmd.as_str() {
                        "init" => "cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0".into(),
                        "get_maxes" => {
                            "cmd=maxes kvsname_max=256 keylen_max=64 vallen_max=1024".into()
                        }
                        "get_my_kvsname" => "cmd=my_kvsname kvsname=kvs_42_0".into(),
                        "put" => {
                            assert_eq!(req.field("kvsname"), Some("kvs_42_0"));
                            let k = req.field("key").expect("key").to_string();
                            let v = req.field("value").expect("value").to_string();
                            kvs.0.lock().expect("kvs").insert(k, v);
                            "cmd=put_result rc=0 msg=success".into()
                        }
                        "barrier_in" => {
                            kvs.1.wait();
                            "cmd=barrier_out".into()
                        }
                        "get" => match kvs
                            .0
                            .lock()
                            .expect("kvs")
                            .get(req.field("key").expect("key"))
                        {
                            Some(v) => format!("cmd=get_result rc=0 msg=success value={v}"),
                            None => "cmd=get_result rc=-1 msg=key_not_found value=unknown".into(),
                        },
                        "finalize" => "cmd=finalize_ack".into(),
                        other => panic!("unexpected request {other}"),
                    };
                    if w.write_all(format!("{reply}\n").as_bytes()).is_err() {
                        return;
                    }
                }
            }));
        }
        (clients, threads)
    }

    fn start(s: UnixStream) -> Result<Client<UnixStream>, Why> {
        s.set_read_timeout(Some(T)).expect("timeout");
        Client::start(s, T)
    }

    #[test]
    fn ranks_meet_through_a_pmi1_server() {
        let n = 4;
        let (clients, threads) = server(n);
        let here = HostValue::here().expect("host");
        let ranks: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(rank, s)| {
                let here = here.clone();
                std::thread::spawn(move || {
                    let mut store = Pmi1 {
                        client: start(s).expect("start"),
                    };
                    let mut info = JobInfo::singleton();
                    info.rank = rank;
                    info.size = n;
                    info.launcher = Launcher::Hydra;
                    let ids = prepare(&mut store, &mut info, &here, None).expect("prepare");
                    let me = PeerEntry {
                        rank,
                        host_id: info.host_id,
                        ip: info.bind,
                        port: 5000 + rank as u16,
                        pulse: 6000,
                        pid: 1 + rank as u32,
                    };
                    let table = exchange(&mut store, &ids, &me).expect("exchange");
                    store.finish().expect("finish");
                    assert!(store.client.finished);
                    (info.job, table)
                })
            })
            .collect();
        let out: Vec<_> = ranks.into_iter().map(|t| t.join().expect("rank")).collect();
        for (job, table) in &out {
            assert_eq!((job, table), (&out[0].0, &out[0].1));
            assert_ne!(*job, 0);
        }
        let ports: Vec<u16> = out[0].1.iter().map(|e| e.port).collect();
        assert_eq!(ports, [5000, 5001, 5002, 5003]);
        for t in threads {
            t.join().expect("server");
        }
    }

    /// A server that answers the requests with `replies` (one per request, in order, each sent
    /// as is), then stays silent while the connection lives (or hangs up, when the last reply has
    /// no newline); returns what it was sent.
    fn scripted(replies: Vec<Vec<u8>>) -> (UnixStream, std::thread::JoinHandle<Vec<String>>) {
        let (mine, theirs) = UnixStream::pair().expect("socketpair");
        let t = std::thread::spawn(move || {
            let mut w = theirs.try_clone().expect("clone");
            let mut lines = BufReader::new(theirs).lines();
            let mut seen = Vec::new();
            // A last reply cut short is followed by the end of the connection.
            let hang_up = replies.last().is_some_and(|r| !r.ends_with(b"\n"));
            for r in replies {
                let Some(Ok(l)) = lines.next() else { break };
                seen.push(l);
                if w.write_all(&r).is_err() {
                    break;
                }
            }
            if hang_up {
                let _ = w.shutdown(std::net::Shutdown::Write);
            }
            // Silent until the client hangs up.
            for l in lines {
                match l {
                    Ok(l) => seen.push(l),
                    Err(_) => break,
                }
            }
            seen
        });
        (mine, t)
    }

    const INIT: &[u8] = b"cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0\n";
    const MAXES: &[u8] = b"cmd=maxes kvsname_max=256 keylen_max=64 vallen_max=1024\n";
    const KVS: &[u8] = b"cmd=my_kvsname kvsname=kvs_1\n";

    /// What a client says when the server's replies are `replies`, after start, a put, a barrier
    /// and a get; with `timeout` for each reply.
    fn failure(replies: &[&[u8]], timeout: Duration) -> String {
        let (s, t) = scripted(replies.iter().map(|r| r.to_vec()).collect());
        s.set_read_timeout(Some(timeout)).expect("timeout");
        let r = Client::start(s, timeout).and_then(|mut c| {
            c.put("boad-h-0", "ab/1")?;
            c.barrier()?;
            c.get("boad-h-0")?;
            c.finalize()
        });
        let err = r.expect_err("must fail");
        t.join().expect("server");
        err
    }

    #[test]
    fn the_conversation_is_the_pmi1_wire_protocol() {
        let (s, t) = scripted(vec![
            INIT.to_vec(),
            MAXES.to_vec(),
            KVS.to_vec(),
            b"cmd=put_result rc=0 msg=success\n".to_vec(),
            b"cmd=barrier_out\n".to_vec(),
            b"cmd=get_result rc=0 msg=success value=ab/1,198.18.0.1\n".to_vec(),
            b"cmd=finalize_ack\n".to_vec(),
        ]);
        let mut c = start(s).expect("start");
        c.put("boad-h-0", "ab/1,198.18.0.1").expect("put");
        c.barrier().expect("barrier");
        assert_eq!(c.get("boad-h-0").expect("get"), "ab/1,198.18.0.1");
        c.finalize().expect("finalize");
        c.finalize().expect("once only");
        drop(c);
        assert_eq!(
            t.join().expect("server"),
            [
                "cmd=init pmi_version=1 pmi_subversion=1",
                "cmd=get_maxes",
                "cmd=get_my_kvsname",
                "cmd=put kvsname=kvs_1 key=boad-h-0 value=ab/1,198.18.0.1",
                "cmd=barrier_in",
                "cmd=get kvsname=kvs_1 key=boad-h-0",
                "cmd=finalize",
            ]
        );
    }

    #[test]
    fn every_reply_is_checked() {
        let put_ok: &[u8] = b"cmd=put_result rc=0\n";
        let barrier: &[u8] = b"cmd=barrier_out\n";
        let long = [
            b"cmd=maxes kvsname_max=256 x=".to_vec(),
            vec![b'a'; MAX_LINE],
        ]
        .concat();
        let cases: Vec<(Vec<&[u8]>, &str)> = vec![
            (
                vec![b"cmd=response_to_init rc=-1\n"],
                "init (PMI version 1.1) refused: the server answered rc=-1",
            ),
            (
                vec![b"cmd=response_to_init pmi_version=1\n"],
                "the reply has no rc",
            ),
            (
                vec![b"cmd=response_to_init pmi_version=2 rc=0\n"],
                "PMI version 2",
            ),
            (vec![b"hello\n"], "does not start with cmd=NAME"),
            (vec![b"cmd=maxes\n"], "expected cmd=response_to_init"),
            (vec![b"cmd=response_to_init rc=0 rc=0\n"], "rc= twice"),
            (
                vec![b"cmd=response_to_init rc=0 \x07\n"],
                "not a line of printable ASCII",
            ),
            (
                vec![b"cmd=response_to_init rc=0"],
                "in the middle of its reply",
            ),
            (vec![INIT, &long], "longer than 4096 bytes"),
            (
                vec![INIT, b"cmd=maxes kvsname_max=256 keylen_max=64\n"],
                "no vallen_max=",
            ),
            (
                vec![
                    INIT,
                    b"cmd=maxes kvsname_max=256 keylen_max=0 vallen_max=9\n",
                ],
                "keylen_max=\"0\"",
            ),
            (
                vec![
                    INIT,
                    b"cmd=maxes kvsname_max=x keylen_max=64 vallen_max=9\n",
                ],
                "kvsname_max=\"x\"",
            ),
            (
                vec![INIT, MAXES, b"cmd=my_kvsname kvsname=\n"],
                "kvsname=\"\"",
            ),
            (
                vec![
                    INIT,
                    b"cmd=maxes kvsname_max=4 keylen_max=64 vallen_max=1024\n",
                    KVS,
                ],
                "shorter than kvsname_max=4",
            ),
            // Keys and values that would not fit the server's maxima are never sent.
            (
                vec![
                    INIT,
                    b"cmd=maxes kvsname_max=256 keylen_max=8 vallen_max=1024\n",
                    KVS,
                ],
                "the key \"boad-h-0\" cannot be sent (keylen_max=8)",
            ),
            (
                vec![
                    INIT,
                    b"cmd=maxes kvsname_max=256 keylen_max=64 vallen_max=4\n",
                    KVS,
                ],
                "cannot be sent (vallen_max=4)",
            ),
            (
                vec![
                    INIT,
                    MAXES,
                    KVS,
                    b"cmd=put_result rc=-1 msg=duplicate_key\n",
                ],
                "put of boad-h-0: the server answered rc=-1 (duplicate_key)",
            ),
            (
                vec![INIT, MAXES, KVS, b"cmd=put_result msg=success\n"],
                "put of boad-h-0: the reply has no rc",
            ),
            (
                vec![INIT, MAXES, KVS, put_ok, b"cmd=barrier_out rc=1\n"],
                "barrier: the server answered rc=1",
            ),
            (
                vec![INIT, MAXES, KVS, put_ok, b"cmd=get_result rc=0 value=x\n"],
                "expected cmd=barrier_out",
            ),
            (
                vec![
                    INIT,
                    MAXES,
                    KVS,
                    put_ok,
                    barrier,
                    b"cmd=get_result rc=-1 msg=key_boad-h-0_not_found value=unknown\n",
                ],
                "get of boad-h-0: the server answered rc=-1 (key_boad-h-0_not_found)",
            ),
            (
                vec![INIT, MAXES, KVS, put_ok, barrier, b"cmd=get_result rc=0\n"],
                "no value=",
            ),
            (
                vec![
                    INIT,
                    MAXES,
                    KVS,
                    put_ok,
                    barrier,
                    b"cmd=get_result rc=0 value=a;b\n",
                ],
                "is not a value boad puts",
            ),
            (
                vec![
                    INIT,
                    MAXES,
                    KVS,
                    put_ok,
                    barrier,
                    b"cmd=get_result rc=0 value=a=b\n",
                ],
                "not key=value",
            ),
            (
                vec![
                    INIT,
                    MAXES,
                    KVS,
                    put_ok,
                    barrier,
                    b"cmd=get_result rc=0 value=ab/1\n",
                    b"cmd=finalize_ack rc=2\n",
                ],
                "finalize: the server answered rc=2",
            ),
            // A server that never answers.
            (vec![], "no reply to cmd=init within"),
            (
                vec![INIT, MAXES, KVS, put_ok],
                "no reply to cmd=barrier_in within",
            ),
        ];
        for (replies, want) in cases {
            let err = failure(&replies, Duration::from_millis(300));
            assert!(err.contains(want), "{replies:?}: {err}");
        }
    }

    #[test]
    fn a_server_that_hangs_up_is_named() {
        let (s, theirs) = UnixStream::pair().expect("socketpair");
        drop(theirs);
        s.set_read_timeout(Some(T)).expect("timeout");
        let err = Client::start(s, T).err().expect("must fail");
        // Either the request or the reply fails, naming init.
        assert!(err.contains("cmd=init"), "{err}");
    }

    #[test]
    fn only_a_connected_unix_stream_socket_is_taken() {
        use std::os::fd::AsRawFd;
        let (a, _b) = UnixStream::pair().expect("socketpair");
        assert_eq!(crate::join::check_socket(a.as_raw_fd()), Ok(()));
        let file = std::fs::File::open("/dev/null").expect("/dev/null");
        let err = crate::join::check_socket(file.as_raw_fd()).expect_err("a file");
        assert!(err.contains("not a socket"), "{err}");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        let err = crate::join::check_socket(udp.as_raw_fd()).expect_err("udp");
        assert!(err.contains("not a Unix stream socket"), "{err}");
        let dir = tempfile::tempdir().expect("dir");
        let listener =
            std::os::unix::net::UnixListener::bind(dir.path().join("s")).expect("listener");
        let err = crate::join::check_socket(listener.as_raw_fd()).expect_err("listener");
        assert!(err.contains("a listening socket"), "{err}");
        // SAFETY: socket takes three integers and returns a new descriptor or -1.
        let fresh = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
        assert!(fresh >= 0);
        // SAFETY: `fresh` was just returned by socket and nothing else owns it.
        let fresh = unsafe { std::os::fd::OwnedFd::from_raw_fd(fresh) };
        let err = crate::join::check_socket(fresh.as_raw_fd()).expect_err("unconnected");
        assert!(err.contains("not connected"), "{err}");
        let closed = file.as_raw_fd();
        drop(file);
        let err = crate::join::check_socket(closed).expect_err("closed");
        assert!(err.contains("not an open descriptor"), "{err}");
        assert!(crate::join::check_socket(-1).is_err());
    }

    #[test]
    fn the_descriptor_is_taken_once_and_closed_on_exec() {
        use std::os::fd::{AsRawFd, IntoRawFd};
        let (a, _b) = UnixStream::pair().expect("socketpair");
        let fd = a.into_raw_fd();
        let s = take_descriptor(fd).expect("taken");
        // SAFETY: F_GETFD only reads the flags of a descriptor `s` owns.
        let flags = unsafe { libc::fcntl(s.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        let err = take_descriptor(s.as_raw_fd()).expect_err("taken twice");
        assert!(err.contains("joined a job already"), "{err}");
    }

    #[test]
    fn the_fuzz_harness_goes_the_whole_way_on_a_good_conversation() {
        let good = b"cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0\n\
                     cmd=maxes kvsname_max=256 keylen_max=64 vallen_max=1024\n\
                     cmd=my_kvsname kvsname=kvs_1\n\
                     cmd=put_result rc=0 msg=success\n\
                     cmd=barrier_out\n\
                     cmd=get_result rc=0 msg=success value=127.0.0.1,5000,6000,42\n\
                     cmd=finalize_ack\n";
        assert_eq!(exercise(good), 2);
        assert_eq!(exercise(&good[..good.len() - 3]), 1);
        assert_eq!(exercise(b"cmd=x\n"), 0);
    }

    proptest::proptest! {
        #[test]
        fn any_reply_parses_or_is_refused_without_panicking(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)
        ) {
            exercise(&data);
        }
    }
}
