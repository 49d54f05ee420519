//! System calls per collective, counted with `strace`.
//!
//! Method: a rank attaches `strace -f -o FILE -p <each of its threads>` to itself ([`Tracer`]), then
//! brackets each measured loop with two marker system calls (a `stat` of a path that does not
//! exist, `/boad-osu-mark/<label>/begin` and `.../end`: [`mark`]). After detaching, [`count_marked`]
//! counts the system calls each thread started strictly between a label's two markers; dividing by
//! the loop's iterations gives system calls per collective, with nothing from start-up, bootstrap
//! or the markers themselves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The directory marker paths live under (it must not exist).
pub const MARK_DIR: &str = "/boad-osu-mark";

/// Failures of the tracer.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// `strace` could not be started.
    #[error("cannot start strace: {0}")]
    Spawn(std::io::Error),
    /// `strace` did not attach in time (ptrace refused?).
    #[error("strace did not attach within {0:?}")]
    NotAttached(Duration),
    /// Reading the trace failed.
    #[error("reading {path}: {err}")]
    Read {
        /// The trace file.
        path: PathBuf,
        /// Why.
        err: std::io::Error,
    },
}

/// Makes the marker system call for `label` (`begin` = true at the start of a loop).
pub fn mark(label: &str, begin: bool) {
    let which = if begin { "begin" } else { "end" };
    // The path does not exist: this is one failing statx, visible in the trace with its path.
    let _ = std::fs::symlink_metadata(format!("{MARK_DIR}/{label}/{which}"));
}

/// Counts, for every label, the system calls made between its begin and end markers (by any
/// traced thread, markers excluded). A call is counted once: on its first line (complete or
/// `<unfinished ...>`); `<... resumed>` lines, signals (`---`) and exits (`+++`) are not calls.
pub fn count_marked(trace: &str) -> BTreeMap<String, Calls> {
    let mut out = BTreeMap::new();
    let mut open: Option<(String, Calls)> = None;
    let begin_pat = format!("\"{MARK_DIR}/");
    for line in trace.lines() {
        // Strip a leading pid ("1234  call(...)" or "[pid 1234] call(...)").
        let body = line.trim_start();
        let body = if let Some(rest) = body.strip_prefix("[pid") {
            rest.split_once(']').map_or(rest, |(_, r)| r)
        } else {
            body.trim_start_matches(|c: char| c.is_ascii_digit())
        }
        .trim_start();
        if body.is_empty()
            || body.starts_with("<...")
            || body.starts_with("---")
            || body.starts_with("+++")
        {
            continue;
        }
        if let Some(i) = body.find(&begin_pat) {
            let rest = &body[i + begin_pat.len()..];
            let path = rest.split('"').next().unwrap_or("");
            if let Some((label, which)) = path.rsplit_once('/') {
                match which {
                    "begin" => open = Some((label.to_string(), Calls::default())),
                    "end" => {
                        if let Some((l, n)) = open.take() {
                            if l == label {
                                out.insert(l, n);
                            }
                        }
                    }
                    _ => {}
                }
                continue;
            }
        }
        if let Some((_, n)) = open.as_mut() {
            // A system call line looks like `name(`.
            let name_len = body
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(0);
            if name_len > 0 && body[name_len..].starts_with('(') {
                n.total += 1;
                *n.by_name.entry(body[..name_len].to_string()).or_default() += 1;
            }
        }
    }
    out
}

/// The system calls between one label's markers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    /// How many.
    pub total: u64,
    /// How many of each (by name).
    pub by_name: BTreeMap<String, u64>,
}

impl Calls {
    /// `name count/per, ...` (most frequent first), e.g. `sendto 1.00, recvfrom 2.00` per call.
    pub fn breakdown(&self, per: u64) -> String {
        let mut v: Vec<(&String, &u64)> = self.by_name.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        v.iter()
            .map(|(n, c)| format!("{n} {:.2}", **c as f64 / per.max(1) as f64))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `strace` attached to this process until [`Tracer::finish`].
pub struct Tracer {
    child: Child,
    file: PathBuf,
}

/// Whether this process is being traced (its `TracerPid` is not 0).
fn traced() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("TracerPid:").map(|v| v.trim() != "0"))
        })
        .unwrap_or(false)
}

impl Tracer {
    /// Attaches `strace` to every thread of this process, writing to `file`; returns once attached.
    pub fn attach(file: &Path) -> Result<Tracer, TraceError> {
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-qq", "-s", "48", "-o"]).arg(file);
        let tasks = std::fs::read_dir("/proc/self/task")
            .map_err(TraceError::Spawn)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>();
        for t in &tasks {
            cmd.args(["-p", t]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(TraceError::Spawn)?;
        let mut tracer = Tracer {
            child,
            file: file.to_path_buf(),
        };
        let limit = Duration::from_secs(10);
        let t0 = Instant::now();
        while !traced() {
            if t0.elapsed() > limit || matches!(tracer.child.try_wait(), Ok(Some(_))) {
                tracer.stop();
                return Err(TraceError::NotAttached(limit));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Let strace finish attaching to the other threads.
        std::thread::sleep(Duration::from_millis(50));
        Ok(tracer)
    }

    fn stop(&mut self) {
        // SIGINT makes strace detach and flush its output.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
        }
        let _ = self.child.wait();
    }

    /// Detaches and returns the system call counts per marker label.
    pub fn finish(mut self) -> Result<BTreeMap<String, Calls>, TraceError> {
        self.stop();
        let text = std::fs::read_to_string(&self.file).map_err(|err| TraceError::Read {
            path: self.file.clone(),
            err,
        })?;
        Ok(count_marked(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_calls_between_markers() {
        let trace = r#"4242  sendto(3, "x", 1, 0, NULL, 0) = 1
4242  statx(AT_FDCWD, "/boad-osu-mark/bcast-4/begin", AT_STATX_SYNC_AS_STAT, STATX_ALL, 0x7ffd) = -1 ENOENT (No such file or directory)
4242  sendto(3, "x", 1, 0, NULL, 0) = 1
4243  epoll_wait(5,  <unfinished ...>
4242  recvfrom(3, "y", 64, 0, NULL, NULL) = 1
4243  <... epoll_wait resumed>[], 8, 10) = 0
4242  --- SIGCHLD {si_signo=SIGCHLD} ---
[pid  4244] poll([{fd=3, events=POLLIN}], 1, 100) = 1
4242  statx(AT_FDCWD, "/boad-osu-mark/bcast-4/end", AT_STATX_SYNC_AS_STAT, STATX_ALL, 0x7ffd) = -1 ENOENT (No such file or directory)
4242  sendto(3, "x", 1, 0, NULL, 0) = 1
4242  statx(AT_FDCWD, "/boad-osu-mark/reduce-4/begin", 0, 0, 0x7ffd) = -1 ENOENT
4242  statx(AT_FDCWD, "/boad-osu-mark/reduce-4/end", 0, 0, 0x7ffd) = -1 ENOENT
4242  +++ exited with 0 +++
"#;
        let c = count_marked(trace);
        assert_eq!(c["bcast-4"].total, 4);
        assert_eq!(c["bcast-4"].by_name["sendto"], 1);
        assert_eq!(c["bcast-4"].by_name["epoll_wait"], 1);
        assert_eq!(
            c["bcast-4"].breakdown(2),
            "epoll_wait 0.50, poll 0.50, recvfrom 0.50, sendto 0.50"
        );
        assert_eq!(c["reduce-4"].total, 0);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn unterminated_label_is_not_reported() {
        let trace = "1 statx(AT_FDCWD, \"/boad-osu-mark/x/begin\", 0) = -1 ENOENT\n1 read(0, \"\", 1) = 0\n";
        assert!(count_marked(trace).is_empty());
    }
}
