//! Barrier by dissemination: in round k every rank signals rank + 2^k and waits for rank - 2^k.
//! ceil(log2 p) rounds of empty messages; nobody leaves before everybody arrived.

use crate::error::Result;
use crate::transport::{Ctx, Transport};

/// Returns once every rank has entered the barrier.
pub(crate) fn barrier_dissemination<T: Transport + ?Sized>(t: &mut T, ctx: &Ctx) -> Result<()> {
    let (rank, size) = (t.rank(), t.size());
    let mut dist = 1;
    let mut round = 0;
    while dist < size {
        t.send(ctx, (rank + dist) % size, round, &[])?;
        t.recv_in_place(ctx, (rank + size - dist) % size, round, &mut |_| Ok(()))?;
        dist <<= 1;
        round += 1;
    }
    Ok(())
}
