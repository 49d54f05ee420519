#!/usr/bin/env bash
# Runs the README as a user would: every ```sh block, in order, from the repository root, each as
# one `bash -euo pipefail` script (a failing command fails the check). A block opened as
# ```<lang> <file> (e.g. ```c app.c) is written to <file> in the repository root first, so the
# commands that use it find it, and removed at the end. The README's ```rust program is built by
# tests-integration/build.rs as `boad-readme`, which a ```sh block runs.
#
# A block may be skipped only with a reason, on the line just before it:
#   <!-- check-readme: skip: REASON -->
# The summary lists every skipped block with its reason.
#
# Also checks that every named block is used by some ```sh block.
#   scripts/check-readme.sh [README]        (default README.md)
set -euo pipefail
cd "$(dirname "$0")/.."
readme="${1:-README.md}"
[ -f "$readme" ] || { echo "check-readme: $readme not found" >&2; exit 1; }
work="$(mktemp -d)"
written=()
cleanup() {
    for f in "${written[@]}"; do rm -f "$f"; done
    rm -f app
    rm -rf "$work"
}
trap cleanup EXIT

# Split the README into blocks: $work/N.lang, $work/N.name, $work/N.skip, $work/N.body, $work/N.line
awk -v dir="$work" '
    BEGIN { n = 0; inb = 0; skip = "" }
    !inb && /^<!-- check-readme: skip: / {
        s = $0; sub(/^<!-- check-readme: skip: /, "", s); sub(/ *-->$/, "", s); skip = s; next
    }
    !inb && /^```[a-z]/ {
        n++; inb = 1
        hdr = substr($0, 4); split(hdr, f, " ")
        printf "%s", f[1] > (dir "/" n ".lang"); close(dir "/" n ".lang")
        printf "%s", (f[2] == "" ? "" : f[2]) > (dir "/" n ".name"); close(dir "/" n ".name")
        printf "%s", skip > (dir "/" n ".skip"); close(dir "/" n ".skip")
        printf "%d", NR > (dir "/" n ".line"); close(dir "/" n ".line")
        printf "" > (dir "/" n ".body")
        skip = ""; next
    }
    inb && /^```[ \t]*$/ { inb = 0; close(dir "/" n ".body"); next }
    inb { print >> (dir "/" n ".body") }
    !inb && !/^[ \t]*$/ { skip = "" }
    END { if (inb) { print "unclosed code block at the end" > "/dev/stderr"; exit 1 } print n > (dir "/count") }
' "$readme"
count=$(cat "$work/count")

# Named blocks -> files (refusing to overwrite a file that is not ours).
for i in $(seq 1 "$count"); do
    name=$(cat "$work/$i.name")
    [ -n "$name" ] || continue
    case "$name" in */*|.*) echo "check-readme: block at line $(cat "$work/$i.line"): file name $name must be a plain name" >&2; exit 1 ;; esac
    if [ -e "$name" ]; then
        echo "check-readme: $name exists in the repository root; move it away first" >&2
        exit 1
    fi
    cp "$work/$i.body" "$name"
    written+=("$name")
    used=0
    for j in $(seq 1 "$count"); do
        [ "$(cat "$work/$j.lang")" = sh ] && [ -z "$(cat "$work/$j.skip")" ] && grep -qw -- "$name" "$work/$j.body" && used=1
    done
    [ "$used" = 1 ] || { echo "check-readme: no command of the README uses $name (block at line $(cat "$work/$i.line"))" >&2; exit 1; }
done

ran=0
skipped=()
for i in $(seq 1 "$count"); do
    lang=$(cat "$work/$i.lang"); line=$(cat "$work/$i.line"); reason=$(cat "$work/$i.skip")
    name=$(cat "$work/$i.name")
    if [ -n "$reason" ]; then
        skipped+=("line $line ($lang): $reason")
        continue
    fi
    case "$lang" in
        sh) ;;
        rust) grep -qs boad-readme "$work"/*.body || { echo "check-readme: no command runs boad-readme, the README's Rust program (line $line)" >&2; exit 1; }
              continue ;;
        *) [ -n "$name" ] && continue
           echo "check-readme: the $lang block at line $line is neither a file the commands use (\`\`\`$lang NAME) nor skipped with a reason" >&2
           exit 1 ;;
    esac
    [ "$lang" = sh ] || continue
    printf '\n==> README.md line %s\n' "$line"
    sed 's/^/    $ /' "$work/$i.body"
    t0=$SECONDS
    if ! timeout 900 bash -euo pipefail "$work/$i.body"; then
        echo "check-readme: the block at README.md line $line failed" >&2
        exit 1
    fi
    echo "    (ok, $((SECONDS - t0)) s)"
    ran=$((ran + 1))
done

printf '\ncheck-readme: %d command blocks ran\n' "$ran"
for s in "${skipped[@]}"; do echo "check-readme: skipped $s"; done
