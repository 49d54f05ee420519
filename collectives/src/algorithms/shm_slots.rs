//! Small collectives through the slots of shared memory ([`SlotOps`]): one step each. Every rank
//! that has data for the collective posts it once into its own slot; every rank that needs it
//! reads it from there (no forwarding through other ranks, so no rank waits for another to be
//! scheduled in between). Reductions fold the contributions in the order of the binomial reduce
//! (`reduce_binomial`; rooted at rank 0 for allreduce): every rank that folds gets the bits the
//! message algorithms would give, floats too.

use super::fold_into;
use crate::error::Result;
use crate::transport::{Ctx, SlotOps};
use crate::types::{DType, Op};

/// `buf` on `root` to every rank: the root posts it, the others copy it.
pub(crate) fn bcast_slots(
    s: &mut dyn SlotOps,
    ctx: &Ctx,
    buf: &mut [u8],
    rank: usize,
    root: usize,
) -> Result<()> {
    if rank == root {
        return s.post(ctx, buf);
    }
    let len = buf.len();
    s.read(ctx, root, len, &mut |d| {
        buf.copy_from_slice(d);
        Ok(())
    })
}

/// Folds every rank's contribution into `acc`, which holds this rank's own on entry, in the
/// order of the binomial reduce to `root` (`reduce_binomial`): the same bits as the message
/// algorithms give, floats too.
#[allow(clippy::too_many_arguments)]
fn fold_tree(
    s: &mut dyn SlotOps,
    ctx: &Ctx,
    acc: &mut [u8],
    dtype: DType,
    op: Op,
    rank: usize,
    size: usize,
    root: usize,
) -> Result<()> {
    let mine = acc.to_vec();
    let f = Fold {
        ctx,
        dtype,
        op,
        rank,
        size,
        root,
        mine: &mine,
    };
    f.partial(s, 0, acc)
}

/// One fold of [`fold_tree`].
struct Fold<'a> {
    ctx: &'a Ctx,
    dtype: DType,
    op: Op,
    rank: usize,
    size: usize,
    root: usize,
    /// This rank's contribution.
    mine: &'a [u8],
}

impl Fold<'_> {
    /// The partial result of the subtree of `vrank` (ranks renumbered from the root) into `out`:
    /// its own contribution, then its children's partials (vrank + 1, + 2, + 4, ... while its
    /// bit is clear), as `reduce_binomial` folds them.
    fn partial(&self, s: &mut dyn SlotOps, vrank: usize, out: &mut [u8]) -> Result<()> {
        let who = (vrank + self.root) % self.size;
        if who == self.rank {
            out.copy_from_slice(self.mine);
        } else {
            s.read(self.ctx, who, out.len(), &mut |d| {
                out.copy_from_slice(d);
                Ok(())
            })?;
        }
        let mut child_part = Vec::new();
        let mut mask = 1;
        while mask < self.size && vrank & mask == 0 {
            let child = vrank | mask;
            if child < self.size {
                child_part.resize(out.len(), 0);
                self.partial(s, child, &mut child_part)?;
                fold_into(self.rank, self.ctx, self.dtype, self.op, out, &child_part)?;
            }
            mask <<= 1;
        }
        Ok(())
    }
}

/// Every rank's `acc` folded into `acc` on `root`: the others post theirs, the root folds.
/// Elsewhere `acc` is left as it was.
#[allow(clippy::too_many_arguments)]
pub(crate) fn reduce_slots(
    s: &mut dyn SlotOps,
    ctx: &Ctx,
    acc: &mut [u8],
    dtype: DType,
    op: Op,
    rank: usize,
    size: usize,
    root: usize,
) -> Result<()> {
    if rank != root {
        return s.post(ctx, acc);
    }
    fold_tree(s, ctx, acc, dtype, op, rank, size, root)
}

/// Every rank's `buf` becomes the fold of all of them: every rank posts its own and folds all, in
/// the order of the reduce to rank 0 (so the bits of reduce + bcast and of recursive doubling).
pub(crate) fn allreduce_slots(
    s: &mut dyn SlotOps,
    ctx: &Ctx,
    buf: &mut [u8],
    dtype: DType,
    op: Op,
    rank: usize,
    size: usize,
) -> Result<()> {
    s.post(ctx, buf)?;
    fold_tree(s, ctx, buf, dtype, op, rank, size, 0)
}

/// Every rank's block (`recv[rank * block..]`) to every rank: each posts its own, copies the rest.
pub(crate) fn allgather_slots(
    s: &mut dyn SlotOps,
    ctx: &Ctx,
    recv: &mut [u8],
    block: usize,
    rank: usize,
    size: usize,
) -> Result<()> {
    s.post(ctx, &recv[rank * block..(rank + 1) * block])?;
    for src in (0..size).filter(|&r| r != rank) {
        let dst = &mut recv[src * block..(src + 1) * block];
        s.read(ctx, src, block, &mut |d| {
            dst.copy_from_slice(d);
            Ok(())
        })?;
    }
    Ok(())
}

/// Returns once every rank has entered: each posts an empty part and waits for everyone's.
pub(crate) fn barrier_slots(
    s: &mut dyn SlotOps,
    ctx: &Ctx,
    rank: usize,
    size: usize,
) -> Result<()> {
    s.post(ctx, &[])?;
    for src in (0..size).filter(|&r| r != rank) {
        s.read(ctx, src, 0, &mut |_| Ok(()))?;
    }
    Ok(())
}
