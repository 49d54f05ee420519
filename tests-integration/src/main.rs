//! `boad-check MODE`: a rank program for the multi-process tests, run under `boadrun`.
//!
//! Every rank generates its contribution from a seed shared by all ranks, runs the collective, and
//! compares the result with a reference it computes itself from every rank's (re-generated) data,
//! with arithmetic of its own (`Val::reference`, not `boad::ops`; its unit test checks it against
//! the hand-written `boad_test_support::oracle`). Each rank judges its own result: a wrong one
//! prints the case and exits 1 on that rank, whatever the others found (no collective agrees on a
//! verdict); a collective error exits 2 unless the mode expects it.
//!
//! Modes:
//! - `matrix [--quick]`: every collective x op x dtype x size (0, 1, odd, one chunk, chunk + 1,
//!   multi-chunk, 1 MiB for a subset) x root (0, middle, last), in place and not; then random cases
//!   drawn by proptest from a seed shared by all ranks.
//! - `random N`: N random cases only (for large jobs).
//! - `big`: bcast and allreduce of 16 MiB.
//! - `foreign`: every rank sprays foreign datagrams at every peer's port, then runs a quick matrix.
//! - `hostile`: the quick matrix while every rank sends every other one datagrams that must be
//!   refused (truncated, garbage, absurd sizes), also from a peer's own address when root; see
//!   `hostile.rs`.
//! - `mismatch`: count, dtype, op and root mismatches; every rank must get an error, then a good
//!   collective must still work.
//! - `exit-mid RANK`: RANK exits with status 3 before an allreduce; the others must get an error
//!   naming it.
//! - `freeze RANK`: RANK stops itself (SIGSTOP) before an allreduce: alive to the kernel, it answers
//!   nothing; the others must time out naming it.
//! - `cut RANK`: RANK's host loses its network (`ip link set eth0 down`, in a virtual cluster)
//!   before an allreduce; the others must time out naming it.
//! - `busy RANK [MS]`: RANK computes outside boad for MS ms (default 3000) between two allreduces;
//!   the others wait for it (warning that they do) and every rank prints `busy ok`.
//! - `kill-mid RANK [ELEMS]`: RANK SIGKILLs itself while allreduces of ELEMS i32 (default 1 Mi: 4 MiB)
//!   run; the others must fail.
//! - `kernel-proof`: on the kernel path, the paths each collective takes, flow control of back-to-back
//!   reduces to one root, and counters showing the root of a one-datagram bcast makes one send and
//!   the root of a reduce receives one datagram.
//! - `path NAME`: a few collectives, then `last_path()` must be NAME (`udp` or `shm`).
//! - `shm-path`: prints the path of this job's shared-memory segment on this host, without joining
//!   the job (for tests that put something there first).
//! - `forge ROUNDS`: ROUNDS allreduces of i64 sums over 3 kernel chunks, each of which must take the
//!   kernel path (`kernel`, or `hier-kernel` between the host leaders) and be exact. Before each but
//!   the last, rank 0 sends from a socket of its own (not a rank's), with the job key from
//!   `BOAD_JOB`, CONTRIBs for the next allreduce that claim to come from every other rank (`src`, in
//!   `WORLD`; on the hierarchical path host leaders in `LEADERS`), each chunk to every rank's port,
//!   and prints `forged N datagrams` (N = (ROUNDS - 1) x claims x ranks with a socket x 3).
//!
//! A mode that succeeded ends with `finalize`, and fails the rank (exit 2) if that fails.
//!
//! Rank 0 first prints `job <key>` (the job key, to find the job's files). Every rank of the modes
//! that check results ends with one line `rank R: N cases, B wrong; path=P name=value ...` (its
//! counters: collectives per path, datagrams, sends the network refused, retransmits, injected
//! drops, foreign datagrams, KNACKs, fold threads and folds run on them),
//! `exit-mid`, `freeze`, `cut` and `kill-mid` print `rank R: before: path=P ...` once their first
//! allreduce is done, and `busy` and `mismatch` end with `rank R: busy ok; path=P ...` and
//! `rank R: mismatch done; path=P ...`: what the tests count to know which paths ran.
#![deny(missing_docs)]

mod hostile;

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;

use boad::{Communicator, DType, Element, Op};
use boad_common::kernel::comm::{LEADERS, WORLD};
use boad_common::kernel::MAX_PAYLOAD;
use boad_common::{coll, kind, Header, MAGIC, VERSION};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use rand::{Rng, SeedableRng};

/// Values a test element can take, and the reference arithmetic.
trait Val: Element + PartialEq + std::fmt::Debug {
    fn gen(rng: &mut rand::rngs::StdRng, special: bool) -> Self;
    fn reference(op: Op, a: Self, b: Self) -> Self;
    fn same(a: Self, b: Self) -> bool;
}

macro_rules! int_val {
    ($($t:ty),*) => {$(
        impl Val for $t {
            fn gen(rng: &mut rand::rngs::StdRng, _: bool) -> Self {
                // Mostly full range; some zeros and small values so logical ops see both answers.
                match rng.gen_range(0..4) {
                    0 => 0,
                    1 => rng.gen_range(0..3) as $t,
                    _ => rng.gen(),
                }
            }
            fn reference(op: Op, a: Self, b: Self) -> Self {
                match op {
                    Op::Sum => a.wrapping_add(b),
                    Op::Prod => a.wrapping_mul(b),
                    Op::Min => if a < b { a } else { b },
                    Op::Max => if a > b { a } else { b },
                    Op::Band => a & b,
                    Op::Bor => a | b,
                    Op::Bxor => a ^ b,
                    Op::Land => if a != 0 && b != 0 { 1 } else { 0 },
                    Op::Lor => if a != 0 || b != 0 { 1 } else { 0 },
                }
            }
            fn same(a: Self, b: Self) -> bool { a == b }
        }
    )*};
}
int_val!(i8, i16, i32, i64, u8, u16, u32, u64);

macro_rules! float_val {
    ($($t:ty),*) => {$(
        impl Val for $t {
            fn gen(rng: &mut rand::rngs::StdRng, special: bool) -> Self {
                // Small dyadic values: sums and products of up to 16 of them are exact in any order.
                const V: [$t; 8] = [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0];
                if special && rng.gen_range(0..8) == 0 {
                    return [<$t>::NAN, -0.0, <$t>::INFINITY, <$t>::NEG_INFINITY][rng.gen_range(0..4)];
                }
                V[rng.gen_range(0..V.len())]
            }
            fn reference(op: Op, a: Self, b: Self) -> Self {
                match op {
                    Op::Sum => a + b,
                    Op::Prod => a * b,
                    Op::Min | Op::Max if a.is_nan() || b.is_nan() => <$t>::NAN,
                    // -0.0 orders below 0.0
                    Op::Min => if (a, a.is_sign_positive()) <= (b, b.is_sign_positive()) { a } else { b },
                    Op::Max => if (a, a.is_sign_positive()) >= (b, b.is_sign_positive()) { a } else { b },
                    _ => unreachable!("float with a bitwise op is never generated"),
                }
            }
            fn same(a: Self, b: Self) -> bool {
                (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
            }
        }
    )*};
}
float_val!(f32, f64);

/// A collective call to check.
#[derive(Clone, Copy, Debug)]
enum Call {
    Bcast,
    Reduce { in_place: bool },
    Allreduce { in_place: bool },
    Allgather,
    Barrier,
}

#[derive(Clone, Copy, Debug)]
struct Case {
    call: Call,
    op: Op,
    dtype: DType,
    count: usize,
    root: usize,
    seed: u64,
}

fn data<T: Val>(case: &Case, rank: usize) -> Vec<T> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(case.seed ^ ((rank as u64 + 1) << 40));
    let special = matches!(case.op, Op::Min | Op::Max);
    (0..case.count).map(|_| T::gen(&mut rng, special)).collect()
}

fn check<T: Val>(comm: &mut Communicator, case: &Case) -> Result<Result<(), String>, boad::Error> {
    let (rank, size) = (comm.rank(), comm.size());
    let mine = data::<T>(case, rank);
    let all = || (0..size).map(|r| data::<T>(case, r));
    let reduced = || {
        all()
            .reduce(|a, b| {
                a.iter()
                    .zip(&b)
                    .map(|(x, y)| T::reference(case.op, *x, *y))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (got, want): (Vec<T>, Vec<T>) = match case.call {
        Call::Bcast => {
            let mut buf = if rank == case.root {
                mine
            } else {
                vec![T::zeroed(); case.count]
            };
            comm.bcast(&mut buf, case.root)?;
            (buf, data::<T>(case, case.root))
        }
        Call::Reduce { in_place: false } => {
            let mut recv = vec![T::zeroed(); if rank == case.root { case.count } else { 0 }];
            comm.reduce(&mine, &mut recv, case.op, case.root)?;
            if rank == case.root {
                (recv, reduced())
            } else {
                (recv, vec![])
            }
        }
        Call::Reduce { in_place: true } => {
            let mut buf = mine.clone();
            comm.reduce_in_place(&mut buf, case.op, case.root)?;
            if rank == case.root {
                (buf, reduced())
            } else {
                (buf, mine)
            }
        }
        Call::Allreduce { in_place: false } => {
            let mut recv = vec![T::zeroed(); case.count];
            comm.allreduce(&mine, &mut recv, case.op)?;
            (recv, reduced())
        }
        Call::Allreduce { in_place: true } => {
            let mut buf = mine;
            comm.allreduce_in_place(&mut buf, case.op)?;
            (buf, reduced())
        }
        Call::Allgather => {
            let mut recv = vec![T::zeroed(); case.count * size];
            comm.allgather(&mine, &mut recv)?;
            (recv, all().flatten().collect())
        }
        Call::Barrier => {
            comm.barrier()?;
            (vec![], vec![])
        }
    };
    if got.len() != want.len() {
        return Ok(Err(format!("length {} != {}", got.len(), want.len())));
    }
    if let Some(i) = (0..got.len()).find(|&i| !T::same(got[i], want[i])) {
        return Ok(Err(format!(
            "element {i}: got {:?}, want {:?}",
            got[i], want[i]
        )));
    }
    Ok(Ok(()))
}

fn run_case(comm: &mut Communicator, case: &Case) -> Result<Result<(), String>, boad::Error> {
    match case.dtype {
        DType::I8 => check::<i8>(comm, case),
        DType::I16 => check::<i16>(comm, case),
        DType::I32 => check::<i32>(comm, case),
        DType::I64 => check::<i64>(comm, case),
        DType::U8 => check::<u8>(comm, case),
        DType::U16 => check::<u16>(comm, case),
        DType::U32 => check::<u32>(comm, case),
        DType::U64 => check::<u64>(comm, case),
        DType::F32 => check::<f32>(comm, case),
        DType::F64 => check::<f64>(comm, case),
    }
}

/// The fixed matrix.
fn matrix_cases(size: usize, chunk: usize, quick: bool) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut seed = 1u64;
    let roots: Vec<usize> = {
        let mut r = vec![0, size / 2, size - 1];
        r.dedup();
        r
    };
    for dtype in DType::ALL {
        let e = dtype.size();
        let mut counts = vec![0, 1, 37, chunk / e, chunk / e + 1, 3 * chunk / e + 5];
        if quick {
            counts = vec![0, 1, chunk / e + 1, 3 * chunk / e + 5];
        }
        for &count in &counts {
            let mut push = |call, op, root| {
                seed += 1;
                cases.push(Case {
                    call,
                    op,
                    dtype,
                    count,
                    root,
                    seed,
                });
            };
            for &root in &roots {
                push(Call::Bcast, Op::Sum, root);
            }
            push(Call::Allgather, Op::Sum, 0);
            for op in Op::ALL.into_iter().filter(|o| o.supports(dtype)) {
                for (i, &root) in roots.iter().enumerate() {
                    push(Call::Reduce { in_place: i == 1 }, op, root);
                }
                push(Call::Allreduce { in_place: false }, op, 0);
                push(Call::Allreduce { in_place: true }, op, 0);
            }
        }
        if !quick {
            // 1 MiB, a few ops per dtype.
            let count = (1 << 20) / e;
            let ops = if dtype.is_float() {
                [Op::Sum, Op::Max]
            } else {
                [Op::Sum, Op::Bxor]
            };
            for op in ops {
                seed += 1;
                cases.push(Case {
                    call: Call::Allreduce { in_place: true },
                    op,
                    dtype,
                    count,
                    root: 0,
                    seed,
                });
            }
            seed += 1;
            cases.push(Case {
                call: Call::Bcast,
                op: Op::Sum,
                dtype,
                count,
                root: size - 1,
                seed,
            });
        }
    }
    cases.push(Case {
        call: Call::Barrier,
        op: Op::Sum,
        dtype: DType::U8,
        count: 0,
        root: 0,
        seed: 0,
    });
    cases
}

/// Random cases, identical on every rank: proptest draws them from a fixed seed (no shrinking, which
/// could not be coordinated across ranks; a failing case is printed whole instead).
fn random_cases(size: usize, chunk: usize, n: usize) -> Vec<Case> {
    let mut runner = TestRunner::new_with_rng(
        Config {
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strat = (
        0..5usize,
        0..9usize,
        0..10usize,
        0..(4 * chunk),
        0..size,
        proptest::num::u64::ANY,
    );
    let mut out = Vec::new();
    while out.len() < n {
        let Ok(tree) = strat.new_tree(&mut runner) else {
            break;
        };
        let (c, o, d, count, root, seed) = tree.current();
        let (op, dtype) = (Op::ALL[o], DType::ALL[d]);
        if !op.supports(dtype) {
            continue;
        }
        let call = [
            Call::Bcast,
            Call::Reduce {
                in_place: seed % 2 == 0,
            },
            Call::Allreduce {
                in_place: seed % 2 == 1,
            },
            Call::Allgather,
            Call::Barrier,
        ][c];
        out.push(Case {
            call,
            op,
            dtype,
            count: count / dtype.size(),
            root,
            seed,
        });
    }
    out
}

fn run_all(comm: &mut Communicator, cases: &[Case]) -> ExitCode {
    let mut bad = 0;
    for case in cases {
        match run_case(comm, case) {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                bad += 1;
                eprintln!("rank {}: WRONG RESULT {case:?}: {why}", comm.rank());
            }
            Err(e) => {
                eprintln!("rank {}: ERROR in {case:?}: {e}", comm.rank());
                return ExitCode::from(2);
            }
        }
    }
    println!(
        "rank {}: {} cases, {} wrong; {}",
        comm.rank(),
        cases.len(),
        bad,
        counters(comm)
    );
    if bad > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// This rank's counters as `name=value` words (the names of `boad::Stats`), after `path=` (the path
/// of its last collective): what the tests check to know which paths ran and what was lost.
fn counters(comm: &Communicator) -> String {
    let s = comm.stats();
    format!(
        "path={} collectives_udp={} collectives_kernel={} collectives_shm={} collectives_hier={} \
         datagrams_sent={} datagrams_received={} send_failed={} retransmits={} dropped_injected={} \
         foreign={} kernel_knacks={} kernel_bypass_rounds={} fold_threads={} folds_parallel={}",
        comm.last_path().map_or("none", |p| p.name()),
        s.collectives_udp,
        s.collectives_kernel,
        s.collectives_shm,
        s.collectives_hier,
        s.datagrams_sent,
        s.datagrams_received,
        s.send_failed,
        s.retransmits,
        s.dropped_injected,
        s.foreign,
        s.kernel_knacks,
        s.kernel_bypass_rounds,
        comm.fold_threads(),
        s.folds_parallel
    )
}

/// Sends datagrams no rank should accept to every peer's socket.
fn spray_foreign(comm: &mut Communicator) -> Result<(), boad::Error> {
    let me = comm.local_addr().expect("socket address");
    let port = [u32::from(me.port())];
    let mut ports = vec![0u32; comm.size()];
    comm.allgather(&port, &mut ports)?;
    let sock = std::net::UdpSocket::bind((me.ip(), 0)).expect("bind a spare socket");
    for (r, p) in ports.iter().enumerate() {
        if r == comm.rank() {
            continue;
        }
        let to = (me.ip(), *p as u16);
        let mut good_looking = [0u8; 72 + 16];
        good_looking[..4].copy_from_slice(b"BOAD");
        good_looking[4] = 1; // version
        good_looking[5] = 1; // DATA
        good_looking[16..24].copy_from_slice(&0xdead_beef_u64.to_le_bytes()); // wrong job key
        for d in [&b"hello"[..], &[0u8; 200][..], &good_looking[..]] {
            for _ in 0..10 {
                let _ = sock.send_to(d, to);
            }
        }
    }
    comm.barrier()
}

fn expect_errors(comm: &mut Communicator) -> ExitCode {
    let (rank, size) = (comm.rank(), comm.size());
    let ok = std::cell::Cell::new(true);
    let expect_err = |what: &str, r: boad::Result<()>| match r {
        Ok(()) => {
            eprintln!("rank {rank}: {what}: expected an error, got Ok");
            ok.set(false);
        }
        Err(e) => println!("rank {rank}: {what}: error as expected: {e}"),
    };
    let odd = rank == size - 1;
    let mut v = vec![1i32; if odd { 11 } else { 10 }];
    expect_err("count mismatch", comm.allreduce_in_place(&mut v, Op::Sum));
    let mut good = [rank as i64];
    if let Err(e) = comm.allreduce_in_place(&mut good, Op::Sum) {
        eprintln!("rank {rank}: allreduce after a mismatch failed: {e}");
        ok.set(false);
    }
    let r = if odd {
        comm.allreduce_in_place(&mut [1u32; 4], Op::Sum)
    } else {
        comm.allreduce_in_place(&mut [1i32; 4], Op::Sum)
    };
    expect_err("dtype mismatch", r);
    let op = if odd { Op::Max } else { Op::Min };
    expect_err("op mismatch", comm.allreduce_in_place(&mut [1u8; 4], op));
    expect_err(
        "float with band",
        comm.allreduce_in_place(&mut [1.0f32; 2], Op::Band),
    );
    // An argument rejected by a binding on one rank fails the collective everywhere, at once.
    let r = if odd {
        Err(comm.fail_collective(boad::Coll::Allreduce, "rejected by the binding"))
    } else {
        comm.allreduce_in_place(&mut [1i32; 4], Op::Sum)
    };
    expect_err("local error", r);
    // A rank that believes it is the root of a bcast hears from nobody, so a wrong root can only be
    // seen by the ranks it sends to; the others learn it at their next collective at the latest.
    let root = if odd { 1 } else { 0 };
    let first = comm.bcast(&mut [7u16; 3], root);
    let then = comm.barrier();
    expect_err("root mismatch", first.and(then));
    let n = size as i64;
    if good[0] != n * (n - 1) / 2 {
        eprintln!("rank {rank}: allreduce after a mismatch gave {}", good[0]);
        ok.set(false);
    }
    println!("rank {rank}: mismatch done; {}", counters(comm));
    if ok.get() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// See the module docs (`kernel-proof`).
fn kernel_proof(comm: &mut Communicator) -> ExitCode {
    let (rank, size) = (comm.rank(), comm.size());
    let root = size - 1;
    let mut bad = Vec::new();
    let mut path_is = |what: &str, comm: &Communicator, want: boad::Path| {
        if comm.last_path() != Some(want) {
            bad.push(format!("{what} took {:?}, want {want:?}", comm.last_path()));
        }
    };
    let step = |r: boad::Result<()>| r.map_err(|e| e.to_string());
    let result = (|| -> Result<(Vec<u64>, Vec<u64>), String> {
        let mut b = [7u64; 4];
        step(comm.bcast(&mut b, root))?;
        path_is("bcast", comm, boad::Path::Kernel);
        let mut v = [rank as i32; 100];
        step(comm.allreduce_in_place(&mut v, Op::Sum))?;
        path_is("allreduce i32 sum", comm, boad::Path::Kernel);
        step(comm.allreduce_in_place(&mut [1.5f32; 4], Op::Max))?;
        path_is("allreduce f32 max", comm, boad::Path::Kernel);
        step(comm.allreduce_in_place(&mut [1.5f32; 4], Op::Sum))?;
        path_is(
            "allreduce f32 sum (not folded in the kernel)",
            comm,
            boad::Path::Udp,
        );
        let mut all = vec![0u16; size * 3];
        step(comm.allgather(&[rank as u16; 3], &mut all))?;
        path_is("allgather", comm, boad::Path::Kernel);
        step(comm.barrier())?;
        path_is("barrier", comm, boad::Path::Kernel);
        let mut big = vec![1u8; 1 << 20];
        step(comm.allreduce_in_place(&mut big, Op::Bor))?;
        path_is(
            "allreduce of 1 MiB (over the kernel's 64 KiB)",
            comm,
            boad::Path::Udp,
        );
        // Syscalls and datagrams: a one-datagram bcast costs the root one send, a one-chunk
        // reduce costs the root one receive, whatever the number of ranks.
        let (mut sends, mut recvs) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            step(comm.barrier())?;
            let before = comm.stats();
            let mut b = [rank as u64; 8];
            step(comm.bcast(&mut b, root))?;
            sends.push(comm.stats().send_calls - before.send_calls);
            step(comm.barrier())?;
            let before = comm.stats();
            let mut r = [0u32; 64];
            step(comm.reduce(
                &[1u32; 64],
                if rank == root { &mut r } else { &mut [] },
                Op::Sum,
                root,
            ))?;
            recvs.push(comm.stats().kernel_datagrams_received - before.kernel_datagrams_received);
            if rank == root && r != [size as u32; 64] {
                return Err(format!("reduce gave {:?}", &r[..4]));
            }
        }
        // Back-to-back reductions to one root with no barrier: contributors could run ahead of
        // the root past the kernel's slots; every 16th reduce the root releases them (flow
        // control), which they count as a received kernel broadcast. (10 reduces came before; the
        // barrier keeps this loop's RESULTs out of the last window counted above.)
        step(comm.barrier())?;
        let before = comm.stats();
        for i in 0..160u32 {
            let mut r = [0u32; 4];
            step(comm.reduce(
                &[i + rank as u32; 4],
                if rank == root { &mut r } else { &mut [] },
                Op::Sum,
                root,
            ))?;
            let want = (0..size as u32).map(|k| i + k).sum::<u32>();
            if rank == root && r != [want; 4] {
                return Err(format!("back-to-back reduce {i} gave {r:?}, want {want}"));
            }
        }
        let credits = comm.stats().kernel_bcast_received - before.kernel_bcast_received;
        if rank != root && credits != 10 {
            return Err(format!(
                "160 back-to-back reduces released this contributor {credits} times, want 10"
            ));
        }
        Ok((sends, recvs))
    })();
    match result {
        Err(e) => {
            eprintln!("rank {rank}: {e}");
            ExitCode::from(2)
        }
        Ok((mut sends, mut recvs)) => {
            sends.sort();
            recvs.sort();
            if rank == root {
                // Medians: a retransmission asked for by a slow receiver may add one now and then.
                println!("root bcast send calls: median {} of {sends:?}", sends[5]);
                println!(
                    "root reduce datagrams (RESULT or unfolded) received: at most {} ({recvs:?})",
                    recvs[9]
                );
                // (0 when the result came in while the root was still in the barrier before.)
                if sends[5] != 1 || recvs[9] > 1 {
                    bad.push("the root's sends or receives grew with the number of ranks".into());
                }
            }
            for b in &bad {
                eprintln!("rank {rank}: {b}");
            }
            if bad.is_empty() {
                println!("rank {rank}: kernel proof ok");
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// A socket address as one `u64` (IPv4 address << 16 | port), 0 for none.
fn encode(addr: Option<SocketAddr>) -> u64 {
    match addr {
        Some(SocketAddr::V4(a)) => u64::from(u32::from(*a.ip())) << 16 | u64::from(a.port()),
        _ => 0,
    }
}

fn decode(v: u64) -> Option<SocketAddr> {
    (v != 0).then(|| {
        let ip = std::net::Ipv4Addr::from((v >> 16) as u32);
        SocketAddr::from((ip, v as u16))
    })
}

/// Elements of a `forge` allreduce: three kernel chunks (1024, 1024 and 352 bytes).
const FORGE_ELEMS: usize = 300;

/// Rank `rank`'s buffer for `forge` round `round`.
fn forge_data(rank: usize, round: usize) -> Vec<i64> {
    (0..FORGE_ELEMS)
        .map(|j| (rank as i64 + 1) * 1_000_003 + round as i64 * 7_919 + j as i64)
        .collect()
}

/// Sends, from `sock`, a CONTRIB of every chunk of a `forge` allreduce with `seq`, with `job`'s
/// key, claiming to be each of `claims` in communicator `comm`, to each of `to`; returns how many
/// were sent.
fn send_forgeries(
    sock: &UdpSocket,
    job: u64,
    comm: u32,
    seq: u32,
    claims: std::ops::Range<u32>,
    to: &[SocketAddr],
) -> u64 {
    let total = FORGE_ELEMS * 8;
    let nchunks = total.div_ceil(MAX_PAYLOAD);
    let mut sent = 0;
    for src in claims {
        for dst in to {
            for chunk in 0..nchunks {
                let len = MAX_PAYLOAD.min(total - chunk * MAX_PAYLOAD);
                let h = Header {
                    magic: MAGIC,
                    version: VERSION,
                    kind: kind::CONTRIB,
                    coll: coll::ALLREDUCE,
                    op: Op::Sum as u8,
                    dtype: DType::I64 as u8,
                    src,
                    job,
                    comm,
                    seq,
                    chunk: chunk as u32,
                    nchunks: nchunks as u32,
                    count: FORGE_ELEMS as u64,
                    len: len as u32,
                    total: total as u32,
                    ..Header::default()
                };
                let mut d = bytemuck::bytes_of(&h).to_vec();
                // Folded in, these would change every sum.
                d.extend((0..len / 8).flat_map(|_| (1i64 << 40).to_le_bytes()));
                if sock.send_to(&d, dst).is_ok() {
                    sent += 1;
                }
            }
        }
    }
    sent
}

/// See the module docs (`forge`).
fn forge(comm: &mut Communicator, rounds: usize) -> ExitCode {
    let (rank, size) = (comm.rank(), comm.size());
    let fail = |why: String| {
        eprintln!("rank {rank}: {why}");
        ExitCode::from(2)
    };
    // Collective 0: every rank's socket (none on a rank that is not its host's leader on the
    // hierarchical path).
    let mut all = vec![0u64; size];
    if let Err(e) = comm.allgather(&[encode(comm.local_addr())], &mut all) {
        return fail(e.to_string());
    }
    let socks: Vec<SocketAddr> = all.iter().filter_map(|v| decode(*v)).collect();
    let mut path = comm.last_path();
    let Some(job) = std::env::var("BOAD_JOB")
        .ok()
        .and_then(|k| u64::from_str_radix(&k, 16).ok())
    else {
        return fail("no job key in BOAD_JOB".into());
    };
    // Rank 0's extra socket, on its own address: a process of the job, but not a rank's socket.
    let forger = match (rank, comm.local_addr()) {
        (0, Some(me)) => match UdpSocket::bind((me.ip(), 0)) {
            Ok(s) => Some(s),
            Err(e) => return fail(format!("binding the forger's socket: {e}")),
        },
        (0, None) => return fail("rank 0 has no socket".into()),
        _ => None,
    };
    let (mut wrong, mut forged) = (0, 0u64);
    for round in 0..rounds {
        // Collective 1 + round; the forgeries are for the next one, which no rank can have
        // contributed to yet: it waits for this one's result from rank 0.
        let seq = 1 + round as u32;
        let (comm_id, claims) = match path {
            // Rank `src` of the job.
            Some(boad::Path::Kernel) => (WORLD, 1..size as u32),
            // Host leader `src`, by host.
            Some(boad::Path::HierKernel) => (LEADERS, 1..socks.len() as u32),
            other => {
                return fail(format!(
                    "collective {} took {other:?}, not the kernel path",
                    seq - 1
                ))
            }
        };
        if let Some(f) = forger.as_ref().filter(|_| round + 1 < rounds) {
            forged += send_forgeries(f, job, comm_id, seq + 1, claims, &socks);
        }
        let mut v = forge_data(rank, round);
        if let Err(e) = comm.allreduce_in_place(&mut v, Op::Sum) {
            return fail(format!("allreduce {round}: {e}"));
        }
        path = comm.last_path();
        let want: Vec<i64> = (0..size)
            .map(|r| forge_data(r, round))
            .reduce(|a, b| a.iter().zip(&b).map(|(x, y)| x.wrapping_add(*y)).collect())
            .unwrap_or_default();
        if let Some(j) = (0..FORGE_ELEMS).find(|&j| v[j] != want[j]) {
            wrong += 1;
            eprintln!(
                "rank {rank}: WRONG RESULT in allreduce {round}: element {j}: got {}, want {}",
                v[j], want[j]
            );
        }
    }
    if !matches!(path, Some(boad::Path::Kernel | boad::Path::HierKernel)) {
        return fail(format!(
            "the last allreduce took {path:?}, not the kernel path"
        ));
    }
    if forger.is_some() {
        println!("forged {forged} datagrams");
    }
    println!(
        "rank {rank}: forge: {rounds} cases, {wrong} wrong; path={} foreign={}",
        path.map_or("none", |p| p.name()),
        comm.stats().foreign
    );
    if wrong > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `service-register SOCKET N [IP:PORT...]`: registers a job with the kernel service at SOCKET
/// whose members are N UDP sockets this process binds on 127.0.0.1 followed by the given
/// addresses; prints `granted <trigger> <world>` and holds the registration until stdin ends
/// (exit 0), or prints `refused: <why>` (exit 3).
fn service_register(args: &[String]) -> ExitCode {
    let (Some(socket), Some(Ok(n))) = (args.first(), args.get(1).map(|a| a.parse::<usize>()))
    else {
        eprintln!("usage: boad-check service-register SOCKET N [IP:PORT...]");
        return ExitCode::from(2);
    };
    let mut own = Vec::new();
    let mut table = Vec::new();
    let mut add = |ip, port| {
        table.push(boad_proto::PeerEntry {
            rank: table.len(),
            host_id: 0,
            ip,
            port,
            pulse: 0,
            pid: std::process::id(),
        })
    };
    for _ in 0..n {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = sock.local_addr().expect("local address");
        add(addr.ip(), addr.port());
        own.push(sock);
    }
    for a in &args[2..] {
        let Ok(addr) = a.parse::<std::net::SocketAddr>() else {
            eprintln!("boad-check service-register: {a:?} is not IP:PORT");
            return ExitCode::from(2);
        };
        add(addr.ip(), addr.port());
    }
    let key = rand::random::<u64>() | 1;
    match boad_proto::service::register_at(std::path::Path::new(socket), key, &table, None, None) {
        Ok(grant) => {
            let g = grant.grant();
            println!("granted {} {}", g.trigger, g.world);
            let _ = std::io::Write::flush(&mut std::io::stdout());
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
            drop(grant);
            drop(own);
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("refused: {e}");
            ExitCode::from(3)
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("matrix");
    if mode == "shm-path" {
        let var = |n: &str| std::env::var(n).unwrap_or_default();
        let (Ok(job), Ok(host)) = (
            u64::from_str_radix(&var("BOAD_JOB"), 16),
            var("BOAD_HOST_ID").parse::<u32>(),
        ) else {
            eprintln!("boad-check shm-path: BOAD_JOB or BOAD_HOST_ID missing");
            return ExitCode::from(2);
        };
        println!("{}", boad_proto::shm::segment_path(job, host).display());
        return ExitCode::SUCCESS;
    }
    if mode == "service-register" {
        return service_register(&args[1..]);
    }
    let mut comm = match boad::init() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("boad-check: init failed: {e}");
            return ExitCode::from(2);
        }
    };
    let (size, chunk) = (comm.size(), comm.chunk_bytes());
    if comm.rank() == 0 {
        println!(
            "job {}",
            std::env::var("BOAD_JOB").unwrap_or_else(|_| "none".into())
        );
    }
    let victim = args
        .get(1)
        .and_then(|a| a.parse::<usize>().ok())
        .unwrap_or(1);
    let code = match mode {
        "matrix" => {
            let quick = args.iter().any(|a| a == "--quick");
            let mut cases = matrix_cases(size, chunk, quick);
            cases.extend(random_cases(size, chunk, if quick { 20 } else { 100 }));
            run_all(&mut comm, &cases)
        }
        "random" => {
            let n = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(50);
            run_all(&mut comm, &random_cases(size, chunk, n))
        }
        "big" => {
            let n = 16 << 20;
            let cases = [
                Case {
                    call: Call::Bcast,
                    op: Op::Sum,
                    dtype: DType::U8,
                    count: n,
                    root: size - 1,
                    seed: 3,
                },
                Case {
                    call: Call::Allreduce { in_place: true },
                    op: Op::Sum,
                    dtype: DType::I32,
                    count: n / 4,
                    root: 0,
                    seed: 4,
                },
            ];
            run_all(&mut comm, &cases)
        }
        "foreign" => {
            if let Err(e) = spray_foreign(&mut comm) {
                eprintln!("rank {}: {e}", comm.rank());
                return ExitCode::from(2);
            }
            let code = run_all(&mut comm, &matrix_cases(size, chunk, true));
            if comm.stats().foreign == 0 && size > 1 {
                eprintln!("rank {}: no foreign datagram was counted", comm.rank());
                return ExitCode::from(1);
            }
            code
        }
        "hostile" => hostile::run(&mut comm, &matrix_cases(size, chunk, true)),
        "mismatch" => expect_errors(&mut comm),
        "exit-mid" | "freeze" | "cut" => {
            let mut v = [1u64; 100];
            if let Err(e) = comm.allreduce_in_place(&mut v, Op::Sum) {
                eprintln!("rank {}: first allreduce failed: {e}", comm.rank());
                return ExitCode::from(2);
            }
            println!("rank {}: before: {}", comm.rank(), counters(&comm));
            if comm.rank() == victim {
                match mode {
                    "exit-mid" => std::process::exit(3),
                    // Stopped: alive to the kernel, but it answers nothing any more.
                    // SAFETY: raise has no memory-safety preconditions.
                    "freeze" => unsafe {
                        libc::raise(libc::SIGSTOP);
                    },
                    // Its host loses its network (the rank runs as root in its namespace).
                    _ => {
                        let down = std::process::Command::new("ip")
                            .args(["link", "set", "eth0", "down"])
                            .status();
                        eprintln!("rank {}: eth0 down: {down:?}", comm.rank());
                    }
                }
            }
            match comm.allreduce_in_place(&mut v, Op::Sum) {
                Ok(()) => {
                    eprintln!(
                        "rank {}: allreduce without rank {victim} succeeded",
                        comm.rank()
                    );
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("rank {}: error as expected: {e}", comm.rank());
                    ExitCode::from(4)
                }
            }
        }
        "busy" => {
            // RANK computes outside boad for MS milliseconds between two collectives: the others
            // wait for it (warning that they do) and every result is exact.
            let ms = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3000);
            let mut v = [comm.rank() as u64 + 1; 100];
            let n = size as u64;
            for round in 0..2 {
                if round == 1 && comm.rank() == victim {
                    std::thread::sleep(std::time::Duration::from_millis(ms));
                }
                let mut w = v;
                if let Err(e) = comm.allreduce_in_place(&mut w, Op::Sum) {
                    eprintln!("rank {}: allreduce {round} failed: {e}", comm.rank());
                    return ExitCode::from(2);
                }
                if w != [n * (n + 1) / 2; 100] {
                    println!(
                        "rank {}: allreduce {round}: wrong result {:?}",
                        comm.rank(),
                        &w[..4]
                    );
                    return ExitCode::from(1);
                }
                v = [comm.rank() as u64 + 1; 100];
            }
            if let Err(e) = comm.barrier() {
                eprintln!("rank {}: barrier failed: {e}", comm.rank());
                return ExitCode::from(2);
            }
            println!("rank {}: busy ok; {}", comm.rank(), counters(&comm));
            ExitCode::SUCCESS
        }
        "kill-mid" => {
            let elems = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1 << 20);
            let mut v = vec![1i32; elems];
            if let Err(e) = comm.allreduce_in_place(&mut v, Op::Sum) {
                eprintln!("rank {}: first allreduce failed: {e}", comm.rank());
                return ExitCode::from(2);
            }
            println!("rank {}: before: {}", comm.rank(), counters(&comm));
            if comm.rank() == victim {
                std::thread::spawn(|| {
                    std::thread::sleep(std::time::Duration::from_millis(30));
                    let me = std::process::id().to_string();
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", &me])
                        .status();
                });
            }
            let start = std::time::Instant::now();
            while start.elapsed() < std::time::Duration::from_secs(20) {
                if let Err(e) = comm.allreduce_in_place(&mut v, Op::Sum) {
                    eprintln!("rank {}: error as expected: {e}", comm.rank());
                    return ExitCode::from(4);
                }
            }
            eprintln!(
                "rank {}: allreduces without rank {victim} succeeded",
                comm.rank()
            );
            ExitCode::from(1)
        }
        "kernel-proof" => kernel_proof(&mut comm),
        "forge" => {
            let rounds = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20);
            forge(&mut comm, rounds)
        }
        "path" => {
            let want = args.get(1).map(String::as_str).unwrap_or("shm");
            let mut v = [1u32; 3];
            if let Err(e) = comm.allreduce_in_place(&mut v, Op::Sum) {
                eprintln!("rank {}: {e}", comm.rank());
                return ExitCode::from(2);
            }
            let got = comm.last_path().map(|p| p.name());
            if got != Some(want) {
                eprintln!("rank {}: last_path {got:?}, want {want}", comm.rank());
                return ExitCode::from(1);
            }
            let s = comm.stats();
            let counted = match want {
                "shm" => s.collectives_shm,
                "hier" | "hier-kernel" => s.collectives_hier,
                "kernel" => s.collectives_kernel,
                _ => s.collectives_udp,
            };
            if counted != 1 {
                eprintln!("rank {}: stats {s:?}", comm.rank());
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("boad-check: unknown mode {other}");
            ExitCode::from(2)
        }
    };
    finish(comm, code)
}

/// Ends a mode that succeeded with an explicit `finalize`, so that an error in the job's last
/// step (on the kernel path a collective barrier; an error another rank raised for one of this
/// rank's last collectives) fails the rank instead of only being printed when the communicator is
/// dropped.
fn finish(comm: Communicator, code: ExitCode) -> ExitCode {
    if code != ExitCode::SUCCESS {
        return code;
    }
    let rank = comm.rank();
    match comm.finalize() {
        Ok(()) => code,
        Err(e) => {
            eprintln!("rank {rank}: finalize failed: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boad_test_support::oracle::{self, Elem, Visit};

    /// The worker's reference (`Val::reference`, its own arithmetic, not `boad::ops`) against the
    /// hand-written oracle, every case; compared as the worker compares results (`Val::same`: any
    /// NaN for a NaN, otherwise the same bits, so `-0.0` is not `0.0`). Counted.
    #[test]
    fn reference_matches_the_independent_oracle() {
        struct Check(Vec<String>, usize);
        impl Visit for Check {
            fn visit<T: Elem>(&mut self) {
                self.0.extend(reference_against::<T>(&mut self.1));
            }
        }
        let mut c = Check(vec![], 0);
        oracle::visit_all(&mut c);
        assert!(c.0.is_empty(), "{} wrong:\n{}", c.0.len(), c.0.join("\n"));
        assert_eq!(c.1, oracle::total_cases());
    }

    /// Bridges the oracle's element types to the worker's: the ten are the same Rust types.
    fn reference_against<T: Elem>(count: &mut usize) -> Vec<String> {
        macro_rules! each {
            ($($t:ty),*) => {
                $(if T::DTYPE == stringify!($t) {
                    return check::<$t>(count);
                })*
            };
        }
        each!(i8, i16, i32, i64, u8, u16, u32, u64, f32, f64);
        panic!("no worker type for {}", T::DTYPE)
    }

    fn check<T: Elem + Val>(count: &mut usize) -> Vec<String> {
        let mut wrong = vec![];
        for c in T::cases() {
            let op = Op::ALL
                .into_iter()
                .find(|o| o.name() == c.op.name())
                .unwrap_or_else(|| panic!("no op {}", c.op.name()));
            let got = <T as Val>::reference(op, c.a, c.b);
            if !T::same(got, c.want) {
                wrong.push(format!("reference {}: got {}", c.show(), got.show()));
            }
            *count += 1;
        }
        wrong
    }
}
