//! Broadcast along a binomial tree: ceil(log2 p) rounds; each non-root receives the whole buffer
//! once, and forwards it to up to log2 p children.

use super::{copy_to, recv_exact};
use crate::error::Result;
use crate::transport::{Ctx, Transport};

/// `buf` on `root` is copied into `buf` on every rank.
pub(crate) fn bcast_binomial<T: Transport + ?Sized>(
    t: &mut T,
    ctx: &Ctx,
    buf: &mut [u8],
    root: usize,
) -> Result<()> {
    let (rank, size) = (t.rank(), t.size());
    let vrank = (rank + size - root) % size;
    let mut mask = 1;
    while mask < size {
        if vrank & mask != 0 {
            let parent = (vrank - mask + root) % size;
            recv_exact(t, ctx, parent, 0, buf.len(), copy_to(buf))?;
            break;
        }
        mask <<= 1;
    }
    mask >>= 1;
    while mask > 0 {
        if vrank + mask < size {
            t.send(ctx, (vrank + mask + root) % size, 0, buf)?;
        }
        mask >>= 1;
    }
    Ok(())
}
