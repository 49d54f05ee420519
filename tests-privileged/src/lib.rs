//! Support for boad's privileged tests (`tests/*.rs`, one file per feature of the kernel path's
//! programs): throwaway network namespaces and boad datagrams here, the kernel path as the tests
//! set it up in [`fixture`], hosts on a virtual LAN in [`bridge`].
//!
//! Every namespace is named `boadtest-<pid>-<random>`, is deleted by a drop guard (also when the test
//! panics), and code runs inside it on a thread that `setns`es into it, so nothing is ever attached
//! to, or sent on, the host's interfaces. Each test makes namespaces of its own and ends with
//! [`finish`].
#![deny(missing_docs)]

pub mod bridge;
pub mod fixture;

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

use boad::{DType, Op};
use boad_common::{kind, Header, HEADER_LEN, MAGIC, VERSION};

/// True if the tests can run here (root). Not root: the test fails, or with `BOAD_ALLOW_SKIP` set
/// it is recorded as skipped (see `boad_test_support::require`) and returns.
pub fn privileged() -> bool {
    boad_test_support::require_root()
}

/// Runs a command, failing with its stderr if it exits non-zero.
pub fn cmd(args: &[&str]) -> io::Result<String> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Inode of a network namespace file, to tell namespaces apart.
fn netns_inode(path: &str) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(path)?.ino())
}

/// A network namespace that is deleted on drop, with `lo` up.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `boadtest-<pid>-<random>` and sets its `lo` up.
    pub fn new() -> io::Result<Netns> {
        let name = format!(
            "boadtest-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        cmd(&["ip", "netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file (`/run/netns/NAME`), e.g. for `boad_ebpf_loader::with_netns`.
    pub fn file(&self) -> io::Result<File> {
        File::open(format!("/run/netns/{}", self.name))
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> io::Result<String> {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        cmd(&all)
    }

    /// `ip netns exec NAME ARGS...`
    pub fn exec(&self, args: &[&str]) -> io::Result<String> {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        cmd(&all)
    }

    /// Runs `f` on a new thread inside the namespace and returns its result; a panic in `f` is
    /// re-raised here. The thread checks it really left the host's namespace before running `f`.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let handle = self.spawn(f);
        match handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Like [`Netns::run`] but returns the thread's handle without waiting.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path).unwrap_or_else(|e| panic!("entering {path}: {e}"));
            f()
        })
    }

    /// MAC address of interface `dev` in the namespace.
    pub fn mac(&self, dev: &str) -> io::Result<[u8; 6]> {
        let out = self.ip(&["-o", "link", "show", "dev", dev])?;
        let text = out
            .split("link/ether ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .ok_or_else(|| io::Error::other(format!("no MAC in {out:?}")))?;
        let mut mac = [0u8; 6];
        let parts: Vec<_> = text.split(':').collect();
        if parts.len() != 6 {
            return Err(io::Error::other(format!("bad MAC {text:?}")));
        }
        for (b, p) in mac.iter_mut().zip(parts) {
            *b = u8::from_str_radix(p, 16).map_err(io::Error::other)?;
        }
        Ok(mac)
    }

    /// A counter of `/proc/net/snmp` in the namespace, e.g. ("Udp", "InCsumErrors").
    pub fn snmp(&self, group: &str, field: &str) -> io::Result<u64> {
        let text = self.exec(&["cat", "/proc/net/snmp"])?;
        let prefix = format!("{group}:");
        let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
        let (names, values) = match (lines.next(), lines.next()) {
            (Some(n), Some(v)) => (n, v),
            _ => return Err(io::Error::other(format!("no {group} in /proc/net/snmp"))),
        };
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == field)
            .and_then(|(_, v)| v.parse().ok())
            .ok_or_else(|| io::Error::other(format!("no {group}:{field}")))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = cmd(&["ip", "netns", "del", &self.name]) {
            eprintln!("warning: deleting namespace {}: {e}", self.name);
        }
        if Path::new(&format!("/run/netns/{}", self.name)).exists() {
            eprintln!("warning: namespace {} still exists", self.name);
        }
    }
}

/// Deletes `ns` and checks that its file is gone and that the host's `lo` (the calling thread's
/// namespace: call it from the test's main thread) has no program attached.
pub fn finish(ns: Netns) {
    let path = format!("/run/netns/{}", ns.name());
    drop(ns);
    assert!(!Path::new(&path).exists(), "{path} left behind");
    assert_lo_clean();
}

/// Moves the calling thread into the network namespace bound at `path`.
fn enter(path: &str) -> io::Result<()> {
    let host = netns_inode("/proc/self/ns/net")?;
    let file = File::open(path)?;
    // SAFETY: `file` is an open namespace file; setns only changes this thread's namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let now = netns_inode("/proc/thread-self/ns/net")?;
    if now == host || now != netns_inode(path)? {
        return Err(io::Error::other("setns did not leave the host namespace"));
    }
    Ok(())
}

/// True if no namespace of this process is left.
pub fn no_namespaces_left() -> bool {
    let prefix = format!("boadtest-{}-", std::process::id());
    match std::fs::read_dir("/run/netns") {
        Ok(dir) => !dir
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with(&prefix)),
        Err(_) => true,
    }
}

/// Panics if `lo` of the calling thread's namespace (the host's, from a test's main thread) has an
/// XDP or TCX program attached.
pub fn assert_lo_clean() {
    let link = cmd(&["ip", "-d", "link", "show", "dev", "lo"]).unwrap_or_default();
    assert!(!link.contains("xdp"), "lo has an XDP program: {link}");
    assert_eq!(tcx_programs("lo"), 0, "lo has a TCX program");
}

/// Number of TCX programs (ingress + egress) on `iface` in the calling thread's namespace.
/// (Debian's bpftool 7.1 does not list TCX links, hence the BPF_PROG_QUERY through aya.)
pub fn tcx_programs(iface: &str) -> usize {
    use aya::programs::{tc::TcAttachType, SchedClassifier};
    [TcAttachType::Ingress, TcAttachType::Egress]
        .into_iter()
        .map(|t| match SchedClassifier::query_tcx(iface, t) {
            Ok((_, progs)) => progs.len(),
            Err(e) => panic!("querying TCX programs on {iface}: {e}"),
        })
        .sum()
}

/// A boad header for a kernel-path datagram of `kind`.
pub fn header(kind_: u8, job: u64, comm: u32, seq: u32, op: Op, dtype: DType) -> Header {
    Header {
        magic: MAGIC,
        version: VERSION,
        kind: kind_,
        coll: boad_common::coll::REDUCE,
        op: op as u8,
        dtype: dtype as u8,
        nchunks: 1,
        job,
        comm,
        seq,
        ..Header::default()
    }
}

/// `header` + `payload`, with `len`, `total` and `count` filled in.
pub fn datagram(mut h: Header, payload: &[u8]) -> Vec<u8> {
    h.len = payload.len() as u32;
    h.total = payload.len() as u32;
    let size = boad_common::dtype::size(h.dtype).max(1);
    h.count = (payload.len() / size) as u64;
    let mut v = bytemuck::bytes_of(&h).to_vec();
    v.extend_from_slice(payload);
    v
}

/// Splits a datagram into its header and payload.
pub fn parse(buf: &[u8]) -> Option<(Header, &[u8])> {
    if buf.len() < HEADER_LEN {
        return None;
    }
    let h: Header = bytemuck::pod_read_unaligned(&buf[..HEADER_LEN]);
    Some((h, &buf[HEADER_LEN..]))
}

/// A CONTRIB datagram from `src`.
#[allow(clippy::too_many_arguments)]
pub fn contrib(
    job: u64,
    comm: u32,
    seq: u32,
    src: u32,
    op: Op,
    dtype: DType,
    payload: &[u8],
) -> Vec<u8> {
    let mut h = header(kind::CONTRIB, job, comm, seq, op, dtype);
    h.src = src;
    datagram(h, payload)
}
