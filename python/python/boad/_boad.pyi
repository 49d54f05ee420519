"""Type stubs of the native module boad._boad (re-exported by boad)."""

from typing import Optional, TypeVar

import numpy as np
import numpy.typing as npt

__version__: str

SUM: int
PROD: int
MIN: int
MAX: int
BAND: int
BOR: int
BXOR: int
LAND: int
LOR: int

_A = TypeVar("_A", bound=np.ndarray)

class Error(RuntimeError):
    """A collective (or joining the job) failed; the message names the rank that saw it."""

class Communicator:
    """The world communicator: this process's rank in the job and its collectives."""

    @property
    def rank(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def last_path(self) -> Optional[str]:
        """Data path of the last completed collective ("udp", "shm", "kernel", "hier" or "hier-kernel"), None before the first."""
    @property
    def finalized(self) -> bool: ...
    def bcast(self, buf: _A, root: int = 0) -> _A:
        """Copies buf on root into buf on every rank (in place); returns buf."""
    def reduce(
        self, send: npt.NDArray[np.generic], recv: Optional[np.ndarray] = None, op: int = 0, root: int = 0
    ) -> Optional[np.ndarray]:
        """Reduces every rank's send onto root: returns recv there (allocated if None; recv=send
        works in place), None on the other ranks."""
    def allreduce(self, send: np.ndarray, recv: Optional[np.ndarray] = None, op: int = 0) -> np.ndarray:
        """Reduces every rank's send into the result on every rank: in place (returns send) when
        recv is None or send, else into recv (returned)."""
    def allgather(self, send: np.ndarray, recv: Optional[np.ndarray] = None) -> np.ndarray:
        """Gathers every rank's send, in rank order: a new array of shape (size, *send.shape) if
        recv is None, else recv."""
    def barrier(self) -> None: ...
    def stats(self) -> dict[str, int]:
        """This rank's traffic counters, as of the last completed call."""
    def finalize(self) -> None: ...
    def __enter__(self) -> "Communicator": ...
    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool: ...

def init() -> Communicator:
    """Joins the job and returns the world communicator (the same object on every call)."""

def check() -> str:
    """Which launcher started this process, as boad sees it (``launcher: ...`` lines); no init
    needed."""

def _finalize_world() -> None: ...
