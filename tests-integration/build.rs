//! Build script of `boad-tests`: extracts the Rust program of the README (its first ```` ```rust ````
//! block) into `OUT_DIR/readme.rs`, which the `boad-readme` binary includes, so that the README's
//! program is compiled with the workspace and `scripts/check-readme.sh` runs it under boadrun. An edit
//! of the README that breaks the program breaks the build.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let readme = manifest.join("../README.md");
    println!("cargo:rerun-if-changed={}", readme.display());
    let text = match std::fs::read_to_string(&readme) {
        Ok(t) => t,
        Err(e) => fail(&format!("cannot read {}: {e}", readme.display())),
    };
    let mut lines = text.lines().skip_while(|l| l.trim_end() != "```rust");
    if lines.next().is_none() {
        fail("README.md has no ```rust block");
    }
    let mut program = String::new();
    let mut closed = false;
    for l in lines {
        if l.trim_end() == "```" {
            closed = true;
            break;
        }
        program.push_str(l);
        program.push('\n');
    }
    if !closed {
        fail("README.md's ```rust block is not closed");
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("readme.rs");
    if let Err(e) = std::fs::write(&out, program) {
        fail(&format!("cannot write {}: {e}", out.display()));
    }
}

fn fail(why: &str) -> ! {
    eprintln!("error: {why}");
    std::process::exit(1);
}
