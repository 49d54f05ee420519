//! Every algorithm on an in-process job (`transport::mem`: one thread per rank, channels between
//! them, arrival orders shuffled), 1 to 17 ranks, against results worked out here from each rank's
//! distinct contribution without `ops`: a result that misses a rank, counts one twice, comes from the
//! wrong root or lands in the wrong block fails.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::engine::Engine;
use crate::transport::hier::Hier;
use crate::transport::mem::{mesh, Mem};
use crate::transport::{Level, Session};
use crate::types::{Coll, Signature};
use boad_proto::Layout;
use boad_proto::PeerEntry;

/// A reduction with values whose exact result the test can work out by itself.
#[derive(Clone, Copy, Debug)]
enum Case {
    SumI32,
    MaxU8,
    MinI16,
    BxorU64,
    /// Integers in -1000..=1000: exact in any order.
    SumF64,
    /// Powers of two and -1: exact in any order.
    ProdF32,
    LandI8,
}

const CASES: [Case; 7] = [
    Case::SumI32,
    Case::MaxU8,
    Case::MinI16,
    Case::BxorU64,
    Case::SumF64,
    Case::ProdF32,
    Case::LandI8,
];

/// Element counts: empty, one, odd, and (for 4-byte elements) past the recursive-doubling limit.
const COUNTS: [usize; 4] = [0, 1, 7, 20_001];

fn mix(rank: usize, i: usize) -> u64 {
    let mut z = (rank as u64)
        .wrapping_mul(0x1000_0000_01B3)
        .wrapping_add(i as u64)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Case {
    fn dtype_op(self) -> (DType, Op) {
        match self {
            Case::SumI32 => (DType::I32, Op::Sum),
            Case::MaxU8 => (DType::U8, Op::Max),
            Case::MinI16 => (DType::I16, Op::Min),
            Case::BxorU64 => (DType::U64, Op::Bxor),
            Case::SumF64 => (DType::F64, Op::Sum),
            Case::ProdF32 => (DType::F32, Op::Prod),
            Case::LandI8 => (DType::I8, Op::Land),
        }
    }

    /// Rank `rank`'s element `i`.
    fn element(self, rank: usize, i: usize) -> Vec<u8> {
        let v = mix(rank, i);
        match self {
            Case::SumI32 => (v as i32).to_ne_bytes().to_vec(),
            Case::MaxU8 => vec![v as u8],
            Case::MinI16 => (v as i16).to_ne_bytes().to_vec(),
            Case::BxorU64 => v.to_ne_bytes().to_vec(),
            Case::SumF64 => ((v % 2001) as f64 - 1000.0).to_ne_bytes().to_vec(),
            Case::ProdF32 => [1.0f32, 2.0, 0.5, -1.0][(v % 4) as usize]
                .to_ne_bytes()
                .to_vec(),
            Case::LandI8 => vec![(v % 5) as u8],
        }
    }

    fn buffer(self, rank: usize, count: usize) -> Vec<u8> {
        (0..count).flat_map(|i| self.element(rank, i)).collect()
    }

    /// Element `i` of the reduction over ranks `0..size`.
    fn expected_element(self, size: usize, i: usize) -> Vec<u8> {
        let vals = (0..size).map(|r| mix(r, i));
        match self {
            Case::SumI32 => vals
                .fold(0i32, |a, v| a.wrapping_add(v as i32))
                .to_ne_bytes()
                .to_vec(),
            Case::MaxU8 => vec![vals.map(|v| v as u8).max().unwrap_or(0)],
            Case::MinI16 => vals
                .map(|v| v as i16)
                .min()
                .unwrap_or(0)
                .to_ne_bytes()
                .to_vec(),
            Case::BxorU64 => vals.fold(0u64, |a, v| a ^ v).to_ne_bytes().to_vec(),
            Case::SumF64 => vals
                .map(|v| (v % 2001) as f64 - 1000.0)
                .sum::<f64>()
                .to_ne_bytes()
                .to_vec(),
            Case::ProdF32 => vals
                .map(|v| [1.0f32, 2.0, 0.5, -1.0][(v % 4) as usize])
                .product::<f32>()
                .to_ne_bytes()
                .to_vec(),
            // One rank's contribution is the result as it is (nothing is folded, as in MPI).
            Case::LandI8 if size == 1 => self.element(0, i),
            Case::LandI8 => vec![u8::from(vals.map(|v| v % 5).all(|v| v != 0))],
        }
    }

    fn expected(self, size: usize, count: usize) -> Vec<u8> {
        (0..count)
            .flat_map(|i| self.expected_element(size, i))
            .collect()
    }
}

/// Numbers collectives the same on every rank and starts and ends them on the session.
struct Calls {
    seq: u32,
}

impl Calls {
    fn ctx(&mut self, coll: Coll, case: Option<Case>, count: usize, root: usize) -> Ctx {
        self.seq += 1;
        Ctx {
            seq: self.seq,
            sig: Signature {
                coll,
                op: case.map(|c| c.dtype_op().1),
                dtype: case.map(|c| c.dtype_op().0),
                count: count as u64,
                root: root as u32,
            },
        }
    }
}

/// Roots other than 0 where there are any.
fn roots(size: usize) -> Vec<usize> {
    let mut r = vec![0, size - 1, size / 2];
    r.sort_unstable();
    r.dedup();
    r
}

fn check(what: &str, rank: usize, got: &[u8], want: &[u8]) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: rank {rank} got a wrong result ({} bytes, {} expected; first difference at \
             byte {at:?})",
            got.len(),
            want.len()
        );
    }
}

/// Runs `body` on every rank of `ranks`, one thread each; a rank's panic fails the test.
fn on_threads<T: Send>(ranks: Vec<T>, body: impl Fn(T) + Sync) {
    std::thread::scope(|s| {
        let body = &body;
        let handles: Vec<_> = ranks
            .into_iter()
            .map(|t| s.spawn(move || body(t)))
            .collect();
        for h in handles {
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p);
            }
        }
    });
}

/// Runs one collective `run` on `t` between `begin` and `end`; an error fails the test.
fn call<S: Session + ?Sized, R>(t: &mut S, ctx: &Ctx, run: impl FnOnce(&mut S) -> Result<R>) -> R {
    let rank = t.rank();
    let r = t.begin(ctx).and_then(|()| run(t));
    t.end(ctx);
    r.unwrap_or_else(|e| panic!("{}: rank {rank}: {e}", ctx.describe()))
}

/// Every userspace algorithm of the flat paths, called directly, for every case, count and root.
fn flat_algorithms<T: Transport>(t: &mut T, entered: &AtomicUsize, counts: &[usize]) {
    let (rank, size) = (t.rank(), t.size());
    let mut calls = Calls { seq: 0 };
    for case in CASES {
        let (dtype, op) = case.dtype_op();
        for &count in counts {
            let mine = case.buffer(rank, count);
            let want = case.expected(size, count);
            for root in roots(size) {
                let ctx = calls.ctx(Coll::Reduce, Some(case), count, root);
                let mut acc = mine.clone();
                call(t, &ctx, |t| {
                    reduce_binomial(t, &ctx, &mut acc, dtype, op, root, 0)
                });
                if rank == root {
                    check(
                        &format!("reduce_binomial {case:?} x{count} root {root}"),
                        rank,
                        &acc,
                        &want,
                    );
                }
                let ctx = calls.ctx(Coll::Bcast, Some(case), count, root);
                let mut buf = if rank == root {
                    case.buffer(root, count)
                } else {
                    vec![0xA5; mine.len()]
                };
                call(t, &ctx, |t| bcast_binomial(t, &ctx, &mut buf, root));
                check(
                    &format!("bcast_binomial {case:?} x{count} root {root}"),
                    rank,
                    &buf,
                    &case.buffer(root, count),
                );
            }
            let ctx = calls.ctx(Coll::Allreduce, Some(case), count, 0);
            let mut buf = mine.clone();
            call(t, &ctx, |t| {
                allreduce_reduce_bcast(t, &ctx, &mut buf, dtype, op)
            });
            check(
                &format!("allreduce_reduce_bcast {case:?} x{count}"),
                rank,
                &buf,
                &want,
            );
            if size.is_power_of_two() {
                let ctx = calls.ctx(Coll::Allreduce, Some(case), count, 0);
                let mut buf = mine.clone();
                call(t, &ctx, |t| {
                    allreduce_recursive_doubling(t, &ctx, &mut buf, dtype, op)
                });
                check(
                    &format!("allreduce_recursive_doubling {case:?} x{count}"),
                    rank,
                    &buf,
                    &want,
                );
            }
            let ctx = calls.ctx(Coll::Allgather, Some(case), count, 0);
            let block = mine.len();
            let mut all = vec![0x5A; block * size];
            all[rank * block..(rank + 1) * block].copy_from_slice(&mine);
            call(t, &ctx, |t| allgather_ring(t, &ctx, &mut all, block));
            let want_all: Vec<u8> = (0..size).flat_map(|r| case.buffer(r, count)).collect();
            check(
                &format!("allgather_ring {case:?} x{count}"),
                rank,
                &all,
                &want_all,
            );
        }
        // A barrier lets no rank out before every rank is in.
        let ctx = calls.ctx(Coll::Barrier, None, 0, 0);
        let round = entered.fetch_add(1, Ordering::SeqCst) / size;
        call(t, &ctx, |t| barrier_dissemination(t, &ctx));
        let now = entered.load(Ordering::SeqCst);
        assert!(
            now >= (round + 1) * size,
            "barrier_dissemination: rank {rank} left round {round} when only {now} entries were made"
        );
    }
}

#[test]
fn every_flat_algorithm_on_1_to_17_ranks() {
    for size in 1..=17 {
        for shuffle in [false, true] {
            let entered = AtomicUsize::new(0);
            on_threads(mesh(size, shuffle, size as u64), |mut t| {
                flat_algorithms(&mut t, &entered, &COUNTS)
            });
        }
    }
}

/// Runs one collective `run` on `e` between `begin` and `end`, as the communicator does; an error
/// fails the test.
fn ecall<R>(e: &mut Engine, ctx: &Ctx, run: impl FnOnce(&mut Engine) -> Result<R>) -> R {
    let rank = e.session_ref().rank();
    let r = e.session().begin(ctx).and_then(|()| run(e));
    e.session().end(ctx);
    r.unwrap_or_else(|err| panic!("{}: rank {rank}: {err}", ctx.describe()))
}

/// The same over the UDP transport itself (its reliable messages over loopback sockets, one thread
/// per rank, no launcher), with small datagrams, a small window and a share of the datagrams lost.
#[test]
fn every_flat_algorithm_over_lossy_udp() {
    use crate::config::Config;
    use crate::transport::udp::Udp;
    let lo = std::net::IpAddr::from([127, 0, 0, 1]);
    for (size, drop_rate) in [
        (1, 0.0),
        (2, 0.05),
        (3, 0.02),
        (4, 0.05),
        (7, 0.02),
        (9, 0.01),
    ] {
        let socks: Vec<_> = (0..size)
            .map(|r| Udp::bind(r, lo).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let table: Vec<PeerEntry> = socks
            .iter()
            .enumerate()
            .map(|(rank, (_, port))| PeerEntry {
                rank,
                host_id: 1,
                ip: lo,
                port: *port,
                pulse: 0,
                pid: std::process::id(),
            })
            .collect();
        let cfg = Config {
            chunk_bytes: 1024,
            window: 8,
            drop_rate,
            drop_seed: size as u64,
            timeout: std::time::Duration::from_secs(30),
            ..Config::default()
        };
        let (entered, flushed) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let ranks: Vec<_> = socks.into_iter().enumerate().collect();
        on_threads(ranks, |(rank, (sock, _))| {
            let mut t = Udp::new(rank, 42, sock, &table, None, Vec::new(), cfg.clone())
                .unwrap_or_else(|e| panic!("{e}"));
            // Messages of several datagrams, fewer of them than above: each loss costs a resend timer.
            flat_algorithms(&mut t, &entered, &[0, 1, 7, 3001]);
            t.flush().unwrap_or_else(|e| panic!("flush: {e}"));
            // A rank that is done keeps acknowledging until every rank is (the launcher would tell
            // the others that it exited; there is none here).
            flushed.fetch_add(1, Ordering::SeqCst);
            while flushed.load(Ordering::SeqCst) < size {
                Level::service(&mut t);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let stats = t.stats();
            if drop_rate > 0.0 {
                assert!(
                    stats.dropped_injected > 0 && stats.retransmits > 0,
                    "rank {rank}: no loss to recover from: {stats:?}"
                );
            }
        });
    }
}

/// Every collective through the engine (the flat dispatch, or the hierarchical algorithms).
fn engine_collectives(e: &mut Engine, entered: &AtomicUsize) {
    let (rank, size) = (e.session_ref().rank(), e.session_ref().size());
    let mut calls = Calls { seq: 0 };
    for case in CASES {
        let (dtype, op) = case.dtype_op();
        for count in COUNTS {
            let mine = case.buffer(rank, count);
            let want = case.expected(size, count);
            for root in roots(size) {
                let what = format!("{case:?} x{count} root {root}");
                let ctx = calls.ctx(Coll::Reduce, Some(case), count, root);
                let mut out = vec![0xA5; mine.len()];
                let recv = (rank == root).then_some(out.as_mut_slice());
                ecall(e, &ctx, |e| e.reduce(&ctx, &mine, recv, dtype, op, root));
                if rank == root {
                    check(&format!("reduce {what}"), rank, &out, &want);
                }
                let ctx = calls.ctx(Coll::Reduce, Some(case), count, root);
                let mut buf = mine.clone();
                ecall(e, &ctx, |e| {
                    e.reduce_in_place(&ctx, &mut buf, dtype, op, root)
                });
                if rank == root {
                    check(&format!("reduce in place {what}"), rank, &buf, &want);
                }
                let ctx = calls.ctx(Coll::Bcast, Some(case), count, root);
                let mut buf = if rank == root {
                    case.buffer(root, count)
                } else {
                    vec![0xA5; mine.len()]
                };
                ecall(e, &ctx, |e| e.bcast(&ctx, &mut buf, root));
                check(
                    &format!("bcast {what}"),
                    rank,
                    &buf,
                    &case.buffer(root, count),
                );
            }
            let ctx = calls.ctx(Coll::Allreduce, Some(case), count, 0);
            let mut buf = mine.clone();
            ecall(e, &ctx, |e| e.allreduce(&ctx, &mut buf, dtype, op));
            check(&format!("allreduce {case:?} x{count}"), rank, &buf, &want);
            let ctx = calls.ctx(Coll::Allgather, Some(case), count, 0);
            let block = mine.len();
            let mut all = vec![0x5A; block * size];
            all[rank * block..(rank + 1) * block].copy_from_slice(&mine);
            ecall(e, &ctx, |e| e.allgather(&ctx, &mut all, block));
            let want_all: Vec<u8> = (0..size).flat_map(|r| case.buffer(r, count)).collect();
            check(
                &format!("allgather {case:?} x{count}"),
                rank,
                &all,
                &want_all,
            );
        }
        let ctx = calls.ctx(Coll::Barrier, None, 0, 0);
        let round = entered.fetch_add(1, Ordering::SeqCst) / size;
        ecall(e, &ctx, |e| e.barrier(&ctx));
        let now = entered.load(Ordering::SeqCst);
        assert!(
            now >= (round + 1) * size,
            "barrier: rank {rank} left round {round} when only {now} entries were made"
        );
    }
    e.session()
        .flush()
        .unwrap_or_else(|err| panic!("flush: rank {rank}: {err}"));
}

#[test]
fn flat_dispatch_on_1_to_17_ranks() {
    for size in 1..=17 {
        let entered = AtomicUsize::new(0);
        let engines = mesh(size, true, 100 + size as u64)
            .into_iter()
            .map(|m| Engine::Flat(Box::new(m)));
        on_threads(engines.collect(), |mut e| {
            engine_collectives(&mut e, &entered)
        });
    }
}

/// One hierarchical engine per rank of a job laid out as `hosts`: a mesh per host, one between
/// the leaders.
fn hier_engines(hosts: &[u32], seed: u64) -> Vec<Engine> {
    let layout = Layout::of_host_ids(hosts.iter().copied());
    let mut locals: Vec<Vec<Option<Mem>>> = layout
        .hosts
        .iter()
        .enumerate()
        .map(|(h, m)| {
            mesh(m.len(), true, seed + h as u64)
                .into_iter()
                .map(Some)
                .collect()
        })
        .collect();
    let mut nets: Vec<Option<Mem>> = mesh(layout.hosts.len(), true, seed + 1000)
        .into_iter()
        .map(Some)
        .collect();
    (0..hosts.len())
        .map(|rank| {
            let (h, i) = layout.place[rank];
            let local: Box<dyn Level> = Box::new(locals[h][i].take().expect("one rank per place"));
            let net = (i == 0)
                .then(|| Box::new(nets[h].take().expect("one leader per host")) as Box<dyn Level>);
            Engine::Hier(Box::new(Hier::from_levels(
                rank,
                layout.clone(),
                local,
                net,
                false,
            )))
        })
        .collect()
}

#[test]
fn hierarchical_on_every_layout() {
    let layouts: &[&[u32]] = &[
        &[0, 0, 1, 1],
        &[0, 1, 0, 1, 2],
        &[0, 0, 0, 1],
        &[0, 1, 2],
        &[1, 0, 0, 0, 0, 2, 2, 1, 2],
        &[0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 3],
    ];
    for (n, hosts) in layouts.iter().enumerate() {
        let entered = AtomicUsize::new(0);
        on_threads(hier_engines(hosts, 7 * n as u64), |mut e| {
            engine_collectives(&mut e, &entered)
        });
    }
}

/// A rank that gives up a collective fails it on every rank, naming itself (through the other
/// level on the hierarchical path), instead of leaving them to time out.
#[test]
fn a_failure_reaches_every_rank_on_both_paths() {
    let quitter = 5;
    let flat: Vec<Engine> = mesh(9, true, 3)
        .into_iter()
        .map(|mut m| {
            m.set_timeout(std::time::Duration::from_secs(60));
            Engine::Flat(Box::new(m))
        })
        .collect();
    let hier = hier_engines(&[0, 0, 1, 1, 2, 2, 2, 0, 1], 11);
    for engines in [flat, hier] {
        on_threads(engines, |mut e| {
            let rank = e.session_ref().rank();
            let case = Case::SumI32;
            let mut calls = Calls { seq: 0 };
            let ctx = calls.ctx(Coll::Allreduce, Some(case), 64, 0);
            let mut buf = case.buffer(rank, 64);
            let started = std::time::Instant::now();
            let res = if rank == quitter {
                let err = Error::protocol(rank, ctx.describe(), "the test gives up".into());
                e.session().fail(&ctx, &err);
                return;
            } else {
                e.allreduce(&ctx, &mut buf, DType::I32, Op::Sum)
            };
            let err = match res {
                Ok(()) => panic!("rank {rank}: the allreduce succeeded without rank {quitter}"),
                Err(err) => err,
            };
            // As the communicator does: a rank that fails tells the others.
            e.session().fail(&ctx, &err);
            let text = err.to_string();
            assert!(
                text.contains(&format!("rank {quitter}")) && text.contains("the test gives up"),
                "rank {rank}: {text}"
            );
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "rank {rank} waited for a timeout"
            );
        });
    }
}
