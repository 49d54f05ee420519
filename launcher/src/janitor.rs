//! What a job leaves behind is removed even when boadrun itself is killed with SIGKILL.
//!
//! boadrun starts a small helper process (itself, as `boadrun-janitor`, in its own process group so
//! that terminal signals miss it) and tells it, through a pipe, every rank's process group and every
//! file the job may leave (shared-memory segments). When the pipe closes — boadrun finished, or died
//! however it died — the janitor ends whatever is still running in those process groups (a rank's
//! descendants: `sh -c 'worker & ...'`), removes those files, and exits. At a normal end boadrun does
//! the same itself first ([`end_groups`], with a grace period), so the janitor finds nothing.
//!
//! Contract: only processes of this user, in a rank's process group, started no earlier than that
//! rank, are signalled (a process group id cannot be taken by an unrelated process while its group
//! has members, and a recycled one would fail the start-time test); only the files boadrun named are
//! removed, and only if this user owns them. A descendant that leaves its process group (`setsid`)
//! escapes.

use std::io::{BufRead, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::Error;

/// The name boadrun runs itself under as the janitor (checked in `main`).
pub const ARGV0: &str = "boadrun-janitor";

/// A rank's process group: its id (the rank's pid) and the rank's start time (clock ticks since
/// boot, `/proc/PID/stat` field 22).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Group {
    /// Process group id.
    pub pgid: i32,
    /// Start time of its leader.
    pub since: u64,
}

impl Group {
    /// The group led by `pid` (which must be alive: just spawned, not yet reaped).
    pub fn of(pid: u32) -> Option<Group> {
        let pgid = i32::try_from(pid).ok()?;
        let (_, start) = stat(pgid)?;
        Some(Group { pgid, since: start })
    }
}

/// The janitor process, seen from boadrun.
pub struct Janitor {
    child: Child,
    pipe: Option<ChildStdin>,
}

impl Janitor {
    /// Starts it.
    pub fn start() -> Result<Janitor, Error> {
        let mut child = Command::new("/proc/self/exe")
            .arg0(ARGV0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .map_err(Error::setup("cannot start boadrun's cleanup process"))?;
        let pipe = child.stdin.take();
        Ok(Janitor { child, pipe })
    }

    fn tell(&mut self, line: String) {
        if let Some(p) = self.pipe.as_mut() {
            if p.write_all(line.as_bytes())
                .and_then(|()| p.flush())
                .is_err()
            {
                eprintln!("boadrun: the cleanup process is gone; a SIGKILL of boadrun may leave processes or files behind");
                self.pipe = None;
            }
        }
    }

    /// Watches a rank's process group.
    pub fn watch_group(&mut self, g: Group) {
        self.tell(format!("GROUP {} {}\n", g.pgid, g.since));
    }

    /// Watches a file the job may leave.
    pub fn watch_file(&mut self, path: &Path) {
        // Paths come from boadrun itself (no newline in them); one per line.
        self.tell(format!("FILE {}\n", path.display()));
    }

    /// Closes the pipe (the janitor then checks once more and exits) and waits for it.
    pub fn finish(mut self) {
        self.pipe = None;
        let _ = self.child.wait();
    }
}

/// `(pgrp, starttime)` of process `pid`, from `/proc/PID/stat`.
fn stat(pid: i32) -> Option<(i32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]: pgrp is field 5, starttime field 22.
    Some((fields.get(2)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

/// Processes of this user in group `g` started no earlier than its leader.
fn members(g: &Group) -> Vec<i32> {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let uid = e.metadata().ok()?.uid();
            let (pgrp, start) = stat(pid)?;
            (uid == me && pgrp == g.pgid && start >= g.since).then_some(pid)
        })
        .collect()
}

fn signal_all(groups: &[Group], sig: i32) -> usize {
    let mut n = 0;
    for g in groups {
        for pid in members(g) {
            // SAFETY: kill() has no memory-safety preconditions; `pid` passed the checks above.
            if unsafe { libc::kill(pid, sig) } == 0 {
                n += 1;
            }
        }
    }
    n
}

/// Ends what still runs in `groups`: SIGTERM, then SIGKILL after `grace` for what is left. Returns
/// how many processes were still running.
pub fn end_groups(groups: &[Group], grace: Duration) -> usize {
    let n = signal_all(groups, libc::SIGTERM);
    if n == 0 {
        return 0;
    }
    let until = Instant::now() + grace;
    while Instant::now() < until && groups.iter().any(|g| !members(g).is_empty()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    signal_all(groups, libc::SIGKILL);
    n
}

fn remove_owned(path: &Path) {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.uid() == me && m.is_file()) {
        let _ = std::fs::remove_file(path);
    }
}

/// The janitor process: reads what to watch until its pipe closes, then cleans up and exits.
pub fn run() -> ! {
    let mut groups = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let mut w = line.splitn(2, ' ');
        match (w.next(), w.next()) {
            (Some("GROUP"), Some(rest)) => {
                let mut nums = rest.split(' ').map(str::parse::<u64>);
                if let (Some(Ok(pgid)), Some(Ok(since))) = (nums.next(), nums.next()) {
                    if let Ok(pgid) = i32::try_from(pgid) {
                        groups.push(Group { pgid, since });
                    }
                }
            }
            (Some("FILE"), Some(path)) => files.push(PathBuf::from(path)),
            _ => {}
        }
    }
    // boadrun is gone (or done): its ranks got SIGKILL from the kernel; end what they left.
    end_groups(&groups, Duration::from_millis(500));
    for f in &files {
        remove_owned(f);
    }
    std::process::exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_stat() {
        let me = i32::try_from(std::process::id()).expect("pid");
        let (pgrp, start) = stat(me).expect("stat");
        assert!(pgrp > 0 && start > 0);
    }
}
