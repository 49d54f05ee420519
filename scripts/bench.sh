#!/usr/bin/env bash
# Regenerates every benchmark number and plot of docs/benchmarks.md:
#   scripts/bench.sh           full run (about 15 minutes on 2 cores) into docs/bench/
#   scripts/bench.sh --quick   a few minutes, into a new temporary directory (CI smoke test: it
#                              checks that everything runs, not the numbers)
#   --out DIR                  write results.jsonl, the PNGs and report.md into DIR instead
# Installs what it needs (Open MPI, MPICH, strace, OpenSSH, a font for the plots, the eBPF
# toolchain), builds release, runs boad-bench (all records into results.jsonl), then boad-plot
# (PNGs + report.md).
# Needs root: the kernel path, the virtual clusters and the ssh hosts (network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=()
out=docs/bench
out_set=
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=(--quick) ;;
        --out) [ $# -ge 2 ] || { echo "--out needs a directory" >&2; exit 2; }; out=$2; out_set=1; shift ;;
        *) echo "usage: scripts/bench.sh [--quick] [--out DIR]" >&2; exit 2 ;;
    esac
    shift
done
# A quick run's numbers mean nothing: by default they go to a new temporary directory.
if [ ${#quick[@]} -gt 0 ] && [ -z "$out_set" ]; then
    out=$(mktemp -d /tmp/boad-bench.XXXXXX)
fi
step() { printf '\n==> %s   (%ss)\n' "$*" "$SECONDS"; }

step "prerequisites"
[ "$(id -u)" = 0 ] || { echo "scripts/bench.sh needs root (kernel path, network namespaces)" >&2; exit 1; }
missing=()
command -v mpicc.openmpi >/dev/null || missing+=(openmpi-bin libopenmpi-dev)
command -v mpicc.mpich >/dev/null || missing+=(mpich)
command -v strace >/dev/null || missing+=(strace)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
# The `hosts` sweep's namespace hosts (ethtool comes with the eBPF toolchain below).
command -v ip >/dev/null || missing+=(iproute2)
apt_updated=
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    apt_updated=1
fi
# The `hosts` sweep's namespace hosts run an sshd each: OpenSSH, installed without starting the
# machine's own sshd.
bash scripts/install-sshd.sh ${apt_updated:+--updated}
bash scripts/install-ebpf-toolchain.sh

step "cargo build --release -p boadrun -p boad-benches --bins --examples"
cargo build --release -p boadrun
cargo build --release -p boad-benches --bins --examples

step "boad-bench ${quick[*]} --out $out/results.jsonl"
mkdir -p "$out"
rm -f "$out/results.jsonl"
status=0
target/release/boad-bench "${quick[@]}" --out "$out/results.jsonl" || status=$?
echo "$(wc -l < "$out/results.jsonl") records in $out/results.jsonl"

step "boad-plot"
if [ -x target/release/boad-plot ]; then
    target/release/boad-plot --results "$out/results.jsonl" --out "$out"
    echo "figures and report in $out"
else
    echo "target/release/boad-plot not built: skipping the plots"
fi
# A sweep that failed (a launch that crashed or timed out) fails the script, after the plots.
exit "$status"
