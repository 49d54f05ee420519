//! Bounds-checked access to a packet and its boad header, shared by both programs.
//!
//! A packet is the byte range `[start, end)` the program's context gives (`data()`, `data_end()`),
//! starting at its Ethernet header. Every read here checks the range it touches against `end`, as
//! the verifier demands: Ethernet (14 bytes) + IPv4 without options (20) + UDP (8) + boad
//! [`Header`] (72) + payload.

use core::mem::{offset_of, size_of};

use boad_common::{kernel::MAX_RANKS, Header, HEADER_LEN, MAGIC, VERSION};

use crate::maps::{COMMS, CONFIG, MEMBERS, PORTS};

const ETH_P_IP_BE: [u8; 2] = [0x08, 0x00];
const IPPROTO_UDP: u8 = 17;
/// Offset of the IPv4 header.
const IP_OFF: usize = 14;
/// Offset of the IPv4 header checksum.
pub const IP_CSUM_OFF: usize = IP_OFF + 10;
/// Offset of the IPv4 source address.
pub const IP_SRC_OFF: usize = IP_OFF + 12;
/// Offset of the IPv4 destination address.
pub const IP_DST_OFF: usize = IP_OFF + 16;
/// Offset of the UDP header.
const UDP_OFF: usize = IP_OFF + 20;
/// Offset of the UDP source port.
pub const UDP_SPORT_OFF: usize = UDP_OFF;
/// Offset of the UDP destination port.
pub const UDP_DPORT_OFF: usize = UDP_OFF + 2;
/// Offset of the UDP checksum.
pub const UDP_CSUM_OFF: usize = UDP_OFF + 6;
/// Offset of the boad [`Header`].
pub const HDR_OFF: usize = UDP_OFF + 8;
/// Offset of the payload after the boad header.
pub const PAYLOAD_OFF: usize = HDR_OFF + HEADER_LEN;

/// Reads a `T` at `off` bytes into the packet `[start, end)`, if it is all inside.
#[inline(always)]
pub fn read_at<T: Copy>(start: usize, end: usize, off: usize) -> Option<T> {
    if start + off + size_of::<T>() > end {
        return None;
    }
    // SAFETY: the bytes [start + off, start + off + size_of::<T>()) are inside the packet (checked
    // above); T is a plain integer type, valid for any bits; the read tolerates any alignment.
    Some(unsafe { core::ptr::read_unaligned((start + off) as *const T) })
}

/// The field at `off` bytes into the boad header of the packet `[start, end)` (`offset_of!(Header,
/// field)`), or `T::default()` when the packet is too short to hold it.
#[inline(always)]
pub fn header_field<T: Copy + Default>(start: usize, end: usize, off: usize) -> T {
    read_at(start, end, HDR_OFF + off).unwrap_or_default()
}

/// What [`classify`] made of a packet.
pub enum Datagram {
    /// Not a boad datagram to a port with the wanted bit: leave it alone.
    NotOurs,
    /// To a boad port, but wrong magic, version or job.
    Foreign,
    /// A boad datagram of this job; the header is inside the packet at [`HDR_OFF`].
    Ours,
}

/// Classifies the packet `[start, end)`: ours is an IPv4 (no options, not a fragment) UDP datagram
/// to a port whose `PORTS` bits include `want`, long enough for a boad header, with this job's
/// magic, version and key (its communicator's in `COMMS`, else `CONFIG`'s); a `CONFIG` key of 0
/// (not configured) makes nothing ours.
#[inline(always)]
pub fn classify(start: usize, end: usize, want: u32) -> Datagram {
    if start + PAYLOAD_OFF > end {
        return Datagram::NotOurs;
    }
    let proto: [u8; 2] = match read_at(start, end, 12) {
        Some(p) => p,
        None => return Datagram::NotOurs,
    };
    let vihl: u8 = read_at(start, end, IP_OFF).unwrap_or(0);
    let ipproto: u8 = read_at(start, end, IP_OFF + 9).unwrap_or(0);
    let frag: [u8; 2] = read_at(start, end, IP_OFF + 6).unwrap_or([0xff, 0xff]);
    if proto != ETH_P_IP_BE
        || vihl != 0x45
        || ipproto != IPPROTO_UDP
        || (frag[0] & 0x3f) != 0
        || frag[1] != 0
    {
        return Datagram::NotOurs;
    }
    let dport: [u8; 2] = read_at(start, end, UDP_DPORT_OFF).unwrap_or([0, 0]);
    let dport = u16::from_be_bytes(dport);
    let bits = match PORTS.get_ptr(dport) {
        // SAFETY: the pointer is to a u32 map value the kernel keeps alive for this program run.
        Some(p) => unsafe { *p },
        None => return Datagram::NotOurs,
    };
    if bits & want == 0 {
        return Datagram::NotOurs;
    }
    let job = match CONFIG.get(0) {
        Some(c) if c.job != 0 => c.job,
        _ => return Datagram::NotOurs,
    };
    let magic: u32 = read_at(start, end, HDR_OFF + offset_of!(Header, magic)).unwrap_or(0);
    let version: u8 = read_at(start, end, HDR_OFF + offset_of!(Header, version)).unwrap_or(0);
    let hjob: u64 = read_at(start, end, HDR_OFF + offset_of!(Header, job)).unwrap_or(0);
    let comm: u32 = read_at(start, end, HDR_OFF + offset_of!(Header, comm)).unwrap_or(u32::MAX);
    // A registered communicator has its own key (one set of programs serves several jobs, each
    // with its own communicators); any other is judged by the key in CONFIG.
    let job = match COMMS.get_ptr(comm) {
        // SAFETY: a pointer to a CommInfo map value the kernel keeps alive for this program run.
        Some(c) => unsafe { (*c).job },
        None => job,
    };
    if magic != MAGIC || version != VERSION || hjob != job {
        return Datagram::Foreign;
    }
    Datagram::Ours
}

/// Whether the packet `[start, end)` comes from the registered IPv4 address and UDP port of member
/// `src` of the communicator whose `n` members start at `base` in `MEMBERS` (as the header of a
/// datagram of rank `src` says). Member `i` of a communicator is its rank `i` (`boad-ebpf-loader`'s
/// `set_comm` stores them so), so this is one array lookup. Without it anyone holding the job key
/// could speak for a rank: set the rank's bit in a slot and make its real contribution a duplicate.
#[inline(always)]
pub fn from_member(start: usize, end: usize, base: u32, n: u32, src: u32) -> bool {
    if src >= n || src >= MAX_RANKS {
        return false;
    }
    let m = match MEMBERS.get(base.wrapping_add(src)) {
        Some(m) => *m,
        None => return false,
    };
    let (ip, sport): (u32, u16) = match (
        read_at(start, end, IP_SRC_OFF),
        read_at(start, end, UDP_SPORT_OFF),
    ) {
        (Some(ip), Some(p)) => (ip, p),
        _ => return false,
    };
    m.rank == src && m.ip_be == ip && m.port_be == sport
}
