//! `boad-osu`: the osu-style benchmark worker, run under `boadrun` (one launch = a whole matrix).
//!
//! For every implementation (`--impls boad,naive,epoll`: boad on whatever path the job runs, and
//! the two userspace baselines of `boad_benches::baseline`) it measures, and rank 0 prints one
//! JSON [`Record`] per line on stdout:
//!
//! - `latency`, for every collective and size: warm-up, then timed iterations with a barrier
//!   between them (only the collective is timed); each rank's mean, p50 and p99; the record holds the
//!   max over ranks of each. Roots are rank 0.
//! - `throughput` (`--tput-colls`): collectives back to back with no barrier, roots rotating over the
//!   ranks for bcast and reduce; ops/s = iterations / the slowest rank's wall time.
//! - `cpu` (`--cpu-colls`): collectives back to back from root 0 (a barrier every 16); this
//!   process's CPU time (user + sys, `CLOCK_PROCESS_CPUTIME_ID`) read before and after each call,
//!   summed, per collective, at the root and the mean of the others.
//! - `syscalls` (`--syscall-colls`): what a collective costs, at the end: for each collective,
//!   `--syscall-iters` of them from root 0 back to back (no barrier), with every rank reading right
//!   before and after its loop its system calls (the eBPF counter `boad_ebpf_loader::SyscallCounter`
//!   on `raw_syscalls/sys_enter`, which each rank attaches for itself, watching its own process:
//!   every thread is counted, the liveness and other helper threads too), its context switches
//!   (`getrusage`) and its CPU time; rank 0 also reads the machine's CPU time (`/proc/stat`,
//!   `boad_benches::cost`) and, where it finds the job's eBPF programs (held by the `boadrun` that
//!   started it: the kernel path), their run time per run with `bpf_stats` on, and its counter's.
//!   Where the counter cannot attach (not root, or built without the `ebpf` feature;
//!   `--syscall-counter strace` forces it), rank 0 and the last rank attach `strace` to themselves
//!   instead, each loop is bracketed by marker calls and only system calls are counted
//!   (`boad_benches::strace`). The record's `syscall_counter` says which.
//!
//! With `--fanout`, the latency, CPU and system call numbers of each (implementation, collective,
//! size) are merged into one `fanout` record. Reductions are `i32` sums (the kernel folds those).
//! The baselines have no loss recovery: a lost datagram makes that case fail after `--timeout-ms`,
//! and its record carries no numbers and a note saying so; the run goes on.
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use boad::{Communicator, DType, Op};
use boad_benches::baseline::{Baseline, Flavor};
use boad_benches::cost::{self, MachineCpu};
use boad_benches::record::{BpfProg, Record};
use boad_benches::stats::{max_over_ranks, summarize, Summary};
use boad_benches::strace::{mark, Calls, Tracer};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "osu-style benchmark worker (run it under boadrun; see boad-bench)")]
struct Args {
    /// Implementations: boad, naive, epoll.
    #[arg(long, value_delimiter = ',', default_value = "boad")]
    impls: Vec<String>,
    /// Collectives of the latency sweep.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "bcast,reduce,allreduce,allgather"
    )]
    colls: Vec<String>,
    /// Message sizes in bytes (multiples of 4; per rank for allgather).
    #[arg(long, value_delimiter = ',', default_value = "4,1024,65536,1048576")]
    sizes: Vec<u64>,
    /// Timed iterations for messages up to 16 KiB (a quarter up to 128 KiB, a tenth above).
    #[arg(long, default_value_t = 200)]
    iters: u64,
    /// Warm-up iterations (scaled like --iters).
    #[arg(long, default_value_t = 20)]
    warmup: u64,
    /// Collectives of the throughput pass (empty: none).
    #[arg(long, value_delimiter = ',')]
    tput_colls: Vec<String>,
    /// Iterations of the throughput pass.
    #[arg(long, default_value_t = 1000)]
    tput_iters: u64,
    /// Collectives of the CPU pass.
    #[arg(long, value_delimiter = ',')]
    cpu_colls: Vec<String>,
    /// Iterations of the CPU pass.
    #[arg(long, default_value_t = 500)]
    cpu_iters: u64,
    /// Collectives of the system call pass.
    #[arg(long, value_delimiter = ',')]
    syscall_colls: Vec<String>,
    /// Iterations of the system call pass.
    #[arg(long, default_value_t = 50)]
    syscall_iters: u64,
    /// Message size of the throughput, CPU and system call passes.
    #[arg(long, default_value_t = 4)]
    pass_bytes: u64,
    /// Merge latency, CPU and system calls into `fanout` records.
    #[arg(long)]
    fanout: bool,
    /// Hosts the job runs on (written into the records).
    #[arg(long, default_value_t = 1)]
    hosts: u32,
    /// The transport boadrun was asked for (a boad record whose path differs says so).
    #[arg(long, default_value = "auto")]
    asked: String,
    /// How long a baseline waits for a datagram before its collective fails.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// What counts the system calls: `auto` (the eBPF counter where it attaches, i.e. as root,
    /// else strace), `ebpf` (fail without it) or `strace`.
    #[arg(long, default_value = "auto")]
    syscall_counter: String,
    /// Attach the eBPF system call counter at the start and keep it for the whole run (to
    /// measure whether it changes the latency), not only during the system call pass.
    #[arg(long)]
    counter_always: bool,
    /// Where the strace output goes (default: the temporary directory).
    #[arg(long)]
    trace_dir: Option<PathBuf>,
    /// Keep the strace output (to see which calls were made), instead of removing it.
    #[arg(long)]
    keep_traces: bool,
}

/// What a benchmark loop can fail with.
#[derive(Debug)]
enum Failure {
    /// boad itself failed: the job cannot go on.
    Boad(boad::Error),
    /// A baseline lost a datagram (or similar): this case fails, the run goes on.
    Baseline(String),
}

impl From<boad::Error> for Failure {
    fn from(e: boad::Error) -> Self {
        Failure::Boad(e)
    }
}

enum Imp {
    Boad,
    Base(Box<Baseline>),
}

impl Imp {
    fn name(&self) -> &'static str {
        match self {
            Imp::Boad => "boad",
            Imp::Base(b) => b.flavor().name(),
        }
    }
}

/// Buffers of one case: `send` (the broadcast buffer too), `recv` (p blocks for allgather).
struct Bufs {
    send: Vec<u8>,
    recv: Vec<u8>,
}

impl Bufs {
    fn new(bytes: usize, ranks: usize, rank: usize) -> Bufs {
        let v = (rank as i32 + 1).to_le_bytes();
        Bufs {
            send: v.iter().copied().cycle().take(bytes).collect(),
            recv: vec![0; bytes * ranks],
        }
    }
}

fn op(
    comm: &mut Communicator,
    imp: &mut Imp,
    coll: &str,
    root: usize,
    b: &mut Bufs,
) -> Result<(), Failure> {
    let n = b.send.len();
    let me = comm.rank();
    match imp {
        Imp::Boad => match coll {
            "bcast" => comm.bcast_raw(&mut b.send, DType::I32, root)?,
            "reduce" => {
                let recv = (me == root).then_some(&mut b.recv[..n]);
                comm.reduce_raw(&b.send, recv, DType::I32, Op::Sum, root)?
            }
            "allreduce" => comm.allreduce_raw(&b.send, &mut b.recv[..n], DType::I32, Op::Sum)?,
            "allgather" => comm.allgather_raw(&b.send, &mut b.recv, DType::I32)?,
            "barrier" => comm.barrier()?,
            other => return Err(Failure::Baseline(format!("unknown collective {other}"))),
        },
        Imp::Base(base) => {
            let r = match coll {
                "bcast" => base.bcast(&mut b.send, root),
                "reduce" => base.reduce(&b.send, &mut b.recv[..n], root),
                "allreduce" => base.allreduce(&b.send, &mut b.recv[..n]),
                "allgather" => base.allgather(&b.send, &mut b.recv),
                other => return Err(Failure::Baseline(format!("unknown collective {other}"))),
            };
            r.map_err(|e| Failure::Baseline(e.to_string()))?
        }
    }
    Ok(())
}

/// (warm-up, timed) iterations for `bytes`.
fn iterations(a: &Args, bytes: u64) -> (u64, u64) {
    let div = match bytes {
        0..=16384 => 1,
        16385..=131072 => 4,
        _ => 10,
    };
    ((a.warmup / div).max(2), (a.iters / div).max(5))
}

/// This process's CPU time (user + sys, all threads), ns.
fn cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the one we pass.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Every rank's `vals` (same length everywhere), rank-major.
fn gather(comm: &mut Communicator, vals: &[f64]) -> boad::Result<Vec<Vec<f64>>> {
    let mine: Vec<u8> = vals
        .iter()
        .flat_map(|v| v.to_bits().to_le_bytes())
        .collect();
    let mut all = vec![0u8; mine.len() * comm.size()];
    comm.allgather_raw(&mine, &mut all, DType::U64)?;
    Ok(all
        .chunks_exact(mine.len().max(1))
        .map(|r| {
            r.chunks_exact(8)
                .map(|w| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(w);
                    f64::from_bits(u64::from_le_bytes(b))
                })
                .collect()
        })
        .collect())
}

/// The first failure any rank reports (each rank passes its own, or None).
fn agree_failure(comm: &mut Communicator, mine: &Option<String>) -> boad::Result<Option<String>> {
    agree(
        comm,
        mine,
        "failed (lost datagram: the baseline has no loss recovery)",
    )
}

/// The first trouble any rank reports; a rank that only learns of another's says `rank R WHAT`.
fn agree(
    comm: &mut Communicator,
    mine: &Option<String>,
    what: &str,
) -> boad::Result<Option<String>> {
    let flags = gather(comm, &[if mine.is_some() { 1.0 } else { 0.0 }])?;
    let first = flags.iter().position(|f| f[0] != 0.0);
    Ok(first.map(|r| match (r == comm.rank(), mine) {
        (true, Some(m)) => m.clone(),
        _ => format!("rank {r} {what}"),
    }))
}

/// Fewest busy `/proc/stat` ticks over a loop for its machine CPU to be recorded (10: one tick is
/// then at most 10% of it).
const MIN_TICKS: u64 = 10;

/// The eBPF system call counter watching this process (feature `ebpf`, root).
struct Counter {
    #[cfg(feature = "ebpf")]
    inner: boad_ebpf_loader::SyscallCounter,
    pid: u32,
}

impl Counter {
    #[cfg(feature = "ebpf")]
    fn attach() -> Result<Counter, String> {
        let chain = |e: &dyn std::error::Error| {
            let mut s = e.to_string();
            let mut src = e.source();
            while let Some(x) = src {
                s.push_str(&format!(": {x}"));
                src = x.source();
            }
            s
        };
        let pid = std::process::id();
        let mut inner = boad_ebpf_loader::SyscallCounter::attach().map_err(|e| chain(&e))?;
        inner.watch(pid).map_err(|e| chain(&e))?;
        Ok(Counter { inner, pid })
    }

    #[cfg(not(feature = "ebpf"))]
    fn attach() -> Result<Counter, String> {
        Err("boad-osu was built without the ebpf feature".into())
    }

    /// This process's system calls so far (this read included), if readable.
    fn read(&self) -> Option<u64> {
        #[cfg(feature = "ebpf")]
        return self.inner.count(self.pid).ok().flatten();
        #[cfg(not(feature = "ebpf"))]
        return {
            let _ = self.pid;
            None
        };
    }

    fn program_id(&self) -> Option<u32> {
        #[cfg(feature = "ebpf")]
        return self.inner.program_id().ok();
        #[cfg(not(feature = "ebpf"))]
        return None;
    }
}

/// `bpf_stats` on while this lives (rank 0 of the system call pass), for the programs `ids`.
struct BpfStats {
    #[cfg(feature = "ebpf")]
    _on: boad_ebpf_loader::stats::RunTimeStats,
    ids: Vec<u32>,
}

impl BpfStats {
    fn enable(ids: Vec<u32>) -> Option<BpfStats> {
        if ids.is_empty() {
            return None;
        }
        #[cfg(feature = "ebpf")]
        return match boad_ebpf_loader::stats::RunTimeStats::enable() {
            Ok(on) => Some(BpfStats { _on: on, ids }),
            Err(e) => {
                eprintln!("boad-osu: no bpf_stats: {e}");
                None
            }
        };
        #[cfg(not(feature = "ebpf"))]
        return None;
    }

    /// Name -> (run time ns, runs), summed over programs of one name.
    fn snapshot(&self) -> BTreeMap<String, (u64, u64)> {
        #[cfg(feature = "ebpf")]
        {
            let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            for &id in &self.ids {
                if let Ok(Some(r)) = boad_ebpf_loader::stats::program_runs(id) {
                    let e = out.entry(r.name).or_default();
                    e.0 = e.0.saturating_add(r.run_time_ns);
                    e.1 = e.1.saturating_add(r.run_cnt);
                }
            }
            out
        }
        #[cfg(not(feature = "ebpf"))]
        {
            let _ = &self.ids;
            BTreeMap::new()
        }
    }
}

/// Per program name: runs per collective and ns per run between two snapshots.
fn bpf_delta(
    before: &BTreeMap<String, (u64, u64)>,
    after: &BTreeMap<String, (u64, u64)>,
    iters: u64,
) -> Vec<BpfProg> {
    after
        .iter()
        .filter_map(|(name, &(t1, n1))| {
            let (t0, n0) = before.get(name).copied().unwrap_or((0, 0));
            let (t, n) = (t1.saturating_sub(t0), n1.saturating_sub(n0));
            (n > 0).then(|| BpfProg {
                name: name.clone(),
                runs_per_coll: n as f64 / iters.max(1) as f64,
                ns_per_run: t as f64 / n as f64,
            })
        })
        .collect()
}

struct Worker {
    a: Args,
    comm: Communicator,
    out: Vec<Record>,
    /// Path boad took for the last measured case.
    path: Option<String>,
    /// The eBPF system call counter, while attached.
    counter: Option<Counter>,
}

impl Worker {
    fn record(&self, name: &str, bench: &str, coll: &str, bytes: u64, iters: u64) -> Record {
        let (implementation, path, note) = match name {
            "boad" => {
                let p = self.path.clone().unwrap_or_else(|| "unknown".into());
                let note = (self.a.asked != "auto" && self.a.asked != p)
                    .then(|| format!("asked for {}, ran on {p}", self.a.asked));
                (format!("boad-{p}"), Some(p), note)
            }
            other => (other.to_string(), None, None),
        };
        Record {
            bench: if self.a.fanout { "fanout" } else { bench }.into(),
            implementation,
            coll: coll.into(),
            bytes,
            ranks: self.comm.size() as u32,
            hosts: self.a.hosts,
            iters,
            path,
            note,
            ..Default::default()
        }
    }

    /// Adds a record (merging with the one of the same case in fanout mode) and prints it unless
    /// merging.
    fn put(&mut self, r: Record) {
        if self.comm.rank() != 0 {
            return;
        }
        if !self.a.fanout {
            if let Ok(line) = serde_json::to_string(&r) {
                println!("{line}");
            }
            return;
        }
        let same = self.out.iter_mut().find(|o| {
            o.implementation == r.implementation && o.coll == r.coll && o.bytes == r.bytes
        });
        match same {
            Some(o) => {
                o.avg_us = o.avg_us.or(r.avg_us);
                o.p50_us = o.p50_us.or(r.p50_us);
                o.p99_us = o.p99_us.or(r.p99_us);
                o.ops_per_s = o.ops_per_s.or(r.ops_per_s);
                o.cpu_us_root = o.cpu_us_root.or(r.cpu_us_root);
                o.cpu_us_other = o.cpu_us_other.or(r.cpu_us_other);
                o.syscalls_root = o.syscalls_root.or(r.syscalls_root);
                o.syscalls_receiver = o.syscalls_receiver.or(r.syscalls_receiver);
                o.syscalls_other = o.syscalls_other.or(r.syscalls_other);
                o.syscall_counter = o.syscall_counter.take().or(r.syscall_counter);
                o.ctxsw_root = o.ctxsw_root.or(r.ctxsw_root);
                o.ctxsw_other = o.ctxsw_other.or(r.ctxsw_other);
                o.cpu_us_ranks = o.cpu_us_ranks.or(r.cpu_us_ranks);
                o.machine_cpu_us = o.machine_cpu_us.or(r.machine_cpu_us);
                o.softirq_us = o.softirq_us.or(r.softirq_us);
                o.bpf = o.bpf.take().or(r.bpf);
                o.note = match (o.note.take(), r.note) {
                    (Some(a), Some(b)) if a != b => Some(format!("{a}; {b}")),
                    (a, b) => a.or(b),
                };
            }
            None => self.out.push(r),
        }
    }

    fn note_path(&mut self, imp: &Imp) {
        if let Imp::Boad = imp {
            self.path = self.comm.last_path().map(|p| p.name().to_string());
        }
    }

    fn latency(&mut self, imp: &mut Imp, coll: &str, bytes: u64) -> Result<(), Failure> {
        let (warm, iters) = iterations(&self.a, bytes);
        let (p, me) = (self.comm.size(), self.comm.rank());
        let mut b = Bufs::new(bytes as usize, p, me);
        let mut lat = Vec::with_capacity(iters as usize);
        let mut failed: Option<String> = None;
        for i in 0..warm + iters {
            let t = Instant::now();
            if failed.is_none() {
                match op(&mut self.comm, imp, coll, 0, &mut b) {
                    Ok(()) => {}
                    Err(Failure::Baseline(e)) => failed = Some(e),
                    Err(e) => return Err(e),
                }
            }
            let dt = t.elapsed().as_nanos() as u64;
            if i == warm + iters - 1 {
                self.note_path(imp);
            }
            if i >= warm {
                lat.push(dt);
            }
            self.comm.barrier()?;
        }
        let s = summarize(&mut lat);
        let failed = agree_failure(&mut self.comm, &failed)?;
        let all = gather(&mut self.comm, &[s.mean_ns, s.p50_ns, s.p99_ns])?;
        let per_rank: Vec<Summary> = all
            .iter()
            .map(|v| Summary {
                mean_ns: v[0],
                p50_ns: v[1],
                p99_ns: v[2],
            })
            .collect();
        let m = max_over_ranks(&per_rank);
        if me == 0 && std::env::var_os("BOAD_OSU_PER_RANK").is_some() {
            // For profiling: which ranks are slow.
            let each: Vec<String> = per_rank
                .iter()
                .map(|s| format!("{:.0}/{:.0}", s.mean_ns / 1e3, s.p99_ns / 1e3))
                .collect();
            eprintln!(
                "boad-osu: {} {coll} {bytes} B per rank mean/p99 us: {}",
                imp.name(),
                each.join(" ")
            );
        }
        let mut r = self.record(imp.name(), "latency", coll, bytes, iters);
        if let Some(f) = failed {
            r.note = Some(format!("failed: {f}"));
            reset(imp);
        } else {
            r.avg_us = Some(m.mean_ns / 1e3);
            r.p50_us = Some(m.p50_ns / 1e3);
            r.p99_us = Some(m.p99_ns / 1e3);
        }
        self.put(r);
        Ok(())
    }

    /// Back-to-back collectives; returns (slowest rank's wall ns, CPU ns per rank, failure).
    /// `cpu_only`: count only the CPU time spent inside the collectives (clock read before and
    /// after each), and add a barrier every 16 collectives, so that contributors cannot run far
    /// ahead of a fixed root (the naive and epoll baselines have no flow control: a root's socket
    /// buffer would overflow; boad's kernel reduce has its own, a release every 16 reduces).
    fn back_to_back(
        &mut self,
        imp: &mut Imp,
        coll: &str,
        bytes: u64,
        iters: u64,
        rotate: bool,
        cpu_only: bool,
    ) -> Result<(f64, Vec<f64>, Option<String>), Failure> {
        let (p, me) = (self.comm.size(), self.comm.rank());
        let mut b = Bufs::new(bytes as usize, p, me);
        // A few untimed ones first.
        let mut failed = None;
        for _ in 0..iters.min(10) {
            if let Err(e) = op(&mut self.comm, imp, coll, 0, &mut b) {
                match e {
                    Failure::Baseline(e) => failed = Some(e),
                    e => return Err(e),
                }
                break;
            }
        }
        self.comm.barrier()?;
        let (t0, c0) = (Instant::now(), cpu_ns());
        let mut inside = 0u64;
        if failed.is_none() {
            for i in 0..iters {
                let root = if rotate { i as usize % p } else { 0 };
                let c = if cpu_only { cpu_ns() } else { 0 };
                let r = op(&mut self.comm, imp, coll, root, &mut b);
                if cpu_only {
                    inside += cpu_ns().saturating_sub(c);
                }
                match r {
                    Ok(()) => {}
                    Err(Failure::Baseline(e)) => {
                        failed = Some(e);
                        break;
                    }
                    Err(e) => return Err(e),
                }
                if cpu_only && i % 16 == 15 {
                    self.comm.barrier()?;
                }
            }
        }
        let wall = t0.elapsed().as_nanos() as f64;
        let cpu = if cpu_only {
            inside as f64
        } else {
            cpu_ns().saturating_sub(c0) as f64
        };
        self.note_path(imp);
        let failed = agree_failure(&mut self.comm, &failed)?;
        if failed.is_some() {
            reset(imp);
        }
        let all = gather(&mut self.comm, &[wall, cpu])?;
        let slowest = all.iter().map(|v| v[0]).fold(0.0, f64::max);
        self.comm.barrier()?;
        Ok((slowest, all.iter().map(|v| v[1]).collect(), failed))
    }

    fn throughput(&mut self, imp: &mut Imp, coll: &str) -> Result<(), Failure> {
        let (bytes, iters) = (self.a.pass_bytes, self.a.tput_iters);
        let rotate = matches!(coll, "bcast" | "reduce");
        let (wall, _, failed) = self.back_to_back(imp, coll, bytes, iters, rotate, false)?;
        let mut r = self.record(imp.name(), "throughput", coll, bytes, iters);
        match failed {
            Some(f) => r.note = Some(format!("failed: {f}")),
            None => {
                r.ops_per_s = Some(iters as f64 / (wall / 1e9));
                let roots = if rotate {
                    "roots rotating over the ranks"
                } else {
                    "no root"
                };
                r.note = Some(match r.note.take() {
                    Some(n) => format!("{n}; back to back, {roots}"),
                    None => format!("back to back, {roots}"),
                });
            }
        }
        self.put(r);
        Ok(())
    }

    fn cpu(&mut self, imp: &mut Imp, coll: &str) -> Result<(), Failure> {
        let (bytes, iters) = (self.a.pass_bytes, self.a.cpu_iters);
        let (_, cpu, failed) = self.back_to_back(imp, coll, bytes, iters, false, true)?;
        let mut r = self.record(imp.name(), "cpu", coll, bytes, iters);
        match failed {
            Some(f) => r.note = Some(format!("failed: {f}")),
            None => {
                let per = |ns: f64| ns / iters as f64 / 1e3;
                r.cpu_us_root = cpu.first().map(|&c| per(c));
                let others = &cpu[1.min(cpu.len())..];
                if !others.is_empty() {
                    r.cpu_us_other = Some(per(others.iter().sum::<f64>() / others.len() as f64));
                }
                r.note = Some(
                    "CPU inside the calls, root 0, back to back with a barrier every 16".into(),
                );
            }
        }
        self.put(r);
        Ok(())
    }

    /// The system call pass over every implementation: the eBPF counter where it attaches
    /// (`--syscall-counter auto|ebpf`), else strace.
    fn syscalls(&mut self, imps: &mut [Imp]) -> Result<(), Failure> {
        let want = self.a.syscall_counter.clone();
        if !matches!(want.as_str(), "auto" | "ebpf" | "strace") {
            return Err(Failure::Baseline(format!(
                "--syscall-counter {want}: not auto, ebpf or strace"
            )));
        }
        let mut trouble = None;
        if want != "strace" && self.counter.is_none() {
            match Counter::attach() {
                Ok(c) => self.counter = Some(c),
                Err(e) => trouble = Some(e),
            }
        }
        let trouble = agree(
            &mut self.comm,
            &trouble,
            "could not attach the eBPF system call counter",
        )?;
        let r = match (want.as_str(), trouble) {
            ("strace", _) => self.syscalls_strace(imps, None),
            ("ebpf", Some(t)) => {
                return Err(Failure::Baseline(format!("--syscall-counter ebpf: {t}")))
            }
            (_, Some(t)) => self.syscalls_strace(imps, Some(t)),
            (_, None) => self.syscalls_ebpf(imps),
        };
        if !self.a.counter_always {
            self.counter = None;
        }
        r
    }

    /// The cost pass with the eBPF counter: for every implementation and collective, `iters`
    /// collectives from root 0 back to back (no barrier); every rank reads its system calls, its
    /// context switches and its CPU time right before and after its loop, rank 0 the machine's
    /// CPU (`/proc/stat`, around the loop and the barriers that bracket it) and, where the job's
    /// programs are found, their `bpf_stats`.
    fn syscalls_ebpf(&mut self, imps: &mut [Imp]) -> Result<(), Failure> {
        let (p, me) = (self.comm.size(), self.comm.rank());
        let (bytes, iters) = (self.a.pass_bytes, self.a.syscall_iters);
        let stats = if me == 0 {
            let mut ids = cost::job_bpf_programs();
            ids.extend(self.counter.as_ref().and_then(Counter::program_id));
            BpfStats::enable(ids)
        } else {
            None
        };
        let colls = self.a.syscall_colls.clone();
        for imp in imps.iter_mut() {
            for coll in &colls {
                let mut b = Bufs::new(bytes as usize, p, me);
                let mut failed = None;
                // A few untimed ones first.
                for _ in 0..iters.min(10) {
                    match op(&mut self.comm, imp, coll, 0, &mut b) {
                        Ok(()) => {}
                        Err(Failure::Baseline(e)) => {
                            failed = Some(e);
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
                self.comm.barrier()?;
                let m0 = (me == 0).then(MachineCpu::now).and_then(|m| m.ok());
                let s0 = stats.as_ref().map(BpfStats::snapshot);
                self.comm.barrier()?;
                let cs0 = cost::context_switches().ok();
                let c0 = cost::process_cpu_ns().ok();
                let n0 = self.counter.as_ref().and_then(Counter::read);
                if failed.is_none() {
                    for _ in 0..iters {
                        match op(&mut self.comm, imp, coll, 0, &mut b) {
                            Ok(()) => {}
                            Err(Failure::Baseline(e)) => {
                                failed = Some(e);
                                break;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                let n1 = self.counter.as_ref().and_then(Counter::read);
                let c1 = cost::process_cpu_ns().ok();
                let cs1 = cost::context_switches().ok();
                self.comm.barrier()?;
                let m1 = (me == 0).then(MachineCpu::now).and_then(|m| m.ok());
                let s1 = stats.as_ref().map(BpfStats::snapshot);
                self.note_path(imp);
                let failed = agree_failure(&mut self.comm, &failed)?;
                if failed.is_some() {
                    reset(imp);
                }
                // The second read counts itself: the calls between the reads are n1 - n0 - 1.
                let delta = |a: Option<u64>, b: Option<u64>, less: u64| match (a, b) {
                    (Some(a), Some(b)) if b >= a + less => (b - a - less) as f64,
                    _ => -1.0,
                };
                let mine = [delta(n0, n1, 1), delta(cs0, cs1, 0), delta(c0, c1, 0)];
                let all = gather(&mut self.comm, &mine)?;
                self.comm.barrier()?;
                let mut r = self.record(imp.name(), "syscalls", coll, bytes, iters);
                r.syscall_counter = Some("ebpf".into());
                if let Some(f) = failed {
                    r.note = Some(format!("failed: {f}"));
                    self.put(r);
                    continue;
                }
                let it = iters.max(1) as f64;
                let per = |c: f64| (c >= 0.0).then(|| c / it);
                // Mean over the ranks other than the root, if every one was measured.
                let others = |k: usize| {
                    let v: Vec<f64> = all.iter().skip(1).map(|v| v[k]).collect();
                    (!v.is_empty() && v.iter().all(|&x| x >= 0.0))
                        .then(|| v.iter().sum::<f64>() / v.len() as f64 / it)
                };
                r.syscalls_root = per(all[0][0]);
                r.syscalls_receiver = per(all[p - 1][0]);
                r.syscalls_other = others(0);
                r.ctxsw_root = per(all[0][1]);
                r.ctxsw_other = others(1);
                r.cpu_us_ranks = all
                    .iter()
                    .all(|v| v[2] >= 0.0)
                    .then(|| all.iter().map(|v| v[2]).sum::<f64>() / it / 1e3);
                let mut coarse = None;
                if let (Some(a), Some(b)) = (m0, m1) {
                    let d = b.since(&a);
                    // /proc/stat counts whole ticks: under MIN_TICKS the number says little.
                    if d.busy() >= MIN_TICKS {
                        r.machine_cpu_us = Some(cost::ticks_to_us(d.busy()) / it);
                        r.softirq_us = Some(cost::ticks_to_us(d.softirq) / it);
                    } else {
                        coarse = Some(format!(
                            "no machine CPU: the loop took {} busy ticks of /proc/stat, under {MIN_TICKS}",
                            d.busy()
                        ));
                    }
                }
                if let (Some(a), Some(b)) = (s0, s1) {
                    let progs = bpf_delta(&a, &b, iters);
                    r.bpf = (!progs.is_empty()).then_some(progs);
                }
                let how = "eBPF counter (raw_syscalls/sys_enter, every thread of each rank), \
                           back to back from root 0; receiver = last rank";
                let how = match coarse {
                    Some(c) => format!("{how}; {c}"),
                    None => how.into(),
                };
                r.note = Some(match r.note.take() {
                    Some(n) => format!("{n}; {how}"),
                    None => how,
                });
                self.put(r);
            }
        }
        Ok(())
    }

    /// The system call pass with strace (root 0 and the last rank), when the eBPF counter is
    /// not used (`why`: the reason, when it was wanted).
    fn syscalls_strace(&mut self, imps: &mut [Imp], why: Option<String>) -> Result<(), Failure> {
        let (p, me) = (self.comm.size(), self.comm.rank());
        let (bytes, iters) = (self.a.pass_bytes, self.a.syscall_iters);
        let traced = me == 0 || me == p - 1;
        let dir = self.a.trace_dir.clone().unwrap_or_else(std::env::temp_dir);
        let file = dir.join(format!("boad-osu-strace.{}.{me}", std::process::id()));
        let mut tracer = None;
        let mut trouble = None;
        if traced {
            match Tracer::attach(&file) {
                Ok(t) => tracer = Some(t),
                Err(e) => trouble = Some(e.to_string()),
            }
        }
        let trouble = agree_failure(&mut self.comm, &trouble)?;
        let colls = self.a.syscall_colls.clone();
        let mut labels = vec![];
        for imp in imps.iter_mut() {
            for coll in &colls {
                let label = format!("{}-{coll}-{bytes}", imp.name());
                let mut b = Bufs::new(bytes as usize, p, me);
                let mut failed = None;
                self.comm.barrier()?;
                if trouble.is_none() {
                    mark(&label, true);
                    for _ in 0..iters {
                        match op(&mut self.comm, imp, coll, 0, &mut b) {
                            Ok(()) => {}
                            Err(Failure::Baseline(e)) => {
                                failed = Some(e);
                                break;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    mark(&label, false);
                }
                self.note_path(imp);
                let failed = agree_failure(&mut self.comm, &failed)?;
                if failed.is_some() {
                    reset(imp);
                }
                self.comm.barrier()?;
                labels.push((label, imp.name(), coll.clone(), failed, self.path.clone()));
            }
        }
        let counts = match tracer {
            Some(t) => match t.finish() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("boad-osu: rank {me}: {e}");
                    Default::default()
                }
            },
            None => Default::default(),
        };
        if self.a.keep_traces {
            eprintln!(
                "boad-osu: rank {me}: strace output kept in {}",
                file.display()
            );
        } else {
            let _ = std::fs::remove_file(&file);
        }
        let mine: Vec<f64> = labels
            .iter()
            .map(|(l, ..)| counts.get(l).map_or(-1.0, |c| c.total as f64))
            .collect();
        let all = gather(&mut self.comm, &mine)?;
        for (i, (label, name, coll, failed, path)) in labels.into_iter().enumerate() {
            self.path = path;
            let mut r = self.record(name, "syscalls", &coll, bytes, iters);
            r.syscall_counter = Some("strace".into());
            let per = |c: f64| (c >= 0.0).then(|| c / iters as f64);
            if let Some(t) = &trouble {
                r.note = Some(format!("no strace: {t}"));
            } else if let Some(f) = failed {
                r.note = Some(format!("failed: {f}"));
            } else {
                r.syscalls_root = per(all[0][i]);
                r.syscalls_receiver = per(all[p - 1][i]);
                let how = match labels_calls(&counts, &label) {
                    Some(c) => format!(
                        "strace -f between markers, root 0 and receiver = last rank; root's calls per collective: {}",
                        c.breakdown(iters)
                    ),
                    None => "strace -f between markers, root 0 and receiver = last rank".into(),
                };
                let how = match &why {
                    Some(w) => format!("{how} (no eBPF counter: {w})"),
                    None => how,
                };
                r.note = Some(match r.note.take() {
                    Some(n) => format!("{n}; {how}"),
                    None => how,
                });
            }
            self.put(r);
        }
        Ok(())
    }
}

/// Rank 0's calls for `label` (only rank 0's are known here: it prints the records).
fn labels_calls<'a>(counts: &'a BTreeMap<String, Calls>, label: &str) -> Option<&'a Calls> {
    counts.get(label)
}

fn reset(imp: &mut Imp) {
    if let Imp::Base(b) = imp {
        b.reset();
    }
}

/// Binds a baseline and exchanges its address with every rank (through boad).
fn baseline(comm: &mut Communicator, flavor: Flavor, timeout: Duration) -> Result<Imp, Failure> {
    let ip = comm
        .local_addr()
        .map(|a| a.ip())
        .or_else(|| {
            std::env::var(boad_proto::env::BIND_ADDR)
                .ok()
                .and_then(|s| s.parse().ok())
        })
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let chunk = comm.chunk_bytes();
    let mut b = Baseline::bind(flavor, ip, comm.rank(), chunk, timeout)
        .map_err(|e| Failure::Baseline(format!("{}: {e}", flavor.name())))?;
    let addr = b
        .local_addr()
        .map_err(|e| Failure::Baseline(e.to_string()))?;
    let IpAddr::V4(v4) = addr.ip() else {
        return Err(Failure::Baseline("the baselines need IPv4".into()));
    };
    let mut mine = [0u8; 8];
    mine[..4].copy_from_slice(&v4.octets());
    mine[4..6].copy_from_slice(&addr.port().to_le_bytes());
    let mut all = vec![0u8; 8 * comm.size()];
    comm.allgather_raw(&mine, &mut all, DType::U8)?;
    let peers = all
        .chunks_exact(8)
        .map(|c| {
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3])),
                u16::from_le_bytes([c[4], c[5]]),
            )
        })
        .collect();
    b.set_peers(peers);
    Ok(Imp::Base(Box::new(b)))
}

fn run(a: Args) -> Result<(), Failure> {
    let comm = boad::init()?;
    for &s in &a.sizes {
        if s == 0 || !s.is_multiple_of(4) {
            return Err(Failure::Baseline(format!(
                "size {s} is not a positive multiple of 4 (i32 elements)"
            )));
        }
    }
    let timeout = Duration::from_millis(a.timeout_ms);
    let mut w = Worker {
        a,
        comm,
        out: vec![],
        path: None,
        counter: None,
    };
    if w.a.counter_always {
        match Counter::attach() {
            Ok(c) => w.counter = Some(c),
            Err(e) => eprintln!("boad-osu: rank {}: --counter-always: {e}", w.comm.rank()),
        }
    }
    let mut imps = vec![];
    for name in w.a.impls.clone() {
        imps.push(match name.as_str() {
            "boad" => Imp::Boad,
            "naive" => baseline(&mut w.comm, Flavor::Naive, timeout)?,
            "epoll" => baseline(&mut w.comm, Flavor::Epoll, timeout)?,
            other => return Err(Failure::Baseline(format!("unknown implementation {other}"))),
        });
    }
    let (colls, sizes) = (w.a.colls.clone(), w.a.sizes.clone());
    let (tput, cpu) = (w.a.tput_colls.clone(), w.a.cpu_colls.clone());
    for imp in imps.iter_mut() {
        let t0 = Instant::now();
        for coll in &colls {
            for &bytes in &sizes {
                w.latency(imp, coll, bytes)?;
            }
        }
        for coll in &tput {
            w.throughput(imp, coll)?;
        }
        for coll in &cpu {
            w.cpu(imp, coll)?;
        }
        if w.comm.rank() == 0 {
            eprintln!(
                "boad-osu: {} ranks, {}: done in {:.1} s",
                w.comm.size(),
                imp.name(),
                t0.elapsed().as_secs_f64()
            );
        }
    }
    if !w.a.syscall_colls.is_empty() {
        w.syscalls(&mut imps)?;
    }
    if w.comm.rank() == 0 {
        for r in &w.out {
            if let Ok(line) = serde_json::to_string(r) {
                println!("{line}");
            }
        }
    }
    w.comm.finalize()?;
    Ok(())
}

fn main() -> ExitCode {
    let a = Args::parse();
    match run(a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Boad(e)) => {
            eprintln!("boad-osu: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Baseline(e)) => {
            eprintln!("boad-osu: {e}");
            ExitCode::from(3)
        }
    }
}
