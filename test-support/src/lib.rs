//! What boad's test suites share: a test checks its prerequisites here, and one that cannot be met
//! either fails loudly or, when the run allows skips, is recorded as skipped with its reason.
//!
//! Contract: [`require`] returns true when the prerequisite holds. When it does not:
//! - if `BOAD_ALLOW_SKIP` names a file, the test's name and the reason are appended to it (one line)
//!   and `require` returns false: the test returns at once and `scripts/test.sh` lists every skip
//!   in its final summary;
//! - otherwise the test panics, saying what it needs. A plain `cargo test` by a user who is not root
//!   thus fails the root-only tests instead of passing them silently; CI (root, everything
//!   installed) never skips.
//!
//! [`oracle`]: the expected result of every reduction op on every element type, written by hand, that
//! `boad::ops::fold`, the kernel path's eBPF folds and the multi-process worker's reference are
//! checked against.
//!
//! [`sshhosts`]: several hosts on one machine, each a network namespace running a real OpenSSH
//! server, for the tests of `boadrun --launch-agent ssh` (root only).
//!
//! [`shared_bins`]: copies of binaries that tests run as another user can execute.
#![deny(missing_docs)]

use std::io::Write;

pub mod oracle;
pub mod shared_bins;
pub mod sshhosts;

/// The variable naming the file skips are recorded in (skips are allowed only when it is set).
pub const ENV_ALLOW_SKIP: &str = "BOAD_ALLOW_SKIP";

/// What a test may need.
#[derive(Clone, Copy, Debug)]
pub enum Need {
    /// Root (network namespaces, eBPF, acting as another user).
    Root,
    /// A program on `PATH`.
    Program(&'static str),
}

impl Need {
    fn met(self) -> bool {
        match self {
            Need::Root => {
                // SAFETY: geteuid has no preconditions.
                let uid = unsafe { libc::geteuid() };
                uid == 0
            }
            Need::Program(p) => find_program(p).is_some(),
        }
    }

    fn describe(self) -> String {
        match self {
            Need::Root => "root (network namespaces, eBPF, other users)".into(),
            Need::Program(p) => format!("the program `{p}` on PATH"),
        }
    }
}

/// Where `program` is on `PATH`: the first executable file of that name.
pub fn find_program(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|f| {
            std::fs::metadata(f).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
        })
}

/// The first of `needs` that is not met, described (see [`require`]).
pub fn unmet_need(needs: &[Need]) -> Option<String> {
    needs.iter().find(|n| !n.met()).map(|n| n.describe())
}

/// Whether every one of `needs` is met (see the module docs for what happens when one is not).
pub fn require(needs: &[Need]) -> bool {
    match unmet_need(needs) {
        None => true,
        Some(missing) => unmet(&missing),
    }
}

/// Like [`require`], for a prerequisite the test checks itself: `holds` is whether it does, `what`
/// says what the test needs (e.g. "a boadrun built with the eBPF programs").
pub fn require_that(holds: bool, what: &str) -> bool {
    holds || unmet(what)
}

/// A prerequisite is not met: records the skip and returns false when skips are allowed, else
/// panics.
fn unmet(what: &str) -> bool {
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let why = format!("needs {what}");
    match std::env::var_os(ENV_ALLOW_SKIP) {
        Some(file) if !file.is_empty() => {
            let line = format!("{test}: {why}\n");
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&file)
                .and_then(|mut f| f.write_all(line.as_bytes()));
            if let Err(e) = written {
                panic!("{test} {why}, and the skip cannot be recorded in {file:?}: {e}");
            }
            eprintln!("SKIPPED {test}: {why}");
            false
        }
        _ => panic!(
            "{test} {why}: run it where that holds (CI runs as root with everything installed), or \
             set {ENV_ALLOW_SKIP}=FILE to skip it and record the skip (scripts/test.sh does when \
             not root, and lists the skips at the end)"
        ),
    }
}

/// [`require`] of root alone.
pub fn require_root() -> bool {
    require(&[Need::Root])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn met_needs_pass() {
        assert!(require(&[Need::Program("sh")]));
        assert!(require_that(true, "nothing"));
    }

    /// The tests that read or set `BOAD_ALLOW_SKIP` run one at a time.
    static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    #[should_panic(expected = "needs a thing that is not here")]
    fn an_unmet_need_fails_when_skips_are_not_allowed() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let saved = std::env::var_os(ENV_ALLOW_SKIP);
        std::env::remove_var(ENV_ALLOW_SKIP);
        let r = std::panic::catch_unwind(|| require_that(false, "a thing that is not here"));
        if let Some(v) = saved {
            std::env::set_var(ENV_ALLOW_SKIP, v);
        }
        if let Err(panic) = r {
            std::panic::resume_unwind(panic);
        }
    }

    #[test]
    fn an_unmet_need_is_recorded_when_skips_are_allowed() {
        // The recording path, on a need that cannot hold.
        let dir = std::env::temp_dir().join(format!("boad-skip-test-{}", std::process::id()));
        let file = dir.with_extension("log");
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY (not unsafe in edition 2021): tests of this crate run in threads of one process;
        // no other test reads this variable.
        std::env::set_var(ENV_ALLOW_SKIP, &file);
        let ran = require(&[Need::Program("no-such-program-boad")]);
        std::env::remove_var(ENV_ALLOW_SKIP);
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let _ = std::fs::remove_file(&file);
        assert!(!ran);
        assert!(
            text.contains("an_unmet_need_is_recorded_when_skips_are_allowed")
                && text.contains("no-such-program-boad"),
            "{text}"
        );
    }
}
