//! The XDP reduction: [`try_dispatch`] (behind `boad_xdp`) picks the fold program of a CONTRIB,
//! [`try_fold`] (behind each `fold_<op>_<dtype>`) folds it into its [`Slot`] and turns the
//! contribution that completes the reduction into the RESULT.

use core::mem::{offset_of, size_of};
use core::ptr::{addr_of, addr_of_mut};

use aya_ebpf::{
    bindings::{bpf_spin_lock, xdp_action},
    helpers::{bpf_spin_lock as spin_lock, bpf_spin_unlock as spin_unlock},
    programs::XdpContext,
};
use boad_common::{
    dtype, flags,
    kernel::{counter, port, slot_index, MAX_PAYLOAD, MAX_RANKS},
    kind, op, prog_index, Header,
};

use crate::maps::{increment, COMMS, PROGS, SLOTS};
use crate::parse::{
    classify, from_member, header_field, Datagram, HDR_OFF, PAYLOAD_OFF, UDP_CSUM_OFF,
};

/// Words of a slot's contributor bitmap.
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

/// Behind `boad_xdp`: classifies the packet and tail-calls the fold program of a CONTRIB (counter
/// `UNFOLDED` when there is none); anything else passes.
#[inline(always)]
pub fn try_dispatch(ctx: &XdpContext) -> Result<u32, u32> {
    let (start, end) = (ctx.data(), ctx.data_end());
    match classify(start, end, port::REDUCE) {
        Datagram::NotOurs => return Ok(xdp_action::XDP_PASS),
        Datagram::Foreign => {
            increment(counter::FOREIGN);
            return Ok(xdp_action::XDP_PASS);
        }
        Datagram::Ours => {}
    }
    let k: u8 = header_field(start, end, offset_of!(Header, kind));
    if k != kind::CONTRIB {
        return Ok(xdp_action::XDP_PASS);
    }
    let f: u8 = header_field(start, end, offset_of!(Header, flags));
    if f & flags::BYPASS != 0 {
        increment(counter::BYPASSED);
        return Ok(xdp_action::XDP_PASS);
    }
    let o: u8 = header_field(start, end, offset_of!(Header, op));
    let d: u8 = header_field(start, end, offset_of!(Header, dtype));
    if o < op::COUNT && d < dtype::COUNT {
        // SAFETY: `ctx` is this program's context and PROGS a program array of XDP programs; on
        // success the call does not return, on failure (empty entry) execution continues below.
        unsafe { PROGS.tail_call(ctx, prog_index(o, d)) };
    }
    increment(counter::UNFOLDED);
    Ok(xdp_action::XDP_PASS)
}

/// An element type the kernel folds, and its ops (`OP` is an [`op`] code).
pub trait Elem: Copy {
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
        pub struct $name($bits);

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
pub fn try_fold<T: Elem, const OP: u8>(ctx: &XdpContext) -> Result<u32, u32> {
    let (start, end) = (ctx.data(), ctx.data_end());
    match classify(start, end, port::REDUCE) {
        Datagram::Ours => {}
        _ => return Ok(xdp_action::XDP_PASS),
    }
    let k: u8 = header_field(start, end, offset_of!(Header, kind));
    if k != kind::CONTRIB {
        return Ok(xdp_action::XDP_PASS);
    }
    let src: u32 = header_field(start, end, offset_of!(Header, src));
    let job: u64 = header_field(start, end, offset_of!(Header, job));
    let comm: u32 = header_field(start, end, offset_of!(Header, comm));
    let seq: u32 = header_field(start, end, offset_of!(Header, seq));
    let chunk: u32 = header_field(start, end, offset_of!(Header, chunk));
    let len: u32 = header_field(start, end, offset_of!(Header, len));
    let coll: u8 = header_field(start, end, offset_of!(Header, coll));
    let o: u8 = header_field(start, end, offset_of!(Header, op));
    let d: u8 = header_field(start, end, offset_of!(Header, dtype));
    let root: u32 = header_field(start, end, offset_of!(Header, root));
    let elems: u64 = header_field(start, end, offset_of!(Header, count));
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
        increment(counter::UNFOLDED);
        return Ok(xdp_action::XDP_PASS);
    }
    // Before the slot is looked at: a datagram that is not from the address and port of the rank
    // it names passes untouched, for the socket's owner to judge (boad's transport checks the
    // source of every datagram against its peer table and drops it).
    if !from_member(start, end, base, nmembers, src) {
        increment(counter::WRONG_SOURCE);
        return Ok(xdp_action::XDP_PASS);
    }
    let slot = match SLOTS.get_ptr_mut(slot_index(comm, seq, chunk)) {
        Some(s) => s,
        None => {
            increment(counter::UNFOLDED);
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
            increment(counter::FOLDED);
            increment(counter::DROPPED);
            Ok(xdp_action::XDP_DROP)
        }
        Outcome::Complete(n) => {
            rewrite_into_result(start, end, n);
            increment(counter::FOLDED);
            increment(counter::PASSED);
            Ok(xdp_action::XDP_PASS)
        }
        Outcome::Resent(n) => {
            rewrite_into_result(start, end, n);
            increment(counter::RESULT_RESENT);
            Ok(xdp_action::XDP_PASS)
        }
        Outcome::Duplicate => {
            increment(counter::DUPLICATES);
            Ok(xdp_action::XDP_DROP)
        }
        Outcome::Unfolded => {
            increment(counter::UNFOLDED);
            Ok(xdp_action::XDP_PASS)
        }
        Outcome::Mismatched => {
            increment(counter::MISMATCHED);
            Ok(xdp_action::XDP_PASS)
        }
    }
}

/// Turns the CONTRIB in `[start, end)`, whose payload now holds the fold of `n` contributions, into
/// the RESULT: kind, `n` in `reserved`, and no UDP checksum (0 = none, valid for UDP over IPv4) since
/// the payload changed.
#[inline(always)]
fn rewrite_into_result(start: usize, end: usize, n: u32) {
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
