//! Where this host's datagrams to another host go next: the interface that holds an address, the
//! next hop towards a destination (the main routing table), its MAC address (the neighbour table),
//! and an interface's own MAC, for the kernel path's clones, which leave an interface with their
//! Ethernet header already written. Used by boadrun's agents and by the kernel service alike.
//!
//! Contract: reads `/proc/net/route`, `/proc/net/arp` and the interfaces of the calling thread's
//! network namespace; the one thing sent is an empty datagram to the discard port (9) of a
//! destination whose next hop is not resolved yet, which makes the kernel resolve it.

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// MAC address of interface `name` in the calling thread's network namespace.
pub fn mac_of(name: &str) -> std::io::Result<[u8; 6]> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(std::io::Error::other(format!("bad interface name {name}")));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq with a NUL-terminated name; SIOCGIFHWADDR writes the
    // hardware address into its union and nothing else.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: after a successful SIOCGIFHWADDR the union holds `ifru_hwaddr`.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data) {
        *m = d as u8;
    }
    Ok(mac)
}

/// How long an agent waits for the neighbour table to resolve the next hops of a job.
pub const NEIGH_WAIT: Duration = Duration::from_secs(3);

/// The interface of this namespace that holds IPv4 address `ip`.
pub fn iface_with(ip: Ipv4Addr) -> Result<String, String> {
    crate::net::ipv4_interfaces()
        .map_err(|e| format!("cannot list the interfaces: {e}"))?
        .into_iter()
        .find(|i| i.ip == ip)
        .map(|i| i.name)
        .ok_or_else(|| format!("no interface has the address {ip}"))
}

/// The next hop towards `dst` through `iface` by the main routing table (`/proc/net/route`,
/// longest prefix): `dst` itself on a directly attached network, else its gateway.
pub fn next_hop(dst: Ipv4Addr, iface: &str) -> Result<Ipv4Addr, String> {
    let table = std::fs::read_to_string("/proc/net/route")
        .map_err(|e| format!("reading /proc/net/route: {e}"))?;
    match best_route(&table, dst, Some(iface)) {
        Some((_, via)) => Ok(via.unwrap_or(dst)),
        None => Err(format!("no route to {dst} through {iface}")),
    }
}

/// The longest-prefix route to `dst` in `table` (the text of `/proc/net/route`), through `iface`
/// if given: its interface and gateway (`None` on a directly attached network).
fn best_route(
    table: &str,
    dst: Ipv4Addr,
    iface: Option<&str>,
) -> Option<(String, Option<Ipv4Addr>)> {
    // Addresses are the kernel's big-endian words printed as native hex.
    let word = |s: &str| u32::from_str_radix(s, 16).ok();
    let want = u32::from_ne_bytes(dst.octets());
    let mut best: Option<(u32, &str, Option<Ipv4Addr>)> = None;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [name, dest, gw, flags, _, _, _, mask, ..] = f[..] else {
            continue;
        };
        let (Some(dest), Some(gw), Some(flags), Some(mask)) =
            (word(dest), word(gw), word(flags), word(mask))
        else {
            continue;
        };
        // RTF_UP; RTF_GATEWAY.
        if iface.is_some_and(|i| i != name) || flags & 1 == 0 || want & mask != dest & mask {
            continue;
        }
        if best.is_none_or(|(m, _, _)| mask.count_ones() > m) {
            let via = (flags & 2 != 0).then(|| Ipv4Addr::from(gw.to_ne_bytes()));
            best = Some((mask.count_ones(), name, via));
        }
    }
    best.map(|(_, name, via)| (name.to_string(), via))
}

/// The MAC of neighbour `ip` on `iface` if the neighbour table (`/proc/net/arp`) has it
/// resolved.
pub fn neighbour(ip: Ipv4Addr, iface: &str) -> Option<[u8; 6]> {
    let table = std::fs::read_to_string("/proc/net/arp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [addr, _, flags, hw, _, dev] = f[..] else {
            return None;
        };
        // ATF_COM: complete.
        let complete =
            u32::from_str_radix(flags.trim_start_matches("0x"), 16).is_ok_and(|v| v & 2 != 0);
        if dev != iface || !complete || addr.parse::<Ipv4Addr>().ok()? != ip {
            return None;
        }
        let mut mac = [0u8; 6];
        let mut parts = hw.split(':');
        for m in &mut mac {
            *m = u8::from_str_radix(parts.next()?, 16).ok()?;
        }
        parts.next().is_none().then_some(mac)
    })
}

/// The next-hop MAC towards each of `dsts` through `iface`: from the neighbour table, after
/// resolving those it lacks (a datagram to the destination's discard port, 9, makes the
/// kernel ask), waiting at most [`NEIGH_WAIT`] in all.
pub fn next_hop_macs(dsts: &[Ipv4Addr], iface: &str) -> Result<Vec<[u8; 6]>, String> {
    let hops = dsts
        .iter()
        .map(|&d| next_hop(d, iface))
        .collect::<Result<Vec<_>, _>>()?;
    let poke = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .map_err(|e| format!("binding a socket to resolve next hops: {e}"))?;
    let until = Instant::now() + NEIGH_WAIT;
    let mut round = 0u32;
    loop {
        let macs: Vec<Option<[u8; 6]>> = hops.iter().map(|&h| neighbour(h, iface)).collect();
        if macs.iter().all(Option::is_some) {
            return Ok(macs.into_iter().flatten().collect());
        }
        if Instant::now() >= until {
            let missing: Vec<String> = dsts
                .iter()
                .zip(&hops)
                .zip(&macs)
                .filter(|(_, m)| m.is_none())
                .map(|((d, h), _)| format!("{d} (next hop {h})"))
                .collect();
            return Err(format!(
                "no MAC address for {} on {iface} within {} s",
                missing.join(", "),
                NEIGH_WAIT.as_secs()
            ));
        }
        if round.is_multiple_of(20) {
            for (d, _) in dsts.iter().zip(&macs).filter(|(_, m)| m.is_none()) {
                let _ = poke.send_to(&[], (*d, 9));
            }
        }
        round += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The interface the main routing table sends datagrams for `dst` out of (longest prefix; `lo` for
/// an address of this host is not in that table, so such an address gives an error).
pub fn route_iface(dst: Ipv4Addr) -> Result<String, String> {
    let table = std::fs::read_to_string("/proc/net/route")
        .map_err(|e| format!("reading /proc/net/route: {e}"))?;
    best_route(&table, dst, None)
        .map(|(name, _)| name)
        .ok_or_else(|| format!("no route to {dst}"))
}

#[cfg(test)]
mod tests {
    use super::best_route;
    use std::net::Ipv4Addr;

    #[test]
    fn the_longest_prefix_wins() {
        // On a little-endian machine: default via 10.0.0.1 on eth0, 198.18.0.0/15 on veth0,
        // 198.18.1.0/24 via 198.18.0.9 on veth1.
        let word = |ip: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(ip));
        let row = |name: &str, dst: [u8; 4], gw: [u8; 4], flags: u32, mask: [u8; 4]| {
            format!(
                "{name}\t{}\t{}\t{flags:04X}\t0\t0\t0\t{}\t0\t0\t0\n",
                word(dst),
                word(gw),
                word(mask)
            )
        };
        let table =
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
                .to_string()
                + &row("eth0", [0; 4], [10, 0, 0, 1], 3, [0; 4])
                + &row("veth0", [198, 18, 0, 0], [0; 4], 1, [255, 254, 0, 0])
                + &row(
                    "veth1",
                    [198, 18, 1, 0],
                    [198, 18, 0, 9],
                    3,
                    [255, 255, 255, 0],
                )
                + &row("down0", [198, 18, 1, 7], [0; 4], 0, [255; 4]);
        let ip = Ipv4Addr::new;
        assert_eq!(
            best_route(&table, ip(198, 18, 1, 7), None),
            Some(("veth1".into(), Some(ip(198, 18, 0, 9))))
        );
        assert_eq!(
            best_route(&table, ip(198, 18, 0, 7), None),
            Some(("veth0".into(), None))
        );
        assert_eq!(
            best_route(&table, ip(198, 18, 1, 7), Some("veth0")),
            Some(("veth0".into(), None))
        );
        assert_eq!(
            best_route(&table, ip(8, 8, 8, 8), None),
            Some(("eth0".into(), Some(ip(10, 0, 0, 1))))
        );
        assert_eq!(best_route(&table, ip(8, 8, 8, 8), Some("veth0")), None);
        assert_eq!(best_route("garbage\nx y z\n", ip(8, 8, 8, 8), None), None);
    }
}
