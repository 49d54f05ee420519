//! Attaching and detaching: from the host's namespace into another one and detached on drop; links
//! that die with a process killed by SIGKILL; XDP in driver mode on a veth (a reduction from other
//! hosts across a bridge, then `detach_all`).
//!
//! Needs root (CAP_BPF + CAP_NET_ADMIN), a kernel with TCX (6.6+; see `boad-ebpf-loader`) and XDP
//! in driver mode on veth, `ethtool` (tx checksum offload off on the contributors' veths), and the
//! helper `boad-attach-and-wait` (`src/bin/`, built with these tests). Each test makes fresh network
//! namespaces of its own: one, or a bridge and one per host.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use boad::{DType, Op};
use boad_common::kind;
use boad_ebpf_loader::{BcastMember, KernelPath, PortRole, XdpMode};
use boad_tests_privileged::bridge::{bridged, has_ethtool, ip};
use boad_tests_privileged::fixture::{
    delta, member, recv, reducer_on, userspace_fold, COMM, JOB, QUIET, RECV_TIMEOUT, REDUCE_PORT,
};
use boad_tests_privileged::{
    assert_lo_clean, contrib, finish, parse, privileged, tcx_programs, Netns,
};

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
