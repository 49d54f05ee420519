//! The TC broadcast: one BCAST sent by the root is cloned on egress to every other member of the
//! communicator, each clone with its rank in `dst`, `flags::CLONED` and right checksums, and the
//! original is consumed; on `lo` to 64 receivers, across veth -> bridge to other hosts, and to a
//! member on the root's own host through `lo`, never back to the root.
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN), a kernel with TCX (6.6+; see `boad-ebpf-loader`), and
//! `ethtool` for the veth tests (tx checksum offload off on the sender, so the receivers check the
//! checksums the program fixes). Each test makes fresh network namespaces of its own: one, or a
//! bridge and one per host.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use boad::{DType, Op};
use boad_common::{flags, kind};
use boad_ebpf_loader::{BcastMember, KernelPath, PortRole};
use boad_tests_privileged::bridge::{bridged, has_ethtool, ip};
use boad_tests_privileged::fixture::{
    delta, member, recv, COMM, JOB, QUIET, RECV_TIMEOUT, ROOT_PORT, TRIGGER_PORT,
};
use boad_tests_privileged::{
    assert_lo_clean, cmd, datagram, finish, header, parse, privileged, tcx_programs, Netns,
};

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
