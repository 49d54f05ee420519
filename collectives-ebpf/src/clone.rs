//! The TC egress broadcast: [`try_clone_bcast`] (behind `boad_tc_bcast`) clones a BCAST datagram
//! from its sender to every other member of its communicator and drops the original.

use core::mem::offset_of;

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_UNSPEC},
    programs::TcContext,
};
use boad_common::{
    flags,
    kernel::{counter, port, BCAST_MARK, LOOPBACK_IFINDEX, MAX_RANKS},
    kind, Header,
};

use crate::maps::{increment, COMMS, MEMBERS};
use crate::parse::{
    classify, from_member, header_field, read_at, Datagram, HDR_OFF, IP_CSUM_OFF, IP_DST_OFF,
    IP_SRC_OFF, UDP_CSUM_OFF, UDP_DPORT_OFF,
};

const CSUM_FLAGS: u64 = BPF_F_MARK_MANGLED_0 as u64;
const PSEUDO_FLAGS: u64 = (BPF_F_MARK_MANGLED_0 | BPF_F_PSEUDO_HDR) as u64;
/// TCX_NEXT: not ours, let the next program / the stack have it.
const NEXT: i32 = TC_ACT_UNSPEC;
/// TC_ACT_SHOT / TCX_DROP (the bindings type it `u32` or `i32` depending on the target arch cfg).
const DROP: i32 = 2;

/// Behind `boad_tc_bcast`: a BCAST of this job without [`flags::CLONED`], to a port with the
/// [`port::BCAST`] bit, from the registered socket of member `src` of its communicator, is cloned
/// to every other member (destination IP, UDP port, header `dst` and MAC rewritten, checksums
/// fixed, `flags::CLONED` and [`BCAST_MARK`] set) and dropped; anything else goes on untouched.
#[inline(always)]
pub fn try_clone_bcast(ctx: &TcContext) -> Result<i32, i32> {
    // SAFETY: `ctx.skb.skb` is the program's __sk_buff context, valid for reading its fields.
    let (mark, self_ifindex) = unsafe { ((*ctx.skb.skb).mark, (*ctx.skb.skb).ifindex) };
    if mark == BCAST_MARK {
        return Ok(NEXT);
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    match classify(start, end, port::BCAST) {
        Datagram::NotOurs => return Ok(NEXT),
        Datagram::Foreign => {
            increment(counter::FOREIGN);
            return Ok(NEXT);
        }
        Datagram::Ours => {}
    }
    let k: u8 = header_field(start, end, offset_of!(Header, kind));
    let f: u8 = header_field(start, end, offset_of!(Header, flags));
    if k != kind::BCAST || f & flags::CLONED != 0 {
        return Ok(NEXT);
    }
    let comm: u32 = header_field(start, end, offset_of!(Header, comm));
    let sender: u32 = header_field(start, end, offset_of!(Header, src));
    let (n, base) = match COMMS.get_ptr(comm) {
        // SAFETY: a pointer to a CommInfo map value the kernel keeps alive for this program run.
        Some(c) => unsafe { ((*c).nmembers, (*c).members_base) },
        None => return Ok(NEXT),
    };
    // Only member `src` itself, from its own address and port, gets its BCAST cloned: anything
    // else holding the job key would otherwise reach every member with one datagram.
    if !from_member(start, end, base, n, sender) {
        increment(counter::WRONG_SOURCE);
        return Ok(NEXT);
    }
    let src_ip: u32 = read_at(start, end, IP_SRC_OFF).unwrap_or(0);
    let orig_mac: [u8; 6] = read_at(start, end, 0).unwrap_or([0; 6]);
    let mut ip: u32 = read_at(start, end, IP_DST_OFF).unwrap_or(0);
    let mut port: u16 = read_at(start, end, UDP_DPORT_OFF).unwrap_or(0);
    let dst_off = HDR_OFF + offset_of!(Header, dst);
    let mut dst: u32 = read_at(start, end, dst_off).unwrap_or(0);
    // `dtype` and `flags` share a 16-bit word of the UDP checksum: replace the word.
    let fw_off = HDR_OFF + offset_of!(Header, dtype);
    let fw: u16 = read_at(start, end, fw_off).unwrap_or(0);
    let fw_new = fw | ((flags::CLONED as u16) << 8);
    ctx.l4_csum_replace(UDP_CSUM_OFF, fw as u64, fw_new as u64, CSUM_FLAGS | 2)
        .map_err(|_| DROP)?;
    ctx.store(fw_off, &fw_new, 0).map_err(|_| DROP)?;
    ctx.set_mark(BCAST_MARK);
    increment(counter::BCASTS);

    // Counters are bumped in the loop: a count carried across iterations would keep the verifier
    // from pruning (one state per count).
    for i in 0..MAX_RANKS {
        if i >= n {
            break;
        }
        let m = match MEMBERS.get(base.wrapping_add(i)) {
            Some(m) => *m,
            None => break,
        };
        if m.rank == sender {
            continue;
        }
        // A member on the sending host is reached through `lo`, whose address is all zeros (another
        // destination MAC would make the clone PACKET_OTHERHOST there, and IP would drop it).
        let local = m.ip_be == src_ip;
        let mac = if local {
            [0u8; 6]
        } else if m.mac != [0u8; 6] {
            m.mac
        } else {
            orig_mac
        };
        if ctx
            .l3_csum_replace(IP_CSUM_OFF, ip as u64, m.ip_be as u64, 4)
            .is_err()
            || ctx
                .l4_csum_replace(UDP_CSUM_OFF, ip as u64, m.ip_be as u64, PSEUDO_FLAGS | 4)
                .is_err()
            || ctx.store(IP_DST_OFF, &m.ip_be, 0).is_err()
            || ctx
                .l4_csum_replace(UDP_CSUM_OFF, port as u64, m.port_be as u64, CSUM_FLAGS | 2)
                .is_err()
            || ctx.store(UDP_DPORT_OFF, &m.port_be, 0).is_err()
            || ctx
                .l4_csum_replace(UDP_CSUM_OFF, dst as u64, m.rank as u64, CSUM_FLAGS | 4)
                .is_err()
            || ctx.store(dst_off, &m.rank, 0).is_err()
            || ctx.store(0, &mac, 0).is_err()
        {
            increment(counter::CLONE_ERRORS);
            break;
        }
        ip = m.ip_be;
        port = m.port_be;
        dst = m.rank;
        let ifindex = if local {
            LOOPBACK_IFINDEX
        } else if m.ifindex != 0 {
            m.ifindex
        } else {
            self_ifindex
        };
        // The local clone enters `lo` on its receive side: sent out of `lo` it would keep the
        // route of the original (out of this interface) and IP would discard it. Entering `lo`,
        // it is routed as received: needs `accept_local` on `lo` (local source address).
        let how = if local { BPF_F_INGRESS as u64 } else { 0 };
        if ctx.clone_redirect(ifindex, how).is_ok() {
            increment(counter::CLONES);
            if local {
                increment(counter::LOCAL_CLONES);
            }
        } else {
            increment(counter::CLONE_ERRORS);
        }
    }
    Ok(DROP)
}
