#!/usr/bin/env bash
# The demo, from a fresh clone: installs the eBPF toolchain (as root), builds boadrun and the demo,
# and runs every collective on 9 ranks, printing which path each took (kernel, hier-kernel, hier,
# shm, udp) and how long it took:
#   1. on a virtual cluster of 3 hosts (network namespaces joined by a bridge): every rank on the
#      kernel path, then the default (hierarchical: shared memory inside each host, the kernel path
#      between one leader per host) -- needs root; without it this part is skipped, and it says why;
#   2. on this host: shared memory.
# Without root (and without passwordless sudo) the eBPF toolchain cannot be installed: if it is not
# there already, boadrun is built without the kernel path, and the demo says so.
# Usage: scripts/demo.sh [RANKS]
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
say() { printf '== %s\n' "$*"; }
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
n="${1:-9}"
root=0
[ "$(id -u)" = 0 ] && root=1

# boadrun embeds the eBPF programs when it can be built with them (the `kernel` feature, on by
# default): that needs llvm-22, a pinned nightly with rust-src and bpf-linker.
features=()
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if bash scripts/install-ebpf-toolchain.sh >"$log" 2>&1; then
    kernel=1
else
    kernel=0
    features=(--no-default-features)
    say "building boadrun without the kernel path: the eBPF toolchain is missing and cannot be installed here:"
    tail -n 1 "$log" | sed 's/^/   /'
    say "(as root, scripts/install-ebpf-toolchain.sh installs it)"
fi

# boadrun's binary and the demo example (two packages: one `cargo build` per target kind).
cargo build --release "${features[@]}" -p boadrun --bin boadrun
cargo build --release -p boad --example demo
boadrun=target/release/boadrun
demo=target/release/examples/demo
[ -x "$boadrun" ] && [ -x "$demo" ] || { echo "build did not produce $boadrun and $demo" >&2; exit 1; }

if [ "$root" = 1 ] && [ "$kernel" = 1 ]; then
    say "$n ranks on a virtual cluster of 3 hosts, every rank on the kernel path (--transport kernel)"
    "$boadrun" --hosts 3 --transport kernel -n "$n" "$demo"
    echo
    say "$n ranks on a virtual cluster of 3 hosts, default (auto: shared memory in each host, kernel path between leaders)"
    "$boadrun" --hosts 3 -n "$n" "$demo"
elif [ "$root" = 1 ]; then
    say "$n ranks on a virtual cluster of 3 hosts, without the kernel path (boadrun was built without it)"
    "$boadrun" --hosts 3 -n "$n" "$demo"
else
    say "skipping the virtual cluster: it needs root (network namespaces; the kernel path also needs CAP_BPF and CAP_NET_ADMIN)"
fi
echo
say "$n ranks on this host (shared memory)"
"$boadrun" -n "$n" "$demo"
say "demo done in $((SECONDS - start)) s"
