"""Other Python threads while a collective runs, on every rank of a job (see test_collectives.py).

A collective releases the GIL while it works on an array's memory. Meanwhile another thread may
try to free that memory (``ndarray.resize(refcheck=False)``), which the collective must refuse,
and the interpreter must go on: the communicator's properties answer at once.

Each test makes rank 1 join its collective ``LATE`` seconds after the others, so that on the other
ranks the collective is certainly still running while their second thread acts.
"""

import threading
import time

import numpy as np
import pytest

import boad

LATE = 1.0
BIG = 64 << 20  # bytes
N = BIG // 8  # int64 elements


@pytest.fixture(scope="module")
def comm():
    return boad.init()


def late_rank(comm):
    if comm.size == 1:
        pytest.skip("needs a late peer")
    return 1


def hammer_resize(target, done, out):
    """Tries to resize `target` (refcheck=False) until `done`, once the collective has started.
    Counts the refusals; stops at the first resize that goes through (a resize only succeeds once
    nothing holds the array, so after the collective returned; with no guard, during it)."""
    time.sleep(0.1)  # the main thread is inside the collective by now: it waits LATE s there
    while not done.is_set():
        size = target.size
        try:
            target.resize(size + 4096, refcheck=False)
        except ValueError as e:
            out["refused"] += 1
            out["message"] = str(e)
            time.sleep(0.001)  # about a thousand tries a second: enough, and the ranks get the CPUs
        else:
            out["resized_at_refusal"] = out["refused"]
            return


@pytest.mark.parametrize("case", ["bcast", "allreduce", "allreduce-view"])
def test_an_array_in_a_collective_cannot_be_resized(comm, case):
    """A thread resizes the array (or, for a view, the array owning its memory) in a loop while a
    64 MiB collective runs on it: every resize is refused while the collective holds the array,
    nothing crashes and the result is exact."""
    late = late_rank(comm)
    if case == "bcast":
        # Rank 1 is the root: every other rank waits for its data.
        want = np.arange(N, dtype=np.int64) * 3 + late
        buf = want.copy() if comm.rank == late else np.full(N, -1 - comm.rank, dtype=np.int64)
    else:
        # Per-rank distinct contributions; the sum of rank r's (r + 1) * i is i * size(size+1)/2.
        buf = np.arange(N, dtype=np.int64) * (comm.rank + 1)
        want = np.arange(N, dtype=np.int64) * (comm.size * (comm.size + 1) // 2)
    owner = buf
    arg = buf[:] if case == "allreduce-view" else buf  # a view: its memory is `owner`'s
    assert (arg.base is owner) == (case == "allreduce-view")

    comm.barrier()  # start together: rank 1's sleep is what the others wait for
    if comm.rank == late:
        time.sleep(LATE)
        if case == "bcast":
            comm.bcast(arg, root=late)
        else:
            comm.allreduce(arg)
        np.testing.assert_array_equal(owner, want)
        return

    done = threading.Event()
    out = {"refused": 0}
    t = threading.Thread(target=hammer_resize, args=(owner, done, out))
    t.start()
    start = time.monotonic()
    try:
        if case == "bcast":
            got = comm.bcast(arg, root=late)
        else:
            got = comm.allreduce(arg)
    finally:
        took = time.monotonic() - start
        done.set()
        t.join(60)
    assert got is arg
    assert took > LATE / 2, f"the collective took {took:.2f} s: it did not wait for rank {late}"
    # The resizer ran while the collective held the array, and every attempt then was refused.
    assert out["refused"] > 0, f"no resize was refused during the collective ({out})"
    assert "cannot resize" in out["message"], out["message"]
    # A resize that went through did so after the collective returned (it keeps the first N
    # elements): the collective wrote its result into memory that stayed the array's.
    assert owner.size in (N, N + 4096)
    np.testing.assert_array_equal(owner[:N], want)
    # Once the call has returned, nothing holds the array any more (the view goes first: it would
    # dangle).
    del arg, got
    owner.resize(N + 1, refcheck=False)
    assert owner.size == N + 1


def test_properties_answer_while_another_thread_is_in_a_collective(comm):
    """While one thread waits in an allreduce for rank 1 (late by LATE s), another reads the
    communicator's properties (and stats, repr), each within a small fraction of that wait; and a
    second collective called meanwhile waits for the first with the GIL released."""
    late = late_rank(comm)
    x = np.full(1000, comm.rank + 1, dtype=np.int64)
    comm.barrier()
    if comm.rank == late:
        time.sleep(LATE)
        comm.allreduce(x)
        comm.barrier()
        assert (x == comm.size * (comm.size + 1) // 2).all()
        return

    t = threading.Thread(target=comm.allreduce, args=(x,))
    t.start()
    time.sleep(0.1)  # t is inside the allreduce by now: it waits for rank 1
    slowest = 0.0
    reads = 0
    window_end = time.monotonic() + 0.4
    while time.monotonic() < window_end:
        for read in (
            lambda: comm.finalized,
            lambda: comm.rank,
            lambda: comm.size,
            lambda: comm.last_path,
            comm.stats,
            lambda: repr(comm),
        ):
            t0 = time.monotonic()
            read()
            slowest = max(slowest, time.monotonic() - t0)
            reads += 1
    assert slowest < LATE / 5, f"a read took {slowest:.3f} s while another thread was in a collective"
    assert t.is_alive(), "the allreduce ended before rank 1 joined: nothing was measured"
    assert reads > 100, f"only {reads} reads in 0.4 s"
    assert comm.finalized is False

    # A collective of this thread waits for the allreduce (the communicator runs one at a time)
    # without holding the GIL: a third thread keeps running meanwhile.
    spins = 0
    b = threading.Thread(target=comm.barrier)
    b.start()
    while b.is_alive() and t.is_alive():
        spins += 1
    t.join(60)
    b.join(60)
    assert spins > 10_000, f"only {spins} iterations ran while the barrier waited for the allreduce"
    assert (x == comm.size * (comm.size + 1) // 2).all()
