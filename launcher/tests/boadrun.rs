//! End-to-end tests of `boadrun` with real processes (`sh` and `python3` as ranks).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;

use common::{boadrun, cmd, sorted_lines, text};

#[test]
fn runs_every_rank() {
    let out = boadrun(&[
        "-n",
        "3",
        "sh",
        "-c",
        "echo rank=$BOAD_RANK size=$BOAD_SIZE",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        sorted_lines(&out.stdout),
        ["rank=0 size=3", "rank=1 size=3", "rank=2 size=3"]
    );
}

#[test]
fn tag_output_prefixes_every_line() {
    let out = boadrun(&[
        "--tag-output",
        "-n",
        "2",
        "sh",
        "-c",
        "echo a$BOAD_RANK; echo e$BOAD_RANK >&2; printf tail$BOAD_RANK",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        sorted_lines(&out.stdout),
        ["[0] a0", "[0] tail0", "[1] a1", "[1] tail1"]
    );
    assert_eq!(sorted_lines(&out.stderr), ["[0] e0", "[1] e1"]);
}

#[test]
fn exports_the_job_environment() {
    let script = "echo $BOAD_RANK $BOAD_SIZE $BOAD_LOCAL_RANK $BOAD_LOCAL_SIZE $BOAD_HOST_ID \
                  $BOAD_JOB $BOAD_BIND_ADDR $BOAD_TIMEOUT_MS $BOAD_RENDEZVOUS_FD $BOAD_TRANSPORT; \
                  test -S /proc/$$/fd/$BOAD_RENDEZVOUS_FD && echo socket-ok; read x; echo stdin=$?";
    let out = boadrun(&[
        "-n",
        "2",
        "--timeout-ms",
        "1234",
        "--bind",
        "127.0.0.2",
        "sh",
        "-c",
        script,
    ]);
    assert!(out.status.success(), "{out:?}");
    let lines = sorted_lines(&out.stdout);
    assert_eq!(lines.len(), 6, "{lines:?}");
    let rows: Vec<Vec<&str>> = lines[..2].iter().map(|l| l.split(' ').collect()).collect();
    for (r, row) in rows.iter().enumerate() {
        let r = r.to_string();
        assert_eq!(row[..5], [r.as_str(), "2", r.as_str(), "2", "0"]);
        assert!(
            row[5].len() == 16 && row[5].chars().all(|c| c.is_ascii_hexdigit()),
            "{row:?}"
        );
        assert_eq!(row[6..8], ["127.0.0.2", "1234"]);
        assert!(row[8].parse::<u32>().is_ok_and(|fd| fd > 2), "{row:?}");
        assert_eq!(row[9], "udp");
    }
    assert_eq!(rows[0][5], rows[1][5], "one job key for all ranks");
    assert_eq!(lines[2..], ["socket-ok", "socket-ok", "stdin=1", "stdin=1"]);
}

#[test]
fn transport_flag_overrides_the_environment() {
    let out = boadrun(&["--transport", "shm", "sh", "-c", "echo $BOAD_TRANSPORT"]);
    assert_eq!(text(&out.stdout), "shm\n", "{out:?}");
    let out = boadrun(&["--transport", "rdma", "true"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).contains("invalid value 'rdma'"),
        "{out:?}"
    );
}

#[test]
fn missing_or_unrunnable_program() {
    let out = boadrun(&["-n", "2", "./no-such-boad-app"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        text(&out.stderr).contains("boadrun: ./no-such-boad-app: no such file"),
        "{out:?}"
    );
    let out = boadrun(&["no-such-boad-app-in-path"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(text(&out.stderr).contains("command not found"), "{out:?}");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("app");
    std::fs::write(&file, "#!/bin/sh\necho ran\n").expect("write");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = boadrun(&[file.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(126));
    assert!(text(&out.stderr).contains("is not executable"), "{out:?}");
    assert!(out.stdout.is_empty());
    let out = boadrun(&[dir.path().to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(126));
    assert!(text(&out.stderr).contains("is a directory"), "{out:?}");
}

#[test]
fn singleton_exit_codes() {
    let out = boadrun(&["sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert!(text(&out.stderr).contains("rank 0 (pid "), "{out:?}");
    let out = boadrun(&["-n", "1", "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(137));
    assert!(
        text(&out.stderr).contains("was killed by signal SIGKILL"),
        "{out:?}"
    );
}

#[test]
fn failing_rank_ends_the_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Rank 1 fails; rank 2 ignores SIGTERM, so it takes SIGKILL to stop it.
    let script = "echo $$ > \"$D/pid.$BOAD_RANK\"; \
                  if [ $BOAD_RANK = 1 ]; then sleep 0.3; exit 3; fi; \
                  if [ $BOAD_RANK = 2 ]; then trap '' TERM; fi; exec sleep 30";
    let start = Instant::now();
    let out = cmd()
        .args(["-n", "3", "--kill-grace-ms", "300", "sh", "-c", script])
        .env("D", dir.path())
        .output()
        .expect("run boadrun");
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains("boadrun: rank 1 (pid ") && err.contains("exited with status 3"),
        "{err}"
    );
    for r in [0, 2] {
        let pid = std::fs::read_to_string(dir.path().join(format!("pid.{r}"))).expect("pid file");
        let proc = format!("/proc/{}", pid.trim());
        assert!(
            !std::path::Path::new(&proc).exists(),
            "rank {r} ({proc}) outlived boadrun"
        );
    }
}

#[test]
fn forwards_sigterm() {
    let script = "trap 'echo got term $BOAD_RANK; exit 0' TERM; echo ready; sleep 30 & wait";
    let mut child = cmd()
        .args(["-n", "2", "sh", "-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn boadrun");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    for _ in 0..2 {
        assert_eq!(lines.next().expect("a line").expect("read"), "ready");
    }
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY: kill() has no memory-safety preconditions; `pid` is our unreaped child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let start = Instant::now();
    let mut rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("wait");
    assert!(start.elapsed() < Duration::from_secs(5));
    rest.sort();
    assert_eq!(rest, ["got term 0", "got term 1"]);
    assert_eq!(status.code(), Some(0));
}

/// A rank speaking the rendezvous protocol on its connection: says HELLO as rank `$CLAIM` (default
/// its own), prints every line it gets until `END` or `ABORT`; then rank 1 exits 5 and rank 0 prints
/// one more line.
const PY_RANK: &str = r#"
import os, socket, sys
r = int(os.environ["BOAD_RANK"])
s = socket.socket(fileno=int(os.environ["BOAD_RENDEZVOUS_FD"]))
s.sendall(f"HELLO {os.environ.get('CLAIM', r)} 0 127.0.0.1 {5000 + r} 0 {100 + r}\n".encode())
f = s.makefile()
while True:
    line = f.readline().rstrip("\n")
    print(f"{r}: {line}", flush=True)
    if line in ("END", "") or line.startswith("ABORT"):
        break
if line == "END":
    if r == 1:
        sys.exit(5)
    print(f"{r}: {f.readline().rstrip()}", flush=True)
"#;

#[test]
fn rendezvous_table_and_exit_lines() {
    let out = boadrun(&["-n", "2", "python3", "-c", PY_RANK]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let mut want = Vec::new();
    for r in 0..2 {
        for l in [
            "TABLE 2",
            "0 0 127.0.0.1 5000 0 100",
            "1 0 127.0.0.1 5001 0 101",
            "END",
        ] {
            want.push(format!("{r}: {l}"));
        }
    }
    want.push("0: EXIT 1 5".to_string());
    want.sort();
    assert_eq!(sorted_lines(&out.stdout), want);
}

#[test]
fn rendezvous_aborts() {
    // Both ranks claim rank 0: rank 1's connection cannot speak for rank 0.
    let out = cmd()
        .args(["-n", "2", "python3", "-c", PY_RANK])
        .env("CLAIM", "0")
        .output()
        .expect("run boadrun");
    let lines = sorted_lines(&out.stdout);
    assert_eq!(
        lines,
        [
            "0: ABORT rank 1 said HELLO as rank 0",
            "1: ABORT rank 1 said HELLO as rank 0"
        ],
        "{out:?}"
    );
    // Rank 1 leaves without joining.
    let script = "if [ $BOAD_RANK = 1 ]; then exit 0; fi; exec python3 -c \"$PY\"";
    let out = cmd()
        .args(["-n", "2", "sh", "-c", script])
        .env("PY", PY_RANK)
        .output()
        .expect("run boadrun");
    assert_eq!(
        text(&out.stdout),
        "0: ABORT rank 1 exited with status 0 before joining the job\n",
        "{out:?}"
    );
}

#[test]
fn help_mentions_every_flag() {
    let out = boadrun(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for flag in [
        "--np",
        "-n",
        "--tag-output",
        "--timeout-ms",
        "--kill-grace-ms",
        "--rendezvous-timeout-ms",
        "--bind",
        "--hosts",
        "--transport",
        "--check",
        "PROGRAM",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn rendezvous_timeout_aborts_the_ranks_that_joined() {
    let script = "if [ $BOAD_RANK = 1 ]; then exec sleep 1; fi; exec python3 -c \"$PY\"";
    let out = cmd()
        .args([
            "-n",
            "2",
            "--rendezvous-timeout-ms",
            "300",
            "sh",
            "-c",
            script,
        ])
        .env("PY", PY_RANK)
        .output()
        .expect("run boadrun");
    let why = "rendezvous timed out after 300 ms: rank(s) 1 never joined";
    assert_eq!(text(&out.stdout), format!("0: ABORT {why}\n"), "{out:?}");
    assert!(text(&out.stderr).contains(why), "{out:?}");
}

/// The virtual cluster needs root (network namespaces); CI runs as root. Not root: the test fails,
/// or with `BOAD_ALLOW_SKIP` set is recorded as skipped.
fn root() -> bool {
    boad_test_support::require_root()
}

#[test]
fn virtual_cluster_places_ranks_on_hosts() {
    if !root() {
        return;
    }
    // Each rank's parent is its host's agent (`boadrun --agent`), as on real machines.
    let script = "echo rank=$BOAD_RANK host=$BOAD_HOST_ID local=$BOAD_LOCAL_RANK/$BOAD_LOCAL_SIZE \
                  bind=$BOAD_BIND_ADDR if=$(ip -br -4 addr show eth0 | tr -s ' ' | cut -d' ' -f3) \
                  parent=$(tr '\\0' ' ' < /proc/$PPID/cmdline | cut -d' ' -f2)";
    let out = boadrun(&["--hosts", "3", "-n", "5", "sh", "-c", script]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        sorted_lines(&out.stdout),
        [
            "rank=0 host=0 local=0/2 bind=198.18.0.1 if=198.18.0.1/24 parent=--agent",
            "rank=1 host=0 local=1/2 bind=198.18.0.1 if=198.18.0.1/24 parent=--agent",
            "rank=2 host=1 local=0/2 bind=198.18.0.2 if=198.18.0.2/24 parent=--agent",
            "rank=3 host=1 local=1/2 bind=198.18.0.2 if=198.18.0.2/24 parent=--agent",
            "rank=4 host=2 local=0/1 bind=198.18.0.3 if=198.18.0.3/24 parent=--agent",
        ]
    );
    // A rank's exit reported by its host's agent reads as one of boadrun's own, with the host.
    let out = boadrun(&[
        "--hosts",
        "2",
        "-n",
        "2",
        "sh",
        "-c",
        "echo $$; exit $((BOAD_RANK * 3))",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let pids = sorted_lines(&out.stdout);
    assert_eq!(pids.len(), 2, "{out:?}");
    assert!(
        pids.iter().any(|p| text(&out.stderr).contains(&format!(
            "boadrun: rank 1 (pid {p} on 198.18.0.2) exited with status 3"
        ))),
        "{out:?}"
    );
    // (That the hosts reach each other is shown by the collective tests on a cluster.)
    let out = boadrun(&["--hosts", "3", "-n", "2", "true"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(text(&out.stderr).contains("--hosts 3 needs at least as many ranks"));
}

/// A process as found in /proc: its pid, its start time (clock ticks since boot: with the pid, it
/// tells a process from a later one that reuses its pid), its parent and its network namespace
/// (`net:[INODE]`).
#[derive(Clone, Debug, PartialEq)]
struct Proc {
    pid: u32,
    start: u64,
    ppid: u32,
    netns: String,
}

/// Every live process (not a zombie) whose stat and namespace can be read.
fn processes() -> Vec<Proc> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // After the command name: state, ppid, ... starttime (field 22 of stat).
            let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            if rest.first() == Some(&"Z") {
                return None;
            }
            let netns = std::fs::read_link(e.path().join("ns/net")).ok()?;
            Some(Proc {
                pid,
                ppid: rest.get(1)?.parse().ok()?,
                start: rest.get(19)?.parse().ok()?,
                netns: netns.to_string_lossy().into_owned(),
            })
        })
        .collect()
}

/// Now, in the clock ticks of a process's start time.
fn now_ticks() -> u64 {
    let up = std::fs::read_to_string("/proc/uptime").expect("/proc/uptime");
    let secs: f64 = up
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("uptime");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (secs * hz as f64) as u64
}

/// The virtual cluster's namespaces are boadrun's own: those of its children (the keeper of each
/// host and of the switch, and the ranks, which live in the hosts'), found from boadrun's pid, so
/// namespaces that other tests create or remove meanwhile do not count. After a SIGKILL of boadrun,
/// every process that was in them is gone, and no process that existed before the kill is in a
/// namespace of that inode (a namespace created later may reuse a freed inode: it is not ours).
#[test]
fn virtual_cluster_is_gone_after_sigkill() {
    if !root() {
        return;
    }
    let me = std::fs::read_link("/proc/self/ns/net")
        .expect("our namespace")
        .to_string_lossy()
        .into_owned();
    let mut child = cmd()
        .args(["--hosts", "3", "-n", "3", "sleep", "30"])
        .stdin(Stdio::null())
        .spawn()
        .expect("start boadrun");
    let boadrun_pid = child.id();
    // Wait until the three hosts and the switch exist, each held by a child of boadrun, and the
    // three hosts' agents (children of boadrun too) run one rank each in their host.
    let start = Instant::now();
    let ours: std::collections::BTreeSet<String> = loop {
        let all = processes();
        let kids: Vec<&Proc> = all
            .iter()
            .filter(|p| p.ppid == boadrun_pid && p.netns != me)
            .collect();
        let spaces: std::collections::BTreeSet<String> =
            kids.iter().map(|p| p.netns.clone()).collect();
        // The ranks: children of boadrun's children, in their parent's namespace.
        let ranks: Vec<&Proc> = all
            .iter()
            .filter(|p| {
                kids.iter()
                    .any(|k| k.pid == p.ppid && k.netns == p.netns && p.ppid != boadrun_pid)
            })
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{}/cmdline", p.pid))
                    .is_ok_and(|c| c.starts_with("sleep\0"))
            })
            .collect();
        let rank_spaces: std::collections::BTreeSet<&String> =
            ranks.iter().map(|p| &p.netns).collect();
        if (spaces.len() == 4 && kids.len() >= 4 + 3 && ranks.len() >= 3)
            || start.elapsed() > Duration::from_secs(10)
        {
            assert_eq!(
                (spaces.len(), kids.len(), ranks.len(), rank_spaces.len()),
                (4, 4 + 3, 3, 3),
                "boadrun's children outside our namespace: 4 keepers (3 hosts and the switch) \
                 and 3 agents, each agent's rank in its host: {kids:?} {ranks:?}"
            );
            break spaces;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Everything in those namespaces now is ours: while they exist their inodes cannot be reused.
    let inside: Vec<Proc> = processes()
        .into_iter()
        .filter(|p| ours.contains(&p.netns))
        .collect();
    assert!(inside.len() >= 4 + 3, "{inside:?}");
    child.kill().expect("SIGKILL boadrun");
    let killed_at = now_ticks();
    child.wait().expect("reap boadrun");
    let start = Instant::now();
    loop {
        let now = processes();
        let left: Vec<&Proc> = now
            .iter()
            .filter(|p| {
                inside.iter().any(|q| (q.pid, q.start) == (p.pid, p.start))
                    || (ours.contains(&p.netns) && p.start <= killed_at)
            })
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "processes of the cluster left after boadrun's SIGKILL (namespaces {ours:?}): {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether process `pid` exists (and is not a zombie).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

/// Entries of /tmp whose name starts with `boad`.
fn boad_in_tmp() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/tmp")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("boad"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_ranks_descendants_end_with_the_job() {
    // Each rank starts a background sleeper and exits 0 at once.
    let out = boadrun(&["-n", "2", "sh", "-c", "sleep 300 & echo $!; exit 0"]);
    assert!(out.status.success(), "{out:?}");
    let pids: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(pids.len(), 2, "{out:?}");
    for p in &pids {
        assert!(!alive(p), "the rank's child {p} outlived the job");
    }
    assert!(
        text(&out.stderr).contains("ended 2 process(es) the ranks left running"),
        "{out:?}"
    );
}

#[test]
fn sigkill_of_boadrun_leaves_nothing() {
    let before = boad_in_tmp();
    let mut child = cmd()
        .args(["-n", "3", "sh", "-c", "sleep 300 & echo $$ $!; wait"])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn boadrun");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut pids = Vec::new();
    for _ in 0..3 {
        let l = lines.next().expect("a line").expect("read");
        pids.extend(l.split(' ').map(str::to_string));
    }
    assert_eq!(pids.len(), 6);
    assert!(pids.iter().all(|p| alive(p)));
    child.kill().expect("SIGKILL boadrun");
    child.wait().expect("reap boadrun");
    let start = Instant::now();
    while pids.iter().any(|p| alive(p)) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still running after boadrun's SIGKILL: {:?}",
            pids.iter().filter(|p| alive(p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(boad_in_tmp(), before, "boadrun left something in /tmp");
}

#[test]
fn a_long_line_does_not_grow_boadrun() {
    // 200 MB without a newline: forwarded in 64 KiB pieces, boadrun's memory stays small.
    // (Reaped below with wait4, for its resource usage.)
    #[allow(clippy::zombie_processes)]
    let mut child = cmd()
        .args([
            "-n",
            "1",
            "sh",
            "-c",
            "head -c 200000000 /dev/zero | tr '\\0' x",
        ])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn boadrun");
    let pid = child.id();
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let (mut bytes, mut longest, mut lines) = (0usize, 0usize, 0usize);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).expect("read");
        if n == 0 {
            break;
        }
        bytes += n;
        longest = longest.max(n);
        lines += 1;
    }
    assert_eq!(
        bytes,
        200_000_000 + lines,
        "every byte, plus one newline per piece"
    );
    assert!(longest <= (64 << 10) + 1, "a piece of {longest} bytes");
    // boadrun's own peak memory (wait4 reports the child's, and that of the processes it reaped).
    let pid = i32::try_from(pid).expect("pid");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our unreaped child; wait4 writes into `status` and `ru`, both live.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    let peak_mib = ru.ru_maxrss / 1024;
    assert!(
        peak_mib < 64,
        "boadrun peaked at {peak_mib} MiB forwarding one 200 MB line"
    );
}

#[test]
fn the_job_deadline_ends_the_job() {
    let start = Instant::now();
    let out = boadrun(&["--timeout", "1", "-n", "2", "sleep", "30"]);
    assert_eq!(out.status.code(), Some(124), "{out:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(
        text(&out.stderr).contains("the job ran longer than --timeout 1 s"),
        "{out:?}"
    );
}

#[test]
fn an_unspecified_bind_address_is_refused() {
    for addr in ["0.0.0.0", "::"] {
        let out = boadrun(&["--bind", addr, "true"]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(
            text(&out.stderr).contains("cannot be advertised to peers"),
            "{out:?}"
        );
    }
}

#[test]
fn check_says_which_launcher_started_boadrun() {
    let line = |vars: &[(&str, &str)]| -> String {
        let out = cmd()
            .args(["--check", "--transport", "udp"])
            .env_remove("SLURM_JOB_ID")
            .env_remove("WORLD_SIZE")
            .env_remove("BOAD_SIZE")
            .envs(vars.iter().copied())
            .output()
            .expect("run boadrun --check");
        assert!(out.status.success(), "{out:?}");
        let stdout = text(&out.stdout);
        let lines: Vec<&str> = stdout
            .lines()
            .filter(|l| l.starts_with("launcher:"))
            .collect();
        assert_eq!(lines.len(), 1, "{stdout}");
        lines[0].to_string()
    };
    assert!(line(&[]).ends_with("none: boadrun starts the ranks"));
    let l = line(&[("SLURM_JOB_ID", "4242")]);
    assert!(
        l.contains("inside Slurm allocation 4242") && l.contains("srun --mpi=pmi2"),
        "{l}"
    );
    let l = line(&[("WORLD_SIZE", "4"), ("RANK", "1")]);
    assert!(
        l.contains("boadrun itself runs under another launcher") && l.contains("env://"),
        "{l}"
    );
}

#[test]
fn check_into_a_closed_pipe_ends_without_a_panic() {
    // `boadrun --check | head -1`: the reader goes after one line.
    let mut child = cmd()
        .args(["--check", "--transport", "udp"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run boadrun --check");
    let mut first = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    std::io::BufRead::read_line(&mut out, &mut first).expect("first line");
    drop(out);
    let done = child.wait_with_output().expect("wait");
    assert!(first.starts_with("boadrun "), "{first:?}");
    let err = text(&done.stderr);
    assert!(!err.contains("panicked"), "{err}");
    // Killed by SIGPIPE, as other tools are, or done before the reader went.
    use std::os::unix::process::ExitStatusExt;
    assert!(
        done.status.success() || done.status.signal() == Some(libc::SIGPIPE),
        "{:?}",
        done.status
    );
}
