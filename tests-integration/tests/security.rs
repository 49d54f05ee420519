//! Other users of the machine, as an attacker and as a careless user would act: they cannot join,
//! abort or observe a job, see its key, squat its shared memory, and a careless umask does not open
//! it up. Needs root (to act as `nobody`); CI runs as root.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A command run as `nobody` (through runuser), with umask 000.
fn as_nobody(script: &str) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "nobody", "--", "sh", "-c"])
        .arg(format!("umask 000; {script}"))
        .stdin(Stdio::null())
        .output()
        .expect("runuser")
}

/// boadrun with umask 000 (as a careless user's shell would have it).
fn boadrun_umask_000() -> Command {
    let mut cmd = Command::new(boadrun());
    // SAFETY: umask is async-signal-safe and only changes this child's file-creation mask.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    cmd
}

#[test]
fn a_squatted_segment_name_is_a_clear_error() {
    if !root() {
        return;
    }
    // Rank 0 learns its segment's name (which takes the job key) and lets nobody create a file
    // there, world-writable, before it joins; the job must refuse that file, never map it.
    let script = r#"if [ "$BOAD_RANK" = 0 ]; then
        p=$("$CHECK" shm-path); echo "squat $p"
        runuser -u nobody -- sh -c "umask 000; echo squatted > $p"
    fi
    exec "$CHECK" path shm"#;
    let mut cmd = boadrun_umask_000();
    cmd.args(["-n", "2", "sh", "-c", script])
        .env("CHECK", env!("CARGO_BIN_EXE_boad-check"));
    let job = run_cmd(cmd, "shm", &[], LIMIT);
    let out = job.stdout();
    let squat = out
        .lines()
        .find_map(|l| l.strip_prefix("squat "))
        .unwrap_or_else(|| panic!("no squat line:\n{out}"))
        .to_string();
    let content = std::fs::read_to_string(&squat);
    let _ = std::fs::remove_file(&squat);
    assert_eq!(
        content.ok().as_deref(),
        Some("squatted\n"),
        "the squatter's file changed"
    );
    assert_ne!(job.code(), Some(0), "the job ran on a squatted segment");
    let err = job.stderr();
    assert!(
        err.contains("rank 0") && err.contains("taken by a file this job did not create"),
        "{err}"
    );
}

/// The inodes of the sockets process `pid` has open.
fn socket_inodes(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn another_user_cannot_join_observe_or_read_the_key() {
    if !root() {
        return;
    }
    // Rank 1 waits 2 s before it joins: meanwhile the job is gathering, the state in which any
    // user could abort it through a world-reachable rendezvous socket.
    let script = r#"echo "pid $BOAD_RANK $$ $BOAD_JOB"; if [ "$BOAD_RANK" = 1 ]; then sleep 2; fi
        "$CHECK" path shm"#;
    let mut cmd = boadrun_umask_000();
    cmd.args(["-n", "2", "sh", "-c", script])
        .env("CHECK", env!("CARGO_BIN_EXE_boad-check"))
        .env("BOAD_TRANSPORT", "shm")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let _serial = serial();
    let before: Vec<String> = list("/tmp");
    let mut child = cmd.spawn().expect("start boadrun");
    let boadrun_pid = child.id();
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut pids = Vec::new();
    let mut key = String::new();
    let start = Instant::now();
    while pids.len() < 2 && start.elapsed() < Duration::from_secs(10) {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut stdout, &mut line).expect("read") == 0 {
            break;
        }
        if let Some(p) = line.trim().strip_prefix("pid ") {
            let w: Vec<&str> = p.split(' ').collect();
            pids.push(w[1].to_string());
            key = w[2].to_string();
        }
    }
    assert_eq!(pids.len(), 2, "ranks did not start");
    assert_eq!(key.len(), 16, "{key}");
    // The key is on no process's command line (boadrun, its janitor, the ranks, anything).
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            assert!(
                !String::from_utf8_lossy(&c).contains(&key),
                "the job key is on the command line of {:?}",
                e.path()
            );
        }
    }
    // No socket of boadrun has a name anyone could connect to.
    let unix = std::fs::read_to_string("/proc/net/unix").expect("/proc/net/unix");
    for inode in socket_inodes(boadrun_pid) {
        for l in unix
            .lines()
            .filter(|l| l.split_whitespace().nth(6) == Some(inode.as_str()))
        {
            assert!(
                l.split_whitespace().nth(7).is_none(),
                "boadrun has a named socket: {l}"
            );
        }
    }
    // Nobody cannot read a rank's environment (the key is there) ...
    for p in &pids {
        let out = as_nobody(&format!("cat /proc/{p}/environ"));
        assert!(!out.status.success(), "nobody read rank {p}'s environment");
    }
    // The job itself goes on undisturbed.
    let rest = child.wait_with_output().expect("wait");
    assert!(
        rest.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&rest.stdout),
        String::from_utf8_lossy(&rest.stderr)
    );
    assert_eq!(list("/tmp"), before, "the job left something in /tmp");
}

fn list(dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("boad"))
        .collect();
    v.sort();
    v
}
