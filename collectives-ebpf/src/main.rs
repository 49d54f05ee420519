//! boad's eBPF programs: the kernel fast path (`docs/kernel-path.md` describes it datagram by
//! datagram; `boad-ebpf-loader` is the loader).
//!
//! This file holds the entry points only, each a thin wrapper around a `try_*` function:
//! [`maps`] declares the maps and counters, [`parse`] reads packets and headers with bounds checks
//! and checks a datagram's source, [`fold`] is the XDP reduction, [`clone`] the TC broadcast.
//!
//! * `boad_xdp` (XDP, on the reducing rank's interface; [`fold::try_dispatch`]): parses
//!   Ethernet / IPv4 (no options, not a fragment) / UDP to a port with the `port::REDUCE` bit in
//!   `PORTS` / boad `Header` with the right magic, version and job key (its communicator's in
//!   `COMMS`, else `CONFIG`'s). Anything else passes untouched (a datagram to a boad port with a
//!   bad magic/version/job counts as foreign).
//!   A `CONTRIB` tail-calls `PROGS[prog_index(op, dtype)]`; when there is no program there (float
//!   sum/prod) it passes unfolded. A CONTRIB with `flags::BYPASS` passes unfolded and untouched
//!   (the runtime's userspace-fold fallback).
//! * `fold_<op>_<dtype>` (XDP, tail-called): one generic function, [`fold::try_fold`],
//!   monomorphised per (element type, op): integer sum/prod/min/max/band/bor/bxor/land/lor on
//!   i8..u64, float min/max on IEEE bit patterns. First checks that the datagram comes from the
//!   registered IPv4 address and UDP port of member `src` of its communicator (`COMMS` +
//!   `MEMBERS`, see [`parse::from_member`]); one that does not passes untouched, without looking
//!   at a slot (counter `WRONG_SOURCE`): userspace checks every datagram's source against its peer
//!   table and drops it. Folds the payload into the slot of (job, comm, seq, chunk) under the
//!   slot's `bpf_spin_lock`, remembers the contributor (`src`) in the slot's bitmap so a resent
//!   datagram is dropped as a duplicate, drops the datagram, and rewrites the one completing the
//!   reduction (the `contribs`-th distinct contributor, from `COMMS`) into a `RESULT` carrying the
//!   folded payload, which passes to the socket (its IP and UDP source stay the completing
//!   contributor's, as its header `src` does). A contribution resent to a *complete* slot is
//!   rewritten into a copy of the RESULT (the first one was lost); a contribution whose signature
//!   (`coll`, `op`, `dtype`, `count`, `root`, `len`) differs from the slot's first passes
//!   unfolded, so the root can report the mismatch. See [`fold::Slot`] for the slot rules.
//! * `boad_tc_bcast` (TC egress, TCX; [`clone::try_clone_bcast`]): a `BCAST` datagram to a port
//!   with the `port::BCAST` bit is cloned to each member of its communicator (`COMMS` + `MEMBERS`)
//!   with its destination IP, port, header `dst` (and MAC when given) rewritten and the IP/UDP
//!   checksums fixed; the original is dropped. Only a BCAST that comes from the registered address
//!   and port of member `src` (the sender) of its communicator is cloned; another passes untouched
//!   (counter `WRONG_SOURCE`), so that a socket outside the job cannot reach every member with one
//!   datagram, even with the job key. The member whose rank is the header's `src` (the sender) gets
//!   no clone; a member whose IP is the original's source IP is on the sending host and gets its
//!   clone through `lo` (ifindex 1, on its receive side, destination MAC zeroed; needs
//!   `net.ipv4.conf.lo.accept_local = 1`), since a bridge never sends a frame back out of the port
//!   it came in by. Clones carry `skb->mark == BCAST_MARK` and `flags::CLONED` and are let through
//!   untouched when they come back to the program.
#![no_std]
#![no_main]

mod clone;
mod fold;
mod maps;
mod parse;

use aya_ebpf::{
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use boad_common::op;

/// XDP entry: classify, tail-call the fold program for a CONTRIB.
#[xdp]
pub fn boad_xdp(ctx: XdpContext) -> u32 {
    match fold::try_dispatch(&ctx) {
        Ok(a) | Err(a) => a,
    }
}

macro_rules! fold_progs {
    ($($name:ident => $t:ty, $op:expr;)*) => {$(
        /// Reduction program (tail-called by `boad_xdp`).
        #[xdp]
        pub fn $name(ctx: XdpContext) -> u32 {
            match fold::try_fold::<$t, { $op }>(&ctx) {
                Ok(a) | Err(a) => a,
            }
        }
    )*};
}

fold_progs! {
    fold_sum_i8 => i8, op::SUM;
    fold_sum_i16 => i16, op::SUM;
    fold_sum_i32 => i32, op::SUM;
    fold_sum_i64 => i64, op::SUM;
    fold_sum_u8 => u8, op::SUM;
    fold_sum_u16 => u16, op::SUM;
    fold_sum_u32 => u32, op::SUM;
    fold_sum_u64 => u64, op::SUM;
    fold_prod_i8 => i8, op::PROD;
    fold_prod_i16 => i16, op::PROD;
    fold_prod_i32 => i32, op::PROD;
    fold_prod_i64 => i64, op::PROD;
    fold_prod_u8 => u8, op::PROD;
    fold_prod_u16 => u16, op::PROD;
    fold_prod_u32 => u32, op::PROD;
    fold_prod_u64 => u64, op::PROD;
    fold_min_i8 => i8, op::MIN;
    fold_min_i16 => i16, op::MIN;
    fold_min_i32 => i32, op::MIN;
    fold_min_i64 => i64, op::MIN;
    fold_min_u8 => u8, op::MIN;
    fold_min_u16 => u16, op::MIN;
    fold_min_u32 => u32, op::MIN;
    fold_min_u64 => u64, op::MIN;
    fold_max_i8 => i8, op::MAX;
    fold_max_i16 => i16, op::MAX;
    fold_max_i32 => i32, op::MAX;
    fold_max_i64 => i64, op::MAX;
    fold_max_u8 => u8, op::MAX;
    fold_max_u16 => u16, op::MAX;
    fold_max_u32 => u32, op::MAX;
    fold_max_u64 => u64, op::MAX;
    fold_band_i8 => i8, op::BAND;
    fold_band_i16 => i16, op::BAND;
    fold_band_i32 => i32, op::BAND;
    fold_band_i64 => i64, op::BAND;
    fold_band_u8 => u8, op::BAND;
    fold_band_u16 => u16, op::BAND;
    fold_band_u32 => u32, op::BAND;
    fold_band_u64 => u64, op::BAND;
    fold_bor_i8 => i8, op::BOR;
    fold_bor_i16 => i16, op::BOR;
    fold_bor_i32 => i32, op::BOR;
    fold_bor_i64 => i64, op::BOR;
    fold_bor_u8 => u8, op::BOR;
    fold_bor_u16 => u16, op::BOR;
    fold_bor_u32 => u32, op::BOR;
    fold_bor_u64 => u64, op::BOR;
    fold_bxor_i8 => i8, op::BXOR;
    fold_bxor_i16 => i16, op::BXOR;
    fold_bxor_i32 => i32, op::BXOR;
    fold_bxor_i64 => i64, op::BXOR;
    fold_bxor_u8 => u8, op::BXOR;
    fold_bxor_u16 => u16, op::BXOR;
    fold_bxor_u32 => u32, op::BXOR;
    fold_bxor_u64 => u64, op::BXOR;
    fold_land_i8 => i8, op::LAND;
    fold_land_i16 => i16, op::LAND;
    fold_land_i32 => i32, op::LAND;
    fold_land_i64 => i64, op::LAND;
    fold_land_u8 => u8, op::LAND;
    fold_land_u16 => u16, op::LAND;
    fold_land_u32 => u32, op::LAND;
    fold_land_u64 => u64, op::LAND;
    fold_lor_i8 => i8, op::LOR;
    fold_lor_i16 => i16, op::LOR;
    fold_lor_i32 => i32, op::LOR;
    fold_lor_i64 => i64, op::LOR;
    fold_lor_u8 => u8, op::LOR;
    fold_lor_u16 => u16, op::LOR;
    fold_lor_u32 => u32, op::LOR;
    fold_lor_u64 => u64, op::LOR;
    fold_min_f32 => fold::Float<u32>, op::MIN;
    fold_min_f64 => fold::Float<u64>, op::MIN;
    fold_max_f32 => fold::Float<u32>, op::MAX;
    fold_max_f64 => fold::Float<u64>, op::MAX;
}

/// TC egress: clone a BCAST datagram to every member of its communicator.
#[classifier]
pub fn boad_tc_bcast(ctx: TcContext) -> i32 {
    match clone::try_clone_bcast(&ctx) {
        Ok(a) | Err(a) => a,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
