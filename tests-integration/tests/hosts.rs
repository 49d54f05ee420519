//! Jobs across machines: `boadrun -H` over real ssh. Each test builds namespace hosts joined by a
//! bridge, each running its own OpenSSH server (`boad_test_support::sshhosts`); boadrun runs on host
//! 0 and starts one agent per host over plain `ssh` to the hosts' addresses, exactly as on real
//! machines. Every test needs root (namespaces, sshd) and is skipped without it; everything is
//! removed on every exit path.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boad_test_support::sshhosts::SshHosts;
use common::{boadrun, count, run_cmd, Job, LIMIT};

/// `n` namespace hosts with sshd, or None when not root (a recorded skip).
fn hosts(n: usize) -> Option<SshHosts> {
    if !boad_test_support::sshhosts::require() {
        return None;
    }
    Some(SshHosts::create(n).expect("namespace hosts with sshd"))
}

/// `boadrun -H spec <extra> PROGRAM ARGS`, started on host 0 over ssh to the hosts.
fn command(h: &SshHosts, spec: &str, extra: &[&str], program: &str, args: &[&str]) -> Command {
    let boadrun = boadrun();
    let mut cmd = h.command_in(0, &boadrun);
    cmd.args(["--launch-agent", &h.launch_agent()])
        .arg("--agent-path")
        .arg(&boadrun)
        .args(["-H", spec])
        .args(extra)
        .arg(program)
        .args(args);
    cmd
}

fn boad_check() -> &'static str {
    env!("CARGO_BIN_EXE_boad-check")
}

/// `h:slots,...` for hosts `which` of `h`.
fn spec(h: &SshHosts, which: &[(usize, usize)]) -> String {
    which
        .iter()
        .map(|&(i, slots)| format!("{}:{slots}", h.hosts()[i]))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn every_collective_on_every_path_across_three_ssh_hosts() {
    let Some(h) = hosts(4) else { return };
    // Uneven slots: 4, 3 and 2 ranks on hosts 1..3; boadrun itself on host 0.
    let spec = spec(&h, &[(1, 4), (2, 3), (3, 2)]);
    for (transport, path) in [("shm", "hier"), ("udp", "udp"), ("auto", "hier")] {
        let job = run_cmd(
            command(&h, &spec, &[], boad_check(), &["matrix", "--quick"]),
            transport,
            &[],
            LIMIT,
        );
        let lines = job.assert_every_rank_exact(9);
        assert_eq!(
            count(&lines, |l| l.path == path),
            9,
            "{transport}: every rank's collectives took {path}: {lines:#?}"
        );
        if path == "hier" {
            // Only the three hosts' leaders (ranks 0, 4, 7) send datagrams.
            let senders: Vec<usize> = lines
                .iter()
                .filter(|l| l.get("datagrams_sent") > 0)
                .map(|l| l.rank)
                .collect();
            assert_eq!(senders, [0, 4, 7], "{transport}: {lines:#?}");
        }
        if transport == "auto" {
            assert!(
                job.stderr()
                    .contains("the kernel path is not set up across machines yet"),
                "{}",
                job.stderr()
            );
        }
    }
}

#[test]
fn ranks_run_on_their_hosts_with_the_users_variables() {
    let Some(h) = hosts(3) else { return };
    let script = "echo $BOAD_RANK $BOAD_HOST_ID $BOAD_LOCAL_RANK $BOAD_LOCAL_SIZE $BOAD_BIND_ADDR \
                  \"$FOO\" $BOAD_STATS $(ip -4 -o addr show eth0 | awk '{print $4}')";
    let spec = spec(&h, &[(1, 3), (2, 2)]);
    let mut cmd = command(
        &h,
        &spec,
        &["--map-by", "node", "-n", "4", "-x", "FOO=a b"],
        "sh",
        &["-c", script],
    );
    cmd.env("BOAD_STATS", "7");
    let job = run_cmd(cmd, "udp", &[], LIMIT);
    job.assert_ok();
    let mut lines: Vec<String> = job.stdout().lines().map(str::to_string).collect();
    lines.sort();
    let (a, b) = (h.hosts()[1], h.hosts()[2]);
    // Round robin over the hosts; each rank binds to, and runs in, its host's namespace.
    assert_eq!(
        lines,
        [
            format!("0 0 0 2 {a} a b 7 {a}/24"),
            format!("1 1 0 2 {b} a b 7 {b}/24"),
            format!("2 0 1 2 {a} a b 7 {a}/24"),
            format!("3 1 1 2 {b} a b 7 {b}/24"),
        ]
    );
}

#[test]
fn a_host_refusing_ssh_fails_the_job_naming_it() {
    let Some(mut h) = hosts(3) else { return };
    h.stop_sshd(2);
    let spec = spec(&h, &[(1, 2), (2, 2)]);
    let start = Instant::now();
    let job = run_cmd(
        command(&h, &spec, &[], boad_check(), &["matrix", "--quick"]),
        "udp",
        &[],
        LIMIT,
    );
    assert_eq!(job.code(), Some(125), "{}", job.stderr());
    let refused = h.hosts()[2];
    let err = job.stderr();
    assert!(
        err.contains(&format!(
            "boadrun: host {refused}: ssh: connect to host {refused}"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("boadrun: host {refused}: its agent ended")),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(30), "{err}");
    // The reachable host's ranks are gone too (its ssh session may take a moment to end).
    let until = Instant::now() + Duration::from_secs(5);
    while !ranks_on(&h, 1, 0).is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ranks_on(&h, 1, 0).is_empty(), "{:?}", h.processes(1));
}

/// Pids of the processes in host `h`'s namespace whose environment says `BOAD_HOST_ID=id`.
fn ranks_on(h: &SshHosts, host: usize, id: usize) -> Vec<u32> {
    let want = format!("BOAD_HOST_ID={id}");
    h.processes(host)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|e| e.split(|&b| b == 0).any(|v| v == want.as_bytes()))
        })
        .collect()
}

/// The parent of `pid`.
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn a_killed_agent_fails_the_others_naming_its_ranks() {
    let Some(h) = hosts(4) else { return };
    let spec = spec(&h, &[(1, 2), (2, 2), (3, 2)]);
    let _serial = common::serial();
    let mut cmd = command(&h, &spec, &[], boad_check(), &["random", "100000"]);
    cmd.env("BOAD_TRANSPORT", "udp")
        .env("BOAD_TIMEOUT_MS", "60000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("start boadrun");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    // Host 3 (id 2) runs ranks 4 and 5: wait until they run, then SIGKILL their agent.
    let until = Instant::now() + Duration::from_secs(60);
    let agent = loop {
        let ranks = ranks_on(&h, 3, 2);
        if ranks.len() == 2 {
            if let Some(a) = parent(ranks[0]) {
                break a;
            }
        }
        assert!(Instant::now() < until, "host 3's ranks never started");
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(500));
    let exe = std::fs::read_link(format!("/proc/{agent}/exe")).expect("agent exe");
    assert_eq!(exe, boadrun(), "the ranks' parent is the agent");
    let killed = Command::new("kill")
        .args(["-9", &agent.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let start = Instant::now();
    let out = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("boadrun did not end after its agent on host 3 was killed");
        }
    };
    let job = Job {
        out,
        secs: start.elapsed().as_secs_f64(),
    };
    assert_ne!(job.code(), Some(0), "{}", job.stderr());
    let err = job.stderr();
    let host = h.hosts()[3];
    assert!(
        err.contains(&format!("boadrun: host {host}: its agent ended"))
            && err.contains("rank(s) 4, 5"),
        "{err}"
    );
    // The other ranks failed naming a rank of the lost host, well before their 60 s timeout.
    let out = job.stdout();
    let named = out
        .lines()
        .chain(err.lines())
        .filter(|l| l.contains("rank 4") || l.contains("rank 5"))
        .count();
    assert!(named >= 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(job.secs < 30.0, "took {} s: {err}", job.secs);
    // Nothing of the job is left on any host.
    for i in 1..4 {
        let until = Instant::now() + Duration::from_secs(5);
        while !ranks_on(&h, i, i - 1).is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(ranks_on(&h, i, i - 1).is_empty(), "host {i} kept ranks");
    }
}

#[test]
fn the_job_ends_on_every_host_when_boadrun_is_killed() {
    let Some(h) = hosts(3) else { return };
    let spec = spec(&h, &[(1, 2), (2, 2)]);
    let _serial = common::serial();
    // Ranks that would run for a minute, each with a child in its process group.
    let mut cmd = command(&h, &spec, &[], "sh", &["-c", "sleep 60 & sleep 60"]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().expect("start boadrun");
    let until = Instant::now() + Duration::from_secs(30);
    while ranks_on(&h, 1, 0).len() < 2 || ranks_on(&h, 2, 1).len() < 2 {
        assert!(Instant::now() < until, "the ranks never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().expect("SIGKILL boadrun");
    let _ = child.wait();
    // Its ssh connections die with it; each agent sees its input end and ends its host's ranks
    // and what they started.
    let until = Instant::now() + Duration::from_secs(10);
    let left = || {
        let mut v = ranks_on(&h, 1, 0);
        v.extend(ranks_on(&h, 2, 1));
        v
    };
    while !left().is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(left().is_empty(), "left running: {:?}", left());
}

#[test]
fn a_host_that_refuses_our_key_fails_the_job_naming_it() {
    let Some(h) = hosts(3) else { return };
    // The fixture's known hosts, but no key of ours: ssh (BatchMode) cannot log in and says so.
    let known = h.dir().join("known_hosts");
    let agent = format!(
        "ssh -F /dev/null -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o IdentityFile=/dev/null -o User=root",
        known.display()
    );
    let boadrun = boadrun();
    let mut cmd = h.command_in(0, &boadrun);
    cmd.args(["--launch-agent", &agent])
        .arg("--agent-path")
        .arg(&boadrun)
        .args(["-H", &spec(&h, &[(1, 1), (2, 1)])])
        .args(["sh", "-c", "sleep 30"]);
    let start = Instant::now();
    let job = run_cmd(cmd, "udp", &[], LIMIT);
    assert_eq!(job.code(), Some(125), "{}", job.stderr());
    let err = job.stderr();
    for i in [1, 2] {
        let host = h.hosts()[i];
        assert!(
            err.contains(&format!("boadrun: host {host}: ")) && err.contains("Permission denied"),
            "{err}"
        );
    }
    assert!(start.elapsed() < Duration::from_secs(30), "{err}");
}
