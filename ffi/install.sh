#!/usr/bin/env bash
# Builds the C library and the launcher and installs them under PREFIX (default /usr/local):
#   PREFIX/lib/libboad.so, PREFIX/lib/libboad.a, PREFIX/include/boad.h, PREFIX/lib/pkgconfig/boad.pc,
#   PREFIX/bin/boadrun
# so that `cc app.c $(pkg-config --cflags --libs boad)` works (for another PREFIX, add
# PREFIX/lib/pkgconfig to PKG_CONFIG_PATH and PREFIX/lib to the run-time search path, e.g.
# `-Wl,-rpath,PREFIX/lib`).
#
#   ffi/install.sh [--debug | --profile NAME] [--no-build] [PREFIX]
#     --debug         install the debug build (target/debug) instead of the release build
#     --profile NAME  install the build of cargo profile NAME (release, debug, ...)
#     --no-build      do not run cargo; install what is already built
# The target directory is $CARGO_TARGET_DIR if set, else the workspace's target/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
profile=release
build=1
prefix=/usr/local
while [ $# -gt 0 ]; do
    case "$1" in
        --debug) profile=debug ;;
        --profile) profile="${2:?--profile needs a name}"; shift ;;
        --no-build) build=0 ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
        *) prefix="$1" ;;
    esac
    shift
done

target="${CARGO_TARGET_DIR:-$root/target}"
if [ "$build" = 1 ]; then
    # The dev profile's directory is target/debug.
    cargo_profile="$profile"
    [ "$profile" = debug ] && cargo_profile=dev
    # Two builds: the library does not need the kernel path (the `kernel` feature boadrun turns on,
    # which needs the eBPF toolchain; without it boadrun is built without the kernel path).
    (cd "$root" && cargo build --profile "$cargo_profile" -p boad-ffi)
    if ! (cd "$root" && cargo build --profile "$cargo_profile" -p boadrun --bin boadrun); then
        echo "building boadrun with the kernel path failed (scripts/install-ebpf-toolchain.sh installs what it needs); building it without" >&2
        (cd "$root" && cargo build --profile "$cargo_profile" -p boadrun --bin boadrun --no-default-features)
    fi
fi
libdir="$target/$profile"
for f in libboad_ffi.so libboad_ffi.a boadrun; do
    [ -f "$libdir/$f" ] || { echo "$libdir/$f is missing (build it with: cargo build -p boad-ffi)" >&2; exit 1; }
done

version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)"
mkdir -p "$prefix/lib/pkgconfig" "$prefix/include" "$prefix/bin"
install -m 0755 "$libdir/boadrun" "$prefix/bin/boadrun"
install -m 0755 "$libdir/libboad_ffi.so" "$prefix/lib/libboad.so"
install -m 0644 "$libdir/libboad_ffi.a" "$prefix/lib/libboad.a"
install -m 0644 "$here/include/boad.h" "$prefix/include/boad.h"
# Libs.private: what a static link (pkg-config --static) needs besides libboad.a.
cat > "$prefix/lib/pkgconfig/boad.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: boad
Description: MPI-like collectives for Linux (run programs with boadrun)
Version: ${version:-0.0.0}
Libs: -L\${libdir} -lboad
Libs.private: -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
Cflags: -I\${includedir}
PC

if [ "$prefix" = /usr/local ] && command -v ldconfig >/dev/null; then
    ldconfig
fi
echo "installed boad $version ($profile) under $prefix"
