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
    dtype, flags, fold,
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
/// (`count >= expected`), of the same communicator under another job key (a finished job's), or of
/// an older `seq` of the same communicator; never while another communicator's reduction in it is
/// incomplete (several jobs' communicators share the table when the kernel service serves them); otherwise
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

/// An element type the fold programs handle, and its arithmetic: `boad_common::fold`, the same
/// functions `boad::ops` folds with in userspace, so both paths give the same bits. `OP` (an [`op`]
/// code) is a constant, so each program's loop holds the one operation. Every (op, dtype) the
/// kernel path folds ([`boad_common::kernel::folds`]) goes through these, none has arithmetic of
/// its own: the verifier accepts all 76 programs so built.
pub trait Elem: Copy {
    /// `OP` applied to the fold so far, `acc`, and a contribution's element `b`.
    fn fold<const OP: u8>(acc: Self, b: Self) -> Self;
}

/// Integers: every op (wrapping sum and product, logical ops give 1 or 0).
impl<T: fold::Int> Elem for T {
    #[inline(always)]
    fn fold<const OP: u8>(acc: Self, b: Self) -> Self {
        fold::int(OP, acc, b)
    }
}

/// An IEEE float held as its bit pattern `B` (`u32` for `f32`, `u64` for `f64`): eBPF has no
/// floating point, so only min and max fold, on the bits.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Float<B>(B);

impl<B: fold::FloatBits> Elem for Float<B> {
    #[inline(always)]
    fn fold<const OP: u8>(acc: Self, b: Self) -> Self {
        Float(fold::float_bits(OP, acc.0, b.0))
    }
}

enum Outcome {
    Folded,
    Complete(u32),
    /// A resend to a complete slot, rewritten into a copy of the RESULT of this many contributions.
    Resent(u32),
    Duplicate,
    Unfolded,
    Mismatched,
}

/// Behind `fold_<op>_<dtype>`: folds the CONTRIB in the packet into its slot with
/// [`Elem::fold`]`::<OP>`; see [`Slot`].
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
            // An incomplete reduction of another communicator is never taken over: communicators
            // of other jobs served by the same programs (the kernel service) share this table. One
            // of the same communicator under another key is a finished job's leftover.
            let stale = s.comm == comm && s.job != job;
            if s.count == 0 || s.count >= s.expected || stale || older {
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
                    T::fold::<OP>(*a, b)
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
