#!/usr/bin/env bash
# Installs the boad Python package (built from python/ with maturin, through pip) with numpy and
# pytest, then runs python/tests on every rank of a job: `boadrun -n 4 python -m pytest -q ...`.
#
#   python/test.sh [-n RANKS] [PYTEST ARGS...]      (RANKS defaults to 4)
#
# Environment: PYTHON (default python3); BOADRUN (default: target/debug/boadrun, built with
# `cargo build -p boadrun` — a no-op when up to date); SKIP_INSTALL=1 to test what is installed.
# Exits non-zero if any rank fails.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
ranks=4
if [ "${1:-}" = "-n" ]; then
    ranks="${2:?-n needs a number}"
    shift 2
fi

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

# From the repository root: `import boad` finds the installed package (python/python is not on sys.path).
exec "$BOADRUN" -n "$ranks" "$python" -m pytest -q python/tests "$@"
