//! `boadrun`'s kernel-path setup: the KERNEL line, the fallback to userspace, `--transport kernel`
//! failing, cleanup after SIGKILL, `--check`.
//!
//! Every job runs inside a throwaway named network namespace (`ip netns exec`), so the tests never
//! touch the machine's own `lo` and do not collide with other users of it; the namespace is deleted
//! when the test ends, passed or failed. Jobs load no reduction programs (`BOAD_KERNEL_FOLDS=none`)
//! to stay quick: the XDP entry and TC programs are what the launcher attaches.

#[cfg(feature = "kernel")]
use std::io::{BufRead, BufReader};
#[cfg(feature = "kernel")]
use std::process::Child;
use std::process::{Command, Output, Stdio};
#[cfg(feature = "kernel")]
use std::time::{Duration, Instant};

const BOADRUN: &str = env!("CARGO_BIN_EXE_boadrun");

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Root is needed for network namespaces and eBPF; CI runs as root. Not root: the test fails, or
/// with `BOAD_ALLOW_SKIP` set is recorded as skipped.
#[cfg(feature = "kernel")]
fn root() -> bool {
    boad_test_support::require_root()
}

/// A named network namespace with `lo` up, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("boadrun-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let ok = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("run ip");
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        };
        ok(&["netns", "add", &name]);
        let ns = Netns(name);
        ok(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }

    /// `boadrun ARGS` inside the namespace, with quick kernel loads and `BOAD_STATS` off.
    fn boadrun(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, BOADRUN])
            .args(args)
            .env("BOAD_KERNEL_FOLDS", "none")
            .env_remove("BOAD_TRANSPORT")
            .env_remove("BOAD_STATS")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.boadrun(args)
            .envs(env.iter().copied())
            .output()
            .expect("run boadrun")
    }

    #[cfg(feature = "kernel")]
    /// Whether `lo` in the namespace has an XDP program.
    fn lo_xdp(&self) -> bool {
        let out = Command::new("ip")
            .args(["-n", &self.0, "-d", "link", "show", "dev", "lo"])
            .output()
            .expect("ip link");
        text(&out.stdout).contains("xdp")
    }

    /// TCX programs (ingress + egress) on `lo` in the namespace.
    #[cfg(feature = "kernel")]
    fn lo_tcx(&self) -> usize {
        use aya::programs::{tc::TcAttachType, SchedClassifier};
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let f = std::fs::File::open(&path).expect("open netns");
            // SAFETY: setns moves only this thread; `f` is an open namespace file.
            assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            [TcAttachType::Ingress, TcAttachType::Egress]
                .into_iter()
                .map(|t| SchedClassifier::query_tcx("lo", t).map_or(0, |(_, p)| p.len()))
                .sum()
        })
        .join()
        .expect("query thread")
    }

    #[cfg(feature = "kernel")]
    fn assert_lo_clean(&self) {
        assert!(!self.lo_xdp(), "XDP left on lo of {}", self.0);
        assert_eq!(self.lo_tcx(), 0, "TCX left on lo of {}", self.0);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

#[cfg(feature = "kernel")]
/// A running boadrun, SIGKILLed on drop (so a failing test leaves nothing attached).
struct Job(Child);

#[cfg(feature = "kernel")]
impl Drop for Job {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(feature = "kernel")]
/// Waits until `cond` holds, for at most 10 s.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(feature = "kernel")]
/// A rank speaking the rendezvous protocol: binds a UDP socket, says HELLO with it (as `$IP` if
/// set), prints every line it gets until `END` or `ABORT`, then with `PING` rank 0 sends a datagram
/// to rank 1, which prints it; then sleeps `$HOLD` seconds.
const PY_RANK: &str = r#"
import os, socket, sys, time
r = int(os.environ["BOAD_RANK"])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((os.environ["BOAD_BIND_ADDR"], 0))
port = u.getsockname()[1]
ip = os.environ.get("IP", os.environ["BOAD_BIND_ADDR"])
s = socket.socket(fileno=int(os.environ["BOAD_RENDEZVOUS_FD"]))
s.sendall(f"HELLO {r} {os.environ['BOAD_HOST_ID']} {ip} {port} 0 {os.getpid()}\n".encode())
f = s.makefile()
table = []
while True:
    line = f.readline().rstrip("\n")
    table.append(line)
    if line in ("END", "") or line.startswith("ABORT"):
        break
print(f"{r}: " + " | ".join(t if t.startswith(("TABLE", "KERNEL", "END", "ABORT")) else "entry" for t in table), flush=True)
kernel = [t for t in table if t.startswith("KERNEL ")]
if kernel:
    ports = [int(t.split()[3]) for t in table[1:-2]]
    trigger = int(kernel[0].split()[1])
    print(f"{r}: trigger-is-new={trigger not in ports}", flush=True)
if os.environ.get("PING") and table[-1] == "END":
    peer = table[2].split()
    if r == 0:
        u.sendto(b"ping", (peer[2], int(peer[3])))
    elif r == 1:
        u.settimeout(5)
        print(f"1: got {u.recv(100).decode()}", flush=True)
time.sleep(float(os.environ.get("HOLD", "0")))
"#;

#[cfg(feature = "kernel")]
fn sorted(out: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = text(out).lines().map(str::to_string).collect();
    v.sort();
    v
}

#[cfg(feature = "kernel")]
/// The lines boadrun itself wrote to stderr, but for how long loading the programs took (said when
/// it took a second or more, so on a busy machine only; [`LOADED`]).
fn own_lines(err: &[u8]) -> Vec<String> {
    text(err)
        .lines()
        .filter(|l| l.starts_with("boadrun") && !l.starts_with(LOADED))
        .map(str::to_string)
        .collect()
}

#[cfg(feature = "kernel")]
const LOADED: &str = "boadrun: kernel path: programs loaded and attached in ";

#[cfg(feature = "kernel")]
const FALLBACK_END: &str = "); collectives use the userspace path";

#[cfg(feature = "kernel")]
#[test]
fn kernel_line_reaches_the_ranks() {
    if !root() {
        return;
    }
    let ns = Netns::new("kline");
    let out = ns.run(
        &["--transport", "kernel", "-n", "3", "python3", "-c", PY_RANK],
        &[("BOAD_STATS", "1")],
    );
    assert!(out.status.success(), "{out:?}");
    let want = "TABLE 3 | entry | entry | entry | KERNEL";
    let lines = sorted(&out.stdout);
    assert_eq!(lines.len(), 6, "{out:?}");
    for r in 0..3 {
        assert!(
            lines[2 * r].starts_with(&format!("{r}: {want} ")) && lines[2 * r].ends_with(" | END"),
            "{out:?}"
        );
        assert_eq!(lines[2 * r + 1], format!("{r}: trigger-is-new=True"));
    }
    let own = own_lines(&out.stderr);
    assert_eq!(own.len(), 1, "{out:?}");
    assert!(
        own[0].starts_with("boadrun stats: kernel hosts=1 folded=0 dropped=0"),
        "{out:?}"
    );
    // Under BOAD_STATS boadrun says how long loading took, once.
    assert_eq!(text(&out.stderr).matches(LOADED).count(), 1, "{out:?}");
    ns.assert_lo_clean();
}

#[cfg(feature = "kernel")]
#[test]
fn kernel_line_on_a_virtual_cluster() {
    if !root() {
        return;
    }
    let ns = Netns::new("kcluster");
    let out = ns.run(
        &["--hosts", "2", "-n", "3", "python3", "-c", PY_RANK],
        &[("BOAD_STATS", "1"), ("PING", "1")],
    );
    assert!(out.status.success(), "{out:?}");
    let lines = sorted(&out.stdout);
    assert_eq!(lines.len(), 7, "{out:?}");
    assert!(
        lines[0].starts_with("0: TABLE 3 | entry | entry | entry | KERNEL ")
            && lines[0].ends_with(" | END"),
        "{out:?}"
    );
    assert!(lines.contains(&"1: got ping".to_string()), "{out:?}");
    assert!(
        text(&out.stderr).contains("boadrun stats: kernel hosts=2 "),
        "{out:?}"
    );
    // Nothing was attached in the namespace boadrun ran in: the hosts are namespaces of their own.
    ns.assert_lo_clean();
}

/// A second job on the same `lo` cannot attach: with auto (which on one host does not try: its
/// ranks use shared memory) it runs undisturbed by the first job's programs; with `--transport
/// kernel` it fails before starting any rank.
#[cfg(feature = "kernel")]
#[test]
fn second_job_on_lo_falls_back() {
    if !root() {
        return;
    }
    let ns = Netns::new("ktwo");
    let mut first = Job(ns
        .boadrun(&["--transport", "kernel", "-n", "2", "python3", "-c", PY_RANK])
        .env("HOLD", "30")
        .env("BOAD_STATS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the first job"));
    let stdout = first.0.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    for _ in 0..4 {
        let l = lines.next().expect("a line").expect("read");
        assert!(
            l.contains("KERNEL") || l.contains("trigger-is-new=True"),
            "{l}"
        );
    }
    assert!(ns.lo_xdp());

    let out = ns.run(&["-n", "2", "python3", "-c", PY_RANK], &[("PING", "1")]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        sorted(&out.stdout),
        [
            "0: TABLE 2 | entry | entry | END",
            "1: TABLE 2 | entry | entry | END",
            "1: got ping"
        ]
    );
    assert!(own_lines(&out.stderr).is_empty(), "{out:?}");

    let out = ns.run(
        &["--transport", "kernel", "-n", "2", "python3", "-c", PY_RANK],
        &[],
    );
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(out.stdout.is_empty(), "a rank started: {out:?}");
    assert_eq!(
        own_lines(&out.stderr),
        ["boadrun: kernel path unavailable: lo already has an XDP program (another boad job?)"]
    );

    // The first job's programs saw the second job's traffic as none of theirs.
    let pid = i32::try_from(first.0.id()).expect("pid");
    // SAFETY: kill() has no memory-safety preconditions; `pid` is our unreaped child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let mut err = String::new();
    if let Some(mut e) = first.0.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut err).expect("read stderr");
    }
    let status = first.0.wait().expect("wait");
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{err}");
    assert!(err.contains(" foreign=0 "), "{err}");
    ns.assert_lo_clean();
}

/// Filling the maps fails (a rank with an IPv6 address): auto (on a virtual cluster, where it
/// uses the kernel path) says so once and falls back; kernel aborts the job.
#[cfg(feature = "kernel")]
#[test]
fn map_filling_failure() {
    if !root() {
        return;
    }
    let ns = Netns::new("kfill");
    let out = ns.run(
        &["--hosts", "2", "-n", "2", "python3", "-c", PY_RANK],
        &[("IP", "::1")],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        sorted(&out.stdout),
        [
            "0: TABLE 2 | entry | entry | END",
            "1: TABLE 2 | entry | entry | END"
        ]
    );
    assert_eq!(
        own_lines(&out.stderr),
        [format!(
            "boadrun: kernel path unavailable (rank 0 has an IPv6 address (::1){FALLBACK_END}"
        )]
    );
    ns.assert_lo_clean();

    let out = ns.run(
        &["--transport", "kernel", "-n", "2", "python3", "-c", PY_RANK],
        &[("IP", "::1")],
    );
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let why = "ABORT kernel path: rank 0 has an IPv6 address (::1)";
    assert_eq!(
        sorted(&out.stdout),
        [format!("0: {why}"), format!("1: {why}")]
    );
    assert!(
        text(&out.stderr).contains("boadrun: rendezvous aborted: kernel path: rank 0 has an IPv6"),
        "{out:?}"
    );
    ns.assert_lo_clean();
}

#[cfg(feature = "kernel")]
/// The namespace (inode) of every live process.
fn live_netns() -> std::collections::HashSet<String> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path().join("ns/net")).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

/// Starts a job holding its ranks for 30 s and returns once every rank has the table.
#[cfg(feature = "kernel")]
fn held_job(ns: &Netns, args: &[&str], ranks: usize) -> Job {
    let mut job = Job(ns
        .boadrun(args)
        .env("HOLD", "30")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start boadrun"));
    let stdout = job.0.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    for _ in 0..2 * ranks {
        let l = lines.next().expect("a line").expect("read");
        assert!(l.contains("KERNEL") || l.contains("trigger-is-new"), "{l}");
    }
    job
}

#[cfg(feature = "kernel")]
#[test]
fn sigkill_leaves_nothing_attached() {
    if !root() {
        return;
    }
    // On the namespace's lo.
    let ns = Netns::new("kkill");
    let mut job = held_job(
        &ns,
        &["--transport", "kernel", "-n", "2", "python3", "-c", PY_RANK],
        2,
    );
    assert!(ns.lo_xdp() && ns.lo_tcx() == 1, "programs not attached");
    job.0.kill().expect("SIGKILL boadrun");
    job.0.wait().expect("reap boadrun");
    wait_for("lo clean after SIGKILL", || {
        !ns.lo_xdp() && ns.lo_tcx() == 0
    });

    // On a virtual cluster: the hosts' namespaces (and with them their interfaces) are gone.
    let before = live_netns();
    let mut job = held_job(
        &ns,
        &["--hosts", "2", "-n", "2", "python3", "-c", PY_RANK],
        2,
    );
    let ours: Vec<String> = live_netns().difference(&before).cloned().collect();
    assert!(ours.len() >= 3, "namespaces of the cluster: {ours:?}");
    job.0.kill().expect("SIGKILL boadrun");
    job.0.wait().expect("reap boadrun");
    wait_for("cluster namespaces gone", || {
        let live = live_netns();
        ours.iter().all(|n| !live.contains(n))
    });
    ns.assert_lo_clean();
}

#[test]
fn check_reports_the_machine() {
    // SAFETY: geteuid has no preconditions.
    let (out, in_ns) = if unsafe { libc::geteuid() } == 0 {
        let ns = Netns::new("kcheck");
        (ns.run(&["--check"], &[]), true)
    } else {
        let out = Command::new(BOADRUN)
            .arg("--check")
            .env("BOAD_KERNEL_FOLDS", "none")
            .env_remove("BOAD_TRANSPORT")
            .output()
            .expect("run boadrun");
        (out, false)
    };
    assert!(out.status.success(), "{out:?}");
    let report = text(&out.stdout);
    for field in [
        "kernel:          Linux ",
        "BTF:             ",
        "CAP_BPF:         ",
        "CAP_NET_ADMIN:   ",
        "eBPF programs:   ",
        "BOAD_TRANSPORT:  auto",
        "lo:              ",
        "path:            ",
    ] {
        assert!(report.contains(field), "no {field:?} in\n{report}");
    }
    if cfg!(feature = "kernel") {
        assert!(report.contains("eBPF programs:   compiled in"), "{report}");
        if in_ns {
            assert!(
                report.contains("lo:              no XDP program"),
                "{report}"
            );
            assert!(report.contains("path:            kernel ("), "{report}");
        }
    } else {
        assert!(
            report.contains(
                "path:            userspace: the kernel path is not compiled in (build boadrun with --features kernel)"
            ),
            "{report}"
        );
    }
    let out = Command::new(BOADRUN)
        .args(["--check", "--transport", "udp"])
        .output()
        .expect("run boadrun");
    assert!(
        text(&out.stdout).contains("path:            userspace: BOAD_TRANSPORT=udp"),
        "{out:?}"
    );
}

#[cfg(not(feature = "kernel"))]
#[test]
fn transport_kernel_needs_the_feature() {
    let out = Command::new(BOADRUN)
        .args([
            "--transport",
            "kernel",
            "-n",
            "2",
            "sh",
            "-c",
            "echo started",
        ])
        .output()
        .expect("run boadrun");
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert_eq!(
        text(&out.stderr),
        "boadrun: kernel path unavailable: the kernel path is not compiled in (build boadrun with \
         --features kernel)\n"
    );
    // auto is quiet about it and exports its choice.
    let out = Command::new(BOADRUN)
        .args(["-n", "1", "sh", "-c", "echo $BOAD_TRANSPORT"])
        .env_remove("BOAD_TRANSPORT")
        .output()
        .expect("run boadrun");
    assert_eq!(
        (text(&out.stdout), text(&out.stderr)),
        ("auto\n".into(), String::new())
    );
    let out = Command::new(BOADRUN)
        .args(["-n", "1", "sh", "-c", "echo $BOAD_TRANSPORT"])
        .env("BOAD_TRANSPORT", "shm")
        .output()
        .expect("run boadrun");
    assert_eq!(text(&out.stdout), "shm\n");
}
