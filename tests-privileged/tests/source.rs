//! What the programs take and from whom: datagrams of another job, with a bad magic, to a port
//! that is not registered, or not boad's at all pass untouched; a CONTRIB or BCAST with the job key
//! that does not come from the socket of the member its `src` names is neither folded nor cloned
//! (counted as `wrong_source`), and the real ones still give the exact result.
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN) and a kernel with XDP (generic mode) and TCX (6.6+; see
//! `boad-ebpf-loader`). Each test makes a fresh network namespace of its own, the programs on its
//! `lo`.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

use boad::{DType, Op};
use boad_common::kind;
use boad_ebpf_loader::{BcastMember, KernelPath, PortRole};
use boad_tests_privileged::fixture::{
    delta, member, recv, reducer_on_lo, userspace_fold, COMM, JOB, QUIET, RECV_TIMEOUT,
    REDUCE_PORT, ROOT_PORT, TRIGGER_PORT,
};
use boad_tests_privileged::{
    assert_lo_clean, cmd, contrib, datagram, finish, header, parse, privileged, Netns,
};

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
