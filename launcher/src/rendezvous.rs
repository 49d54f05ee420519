//! The launcher side of the rendezvous protocol ([`boad::bootstrap::protocol`]).
//!
//! Every rank that uses the library connects to the Unix socket and says `HELLO`; once all ranks
//! have, each gets the job table. The connections stay open and carry an `EXIT` line whenever a rank
//! exits. Programs that never connect are fine: nothing is sent to them.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use boad::bootstrap::protocol::{Line, PeerEntry};

/// How long a write to a rank may block before the rank is considered gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

enum Phase {
    /// Waiting for `HELLO`s.
    Gathering,
    /// The table was sent.
    Running,
    /// The job cannot start, for this reason.
    Aborted(String),
}

/// Called once every rank has said `HELLO`, with their entries in rank order, before the table is
/// sent: returns lines to add to the table before `END`, or why the job cannot start (then every rank
/// gets `ABORT` with that reason).
pub type TableHook = Box<dyn FnMut(&[PeerEntry]) -> Result<Vec<Line>, String> + Send>;

struct State {
    size: usize,
    peers: Vec<Option<(PeerEntry, UnixStream)>>,
    phase: Phase,
    hook: Option<TableHook>,
    /// Why the hook refused the job.
    failure: Option<String>,
}

/// The rendezvous server; its accept loop runs on a thread of its own.
pub struct Server {
    state: Arc<Mutex<State>>,
    deadline: Instant,
    timeout: Duration,
}

fn send(stream: &UnixStream, lines: &[Line]) -> bool {
    let text: String = lines.iter().map(Line::format).collect();
    (&*stream).write_all(text.as_bytes()).is_ok()
}

impl State {
    fn abort(&mut self, why: String) {
        for (_, s) in self.peers.iter().flatten() {
            send(s, &[Line::Abort(why.clone())]);
        }
        self.phase = Phase::Aborted(why);
    }

    fn hello(&mut self, entry: PeerEntry, stream: UnixStream) {
        let rank = entry.rank;
        let problem = match &self.phase {
            Phase::Aborted(why) => {
                send(&stream, &[Line::Abort(why.clone())]);
                return;
            }
            Phase::Running => {
                send(
                    &stream,
                    &[Line::Abort(format!(
                        "rank {rank} said HELLO after the job started"
                    ))],
                );
                return;
            }
            Phase::Gathering if rank >= self.size => {
                format!(
                    "rank {rank} is out of range: the job has {} ranks",
                    self.size
                )
            }
            Phase::Gathering if self.peers[rank].is_some() => format!("rank {rank} joined twice"),
            Phase::Gathering => {
                self.peers[rank] = Some((entry, stream));
                if self.peers.iter().all(Option::is_some) {
                    let entries: Vec<PeerEntry> = self
                        .peers
                        .iter()
                        .flatten()
                        .map(|(e, _)| e.clone())
                        .collect();
                    let extra = match self.hook.as_mut().map(|hook| hook(&entries)) {
                        None => Vec::new(),
                        Some(Ok(lines)) => lines,
                        Some(Err(why)) => {
                            eprintln!("boadrun: rendezvous aborted: {why}");
                            self.failure = Some(why.clone());
                            self.abort(why);
                            return;
                        }
                    };
                    let mut lines = vec![Line::Table(self.size)];
                    lines.extend(entries.into_iter().map(Line::Entry));
                    lines.extend(extra);
                    lines.push(Line::End);
                    for (_, s) in self.peers.iter().flatten() {
                        send(s, &lines);
                    }
                    self.phase = Phase::Running;
                }
                return;
            }
        };
        eprintln!("boadrun: rendezvous aborted: {problem}");
        send(&stream, &[Line::Abort(problem.clone())]);
        self.abort(problem);
    }
}

impl Server {
    /// Serves `listener` for a job of `size` ranks, which must all join within `timeout`; `hook`
    /// may add lines to the table (see [`TableHook`]).
    pub fn start(
        listener: UnixListener,
        size: usize,
        timeout: Duration,
        hook: Option<TableHook>,
    ) -> Server {
        let state = Arc::new(Mutex::new(State {
            size,
            peers: (0..size).map(|_| None).collect(),
            phase: Phase::Gathering,
            hook,
            failure: None,
        }));
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => {
                        let state = Arc::clone(&shared);
                        thread::spawn(move || serve(&state, stream, timeout));
                    }
                    // Out of descriptors or similar: do not spin.
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Server {
            state,
            deadline: Instant::now() + timeout,
            timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the connected ranks that `rank` exited with `code`; aborts the job if it had not started.
    pub fn rank_exited(&self, rank: usize, code: i32) {
        let mut st = self.lock();
        if let Some(slot) = st.peers.get_mut(rank) {
            *slot = None;
        }
        if matches!(st.phase, Phase::Gathering) {
            st.abort(format!(
                "rank {rank} exited with status {code} before joining the job"
            ));
        }
        for slot in st.peers.iter_mut() {
            if slot
                .as_ref()
                .is_some_and(|(_, s)| !send(s, &[Line::Exit { rank, code }]))
            {
                *slot = None;
            }
        }
    }

    /// Why the table hook refused the job, if it did.
    pub fn failure(&self) -> Option<String> {
        self.lock().failure.clone()
    }

    /// If some rank joined but not all did within the timeout, aborts the job and says why.
    pub fn check_timeout(&self, now: Instant) -> Option<String> {
        let mut st = self.lock();
        if now < self.deadline
            || !matches!(st.phase, Phase::Gathering)
            || st.peers.iter().all(Option::is_none)
        {
            return None;
        }
        let missing: Vec<String> = (0..st.size)
            .filter(|&r| st.peers[r].is_none())
            .map(|r| r.to_string())
            .collect();
        let why = format!(
            "rendezvous timed out after {} ms: rank(s) {} never joined",
            self.timeout.as_millis(),
            missing.join(", ")
        );
        st.abort(why.clone());
        Some(why)
    }
}

/// Reads one connection's `HELLO` and registers it.
fn serve(state: &Mutex<State>, stream: UnixStream, timeout: Duration) {
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut line = String::new();
    let _ = BufReader::new((&stream).take(256)).read_line(&mut line);
    let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
    match Line::parse(&line) {
        Some(Line::Hello(entry)) => st.hello(entry, stream),
        _ => {
            let why = format!(
                "protocol error: expected HELLO <rank> <host_id> <ip> <port>, got {line:?}"
            );
            send(&stream, &[Line::Abort(why)]);
        }
    }
}
