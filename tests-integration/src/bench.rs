//! `boad-bench`: osu-style latency of bcast, reduce, allreduce and allgather (a benchmark, not a test).
//!
//! Started without `boadrun` it is the driver: for each rank count (`--ranks 2,4,9`) and transport
//! (`--transports shm,udp`) it runs `boadrun -n N boad-bench` (the worker, found next to this binary
//! or given by `--boadrun`), and with `--mpi PROGRAM` also `mpirun -n N PROGRAM` (an osu-style C
//! program printing the same lines: `benches/mpi_bench.c`), then prints one markdown table per rank
//! count with the latencies and the ratios to the first transport.
//!
//! Started by `boadrun` it is a worker: for every collective and size (4 B to 1 MiB, ×4) it runs
//! warm-up iterations, then timed ones with a barrier between iterations (only the collective is
//! timed), and rank 0 prints `RESULT <coll> <bytes> <avg_us> <max_us> <p50_us> <p99_us>`: the mean
//! over ranks of each rank's mean latency, the max over ranks of it, and the max over ranks of each
//! rank's median and 99th percentile. Sizes are per rank for allgather; reduce and allreduce sum f32.
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::process::{Command, ExitCode};
use std::time::Instant;

use boad::{Communicator, Op};

const COLLS: [&str; 4] = ["bcast", "reduce", "allreduce", "allgather"];

fn sizes(max: usize) -> Vec<usize> {
    let mut v = vec![];
    let mut s = 4;
    while s <= max {
        v.push(s);
        s *= 4;
    }
    v
}

/// (warm-up, timed) iterations for a message of `bytes` on `ranks` ranks.
fn iterations(bytes: usize, ranks: usize) -> (usize, usize) {
    let scale = if ranks > 4 { 2 } else { 1 };
    match bytes {
        0..=16384 => (100 / scale, 1000 / scale),
        16385..=131072 => (20, 200 / scale),
        _ => (5, 50 / scale),
    }
}

fn one(comm: &mut Communicator, coll: &str, buf: &mut [f32], out: &mut [f32]) -> boad::Result<()> {
    match coll {
        "bcast" => comm.bcast(buf, 0),
        "reduce" => {
            let recv = if comm.rank() == 0 {
                &mut out[..buf.len()]
            } else {
                &mut out[..0]
            };
            comm.reduce(buf, recv, Op::Sum, 0)
        }
        "allreduce" => comm.allreduce(buf, &mut out[..buf.len()], Op::Sum),
        _ => comm.allgather(buf, &mut out[..buf.len() * comm.size()]),
    }
}

fn worker(max: usize) -> boad::Result<()> {
    let mut comm = boad::init()?;
    let size = comm.size();
    for coll in COLLS {
        for bytes in sizes(max) {
            let n = bytes / 4;
            let mut buf = vec![1.0f32; n];
            let mut out = vec![0.0f32; n * size];
            let (warm, iters) = iterations(bytes, size);
            for _ in 0..warm {
                one(&mut comm, coll, &mut buf, &mut out)?;
            }
            comm.barrier()?;
            let mut lat = Vec::with_capacity(iters);
            for _ in 0..iters {
                let t = Instant::now();
                one(&mut comm, coll, &mut buf, &mut out)?;
                lat.push(t.elapsed().as_nanos() as u64);
                comm.barrier()?;
            }
            lat.sort_unstable();
            let mean = lat.iter().sum::<u64>() / iters as u64;
            let pct = |p: usize| lat[(iters * p / 100).min(iters - 1)];
            let mine = [mean, pct(50), pct(99)];
            let mut all = vec![0u64; 3 * size];
            comm.allgather(&mine, &mut all)?;
            if comm.rank() == 0 {
                let us = |ns: u64| ns as f64 / 1000.0;
                let col = |i: usize| all.iter().skip(i).step_by(3).copied();
                let avg = col(0).sum::<u64>() / size as u64;
                println!(
                    "RESULT {coll} {bytes} {:.2} {:.2} {:.2} {:.2}",
                    us(avg),
                    us(col(0).max().unwrap_or(0)),
                    us(col(1).max().unwrap_or(0)),
                    us(col(2).max().unwrap_or(0)),
                );
            }
        }
    }
    comm.finalize()
}

/// (coll, bytes) -> (avg, max, p50, p99) from `RESULT` lines.
type Results = BTreeMap<(usize, usize), [f64; 4]>;

fn parse(out: &str) -> Results {
    let mut r = Results::new();
    for l in out.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() == 7 && w[0] == "RESULT" {
            let Some(c) = COLLS.iter().position(|c| *c == w[1]) else {
                continue;
            };
            let (Ok(b), v) = (w[2].parse::<usize>(), &w[3..]) else {
                continue;
            };
            let v: Vec<f64> = v.iter().filter_map(|x| x.parse().ok()).collect();
            if let [a, m, p, q] = v[..] {
                r.insert((c, b), [a, m, p, q]);
            }
        }
    }
    r
}

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn driver(args: &[String]) -> ExitCode {
    let me = std::env::current_exe().unwrap_or_else(|_| "boad-bench".into());
    let boadrun = arg(args, "--boadrun")
        .map_or_else(|| me.with_file_name("boadrun"), std::path::PathBuf::from);
    let ranks: Vec<usize> = arg(args, "--ranks")
        .unwrap_or("2,4,9")
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    let transports: Vec<&str> = arg(args, "--transports")
        .unwrap_or("shm,udp")
        .split(',')
        .collect();
    let max = arg(args, "--max-bytes")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 20);
    let mpi = arg(args, "--mpi");
    for &n in &ranks {
        let mut runs: Vec<(String, Results)> = Vec::new();
        for &t in &transports {
            eprintln!("boad-bench: {n} ranks over {t}");
            let out = Command::new(&boadrun)
                .args(["-n", &n.to_string()])
                .arg(&me)
                .args(["--max-bytes", &max.to_string()])
                .env("BOAD_TRANSPORT", t)
                .output();
            match out {
                Ok(o) if o.status.success() => {
                    runs.push((t.to_string(), parse(&String::from_utf8_lossy(&o.stdout))))
                }
                Ok(o) => {
                    eprintln!(
                        "boad-bench: {t} on {n} ranks failed ({}):\n{}",
                        o.status,
                        String::from_utf8_lossy(&o.stderr)
                    );
                    return ExitCode::from(1);
                }
                Err(e) => {
                    eprintln!("boad-bench: cannot run {}: {e}", boadrun.display());
                    return ExitCode::from(1);
                }
            }
        }
        if let Some(prog) = mpi {
            eprintln!("boad-bench: {n} ranks over Open MPI ({prog})");
            let out = Command::new("mpirun")
                .args([
                    "--allow-run-as-root",
                    "--oversubscribe",
                    "-n",
                    &n.to_string(),
                ])
                .args(["--mca", "btl", "self,vader"])
                .arg(prog)
                .arg(max.to_string())
                .output();
            match out {
                Ok(o) if o.status.success() => {
                    runs.push(("mpi".into(), parse(&String::from_utf8_lossy(&o.stdout))))
                }
                Ok(o) => eprintln!(
                    "boad-bench: mpirun failed ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr)
                ),
                Err(e) => eprintln!("boad-bench: cannot run mpirun: {e}"),
            }
        }
        print_table(n, &runs, max);
    }
    ExitCode::SUCCESS
}

fn print_table(n: usize, runs: &[(String, Results)], max: usize) {
    println!("\n### {n} ranks: mean latency in µs (max over ranks of each rank's mean; p99 in brackets)\n");
    let mut head = "| collective | bytes |".to_string();
    let mut rule = "| --- | ---: |".to_string();
    for (name, _) in runs {
        head += &format!(" {name} |");
        rule += " ---: |";
    }
    for (name, _) in runs.iter().skip(1) {
        head += &format!(" {name} / {} |", runs[0].0);
        rule += " ---: |";
    }
    println!("{head}\n{rule}");
    for (c, coll) in COLLS.iter().enumerate() {
        for b in sizes(max) {
            let mut line = format!("| {coll} | {b} |");
            let base = runs.first().and_then(|(_, r)| r.get(&(c, b))).map(|v| v[1]);
            for (_, r) in runs {
                match r.get(&(c, b)) {
                    Some(v) => line += &format!(" {:.1} [{:.1}] |", v[1], v[3]),
                    None => line += " – |",
                }
            }
            for (_, r) in runs.iter().skip(1) {
                match (r.get(&(c, b)), base) {
                    (Some(v), Some(base)) if base > 0.0 => {
                        line += &format!(" {:.2} |", v[1] / base)
                    }
                    _ => line += " – |",
                }
            }
            println!("{line}");
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if std::env::var_os(boad::bootstrap::ENV_SIZE).is_none() {
        return driver(&args);
    }
    let max = arg(&args, "--max-bytes")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 20);
    match worker(max) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("boad-bench: {e}");
            ExitCode::from(2)
        }
    }
}
