//! PNG plots made from the benchmark [`Record`]s of `results.jsonl`, and the error type shared with
//! [`crate::report`].
//!
//! Every figure is drawn from whatever records exist: a figure whose data is absent is skipped (with
//! the reason), never invented. When several records describe the same point (the same
//! implementation, collective, size, ranks and hosts), the one written last wins: `results.jsonl` is
//! appended to, so the last line is the newest run.
//!
//! Text needs a TrueType font, registered at run time with [`load_font`] (plotters is built without
//! fontconfig): by default DejaVu Sans from Debian's `fonts-dejavu-core`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::record::Record;

/// What can go wrong while reading records, drawing plots or writing the report.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The results file cannot be opened or a line of it is not a record.
    #[error("cannot read the results file {path}: {source}")]
    Results {
        /// The results file.
        path: PathBuf,
        /// Why (for a bad line: its number and the JSON error).
        #[source]
        source: std::io::Error,
    },
    /// The font file cannot be read.
    #[error(
        "cannot read the font {path} ({source}): install the Debian package {FONT_PACKAGE} \
         (apt-get install {FONT_PACKAGE}) or pass --font with another TrueType file"
    )]
    FontMissing {
        /// The font file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The font file is not a TrueType/OpenType font.
    #[error("{path} is not a TrueType/OpenType font (try {DEFAULT_FONT} from {FONT_PACKAGE})")]
    FontInvalid {
        /// The font file.
        path: PathBuf,
    },
    /// An output file or directory cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// plotters failed to draw or encode a figure.
    #[error("cannot draw {path}: {message}")]
    Draw {
        /// The PNG file.
        path: PathBuf,
        /// plotters' error, as text.
        message: String,
    },
}

/// The font used when none is given: DejaVu Sans.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// The Debian package that installs [`DEFAULT_FONT`].
pub const FONT_PACKAGE: &str = "fonts-dejavu-core";
/// Width of every figure, pixels.
pub const WIDTH: u32 = 1100;
/// Height of every figure, pixels.
pub const HEIGHT: u32 = 620;
/// The collectives that get a latency-vs-size figure, in report order.
pub const SIZE_COLLECTIVES: [&str; 4] = ["bcast", "reduce", "allreduce", "allgather"];

const FAMILY: &str = "sans-serif";
/// Legend panel width, pixels: wide enough for the longest label, within these bounds.
const LEGEND_WIDTH: (u32, u32) = (170, 380);

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

static FONT: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Registers the TrueType font at `path` for every figure's text. The first successful call wins;
/// later calls do nothing.
pub fn load_font(path: &Path) -> Result<(), PlotError> {
    let mut loaded = FONT.lock().unwrap_or_else(|e| e.into_inner());
    if loaded.is_some() {
        return Ok(());
    }
    let bytes = std::fs::read(path).map_err(|source| PlotError::FontMissing {
        path: path.to_path_buf(),
        source,
    })?;
    // plotters keeps the font for the life of the process: give it the bytes for good (once).
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).map_err(|_| {
        PlotError::FontInvalid {
            path: path.to_path_buf(),
        }
    })?;
    *loaded = Some(path.to_path_buf());
    Ok(())
}

/// A figure [`plot_all`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// File name inside the output directory.
    pub file: String,
    /// What it shows (its title).
    pub title: String,
}

/// The result of one figure: written, or skipped for want of data.
#[derive(Clone, Debug, PartialEq)]
pub enum Drawn {
    /// The PNG was written.
    Written(Figure),
    /// No PNG: the reason, naming the file that was not written.
    Skipped(String),
}

/// Everything [`plot_all`] did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Figures written, in order.
    pub written: Vec<Figure>,
    /// Figures not written for want of data, with the reason.
    pub skipped: Vec<String>,
    /// Figures that failed to draw (the others were still attempted).
    pub failed: Vec<PlotError>,
}

/// Draws every figure that has data into `out` (which must exist). A figure without data is
/// skipped and one that fails to draw is recorded; neither stops the others.
/// Needs [`load_font`] first.
pub fn plot_all(records: &[Record], out: &Path) -> Outcome {
    let mut results = vec![];
    for coll in ["bcast", "allreduce"] {
        results.push(latency_vs_receivers(records, coll, out));
    }
    for coll in ["allreduce", "reduce"] {
        results.push(throughput_vs_fanout(records, coll, out));
    }
    for coll in SIZE_COLLECTIVES {
        for placement in [Placement::Cluster, Placement::Host] {
            results.push(latency_vs_size(records, coll, placement, out));
        }
    }
    results.push(root_cost_vs_fanout(records, RootCost::Cpu, out));
    results.push(root_cost_vs_fanout(records, RootCost::Syscalls, out));
    results.push(app_time(records, out));
    let mut outcome = Outcome::default();
    for r in results {
        match r {
            Ok(Drawn::Written(f)) => outcome.written.push(f),
            Ok(Drawn::Skipped(why)) => outcome.skipped.push(why),
            Err(e) => outcome.failed.push(e),
        }
    }
    outcome
}

// ---------------------------------------------------------------------------------------------
// Shared with the report: order, colours, formatting, choosing among records.

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

/// A colour that stays with an implementation across figures (Color Brewer "Set1" and friends).
fn fixed_color(name: &str) -> Option<RGBColor> {
    Some(match name {
        "boad-kernel" => RGBColor(215, 25, 28),
        "boad-udp" => RGBColor(44, 123, 182),
        "boad-shm" => RGBColor(26, 150, 65),
        "boad-hier-kernel" => RGBColor(253, 174, 97),
        "boad-hier" => RGBColor(171, 217, 233),
        "naive" => RGBColor(152, 78, 163),
        "epoll" => RGBColor(255, 127, 0),
        "ompi-tcp" => RGBColor(140, 81, 10),
        "ompi-shm" => RGBColor(231, 41, 138),
        "mpich-tcp" => RGBColor(90, 90, 90),
        "mpich-shm" => RGBColor(0, 160, 160),
        _ => return None,
    })
}

const SPARE_COLORS: [RGBColor; 6] = [
    RGBColor(102, 166, 30),
    RGBColor(31, 31, 140),
    RGBColor(190, 170, 0),
    RGBColor(166, 118, 29),
    RGBColor(120, 200, 230),
    RGBColor(250, 150, 150),
];

/// Gives each series its implementation's colour (the first series of an implementation), or a
/// spare colour.
fn assign_colors(implementations: &[&str]) -> Vec<RGBColor> {
    let mut spare = 0;
    let mut used: Vec<&str> = vec![];
    implementations
        .iter()
        .map(|&implementation| {
            if !used.contains(&implementation) {
                if let Some(c) = fixed_color(implementation) {
                    used.push(implementation);
                    return c;
                }
            }
            let c = SPARE_COLORS[spare % SPARE_COLORS.len()];
            spare += 1;
            c
        })
        .collect()
}

/// Bytes as a short label: `4 B`, `64 KiB`, `1 MiB`.
pub fn fmt_bytes(bytes: f64) -> String {
    const UNITS: [(f64, &str); 3] = [
        (1024.0 * 1024.0 * 1024.0, "GiB"),
        (1024.0 * 1024.0, "MiB"),
        (1024.0, "KiB"),
    ];
    for (scale, unit) in UNITS {
        if bytes >= scale {
            return format!("{} {unit}", trim_number(bytes / scale, 1));
        }
    }
    format!("{} B", trim_number(bytes, 0))
}

/// A number for an axis: `0.5`, `20`, `1.5k`, `2M`.
fn fmt_axis_number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim_number(v / 1e6, 2))
    } else if a >= 1e3 {
        format!("{}k", trim_number(v / 1e3, 1))
    } else {
        trim_number(v, 3)
    }
}

/// `v` with at most `decimals` decimals and no trailing zeros.
fn trim_number(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
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

/// One implementation's line: points (x, value, optional p99) by x; the last record of a point wins.
#[derive(Default)]
struct Line {
    points: BTreeMap<u64, (f64, Option<f64>)>,
}

/// Lines keyed by (implementation order, implementation, one host?).
type Lines = BTreeMap<((usize, String), bool), Line>;

fn collect_lines<'a>(
    records: impl IntoIterator<Item = &'a Record>,
    x: impl Fn(&Record) -> u64,
    y: impl Fn(&Record) -> Option<(f64, Option<f64>)>,
) -> Lines {
    let mut lines = Lines::new();
    for r in records {
        if let Some(v) = y(r) {
            lines
                .entry((implementation_key(&who(r)), r.hosts <= 1))
                .or_default()
                .points
                .insert(x(r), v);
        }
    }
    lines
}

/// Series for a line chart: one per implementation (and per one-host/cluster when both occur).
fn series_of(lines: &Lines, with_p99: bool) -> Vec<Series> {
    let mixed = lines.keys().any(|k| k.1) && lines.keys().any(|k| !k.1);
    let labels: Vec<(String, String)> = lines
        .keys()
        .map(|((_, name), one_host)| {
            let label = match (mixed, one_host) {
                (false, _) => name.clone(),
                (true, true) => format!("{name} (1 host)"),
                (true, false) => format!("{name} (cluster)"),
            };
            (label, name.clone())
        })
        .collect();
    let names: Vec<&str> = labels.iter().map(|(_, n)| n.as_str()).collect();
    let colors = assign_colors(&names);
    let mut out = vec![];
    let mut used = BTreeSet::new();
    let mut other_shape = IMPLEMENTATIONS.len();
    for ((key, line), ((label, _), color)) in lines.iter().zip(labels.into_iter().zip(colors)) {
        // A known implementation keeps its marker across figures (its first line, when it has
        // two); any other line takes the next marker.
        let known = key.0 .0;
        let shape = if known < IMPLEMENTATIONS.len() && used.insert(known) {
            known
        } else {
            other_shape += 1;
            other_shape
        };
        out.push(Series {
            label,
            color,
            shape,
            dashed: false,
            in_legend: true,
            points: line
                .points
                .iter()
                .map(|(&x, &(y, _))| (x as f64, y))
                .collect(),
        });
        if with_p99 {
            let p99: Vec<(f64, f64)> = line
                .points
                .iter()
                .filter_map(|(&x, &(_, p))| p.map(|p| (x as f64, p)))
                .collect();
            if !p99.is_empty() {
                out.push(Series {
                    label: String::new(),
                    color,
                    shape,
                    dashed: true,
                    in_legend: false,
                    points: p99,
                });
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The figures.

fn written(file: &str, title: &str) -> Drawn {
    Drawn::Written(Figure {
        file: file.to_string(),
        title: title.to_string(),
    })
}

/// `<coll>-latency-vs-receivers.png` (`bcast-latency-vs-receivers.png`, the BOAD paper's figure):
/// latency (mean, and p99 dashed) against receivers (ranks - 1), one line per implementation, from
/// `fanout` records of `coll`.
pub fn latency_vs_receivers(
    records: &[Record],
    coll: &str,
    out: &Path,
) -> Result<Drawn, PlotError> {
    let file = format!("{coll}-latency-vs-receivers.png");
    let mut rs: Vec<&Record> = records
        .iter()
        .filter(|r| r.bench == "fanout" && r.coll == coll && r.avg_us.is_some())
        .collect();
    // Fan-out is a cluster's: one-host runs, if any, only when there is nothing else.
    if rs.iter().any(|r| r.hosts > 1) {
        rs.retain(|r| r.hosts > 1);
    }
    let Some(bytes) = common_bytes(rs.iter().copied()) else {
        return Ok(Drawn::Skipped(format!(
            "{file}: no records with bench \"fanout\", coll \"{coll}\" and avg_us"
        )));
    };
    let lines = collect_lines(
        rs.iter().copied().filter(|r| r.bytes == bytes),
        |r| u64::from(receivers(r)),
        |r| r.avg_us.map(|a| (a, r.p99_us)),
    );
    let title = format!("{} latency vs number of receivers", capitalized(coll));
    let chart = LineChart {
        title: title.clone(),
        subtitle: format!(
            "{} messages, bench fanout; solid: mean, dashed: p99 (max over ranks)",
            fmt_bytes(bytes as f64)
        ),
        x: AxisKind::Count,
        y: AxisKind::Value,
        x_desc: "receivers (ranks - 1)".into(),
        y_desc: "latency (µs)".into(),
        series: series_of(&lines, true),
        reference: None,
    };
    draw_line_chart(&out.join(&file), &chart)?;
    Ok(written(&file, &title))
}

/// `<coll>-throughput-vs-fanout.png`: collectives per second against receivers, one line per
/// implementation, from `throughput` and `fanout` records with `ops_per_s` (a `throughput` record
/// wins over a `fanout` one for the same point).
pub fn throughput_vs_fanout(
    records: &[Record],
    coll: &str,
    out: &Path,
) -> Result<Drawn, PlotError> {
    let file = format!("{coll}-throughput-vs-fanout.png");
    let mut rs: Vec<&Record> = records
        .iter()
        .filter(|r| {
            (r.bench == "throughput" || r.bench == "fanout")
                && r.coll == coll
                && r.ops_per_s.is_some()
        })
        .collect();
    // Stable: fanout records first, so the throughput ones come later and win.
    rs.sort_by_key(|r| r.bench == "throughput");
    // Fan-out is a cluster's: one-host runs (MPI, shared memory) stay in the report's table.
    let one_host_left_out = rs.iter().any(|r| r.hosts > 1) && rs.iter().any(|r| r.hosts <= 1);
    if one_host_left_out {
        rs.retain(|r| r.hosts > 1);
    }
    let Some(bytes) = common_bytes(rs.iter().copied()) else {
        return Ok(Drawn::Skipped(format!(
            "{file}: no records with bench \"throughput\" or \"fanout\", coll \"{coll}\" and ops_per_s"
        )));
    };
    let lines = collect_lines(
        rs.iter().copied().filter(|r| r.bytes == bytes),
        |r| u64::from(receivers(r)),
        |r| r.ops_per_s.map(|o| (o, None)),
    );
    let title = format!("{} throughput vs fan-out", capitalized(coll));
    let fanouts: BTreeSet<u64> = lines
        .values()
        .flat_map(|l| l.points.keys().copied())
        .collect();
    let mut subtitle = format!(
        "{} per rank; collectives completed per second",
        fmt_bytes(bytes as f64)
    );
    if let (1, Some(x)) = (fanouts.len(), fanouts.first()) {
        subtitle = format!("{subtitle}; only one fan-out measured ({x} receivers)");
    }
    if one_host_left_out {
        subtitle = format!("{subtitle}; cluster runs only (one-host runs: see report.md)");
    }
    let chart = LineChart {
        title: title.clone(),
        subtitle,
        x: AxisKind::Count,
        y: AxisKind::Value,
        x_desc: "receivers (ranks - 1)".into(),
        y_desc: "throughput (collectives/s)".into(),
        series: series_of(&lines, false),
        reference: None,
    };
    draw_line_chart(&out.join(&file), &chart)?;
    Ok(written(&file, &title))
}

/// Where the ranks of a latency-vs-size figure ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// A (virtual) cluster: `hosts > 1`.
    Cluster,
    /// One host: `hosts == 1`.
    Host,
}

impl Placement {
    fn matches(self, r: &Record) -> bool {
        match self {
            Placement::Cluster => r.hosts > 1,
            Placement::Host => r.hosts <= 1,
        }
    }
    fn suffix(self) -> &'static str {
        match self {
            Placement::Cluster => "cluster",
            Placement::Host => "host",
        }
    }
}

/// The rank count a figure of one placement shows: 9 when there are 9-rank records, else the most.
pub fn preferred_ranks<'a>(records: impl IntoIterator<Item = &'a Record>) -> Option<u32> {
    let ranks: BTreeSet<u32> = records.into_iter().map(|r| r.ranks).collect();
    if ranks.contains(&9) {
        Some(9)
    } else {
        ranks.last().copied()
    }
}

/// `latency-vs-size-<coll>-cluster.png` / `-host.png`: mean latency against message size (log-log),
/// one line per implementation, from `latency` records on 9 ranks (or the most ranks measured).
pub fn latency_vs_size(
    records: &[Record],
    coll: &str,
    placement: Placement,
    out: &Path,
) -> Result<Drawn, PlotError> {
    let file = format!("latency-vs-size-{coll}-{}.png", placement.suffix());
    let rs: Vec<&Record> = records
        .iter()
        .filter(|r| {
            r.bench == "latency" && r.coll == coll && r.avg_us.is_some() && placement.matches(r)
        })
        .collect();
    let Some(ranks) = preferred_ranks(rs.iter().copied()) else {
        let where_ = match placement {
            Placement::Cluster => "hosts > 1",
            Placement::Host => "hosts == 1",
        };
        return Ok(Drawn::Skipped(format!(
            "{file}: no records with bench \"latency\", coll \"{coll}\", {where_} and avg_us"
        )));
    };
    let rs: Vec<&Record> = rs.into_iter().filter(|r| r.ranks == ranks).collect();
    let hosts: BTreeSet<u32> = rs.iter().map(|r| r.hosts).collect();
    let lines = collect_lines(rs, |r| r.bytes, |r| r.avg_us.map(|a| (a, None)));
    let place = match (placement, hosts.first(), hosts.last()) {
        (Placement::Host, _, _) => "one host".to_string(),
        (Placement::Cluster, Some(a), Some(b)) if a == b => format!("{a} hosts"),
        (Placement::Cluster, Some(a), Some(b)) => format!("{a}-{b} hosts"),
        (Placement::Cluster, _, _) => "a cluster".to_string(),
    };
    let title = format!(
        "{} latency vs message size: {ranks} ranks on {place}",
        capitalized(coll)
    );
    let per = if coll == "allgather" {
        "each rank's block"
    } else {
        "message"
    };
    let chart = LineChart {
        title: title.clone(),
        subtitle: "bench latency; mean per rank, max over ranks; log-log".into(),
        x: AxisKind::Bytes,
        y: AxisKind::Value,
        x_desc: format!("size ({per}, bytes)"),
        y_desc: "latency (µs)".into(),
        series: series_of(&lines, false),
        reference: None,
    };
    draw_line_chart(&out.join(&file), &chart)?;
    Ok(written(&file, &title))
}

/// What a root-cost figure shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootCost {
    /// `cpu_us_root`: `root-cpu-vs-fanout.png`.
    Cpu,
    /// `syscalls_root`: `root-syscalls-vs-fanout.png`.
    Syscalls,
}

/// `root-cpu-vs-fanout.png` / `root-syscalls-vs-fanout.png`: the root's CPU time or system calls
/// per broadcast against receivers, one line per implementation, from the `fanout` records of
/// `bcast` with the field (from any bench's when no `fanout` record has it).
pub fn root_cost_vs_fanout(
    records: &[Record],
    cost: RootCost,
    out: &Path,
) -> Result<Drawn, PlotError> {
    type Field = fn(&Record) -> Option<f64>;
    let (file, field, value): (&str, &str, Field) = match cost {
        RootCost::Cpu => ("root-cpu-vs-fanout.png", "cpu_us_root", |r| r.cpu_us_root),
        RootCost::Syscalls => ("root-syscalls-vs-fanout.png", "syscalls_root", |r| {
            r.syscalls_root
        }),
    };
    let mut rs: Vec<&Record> = records
        .iter()
        .filter(|r| r.coll == "bcast" && value(r).is_some())
        .collect();
    // One sweep, not a mix: the fan-out sweep's records when there are any.
    if rs.iter().any(|r| r.bench == "fanout") {
        rs.retain(|r| r.bench == "fanout");
    }
    let Some(bytes) = common_bytes(rs.iter().copied()) else {
        return Ok(Drawn::Skipped(format!(
            "{file}: no records with coll \"bcast\" and {field}"
        )));
    };
    let lines = collect_lines(
        rs.iter().copied().filter(|r| r.bytes == bytes),
        |r| u64::from(receivers(r)),
        |r| value(r).map(|v| (v, None)),
    );
    let (title, y_desc, reference) = match cost {
        RootCost::Cpu => (
            "CPU time at the root per broadcast vs receivers",
            "root CPU time per bcast (µs, user + sys)",
            None,
        ),
        RootCost::Syscalls => (
            "System calls at the root per broadcast vs receivers",
            "root system calls per bcast",
            Some((1.0, "target: 1 (boad-kernel)".to_string())),
        ),
    };
    let chart = LineChart {
        title: title.into(),
        subtitle: format!("{} messages", fmt_bytes(bytes as f64)),
        x: AxisKind::Count,
        y: AxisKind::Value,
        x_desc: "receivers (ranks - 1)".into(),
        y_desc: y_desc.into(),
        series: series_of(&lines, false),
        reference,
    };
    draw_line_chart(&out.join(file), &chart)?;
    Ok(written(file, title))
}

/// A bar of `app-time.png`: an implementation on a number of ranks and hosts.
type BarKey = ((usize, String), u32, u32);
/// One problem size of an application: bar -> (total s, comm s).
type AppGroup = BTreeMap<BarKey, (f64, Option<f64>)>;

/// `app-time.png`: for each application (a panel) and problem size (a group of bars), one bar per
/// implementation (and ranks/hosts): total wall time (light) with the time inside collectives
/// (solid) in front.
pub fn app_time(records: &[Record], out: &Path) -> Result<Drawn, PlotError> {
    const FILE: &str = "app-time.png";
    let mut apps: BTreeMap<String, BTreeMap<u64, AppGroup>> = BTreeMap::new();
    for r in records {
        if r.bench != "app" {
            continue;
        }
        if let Some(total) = r.total_s {
            apps.entry(r.coll.clone())
                .or_default()
                .entry(r.bytes)
                .or_default()
                .insert(
                    (implementation_key(&who(r)), r.ranks, r.hosts),
                    (total, r.comm_s),
                );
        }
    }
    if apps.is_empty() {
        return Ok(Drawn::Skipped(format!(
            "{FILE}: no records with bench \"app\" and total_s"
        )));
    }
    let bars: BTreeSet<BarKey> = apps
        .values()
        .flat_map(|g| g.values())
        .flat_map(|b| b.keys().cloned())
        .collect();
    let ranks: BTreeSet<u32> = bars.iter().map(|b| b.1).collect();
    let hosts: BTreeSet<u32> = bars.iter().map(|b| b.2).collect();
    let label = |((_, name), r, h): &BarKey| {
        let on = if *h <= 1 {
            "1 host".to_string()
        } else {
            format!("{h} hosts")
        };
        match (ranks.len() > 1, hosts.len() > 1) {
            (true, _) => format!("{name} ({r} ranks, {on})"),
            (false, true) => format!("{name} ({on})"),
            (false, false) => name.clone(),
        }
    };
    let names: Vec<&str> = bars.iter().map(|b| b.0 .1.as_str()).collect();
    let colors: BTreeMap<BarKey, RGBColor> =
        bars.iter().cloned().zip(assign_colors(&names)).collect();
    let title = "Applications: total time and time in collectives";
    let mut subtitle =
        "light bar: total wall time; solid bar: time inside collectives (max over ranks)"
            .to_string();
    if let (1, Some(r)) = (ranks.len(), ranks.first()) {
        subtitle = format!("{r} ranks; {subtitle}");
    }
    let path = out.join(FILE);
    let drawn = (|| -> DrawResult {
        let root = BitMapBackend::new(&path, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let body = root.titled(title, (FAMILY, 26))?;
        let body = body.titled(
            &subtitle,
            (FAMILY, 16).into_font().color(&RGBColor(80, 80, 80)),
        )?;
        let labels: Vec<String> = bars.iter().map(label).collect();
        let (plots, legend) = body.split_horizontally(WIDTH - legend_width(&root, &labels));
        let entries: Vec<LegendEntry> = bars
            .iter()
            .map(|b| LegendEntry {
                label: label(b),
                color: colors.get(b).copied().unwrap_or(BLACK),
                mark: Mark::Bar,
            })
            .collect();
        draw_legend(&legend, &entries)?;
        let panels = plots.split_evenly((1, apps.len()));
        for (panel, (app, groups)) in panels.iter().zip(&apps) {
            draw_app_panel(panel, app, groups, &colors)?;
        }
        root.present()?;
        Ok(())
    })();
    drawn.map_err(|e| PlotError::Draw {
        path: path.clone(),
        message: e.to_string(),
    })?;
    Ok(written(FILE, title))
}

fn draw_app_panel(
    panel: &Area<'_>,
    app: &str,
    groups: &BTreeMap<u64, AppGroup>,
    colors: &BTreeMap<BarKey, RGBColor>,
) -> DrawResult {
    let group_labels: Vec<String> = groups
        .keys()
        .map(|&v| format!("{} vertices", fmt_axis_number(v as f64)))
        .collect();
    let bars: BTreeSet<&BarKey> = groups.values().flat_map(|g| g.keys()).collect();
    let bars: Vec<&BarKey> = bars.into_iter().collect();
    let values: Vec<f64> = groups
        .values()
        .flat_map(|g| g.values())
        .flat_map(|&(t, c)| [Some(t), c])
        .flatten()
        .collect();
    let y = Axis::new(AxisKind::Value, &values);
    let n = groups.len();
    let x = Axis {
        log: false,
        lo: -0.5,
        hi: n as f64 - 0.5,
        ticks: (0..n).map(|i| i as f64).collect(),
        kind: AxisKind::Count,
    };
    let mut chart = ChartBuilder::on(panel)
        .caption(app, (FAMILY, 20))
        .margin(10)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d(x.ranged(), y.ranged())?;
    let group_label = |v: &f64| {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 {
            group_labels.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .bold_line_style(BLACK.mix(0.12))
        .x_label_formatter(&group_label)
        .y_label_formatter(&|v| y.label(*v))
        .y_desc("time (s)")
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 17))
        .draw()?;
    let width = 0.8 / bars.len().max(1) as f64;
    for (gi, group) in groups.values().enumerate() {
        for (bi, key) in bars.iter().enumerate() {
            let Some(&(total, comm)) = group.get(*key) else {
                continue;
            };
            let color = colors.get(*key).copied().unwrap_or(BLACK);
            let x0 = gi as f64 - 0.4 + bi as f64 * width + width * 0.08;
            let x1 = x0 + width * 0.84;
            let bar = |v: f64| y.t(v).map(|top| [(x0, y.lo), (x1, top.max(y.lo))]);
            if let Some(b) = bar(total) {
                chart.draw_series([
                    Rectangle::new(b, color.mix(0.3).filled()),
                    Rectangle::new(b, ShapeStyle::from(color).stroke_width(1)),
                ])?;
            }
            if let Some(b) = comm.and_then(bar) {
                chart.draw_series([Rectangle::new(b, color.filled())])?;
            }
        }
    }
    Ok(())
}

/// A collective's name at the start of a title.
fn capitalized(coll: &str) -> String {
    match coll {
        "bcast" => "Broadcast".into(),
        "reduce" => "Reduce".into(),
        "allreduce" => "Allreduce".into(),
        "allgather" => "Allgather".into(),
        "barrier" => "Barrier".into(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Drawing: axes, line charts, legends.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AxisKind {
    /// Small integers (receivers): linear, or log2 when they span three doublings.
    Count,
    /// Message sizes: always logarithmic, ticks at powers of two.
    Bytes,
    /// Measured values: logarithmic when they span more than a decade, else linear from 0.
    Value,
}

/// An axis in plotting coordinates: values are drawn at `t(v)` (log10 on a log axis).
struct Axis {
    log: bool,
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    kind: AxisKind,
}

impl Axis {
    fn new(kind: AxisKind, values: &[f64]) -> Axis {
        let vals: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let min = vals.iter().copied().fold(f64::INFINITY, f64::min);
        let max = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if vals.is_empty() {
            return Axis {
                log: false,
                lo: 0.0,
                hi: 1.0,
                ticks: vec![0.0, 1.0],
                kind,
            };
        }
        match kind {
            AxisKind::Count if min >= 1.0 && max / min >= 8.0 => {
                // Fan-outs that double (2, 4, ..., 64): a log2 axis, with a tick at each value
                // measured (or at each power of two when there are many).
                let (lo2, hi2) = (min.log2() - 0.3, max.log2() + 0.3);
                let mut distinct: Vec<f64> = vals.iter().map(|v| v.round()).collect();
                distinct.sort_by(f64::total_cmp);
                distinct.dedup();
                let ticks = if distinct.len() <= 12 {
                    distinct.iter().map(|v| v.log10()).collect()
                } else {
                    ((lo2.ceil() as i32)..=(hi2.floor() as i32))
                        .map(|e| f64::from(e) * std::f64::consts::LOG10_2)
                        .collect()
                };
                Axis {
                    log: true,
                    lo: lo2 * std::f64::consts::LOG10_2,
                    hi: hi2 * std::f64::consts::LOG10_2,
                    ticks,
                    kind,
                }
            }
            AxisKind::Count => {
                let lo = (min - 0.5).max(-0.5);
                let hi = max + 0.5;
                let span = (max - min.max(0.0)).max(1.0);
                let step = (span / 15.0).ceil().max(1.0);
                let first = (lo / step).ceil() * step;
                let ticks = (0..)
                    .map(|i| first + i as f64 * step)
                    .take_while(|t| *t <= hi)
                    .collect();
                Axis {
                    log: false,
                    lo,
                    hi,
                    ticks,
                    kind,
                }
            }
            AxisKind::Bytes if min > 0.0 => {
                let (lo2, hi2) = (min.log2(), max.log2());
                let pad = ((hi2 - lo2) * 0.04).max(0.3);
                let (lo2, hi2) = (lo2 - pad, hi2 + pad);
                let count = (hi2.floor() - lo2.ceil() + 1.0).max(1.0);
                let step = (count / 11.0).ceil().max(1.0);
                let ticks = ((lo2.ceil() as i32)..=(hi2.floor() as i32))
                    .filter(|e| f64::from(*e).rem_euclid(step) == 0.0)
                    .map(|e| f64::from(e) * std::f64::consts::LOG10_2)
                    .collect();
                Axis {
                    log: true,
                    lo: lo2 * std::f64::consts::LOG10_2,
                    hi: hi2 * std::f64::consts::LOG10_2,
                    ticks,
                    kind,
                }
            }
            _ if min > 0.0 && max / min > 10.0 => {
                let (lo10, hi10) = (min.log10(), max.log10());
                let pad = (hi10 - lo10) * 0.06;
                let (lo, hi) = (lo10 - pad, hi10 + pad);
                let mults: &[f64] = if hi - lo <= 4.5 {
                    &[1.0, 2.0, 5.0]
                } else if hi - lo <= 7.0 {
                    &[1.0, 3.0]
                } else {
                    &[1.0]
                };
                let every = if hi - lo > 8.0 { 2 } else { 1 };
                let mut ticks = vec![];
                for k in (lo.floor() as i32)..=(hi.ceil() as i32) {
                    if k.rem_euclid(every) != 0 {
                        continue;
                    }
                    for m in mults {
                        let t = m.log10() + f64::from(k);
                        if t >= lo && t <= hi {
                            ticks.push(t);
                        }
                    }
                }
                Axis {
                    log: true,
                    lo,
                    hi,
                    ticks,
                    kind,
                }
            }
            _ => {
                let lo = min.min(0.0);
                let hi = if max > lo {
                    max + (max - lo) * 0.08
                } else {
                    lo + 1.0
                };
                let step = nice_step((hi - lo) / 6.0);
                let first = (lo / step).ceil() * step;
                let ticks = (0..)
                    .map(|i| first + i as f64 * step)
                    .take_while(|t| *t <= hi + step * 1e-9)
                    .collect();
                Axis {
                    log: false,
                    lo,
                    hi,
                    ticks,
                    kind: AxisKind::Value,
                }
            }
        }
    }

    fn ranged(&self) -> Ticked {
        Ticked {
            lo: self.lo,
            hi: self.hi,
            ticks: self.ticks.clone(),
        }
    }

    /// Where `v` is drawn, or `None` if a log axis cannot show it.
    fn t(&self, v: f64) -> Option<f64> {
        match (self.log, v.is_finite()) {
            (_, false) => None,
            (true, _) if v <= 0.0 => None,
            (true, _) => Some(v.log10()),
            (false, _) => Some(v),
        }
    }

    fn label(&self, t: f64) -> String {
        let v = if self.log { 10f64.powf(t) } else { t };
        match self.kind {
            AxisKind::Bytes => fmt_bytes(v.round()),
            AxisKind::Count => format!("{}", v.round()),
            AxisKind::Value => fmt_axis_number(if self.log { round_sig(v) } else { v }),
        }
    }
}

/// A linear plotters axis with exactly the given ticks (grid lines and labels).
struct Ticked {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let frac = (value - self.lo) / (self.hi - self.lo);
        let px = f64::from(limit.0) + frac * f64::from(limit.1 - limit.0);
        px.clamp(-1e6, 1e6).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            vec![]
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

/// Rounds away the error of 10^log10(v) (so 2 prints as 2, not 1.9999999).
fn round_sig(v: f64) -> f64 {
    if v == 0.0 {
        return 0.0;
    }
    let p = 10f64.powf(v.abs().log10().floor() - 2.0);
    (v / p).round() * p
}

struct Series {
    label: String,
    color: RGBColor,
    /// Marker (see [`marker_points`]).
    shape: usize,
    dashed: bool,
    in_legend: bool,
    points: Vec<(f64, f64)>,
}

struct LineChart {
    title: String,
    subtitle: String,
    x: AxisKind,
    y: AxisKind,
    x_desc: String,
    y_desc: String,
    series: Vec<Series>,
    reference: Option<(f64, String)>,
}

#[derive(Clone, Copy)]
enum Mark {
    /// A solid line with the marker of this index (see [`marker_points`]).
    Line(usize),
    Dashed,
    Bar,
}

struct LegendEntry {
    label: String,
    color: RGBColor,
    mark: Mark,
}

fn draw_line_chart(path: &Path, spec: &LineChart) -> Result<(), PlotError> {
    let drawn = (|| -> DrawResult {
        let xs: Vec<f64> = spec
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .collect();
        let mut ys: Vec<f64> = spec
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .collect();
        if let Some((v, _)) = &spec.reference {
            ys.push(*v);
        }
        let x = Axis::new(spec.x, &xs);
        let y = Axis::new(spec.y, &ys);

        let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let body = root.titled(&spec.title, (FAMILY, 26))?;
        let body = body.titled(
            &spec.subtitle,
            (FAMILY, 16).into_font().color(&RGBColor(80, 80, 80)),
        )?;
        // Legend labels by series (a hidden series says what hides it).
        let legend_labels: Vec<String> = (0..spec.series.len())
            .map(|i| match hidden_under(&spec.series, i) {
                Some(top) => format!("{} (under {top})", spec.series[i].label),
                None => spec.series[i].label.clone(),
            })
            .collect();
        let mut labels: Vec<String> = legend_labels
            .iter()
            .zip(&spec.series)
            .filter(|(_, s)| s.in_legend)
            .map(|(l, _)| l.clone())
            .collect();
        labels.extend(spec.reference.iter().map(|(_, l)| l.clone()));
        let (plot, legend) = body.split_horizontally(WIDTH - legend_width(&root, &labels));
        let mut chart = ChartBuilder::on(&plot)
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(80)
            .build_cartesian_2d(x.ranged(), y.ranged())?;
        chart
            .configure_mesh()
            .bold_line_style(BLACK.mix(0.12))
            .x_label_formatter(&|v| x.label(*v))
            .y_label_formatter(&|v| y.label(*v))
            .x_desc(spec.x_desc.as_str())
            .y_desc(spec.y_desc.as_str())
            .label_style((FAMILY, 15))
            .axis_desc_style((FAMILY, 17))
            .draw()?;

        let mut entries = vec![];
        for (i, s) in spec.series.iter().enumerate() {
            let shape = s.shape;
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter_map(|&(a, b)| Some((x.t(a)?, y.t(b)?)))
                .collect();
            let style = ShapeStyle::from(s.color).stroke_width(if s.dashed { 2 } else { 3 });
            if s.dashed {
                chart.draw_series(DashedLineSeries::new(pts.clone(), 9, 6, style))?;
                chart.draw_series(
                    pts.iter()
                        .map(|&p| Circle::new(p, 4, ShapeStyle::from(s.color).stroke_width(2))),
                )?;
            } else {
                chart.draw_series(LineSeries::new(pts.clone(), style))?;
                chart.draw_series(pts.iter().map(|&p| {
                    EmptyElement::at(p) + Polygon::new(marker_points(shape), s.color.filled())
                }))?;
            }
            if s.in_legend {
                entries.push(LegendEntry {
                    label: legend_labels[i].clone(),
                    color: s.color,
                    mark: Mark::Line(shape),
                });
            }
        }
        if spec.series.iter().any(|s| s.dashed) {
            entries.push(LegendEntry {
                label: "p99 (dashed)".into(),
                color: RGBColor(60, 60, 60),
                mark: Mark::Dashed,
            });
        }
        if let Some((v, label)) = &spec.reference {
            if let Some(ty) = y.t(*v) {
                let style = ShapeStyle::from(BLACK).stroke_width(2);
                chart.draw_series(DashedLineSeries::new(
                    vec![(x.lo, ty), (x.hi, ty)],
                    4,
                    4,
                    style,
                ))?;
                entries.push(LegendEntry {
                    label: label.clone(),
                    color: BLACK,
                    mark: Mark::Dashed,
                });
            }
        }
        draw_legend(&legend, &entries)?;
        root.present()?;
        Ok(())
    })();
    drawn.map_err(|e| PlotError::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The label of a later (drawn on top) legend series with the same points as series `i`, within
/// 1%: series `i` is then hidden, and its legend entry says so.
fn hidden_under(series: &[Series], i: usize) -> Option<&str> {
    let me = &series[i];
    series[i + 1..]
        .iter()
        .filter(|o| o.in_legend && o.points.len() == me.points.len())
        .find(|o| {
            o.points
                .iter()
                .zip(&me.points)
                .all(|(a, b)| a.0 == b.0 && (a.1 - b.1).abs() <= 0.01 * a.1.abs().max(b.1.abs()))
        })
        .map(|o| o.label.as_str())
}

/// The points of a filled marker around (0, 0), pixels: circle, triangle, square, diamond or
/// inverted triangle by `shape` (so series that coincide still show, and the legend tells them
/// apart without colour).
fn marker_points(shape: usize) -> Vec<(i32, i32)> {
    match shape % 5 {
        0 => (0..12)
            .map(|i| {
                let a = f64::from(i) * std::f64::consts::PI / 6.0;
                (
                    (5.5 * a.cos()).round() as i32,
                    (5.5 * a.sin()).round() as i32,
                )
            })
            .collect(),
        1 => vec![(0, -7), (6, 4), (-6, 4)],
        2 => vec![(-5, -5), (5, -5), (5, 5), (-5, 5)],
        3 => vec![(0, -7), (7, 0), (0, 7), (-7, 0)],
        _ => vec![(0, 7), (6, -4), (-6, -4)],
    }
}

/// The width of a legend panel holding `labels`.
fn legend_width(area: &Area<'_>, labels: &[String]) -> u32 {
    let font = TextStyle::from((FAMILY, 15).into_font());
    let widest = labels
        .iter()
        .filter_map(|l| area.estimate_text_size(l, &font).ok())
        .map(|(w, _)| w)
        .max()
        .unwrap_or(0);
    (widest + 64).clamp(LEGEND_WIDTH.0, LEGEND_WIDTH.1)
}

/// The legend, in its own panel right of the plot (so it never hides data).
fn draw_legend(area: &Area<'_>, entries: &[LegendEntry]) -> DrawResult {
    let font = (FAMILY, 15).into_font();
    for (i, e) in entries.iter().enumerate() {
        let y = 40 + 28 * i as i32;
        let style = ShapeStyle::from(e.color).stroke_width(3);
        match e.mark {
            Mark::Line(shape) => {
                area.draw(&PathElement::new(vec![(6, y), (40, y)], style))?;
                area.draw(
                    &(EmptyElement::at((23, y))
                        + Polygon::new(marker_points(shape), e.color.filled())),
                )?;
            }
            Mark::Dashed => {
                for x in [6, 20, 34] {
                    area.draw(&PathElement::new(vec![(x, y), (x + 8, y)], style))?;
                }
            }
            Mark::Bar => {
                area.draw(&Rectangle::new(
                    [(8, y - 8), (38, y + 8)],
                    e.color.mix(0.3).filled(),
                ))?;
                area.draw(&Rectangle::new([(8, y), (38, y + 8)], e.color.filled()))?;
            }
        }
        area.draw(&Text::new(e.label.clone(), (48, y - 5), font.clone()))?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    //! Synthetic records (test-only: made-up numbers with known answers) and PNG checks.

    use super::*;

    /// A test-only record.
    pub(crate) fn rec(
        bench: &str,
        implementation: &str,
        coll: &str,
        bytes: u64,
        ranks: u32,
        hosts: u32,
    ) -> Record {
        Record {
            bench: bench.into(),
            implementation: implementation.into(),
            coll: coll.into(),
            bytes,
            ranks,
            hosts,
            iters: 100,
            ..Default::default()
        }
    }

    /// A synthetic data set covering every figure and table (numbers are invented for the tests).
    pub(crate) fn synthetic() -> Vec<Record> {
        let mut v = vec![];
        let cluster = ["boad-kernel", "boad-udp", "naive", "epoll", "ompi-tcp"];
        let host = ["boad-shm", "boad-udp", "ompi-shm", "mpich-shm"];
        for (i, imp) in cluster.iter().enumerate() {
            let f = 1.0 + i as f64;
            // The fan-out sweep's shape: 2 to 64 receivers (and 9 ranks, the bar's).
            for ranks in [2, 3, 5, 9, 17, 33, 65] {
                let mut a = rec("fanout", imp, "allreduce", 4, ranks, ranks.min(8));
                a.avg_us = Some(f * 12.0 * f64::from(ranks));
                a.p99_us = Some(f * 30.0 * f64::from(ranks));
                v.push(a);
                let mut r = rec("fanout", imp, "bcast", 4, ranks, ranks.min(8));
                r.avg_us = Some(f * 10.0 * f64::from(ranks));
                r.p99_us = Some(f * 25.0 * f64::from(ranks));
                r.cpu_us_root = Some(f * 2.0 * f64::from(ranks));
                r.syscalls_root = Some(if *imp == "boad-kernel" {
                    1.0
                } else {
                    f64::from(ranks - 1)
                });
                r.path = (*imp == "boad-kernel").then(|| "kernel".to_string());
                v.push(r);
                for coll in ["allreduce", "reduce"] {
                    let mut t = rec("throughput", imp, coll, 4, ranks, ranks.min(8));
                    t.ops_per_s = Some(1e5 / (f * f64::from(ranks)));
                    v.push(t);
                }
            }
            for coll in SIZE_COLLECTIVES {
                for e in (2..=20).step_by(2) {
                    let mut r = rec("latency", imp, coll, 1 << e, 9, 3);
                    r.avg_us = Some(f * (20.0 + f64::from(1u32 << e) / 100.0));
                    r.p99_us = r.avg_us.map(|a| a * 2.0);
                    v.push(r);
                }
            }
        }
        for (i, imp) in host.iter().enumerate() {
            for ranks in [2, 4, 9] {
                for coll in SIZE_COLLECTIVES {
                    for e in (2..=20).step_by(2) {
                        let mut r = rec("latency", imp, coll, 1 << e, ranks, 1);
                        r.avg_us = Some(
                            (1.0 + i as f64)
                                * f64::from(ranks)
                                * (1.0 + f64::from(1u32 << e) / 1000.0),
                        );
                        v.push(r);
                    }
                }
            }
        }
        for app in ["pagerank", "bfs"] {
            for vertices in [10_000u64, 100_000, 1_000_000] {
                for (i, imp) in ["boad-kernel", "boad-udp", "ompi-tcp"].iter().enumerate() {
                    let mut r = rec("app", imp, app, vertices, 9, 3);
                    let t = vertices as f64 / 1e5 * (1.0 + i as f64 * 0.5);
                    r.total_s = Some(t);
                    r.comm_s = Some(t * 0.4);
                    v.push(r);
                }
            }
        }
        v
    }

    pub(crate) fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("boad-plot-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub(crate) fn font() {
        load_font(Path::new(DEFAULT_FONT))
            .unwrap_or_else(|e| panic!("the plot tests need a font: {e}"));
    }

    /// Width and height from a PNG's signature and IHDR chunk.
    fn png_size(path: &Path) -> (u32, u32) {
        let b = std::fs::read(path).unwrap();
        assert!(b.len() > 33, "{} is too short for a PNG", path.display());
        assert_eq!(
            &b[..8],
            b"\x89PNG\r\n\x1a\n",
            "{} is not a PNG",
            path.display()
        );
        assert_eq!(&b[12..16], b"IHDR");
        let be = |o: usize| u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        (be(16), be(20))
    }

    #[test]
    fn every_figure_is_a_png_of_the_requested_size() {
        font();
        let dir = temp_dir("all");
        let outcome = plot_all(&synthetic(), &dir);
        assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
        assert!(outcome.skipped.is_empty(), "{:?}", outcome.skipped);
        let files: Vec<&str> = outcome.written.iter().map(|f| f.file.as_str()).collect();
        for want in [
            "bcast-latency-vs-receivers.png",
            "allreduce-latency-vs-receivers.png",
            "allreduce-throughput-vs-fanout.png",
            "reduce-throughput-vs-fanout.png",
            "latency-vs-size-bcast-cluster.png",
            "latency-vs-size-allgather-host.png",
            "root-cpu-vs-fanout.png",
            "root-syscalls-vs-fanout.png",
            "app-time.png",
        ] {
            assert!(files.contains(&want), "{want} not in {files:?}");
        }
        assert_eq!(files.len(), 4 + 2 * SIZE_COLLECTIVES.len() + 3);
        for f in &outcome.written {
            assert_eq!(png_size(&dir.join(&f.file)), (WIDTH, HEIGHT), "{}", f.file);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_data_skips_a_figure_without_failing() {
        font();
        let dir = temp_dir("skip");
        // Only one-host latency of bcast: every other figure is skipped, one is written.
        let records: Vec<Record> = synthetic()
            .into_iter()
            .filter(|r| r.bench == "latency" && r.hosts == 1 && r.coll == "bcast")
            .collect();
        let outcome = plot_all(&records, &dir);
        assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
        let files: Vec<&str> = outcome.written.iter().map(|f| f.file.as_str()).collect();
        assert_eq!(files, ["latency-vs-size-bcast-host.png"]);
        assert!(outcome
            .skipped
            .iter()
            .any(|s| s.starts_with("app-time.png")));
        assert!(!dir.join("app-time.png").exists());
        let empty = plot_all(&[], &dir);
        assert!(empty.written.is_empty() && empty.failed.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn axes_and_labels() {
        let b = Axis::new(AxisKind::Bytes, &[4.0, 1048576.0]);
        assert!(b.log);
        let labels: Vec<String> = b.ticks.iter().map(|t| b.label(*t)).collect();
        assert!(labels.contains(&"4 B".to_string()), "{labels:?}");
        assert!(labels.contains(&"1 MiB".to_string()), "{labels:?}");
        let v = Axis::new(AxisKind::Value, &[2.0, 3.0]);
        assert!(!v.log && v.lo == 0.0 && v.hi > 3.0);
        let l = Axis::new(AxisKind::Value, &[1.0, 5000.0]);
        assert!(l.log);
        assert_eq!(l.label(l.ticks[0]), "1");
        assert_eq!(fmt_axis_number(20000.0), "20k");
        assert_eq!(
            common_bytes(&[rec("a", "b", "c", 8, 2, 1), rec("a", "b", "c", 4, 2, 1)]),
            Some(4)
        );
        assert_eq!(receivers(&rec("a", "b", "c", 8, 9, 3)), 8);
        let line = |label: &str, ys: &[f64]| Series {
            label: label.into(),
            color: BLACK,
            shape: 0,
            dashed: false,
            in_legend: true,
            points: ys.iter().enumerate().map(|(i, y)| (i as f64, *y)).collect(),
        };
        let series = [
            line("naive", &[2.0, 4.0]),
            line("epoll", &[2.01, 4.0]),
            line("udp", &[3.0, 4.0]),
        ];
        assert_eq!(hidden_under(&series, 0), Some("epoll"));
        assert_eq!(hidden_under(&series, 1), None);
        let mut fell_back = rec("fanout", "boad-udp", "bcast", 4, 9, 3);
        fell_back.note = Some("asked for kernel, ran on udp".into());
        assert_eq!(who(&fell_back), "boad-udp (asked kernel)");
        fell_back.note = Some("lost datagram".into());
        assert_eq!(who(&fell_back), "boad-udp");
    }
}
