//! Reduce along a binomial tree: in round k a rank whose bit k is set sends its partial result to the
//! rank without that bit and stops; the others fold what they receive. ceil(log2 p) rounds.

use super::{fold_into, recv_exact};
use crate::error::Result;
use crate::transport::{Ctx, Transport};
use crate::types::{DType, Op};

/// Folds every rank's `acc` into `acc` on `root`. On other ranks `acc` is used as scratch and ends
/// holding a partial result.
pub(crate) fn reduce_binomial<T: Transport + ?Sized>(
    t: &mut T,
    ctx: &Ctx,
    acc: &mut [u8],
    dtype: DType,
    op: Op,
    root: usize,
    tag: u32,
) -> Result<()> {
    let (rank, size) = (t.rank(), t.size());
    let vrank = (rank + size - root) % size;
    let mut mask = 1;
    while mask < size {
        if vrank & mask == 0 {
            let child = vrank | mask;
            if child < size {
                let src = (child + root) % size;
                recv_exact(t, ctx, src, tag, acc.len(), |part| {
                    fold_into(rank, ctx, dtype, op, acc, part)
                })?;
            }
        } else {
            let parent = (vrank & !mask) % size;
            t.send(ctx, (parent + root) % size, tag, acc)?;
            break;
        }
        mask <<= 1;
    }
    Ok(())
}
