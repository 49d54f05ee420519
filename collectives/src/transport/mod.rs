//! Transports: how the algorithms move bytes between ranks.
//!
//! Contract every transport meets (the algorithms rely on nothing else):
//! - `send(ctx, dst, tag, data)` queues a message and returns without waiting for `dst`; the message
//!   is delivered exactly once and whole, or the collective that needs it fails with an error naming
//!   the rank at fault. `data` may be empty.
//! - `recv(ctx, src, tag)` returns the message `src` sent for (`ctx.seq`, `tag`), whatever order
//!   messages arrived in, or an error: the peer's call differs from ours (`Mismatch`), it exited, it
//!   stayed silent past the timeout, or another rank aborted this collective. It never blocks forever.
//! - `fail(ctx, err)` tells every peer that this rank gave up collective `ctx.seq`, so ranks waiting
//!   for it fail at once instead of timing out.
//! - `flush()` returns once every queued message has been delivered (or its receiver is gone).
//! - Messages of collectives that were aborted are discarded; nothing from one job reaches another.
//! - An error another rank raises for a collective this rank already finished is kept and handed
//!   out once by `take_deferred`.

mod gone;
pub(crate) mod hier;
pub(crate) mod kernel;
mod launcher;
mod ledger;
#[cfg(test)]
pub(crate) mod mem;
pub(crate) mod pulse;
pub(crate) mod shm;
pub(crate) mod udp;

use crate::error::Result;
use crate::types::Signature;

/// Identifies one collective call on this rank.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx {
    /// Collective sequence number (the same on every rank for the same call).
    pub seq: u32,
    /// This rank's call.
    pub sig: Signature,
}

impl Ctx {
    /// `"allreduce #7"`, for error messages.
    pub fn describe(&self) -> String {
        format!("{} #{}", self.sig.coll.name(), self.seq)
    }
}

/// Declares [`Stats`] from one list of counters, with the list itself ([`Stats::NAMES`],
/// [`Stats::fields`]) for everything that shows them: `BOAD_STATS`, the C and Python bindings.
macro_rules! stats {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Counters of one rank's traffic (all zero where a path does not count them).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Stats {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl Stats {
            /// Every counter's name, in the order of [`Stats::fields`].
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name)),*];

            /// (name, value) of every counter.
            pub fn fields(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
                Self::NAMES.iter().copied().zip([$(self.$name),*])
            }
        }
    };
}

stats! {
    /// Datagrams sent (all kinds).
    datagrams_sent,
    /// Datagrams received and accepted (all kinds).
    datagrams_received,
    /// Payload bytes sent in data datagrams.
    bytes_sent,
    /// Send syscalls made.
    send_calls,
    /// Receive syscalls made on the UDP socket (each reads a batch of datagrams).
    recv_calls,
    /// Datagrams the local network refused to send (no route, a firewall, full queues): lost.
    send_failed,
    /// Data datagrams sent again after a loss.
    retransmits,
    /// Datagrams dropped on purpose by `BOAD_DROP_RATE`.
    dropped_injected,
    /// Datagrams ignored: too short, wrong magic, version or job key, from an address that is not
    /// the sender's, inconsistent sizes or chunk numbers, a message larger than its call needs, or
    /// for a collective outside the window this rank accepts (see `transport/wire.rs`).
    foreign,
    /// Collectives completed on the userspace UDP path.
    collectives_udp,
    /// Collectives completed on the kernel path (XDP folds, TC clones).
    collectives_kernel,
    /// CONTRIB datagrams this rank sent first (not resends).
    kernel_contribs,
    /// Chunks this rank received reduced (as a root of the kernel path).
    kernel_results,
    /// BCAST datagrams this rank sent to be cloned by TC (one send each, whatever the fan-out).
    kernel_bcast_sends,
    /// Broadcasts received whole through the kernel path.
    kernel_bcast_received,
    /// Reduction datagrams that reached this rank's socket (RESULTs, and contributions the kernel let
    /// through unfolded): one per chunk per reduction at a root when the kernel folds.
    kernel_datagrams_received,
    /// KNACKs sent (a chunk asked for again).
    kernel_knacks,
    /// KNACK rounds asking contributors to bypass the kernel (userspace fold).
    kernel_bypass_rounds,
    /// Collectives completed on the shared-memory path.
    collectives_shm,
    /// Messages written to shared-memory rings (to other ranks).
    shm_messages_sent,
    /// Messages read from shared-memory rings.
    shm_messages_received,
    /// Payload bytes of the messages written to shared-memory rings.
    shm_bytes_sent,
    /// Collectives this rank posted its part of into its slot in shared memory (small calls).
    shm_slot_posts,
    /// Times this rank slept on its futex waiting for a peer (shared-memory path).
    futex_waits,
    /// Collectives completed on the hierarchical path (shared memory inside hosts, UDP between
    /// their leaders; the other counters then count each level's part).
    collectives_hier,
    /// Folds split over the process's fold threads (`ops::par`: large buffers, where the host has
    /// cores to spare); 0 when every fold ran on the rank's own thread.
    folds_parallel,
}

/// What the kernel-path algorithms need (the UDP transport when the launcher attached the eBPF
/// programs). Contract: `fits` depends only on the call and the job, so every rank of a correct
/// program makes the same choice; the other methods meet the transport contract above.
pub(crate) trait KernelOps {
    /// Whether a call `sig` over `bytes` bytes per rank takes the kernel path.
    fn fits(&self, sig: &Signature, bytes: usize) -> bool;
    /// Sends this rank's contribution to the reduction at `root`.
    fn contrib(&mut self, ctx: &Ctx, root: usize, data: &[u8]) -> Result<()>;
    /// At the root: folds every other rank's contribution into `acc`.
    fn reduce_root(&mut self, ctx: &Ctx, acc: &mut [u8]) -> Result<()>;
    /// At a root: broadcasts `data` (one send per chunk).
    fn bcast_send(&mut self, ctx: &Ctx, data: &[u8]) -> Result<()>;
    /// Receives `root`'s broadcast into `buf`.
    fn bcast_recv(&mut self, ctx: &Ctx, root: usize, buf: &mut [u8]) -> Result<()>;
}

/// Collectives through one slot per rank in shared memory (the shm transport, see
/// `transport::shm`): a rank posts its data once into its own slot, and every rank that needs it
/// reads it from there. Contract: `fits` depends only on the call and the job, so every rank of a
/// correct program makes the same choice; `post` and `read` end like `recv` does (a peer's
/// different call is a `Mismatch`, aborts, exits and timeouts end a wait), and a rank reads a
/// peer's slot only for the collective it is in.
pub(crate) trait SlotOps {
    /// Whether a call `sig` over `bytes` bytes per rank goes through the slots.
    fn fits(&self, sig: &Signature, bytes: usize) -> bool;
    /// Publishes `data` as this rank's part of collective `ctx` (first waiting, if need be, until
    /// the readers of what its slot held before are done with it).
    fn post(&mut self, ctx: &Ctx, data: &[u8]) -> Result<()>;
    /// Waits for `src`'s part of collective `ctx`, which must be `len` bytes, and hands it to
    /// `take`.
    fn read(
        &mut self,
        ctx: &Ctx,
        src: usize,
        len: usize,
        take: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()>;
}

/// A data path collectives run on, as the communicator drives it: collective numbering, failures,
/// delivery at the end, counters. Every transport is one; so is the hierarchical path, which is
/// two transports (`Hier`), and which is not a [`Transport`]: it has no rank-to-rank messages.
pub(crate) trait Session: Send {
    /// This rank.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Starts collective `ctx.seq`: reports a mismatch already visible for it.
    fn begin(&mut self, ctx: &Ctx) -> Result<()>;
    /// An error not reported yet that another rank raised for a collective before `seq` which this
    /// rank finished (each such error is returned once).
    fn take_deferred(&mut self, seq: u32) -> Option<crate::error::Error> {
        let _ = seq;
        None
    }
    /// Marks collective `ctx.seq` done.
    fn end(&mut self, ctx: &Ctx);
    /// Tells the peers that this rank gave up `ctx.seq` because of `err`.
    fn fail(&mut self, ctx: &Ctx, err: &crate::error::Error);
    /// Waits until every queued message has been delivered.
    fn flush(&mut self) -> Result<()>;
    /// Traffic counters.
    fn stats(&self) -> Stats;
    /// The data path the last collective took.
    fn path(&self) -> crate::types::Path;
    /// The address of this rank's socket, for data paths that have one.
    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        None
    }
}

/// A transport one level of the hierarchical path runs on (`hier`): with what the other level needs
/// of it while it waits.
pub(crate) trait Level: Transport {
    /// Non-blocking progress for a rank waiting on another level: reads what arrived (answers
    /// probes, acknowledges data, bumps a heartbeat) and sends what it can.
    fn service(&mut self);
    /// The aborts peers posted for collectives this rank did not fail itself: (seq, peer, reason).
    fn seen_aborts(&mut self) -> Vec<(u32, usize, String)>;
    /// Sets what every round of a wait runs besides this transport's own work.
    fn set_idle_hook(&mut self, hook: Service);
    /// Sets the job rank of each rank of this transport, for the messages it prints.
    fn set_job_ranks(&mut self, ranks: Vec<usize>);
    /// Sets how many blocks the largest message of an allgather on this transport holds.
    fn set_gather_blocks(&mut self, blocks: usize);
}

/// What a level does for the other one while it waits (see [`Level::service`]). Called from inside
/// the other level's wait loops, never while this one is in use.
pub(crate) type Service = Box<dyn FnMut() + Send>;

/// What the algorithms need from a transport (see the module docs for the contract): a
/// [`Session`] with messages between its ranks.
pub(crate) trait Transport: Session {
    /// Queues `data` for `dst`.
    fn send(&mut self, ctx: &Ctx, dst: usize, tag: u32, data: &[u8]) -> Result<()>;
    /// Waits for the message `src` sent for (`ctx.seq`, `tag`).
    fn recv(&mut self, ctx: &Ctx, src: usize, tag: u32) -> Result<Vec<u8>>;
    /// [`recv`](Self::recv), handing the message's bytes to `take` (which copies or folds them into
    /// the caller's buffer) instead of returning them: a transport that assembles messages in
    /// buffers of its own takes the buffer back afterwards, so a message costs no allocation.
    fn recv_in_place(
        &mut self,
        ctx: &Ctx,
        src: usize,
        tag: u32,
        take: &mut dyn FnMut(&mut [u8]) -> Result<()>,
    ) -> Result<()> {
        let mut data = self.recv(ctx, src, tag)?;
        take(&mut data)
    }
    /// The kernel path, when attached.
    fn kernel(&mut self) -> Option<&mut dyn KernelOps> {
        None
    }
    /// The slots of shared memory, when the transport has them.
    fn slots(&mut self) -> Option<&mut dyn SlotOps> {
        None
    }
}
