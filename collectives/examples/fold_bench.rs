//! Times folds on one thread against folds on several (`boad::ops::par`), in two ways:
//!
//! ```sh
//! # The fold alone, in this process: f32 sums of each size, one thread and a pool of 2.
//! target/release/examples/fold_bench fold --threads 2 --sizes 65536,262144,1048576,16777216
//! # A whole f32 sum allreduce of 16 MiB under boadrun (set BOAD_FOLD_THREADS to compare).
//! BOAD_FOLD_THREADS=2 target/release/boadrun -n 2 --transport shm \
//!     target/release/examples/fold_bench allreduce --bytes 16777216 --iters 40
//! ```
//!
//! `fold` prints, per size, the mean and p99 of each way and the ratio of the means. `allreduce`
//! times each call from a barrier (the slowest rank's time per call), checks the result, and rank 0
//! prints the mean and p99, the path, the fold threads and how many folds ran on them.

use std::time::{Duration, Instant};

use boad::ops::{self, par::FoldPool};
use boad::{DType, Op};

fn usage() -> ! {
    eprintln!(
        "usage: fold_bench fold [--threads T] [--sizes BYTES,...] [--iters N]\n       \
         fold_bench allreduce [--bytes BYTES] [--iters N] [--warmup N]"
    );
    std::process::exit(2)
}

/// `--name value` pairs after the mode.
fn opt(args: &[String], name: &str) -> Option<String> {
    args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone())
}

fn num(args: &[String], name: &str, default: usize) -> usize {
    match opt(args, name) {
        None => default,
        Some(v) => v.parse().unwrap_or_else(|_| usage()),
    }
}

/// Mean and 99th percentile of `t`, in microseconds.
fn summary(t: &mut [Duration]) -> (f64, f64) {
    if t.is_empty() {
        return (0.0, 0.0);
    }
    t.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = t.iter().map(|&d| us(d)).sum::<f64>() / t.len() as f64;
    let p99 = us(t[((t.len() * 99).div_ceil(100)).saturating_sub(1)]);
    (mean, p99)
}

fn f32_bytes(n: usize, seed: f32) -> Vec<u8> {
    let v: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.5 + seed).collect();
    bytemuck::cast_slice(&v).to_vec()
}

fn fold_mode(args: &[String]) {
    let threads = num(args, "--threads", 2);
    let iters = num(args, "--iters", 0);
    let sizes: Vec<usize> = opt(args, "--sizes")
        .unwrap_or_else(|| "16384,65536,262144,524288,1048576,4194304,16777216".into())
        .split(',')
        .map(|s| s.parse().unwrap_or_else(|_| usage()))
        .collect();
    let pool = FoldPool::new(threads).unwrap_or_else(|e| {
        eprintln!("fold_bench: cannot start {threads} threads: {e}");
        std::process::exit(1)
    });
    println!(
        "# f32 sum, {} fold thread(s) vs 1; {} core(s)",
        pool.threads(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("bytes\tseq_mean_us\tseq_p99_us\tpar_mean_us\tpar_p99_us\tpar/seq");
    for bytes in sizes {
        let n = bytes / 4;
        let other = f32_bytes(n, 1.0);
        let mut acc = f32_bytes(n, 2.0);
        // About 0.5 s of work per way, at least 20 and at most 5000 calls.
        let iters = if iters > 0 {
            iters
        } else {
            (200_000_000 / bytes.max(1)).clamp(20, 5000)
        };
        let mut run = |par: bool| {
            let mut t = Vec::with_capacity(iters);
            for i in 0..iters + iters / 10 {
                let t0 = Instant::now();
                let ok = if par {
                    pool.fold(DType::F32, Op::Sum, &mut acc, &other)
                } else {
                    ops::fold(DType::F32, Op::Sum, &mut acc, &other)
                };
                let dt = t0.elapsed();
                assert!(ok);
                // The first tenth warms caches and the pool's threads.
                if i >= iters / 10 {
                    t.push(dt);
                }
            }
            summary(&mut t)
        };
        let (sm, s99) = run(false);
        let (pm, p99) = run(true);
        println!(
            "{bytes}\t{sm:.1}\t{s99:.1}\t{pm:.1}\t{p99:.1}\t{:.2}",
            pm / sm
        );
    }
}

fn allreduce_mode(args: &[String]) -> boad::Result<()> {
    let bytes = num(args, "--bytes", 16 << 20);
    let iters = num(args, "--iters", 40).max(1);
    let warmup = num(args, "--warmup", 5);
    let mut comm = boad::init()?;
    let (rank, size) = (comm.rank(), comm.size());
    let n = bytes / 4;
    // Small integers: every sum is exact in f32, so the result can be checked.
    let mine: Vec<f32> = (0..n).map(|i| ((i + rank) % 64) as f32).collect();
    let mut buf = vec![0f32; n];
    let mut times = Vec::with_capacity(iters);
    for i in 0..warmup + iters {
        buf.copy_from_slice(&mine);
        comm.barrier()?;
        let t0 = Instant::now();
        comm.allreduce_in_place(&mut buf, Op::Sum)?;
        let dt = t0.elapsed();
        if i >= warmup {
            times.push(dt.as_secs_f64());
        }
    }
    for (i, &v) in buf.iter().enumerate().step_by(4099) {
        let want: usize = (0..size).map(|r| (i + r) % 64).sum();
        if v != want as f32 {
            eprintln!("rank {rank}: element {i} is {v}, want {want}");
            std::process::exit(1);
        }
    }
    // The slowest rank's time for each call.
    let mut all = vec![0f64; iters * size];
    comm.allgather(&times, &mut all)?;
    let mut slowest: Vec<Duration> = (0..iters)
        .map(|i| {
            let s = (0..size).map(|r| all[r * iters + i]).fold(0.0, f64::max);
            Duration::from_secs_f64(s)
        })
        .collect();
    let (mean, p99) = summary(&mut slowest);
    let stats = comm.stats();
    if rank == 0 {
        println!(
            "allreduce f32 sum bytes={bytes} ranks={size} path={} fold_threads={} \
             folds_parallel={} iters={iters} mean_us={mean:.0} p99_us={p99:.0}",
            comm.last_path().map_or("none".into(), |p| p.to_string()),
            comm.fold_threads(),
            stats.folds_parallel,
        );
    }
    comm.finalize()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("fold") => fold_mode(&args[1..]),
        Some("allreduce") => {
            if let Err(e) = allreduce_mode(&args[1..]) {
                eprintln!("fold_bench: {e}");
                std::process::exit(1);
            }
        }
        _ => usage(),
    }
}
