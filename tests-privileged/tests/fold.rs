//! The XDP fold: the contributions to a reduction fold in the kernel into one RESULT, equal to the
//! userspace fold (`boad::ops::fold`) on random data and to the hand-written oracle on every case,
//! also with many slots in flight at once; a resent contribution is not folded twice and, once the
//! slot is complete, comes back as a copy of the RESULT; `flags::BYPASS` and a call that does not
//! match the slot's pass unfolded.
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN) and a kernel that loads the programs (BTF, bpf_spin_lock;
//! see `boad-ebpf-loader`) and runs XDP in generic mode. Each test makes a fresh network namespace
//! of its own: XDP on its `lo`, the ranks as sockets there.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use boad::{DType, Op};
use boad_common::{flags, kind};
use boad_ebpf_loader::{Counters, KernelPath, MAX_PAYLOAD};
use boad_tests_privileged::fixture::{
    delta, payloads, recv, reducer_on_lo, set_rcvbuf, userspace_fold, Ranks, COMM, JOB, QUIET,
    RECV_TIMEOUT, REDUCE_PORT,
};
use boad_tests_privileged::{cmd, contrib, datagram, finish, header, parse, privileged, Netns};
use rand::{Rng, SeedableRng};

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
