//! Builds each C example in `ffi/examples` against the library cargo just built (installed with
//! `ffi/install.sh` into a temporary prefix, linked through its pkg-config file) and runs it with
//! `boadrun -n 4` (`-n 3` for `fail_fast`). The examples check their own results and exit non-zero
//! on a wrong one.
//!
//! Needs a C compiler (`cc`) and pkg-config. boadrun and the library are built first with
//! `cargo build -p boadrun -p boad-ffi` in the test's profile (quick when they are up to date), so
//! `cargo test -p boad-ffi` is enough.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Where things are, once per test process.
struct Setup {
    /// The install prefix (kept alive for the process).
    prefix: tempfile::TempDir,
    boadrun: PathBuf,
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `<target>/<profile>`: this test binary is `<target>/<profile>/deps/c_examples-<hash>`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary is in <target>/<profile>/deps")
        .to_path_buf()
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let profile_dir = profile_dir();
        let target = profile_dir.parent().expect("target dir").to_path_buf();
        let profile = profile_dir
            .file_name()
            .and_then(|p| p.to_str())
            .expect("profile name");
        let workspace = crate_dir().parent().expect("workspace").to_path_buf();

        // The launcher, up to date with the core this library was built from, in the same profile
        // (the dev profile's directory is `debug`), and the library itself: `cargo test` builds it
        // under deps/ only, and ffi/install.sh takes it from <target>/<profile>.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let cargo_profile = if profile == "debug" { "dev" } else { profile };
        let st = Command::new(&cargo)
            .args([
                "build",
                "--quiet",
                "--profile",
                cargo_profile,
                "-p",
                "boadrun",
                "-p",
                "boad-ffi",
            ])
            .current_dir(&workspace)
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("run cargo build -p boadrun -p boad-ffi");
        assert!(st.success(), "cargo build -p boadrun -p boad-ffi failed");
        let boadrun = profile_dir.join("boadrun");
        assert!(boadrun.is_file(), "{} is missing", boadrun.display());

        let prefix = tempfile::tempdir().expect("temp dir");
        let st = Command::new("bash")
            .arg(crate_dir().join("install.sh"))
            .args(["--no-build", "--profile", profile])
            .arg(prefix.path())
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("run ffi/install.sh");
        assert!(st.success(), "ffi/install.sh failed");
        Setup { prefix, boadrun }
    })
}

/// `pkg-config --cflags --libs boad` for the temporary prefix (split into arguments).
fn pkg_config(prefix: &Path) -> Vec<String> {
    let out = Command::new("pkg-config")
        .args(["--cflags", "--libs", "boad"])
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .output()
        .expect("run pkg-config (is it installed?)");
    assert!(
        out.status.success(),
        "pkg-config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Compiles `ffi/examples/<name>.c` and returns the executable.
fn compile(name: &str) -> PathBuf {
    let s = setup();
    let prefix = s.prefix.path();
    let exe = prefix.join(name);
    let out = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1"])
        .arg(crate_dir().join("examples").join(format!("{name}.c")))
        .args(pkg_config(prefix))
        .arg(format!("-Wl,-rpath,{}", prefix.join("lib").display()))
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run cc (is a C compiler installed?)");
    assert!(
        out.status.success(),
        "compiling {name}.c failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Runs `boadrun -n <ranks> <exe>`, failing the test on a non-zero exit or after RUN_TIMEOUT.
fn run(exe: &Path, ranks: usize) -> String {
    let s = setup();
    let dir = tempfile::tempdir().expect("temp dir");
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(&s.boadrun)
        .args(["--tag-output", "--timeout-ms", "20000", "-n"])
        .arg(ranks.to_string())
        .arg(exe)
        .stdout(Stdio::from(
            std::fs::File::create(&out_path).expect("stdout file"),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(&err_path).expect("stderr file"),
        ))
        .spawn()
        .expect("start boadrun");
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for boadrun") {
            break Some(st);
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    match status {
        Some(st) if st.success() => out,
        Some(st) => panic!(
            "boadrun -n {ranks} {} exited with {st}\nstdout:\n{out}\nstderr:\n{err}",
            exe.display()
        ),
        None => panic!(
            "boadrun -n {ranks} {} timed out\nstdout:\n{out}\nstderr:\n{err}",
            exe.display()
        ),
    }
}

fn check(name: &str, ranks: usize, each_rank_prints: &str) -> String {
    let out = run(&compile(name), ranks);
    for rank in 0..ranks {
        assert!(
            out.lines()
                .any(|l| l.contains(&format!("rank {rank}/{ranks}: {each_rank_prints}"))),
            "rank {rank} did not report success:\n{out}"
        );
    }
    out
}

#[test]
fn allreduce_c() {
    check("allreduce", 4, "allreduce ok");
}

#[test]
fn bcast_c() {
    check("bcast", 4, "bcast ok");
}

#[test]
fn collectives_c() {
    check(
        "collectives",
        4,
        "reduce, allgather, barrier and error cases ok",
    );
}

/// Rank 1 passes NULL to boad_allreduce, ranks 0 and 2 valid buffers: they get an error at once
/// (the example checks it came in under a quarter of BOAD_TIMEOUT_MS), then the job goes on.
#[test]
fn null_buffer_on_one_rank_fails_the_others_fast() {
    let out = check("fail_fast", 3, "failed fast, then went on");
    assert!(
        out.contains("rank 1: BOAD_ERR_NULL_POINTER"),
        "rank 1 did not get BOAD_ERR_NULL_POINTER:\n{out}"
    );
    for rank in [0, 2] {
        assert!(
            out.contains(&format!("rank {rank}: BOAD_ERR_ABORTED")),
            "rank {rank} did not get BOAD_ERR_ABORTED:\n{out}"
        );
    }
}
