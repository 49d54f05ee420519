#!/usr/bin/env bash
# Installs what boad's eBPF kernel path needs to build, and only what is missing:
#   - Debian: llvm-22-dev, libpolly-22-dev (for bpf-linker), bpftool (for inspecting loaded programs),
#     ethtool (tests-privileged turns tx checksum offload off on test veths)
#   - rustup: nightly-2026-05-19 with rust-src (pinned by collectives-ebpf/rust-toolchain.toml)
#   - cargo: bpf-linker built against LLVM 22
# Idempotent and non-interactive; prints each step; exits non-zero on the first failure.
# docs/ebpf-toolchain.md says why these exact versions.
set -euo pipefail

NIGHTLY=nightly-2026-05-19
LLVM_PREFIX=/usr/lib/llvm-22
APT_PKGS=(llvm-22-dev libpolly-22-dev bpftool ethtool)
export DEBIAN_FRONTEND=noninteractive

say() { printf '[install-ebpf-toolchain] %s\n' "$*"; }
run() { say "+ $*"; "$@"; }

start=$(date +%s)
SUDO=()

# 1. Debian packages.
missing=()
for p in "${APT_PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    say "missing Debian packages: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        sudo -n true 2>/dev/null || { say "not root and no passwordless sudo: cannot apt-get install ${missing[*]}"; exit 1; }
        SUDO=(sudo -n)
    fi
    updated=0
    for p in "${missing[@]}"; do
        if ! apt-cache show "$p" >/dev/null 2>&1; then
            if [ $updated -eq 0 ]; then
                run "${SUDO[@]}" apt-get update -q
                updated=1
            fi
            apt-cache show "$p" >/dev/null 2>&1 || { say "package $p does not exist in the apt sources here"; exit 1; }
        fi
    done
    run "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    say "Debian packages present: ${APT_PKGS[*]}"
fi
[ -x "$LLVM_PREFIX/bin/llvm-config" ] || { say "$LLVM_PREFIX/bin/llvm-config not found after install"; exit 1; }

# 2. Pinned nightly with rust-src.
command -v rustup >/dev/null || { say "rustup not found"; exit 1; }
if rustup toolchain list | grep -q "^$NIGHTLY"; then
    say "toolchain $NIGHTLY present"
elif rustc +nightly --version 2>/dev/null | grep -q "${NIGHTLY#nightly-})"; then
    say "installed 'nightly' is $NIGHTLY already ($(rustc +nightly --version)); linking it as $NIGHTLY"
    home=$(rustup show home)
    host=$(rustc +nightly -vV | sed -n 's/^host: //p')
    # Same convention as the machine's `1.95.0 -> stable` link: no second download of the same build.
    run ln -sfn "$home/toolchains/nightly-$host" "$home/toolchains/$NIGHTLY-$host"
else
    run rustup toolchain install "$NIGHTLY" --component rust-src --profile minimal --no-self-update
fi
if ! rustup component list --toolchain "$NIGHTLY" --installed 2>/dev/null | grep -q '^rust-src'; then
    run rustup component add rust-src --toolchain "$NIGHTLY"
else
    say "rust-src present for $NIGHTLY"
fi

# 3. bpf-linker against LLVM 22.
if bpf-linker --version >/dev/null 2>&1; then
    say "bpf-linker present: $(bpf-linker --version)"
else
    say "building bpf-linker against $LLVM_PREFIX (takes 1-2 minutes)"
    say "LLVM_PREFIX=$LLVM_PREFIX PATH=$LLVM_PREFIX/bin:\$PATH"
    LLVM_PREFIX=$LLVM_PREFIX PATH="$LLVM_PREFIX/bin:$PATH" \
        run cargo install bpf-linker --no-default-features --features llvm-22 --locked
    bpf-linker --version >/dev/null 2>&1 || {
        say "bpf-linker installed but not on PATH (add ~/.cargo/bin)"; exit 1; }
fi

say "done in $(( $(date +%s) - start )) s"
