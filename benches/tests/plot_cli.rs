//! `boad-plot` as a user runs it. Its font: a missing font file or a file that is not a font fails
//! the run with a message that says what to install, the report is still written and says why
//! there are no figures; with the default font the figures are drawn. Each case runs in a fresh
//! process, where the font is not registered yet (a process registers one font for good). Its
//! `--expect FILE`: bounds on the summary's numbers that hold pass, one that does not hold fails
//! the run and says so in the report, a malformed file fails naming its line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use boad_benches::plot::{DEFAULT_FONT, FONT_PACKAGE};
use boad_benches::record::Record;

/// A directory removed when dropped (also when the test fails).
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl std::ops::Deref for Dir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

/// A fresh directory with a results file of one latency record (enough for one figure).
fn setup(name: &str) -> (Dir, PathBuf) {
    let dir = std::env::temp_dir().join(format!("boad-plot-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let dir = Dir(dir);
    let rec = Record {
        bench: "latency".into(),
        implementation: "boad-udp".into(),
        coll: "bcast".into(),
        bytes: 4,
        ranks: 2,
        hosts: 1,
        iters: 10,
        avg_us: Some(12.0),
        p50_us: Some(11.0),
        p99_us: Some(20.0),
        ..Default::default()
    };
    let results = dir.join("results.jsonl");
    let line = serde_json::to_string(&rec).expect("record to JSON");
    std::fs::write(&results, format!("{line}\n")).expect("write results");
    (dir, results)
}

fn plot(results: &Path, out: &Path, font: &Path) -> Output {
    plot_with(results, out, font, &[])
}

fn plot_with(results: &Path, out: &Path, font: &Path, more: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_boad-plot"))
        .arg("--results")
        .arg(results)
        .arg("--out")
        .arg(out)
        .arg("--font")
        .arg(font)
        .args(more)
        .output()
        .expect("run boad-plot")
}

fn pngs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read out dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_missing_font_fails_and_names_the_package() {
    let (dir, results) = setup("missing");
    let out_dir = dir.join("out");
    let font = dir.join("no-such-font.ttf");
    let out = plot(&results, &out_dir, &font);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot read the font {}", font.display()))
            && stderr.contains(&format!("apt-get install {FONT_PACKAGE}")),
        "{stderr}"
    );
    assert!(pngs(&out_dir).is_empty(), "{:?}", pngs(&out_dir));
    let report = std::fs::read_to_string(out_dir.join("report.md")).expect("report.md written");
    assert!(
        report.contains("all figures: cannot read the font"),
        "{report}"
    );
}

#[test]
fn a_file_that_is_not_a_font_fails() {
    let (dir, results) = setup("invalid");
    let out_dir = dir.join("out");
    // A file that exists but is JSON, not TrueType.
    let out = plot(&results, &out_dir, &results);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} is not a TrueType/OpenType font",
            results.display()
        )),
        "{stderr}"
    );
    assert!(pngs(&out_dir).is_empty(), "{:?}", pngs(&out_dir));
    assert!(out_dir.join("report.md").exists());
}

#[test]
fn the_default_font_draws_the_figure() {
    let (dir, results) = setup("default");
    let out_dir = dir.join("out");
    let out = plot(&results, &out_dir, Path::new(DEFAULT_FONT));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        pngs(&out_dir),
        ["latency-vs-size-bcast-host.png"],
        "{stderr}"
    );
}

#[test]
fn expectations_are_checked_against_the_summary() {
    let (dir, results) = setup("expect");
    // A boad-shm record beside the boad-udp one: boad-shm's mean is 3 / 12 = 0.25 of boad-udp's.
    let shm = Record {
        bench: "latency".into(),
        implementation: "boad-shm".into(),
        coll: "bcast".into(),
        bytes: 4,
        ranks: 2,
        hosts: 1,
        iters: 10,
        avg_us: Some(3.0),
        ..Default::default()
    };
    let line = serde_json::to_string(&shm).expect("record to JSON");
    let text = std::fs::read_to_string(&results).expect("read results");
    std::fs::write(&results, format!("{text}{line}\n")).expect("write results");
    let key = "latency-mean-median/one-host-2-ranks/boad-shm/boad-udp";
    let expect = dir.join("expect.txt");
    let font = Path::new(DEFAULT_FONT);
    let out_dir = dir.join("out");

    std::fs::write(&expect, format!("# holds\n{key} <= 0.3\n")).expect("write expect");
    let out = plot_with(&results, &out_dir, font, &[Path::new("--expect"), &expect]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("{key}: 0.25x (75.0% lower)")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{key} <= 0.3: measured 0.2500: holds")),
        "{stdout}"
    );

    std::fs::write(&expect, format!("{key} >= 0.3\nno/such/key <= 1\n")).expect("write expect");
    let out = plot_with(&results, &out_dir, font, &[Path::new("--expect"), &expect]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("2 expectation(s) do not hold or have no data"),
        "{stderr}"
    );
    let report = std::fs::read_to_string(out_dir.join("report.md")).expect("report.md written");
    assert!(
        report.contains(&format!(
            "| 1 | `{key}` | >= 0.3 | 0.2500 | does not hold |"
        )) && report.contains("| 2 | `no/such/key` | <= 1 | no data | no data |"),
        "{report}"
    );

    std::fs::write(&expect, format!("# bad\n{key} = 0.3\n")).expect("write expect");
    let out = plot_with(&results, &out_dir, font, &[Path::new("--expect"), &expect]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:2: unknown comparison `=`", expect.display())),
        "{stderr}"
    );
}
