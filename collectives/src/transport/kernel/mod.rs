//! The kernel path: a transport of its own over the UDP transport's socket and wire format
//! ([`KernelUdp`]: the [`Udp`] it runs on, and the kernel path's state [`Kern`]). Collectives that
//! do not fit it ([`kernel_fits`]) run on the UDP transport's reliable messages; the kernel path's
//! datagrams reach [`Kern`] through [`KernelSide`] whatever the rank waits for.
//!
//! The launcher attached the eBPF programs for this job, or registered it with the host's kernel
//! service (`KERNEL <trigger>` in the rendezvous table, and `KCOMMS` when the service gave the job
//! communicator ids of its own, which this transport puts in every datagram's `comm`):
//! - Reduction to a root: every other rank sends its buffer as `CONTRIB` datagrams of at most
//!   `kernel::MAX_PAYLOAD` bytes to the root's socket; XDP on the root's host folds them and passes
//!   one `RESULT` per chunk, which the root folds with its own buffer. A chunk whose `RESULT` does not
//!   come is asked for again with `KNACK` (contributors resend; the kernel re-emits a `RESULT` it
//!   already made); after two rounds the contributors resend with `flags::BYPASS`, the kernel lets
//!   the contributions through, and the root folds them in userspace. Contributors keep their last
//!   [`RETAIN`] contributions for that.
//! - Broadcast: the root sends each chunk once, as `BCAST` to the trigger port; TC clones it to every
//!   other rank. A receiver missing chunks sends `KNACK` (tag 1) and the root resends them to it
//!   directly. Roots keep their last [`RETAIN`] broadcasts (at most [`RETAIN_BYTES`]).
//! - Flow control: every [`CREDIT_EVERY`]th reduction the root ends with an empty broadcast its
//!   contributors wait for, so they never run further ahead than the kernel has slots.
//! - allreduce = reduce to rank 0 + broadcast from it; barrier = allreduce of one byte; allgather =
//!   every rank broadcasts its block.
//!
//! Which collectives take this path is decided from the call alone (size, op, dtype, job size), so
//! every rank of a correct program decides the same; see [`kernel_fits`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use boad_common::kernel::{MAX_PAYLOAD, MAX_RANKS};
use boad_common::{flags, kind, Header};

use std::ops::Range;

use boad_common::kernel::{KBCAST_MAX, KREDUCE_MAX};

use super::udp::reliable::Bits;
use super::udp::wire::{Admit, Datagram};
use super::udp::{KernelSide, Udp, PROBE_BASE, PROBE_MAX};
use super::{Ctx, KernelOps, Level, Service, Session, Stats, Transport};
use crate::error::{Error, Result};
use crate::ops::fold;
use crate::types::{Coll, DType, Op, Signature};
/// How many past collectives a rank can resend.
const RETAIN: usize = 256;
/// Most bytes of past broadcasts a root keeps.
const RETAIN_BYTES: usize = 64 << 20;
/// Every this many kernel reductions the root releases its contributors with an empty broadcast,
/// and they wait for it: flow control. Without it contributors of back-to-back reductions to one root
/// run up to [`RETAIN`] collectives ahead, past the kernel's slots (`NSLOTS / 64` collectives), and
/// every reduction then takes the KNACK timers. Must stay below `NSLOTS / 64`.
const CREDIT_EVERY: u64 = 16;
const _: () = assert!(CREDIT_EVERY < (boad_common::kernel::NSLOTS / 64) as u64);
/// KNACK rounds before contributors are asked to bypass the kernel.
const ROUNDS_BEFORE_BYPASS: u32 = 2;

/// Unfolded contributions to one chunk: sender -> (its call, payload).
type Unfolded = BTreeMap<usize, (Signature, Vec<u8>)>;

/// A broadcast being received.
struct BcastIn {
    sig: Signature,
    nchunks: u32,
    /// Its chunk size (see `wire::chunk_of`).
    stride: usize,
    got: Bits,
    n_got: u32,
    buf: Vec<u8>,
}

/// Kernel-path state of one rank.
#[derive(Default)]
pub(crate) struct Kern {
    /// Where BCAST datagrams go to be cloned.
    trigger: Option<SocketAddr>,
    /// Our last contributions: (seq, root, call, data).
    contribs: VecDeque<(u32, usize, Signature, Vec<u8>)>,
    /// Our last broadcasts: (seq, call, data, chunk size).
    bcasts: VecDeque<(u32, Signature, Vec<u8>, usize)>,
    /// RESULTs by (seq, chunk): (sender, its call, payload).
    results: HashMap<(u32, u32), (usize, Signature, Vec<u8>)>,
    /// Contributions that reached the socket unfolded, by (seq, chunk), then sender.
    raw: HashMap<(u32, u32), Unfolded>,
    /// Broadcasts being received, by (seq, root).
    incoming: HashMap<(u32, usize), BcastIn>,
    /// The current collective went through the kernel.
    used: bool,
    /// Kernel `reduce` calls this rank took part in (the same count on every rank: see [`CREDIT_EVERY`]).
    reductions: u64,
}

/// The wire codes a kernel datagram folds with (a barrier folds one byte with `bor`).
fn fold_codes(sig: &Signature) -> (DType, Op) {
    match (sig.dtype, sig.op) {
        (Some(d), Some(o)) => (d, o),
        _ => (DType::U8, Op::Bor),
    }
}

/// Whether a collective with call `sig` over `bytes` bytes per rank, among `size` ranks with the
/// kernel path attached, takes it. A function of the call and the job alone, so every rank
/// decides the same (the hierarchical path also asks it for its leaders' level on every rank).
pub(crate) fn kernel_fits(size: usize, sig: &Signature, bytes: usize) -> bool {
    if size < 2 || size > MAX_RANKS as usize {
        return false;
    }
    match sig.coll {
        Coll::Barrier => true,
        Coll::Bcast => bytes > 0 && bytes <= KBCAST_MAX,
        Coll::Allgather => {
            bytes > 0 && bytes.checked_mul(size - 1).is_some_and(|b| b <= KBCAST_MAX)
        }
        Coll::Reduce | Coll::Allreduce => {
            let (d, o) = fold_codes(sig);
            bytes > 0 && bytes <= KREDUCE_MAX && boad_common::kernel::folds(o as u8, d as u8)
        }
    }
}

/// The kernel path as a transport: the UDP transport it runs on (for the calls that do not fit the
/// kernel path, and for its socket), and the kernel path's state.
pub(crate) struct KernelUdp {
    udp: Udp,
    k: Kern,
}

impl KernelUdp {
    /// Turns the kernel path on over `udp`, as communicator `comm` of the programs' maps (`WORLD`
    /// for a job's flat transport, `LEADERS` for the hierarchical path's leaders; every datagram of
    /// this transport then carries it): BCAST datagrams go to `trigger` on a host other than ours
    /// when there is one (so they leave by the interface TC is on), else on our own address.
    pub fn new(mut udp: Udp, trigger: u16, comm: u32) -> KernelUdp {
        udp.set_comm(comm);
        let me = udp.peer_addr(udp.rank()).ip();
        let ip = (0..udp.size())
            .map(|r| udp.peer_addr(r).ip())
            .find(|ip| *ip != me)
            .unwrap_or(me);
        KernelUdp {
            udp,
            k: Kern {
                trigger: Some(SocketAddr::new(ip, trigger)),
                ..Kern::default()
            },
        }
    }

    /// Counts a kernel reduction; true when it is one that ends with the root's release (only
    /// `reduce` calls: allreduce and barrier end with the root's broadcast anyway).
    fn credit_due(&mut self, ctx: &Ctx) -> bool {
        if ctx.sig.coll != Coll::Reduce {
            return false;
        }
        self.k.reductions += 1;
        self.k.reductions.is_multiple_of(CREDIT_EVERY)
    }

    /// Checks a kernel datagram's call against ours.
    fn kcheck(
        &self,
        ctx: &Ctx,
        src: usize,
        theirs: &Signature,
        len: usize,
        want: usize,
    ) -> Result<()> {
        if *theirs != ctx.sig {
            return Err(self.mismatch(ctx, src, *theirs));
        }
        if len != want {
            return Err(self.kprotocol(
                ctx,
                format!("rank {src} sent a chunk of {len} bytes where {want} were expected"),
            ));
        }
        Ok(())
    }

    fn mismatch(&self, ctx: &Ctx, peer: usize, theirs: Signature) -> Error {
        Error::mismatch(self.udp.rank(), ctx.seq, peer, ctx.sig, theirs)
    }

    fn kprotocol(&self, ctx: &Ctx, what: String) -> Error {
        Error::protocol(self.udp.rank(), ctx.describe(), what)
    }

    /// The first contributor missing from some incomplete chunk's unfolded set (after bypass
    /// rounds this is who has not answered), else the first contributor.
    fn ksilent(&self, ctx: &Ctx, contributors: &[usize], n: u32, done: &Bits) -> usize {
        (0..n)
            .filter(|c| !done.get(*c))
            .flat_map(|c| {
                let have = self.k.raw.get(&(ctx.seq, c));
                contributors
                    .iter()
                    .copied()
                    .filter(move |r| !have.is_some_and(|m| m.contains_key(r)))
            })
            .min_by_key(|r| self.udp.heard_since(*r))
            .or_else(|| contributors.first().copied())
            .unwrap_or(0)
    }

    /// Aborts, mismatches a contributor reported, and (once contributions come unfolded) exits of
    /// ranks whose contribution is still missing.
    fn kcheck_peers(
        &mut self,
        ctx: &Ctx,
        contributors: &[usize],
        bypassing: bool,
        n: u32,
        done: &Bits,
    ) -> Result<()> {
        for &r in contributors {
            let exited = self.udp.exited(r);
            let missing = (0..n).filter(|c| !done.get(*c)).any(|c| {
                !self
                    .k
                    .raw
                    .get(&(ctx.seq, c))
                    .is_some_and(|m| m.contains_key(&r))
            });
            match exited {
                // An exited rank cannot answer: whatever it had to give is in or lost.
                Some(_) if missing && bypassing => {}
                Some(_) => continue,
                None => {}
            }
            if bypassing && missing {
                self.udp.check_status(ctx, r)?;
            } else if let Some(e) = self.udp.status_error(ctx, r) {
                return Err(e);
            }
        }
        if let Some((by, reason)) = self.udp.ledger().aborts.get(&ctx.seq) {
            return Err(Error::aborted(
                self.udp.rank(),
                ctx.seq,
                *by,
                reason.clone(),
            ));
        }
        Ok(())
    }

    /// Sends a KNACK for the chunks set in `missing` (the first 64 of them from the first).
    fn knack(
        &mut self,
        ctx: &Ctx,
        dst: usize,
        tag: u32,
        missing: &Bits,
        n: u32,
        extra: u8,
    ) -> Result<()> {
        let Some(first) = (0..n).find(|c| missing.get(*c)) else {
            return Ok(());
        };
        let mut map = 0u64;
        for i in 0..64 {
            if first + i < n && missing.get(first + i) {
                map |= 1 << i;
            }
        }
        let mut h = Kern::header(&self.udp, kind::KNACK, dst as u32, ctx);
        h.tag = tag;
        h.chunk = first;
        h.nchunks = n;
        h.flags |= extra;
        let addr = self.udp.peer_addr(dst);
        self.udp.stats_mut().kernel_knacks += 1;
        self.udp
            .send_datagram(h, &map.to_le_bytes(), addr)
            .map(|_| ())
    }
}

impl Kern {
    /// The header of a kernel-path datagram of `ctx`'s call to rank `dst`: the call's own codes (a
    /// reduction's op and dtype are what XDP folds with; a barrier's call is a one-byte `bor`).
    fn header(udp: &Udp, kind: u8, dst: u32, ctx: &Ctx) -> Header {
        let mut h = udp.header(kind, dst as usize, ctx.seq, &ctx.sig);
        h.dst = dst;
        h
    }

    /// Sends chunks `which` of `data` as `kind` datagrams to `to` (rank `dst`).
    #[allow(clippy::too_many_arguments)]
    fn send_chunks(
        udp: &mut Udp,
        ctx: &Ctx,
        kind: u8,
        dst: u32,
        to: SocketAddr,
        data: &[u8],
        chunk: usize,
        which: impl Iterator<Item = u32>,
        extra_flags: u8,
    ) -> Result<()> {
        let nchunks = data.len().div_ceil(chunk).max(1) as u32;
        for c in which.filter(|c| *c < nchunks) {
            let off = c as usize * chunk;
            let end = (off + chunk).min(data.len());
            let mut h = Kern::header(udp, kind, dst, ctx);
            h.chunk = c;
            h.nchunks = nchunks;
            h.total = data.len() as u32;
            h.flags |= extra_flags;
            udp.send_datagram(h, &data[off..end], to)?;
        }
        Ok(())
    }

    /// Handles a kernel-path datagram (`RESULT`, unfolded `CONTRIB`, `BCAST`, `KNACK`), accepted
    /// by `wire::classify` (chunks within the kernel path's limits; RESULTs and CONTRIBs within
    /// the window of collectives).
    fn on_kernel(&mut self, udp: &mut Udp, d: &Datagram, payload: Range<usize>) -> Result<()> {
        let (h, src, sig) = (&d.h, d.src, d.sig);
        if matches!(h.kind, kind::RESULT | kind::CONTRIB) {
            udp.stats_mut().kernel_datagrams_received += 1;
        }
        match h.kind {
            kind::RESULT => {
                let data = udp.copy_received(payload);
                self.results.insert((h.seq, h.chunk), (src, sig, data));
            }
            kind::CONTRIB => {
                let data = udp.copy_received(payload);
                self.raw
                    .entry((h.seq, h.chunk))
                    .or_default()
                    .insert(src, (sig, data));
            }
            kind::BCAST => self.on_bcast(udp, d, payload),
            kind::KNACK => return self.on_knack(udp, h),
            _ => udp.stats_mut().foreign += 1,
        }
        Ok(())
    }

    fn on_bcast(&mut self, udp: &mut Udp, d: &Datagram, payload: std::ops::Range<usize>) {
        let (h, src, sig) = (&d.h, d.src, d.sig);
        let Some(c) = d.chunk else {
            udp.stats_mut().foreign += 1;
            return;
        };
        let m = match self.incoming.entry((h.seq, src)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                match udp.admit(h.seq, &sig, c.total) {
                    // A broadcast on this path is at most KBCAST_MAX bytes (`wire::classify`):
                    // one running ahead of this rank is received whole.
                    Admit::Take | Admit::Early => e.insert(BcastIn {
                        sig,
                        nchunks: h.nchunks,
                        stride: c.stride,
                        got: Bits::new(h.nchunks),
                        n_got: 0,
                        buf: udp.take_buffer(c.total),
                    }),
                    Admit::Refuse => {
                        udp.stats_mut().foreign += 1;
                        return;
                    }
                    Admit::Mismatch => {
                        // The receiver reports it (`kbcast_recv`); the data is not needed.
                        udp.ledger_mut()
                            .mismatches
                            .entry(h.seq)
                            .or_insert((src, sig));
                        return;
                    }
                }
            }
        };
        if m.sig != sig || m.nchunks != h.nchunks || m.stride != c.stride || m.buf.len() != c.total
        {
            udp.stats_mut().foreign += 1;
            return;
        }
        if m.got.set(h.chunk) {
            m.buf[c.off..c.off + c.len].copy_from_slice(udp.received(payload));
            m.n_got += 1;
        }
    }

    fn on_knack(&mut self, udp: &mut Udp, h: &Header) -> Result<()> {
        let src = h.src as usize;
        let map = udp.bitmap(payload_range(h));
        let which: Vec<u32> = (0..64)
            .filter(|i| map & (1 << i) != 0)
            .filter_map(|i| h.chunk.checked_add(i))
            .collect();
        let ctx_of = |sig: Signature| Ctx { seq: h.seq, sig };
        if h.tag == 0 {
            let found = self
                .contribs
                .iter()
                .find(|(s, root, _, _)| *s == h.seq && *root == src);
            if let Some((_, _, sig, data)) = found.cloned() {
                let to = udp.peer_addr(src);
                let bypass = h.flags & flags::BYPASS;
                udp.stats_mut().retransmits += which.len() as u64;
                return Kern::send_chunks(
                    udp,
                    &ctx_of(sig),
                    kind::CONTRIB,
                    src as u32,
                    to,
                    &data,
                    MAX_PAYLOAD,
                    which.into_iter(),
                    bypass,
                );
            }
        } else {
            let found = self.bcasts.iter().find(|(s, _, _, _)| *s == h.seq);
            if let Some((_, sig, data, chunk)) = found.cloned() {
                let to = udp.peer_addr(src);
                udp.stats_mut().retransmits += which.len() as u64;
                return Kern::send_chunks(
                    udp,
                    &ctx_of(sig),
                    kind::BCAST,
                    src as u32,
                    to,
                    &data,
                    chunk,
                    which.into_iter(),
                    0,
                );
            }
        }
        // Nothing to resend (yet): say where we are, as for a PROBE.
        udp.send_status(src, h.seq)
    }

    /// Drops kernel-path leftovers of collectives before `seq`.
    fn drop_before(&mut self, seq: u32) {
        self.used = false;
        self.results.retain(|(s, _), _| *s >= seq);
        self.raw.retain(|(s, _), _| *s >= seq);
        self.incoming.retain(|(s, _), _| *s >= seq);
    }
}

impl KernelSide for Kern {
    fn on_datagram(&mut self, udp: &mut Udp, d: &Datagram, payload: Range<usize>) -> Result<()> {
        self.on_kernel(udp, d, payload)
    }

    fn begin(&mut self, seq: u32) {
        self.drop_before(seq);
    }
}

impl Session for KernelUdp {
    fn rank(&self) -> usize {
        self.udp.rank()
    }
    fn size(&self) -> usize {
        self.udp.size()
    }
    fn begin(&mut self, ctx: &Ctx) -> Result<()> {
        self.k.used = false;
        self.udp.begin_with(ctx, &mut self.k)
    }
    fn take_deferred(&mut self, seq: u32) -> Option<Error> {
        self.udp.take_deferred_with(seq, &mut self.k)
    }
    fn end(&mut self, _ctx: &Ctx) {
        self.udp.end_as(self.k.used);
    }
    fn fail(&mut self, ctx: &Ctx, err: &Error) {
        self.udp.fail(ctx, err);
    }
    fn flush(&mut self) -> Result<()> {
        self.udp.flush_with(&mut self.k)
    }
    fn stats(&self) -> Stats {
        self.udp.stats()
    }
    fn path(&self) -> crate::types::Path {
        if self.k.used {
            crate::types::Path::Kernel
        } else {
            crate::types::Path::Udp
        }
    }
    fn local_addr(&self) -> Option<SocketAddr> {
        self.udp.local_addr()
    }
}

impl Level for KernelUdp {
    fn service(&mut self) {
        self.udp.service_with(&mut self.k);
    }
    fn seen_aborts(&mut self) -> Vec<(u32, usize, String)> {
        self.udp.seen_aborts_with(&mut self.k)
    }
    fn set_idle_hook(&mut self, hook: Service) {
        self.udp.set_idle_hook(hook);
    }
    fn set_job_ranks(&mut self, ranks: Vec<usize>) {
        self.udp.set_job_ranks(ranks);
    }
    fn set_gather_blocks(&mut self, blocks: usize) {
        self.udp.set_gather_blocks(blocks);
    }
}

impl Transport for KernelUdp {
    fn send(&mut self, ctx: &Ctx, dst: usize, tag: u32, data: &[u8]) -> Result<()> {
        self.udp.send(ctx, dst, tag, data)
    }
    fn recv(&mut self, ctx: &Ctx, src: usize, tag: u32) -> Result<Vec<u8>> {
        self.udp.recv_with(ctx, src, tag, &mut self.k)
    }
    fn recv_in_place(
        &mut self,
        ctx: &Ctx,
        src: usize,
        tag: u32,
        take: &mut dyn FnMut(&mut [u8]) -> Result<()>,
    ) -> Result<()> {
        self.udp
            .recv_in_place_with(ctx, src, tag, &mut self.k, take)
    }
    fn kernel(&mut self) -> Option<&mut dyn KernelOps> {
        Some(self)
    }
}

impl KernelOps for KernelUdp {
    fn fits(&self, sig: &Signature, bytes: usize) -> bool {
        kernel_fits(self.udp.size(), sig, bytes)
    }

    /// A contributor: sends `data` for the reduction at `root` and keeps it to resend.
    fn contrib(&mut self, ctx: &Ctx, root: usize, data: &[u8]) -> Result<()> {
        self.k.used = true;
        let to = self.udp.peer_addr(root);
        let n = data.len().div_ceil(MAX_PAYLOAD).max(1) as u32;
        Kern::send_chunks(
            &mut self.udp,
            ctx,
            kind::CONTRIB,
            root as u32,
            to,
            data,
            MAX_PAYLOAD,
            0..n,
            0,
        )?;
        self.k
            .contribs
            .push_back((ctx.seq, root, ctx.sig, data.to_vec()));
        if self.k.contribs.len() > RETAIN {
            self.k.contribs.pop_front();
        }
        self.udp.stats_mut().kernel_contribs += u64::from(n);
        if self.credit_due(ctx) {
            self.bcast_recv(ctx, root, &mut [])?;
        }
        Ok(())
    }

    /// The root of a reduction: folds every other rank's contribution into `acc`.
    fn reduce_root(&mut self, ctx: &Ctx, acc: &mut [u8]) -> Result<()> {
        self.k.used = true;
        let (dtype, op) = fold_codes(&ctx.sig);
        let rank = self.udp.rank();
        let n = acc.len().div_ceil(MAX_PAYLOAD).max(1) as u32;
        let mut done = Bits::new(n);
        let mut n_done = 0;
        let mut round = 0u32;
        let mut every = PROBE_BASE;
        let mut next_knack = Instant::now() + every;
        let mut last_progress = Instant::now();
        let contributors: Vec<usize> = (0..self.udp.size()).filter(|&r| r != rank).collect();
        for &r in &contributors {
            self.udp.watch(r);
        }
        while n_done < n {
            let len = acc.len();
            for c in 0..n {
                if done.get(c) {
                    continue;
                }
                let off = c as usize * MAX_PAYLOAD;
                let part = &mut acc[off..(off + MAX_PAYLOAD).min(len)];
                let folded = if let Some((src, theirs, data)) = self.k.results.remove(&(ctx.seq, c))
                {
                    self.kcheck(ctx, src, &theirs, data.len(), part.len())?;
                    let folded = fold(dtype, op, part, &data);
                    self.udp.give_buffer(data);
                    folded
                } else if self
                    .k
                    .raw
                    .get(&(ctx.seq, c))
                    .is_some_and(|m| m.len() == contributors.len())
                {
                    let all = self.k.raw.remove(&(ctx.seq, c)).unwrap_or_default();
                    for (src, (theirs, data)) in &all {
                        self.kcheck(ctx, *src, theirs, data.len(), part.len())?;
                    }
                    let folded = all.values().all(|(_, data)| fold(dtype, op, part, data));
                    for (_, data) in all.into_values() {
                        self.udp.give_buffer(data);
                    }
                    folded
                } else {
                    // A contribution of another call reaches us unfolded: report it at once.
                    let bad = self.k.raw.get(&(ctx.seq, c)).and_then(|m| {
                        m.iter()
                            .find(|(_, (s, _))| *s != ctx.sig)
                            .map(|(src, (s, _))| (*src, *s))
                    });
                    if let Some((src, theirs)) = bad {
                        return Err(self.mismatch(ctx, src, theirs));
                    }
                    continue;
                };
                if !folded {
                    return Err(self.kprotocol(ctx, format!("cannot fold {op} over {dtype}")));
                }
                done.set(c);
                n_done += 1;
                last_progress = Instant::now();
            }
            if n_done == n {
                break;
            }
            self.kcheck_peers(ctx, &contributors, round > ROUNDS_BEFORE_BYPASS, n, &done)?;
            let now = Instant::now();
            if now - last_progress >= self.udp.timeout() / 4 {
                // No chunk completed for a while: the contributor most likely missing must be
                // alive (it answers PINGs), or past the timeout it is reported.
                let silent = self.ksilent(ctx, &contributors, n, &done);
                self.udp
                    .keep_waiting(Some(ctx), silent, now - last_progress)?;
            }
            if now >= next_knack {
                round += 1;
                let bypass = round > ROUNDS_BEFORE_BYPASS;
                if bypass {
                    self.udp.stats_mut().kernel_bypass_rounds += 1;
                }
                for &r in &contributors {
                    // In a bypass round, ask each rank only for the chunks it has not sent us raw.
                    let missing = Bits::from_fn(n, |c| {
                        let sent_raw = self
                            .k
                            .raw
                            .get(&(ctx.seq, c))
                            .is_some_and(|m| m.contains_key(&r));
                        !done.get(c) && (!bypass || !sent_raw)
                    });
                    self.knack(
                        ctx,
                        r,
                        0,
                        &missing,
                        n,
                        if bypass { flags::BYPASS } else { 0 },
                    )?;
                }
                every = (every * 2).min(PROBE_MAX);
                next_knack = now + every;
            }
            self.udp.wait_until(
                next_knack.min(self.udp.wake_for(last_progress)),
                &mut self.k,
            )?;
        }
        self.udp.stats_mut().kernel_results += u64::from(n);
        if self.credit_due(ctx) {
            self.bcast_send(ctx, &[])?;
        }
        Ok(())
    }

    /// A root: broadcasts `data` with one send per chunk, and keeps it to resend.
    fn bcast_send(&mut self, ctx: &Ctx, data: &[u8]) -> Result<()> {
        self.k.used = true;
        let Some(to) = self.k.trigger else {
            return Err(self.kprotocol(ctx, "the kernel path is not attached".into()));
        };
        let chunk = self.udp.chunk_bytes();
        let n = data.len().div_ceil(chunk).max(1) as u32;
        Kern::send_chunks(
            &mut self.udp,
            ctx,
            kind::BCAST,
            u32::MAX,
            to,
            data,
            chunk,
            0..n,
            0,
        )?;
        self.udp.stats_mut().kernel_bcast_sends += u64::from(n);
        self.k
            .bcasts
            .push_back((ctx.seq, ctx.sig, data.to_vec(), chunk));
        let mut bytes: usize = self.k.bcasts.iter().map(|b| b.2.len()).sum();
        while self.k.bcasts.len() > RETAIN || bytes > RETAIN_BYTES {
            match self.k.bcasts.pop_front() {
                Some(b) => bytes -= b.2.len(),
                None => break,
            }
        }
        Ok(())
    }

    /// A receiver: waits for `root`'s broadcast of collective `ctx.seq` into `buf`.
    fn bcast_recv(&mut self, ctx: &Ctx, root: usize, buf: &mut [u8]) -> Result<()> {
        self.k.used = true;
        self.udp.watch(root);
        let mut every = PROBE_BASE;
        let mut next_knack = Instant::now() + every;
        loop {
            if let Some(m) = self.k.incoming.get(&(ctx.seq, root)) {
                if m.sig != ctx.sig {
                    let theirs = m.sig;
                    return Err(self.mismatch(ctx, root, theirs));
                }
                if m.n_got == m.nchunks {
                    let m = self.k.incoming.remove(&(ctx.seq, root)).expect("present");
                    if m.buf.len() != buf.len() {
                        return Err(self.kprotocol(
                            ctx,
                            format!(
                                "rank {root} broadcast {} bytes where {} were expected",
                                m.buf.len(),
                                buf.len()
                            ),
                        ));
                    }
                    buf.copy_from_slice(&m.buf);
                    self.udp.give_buffer(m.buf);
                    self.udp.stats_mut().kernel_bcast_received += 1;
                    return Ok(());
                }
            }
            if let Some((peer, theirs)) = self.udp.ledger().mismatches.get(&ctx.seq) {
                return Err(self.mismatch(ctx, *peer, *theirs));
            }
            self.udp.check_status(ctx, root)?;
            let now = Instant::now();
            if now >= next_knack {
                let (n, missing) = match self.k.incoming.get(&(ctx.seq, root)) {
                    Some(m) => (m.nchunks, Bits::from_fn(m.nchunks, |c| !m.got.get(c))),
                    None => (64, Bits::from_fn(64, |_| true)),
                };
                self.knack(ctx, root, 1, &missing, n, 0)?;
                every = (every * 2).min(PROBE_MAX);
                next_knack = now + every;
            }
            let since = self.udp.heard_since(root);
            self.udp
                .wait_until(next_knack.min(self.udp.wake_for(since)), &mut self.k)?;
        }
    }
}

fn payload_range(h: &Header) -> std::ops::Range<usize> {
    boad_common::HEADER_LEN..boad_common::HEADER_LEN + h.len as usize
}
