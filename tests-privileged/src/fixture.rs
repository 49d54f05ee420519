//! The kernel path as the tests set it up: the job, ports and timeouts they share, the programs
//! loaded and attached with a communicator's members, the ranks of a reduction on `lo`, random
//! payloads and the userspace fold the programs' results are compared with.
//!
//! Everything here acts in the calling thread's network namespace: call it inside
//! [`crate::Netns::run`] or [`crate::Netns::spawn`].

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use boad::{DType, Op};
use boad_ebpf_loader::{BcastMember, Counters, KernelPath, PortRole, XdpMode};
use rand::Rng;

/// The job key every test registers and puts in its datagrams.
pub const JOB: u64 = 0x5eed_b0ad_0000_0001;
/// The communicator every test registers.
pub const COMM: u32 = 7;
/// The port registered as the reducer's (`PortRole::Reduce`), rank 0's in the reductions.
pub const REDUCE_PORT: u16 = 40_100;
/// The port registered as the broadcast trigger (`PortRole::Bcast`).
pub const TRIGGER_PORT: u16 = 40_200;
/// The broadcasting rank's (rank 0's) port in the broadcast tests.
pub const ROOT_PORT: u16 = 40_300;
/// How long a datagram that must arrive is waited for.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a socket must stay quiet to show that nothing more arrives.
pub const QUIET: Duration = Duration::from_millis(150);

/// The counters' change from `before` to `after`.
pub fn delta(after: Counters, before: Counters) -> Counters {
    after.since(&before)
}

/// Receives one datagram, or None after `timeout`.
pub fn recv(sock: &UdpSocket, timeout: Duration) -> Option<Vec<u8>> {
    sock.set_read_timeout(Some(timeout)).expect("set timeout");
    let mut buf = vec![0u8; 65536];
    match sock.recv(&mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("recv: {e}"),
    }
}

/// SO_RCVBUFFORCE (root may exceed net.core.rmem_max).
pub fn set_rcvbuf(sock: &UdpSocket, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: valid socket fd, option value is a c_int that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

/// Loads the programs, registers the job, the reduce port and `COMM` with `contribs` and `members`
/// (rank `i` is `members[i]`; the programs take rank `i`'s datagrams from its address only),
/// attaches XDP to `iface` (inside the calling thread's namespace).
pub fn reducer_on(
    iface: &str,
    mode: XdpMode,
    contribs: u32,
    members: &[BcastMember],
) -> KernelPath {
    let mut k = KernelPath::load().expect("load eBPF programs");
    k.set_job(JOB).expect("job");
    k.add_port(REDUCE_PORT, PortRole::Reduce).expect("port");
    k.set_comm(COMM, contribs, members).expect("comm");
    k.attach_xdp(iface, mode)
        .expect("attach XDP inside the namespace");
    k
}

/// A member of `COMM` at `addr`.
pub fn member(rank: u32, addr: SocketAddrV4) -> BcastMember {
    BcastMember {
        addr,
        rank,
        ifindex: 0,
        mac: None,
    }
}

/// The ranks of a reduction on `lo`: rank 0, the reducer, at `127.0.0.1:REDUCE_PORT`, and
/// contributors `1..=n`, each with its own socket on `127.0.0.1`.
pub struct Ranks {
    socks: Vec<UdpSocket>,
}

impl Ranks {
    /// `n` contributors, each bound to a port of its own on `127.0.0.1`.
    pub fn on_lo(n: u32) -> Ranks {
        let socks = (0..n)
            .map(|_| UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind contributor"))
            .collect();
        Ranks { socks }
    }

    /// Contributor `src`'s socket.
    pub fn sock(&self, src: u32) -> &UdpSocket {
        &self.socks[src as usize - 1]
    }

    /// Contributor `src`'s address.
    pub fn addr(&self, src: u32) -> SocketAddrV4 {
        match self.sock(src).local_addr().expect("local address") {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("not IPv4: {other}"),
        }
    }

    /// Every rank as a member of `COMM`.
    pub fn members(&self) -> Vec<BcastMember> {
        let reducer = SocketAddrV4::new(Ipv4Addr::LOCALHOST, REDUCE_PORT);
        std::iter::once(member(0, reducer))
            .chain((1..=self.socks.len() as u32).map(|src| member(src, self.addr(src))))
            .collect()
    }

    /// Sends `d` to the reducer from contributor `src`'s socket.
    pub fn send(&self, src: u32, d: &[u8]) {
        self.sock(src)
            .send_to(d, (Ipv4Addr::LOCALHOST, REDUCE_PORT))
            .expect("send");
    }
}

/// The programs with XDP on `lo`, reducing `COMM` of `n` contributors (and the reducer, rank 0).
pub fn reducer_on_lo(n: u32) -> (KernelPath, Ranks) {
    let ranks = Ranks::on_lo(n);
    let k = reducer_on("lo", XdpMode::Generic, n, &ranks.members());
    (k, ranks)
}

/// `n` random payloads of `len` bytes for `dtype`; float payloads get NaNs, infinities and both
/// zeros among random values.
pub fn payloads(rng: &mut impl Rng, dtype: DType, n: usize, len: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut p: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            match dtype {
                DType::F32 => {
                    let specials = [f32::NAN, -0.0, 0.0, f32::INFINITY, f32::NEG_INFINITY, 1.5];
                    for (j, c) in p.chunks_exact_mut(4).enumerate() {
                        let v = if j % 3 == 0 {
                            specials[(i + j) % specials.len()]
                        } else {
                            rng.gen_range(-1e3f32..1e3)
                        };
                        c.copy_from_slice(&v.to_le_bytes());
                    }
                }
                DType::F64 => {
                    let specials = [-0.0, f64::NAN, 0.0, f64::NEG_INFINITY, f64::INFINITY, -2.5];
                    for (j, c) in p.chunks_exact_mut(8).enumerate() {
                        let v = if j % 3 == 0 {
                            specials[(i + j) % specials.len()]
                        } else {
                            rng.gen_range(-1e3f64..1e3)
                        };
                        c.copy_from_slice(&v.to_le_bytes());
                    }
                }
                _ => {}
            }
            p
        })
        .collect()
}

/// The reference result: `parts` folded in order with `op` by `boad::ops::fold` (userspace).
pub fn userspace_fold(dtype: DType, op: Op, parts: &[Vec<u8>]) -> Vec<u8> {
    let mut acc = parts[0].clone();
    for p in &parts[1..] {
        assert!(
            boad::ops::fold(dtype, op, &mut acc, p),
            "userspace fold {op}/{dtype}"
        );
    }
    acc
}
