//! Slots: small collectives through one slot per rank (see "Slots" in the docs of
//! `transport::shm`). A rank posts its part of a collective into its own slot once; every rank
//! that needs it copies it from there. The waits here are the transport's waits: they keep moving
//! ring data, and end with the same errors as `recv`.

use std::time::Instant;

use super::segment::{SLOTS, SLOT_BYTES};
use super::{sig_from_words, sig_words, Shm};
use crate::error::{Error, Result};
use crate::transport::{Ctx, SlotOps};
use crate::types::Signature;

/// What a wait on the slots waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SlotWait {
    /// `src`'s slot to hold collective `seq`.
    Posted { src: usize, seq: u32 },
    /// Every other rank to have started a collective after `seq` (so that none reads this rank's
    /// slot of `seq` any more).
    Left { seq: u32 },
}

/// Polls of the awaited word per round of a slot wait (a round also reads the rings, the peers'
/// aborts, and may yield or sleep).
const SLOT_POLLS: u32 = 16;

/// Whether collective `cur` comes after `seq` (in the window of 2^31 collectives).
fn after(cur: u32, seq: u32) -> bool {
    let d = cur.wrapping_sub(seq);
    d != 0 && d < 1 << 31
}

impl Shm {
    /// Whether what `w` waits for has happened.
    pub(super) fn slot_ready(&self, w: SlotWait) -> bool {
        match w {
            SlotWait::Posted { src, seq } => self.seg.slot_peek(src, seq).is_some(),
            SlotWait::Left { seq } => self.slot_lagging(seq).is_none(),
        }
    }

    /// A rank other than this one that has not started a collective after `seq`.
    fn slot_lagging(&self, seq: u32) -> Option<usize> {
        (0..self.size)
            .find(|&r| r != self.rank && !self.seg.current(r).is_some_and(|c| after(c, seq)))
    }

    /// Waits until `w` has happened.
    fn slot_wait(&mut self, ctx: &Ctx, w: SlotWait) -> Result<()> {
        if self.slot_ready(w) {
            return Ok(());
        }
        let reusing = matches!(w, SlotWait::Left { .. });
        if reusing {
            // Peers that start a collective wake this rank if it sleeps (see `Shm::begin`).
            self.seg.set_reusing(self.rank, true);
        }
        self.slot_waiting = Some(w);
        let r = self.slot_wait_loop(ctx, w);
        self.slot_waiting = None;
        if reusing {
            self.seg.set_reusing(self.rank, false);
        }
        r
    }

    fn slot_wait_loop(&mut self, ctx: &Ctx, w: SlotWait) -> Result<()> {
        let mut idle = 0u32;
        let mut slow = false;
        // The peer whose silence counts, from the first slow round on (as in `recv`).
        let mut watching = None;
        loop {
            // Polls of the one word first (a load of a line the poster writes), then the rest of a
            // round: the word is seen within a few nanoseconds of its store.
            for _ in 0..SLOT_POLLS {
                if self.slot_ready(w) {
                    self.adapt();
                    return Ok(());
                }
                std::hint::spin_loop();
            }
            self.scan_aborts();
            // Messages of other collectives still move: a peer may wait for this rank's ring data
            // or ring space.
            if self.progress()? {
                self.adapt();
                idle = 0;
                continue;
            }
            if slow || (!self.ledger.aborts.is_empty() && self.ledger.aborts.contains_key(&ctx.seq))
            {
                let peer = match w {
                    SlotWait::Posted { src, .. } => Some(src),
                    SlotWait::Left { seq } => self.slot_lagging(seq),
                };
                if let Some(peer) = peer {
                    if watching != Some(peer) {
                        watching = Some(peer);
                        self.peers[peer].watched = Instant::now();
                    }
                    self.slot_status(ctx, peer, w)?;
                }
            }
            slow = self.idle(&mut idle);
        }
    }

    /// Errors that end a wait `w` for `peer` in collective `ctx`: an abort of it, the peer's
    /// different call, a peer that moved on without posting, and what ends every wait for a peer
    /// (`keep_waiting`).
    fn slot_status(&mut self, ctx: &Ctx, peer: usize, w: SlotWait) -> Result<()> {
        let rank = self.rank;
        self.ledger.current(rank, ctx)?;
        if let Some(cur) = self.seg.current(peer) {
            // Has the peer started this collective (or a later one)?
            if cur == ctx.seq || after(cur, ctx.seq) {
                if let Some(theirs) = self
                    .seg
                    .call_of(peer, ctx.seq)
                    .and_then(|(w0, w1)| sig_from_words(w0, w1))
                {
                    if theirs != ctx.sig {
                        return Err(Error::mismatch(rank, ctx.seq, peer, ctx.sig, theirs));
                    }
                }
                // It posts before it moves on (look at the slot again: it may have posted and
                // moved on since the last look). A rank that gave up the collective posted its
                // abort before moving on: look for it first.
                if cur != ctx.seq && !self.slot_ready(w) && matches!(w, SlotWait::Posted { .. }) {
                    self.scan_aborts();
                    self.ledger.current(rank, ctx)?;
                    return Err(Error::protocol(
                        rank,
                        ctx.describe(),
                        format!(
                            "rank {peer} finished this collective without posting its part of it"
                        ),
                    ));
                }
            }
        }
        self.keep_waiting(Some(ctx), peer)
    }
}

impl SlotOps for Shm {
    fn fits(&self, _sig: &Signature, bytes: usize) -> bool {
        self.size > 1 && bytes <= self.slot_limit
    }

    fn post(&mut self, ctx: &Ctx, data: &[u8]) -> Result<()> {
        if data.len() > self.slot_limit {
            return Err(Error::protocol(
                self.rank,
                ctx.describe(),
                format!(
                    "{} bytes do not fit a slot of {} bytes",
                    data.len(),
                    self.slot_limit
                ),
            ));
        }
        let k = ctx.seq as usize % SLOTS;
        if let Some(prev) = self.slot_posted[k] {
            self.slot_wait(ctx, SlotWait::Left { seq: prev })?;
        }
        let (w0, w1) = sig_words(&ctx.sig);
        self.seg.slot_post(self.rank, ctx.seq, w0, w1, data);
        self.slot_posted[k] = Some(ctx.seq);
        self.stats.shm_slot_posts += 1;
        self.seg.notify_others(self.rank);
        Ok(())
    }

    fn read(
        &mut self,
        ctx: &Ctx,
        src: usize,
        len: usize,
        take: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let rank = self.rank;
        let bad = |why: String| Error::protocol(rank, ctx.describe(), why);
        if src >= self.size || len > SLOT_BYTES {
            return Err(bad(format!("no slot holds {len} bytes of rank {src}")));
        }
        let w = SlotWait::Posted { src, seq: ctx.seq };
        self.slot_wait(ctx, w)?;
        let (w0, w1, n) = self
            .seg
            .slot_peek(src, ctx.seq)
            .ok_or_else(|| bad(format!("rank {src} took back its part of this collective")))?;
        match sig_from_words(w0, w1) {
            Some(theirs) if theirs == ctx.sig => {}
            Some(theirs) => return Err(Error::mismatch(rank, ctx.seq, src, ctx.sig, theirs)),
            None => return Err(bad(format!("rank {src} posted a call no rank makes"))),
        }
        if n != len as u64 {
            return Err(bad(format!(
                "rank {src} posted {n} bytes where {len} were expected"
            )));
        }
        let mut buf = std::mem::take(&mut self.slot_buf);
        buf.resize(len, 0);
        self.seg.slot_copy(src, ctx.seq, &mut buf);
        let r = take(&buf);
        self.slot_buf = buf;
        r
    }
}

#[cfg(test)]
mod tests {
    //! The slots between threads, each a rank with a transport of its own over one real segment
    //! (in `/dev/shm`, as a job's): results, slot reuse, mismatches and aborts while waiting.

    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::algorithms::{
        allgather_flat, allreduce_flat, barrier_flat, bcast_flat, contribute_flat, reduce_flat,
    };
    use crate::config::Config;
    use crate::error::{CollectiveError, ErrorKind};
    use crate::join::{JobInfo, Launcher};
    use crate::transport::Session;
    use crate::types::{Coll, DType, Op};
    use boad_proto::lines::PeerEntry;

    /// One transport per rank of a `size`-rank job on this host, made on threads of their own
    /// (ranks other than 0 wait for rank 0's segment), handed to `body` on its thread.
    fn on_ranks(size: usize, body: impl Fn(&mut Shm) + Sync) {
        static JOBS: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let job =
            nanos ^ u64::from(std::process::id()) << 32 ^ JOBS.fetch_add(1, Ordering::Relaxed);
        let table: Vec<PeerEntry> = (0..size)
            .map(|rank| PeerEntry {
                rank,
                host_id: 0,
                ip: std::net::Ipv4Addr::LOCALHOST.into(),
                port: 0,
                pulse: 0,
                pid: std::process::id(),
            })
            .collect();
        let cfg = Config {
            timeout: Duration::from_secs(20),
            ..Config::default()
        };
        std::thread::scope(|s| {
            for rank in 0..size {
                let (table, cfg, body) = (&table, cfg.clone(), &body);
                s.spawn(move || {
                    let info = JobInfo {
                        rank,
                        size,
                        local_rank: rank,
                        local_size: size,
                        job,
                        host_id: 0,
                        bind: std::net::Ipv4Addr::LOCALHOST.into(),
                        rendezvous: None,
                        launcher: Launcher::Alone,
                    };
                    let mut t = Shm::new(&info, table, None, Vec::new(), cfg).expect("transport");
                    body(&mut t);
                });
            }
        });
    }

    fn ctx(seq: u32, coll: Coll, op: Option<Op>, count: u64, root: usize) -> Ctx {
        Ctx {
            seq,
            sig: Signature {
                coll,
                op,
                dtype: Some(DType::I32),
                count,
                root: root as u32,
            },
        }
    }

    /// Runs one collective as the communicator does (begin, body, end or fail).
    fn run(t: &mut Shm, ctx: &Ctx, body: impl FnOnce(&mut Shm) -> Result<()>) -> Result<()> {
        let r = t.begin(ctx).and_then(|()| body(t));
        match &r {
            Ok(()) => t.end(ctx),
            Err(e) => t.fail(ctx, e),
        }
        r
    }

    fn ints(v: &[i32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_ne_bytes()).collect()
    }

    /// Rank `rank`'s `count` values in collective `seq`.
    fn values(seq: u32, rank: usize, count: usize) -> Vec<i32> {
        (0..count)
            .map(|i| (seq as i32).wrapping_mul(1_000_003) ^ (rank as i32 * 7919 + i as i32))
            .collect()
    }

    /// Every collective, back to back (no barrier between them, so a fast rank posts while slow
    /// ones still read, and waits to write a slot again), small ones on the slots and a larger one
    /// on the rings in between, with rotating roots: every result exact on every rank.
    fn every_collective(size: usize) {
        on_ranks(size, |t| {
            let (rank, n) = (t.rank(), t.size());
            let mut seq = 0u32;
            for round in 0..150usize {
                let root = round % n;
                // Sizes on the slots (up to 1024 values = the slot's 4096 bytes) and one past them.
                let count = [1usize, 7, 1024, 1025][round % 4];
                let slot = count * 4 <= SLOT_BYTES;
                let posts = t.stats().shm_slot_posts;

                let c = ctx(seq, Coll::Bcast, None, count as u64, root);
                let mut buf = if rank == root {
                    ints(&values(seq, root, count))
                } else {
                    vec![0; count * 4]
                };
                run(t, &c, |t| bcast_flat(t, &c, &mut buf, root)).expect("bcast");
                assert_eq!(buf, ints(&values(seq, root, count)), "bcast #{seq}");
                seq += 1;

                let sum = |seq: u32| -> Vec<i32> {
                    (0..count)
                        .map(|i| (0..n).fold(0i32, |a, r| a.wrapping_add(values(seq, r, count)[i])))
                        .collect()
                };
                let c = ctx(seq, Coll::Reduce, Some(Op::Sum), count as u64, root);
                let mine = ints(&values(seq, rank, count));
                if rank == root {
                    let mut acc = mine.clone();
                    run(t, &c, |t| {
                        reduce_flat(t, &c, &mut acc, DType::I32, Op::Sum, root, 0)
                    })
                    .expect("reduce");
                    assert_eq!(acc, ints(&sum(seq)), "reduce #{seq}");
                } else {
                    run(t, &c, |t| {
                        contribute_flat(t, &c, &mine, DType::I32, Op::Sum, root)
                    })
                    .expect("reduce");
                }
                seq += 1;

                let c = ctx(seq, Coll::Allreduce, Some(Op::Sum), count as u64, 0);
                let mut buf = ints(&values(seq, rank, count));
                run(t, &c, |t| {
                    allreduce_flat(t, &c, &mut buf, DType::I32, Op::Sum)
                })
                .expect("allreduce");
                assert_eq!(buf, ints(&sum(seq)), "allreduce #{seq}");
                seq += 1;

                let c = ctx(seq, Coll::Allgather, None, count as u64, 0);
                let block = count * 4;
                let mut all = vec![0u8; block * n];
                all[rank * block..(rank + 1) * block]
                    .copy_from_slice(&ints(&values(seq, rank, count)));
                run(t, &c, |t| allgather_flat(t, &c, &mut all, block)).expect("allgather");
                let want: Vec<u8> = (0..n).flat_map(|r| ints(&values(seq, r, count))).collect();
                assert_eq!(all, want, "allgather #{seq}");
                seq += 1;

                let c = ctx(seq, Coll::Barrier, None, 0, 0);
                run(t, &c, |t| barrier_flat(t, &c)).expect("barrier");
                seq += 1;

                // Each of the five went through this rank's slot when it fits one (a non-root
                // posts for bcast never, a root for reduce never), none when it does not.
                let now = t.stats().shm_slot_posts - posts;
                let want = if !slot {
                    1 // the barrier
                } else {
                    u64::from(rank == root) + u64::from(rank != root) + 3
                };
                assert_eq!(now, want, "slot posts of round {round} on rank {rank}");
            }
            t.flush().expect("flush");
        });
    }

    #[test]
    fn every_collective_on_2_ranks() {
        every_collective(2);
    }

    #[test]
    fn every_collective_on_5_ranks() {
        every_collective(5);
    }

    /// Float sums whose bits depend on the order of the fold: the slots give, on every rank
    /// that folds, the bits of the message algorithms (binomial reduce, reduce + bcast, and
    /// recursive doubling on a power of two).
    fn same_bits_as_the_message_algorithms(size: usize) {
        use crate::algorithms::{
            allreduce_recursive_doubling, allreduce_reduce_bcast, reduce_binomial,
        };
        on_ranks(size, |t| {
            let (rank, n) = (t.rank(), t.size());
            let count = 33usize;
            let mine: Vec<u8> = (0..count)
                .flat_map(|i| {
                    let x = (rank as f64 + 1.0) * 0.1 + (i as f64) * 1e-3 / (rank as f64 + 3.0);
                    (x * if i % 2 == 0 { 1e16 } else { 1.0 }).to_ne_bytes()
                })
                .collect();
            let sig = |coll, root: usize| Signature {
                coll,
                op: Some(Op::Sum),
                dtype: Some(DType::F64),
                count: count as u64,
                root: root as u32,
            };
            let mut seq = 0u32;
            for root in 0..n {
                let mut by_slots = mine.clone();
                let mut by_messages = mine.clone();
                for (buf, slots) in [(&mut by_slots, true), (&mut by_messages, false)] {
                    let c = Ctx {
                        seq,
                        sig: sig(Coll::Reduce, root),
                    };
                    seq += 1;
                    run(t, &c, |t| {
                        if slots {
                            reduce_flat(t, &c, buf, DType::F64, Op::Sum, root, 0)
                        } else {
                            reduce_binomial(t, &c, buf, DType::F64, Op::Sum, root, 0)
                        }
                    })
                    .expect("reduce");
                }
                if rank == root {
                    assert_eq!(by_slots, by_messages, "reduce to {root}");
                }
            }
            let mut results = Vec::new();
            for how in 0..3 {
                if how == 2 && !n.is_power_of_two() {
                    continue;
                }
                let mut buf = mine.clone();
                let c = Ctx {
                    seq,
                    sig: sig(Coll::Allreduce, 0),
                };
                seq += 1;
                run(t, &c, |t| match how {
                    0 => allreduce_flat(t, &c, &mut buf, DType::F64, Op::Sum),
                    1 => allreduce_reduce_bcast(t, &c, &mut buf, DType::F64, Op::Sum),
                    _ => allreduce_recursive_doubling(t, &c, &mut buf, DType::F64, Op::Sum),
                })
                .expect("allreduce");
                results.push(buf);
            }
            assert!(results.iter().all(|r| *r == results[0]), "allreduce");
            // The order matters for these values: a fold in rank order gives other bits.
            let plain: Vec<u8> = (0..count)
                .flat_map(|i| {
                    (0..n)
                        .map(|r| {
                            let x = (r as f64 + 1.0) * 0.1 + (i as f64) * 1e-3 / (r as f64 + 3.0);
                            x * if i % 2 == 0 { 1e16 } else { 1.0 }
                        })
                        .reduce(|a, b| a + b)
                        .unwrap_or(0.0)
                        .to_ne_bytes()
                })
                .collect();
            if n > 2 {
                assert_ne!(
                    results[0], plain,
                    "values whose sum does not depend on the order"
                );
            }
            assert!(t.stats().shm_slot_posts > 0);
        });
    }

    #[test]
    fn same_bits_as_the_message_algorithms_on_4_ranks() {
        same_bits_as_the_message_algorithms(4);
    }

    #[test]
    fn same_bits_as_the_message_algorithms_on_7_ranks() {
        same_bits_as_the_message_algorithms(7);
    }

    /// A root that posts three broadcasts while the other rank sleeps before reading the first:
    /// the third waits until that rank has left the first (it writes the first one's slot), and
    /// every broadcast arrives as it was sent.
    #[test]
    fn a_slot_is_written_again_only_after_its_readers_left() {
        on_ranks(2, |t| {
            let rank = t.rank();
            if rank == 1 {
                std::thread::sleep(Duration::from_millis(100));
            }
            let start = Instant::now();
            for seq in 0..3u32 {
                let c = ctx(seq, Coll::Bcast, None, 2, 0);
                let mut buf = if rank == 0 {
                    ints(&values(seq, 0, 2))
                } else {
                    vec![0; 8]
                };
                run(t, &c, |t| bcast_flat(t, &c, &mut buf, 0)).expect("bcast");
                assert_eq!(buf, ints(&values(seq, 0, 2)), "bcast #{seq}");
                if rank == 0 && seq == 1 {
                    assert!(
                        start.elapsed() < Duration::from_millis(90),
                        "the first two wait"
                    );
                }
            }
            if rank == 0 {
                // The third waited for rank 1 to start #1 (after its 100 ms sleep).
                assert!(
                    start.elapsed() >= Duration::from_millis(90),
                    "no wait for the reader"
                );
            }
        });
    }

    /// Two ranks that make different calls of the same collective while one of them waits on a
    /// slot: both fail with a mismatch naming the other's call.
    #[test]
    fn different_calls_are_a_mismatch_on_both_ranks() {
        on_ranks(2, |t| {
            let rank = t.rank();
            // Rank 0 waits for rank 1's broadcast; rank 1 posts an allreduce and waits for rank
            // 0's part of it.
            let c = if rank == 0 {
                ctx(0, Coll::Bcast, None, 1, 1)
            } else {
                ctx(0, Coll::Allreduce, Some(Op::Sum), 1, 0)
            };
            let mut buf = ints(&[5]);
            let r = run(t, &c, |t| {
                if rank == 0 {
                    bcast_flat(t, &c, &mut buf, 1)
                } else {
                    allreduce_flat(t, &c, &mut buf, DType::I32, Op::Sum)
                }
            });
            let e = r.expect_err("a mismatch");
            match e.kind() {
                ErrorKind::Collective(CollectiveError::Mismatch { peer, theirs, .. }) => {
                    assert_eq!(*peer, 1 - rank, "{e}");
                    assert_ne!(*theirs, c.sig, "{e}");
                }
                ErrorKind::Collective(CollectiveError::Aborted { by, .. }) => {
                    // The other rank saw the mismatch first and aborted the collective.
                    assert_eq!(*by, 1 - rank, "{e}");
                }
                _ => panic!("rank {rank}: {e}"),
            }
        });
    }

    /// One call that fits the slots and one that does not (a different count): the rank on the
    /// rings and the rank on the slots both end with an error, neither waits forever.
    #[test]
    fn a_call_on_the_slots_and_one_on_the_rings_do_not_hang() {
        on_ranks(2, |t| {
            let rank = t.rank();
            let count = if rank == 0 { 2048 } else { 2 };
            let c = ctx(0, Coll::Allreduce, Some(Op::Sum), count, 0);
            let mut buf = vec![1u8; count as usize * 4];
            let r = run(t, &c, |t| {
                allreduce_flat(t, &c, &mut buf, DType::I32, Op::Sum)
            });
            let e = r.expect_err("an error");
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::Collective(
                        CollectiveError::Mismatch { .. } | CollectiveError::Aborted { .. }
                    )
                ),
                "rank {rank}: {e}"
            );
        });
    }

    /// A slot whose header is garbage (words that are no call, or a length the call does not
    /// have) is an error naming its owner, never a read past the slot.
    #[test]
    fn a_slot_with_garbage_is_refused() {
        for (w0, len) in [(u64::MAX, 4usize), (0, 8), (0, SLOT_BYTES)] {
            on_ranks(2, |t| {
                let c = ctx(0, Coll::Bcast, None, 1, 1);
                if t.rank() == 1 {
                    let (good, w1) = sig_words(&c.sig);
                    t.seg
                        .slot_post(1, 0, if w0 == 0 { good } else { w0 }, w1, &vec![7; len]);
                    return;
                }
                let mut buf = vec![0u8; 4];
                let e = run(t, &c, |t| bcast_flat(t, &c, &mut buf, 1)).expect_err("refused");
                let want = if w0 == 0 {
                    format!("rank 1 posted {len} bytes where 4 were expected")
                } else {
                    "rank 1 posted a call no rank makes".to_string()
                };
                assert!(e.to_string().contains(&want), "{e}");
                assert_eq!(buf, [0; 4]);
            });
        }
    }

    /// A rank waiting on a slot (long enough to sleep on its futex) fails at once when the rank
    /// it waits for gives the collective up.
    #[test]
    fn an_abort_ends_a_slot_wait() {
        on_ranks(2, |t| {
            let rank = t.rank();
            let c = ctx(0, Coll::Bcast, None, 1, 0);
            if rank == 0 {
                std::thread::sleep(Duration::from_millis(150));
                let e = Error::protocol(0, c.describe(), "given up".into());
                t.fail(&c, &e);
                return;
            }
            let mut buf = vec![0u8; 4];
            let start = Instant::now();
            let e = run(t, &c, |t| bcast_flat(t, &c, &mut buf, 0)).expect_err("aborted");
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::Collective(CollectiveError::Aborted { by: 0, .. })
                ),
                "{e}"
            );
            assert!(e.to_string().contains("given up"), "{e}");
            assert!(start.elapsed() >= Duration::from_millis(100), "ended early");
            assert!(t.stats().futex_waits > 0, "it never slept");
        });
    }
}
