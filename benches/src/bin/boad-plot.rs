//! `boad-plot --results FILE.jsonl --out DIR [--expect FILE]`: the PNG figures and `report.md`
//! made from the benchmark records (see `boad_benches::plot` and `boad_benches::report`), and the
//! report's summary of measured ratios on stdout.
//!
//! A figure without data is skipped with a note on stderr; an unreadable results file, a missing
//! font or a figure that fails to draw makes the exit status non-zero (the report is still written
//! unless the results or the expectations cannot be read). With `--expect FILE`, each bound of the file is checked
//! against the summary, in the report and on stdout, and a bound that does not hold or has no data
//! makes the exit status non-zero too.

use std::path::PathBuf;
use std::process::ExitCode;

use boad_benches::plot::{self, Outcome, PlotError, DEFAULT_FONT};
use boad_benches::report;
use clap::Parser;

/// Plots and a markdown report from boad's benchmark records (results.jsonl).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// JSON-lines file of benchmark records.
    #[arg(long, value_name = "FILE.jsonl")]
    results: PathBuf,
    /// Directory for the PNG figures and report.md (created if absent).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// TrueType font for the figures' text.
    #[arg(long, value_name = "FILE.ttf", default_value = DEFAULT_FONT)]
    font: PathBuf,
    /// Bounds to check the summary against: one `KEY >= NUMBER` or `KEY <= NUMBER` a line, KEY a
    /// key of the report's summary (e.g. `latency-mean/bcast/boad-kernel/boad-udp <= 0.5`); `#`
    /// starts a comment line. A bound that does not hold, or has no data, fails the run.
    #[arg(long, value_name = "FILE")]
    expect: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("boad-plot: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, PlotError> {
    let records = report::load(&args.results)?;
    let expectations = match &args.expect {
        Some(file) => Some(report::parse_expectations(file)?),
        None => None,
    };
    if records.is_empty() {
        eprintln!(
            "boad-plot: note: {} holds no records: no figures, and every table says no data",
            args.results.display()
        );
    }
    std::fs::create_dir_all(&args.out).map_err(|source| PlotError::Write {
        path: args.out.clone(),
        source,
    })?;
    let font = plot::load_font(&args.font);
    let outcome = match &font {
        Ok(()) => plot::plot_all(&records, &args.out),
        Err(_) => Outcome::default(),
    };
    for why in &outcome.skipped {
        eprintln!("boad-plot: skipped {why}");
    }
    for e in &outcome.failed {
        eprintln!("boad-plot: error: {e}");
    }
    for f in &outcome.written {
        println!("wrote {}", args.out.join(&f.file).display());
    }
    let mut not_drawn = outcome.skipped.clone();
    not_drawn.extend(outcome.failed.iter().map(|e| e.to_string()));
    if let Err(e) = &font {
        not_drawn.push(format!("all figures: {e}"));
    }
    let summary = report::summary(&records);
    let checked = expectations
        .as_deref()
        .map(|e| report::check(e, &summary))
        .unwrap_or_default();
    let expect_name = args.expect.as_ref().map(|f| f.display().to_string());
    let text = report::render(
        &records,
        &args.results.display().to_string(),
        &outcome.written,
        &not_drawn,
        expect_name.as_deref().map(|f| (f, checked.as_slice())),
    );
    let report_path = args.out.join("report.md");
    report::write(&report_path, &text)?;
    println!("wrote {}", report_path.display());
    println!("\nSummary (ratio = first / second):");
    for m in &summary {
        println!("  {}: {}", m.key, m.shown());
    }
    if let Some(file) = &expect_name {
        println!("\nExpectations from {file}:");
        for c in &checked {
            println!("  {}", c.summary());
        }
    }
    font?;
    let unmet = checked.iter().filter(|c| c.holds() != Some(true)).count();
    if unmet > 0 {
        eprintln!("boad-plot: {unmet} expectation(s) do not hold or have no data");
    }
    Ok(if outcome.failed.is_empty() && unmet == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
