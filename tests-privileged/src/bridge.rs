//! Hosts on a virtual LAN: namespaces whose `eth0` is a veth plugged into a bridge in a namespace
//! of its own, addressed in 198.18.0.0/15 (the benchmarking range).

use std::net::Ipv4Addr;

use crate::{cmd, Netns};

/// Host `i`'s address. 198.18.0.0/15 is the benchmarking range; these addresses exist only inside
/// our namespaces.
pub fn ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + i as u8)
}

/// A bridge namespace and `n` host namespaces, host `i` with `eth0` = `ip(i)`/24 on a veth whose
/// peer is a port of the bridge.
pub fn bridged(n: usize) -> (Netns, Vec<Netns>) {
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

/// True if `ethtool` runs (the veth tests turn tx checksum offload off with it). If it does not,
/// the test fails, or with `BOAD_ALLOW_SKIP` set is recorded as skipped (see
/// `boad_test_support::require`) and returns, as without root.
pub fn has_ethtool() -> bool {
    boad_test_support::require_that(
        cmd(&["ethtool", "--version"]).is_ok(),
        "ethtool (scripts/install-ebpf-toolchain.sh installs it)",
    )
}
