//! boad's kernel fast path (`docs/kernel-path.md` describes it datagram by datagram; `boad::kernel` is the loader).
//!
//! * `boad_xdp` (XDP, on the reducing rank's interface): parses Ethernet / IPv4 (no options, not a
//!   fragment) / UDP to a port with the [`port::REDUCE`] bit in `PORTS` / boad [`Header`] with the right
//!   magic, version and job key (`CONFIG`). Anything else passes untouched (a datagram to a boad port
//!   with a bad magic/version/job counts as foreign). A `CONTRIB` tail-calls `PROGS[prog_index(op,
//!   dtype)]`; when there is no program there (float sum/prod) it passes unfolded. A CONTRIB with
//!   [`flags::BYPASS`] passes unfolded and untouched (the runtime's userspace-fold fallback).
//! * `fold_<op>_<dtype>` (XDP, tail-called): one generic function, [`try_fold`], monomorphised per
//!   (element type, op): integer sum/prod/min/max/band/bor/bxor/land/lor on i8..u64, float min/max on
//!   IEEE bit patterns. First checks that the datagram comes from the registered IPv4 address and UDP
//!   port of member `src` of its communicator (`COMMS` + `MEMBERS`, see [`from_member`]); one that
//!   does not passes untouched, without looking at a slot (counter `WRONG_SOURCE`): userspace checks
//!   every datagram's source against its peer table and drops it. Folds the payload into the slot
//!   of (job, comm, seq, chunk) under the slot's `bpf_spin_lock`, remembers the contributor (`src`)
//!   in the slot's bitmap so a resent datagram is dropped as a duplicate, drops the datagram, and
//!   rewrites the one completing the reduction (the `contribs`-th distinct contributor, from `COMMS`)
//!   into a `RESULT` carrying the folded payload, which passes to the socket (its IP and UDP source
//!   stay the completing contributor's, as its header `src` does). A contribution resent to a
//!   *complete* slot is rewritten into a copy of the RESULT (the first one was lost); a contribution
//!   whose signature (`coll`, `op`, `dtype`, `count`, `root`, `len`) differs from the slot's first
//!   passes unfolded, so the root can report the mismatch. See [`Slot`] for the slot rules.
//! * `boad_tc_bcast` (TC egress, TCX): a `BCAST` datagram to a port with the [`port::BCAST`] bit is
//!   cloned to each member of its communicator (`COMMS` + `MEMBERS`) with its destination IP, port,
//!   header `dst` (and MAC when given) rewritten and the IP/UDP checksums fixed; the original is dropped.
//!   Only a BCAST that comes from the registered address and port of member `src` (the sender) of
//!   its communicator is cloned; another passes untouched (counter `WRONG_SOURCE`), so that a socket
//!   outside the job cannot reach every member with one datagram, even with the job key.
//!   The member whose rank is the header's `src` (the sender) gets no clone; a member whose IP is the
//!   original's source IP is on the sending host and gets its clone through `lo` (ifindex 1, on its
//!   receive side, destination MAC zeroed; needs `net.ipv4.conf.lo.accept_local = 1`), since a
//!   bridge never sends a frame back out of the port it came in by.
//!   Clones carry `skb->mark == BCAST_MARK` and `flags::CLONED` and are let through untouched when they
//!   come back to the program.
#![no_std]
#![no_main]

use core::mem::{offset_of, size_of};
use core::ptr::{addr_of, addr_of_mut};

use aya_ebpf::{
    bindings::{
        bpf_spin_lock, xdp_action, BPF_F_INGRESS, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR,
        TC_ACT_UNSPEC,
    },
    btf_maps::{Array, HashMap, PerCpuArray, ProgramArray},
    helpers::{bpf_spin_lock as spin_lock, bpf_spin_unlock as spin_unlock},
    macros::{btf_map, classifier, xdp},
    programs::{TcContext, XdpContext},
};
use boad_common::{
    dtype, flags,
    kernel::{
        counter, port, slot_index, CommInfo, Config, Member, BCAST_MARK, LOOPBACK_IFINDEX,
        MAX_COMMS, MAX_PAYLOAD, MAX_RANKS, NSLOTS,
    },
    kind, op, prog_index, Header, HEADER_LEN, MAGIC, VERSION,
};

// ---------------------------------------------------------------------------------------------------
// Maps (BTF-defined: the slot value holds a bpf_spin_lock).

/// Job key and global settings (one entry).
#[btf_map]
static CONFIG: Array<Config, 1> = Array::new();
/// UDP destination port (host order) -> [`port`] bits: every rank's port and the trigger port of a
/// job of up to `MAX_RANKS` ranks (a map of 64 entries used to stop jobs above 63 ranks).
#[btf_map]
static PORTS: HashMap<u16, u32, { 2 * MAX_RANKS as usize }> = HashMap::new();
/// Communicator id -> how many contributions complete a reduction, members to broadcast to.
#[btf_map]
static COMMS: HashMap<u32, CommInfo, { MAX_COMMS as usize }> = HashMap::new();
/// Broadcast destinations: communicator block `CommInfo::members_base`, then member index.
#[btf_map]
static MEMBERS: Array<Member, { (MAX_COMMS * MAX_RANKS) as usize }> = Array::new();
/// Reduction programs, at `prog_index(op, dtype)`.
#[btf_map]
static PROGS: ProgramArray<{ (op::COUNT as usize) * (dtype::COUNT as usize) }> =
    ProgramArray::new();
/// In-flight reductions, at `slot_index(comm, seq, chunk)`.
#[btf_map]
static SLOTS: Array<Slot, { NSLOTS as usize }> = Array::new();
/// Per-CPU counters, indexed by [`counter`].
#[btf_map]
static COUNTERS: PerCpuArray<u64, { counter::COUNT as usize }> = PerCpuArray::new();

const SEEN_WORDS: usize = (MAX_RANKS / 64) as usize;

/// One in-flight reduction.
///
/// A CONTRIB for key K = (job, comm, seq, chunk) uses slot `slot_index(comm, seq, chunk)`. If the slot
/// holds another key, it is taken over (reset) when it is free (`count == 0`), complete
/// (`count >= expected`), of another job, or of an older `seq` of the same communicator; otherwise
/// the CONTRIB passes unfolded (counter `UNFOLDED`). Keys of one communicator collide only when their
/// `seq`s are `NSLOTS / 64` (64) or more apart or `chunk >= 64`: a reduction still incomplete when a
/// contribution 64 `seq`s further arrives is abandoned (its partial fold is lost and its later
/// contributions pass unfolded), so the runtime must keep contributors within that window.
/// A complete slot keeps its key, bitmap and fold, so a contribution resent after the RESULT left
/// (the root NACKed a lost RESULT) is rewritten into a copy of the RESULT; a resent contribution to
/// an incomplete slot is dropped as a duplicate (the RESULT leaves when the missing one arrives).
/// The slot records the signature of the contribution that took it (`coll`, `op`, `dtype`, `count`
/// as `elems`, `root`, `len`); a contribution to the same key with another signature passes
/// unfolded (counter `MISMATCHED`) and leaves the slot alone.
#[repr(C)]
pub struct Slot {
    lock: bpf_spin_lock,
    /// Distinct contributions folded.
    count: u32,
    job: u64,
    comm: u32,
    seq: u32,
    chunk: u32,
    /// Payload bytes (every contribution of a reduction has the same length).
    len: u32,
    /// Contributions that complete the reduction (`CommInfo::contribs` when the slot was taken).
    expected: u32,
    /// Signature of the first contribution: header `coll`, `op`, `dtype`, `root`, `count`.
    coll: u8,
    op: u8,
    dtype: u8,
    reserved: u8,
    root: u32,
    elems: u64,
    /// Bit `src` set: `src`'s contribution is in.
    seen: [u64; SEEN_WORDS],
    /// Folded payload so far.
    data: [u64; MAX_PAYLOAD / 8],
}

// ---------------------------------------------------------------------------------------------------
// Packet layout: Ethernet (14) + IPv4 without options (20) + UDP (8) + boad header (72) + payload.

const ETH_P_IP_BE: [u8; 2] = [0x08, 0x00];
const IP_OFF: usize = 14;
const IP_CSUM_OFF: usize = IP_OFF + 10;
const IP_SRC_OFF: usize = IP_OFF + 12;
const IP_DST_OFF: usize = IP_OFF + 16;
const UDP_OFF: usize = IP_OFF + 20;
const UDP_SPORT_OFF: usize = UDP_OFF;
const UDP_DPORT_OFF: usize = UDP_OFF + 2;
const UDP_CSUM_OFF: usize = UDP_OFF + 6;
const HDR_OFF: usize = UDP_OFF + 8;
const PAYLOAD_OFF: usize = HDR_OFF + HEADER_LEN;
const IPPROTO_UDP: u8 = 17;

/// Reads a `T` at `off` bytes into the packet `[start, end)`, if it is all inside.
#[inline(always)]
fn load<T: Copy>(start: usize, end: usize, off: usize) -> Option<T> {
    if start + off + size_of::<T>() > end {
        return None;
    }
    // SAFETY: the bytes [start + off, start + off + size_of::<T>()) are inside the packet (checked
    // above); T is a plain integer type, valid for any bits; the read tolerates any alignment.
    Some(unsafe { core::ptr::read_unaligned((start + off) as *const T) })
}

#[inline(always)]
fn bump(index: u32, by: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: `p` points to this CPU's u64 counter in the map; nothing else on this CPU runs
        // while the program does.
        unsafe { *p += by };
    }
}

enum Parsed {
    /// Not a boad datagram to a port with the wanted bit: leave it alone.
    NotOurs,
    /// To a boad port, but wrong magic, version or job.
    Foreign,
    /// A boad datagram of this job; the header is inside the packet at `HDR_OFF`.
    Ours,
}

/// Classifies the packet `[start, end)` (starting at its Ethernet header).
#[inline(always)]
fn parse(start: usize, end: usize, want: u32) -> Parsed {
    if start + PAYLOAD_OFF > end {
        return Parsed::NotOurs;
    }
    let proto: [u8; 2] = match load(start, end, 12) {
        Some(p) => p,
        None => return Parsed::NotOurs,
    };
    let vihl: u8 = load(start, end, IP_OFF).unwrap_or(0);
    let ipproto: u8 = load(start, end, IP_OFF + 9).unwrap_or(0);
    let frag: [u8; 2] = load(start, end, IP_OFF + 6).unwrap_or([0xff, 0xff]);
    if proto != ETH_P_IP_BE
        || vihl != 0x45
        || ipproto != IPPROTO_UDP
        || (frag[0] & 0x3f) != 0
        || frag[1] != 0
    {
        return Parsed::NotOurs;
    }
    let dport: [u8; 2] = load(start, end, UDP_DPORT_OFF).unwrap_or([0, 0]);
    let dport = u16::from_be_bytes(dport);
    let bits = match PORTS.get_ptr(dport) {
        // SAFETY: the pointer is to a u32 map value the kernel keeps alive for this program run.
        Some(p) => unsafe { *p },
        None => return Parsed::NotOurs,
    };
    if bits & want == 0 {
        return Parsed::NotOurs;
    }
    let job = match CONFIG.get(0) {
        Some(c) if c.job != 0 => c.job,
        _ => return Parsed::NotOurs,
    };
    let magic: u32 = load(start, end, HDR_OFF + offset_of!(Header, magic)).unwrap_or(0);
    let version: u8 = load(start, end, HDR_OFF + offset_of!(Header, version)).unwrap_or(0);
    let hjob: u64 = load(start, end, HDR_OFF + offset_of!(Header, job)).unwrap_or(0);
    if magic != MAGIC || version != VERSION || hjob != job {
        return Parsed::Foreign;
    }
    Parsed::Ours
}

#[inline(always)]
fn hdr<T: Copy + Default>(start: usize, end: usize, off: usize) -> T {
    load(start, end, HDR_OFF + off).unwrap_or_default()
}

/// Whether the packet `[start, end)` comes from the registered IPv4 address and UDP port of member
/// `src` of the communicator whose `n` members start at `base` in `MEMBERS` (as the header of a
/// datagram of rank `src` says). Member `i` of a communicator is its rank `i` (`boad::kernel`'s
/// `set_comm` stores them so), so this is one array lookup. Without it anyone holding the job key
/// could speak for a rank: set the rank's bit in a slot and make its real contribution a duplicate.
#[inline(always)]
fn from_member(start: usize, end: usize, base: u32, n: u32, src: u32) -> bool {
    if src >= n || src >= MAX_RANKS {
        return false;
    }
    let m = match MEMBERS.get(base.wrapping_add(src)) {
        Some(m) => *m,
        None => return false,
    };
    let (ip, sport): (u32, u16) = match (
        load(start, end, IP_SRC_OFF),
        load(start, end, UDP_SPORT_OFF),
    ) {
        (Some(ip), Some(p)) => (ip, p),
        _ => return false,
    };
    m.rank == src && m.ip_be == ip && m.port_be == sport
}

// ---------------------------------------------------------------------------------------------------
// XDP entry.

/// XDP entry: classify, tail-call the reduction program for a CONTRIB.
#[xdp]
pub fn boad_xdp(ctx: XdpContext) -> u32 {
    match try_boad_xdp(&ctx) {
        Ok(a) | Err(a) => a,
    }
}

#[inline(always)]
fn try_boad_xdp(ctx: &XdpContext) -> Result<u32, u32> {
    let (start, end) = (ctx.data(), ctx.data_end());
    match parse(start, end, port::REDUCE) {
        Parsed::NotOurs => return Ok(xdp_action::XDP_PASS),
        Parsed::Foreign => {
            bump(counter::FOREIGN, 1);
            return Ok(xdp_action::XDP_PASS);
        }
        Parsed::Ours => {}
    }
    let k: u8 = hdr(start, end, offset_of!(Header, kind));
    if k != kind::CONTRIB {
        return Ok(xdp_action::XDP_PASS);
    }
    let f: u8 = hdr(start, end, offset_of!(Header, flags));
    if f & flags::BYPASS != 0 {
        bump(counter::BYPASSED, 1);
        return Ok(xdp_action::XDP_PASS);
    }
    let o: u8 = hdr(start, end, offset_of!(Header, op));
    let d: u8 = hdr(start, end, offset_of!(Header, dtype));
    if o < op::COUNT && d < dtype::COUNT {
        // SAFETY: `ctx` is this program's context and PROGS a program array of XDP programs; on
        // success the call does not return, on failure (empty entry) execution continues below.
        unsafe { PROGS.tail_call(ctx, prog_index(o, d)) };
    }
    bump(counter::UNFOLDED, 1);
    Ok(xdp_action::XDP_PASS)
}

// ---------------------------------------------------------------------------------------------------
// Reduction programs.

/// An element type the kernel folds, and its ops (`OP` is an [`op`] code).
trait Elem: Copy {
    fn apply<const OP: u8>(a: Self, b: Self) -> Self;
}

macro_rules! int_elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            #[inline(always)]
            fn apply<const OP: u8>(a: Self, b: Self) -> Self {
                // Same definitions as boad::ops::fold (wrapping sum/prod, logical ops give 0 or 1).
                match OP {
                    op::SUM => a.wrapping_add(b),
                    op::PROD => a.wrapping_mul(b),
                    op::MIN => if b < a { b } else { a },
                    op::MAX => if b > a { b } else { a },
                    op::BAND => a & b,
                    op::BOR => a | b,
                    op::BXOR => a ^ b,
                    op::LAND => (a != 0 && b != 0) as $t,
                    op::LOR => (a != 0 || b != 0) as $t,
                    _ => a,
                }
            }
        }
    )*};
}
int_elem!(i8, i16, i32, i64, u8, u16, u32, u64);

macro_rules! float_elem {
    ($($name:ident($bits:ty, $inf:expr)),*) => {$(
        /// IEEE float as its bit pattern: the kernel has no floating point.
        #[derive(Clone, Copy)]
        #[repr(transparent)]
        struct $name($bits);

        impl Elem for $name {
            #[inline(always)]
            fn apply<const OP: u8>(a: Self, b: Self) -> Self {
                const SIGN: $bits = 1 << (<$bits>::BITS - 1);
                // Exponent all ones: the largest non-NaN magnitude is infinity.
                const INF: $bits = $inf;
                // Total-order key: compares as unsigned like f::total_cmp (-0.0 < +0.0).
                #[inline(always)]
                fn key(x: $bits) -> $bits {
                    if x & SIGN != 0 { !x } else { x | SIGN }
                }
                // NaN wins, the first one (a) if both are: exactly boad::ops::fold.
                if a.0 & !SIGN > INF {
                    return a;
                }
                if b.0 & !SIGN > INF {
                    return b;
                }
                match OP {
                    op::MIN => if key(b.0) < key(a.0) { b } else { a },
                    op::MAX => if key(b.0) > key(a.0) { b } else { a },
                    _ => a,
                }
            }
        }
    )*};
}
float_elem!(F32(u32, 0x7f80_0000), F64(u64, 0x7ff0_0000_0000_0000));

enum Outcome {
    Folded,
    Complete(u32),
    /// A resend to a complete slot, rewritten into a copy of the RESULT of this many contributions.
    Resent(u32),
    Duplicate,
    Unfolded,
    Mismatched,
}

/// Folds the CONTRIB in the packet into its slot with `T::apply::<OP>`; see [`Slot`].
#[inline(always)]
fn try_fold<T: Elem, const OP: u8>(ctx: &XdpContext) -> Result<u32, u32> {
    let (start, end) = (ctx.data(), ctx.data_end());
    match parse(start, end, port::REDUCE) {
        Parsed::Ours => {}
        _ => return Ok(xdp_action::XDP_PASS),
    }
    let k: u8 = hdr(start, end, offset_of!(Header, kind));
    if k != kind::CONTRIB {
        return Ok(xdp_action::XDP_PASS);
    }
    let src: u32 = hdr(start, end, offset_of!(Header, src));
    let job: u64 = hdr(start, end, offset_of!(Header, job));
    let comm: u32 = hdr(start, end, offset_of!(Header, comm));
    let seq: u32 = hdr(start, end, offset_of!(Header, seq));
    let chunk: u32 = hdr(start, end, offset_of!(Header, chunk));
    let len: u32 = hdr(start, end, offset_of!(Header, len));
    let coll: u8 = hdr(start, end, offset_of!(Header, coll));
    let o: u8 = hdr(start, end, offset_of!(Header, op));
    let d: u8 = hdr(start, end, offset_of!(Header, dtype));
    let root: u32 = hdr(start, end, offset_of!(Header, root));
    let elems: u64 = hdr(start, end, offset_of!(Header, count));
    let size = size_of::<T>();
    let lenu = len as usize;
    // The whole payload must be in the packet. Checked against a second (volatile) read of data_end:
    // against `end`, LLVM would drop the per-element checks of the fold loop that the verifier needs.
    // SAFETY: `ctx.ctx` is the program's xdp_md context, valid for reading.
    let end_v = unsafe { core::ptr::read_volatile(addr_of!((*ctx.ctx).data_end)) } as usize;
    let (contribs, nmembers, base) = match COMMS.get_ptr(comm) {
        // SAFETY: a pointer to a CommInfo map value the kernel keeps alive for this program run.
        Some(c) => unsafe { ((*c).contribs, (*c).nmembers, (*c).members_base) },
        None => (0, 0, 0),
    };
    if lenu == 0
        || lenu > MAX_PAYLOAD
        || !lenu.is_multiple_of(size)
        || start + PAYLOAD_OFF + lenu > end_v
        || contribs == 0
        || src >= MAX_RANKS
    {
        bump(counter::UNFOLDED, 1);
        return Ok(xdp_action::XDP_PASS);
    }
    // Before the slot is looked at: a datagram that is not from the address and port of the rank
    // it names passes untouched, for the socket's owner to judge (boad's transport checks the
    // source of every datagram against its peer table and drops it).
    if !from_member(start, end, base, nmembers, src) {
        bump(counter::WRONG_SOURCE, 1);
        return Ok(xdp_action::XDP_PASS);
    }
    let slot = match SLOTS.get_ptr_mut(slot_index(comm, seq, chunk)) {
        Some(s) => s,
        None => {
            bump(counter::UNFOLDED, 1);
            return Ok(xdp_action::XDP_PASS);
        }
    };
    let word = ((src / 64) as usize) & (SEEN_WORDS - 1);
    let bit = 1u64 << (src % 64);

    // SAFETY: `slot` points to a Slot in the SLOTS array, alive for the program run; every access
    // to its fields below happens between bpf_spin_lock and bpf_spin_unlock on its own lock, so no
    // other CPU touches them meanwhile. Packet accesses are bounds-checked against `end` one by one.
    // No helper is called and no early return happens while the lock is held.
    let outcome = unsafe {
        spin_lock(addr_of_mut!((*slot).lock));
        let s = &mut *slot;
        let same = s.job == job && s.comm == comm && s.seq == seq && s.chunk == chunk;
        let mut usable = same;
        if !same {
            let older = s.job == job && s.comm == comm && (seq.wrapping_sub(s.seq) as i32) > 0;
            if s.count == 0 || s.count >= s.expected || s.job != job || older {
                s.job = job;
                s.comm = comm;
                s.seq = seq;
                s.chunk = chunk;
                s.len = len;
                s.expected = contribs;
                s.coll = coll;
                s.op = o;
                s.dtype = d;
                s.root = root;
                s.elems = elems;
                s.count = 0;
                s.seen = [0; SEEN_WORDS];
                usable = true;
            }
        }
        let complete = s.count >= s.expected;
        let resend = s.seen[word] & bit != 0;
        let outcome = if !usable {
            Outcome::Unfolded
        } else if s.len != len
            || s.coll != coll
            || s.op != o
            || s.dtype != d
            || s.root != root
            || s.elems != elems
        {
            Outcome::Mismatched
        } else if resend && !complete {
            Outcome::Duplicate
        } else if !resend && complete {
            Outcome::Unfolded
        } else {
            // Either fold this contribution in, or (a resend to a complete slot) copy the fold
            // into the packet: one loop for both keeps the verifier's work per program down.
            let first = s.count == 0;
            if !resend {
                s.count += 1;
                s.seen[word] |= bit;
            }
            let emit = resend || s.count >= s.expected;
            let acc = s.data.as_mut_ptr() as *mut u8;
            for i in 0..MAX_PAYLOAD / size {
                let off = i * size;
                if off >= lenu {
                    break;
                }
                let p = start + PAYLOAD_OFF + off;
                if p + size > end {
                    break;
                }
                let b = core::ptr::read_unaligned(p as *const T);
                let a = acc.add(off) as *mut T;
                let r = if resend {
                    *a
                } else if first {
                    b
                } else {
                    T::apply::<OP>(*a, b)
                };
                *a = r;
                if emit {
                    core::ptr::write_unaligned(p as *mut T, r);
                }
            }
            if resend {
                Outcome::Resent(s.count)
            } else if emit {
                Outcome::Complete(s.count)
            } else {
                Outcome::Folded
            }
        };
        spin_unlock(addr_of_mut!((*slot).lock));
        outcome
    };

    match outcome {
        Outcome::Folded => {
            bump(counter::FOLDED, 1);
            bump(counter::DROPPED, 1);
            Ok(xdp_action::XDP_DROP)
        }
        Outcome::Complete(n) => {
            make_result(start, end, n);
            bump(counter::FOLDED, 1);
            bump(counter::PASSED, 1);
            Ok(xdp_action::XDP_PASS)
        }
        Outcome::Resent(n) => {
            make_result(start, end, n);
            bump(counter::RESULT_RESENT, 1);
            Ok(xdp_action::XDP_PASS)
        }
        Outcome::Duplicate => {
            bump(counter::DUPLICATES, 1);
            Ok(xdp_action::XDP_DROP)
        }
        Outcome::Unfolded => {
            bump(counter::UNFOLDED, 1);
            Ok(xdp_action::XDP_PASS)
        }
        Outcome::Mismatched => {
            bump(counter::MISMATCHED, 1);
            Ok(xdp_action::XDP_PASS)
        }
    }
}

/// Turns the CONTRIB in `[start, end)`, whose payload now holds the fold of `n` contributions, into
/// the RESULT: kind, `n` in `reserved`, and no UDP checksum (0 = none, valid for UDP over IPv4) since
/// the payload changed.
#[inline(always)]
fn make_result(start: usize, end: usize, n: u32) {
    let k = start + HDR_OFF + offset_of!(Header, kind);
    let r = start + HDR_OFF + offset_of!(Header, reserved);
    let c = start + UDP_CSUM_OFF;
    if r + 2 <= end && k < end && c + 2 <= end {
        // SAFETY: the three fields are inside the packet (checked just above).
        unsafe {
            *(k as *mut u8) = kind::RESULT;
            core::ptr::write_unaligned(r as *mut u16, n as u16);
            core::ptr::write_unaligned(c as *mut u16, 0);
        }
    }
}

macro_rules! fold_progs {
    ($($name:ident => $t:ty, $op:expr;)*) => {$(
        /// Reduction program (tail-called by `boad_xdp`).
        #[xdp]
        pub fn $name(ctx: XdpContext) -> u32 {
            match try_fold::<$t, { $op }>(&ctx) {
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
    fold_min_f32 => F32, op::MIN;
    fold_min_f64 => F64, op::MIN;
    fold_max_f32 => F32, op::MAX;
    fold_max_f64 => F64, op::MAX;
}

// ---------------------------------------------------------------------------------------------------
// TC egress broadcast.

/// TC egress: clone a BCAST datagram to every member of its communicator.
#[classifier]
pub fn boad_tc_bcast(ctx: TcContext) -> i32 {
    match try_bcast(&ctx) {
        Ok(a) | Err(a) => a,
    }
}

const CSUM_FLAGS: u64 = BPF_F_MARK_MANGLED_0 as u64;
const PSEUDO_FLAGS: u64 = (BPF_F_MARK_MANGLED_0 | BPF_F_PSEUDO_HDR) as u64;
/// TCX_NEXT: not ours, let the next program / the stack have it.
const NEXT: i32 = TC_ACT_UNSPEC;
/// TC_ACT_SHOT / TCX_DROP (the bindings type it `u32` or `i32` depending on the target arch cfg).
const DROP: i32 = 2;

#[inline(always)]
fn try_bcast(ctx: &TcContext) -> Result<i32, i32> {
    // SAFETY: `ctx.skb.skb` is the program's __sk_buff context, valid for reading its fields.
    let (mark, self_ifindex) = unsafe { ((*ctx.skb.skb).mark, (*ctx.skb.skb).ifindex) };
    if mark == BCAST_MARK {
        return Ok(NEXT);
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    match parse(start, end, port::BCAST) {
        Parsed::NotOurs => return Ok(NEXT),
        Parsed::Foreign => {
            bump(counter::FOREIGN, 1);
            return Ok(NEXT);
        }
        Parsed::Ours => {}
    }
    let k: u8 = hdr(start, end, offset_of!(Header, kind));
    let f: u8 = hdr(start, end, offset_of!(Header, flags));
    if k != kind::BCAST || f & flags::CLONED != 0 {
        return Ok(NEXT);
    }
    let comm: u32 = hdr(start, end, offset_of!(Header, comm));
    let sender: u32 = hdr(start, end, offset_of!(Header, src));
    let (n, base) = match COMMS.get_ptr(comm) {
        // SAFETY: a pointer to a CommInfo map value the kernel keeps alive for this program run.
        Some(c) => unsafe { ((*c).nmembers, (*c).members_base) },
        None => return Ok(NEXT),
    };
    // Only member `src` itself, from its own address and port, gets its BCAST cloned: anything
    // else holding the job key would otherwise reach every member with one datagram.
    if !from_member(start, end, base, n, sender) {
        bump(counter::WRONG_SOURCE, 1);
        return Ok(NEXT);
    }
    let src_ip: u32 = load(start, end, IP_SRC_OFF).unwrap_or(0);
    let orig_mac: [u8; 6] = load(start, end, 0).unwrap_or([0; 6]);
    let mut ip: u32 = load(start, end, IP_DST_OFF).unwrap_or(0);
    let mut port: u16 = load(start, end, UDP_DPORT_OFF).unwrap_or(0);
    let dst_off = HDR_OFF + offset_of!(Header, dst);
    let mut dst: u32 = load(start, end, dst_off).unwrap_or(0);
    // `dtype` and `flags` share a 16-bit word of the UDP checksum: replace the word.
    let fw_off = HDR_OFF + offset_of!(Header, dtype);
    let fw: u16 = load(start, end, fw_off).unwrap_or(0);
    let fw_new = fw | ((flags::CLONED as u16) << 8);
    ctx.l4_csum_replace(UDP_CSUM_OFF, fw as u64, fw_new as u64, CSUM_FLAGS | 2)
        .map_err(|_| DROP)?;
    ctx.store(fw_off, &fw_new, 0).map_err(|_| DROP)?;
    ctx.set_mark(BCAST_MARK);
    bump(counter::BCASTS, 1);

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
            bump(counter::CLONE_ERRORS, 1);
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
            bump(counter::CLONES, 1);
            if local {
                bump(counter::LOCAL_CLONES, 1);
            }
        } else {
            bump(counter::CLONE_ERRORS, 1);
        }
    }
    Ok(DROP)
}

// ---------------------------------------------------------------------------------------------------

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
