//! The choice between the kernel path, the slots of shared memory and the message algorithms on
//! one flat transport (all ranks of a job, or the host leaders of the hierarchical path): the
//! kernel path's algorithm (`kernel_tc_xdp`) when the transport has it attached and the call fits
//! it (a decision every rank makes the same, see `KernelOps::fits`), else the slots
//! (`shm_slots`) when the transport has them and the call fits them (`SlotOps::fits`, the same on
//! every rank too), else the message algorithm named in the function.

use super::{
    allgather_ring, allgather_slots, allgather_tc, allreduce_recursive_doubling,
    allreduce_reduce_bcast, allreduce_slots, allreduce_xdp_tc, barrier_dissemination,
    barrier_slots, barrier_xdp_tc, bcast_binomial, bcast_slots, bcast_tc, reduce_binomial,
    reduce_slots, reduce_xdp,
};
use crate::error::Result;
use crate::transport::{Ctx, KernelOps, SlotOps, Transport};
use crate::types::{DType, Op, Signature};

/// The kernel path of `t`, if it is attached and takes a call `sig` over `bytes` bytes per rank
/// (`KernelOps::fits`: a decision every rank makes the same).
fn kernel_for<'a>(
    t: &'a mut dyn Transport,
    sig: &Signature,
    bytes: usize,
) -> Option<&'a mut dyn KernelOps> {
    t.kernel().filter(|k| k.fits(sig, bytes))
}

/// The slots of `t`, if it has them and they take a call `sig` over `bytes` bytes per rank
/// (`SlotOps::fits`: a decision every rank makes the same).
fn slots_for<'a>(
    t: &'a mut dyn Transport,
    sig: &Signature,
    bytes: usize,
) -> Option<&'a mut dyn SlotOps> {
    t.slots().filter(|s| s.fits(sig, bytes))
}

/// `buf` on `root` to every rank: TC clones, else the slots, else a binomial tree.
pub(crate) fn bcast_flat(
    t: &mut dyn Transport,
    ctx: &Ctx,
    buf: &mut [u8],
    root: usize,
) -> Result<()> {
    let rank = t.rank();
    if let Some(k) = kernel_for(t, &ctx.sig, buf.len()) {
        return bcast_tc(k, ctx, buf, rank, root);
    }
    if let Some(s) = slots_for(t, &ctx.sig, buf.len()) {
        return bcast_slots(s, ctx, buf, rank, root);
    }
    bcast_binomial(t, ctx, buf, root)
}

/// Every rank's `acc` folded into `acc` on `root`: XDP folds, else the slots, else a binomial tree (whose
/// messages carry `tag`). Elsewhere `acc` is scratch: its contents are undefined afterwards.
pub(crate) fn reduce_flat(
    t: &mut dyn Transport,
    ctx: &Ctx,
    acc: &mut [u8],
    dtype: DType,
    op: Op,
    root: usize,
    tag: u32,
) -> Result<()> {
    let rank = t.rank();
    if let Some(k) = kernel_for(t, &ctx.sig, acc.len()) {
        return reduce_xdp(k, ctx, acc, rank, root);
    }
    let size = t.size();
    if let Some(s) = slots_for(t, &ctx.sig, acc.len()) {
        return reduce_slots(s, ctx, acc, dtype, op, rank, size, root);
    }
    reduce_binomial(t, ctx, acc, dtype, op, root, tag)
}

/// A rank's part of a reduce to another rank, `root`: on the kernel path `send` goes as it is (no
/// scratch copy), else the slots (`send` posted as it is), else [`reduce_flat`] over a copy.
pub(crate) fn contribute_flat(
    t: &mut dyn Transport,
    ctx: &Ctx,
    send: &[u8],
    dtype: DType,
    op: Op,
    root: usize,
) -> Result<()> {
    if let Some(k) = kernel_for(t, &ctx.sig, send.len()) {
        return k.contrib(ctx, root, send);
    }
    if let Some(s) = slots_for(t, &ctx.sig, send.len()) {
        return s.post(ctx, send);
    }
    reduce_binomial(t, ctx, &mut send.to_vec(), dtype, op, root, 0)
}

/// Largest allreduce (bytes per rank) that takes recursive doubling on more than 2 ranks: it sends
/// n per round for log2 p rounds, where reduce + bcast sends about 2n in all, so for large buffers
/// on many ranks its halved latency no longer pays for the bytes.
const RECURSIVE_DOUBLING_MAX: usize = 64 << 10;

/// Every rank's `buf` becomes the fold of all of them: XDP reduce + TC bcast, else the slots, else recursive
/// doubling on a power-of-two number of ranks (any size on 2 ranks, where it sends no more than
/// reduce + bcast; up to [`RECURSIVE_DOUBLING_MAX`] on more), else a binomial reduce and bcast.
pub(crate) fn allreduce_flat(
    t: &mut dyn Transport,
    ctx: &Ctx,
    buf: &mut [u8],
    dtype: DType,
    op: Op,
) -> Result<()> {
    let rank = t.rank();
    if let Some(k) = kernel_for(t, &ctx.sig, buf.len()) {
        return allreduce_xdp_tc(k, ctx, buf, rank);
    }
    let size = t.size();
    if let Some(s) = slots_for(t, &ctx.sig, buf.len()) {
        return allreduce_slots(s, ctx, buf, dtype, op, rank, size);
    }
    if size.is_power_of_two() && (size == 2 || buf.len() <= RECURSIVE_DOUBLING_MAX) {
        return allreduce_recursive_doubling(t, ctx, buf, dtype, op);
    }
    allreduce_reduce_bcast(t, ctx, buf, dtype, op)
}

/// Every rank's block (`recv[rank * block..]`, filled by the caller) to every rank: one TC
/// broadcast per rank, else the slots, else a ring.
pub(crate) fn allgather_flat(
    t: &mut dyn Transport,
    ctx: &Ctx,
    recv: &mut [u8],
    block: usize,
) -> Result<()> {
    let (rank, size) = (t.rank(), t.size());
    if let Some(k) = kernel_for(t, &ctx.sig, block) {
        return allgather_tc(k, ctx, recv, block, rank, size);
    }
    if let Some(s) = slots_for(t, &ctx.sig, block) {
        return allgather_slots(s, ctx, recv, block, rank, size);
    }
    allgather_ring(t, ctx, recv, block)
}

/// Returns once every rank has entered: a one-byte kernel allreduce, else the slots, else
/// dissemination.
pub(crate) fn barrier_flat(t: &mut dyn Transport, ctx: &Ctx) -> Result<()> {
    let (rank, size) = (t.rank(), t.size());
    if let Some(k) = kernel_for(t, &ctx.sig, 1) {
        return barrier_xdp_tc(k, ctx, rank);
    }
    if let Some(s) = slots_for(t, &ctx.sig, 0) {
        return barrier_slots(s, ctx, rank, size);
    }
    barrier_dissemination(t, ctx)
}
