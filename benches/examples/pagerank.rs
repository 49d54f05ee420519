//! Distributed PageRank over a generated graph, checked against a single-process computation.
//!
//! `boadrun -n 9 --hosts 3 target/release/examples/pagerank --vertices 300000 --json`
//!
//! Rank r owns a contiguous block of vertices (`graph::block`). Each iteration every rank computes
//! the new rank of its own vertices by pulling from their in-edges, then the ranks exchange their
//! blocks with `allgather`, so every rank holds the whole vector for the next iteration.
//!
//! Why allgather of blocks rather than an allreduce(sum) of per-rank contribution vectors:
//! - boad's kernel path folds integer ops and float min/max only; a float `sum` always runs in
//!   userspace (eBPF has no floating point). An allgather just moves bytes, so the kernel path
//!   carries it whatever the element type.
//! - Each rank receives n values per iteration instead of reducing an n-vector from every rank.
//! - Each vertex's sum is computed by one rank in a fixed order, so the result does not depend on
//!   the number of ranks.
//!
//! The kernel path takes an allgather when block x (ranks - 1) <= 1 MiB; larger blocks are sent
//! in several allgather calls of at most that size, so the kernel path carries every byte of it
//! (on the udp and shm paths the same calls run in userspace).
//!
//! The check: every rank computes PageRank again on its own (`graph::pagerank`, push-style code
//! written separately) and compares every vertex of its copy of the vector; a rank with a wrong
//! vertex names it and exits non-zero by itself (no collective decides the verdict). Both add each vertex's
//! incoming shares in increasing order of source with the same expressions, so the results should
//! be identical; the tolerance (1e-12 relative per vertex) only leaves room for a compiler
//! contracting or reassociating the two loops differently (a few ulps), far below the error a
//! lost, stale or misplaced block causes (it changes whole ranks, each at least (1 - d) / n).

mod app;

use std::process::ExitCode;
use std::time::Instant;

use app::{Clock, Common, Report, Res};
use boad_benches::graph::{self, Graph};
use clap::Parser;

/// Largest allgather the kernel path takes: block bytes x (ranks - 1).
const KERNEL_ALLGATHER_BYTES: usize = 1 << 20;
/// Relative difference per vertex allowed against the single-process result.
const TOLERANCE: f64 = 1e-12;

/// Distributed PageRank over a generated graph under boadrun.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: Common,
    /// Power iterations.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Damping factor.
    #[arg(long, default_value_t = 0.85)]
    damping: f64,
    /// Largest allgather call, as block bytes x (ranks - 1): the kernel path's limit by default;
    /// smaller values split the exchange into more calls (the tests use this).
    #[arg(long, default_value_t = KERNEL_ALLGATHER_BYTES)]
    max_call_bytes: usize,
    /// For the tests: this rank makes its answer wrong in one of its own vertices before the check.
    #[arg(long, hide = true)]
    fault_rank: Option<usize>,
}

fn main() -> ExitCode {
    app::main("pagerank", run)
}

fn run() -> Res<()> {
    let args = Args::parse();
    let d = args.damping;
    if !(0.0..1.0).contains(&d) {
        return Err(format!("--damping must be in [0, 1), got {d}").into());
    }
    let mut comm = boad::init()?;
    let (rank, size) = (comm.rank(), comm.size());
    let n = args.common.vertices;
    let g = Graph::generate(n, args.common.degree, args.common.seed)?;
    let nf = n as f64;

    // This rank's vertices and their in-edges; the vector is padded to `size` blocks of `b`.
    let b = n.div_ceil(size);
    let mine = graph::block(n, size, rank);
    let lo = mine.start;
    let into = g.in_edges(mine.clone());
    let dangling: Vec<usize> = (0..n).filter(|&u| g.out_degree(u) == 0).collect();
    let per_call = match size {
        1 => b,
        _ => (args.max_call_bytes / 8 / (size - 1)).clamp(1, b),
    };
    let mut pr = vec![0.0f64; b * size];
    pr[..n].fill(1.0 / nf);
    let mut own = vec![0.0f64; b];
    let mut gathered = vec![0.0f64; per_call * size];

    let hosts = app::hosts(&mut comm, args.common.hosts)?;
    comm.barrier()?;
    let mut clock = Clock::default();
    let start = Instant::now();
    for _ in 0..args.iters {
        // Every rank holds the whole vector, so each sums the dangling rank itself (in the same
        // order as the single-process code) instead of an extra collective.
        let lost = dangling.iter().fold(0.0, |s, &u| s + pr[u]);
        for v in mine.clone() {
            let mut sum = 0.0;
            for &u in into.sources_of(v) {
                let u = u as usize;
                sum += pr[u] / g.out_degree(u) as f64;
            }
            own[v - lo] = (1.0 - d) / nf + d * (sum + lost / nf);
        }
        let mut off = 0;
        while off < b {
            let len = per_call.min(b - off);
            let recv = &mut gathered[..len * size];
            clock.call(&mut comm, |c| c.allgather(&own[off..off + len], recv))?;
            for r in 0..size {
                pr[r * b + off..r * b + off + len].copy_from_slice(&recv[r * len..(r + 1) * len]);
            }
            off += len;
        }
    }
    let total_s = start.elapsed().as_secs_f64();

    let want = graph::pagerank(&g, d, args.iters);
    if args.fault_rank == Some(rank) && !mine.is_empty() {
        // For the tests: this rank's answer is wrong in one vertex of its own.
        pr[mine.start] *= 2.0;
    }
    let mut wrong = vec![];
    let mut worst = 0.0f64;
    for (v, (&got, &w)) in pr[..n].iter().zip(&want).enumerate() {
        let rel = (got - w).abs() / w.abs();
        worst = worst.max(rel);
        if rel.is_nan() || rel > TOLERANCE {
            wrong.push(v);
        }
    }
    app::check_mine(rank, "pagerank", "PageRank", n, mine.clone(), &wrong, |v| {
        format!("got {:e}, single process {:e}", pr[v], want[v])
    })?;
    let mut worst = [worst];
    comm.allreduce_in_place(&mut worst, boad::Op::Max)?;

    let note = format!(
        "{} edges, {} dangling; allgather of rank blocks in calls of <= {per_call} f64 per rank ({} per iteration); \
         graph generation and check not timed; max relative difference to the single-process result {:e}",
        g.edges(),
        dangling.len(),
        b.div_ceil(per_call),
        worst[0],
    );
    app::report(
        &mut comm,
        Report {
            coll: "pagerank",
            vertices: n,
            hosts,
            iters: args.iters as u64,
            total_s,
            clock: &clock,
            note,
            json: args.common.json,
        },
    )?;
    comm.finalize()?;
    Ok(())
}
