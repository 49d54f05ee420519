#!/usr/bin/env bash
# Installs Slurm (Debian's slurm-wlm: slurmctld, slurmd, srun) and munge for the direct-launch tests
# under Slurm (tests-integration/tests/slurm.rs), without leaving a daemon of the machine's own
# running: the tests start their own munged, slurmctld and slurmds from private state directories.
# Does nothing when they are there, or when not root (the tests then skip, saying why).
# Usage: scripts/install-slurm.sh [--updated]
#   --updated   apt-get update already ran in this session: do not run it again
# Debian's packages start munge, slurmctld and slurmd when installed: a policy-rc.d that refuses
# every start prevents it (ours is removed after, one already there is left alone), and a daemon
# started all the same is stopped.
set -euo pipefail
updated=
[ "${1:-}" != --updated ] || updated=1
[ "$(id -u)" = 0 ] || exit 0
have() { [ -x "/usr/sbin/$1" ] || command -v "$1" >/dev/null; }
if have slurmctld && have slurmd && have srun && have munged; then
    exit 0
fi
daemon_pids() {
    # The Slurm and munge daemons in this machine's own network namespace.
    local p ns exe
    ns="$(readlink /proc/self/ns/net)"
    for p in /proc/[0-9]*; do
        exe="$(readlink "$p/exe" 2>/dev/null)" || continue
        case "$exe" in
        /usr/sbin/munged | /usr/sbin/slurmctld | /usr/sbin/slurmd | /usr/sbin/slurmdbd) ;;
        *) continue ;;
        esac
        if [ "$(readlink "$p/ns/net" 2>/dev/null)" = "$ns" ]; then echo "${p#/proc/}"; fi
    done | sort
}
before="$(daemon_pids)"
policy=
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# scripts/install-slurm.sh: no service starts while Slurm installs.\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy=1
fi
status=0
{ [ -n "$updated" ] || apt-get update -qq; } &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
        --no-install-recommends slurm-wlm munge || status=$?
[ -z "$policy" ] || rm -f /usr/sbin/policy-rc.d
for pid in $(comm -13 <(echo "$before") <(daemon_pids)); do
    echo "installing Slurm started $(readlink "/proc/$pid/exe" 2>/dev/null) $pid: stopping it" >&2
    kill "$pid" 2>/dev/null || true
done
[ "$status" = 0 ] || { echo "cannot install slurm-wlm munge" >&2; exit 1; }
