//! `report.md`: markdown tables made from the benchmark [`Record`]s, opened by a summary of what
//! they measured side by side: the kernel path against boad's userspace path and the naive/epoll
//! baselines on a (virtual) cluster (mean and p99 latency, throughput, CPU and system calls at the
//! root), boad's shared memory against its UDP path, Open MPI and MPICH on one host, and the
//! applications.
//!
//! Nothing here invents or judges a number: a table cell without a record says so, and the report
//! holds no goals. A reader who wants numbers checked against bounds writes them in a file
//! ([`parse_expectations`], `boad-plot --expect FILE`), naming each summary number by its key.
//! When several records describe the same measurement, the last one in the file wins (the newest
//! run).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use crate::plot::{Figure, PlotError, SIZE_COLLECTIVES};
use crate::record::{
    self, implementation_key, implementations, over_ssh, preferred_ranks, who, Record,
};

/// The userspace baselines the kernel path's throughput and CPU are compared with: boad's own UDP
/// path and the naive and epoll baselines (the best of them, per number).
pub const USERSPACE_BASELINES: [&str; 3] = ["boad-udp", "naive", "epoll"];
/// The baselines outside boad the kernel path's latency is compared with (the fastest of them).
pub const OTHER_BASELINES: [&str; 2] = ["naive", "epoll"];
/// What boad's paths are compared with on hosts reached over ssh (the `hosts` sweep): Open MPI
/// started by its own ssh launcher, TCP between every two ranks.
pub const SSH_BASELINE: &str = "ompi-tcp";
/// How to rerun the `hosts` sweep (as root), as the report and `docs/benchmarks.md` give it.
pub const SSH_REPRODUCE: &str = "cargo build --release -p boadrun -p boad-benches --bins && \
    target/release/boad-bench --only hosts --out DIR/results.jsonl && \
    target/release/boad-plot --results DIR/results.jsonl --out DIR";

/// The records of runs started by one `boadrun` (one host or its virtual clusters), then those of
/// ranks started over ssh (the `hosts` sweep), each in file order.
fn split(records: &[Record]) -> (Vec<Record>, Vec<Record>) {
    let (ssh, local): (Vec<Record>, Vec<Record>) = records.iter().cloned().partition(over_ssh);
    (local, ssh)
}

/// Reads a results file, naming it (and the bad line) on error.
pub fn load(path: &Path) -> Result<Vec<Record>, PlotError> {
    record::read(path).map_err(|source| PlotError::Results {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the report.
pub fn write(path: &Path, text: &str) -> Result<(), PlotError> {
    std::fs::write(path, text).map_err(|source| PlotError::Write {
        path: path.to_path_buf(),
        source,
    })
}

// ---------------------------------------------------------------------------------------------
// The summary: measured ratios, each with a key.

/// How a [`Measure`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// A ratio of two measurements, the first implementation's over the second's (`0.38x`: 62%
    /// lower).
    Ratio,
    /// A count per collective (system calls).
    Count,
}

/// One number of the summary, computed from the records.
#[derive(Clone, Debug, PartialEq)]
pub struct Measure {
    /// What it is, as `quantity/collective/implementation[/compared-with]`, e.g.
    /// `latency-mean/bcast/boad-kernel/boad-udp` (what `--expect` files name).
    pub key: String,
    /// The value: a ratio (first over second) or a count.
    pub value: f64,
    /// How to read `value`.
    pub unit: Unit,
    /// The configuration and the measurements it came from.
    pub from: String,
}

impl Measure {
    /// The value as the report shows it: `0.38x (62.1% lower)`, `0.0011x (1/923, 99.9% lower)`,
    /// `1.16x (16.0% higher)`, `3.40x`, `1.01`.
    pub fn shown(&self) -> String {
        let v = self.value;
        let x = fmt_x(v);
        match self.unit {
            Unit::Count => format!("{v:.2}"),
            Unit::Ratio if v > 0.0 && v < 0.1 => {
                format!("{x} (1/{:.0}, {:.1}% lower)", 1.0 / v, (1.0 - v) * 100.0)
            }
            Unit::Ratio if v < 1.0 => format!("{x} ({:.1}% lower)", (1.0 - v) * 100.0),
            Unit::Ratio if v < 2.0 => format!("{x} ({:.1}% higher)", (v - 1.0) * 100.0),
            Unit::Ratio => x,
        }
    }
}

/// A ratio: two decimals, or two significant digits below 0.1 (`0.38x`, `0.0011x`).
fn fmt_x(v: f64) -> String {
    let decimals = if v > 0.0 && v < 0.1 {
        (1.0 - v.log10().floor()).clamp(2.0, 9.0) as usize
    } else {
        2
    };
    format!("{v:.decimals$}x")
}

type Field = fn(&Record) -> Option<f64>;

/// The records a summary number compares: those that `keep`, from the first of `benches` that has
/// any, on a cluster (`hosts > 1`) or on one host, at the figures' rank count
/// ([`preferred_ranks`]), the most common host count there and the smallest size there.
fn config<'a>(
    records: &'a [Record],
    benches: &[&str],
    cluster: bool,
    keep: impl Fn(&Record) -> bool,
) -> Vec<&'a Record> {
    let all: Vec<&Record> = records
        .iter()
        .filter(|r| (r.hosts > 1) == cluster && keep(r))
        .collect();
    let Some(bench) = benches.iter().find(|b| all.iter().any(|r| r.bench == **b)) else {
        return vec![];
    };
    let rs: Vec<&Record> = all.into_iter().filter(|r| r.bench == *bench).collect();
    let Some(ranks) = preferred_ranks(rs.iter().copied()) else {
        return vec![];
    };
    let mut hosts: BTreeMap<u32, usize> = BTreeMap::new();
    for r in rs.iter().filter(|r| r.ranks == ranks) {
        *hosts.entry(r.hosts).or_default() += 1;
    }
    let Some(hosts) = hosts
        .into_iter()
        .rev()
        .max_by_key(|(_, n)| *n)
        .map(|(h, _)| h)
    else {
        return vec![];
    };
    let at = |r: &Record| r.ranks == ranks && r.hosts == hosts;
    let Some(bytes) = rs.iter().filter(|r| at(r)).map(|r| r.bytes).min() else {
        return vec![];
    };
    rs.into_iter()
        .filter(|r| at(r) && r.bytes == bytes)
        .collect()
}

/// The last record of `imp` among `rs` that has `field`, with its value.
fn last<'a>(rs: &[&'a Record], imp: &str, field: Field) -> Option<(&'a Record, f64)> {
    rs.iter()
        .rev()
        .filter(|r| who(r) == imp)
        .find_map(|r| Some((*r, field(r)?)))
}

/// The best (lowest, or highest when `highest`) of `imps` among `rs`.
fn best<'a>(
    rs: &[&'a Record],
    imps: &[&str],
    field: Field,
    highest: bool,
) -> Option<(&'a Record, f64)> {
    imps.iter()
        .filter_map(|i| last(rs, i, field))
        .min_by(|a, b| {
            let o = a.1.total_cmp(&b.1);
            if highest {
                o.reverse()
            } else {
                o
            }
        })
}

/// `8 B, 9 ranks on 3 hosts, bench latency` (an application: `50000 vertices, ...`).
fn describe(r: &Record) -> String {
    let unit = if r.bench == "app" { "vertices" } else { "B" };
    format!(
        "{} {unit}, {} ranks on {}, bench {}",
        r.bytes,
        r.ranks,
        hosts_text(r.hosts),
        r.bench
    )
}

/// `a / b` as a [`Measure`], when both were measured (and `b > 0`).
fn ratio(
    key: String,
    a: Option<(&Record, f64)>,
    b: Option<(&Record, f64)>,
    fmt: fn(f64) -> String,
) -> Option<Measure> {
    let ((ra, va), (rb, vb)) = (a?, b?);
    if vb <= 0.0 || !va.is_finite() {
        return None;
    }
    let mut from = format!(
        "{}: {} {} vs {} {}",
        describe(ra),
        who(ra),
        fmt(va),
        who(rb),
        fmt(vb)
    );
    for w in [ra, rb].into_iter().filter_map(path_warning) {
        let _ = write!(from, "; WARNING: {w}");
    }
    Some(Measure {
        key,
        value: va / vb,
        unit: Unit::Ratio,
        from,
    })
}

/// Every number of the summary that the records allow, in report order.
pub fn summary(records: &[Record]) -> Vec<Measure> {
    let (local, ssh) = split(records);
    let mut out = summary_local(&local);
    out.extend(ssh_hosts(&ssh));
    out
}

/// The summary of the runs of one boadrun (one host, virtual clusters).
fn summary_local(records: &[Record]) -> Vec<Measure> {
    let mut out = vec![];
    let us = |v: f64| format!("{} µs", fmt_us(v));
    let ops = |v: f64| format!("{} ops/s", fmt_ops(v));
    let secs = |v: f64| format!("{} s", fmt_s(v));
    let mean: Field = |r| r.avg_us;
    let p99: Field = |r| r.p99_us;
    // Latency on a cluster: the kernel path against the userspace path and the other baselines.
    for coll in SIZE_COLLECTIVES {
        let rs = config(records, &["latency"], true, |r| {
            r.coll == coll && r.avg_us.is_some()
        });
        let kernel = |f| last(&rs, "boad-kernel", f);
        let udp = |f| last(&rs, "boad-udp", f);
        let key = |q: &str, i: &str, o: &str| format!("{q}/{coll}/{i}/{o}");
        out.extend(ratio(
            key("latency-mean", "boad-kernel", "boad-udp"),
            kernel(mean),
            udp(mean),
            us,
        ));
        out.extend(ratio(
            key("latency-p99", "boad-kernel", "boad-udp"),
            kernel(p99),
            udp(p99),
            us,
        ));
        out.extend(ratio(
            key("latency-mean", "boad-kernel", "best-baseline"),
            kernel(mean),
            best(&rs, &OTHER_BASELINES, mean, false),
            us,
        ));
        out.extend(ratio(
            key("latency-mean", "boad-hier-kernel", "boad-udp"),
            last(&rs, "boad-hier-kernel", mean),
            udp(mean),
            us,
        ));
    }
    // Throughput on a cluster: boad's kernel paths against the best userspace baseline.
    for coll in ["bcast", "reduce", "allreduce"] {
        let rs = config(records, &["throughput", "fanout"], true, |r| {
            r.coll == coll && r.ops_per_s.is_some()
        });
        let field: Field = |r| r.ops_per_s;
        for imp in ["boad-kernel", "boad-hier-kernel"] {
            out.extend(ratio(
                format!("throughput/{coll}/{imp}/best-userspace"),
                last(&rs, imp, field),
                best(&rs, &USERSPACE_BASELINES, field, true),
                ops,
            ));
        }
    }
    // CPU and system calls at the root on a cluster.
    for coll in SIZE_COLLECTIVES {
        let field: Field = |r| r.cpu_us_root;
        let rs = config(records, &["cpu"], true, |r| {
            r.coll == coll && field(r).is_some()
        });
        out.extend(ratio(
            format!("root-cpu/{coll}/boad-kernel/best-userspace"),
            last(&rs, "boad-kernel", field),
            best(&rs, &USERSPACE_BASELINES, field, false),
            us,
        ));
    }
    for coll in SIZE_COLLECTIVES {
        let field: Field = |r| r.syscalls_root;
        let rs = config(records, &["syscalls"], true, |r| {
            r.coll == coll && field(r).is_some()
        });
        if let Some((k, v)) = last(&rs, "boad-kernel", field) {
            let others: Vec<String> = USERSPACE_BASELINES
                .iter()
                .filter_map(|b| last(&rs, b, field).map(|(_, v)| format!("{b} {v:.2}")))
                .collect();
            let mut from = describe(k);
            if !others.is_empty() {
                let _ = write!(from, "; the others' roots: {}", others.join(", "));
            }
            out.push(Measure {
                key: format!("root-syscalls/{coll}/boad-kernel"),
                value: v,
                unit: Unit::Count,
                from,
            });
        }
    }
    out.extend(syscalls_over_fanout(records));
    for coll in SIZE_COLLECTIVES {
        let field: Field = |r| r.machine_cpu_us;
        let rs = config(records, &["syscalls"], true, |r| {
            r.coll == coll && field(r).is_some()
        });
        for base in COST_REFERENCES {
            out.extend(ratio(
                format!("machine-cpu/{coll}/boad-kernel/{}", key_part(base)),
                last(&rs, "boad-kernel", field),
                last(&rs, base, field),
                us,
            ));
        }
    }
    out.extend(one_host(records));
    out.extend(applications(records, secs));
    out
}

/// The most system calls a kernel bcast root made at any fan-out (bench `fanout`).
fn syscalls_over_fanout(records: &[Record]) -> Option<Measure> {
    let mut by: BTreeMap<u32, f64> = BTreeMap::new();
    for r in records.iter().filter(|r| {
        r.bench == "fanout" && r.coll == "bcast" && who(r) == "boad-kernel" && r.hosts > 1
    }) {
        if let Some(v) = r.syscalls_root {
            by.insert(r.ranks.saturating_sub(1), v);
        }
    }
    let lo = by.values().copied().reduce(f64::min)?;
    let hi = by.values().copied().reduce(f64::max)?;
    let per: Vec<String> = by.iter().map(|(n, v)| format!("{n}: {v:.2}")).collect();
    Some(Measure {
        key: "root-syscalls-max-over-fanout/bcast/boad-kernel".into(),
        value: hi,
        unit: Unit::Count,
        from: format!(
            "bench fanout, {lo:.2}-{hi:.2} over {} fan-outs (receivers: calls) {}",
            by.len(),
            per.join(", ")
        ),
    })
}

/// One host: boad's shared memory against every other implementation measured there, per rank
/// count: the median over collectives and sizes of the ratio of means `boad-shm / other`.
fn one_host(records: &[Record]) -> Vec<Measure> {
    // ranks -> (coll, bytes) -> implementation -> the last mean
    type Cells = BTreeMap<(String, u64), BTreeMap<(usize, String), f64>>;
    let mut by: BTreeMap<u32, Cells> = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r.bench == "latency" && r.hosts <= 1)
    {
        if let Some(v) = r.avg_us {
            by.entry(r.ranks)
                .or_default()
                .entry((r.coll.clone(), r.bytes))
                .or_default()
                .insert(implementation_key(&who(r)), v);
        }
    }
    let mut out = vec![];
    for (ranks, cells) in &by {
        let others: BTreeSet<&(usize, String)> = cells
            .values()
            .flat_map(|m| m.keys())
            .filter(|k| k.1 != "boad-shm")
            .collect();
        for other in others {
            let mut ratios: Vec<f64> = vec![];
            let mut colls: BTreeSet<(usize, String)> = BTreeSet::new();
            let mut sizes: BTreeSet<u64> = BTreeSet::new();
            for ((coll, bytes), m) in cells {
                let shm = m.iter().find(|(k, _)| k.1 == "boad-shm").map(|(_, v)| *v);
                if let (Some(s), Some(&o)) = (shm, m.get(other)) {
                    if o > 0.0 {
                        ratios.push(s / o);
                        colls.insert(coll_key(coll));
                        sizes.insert(*bytes);
                    }
                }
            }
            if ratios.is_empty() {
                continue;
            }
            ratios.sort_by(f64::total_cmp);
            let n = ratios.len();
            let median = if n % 2 == 1 {
                ratios[n / 2]
            } else {
                (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0
            };
            let sizes = match (sizes.first(), sizes.last()) {
                (Some(a), Some(b)) if a != b => format!("{a}-{b} B"),
                (Some(a), _) => format!("{a} B"),
                _ => String::new(),
            };
            out.push(Measure {
                key: format!(
                    "latency-mean-median/one-host-{ranks}-ranks/boad-shm/{}",
                    other.1
                ),
                value: median,
                unit: Unit::Ratio,
                from: format!(
                    "{ranks} ranks on one host, bench latency: median of {n} ratios of means \
                     ({}; {sizes}), from {} to {}",
                    colls
                        .into_iter()
                        .map(|c| c.1)
                        .collect::<Vec<_>>()
                        .join(", "),
                    fmt_x(ratios[0]),
                    fmt_x(ratios[n - 1])
                ),
            });
        }
    }
    out
}

/// The median of `v` (sorted in place); `None` when empty.
fn median(v: &mut [f64]) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// `who` as a summary key's part: `boad-hier (asked hier-kernel)` is `boad-hier-asked-hier-kernel`
/// (keys hold no spaces).
fn key_part(who: &str) -> String {
    who.replace(" (asked ", "-asked-").replace(')', "")
}

/// The latency records of the `hosts` sweep: (ranks, hosts) -> (coll, bytes) -> who -> the last.
type SshCells<'a> =
    BTreeMap<(u32, u32), BTreeMap<((usize, String), u64), BTreeMap<(usize, String), &'a Record>>>;

fn ssh_cells(records: &[Record]) -> SshCells<'_> {
    let mut by: SshCells = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| over_ssh(r) && r.bench == "latency" && r.avg_us.is_some())
    {
        by.entry((r.ranks, r.hosts))
            .or_default()
            .entry((coll_key(&r.coll), r.bytes))
            .or_default()
            .insert(implementation_key(&who(r)), r);
    }
    by
}

/// Hosts over ssh: each boad path's latency over Open MPI's ([`SSH_BASELINE`]) measured on the same
/// hosts, the median over every collective and size both measured, of the means and of the p99s.
fn ssh_hosts(records: &[Record]) -> Vec<Measure> {
    let mut out = vec![];
    for ((ranks, hosts), cells) in ssh_cells(records) {
        let boads: BTreeSet<(usize, String)> = cells
            .values()
            .flat_map(|m| m.keys())
            .filter(|k| k.1.starts_with("boad-"))
            .cloned()
            .collect();
        for imp in boads {
            for (quantity, field) in [
                ("mean", (|r: &Record| r.avg_us) as Field),
                ("p99", |r: &Record| r.p99_us),
            ] {
                let mut ratios = vec![];
                let mut paths: BTreeSet<String> = BTreeSet::new();
                for m in cells.values() {
                    let base = m
                        .iter()
                        .find(|(k, _)| k.1 == SSH_BASELINE)
                        .and_then(|(_, r)| field(r));
                    let Some(r) = m.get(&imp) else { continue };
                    if let (Some(a), Some(b)) = (field(r), base) {
                        if b > 0.0 && a.is_finite() {
                            ratios.push(a / b);
                            paths.insert(r.path.clone().unwrap_or_else(|| "unknown".into()));
                        }
                    }
                }
                let n = ratios.len();
                let Some(mid) = median(&mut ratios) else {
                    continue;
                };
                out.push(Measure {
                    key: format!(
                        "ssh-hosts-latency-{quantity}-median/{ranks}-ranks-{hosts}-hosts/{}/{SSH_BASELINE}",
                        key_part(&imp.1)
                    ),
                    value: mid,
                    unit: Unit::Ratio,
                    from: format!(
                        "{ranks} ranks on {hosts} hosts over ssh, bench latency: median of {n} \
                         ratios of {quantity}s (every collective and size both measured), from {} \
                         to {}; the path the ranks reported: {}",
                        fmt_x(ratios[0]),
                        fmt_x(ratios[n - 1]),
                        paths.into_iter().collect::<Vec<_>>().join(", ")
                    ),
                });
            }
        }
    }
    out
}

/// Applications: each boad path's total time over boad-udp's, at the largest problem measured
/// with boad-udp.
fn applications(records: &[Record], secs: fn(f64) -> String) -> Vec<Measure> {
    let apps: BTreeSet<&str> = records
        .iter()
        .filter(|r| r.bench == "app")
        .map(|r| r.coll.as_str())
        .collect();
    let mut out = vec![];
    for app in apps {
        let with_udp = |r: &&Record| r.bench == "app" && r.coll == app && r.total_s.is_some();
        let Some(size) = records
            .iter()
            .filter(with_udp)
            .filter(|r| who(r) == "boad-udp")
            .map(|r| (r.bytes, r.ranks))
            .max()
        else {
            continue;
        };
        let rs: Vec<&Record> = records
            .iter()
            .filter(with_udp)
            .filter(|r| (r.bytes, r.ranks) == size)
            .collect();
        let total: Field = |r| r.total_s;
        for imp in ["boad-kernel", "boad-hier-kernel", "boad-shm"] {
            out.extend(ratio(
                format!("app-total/{app}/{imp}/boad-udp"),
                last(&rs, imp, total),
                last(&rs, "boad-udp", total),
                secs,
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Expectations: bounds on summary numbers, from a file.

/// A bound on a summary number: `key >= bound` or `key <= bound`.
#[derive(Clone, Debug, PartialEq)]
pub struct Expectation {
    /// A [`Measure::key`].
    pub key: String,
    /// `true` for `>=`, `false` for `<=`.
    pub at_least: bool,
    /// The bound.
    pub bound: f64,
    /// Its line in the file (1-based).
    pub line: usize,
}

/// Reads an expectations file: one `KEY >= NUMBER` or `KEY <= NUMBER` a line (keys as in the
/// report's summary); blank lines and lines starting with `#` are skipped.
pub fn parse_expectations(path: &Path) -> Result<Vec<Expectation>, PlotError> {
    let text = std::fs::read_to_string(path).map_err(|e| PlotError::Expect {
        path: path.to_path_buf(),
        line: 0,
        message: format!("cannot read: {e}"),
    })?;
    let mut out = vec![];
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |message: String| PlotError::Expect {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let [key, op, bound] = words[..] else {
            return Err(bad(format!(
                "expected `KEY >= NUMBER` or `KEY <= NUMBER`, found `{line}`"
            )));
        };
        let at_least = match op {
            ">=" => true,
            "<=" => false,
            _ => return Err(bad(format!("unknown comparison `{op}` (>= or <=)"))),
        };
        let bound: f64 = bound
            .parse()
            .ok()
            .filter(|b: &f64| b.is_finite())
            .ok_or_else(|| bad(format!("`{bound}` is not a number")))?;
        out.push(Expectation {
            key: key.to_string(),
            at_least,
            bound,
            line: i + 1,
        });
    }
    Ok(out)
}

/// An expectation and the summary number it was checked against.
#[derive(Clone, Debug, PartialEq)]
pub struct Checked {
    /// The expectation.
    pub expectation: Expectation,
    /// The number with its key, or `None`: no data.
    pub measured: Option<f64>,
}

impl Checked {
    /// Whether the bound holds; `None` for no data.
    pub fn holds(&self) -> Option<bool> {
        let e = &self.expectation;
        self.measured.map(|m| {
            if e.at_least {
                m >= e.bound
            } else {
                m <= e.bound
            }
        })
    }

    /// `holds`, `does not hold` or `no data`.
    pub fn verdict(&self) -> &'static str {
        match self.holds() {
            Some(true) => "holds",
            Some(false) => "does not hold",
            None => "no data",
        }
    }

    /// One line: key, bound, measured value, verdict.
    pub fn summary(&self) -> String {
        let e = &self.expectation;
        let op = if e.at_least { ">=" } else { "<=" };
        let measured = self
            .measured
            .map_or_else(|| "no data".to_string(), |m| format!("{m:.4}"));
        format!(
            "{} {op} {}: measured {measured}: {}",
            e.key,
            e.bound,
            self.verdict()
        )
    }
}

/// Checks each expectation against the summary number with its key.
pub fn check(expectations: &[Expectation], measures: &[Measure]) -> Vec<Checked> {
    expectations
        .iter()
        .map(|e| Checked {
            expectation: e.clone(),
            measured: measures.iter().find(|m| m.key == e.key).map(|m| m.value),
        })
        .collect()
}

/// A warning when a boad implementation's record says it took another path than its name.
fn path_warning(r: &Record) -> Option<String> {
    let want = r.implementation.strip_prefix("boad-")?;
    let path = r.path.as_deref()?;
    (!path.contains(want)).then(|| format!("{} reported path {path}", r.implementation))
}

// ---------------------------------------------------------------------------------------------
// Formatting.

/// Microseconds: two decimals below 10, one above.
pub fn fmt_us(v: f64) -> String {
    if v.abs() < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

/// Operations per second, with thousands separators.
pub fn fmt_ops(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v.abs() < 100.0 {
        return format!("{v:.1}");
    }
    let digits = format!("{:.0}", v.abs());
    let mut s = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            s.push(',');
        }
        s.push(c);
    }
    if v < 0.0 {
        s.insert(0, '-');
    }
    s
}

/// Seconds with about three significant digits.
pub fn fmt_s(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 || a == 0.0 {
        format!("{v:.2}")
    } else {
        // Three significant digits: 0.123, 0.0456.
        let decimals = (2.0 - a.log10().floor()).clamp(3.0, 9.0) as usize;
        format!("{v:.decimals$}")
    }
}

fn fmt_opt(v: Option<f64>, f: fn(f64) -> String) -> String {
    v.map_or_else(|| "-".into(), f)
}

fn fmt_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

/// `mean [p99]` of a latency record, with a warning if boad took another path than its name says.
fn latency_cell(r: Option<&Record>) -> String {
    let Some(r) = r else {
        return "-".into();
    };
    let mut s = fmt_opt(r.avg_us, fmt_us);
    if let Some(p) = r.p99_us {
        let _ = write!(s, " [{}]", fmt_us(p));
    }
    if let Some(p) = r.path.as_deref().filter(|_| path_warning(r).is_some()) {
        let _ = write!(s, " (path {p})");
    }
    s
}

fn coll_key(coll: &str) -> (usize, String) {
    let order = ["bcast", "reduce", "allreduce", "allgather", "barrier"];
    (
        order.iter().position(|c| *c == coll).unwrap_or(order.len()),
        coll.to_string(),
    )
}

fn hosts_text(hosts: u32) -> String {
    if hosts <= 1 {
        "one host".into()
    } else {
        format!("{hosts} hosts")
    }
}

/// A markdown table; columns from `numeric_from` on are right-aligned.
fn table(out: &mut String, header: &[String], numeric_from: usize, rows: &[Vec<String>]) {
    table_aligned(out, header, |i| i >= numeric_from, rows);
}

/// A markdown table; the columns `right` says are right-aligned.
fn table_aligned(
    out: &mut String,
    header: &[String],
    right: impl Fn(usize) -> bool,
    rows: &[Vec<String>],
) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let align: Vec<&str> = (0..header.len())
        .map(|i| if right(i) { "---:" } else { "---" })
        .collect();
    let _ = writeln!(out, "| {} |", align.join(" | "));
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out.push('\n');
}

// ---------------------------------------------------------------------------------------------
// The report.

/// The whole `report.md`: `source` names the results file, `figures` are the PNGs beside it,
/// `not_drawn` says which figures are missing and why, and `expected` holds the expectations file
/// and its checks when `--expect` gave one.
pub fn render(
    records: &[Record],
    source: &str,
    figures: &[Figure],
    not_drawn: &[String],
    expected: Option<(&str, &[Checked])>,
) -> String {
    let (local, ssh) = split(records);
    let mut out = String::new();
    let _ = writeln!(out, "# boad benchmark report\n");
    let _ = writeln!(
        out,
        "Generated by `boad-plot` from `{source}` ({} records). Every number below comes from \
         those records; \"no data\" or \"-\" means nothing measured it. Latencies are in µs: each \
         rank's mean, max over ranks, and in brackets each rank's p99, max over ranks. When \
         several records describe the same measurement, the last one in the file is used.\n",
        records.len()
    );
    summary_section(&mut out, records);
    if let Some((file, checked)) = expected {
        expectations_section(&mut out, file, checked);
    }
    figures_section(&mut out, figures, not_drawn);
    latency_section(&mut out, &local);
    shm_vs_mpi_section(&mut out, &local);
    ssh_hosts_section(&mut out, &ssh);
    fanout_section(&mut out, &local);
    throughput_section(&mut out, &local);
    cost_section(&mut out, &local);
    machine_cost_section(&mut out, &local);
    apps_section(&mut out, &local);
    notes_section(&mut out, records);
    out
}

fn summary_section(out: &mut String, records: &[Record]) {
    let _ = writeln!(out, "## Summary\n");
    let measures = summary(records);
    if measures.is_empty() {
        let _ = writeln!(
            out,
            "No data (no comparison: needs latency, throughput, cpu, syscalls, fanout or app \
             records of a boad path and of what it is compared with).\n"
        );
        return;
    }
    let _ = writeln!(
        out,
        "Measured side by side. A ratio is the first implementation's number over the second's: \
         for latency, CPU and time below 1 means the first took less, for throughput above 1 \
         means it completed more. `best-baseline` is the fastest of {} and `best-userspace` the \
         best of {} for that number. On one host the ratio is boad-shm's mean latency over the \
         other's, the median over every collective and size both measured. Each configuration is \
         the sweep's main one (9 ranks when measured; the most common host count; the smallest \
         size); the tables below have the rest. The key names the number for `boad-plot \
         --expect`.\n",
        OTHER_BASELINES.join(", "),
        USERSPACE_BASELINES.join(", ")
    );
    let rows: Vec<Vec<String>> = measures
        .iter()
        .map(|m| vec![format!("`{}`", m.key), m.shown(), m.from.replace('|', "/")])
        .collect();
    let header = ["key", "measured", "from"].map(String::from);
    table_aligned(out, &header, |i| i == 1, &rows);
}

fn expectations_section(out: &mut String, file: &str, checked: &[Checked]) {
    let _ = writeln!(out, "## Expectations\n");
    let _ = writeln!(
        out,
        "Bounds read from `{file}` (`boad-plot --expect`), checked against the summary above.\n"
    );
    if checked.is_empty() {
        let _ = writeln!(out, "The file holds no expectation.\n");
        return;
    }
    let rows: Vec<Vec<String>> = checked
        .iter()
        .map(|c| {
            let e = &c.expectation;
            vec![
                e.line.to_string(),
                format!("`{}`", e.key),
                format!("{} {}", if e.at_least { ">=" } else { "<=" }, e.bound),
                c.measured
                    .map_or_else(|| "no data".into(), |m| format!("{m:.4}")),
                c.verdict().to_string(),
            ]
        })
        .collect();
    let header = ["line", "key", "bound", "measured", "result"].map(String::from);
    table_aligned(out, &header, |i| i == 0 || i == 3, &rows);
}

fn figures_section(out: &mut String, figures: &[Figure], not_drawn: &[String]) {
    let _ = writeln!(out, "## Figures\n");
    for f in figures {
        let _ = writeln!(out, "![{}]({})\n", f.title, f.file);
    }
    if !not_drawn.is_empty() {
        let _ = writeln!(out, "Not drawn:\n");
        for why in not_drawn {
            let _ = writeln!(out, "- {why}");
        }
        out.push('\n');
    } else if figures.is_empty() {
        let _ = writeln!(out, "No figures.\n");
    }
}

fn latency_section(out: &mut String, records: &[Record]) {
    let _ = writeln!(out, "## Latency\n");
    // (coll, one host?, ranks, hosts) -> bytes -> implementation -> last record
    type Groups<'a> = BTreeMap<
        ((usize, String), bool, u32, u32),
        BTreeMap<u64, BTreeMap<(usize, String), &'a Record>>,
    >;
    let mut groups: Groups = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r.bench == "latency" && r.avg_us.is_some())
    {
        groups
            .entry((coll_key(&r.coll), r.hosts <= 1, r.ranks, r.hosts))
            .or_default()
            .entry(r.bytes)
            .or_default()
            .insert(implementation_key(&who(r)), r);
    }
    if groups.is_empty() {
        let _ = writeln!(out, "No data (no records with bench latency and avg_us).\n");
        return;
    }
    let _ = writeln!(
        out,
        "Mean [p99] in µs per collective and size; the ratio columns divide an implementation's \
         mean by boad-udp's (below 1: faster than boad-udp). Sizes are per rank (allgather: each \
         rank's block).\n"
    );
    for (((_, coll), _, ranks, hosts), rows) in &groups {
        let _ = writeln!(out, "### {coll}: {ranks} ranks on {}\n", hosts_text(*hosts));
        let imps: BTreeSet<&(usize, String)> = rows.values().flat_map(|m| m.keys()).collect();
        let has_udp = imps.iter().any(|k| k.1 == "boad-udp");
        let others: Vec<&(usize, String)> = if has_udp {
            imps.iter().copied().filter(|k| k.1 != "boad-udp").collect()
        } else {
            vec![]
        };
        let mut header = vec!["bytes".to_string()];
        header.extend(imps.iter().map(|k| k.1.clone()));
        header.extend(others.iter().map(|k| format!("{} / boad-udp", k.1)));
        let body: Vec<Vec<String>> = rows
            .iter()
            .map(|(bytes, m)| {
                let udp = m
                    .iter()
                    .find(|(k, _)| k.1 == "boad-udp")
                    .map(|(_, r)| r.avg_us);
                let mut row = vec![bytes.to_string()];
                row.extend(imps.iter().map(|k| latency_cell(m.get(*k).copied())));
                row.extend(
                    others
                        .iter()
                        .map(|k| fmt_ratio(m.get(*k).and_then(|r| r.avg_us), udp.flatten())),
                );
                row
            })
            .collect();
        table(out, &header, 1, &body);
    }
}

fn is_mpi(name: &str) -> bool {
    name.starts_with("ompi-") || name.starts_with("mpich-")
}

fn shm_vs_mpi_section(out: &mut String, records: &[Record]) {
    let _ = writeln!(out, "## Shared memory vs MPI (one host)\n");
    let one_host: Vec<&Record> = records
        .iter()
        .filter(|r| r.bench == "latency" && r.hosts <= 1 && r.avg_us.is_some())
        .collect();
    let mut ranks: BTreeSet<u32> = [2, 4, 9].into();
    ranks.extend(one_host.iter().map(|r| r.ranks));
    let _ = writeln!(
        out,
        "Mean latency of each MPI over boad-shm's (above 1: boad-shm is faster), with the means \
         in µs.\n"
    );
    for n in ranks {
        let _ = writeln!(out, "### {n} ranks\n");
        // (coll, bytes) -> implementation -> last record
        type Rows<'a> = BTreeMap<((usize, String), u64), BTreeMap<(usize, String), &'a Record>>;
        let mut rows: Rows = BTreeMap::new();
        for r in one_host.iter().filter(|r| r.ranks == n) {
            if who(r) == "boad-shm" || is_mpi(&r.implementation) {
                rows.entry((coll_key(&r.coll), r.bytes))
                    .or_default()
                    .insert(implementation_key(&who(r)), r);
            }
        }
        rows.retain(|_, m| m.keys().any(|k| k.1 == "boad-shm"));
        let mpis: BTreeSet<(usize, String)> = rows
            .values()
            .flat_map(|m| m.keys())
            .filter(|k| is_mpi(&k.1))
            .cloned()
            .collect();
        if rows.is_empty() || mpis.is_empty() {
            let _ = writeln!(
                out,
                "No data (needs latency records of boad-shm and of an MPI, ompi-* or mpich-*, on \
                 {n} ranks on one host).\n"
            );
            continue;
        }
        let mut header = vec!["collective".to_string(), "bytes".into(), "boad-shm".into()];
        header.extend(mpis.iter().map(|k| k.1.clone()));
        header.extend(mpis.iter().map(|k| format!("{} / boad-shm", k.1)));
        let body: Vec<Vec<String>> = rows
            .iter()
            .map(|(((_, coll), bytes), m)| {
                let shm = m
                    .iter()
                    .find(|(k, _)| k.1 == "boad-shm")
                    .and_then(|(_, r)| r.avg_us);
                let mut row = vec![coll.clone(), bytes.to_string(), fmt_opt(shm, fmt_us)];
                row.extend(
                    mpis.iter()
                        .map(|k| fmt_opt(m.get(k).and_then(|r| r.avg_us), fmt_us)),
                );
                row.extend(
                    mpis.iter()
                        .map(|k| fmt_ratio(m.get(k).and_then(|r| r.avg_us), shm)),
                );
                row
            })
            .collect();
        table(out, &header, 1, &body);
    }
}

fn ssh_hosts_section(out: &mut String, records: &[Record]) {
    let _ = writeln!(out, "## Hosts over ssh: boad vs Open MPI\n");
    let cells = ssh_cells(records);
    if cells.is_empty() {
        let _ = writeln!(
            out,
            "No data (needs latency records with launch \"ssh\": the `hosts` sweep).\n"
        );
        return;
    }
    let _ = writeln!(
        out,
        "Network namespaces, each with its own sshd: the launcher (`boadrun -H` or `mpirun`) on \
         one, the ranks on the others, started over ssh by each. Mean [p99] in µs per collective \
         and size, max over ranks; the ratio columns divide each boad path's mean [p99] by \
         {SSH_BASELINE}'s (Open MPI, TCP between every two ranks: its shared memory cannot run \
         on namespace hosts that share one host name) from the same \
         records (below 1: boad is faster). A boad column is named by the path its ranks \
         reported; `(asked X)` when that is not the path asked for. Reproduce (as root):\n\n    \
         {SSH_REPRODUCE}\n"
    );
    for ((ranks, hosts), rows) in &cells {
        let imps: BTreeSet<&(usize, String)> = rows.values().flat_map(|m| m.keys()).collect();
        let has_base = imps.iter().any(|k| k.1 == SSH_BASELINE);
        let boads: Vec<&(usize, String)> = if has_base {
            imps.iter()
                .copied()
                .filter(|k| k.1.starts_with("boad-"))
                .collect()
        } else {
            vec![]
        };
        let mut colls: BTreeSet<&(usize, String)> = BTreeSet::new();
        colls.extend(rows.keys().map(|(c, _)| c));
        for coll in colls {
            let _ = writeln!(
                out,
                "### {}: {ranks} ranks on {hosts} hosts over ssh\n",
                coll.1
            );
            let mut header = vec!["bytes".to_string()];
            header.extend(imps.iter().map(|k| k.1.clone()));
            header.extend(boads.iter().map(|k| format!("{} / {SSH_BASELINE}", k.1)));
            let body: Vec<Vec<String>> = rows
                .iter()
                .filter(|((c, _), _)| c == coll)
                .map(|((_, bytes), m)| {
                    let base = m.iter().find(|(k, _)| k.1 == SSH_BASELINE).map(|(_, r)| *r);
                    let mut row = vec![bytes.to_string()];
                    row.extend(imps.iter().map(|k| latency_cell(m.get(*k).copied())));
                    row.extend(boads.iter().map(|k| {
                        let r = m.get(*k);
                        let mean = fmt_ratio(r.and_then(|r| r.avg_us), base.and_then(|b| b.avg_us));
                        let p99 = fmt_ratio(r.and_then(|r| r.p99_us), base.and_then(|b| b.p99_us));
                        format!("{mean} [{p99}]")
                    }));
                    row
                })
                .collect();
            table(out, &header, 1, &body);
        }
    }
}

fn fanout_section(out: &mut String, records: &[Record]) {
    let _ = writeln!(out, "## Fan-out\n");
    // (coll, bytes) -> (ranks, hosts) -> implementation -> last record
    type Groups<'a> = BTreeMap<
        ((usize, String), u64),
        BTreeMap<(u32, u32), BTreeMap<(usize, String), &'a Record>>,
    >;
    let mut groups: Groups = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r.bench == "fanout" && r.avg_us.is_some())
    {
        groups
            .entry((coll_key(&r.coll), r.bytes))
            .or_default()
            .entry((r.ranks, r.hosts))
            .or_default()
            .insert(implementation_key(&who(r)), r);
    }
    if groups.is_empty() {
        let _ = writeln!(out, "No data (no records with bench fanout and avg_us).\n");
        return;
    }
    let _ = writeln!(
        out,
        "Mean [p99] latency in µs against receivers (ranks - 1).\n"
    );
    for (((_, coll), bytes), rows) in &groups {
        let _ = writeln!(out, "### {coll}, {bytes} B\n");
        let imps: BTreeSet<&(usize, String)> = rows.values().flat_map(|m| m.keys()).collect();
        let mut header = vec!["receivers".to_string(), "hosts".into()];
        header.extend(imps.iter().map(|k| k.1.clone()));
        let body: Vec<Vec<String>> = rows
            .iter()
            .map(|((ranks, hosts), m)| {
                let mut row = vec![ranks.saturating_sub(1).to_string(), hosts.to_string()];
                row.extend(imps.iter().map(|k| latency_cell(m.get(*k).copied())));
                row
            })
            .collect();
        table(out, &header, 0, &body);
    }
}

fn throughput_section(out: &mut String, records: &[Record]) {
    let _ = writeln!(out, "## Throughput\n");
    // (coll, bytes, ranks, hosts) -> implementation -> last record, bench throughput preferred.
    type Rows<'a> =
        BTreeMap<((usize, String), u64, u32, u32), BTreeMap<(usize, String), &'a Record>>;
    let mut rows: Rows = BTreeMap::new();
    let mut with_ops: Vec<&Record> = records.iter().filter(|r| r.ops_per_s.is_some()).collect();
    with_ops.sort_by_key(|r| r.bench == "throughput");
    for r in with_ops {
        rows.entry((coll_key(&r.coll), r.bytes, r.ranks, r.hosts))
            .or_default()
            .insert(implementation_key(&who(r)), r);
    }
    if rows.is_empty() {
        let _ = writeln!(out, "No data (no records with ops_per_s).\n");
        return;
    }
    let _ = writeln!(
        out,
        "Collectives completed per second; the last column is boad-kernel over the best of {} \
         in the same row.\n",
        USERSPACE_BASELINES.join(", ")
    );
    let imps = implementations(rows.values().flat_map(|m| m.values().copied()));
    let mut header = vec![
        "collective".to_string(),
        "bytes".into(),
        "ranks".into(),
        "hosts".into(),
    ];
    header.extend(imps.iter().cloned());
    header.push("boad-kernel / best userspace".into());
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|(((_, coll), bytes, ranks, hosts), m)| {
            let get = |name: &str| {
                m.iter()
                    .find(|(k, _)| k.1 == name)
                    .and_then(|(_, r)| r.ops_per_s)
            };
            let mut row = vec![
                coll.clone(),
                bytes.to_string(),
                ranks.to_string(),
                hosts.to_string(),
            ];
            row.extend(imps.iter().map(|n| fmt_opt(get(n), fmt_ops)));
            let best = USERSPACE_BASELINES
                .iter()
                .filter_map(|b| get(b))
                .fold(None, |acc: Option<f64>, v| {
                    Some(acc.map_or(v, |a| a.max(v)))
                });
            row.push(fmt_ratio(get("boad-kernel"), best));
            row
        })
        .collect();
    table(out, &header, 1, &body);
}

fn cost_section(out: &mut String, records: &[Record]) {
    let _ = writeln!(out, "## System calls and CPU time per collective\n");
    type Key = ((usize, String), u64, u32, u32, (usize, String), String);
    let mut rows: BTreeMap<Key, &Record> = BTreeMap::new();
    for r in records.iter().filter(|r| {
        r.cpu_us_root.is_some()
            || r.cpu_us_other.is_some()
            || r.syscalls_root.is_some()
            || r.syscalls_receiver.is_some()
    }) {
        rows.insert(
            (
                coll_key(&r.coll),
                r.bytes,
                r.ranks,
                r.hosts,
                implementation_key(&who(r)),
                r.bench.clone(),
            ),
            r,
        );
    }
    if rows.is_empty() {
        let _ = writeln!(
            out,
            "No data (no records with cpu_us_root, cpu_us_other, syscalls_root or \
             syscalls_receiver).\n"
        );
        return;
    }
    let _ = writeln!(
        out,
        "Per collective: CPU time (user + sys, µs) at the root and the mean over the other ranks; \
         system calls at the root and at one receiver.\n"
    );
    let header = [
        "collective",
        "bytes",
        "ranks",
        "hosts",
        "implementation",
        "bench",
        "root CPU µs",
        "other CPU µs",
        "root syscalls",
        "receiver syscalls",
        "note",
    ]
    .map(String::from);
    let notes: Vec<&str> = rows.values().filter_map(|r| r.note.as_deref()).collect();
    let recurring = recurring_clauses(&notes);
    if !recurring.is_empty() {
        let _ = writeln!(
            out,
            "Notes that recur are left out of the note column: \"{}\".\n",
            recurring.join("\"; \"")
        );
    }
    let two = |v: f64| format!("{v:.2}");
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|(((_, coll), bytes, ranks, hosts, (_, imp), bench), r)| {
            vec![
                coll.clone(),
                bytes.to_string(),
                ranks.to_string(),
                hosts.to_string(),
                imp.clone(),
                bench.clone(),
                fmt_opt(r.cpu_us_root, fmt_us),
                fmt_opt(r.cpu_us_other, fmt_us),
                fmt_opt(r.syscalls_root, two),
                fmt_opt(r.syscalls_receiver, two),
                r.note
                    .as_deref()
                    .map_or(String::new(), |n| rest_of(n, &recurring))
                    .replace('|', "/"),
            ]
        })
        .collect();
    table_aligned(out, &header, |i| (6..10).contains(&i), &body);
}

/// What the machine-cost tables give ratios to, where the same run measured them: the userspace
/// baselines, boad's UDP path and Open MPI (over TCP, else shared memory).
pub const COST_REFERENCES: [&str; 5] = ["naive", "epoll", "boad-udp", "ompi-tcp", "ompi-shm"];

/// Values of the machine-cost tables, with their column names.
const COST_FIELDS: [(&str, Field); 7] = [
    ("root syscalls", |r| r.syscalls_root),
    ("other syscalls (mean)", |r| r.syscalls_other),
    ("root ctx switches", |r| r.ctxsw_root),
    ("other ctx switches (mean)", |r| r.ctxsw_other),
    ("ranks' CPU µs", |r| r.cpu_us_ranks),
    ("machine CPU µs", |r| r.machine_cpu_us),
    ("softirq µs", |r| r.softirq_us),
];

/// Per configuration and collective: system calls (eBPF counter), context switches, CPU of the
/// ranks and of the machine per collective, the ratios of each to the references measured in the
/// same configuration, and the eBPF programs' run time per run.
fn machine_cost_section(out: &mut String, records: &[Record]) {
    let _ = writeln!(
        out,
        "## Machine cost per collective
"
    );
    type Group = ((usize, String), u64, u32, u32);
    let mut groups: BTreeMap<Group, BTreeMap<(usize, String), &Record>> = BTreeMap::new();
    for r in records.iter().filter(|r| {
        matches!(r.bench.as_str(), "syscalls" | "fanout")
            && (r.machine_cpu_us.is_some() || r.ctxsw_root.is_some() || r.cpu_us_ranks.is_some())
    }) {
        groups
            .entry((coll_key(&r.coll), r.bytes, r.ranks, r.hosts))
            .or_default()
            .insert(implementation_key(&who(r)), r);
    }
    if groups.is_empty() {
        let _ = writeln!(
            out,
            "No data (no records with machine_cpu_us, ctxsw_root or cpu_us_ranks: the pass \
             measures them with the eBPF system call counter only).\n"
        );
        return;
    }
    let _ = writeln!(
        out,
        "Per collective, from the system call pass (back to back from root 0, no barrier): \
         system calls counted by the eBPF counter (every thread of a rank) at the root and the \
         mean over the other ranks; context switches (`getrusage`) likewise; the CPU time of all \
         ranks summed; the machine's busy CPU time (`/proc/stat`, every process on every CPU, \
         10 ms ticks) and its softirq part. Then each implementation's values over those of {} \
         where the same configuration has them (below 1: cheaper), and the eBPF programs' \
         run time (`bpf_stats`; a tail-called fold counts in `boad_xdp`; `boad_sys_enter` is the \
         root's system call counter, which runs on every system call of the machine).\n",
        COST_REFERENCES.join(", ")
    );
    let two = |v: f64| format!("{v:.2}");
    for (((_, coll), bytes, ranks, hosts), by) in &groups {
        let _ = writeln!(
            out,
            "### {coll}, {bytes} B: {ranks} ranks on {}\n",
            hosts_text(*hosts)
        );
        let mut header = vec!["implementation".to_string()];
        header.extend(COST_FIELDS.iter().map(|(n, _)| n.to_string()));
        let mut body: Vec<Vec<String>> = by
            .iter()
            .map(|((_, imp), r)| {
                let mut row = vec![imp.clone()];
                row.extend(COST_FIELDS.iter().map(|(n, f)| {
                    let fmt = if n.contains("µs") { fmt_us } else { two };
                    fmt_opt(f(r), fmt)
                }));
                row
            })
            .collect();
        for ((_, imp), r) in by {
            for base in COST_REFERENCES.iter().filter(|b| **b != imp.as_str()) {
                let Some(b) = by.get(&implementation_key(base)) else {
                    continue;
                };
                let mut row = vec![format!("{imp} / {base}")];
                row.extend(COST_FIELDS.iter().map(|(_, f)| fmt_ratio(f(r), f(b))));
                body.push(row);
            }
        }
        table(out, &header, 1, &body);
        let progs: Vec<Vec<String>> = by
            .iter()
            .flat_map(|((_, imp), r)| {
                r.bpf.iter().flatten().map(move |p| {
                    vec![
                        imp.clone(),
                        p.name.clone(),
                        format!("{:.2}", p.runs_per_coll),
                        format!("{:.0}", p.ns_per_run),
                        fmt_us(p.runs_per_coll * p.ns_per_run / 1e3),
                    ]
                })
            })
            .collect();
        if !progs.is_empty() {
            let header = [
                "implementation",
                "eBPF program",
                "runs per collective",
                "ns per run",
                "µs per collective",
            ]
            .map(String::from);
            table(out, &header, 2, &progs);
        }
    }
}

/// The "; "-separated clauses that occur in at least half of `notes` (and in three or more),
/// in order of first appearance: a table states them once instead of on every row.
fn recurring_clauses(notes: &[&str]) -> Vec<String> {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    let mut order: Vec<&str> = vec![];
    for n in notes {
        let clauses: BTreeSet<&str> = n.split("; ").collect();
        for c in clauses {
            let e = count.entry(c).or_default();
            if *e == 0 {
                order.push(c);
            }
            *e += 1;
        }
    }
    order
        .into_iter()
        .filter(|c| {
            let n = count.get(c).copied().unwrap_or(0);
            n >= 3 && n * 2 >= notes.len()
        })
        .map(String::from)
        .collect()
}

/// `note` without the clauses in `omit`.
fn rest_of(note: &str, omit: &[String]) -> String {
    note.split("; ")
        .filter(|c| !omit.iter().any(|o| o == c))
        .collect::<Vec<_>>()
        .join("; ")
}

fn apps_section(out: &mut String, records: &[Record]) {
    let _ = writeln!(out, "## Applications\n");
    // (app, vertices, ranks) -> (implementation, hosts) -> last record
    type Rows<'a> = BTreeMap<(String, u64, u32), BTreeMap<((usize, String), u32), &'a Record>>;
    let mut rows: Rows = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r.bench == "app" && (r.total_s.is_some() || r.comm_s.is_some()))
    {
        rows.entry((r.coll.clone(), r.bytes, r.ranks))
            .or_default()
            .insert((implementation_key(&who(r)), r.hosts), r);
    }
    if rows.is_empty() {
        let _ = writeln!(
            out,
            "No data (no records with bench app and total_s or comm_s).\n"
        );
        return;
    }
    let _ = writeln!(
        out,
        "Wall time and time inside collectives, seconds (max over ranks); the last column is the \
         total over boad-udp's for the same application, vertices and ranks (hosts may differ: \
         see the hosts column).\n"
    );
    let header = [
        "application",
        "vertices",
        "ranks",
        "hosts",
        "implementation",
        "total s",
        "comm s",
        "comm share",
        "total / boad-udp",
    ]
    .map(String::from);
    let mut body = vec![];
    for ((app, vertices, ranks), m) in &rows {
        let udp = m
            .iter()
            .find(|(k, _)| k.0 .1 == "boad-udp")
            .and_then(|(_, r)| r.total_s);
        for (((_, imp), hosts), r) in m {
            let share = match (r.comm_s, r.total_s) {
                (Some(c), Some(t)) if t > 0.0 => format!("{:.0}%", c / t * 100.0),
                _ => "-".into(),
            };
            body.push(vec![
                app.clone(),
                vertices.to_string(),
                ranks.to_string(),
                hosts.to_string(),
                imp.clone(),
                fmt_opt(r.total_s, fmt_s),
                fmt_opt(r.comm_s, fmt_s),
                share,
                fmt_ratio(r.total_s, udp),
            ]);
        }
    }
    table(out, &header, 5, &body);
}

/// A note with every number replaced by `#`: notes that differ only in numbers share it.
fn note_shape(note: &str) -> String {
    let mut out = String::new();
    let mut in_number = false;
    for c in note.chars() {
        let digit = c.is_ascii_digit() || (in_number && c == '.');
        if digit {
            if !in_number {
                out.push('#');
            }
        } else {
            out.push(c);
        }
        in_number = digit;
    }
    out
}

fn notes_section(out: &mut String, records: &[Record]) {
    // Shape -> (the first note of that shape, how many records, who).
    let mut notes: BTreeMap<String, (&str, usize, BTreeSet<String>)> = BTreeMap::new();
    for r in records {
        if let Some(n) = r.note.as_deref().filter(|n| !n.trim().is_empty()) {
            let e = notes
                .entry(note_shape(n))
                .or_insert((n, 0, BTreeSet::new()));
            e.1 += 1;
            e.2.insert(format!("{} {} {}", who(r), r.bench, r.coll));
        }
    }
    if notes.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## Notes in the records\n\nEach note once; notes that differ only in their numbers are \
         counted together (the numbers of each are in the records).\n"
    );
    for (first, count, on) in notes.values() {
        let on: Vec<&String> = on.iter().collect();
        let mut shown = on
            .iter()
            .take(6)
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        if on.len() > 6 {
            let _ = write!(shown, "; and {} more", on.len() - 6);
        }
        let times = if *count > 1 {
            format!("{count} records like it: ")
        } else {
            String::new()
        };
        let _ = writeln!(out, "- {} ({times}{shown})", first.replace('\n', " "));
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::tests::{rec, synthetic};

    fn lat(imp: &str, avg: f64, p99: f64) -> Record {
        let mut r = rec("latency", imp, "bcast", 4, 9, 3);
        r.avg_us = Some(avg);
        r.p99_us = Some(p99);
        r
    }

    fn ops(imp: &str, coll: &str, v: f64) -> Record {
        let mut r = rec("throughput", imp, coll, 4, 9, 3);
        r.ops_per_s = Some(v);
        r
    }

    #[test]
    fn machine_cost_is_ratios_to_the_references_of_the_same_configuration() {
        let cost = |imp: &str, calls: f64, machine: f64| {
            let mut r = rec("syscalls", imp, "bcast", 4, 9, 3);
            r.syscalls_root = Some(calls);
            r.syscalls_other = Some(calls / 2.0);
            r.syscall_counter = Some("ebpf".into());
            r.ctxsw_root = Some(1.0);
            r.ctxsw_other = Some(2.0);
            r.cpu_us_ranks = Some(machine * 0.8);
            r.machine_cpu_us = Some(machine);
            r.softirq_us = Some(machine / 10.0);
            r
        };
        let mut kernel = cost("boad-kernel", 1.0, 50.0);
        kernel.bpf = Some(vec![crate::record::BpfProg {
            name: "boad_tc_bcast".into(),
            runs_per_coll: 1.0,
            ns_per_run: 3000.0,
        }]);
        let records = vec![
            kernel,
            cost("boad-udp", 8.0, 200.0),
            cost("naive", 8.0, 100.0),
            cost("epoll", 8.0, 125.0),
            // Another configuration: not a reference for the 9-rank one.
            {
                let mut r = cost("ompi-tcp", 3.0, 25.0);
                r.ranks = 2;
                r.hosts = 1;
                r
            },
        ];
        let m = summary(&records);
        assert!(close(
            get(&m, "machine-cpu/bcast/boad-kernel/naive").value,
            0.5
        ));
        assert!(close(
            get(&m, "machine-cpu/bcast/boad-kernel/epoll").value,
            0.4
        ));
        assert!(close(
            get(&m, "machine-cpu/bcast/boad-kernel/boad-udp").value,
            0.25
        ));
        assert!(!m
            .iter()
            .any(|m| m.key.contains("machine-cpu/bcast/boad-kernel/ompi")));
        let text = render(&records, "r.jsonl", &[], &[], None);
        let section = text
            .split("## Machine cost per collective")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .unwrap();
        for want in [
            "### bcast, 4 B: 9 ranks on 3 hosts",
            "| boad-kernel | 1.00 | 0.50 | 1.00 | 2.00 | 40.0 | 50.0 | 5.00 |",
            "| boad-kernel / naive | 0.12 | 0.12 | 1.00 | 1.00 | 0.50 | 0.50 | 0.50 |",
            "| boad-kernel / boad-udp | 0.12 | 0.12 | 1.00 | 1.00 | 0.25 | 0.25 | 0.25 |",
            "| naive / epoll |",
            "| boad-kernel | boad_tc_bcast | 1.00 | 3000 | 3.00 |",
            "### bcast, 4 B: 2 ranks on one host",
        ] {
            assert!(section.contains(want), "missing {want:?} in {section}");
        }
        assert!(!section.contains("/ ompi-tcp"), "{section}");
    }

    fn get<'a>(m: &'a [Measure], key: &str) -> &'a Measure {
        m.iter()
            .find(|m| m.key == key)
            .unwrap_or_else(|| panic!("no {key} in {m:#?}"))
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn kernel_against_userspace_latency_from_known_records() {
        let records = vec![
            lat("boad-udp", 100.0, 200.0),
            lat("boad-kernel", 90.0, 90.0),
            // The last record of a measurement wins.
            lat("boad-kernel", 15.0, 50.0),
            lat("naive", 20.0, 40.0),
            lat("epoll", 30.0, 30.0),
            // Another configuration (one host; a larger size): not compared.
            {
                let mut r = lat("boad-kernel", 1.0, 1.0);
                r.hosts = 1;
                r
            },
            {
                let mut r = lat("boad-kernel", 1.0, 1.0);
                r.bytes = 1024;
                r
            },
        ];
        let m = summary(&records);
        let mean = get(&m, "latency-mean/bcast/boad-kernel/boad-udp");
        assert!(close(mean.value, 0.15), "{mean:?}");
        assert_eq!(mean.shown(), "0.15x (85.0% lower)");
        assert!(
            mean.from
                .starts_with("4 B, 9 ranks on 3 hosts, bench latency: boad-kernel 15.0 µs"),
            "{}",
            mean.from
        );
        assert!(close(
            get(&m, "latency-p99/bcast/boad-kernel/boad-udp").value,
            0.25
        ));
        // The fastest of naive and epoll.
        let b = get(&m, "latency-mean/bcast/boad-kernel/best-baseline");
        assert!(
            close(b.value, 0.75) && b.from.contains("naive 20.0 µs"),
            "{b:?}"
        );
        // A slower kernel path reads as higher, not hidden.
        let slower = summary(&[
            lat("boad-udp", 100.0, 100.0),
            lat("boad-kernel", 116.0, 1.0),
        ]);
        assert_eq!(slower[0].shown(), "1.16x (16.0% higher)");
        // Nothing to compare with: no number.
        assert!(summary(&[lat("boad-kernel", 1.0, 1.0)]).is_empty());
    }

    #[test]
    fn throughput_is_over_the_best_userspace_baseline() {
        let records = vec![
            ops("boad-kernel", "reduce", 30_000.0),
            ops("boad-udp", "reduce", 10_000.0),
            ops("naive", "reduce", 20_000.0),
            ops("epoll", "reduce", 15_000.0),
            ops("ompi-tcp", "reduce", 1e9), // not a userspace baseline
            ops("boad-kernel", "allreduce", 5_000.0),
            ops("boad-udp", "allreduce", 10_000.0),
        ];
        let m = summary(&records);
        let r = get(&m, "throughput/reduce/boad-kernel/best-userspace");
        assert!(
            close(r.value, 1.5) && r.from.contains("naive 20,000 ops/s"),
            "{r:?}"
        );
        let a = get(&m, "throughput/allreduce/boad-kernel/best-userspace");
        assert_eq!(a.shown(), "0.50x (50.0% lower)");
    }

    #[test]
    fn cpu_and_system_calls_at_the_root() {
        let mut records = vec![];
        for (imp, cpu, calls) in [
            ("boad-kernel", 8.0, 1.01),
            ("naive", 16.0, 8.0),
            ("epoll", 12.0, 8.0),
        ] {
            let mut c = rec("cpu", imp, "reduce", 4, 9, 3);
            c.cpu_us_root = Some(cpu);
            records.push(c);
            let mut s = rec("syscalls", imp, "bcast", 4, 9, 3);
            s.syscalls_root = Some(calls);
            records.push(s);
        }
        for (ranks, calls) in [(3, 1.0), (9, 1.07), (65, 1.95)] {
            let mut f = rec("fanout", "boad-kernel", "bcast", 4, ranks, 8);
            f.syscalls_root = Some(calls);
            records.push(f);
        }
        let m = summary(&records);
        let cpu = get(&m, "root-cpu/reduce/boad-kernel/best-userspace");
        assert!(close(cpu.value, 8.0 / 12.0), "{cpu:?}");
        let s = get(&m, "root-syscalls/bcast/boad-kernel");
        assert_eq!((s.unit, s.shown()), (Unit::Count, "1.01".to_string()));
        assert!(s.from.contains("naive 8.00, epoll 8.00"), "{}", s.from);
        let f = get(&m, "root-syscalls-max-over-fanout/bcast/boad-kernel");
        assert!(close(f.value, 1.95), "{f:?}");
        assert!(f.from.contains("1.00-1.95 over 3 fan-outs"), "{}", f.from);
        assert!(f.from.contains("64: 1.95"), "{}", f.from);
    }

    #[test]
    fn hosts_over_ssh_are_ratios_to_open_mpi_kept_apart_from_the_clusters() {
        let ssh = |imp: &str, coll: &str, bytes: u64, avg: f64, p99: f64| {
            let mut r = rec("latency", imp, coll, bytes, 9, 3);
            r.launch = Some(crate::record::LAUNCH_SSH.into());
            r.avg_us = Some(avg);
            r.p99_us = Some(p99);
            if let Some(p) = imp.strip_prefix("boad-") {
                r.path = Some(p.into());
            }
            r
        };
        let mut records = vec![
            // A virtual cluster's boad-udp on the same ranks and hosts: not compared with Open MPI
            // over ssh, and not overwritten by the ssh records (last wins within a placement only).
            lat("boad-udp", 50.0, 80.0),
            lat("boad-kernel", 25.0, 40.0),
        ];
        // boad-hier / ompi-tcp means: 0.5, 1, 2 -> median 1; p99s: 0.25, 0.5, 1 -> 0.5.
        for (coll, bytes, hier, ompi) in [
            ("bcast", 4, (10.0, 10.0), (20.0, 40.0)),
            ("bcast", 4096, (30.0, 30.0), (30.0, 60.0)),
            ("allreduce", 4, (80.0, 80.0), (40.0, 80.0)),
        ] {
            records.push(ssh("boad-hier", coll, bytes, hier.0, hier.1));
            records.push(ssh("ompi-tcp", coll, bytes, ompi.0, ompi.1));
        }
        records.push(ssh("boad-udp", "bcast", 4, 60.0, 100.0));
        // `auto` that ran on hier: its own column, named by what ran.
        let mut auto = ssh("boad-hier", "bcast", 4, 12.0, 20.0);
        auto.note = Some("asked for hier-kernel, ran on hier".into());
        records.push(auto);
        let m = summary(&records);
        let mean = get(
            &m,
            "ssh-hosts-latency-mean-median/9-ranks-3-hosts/boad-hier/ompi-tcp",
        );
        assert!(close(mean.value, 1.0), "{mean:?}");
        assert!(mean.from.contains("median of 3 ratios"), "{}", mean.from);
        assert!(mean.from.contains("reported: hier"), "{}", mean.from);
        let p99 = get(
            &m,
            "ssh-hosts-latency-p99-median/9-ranks-3-hosts/boad-hier/ompi-tcp",
        );
        assert!(close(p99.value, 0.5), "{p99:?}");
        let udp = get(
            &m,
            "ssh-hosts-latency-mean-median/9-ranks-3-hosts/boad-udp/ompi-tcp",
        );
        assert!(close(udp.value, 3.0), "{udp:?}");
        let asked = get(
            &m,
            "ssh-hosts-latency-mean-median/9-ranks-3-hosts/boad-hier-asked-hier-kernel/ompi-tcp",
        );
        assert!(close(asked.value, 0.6), "{asked:?}");
        // The cluster's numbers are the cluster's own.
        let k = get(&m, "latency-mean/bcast/boad-kernel/boad-udp");
        assert!(close(k.value, 0.5), "{k:?}");

        let text = render(&records, "r.jsonl", &[], &[], None);
        let section = text
            .split("## Hosts over ssh: boad vs Open MPI")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("the ssh hosts section");
        for want in [
            "### bcast: 9 ranks on 3 hosts over ssh",
            "### allreduce: 9 ranks on 3 hosts over ssh",
            "boad-hier / ompi-tcp",
            "boad-hier (asked hier-kernel) / ompi-tcp",
            // Columns: boad-udp, boad-hier, ompi-tcp, then the one named by what ran.
            "| 4 | 60.0 [100.0] | 10.0 [10.0] | 20.0 [40.0] | 12.0 [20.0] | 3.00 [2.50] | 0.50 [0.25] | 0.60 [0.50] |",
            "| 4096 | - | 30.0 [30.0] | 30.0 [60.0] | - | - [-] | 1.00 [0.50] | - [-] |",
            "boad-bench --only hosts",
        ] {
            assert!(section.contains(want), "no {want:?} in:\n{section}");
        }
        // The cluster's latency table holds no ssh record.
        let cluster = text
            .split("### bcast: 9 ranks on 3 hosts\n")
            .nth(1)
            .and_then(|s| s.split("\n### ").next())
            .expect("the cluster's bcast table");
        assert!(!cluster.contains("ompi-tcp"), "{cluster}");
        assert!(!cluster.contains("boad-hier"), "{cluster}");
        // Without ssh records the section says so.
        let none = render(&[lat("boad-udp", 1.0, 1.0)], "r.jsonl", &[], &[], None);
        assert!(none.contains("No data (needs latency records with launch \"ssh\""));
    }

    #[test]
    fn one_host_is_a_median_of_ratios() {
        let mut records = vec![];
        // boad-shm over ompi-shm: 0.5, 1, 4 -> median 1; over mpich-shm: one ratio, 0.25.
        for (coll, shm, ompi) in [
            ("bcast", 1.0, 2.0),
            ("reduce", 3.0, 3.0),
            ("allgather", 8.0, 2.0),
        ] {
            for (imp, v) in [("boad-shm", shm), ("ompi-shm", ompi)] {
                let mut r = rec("latency", imp, coll, 4, 2, 1);
                r.avg_us = Some(v);
                records.push(r);
            }
        }
        let mut r = rec("latency", "mpich-shm", "bcast", 4, 2, 1);
        r.avg_us = Some(4.0);
        records.push(r);
        let m = summary(&records);
        let o = get(&m, "latency-mean-median/one-host-2-ranks/boad-shm/ompi-shm");
        assert!(close(o.value, 1.0), "{o:?}");
        assert!(o.from.contains("median of 3 ratios"), "{}", o.from);
        assert!(o.from.contains("from 0.50x to 4.00x"), "{}", o.from);
        assert!(
            o.from.contains("(bcast, reduce, allgather; 4 B)"),
            "{}",
            o.from
        );
        let p = get(
            &m,
            "latency-mean-median/one-host-2-ranks/boad-shm/mpich-shm",
        );
        assert!(close(p.value, 0.25));
        let tiny = Measure {
            value: 1.0 / 923.0,
            ..p.clone()
        };
        assert_eq!(tiny.shown(), "0.0011x (1/923, 99.9% lower)");
    }

    #[test]
    fn applications_against_the_userspace_path() {
        let m = summary(&synthetic());
        // Synthetic: udp takes 1.5x kernel's time at every size; the largest size is compared.
        let k = get(&m, "app-total/pagerank/boad-kernel/boad-udp");
        assert!(close(k.value, 1.0 / 1.5), "{k:?}");
        assert!(
            k.from.starts_with("1000000 vertices, 9 ranks"),
            "{}",
            k.from
        );
    }

    #[test]
    fn expectations_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("expect.txt");
        std::fs::write(
            &file,
            "# bounds\n\nlatency-mean/bcast/boad-kernel/boad-udp <= 0.2\n\
             throughput/reduce/boad-kernel/best-userspace >= 1.6\nno/such/key >= 1\n",
        )
        .unwrap();
        let e = parse_expectations(&file).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!((e[0].line, e[0].at_least, e[0].bound), (3, false, 0.2));
        let records = vec![
            lat("boad-udp", 100.0, 100.0),
            lat("boad-kernel", 15.0, 15.0),
            ops("boad-kernel", "reduce", 30_000.0),
            ops("naive", "reduce", 20_000.0),
        ];
        let c = check(&e, &summary(&records));
        let verdicts: Vec<&str> = c.iter().map(Checked::verdict).collect();
        assert_eq!(verdicts, ["holds", "does not hold", "no data"]);
        assert!(
            c[1].summary()
                == "throughput/reduce/boad-kernel/best-userspace >= 1.6: measured 1.5000: does not hold",
            "{}",
            c[1].summary()
        );
        let text = render(
            &records,
            "r.jsonl",
            &[],
            &[],
            Some(("expect.txt", c.as_slice())),
        );
        assert!(
            text.contains("| 4 | `throughput/reduce/boad-kernel/best-userspace` | >= 1.6 | 1.5000 | does not hold |"),
            "{text}"
        );
        for (bad, why) in [
            ("a >= 1 2", "expected `KEY >= NUMBER`"),
            ("a > 1", "unknown comparison `>`"),
            ("a >= x", "`x` is not a number"),
            ("a <= inf", "`inf` is not a number"),
        ] {
            std::fs::write(&file, format!("# c\n{bad}\n")).unwrap();
            let err = parse_expectations(&file).unwrap_err().to_string();
            assert!(err.contains(":2: ") && err.contains(why), "{bad}: {err}");
        }
        let missing = parse_expectations(&dir.path().join("none")).unwrap_err();
        assert!(missing.to_string().contains("cannot read"), "{missing}");
    }

    #[test]
    fn no_data_is_said_never_invented() {
        assert!(summary(&[]).is_empty());
        let text = render(
            &[],
            "empty.jsonl",
            &[],
            &["app-time.png: no records".into()],
            None,
        );
        assert!(text.contains("(0 records)"));
        assert!(text.contains("- app-time.png: no records"));
        for section in [
            "## Summary",
            "## Latency",
            "## Fan-out",
            "## Throughput",
            "## Applications",
        ] {
            let after = &text[text.find(section).unwrap()..];
            assert!(after.contains("No data"), "{section}");
        }
        assert!(!text.contains("## Expectations"));
    }

    #[test]
    fn report_of_synthetic_records_has_every_table() {
        let figures = [Figure {
            file: "app-time.png".into(),
            title: "Applications".into(),
        }];
        let text = render(&synthetic(), "synthetic.jsonl", &figures, &[], None);
        for want in [
            "## Summary",
            "| `latency-mean/bcast/boad-kernel/boad-udp` | 0.50x (50.0% lower) |",
            "`throughput/reduce/boad-kernel/best-userspace` | 2.00x |",
            "`latency-mean-median/one-host-9-ranks/boad-shm/ompi-shm`",
            "### bcast: 9 ranks on 3 hosts",
            "boad-kernel / boad-udp",
            "### 2 ranks",
            "ompi-shm / boad-shm",
            "### bcast, 4 B",
            "boad-kernel / best userspace",
            "root syscalls",
            "| pagerank | 10000 | 9 | 3 | boad-kernel |",
            "![Applications](app-time.png)",
        ] {
            assert!(text.contains(want), "missing {want:?}");
        }
        // And it can be written where the figures go.
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("report.md"), &text).unwrap();
        assert!(
            load(&dir.path().join("report.md")).is_err(),
            "markdown is not JSON lines"
        );
    }

    #[test]
    fn number_formats() {
        assert_eq!(fmt_s(0.1), "0.100");
        assert_eq!(fmt_s(0.0456), "0.0456");
        assert_eq!(fmt_s(12.345), "12.3");
        assert_eq!(fmt_ops(1_234_567.0), "1,234,567");
        assert_eq!(fmt_ops(999.4), "999");
        assert_eq!(fmt_us(9.012), "9.01");
        assert_eq!(fmt_us(60.14), "60.1");
    }

    #[test]
    fn notes_are_grouped_and_factored() {
        assert_eq!(
            note_shape("recvfrom 2.01, sendto 1"),
            "recvfrom #, sendto #"
        );
        let notes = [
            "a; b; calls 1",
            "a; b; calls 2",
            "a; other; b",
            "z",
            "calls 1",
        ];
        assert_eq!(recurring_clauses(&notes), ["a", "b"]);
        assert_eq!(rest_of(notes[0], &recurring_clauses(&notes)), "calls 1");
        assert!(recurring_clauses(&["a; b"]).is_empty());
    }

    #[test]
    fn unreadable_results_name_the_file() {
        let e = load(Path::new("/nonexistent/results.jsonl")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/results.jsonl"), "{e}");
    }
}
