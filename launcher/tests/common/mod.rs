//! What the launcher's test files share: boadrun on the userspace path, its output as text.
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};

/// The boadrun under test.
pub const BOADRUN: &str = env!("CARGO_BIN_EXE_boadrun");

/// boadrun on the userspace path: these tests are about the launcher, not the kernel path (see
/// tests/kernel.rs), and must not depend on whether it can be attached.
pub fn cmd() -> Command {
    let mut c = Command::new(BOADRUN);
    c.env("BOAD_TRANSPORT", "udp");
    c
}

/// `boadrun ARGS` with stdin from /dev/null, run to its end.
pub fn boadrun(args: &[&str]) -> Output {
    cmd()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run boadrun")
}

/// Bytes as text (lossy).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The lines of `b`, sorted (ranks print in any order).
pub fn sorted_lines(b: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = text(b).lines().map(str::to_string).collect();
    v.sort();
    v
}
