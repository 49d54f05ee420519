//! This machine's network identity, as launchers and ranks see it: its IPv4 interfaces, and which
//! processes share a "host" (one kernel and one network namespace: they reach each other on
//! `127.0.0.1` and can share memory), and the UDP sockets of this network namespace with their
//! owners (`/proc/net/udp{,6}`).
//!
//! Contract: these functions only read (`getifaddrs`, `/proc`, a socket's peer credentials); nothing
//! is changed or sent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One IPv4 address of an interface of this network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    /// The interface's name (`eth0`).
    pub name: String,
    /// The address.
    pub ip: Ipv4Addr,
    /// Whether the interface is up.
    pub up: bool,
    /// Whether it is a loopback interface.
    pub loopback: bool,
}

/// Every IPv4 address of every interface of this network namespace, in the kernel's order.
pub fn ipv4_interfaces() -> std::io::Result<Vec<Iface>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head it allocated into `head`, freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut found = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: a non-null ifa_addr points at a sockaddr whose family says its real type.
        if i32::from(unsafe { (*ifa.ifa_addr).sa_family }) != libc::AF_INET {
            continue;
        }
        // SAFETY: an AF_INET address is a sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        // SAFETY: ifa_name is a NUL-terminated string that lives as long as the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        let flags = ifa.ifa_flags as libc::c_int;
        found.push(Iface {
            name: name.to_string_lossy().into_owned(),
            ip: Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
            up: flags & libc::IFF_UP != 0,
            loopback: flags & libc::IFF_LOOPBACK != 0,
        });
    }
    // SAFETY: `head` came from getifaddrs and is freed once; nothing from it is used after.
    unsafe { libc::freeifaddrs(head) };
    Ok(found)
}

/// What processes on one host share and processes on different hosts do not: the kernel's boot id
/// and the inode of the network namespace, as `BOOTID/INODE` (only hex digits, `-` and `/`).
/// Two namespace "hosts" on one machine differ; two processes in one namespace are one host.
pub fn host_key() -> std::io::Result<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?;
    let boot = boot.trim();
    let netns = std::fs::read_link("/proc/self/ns/net")?;
    let netns = netns.to_string_lossy();
    // "net:[4026531840]"
    let ino = netns
        .strip_prefix("net:[")
        .and_then(|s| s.strip_suffix(']'))
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("/proc/self/ns/net reads {netns:?}"),
            )
        })?;
    if boot.is_empty() || !boot.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("/proc/sys/kernel/random/boot_id reads {boot:?}"),
        ));
    }
    Ok(format!("{boot}/{ino}"))
}

/// Whether `key` has the shape [`host_key`] gives (a peer's key is checked before it is used).
pub fn is_host_key(key: &str) -> bool {
    let Some((boot, ino)) = key.split_once('/') else {
        return false;
    };
    (1..=64).contains(&boot.len())
        && boot.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        && (1..=20).contains(&ino.len())
        && ino.bytes().all(|b| b.is_ascii_digit())
}

/// One UDP socket of `/proc/net/udp{,6}`: its local address and port, its owner and its inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpSocketEntry {
    /// Local address (an IPv4 address on a dual-stack socket reads as IPv4).
    pub ip: IpAddr,
    /// Local port.
    pub port: u16,
    /// Owner's uid.
    pub uid: u32,
    /// The socket's inode (what `/proc/<pid>/fd/*` links name as `socket:[inode]`).
    pub inode: u64,
}

/// One line of `/proc/net/udp{,6}`: `sl local_address rem_address st tx:rx tr:when retrnsmt uid
/// timeout inode ...`, the local address in hex as the kernel holds it (32-bit words in host
/// order). None for the header or anything else.
pub fn parse_udp_line(line: &str) -> Option<UdpSocketEntry> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let (addr, port) = f.get(1)?.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let uid = f.get(7)?.parse().ok()?;
    let inode = f.get(9)?.parse().ok()?;
    let word = |i: usize| {
        addr.get(i * 8..i * 8 + 8)
            .and_then(|w| u32::from_str_radix(w, 16).ok())
            .map(u32::to_ne_bytes)
    };
    let ip = match addr.len() {
        8 => IpAddr::from(word(0)?),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(b);
            // A v4 address on a dual-stack socket.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(UdpSocketEntry {
        ip,
        port,
        uid,
        inode,
    })
}

/// The UDP sockets of `/proc/net/udp` (IPv4) and, with `v6`, `/proc/net/udp6` of this network
/// namespace; a file that cannot be read adds nothing.
pub fn udp_sockets(v6: bool) -> Vec<UdpSocketEntry> {
    let files: &[&str] = if v6 {
        &["/proc/net/udp", "/proc/net/udp6"]
    } else {
        &["/proc/net/udp"]
    };
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(parse_udp_line)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The peer credentials (uid, pid) of a Unix stream's other end (for a listening socket's
/// connection: the process that listened).
pub fn peer_cred(conn: &std::os::unix::net::UnixStream) -> std::io::Result<(u32, i32)> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a writable ucred and `len` its size; SO_PEERCRED writes at most that.
    let rc = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((cred.uid, cred.pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_namespace_has_a_loopback_address_and_a_well_formed_host_key() {
        let ifaces = ipv4_interfaces().expect("getifaddrs");
        assert!(
            ifaces
                .iter()
                .any(|i| i.loopback && i.ip == Ipv4Addr::LOCALHOST),
            "{ifaces:?}"
        );
        let key = host_key().expect("host key");
        assert!(is_host_key(&key), "{key}");
        assert_eq!(host_key().expect("again"), key);
        for bad in ["", "/1", "abc/", "abc/12x", "a b/1", "g/1", "abc\n/1"] {
            assert!(!is_host_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn proc_net_udp_lines_parse_v4_and_v6_with_owner_and_inode() {
        let v4 = "  12: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000 65534        0 4242 2 0000000000000000 0";
        assert_eq!(
            parse_udp_line(v4),
            Some(UdpSocketEntry {
                ip: IpAddr::from([127, 0, 0, 1]),
                port: 0x1f90,
                uid: 65534,
                inode: 4242
            })
        );
        let v6 = "  3: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 77 2 0000000000000000 0";
        let e = parse_udp_line(v6).expect("v6");
        assert_eq!(
            (e.ip, e.port, e.uid, e.inode),
            (IpAddr::from(Ipv6Addr::LOCALHOST), 80, 1000, 77)
        );
        for bad in ["garbage", "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"] {
            assert_eq!(parse_udp_line(bad), None);
        }
        // Our own socket is found by its address, owned by us.
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = s.local_addr().expect("address").port();
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        for v6 in [false, true] {
            assert!(udp_sockets(v6)
                .iter()
                .any(|e| e.port == port && e.ip == IpAddr::from([127, 0, 0, 1]) && e.uid == me));
        }
    }
}
