//! PNG figures made from the benchmark [`Record`]s of `results.jsonl`, drawn with plotters' chart
//! API (`ChartBuilder`, `configure_mesh`, series with `.label()`/`.legend()` and
//! `configure_series_labels`), and the error type shared with [`crate::report`].
//!
//! Every figure is drawn from whatever records exist: a figure whose data is absent is skipped (with
//! the reason), never invented. When several records describe the same point (the same
//! implementation, collective, size, ranks and hosts), the one written last wins: `results.jsonl` is
//! appended to, so the last line is the newest run.
//!
//! Axes: message sizes and receiver counts are log2 axes; measured values are on a log10 axis when
//! they span more than a decade, else on a linear one from 0. The legend sits right of the plot
//! area, never over the data.
//!
//! Text needs a TrueType font, registered at run time with [`load_font`] (plotters is built without
//! fontconfig): by default DejaVu Sans from Debian's `fonts-dejavu-core`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::IntoDynElement;
use plotters::prelude::*;

use crate::record::{
    common_bytes, implementation_key, over_ssh, preferred_ranks, receivers, who, Record,
    IMPLEMENTATIONS,
};

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
    /// The expectations file (`boad-plot --expect`) cannot be read or a line of it is malformed.
    #[error("{path}:{line}: {message}")]
    Expect {
        /// The expectations file.
        path: PathBuf,
        /// The line (1-based; 0 when the file cannot be read).
        line: usize,
        /// What is wrong.
        message: String,
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
const SUBTITLE_GREY: RGBColor = RGBColor(80, 80, 80);

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
    // The `hosts` sweep (ranks started over ssh) has figures of its own; the others show only the
    // runs of one boadrun (one host or its virtual clusters).
    let (ssh, records): (Vec<Record>, Vec<Record>) = records.iter().cloned().partition(over_ssh);
    let records = records.as_slice();
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
    for coll in SIZE_COLLECTIVES {
        results.push(latency_vs_size(&ssh, coll, Placement::SshHosts, out));
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
// Colours and formatting.

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

/// Colour and marker of each series: an implementation's first series gets its own colour and
/// marker (the same in every figure); any other series the next of plotters' palette and markers.
fn styles(implementations: &[&str]) -> Vec<(RGBColor, usize)> {
    let mut used = BTreeSet::new();
    let mut spare = 0;
    implementations
        .iter()
        .map(|&name| match fixed_color(name) {
            Some(c) if used.insert(name) => (c, implementation_key(name).0),
            _ => {
                spare += 1;
                let (r, g, b) = Palette99::pick(spare + 1).rgb();
                (RGBColor(r, g, b), IMPLEMENTATIONS.len() + spare)
            }
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

/// A number for an axis or a group label: `0.5`, `20`, `1.5k`, `2M`.
fn fmt_axis_number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim_number(v / 1e6, 2))
    } else if a >= 1e3 {
        format!("{}k", trim_number(v / 1e3, 1))
    } else if a >= 1.0 || a == 0.0 {
        trim_number(v, 2)
    } else {
        // Two significant digits: 0.25, 0.005.
        let decimals = (1.0 - a.log10().floor()).clamp(2.0, 9.0) as usize;
        trim_number(v, decimals)
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

// ---------------------------------------------------------------------------------------------
// Line charts.

/// One series: an implementation's means (and p99s) by x, the last record of a point winning.
#[derive(Clone, Debug)]
struct Series {
    label: String,
    color: RGBColor,
    marker: usize,
    mean: Vec<(f64, f64)>,
    p99: Vec<(f64, f64)>,
}

/// A line chart: x is receivers or bytes (log2), y a measured value.
struct LineChart {
    file: String,
    title: String,
    subtitle: String,
    x_bytes: bool,
    x_desc: String,
    y_desc: String,
    series: Vec<Series>,
}

/// Lines from `records`: one per implementation, and per one host/cluster when both occur.
/// `y` gives the mean and, when the figure shows it, the p99.
fn lines<'a>(
    records: impl IntoIterator<Item = &'a Record>,
    x: impl Fn(&Record) -> u64,
    y: impl Fn(&Record) -> Option<(f64, Option<f64>)>,
) -> Vec<Series> {
    type Points = BTreeMap<u64, (f64, Option<f64>)>;
    let mut by: BTreeMap<((usize, String), bool), Points> = BTreeMap::new();
    for r in records {
        if let (Some(v), xv @ 1..) = (y(r), x(r)) {
            by.entry((implementation_key(&who(r)), r.hosts <= 1))
                .or_default()
                .insert(xv, v);
        }
    }
    let mixed = by.keys().any(|k| k.1) && by.keys().any(|k| !k.1);
    let names: Vec<&str> = by.keys().map(|((_, n), _)| n.as_str()).collect();
    let mut series: Vec<Series> = by
        .iter()
        .zip(styles(&names))
        .map(|(((name, one_host), points), (color, marker))| Series {
            label: match (mixed, one_host) {
                (false, _) => name.1.clone(),
                (true, true) => format!("{} (1 host)", name.1),
                (true, false) => format!("{} (cluster)", name.1),
            },
            color,
            marker,
            mean: points.iter().map(|(&x, &(m, _))| (x as f64, m)).collect(),
            p99: points
                .iter()
                .filter_map(|(&x, &(_, p))| Some((x as f64, p?)))
                .collect(),
        })
        .collect();
    // A line drawn under a later one with the same points (within 1%) says so in the legend.
    for i in 0..series.len() {
        if let Some(top) = hidden_under(&series, i) {
            series[i].label = format!("{} (under {top})", series[i].label);
        }
    }
    series
}

/// The label of a later (drawn on top) series with the same means as series `i`, within 1%.
fn hidden_under(series: &[Series], i: usize) -> Option<String> {
    let me = &series[i].mean;
    series[i + 1..]
        .iter()
        .find(|o| {
            o.mean.len() == me.len()
                && o.mean.iter().zip(me).all(|(a, b)| {
                    a.0 == b.0 && (a.1 - b.1).abs() <= 0.01 * a.1.abs().max(b.1.abs())
                })
        })
        .map(|o| o.label.clone())
}

/// The smallest and largest finite values, if any.
fn span(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((v.min(lo), v.max(hi))),
        })
}

/// The y range of measured values: whole decades (and `true`: log scale) when they span more than
/// a decade, with room so that no point sits on an edge; else linear from 0 with some headroom.
fn y_range(values: impl IntoIterator<Item = f64>) -> (Range<f64>, bool) {
    match span(values) {
        Some((lo, hi)) if lo > 0.0 && hi / lo > 10.0 => {
            let (mut a, mut b) = (
                10f64.powf(lo.log10().floor()),
                10f64.powf(hi.log10().ceil()),
            );
            if lo < a * 1.2 {
                a /= 2.0;
            }
            if hi > b / 1.2 {
                b *= 2.0;
            }
            (a..b, true)
        }
        Some((lo, hi)) => {
            let lo = lo.min(0.0);
            let hi = if hi > lo {
                hi + (hi - lo) * 0.08
            } else {
                lo + 1.0
            };
            (lo..hi, false)
        }
        None => (0.0..1.0, false),
    }
}

/// Draws a line chart into its file in `out`.
fn draw_lines(out: &Path, chart: LineChart) -> Result<Drawn, PlotError> {
    let path = out.join(&chart.file);
    let points = || {
        chart
            .series
            .iter()
            .flat_map(|s| s.mean.iter().chain(&s.p99))
    };
    let (xlo, xhi) = span(points().map(|p| p.0)).unwrap_or((1.0, 2.0));
    // Log2 axis, padded by 30% of a doubling (at least) on each side, over two doublings at least
    // (so that it has two ticks).
    let pad = 2f64
        .powf(((xhi / xlo).log2() * 0.04).max(0.3))
        .max((4.0 * xlo / xhi).sqrt());
    let x = (xlo / pad..xhi * pad).log_scale().base(2.0);
    let drawn = match y_range(points().map(|p| p.1)) {
        (y, true) => draw_lines_on(&path, &chart, x, y.log_scale()),
        (y, false) => draw_lines_on(&path, &chart, x, y),
    };
    drawn.map_err(|e| PlotError::Draw {
        path,
        message: e.to_string(),
    })?;
    Ok(Drawn::Written(Figure {
        file: chart.file,
        title: chart.title,
    }))
}

fn draw_lines_on<X, Y>(path: &Path, c: &LineChart, x: X, y: Y) -> DrawResult
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let body = root.titled(&c.title, (FAMILY, 26))?;
    let mut labels: Vec<&str> = c.series.iter().map(|s| s.label.as_str()).collect();
    let with_p99 = c.series.iter().any(|s| !s.p99.is_empty());
    if with_p99 {
        labels.push("p99 (dashed)");
    }
    let body = body.titled(&c.subtitle, (FAMILY, 16).into_font().color(&SUBTITLE_GREY))?;
    let (plot, legend_area) = body.split_horizontally(WIDTH - legend_width(&root, &labels));
    let mut chart = ChartBuilder::on(&plot)
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x, y)?;
    let x_label = |v: &f64| {
        if c.x_bytes {
            fmt_bytes(*v)
        } else {
            trim_number(*v, 0)
        }
    };
    chart
        .configure_mesh()
        .x_desc(c.x_desc.as_str())
        .y_desc(c.y_desc.as_str())
        .x_label_formatter(&x_label)
        .y_label_formatter(&|v| fmt_axis_number(*v))
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 17))
        .bold_line_style(BLACK.mix(0.15))
        .light_line_style(BLACK.mix(0.05))
        .x_max_light_lines(1)
        .y_max_light_lines(4)
        .draw()?;
    let mut legend = legend_chart(&legend_area)?;
    for s in &c.series {
        let (color, shape) = (s.color, s.marker);
        if !s.p99.is_empty() {
            let dashed = color.stroke_width(2);
            chart.draw_series(DashedLineSeries::new(s.p99.clone(), 9, 6, dashed))?;
            chart.draw_series(s.p99.iter().map(|&p| Circle::new(p, 4, dashed)))?;
        }
        chart.draw_series(LineSeries::new(s.mean.clone(), color.stroke_width(3)))?;
        chart.draw_series(
            s.mean
                .iter()
                .map(|&p| EmptyElement::at(p) + Polygon::new(marker(shape), color.filled())),
        )?;
        legend_entry(&mut legend, &s.label, move |(x, y)| {
            EmptyElement::at((x + 14, y))
                + PathElement::new(vec![(-14, 0), (14, 0)], color.stroke_width(3))
                + Polygon::new(marker(shape), color.filled())
        })?;
    }
    if with_p99 {
        legend_entry(&mut legend, "p99 (dashed)", |(x, y)| {
            let style = SUBTITLE_GREY.stroke_width(3);
            EmptyElement::at((x, y))
                + PathElement::new(vec![(0, 0), (8, 0)], style)
                + PathElement::new(vec![(12, 0), (20, 0)], style)
                + PathElement::new(vec![(24, 0), (28, 0)], style)
        })?;
    }
    draw_legend(&mut legend)?;
    root.present()?;
    Ok(())
}

/// A chart without axes that only holds a legend, in the strip right of the plot. (plotters
/// clamps what a chart draws to the chart's own area: a legend that must not cover the data gets
/// its own chart.) Entries are added with [`legend_entry`] and drawn by [`draw_legend`].
type LegendChart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

fn legend_chart<'a, 'b>(
    area: &'a Area<'b>,
) -> Result<LegendChart<'a, 'b>, Box<dyn std::error::Error>> {
    Ok(ChartBuilder::on(area)
        .margin_top(12)
        .build_cartesian_2d(0.0..1.0, 0.0..1.0)?)
}

/// A legend entry: `label`, with `mark` drawn left of it (at the point it is given).
fn legend_entry<'a, 'b, E, F>(legend: &mut LegendChart<'a, 'b>, label: &str, mark: F) -> DrawResult
where
    F: Fn((i32, i32)) -> E + 'a,
    E: IntoDynElement<'a, BitMapBackend<'b>, (i32, i32)>,
{
    legend
        .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
        .label(label)
        .legend(mark);
    Ok(())
}

fn draw_legend<'a, 'b: 'a>(legend: &mut LegendChart<'a, 'b>) -> DrawResult {
    legend
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .legend_area_size(36)
        .margin(6)
        .label_font((FAMILY, 15))
        .draw()?;
    Ok(())
}

/// Room for a legend of `labels` right of the plot: marker, gap and the widest label.
fn legend_width(area: &Area<'_>, labels: &[&str]) -> u32 {
    let font = TextStyle::from((FAMILY, 15).into_font());
    let widest = labels
        .iter()
        .filter_map(|l| area.estimate_text_size(l, &font).ok())
        .map(|(w, _)| w)
        .max()
        .unwrap_or(0);
    (widest + 80).clamp(180, 420)
}

/// The corners of a filled marker around (0, 0), pixels: circle, triangle, square, diamond or
/// inverted triangle by `shape`, so series that coincide still show and the legend tells them
/// apart without colour.
fn marker(shape: usize) -> Vec<(i32, i32)> {
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

// ---------------------------------------------------------------------------------------------
// The figures.

/// A chart against receivers (ranks - 1) from the records of the size most of them share, or
/// `Skipped` with `why` when there are none.
fn vs_receivers(
    rs: Vec<&Record>,
    file: String,
    why: &str,
    chart: impl FnOnce(String, u64, Vec<Series>) -> LineChart,
    y: impl Fn(&Record) -> Option<(f64, Option<f64>)>,
    out: &Path,
) -> Result<Drawn, PlotError> {
    let Some(bytes) = common_bytes(rs.iter().copied()) else {
        return Ok(Drawn::Skipped(format!("{file}: no records with {why}")));
    };
    let series = lines(
        rs.into_iter().filter(|r| r.bytes == bytes),
        |r| u64::from(receivers(r)),
        y,
    );
    draw_lines(out, chart(file, bytes, series))
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
    let chart = |file, bytes, series| LineChart {
        file,
        title: format!("{} latency vs number of receivers", capitalized(coll)),
        subtitle: format!(
            "{} messages, bench fanout; solid: mean, dashed: p99 (max over ranks)",
            fmt_bytes(bytes as f64)
        ),
        x_bytes: false,
        x_desc: "receivers (ranks - 1)".into(),
        y_desc: "latency (µs)".into(),
        series,
    };
    let why = format!("bench \"fanout\", coll \"{coll}\" and avg_us");
    vs_receivers(
        rs,
        file,
        &why,
        chart,
        |r| r.avg_us.map(|a| (a, r.p99_us)),
        out,
    )
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
    let chart = |file, bytes, series: Vec<Series>| {
        let fanouts: BTreeSet<u64> = series
            .iter()
            .flat_map(|s| s.mean.iter().map(|p| p.0 as u64))
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
        LineChart {
            file,
            title: format!("{} throughput vs fan-out", capitalized(coll)),
            subtitle,
            x_bytes: false,
            x_desc: "receivers (ranks - 1)".into(),
            y_desc: "throughput (collectives/s)".into(),
            series,
        }
    };
    let why = format!("bench \"throughput\" or \"fanout\", coll \"{coll}\" and ops_per_s");
    vs_receivers(
        rs,
        file,
        &why,
        chart,
        |r| r.ops_per_s.map(|o| (o, None)),
        out,
    )
}

/// Where the ranks of a latency-vs-size figure ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// A (virtual) cluster: `hosts > 1`.
    Cluster,
    /// One host: `hosts == 1`.
    Host,
    /// Hosts reached over ssh (the `hosts` sweep: `boadrun -H` and `mpirun` over ssh).
    SshHosts,
}

impl Placement {
    fn matches(self, r: &Record) -> bool {
        match self {
            Placement::Cluster => r.hosts > 1 && !over_ssh(r),
            Placement::Host => r.hosts <= 1 && !over_ssh(r),
            Placement::SshHosts => over_ssh(r),
        }
    }
}

/// `latency-vs-size-<coll>-cluster.png` / `-host.png` / `-ssh-hosts.png`: mean latency against message size (log-log),
/// one line per implementation, from `latency` records on 9 ranks (or the most ranks measured).
pub fn latency_vs_size(
    records: &[Record],
    coll: &str,
    placement: Placement,
    out: &Path,
) -> Result<Drawn, PlotError> {
    let (suffix, where_) = match placement {
        Placement::Cluster => ("cluster", "hosts > 1"),
        Placement::Host => ("host", "hosts == 1"),
        Placement::SshHosts => ("ssh-hosts", "launch \"ssh\""),
    };
    let file = format!("latency-vs-size-{coll}-{suffix}.png");
    let rs: Vec<&Record> = records
        .iter()
        .filter(|r| {
            r.bench == "latency" && r.coll == coll && r.avg_us.is_some() && placement.matches(r)
        })
        .collect();
    let Some(ranks) = preferred_ranks(rs.iter().copied()) else {
        return Ok(Drawn::Skipped(format!(
            "{file}: no records with bench \"latency\", coll \"{coll}\", {where_} and avg_us"
        )));
    };
    let rs: Vec<&Record> = rs.into_iter().filter(|r| r.ranks == ranks).collect();
    let hosts: BTreeSet<u32> = rs.iter().map(|r| r.hosts).collect();
    let place = match (placement, hosts.first(), hosts.last()) {
        (Placement::Host, _, _) => "one host".to_string(),
        (Placement::Cluster, Some(a), Some(b)) if a == b => format!("{a} hosts"),
        (Placement::Cluster, Some(a), Some(b)) => format!("{a}-{b} hosts"),
        (Placement::Cluster, _, _) => "a cluster".to_string(),
        (Placement::SshHosts, Some(a), Some(b)) if a == b => format!("{a} hosts over ssh"),
        (Placement::SshHosts, _, _) => "hosts over ssh".to_string(),
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
        file,
        title,
        subtitle: "bench latency; mean per rank, max over ranks; log-log".into(),
        x_bytes: true,
        x_desc: format!("size ({per}, bytes)"),
        y_desc: "latency (µs)".into(),
        series: lines(rs, |r| r.bytes, |r| r.avg_us.map(|a| (a, None))),
    };
    draw_lines(out, chart)
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
    let (file, field, value, title, y_desc): (&str, &str, Field, &str, &str) = match cost {
        RootCost::Cpu => (
            "root-cpu-vs-fanout.png",
            "cpu_us_root",
            |r| r.cpu_us_root,
            "CPU time at the root per broadcast vs receivers",
            "root CPU time per bcast (µs, user + sys)",
        ),
        RootCost::Syscalls => (
            "root-syscalls-vs-fanout.png",
            "syscalls_root",
            |r| r.syscalls_root,
            "System calls at the root per broadcast vs receivers",
            "root system calls per bcast",
        ),
    };
    let mut rs: Vec<&Record> = records
        .iter()
        .filter(|r| r.coll == "bcast" && value(r).is_some())
        .collect();
    // One sweep, not a mix: the fan-out sweep's records when there are any.
    if rs.iter().any(|r| r.bench == "fanout") {
        rs.retain(|r| r.bench == "fanout");
    }
    let chart = |file, bytes, series| LineChart {
        file,
        title: title.into(),
        subtitle: format!("{} messages", fmt_bytes(bytes as f64)),
        x_bytes: false,
        x_desc: "receivers (ranks - 1)".into(),
        y_desc: y_desc.into(),
        series,
    };
    let why = format!("coll \"bcast\" and {field}");
    vs_receivers(
        rs,
        file.into(),
        &why,
        chart,
        |r| value(r).map(|v| (v, None)),
        out,
    )
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
    for r in records.iter().filter(|r| r.bench == "app") {
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
    let names: Vec<&str> = bars.iter().map(|b| b.0 .1.as_str()).collect();
    let legend: Vec<(String, RGBColor)> = bars
        .iter()
        .zip(styles(&names))
        .map(|(((_, name), r, h), (color, _))| {
            let on = if *h <= 1 {
                "1 host".to_string()
            } else {
                format!("{h} hosts")
            };
            let label = match (ranks.len() > 1, hosts.len() > 1) {
                (true, _) => format!("{name} ({r} ranks, {on})"),
                (false, true) => format!("{name} ({on})"),
                (false, false) => name.clone(),
            };
            (label, color)
        })
        .collect();
    let title = "Applications: total time and time in collectives";
    let mut subtitle =
        "light bar: total wall time; solid bar: time inside collectives (max over ranks)"
            .to_string();
    if let (1, Some(r)) = (ranks.len(), ranks.first()) {
        subtitle = format!("{r} ranks; {subtitle}");
    }
    let path = out.join(FILE);
    let bars: Vec<BarKey> = bars.into_iter().collect();
    let drawn = (|| -> DrawResult {
        let root = BitMapBackend::new(&path, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let body = root.titled(title, (FAMILY, 26))?;
        let body = body.titled(&subtitle, (FAMILY, 16).into_font().color(&SUBTITLE_GREY))?;
        let labels: Vec<&str> = legend.iter().map(|(l, _)| l.as_str()).collect();
        let (panels, legend_area) = body.split_horizontally(WIDTH - legend_width(&root, &labels));
        for (panel, (app, groups)) in panels.split_evenly((1, apps.len())).iter().zip(&apps) {
            draw_app_panel(panel, app, groups, &bars, &legend)?;
        }
        let mut legend_chart = legend_chart(&legend_area)?;
        for (label, color) in &legend {
            let color = *color;
            legend_entry(&mut legend_chart, label, move |(x, y)| {
                EmptyElement::at((x, y))
                    + Rectangle::new([(0, -8), (28, 0)], color.mix(0.3).filled())
                    + Rectangle::new([(0, 0), (28, 8)], color.filled())
            })?;
        }
        draw_legend(&mut legend_chart)?;
        root.present()?;
        Ok(())
    })();
    drawn.map_err(|e| PlotError::Draw {
        path: path.clone(),
        message: e.to_string(),
    })?;
    Ok(Drawn::Written(Figure {
        file: FILE.into(),
        title: title.into(),
    }))
}

/// One application's panel of `app-time.png`: a group of `bars` per problem size.
fn draw_app_panel(
    panel: &Area<'_>,
    app: &str,
    groups: &BTreeMap<u64, AppGroup>,
    bars: &[BarKey],
    legend: &[(String, RGBColor)],
) -> DrawResult {
    let (_, top) = span(
        groups
            .values()
            .flat_map(|g| g.values())
            .flat_map(|&(t, c)| [Some(t), c])
            .flatten(),
    )
    .unwrap_or((0.0, 1.0));
    let n = groups.len();
    let mut chart = ChartBuilder::on(panel)
        .caption(app, (FAMILY, 20))
        .margin(10)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..(top * 1.08).max(1e-9))?;
    let sizes: Vec<u64> = groups.keys().copied().collect();
    let group_label = |v: &f64| {
        let i = v.round();
        match sizes.get(i as usize) {
            Some(s) if (v - i).abs() < 1e-6 && i >= 0.0 => {
                format!("{} vertices", fmt_axis_number(*s as f64))
            }
            _ => String::new(),
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&group_label)
        .y_label_formatter(&|v| fmt_axis_number(*v))
        .y_desc("time (s)")
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 17))
        .bold_line_style(BLACK.mix(0.15))
        .light_line_style(BLACK.mix(0.05))
        .y_max_light_lines(4)
        .draw()?;
    let width = 0.8 / bars.len().max(1) as f64;
    for (bi, (key, (_, color))) in bars.iter().zip(legend).enumerate() {
        let color = *color;
        // (left, right, total, comm) of this implementation's bar in each group that has it.
        let rects: Vec<(f64, f64, f64, Option<f64>)> = groups
            .values()
            .enumerate()
            .filter_map(|(gi, g)| {
                let &(total, comm) = g.get(key)?;
                let x0 = gi as f64 - 0.4 + (bi as f64 + 0.08) * width;
                Some((x0, x0 + width * 0.84, total, comm))
            })
            .collect();
        chart.draw_series(rects.iter().flat_map(|&(x0, x1, t, _)| {
            [
                Rectangle::new([(x0, 0.0), (x1, t)], color.mix(0.3).filled()),
                Rectangle::new([(x0, 0.0), (x1, t)], color.stroke_width(1)),
            ]
        }))?;
        chart.draw_series(rects.iter().filter_map(|&(x0, x1, _, c)| {
            Some(Rectangle::new([(x0, 0.0), (x1, c?)], color.filled()))
        }))?;
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
            // The fan-out sweep's shape: 2 to 64 receivers (and 9 ranks, the main configuration).
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
        // The `hosts` sweep's shape: boad's paths and Open MPI on 3 hosts reached over ssh.
        for (i, imp) in ["boad-hier", "boad-udp", "ompi-tcp"].iter().enumerate() {
            for coll in SIZE_COLLECTIVES {
                for e in (2..=20).step_by(2) {
                    let mut r = rec("latency", imp, coll, 1 << e, 9, 3);
                    r.launch = Some(crate::record::LAUNCH_SSH.into());
                    r.avg_us = Some((2.0 + i as f64) * (30.0 + f64::from(1u32 << e) / 50.0));
                    r.p99_us = r.avg_us.map(|a| a * 3.0);
                    v.push(r);
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

    pub(crate) fn font() {
        load_font(Path::new(DEFAULT_FONT))
            .unwrap_or_else(|e| panic!("the plot tests need a font: {e}"));
    }

    /// Every figure from the synthetic records, into a temporary directory: the expected files,
    /// each a PNG of the figure size with a drawing on it (not blank, not all ink), the
    /// implementations' colours in the plot (left) and in the legend (right), and the directory
    /// removed afterwards.
    #[test]
    fn every_figure_is_drawn_from_synthetic_records() {
        font();
        let dir = tempfile::tempdir().unwrap();
        let outcome = plot_all(&synthetic(), dir.path());
        assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
        assert!(outcome.skipped.is_empty(), "{:?}", outcome.skipped);
        let files: Vec<&str> = outcome.written.iter().map(|f| f.file.as_str()).collect();
        assert_eq!(
            files,
            [
                "bcast-latency-vs-receivers.png",
                "allreduce-latency-vs-receivers.png",
                "allreduce-throughput-vs-fanout.png",
                "reduce-throughput-vs-fanout.png",
                "latency-vs-size-bcast-cluster.png",
                "latency-vs-size-bcast-host.png",
                "latency-vs-size-reduce-cluster.png",
                "latency-vs-size-reduce-host.png",
                "latency-vs-size-allreduce-cluster.png",
                "latency-vs-size-allreduce-host.png",
                "latency-vs-size-allgather-cluster.png",
                "latency-vs-size-allgather-host.png",
                "latency-vs-size-bcast-ssh-hosts.png",
                "latency-vs-size-reduce-ssh-hosts.png",
                "latency-vs-size-allreduce-ssh-hosts.png",
                "latency-vs-size-allgather-ssh-hosts.png",
                "root-cpu-vs-fanout.png",
                "root-syscalls-vs-fanout.png",
                "app-time.png",
            ]
        );
        for f in &outcome.written {
            let path = dir.path().join(&f.file);
            let img = image::open(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", f.file))
                .to_rgb8();
            assert_eq!(img.dimensions(), (WIDTH, HEIGHT), "{}", f.file);
            let ink = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
            let share = ink as f64 / f64::from(WIDTH * HEIGHT);
            assert!(
                (0.02..0.6).contains(&share),
                "{}: {share} not white",
                f.file
            );
            // Where each implementation's own colour shows: in the plot, in the legend.
            let (mut left, mut right) = (BTreeSet::new(), BTreeSet::new());
            for (x, _, p) in img.enumerate_pixels() {
                // (Not mpich-tcp's grey, which anti-aliased black text also makes.)
                if let Some(name) = IMPLEMENTATIONS
                    .iter()
                    .find(|n| fixed_color(n).is_some_and(|c| c.0 != c.1 && [c.0, c.1, c.2] == p.0))
                {
                    if x < WIDTH / 2 {
                        left.insert(*name);
                    } else if x > WIDTH - 380 {
                        right.insert(*name);
                    }
                }
            }
            assert!(left.len() >= 3, "{}: plotted {left:?}", f.file);
            assert!(
                left.is_subset(&right),
                "{}: {left:?} vs legend {right:?}",
                f.file
            );
        }
        let path = dir.path().to_path_buf();
        dir.close().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn missing_data_skips_a_figure_without_failing() {
        font();
        let dir = tempfile::tempdir().unwrap();
        // Only one-host latency of bcast: every other figure is skipped, one is written.
        let records: Vec<Record> = synthetic()
            .into_iter()
            .filter(|r| r.bench == "latency" && r.hosts == 1 && r.coll == "bcast")
            .collect();
        let outcome = plot_all(&records, dir.path());
        assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
        let files: Vec<&str> = outcome.written.iter().map(|f| f.file.as_str()).collect();
        assert_eq!(files, ["latency-vs-size-bcast-host.png"]);
        assert!(outcome
            .skipped
            .iter()
            .any(|s| s.starts_with("app-time.png")));
        assert!(!dir.path().join("app-time.png").exists());
        let empty = plot_all(&[], dir.path());
        assert!(empty.written.is_empty() && empty.failed.is_empty());
    }

    #[test]
    fn axes_lines_and_labels() {
        // Values over more than a decade: a log axis over whole decades; else linear from 0.
        assert_eq!(y_range([20.0, 5000.0]), (10.0..10000.0, true));
        assert_eq!(y_range([1.01, 64.0]), (0.5..100.0, true));
        let (r, log) = y_range([2.0, 3.0]);
        assert!(!log && r.start == 0.0 && r.end > 3.0, "{r:?}");
        assert_eq!(y_range([]), (0.0..1.0, false));
        assert_eq!(fmt_axis_number(20000.0), "20k");
        assert_eq!(fmt_axis_number(0.005), "0.005");
        assert_eq!(fmt_axis_number(0.25), "0.25");
        assert_eq!(fmt_bytes(1048576.0), "1 MiB");
        assert_eq!(fmt_bytes(4.0), "4 B");
        assert_eq!(
            common_bytes(&[rec("a", "b", "c", 8, 2, 1), rec("a", "b", "c", 4, 2, 1)]),
            Some(4)
        );
        assert_eq!(receivers(&rec("a", "b", "c", 8, 9, 3)), 8);
        // Lines: one per implementation, the last record of a point winning; a line hidden under
        // a later one says so; one host and cluster apart when both occur.
        let point = |imp: &str, ranks: u32, hosts: u32, avg: f64| {
            let mut r = rec("fanout", imp, "bcast", 4, ranks, hosts);
            r.avg_us = Some(avg);
            r
        };
        let records = [
            point("naive", 3, 3, 2.0),
            point("naive", 5, 3, 4.0),
            point("epoll", 3, 3, 2.01),
            point("epoll", 5, 3, 4.0),
            point("boad-udp", 3, 3, 9.0),
            point("boad-udp", 3, 3, 3.0),
            point("boad-udp", 5, 1, 4.0),
        ];
        let series = lines(
            &records,
            |r| u64::from(receivers(r)),
            |r| r.avg_us.map(|a| (a, None)),
        );
        let labels: Vec<&str> = series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "boad-udp (cluster)",
                "boad-udp (1 host)",
                "naive (cluster) (under epoll (cluster))",
                "epoll (cluster)"
            ]
        );
        assert_eq!(series[0].mean, [(2.0, 3.0)]);
        // boad-udp's second line takes a spare colour and marker, not boad-udp's own.
        assert_eq!(series[0].color, RGBColor(44, 123, 182));
        assert_ne!(series[1].color, series[0].color);
        assert_ne!(series[1].marker, series[0].marker);
        let mut fell_back = rec("fanout", "boad-udp", "bcast", 4, 9, 3);
        fell_back.note = Some("asked for kernel, ran on udp".into());
        assert_eq!(who(&fell_back), "boad-udp (asked kernel)");
        fell_back.note = Some("lost datagram".into());
        assert_eq!(who(&fell_back), "boad-udp");
    }
}
