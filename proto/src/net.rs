//! This machine's network identity, as launchers and ranks see it: its IPv4 interfaces, and which
//! processes share a "host" (one kernel and one network namespace: they reach each other on
//! `127.0.0.1` and can share memory).
//!
//! Contract: these functions only read (`getifaddrs`, `/proc`); nothing is changed or sent.

use std::net::Ipv4Addr;

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
}
