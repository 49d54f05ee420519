#!/usr/bin/env bash
# Regenerates ffi/include/boad.h from ffi/src/lib.rs with a pinned cbindgen (installed with
# `cargo install` if missing or of another version).
#
#   ffi/gen-header.sh           rewrite the header
#   ffi/gen-header.sh --check   exit 1 (and show the diff) if the committed header is out of date
set -euo pipefail

CBINDGEN_VERSION=0.29.4
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
header="$here/include/boad.h"

check=0
case "${1:-}" in
    --check) check=1 ;;
    "") ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

cbindgen="${CBINDGEN:-cbindgen}"
if ! "$cbindgen" --version 2>/dev/null | grep -qx "cbindgen $CBINDGEN_VERSION"; then
    echo "installing cbindgen $CBINDGEN_VERSION..." >&2
    cargo install cbindgen --version "=$CBINDGEN_VERSION" --locked --quiet
    cbindgen="$(command -v cbindgen || echo "${CARGO_HOME:-$HOME/.cargo}/bin/cbindgen")"
fi

tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
# --quiet: the argument aliases renamed in cbindgen.toml (DTypeArg, ...) draw harmless warnings.
(cd "$here" && "$cbindgen" --quiet --config cbindgen.toml --crate boad-ffi --output "$tmp")

if [ "$check" = 1 ]; then
    if ! diff -u "$header" "$tmp"; then
        echo "ffi/include/boad.h is out of date: run ffi/gen-header.sh and commit the result" >&2
        exit 1
    fi
    echo "ffi/include/boad.h is up to date"
else
    cp "$tmp" "$header"
    echo "wrote $header"
fi
