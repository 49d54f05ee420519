#!/usr/bin/env bash
# What boad's jobs and tests must not leave behind, checked against a snapshot taken before them:
#   scripts/check-leftovers.sh snapshot FILE    # before
#   scripts/check-leftovers.sh check FILE       # after: exits 1 and lists what is new
# Looks at: /tmp/boad*, /dev/shm/boad*, XDP and TCX programs on lo, loaded BPF programs named boad_*
# or fold_*, network namespaces, and processes running a binary of this checkout's target/.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:?usage: check-leftovers.sh snapshot|check FILE}"
file="${2:?usage: check-leftovers.sh snapshot|check FILE}"
target="$(pwd)/target"

state() {
    local f
    for f in /tmp/boad* /dev/shm/boad*; do
        [ -e "$f" ] && echo "file $f"
    done
    if ip -d link show dev lo 2>/dev/null | grep -q 'prog/xdp'; then
        echo "xdp attached to lo"
    fi
    if command -v bpftool >/dev/null; then
        bpftool net show dev lo 2>/dev/null | grep -E '^(lo|tcx|xdp)|boad' | grep -v '^xdp:$\|^tc:$\|^flow_dissector:$\|^netfilter:$' | sed 's/^/bpf-net /' || true
        bpftool prog show 2>/dev/null | grep -oE 'name (boad_[a-z_]+|fold_[a-z0-9_]+)' | sort | uniq -c | sed 's/^ */bpf-prog /' || true
    fi
    if command -v lsns >/dev/null; then
        echo "netns-count $(lsns -t net -n -o NS 2>/dev/null | sort -u | wc -l)"
    fi
    ip netns list 2>/dev/null | sed 's/^/netns /' || true
    local p exe
    for p in /proc/[0-9]*; do
        exe=$(readlink "$p/exe" 2>/dev/null) || continue
        case "$exe" in
            "$target"/*) echo "process ${p#/proc/} $exe" ;;
        esac
    done
}

case "$mode" in
    snapshot)
        state | sort > "$file"
        ;;
    check)
        [ -f "$file" ] || { echo "check-leftovers: no snapshot $file" >&2; exit 2; }
        now="$(mktemp)"
        trap 'rm -f "$now"' EXIT
        # Give processes of the last job a moment to go.
        for _ in 1 2 3 4 5; do
            state | sort > "$now"
            new="$(comm -13 "$file" "$now")"
            [ -z "$new" ] && break
            sleep 1
        done
        if [ -n "$new" ]; then
            echo "check-leftovers: left behind since the snapshot:" >&2
            echo "$new" | sed 's/^/  /' >&2
            exit 1
        fi
        echo "check-leftovers: nothing left behind (/tmp, /dev/shm, lo, BPF programs, namespaces, processes)"
        ;;
    *) echo "usage: check-leftovers.sh snapshot|check FILE" >&2; exit 2 ;;
esac
