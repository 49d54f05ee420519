//! One measurement = one [`Record`] = one JSON line of `results.jsonl`.
//!
//! Every producer (the osu-style worker under `boadrun`, the MPI C benchmark, the baselines, the
//! PageRank/BFS examples) writes these, and every consumer (tables in `docs/`, the plots) reads them.
//! Fields that do not apply to a benchmark are `None` (omitted from the JSON). Also here: who a
//! record measured ([`who`]), the order implementations are listed in, and the choices of records
//! the figures and the report share.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One measurement.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// What was measured: `latency`, `throughput`, `fanout`, `syscalls`, `cpu` or `app`.
    pub bench: String,
    /// Who did it: `boad-kernel`, `boad-udp`, `boad-shm`, `naive`, `epoll`, `ompi-tcp`,
    /// `ompi-shm`, `mpich-tcp`, `mpich-shm`.
    pub implementation: String,
    /// `bcast`, `reduce`, `allreduce`, `allgather`, `barrier`, or an application (`pagerank`, `bfs`).
    pub coll: String,
    /// Message bytes per rank (for allgather: each rank's block); for an application, vertices.
    pub bytes: u64,
    /// Ranks in the job.
    pub ranks: u32,
    /// (Virtual) hosts the ranks ran on; 1 = one host.
    pub hosts: u32,
    /// How the ranks were started when not by one `boadrun` on this machine: `ssh` = on hosts
    /// reached over ssh (`boadrun -H` or `mpirun`'s ssh launcher, each host a network namespace
    /// with its own sshd; the `hosts` sweep). Absent for every other sweep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<String>,
    /// Timed iterations.
    pub iters: u64,
    /// Latency in µs: max over ranks of each rank's mean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_us: Option<f64>,
    /// Latency in µs: max over ranks of each rank's median.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_us: Option<f64>,
    /// Latency in µs: max over ranks of each rank's 99th percentile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_us: Option<f64>,
    /// Collectives completed per second (throughput benchmarks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops_per_s: Option<f64>,
    /// CPU time (user + sys) per collective at the root (rank 0 unless said), µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_us_root: Option<f64>,
    /// CPU time (user + sys) per collective, mean over the other ranks, µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_us_other: Option<f64>,
    /// System calls per collective at the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscalls_root: Option<f64>,
    /// System calls per collective at one receiver (a non-root rank: the last one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscalls_receiver: Option<f64>,
    /// System calls per collective, mean over the ranks other than the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscalls_other: Option<f64>,
    /// What counted the system calls: `ebpf` (`boad_ebpf_loader::SyscallCounter`, every thread of
    /// each rank) or `strace` (the fallback; slows every call it traces). Absent in older records
    /// (strace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall_counter: Option<String>,
    /// Context switches (voluntary + involuntary, `getrusage`) per collective at the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctxsw_root: Option<f64>,
    /// Context switches per collective, mean over the other ranks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctxsw_other: Option<f64>,
    /// CPU time (user + sys, `CLOCK_PROCESS_CPUTIME_ID`) per collective summed over all ranks, µs
    /// (the whole loop, not only inside the calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_us_ranks: Option<f64>,
    /// The machine's busy CPU time per collective over all CPUs (`/proc/stat` user + nice + system
    /// + irq + softirq), µs: the ranks, the kernel's softirq work, and anything else running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_cpu_us: Option<f64>,
    /// The machine's softirq time per collective over all CPUs (`/proc/stat`), µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub softirq_us: Option<f64>,
    /// eBPF programs' runs and run time during the loop (`bpf_stats`): the job's kernel-path
    /// programs and the root's system call counter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf: Option<Vec<BpfProg>>,
    /// Applications: total wall time, seconds (max over ranks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_s: Option<f64>,
    /// Applications: time inside collectives, seconds (max over ranks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm_s: Option<f64>,
    /// The path boad reported for the measured calls (`Communicator::last_path`), if boad.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Anything a reader must know about this number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One eBPF program's accounting over a measured loop (`bpf_stats`; programs of one name summed).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BpfProg {
    /// The program's name (`boad_xdp`, `boad_tc_bcast`, `boad_sys_enter`; a tail-called fold
    /// program's time is its caller's).
    pub name: String,
    /// Runs (packets for XDP and TC, system calls for the counter) per collective.
    pub runs_per_coll: f64,
    /// Mean run time, ns per run.
    pub ns_per_run: f64,
}

/// Appends `records` to a JSON-lines file, creating it.
pub fn append(file: &Path, records: &[Record]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    for r in records {
        let line = serde_json::to_string(r).map_err(std::io::Error::other)?;
        writeln!(f, "{line}")?;
    }
    Ok(())
}

/// Reads every record of a JSON-lines file (blank lines are skipped).
pub fn read(file: &Path) -> std::io::Result<Vec<Record>> {
    let f = std::io::BufReader::new(std::fs::File::open(file)?);
    let mut out = vec![];
    for (i, line) in f.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let r = serde_json::from_str(&line).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}:{}: {e}", file.display(), i + 1),
            )
        })?;
        out.push(r);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Who a record measured and which records a figure or table shows (shared by the plots and the
// report).

/// Implementations in the order figures and tables list them; others follow, alphabetically.
pub const IMPLEMENTATIONS: [&str; 11] = [
    "boad-kernel",
    "boad-udp",
    "boad-hier-kernel",
    "boad-hier",
    "boad-shm",
    "naive",
    "epoll",
    "ompi-tcp",
    "ompi-shm",
    "mpich-tcp",
    "mpich-shm",
];

/// Who a record measured, as figures and tables name it: its `implementation`, except that a boad
/// record whose note says the job ran on another path than it asked for (`asked for kernel, ran on
/// udp`, the worker's wording) is `boad-udp (asked kernel)`, kept apart from a real boad-udp run.
pub fn who(r: &Record) -> String {
    let asked = r
        .note
        .as_deref()
        .filter(|_| r.implementation.starts_with("boad-"))
        .and_then(|n| n.split("asked for ").nth(1))
        .and_then(|rest| rest.split([',', ';', ' ']).next())
        .filter(|a| !a.is_empty());
    match asked {
        Some(a) => format!("{} (asked {a})", r.implementation),
        None => r.implementation.clone(),
    }
}

/// Sort key of an implementation: its place in [`IMPLEMENTATIONS`], then its name.
pub fn implementation_key(name: &str) -> (usize, String) {
    let i = IMPLEMENTATIONS
        .iter()
        .position(|k| *k == name)
        .unwrap_or(IMPLEMENTATIONS.len());
    (i, name.to_string())
}

/// The implementations named in `records`, in [`implementation_key`] order.
pub fn implementations<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<String> {
    let set: BTreeSet<(usize, String)> = records
        .into_iter()
        .map(|r| implementation_key(&who(r)))
        .collect();
    set.into_iter().map(|(_, n)| n).collect()
}

/// The launch the `hosts` sweep writes into its records: ranks on hosts reached over ssh.
pub const LAUNCH_SSH: &str = "ssh";

/// Whether a record comes from ranks started over ssh (the `hosts` sweep): such records have
/// their own report section and figures, apart from the virtual clusters of one `boadrun`.
pub fn over_ssh(r: &Record) -> bool {
    r.launch.is_some()
}

/// Receivers of a collective on `ranks` ranks: everyone but the root.
pub fn receivers(r: &Record) -> u32 {
    r.ranks.saturating_sub(1)
}

/// The message size most records share (the smallest on a tie).
pub fn common_bytes<'a>(records: impl IntoIterator<Item = &'a Record>) -> Option<u64> {
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    for r in records {
        *count.entry(r.bytes).or_default() += 1;
    }
    // max_by_key keeps the last maximum: iterate sizes downwards so a tie goes to the smallest.
    count
        .into_iter()
        .rev()
        .max_by_key(|(_, n)| *n)
        .map(|(b, _)| b)
}

/// The rank count a figure of one placement shows: 9 when there are 9-rank records (the sweeps'
/// main configuration), else the most.
pub fn preferred_ranks<'a>(records: impl IntoIterator<Item = &'a Record>) -> Option<u32> {
    let ranks: BTreeSet<u32> = records.into_iter().map(|r| r.ranks).collect();
    if ranks.contains(&9) {
        Some(9)
    } else {
        ranks.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_omits_absent_fields() {
        let dir = std::env::temp_dir().join(format!("boad-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("r.jsonl");
        let r = Record {
            bench: "latency".into(),
            implementation: "boad-kernel".into(),
            coll: "bcast".into(),
            bytes: 8,
            ranks: 9,
            hosts: 3,
            iters: 100,
            avg_us: Some(12.5),
            ..Default::default()
        };
        append(&file, std::slice::from_ref(&r)).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains("p99_us"), "{text}");
        assert_eq!(read(&file).unwrap(), vec![r]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cost_fields_round_trip_and_old_records_parse() {
        let r = Record {
            bench: "syscalls".into(),
            implementation: "boad-kernel".into(),
            coll: "bcast".into(),
            bytes: 4,
            ranks: 9,
            hosts: 3,
            iters: 1000,
            syscalls_root: Some(1.01),
            syscalls_other: Some(2.2),
            syscall_counter: Some("ebpf".into()),
            ctxsw_root: Some(0.5),
            ctxsw_other: Some(1.5),
            cpu_us_ranks: Some(120.0),
            machine_cpu_us: Some(150.0),
            softirq_us: Some(20.0),
            bpf: Some(vec![BpfProg {
                name: "boad_tc_bcast".into(),
                runs_per_coll: 1.0,
                ns_per_run: 2500.0,
            }]),
            ..Default::default()
        };
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains("\"syscall_counter\":\"ebpf\""), "{line}");
        assert!(line.contains("\"ns_per_run\":2500.0"), "{line}");
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), r);
        // A line written before these fields existed still reads, with them absent.
        let old = r#"{"bench":"syscalls","implementation":"naive","coll":"bcast","bytes":4,"ranks":9,"hosts":3,"iters":200,"syscalls_root":8.0,"syscalls_receiver":1.0,"note":"strace -f between markers"}"#;
        let o: Record = serde_json::from_str(old).unwrap();
        assert_eq!(o.syscalls_root, Some(8.0));
        assert_eq!((o.syscall_counter, o.ctxsw_root, o.bpf), (None, None, None));
    }
}
