#!/usr/bin/env bash
# The demo, from a fresh machine: builds boad and runs every collective on 9 ranks, printing which path
# ran and how long each took. Usage: scripts/demo.sh [RANKS]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
cargo build --release -p boadrun -p boad --example demo
exec target/release/boadrun -n "${1:-9}" target/release/examples/demo
