//! Collectives on the kernel path (see `transport/kernel/` for the datagrams):
//!
//! | collective | steps | datagrams per chunk |
//! | --- | --- | --- |
//! | bcast | root: one send to the trigger port; TC clones it to the p − 1 others | root sends 1, each receiver gets 1 |
//! | reduce | non-roots send their chunk to the root; XDP folds p − 1 of them, passes 1 | each non-root sends 1, root receives 1 |
//! | allreduce | reduce to rank 0, then bcast from it | each rank sends 1 and receives 1 (rank 0: receives 1, sends 1) |
//! | barrier | allreduce of one byte | as allreduce |
//! | allgather | every rank broadcasts its block | each rank sends 1 and receives p − 1 |

use crate::error::Result;
use crate::transport::{Ctx, KernelOps};

/// `buf` on `root` to every rank.
pub(crate) fn bcast_tc(
    k: &mut dyn KernelOps,
    ctx: &Ctx,
    buf: &mut [u8],
    rank: usize,
    root: usize,
) -> Result<()> {
    if rank == root {
        k.bcast_send(ctx, buf)
    } else {
        k.bcast_recv(ctx, root, buf)
    }
}

/// Every rank's `acc` folded into `acc` on `root` (left unchanged elsewhere).
pub(crate) fn reduce_xdp(
    k: &mut dyn KernelOps,
    ctx: &Ctx,
    acc: &mut [u8],
    rank: usize,
    root: usize,
) -> Result<()> {
    if rank == root {
        k.reduce_root(ctx, acc)
    } else {
        k.contrib(ctx, root, acc)
    }
}

/// Every rank's `buf` becomes the fold of all of them.
pub(crate) fn allreduce_xdp_tc(
    k: &mut dyn KernelOps,
    ctx: &Ctx,
    buf: &mut [u8],
    rank: usize,
) -> Result<()> {
    reduce_xdp(k, ctx, buf, rank, 0)?;
    bcast_tc(k, ctx, buf, rank, 0)
}

/// Returns once every rank has entered.
pub(crate) fn barrier_xdp_tc(k: &mut dyn KernelOps, ctx: &Ctx, rank: usize) -> Result<()> {
    allreduce_xdp_tc(k, ctx, &mut [0u8], rank)
}

/// Block `rank` of `recv` (this rank's) to every rank, and every other block from its rank.
pub(crate) fn allgather_tc(
    k: &mut dyn KernelOps,
    ctx: &Ctx,
    recv: &mut [u8],
    block: usize,
    rank: usize,
    size: usize,
) -> Result<()> {
    k.bcast_send(ctx, &recv[rank * block..(rank + 1) * block])?;
    for r in (0..size).filter(|&r| r != rank) {
        k.bcast_recv(ctx, r, &mut recv[r * block..(r + 1) * block])?;
    }
    Ok(())
}
