//! What the PageRank and BFS examples share: their common flags, the clock that times every boad
//! call and remembers which path it took, and the report (a human line and a `Record`).

use std::error::Error;
use std::process::ExitCode;
use std::time::Instant;

use boad::{Communicator, Op, Path};
use boad_benches::record::Record;

/// The result of an example's `run`.
pub type Res<T> = Result<T, Box<dyn Error>>;

/// Flags both examples take (the benchmark driver passes `--vertices N --json [--hosts H]`).
#[derive(clap::Args, Debug)]
pub struct Common {
    /// Vertices of the generated graph (meant for 100 .. 300000).
    #[arg(long, default_value_t = 10_000)]
    pub vertices: usize,
    /// Seed of the graph generator (every rank generates the same graph from it).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Mean out-degree of the generated graph.
    #[arg(long, default_value_t = 8.0)]
    pub degree: f64,
    /// Hosts the job runs on, as the caller passed to `boadrun --hosts`; informational: the record
    /// carries the number of hosts the ranks report (`BOAD_HOST_ID`), and a disagreement is warned
    /// about.
    #[arg(long)]
    pub hosts: Option<u32>,
    /// Also print one JSON `Record` line (rank 0).
    #[arg(long)]
    pub json: bool,
}

/// Runs `run` and turns an error into a message and a non-zero exit status.
pub fn main(name: &str, run: fn() -> Res<()>) -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Number of hosts the ranks are on: the largest `BOAD_HOST_ID` + 1 (an allreduce).
pub fn hosts(comm: &mut Communicator, claimed: Option<u32>) -> Res<u32> {
    let id = match std::env::var("BOAD_HOST_ID") {
        Ok(s) => s
            .parse::<u32>()
            .map_err(|e| format!("BOAD_HOST_ID={s:?}: {e}"))?,
        Err(_) => 0,
    };
    let mut max = [id];
    comm.allreduce_in_place(&mut max, Op::Max)?;
    let hosts = max[0] + 1;
    if let Some(c) = claimed {
        if c != hosts && comm.rank() == 0 {
            eprintln!("warning: --hosts {c} given, but the ranks are on {hosts} host(s); recording {hosts}");
        }
    }
    Ok(hosts)
}

/// Time spent inside boad calls, and how many calls took each path.
#[derive(Debug, Default)]
pub struct Clock {
    secs: f64,
    calls: [u64; Path::ALL.len()],
}

impl Clock {
    /// Runs one boad call, adding its duration and the path it took.
    pub fn call<T>(
        &mut self,
        comm: &mut Communicator,
        f: impl FnOnce(&mut Communicator) -> boad::Result<T>,
    ) -> boad::Result<T> {
        let t = Instant::now();
        let r = f(comm)?;
        self.secs += t.elapsed().as_secs_f64();
        if let Some(i) = comm
            .last_path()
            .and_then(|p| Path::ALL.iter().position(|&q| q == p))
        {
            self.calls[i] += 1;
        }
        Ok(r)
    }

    /// Collective calls timed.
    pub fn calls(&self) -> u64 {
        self.calls.iter().sum()
    }

    /// `kernel`, `udp`, `shm`, `hier` or `hier-kernel`; `kernel+udp` (etc.) if the calls took
    /// different paths.
    pub fn path(&self) -> String {
        let used: Vec<&str> = Path::ALL
            .iter()
            .map(|p| p.name())
            .zip(self.calls)
            .filter(|(_, c)| *c > 0)
            .map(|(n, _)| n)
            .collect();
        if used.is_empty() {
            "none".into()
        } else {
            used.join("+")
        }
    }

    /// How many calls took each path, when they took more than one.
    pub fn mix(&self) -> Option<String> {
        let used: Vec<String> = Path::ALL
            .iter()
            .map(|p| p.name())
            .zip(self.calls)
            .filter(|(_, c)| *c > 0)
            .map(|(n, c)| format!("{c} {n}"))
            .collect();
        (used.len() > 1).then(|| format!("mixed paths: {} calls", used.join(", ")))
    }
}

/// One run's result, before the maximum over ranks.
pub struct Report<'a> {
    /// `pagerank` or `bfs`.
    pub coll: &'a str,
    /// Vertices.
    pub vertices: usize,
    /// Hosts (from [`hosts`]).
    pub hosts: u32,
    /// Iterations (PageRank) or levels (BFS).
    pub iters: u64,
    /// This rank's wall time of the distributed computation.
    pub total_s: f64,
    /// The clock of this rank's boad calls in it.
    pub clock: &'a Clock,
    /// What else the reader must know.
    pub note: String,
    /// Print the JSON record too.
    pub json: bool,
}

/// Takes the maximum of the times over ranks (a collective: every rank calls it); rank 0 prints a
/// line and, with `json`, the record.
pub fn report(comm: &mut Communicator, r: Report) -> Res<()> {
    // The time in collectives includes waiting for the slowest rank to arrive, so the largest
    // time outside them (this rank's own computation) is reported too.
    let mut t = [r.total_s, r.clock.secs, r.total_s - r.clock.secs];
    comm.allreduce_in_place(&mut t, Op::Max)?;
    if comm.rank() != 0 {
        return Ok(());
    }
    let path = r.clock.path();
    let mut note = format!(
        "time outside collectives (computation) at most {:.6} s on any rank; {}",
        t[2], r.note
    );
    if let Some(mix) = r.clock.mix() {
        note = format!("{mix}; {note}");
    }
    println!(
        "{}: {} vertices, {} ranks on {} host(s), {} {}, path {path}: total {:.6} s, in collectives {:.6} s ({:.0}%), {} calls (max over ranks); {note}",
        r.coll,
        r.vertices,
        comm.size(),
        r.hosts,
        r.iters,
        if r.coll == "bfs" { "frontier exchanges" } else { "iterations" },
        t[0],
        t[1],
        if t[0] > 0.0 { 100.0 * t[1] / t[0] } else { 0.0 },
        r.clock.calls(),
    );
    if r.json {
        let rec = Record {
            bench: "app".into(),
            implementation: format!("boad-{path}"),
            coll: r.coll.into(),
            bytes: r.vertices as u64,
            ranks: u32::try_from(comm.size())?,
            hosts: r.hosts,
            iters: r.iters,
            total_s: Some(t[0]),
            comm_s: Some(t[1]),
            path: Some(path),
            note: Some(note),
            ..Default::default()
        };
        println!("{}", serde_json::to_string(&rec)?);
    }
    Ok(())
}

/// This rank's verdict on its own copy of the result, with no collective: an allreduce of verdicts
/// that lost a rank's contribution would hide that rank's failure. Prints one line on stdout,
///
/// `rank R: NAME: N vertices checked against the single-process REFERENCE (M of them this rank's own, LO..HI): W wrong`
///
/// (the tests count these lines, one per rank) and, if any vertex is wrong, each of the first ten
/// (`describe`) on stderr and returns an error: the rank exits non-zero on its own.
pub fn check_mine(
    rank: usize,
    name: &str,
    reference: &str,
    n: usize,
    own: std::ops::Range<usize>,
    wrong: &[usize],
    describe: impl Fn(usize) -> String,
) -> Res<()> {
    let wrong_own = wrong.iter().filter(|v| own.contains(v)).count();
    println!(
        "rank {rank}: {name}: {n} vertices checked against the single-process {reference} ({} of them this rank's own, {}..{}): {} wrong",
        own.len(),
        own.start,
        own.end,
        wrong.len()
    );
    if wrong.is_empty() {
        return Ok(());
    }
    for &v in wrong.iter().take(10) {
        eprintln!("rank {rank}: vertex {v}: {}", describe(v));
    }
    Err(format!(
        "rank {rank}: {} of {n} vertices differ from the single-process {reference} ({wrong_own} of them this rank's own)",
        wrong.len()
    )
    .into())
}
