#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then runs formatting and lint
# checks and every test. `.ci/run` calls exactly this. Usage: scripts/test.sh
# Needs root for the kernel-path, virtual-cluster and other-user tests. As root (CI) a test that
# cannot run fails; as another user those tests are skipped, and the end of the run lists every
# skip with its reason (boad-test-support, BOAD_ALLOW_SKIP).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s   (%ss)\n' "$*" "$SECONDS"; }

# What was here before the tests: at the end nothing new may be left (scripts/check-leftovers.sh).
leftovers="$(mktemp)"
skips="$(mktemp)"
benchout="$(mktemp -d)"
trap 'rm -f "$leftovers" "$skips"; rm -rf "$benchout"' EXIT
if [ "$(id -u)" != 0 ]; then
    # Not root: root-only tests record their skips here instead of failing.
    export BOAD_ALLOW_SKIP="$skips"
fi
bash scripts/check-leftovers.sh snapshot "$leftovers"

step "prerequisites"
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
missing=()
command -v cc >/dev/null || missing+=(gcc)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v python3 >/dev/null || missing+=(python3 python3-pip python3-venv)
# boad-plot's tests draw PNGs with this font (no fontconfig).
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
# benches' osu_smoke test checks the system-call counts only where strace exists.
command -v strace >/dev/null || missing+=(strace)
# The loss tests on virtual clusters drop datagrams on the wire (boadrun --wire-loss: nftables);
# they need root, like every virtual-cluster test.
[ "$(id -u)" != 0 ] || command -v nft >/dev/null || missing+=(nftables)
# The direct-launch tests under MPICH's mpiexec (tests-integration/tests/hydra.rs) and the README's
# commands for it: mpiexec.hydra.
command -v mpiexec.hydra >/dev/null || missing+=(mpich)
# Virtual clusters and the ssh hosts fixture: iproute2 (ethtool comes with the eBPF toolchain below).
[ "$(id -u)" != 0 ] || command -v ip >/dev/null || missing+=(iproute2)
apt_updated=
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { echo "missing ${missing[*]}: install them (apt-get install ${missing[*]})" >&2; exit 1; }
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    apt_updated=1
fi
# The ssh hosts fixture (boad-test-support's sshhosts: a real sshd in each namespace, root only),
# installed without starting the machine's own sshd.
bash scripts/install-sshd.sh ${apt_updated:+--updated}
# Slurm and munge for the direct-launch tests under srun (tests-integration/tests/slurm.rs, root
# only), installed without starting the machine's own munged, slurmctld or slurmd.
bash scripts/install-slurm.sh ${apt_updated:+--updated}
# boadrun embeds the eBPF programs: llvm-22, the pinned nightly with rust-src, bpf-linker.
bash scripts/install-ebpf-toolchain.sh

step "cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path collectives-ebpf/Cargo.toml -- --check
cargo fmt --manifest-path tests-privileged/Cargo.toml -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "C header is the one cbindgen generates"
bash ffi/gen-header.sh --check

# Release builds: the multi-process tests run many ranks on few cores, and one profile is built once.
# This runs the core's tests, boadrun's (with the kernel path), the multi-process matrices over UDP,
# shared memory and the kernel path (on lo and on virtual clusters), and the C examples.
step "cargo test --release --workspace"
cargo test --release --workspace

# The decoders and the multi-process jobs once more with overflow checks and debug assertions on
# (the `checked` profile): a release build would wrap silently where a hostile datagram overflows.
step "library tests with overflow checks (checked profile)"
cargo test --profile checked -p boad --lib
step "multi-process tests with overflow checks (checked profile; a subset)"
cargo test --profile checked -p boad-tests --test multirank -- --exact \
    hostile_datagrams_are_refused_during_collectives foreign_datagrams_are_ignored loss_20_percent \
    mismatched_calls_are_errors_on_every_rank matrix_4_ranks shm_matrix_4_ranks \
    kernel_matrix_on_lo_4_ranks kernel_random_cases_with_20_percent_loss_on_a_virtual_cluster

step "fuzz targets (scripts/fuzz.sh, 20 s each)"
bash scripts/fuzz.sh 20

step "eBPF programs in network namespaces (tests-privileged)"
(cd tests-privileged && cargo clippy --all-targets -- -D warnings && cargo test --release)

# The whole suite on shared memory; the collectives' tests over UDP, the kernel path, a virtual
# cluster of 2 hosts and 2 hosts through boadrun -H's agents (each run checks that the collectives
# took its path; about 50 s more than shm alone). Not root: the kernel and cluster runs are
# recorded as skipped.
step "Python: pip install ./python, then pytest on 4 ranks on shm, udp, kernel, 2 virtual hosts and 2 hosts through agents"
BOADRUN=target/release/boadrun bash python/test.sh -n 4
# The README as a user runs it: every command block (C, Python, Rust programs included).
step "README: every command and program (scripts/check-readme.sh)"
bash scripts/check-readme.sh

# The benchmarks run (every sweep, tiny sizes, MPI included), not their numbers: docs/benchmarks.md.
step "benchmark smoke test: scripts/bench.sh --quick"
if [ "$(id -u)" = 0 ]; then
    bash scripts/bench.sh --quick --out "$benchout"
    rm -rf "$benchout"
else
    echo "skipped: scripts/bench.sh needs root" | tee -a "$skips"
fi
step "nothing left behind"
bash scripts/check-leftovers.sh check "$leftovers"
if [ -s "$skips" ]; then
    step "SKIPPED (not root): $(wc -l < "$skips") tests did not run"
    sed 's/^/  /' "$skips"
fi
step "done"
