"""boad's Python API, run on every rank of a job:

    boadrun -n 4 python -m pytest -q python/tests

(or python/test.sh, which also runs them over UDP, the kernel path and a virtual cluster). Every
rank runs the same tests in the same order, so the collectives match; run alone (without boadrun) it
is a job of one rank. Results are checked against NumPy on every rank, with contributions that
differ on every rank, so that a result copied from one rank, or one that lost a rank's
contribution, fails (each reduction test checks that premise: `distinguishing`). Where a test looks
at `comm.last_path`, it must be the path the run is meant to take (`conftest.expected_path`).
"""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import boad
from conftest import expected_path

DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.float32, np.float64]
INT_OPS = [boad.SUM, boad.PROD, boad.MIN, boad.MAX, boad.BAND, boad.BOR, boad.BXOR, boad.LAND, boad.LOR]
FLOAT_OPS = [boad.SUM, boad.PROD, boad.MIN, boad.MAX]
COUNTS = [0, 1, 7, 1000]
LARGE = 300_001
SIZE = int(os.environ.get("BOAD_SIZE", "1"))
# Long enough for every rank to be marked in every kind of element (see `contribution`).
MARKED = 3 * SIZE + 1


@pytest.fixture(scope="session")
def comm():
    return boad.init()


def roots(size):
    return sorted({0, size // 2, size - 1})


def contribution(rank, n, dtype):
    """What `rank` contributes: small values (exact in every dtype, their products too), zeros (for
    LAND/LOR) and, for signed types, negatives, different on every rank. Element i is marked for
    rank i % SIZE, which holds a value of its own there while every other rank holds a common one,
    in three kinds by (i // SIZE) % 3: marked 2 among 0s (MAX, BOR, LOR, SUM see it), marked 0 among
    3s (MIN, BAND, LAND, PROD), marked -1 (3 if unsigned) among 2s (MIN or MAX, PROD). With
    n >= 3 * SIZE every rank is marked in every kind: see `distinguishing`."""
    i = np.arange(n)
    marked = (i % SIZE) == rank
    kind = (i // SIZE) % 3
    signed = not np.issubdtype(dtype, np.unsignedinteger)
    mine = np.select([kind == 0, kind == 1], [2, 0], -1 if signed else 3)
    others = np.select([kind == 0, kind == 1], [0, 3], 2)
    return np.where(marked, mine, others).astype(dtype)


def reduce_parts(op, dtype, parts):
    """The reduction of `parts` (one row per rank), computed with NumPy in `dtype` (integer SUM and
    PROD wrap, as boad's do). Of one row the result is that row, unchanged (even for LAND/LOR, as
    in MPI)."""
    if len(parts) == 1:
        return parts[0]
    with np.errstate(over="ignore"):
        if op == boad.SUM:
            return np.add.reduce(parts, axis=0, dtype=dtype)
        if op == boad.PROD:
            return np.multiply.reduce(parts, axis=0, dtype=dtype)
    if op == boad.MIN:
        return parts.min(axis=0)
    if op == boad.MAX:
        return parts.max(axis=0)
    if op == boad.BAND:
        return np.bitwise_and.reduce(parts, axis=0)
    if op == boad.BOR:
        return np.bitwise_or.reduce(parts, axis=0)
    if op == boad.BXOR:
        return np.bitwise_xor.reduce(parts, axis=0)
    if op == boad.LAND:
        return np.logical_and.reduce(parts, axis=0).astype(dtype)
    if op == boad.LOR:
        return np.logical_or.reduce(parts, axis=0).astype(dtype)
    raise AssertionError(op)


def expected(op, dtype, n, size):
    """The reduction of every rank's contribution."""
    return reduce_parts(op, dtype, np.stack([contribution(r, n, dtype) for r in range(size)]))


def distinguishing(op, dtype, n, size):
    """The premise of a reduction test over several ranks: its result differs from every rank's own
    contribution and from the reduction without any one rank, so a result copied from one rank, or
    one that lost a rank's contribution, fails. Asserted, then the result returned."""
    parts = np.stack([contribution(r, n, dtype) for r in range(size)])
    want = reduce_parts(op, dtype, parts)
    if size > 1:
        for r in range(size):
            assert not np.array_equal(want, parts[r]), f"rank {r}'s copy is the result of {op.name}"
            rest = reduce_parts(op, dtype, np.delete(parts, r, axis=0))
            assert not np.array_equal(want, rest), f"{op.name} without rank {r} gives the same result"
    return want


def distinct_from_other_ranks(want, n, dtype, rank):
    """The premise of a bcast test: the root's data is no other rank's (n >= SIZE)."""
    if n >= SIZE:
        for r in range(SIZE):
            if r != rank:
                assert not np.array_equal(want, contribution(r, n, dtype)), f"rank {r} has the root's data"


def ops_for(dtype):
    return FLOAT_OPS if np.issubdtype(dtype, np.floating) else INT_OPS


def op_cases():
    return [
        pytest.param(d, op, id=f"{np.dtype(d).name}-{op.name}") for d in DTYPES for op in ops_for(d)
    ]


# ----- communicator -----


def test_rank_and_size(comm):
    assert comm.size == int(os.environ.get("BOAD_SIZE", "1"))
    assert comm.rank == int(os.environ.get("BOAD_RANK", "0"))
    assert 0 <= comm.rank < comm.size
    assert repr(comm) == f"<boad.Communicator rank={comm.rank} size={comm.size}>"
    assert not comm.finalized


def test_init_returns_the_world(comm):
    assert boad.init() is comm
    assert boad.COMM_WORLD is comm
    assert isinstance(comm, boad.Communicator)
    assert issubclass(boad.Error, RuntimeError)
    assert boad.__version__


def test_check_names_the_launcher(comm):
    # Under boadrun (this suite's runs): the launcher, this rank and the size.
    assert boad.check() == f"launcher: boadrun: rank {comm.rank} of {comm.size}\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOAD_")}
    code = "import boad; print(boad.check(), end='')"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "launcher: no launcher (a job of one rank)\n", r
    # env:// variables that cannot be used: named, without joining anything.
    env.update(WORLD_SIZE="4", RANK="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("launcher: error: "), r
    assert "env://" in r.stdout and "MASTER_ADDR, MASTER_PORT are not" in r.stdout, r


def test_ops_are_int_constants():
    assert [int(o) for o in INT_OPS] == list(range(9))
    assert boad.Op(4) is boad.BAND and boad.BAND.name == "BAND"


# ----- bcast -----


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", COUNTS)
def test_bcast(comm, dtype, n):
    for root in roots(comm.size):
        want = contribution(root, n, dtype)
        distinct_from_other_ranks(want, n, dtype, root)
        buf = want.copy() if comm.rank == root else np.full(n, 9, dtype=dtype)
        out = comm.bcast(buf, root=root)
        assert out is buf
        np.testing.assert_array_equal(buf, want)


def test_bcast_large_2d(comm):
    root = comm.size - 1
    want = np.arange(LARGE * 2, dtype=np.float64).reshape(LARGE, 2) * 0.5
    buf = want.copy() if comm.rank == root else np.zeros_like(want)
    comm.bcast(buf, root)
    np.testing.assert_array_equal(buf, want)
    # 4.8 MB: over the kernel path's limit.
    assert comm.last_path == expected_path(comm, "bcast", want.nbytes)


# ----- reduce -----


@pytest.mark.parametrize("dtype,op", op_cases())
def test_reduce(comm, dtype, op):
    for n in (1, MARKED):
        want = distinguishing(op, dtype, n, comm.size) if n == MARKED else expected(op, dtype, n, comm.size)
        for root in roots(comm.size):
            send = contribution(comm.rank, n, dtype)
            got = comm.reduce(send, op=op, root=root)
            if comm.rank == root:
                assert got.dtype == send.dtype and got.shape == send.shape
                np.testing.assert_array_equal(got, want)
            else:
                assert got is None
            np.testing.assert_array_equal(send, contribution(comm.rank, n, dtype))


@pytest.mark.parametrize("n", [0, 1, 1000, LARGE])
def test_reduce_into_recv_and_in_place(comm, n):
    root = comm.size // 2
    send = contribution(comm.rank, n, np.int64)
    recv = np.full(n, -5, dtype=np.int64)
    got = comm.reduce(send, recv, op=boad.SUM, root=root)
    want = expected(boad.SUM, np.int64, n, comm.size)
    if comm.rank == root:
        assert got is recv
        np.testing.assert_array_equal(recv, want)
    else:
        assert got is None
        np.testing.assert_array_equal(recv, -5)  # untouched off the root

    buf = contribution(comm.rank, n, np.int64)
    got = comm.reduce(buf, recv=buf, op=boad.SUM, root=root)
    if comm.rank == root:
        assert got is buf
        np.testing.assert_array_equal(buf, want)
    else:
        assert got is None
        np.testing.assert_array_equal(buf, contribution(comm.rank, n, np.int64))


def test_reduce_readonly_send(comm):
    want = distinguishing(boad.MAX, np.float32, MARKED, comm.size)
    send = contribution(comm.rank, MARKED, np.float32)
    send.flags.writeable = False
    got = comm.reduce(send, op=boad.MAX, root=0)
    if comm.rank == 0:
        np.testing.assert_array_equal(got, want)


# ----- allreduce -----


@pytest.mark.parametrize("dtype,op", op_cases())
def test_allreduce(comm, dtype, op):
    for n in (1, MARKED):
        want = distinguishing(op, dtype, n, comm.size) if n == MARKED else expected(op, dtype, n, comm.size)
        # into a new recv
        send = contribution(comm.rank, n, dtype)
        recv = np.empty_like(send)
        assert comm.allreduce(send, recv, op=op) is recv
        np.testing.assert_array_equal(recv, want)
        np.testing.assert_array_equal(send, contribution(comm.rank, n, dtype))
        # in place, one array
        buf = contribution(comm.rank, n, dtype)
        assert comm.allreduce(buf, op=op) is buf
        np.testing.assert_array_equal(buf, want)
        # in place, recv=send
        buf = contribution(comm.rank, n, dtype)
        assert comm.allreduce(buf, recv=buf, op=op) is buf
        np.testing.assert_array_equal(buf, want)


@pytest.mark.parametrize("n", COUNTS + [LARGE])
def test_allreduce_sizes(comm, n):
    buf = contribution(comm.rank, n, np.float64)
    comm.allreduce(buf)
    np.testing.assert_array_equal(buf, expected(boad.SUM, np.float64, n, comm.size))


def test_allreduce_shapes_and_default_op(comm):
    x = np.full((3, 4, 5), comm.rank + 1, dtype=np.int32)
    out = comm.allreduce(x)
    assert out is x and x.shape == (3, 4, 5)
    assert (x == comm.size * (comm.size + 1) // 2).all()
    # recv of another shape but the same size
    n = 3 * 4 * SIZE
    want = distinguishing(boad.MAX, np.uint16, n, comm.size)
    s = contribution(comm.rank, n, np.uint16)
    r = np.zeros((3, 4 * SIZE), dtype=np.uint16)
    comm.allreduce(s, r, boad.MAX)
    np.testing.assert_array_equal(r.ravel(), want)
    # 0-d arrays are one element
    z = np.array(2.5 * (comm.rank + 1))
    comm.allreduce(z, op=boad.SUM)
    assert z == 2.5 * comm.size * (comm.size + 1) / 2


def test_allreduce_from_a_thread(comm):
    """The GIL is released during a collective: another thread runs it while this one waits."""
    out = {}

    def work():
        buf = np.full(1000, comm.rank + 1, dtype=np.int64)
        comm.allreduce(buf)
        out["sum"] = int(buf[0])

    t = threading.Thread(target=work)
    t.start()
    t.join(60)
    assert out["sum"] == comm.size * (comm.size + 1) // 2


# ----- allgather -----


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", COUNTS)
def test_allgather(comm, dtype, n):
    distinct_from_other_ranks(contribution(comm.rank, n, dtype), n, dtype, comm.rank)
    send = contribution(comm.rank, n, dtype)
    got = comm.allgather(send)
    assert got.shape == (comm.size, n) and got.dtype == send.dtype
    for r in range(comm.size):
        np.testing.assert_array_equal(got[r], contribution(r, n, dtype))


def test_allgather_into_recv_and_shapes(comm):
    send = np.full((2, 3), comm.rank, dtype=np.float32)
    got = comm.allgather(send)
    assert got.shape == (comm.size, 2, 3)
    np.testing.assert_array_equal(got[:, 0, 0], np.arange(comm.size))
    recv = np.zeros(comm.size * 6, dtype=np.float32)
    assert comm.allgather(send, recv) is recv
    np.testing.assert_array_equal(recv.reshape(comm.size, 6)[:, 5], np.arange(comm.size))
    scalar = comm.allgather(np.array(comm.rank * 10, dtype=np.uint32))
    assert scalar.shape == (comm.size,)
    np.testing.assert_array_equal(scalar, np.arange(comm.size) * 10)


def test_allgather_large(comm):
    send = np.arange(LARGE // comm.size + 1, dtype=np.int32) + comm.rank * 7
    got = comm.allgather(send)
    for r in range(comm.size):
        np.testing.assert_array_equal(got[r], send - comm.rank * 7 + r * 7)


# ----- barrier, path, stats -----


def test_barrier(comm):
    for _ in range(5):
        assert comm.barrier() is None


def test_last_path_and_stats(comm):
    comm.barrier()
    path = comm.last_path
    assert path == expected_path(comm, "barrier")
    s = comm.stats()
    # A hierarchical collective counts in collectives_hier whether its leaders' part took the
    # kernel path or UDP (which counts in collectives_kernel or collectives_udp on the leaders).
    assert s["collectives_hier" if path == "hier-kernel" else f"collectives_{path}"] > 0
    assert set(s) >= {"datagrams_sent", "datagrams_received", "bytes_sent", "retransmits"}


def path_cases():
    i32, f32, f64 = np.int32, np.float32, np.float64
    return [
        pytest.param("barrier", None, 0, None, id="barrier"),
        pytest.param("bcast", i32, 1000, None, id="bcast-4KB"),
        pytest.param("bcast", np.uint8, (1 << 20) + 1, None, id="bcast-over-1MiB"),
        pytest.param("reduce", i32, 1000, boad.SUM, id="reduce-i32-sum"),
        pytest.param("allreduce", i32, 1000, boad.BXOR, id="allreduce-i32-bxor"),
        pytest.param("allreduce", f32, 100, boad.MAX, id="allreduce-f32-max"),
        pytest.param("allreduce", f64, 100, boad.SUM, id="allreduce-f64-sum"),
        pytest.param("allreduce", i32, 20_000, boad.SUM, id="allreduce-over-64KiB"),
        pytest.param("allgather", i32, 100, None, id="allgather-400B"),
    ]


@pytest.mark.parametrize("coll,dtype,n,op", path_cases())
def test_each_collective_takes_the_path_meant(comm, coll, dtype, n, op):
    """Which path each kind of call takes in this run (shm, udp, kernel, hier-kernel or hier, by
    the run's transport and the kernel path's limits), and that its result is right there."""
    nbytes = n * np.dtype(dtype).itemsize if dtype is not None else 0
    if coll == "barrier":
        comm.barrier()
    elif coll == "bcast":
        root = comm.size - 1
        want = (np.arange(n) * 7 + 3).astype(dtype)
        buf = want.copy() if comm.rank == root else np.zeros(n, dtype)
        comm.bcast(buf, root)
        np.testing.assert_array_equal(buf, want)
    elif coll in ("reduce", "allreduce"):
        want = distinguishing(op, dtype, n, comm.size)
        send = contribution(comm.rank, n, dtype)
        if coll == "reduce":
            got = comm.reduce(send, op=op, root=0)
            if comm.rank == 0:
                np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_array_equal(comm.allreduce(send, np.empty_like(send), op=op), want)
    else:
        send = contribution(comm.rank, n, dtype)
        got = comm.allgather(send)
        for r in range(comm.size):
            np.testing.assert_array_equal(got[r], contribution(r, n, dtype))
    assert comm.last_path == expected_path(comm, coll, nbytes, dtype, op)


# ----- errors -----
# TypeError and ValueError are raised on the calling rank, which does not run the collective and
# tells the other ranks it failed (every rank here makes the same bad call, unless the test says
# otherwise); boad.Error comes from the collective, on every rank.


@pytest.mark.parametrize(
    "bad",
    [
        [1, 2, 3],
        b"abc",
        np.zeros(3, dtype=np.float16),
        np.zeros(3, dtype=np.bool_),
        np.zeros(3, dtype=np.complex128),
        np.zeros(3, dtype=">i4"),
        np.zeros(3, dtype=object),
    ],
    ids=["list", "bytes", "float16", "bool", "complex128", "big-endian", "object"],
)
def test_unsupported_types(comm, bad):
    with pytest.raises(TypeError):
        comm.allreduce(bad)
    with pytest.raises(TypeError):
        comm.bcast(bad)
    with pytest.raises(TypeError):
        comm.allgather(bad)
    with pytest.raises(TypeError):
        comm.reduce(bad)


def test_recv_dtype_must_match(comm):
    with pytest.raises(TypeError, match="same"):
        comm.allreduce(np.zeros(3, np.int32), np.zeros(3, np.int64))
    with pytest.raises(TypeError, match="same"):
        comm.allgather(np.zeros(3, np.int32), np.zeros(3 * comm.size, np.float32))
    # recv is checked on the root only. In a job of several ranks the others' valid calls would fail
    # too, but a non-root rank may finish its part first and see the error at a later collective,
    # so this one runs in a job of one rank of its own.
    code = (
        "import numpy as np, boad, pytest\n"
        "c = boad.init()\n"
        "with pytest.raises(TypeError, match='same'):\n"
        "    c.reduce(np.zeros(3, np.int32), np.zeros(3, np.uint32), root=0)\n"
        "c.barrier()\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOAD_")}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_non_contiguous(comm):
    a = np.zeros(10)[::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        comm.allreduce(a)
    with pytest.raises(ValueError, match="C-contiguous"):
        comm.bcast(np.zeros((4, 3), order="F"))
    with pytest.raises(ValueError, match="C-contiguous"):
        comm.allgather(np.zeros(3), np.zeros((comm.size, 6))[:, ::2])


def test_readonly_output(comm):
    ro = np.zeros(4)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        comm.bcast(ro)
    with pytest.raises(ValueError, match="read-only"):
        comm.allreduce(ro)
    with pytest.raises(ValueError, match="read-only"):
        comm.allreduce(np.zeros(4), ro)
    # a read-only send buffer is fine
    out = comm.allreduce(ro, np.zeros(4))
    np.testing.assert_array_equal(out, 0)


def test_overlapping_buffers(comm):
    a = np.zeros(8)
    with pytest.raises(ValueError, match="overlaps"):
        comm.allreduce(a[:4], a[2:6])
    with pytest.raises(ValueError, match="overlaps"):
        comm.allgather(a, a)


def test_float_with_bitwise_op(comm):
    for op in (boad.BAND, boad.BOR, boad.BXOR, boad.LAND, boad.LOR):
        with pytest.raises(boad.Error, match=f"rank {comm.rank}: op {op.name.lower()} is not defined on f64"):
            comm.allreduce(np.ones(3), op=op)
    with pytest.raises(boad.Error, match="not defined on f32"):
        comm.reduce(np.ones(3, np.float32), op=boad.BAND, root=comm.size - 1)


def test_invalid_op(comm):
    with pytest.raises(ValueError, match="not a boad op"):
        comm.allreduce(np.ones(3), op=42)
    with pytest.raises(ValueError, match="not a boad op"):
        comm.reduce(np.ones(3), op=-1)


def test_invalid_root(comm):
    with pytest.raises(boad.Error, match=f"rank {comm.rank}: root {comm.size} is out of range"):
        comm.bcast(np.zeros(3), root=comm.size)
    with pytest.raises(boad.Error, match="out of range"):
        comm.reduce(np.zeros(3), root=comm.size + 5)
    with pytest.raises(boad.Error, match="root -1 is out of range"):
        comm.bcast(np.zeros(3), root=-1)


def test_wrong_recv_size(comm):
    with pytest.raises(boad.Error, match=f"rank {comm.rank}: the receive buffer has 2 elements but 3"):
        comm.allreduce(np.zeros(3), np.zeros(2))
    with pytest.raises(boad.Error, match="receive buffer"):
        comm.allgather(np.zeros(3), np.zeros(3 * comm.size + 1))


def test_rejected_argument_fails_the_other_ranks_fast(comm):
    """Rank 1 passes a non-contiguous array: it gets ValueError, and the others, whose arrays are
    fine, get boad.Error at once (not after BOAD_TIMEOUT_MS). Then the job goes on."""
    import time

    if comm.size == 1:
        pytest.skip("needs a second rank")
    timeout = int(os.environ.get("BOAD_TIMEOUT_MS", "60000")) / 1000
    buf = np.full(20, comm.rank, dtype=np.float64)
    comm.barrier()  # start together: the time below is the allreduce's
    start = time.monotonic()
    if comm.rank == 1:
        with pytest.raises(ValueError, match="C-contiguous"):
            comm.allreduce(buf[::2])
    else:
        with pytest.raises(boad.Error, match="failed on rank 1: rank 1: allreduce: send is not C-contiguous"):
            comm.allreduce(buf[:10])
    took = time.monotonic() - start
    assert took < timeout / 4, f"the failed allreduce took {took:.1f} s (BOAD_TIMEOUT_MS={timeout * 1000:.0f})"
    assert comm.barrier() is None
    ok = comm.allreduce(np.full(3, comm.rank, dtype=np.int32))
    np.testing.assert_array_equal(ok, comm.size * (comm.size - 1) // 2)


def test_usable_after_errors(comm):
    buf = np.full(3, comm.rank, dtype=np.int32)
    comm.allreduce(buf)
    np.testing.assert_array_equal(buf, comm.size * (comm.size - 1) // 2)


# ----- lifecycle, in a job of one rank of its own -----

LIFECYCLE = r"""
import numpy as np, boad
c = boad.init()
assert (c.rank, c.size) == (0, 1)
with c:
    x = np.arange(3.0)
    c.allreduce(x)
assert c.finalized and "finalized" in repr(c)
c.finalize()  # again: nothing
for call in (c.barrier, lambda: c.allreduce(np.ones(2)), boad.init):
    try:
        call()
    except boad.Error as e:
        assert "finalized" in str(e), e
    else:
        raise AssertionError("no error after finalize")
print("lifecycle ok")
"""


def test_lifecycle_in_a_job_of_one():
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOAD_")}
    r = subprocess.run([sys.executable, "-c", LIFECYCLE], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "lifecycle ok" in r.stdout


def test_exit_without_finalize_in_a_job_of_one():
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOAD_")}
    code = "import numpy as np, boad; c = boad.init(); c.barrier(); print('done')"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "done", r.stderr


def test_gil_is_released_during_a_collective(comm):
    """While a barrier waits for a late rank, other threads of the waiting ranks keep running."""
    import time

    if comm.size == 1:
        pytest.skip("needs a late peer")
    if comm.rank == 0:
        time.sleep(0.5)
        comm.barrier()
        return
    t = threading.Thread(target=comm.barrier)
    spins = 0
    t.start()
    while t.is_alive():
        spins += 1
    t.join()
    assert spins > 10_000, f"only {spins} iterations ran while the barrier waited"
