//! Large folds split over a small thread pool, where this host has cores to spare.
//!
//! A fold is element-wise: element `i` of the result depends on element `i` of each input only. So
//! cutting the buffers into pieces and folding the pieces on several threads gives exactly the
//! bits of [`fold()`] on one thread, whatever the number of threads or the order the pieces finish
//! in. The pieces are fixed all the same: [`CHUNK_BYTES`] each (the last one shorter), whatever the
//! number of threads; only which thread folds which piece varies from run to run.
//!
//! Whether a rank folds on several threads is decided once per process (`configure`, from the
//! job's layout and `BOAD_FOLD_THREADS`/`BOAD_FOLD_PAR_BYTES`): only with at most as many ranks on
//! this host as it has cores ([`auto_threads`]), and only for buffers of at least
//! [`DEFAULT_MIN_BYTES`]. The threads ([`FoldPool`]: the calling thread and a `rayon` pool of the
//! process's own, not the global one) are started the first time a fold is large enough.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use super::fold;
use crate::types::{DType, Op};

/// Bytes of one piece of a parallel fold: a multiple of 64 (a cache line, and of every element
/// size), the same on every machine.
pub const CHUNK_BYTES: usize = 128 * 1024;

/// Smallest buffer a rank folds on several threads unless `BOAD_FOLD_PAR_BYTES` says otherwise.
/// Measured on a 2-core machine (`examples/fold_bench.rs fold`, f32 sums, 2 threads against 1):
/// on an idle machine two threads win from about 512 KiB (1 MiB: 0.8 of the time, 4 MiB: 0.6);
/// with the cores busy with other work, waking the helper costs 15 to 20 µs and they win only
/// from 4 to 16 MiB. 2 MiB keeps the loss on a busy host small. `docs/algorithms.md` has the
/// numbers.
pub const DEFAULT_MIN_BYTES: usize = 2 << 20;

/// Most threads `BOAD_FOLD_THREADS` may ask for.
pub const MAX_THREADS: usize = 256;

/// Threads for a rank's folds when `local_size` ranks share a host with `cores` usable cores
/// (`std::thread::available_parallelism`, which follows the process's CPU affinity and cgroup
/// quota): the cores each rank has to itself, if that is at least 2; else 1 (fold on the calling
/// thread: the host is full, or oversubscribed, and another thread would only take a core from
/// another rank).
pub fn auto_threads(local_size: usize, cores: usize) -> usize {
    if local_size == 0 || local_size > cores {
        return 1;
    }
    match cores / local_size {
        t if t >= 2 => t.min(MAX_THREADS),
        _ => 1,
    }
}

/// Threads for folds: the calling thread and `threads - 1` of the pool's own (a `rayon` pool,
/// threads named `boad-fold-N`), which take the pieces of a fold one at a time until none is left.
pub struct FoldPool {
    /// The helpers (None for one thread: the caller folds alone).
    pool: Option<rayon::ThreadPool>,
}

impl std::fmt::Debug for FoldPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoldPool")
            .field("threads", &self.threads())
            .finish()
    }
}

impl FoldPool {
    /// Folds on `threads` threads (at least 1) in all: the caller and `threads - 1` helpers; an
    /// error if the helpers cannot be started.
    pub fn new(threads: usize) -> std::io::Result<FoldPool> {
        let helpers = threads.max(1) - 1;
        if helpers == 0 {
            return Ok(FoldPool { pool: None });
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(helpers)
            .thread_name(|i| format!("boad-fold-{i}"))
            .build()
            .map(|pool| FoldPool { pool: Some(pool) })
            .map_err(std::io::Error::other)
    }

    /// How many threads fold, the caller included.
    pub fn threads(&self) -> usize {
        1 + self.pool.as_ref().map_or(0, |p| p.current_num_threads())
    }

    /// [`fold()`], with the buffers cut into pieces of [`CHUNK_BYTES`] (the last one shorter) that
    /// the caller and the helpers fold, each taking the next piece when done with one; returns when
    /// all are folded. The same result, bit for bit, and the same checks (false, and nothing
    /// changed, if `op` is not defined on `dtype` or the lengths do not match).
    pub fn fold(&self, dtype: DType, op: Op, acc: &mut [u8], other: &[u8]) -> bool {
        if !op.supports(dtype)
            || acc.len() != other.len()
            || !acc.len().is_multiple_of(dtype.size())
        {
            return false;
        }
        // Every piece is a whole number of elements (CHUNK_BYTES is a multiple of every element
        // size) and the checks above hold for each, so each fold below succeeds; a piece that did
        // not would be reported all the same.
        let pieces = Mutex::new(acc.chunks_mut(CHUNK_BYTES).zip(other.chunks(CHUNK_BYTES)));
        let failed = AtomicBool::new(false);
        let work = || loop {
            // A poisoned lock: a helper panicked while taking a piece, which `next` cannot do.
            let next = match pieces.lock() {
                Ok(mut p) => p.next(),
                Err(_) => {
                    failed.store(true, Ordering::Relaxed);
                    None
                }
            };
            match next {
                Some((a, b)) => {
                    if !fold(dtype, op, a, b) {
                        failed.store(true, Ordering::Relaxed);
                    }
                }
                None => break,
            }
        };
        match &self.pool {
            None => work(),
            Some(pool) => pool.in_place_scope(|s| {
                for _ in 0..pool.current_num_threads() {
                    s.spawn(|_| work());
                }
                work();
            }),
        }
        !failed.load(Ordering::Relaxed)
    }
}

/// How this process folds: set once by the first communicator ([`configure`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Threads per fold (1: always on the calling thread).
    pub threads: usize,
    /// Smallest buffer folded on `threads` threads.
    pub min_bytes: usize,
}

static PLAN: OnceLock<Plan> = OnceLock::new();
/// The pool, built the first time a fold is large enough (None: it could not be built; folds stay
/// on the calling thread, which was said once).
static POOL: OnceLock<Option<FoldPool>> = OnceLock::new();
/// Folds this process split over the pool.
static PARALLEL_FOLDS: AtomicU64 = AtomicU64::new(0);

/// Sets this process's plan, if none is set yet, and returns the plan in force (a second
/// communicator in the same process keeps the first one's: there is one pool per process).
/// `threads`: `BOAD_FOLD_THREADS` if set, else [`auto_threads`] of `local_size`.
pub(crate) fn configure(
    local_size: usize,
    threads: Option<usize>,
    min_bytes: Option<usize>,
) -> Plan {
    *PLAN.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Plan {
            threads: threads.unwrap_or_else(|| auto_threads(local_size, cores)),
            min_bytes: min_bytes.unwrap_or(DEFAULT_MIN_BYTES),
        }
    })
}

/// The plan in force (one thread until a communicator set it).
pub(crate) fn plan() -> Plan {
    PLAN.get().copied().unwrap_or(Plan {
        threads: 1,
        min_bytes: DEFAULT_MIN_BYTES,
    })
}

/// How many folds this process split over its pool so far.
pub(crate) fn parallel_folds() -> u64 {
    PARALLEL_FOLDS.load(Ordering::Relaxed)
}

/// [`fold()`] as this process's plan says: on the pool for a buffer of at least `min_bytes` when
/// the plan has several threads, else on the calling thread. The same result either way.
pub(crate) fn fold_planned(dtype: DType, op: Op, acc: &mut [u8], other: &[u8]) -> bool {
    let plan = plan();
    if plan.threads < 2 || acc.len() < plan.min_bytes.max(1) {
        return fold(dtype, op, acc, other);
    }
    let pool = POOL.get_or_init(|| match FoldPool::new(plan.threads) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(
                "boad: folds stay on one thread: cannot start {} threads: {e}",
                plan.threads
            );
            None
        }
    });
    match pool {
        Some(p) => {
            let done = p.fold(dtype, op, acc, other);
            if done {
                PARALLEL_FOLDS.fetch_add(1, Ordering::Relaxed);
            }
            done
        }
        None => fold(dtype, op, acc, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn threads_only_where_cores_are_free() {
        // One rank on 2 cores: both; on 8: all 8.
        assert_eq!(auto_threads(1, 2), 2);
        assert_eq!(auto_threads(1, 8), 8);
        // Two ranks on 2 cores (this machine's case): full, one thread each.
        assert_eq!(auto_threads(2, 2), 1);
        // Three ranks on 8: 2 each (8 / 3 rounded down).
        assert_eq!(auto_threads(3, 8), 2);
        // Five on 8: one core each and three left over: not worth a pool.
        assert_eq!(auto_threads(5, 8), 1);
        // Oversubscribed.
        assert_eq!(auto_threads(9, 2), 1);
        assert_eq!(auto_threads(0, 4), 1);
        assert_eq!(auto_threads(1, 10_000), MAX_THREADS);
    }

    #[test]
    fn chunks_hold_whole_elements() {
        assert!(CHUNK_BYTES.is_multiple_of(64));
        for d in DType::ALL {
            assert!(CHUNK_BYTES.is_multiple_of(d.size()), "{d}");
        }
    }

    #[test]
    fn refuses_what_fold_refuses() {
        let pool = FoldPool::new(2).expect("pool");
        let mut acc = vec![0u8; 3 * CHUNK_BYTES];
        let orig = acc.clone();
        assert!(!pool.fold(DType::F64, Op::Band, &mut acc, &vec![1u8; 3 * CHUNK_BYTES]));
        assert!(!pool.fold(
            DType::I32,
            Op::Sum,
            &mut acc,
            &vec![1u8; 3 * CHUNK_BYTES - 4]
        ));
        assert!(!pool.fold(
            DType::I32,
            Op::Sum,
            &mut acc[..3 * CHUNK_BYTES - 2],
            &vec![1u8; 3 * CHUNK_BYTES - 2]
        ));
        assert_eq!(acc, orig);
    }

    /// Element bytes biased towards the values where ops differ most: for floats NaN (quiet,
    /// signalling, either sign, with payloads), ±0, ±inf, subnormals and extremes; for integers
    /// 0, ±1, the extremes. Else any bits.
    fn special(dtype: DType, pick: u8, raw: u64) -> u64 {
        match dtype {
            DType::F32 => {
                let v: [u32; 10] = [
                    0x7fc0_0000, // NaN
                    0xffc0_0001, // -NaN with a payload
                    0x7f80_0001, // signalling NaN
                    0x8000_0000, // -0.0
                    0x0000_0000, // +0.0
                    0x7f80_0000, // +inf
                    0xff80_0000, // -inf
                    0x0000_0001, // smallest subnormal
                    0x7f7f_ffff, // largest finite
                    0x3f80_0000, // 1.0
                ];
                v.get(pick as usize).map_or(raw, |&b| u64::from(b))
            }
            DType::F64 => {
                let v: [u64; 10] = [
                    0x7ff8_0000_0000_0000,
                    0xfff8_0000_0000_0001,
                    0x7ff0_0000_0000_0001,
                    0x8000_0000_0000_0000,
                    0,
                    0x7ff0_0000_0000_0000,
                    0xfff0_0000_0000_0000,
                    1,
                    0x7fef_ffff_ffff_ffff,
                    0x3ff0_0000_0000_0000,
                ];
                v.get(pick as usize).copied().unwrap_or(raw)
            }
            _ => {
                let bits = dtype.size() * 8;
                let max = u64::MAX >> (64 - bits);
                let v = [0, 1, max, max >> 1, (max >> 1) + 1];
                v.get(pick as usize).copied().unwrap_or(raw)
            }
        }
    }

    /// `n` elements of `dtype`, little-endian, from `(pick, raw)` pairs.
    fn elements(dtype: DType, n: usize, seeds: &[(u8, u64)]) -> Vec<u8> {
        let mut out = Vec::with_capacity(n * dtype.size());
        for i in 0..n {
            let (pick, raw) = seeds[i % seeds.len()];
            // Vary repeated seeds so pieces differ from each other.
            let raw = raw.wrapping_add((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            out.extend_from_slice(&special(dtype, pick, raw).to_le_bytes()[..dtype.size()]);
        }
        out
    }

    /// Whether `got` has `want`'s bits, element by element, except that two NaNs of a float type
    /// are equal whatever their payloads: when both operands of a float op are NaN, which payload
    /// the result carries depends on the operand order the compiler chose for that loop (the
    /// aligned and the unaligned loop may differ, and do with overflow checks on), not on the
    /// split into pieces.
    fn same(dtype: DType, got: &[u8], want: &[u8]) -> bool {
        if got.len() != want.len() {
            return false;
        }
        let size = dtype.size();
        got.chunks(size).zip(want.chunks(size)).all(|(g, w)| {
            g == w
                || match dtype {
                    DType::F32 => {
                        let f = |b: &[u8]| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_nan();
                        f(g) && f(w)
                    }
                    DType::F64 => {
                        let f = |b: &[u8]| {
                            let mut a = [0u8; 8];
                            a.copy_from_slice(b);
                            f64::from_le_bytes(a).is_nan()
                        };
                        f(g) && f(w)
                    }
                    _ => false,
                }
        })
    }

    /// Every (op, dtype) pair `fold` accepts.
    fn pairs() -> Vec<(Op, DType)> {
        Op::ALL
            .into_iter()
            .flat_map(|op| DType::ALL.into_iter().map(move |d| (op, d)))
            .filter(|(op, d)| op.supports(*d))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The pool's fold gives the sequential fold's bits, for every op and dtype, lengths that
        /// end inside a piece (odd element counts, less than one piece, several), pools of 1 to 4
        /// threads, aligned buffers and buffers at an odd offset (the unaligned loop).
        #[test]
        fn parallel_matches_sequential_bit_for_bit(
            pair in 0usize..1000,
            pieces in 0usize..4,
            extra in 0usize..2000,
            threads in 1usize..5,
            offset in prop_oneof![Just(0usize), Just(1), Just(3)],
            seeds in proptest::collection::vec((0u8..16, any::<u64>()), 1..64),
            seeds_b in proptest::collection::vec((0u8..16, any::<u64>()), 1..64),
        ) {
            let all = pairs();
            let (op, dtype) = all[pair % all.len()];
            let n = (pieces * CHUNK_BYTES / dtype.size()) + extra * 2 + 1;
            let a = elements(dtype, n, &seeds);
            let b = elements(dtype, n, &seeds_b);
            let mut want = a.clone();
            prop_assert!(fold(dtype, op, &mut want, &b));
            let pool = FoldPool::new(threads).expect("pool");
            let mut got_buf = vec![0u8; a.len() + offset];
            got_buf[offset..].copy_from_slice(&a);
            let mut other_buf = vec![0u8; b.len() + 1];
            other_buf[1..].copy_from_slice(&b);
            let other: &[u8] = if offset == 0 { &b } else { &other_buf[1..] };
            prop_assert!(pool.fold(dtype, op, &mut got_buf[offset..], other));
            prop_assert!(same(dtype, &got_buf[offset..], &want), "{op} over {dtype}: {n} elements, {threads} threads, offset {offset}");
        }
    }

    /// Every pair at a length of 2.5 pieces on 3 threads, one by one (the proptest above picks
    /// pairs at random; this makes sure each is seen).
    #[test]
    fn every_pair_over_several_pieces() {
        let pool = FoldPool::new(3).expect("pool");
        let seeds: Vec<(u8, u64)> = (0..37u64)
            .map(|i| ((i % 13) as u8, i.wrapping_mul(0x1234_5678_9abc_def1)))
            .collect();
        let seeds_b: Vec<(u8, u64)> = (0..41u64)
            .map(|i| ((i % 11) as u8, (!i).wrapping_mul(0x0fed_cba9_8765_4321)))
            .collect();
        for (op, dtype) in pairs() {
            let n = (5 * CHUNK_BYTES / 2) / dtype.size() + 3;
            let a = elements(dtype, n, &seeds);
            let b = elements(dtype, n, &seeds_b);
            let mut want = a.clone();
            assert!(fold(dtype, op, &mut want, &b));
            let mut got = a.clone();
            assert!(pool.fold(dtype, op, &mut got, &b));
            assert!(got == want, "{op} over {dtype}");
            assert!(got != a, "{op} over {dtype} changed nothing");
        }
    }
}
