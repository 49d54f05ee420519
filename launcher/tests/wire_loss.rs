//! `--wire-loss` refuses what it cannot do, before creating anything: without `--hosts`, with a
//! share that is no percentage, and without nftables. (That it drops datagrams on the wire, and
//! that the kernel path recovers, is what the loss tests of `tests-integration` check.)

use std::process::{Command, Output};

fn boadrun(args: &[&str], path: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_boadrun"));
    cmd.args(args);
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    cmd.output().expect("run boadrun")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn wire_loss_needs_hosts() {
    let out = boadrun(&["--wire-loss", "5", "-n", "2", "/bin/true"], None);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = stderr(&out);
    assert!(err.contains("--hosts <H>"), "{err}");
}

#[test]
fn wire_loss_is_a_percentage() {
    for bad in ["0", "100", "-3", "0.001", "five"] {
        let out = boadrun(
            &["--hosts", "2", "--wire-loss", bad, "-n", "2", "/bin/true"],
            None,
        );
        assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "invalid value '{bad}' for '--wire-loss <PERCENT>'"
            )),
            "{err}"
        );
    }
}

/// Without `nft` boadrun stops before it creates a namespace (so this needs no root), saying what
/// to install.
#[test]
fn wire_loss_without_nftables_is_a_clear_error() {
    let out = boadrun(
        &["--hosts", "2", "--wire-loss", "5", "-n", "2", "/bin/true"],
        Some("/nonexistent"),
    );
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.starts_with("boadrun: --wire-loss needs nftables: cannot run `nft`")
            && err.contains("apt-get install nftables"),
        "{err}"
    );
}
