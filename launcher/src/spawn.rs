//! Starting ranks and forwarding their output.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Sender;
use std::thread;

use crate::error::Error;
use boad_proto::control::FromAgent;

/// What every rank of a job is started with.
pub struct Launch<'a> {
    /// Resolved program path.
    pub program: &'a Path,
    /// The program name as the user wrote it (the ranks' `argv[0]`).
    pub argv0: &'a OsString,
    /// Its arguments.
    pub args: &'a [OsString],
    /// Environment variables common to all ranks.
    pub env: Vec<(&'static str, OsString)>,
    /// More of them, set after `env` (an agent's: what boadrun sent it).
    pub extra_env: &'a [(OsString, OsString)],
    /// Where the ranks' output goes.
    pub output: Output,
}

/// Where a rank's output lines go.
#[derive(Clone, Copy, Debug)]
pub enum Output {
    /// To our stdout and stderr, each line prefixed with `[RANK] ` if `tag`.
    Direct {
        /// Prefix lines with the rank.
        tag: bool,
    },
    /// Both to our stdout as the control lines of an agent ([`FromAgent::Output`]): boadrun, on the
    /// other end, writes them out.
    Framed,
}

/// Where one rank runs.
pub struct Placement {
    /// Host id in the job.
    pub host_id: usize,
    /// Rank among the ranks of its host.
    pub local_rank: usize,
    /// Ranks on its host.
    pub local_size: usize,
    /// Address it binds its socket to.
    pub bind: std::net::IpAddr,
}

/// For a child between fork and exec: asks for SIGKILL when the process `launcher` (its parent)
/// dies, and exits at once if it already has (it may have died between fork and prctl: then
/// nobody would kill the child). Calls only async-signal-safe functions and allocates nothing.
/// Effective only if the forking thread lives as long as the launcher (PR_SET_PDEATHSIG follows
/// the thread): fork from the main thread.
pub fn die_with(launcher: libc::pid_t) -> std::io::Result<()> {
    let (sig, zero): (libc::c_ulong, libc::c_ulong) = (libc::SIGKILL as _, 0);
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes integers only and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig, zero, zero, zero) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: getppid and _exit have no preconditions; _exit ends the child without running
    // anything of the parent's.
    unsafe {
        if libc::getppid() != launcher {
            libc::_exit(1);
        }
    }
    Ok(())
}

/// Sends `sig` to the process group `child` leads (its descendants too), or to `child` alone if it
/// left that group. Call only before `child` is reaped, so that its pid cannot have been reused.
pub fn signal_group(child: &Child, sig: i32) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill() has no memory-safety preconditions; `pid` is an unreaped child of ours, which
    // is the leader of the process group it was started in.
    unsafe {
        if libc::kill(-pid, sig) != 0 {
            libc::kill(pid, sig);
        }
    }
}

/// Longest piece of output forwarded as one line: a longer line is passed on in pieces of this size,
/// each ended by a newline, so that boadrun's memory stays bounded whatever a rank prints.
pub const MAX_LINE: usize = 64 << 10;

/// Starts `rank` of `size` at `place`, in its own process group, with stdin from `/dev/null` and its stdout and
/// stderr forwarded line by line by two threads, each of which sends `()` on `done` when its stream
/// closes.
///
/// Must be called from the main thread: `PR_SET_PDEATHSIG` fires when the *thread* that forked the
/// child exits, so a child forked from a short-lived thread would be killed early.
pub fn spawn_rank(
    launch: &Launch<'_>,
    rank: usize,
    size: usize,
    place: &Placement,
    rendezvous: std::os::fd::RawFd,
    done: &Sender<()>,
) -> Result<Child, Error> {
    let mut cmd = Command::new(launch.program);
    cmd.arg0(launch.argv0)
        .args(launch.args)
        .envs(launch.env.iter().map(|(k, v)| (*k, v)))
        .envs(launch.extra_env.iter().map(|(k, v)| (k, v)))
        .env(boad_proto::env::RANK, rank.to_string())
        .env(boad_proto::env::SIZE, size.to_string())
        .env(boad_proto::env::LOCAL_RANK, place.local_rank.to_string())
        .env(boad_proto::env::LOCAL_SIZE, place.local_size.to_string())
        .env(boad_proto::env::HOST_ID, place.host_id.to_string())
        .env(boad_proto::env::BIND_ADDR, place.bind.to_string())
        .env(boad_proto::env::RENDEZVOUS_FD, rendezvous.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let launcher = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and calls only async-signal-safe
    // functions (prctl, getppid, fcntl, _exit); it allocates nothing and touches no lock.
    // `rendezvous` is this rank's end of its connection, open until the rank has been started.
    unsafe {
        cmd.pre_exec(move || {
            die_with(launcher)?;
            // The rank's end of its rendezvous connection survives exec (every other descriptor
            // of boadrun's is close-on-exec).
            if libc::fcntl(rendezvous, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        rank,
        program: launch.argv0.to_string_lossy().into_owned(),
        source,
    })?;
    if let Some(out) = child.stdout.take() {
        forward(out, rank, false, launch.output, done.clone());
    }
    if let Some(err) = child.stderr.take() {
        forward(err, rank, true, launch.output, done.clone());
    }
    Ok(child)
}

/// Copies a rank's `stream` (its stderr if `err`) out a whole line at a time (see [`Output`]).
/// A last line without newline gets one; a line longer than [`MAX_LINE`] is passed on in pieces of
/// that size, each ended by a newline.
fn forward(
    stream: impl Read + Send + 'static,
    rank: usize,
    err: bool,
    output: Output,
    done: Sender<()>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::with_capacity(MAX_LINE, stream);
        let mut line = Vec::with_capacity(256);
        let mut broken = false; // our own output is gone: keep draining so the rank never blocks
        loop {
            line.clear();
            match read_piece(&mut reader, &mut line, MAX_LINE) {
                Ok(0) | Err(_) => break,
                Ok(_) if broken => continue,
                Ok(_) => {}
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            broken = match output {
                Output::Direct { tag } => write_line(rank, err, tag, &line).is_err(),
                Output::Framed => {
                    let framed = FromAgent::Output {
                        rank,
                        err,
                        line: std::mem::take(&mut line),
                    };
                    let mut o = std::io::stdout().lock();
                    o.write_all(&framed.encode())
                        .and_then(|()| o.flush())
                        .is_err()
                }
            };
        }
        let _ = done.send(());
    });
}

/// Writes one line of `rank`'s to our stdout (stderr if `err`), prefixed with `[RANK] ` if `tag`,
/// in one write under the stream's lock, so that lines of different ranks never mix and not even a
/// terminal shared by stdout and stderr splits one.
pub fn write_line(rank: usize, err: bool, tag: bool, line: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(line.len() + 16);
    if tag {
        out.extend_from_slice(format!("[{rank}] ").as_bytes());
    }
    out.extend_from_slice(line);
    out.push(b'\n');
    if err {
        let mut e = std::io::stderr().lock();
        e.write_all(&out).and_then(|()| e.flush())
    } else {
        let mut o = std::io::stdout().lock();
        o.write_all(&out).and_then(|()| o.flush())
    }
}

/// Appends to `out` the bytes up to and including the next newline, or `max` bytes if no newline
/// comes before; returns how many (0 at the end of the stream).
fn read_piece(r: &mut impl BufRead, out: &mut Vec<u8>, max: usize) -> std::io::Result<usize> {
    let mut n = 0;
    while n < max {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            break;
        }
        let room = max - n;
        let (take, end) = match buf[..buf.len().min(room)].iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len().min(room), false),
        };
        out.extend_from_slice(&buf[..take]);
        r.consume(take);
        n += take;
        if end {
            break;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::read_piece;
    use std::io::BufReader;

    #[test]
    fn pieces_are_lines_or_bounded() {
        let text = b"ab\ncdefghij\n\nk";
        let mut r = BufReader::with_capacity(3, &text[..]);
        let mut pieces = Vec::new();
        loop {
            let mut v = Vec::new();
            if read_piece(&mut r, &mut v, 4).expect("read") == 0 {
                break;
            }
            pieces.push(String::from_utf8(v).expect("utf-8"));
        }
        assert_eq!(pieces, ["ab\n", "cdef", "ghij", "\n", "\n", "k"]);
    }
}
