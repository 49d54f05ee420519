//! Hierarchical collectives (`transport/hier.rs`): each is the flat algorithms run on two levels, the
//! ranks of a host over shared memory (local ranks, leader = local rank 0) and the host leaders over
//! UDP (leader rank = host index). `k` = ranks on this host, `H` = hosts, `K` = most ranks on a host.
//!
//! | collective | phases |
//! | --- | --- |
//! | bcast(root) | root → its leader (one shm message, if the root is not the leader); binomial bcast among leaders from the root's host; binomial bcast on every host from its leader (a root that is not the leader only forwards: it is not sent the data back) |
//! | reduce(root) | binomial reduce on every host to its leader; binomial reduce among leaders to the root's host; leader → root (one shm message, if the root is not the leader) |
//! | allreduce | binomial reduce on every host to its leader; reduce + bcast among leaders; binomial bcast on every host |
//! | allgather | every rank's block to its leader (k − 1 shm messages); ring allgather among leaders of slabs of K blocks (a host with fewer ranks pads its slab); the leader puts the blocks in rank order; binomial bcast of the whole result on every host |
//! | barrier | empty binomial reduce on every host; dissemination barrier among leaders; empty binomial bcast on every host |
//!
//! Tags: on shared memory a binomial bcast uses tag 0, a binomial reduce [`TAG_REDUCE`] and the
//! messages between a root and its leader (and the allgather's blocks) [`TAG_P2P`], so the phases
//! of one collective never take each other's messages.
//!
//! Between phases a leader relays aborts of earlier collectives from one level to the other
//! ([`Hier::relay_aborts`]).

use super::{
    allgather_flat, allreduce_flat, barrier_dissemination, barrier_flat, bcast_binomial,
    bcast_flat, copy_to, recv_exact, reduce_binomial, reduce_flat,
};
use crate::error::Result;
use crate::transport::hier::Hier;
use crate::transport::{Ctx, Session, Transport};
use crate::types::{DType, Op};

/// Tag of a binomial reduce inside a host.
const TAG_REDUCE: u32 = 1;
/// Tag of one message between a root and its leader, and of a block sent to the leader.
const TAG_P2P: u32 = 2;

/// `buf` on `root` to every rank.
pub(crate) fn bcast_hier(h: &mut Hier, ctx: &Ctx, buf: &mut [u8], root: usize) -> Result<()> {
    let (root_host, root_local) = h.layout().place[root];
    let (host, me) = h.place();
    if host == root_host && root_local != 0 {
        if me == root_local {
            h.local(|t| t.send(ctx, 0, TAG_P2P, buf))?;
        } else if me == 0 {
            let len = buf.len();
            h.local(|t| recv_exact(t, ctx, root_local, TAG_P2P, len, copy_to(buf)))?;
        }
    }
    if me == 0 {
        h.relay_aborts(ctx.seq);
        h.net(|t| bcast_flat(t, ctx, buf, root_host))?;
        h.relay_aborts(ctx.seq);
    }
    // A root that is not its host's leader has the data already: it only forwards.
    let has = (host == root_host && root_local != 0).then_some(root_local);
    h.local(|t| bcast_from_leader(t, ctx, buf, has))
}

/// Binomial broadcast from local rank 0 (as [`bcast_binomial`] with root 0), in which local rank
/// `has` already holds the data: it forwards it without receiving, and its parent skips it.
fn bcast_from_leader(
    t: &mut dyn Transport,
    ctx: &Ctx,
    buf: &mut [u8],
    has: Option<usize>,
) -> Result<()> {
    let (rank, size) = (t.rank(), t.size());
    let mut mask = 1;
    while mask < size {
        if rank & mask != 0 {
            if has != Some(rank) {
                recv_exact(t, ctx, rank - mask, 0, buf.len(), copy_to(buf))?;
            }
            break;
        }
        mask <<= 1;
    }
    mask >>= 1;
    while mask > 0 {
        let child = rank + mask;
        if child < size && has != Some(child) {
            t.send(ctx, child, 0, buf)?;
        }
        mask >>= 1;
    }
    Ok(())
}

/// Every rank's `acc` folded into `acc` on `root`; elsewhere `acc` is scratch.
pub(crate) fn reduce_hier(
    h: &mut Hier,
    ctx: &Ctx,
    acc: &mut [u8],
    dtype: DType,
    op: Op,
    root: usize,
) -> Result<()> {
    let (root_host, root_local) = h.layout().place[root];
    let (host, me) = h.place();
    h.local(|t| reduce_binomial(t, ctx, acc, dtype, op, 0, TAG_REDUCE))?;
    if me == 0 {
        h.relay_aborts(ctx.seq);
        h.net(|t| reduce_flat(t, ctx, acc, dtype, op, root_host, TAG_REDUCE))?;
    }
    if host == root_host && root_local != 0 {
        if me == 0 {
            h.local(|t| t.send(ctx, root_local, TAG_P2P, acc))?;
        } else if me == root_local {
            let len = acc.len();
            h.local(|t| recv_exact(t, ctx, 0, TAG_P2P, len, copy_to(acc)))?;
        }
    }
    Ok(())
}

/// Every rank's `buf` becomes the fold of all of them.
pub(crate) fn allreduce_hier(
    h: &mut Hier,
    ctx: &Ctx,
    buf: &mut [u8],
    dtype: DType,
    op: Op,
) -> Result<()> {
    let (_, me) = h.place();
    h.local(|t| reduce_binomial(t, ctx, buf, dtype, op, 0, TAG_REDUCE))?;
    if me == 0 {
        h.relay_aborts(ctx.seq);
        h.net(|t| allreduce_flat(t, ctx, buf, dtype, op))?;
        h.relay_aborts(ctx.seq);
    }
    h.local(|t| bcast_binomial(t, ctx, buf, 0))
}

/// `recv` holds one block of `block` bytes per rank, this rank's filled on entry; all on return.
pub(crate) fn allgather_hier(h: &mut Hier, ctx: &Ctx, recv: &mut [u8], block: usize) -> Result<()> {
    let rank = h.rank();
    let (host, me) = h.place();
    let mine = rank * block..(rank + 1) * block;
    if me != 0 {
        h.local(|t| t.send(ctx, 0, TAG_P2P, &recv[mine]))?;
    } else {
        let hosts = h.layout().hosts.clone();
        let slab = h.layout().max_local() * block;
        // Slab g holds host g's blocks in local rank order, padded to K blocks.
        let mut all = vec![0u8; hosts.len() * slab];
        let at = |g: usize, i: usize| g * slab + i * block..g * slab + (i + 1) * block;
        all[at(host, 0)].copy_from_slice(&recv[mine]);
        for i in 1..hosts[host].len() {
            let into = &mut all[at(host, i)];
            h.local(|t| recv_exact(t, ctx, i, TAG_P2P, block, copy_to(into)))?;
        }
        h.relay_aborts(ctx.seq);
        h.net(|t| allgather_flat(t, ctx, &mut all, slab))?;
        h.relay_aborts(ctx.seq);
        for (g, ranks) in hosts.iter().enumerate() {
            for (i, &r) in ranks.iter().enumerate() {
                recv[r * block..(r + 1) * block].copy_from_slice(&all[at(g, i)]);
            }
        }
    }
    h.local(|t| bcast_binomial(t, ctx, recv, 0))
}

/// Returns once every rank has entered.
pub(crate) fn barrier_hier(h: &mut Hier, ctx: &Ctx) -> Result<()> {
    barrier_hier_with(h, ctx, barrier_flat)
}

/// A barrier whose messages between leaders are all acknowledged (never the kernel path's), run by
/// `finalize` when the leaders use the kernel path: no leader leaves while another may still ask it
/// to resend a contribution or a broadcast.
pub(crate) fn leave_hier(h: &mut Hier, ctx: &Ctx) -> Result<()> {
    barrier_hier_with(h, ctx, |t, ctx| barrier_dissemination(t, ctx))
}

/// A barrier with `net` among the leaders.
fn barrier_hier_with(
    h: &mut Hier,
    ctx: &Ctx,
    net: fn(&mut dyn Transport, &Ctx) -> Result<()>,
) -> Result<()> {
    let (_, me) = h.place();
    // Empty messages up the host's tree: the leader knows its host has arrived.
    h.local(|t| reduce_binomial(t, ctx, &mut [], DType::U8, Op::Bor, 0, TAG_REDUCE))?;
    if me == 0 {
        h.relay_aborts(ctx.seq);
        h.net(|t| net(t, ctx))?;
        h.relay_aborts(ctx.seq);
    }
    h.local(|t| bcast_binomial(t, ctx, &mut [], 0))
}
