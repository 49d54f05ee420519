"""boad: MPI-like collectives for Linux, on NumPy arrays.

Start the ranks of a program with ``boadrun -n 4 python app.py``; each joins the job with
:func:`init` (a program started without boadrun is a job of one rank; one that another launcher,
such as Slurm's srun or torchrun, started as one of several gets a :class:`boad.Error` naming it)::

    import numpy as np
    import boad

    comm = boad.init()
    x = np.arange(4, dtype=np.int64) + comm.rank
    comm.allreduce(x)                       # in place, op=boad.SUM
    total = comm.reduce(x, op=boad.MAX, root=0)   # array on rank 0, None elsewhere
    everyone = comm.allgather(np.array([comm.rank]))  # shape (size, 1)
    comm.bcast(x, root=comm.size - 1)       # in place
    comm.barrier()

Arrays are used without copying: they must be C-contiguous (else ``ValueError``), of dtype
int8/16/32/64, uint8/16/32/64, float32 or float64 (else ``TypeError``), and writable where they
receive data (else ``ValueError``). Such a rejected argument also fails the collective at once on
the other ranks, which raise :class:`Error` instead of waiting for this one. A collective that
fails raises :class:`Error` (a ``RuntimeError``) whose message names the rank that saw the error.

The GIL is released while a collective runs. Its arrays are held until it returns: resizing one
meanwhile (even ``ndarray.resize(refcheck=False)``, or the array a view's memory belongs to) raises
``ValueError`` in the thread that tries. Collectives called from several threads run one at a time,
each waiting with the GIL released; the properties and :meth:`Communicator.stats` answer at once
while another thread is in a collective.
"""

import atexit as _atexit
import enum as _enum

from . import _boad
from ._boad import Communicator, Error, __version__, check, init

__all__ = [
    "Communicator",
    "Error",
    "Op",
    "init",
    "check",
    "COMM_WORLD",
    "SUM",
    "PROD",
    "MIN",
    "MAX",
    "BAND",
    "BOR",
    "BXOR",
    "LAND",
    "LOR",
    "__version__",
]


class Op(_enum.IntEnum):
    """Reduction operations. Integer SUM and PROD wrap on overflow; float MIN/MAX return NaN if
    any input is NaN. Bitwise and logical ops take integers only (LAND/LOR give 1 or 0)."""

    SUM = _boad.SUM
    PROD = _boad.PROD
    MIN = _boad.MIN
    MAX = _boad.MAX
    BAND = _boad.BAND
    BOR = _boad.BOR
    BXOR = _boad.BXOR
    LAND = _boad.LAND
    LOR = _boad.LOR


SUM = Op.SUM
PROD = Op.PROD
MIN = Op.MIN
MAX = Op.MAX
BAND = Op.BAND
BOR = Op.BOR
BXOR = Op.BXOR
LAND = Op.LAND
LOR = Op.LOR

#: The world communicator, created by the first access (same object as ``init()``).
COMM_WORLD: Communicator


def __getattr__(name: str) -> Communicator:
    if name == "COMM_WORLD":
        return init()
    raise AttributeError(f"module 'boad' has no attribute {name!r}")


# Like a Rust program dropping its communicator: deliver what this rank still has to send.
_atexit.register(_boad._finalize_world)
