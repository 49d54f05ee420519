//! One measurement = one [`Record`] = one JSON line of `results.jsonl`.
//!
//! Every producer (the osu-style worker under `boadrun`, the MPI C benchmark, the baselines, the
//! PageRank/BFS examples) writes these, and every consumer (tables in `docs/`, the plots) reads them.
//! Fields that do not apply to a benchmark are `None` (omitted from the JSON).

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
    /// System calls per collective at one receiver (a non-root rank).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscalls_receiver: Option<f64>,
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
}
