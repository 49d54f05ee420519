//! Allgather around a ring: in step s every rank sends block (rank - s) to its right neighbour and
//! receives block (rank - s - 1) from its left one. p - 1 steps; each rank sends (p - 1) blocks.

use super::{copy_to, recv_exact};
use crate::error::Result;
use crate::transport::{Ctx, Transport};

/// `recv` holds `size` blocks of `block` bytes; block `rank` is this rank's contribution on entry,
/// and every block is filled on return.
pub(crate) fn allgather_ring<T: Transport + ?Sized>(
    t: &mut T,
    ctx: &Ctx,
    recv: &mut [u8],
    block: usize,
) -> Result<()> {
    let (rank, size) = (t.rank(), t.size());
    let right = (rank + 1) % size;
    let left = (rank + size - 1) % size;
    for step in 0..size.saturating_sub(1) {
        let out = (rank + size - step) % size;
        let inb = (rank + size - step - 1) % size;
        t.send(
            ctx,
            right,
            step as u32,
            &recv[out * block..(out + 1) * block],
        )?;
        let into = &mut recv[inb * block..(inb + 1) * block];
        recv_exact(t, ctx, left, step as u32, block, copy_to(into))?;
    }
    Ok(())
}
