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

/// Counters of one rank's traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams sent (all kinds).
    pub datagrams_sent: u64,
    /// Datagrams received and accepted (all kinds).
    pub datagrams_received: u64,
    /// Payload bytes sent in data datagrams.
    pub bytes_sent: u64,
    /// Send syscalls made.
    pub send_calls: u64,
    /// Data datagrams sent again after a loss.
    pub retransmits: u64,
    /// Datagrams dropped on purpose by `BOAD_DROP_RATE`.
    pub dropped_injected: u64,
    /// Datagrams ignored: wrong magic, version, job key, sender or size.
    pub foreign: u64,
    /// Collectives completed on the userspace UDP path.
    pub collectives_udp: u64,
}

/// What the algorithms need from a transport (see the module docs for the contract).
pub(crate) trait Transport {
    /// This rank.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Starts collective `ctx.seq`: reports an error another rank raised for it or for an earlier
    /// collective this rank already finished.
    fn begin(&mut self, ctx: &Ctx) -> Result<()>;
    /// Queues `data` for `dst`.
    fn send(&mut self, ctx: &Ctx, dst: usize, tag: u32, data: &[u8]) -> Result<()>;
    /// Waits for the message `src` sent for (`ctx.seq`, `tag`).
    fn recv(&mut self, ctx: &Ctx, src: usize, tag: u32) -> Result<Vec<u8>>;
    /// Marks collective `ctx.seq` done.
    fn end(&mut self, ctx: &Ctx);
    /// Tells the peers that this rank gave up `ctx.seq` because of `err`.
    fn fail(&mut self, ctx: &Ctx, err: &crate::Error);
    /// Waits until every queued message has been delivered.
    fn flush(&mut self) -> Result<()>;
    /// Traffic counters.
    fn stats(&self) -> Stats;
    /// The data path this transport is.
    fn path(&self) -> crate::Path;
    /// The address of this rank's socket, for transports that have one.
    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        None
    }
}
