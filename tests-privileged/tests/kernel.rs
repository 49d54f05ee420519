//! The kernel path's real programs, attached inside throwaway network namespaces, fed with real UDP
//! datagrams from sockets inside them.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use boad::{DType, Op};
use boad_common::{flags, kind};
use boad_ebpf_loader::{BcastMember, Counters, KernelPath, PortRole, XdpMode, MAX_PAYLOAD};
use boad_tests_privileged::{
    assert_lo_clean, cmd, contrib, datagram, header, parse, privileged, tcx_programs, Netns,
};
use rand::{Rng, SeedableRng};

const JOB: u64 = 0x5eed_b0ad_0000_0001;
const COMM: u32 = 7;
const REDUCE_PORT: u16 = 40_100;
const TRIGGER_PORT: u16 = 40_200;
/// The broadcasting rank's (rank 0's) port in the broadcast tests.
const ROOT_PORT: u16 = 40_300;
const RECV_TIMEOUT: Duration = Duration::from_secs(2);
const QUIET: Duration = Duration::from_millis(150);

fn delta(after: Counters, before: Counters) -> Counters {
    after.since(&before)
}

/// Receives one datagram, or None after `timeout`.
fn recv(sock: &UdpSocket, timeout: Duration) -> Option<Vec<u8>> {
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

/// Loads the programs, registers the job, the reduce port and `COMM` with `contribs` and `members`
/// (rank `i` is `members[i]`; the programs take rank `i`'s datagrams from its address only),
/// attaches XDP to `iface` (inside the calling thread's namespace).
fn reducer_on(iface: &str, mode: XdpMode, contribs: u32, members: &[BcastMember]) -> KernelPath {
    let mut k = KernelPath::load().expect("load eBPF programs");
    k.set_job(JOB).expect("job");
    k.add_port(REDUCE_PORT, PortRole::Reduce).expect("port");
    k.set_comm(COMM, contribs, members).expect("comm");
    k.attach_xdp(iface, mode)
        .expect("attach XDP inside the namespace");
    k
}

/// A member of `COMM` at `addr`.
fn member(rank: u32, addr: SocketAddrV4) -> BcastMember {
    BcastMember {
        addr,
        rank,
        ifindex: 0,
        mac: None,
    }
}

/// The ranks of a reduction on `lo`: rank 0, the reducer, at `127.0.0.1:REDUCE_PORT`, and
/// contributors `1..=n`, each with its own socket on `127.0.0.1`.
struct Ranks {
    socks: Vec<UdpSocket>,
}

impl Ranks {
    fn on_lo(n: u32) -> Ranks {
        let socks = (0..n)
            .map(|_| UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind contributor"))
            .collect();
        Ranks { socks }
    }

    /// Contributor `src`'s socket.
    fn sock(&self, src: u32) -> &UdpSocket {
        &self.socks[src as usize - 1]
    }

    fn addr(&self, src: u32) -> SocketAddrV4 {
        match self.sock(src).local_addr().expect("local address") {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("not IPv4: {other}"),
        }
    }

    /// Every rank as a member of `COMM`.
    fn members(&self) -> Vec<BcastMember> {
        let reducer = SocketAddrV4::new(Ipv4Addr::LOCALHOST, REDUCE_PORT);
        std::iter::once(member(0, reducer))
            .chain((1..=self.socks.len() as u32).map(|src| member(src, self.addr(src))))
            .collect()
    }

    /// Sends `d` to the reducer from contributor `src`'s socket.
    fn send(&self, src: u32, d: &[u8]) {
        self.sock(src)
            .send_to(d, (Ipv4Addr::LOCALHOST, REDUCE_PORT))
            .expect("send");
    }
}

/// The programs with XDP on `lo`, reducing `COMM` of `n` contributors (and the reducer, rank 0).
fn reducer_on_lo(n: u32) -> (KernelPath, Ranks) {
    let ranks = Ranks::on_lo(n);
    let k = reducer_on("lo", XdpMode::Generic, n, &ranks.members());
    (k, ranks)
}

/// `n` random payloads of `len` bytes for `dtype`; float payloads get NaNs, infinities and both
/// zeros among random values.
fn payloads(rng: &mut impl Rng, dtype: DType, n: usize, len: usize) -> Vec<Vec<u8>> {
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

/// SO_RCVBUFFORCE (root may exceed net.core.rmem_max).
fn set_rcvbuf(sock: &UdpSocket, bytes: libc::c_int) {
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

fn userspace_fold(dtype: DType, op: Op, parts: &[Vec<u8>]) -> Vec<u8> {
    let mut acc = parts[0].clone();
    for p in &parts[1..] {
        assert!(
            boad::ops::fold(dtype, op, &mut acc, p),
            "userspace fold {op}/{dtype}"
        );
    }
    acc
}

fn finish(ns: Netns) {
    let path = format!("/run/netns/{}", ns.name());
    drop(ns);
    assert!(!std::path::Path::new(&path).exists(), "{path} left behind");
    assert_lo_clean();
}

/// (a) N contributions fold into one RESULT equal to the userspace fold, for many (op, dtype), on
/// random data (both folds are checked against the hand-written oracle on their own:
/// `folds_match_the_independent_oracle` here, `boad::ops`'s unit tests there).
#[test]
fn contributions_fold_into_one_result() {
    if !privileged() {
        return;
    }
    let ns = Netns::new().expect("netns");
    ns.run(|| {
        const N: u32 = 5;
        let (k, ranks) = reducer_on_lo(N);
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, REDUCE_PORT)).expect("bind reducer");
        let mut rng = rand::rngs::SmallRng::seed_from_u64(42);
        let cases = [
            (Op::Sum, DType::I32, 1024),
            (Op::Sum, DType::U64, 200),
            (Op::Prod, DType::I64, 64),
            (Op::Prod, DType::U8, 33),
            (Op::Min, DType::I8, MAX_PAYLOAD),
            (Op::Max, DType::U16, 510),
            (Op::Min, DType::I64, 1024),
            (Op::Band, DType::U32, 12),
            (Op::Bor, DType::U64, 8),
            (Op::Bxor, DType::I16, 100),
            (Op::Land, DType::U8, 64),
            (Op::Lor, DType::I32, 44),
            (Op::Min, DType::F32, 1024),
            (Op::Max, DType::F32, 96),
            (Op::Min, DType::F64, 1024),
            (Op::Max, DType::F64, 240),
        ];
        for (seq, &(op, dtype, len)) in cases.iter().enumerate() {
            let seq = seq as u32 + 1;
            let mut parts = payloads(&mut rng, dtype, N as usize, len);
            if matches!(op, Op::Land | Op::Lor) {
                // Make zeros common so both outcomes occur.
                for p in &mut parts {
                    for b in p.iter_mut() {
                        *b = if rng.gen_bool(0.5) { 0 } else { *b };
                    }
                }
            }
            let want = userspace_fold(dtype, op, &parts);
            let before = k.counters().expect("counters");
            for (i, p) in parts.iter().enumerate() {
                let src = i as u32 + 1;
                ranks.send(src, &contrib(JOB, COMM, seq, src, op, dtype, p));
            }
            let got = recv(&rx, RECV_TIMEOUT)
                .unwrap_or_else(|| panic!("{op}/{dtype}: no RESULT arrived"));
            let (h, payload) = parse(&got).expect("header");
            assert_eq!(h.kind, kind::RESULT, "{op}/{dtype}: kind");
            assert_eq!(h.reserved, N as u16, "{op}/{dtype}: contributions folded");
            assert_eq!((h.job, h.comm, h.seq), (JOB, COMM, seq));
            assert_eq!(
                payload,
                &want[..],
                "{op}/{dtype}: payload differs from boad::ops::fold"
            );
            assert!(
                recv(&rx, QUIET).is_none(),
                "{op}/{dtype}: more than one datagram"
            );
            let d = delta(k.counters().expect("counters"), before);
            assert_eq!(
                (d.folded, d.dropped, d.passed, d.duplicates, d.unfolded),
                (N as u64, N as u64 - 1, 1, 0, 0),
                "{op}/{dtype}: counters {d:?}"
            );
        }

        // Float sum/prod have no kernel program: every CONTRIB reaches the socket unfolded.
        let before = k.counters().expect("counters");
        let parts = payloads(&mut rng, DType::F32, N as usize, 16);
        for (i, p) in parts.iter().enumerate() {
            let src = i as u32 + 1;
            ranks.send(src, &contrib(JOB, COMM, 1000, src, Op::Sum, DType::F32, p));
        }
        for part in &parts {
            let got = recv(&rx, RECV_TIMEOUT).expect("unfolded CONTRIB");
            let (h, payload) = parse(&got).expect("header");
            assert_eq!(h.kind, kind::CONTRIB);
            assert_eq!(payload, &part[..]);
        }
        let d = delta(k.counters().expect("counters"), before);
        assert_eq!((d.unfolded, d.folded), (N as u64, 0), "{d:?}");
    });
    finish(ns);
}

/// The fold programs against the hand-written oracle (`boad_test_support::oracle`), which shares
/// no code with them or with `boad::ops::fold`: for every (op, dtype) the kernel folds (every
/// integer op, float min and max), contributor 1 sends the table's `a`s and, once XDP has folded
/// them in, contributor 2 its `b`s; the RESULT must hold every `want`, bit for bit. Counted.
#[test]
fn folds_match_the_independent_oracle() {
    use boad_test_support::oracle::{self, Elem, Visit};

    struct Check<'a> {
        k: &'a KernelPath,
        ranks: &'a Ranks,
        rx: &'a UdpSocket,
        seq: u32,
        wrong: Vec<String>,
        cases: usize,
        folds: usize,
    }

    impl Check<'_> {
        /// Waits until XDP has folded `n` more contributions than `before`.
        fn folded(&self, before: Counters, n: u64, what: &str) {
            let deadline = std::time::Instant::now() + RECV_TIMEOUT;
            loop {
                let d = delta(self.k.counters().expect("counters"), before);
                if d.folded >= n {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{what}: the first contribution was not folded: {d:?}"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    impl Visit for Check<'_> {
        fn visit<T: Elem>(&mut self) {
            let dtype = DType::ALL
                .into_iter()
                .find(|d| d.name() == T::DTYPE && d.size() == T::SIZE)
                .unwrap_or_else(|| panic!("no dtype {}", T::DTYPE));
            for oop in oracle::Op::ALL {
                let op = Op::ALL
                    .into_iter()
                    .find(|o| o.name() == oop.name())
                    .unwrap_or_else(|| panic!("no op {}", oop.name()));
                let cases: Vec<_> = oracle::cases_of::<T>(oop).collect();
                // Float sum and prod have no kernel program (eBPF has no floating point).
                if cases.is_empty()
                    || (T::FLOAT && matches!(oop, oracle::Op::Sum | oracle::Op::Prod))
                {
                    continue;
                }
                let what = format!("{op}/{dtype}");
                let (mut a, mut b) = (vec![], vec![]);
                for c in &cases {
                    c.a.put_le(&mut a);
                    c.b.put_le(&mut b);
                }
                self.seq += 1;
                let before = self.k.counters().expect("counters");
                // In this order: with two NaNs the accumulator's (the first folded) wins.
                self.ranks
                    .send(1, &contrib(JOB, COMM, self.seq, 1, op, dtype, &a));
                self.folded(before, 1, &what);
                self.ranks
                    .send(2, &contrib(JOB, COMM, self.seq, 2, op, dtype, &b));
                let got = recv(self.rx, RECV_TIMEOUT)
                    .unwrap_or_else(|| panic!("{what}: no RESULT arrived"));
                let (h, payload) = parse(&got).expect("header");
                assert_eq!(
                    (h.kind, h.reserved, h.seq),
                    (kind::RESULT, 2, self.seq),
                    "{what}"
                );
                assert_eq!(payload.len(), a.len(), "{what}: payload length");
                for (i, c) in cases.iter().enumerate() {
                    let g = T::get_le(&payload[i * T::SIZE..]);
                    if !T::matches(oop, g, c.want) {
                        self.wrong
                            .push(format!("kernel {}: got {}", c.show(), g.show()));
                    }
                    self.cases += 1;
                }
                let d = delta(self.k.counters().expect("counters"), before);
                assert_eq!(
                    (d.folded, d.dropped, d.passed, d.duplicates, d.unfolded),
                    (2, 1, 1, 0, 0),
                    "{what}: counters {d:?}"
                );
                self.folds += 1;
            }
        }
    }

    if !privileged() {
        return;
    }
    let ns = Netns::new().expect("netns");
    ns.run(|| {
        let (k, ranks) = reducer_on_lo(2);
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, REDUCE_PORT)).expect("bind reducer");
        let mut c = Check {
            k: &k,
            ranks: &ranks,
            rx: &rx,
            seq: 0,
            wrong: vec![],
            cases: 0,
            folds: 0,
        };
        oracle::visit_all(&mut c);
        assert!(
            c.wrong.is_empty(),
            "{} of {} cases wrong:\n{}",
            c.wrong.len(),
            c.cases,
            c.wrong.join("\n")
        );
        // Every integer op on 8 types, min and max on 2 float types; every case of those.
        assert_eq!(c.folds, 9 * 8 + 2 * 2);
        let float_sum_prod = oracle::cases_of::<f32>(oracle::Op::Sum).count()
            + oracle::cases_of::<f32>(oracle::Op::Prod).count()
            + oracle::cases_of::<f64>(oracle::Op::Sum).count()
            + oracle::cases_of::<f64>(oracle::Op::Prod).count();
        assert_eq!(c.cases, oracle::total_cases() - float_sum_prod);
        assert!(recv(&rx, QUIET).is_none(), "an extra datagram");
    });
    finish(ns);
}

/// (a) under contention: 6 contributors on 3 threads, 40 seqs x 4 chunks in flight at once. Every
/// RESULT is right (the slot's spin lock), none is lost or doubled.
#[test]
fn concurrent_contributions_many_slots() {
    if !privileged() {
        return;
    }
    const N: u32 = 6;
    const SEQS: u32 = 40;
    const CHUNKS: u32 = 4;
    const ELEMS: i64 = 64;
    fn part(src: u32, seq: u32, chunk: u32) -> Vec<u8> {
        (0..ELEMS)
            .flat_map(|j| {
                let v = (src as i64 * 1_000_003 + seq as i64 * 7_919 + chunk as i64 * 104_729 + j)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15u64 as i64);
                v.to_le_bytes()
            })
            .collect()
    }
    let ns = Netns::new().expect("netns");
    ns.run(|| {
        let (k, ranks) = reducer_on_lo(N);
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, REDUCE_PORT)).expect("bind reducer");
        // Room for every RESULT at once: the senders may finish before we read any.
        set_rcvbuf(&rx, 8 << 20);
        let before = k.counters().expect("counters");
        let senders: Vec<_> = (0..3u32)
            .map(|t| {
                // Each contributor sends from its own socket.
                let socks: Vec<(u32, UdpSocket)> = [2 * t + 1, 2 * t + 2]
                    .into_iter()
                    .map(|src| (src, ranks.sock(src).try_clone().expect("clone socket")))
                    .collect();
                std::thread::spawn(move || {
                    for seq in 1..=SEQS {
                        for chunk in 0..CHUNKS {
                            for (src, tx) in &socks {
                                let mut h =
                                    header(kind::CONTRIB, JOB, COMM, seq, Op::Sum, DType::I64);
                                h.src = *src;
                                h.chunk = chunk;
                                let d = datagram(h, &part(*src, seq, chunk));
                                tx.send_to(&d, (Ipv4Addr::LOCALHOST, REDUCE_PORT))
                                    .expect("send");
                            }
                        }
                    }
                })
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..SEQS * CHUNKS {
            let got = recv(&rx, RECV_TIMEOUT).unwrap_or_else(|| {
                let d = delta(k.counters().expect("counters"), before);
                let snmp = cmd(&["cat", "/proc/net/snmp"]).unwrap_or_default();
                panic!("a RESULT is missing; counters {d:?}\n{snmp}")
            });
            let (h, payload) = parse(&got).expect("header");
            assert_eq!((h.kind, h.reserved), (kind::RESULT, N as u16));
            assert!(
                seen.insert((h.seq, h.chunk)),
                "two RESULTs for {}/{}",
                h.seq,
                h.chunk
            );
            let parts: Vec<Vec<u8>> = (1..=N).map(|src| part(src, h.seq, h.chunk)).collect();
            assert_eq!(payload, &userspace_fold(DType::I64, Op::Sum, &parts)[..]);
        }
        for s in senders {
            s.join().expect("sender");
        }
        assert!(recv(&rx, QUIET).is_none(), "extra datagram");
        let d = delta(k.counters().expect("counters"), before);
        let total = (SEQS * CHUNKS) as u64;
        assert_eq!(
            (d.folded, d.dropped, d.passed, d.duplicates, d.unfolded),
            (total * N as u64, total * (N as u64 - 1), total, 0, 0),
            "{d:?}"
        );
    });
    finish(ns);
}

/// (b) A resent contribution is counted once, before and after the reduction completes; resent
/// after completion it comes back as a copy of the RESULT.
#[test]
fn resent_contribution_is_not_double_counted() {
    if !privileged() {
        return;
    }
    let ns = Netns::new().expect("netns");
    ns.run(|| {
        let (k, ranks) = reducer_on_lo(3);
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, REDUCE_PORT)).expect("bind reducer");
        let parts: Vec<Vec<u8>> = (1..=3i32)
            .map(|r| (0..16).flat_map(|j| (r * 100 + j).to_le_bytes()).collect())
            .collect();
        let want = userspace_fold(DType::I32, Op::Sum, &parts);
        let send = |src: u32| {
            let d = contrib(
                JOB,
                COMM,
                9,
                src,
                Op::Sum,
                DType::I32,
                &parts[src as usize - 1],
            );
            ranks.send(src, &d);
        };
        let before = k.counters().expect("counters");
        for src in [1, 1, 2, 1, 2, 3] {
            send(src);
        }
        let got = recv(&rx, RECV_TIMEOUT).expect("RESULT");
        let (h, payload) = parse(&got).expect("header");
        assert_eq!((h.kind, h.reserved), (kind::RESULT, 3));
        assert_eq!(payload, &want[..]);
        // Resent after the RESULT left: not folded again, re-emitted as the same RESULT.
        for src in [3, 1] {
            send(src);
            let got = recv(&rx, RECV_TIMEOUT).expect("re-emitted RESULT");
            let (h, payload) = parse(&got).expect("header");
            assert_eq!((h.kind, h.reserved, h.src), (kind::RESULT, 3, src));
            assert_eq!(payload, &want[..]);
        }
        assert!(recv(&rx, QUIET).is_none(), "a duplicate reached the socket");
        let d = delta(k.counters().expect("counters"), before);
        assert_eq!(
            (d.folded, d.dropped, d.passed, d.duplicates, d.result_resent),
            (3, 2, 1, 3, 2),
            "{d:?}"
        );
    });
    finish(ns);
}

/// (c) Datagrams of another job, with a bad magic, or to an unregistered port pass untouched.
#[test]
fn foreign_datagrams_pass_untouched() {
    if !privileged() {
        return;
    }
    let ns = Netns::new().expect("netns");
    ns.run(|| {
        let (k, _ranks) = reducer_on_lo(2);
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, REDUCE_PORT)).expect("bind reducer");
        let other = UdpSocket::bind((Ipv4Addr::LOCALHOST, REDUCE_PORT + 1)).expect("bind other");
        let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind sender");
        let payload: Vec<u8> = (0..64).collect();
        let before = k.counters().expect("counters");

        let wrong_job = contrib(JOB ^ 1, COMM, 1, 1, Op::Sum, DType::I32, &payload);
        let mut bad_magic = contrib(JOB, COMM, 1, 1, Op::Sum, DType::I32, &payload);
        bad_magic[0] ^= 0xff;
        for d in [&wrong_job, &bad_magic] {
            tx.send_to(d, (Ipv4Addr::LOCALHOST, REDUCE_PORT))
                .expect("send");
            assert_eq!(
                recv(&rx, RECV_TIMEOUT).as_ref(),
                Some(d),
                "not passed untouched"
            );
        }
        // A good CONTRIB to a port the program does not serve: untouched, not counted.
        let good = contrib(JOB, COMM, 1, 1, Op::Sum, DType::I32, &payload);
        tx.send_to(&good, (Ipv4Addr::LOCALHOST, REDUCE_PORT + 1))
            .expect("send");
        assert_eq!(recv(&other, RECV_TIMEOUT), Some(good));
        // Not a boad datagram at all.
        tx.send_to(b"hello", (Ipv4Addr::LOCALHOST, REDUCE_PORT))
            .expect("send");
        assert_eq!(recv(&rx, RECV_TIMEOUT).as_deref(), Some(&b"hello"[..]));

        let d = delta(k.counters().expect("counters"), before);
        assert_eq!(
            (d.foreign, d.folded, d.dropped, d.passed),
            (2, 0, 0, 0),
            "{d:?}"
        );
        // Dropping the loader detaches the program.
        assert!(cmd(&["ip", "-d", "link", "show", "dev", "lo"])
            .expect("ip")
            .contains("xdp"));
        drop(k);
        assert_lo_clean();
    });
    finish(ns);
}

/// (d) One BCAST send on `lo` from rank 0 reaches 64 receivers (distinct addresses and ports), each
/// with its rank in `dst` and `flags::CLONED`; the original is consumed.
#[test]
fn bcast_clones_to_64_receivers_on_lo() {
    if !privileged() {
        return;
    }
    const R: u32 = 64;
    let ns = Netns::new().expect("netns");
    ns.run(|| {
        let mut k = KernelPath::load().expect("load eBPF programs");
        k.set_job(JOB).expect("job");
        k.add_port(TRIGGER_PORT, PortRole::Bcast).expect("port");
        let addrs: Vec<SocketAddrV4> = (0..R)
            .map(|i| {
                SocketAddrV4::new(
                    Ipv4Addr::new(127, 0, 1, 1 + (i % 4) as u8),
                    41_000 + i as u16,
                )
            })
            .collect();
        let root_addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, ROOT_PORT);
        let members: Vec<BcastMember> = std::iter::once(member(0, root_addr))
            .chain(
                addrs
                    .iter()
                    .enumerate()
                    .map(|(i, a)| member(i as u32 + 1, *a)),
            )
            .collect();
        k.set_comm(COMM, 0, &members).expect("comm");
        k.attach_tc_egress("lo")
            .expect("attach TC to the namespace's lo");
        let socks: Vec<UdpSocket> = addrs
            .iter()
            .map(|a| UdpSocket::bind(a).expect("bind receiver"))
            .collect();
        let trigger = UdpSocket::bind((Ipv4Addr::LOCALHOST, TRIGGER_PORT)).expect("bind trigger");
        let root = UdpSocket::bind(root_addr).expect("bind root");
        let payload: Vec<u8> = (0..200u32).map(|i| (i * 7) as u8).collect();
        let before = k.counters().expect("counters");
        let d = datagram(
            header(kind::BCAST, JOB, COMM, 3, Op::Sum, DType::U8),
            &payload,
        );
        root.send_to(&d, (Ipv4Addr::LOCALHOST, TRIGGER_PORT))
            .expect("send");
        for (i, s) in socks.iter().enumerate() {
            let got = recv(s, RECV_TIMEOUT).unwrap_or_else(|| panic!("receiver {i}: nothing"));
            let (h, p) = parse(&got).expect("header");
            assert_eq!(
                (h.kind, h.job, h.seq, h.dst),
                (kind::BCAST, JOB, 3, i as u32 + 1)
            );
            assert_ne!(h.flags & flags::CLONED, 0);
            assert_eq!(p, &payload[..]);
            assert!(recv(s, Duration::ZERO.max(Duration::from_millis(1))).is_none());
        }
        assert!(
            recv(&trigger, QUIET).is_none(),
            "the original was delivered"
        );
        let dl = delta(k.counters().expect("counters"), before);
        assert_eq!(
            (dl.clones, dl.clone_errors, dl.bcasts),
            (R as u64, 0, 1),
            "{dl:?}"
        );
        assert_eq!(tcx_programs("lo"), 1);
        drop(k);
        assert_lo_clean();
    });
    finish(ns);
}

/// 198.18.0.0/15 is the benchmarking range; these addresses exist only inside our namespaces.
fn ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + i as u8)
}

/// A bridge namespace and `n` host namespaces, host `i` with `eth0` = `ip(i)`/24 on a veth whose
/// peer is a port of the bridge.
fn bridged(n: usize) -> (Netns, Vec<Netns>) {
    let bridge = Netns::new().expect("netns");
    let hosts: Vec<Netns> = (0..n).map(|_| Netns::new().expect("netns")).collect();
    bridge
        .ip(&["link", "add", "br0", "type", "bridge"])
        .expect("bridge");
    bridge.ip(&["link", "set", "br0", "up"]).expect("bridge up");
    for (i, h) in hosts.iter().enumerate() {
        let peer = format!("p{i}");
        h.ip(&[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            bridge.name(),
        ])
        .expect("veth");
        bridge
            .ip(&["link", "set", &peer, "master", "br0", "up"])
            .expect("port");
        h.ip(&["addr", "add", &format!("{}/24", ip(i)), "dev", "eth0"])
            .expect("addr");
        h.ip(&["link", "set", "eth0", "up"]).expect("up");
    }
    (bridge, hosts)
}

fn has_ethtool() -> bool {
    let ok = cmd(&["ethtool", "--version"]).is_ok();
    if !ok {
        eprintln!("skipped: needs ethtool (scripts/install-ebpf-toolchain.sh installs it)");
    }
    ok
}

/// (a) over veth: 3 contributors in their own namespaces, XDP in driver mode on the reducer's veth.
#[test]
fn contributions_fold_across_veth_in_driver_mode() {
    if !privileged() || !has_ethtool() {
        return;
    }
    const N: usize = 3;
    let (bridge, mut hosts) = bridged(N + 1);
    let contributors = hosts.split_off(1);
    let reducer = hosts.pop().expect("reducer host");
    for c in &contributors {
        c.exec(&["ethtool", "-K", "eth0", "tx", "off"])
            .expect("tx offload off");
    }
    let csum_before = reducer.snmp("Udp", "InCsumErrors").expect("snmp");
    let parts: Vec<Vec<u8>> = (0..N as u64)
        .map(|r| {
            (0..100u64)
                .flat_map(|j| (r * 1_000_003 + j * j).to_le_bytes())
                .collect()
        })
        .collect();
    let want = userspace_fold(DType::U64, Op::Sum, &parts);
    // Rank 0 is the reducer; contributor `i` (rank i + 1) sends from `ip(i + 1)`, `CONTRIB_PORT`.
    const CONTRIB_PORT: u16 = 40_400;
    let members: Vec<BcastMember> = (0..=N)
        .map(|r| {
            let port = if r == 0 { REDUCE_PORT } else { CONTRIB_PORT };
            member(r as u32, SocketAddrV4::new(ip(r), port))
        })
        .collect();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let rx_thread = reducer.spawn(move || {
        let mut k = reducer_on("eth0", XdpMode::Driver, N as u32, &members);
        let rx = UdpSocket::bind((ip(0), REDUCE_PORT)).expect("bind reducer");
        let before = k.counters().expect("counters");
        ready_tx.send(()).expect("ready");
        let got = recv(&rx, Duration::from_secs(10));
        let extra = recv(&rx, QUIET);
        let d = delta(k.counters().expect("counters"), before);
        k.detach_all().expect("detach");
        (got, extra, d)
    });
    ready_rx.recv().expect("reducer ready");
    let senders: Vec<_> = contributors
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let d = contrib(JOB, COMM, 1, i as u32 + 1, Op::Sum, DType::U64, &parts[i]);
            c.spawn(move || {
                let s = UdpSocket::bind((ip(i + 1), CONTRIB_PORT)).expect("bind contributor");
                s.send_to(&d, (ip(0), REDUCE_PORT)).expect("send");
            })
        })
        .collect();
    for s in senders {
        s.join().expect("sender");
    }
    let (got, extra, d) = rx_thread.join().expect("reducer thread");
    let got = got.expect("no RESULT arrived");
    let (h, payload) = parse(&got).expect("header");
    assert_eq!((h.kind, h.reserved), (kind::RESULT, N as u16));
    assert_eq!(payload, &want[..]);
    assert!(extra.is_none(), "more than one datagram");
    assert_eq!(
        (d.folded, d.dropped, d.passed),
        (N as u64, N as u64 - 1, 1),
        "{d:?}"
    );
    assert_eq!(
        reducer.snmp("Udp", "InCsumErrors").expect("snmp"),
        csum_before
    );
    drop(contributors);
    drop(bridge);
    finish(reducer);
}

/// (d) Across veth -> bridge -> 3 namespaces, with tx checksum offload off on the sender so the
/// checksums the program fixes are really checked by the receivers.
#[test]
fn bcast_across_veth_bridge_with_checksums() {
    if !privileged() || !has_ethtool() {
        return;
    }
    const PORT: u16 = 41_500;
    let (bridge, mut hosts) = bridged(4);
    let receivers = hosts.split_off(1);
    let root = hosts.pop().expect("root host");
    root.exec(&["ethtool", "-K", "eth0", "tx", "off"])
        .expect("tx offload off");
    let macs: Vec<[u8; 6]> = receivers
        .iter()
        .map(|r| r.mac("eth0").expect("mac"))
        .collect();
    let csum_before: Vec<u64> = receivers
        .iter()
        .map(|r| r.snmp("Udp", "InCsumErrors").expect("snmp"))
        .collect();

    let payload: Vec<u8> = (0..300u32).map(|i| (i * 13 + 1) as u8).collect();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handles: Vec<_> = receivers
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let ready = ready_tx.clone();
            let addr = SocketAddrV4::new(ip(i + 1), PORT);
            r.spawn(move || {
                let s = UdpSocket::bind(addr).expect("bind receiver");
                ready.send(()).expect("ready");
                let first = recv(&s, Duration::from_secs(60)); // the root loads its programs first (seconds)
                let second = recv(&s, QUIET);
                (first, second)
            })
        })
        .collect();
    for _ in 0..receivers.len() {
        ready_rx.recv().expect("receivers ready");
    }
    // Rank 0 is the root (it gets no clone), ranks 1..=3 the receivers.
    let members: Vec<BcastMember> = std::iter::once(member(0, SocketAddrV4::new(ip(0), ROOT_PORT)))
        .chain((0..3).map(|i| BcastMember {
            addr: SocketAddrV4::new(ip(i + 1), PORT),
            rank: i as u32 + 1,
            ifindex: 0,
            mac: Some(macs[i]),
        }))
        .collect();
    let sent_payload = payload.clone();
    let counters = root.run(move || {
        let mut k = KernelPath::load().expect("load eBPF programs");
        k.set_job(JOB).expect("job");
        k.add_port(TRIGGER_PORT, PortRole::Bcast).expect("port");
        k.set_comm(COMM, 0, &members).expect("comm");
        k.attach_tc_egress("eth0").expect("attach TC");
        let s = UdpSocket::bind((ip(0), ROOT_PORT)).expect("bind root");
        let d = datagram(
            header(kind::BCAST, JOB, COMM, 4, Op::Sum, DType::U8),
            &sent_payload,
        );
        // Addressed to the first receiver's trigger port so it leaves by eth0 with real MACs.
        s.send_to(&d, (ip(1), TRIGGER_PORT)).expect("send");
        std::thread::sleep(Duration::from_millis(500));
        k.counters().expect("counters")
    });
    eprintln!("root counters: {counters:?}");
    for (i, h) in handles.into_iter().enumerate() {
        let (first, second) = h.join().expect("receiver thread");
        let got = first.unwrap_or_else(|| panic!("receiver {i}: nothing arrived"));
        let (hd, p) = parse(&got).expect("header");
        assert_eq!((hd.kind, hd.dst, hd.seq), (kind::BCAST, i as u32 + 1, 4));
        assert_eq!(p, &payload[..]);
        assert!(second.is_none(), "receiver {i}: two datagrams");
    }
    for (r, before) in receivers.iter().zip(csum_before) {
        assert_eq!(
            r.snmp("Udp", "InCsumErrors").expect("snmp"),
            before,
            "UDP checksum errors"
        );
    }
    assert_eq!(
        (counters.clones, counters.clone_errors, counters.bcasts),
        (3, 0, 1),
        "{counters:?}"
    );
    drop(receivers);
    drop(bridge);
    finish(root);
}

/// Resent contributions bring a lost RESULT back, for the largest loop (1024 `u8`) and other
/// element sizes; the slot is not folded again.
#[test]
fn resend_to_complete_slot_reemits_result() {
    if !privileged() {
        return;
    }
    let ns = Netns::new().expect("netns");
    ns.run(|| {
        const N: u32 = 4;
        let (k, ranks) = reducer_on_lo(N);
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, REDUCE_PORT)).expect("bind reducer");
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let cases = [
            (Op::Min, DType::U8, MAX_PAYLOAD),
            (Op::Sum, DType::I64, MAX_PAYLOAD),
            (Op::Bxor, DType::U16, 300),
            (Op::Max, DType::F32, 96),
        ];
        for (i, &(op, dtype, len)) in cases.iter().enumerate() {
            let seq = 100 + i as u32;
            let parts = payloads(&mut rng, dtype, N as usize, len);
            let want = userspace_fold(dtype, op, &parts);
            let before = k.counters().expect("counters");
            let send = |src: u32| {
                let d = contrib(JOB, COMM, seq, src, op, dtype, &parts[src as usize - 1]);
                ranks.send(src, &d);
            };
            for src in 1..=N {
                send(src);
            }
            // The first RESULT is "lost": read and ignored.
            let first = recv(&rx, RECV_TIMEOUT).expect("first RESULT");
            assert_eq!(parse(&first).expect("header").0.kind, kind::RESULT);
            // The root NACKs; every contributor resends: each resend is a copy of the RESULT.
            for src in [2, N, 1] {
                send(src);
                let got = recv(&rx, RECV_TIMEOUT)
                    .unwrap_or_else(|| panic!("{op}/{dtype}: no re-emitted RESULT"));
                let (h, payload) = parse(&got).expect("header");
                assert_eq!(
                    (h.kind, h.reserved, h.src, h.seq),
                    (kind::RESULT, N as u16, src, seq),
                    "{op}/{dtype}"
                );
                assert_eq!(payload, &want[..], "{op}/{dtype}: re-emitted payload");
            }
            assert!(recv(&rx, QUIET).is_none(), "{op}/{dtype}: extra datagram");
            let d = delta(k.counters().expect("counters"), before);
            assert_eq!(
                (
                    d.folded,
                    d.passed,
                    d.result_resent,
                    d.duplicates,
                    d.unfolded
                ),
                (N as u64, 1, 3, 0, 0),
                "{op}/{dtype}: {d:?}"
            );
        }
    });
    finish(ns);
}

/// `flags::BYPASS`: the CONTRIB reaches the socket untouched and the slot is not used.
#[test]
fn bypass_flag_passes_contrib_unfolded() {
    if !privileged() {
        return;
    }
    let ns = Netns::new().expect("netns");
    ns.run(|| {
        let (k, ranks) = reducer_on_lo(2);
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, REDUCE_PORT)).expect("bind reducer");
        let parts: Vec<Vec<u8>> = (1..=2u32)
            .map(|r| (0..32).flat_map(|j| (r * 1000 + j).to_le_bytes()).collect())
            .collect();
        let before = k.counters().expect("counters");
        for (i, p) in parts.iter().enumerate() {
            let mut h = header(kind::CONTRIB, JOB, COMM, 5, Op::Sum, DType::U32);
            h.src = i as u32 + 1;
            h.flags = flags::BYPASS;
            let d = datagram(h, p);
            ranks.send(h.src, &d);
            assert_eq!(recv(&rx, RECV_TIMEOUT), Some(d), "not passed untouched");
        }
        // The same reduction without the flag still folds: the bypassed ones left no trace.
        for (i, p) in parts.iter().enumerate() {
            let src = i as u32 + 1;
            ranks.send(src, &contrib(JOB, COMM, 5, src, Op::Sum, DType::U32, p));
        }
        let got = recv(&rx, RECV_TIMEOUT).expect("RESULT");
        let (h, payload) = parse(&got).expect("header");
        assert_eq!((h.kind, h.reserved), (kind::RESULT, 2));
        assert_eq!(payload, &userspace_fold(DType::U32, Op::Sum, &parts)[..]);
        assert!(recv(&rx, QUIET).is_none());
        let d = delta(k.counters().expect("counters"), before);
        assert_eq!(
            (d.bypassed, d.folded, d.passed, d.unfolded, d.duplicates),
            (2, 2, 1, 0, 0),
            "{d:?}"
        );
    });
    finish(ns);
}

/// A CONTRIB whose signature differs from the slot's first passes unfolded and untouched, for each
/// signature field; the reduction then completes with the right contributions.
#[test]
fn mismatched_signature_passes_unfolded() {
    if !privileged() {
        return;
    }
    let ns = Netns::new().expect("netns");
    ns.run(|| {
        const N: u32 = 3;
        const SEQ: u32 = 11;
        let (k, ranks) = reducer_on_lo(N);
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, REDUCE_PORT)).expect("bind reducer");
        let parts: Vec<Vec<u8>> = (1..=N as i32)
            .map(|r| (0..24).flat_map(|j| (r * 77 - j).to_le_bytes()).collect())
            .collect();
        let good = |src: u32| {
            let mut h = header(kind::CONTRIB, JOB, COMM, SEQ, Op::Sum, DType::I32);
            h.src = src;
            h.root = 0;
            datagram(h, &parts[src as usize - 1])
        };
        // From the socket of the rank the header names.
        let send = |d: &[u8]| ranks.send(parse(d).expect("header").0.src, d);
        let before = k.counters().expect("counters");
        send(&good(1));
        assert!(recv(&rx, QUIET).is_none(), "first contribution passed");
        // Contributor 2 with a wrong call, one signature field at a time.
        type Tweak = fn(&mut boad_common::Header);
        let tweaks: [(&str, Tweak); 5] = [
            ("count", |h| h.count += 1),
            ("root", |h| h.root = 2),
            ("coll", |h| h.coll = boad_common::coll::ALLREDUCE),
            ("op", |h| h.op = Op::Max as u8),
            ("dtype", |h| h.dtype = DType::U32 as u8),
        ];
        let mut wrong = Vec::new();
        for (what, tweak) in tweaks {
            let mut d = good(2);
            let mut h = parse(&d).expect("header").0;
            tweak(&mut h);
            d[..boad_common::HEADER_LEN].copy_from_slice(bytemuck::bytes_of(&h));
            wrong.push((what, d));
        }
        // Another length (and so another count).
        let mut h = header(kind::CONTRIB, JOB, COMM, SEQ, Op::Sum, DType::I32);
        h.src = 2;
        wrong.push(("len", datagram(h, &parts[1][..48])));
        for (what, d) in &wrong {
            send(d);
            assert_eq!(
                recv(&rx, RECV_TIMEOUT).as_ref(),
                Some(d),
                "{what}: mismatched CONTRIB not passed untouched"
            );
        }
        let d = delta(k.counters().expect("counters"), before);
        assert_eq!(
            (d.mismatched, d.folded, d.unfolded),
            (wrong.len() as u64, 1, 0),
            "{d:?}"
        );
        // The right calls complete the reduction; the wrong ones left no trace in the fold.
        send(&good(2));
        send(&good(3));
        let got = recv(&rx, RECV_TIMEOUT).expect("RESULT");
        let (h, payload) = parse(&got).expect("header");
        assert_eq!((h.kind, h.reserved), (kind::RESULT, N as u16));
        assert_eq!(payload, &userspace_fold(DType::I32, Op::Sum, &parts)[..]);
        // After completion too: a mismatched resend is not turned into the RESULT.
        send(&wrong[0].1);
        assert_eq!(recv(&rx, RECV_TIMEOUT).as_ref(), Some(&wrong[0].1));
        let d = delta(k.counters().expect("counters"), before);
        assert_eq!(
            (d.mismatched, d.folded, d.passed, d.result_resent),
            (wrong.len() as u64 + 1, N as u64, 1, 0),
            "{d:?}"
        );
    });
    finish(ns);
}

/// A CONTRIB with the job key and a member's `src` that does not come from that member's socket
/// (another port on its address, its port on another address, another member's socket) or names no
/// member passes untouched and never touches the slot (counter `wrong_source`): the real
/// contributions then give the exact RESULT, and a forged one to the complete slot is not turned
/// into a copy of it, while a real resend still is.
#[test]
fn forged_contributions_are_not_folded() {
    if !privileged() {
        return;
    }
    let ns = Netns::new().expect("netns");
    ns.run(|| {
        const N: u32 = 3;
        const SEQ: u32 = 21;
        let (k, ranks) = reducer_on_lo(N);
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, REDUCE_PORT)).expect("bind reducer");
        let port1 = ranks.addr(1).port();
        let other_port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind another port");
        let other_addr =
            UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 2), port1)).expect("bind another address");
        let parts: Vec<Vec<u8>> = (1..=N as i32)
            .map(|r| {
                (0..40)
                    .flat_map(|j| (r * 1009 + j * 3).to_le_bytes())
                    .collect()
            })
            .collect();
        let want = userspace_fold(DType::I32, Op::Sum, &parts);
        let good = |src: u32| {
            contrib(
                JOB,
                COMM,
                SEQ,
                src,
                Op::Sum,
                DType::I32,
                &parts[src as usize - 1],
            )
        };
        // Same call, other numbers: folded in, they would change the sum.
        let bogus: Vec<u8> = (0..40i32)
            .flat_map(|j| (1 << 20 | j).to_le_bytes())
            .collect();
        let forged = |src: u32| contrib(JOB, COMM, SEQ, src, Op::Sum, DType::I32, &bogus);
        let to = (Ipv4Addr::LOCALHOST, REDUCE_PORT);
        let before = k.counters().expect("counters");
        // Rank 2 first: forged 1 and 3, if folded, would complete the reduction.
        ranks.send(2, &good(2));
        assert!(recv(&rx, QUIET).is_none(), "rank 2's contribution passed");
        let forgeries: [(&str, &UdpSocket, Vec<u8>); 6] = [
            (
                "rank 1 from another port of its address",
                &other_port,
                forged(1),
            ),
            (
                "rank 1 from its port on another address",
                &other_addr,
                forged(1),
            ),
            ("rank 3 from rank 2's socket", ranks.sock(2), forged(3)),
            ("rank 3 from another port", &other_port, forged(3)),
            (
                "rank 0 (the reducer) from rank 1's socket",
                ranks.sock(1),
                forged(0),
            ),
            ("src 4, no member", &other_port, forged(4)),
        ];
        for (what, sock, d) in &forgeries {
            sock.send_to(d, to).expect("send");
            assert_eq!(
                recv(&rx, RECV_TIMEOUT).as_ref(),
                Some(d),
                "{what}: not passed untouched"
            );
        }
        let d = delta(k.counters().expect("counters"), before);
        assert_eq!(
            (
                d.wrong_source,
                d.folded,
                d.dropped,
                d.passed,
                d.duplicates,
                d.unfolded,
                d.mismatched
            ),
            (forgeries.len() as u64, 1, 1, 0, 0, 0, 0),
            "{d:?}"
        );
        // The real contributions complete the reduction: their fold, nothing forged in it.
        ranks.send(1, &good(1));
        assert!(recv(&rx, QUIET).is_none(), "rank 1's contribution passed");
        ranks.send(3, &good(3));
        let got = recv(&rx, RECV_TIMEOUT).expect("RESULT");
        let (h, payload) = parse(&got).expect("header");
        assert_eq!((h.kind, h.reserved, h.src), (kind::RESULT, N as u16, 3));
        assert_eq!(
            payload,
            &want[..],
            "the forged contributions changed the sum"
        );
        assert!(recv(&rx, QUIET).is_none(), "extra datagram");
        // The slot is complete: a forgery is not made into a copy of the RESULT, a real resend is.
        let late = forged(1);
        other_port.send_to(&late, to).expect("send");
        assert_eq!(recv(&rx, RECV_TIMEOUT), Some(late), "late forgery");
        ranks.send(1, &good(1));
        let got = recv(&rx, RECV_TIMEOUT).expect("re-emitted RESULT");
        let (h, payload) = parse(&got).expect("header");
        assert_eq!((h.kind, h.reserved, h.src), (kind::RESULT, N as u16, 1));
        assert_eq!(payload, &want[..]);
        let d = delta(k.counters().expect("counters"), before);
        assert_eq!(
            (
                d.wrong_source,
                d.folded,
                d.passed,
                d.result_resent,
                d.duplicates,
                d.unfolded
            ),
            (forgeries.len() as u64 + 1, N as u64, 1, 1, 0, 0),
            "{d:?}"
        );
    });
    finish(ns);
}

/// A BCAST with the job key is cloned only when it comes from the socket of the member its `src`
/// names. From another port of the root's address, a receiver's socket, for a receiver from
/// elsewhere, or naming no member, it is not cloned (it goes on, untouched, to the trigger port)
/// and is counted; the root's own BCAST then reaches every receiver. `set_comm` refuses members
/// whose ranks do not number them.
#[test]
fn forged_bcast_is_not_cloned() {
    if !privileged() {
        return;
    }
    let ns = Netns::new().expect("netns");
    ns.run(|| {
        const R: u32 = 3;
        let mut k = KernelPath::load_folds(|_, _| false).expect("load eBPF programs");
        k.set_job(JOB).expect("job");
        k.add_port(TRIGGER_PORT, PortRole::Bcast).expect("port");
        let root_addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, ROOT_PORT);
        let addrs: Vec<SocketAddrV4> = (0..R)
            .map(|i| SocketAddrV4::new(Ipv4Addr::new(127, 0, 1, 1 + i as u8), 41_100 + i as u16))
            .collect();
        let members: Vec<BcastMember> = std::iter::once(member(0, root_addr))
            .chain(
                addrs
                    .iter()
                    .enumerate()
                    .map(|(i, a)| member(i as u32 + 1, *a)),
            )
            .collect();
        for bad in [
            vec![member(1, root_addr)],
            vec![member(0, root_addr), member(0, addrs[0])],
        ] {
            assert!(
                matches!(
                    k.set_comm(COMM, 0, &bad),
                    Err(boad_ebpf_loader::KernelError::Members { .. })
                ),
                "{bad:?}"
            );
        }
        k.set_comm(COMM, 0, &members).expect("comm");
        k.attach_tc_egress("lo")
            .expect("attach TC to the namespace's lo");
        let socks: Vec<UdpSocket> = addrs
            .iter()
            .map(|a| UdpSocket::bind(a).expect("bind receiver"))
            .collect();
        let trigger = UdpSocket::bind((Ipv4Addr::LOCALHOST, TRIGGER_PORT)).expect("bind trigger");
        let root = UdpSocket::bind(root_addr).expect("bind root");
        let stranger = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind another socket");
        let payload: Vec<u8> = (0..120u32).map(|i| (i * 11) as u8).collect();
        let bcast = |src: u32| {
            let mut h = header(kind::BCAST, JOB, COMM, 8, Op::Sum, DType::U8);
            h.src = src;
            datagram(h, &payload)
        };
        let to = (Ipv4Addr::LOCALHOST, TRIGGER_PORT);
        let before = k.counters().expect("counters");
        let forgeries: [(&str, &UdpSocket, Vec<u8>); 4] = [
            (
                "the root from another port of its address",
                &stranger,
                bcast(0),
            ),
            ("the root from a receiver's socket", &socks[0], bcast(0)),
            ("receiver 2 from another socket", &stranger, bcast(2)),
            ("src 9, no member", &stranger, bcast(9)),
        ];
        for (what, sock, d) in &forgeries {
            sock.send_to(d, to).expect("send");
            assert_eq!(
                recv(&trigger, RECV_TIMEOUT).as_ref(),
                Some(d),
                "{what}: not passed untouched"
            );
        }
        for (i, s) in socks.iter().enumerate() {
            assert!(recv(s, QUIET).is_none(), "receiver {i} got a forged clone");
        }
        let d = delta(k.counters().expect("counters"), before);
        assert_eq!(
            (d.wrong_source, d.clones, d.bcasts, d.clone_errors),
            (forgeries.len() as u64, 0, 0, 0),
            "{d:?}"
        );
        // The root's own.
        root.send_to(&bcast(0), to).expect("send");
        for (i, s) in socks.iter().enumerate() {
            let got = recv(s, RECV_TIMEOUT).unwrap_or_else(|| panic!("receiver {i}: nothing"));
            let (h, p) = parse(&got).expect("header");
            assert_eq!((h.kind, h.src, h.dst), (kind::BCAST, 0, i as u32 + 1));
            assert_eq!(p, &payload[..]);
        }
        assert!(
            recv(&trigger, QUIET).is_none(),
            "the original was delivered"
        );
        let d = delta(k.counters().expect("counters"), before);
        assert_eq!(
            (d.wrong_source, d.clones, d.bcasts),
            (forgeries.len() as u64, R as u64, 1),
            "{d:?}"
        );
        drop(k);
        assert_lo_clean();
    });
    finish(ns);
}

/// Broadcast over veth -> bridge: the sender's own member (rank == `src`) gets nothing, a member on
/// the sender's host (its IP) gets its clone through `lo`, remote members theirs through the bridge,
/// also one listed after the local one with no MAC (the original's MAC is restored for it).
#[test]
fn bcast_skips_sender_and_reaches_same_host_member() {
    if !privileged() || !has_ethtool() {
        return;
    }
    const PORT: u16 = 41_600;
    let (bridge, mut hosts) = bridged(3);
    let receivers = hosts.split_off(1);
    let root = hosts.pop().expect("root host");
    root.exec(&["ethtool", "-K", "eth0", "tx", "off"])
        .expect("tx offload off");
    let mac2 = receivers[1].mac("eth0").expect("mac");
    let csum_before: Vec<u64> = [&root, &receivers[0], &receivers[1]]
        .iter()
        .map(|n| n.snmp("Udp", "InCsumErrors").expect("snmp"))
        .collect();
    // rank 0: the root itself; rank 1: same host as the root; ranks 2, 3: remote.
    let members = vec![
        BcastMember {
            addr: SocketAddrV4::new(ip(0), ROOT_PORT),
            rank: 0,
            ifindex: 0,
            mac: None,
        },
        BcastMember {
            addr: SocketAddrV4::new(ip(0), PORT),
            rank: 1,
            ifindex: 0,
            mac: None,
        },
        BcastMember {
            addr: SocketAddrV4::new(ip(1), PORT),
            rank: 2,
            ifindex: 0,
            mac: None, // the original is addressed to ip(1): its MAC is right
        },
        BcastMember {
            addr: SocketAddrV4::new(ip(2), PORT),
            rank: 3,
            ifindex: 0,
            mac: Some(mac2),
        },
    ];
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handles: Vec<_> = receivers
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let ready = ready_tx.clone();
            let addr = SocketAddrV4::new(ip(i + 1), PORT);
            r.spawn(move || {
                let s = UdpSocket::bind(addr).expect("bind receiver");
                ready.send(()).expect("ready");
                (recv(&s, Duration::from_secs(60)), recv(&s, QUIET))
            })
        })
        .collect();
    for _ in 0..receivers.len() {
        ready_rx.recv().expect("receivers ready");
    }
    let payload: Vec<u8> = (0..500u32).map(|i| (i * 31 + 5) as u8).collect();
    let sent = payload.clone();
    let (counters, local, own) = root.run(move || {
        let mut k = KernelPath::load_folds(|_, _| false).expect("load eBPF programs");
        k.set_job(JOB).expect("job");
        k.add_port(TRIGGER_PORT, PortRole::Bcast).expect("port");
        k.set_comm(COMM, 0, &members).expect("comm");
        k.attach_tc_egress("eth0").expect("attach TC");
        boad_ebpf_loader::accept_local_on_lo().expect("accept_local on lo");
        let local = UdpSocket::bind((ip(0), PORT)).expect("bind local receiver");
        let s = UdpSocket::bind((ip(0), ROOT_PORT)).expect("bind root");
        let mut h = header(kind::BCAST, JOB, COMM, 6, Op::Sum, DType::U8);
        h.src = 0;
        s.send_to(&datagram(h, &sent), (ip(1), TRIGGER_PORT))
            .expect("send");
        let got_local = (recv(&local, RECV_TIMEOUT), recv(&local, QUIET));
        if got_local.0.is_none() {
            eprintln!(
                "rt_cache: {}\nnstat: {}\nlo: {}",
                cmd(&["cat", "/proc/net/stat/rt_cache"]).unwrap_or_default(),
                cmd(&["nstat", "-a"]).unwrap_or_default(),
                cmd(&["ip", "-s", "link", "show", "lo"]).unwrap_or_default()
            );
        }
        let got_own = recv(&s, QUIET);
        (k.counters().expect("counters"), got_local, got_own)
    });
    eprintln!("root counters: {counters:?}");
    let check = |who: &str, got: Option<Vec<u8>>, rank: u32| {
        let got = got.unwrap_or_else(|| panic!("{who}: nothing arrived"));
        let (hd, p) = parse(&got).expect("header");
        assert_eq!((hd.kind, hd.dst, hd.seq, hd.src), (kind::BCAST, rank, 6, 0));
        assert_ne!(hd.flags & flags::CLONED, 0);
        assert_eq!(p, &payload[..], "{who}: payload");
    };
    check("same-host member", local.0, 1);
    assert!(local.1.is_none(), "same-host member: two datagrams");
    assert!(own.is_none(), "the sender got a clone");
    for (i, h) in handles.into_iter().enumerate() {
        let (first, second) = h.join().expect("receiver thread");
        check(&format!("remote member {}", i + 2), first, i as u32 + 2);
        assert!(second.is_none(), "remote member {}: two datagrams", i + 2);
    }
    for (n, before) in [&root, &receivers[0], &receivers[1]]
        .iter()
        .zip(csum_before)
    {
        assert_eq!(n.snmp("Udp", "InCsumErrors").expect("snmp"), before);
    }
    assert_eq!(
        (
            counters.clones,
            counters.local_clones,
            counters.clone_errors,
            counters.bcasts
        ),
        (3, 1, 0, 1),
        "{counters:?}"
    );
    drop(receivers);
    drop(bridge);
    finish(root);
}

/// `attach_xdp_in` / `attach_tc_egress_in` from the host's namespace attach inside another one
/// (nothing on the host's `lo`), work there, and are detached by drop.
#[test]
fn attach_in_other_namespace_and_detach_on_drop() {
    if !privileged() {
        return;
    }
    let ns = Netns::new().expect("netns");
    let file = ns.file().expect("netns file");
    let mut k = KernelPath::load_folds(|op, dtype| (op, dtype) == (Op::Sum, DType::U64))
        .expect("load eBPF programs");
    k.set_job(JOB).expect("job");
    k.add_port(REDUCE_PORT, PortRole::Reduce).expect("port");
    // Rank 0 (the reducer) and contributors 1 and 2 on fixed ports of the namespace's `lo`.
    let at = |port: u16| SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let members = [
        member(0, at(REDUCE_PORT)),
        member(1, at(REDUCE_PORT + 1)),
        member(2, at(REDUCE_PORT + 2)),
    ];
    k.set_comm(COMM, 2, &members).expect("comm");
    use std::os::fd::AsFd;
    k.attach_xdp_in(file.as_fd(), "lo", XdpMode::Generic)
        .expect("attach XDP in the namespace");
    k.attach_tc_egress_in(file.as_fd(), "lo")
        .expect("attach TC in the namespace");
    assert!(matches!(
        k.attach_xdp_in(file.as_fd(), "boad-no-such", XdpMode::Generic),
        Err(boad_ebpf_loader::KernelError::Interface(_))
    ));
    assert_lo_clean();
    assert!(ns
        .ip(&["-d", "link", "show", "dev", "lo"])
        .expect("ip")
        .contains("xdp"));
    assert_eq!(ns.run(|| tcx_programs("lo")), 1);
    // with_netns runs code there and returns its result.
    let inode = boad_ebpf_loader::with_netns(file.as_fd(), || {
        std::fs::metadata("/proc/thread-self/ns/net")
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
    })
    .expect("with_netns")
    .expect("stat");
    assert_eq!(
        inode,
        std::os::unix::fs::MetadataExt::ino(&file.metadata().expect("stat"))
    );
    let before = k.counters().expect("counters");
    let result = ns.run(|| {
        let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, REDUCE_PORT)).expect("bind reducer");
        for src in 1..=2u32 {
            let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, REDUCE_PORT + src as u16))
                .expect("bind contributor");
            let d = contrib(JOB, COMM, 1, src, Op::Sum, DType::U64, &[src as u8; 16]);
            tx.send_to(&d, (Ipv4Addr::LOCALHOST, REDUCE_PORT))
                .expect("send");
        }
        recv(&rx, RECV_TIMEOUT)
    });
    let result = result.expect("RESULT");
    let (h, payload) = parse(&result).expect("header");
    assert_eq!((h.kind, h.reserved), (kind::RESULT, 2));
    assert_eq!(payload, &[3u8; 16][..]);
    assert_eq!(delta(k.counters().expect("counters"), before).folded, 2);
    drop(k);
    assert!(!ns
        .ip(&["-d", "link", "show", "dev", "lo"])
        .expect("ip")
        .contains("xdp"));
    assert_eq!(ns.run(|| tcx_programs("lo")), 0);
    drop(file);
    finish(ns);
}

/// A process that attached XDP and TCX inside a namespace and is killed with SIGKILL leaves
/// nothing attached: the links die with its file descriptors.
#[test]
fn links_die_with_a_killed_process() {
    if !privileged() {
        return;
    }
    use std::io::BufRead;
    let ns = Netns::new().expect("netns");
    let path = format!("/run/netns/{}", ns.name());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_boad-attach-and-wait"))
        .args([&path, "lo"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn helper");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read helper");
    let attached = line.trim() == "attached";
    let xdp_on = ns
        .ip(&["-d", "link", "show", "dev", "lo"])
        .expect("ip")
        .contains("xdp");
    let tcx_on = ns.run(|| tcx_programs("lo"));
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert!(attached, "helper said {line:?}");
    assert!(
        xdp_on && tcx_on == 1,
        "not attached: xdp {xdp_on}, tcx {tcx_on}"
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    // Released when the last descriptor closes, which the exit did; allow a moment anyway.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let xdp = ns
            .ip(&["-d", "link", "show", "dev", "lo"])
            .expect("ip")
            .contains("xdp");
        let tcx = ns.run(|| tcx_programs("lo"));
        if !xdp && tcx == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still attached after SIGKILL: xdp {xdp}, tcx {tcx}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    finish(ns);
}
