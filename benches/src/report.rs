//! `report.md`: markdown tables made from the benchmark [`Record`]s, and "The bar": the goals of the
//! benchmark issue computed from the records, each met or MISSED with its margin, or "no data".
//!
//! Nothing here invents a number: a table cell or a bar item without a record says so. When several
//! records describe the same measurement, the last one in the file wins (the newest run).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use crate::plot::{implementation_key, implementations, who, Figure, PlotError};
use crate::record::{self, Record};

/// Bar item 1: how much lower boad-kernel's mean bcast latency must be than boad-udp's, percent.
pub const TARGET_AVG_REDUCTION: f64 = 82.8;
/// Bar item 1: how much lower boad-kernel's p99 bcast latency must be than boad-udp's, percent.
pub const TARGET_P99_REDUCTION: f64 = 80.3;
/// Bar item 2: boad-kernel's reduce/allreduce throughput over the best userspace baseline.
pub const TARGET_THROUGHPUT_RATIO: f64 = 1.46;
/// Bar item 3: system calls at the root per broadcast on the kernel path.
pub const TARGET_ROOT_SYSCALLS: f64 = 1.0;
/// Bar item 3 counts a measured value up to this much above the target as met (it prints as 1.00).
pub const SYSCALLS_TOLERANCE: f64 = 0.005;
/// The userspace baselines bar item 2 compares boad-kernel with.
pub const USERSPACE_BASELINES: [&str; 3] = ["boad-udp", "naive", "epoll"];

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

/// The unit of a bar item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// A reduction in percent (margins in percentage points).
    Percent,
    /// A ratio (`1.46x`).
    Ratio,
    /// A count per collective.
    Count,
}

/// One item of "The bar": a goal, and what the records say about it.
#[derive(Clone, Debug, PartialEq)]
pub struct BarCheck {
    /// What is measured, and where.
    pub item: String,
    /// The measured value, or `None` for no data.
    pub measured: Option<f64>,
    /// The goal.
    pub target: f64,
    /// `true`: the goal is a minimum; `false`: a maximum.
    pub at_least: bool,
    /// Unit of `measured` and `target`.
    pub unit: Unit,
    /// The records it came from, or what is missing.
    pub detail: String,
}

impl BarCheck {
    /// How far past the goal (positive) or short of it (negative); `None` for no data.
    pub fn margin(&self) -> Option<f64> {
        self.measured.map(|m| {
            if self.at_least {
                m - self.target
            } else {
                self.target - m
            }
        })
    }

    /// Whether the goal is met; `None` for no data.
    pub fn met(&self) -> Option<bool> {
        let slack = if self.unit == Unit::Count {
            SYSCALLS_TOLERANCE
        } else {
            0.0
        };
        self.margin().map(|m| m >= -slack)
    }

    /// `met`, `MISSED` or `no data`.
    pub fn verdict(&self) -> &'static str {
        match self.met() {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "no data",
        }
    }

    fn value(&self, v: f64) -> String {
        match self.unit {
            Unit::Percent => format!("{v:.1}%"),
            Unit::Ratio => format!("{v:.2}x"),
            Unit::Count => format!("{v:.2}"),
        }
    }

    fn target_text(&self) -> String {
        let op = if self.at_least { ">=" } else { "<=" };
        format!("{op} {}", self.value(self.target))
    }

    fn margin_text(&self) -> String {
        match self.margin() {
            None => "-".into(),
            Some(m) => match self.unit {
                Unit::Percent => format!("{m:+.1} pp"),
                Unit::Ratio => format!("{m:+.2}x"),
                Unit::Count => format!("{m:+.2}"),
            },
        }
    }

    /// One line: verdict, item, measured value, target, margin.
    pub fn summary(&self) -> String {
        match self.measured {
            Some(m) => format!(
                "{}: {}: {} (target {}, margin {})",
                self.verdict(),
                self.item,
                self.value(m),
                self.target_text(),
                self.margin_text()
            ),
            None => format!("no data: {}: {}", self.item, self.detail),
        }
    }
}

/// The last record that `keep`s, looking at the benches in `benches` in order of preference.
fn pick<'a>(
    records: &'a [Record],
    benches: &[&str],
    keep: impl Fn(&Record) -> bool,
) -> Option<&'a Record> {
    benches
        .iter()
        .find_map(|b| records.iter().rev().find(|r| r.bench == *b && keep(r)))
}

fn source(r: &Record) -> String {
    let mut s = format!("bench {}, {} hosts", r.bench, r.hosts);
    if let Some(p) = &r.path {
        let _ = write!(s, ", path {p}");
    }
    s
}

/// A warning when a boad implementation's record says it took another path than its name.
fn path_warning(r: &Record) -> Option<String> {
    let want = r.implementation.strip_prefix("boad-")?;
    let path = r.path.as_deref()?;
    (!path.contains(want)).then(|| format!("{} reported path {path}", r.implementation))
}

/// Every item of "The bar", computed from `records`.
pub fn the_bar(records: &[Record]) -> Vec<BarCheck> {
    let mut out = bar_bcast_latency(records);
    out.extend(bar_throughput(records));
    out.extend(bar_root_syscalls(records));
    out
}

/// Item 1: bcast of 4 bytes on 9 ranks over hosts > 1, boad-kernel against boad-udp (bench
/// `latency`, else `fanout`): reduction of the mean and of the p99, in percent.
pub fn bar_bcast_latency(records: &[Record]) -> Vec<BarCheck> {
    type Field = fn(&Record) -> Option<f64>;
    let items: [(&str, f64, Field, &str); 2] = [
        ("mean", TARGET_AVG_REDUCTION, |r| r.avg_us, "avg_us"),
        ("p99", TARGET_P99_REDUCTION, |r| r.p99_us, "p99_us"),
    ];
    items
        .into_iter()
        .map(|(what, target, field, name)| {
            let find = |imp: &str| {
                pick(records, &["latency", "fanout"], |r| {
                    who(r) == imp
                        && r.coll == "bcast"
                        && r.bytes == 4
                        && r.ranks == 9
                        && r.hosts > 1
                        && field(r).is_some()
                })
            };
            let item = format!(
                "bcast 4 B, 9 ranks, hosts > 1: {what} latency reduction of boad-kernel vs boad-udp"
            );
            let mut check = BarCheck {
                item,
                measured: None,
                target,
                at_least: true,
                unit: Unit::Percent,
                detail: String::new(),
            };
            match (find("boad-kernel"), find("boad-udp")) {
                (Some(k), Some(u)) => {
                    let (kv, uv) = (field(k).unwrap_or(f64::NAN), field(u).unwrap_or(f64::NAN));
                    if uv > 0.0 {
                        check.measured = Some((1.0 - kv / uv) * 100.0);
                    }
                    check.detail = format!(
                        "boad-kernel {} µs ({}) vs boad-udp {} µs ({})",
                        fmt_us(kv),
                        source(k),
                        fmt_us(uv),
                        source(u)
                    );
                    if let Some(w) = path_warning(k) {
                        let _ = write!(check.detail, "; WARNING: {w}");
                    }
                }
                (k, u) => {
                    let missing: Vec<&str> = [("boad-kernel", k), ("boad-udp", u)]
                        .into_iter()
                        .filter(|(_, r)| r.is_none())
                        .map(|(n, _)| n)
                        .collect();
                    check.detail = format!(
                        "no record of {} with bench latency or fanout, coll bcast, bytes 4, \
                         ranks 9, hosts > 1 and {name}",
                        missing.join(" or ")
                    );
                }
            }
            check
        })
        .collect()
}

/// Item 2: reduce and allreduce on 9 ranks over hosts > 1: boad-kernel's collectives per second
/// over the best of the userspace baselines (bench `throughput`, else `fanout`), per message size.
pub fn bar_throughput(records: &[Record]) -> Vec<BarCheck> {
    let mut out = vec![];
    for coll in ["reduce", "allreduce"] {
        let matches = |r: &Record, imp: &str, bytes: Option<u64>| {
            who(r) == imp
                && r.coll == coll
                && r.ranks == 9
                && r.hosts > 1
                && r.ops_per_s.is_some()
                && (r.bench == "throughput" || r.bench == "fanout")
                && bytes.is_none_or(|b| r.bytes == b)
        };
        let sizes: BTreeSet<u64> = records
            .iter()
            .filter(|r| matches(r, "boad-kernel", None))
            .map(|r| r.bytes)
            .collect();
        let check = |item: String| BarCheck {
            item,
            measured: None,
            target: TARGET_THROUGHPUT_RATIO,
            at_least: true,
            unit: Unit::Ratio,
            detail: String::new(),
        };
        if sizes.is_empty() {
            let mut c = check(format!(
                "{coll} throughput, 9 ranks, hosts > 1: boad-kernel / best userspace baseline"
            ));
            c.detail = format!(
                "no record of boad-kernel with bench throughput or fanout, coll {coll}, ranks 9, \
                 hosts > 1 and ops_per_s"
            );
            out.push(c);
            continue;
        }
        for bytes in sizes {
            let find = |imp: &str| {
                pick(records, &["throughput", "fanout"], |r| {
                    matches(r, imp, Some(bytes))
                })
            };
            let mut c = check(format!(
                "{coll} throughput, {bytes} B, 9 ranks, hosts > 1: boad-kernel / best userspace \
                 baseline"
            ));
            let Some(k) = find("boad-kernel") else {
                continue;
            };
            let kv = k.ops_per_s.unwrap_or(f64::NAN);
            let found: Vec<(&str, &Record)> = USERSPACE_BASELINES
                .iter()
                .filter_map(|b| find(b).map(|r| (*b, r)))
                .collect();
            let absent: Vec<&str> = USERSPACE_BASELINES
                .iter()
                .copied()
                .filter(|b| !found.iter().any(|(f, _)| f == b))
                .collect();
            let best = found.iter().max_by(|a, b| {
                let (x, y) = (a.1.ops_per_s, b.1.ops_per_s);
                x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal)
            });
            match best {
                Some((name, r)) => {
                    let bv = r.ops_per_s.unwrap_or(f64::NAN);
                    if bv > 0.0 {
                        c.measured = Some(kv / bv);
                    }
                    c.detail = format!(
                        "boad-kernel {} ops/s ({}) vs best baseline {name} {} ops/s ({})",
                        fmt_ops(kv),
                        source(k),
                        fmt_ops(bv),
                        source(r)
                    );
                    if !absent.is_empty() {
                        let _ = write!(c.detail, "; no data for {}", absent.join(", "));
                    }
                    if let Some(w) = path_warning(k) {
                        let _ = write!(c.detail, "; WARNING: {w}");
                    }
                }
                None => {
                    c.detail = format!(
                        "boad-kernel measured ({} ops/s) but no record of {} at the same size",
                        fmt_ops(kv),
                        USERSPACE_BASELINES.join(", ")
                    );
                }
            }
            out.push(c);
        }
    }
    out
}

/// Item 3: system calls at the root per broadcast for boad-kernel, at each fan-out (any bench with
/// `syscalls_root`).
pub fn bar_root_syscalls(records: &[Record]) -> Vec<BarCheck> {
    let mut last: BTreeMap<(u32, u32, u64), &Record> = BTreeMap::new();
    for r in records {
        if who(r) == "boad-kernel" && r.coll == "bcast" && r.syscalls_root.is_some() {
            last.insert((r.ranks, r.hosts, r.bytes), r);
        }
    }
    if last.is_empty() {
        return vec![BarCheck {
            item: "root system calls per bcast, boad-kernel".into(),
            measured: None,
            target: TARGET_ROOT_SYSCALLS,
            at_least: false,
            unit: Unit::Count,
            detail: "no record of boad-kernel with coll bcast and syscalls_root".into(),
        }];
    }
    // The notes say which calls they were (the parts not shared by most of them).
    let notes: Vec<&str> = last.values().filter_map(|r| r.note.as_deref()).collect();
    let recurring = recurring_clauses(&notes);
    last.into_iter()
        .map(|((ranks, hosts, bytes), r)| {
            let mut detail = source(r);
            if let Some(n) = r.note.as_deref() {
                let rest = rest_of(n, &recurring);
                if !rest.is_empty() {
                    let _ = write!(detail, "; {rest}");
                }
            }
            if let Some(w) = path_warning(r) {
                let _ = write!(detail, "; WARNING: {w}");
            }
            BarCheck {
                item: format!(
                    "root system calls per bcast, boad-kernel, {} receivers ({hosts} hosts, {bytes} B)",
                    ranks.saturating_sub(1)
                ),
                measured: r.syscalls_root,
                target: TARGET_ROOT_SYSCALLS,
                at_least: false,
                unit: Unit::Count,
                detail,
            }
        })
        .collect()
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

/// The whole `report.md`: `source` names the results file, `figures` are the PNGs beside it and
/// `not_drawn` says which figures are missing and why.
pub fn render(
    records: &[Record],
    source: &str,
    figures: &[Figure],
    not_drawn: &[String],
) -> String {
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
    bar_section(&mut out, records);
    figures_section(&mut out, figures, not_drawn);
    latency_section(&mut out, records);
    shm_vs_mpi_section(&mut out, records);
    fanout_section(&mut out, records);
    throughput_section(&mut out, records);
    cost_section(&mut out, records);
    apps_section(&mut out, records);
    notes_section(&mut out, records);
    out
}

fn bar_section(out: &mut String, records: &[Record]) {
    let _ = writeln!(out, "## The bar\n");
    let _ = writeln!(
        out,
        "(1) bcast of 4 B on 9 ranks over a (virtual) cluster: boad-kernel's latency at least \
         {TARGET_AVG_REDUCTION}% (mean) and {TARGET_P99_REDUCTION}% (p99) below boad-udp's; \
         (2) reduce and allreduce throughput on 9 ranks over a cluster: boad-kernel at least \
         {TARGET_THROUGHPUT_RATIO}x the best userspace baseline ({}); (3) one system call at the \
         root per broadcast on the kernel path, at every fan-out (up to {SYSCALLS_TOLERANCE} above \
         1 counts as 1).\n",
        USERSPACE_BASELINES.join(", ")
    );
    let rows: Vec<Vec<String>> = the_bar(records)
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let verdict = match c.met() {
                Some(true) => "met".to_string(),
                Some(false) => "**MISSED**".to_string(),
                None => "no data".to_string(),
            };
            vec![
                (i + 1).to_string(),
                c.item.clone(),
                c.measured.map_or_else(|| "no data".into(), |m| c.value(m)),
                c.target_text(),
                verdict,
                c.margin_text(),
                c.detail.clone(),
            ]
        })
        .collect();
    let header = [
        "#", "item", "measured", "target", "result", "margin", "from",
    ]
    .map(String::from);
    table_aligned(out, &header, |i| [0, 2, 3, 5].contains(&i), &rows);
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
    use crate::plot::tests::{rec, synthetic, temp_dir};

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

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn bcast_latency_reduction_from_known_records() {
        // Kernel 15 µs vs UDP 100 µs: 85% lower (met by 2.2 pp); p99 25 vs 100: 75% (missed by 5.3).
        let records = vec![
            lat("boad-udp", 100.0, 100.0),
            lat("boad-kernel", 15.0, 25.0),
            // Not the bar's configuration: ignored.
            {
                let mut r = lat("boad-kernel", 1.0, 1.0);
                r.hosts = 1;
                r
            },
        ];
        let b = bar_bcast_latency(&records);
        assert!(close(b[0].measured, 85.0), "{b:?}");
        assert!(close(b[0].margin(), 85.0 - 82.8));
        assert_eq!(b[0].verdict(), "met");
        assert!(close(b[1].measured, 75.0));
        assert_eq!(b[1].verdict(), "MISSED");
        assert!(b[1].summary().contains("-5.3 pp"), "{}", b[1].summary());
    }

    #[test]
    fn latency_bench_wins_over_fanout_and_last_record_wins() {
        let mut f = lat("boad-kernel", 50.0, 50.0);
        f.bench = "fanout".into();
        let records = vec![
            lat("boad-udp", 100.0, 100.0),
            lat("boad-kernel", 90.0, 90.0),
            lat("boad-kernel", 10.0, 10.0),
            f,
        ];
        let b = bar_bcast_latency(&records);
        assert!(close(b[0].measured, 90.0), "{b:?}");
        // Only fanout records: they count.
        let mut fu = lat("boad-udp", 100.0, 100.0);
        fu.bench = "fanout".into();
        let mut fk = lat("boad-kernel", 20.0, 20.0);
        fk.bench = "fanout".into();
        assert!(close(bar_bcast_latency(&[fu, fk])[0].measured, 80.0));
    }

    #[test]
    fn throughput_ratio_is_over_the_best_userspace_baseline() {
        let records = vec![
            ops("boad-kernel", "reduce", 30_000.0),
            ops("boad-udp", "reduce", 10_000.0),
            ops("naive", "reduce", 20_000.0),
            ops("epoll", "reduce", 15_000.0),
            ops("ompi-tcp", "reduce", 1e9), // not a userspace baseline of the bar
            ops("boad-kernel", "allreduce", 10_000.0),
            ops("boad-udp", "allreduce", 10_000.0),
        ];
        let b = bar_throughput(&records);
        assert_eq!(b.len(), 2, "{b:?}");
        assert!(close(b[0].measured, 1.5));
        assert_eq!(b[0].verdict(), "met");
        assert!(b[0].detail.contains("naive"), "{}", b[0].detail);
        assert!(close(b[1].measured, 1.0));
        assert_eq!(b[1].verdict(), "MISSED");
        assert!(
            b[1].detail.contains("no data for naive, epoll"),
            "{}",
            b[1].detail
        );
    }

    #[test]
    fn root_syscalls_per_fanout() {
        let mut records = vec![];
        for (ranks, v) in [(3, 1.0), (5, 1.004), (9, 2.0)] {
            let mut r = rec("syscalls", "boad-kernel", "bcast", 4, ranks, 3);
            r.syscalls_root = Some(v);
            records.push(r);
        }
        let b = bar_root_syscalls(&records);
        let verdicts: Vec<&str> = b.iter().map(BarCheck::verdict).collect();
        assert_eq!(verdicts, ["met", "met", "MISSED"]);
        assert!(b[2].item.contains("8 receivers"), "{}", b[2].item);
        assert!(close(b[2].margin(), -1.0));
    }

    #[test]
    fn no_data_is_said_never_invented() {
        let b = the_bar(&[]);
        assert_eq!(b.len(), 2 + 2 + 1);
        assert!(b
            .iter()
            .all(|c| c.measured.is_none() && c.verdict() == "no data"));
        // A kernel number without a baseline is still no data.
        let b = bar_throughput(&[ops("boad-kernel", "reduce", 1.0)]);
        assert_eq!(b[0].verdict(), "no data");
        let b = bar_bcast_latency(&[lat("boad-kernel", 1.0, 1.0)]);
        assert!(b[0].detail.contains("boad-udp"), "{}", b[0].detail);
        let text = render(
            &[],
            "empty.jsonl",
            &[],
            &["app-time.png: no records".into()],
        );
        assert!(text.contains("(0 records)"));
        assert!(text.contains("- app-time.png: no records"));
        for section in [
            "## Latency",
            "## Fan-out",
            "## Throughput",
            "## Applications",
        ] {
            let after = &text[text.find(section).unwrap()..];
            assert!(after.contains("No data"), "{section}");
        }
        assert!(!text.contains("MISSED") && !text.contains("| met |"));
    }

    #[test]
    fn report_of_synthetic_records_has_every_table() {
        let figures = [Figure {
            file: "app-time.png".into(),
            title: "Applications".into(),
        }];
        let text = render(&synthetic(), "synthetic.jsonl", &figures, &[]);
        for want in [
            "## The bar",
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
        // Synthetic fan-out: kernel 90 µs vs udp 180 µs at 9 ranks: 50% lower, missed.
        let bar = the_bar(&synthetic());
        assert!(close(bar[0].measured, 50.0), "{bar:?}");
        // Synthetic throughput: kernel 1e5/9 vs best baseline (udp) 1e5/18: 2x, met.
        assert!(bar
            .iter()
            .any(|c| c.item.starts_with("reduce") && close(c.measured, 2.0)));
        assert_eq!(bar.iter().filter(|c| c.unit == Unit::Count).count(), 7);
        // And it can be written where the figures go.
        let dir = temp_dir("report");
        write(&dir.join("report.md"), &text).unwrap();
        assert!(
            load(&dir.join("report.md")).is_err(),
            "markdown is not JSON lines"
        );
        std::fs::remove_dir_all(&dir).unwrap();
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
