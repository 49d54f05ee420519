//! The PageRank and BFS examples under `boadrun`: 4 ranks over shared memory and UDP on one host,
//! and, as root with a `boadrun` that has the eBPF programs, over the kernel path on 2 virtual
//! hosts. Each job must exit 0 and print one `Record` with the expected fields, and every rank
//! must print its own verdict line (each rank checks its copy of the answer against a
//! single-process computation and exits non-zero by itself if a vertex is wrong): the lines are
//! counted, one per rank, each over the whole graph and the rank's own block. A rank made wrong on
//! purpose (`--fault-rank`) must fail on its own, naming its vertex.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use boad_benches::graph;
use boad_benches::record::Record;

/// Jobs run one at a time (2-core machines; one XDP program per interface).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const LIMIT: Duration = Duration::from_secs(120);

fn target_dir() -> PathBuf {
    // .../target/<profile>/deps/apps-<hash>
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf()
}

fn cargo_build(args: &[&str]) {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.arg("build").args(args);
    if target_dir().ends_with("release") {
        cmd.arg("--release");
    }
    assert!(cmd.status().expect("run cargo build").success(), "{cmd:?}");
}

/// boadrun, built (or found up to date) once per test run: a stale one would test old code.
fn boadrun() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| cargo_build(&["-p", "boadrun"]));
    target_dir().join("boadrun")
}

/// An example, built once per test run: `cargo test` builds the examples before running tests,
/// `cargo test --test apps` does not, and a stale example would test old code.
fn example(name: &str) -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| cargo_build(&["-p", "boad-benches", "--examples"]));
    target_dir().join("examples").join(name)
}

/// Root (virtual hosts, the kernel path); not root: the test fails, or with `BOAD_ALLOW_SKIP` set
/// is recorded as skipped.
fn root() -> bool {
    boad_test_support::require_root()
}

/// Root, and a boadrun built with the eBPF programs (`--check` without probing: `udp` skips the
/// load); either missing fails the test, or with `BOAD_ALLOW_SKIP` records the skip.
fn kernel_available() -> bool {
    if !root() {
        return false;
    }
    let out = Command::new(boadrun())
        .args(["--transport", "udp", "--check"])
        .output()
        .expect("boadrun --check");
    let text = String::from_utf8_lossy(&out.stdout);
    let ok = text
        .lines()
        .any(|l| l.starts_with("eBPF programs:") && l.ends_with("compiled in"));
    if !ok {
        eprintln!("boadrun --check:\n{text}");
    }
    boad_test_support::require_that(
        ok,
        "a boadrun built with the eBPF programs (see `boadrun --check` above)",
    )
}

/// Runs `boadrun launcher_args prog args`, killing it after [`LIMIT`].
fn run(launcher_args: &[&str], prog: &str, args: &[&str]) -> Output {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut cmd = Command::new(boadrun());
    cmd.args(launcher_args)
        .arg(example(prog))
        .args(args)
        .env_remove("BOAD_TRANSPORT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let child = cmd.spawn().expect("start boadrun");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(out) => {
            let out = out.expect("wait for boadrun");
            eprintln!(
                "{cmd:?}: {:?} after {:.1} s",
                out.status,
                start.elapsed().as_secs_f64()
            );
            out
        }
        Err(_) => {
            // SIGKILL our boadrun, by pid; its ranks die with it.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            let out = rx.recv().expect("boadrun output").expect("wait");
            panic!(
                "{cmd:?} hung for {LIMIT:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// One rank's verdict line (see `app::check_mine`).
#[derive(Debug, PartialEq)]
struct Verdict {
    rank: usize,
    checked: usize,
    own: std::ops::Range<usize>,
    wrong: usize,
}

/// Every verdict line of `prog` in `stdout`, in rank order; panics on a line that starts like one
/// but does not parse.
fn verdicts(stdout: &str, prog: &str) -> Vec<Verdict> {
    let mut v: Vec<Verdict> = stdout
        .lines()
        .filter(|l| l.starts_with("rank ") && l.contains(&format!(": {prog}: ")))
        .map(|l| {
            let parse = || -> Option<Verdict> {
                let (rank, rest) = l.strip_prefix("rank ")?.split_once(": ")?;
                let rest = rest.strip_prefix(&format!("{prog}: "))?;
                let (checked, rest) = rest.split_once(" vertices checked against ")?;
                let (_, rest) = rest.split_once(" (")?;
                let (_, rest) = rest.split_once(" of them this rank's own, ")?;
                let (range, rest) = rest.split_once("): ")?;
                let (lo, hi) = range.split_once("..")?;
                let wrong = rest.strip_suffix(" wrong")?;
                Some(Verdict {
                    rank: rank.parse().ok()?,
                    checked: checked.parse().ok()?,
                    own: lo.parse().ok()?..hi.parse().ok()?,
                    wrong: wrong.parse().ok()?,
                })
            };
            parse().unwrap_or_else(|| panic!("not a verdict line: {l:?}"))
        })
        .collect();
    v.sort_by_key(|x| x.rank);
    v
}

/// The verdicts of a job of 4 ranks over `vertices`: one per rank, over every vertex and the rank's
/// own block, with `wrong` wrong vertices on rank `r` (`wrong(r)`).
fn assert_verdicts(stdout: &str, prog: &str, vertices: usize, wrong: impl Fn(usize) -> usize) {
    let got = verdicts(stdout, prog);
    let want: Vec<Verdict> = (0..4)
        .map(|rank| Verdict {
            rank,
            checked: vertices,
            own: graph::block(vertices, 4, rank),
            wrong: wrong(rank),
        })
        .collect();
    assert_eq!(got, want, "one verdict per rank:\n{stdout}");
}

/// Runs an example on 4 ranks over `transport` (on `hosts` virtual hosts if > 1), checks that it
/// succeeded and that its record says what ran.
fn check(prog: &str, transport: &str, hosts: u32, vertices: u32, extra: &[&str]) -> Record {
    let h = hosts.to_string();
    let mut launcher = vec!["-n", "4", "--transport", transport];
    if hosts > 1 {
        launcher.extend(["--hosts", &h]);
    }
    let v = vertices.to_string();
    let mut args = vec!["--vertices", &v, "--json", "--hosts", &h];
    args.extend(extra);
    let out = run(&launcher, prog, &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{prog} over {transport} failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let json: Vec<&str> = stdout.lines().filter(|l| l.starts_with('{')).collect();
    assert_eq!(json.len(), 1, "one record (rank 0):\n{stdout}");
    let rec: Record = serde_json::from_str(json[0]).expect("the line is a Record");
    assert_eq!(rec.bench, "app");
    assert_eq!(rec.coll, prog);
    assert_eq!(rec.implementation, format!("boad-{transport}"), "{stdout}");
    assert_eq!(rec.path.as_deref(), Some(transport), "{stdout}");
    assert_eq!(rec.bytes, u64::from(vertices));
    assert_eq!(rec.ranks, 4);
    assert_eq!(rec.hosts, hosts);
    assert!(rec.iters > 0);
    let (total, comm) = (rec.total_s.expect("total_s"), rec.comm_s.expect("comm_s"));
    assert!(total > 0.0 && comm > 0.0 && comm <= total, "{total} {comm}");
    assert!(rec.note.is_some());
    assert!(
        stdout.lines().any(|l| l.starts_with(&format!("{prog}: "))),
        "the human line:\n{stdout}"
    );
    assert_verdicts(&stdout, prog, vertices as usize, |_| 0);
    rec
}

#[test]
fn pagerank_shm() {
    let rec = check("pagerank", "shm", 1, 3000, &[]);
    assert_eq!(rec.iters, 20);
}

#[test]
fn pagerank_udp_in_many_calls() {
    // 750-vertex blocks in calls of 1024 / 8 / 3 = 42 values: 18 calls per iteration, the last one
    // short.
    let rec = check(
        "pagerank",
        "udp",
        1,
        3000,
        &["--iters", "5", "--max-call-bytes", "1024"],
    );
    assert_eq!(rec.iters, 5);
    assert!(
        rec.note
            .as_deref()
            .unwrap_or("")
            .contains("(18 per iteration)"),
        "{rec:?}"
    );
}

#[test]
fn bfs_shm() {
    check("bfs", "shm", 1, 3000, &[]);
}

#[test]
fn bfs_udp_in_many_calls() {
    // 3000 vertices = 47 words, in calls of 5 words: 10 calls per level, the last one short.
    let rec = check("bfs", "udp", 1, 3000, &["--max-call-bytes", "40"]);
    assert!(
        rec.note.as_deref().unwrap_or("").contains("(10 per level"),
        "{rec:?}"
    );
}

/// Rank 2 makes one vertex of its own block wrong: it alone finds it, names it and exits 1 (the
/// first rank to fail), whatever the other ranks found; they still check theirs (0 wrong).
#[test]
fn a_wrong_vertex_fails_its_own_rank() {
    for prog in ["pagerank", "bfs"] {
        let out = run(
            &["-n", "4", "--transport", "udp"],
            prog,
            &["--vertices", "3000", "--fault-rank", "2"],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{prog}:\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        assert_verdicts(&stdout, prog, 3000, |r| usize::from(r == 2));
        let vertex = graph::block(3000, 4, 2).start;
        assert!(
            stderr.contains(&format!("rank 2: vertex {vertex}: "))
                && stderr.contains("boadrun: rank 2 (pid ")
                && stderr.contains("rank 2: 1 of 3000 vertices differ"),
            "{prog}: rank 2 names its vertex and fails first:\n{stderr}"
        );
        assert!(
            !stderr.contains("rank 0: vertex")
                && !stderr.contains("rank 1: vertex")
                && !stderr.contains("rank 3: vertex"),
            "{prog}: only rank 2 is wrong:\n{stderr}"
        );
    }
}

#[test]
fn bad_source_is_an_error() {
    let out = run(
        &["-n", "2", "--transport", "udp"],
        "bfs",
        &["--vertices", "100", "--source", "100"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not a vertex"), "{stderr}");
}

#[test]
fn kernel_path_on_two_hosts() {
    if !kernel_available() {
        return;
    }
    // Both apps in one test: each job loads the eBPF programs (~8 s).
    check("pagerank", "kernel", 2, 5000, &[]);
    check("bfs", "kernel", 2, 5000, &[]);
}
