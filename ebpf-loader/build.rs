//! Build script of `boad-ebpf-loader`. Without the `programs` feature it does nothing. With it, it
//! builds the eBPF crate `collectives-ebpf` (pinned nightly, `-Z build-std=core`, bpf-linker;
//! install them with `scripts/install-ebpf-toolchain.sh`) through `aya-build` into
//! `OUT_DIR/boad-collectives-ebpf` (the fast path) and `OUT_DIR/boad-syscount` (the benchmarks'
//! system call counter; aya-build builds every `[[bin]]` of the crate and copies each to `OUT_DIR`
//! under its name), which the loader embeds.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "programs")]
    if let Err(e) = kernel::build() {
        // A build script reports failure by exiting non-zero; the message says what to install.
        eprintln!("error: building the eBPF programs (collectives-ebpf) failed: {e:#}");
        eprintln!("hint: install the toolchain with scripts/install-ebpf-toolchain.sh");
        std::process::exit(1);
    }
}

#[cfg(feature = "programs")]
mod kernel {
    use std::path::PathBuf;

    /// Toolchain pinned in collectives-ebpf/rust-toolchain.toml (LLVM 22, like bpf-linker).
    const TOOLCHAIN: &str = "nightly-2026-05-19";
    const PACKAGE: &str = "boad-collectives-ebpf";

    pub fn build() -> aya_build::Result<()> {
        let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
        let dir = manifest
            .parent()
            .map(|p| p.join("collectives-ebpf"))
            .ok_or_else(|| std::io::Error::other("CARGO_MANIFEST_DIR has no parent"))?;
        println!("cargo:rerun-if-changed={}", dir.join("src").display());
        println!(
            "cargo:rerun-if-changed={}",
            dir.join("Cargo.toml").display()
        );
        println!(
            "cargo:rerun-if-changed={}",
            dir.join("Cargo.lock").display()
        );
        println!(
            "cargo:rerun-if-changed={}",
            manifest.join("../common/src").display()
        );
        // aya-build runs `cargo build --package NAME` in the current directory: run it in the eBPF
        // crate's own workspace (it is not a member of ours), so its lockfile and config apply.
        std::env::set_current_dir(&dir)?;
        let root = dir.to_string_lossy().into_owned();
        aya_build::build_ebpf(
            [aya_build::Package {
                name: PACKAGE,
                root_dir: &root,
                ..Default::default()
            }],
            aya_build::Toolchain::Custom(TOOLCHAIN),
        )
    }
}
