#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then runs formatting and lint
# checks and every test. `.ci/run` calls exactly this. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# Release builds: the multi-process tests run many ranks on few cores, and one profile is built once.
step "cargo test --release --workspace"
cargo test --release --workspace

# The kernel path: eBPF toolchain (llvm-22, pinned nightly, bpf-linker), the eBPF crate, the loader
# (feature `kernel`) and the privileged tests (real XDP/TC programs in network namespaces; needs root).
step "kernel path: toolchain, eBPF programs, privileged tests"
bash scripts/install-ebpf-toolchain.sh
cargo fmt --manifest-path collectives-ebpf/Cargo.toml -- --check
cargo fmt --manifest-path tests-privileged/Cargo.toml -- --check
cargo clippy -p boad --features kernel --all-targets -- -D warnings
(cd tests-privileged && cargo clippy --all-targets -- -D warnings && cargo test)
