#!/usr/bin/env bash
# Installs the boad Python package (built from python/ with maturin, through pip) with numpy and
# pytest, then runs python/tests on every rank of a job (`boadrun -n 4 python -m pytest ...`), on
# every path a job can take:
#
#   python/test.sh [-n RANKS] [--paths LIST] [PYTEST ARGS...]      (RANKS defaults to 4)
#
# LIST is a comma-separated list of (default: all of them)
#   shm     one host, shared memory (boadrun's default there): the whole suite;
#   udp     `--transport udp`: the collectives' tests (SUBSET below);
#   kernel  `--transport kernel`, every rank on the kernel path where a call fits: SUBSET;
#   hier    `--hosts 2` (a virtual cluster): shared memory inside each host, the kernel path between
#           the two host leaders where a call fits: SUBSET;
#   hosts   `-H localhost:A,127.0.0.1:B --transport shm` (two hosts through boadrun's agents, as a
#           job across machines runs; no ssh): shared memory inside each, UDP between the leaders:
#           SUBSET.
# Each run tells the tests which path the collectives must report (BOAD_TEST_PATH; see
# python/tests/conftest.py). kernel and hier need root and a boadrun built with the eBPF programs:
# as another user they fail, or with BOAD_ALLOW_SKIP=FILE set are recorded in FILE as skipped (as a
# skipped pytest test is: without BOAD_ALLOW_SKIP a skip fails the run; -rs lists them).
#
# Environment: PYTHON (default python3); BOADRUN (default: target/debug/boadrun, built with
# `cargo build -p boadrun` — a no-op when up to date); SKIP_INSTALL=1 to test what is installed.
# Exits non-zero if any rank of any run fails.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
ranks=4
paths="shm,udp,kernel,hier,hosts"
while [ $# -gt 0 ]; do
    case "$1" in
        -n) ranks="${2:?-n needs a number}"; shift 2 ;;
        --paths) paths="${2:?--paths needs a list}"; shift 2 ;;
        *) break ;;
    esac
done
# The tests of the collectives themselves, every op x dtype included: what the other paths run.
SUBSET="path or test_bcast or test_reduce or test_allreduce or test_allgather or test_barrier or rejected_argument"

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    "$python" -m pip install --quiet --disable-pip-version-check numpy pytest
    # --force-reinstall: the version does not change between builds of the working tree.
    "$python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./python
fi

if [ -z "${BOADRUN:-}" ]; then
    target="${CARGO_TARGET_DIR:-$root/target}"
    if command -v cargo >/dev/null; then
        cargo build --quiet -p boadrun
        BOADRUN="$target/debug/boadrun"
    elif [ -x "$target/release/boadrun" ]; then
        BOADRUN="$target/release/boadrun"
    else
        BOADRUN="$target/debug/boadrun"
    fi
fi
[ -x "$BOADRUN" ] || { echo "boadrun not found at $BOADRUN (cargo build -p boadrun)" >&2; exit 1; }

# Runs pytest on every rank: run NAME EXPECTED_PATH "BOADRUN ARGS" [PYTEST ARGS...]
run() {
    local name="$1" expect="$2" launcher="$3"
    shift 3
    printf '\n--- python tests on %s (%s -n %s; collectives must report %s)\n' \
        "$name" "$launcher" "$ranks" "$expect"
    local start=$SECONDS
    # From the repository root: `import boad` finds the installed package (python/python is not on
    # sys.path). BOAD_TRANSPORT is boadrun's to set (--transport).
    # shellcheck disable=SC2086
    env -u BOAD_TRANSPORT BOAD_TEST_PATH="$expect" BOAD_TEST_HOSTS="${hosts:-1}" \
        "$BOADRUN" $launcher -n "$ranks" "$python" -m pytest -q -rs python/tests "$@"
    printf -- '--- python tests on %s: passed in %ss\n' "$name" "$((SECONDS - start))"
}

# A path that needs root: true if it can run, false if skipped (recorded), exits if neither.
needs_root() {
    [ "$(id -u)" = 0 ] && return 0
    if [ -n "${BOAD_ALLOW_SKIP:-}" ]; then
        echo "python/test.sh --paths $1: needs root (eBPF programs, network namespaces)" >> "$BOAD_ALLOW_SKIP"
        echo "python tests on $1: SKIPPED (needs root; recorded in $BOAD_ALLOW_SKIP)"
        return 1
    fi
    echo "python/test.sh: the $1 path needs root (set BOAD_ALLOW_SKIP=FILE to skip it and record the skip)" >&2
    exit 1
}

IFS=, read -ra wanted <<< "$paths"
for p in "${wanted[@]}"; do
    hosts=1
    case "$p" in
        shm) run shm shm "--transport auto" "$@" ;;
        udp) run udp udp "--transport udp" -k "$SUBSET" "$@" ;;
        kernel) if needs_root kernel; then run kernel kernel "--transport kernel" -k "$SUBSET" "$@"; fi ;;
        hier) if needs_root hier; then hosts=2; run hier hier-kernel "--hosts 2 --transport auto" -k "$SUBSET" "$@"; fi ;;
        hosts)
            [ "$ranks" -ge 2 ] || { echo "python/test.sh: the hosts path needs -n 2 or more" >&2; exit 2; }
            hosts=2
            run hosts hier "-H localhost:$(((ranks + 1) / 2)),127.0.0.1:$((ranks / 2)) --transport shm" -k "$SUBSET" "$@" ;;
        *) echo "python/test.sh: unknown path $p (shm, udp, kernel, hier, hosts)" >&2; exit 2 ;;
    esac
done
