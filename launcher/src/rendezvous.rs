//! The launcher side of the rendezvous protocol (`boad_proto::lines`).
//!
//! Every rank gets its own connection: one end of a Unix socket pair, inherited across `exec`
//! (`BOAD_RENDEZVOUS_FD`). A rank that uses the library says `HELLO` on it; once all ranks have, each
//! gets the job table. The connections stay open and carry an `EXIT` line whenever a rank exits.
//! Programs that never say `HELLO` are fine: nothing is sent to them. A connection belongs to one
//! rank: a `HELLO` naming another rank is a protocol error, and no other process can connect.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use boad_proto::{Line, PeerEntry};

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

    fn hello(&mut self, conn: usize, entry: PeerEntry, stream: UnixStream) {
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
            Phase::Gathering if rank != conn => {
                format!("rank {conn} said HELLO as rank {rank}")
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
    /// Serves a job of `conns.len()` ranks, `conns[r]` being boadrun's end of rank `r`'s connection;
    /// all ranks that use the rendezvous must join within `timeout`; `hook` may add lines to the table
    /// (see [`TableHook`]).
    pub fn start(conns: Vec<UnixStream>, timeout: Duration, hook: Option<TableHook>) -> Server {
        let size = conns.len();
        let state = Arc::new(Mutex::new(State {
            size,
            peers: (0..size).map(|_| None).collect(),
            phase: Phase::Gathering,
            hook,
            failure: None,
        }));
        for (rank, stream) in conns.into_iter().enumerate() {
            let state = Arc::clone(&state);
            thread::spawn(move || serve(&state, rank, stream));
        }
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

/// Reads rank `rank`'s `HELLO` on its connection and registers it. A rank that never says it (a
/// program that does not use the library) leaves the thread waiting until the connection closes.
fn serve(state: &Mutex<State>, rank: usize, stream: UnixStream) {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut line = String::new();
    // At most one line of a bounded length: a HELLO is short.
    match BufReader::new((&stream).take(256)).read_line(&mut line) {
        // Closed without a word: the rank exited (rank_exited reports it) or never used boad.
        Ok(0) | Err(_) => return,
        Ok(_) => {}
    }
    let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
    match Line::parse(&line) {
        Some(Line::Hello(entry)) => st.hello(rank, entry, stream),
        _ => {
            let why = format!(
                "protocol error: rank {rank} sent {line:?} where HELLO <rank> <host_id> <ip> <port> was expected"
            );
            eprintln!("boadrun: rendezvous aborted: {why}");
            send(&stream, &[Line::Abort(why.clone())]);
            st.abort(why);
        }
    }
}
