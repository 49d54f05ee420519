//! What the multi-process test files share: finding `boadrun`, running a job with a time limit
//! (killed by pid, never left behind), its output, and the checks on what a job leaves behind.
//! Each test file is its own binary and uses a part of this module.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Jobs run one at a time (2-core CI machines).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Holds off every other job of this test binary while the guard lives.
pub fn serial() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a job may run before the test kills it and fails.
pub const LIMIT: Duration = Duration::from_secs(240);

/// `target/<profile>`, from this test binary's path (`target/<profile>/deps/<name>-<hash>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf()
}

/// The cargo profile this test binary was built with: the name of its target directory
/// (`target/<profile>`), except `dev`, whose directory is `debug`.
pub fn profile() -> String {
    let dir = target_dir();
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("target dir name");
    if name == "debug" { "dev" } else { name }.to_string()
}

/// Builds `what` (e.g. `["-p", "boadrun"]`) with the profile of this test binary, so the jobs run
/// binaries built like the tests (release, or `checked` with overflow checks).
pub fn cargo_build(what: &[&str]) {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.arg("build").args(what).args(["--profile", &profile()]);
    assert!(
        cmd.status().expect("run cargo build").success(),
        "cargo build {what:?} --profile {}",
        profile()
    );
}

/// The kernel service `boadd` of this profile, built (or found up to date) once per test binary:
/// it is no dependency of this crate, so cargo test alone would not rebuild a stale one.
pub fn boadd() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| cargo_build(&["-p", "boadd"]));
    target_dir().join("boadd")
}

/// The `boadrun` of this profile, built if missing.
pub fn boadrun() -> PathBuf {
    let p = target_dir().join("boadrun");
    if !p.exists() {
        cargo_build(&["-p", "boadrun"]);
    }
    p
}

/// Virtual clusters and the kernel path need root (network namespaces, BPF); CI runs as root. Not
/// root: the test fails, or with `BOAD_ALLOW_SKIP` set is recorded as skipped
/// (`boad_test_support::require`).
pub fn root() -> bool {
    boad_test_support::require_root()
}

/// A finished job.
pub struct Job {
    pub out: Output,
    pub secs: f64,
}

impl Job {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    pub fn code(&self) -> Option<i32> {
        self.out.status.code()
    }
    pub fn assert_ok(&self) {
        assert!(
            self.out.status.success(),
            "job failed ({:?}) after {:.1} s\nstdout:\n{}\nstderr:\n{}",
            self.out.status,
            self.secs,
            self.stdout(),
            self.stderr()
        );
    }
    /// The job succeeded and each of its `n` ranks reported its cases (one summary line each, see
    /// [`summaries`]) with none wrong; returns those lines, by rank.
    pub fn assert_every_rank_exact(&self, n: usize) -> Vec<RankLine> {
        self.assert_ok();
        let lines = summaries(self, n);
        for l in &lines {
            assert!(
                l.cases > 0 && l.wrong == 0,
                "rank {} ran no case or found some wrong: {}\n{}",
                l.rank,
                l.line,
                self.stderr()
            );
        }
        lines
    }
    /// The job key rank 0 of `boad-check` prints (`job <16 hex digits>`).
    pub fn key(&self) -> String {
        self.stdout()
            .lines()
            .find_map(|l| l.strip_prefix("job "))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no job key printed:\n{}", self.stdout()))
    }
}

/// A line a rank printed (`rank R: ...` on the worker's stdout, or `boad stats: rank R ...`, the
/// library's `BOAD_STATS` line on stderr), with its `name=value` counters.
#[derive(Clone, Debug)]
pub struct RankLine {
    pub rank: usize,
    pub line: String,
    /// For a summary line: the cases run and found wrong.
    pub cases: u64,
    pub wrong: u64,
    /// The `path=` word (`none` if the line has none).
    pub path: String,
    counters: std::collections::HashMap<String, u64>,
}

impl RankLine {
    fn parse(rank: usize, line: &str) -> RankLine {
        let counters = line
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.trim_end_matches(',').parse().ok()?)))
            .collect();
        let path = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("path="))
            .unwrap_or("none")
            .to_string();
        // "rank R: [MODE: ]N cases, B wrong; ..."
        let (cases, wrong) = line
            .split_once(" cases, ")
            .and_then(|(before, rest)| {
                let c = before.rsplit(' ').next()?;
                let (w, _) = rest.split_once(" wrong")?;
                Some((c.parse().ok()?, w.parse().ok()?))
            })
            .unwrap_or((0, u64::MAX));
        RankLine {
            rank,
            line: line.to_string(),
            cases,
            wrong,
            path,
            counters,
        }
    }

    /// Counter `name` of this line; fails the test if the line has none.
    pub fn get(&self, name: &str) -> u64 {
        *self
            .counters
            .get(name)
            .unwrap_or_else(|| panic!("no {name}= in {}", self.line))
    }
}

/// The ranks of `lines` that sent datagrams (on the hierarchical path: the hosts' leaders only).
pub fn senders(lines: &[RankLine]) -> Vec<usize> {
    lines
        .iter()
        .filter(|l| l.get("datagrams_sent") > 0)
        .map(|l| l.rank)
        .collect()
}

/// The lines of `text` that start with `rank R: ` and contain `marker`, with their rank, sorted by
/// rank (any number of them).
pub fn lines_of(text: &str, marker: &str) -> Vec<RankLine> {
    let mut lines: Vec<RankLine> = text
        .lines()
        .filter(|l| l.contains(marker))
        .filter_map(|l| {
            let rest = l.strip_prefix("rank ")?;
            let (r, _) = rest.split_once(": ")?;
            Some(RankLine::parse(r.parse().ok()?, l))
        })
        .collect();
    lines.sort_by_key(|l| l.rank);
    lines
}

/// The ranks of `lines`, in order.
pub fn ranks_of(lines: &[RankLine]) -> Vec<usize> {
    lines.iter().map(|l| l.rank).collect()
}

/// The lines of `text` that start with `rank R: ` and contain `marker`, with their rank: exactly one
/// for each rank of `ranks` (fails the test otherwise), sorted by rank.
pub fn rank_lines(text: &str, marker: &str, ranks: &[usize]) -> Vec<RankLine> {
    let lines = lines_of(text, marker);
    let got = ranks_of(&lines);
    assert_eq!(
        got, ranks,
        "one line with {marker:?} from each of these ranks:\n{text}"
    );
    lines
}

/// The summary line (`rank R: N cases, B wrong; path=P name=value ...`) of each of the `n` ranks of
/// a `boad-check` job, by rank.
pub fn summaries(job: &Job, n: usize) -> Vec<RankLine> {
    let all: Vec<usize> = (0..n).collect();
    rank_lines(&job.stdout(), " wrong; path=", &all)
}

/// The `BOAD_STATS` line (`boad stats: rank R ...`) of each rank of `ranks`, by rank.
pub fn rank_stats(job: &Job, ranks: &[usize]) -> Vec<RankLine> {
    let err = job.stderr();
    let text: String = err
        .lines()
        .filter_map(|l| l.strip_prefix("boad stats: rank ")?.split_once(' '))
        .map(|(r, rest)| format!("rank {r}: boad stats: {rest}\n"))
        .collect();
    rank_lines(&text, ": boad stats: ", ranks)
}

/// The errors of a `boad-check mismatch` job of `n` ranks (its stdout): each rank reports each
/// mismatch once, and each report quotes what went wrong: both calls, from a rank that saw the
/// mismatch itself (at least one did) or was told by another (`failed on rank R: ` and that rank's
/// error). With `over_shm`, a reason passed on through shared memory keeps only its first 240 bytes
/// (an abort slot), so one relayed over several ranks may lose its end: such a report must quote
/// at least one of the calls.
pub fn assert_mismatches_reported(out: &str, n: usize, over_shm: bool) {
    let all: Vec<usize> = (0..n).collect();
    for (what, quoted) in [
        (
            "count mismatch",
            &[
                "allreduce(count=10, dtype=i32, op=sum)",
                "allreduce(count=11, dtype=i32, op=sum)",
            ][..],
        ),
        (
            "dtype mismatch",
            &[
                "allreduce(count=4, dtype=i32, op=sum)",
                "allreduce(count=4, dtype=u32, op=sum)",
            ],
        ),
        (
            "op mismatch",
            &[
                "allreduce(count=4, dtype=u8, op=min)",
                "allreduce(count=4, dtype=u8, op=max)",
            ],
        ),
        (
            "root mismatch",
            &[
                "bcast(count=3, dtype=u16, root=0)",
                "bcast(count=3, dtype=u16, root=1)",
            ],
        ),
        ("float with band", &["op band is not defined on f32"]),
        ("local error", &["rejected by the binding"]),
    ] {
        let marker = format!(": {what}: error as expected: ");
        let lines = rank_lines(out, &marker, &all);
        let direct = count(&lines, |l| {
            !l.line.contains(" failed on rank ") && quoted.iter().all(|q| l.line.contains(q))
        });
        let relayed = count(&lines, |l| {
            let quotes = quoted.iter().filter(|q| l.line.contains(*q)).count();
            l.line.contains(" failed on rank ")
                && (quotes == quoted.len() || (over_shm && quotes > 0))
        });
        assert!(direct >= 1, "no rank saw the {what} itself:\n{out}");
        assert_eq!(
            direct + relayed,
            n,
            "every rank's {what} error quotes {quoted:?}:\n{out}"
        );
    }
}

/// How many of `lines` satisfy `f`.
pub fn count(lines: &[RankLine], f: impl Fn(&RankLine) -> bool) -> usize {
    lines.iter().filter(|l| f(l)).count()
}

/// Counters of boadrun's `boadrun stats: wire-loss ...` line (`dropped`, and `host<h>` per host):
/// the job ran with `--wire-loss` and `BOAD_STATS=1`. Fails the test unless every one of the
/// `hosts` hosts dropped some of its datagrams.
pub fn wire_loss_dropped(job: &Job, hosts: usize) -> std::collections::HashMap<String, u64> {
    let err = job.stderr();
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("boadrun stats: wire-loss "))
        .collect();
    assert_eq!(lines.len(), 1, "one wire-loss line:\n{err}");
    let c: std::collections::HashMap<String, u64> = lines[0]
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect();
    let per_host: Vec<u64> = (0..hosts)
        .map(|h| {
            *c.get(&format!("host{h}"))
                .unwrap_or_else(|| panic!("no host{h}= in {}", lines[0]))
        })
        .collect();
    assert!(
        per_host.iter().all(|&d| d > 0),
        "every host lost datagrams on the wire: {}",
        lines[0]
    );
    assert_eq!(c["dropped"], per_host.iter().sum::<u64>(), "{}", lines[0]);
    c
}

/// Runs `cmd` (a boadrun command line) with `BOAD_TRANSPORT=transport`, 1 KiB chunks (unless
/// `env` says otherwise) and `env`, one job at a time; SIGKILLs boadrun (by pid; its ranks die with
/// it) and fails after `limit`.
pub fn run_cmd(mut cmd: Command, transport: &str, env: &[(&str, &str)], limit: Duration) -> Job {
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let _serial = serial();
    cmd.env("BOAD_CHUNK_BYTES", "1024")
        .env("BOAD_TRANSPORT", transport)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let child = cmd.spawn().expect("start boadrun");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => Job {
            out: out.expect("wait for boadrun"),
            secs: start.elapsed().as_secs_f64(),
        },
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            let out = rx.recv().expect("boadrun output").expect("wait");
            panic!(
                "boadrun {args:?} over {transport} hung for {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Segments of job `key` (its hosts 0..64) left in /dev/shm.
pub fn leftover_segments(key: &str) -> Vec<String> {
    let job = u64::from_str_radix(key, 16).unwrap_or_else(|_| panic!("job key {key:?}"));
    (0..64)
        .map(|h| boad_proto::shm::segment_path(job, h))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect()
}

/// `name=value` pairs of boadrun's `boadrun stats: kernel ...` line (the job ran with
/// `BOAD_STATS=1` and the kernel path attached).
pub fn kernel_counters(job: &Job) -> std::collections::HashMap<String, u64> {
    let err = job.stderr();
    let line = err
        .lines()
        .find(|l| l.starts_with("boadrun stats: kernel"))
        .unwrap_or_else(|| panic!("no kernel counters in:\n{err}"));
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// Reduction programs a `boad-check forge` job loads: its allreduces (i64 sum) and barriers (u8
/// bor). Fewer programs to verify when the job starts.
pub const FORGE_FOLDS: (&str, &str) = ("BOAD_KERNEL_FOLDS", "sum:i64,bor:u8");

/// The `name=value` of a `boad stats: rank` line.
fn stat(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

/// Checks a `boad-check forge ROUNDS` job of `n` ranks run with `BOAD_STATS=1` on the kernel path
/// (`kernel_ranks` of them, the others took no kernel-path collective: non-leaders of the
/// hierarchical path): every rank's allreduces were exact, rank 0 sent `want_forged` forged
/// datagrams, the kernel counted exactly those as coming from the wrong source, and the ranks'
/// transports dropped them as foreign.
pub fn assert_forgeries_ignored(
    job: &Job,
    n: usize,
    rounds: u64,
    want_forged: u64,
    kernel_ranks: usize,
) {
    job.assert_every_rank_exact(n);
    let (out, err) = (job.stdout(), job.stderr());
    let forged: Vec<u64> = out
        .lines()
        .filter_map(|l| {
            l.strip_prefix("forged ")?
                .strip_suffix(" datagrams")?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(
        forged,
        vec![want_forged],
        "rank 0 sent the forgeries:\n{out}"
    );
    let c = kernel_counters(job);
    assert_eq!(
        c["wrong_source"], want_forged,
        "the kernel counted every forgery, and nothing else: {c:?}"
    );
    assert!(c["folded"] > 0 && c["passed"] > 0, "{c:?}");
    // Each forgery reached a rank's socket unfolded, and its transport dropped it.
    let foreign: u64 = out
        .lines()
        .filter(|l| l.contains(" 0 wrong; path="))
        .map(|l| stat(l, "foreign"))
        .sum();
    assert!(
        foreign >= want_forged,
        "foreign {foreign} < {want_forged}:\n{out}"
    );
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("boad stats: rank"))
        .collect();
    assert_eq!(lines.len(), n, "{err}");
    // The allgather and every allreduce: more than `rounds`.
    let kernel = lines
        .iter()
        .filter(|l| stat(l, "collectives_kernel") > rounds)
        .count();
    let none = lines
        .iter()
        .filter(|l| stat(l, "collectives_kernel") == 0)
        .count();
    assert_eq!(
        (kernel, none),
        (kernel_ranks, n - kernel_ranks),
        "the ranks that took the kernel path:\n{err}"
    );
}

/// How long a kernel service may take to load its programs on a busy machine.
pub const SERVICE_LOAD_WAIT: Duration = Duration::from_secs(180);

/// A kernel service in some namespace hosts: `boadd --socket @NAME --iface eth0` started in each
/// host's network namespace, so that the one abstract name is each host's own service. Stopped
/// (and its log removed with the caller's directory) on every exit path.
pub struct HostServices {
    /// Per service: its host, the process, its log.
    services: Vec<(usize, std::process::Child, PathBuf)>,
    /// The socket, `@NAME`: give it to jobs as `BOAD_SERVICE_SOCKET`.
    pub name: String,
}

impl HostServices {
    /// One service in each host of `hosts`, logging to files in `dir`; returns once every one
    /// listens.
    pub fn start(hosts: &boad_test_support::sshhosts::SshHosts, dir: &std::path::Path) -> Self {
        let all: Vec<usize> = (0..hosts.hosts().len()).collect();
        HostServices::start_on(hosts, dir, &all)
    }

    /// One service in each of hosts `which` of `hosts`.
    pub fn start_on(
        hosts: &boad_test_support::sshhosts::SshHosts,
        dir: &std::path::Path,
        which: &[usize],
    ) -> Self {
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let nth = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut services = HostServices {
            services: Vec::new(),
            name: format!("@boadd-test-{}-{nth}", std::process::id()),
        };
        for &h in which {
            let log_path = dir.join(format!("boadd-{h}.log"));
            let log = std::fs::File::create(&log_path).expect("log");
            let child = hosts
                .command_in(h, boadd())
                .args(["--socket", &services.name, "--iface", "eth0"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("boadd");
            services.services.push((h, child, log_path));
        }
        let start = Instant::now();
        for i in 0..services.services.len() {
            let h = services.services[i].0;
            while !services.log(h).contains("serving on") {
                if let Ok(Some(status)) = services.services[i].1.try_wait() {
                    panic!("boadd of host {h} ended ({status}):\n{}", services.log(h));
                }
                assert!(
                    start.elapsed() < SERVICE_LOAD_WAIT,
                    "boadd of host {h} did not listen within {SERVICE_LOAD_WAIT:?}:\n{}",
                    services.log(h)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        services
    }

    /// The log of host `h`'s service.
    pub fn log(&self, h: usize) -> String {
        self.services
            .iter()
            .find(|s| s.0 == h)
            .and_then(|s| std::fs::read_to_string(&s.2).ok())
            .unwrap_or_default()
    }

    /// `boadd --status` of host `h`'s service, run in that host.
    pub fn status(&self, hosts: &boad_test_support::sshhosts::SshHosts, h: usize) -> String {
        let out = hosts
            .command_in(h, boadd())
            .args(["--status", "--socket", &self.name])
            .output()
            .expect("boadd --status");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Checks that every service holds no job and no communicator (within moments of a job's
    /// end, when each service has seen its connections close).
    pub fn assert_idle(&self, hosts: &boad_test_support::sshhosts::SshHosts) {
        for &(h, _, _) in &self.services {
            let start = Instant::now();
            loop {
                let status = self.status(hosts, h);
                if status.contains("boadd: 0 jobs, communicators 0/") {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "host {h}: {status}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The services' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.services.iter().map(|s| s.1.id()).collect()
    }

    /// SIGTERM to each service, which must end cleanly.
    pub fn stop(mut self) {
        for (h, child, _) in &mut self.services {
            // SAFETY: kill only sends a signal to our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let status = child.wait().expect("wait boadd");
            assert!(status.success(), "boadd of host {h}: {status}");
        }
        self.services.clear();
    }
}

impl Drop for HostServices {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.services {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
