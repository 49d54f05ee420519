//! The PageRank and BFS examples under `boadrun`: 4 ranks over shared memory and UDP on one host,
//! and, as root with a `boadrun` that has the eBPF programs, over the kernel path on 2 virtual
//! hosts. Each job must exit 0 (the examples check their answer against a single-process
//! computation and fail otherwise) and print one `Record` with the expected fields.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

fn boadrun() -> PathBuf {
    let p = target_dir().join("boadrun");
    if !p.exists() {
        cargo_build(&["-p", "boadrun"]);
    }
    p
}

/// `cargo test` builds the examples before running tests; `cargo test --test apps` does not.
fn example(name: &str) -> PathBuf {
    let p = target_dir().join("examples").join(name);
    if !p.exists() {
        cargo_build(&["-p", "boad-benches", "--examples"]);
    }
    p
}

/// Root (virtual hosts, the kernel path); not root: the test fails, or with `BOAD_ALLOW_SKIP` set
/// is recorded as skipped.
fn root() -> bool {
    boad_test_support::require_root()
}

/// Root, and a boadrun built with the eBPF programs (`--check` without probing: `udp` skips the
/// load).
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
        eprintln!("skipped: boadrun has no eBPF programs:\n{text}");
    }
    ok
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
