"""What every test file shares.

- A skipped test fails the run, unless ``BOAD_ALLOW_SKIP`` names a file: then the skip is
  appended to it (one line, as the Rust tests' ``boad-test-support`` does) and ``scripts/test.sh``
  lists it at the end. Run pytest with ``-rs`` to see the reasons in its summary.
- ``expected_path``: the path (``comm.last_path``) a collective is meant to take in this run.
"""

import os

import numpy as np
import pytest

import boad

ALLOW_SKIP = "BOAD_ALLOW_SKIP"
# What python/test.sh says a run is meant to take: shm, udp, kernel, hier-kernel or hier.
TEST_PATH = "BOAD_TEST_PATH"
PATHS = ("shm", "udp", "kernel", "hier-kernel", "hier")

# The kernel path's limits (README, "Where it fits"; collectives/src/transport/udp_kernel.rs).
KBCAST_MAX = 1 << 20
KREDUCE_MAX = 64 * 1024


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.skipped or hasattr(rep, "wasxfail"):
        return
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    allow = os.environ.get(ALLOW_SKIP, "")
    if allow:
        rank = os.environ.get("BOAD_RANK", "0")
        with open(allow, "a", encoding="utf-8") as f:
            f.write(f"python {item.nodeid} (rank {rank}): {reason}\n")
        return
    rep.outcome = "failed"
    rep.longrepr = (
        f"skipped ({reason}), and skips are not allowed in this run: set {ALLOW_SKIP}=FILE to "
        "allow them (the skip is then recorded in FILE)"
    )


def run_mode():
    """The path this run is meant to take: ``BOAD_TEST_PATH`` if the runner set it, else what
    boadrun's environment says (``BOAD_TRANSPORT``, and whether the ranks span hosts)."""
    mode = os.environ.get(TEST_PATH)
    if mode:
        if mode not in PATHS:
            raise AssertionError(f"{TEST_PATH}={mode!r} is not one of {PATHS}")
        return mode
    transport = os.environ.get("BOAD_TRANSPORT", "auto") or "auto"
    size = int(os.environ.get("BOAD_SIZE", "1"))
    several_hosts = int(os.environ.get("BOAD_LOCAL_SIZE", str(size))) != size
    if transport == "udp":
        return "udp"
    if transport == "kernel":
        return "kernel"
    if transport == "shm":
        return "hier" if several_hosts else "shm"
    if transport == "auto":
        return "hier-kernel" if several_hosts else "shm"
    raise AssertionError(f"BOAD_TRANSPORT={transport!r}")


def kernel_fits(ranks, coll, nbytes, dtype=None, op=None):
    """Whether the kernel path takes this call among `ranks` ranks (udp_kernel.rs, kernel_fits)."""
    if ranks < 2:
        return False
    if coll == "barrier":
        return True
    if coll == "bcast":
        return 0 < nbytes <= KBCAST_MAX
    if coll == "allgather":
        return nbytes > 0 and nbytes * (ranks - 1) <= KBCAST_MAX
    if coll in ("reduce", "allreduce"):
        folds = not np.issubdtype(dtype, np.floating) or op in (boad.MIN, boad.MAX)
        return 0 < nbytes <= KREDUCE_MAX and folds
    raise AssertionError(coll)


def expected_path(comm, coll, nbytes=0, dtype=None, op=None):
    """The ``last_path`` a collective `coll` over `nbytes` bytes per rank must report in this run."""
    mode = run_mode()
    if mode in ("shm", "udp", "hier"):
        return mode
    if mode == "kernel":
        return "kernel" if kernel_fits(comm.size, coll, nbytes, dtype, op) else "udp"
    # hier-kernel: the host leaders' level takes the kernel path where the call fits among them.
    hosts = int(os.environ.get("BOAD_TEST_HOSTS", "0")) or None
    if hosts is None:
        raise AssertionError("hier-kernel: BOAD_TEST_HOSTS (the number of hosts) is not set")
    return "hier-kernel" if kernel_fits(hosts, coll, nbytes, dtype, op) else "hier"
