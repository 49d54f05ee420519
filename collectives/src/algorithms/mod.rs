//! Collective algorithms over a [`Transport`](crate::transport::Transport).
//!
//! Contract: an algorithm sees only the transport interface and the call's buffers; it sends and
//! receives whole messages tagged with its step, and returns the same result on every transport.
//! Ranks are renumbered relative to the root (`vrank = (rank - root) mod size`) so one tree shape
//! serves every root. `docs/algorithms.md` lists each algorithm's steps and bytes on the wire.

mod allgather_ring;
mod allreduce_recursive_doubling;
mod allreduce_reduce_bcast;
mod barrier_dissemination;
mod bcast_binomial;
mod flat;
mod hier_shm_net;
mod kernel_tc_xdp;
mod reduce_binomial;
mod shm_slots;
#[cfg(test)]
mod tests;

pub(crate) use allgather_ring::allgather_ring;
pub(crate) use allreduce_recursive_doubling::allreduce_recursive_doubling;
pub(crate) use allreduce_reduce_bcast::allreduce_reduce_bcast;
pub(crate) use barrier_dissemination::barrier_dissemination;
pub(crate) use bcast_binomial::bcast_binomial;
pub(crate) use flat::{
    allgather_flat, allreduce_flat, barrier_flat, bcast_flat, contribute_flat, reduce_flat,
};
pub(crate) use hier_shm_net::{
    allgather_hier, allreduce_hier, barrier_hier, bcast_hier, leave_hier, reduce_hier,
};
pub(crate) use kernel_tc_xdp::{
    allgather_tc, allreduce_xdp_tc, barrier_xdp_tc, bcast_tc, reduce_xdp,
};
pub(crate) use reduce_binomial::reduce_binomial;
pub(crate) use shm_slots::{
    allgather_slots, allreduce_slots, barrier_slots, bcast_slots, reduce_slots,
};

use crate::error::{Error, Result};
use crate::ops::par::fold_planned;
use crate::transport::{Ctx, Transport};
use crate::types::{DType, Op};

/// Folds `src` into `acc` with `op` over `dtype` on `rank` (on several threads for a large buffer
/// where the process's plan allows it: `ops::par`, the same bits); an error naming the call if the
/// pair cannot be folded (the communicator checks it first, so this is an internal error).
fn fold_into(
    rank: usize,
    ctx: &Ctx,
    dtype: DType,
    op: Op,
    acc: &mut [u8],
    src: &[u8],
) -> Result<()> {
    if fold_planned(dtype, op, acc, src) {
        return Ok(());
    }
    Err(Error::protocol(
        rank,
        ctx.describe(),
        format!("cannot fold {op} over {dtype}"),
    ))
}

/// Receives a message that must be exactly `len` bytes long, and hands it to `take` (which copies
/// or folds it into the caller's buffer: see [`Transport::recv_in_place`]).
fn recv_exact<T: Transport + ?Sized>(
    t: &mut T,
    ctx: &Ctx,
    src: usize,
    tag: u32,
    len: usize,
    mut take: impl FnMut(&mut [u8]) -> Result<()>,
) -> Result<()> {
    let rank = t.rank();
    t.recv_in_place(ctx, src, tag, &mut |data| {
        if data.len() != len {
            return Err(Error::protocol(
                rank,
                ctx.describe(),
                format!(
                    "rank {src} sent {} bytes where {len} were expected",
                    data.len()
                ),
            ));
        }
        take(data)
    })
}

/// What [`recv_exact`] does with a message that goes to `dst` as it is.
fn copy_to(dst: &mut [u8]) -> impl FnMut(&mut [u8]) -> Result<()> + '_ {
    move |data| {
        dst.copy_from_slice(data);
        Ok(())
    }
}
