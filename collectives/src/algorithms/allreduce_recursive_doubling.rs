//! Allreduce by recursive doubling, for a power-of-two number of ranks: in round k every rank
//! exchanges its partial result with rank XOR 2^k and folds the two, the lower ranks' part first.
//! Every rank thus folds in exactly the order of the binomial reduce to rank 0 (`reduce_binomial`):
//! all ranks end with the same bits, also for floats, and the same bits as reduce + bcast.
//! log2 p rounds (half of reduce + bcast's), each rank sends and receives the buffer once per round.

use super::{fold_into, recv_exact};
use crate::error::Result;
use crate::transport::{Ctx, Transport};
use crate::types::{DType, Op};

/// Every rank's `buf` becomes the reduction of all ranks' `buf`. The number of ranks must be a
/// power of two.
pub(crate) fn allreduce_recursive_doubling<T: Transport + ?Sized>(
    t: &mut T,
    ctx: &Ctx,
    buf: &mut [u8],
    dtype: DType,
    op: Op,
) -> Result<()> {
    let (rank, size) = (t.rank(), t.size());
    let mut mask = 1;
    let mut round = 0;
    while mask < size {
        let peer = rank ^ mask;
        t.send(ctx, peer, round, buf)?;
        recv_exact(t, ctx, peer, round, buf.len(), |theirs| {
            if peer > rank {
                fold_into(rank, ctx, dtype, op, buf, theirs)
            } else {
                // The peer holds the lower ranks' part: it goes first.
                fold_into(rank, ctx, dtype, op, theirs, buf)?;
                buf.copy_from_slice(theirs);
                Ok(())
            }
        })?;
        mask <<= 1;
        round += 1;
    }
    Ok(())
}
