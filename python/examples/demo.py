"""The demo of the README, in Python: every collective once per size, results checked on every
rank, and a table of which path ran and how long it took (median over the iterations, slowest
rank).

    boadrun -n 4 python python/examples/demo.py
"""

import time

import numpy as np

import boad

ITERS = 20


def timed(comm, f):
    """Runs f ITERS times; returns the median in microseconds (maximised over ranks) and the path
    the collective took."""
    t = []
    path = "-"
    for _ in range(ITERS):
        comm.barrier()
        s = time.perf_counter()
        f()
        t.append((time.perf_counter() - s) * 1e6)
        path = comm.last_path or "-"
    m = np.array([np.median(t)])
    comm.allreduce(m, op=boad.MAX)
    return float(m[0]), path


def row(comm, what, timing):
    us, path = timing
    if comm.rank == 0:
        print(f"{what:<38} path={path:<6} {us:>10.1f} us   ok")


def main():
    comm = boad.init()
    rank, size = comm.rank, comm.size
    root = size // 2
    if rank == 0:
        print(f"boad demo (Python): {size} ranks; median of {ITERS} runs, slowest rank")
    for n in (1, 1024, 262_144):
        # bcast from a root other than 0
        want = np.arange(n, dtype=np.float64) * 0.5

        def bcast():
            v = want.copy() if rank == root else np.zeros(n)
            comm.bcast(v, root=root)
            assert np.array_equal(v, want), "bcast result"

        row(comm, f"bcast     {n:>7} x f64 root={root}", timed(comm, bcast))

        # reduce (sum) to the same root
        def reduce():
            send = np.arange(n, dtype=np.int64) + rank
            got = comm.reduce(send, op=boad.SUM, root=root)
            if rank == root:
                assert np.array_equal(got, np.arange(n) * size + size * (size - 1) // 2), "reduce result"
            else:
                assert got is None

        row(comm, f"reduce    {n:>7} x i64 sum root={root}", timed(comm, reduce))

        # allreduce (max), in place
        idx = np.arange(n)
        want_max = np.max([(idx * 7 + r * 13) % 101 for r in range(size)], axis=0).astype(np.float32)

        def allreduce():
            v = ((idx * 7 + rank * 13) % 101).astype(np.float32)
            comm.allreduce(v, op=boad.MAX)
            assert np.array_equal(v, want_max), "allreduce result"

        row(comm, f"allreduce {n:>7} x f32 max", timed(comm, allreduce))

        # allgather
        per = max(n // size, 1)

        def allgather():
            got = comm.allgather(np.full(per, rank, dtype=np.uint32))
            assert np.array_equal(got, np.repeat(np.arange(size), per).reshape(size, per)), "allgather result"

        row(comm, f"allgather {per:>7} x u32 per rank", timed(comm, allgather))

    row(comm, "barrier", timed(comm, comm.barrier))
    if rank == 0:
        print(f"all collectives returned the expected results on all {size} ranks")
    comm.finalize()


if __name__ == "__main__":
    main()
