#!/usr/bin/env bash
# Runs scripts/demo.sh as a user other than root (`nobody`) on a fresh clone of this checkout, as
# such a user would: with the Rust toolchain root installed (made visible read-only through a bind
# mount in a private mount namespace) and without rustup, sudo or the eBPF toolchain of their own.
# Checks that the demo succeeds on shared memory and says what it skips and why. Needs root (to
# become nobody and to mount); CI runs it after the root demo. Leaves nothing behind.
#   scripts/demo-unprivileged.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo-unprivileged: run as root (it runs the demo as nobody)" >&2; exit 1; }
rustup_home="$(rustup show home)"
toolchain="$(rustc --print sysroot)"
case "$toolchain" in
    "$rustup_home"/*) ;;
    *) echo "demo-unprivileged: the toolchain $toolchain is not under $rustup_home" >&2; exit 1 ;;
esac
work="$(mktemp -d /tmp/boad-demo-user.XXXXXX)"
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
mkdir "$work/rustup" "$work/home"
git clone -q . "$work/home/boad"
chown -R nobody "$work/home"
# In a private mount namespace: root's toolchains appear at $work/rustup for this command only.
unshare -m bash -c '
    set -euo pipefail
    mount --bind "$1" "$2/rustup"
    bin="$2/rustup/${3#"$1"/}/bin"
    runuser -u nobody -- env -i HOME="$2/home" PATH="$bin:/usr/local/bin:/usr/bin:/bin" \
        CARGO_HOME="$2/home/.cargo" bash -c "cd \"$2/home/boad\" && scripts/demo.sh"
' demo "$rustup_home" "$work" "$toolchain" 2>&1 | tee "$work/out"
for said in "building boadrun without the kernel path" "skipping the virtual cluster: it needs root" \
    "all collectives returned the expected results on all 9 ranks"; do
    grep -q "$said" "$work/out" || { echo "demo-unprivileged: the demo did not say \"$said\"" >&2; exit 1; }
done
echo "demo-unprivileged: ok"
