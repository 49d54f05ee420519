//! Prompt news of a dead peer where no launcher writes `EXIT` lines (a job started by Slurm, Hydra
//! or env://): a waiting rank learns that the peer it waits for is gone within about a second,
//! instead of after `BOAD_TIMEOUT_MS` of silence.
//!
//! Two signs, each trusted only when it cannot be about another process:
//! - Same host ([`ProcWatch`]): a pidfd of the peer's process, opened on the pid of the job table
//!   and kept only once `/proc/<pid>/fd` shows that this very process holds the peer's UDP socket
//!   of the table (its inode, found by address in `/proc/net/udp{,6}`; every rank keeps that socket
//!   open for its whole life). A pid alone proves nothing: it may be reused, or be another process's
//!   in another pid namespace (containers of one pod can share a network namespace, and so a boad
//!   host, without sharing pids). The pidfd is opened before the check, and the socket existed
//!   before the table did, so the process checked is the one the pidfd holds. A pid this rank cannot
//!   see or read (another pid namespace, another user) gives no pidfd: that peer is probed instead.
//!   The pidfd turns readable the moment the process ends.
//! - Any host ([`PortProbe`]): empty datagrams from a socket of this rank connected to the peer's
//!   liveness port (`transport::pulse`, which ignores them), or, for a peer of the shared-memory
//!   transport that is not watched by its pid (another pid namespace), to the UDP socket of the
//!   table it holds without reading it. A live process's port is bound until it leaves boad; a
//!   closed one makes the peer's kernel answer ICMP port unreachable, which a connected
//!   socket reports as `ECONNREFUSED`. A peer is reported gone only after refusals of two probes sent
//!   at least [`GONE_AFTER`] apart with nothing heard from it in between: one stray or forged ICMP
//!   message is not enough (see docs/security.md for what an attacker on the path can still do). A
//!   frozen process or a lost network refuses nothing: those keep the timeout. The peer's host
//!   rate-limits its ICMP messages (Linux: a burst, then one a second to each host), and a rank's
//!   data path keeps sending to a dead peer (resends, probes), which takes most of them: so the UDP
//!   transport also counts the refusal of any datagram its data socket sent to the peer's ports
//!   (its error queue, `IP_RECVERR`, [`refused_destinations`]). Across hosts a peer is then gone
//!   within one to two seconds. A child a rank forked without exec holds the rank's sockets
//!   too: its ports then stay bound after the rank ends, and that peer keeps the timeout.
//!
//! Why a peer left: a rank that fails a collective tells every peer before it ends (its ABORT,
//! authenticated like every datagram by the job key and the sender's address of the table; on
//! shared memory the abort it posts), and a waiting rank that sees that peer gone describes it by
//! its latest failure (`Ledger::explain`: "rank 3 is gone ...: its process ended, after it failed
//! collective #21: rank 3: ... rank 4 is gone ..."), so that every survivor names the rank that
//! died first, not only the one it waited for. The ABORT left before the peer's process ended and
//! its port closed, but may be read after the sign above (the receiving host's network stack can
//! queue it behind the pidfd's wake-up): a waiting rank holds its own verdict for [`GONE_GRACE`],
//! reading its socket meanwhile, unless that peer's failure is already known. A peer that is gone
//! without having failed (killed) is reported that much later.
//!
//! Contract: nothing here blocks; a peer is reported gone at most once per sign and only on the
//! evidence above; every failure to set a sign up (no pidfd support, unreadable `/proc`) leaves that
//! peer to the timeout.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use boad_proto::net::UdpSocketEntry;

use boad_proto::lines::PeerEntry;

/// How long a rank that saw a peer gone waits, reading, for that peer's ABORT before it reports it
/// (see the module docs).
pub(crate) const GONE_GRACE: Duration = Duration::from_millis(100);
/// Two refusals at least this far apart make a peer gone.
pub(crate) const GONE_AFTER: Duration = Duration::from_millis(200);
/// A waiting rank starts probing a peer silent this long...
pub(crate) const PROBE_AFTER: Duration = Duration::from_millis(100);
/// ... and probes it at most this often while nothing is refused, backing off up to
/// [`PROBE_MAX`] (silent peers are often only busy: many waiting ranks must not flood one).
const PROBE_MIN: Duration = Duration::from_millis(100);
const PROBE_MAX: Duration = Duration::from_secs(1);

/// pidfds of the processes of this host's peers, where they provably are the peers' processes.
#[derive(Default)]
pub(crate) struct ProcWatch {
    /// Per rank of the table: (its pid, its pidfd) while watched.
    fds: Vec<Option<(u32, OwnedFd)>>,
}

impl ProcWatch {
    /// Watches the ranks of `table` on the host of rank `me` (same `host_id`), except `me`.
    pub fn new(me: usize, table: &[PeerEntry]) -> ProcWatch {
        let Some(host) = table.get(me).map(|e| e.host_id) else {
            return ProcWatch::default();
        };
        let local = |r: usize, e: &PeerEntry| r != me && e.host_id == host && e.port != 0;
        if !table.iter().enumerate().any(|(r, e)| local(r, e)) {
            return ProcWatch::default();
        }
        let sockets = boad_proto::net::udp_sockets(true);
        let fds: Vec<_> = table
            .iter()
            .enumerate()
            .map(|(r, e)| {
                local(r, e)
                    .then(|| verified_pidfd(e, &sockets))
                    .flatten()
                    .map(|fd| (e.pid, fd))
            })
            .collect();
        let w = ProcWatch { fds };
        tracing::debug!(
            "boad: rank {me}: watching the processes of {} of the {} other ranks on this host (the others' pids are not theirs here: another pid namespace, or unreadable)",
            w.watched(),
            table.iter().enumerate().filter(|(r, e)| local(*r, e)).count()
        );
        w
    }

    /// The pidfd of rank `r`, if it is watched (to wait for it with a poller: readable once the
    /// process ended).
    pub fn fd(&self, r: usize) -> Option<RawFd> {
        self.fds.get(r)?.as_ref().map(|(_, fd)| fd.as_raw_fd())
    }

    /// How many ranks are watched.
    pub fn watched(&self) -> usize {
        self.fds.iter().flatten().count()
    }

    /// The ranks whose process ended since the last call, with how to say it; each is reported
    /// once (and no longer watched).
    pub fn ended(&mut self) -> Vec<(usize, String)> {
        let mut polls: Vec<(usize, libc::pollfd)> = self
            .fds
            .iter()
            .enumerate()
            .filter_map(|(r, w)| {
                w.as_ref().map(|(_, fd)| {
                    (
                        r,
                        libc::pollfd {
                            fd: fd.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        },
                    )
                })
            })
            .collect();
        if polls.is_empty() {
            return Vec::new();
        }
        let mut raw: Vec<libc::pollfd> = polls.iter().map(|(_, p)| *p).collect();
        // SAFETY: `raw` is a valid array of `raw.len()` pollfds that lives across the call; a zero
        // timeout never blocks.
        let n = unsafe { libc::poll(raw.as_mut_ptr(), raw.len() as libc::nfds_t, 0) };
        if n <= 0 {
            return Vec::new();
        }
        for ((_, p), r) in polls.iter_mut().zip(&raw) {
            p.revents = r.revents;
        }
        polls
            .into_iter()
            .filter(|(_, p)| p.revents & (libc::POLLIN | libc::POLLHUP) != 0)
            .filter_map(|(r, _)| {
                let (pid, _) = self.fds.get_mut(r)?.take()?;
                Some((r, ended(pid)))
            })
            .collect()
    }

    /// Whether rank `r`'s watched process ended (readable pidfd); if so it is no longer watched.
    pub fn ended_one(&mut self, r: usize) -> Option<String> {
        let fd = self.fd(r)?;
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd on the stack; a zero timeout never blocks.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        if n <= 0 || p.revents & (libc::POLLIN | libc::POLLHUP) == 0 {
            return None;
        }
        let (pid, _) = self.fds.get_mut(r)?.take()?;
        Some(ended(pid))
    }
}

/// How a process that ended is named in errors.
fn ended(pid: u32) -> String {
    format!("its process (pid {pid}) ended")
}

/// A pidfd of `e.pid`, if that pid is, in this pid namespace, the process holding the UDP socket
/// of `e` (address `e.ip`, port `e.port`, the only such socket in `sockets`).
fn verified_pidfd(e: &PeerEntry, sockets: &[UdpSocketEntry]) -> Option<OwnedFd> {
    let mut held = sockets
        .iter()
        .filter(|s| s.port == e.port && (s.ip == e.ip || s.ip.is_unspecified()));
    let inode = held.next()?.inode;
    if held.next().is_some() {
        // Two sockets on that port (SO_REUSEPORT, or an address and the wildcard): ambiguous.
        return None;
    }
    let pid = libc::pid_t::try_from(e.pid).ok().filter(|p| *p > 0)?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; it touches no
    // memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = RawFd::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: `fd` was just returned by pidfd_open and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // Opened first, checked second: see the module docs.
    holds_socket(e.pid, inode).then_some(fd)
}

/// Whether process `pid` (of this pid namespace) has a descriptor of socket inode `inode`.
fn holds_socket(pid: u32, inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    dir.flatten().any(|d| {
        std::fs::read_link(d.path()).is_ok_and(|l| l.as_os_str() == std::ffi::OsStr::new(&want))
    })
}

/// Probes of one peer's port from a connected socket, for refusals (see the module docs).
#[derive(Default)]
pub(crate) struct PortProbe {
    sock: Option<UdpSocket>,
    /// The socket could not be set up: no probes to this peer.
    failed: bool,
    /// When the last probe was sent.
    sent: Option<Instant>,
    /// When the first probe of the refusals since the peer was last heard was sent.
    refused_since: Option<Instant>,
}

impl PortProbe {
    /// The peer spoke (a datagram, a PONG): whatever was refused before was not its port closing.
    pub fn heard(&mut self) {
        self.refused_since = None;
    }

    /// One step of a wait for a peer whose port is `to`, silent for `silent`: notes a
    /// refusal of the last probe, and sends the next one when it is due. Returns how to name the
    /// peer's end once two probes at least [`GONE_AFTER`] apart were refused.
    pub fn step(&mut self, to: SocketAddr, silent: Duration, now: Instant) -> Option<String> {
        if self.failed || silent < PROBE_AFTER {
            return None;
        }
        if self.sock.is_none() {
            let any = SocketAddr::new(
                if to.is_ipv4() {
                    IpAddr::from([0u8; 4])
                } else {
                    IpAddr::from([0u16; 8])
                },
                0,
            );
            let made = UdpSocket::bind(any).and_then(|s| {
                s.connect(to)?;
                s.set_nonblocking(true)?;
                Ok(s)
            });
            match made {
                Ok(s) => self.sock = Some(s),
                Err(_) => {
                    self.failed = true;
                    return None;
                }
            }
        }
        let refused = |e: &std::io::Error| e.kind() == std::io::ErrorKind::ConnectionRefused;
        let sock = self.sock.as_ref()?;
        if let Some(sent) = self.sent {
            if matches!(sock.take_error(), Ok(Some(e)) if refused(&e)) {
                if let Some(how) = self.refusal(sent, to, now) {
                    return Some(how);
                }
            }
            let every = if self.refused_since.is_some() {
                GONE_AFTER
            } else {
                (silent / 2).clamp(PROBE_MIN, PROBE_MAX)
            };
            if now.duration_since(sent) < every {
                return None;
            }
        }
        let sock = self.sock.as_ref()?;
        if matches!(sock.send(&[]), Err(e) if refused(&e)) {
            // The refusal of the last probe came after the look above: note it, send again.
            if let Some(how) = self.sent.and_then(|sent| self.refusal(sent, to, now)) {
                return Some(how);
            }
            let _ = self.sock.as_ref()?.send(&[]);
        }
        self.sent = Some(now);
        None
    }

    /// The probe sent at `sent` to `to` was refused: how to name the peer's end once refusals span
    /// [`GONE_AFTER`].
    fn refusal(&mut self, sent: Instant, to: SocketAddr, now: Instant) -> Option<String> {
        let first = *self.refused_since.get_or_insert(sent);
        (sent.duration_since(first) >= GONE_AFTER).then(|| {
            format!(
                "its port {to} refused probes for {} ms: its process ended (or left boad)",
                now.duration_since(first).as_millis()
            )
        })
    }
}

/// Asks the kernel to queue the ICMP errors of datagrams `sock` sent (unconnected UDP sockets
/// otherwise drop them), so that [`refused_destinations`] can read whose port refused them.
pub(crate) fn queue_errors(sock: &UdpSocket) -> std::io::Result<()> {
    let (level, name) = if sock.local_addr()?.is_ipv4() {
        (libc::SOL_IP, libc::IP_RECVERR)
    } else {
        (libc::SOL_IPV6, libc::IPV6_RECVERR)
    };
    let on: libc::c_int = 1;
    // SAFETY: the option value is a c_int on the stack, passed with its size; the descriptor is
    // `sock`'s.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether `e`, from a socket with [`queue_errors`] on, may be an ICMP error of an earlier datagram
/// (the kernel hands it to the next send or receive): such an error is not the call's own.
pub(crate) fn from_icmp(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNREFUSED
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EPROTO
                | libc::ENOPROTOOPT
                | libc::EOPNOTSUPP
                | libc::EACCES
                | libc::EMSGSIZE
        )
    )
}

/// Reads `sock`'s error queue (see [`queue_errors`]) to the end: the destinations of the datagrams
/// that ICMP port unreachable refused, in order.
pub(crate) fn refused_destinations(sock: &UdpSocket) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    // At most what the queue can hold in one look; more waits for the next.
    for _ in 0..64 {
        // SAFETY: all-zero bytes are a valid sockaddr_storage and msghdr.
        let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut ctrl = [0u64; 64];
        let mut data = [0u8; 64];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = std::ptr::from_mut(&mut name).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctrl.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&ctrl) as _;
        // SAFETY: every pointer in `msg` points to a live buffer of the length given with it.
        let n = unsafe {
            libc::recvmsg(
                sock.as_raw_fd(),
                &mut msg,
                libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            break;
        }
        let mut refused = false;
        // SAFETY: `msg` was filled by recvmsg; the CMSG macros walk its control buffer within
        // msg_controllen, and each header's data holds what its level and type say.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                let h = &*c;
                if (h.cmsg_level == libc::SOL_IP && h.cmsg_type == libc::IP_RECVERR)
                    || (h.cmsg_level == libc::SOL_IPV6 && h.cmsg_type == libc::IPV6_RECVERR)
                {
                    let ee: libc::sock_extended_err =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    refused |= ee.ee_errno == libc::ECONNREFUSED as u32
                        && (ee.ee_origin == libc::SO_EE_ORIGIN_ICMP
                            || ee.ee_origin == libc::SO_EE_ORIGIN_ICMP6);
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        if !refused {
            continue;
        }
        // SAFETY: recvmsg wrote an address of msg_namelen bytes into `name`.
        let addr = unsafe { socket2::SockAddr::new(name, msg.msg_namelen) };
        if let Some(a) = addr.as_socket() {
            out.push(a);
        }
    }
    out
}

impl PortProbe {
    /// A datagram this rank sent to the peer's port `to` was refused just now (read from the
    /// error queue of another socket): counted as a refused probe.
    pub fn refused_now(&mut self, to: SocketAddr, now: Instant) -> Option<String> {
        if self.failed {
            return None;
        }
        self.refusal(now, to, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd as Fd;
    use std::process::{Command, Stdio};

    fn entry(rank: usize, host_id: u32, sock: &UdpSocket, pid: u32) -> PeerEntry {
        let a = sock.local_addr().expect("address");
        PeerEntry {
            rank,
            host_id,
            ip: a.ip(),
            port: a.port(),
            pulse: 0,
            pid,
        }
    }

    #[test]
    fn a_peer_process_is_watched_only_when_it_holds_its_socket_and_reported_when_it_ends() {
        // The "peer": a child process holding a UDP socket (as its stdin), which this process
        // then closes.
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let other = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let me = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let held = entry(1, 7, &sock, 0);
        let mut child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::from(Fd::from(sock)))
            .stdout(Stdio::null())
            .spawn()
            .expect("start sleep");
        let pid = child.id();
        let table = vec![
            entry(0, 7, &me, std::process::id()),
            PeerEntry { pid, ..held },
            // Rank 2 claims the child's pid with another socket: not trusted.
            entry(2, 7, &other, pid),
            // Rank 3 is on another host: not watched.
            PeerEntry {
                host_id: 8,
                pid,
                ..held
            },
            // Rank 4 names a pid nobody has (above the kernel's largest).
            entry(4, 7, &other, 1 << 23),
        ];
        let mut w = ProcWatch::new(0, &table);
        assert!(w.fd(1).is_some(), "the child holds rank 1's socket");
        assert_eq!(w.watched(), 1, "only rank 1");
        assert!(w.ended().is_empty() && w.ended_one(1).is_none(), "alive");
        child.kill().expect("kill");
        let t0 = Instant::now();
        let mut got = Vec::new();
        while got.is_empty() && t0.elapsed() < Duration::from_secs(5) {
            got = w.ended();
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(got, vec![(1, format!("its process (pid {pid}) ended"))]);
        assert!(w.ended().is_empty(), "reported once");
        let _ = child.wait();
    }

    #[test]
    fn the_error_queue_names_the_refused_destinations() {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        queue_errors(&sock).expect("IP_RECVERR");
        let closed = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a port");
        let live = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.send_to(b"x", live.local_addr().expect("address"))
            .expect("send");
        sock.send_to(b"x", closed).expect("send");
        let t0 = Instant::now();
        let mut got = Vec::new();
        while got.is_empty() && t0.elapsed() < Duration::from_secs(2) {
            got = refused_destinations(&sock);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(got, vec![closed]);
        assert!(refused_destinations(&sock).is_empty(), "read to the end");
    }

    #[test]
    fn a_closed_port_is_gone_after_two_refusals_and_a_live_one_never() {
        let closed = {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.local_addr().expect("address")
        };
        let live = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let live_addr = live.local_addr().expect("address");
        let (mut dead, mut alive) = (PortProbe::default(), PortProbe::default());
        assert!(dead.step(closed, Duration::ZERO, Instant::now()).is_none());
        assert!(dead.sent.is_none(), "not silent long enough: no probe");
        let t0 = Instant::now();
        let silent = PROBE_AFTER;
        let mut said = None;
        while said.is_none() && t0.elapsed() < Duration::from_secs(3) {
            said = dead.step(closed, silent, Instant::now());
            assert!(alive.step(live_addr, silent, Instant::now()).is_none());
            std::thread::sleep(Duration::from_millis(10));
        }
        let took = t0.elapsed();
        let said = said.expect("the closed port is gone");
        assert!(said.contains("refused"), "{said}");
        assert!(
            took >= GONE_AFTER && took < Duration::from_secs(1),
            "{took:?}"
        );
        // The live port got probes (empty datagrams) and refused none.
        let mut buf = [0u8; 8];
        live.set_nonblocking(true).expect("nonblocking");
        assert_eq!(live.recv(&mut buf).ok(), Some(0));
        // Hearing from the peer forgets earlier refusals.
        let mut p = PortProbe::default();
        let now = Instant::now();
        assert!(p.step(closed, silent, now).is_none());
        std::thread::sleep(Duration::from_millis(20));
        assert!(p.step(closed, silent, Instant::now()).is_none());
        assert!(p.refused_since.is_some());
        p.heard();
        assert!(p.refused_since.is_none());
    }
}
