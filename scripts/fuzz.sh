#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (cargo-fuzz, libFuzzer with AddressSanitizer, overflow checks and
# debug assertions on) for SECONDS_PER_TARGET seconds each (default 20), starting from the seeds
# in fuzz/seeds/<target> in a fresh corpus; fails on the first crash, leak or timeout (the input
# is kept in fuzz/artifacts/<target>/ and printed).
# Installs what it needs when missing: the pinned nightly (collectives-ebpf/rust-toolchain.toml),
# cargo-fuzz, a C++ compiler (libFuzzer is C++).
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-20}"
[[ "$secs" =~ ^[0-9]+$ ]] || { echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET]" >&2; exit 2; }

toolchain="$(sed -n 's/^channel *= *"\(.*\)"/\1/p' collectives-ebpf/rust-toolchain.toml)"
[ -n "$toolchain" ] || { echo "no channel in collectives-ebpf/rust-toolchain.toml" >&2; exit 1; }
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
rustup run "$toolchain" rustc --version >/dev/null 2>&1 ||
    rustup toolchain install "$toolchain" --profile minimal
if ! command -v c++ >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "missing a C++ compiler: apt-get install g++" >&2; exit 1; }
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++
fi
# cargo-fuzz itself builds with the stable toolchain.
cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2

# `cargo fuzz SUBCOMMAND` on fuzz/ (its options before the target's, which follow `--`).
fuzz() {
    local sub="$1"
    shift
    cargo "+$toolchain" fuzz "$sub" --fuzz-dir fuzz "$@"
}
# One build of every target (-a: overflow checks and debug assertions, on an optimised build).
fuzz build -a
corpora="$(mktemp -d)"
trap 'rm -rf "$corpora"' EXIT
for target in $(fuzz list); do
    corpus="$corpora/$target"
    mkdir -p "$corpus"
    if [ -d "fuzz/seeds/$target" ]; then
        cp fuzz/seeds/"$target"/* "$corpus"/
    fi
    echo "==> fuzz $target for ${secs}s"
    # -rss_limit_mb: a decoder that lets one input allocate gigabytes is a crash too.
    fuzz run -a "$target" "$corpus" -- -max_total_time="$secs" -rss_limit_mb=1024 \
        -max_len=4096 -timeout=10 -print_final_stats=1
done
echo "fuzz: every target ran ${secs}s without a crash"
