//! Distributed breadth-first search over a generated graph, checked against a single-process BFS.
//!
//! `boadrun -n 9 --hosts 3 target/release/examples/bfs --vertices 300000 --json`
//!
//! Level-synchronous: rank r owns a contiguous block of vertices (`graph::block`) and their
//! out-edges. Each level every rank marks, in a bitmap of all vertices, the unvisited targets of
//! the frontier vertices it owns; an `allreduce(bor)` over the bitmap's u64 words gives every rank
//! the whole next frontier. Every rank then marks those vertices visited at this level and keeps
//! the ones it owns as its part of the frontier. Since the allreduce leaves every rank the same
//! bitmap, it is also the agreement on when to stop: all ranks see it empty at the same level, with
//! no extra collective.
//!
//! The kernel path folds an integer allreduce of at most 64 KiB; the bitmap (n / 8 bytes) is sent
//! in calls of at most 64 KiB, so the kernel path carries it whatever n (on the udp and shm paths
//! the same calls run in userspace).
//!
//! The check: every rank runs a queue-based BFS on its own (`graph::bfs`) and compares the level of
//! every vertex, exactly; a rank with a wrong vertex names it and exits non-zero by itself (no
//! collective decides the verdict).

mod app;

use std::process::ExitCode;
use std::time::Instant;

use app::{Clock, Common, Report, Res};
use boad::Op;
use boad_benches::graph::{self, Graph, UNREACHED};
use clap::Parser;

/// Largest allreduce the kernel path takes, in u64 words (64 KiB).
const KERNEL_ALLREDUCE_WORDS: usize = 64 * 1024 / 8;

/// Distributed level-synchronous BFS over a generated graph under boadrun.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    common: Common,
    /// Source vertex (default: the first vertex with an out-edge).
    #[arg(long)]
    source: Option<usize>,
    /// Largest allreduce call, bytes: the kernel path's limit (64 KiB) by default; smaller values
    /// split the bitmap into more calls (the tests use this).
    #[arg(long, default_value_t = KERNEL_ALLREDUCE_WORDS * 8)]
    max_call_bytes: usize,
    /// For the tests: this rank makes its answer wrong in one of its own vertices before the check.
    #[arg(long, hide = true)]
    fault_rank: Option<usize>,
}

fn main() -> ExitCode {
    app::main("bfs", run)
}

fn run() -> Res<()> {
    let args = Args::parse();
    let mut comm = boad::init()?;
    let (rank, size) = (comm.rank(), comm.size());
    let n = args.common.vertices;
    let g = Graph::generate(n, args.common.degree, args.common.seed)?;
    let source = args.source.unwrap_or_else(|| g.first_non_dangling());
    if source >= n {
        return Err(format!("--source {source} is not a vertex (0..{n})").into());
    }
    let mine = graph::block(n, size, rank);
    let words = n.div_ceil(64);
    let per_call = (args.max_call_bytes / 8).max(1);

    // Every rank keeps the whole visited bitmap and every level (they follow from the bitmaps
    // every rank receives); the frontier it expands is its own vertices only.
    let mut visited = vec![0u64; words];
    let mut level = vec![UNREACHED; n];
    let mut next = vec![0u64; words];
    let mut frontier: Vec<usize> = vec![];
    visited[source / 64] |= 1 << (source % 64);
    level[source] = 0;
    if mine.contains(&source) {
        frontier.push(source);
    }

    let hosts = app::hosts(&mut comm, args.common.hosts)?;
    comm.barrier()?;
    let mut clock = Clock::default();
    let start = Instant::now();
    let mut depth = 0u32;
    loop {
        next.fill(0);
        for &u in &frontier {
            for &v in g.out(u) {
                let (w, bit) = (v as usize / 64, 1u64 << (v % 64));
                if visited[w] & bit == 0 {
                    next[w] |= bit;
                }
            }
        }
        for part in next.chunks_mut(per_call) {
            clock.call(&mut comm, |c| c.allreduce_in_place(part, Op::Bor))?;
        }
        depth += 1;
        frontier.clear();
        let mut any = false;
        for (w, (seen, &found)) in visited.iter_mut().zip(&next).enumerate() {
            let mut new = found & !*seen;
            if new == 0 {
                continue;
            }
            any = true;
            *seen |= new;
            while new != 0 {
                let v = w * 64 + new.trailing_zeros() as usize;
                new &= new - 1;
                level[v] = depth;
                if mine.contains(&v) {
                    frontier.push(v);
                }
            }
        }
        if !any {
            break;
        }
    }
    let total_s = start.elapsed().as_secs_f64();
    // The last exchange found nothing new: the deepest level is one less.
    let levels = depth - 1;

    let want = graph::bfs(&g, source);
    if args.fault_rank == Some(rank) && !mine.is_empty() {
        // For the tests: this rank's answer is wrong in one vertex of its own.
        let l = &mut level[mine.start];
        *l = if *l == UNREACHED { 0 } else { *l + 1 };
    }
    let wrong: Vec<usize> = (0..n).filter(|&v| level[v] != want[v]).collect();
    let show = |l: u32| {
        if l == UNREACHED {
            "unreached".to_string()
        } else {
            l.to_string()
        }
    };
    app::check_mine(rank, "bfs", "BFS", n, mine.clone(), &wrong, |v| {
        format!("level {}, single process {}", show(level[v]), show(want[v]))
    })?;

    let reached = level.iter().filter(|&&l| l != UNREACHED).count();
    let note = format!(
        "{} edges, source {source}, {reached} vertices reached, deepest level {levels}; \
         allreduce(bor) of a {words}-word u64 bitmap per level in calls of <= {per_call} words \
         ({} per level; iters = frontier exchanges); graph generation and check not timed; levels equal to the single-process BFS",
        g.edges(),
        words.div_ceil(per_call),
    );
    app::report(
        &mut comm,
        Report {
            coll: "bfs",
            vertices: n,
            hosts,
            iters: u64::from(depth),
            total_s,
            clock: &clock,
            note,
            json: args.common.json,
        },
    )?;
    comm.finalize()?;
    Ok(())
}
