//! Allreduce as a binomial reduce to rank 0 followed by a binomial broadcast from it:
//! 2 ceil(log2 p) rounds, each rank sends and receives the buffer about twice.

use super::{bcast_binomial, reduce_binomial};
use crate::error::Result;
use crate::transport::{Ctx, Transport};
use crate::types::{DType, Op};

/// Every rank's `buf` becomes the reduction of all ranks' `buf`.
pub(crate) fn allreduce_reduce_bcast<T: Transport + ?Sized>(
    t: &mut T,
    ctx: &Ctx,
    buf: &mut [u8],
    dtype: DType,
    op: Op,
) -> Result<()> {
    reduce_binomial(t, ctx, buf, dtype, op, 0, 1)?;
    // bcast_binomial uses tag 0, distinct from the reduce's tag 1.
    bcast_binomial(t, ctx, buf, 0)
}
