#!/usr/bin/env bash
# Installs OpenSSH's server and client (for boad-test-support's sshhosts: a real sshd in each
# network namespace host, used by the tests of boadrun -H and by boad-bench's `hosts` sweep) without
# leaving an sshd of the machine's own running. Does nothing when both are there, or when not root
# (the tests and the sweep then skip, saying why). Usage: scripts/install-sshd.sh [--updated]
#   --updated   apt-get update already ran in this session: do not run it again
# Debian's openssh-server starts the machine's ssh service when installed: that would leave an sshd
# listening on port 22 of this machine. A policy-rc.d that refuses every start prevents it (ours is
# removed after, one already there is left alone), and an sshd started all the same is stopped.
set -euo pipefail
updated=
[ "${1:-}" != --updated ] || updated=1
[ "$(id -u)" = 0 ] || exit 0
if { command -v sshd >/dev/null || [ -x /usr/sbin/sshd ]; } && command -v ssh >/dev/null; then
    exit 0
fi
sshd_pids() {
    # The sshds in this machine's own network namespace (the fixture's live in their own).
    local p ns
    ns="$(readlink /proc/self/ns/net)"
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/exe" 2>/dev/null)" = /usr/sbin/sshd ] || continue
        if [ "$(readlink "$p/ns/net" 2>/dev/null)" = "$ns" ]; then echo "${p#/proc/}"; fi
    done | sort
}
before="$(sshd_pids)"
policy=
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# scripts/install-sshd.sh: no service starts while openssh-server installs.\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy=1
fi
status=0
{ [ -n "$updated" ] || apt-get update -qq; } &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client || status=$?
[ -z "$policy" ] || rm -f /usr/sbin/policy-rc.d
for pid in $(comm -13 <(echo "$before") <(sshd_pids)); do
    echo "openssh-server's install started sshd $pid: stopping it" >&2
    kill "$pid" 2>/dev/null || true
done
[ "$status" = 0 ] || { echo "cannot install openssh-server openssh-client" >&2; exit 1; }
