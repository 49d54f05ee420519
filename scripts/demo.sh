#!/usr/bin/env bash
# The demo, from a fresh machine: installs the eBPF toolchain, builds boad, and runs every collective
# on 9 ranks, printing which path each took (kernel, hier-kernel, hier, shm, udp) and how long it took.
#   1. on a virtual cluster of 3 hosts (network namespaces joined by a bridge): every rank on the
#      kernel path, then the default (hierarchical: shared memory inside each host, the kernel path
#      between one leader per host) (needs root; without it this part is skipped, with the reason);
#   2. on this host: shared memory.
# Usage: scripts/demo.sh [RANKS]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
bash scripts/install-ebpf-toolchain.sh >/dev/null
cargo build --release -p boadrun -p boad --example demo
n="${1:-9}"
if [ "$(id -u)" = 0 ]; then
    echo "== $n ranks on a virtual cluster of 3 hosts, every rank on the kernel path (--transport kernel)"
    BOAD_STATS="${BOAD_STATS:-0}" target/release/boadrun --hosts 3 --transport kernel -n "$n" target/release/examples/demo
    echo
    echo "== $n ranks on a virtual cluster of 3 hosts, default (auto: shared memory in each host, kernel path between leaders)"
    BOAD_STATS="${BOAD_STATS:-0}" target/release/boadrun --hosts 3 -n "$n" target/release/examples/demo
else
    echo "== skipping the virtual cluster: it needs root (network namespaces, eBPF)"
fi
echo
echo "== $n ranks on this host (shared memory)"
exec target/release/boadrun -n "$n" target/release/examples/demo
