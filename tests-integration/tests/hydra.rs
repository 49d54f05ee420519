//! Jobs started by MPICH's `mpiexec` (Hydra, `mpiexec.hydra` of Debian's `mpich`), without boadrun:
//! each rank joins through Hydra's PMI-1 server on `PMI_FD`. On one host (every collective on the
//! udp and shm paths, and `auto`); across three namespace hosts running real sshd
//! (`boad_test_support::sshhosts`), Hydra starting its proxies over ssh (udp and hierarchical
//! paths, and the kernel path through a kernel service on each host); a rank killed mid-job; and `PMI_FD` naming something that is no PMI server.
//!
//! Every job runs with a time limit; whatever it started (mpiexec, Hydra's proxies, the ranks) is
//! found by a marker in its environment and must be gone when it ends. The tests with mpiexec need
//! `mpiexec.hydra` on PATH (and root, for the hosts); without, they fail, or are recorded as
//! skipped under `BOAD_ALLOW_SKIP`.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boad_test_support::sshhosts::SshHosts;
use boad_test_support::Need;
use common::{count, rank_lines, serial, HostServices, Job};

/// How long one mpiexec job may run.
const LIMIT: Duration = Duration::from_secs(120);

fn boad_check() -> &'static str {
    env!("CARGO_BIN_EXE_boad-check")
}

/// Whether `mpiexec.hydra` can be run here (a failure, or a recorded skip).
fn hydra() -> bool {
    boad_test_support::require(&[Need::Program("mpiexec.hydra")])
}

/// The pids of the live processes whose environment holds `marker` (`BOAD_HYDRA_TEST=marker`).
fn marked(marker: &str) -> Vec<u32> {
    let want = format!("BOAD_HYDRA_TEST={marker}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == want.as_bytes()))
        })
        .collect()
}

/// Runs `cmd` (an mpiexec command line) with `env`, one job at a time, in a process group of its
/// own, marked; SIGKILLs the group and fails after `limit`. Then waits (up to 10 s) until no
/// process the job started is left, and fails if one is (the sshds' sessions on namespace hosts are
/// not marked: `SshHosts` checks those).
fn run(mut cmd: Command, env: &[(&str, &str)], limit: Duration) -> Job {
    let _serial = serial();
    let marker = format!("{}-{}", std::process::id(), rand_suffix());
    cmd.env("BOAD_HYDRA_TEST", &marker)
        .env("BOAD_CHUNK_BYTES", "1024")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let described = format!("{cmd:?}");
    let start = Instant::now();
    let child = cmd.spawn().expect("start mpiexec.hydra");
    let pgid = child.id() as libc::pid_t;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for mpiexec"),
        Err(_) => {
            // SAFETY: kill takes a (negated) process group id and a signal number.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let out = rx.recv().expect("mpiexec output").expect("wait");
            for pid in marked(&marker) {
                // SAFETY: as above, one pid this job started.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            panic!(
                "{described} hung for {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    let job = Job {
        out,
        secs: start.elapsed().as_secs_f64(),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = marked(&marker);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        left = marked(&marker);
    }
    if !left.is_empty() {
        let names: Vec<String> = left
            .iter()
            .map(|p| {
                let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                format!(
                    "{p}: {}",
                    String::from_utf8_lossy(&cmdline).replace('\0', " ")
                )
            })
            .collect();
        for &pid in &left {
            // SAFETY: kill takes a pid this job started and a signal number.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        panic!(
            "{described} left processes behind: {names:#?}\nstdout:\n{}\nstderr:\n{}",
            job.stdout(),
            job.stderr()
        );
    }
    job
}

/// A few random hex digits, so that two runs of the same test process have different markers.
fn rand_suffix() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{t:08x}")
}

/// `mpiexec.hydra ARGS`, as the README shows it.
fn mpiexec(args: &[&str]) -> Command {
    let mut cmd = Command::new("mpiexec.hydra");
    cmd.args(args);
    cmd
}

#[test]
fn every_collective_on_one_host_under_mpiexec() {
    if !hydra() {
        return;
    }
    // `auto` on one host is the shared-memory path.
    for (transport, path) in [("udp", "udp"), ("shm", "shm"), ("auto", "shm")] {
        let job = run(
            mpiexec(&["-n", "9", boad_check(), "matrix", "--quick"]),
            &[("BOAD_TRANSPORT", transport)],
            LIMIT,
        );
        let lines = job.assert_every_rank_exact(9);
        assert_eq!(
            count(&lines, |l| l.path == path),
            9,
            "{transport}: every rank's collectives took {path}: {lines:#?}"
        );
    }
}

#[test]
fn every_collective_across_three_ssh_hosts_under_mpiexec() {
    if !hydra() || !boad_test_support::sshhosts::require() {
        return;
    }
    let h = SshHosts::create(4).expect("namespace hosts with sshd");
    // Hydra starts its proxy on each host with `LAUNCHER-EXEC HOST COMMAND`: ssh with the fixture's
    // configuration (its key, the hosts' keys, batch mode).
    let ssh = h.dir().join("hydra-ssh");
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/sh\nexec ssh -F {} \"$@\"\n",
            h.ssh_config().display()
        ),
    )
    .expect("write the ssh wrapper");
    std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod the ssh wrapper");
    let hosts: Vec<String> = h.hosts()[1..4].iter().map(|a| a.to_string()).collect();
    let hosts = hosts.join(",");
    let ssh = ssh.display().to_string();
    // A kernel service in each of the ranks' hosts (Hydra passes BOAD_SERVICE_SOCKET on).
    let services = HostServices::start_on(&h, h.dir(), &[1, 2, 3]);
    let via = [
        ("BOAD_SERVICE_SOCKET", services.name.as_str()),
        ("BOAD_STATS", "1"),
    ];
    for (transport, path, senders, kernel) in [
        ("udp", "udp", (0..9).collect::<Vec<usize>>(), vec![]),
        ("shm", "hier", vec![0, 3, 6], vec![]),
        ("kernel", "kernel", (0..9).collect(), (0..9).collect()),
        ("auto", "hier-kernel", vec![0, 3, 6], vec![0, 3, 6]),
    ] {
        // mpiexec on host 0; its proxies reach it back on host 0's eth0 (`-iface`).
        let mut cmd = h.command_in(0, "mpiexec.hydra");
        cmd.args([
            "-launcher",
            "ssh",
            "-launcher-exec",
            &ssh,
            "-iface",
            "eth0",
            "-hosts",
            &hosts,
            "-ppn",
            "3",
            "-n",
            "9",
            boad_check(),
            "matrix",
            "--quick",
        ]);
        let job = run(cmd, &[("BOAD_TRANSPORT", transport), via[0], via[1]], LIMIT);
        let lines = job.assert_every_rank_exact(9);
        let on_kernel: Vec<usize> = lines
            .iter()
            .filter(|l| l.get("collectives_kernel") > 0)
            .map(|l| l.rank)
            .collect();
        assert_eq!(on_kernel, kernel, "{transport}: {lines:#?}");
        assert_eq!(
            count(&lines, |l| l.path == path),
            9,
            "{transport}: every rank's collectives took {path}: {lines:#?}"
        );
        let sent: Vec<usize> = lines
            .iter()
            .filter(|l| l.get("datagrams_sent") > 0)
            .map(|l| l.rank)
            .collect();
        assert_eq!(sent, senders, "{transport}: {lines:#?}");
        // The hosts' ssh sessions end with the job: nothing of it runs on any host.
        let deadline = Instant::now() + Duration::from_secs(10);
        let job_left = |i: usize| {
            h.processes(i)
                .into_iter()
                .any(|p| !services.pids().contains(&p))
        };
        while (1..4).any(job_left) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for i in 1..4 {
            let left: Vec<u32> = h
                .processes(i)
                .into_iter()
                .filter(|p| !services.pids().contains(p))
                .collect();
            assert_eq!(left, Vec::<u32>::new(), "host {i} after the job");
        }
    }
    services.assert_idle(&h);
    services.stop();
}

#[test]
fn a_rank_killed_mid_job_is_named() {
    if !hydra() {
        return;
    }
    // Hydra's own answer: a process that dies of a signal ends the job, and mpiexec names it (its
    // pid and signal). Hydra mostly ends the others at once, but not always (seen with 4.0.2:
    // sometimes it waits for them): then they notice themselves, naming it (`transport::gone`).
    let job = run(
        mpiexec(&["-n", "9", boad_check(), "kill-mid", "4", "4096"]),
        &[("BOAD_TRANSPORT", "udp"), ("BOAD_TIMEOUT_MS", "2000")],
        LIMIT,
    );
    let all = format!("{}{}", job.stdout(), job.stderr());
    assert_ne!(job.code(), Some(0), "{all}");
    assert!(
        all.contains("BAD TERMINATION") && all.contains("signal 9"),
        "mpiexec names the killed process: {all}"
    );
    // (Hydra passes on the ranks' output in pieces, so lines from different ranks may mix.)
    if all.contains("error as expected") {
        assert!(all.contains("rank 4 is gone"), "{all}");
    }
    assert!(!all.contains("succeeded"), "{all}");
    assert!(job.secs < 30.0, "{} s: {all}", job.secs);
    // boad's own answer, whatever Hydra does: each rank runs under sh, which prints its output in
    // one piece with how it ended, and exits 0, so Hydra sees no failure and ends no process: the
    // others must fail, naming rank 4, seeing its end themselves (`transport::gone`).
    for transport in ["udp", "shm"] {
        let job = run(
            mpiexec(&[
                "-n",
                "9",
                "sh",
                "-c",
                "out=$(\"$0\" \"$@\" 2>&1); printf '%s\\nrank %s: exit status %s\\n' \"$out\" \"$PMI_RANK\" $?",
                boad_check(),
                "kill-mid",
                "4",
                "4096",
            ]),
            &[("BOAD_TRANSPORT", transport), ("BOAD_TIMEOUT_MS", "2000")],
            LIMIT,
        );
        let (out, err) = (job.stdout(), job.stderr());
        let all: Vec<usize> = (0..9).collect();
        let status: Vec<String> = rank_lines(&out, ": exit status ", &all)
            .iter()
            .map(|l| l.line.rsplit(' ').next().unwrap_or_default().to_string())
            .collect();
        let want: Vec<&str> = (0..9).map(|r| if r == 4 { "137" } else { "4" }).collect();
        assert_eq!(status, want, "{transport}: exit statuses\n{out}\n{err}");
        let survivors = [0, 1, 2, 3, 5, 6, 7, 8];
        for l in rank_lines(&out, "error as expected", &survivors) {
            assert!(l.line.contains("rank 4"), "{transport}: {}", l.line);
        }
        assert!(job.secs < 60.0, "{transport}: {} s: {err}", job.secs);
    }
}

/// `boad-check random 3` with `PMI_FD` (and a Hydra job's `PMI_RANK`, `PMI_SIZE`) and `stdin`:
/// must fail (status 2) naming Hydra and `what`.
fn refused(pmi_fd: &str, stdin: Stdio, env: &[(&str, &str)], what: &str) {
    let out = Command::new(boad_check())
        .args(["random", "3"])
        .env_remove("BOAD_SIZE")
        .envs([("PMI_FD", pmi_fd), ("PMI_RANK", "1"), ("PMI_SIZE", "2")])
        .envs(env.iter().copied())
        .stdin(stdin)
        .output()
        .expect("run boad-check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "PMI_FD={pmi_fd}: {err}");
    assert!(
        err.contains("MPICH's mpiexec (Hydra, PMI-1)") && err.contains(what),
        "PMI_FD={pmi_fd}: {err}"
    );
}

#[test]
fn pmi_fd_that_is_no_pmi_server_is_an_error_naming_hydra() {
    refused("0", Stdio::null(), &[], "not a socket");
    refused("77", Stdio::null(), &[], "not an open descriptor");
    refused("x", Stdio::null(), &[], "PMI_FD=\"x\" cannot be used");
    // A socket whose other end answers something else.
    let (mut ours, theirs) = UnixStream::pair().expect("socketpair");
    ours.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").expect("write");
    refused(
        "0",
        Stdio::from(std::os::fd::OwnedFd::from(theirs)),
        &[],
        "not a line of printable ASCII",
    );
    let (mut ours, theirs) = UnixStream::pair().expect("socketpair");
    ours.write_all(b"hello\n").expect("write");
    refused(
        "0",
        Stdio::from(std::os::fd::OwnedFd::from(theirs)),
        &[],
        "does not start with cmd=NAME",
    );
    // One that answers nothing.
    let (_silent, theirs) = UnixStream::pair().expect("socketpair");
    refused(
        "0",
        Stdio::from(std::os::fd::OwnedFd::from(theirs)),
        &[("BOAD_TIMEOUT_MS", "500")],
        "no reply to cmd=init within 500ms",
    );
    // One that hangs up.
    let (gone, theirs) = UnixStream::pair().expect("socketpair");
    drop(gone);
    refused(
        "0",
        Stdio::from(std::os::fd::OwnedFd::from(theirs)),
        &[],
        "cmd=init",
    );
}
