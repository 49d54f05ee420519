//! `boad._boad`: the native half of the `boad` Python package (see `python/python/boad`).
//!
//! Collectives take NumPy arrays and work on their memory directly (no copy): arrays must be
//! C-contiguous, of one of the ten boad dtypes, and writable where they receive data. The GIL is
//! released while a collective runs.
#![deny(missing_docs)]

use std::sync::{Mutex, PoisonError};

use boad::{Coll, Communicator, DType, Op};
use numpy::{
    Element as NpElement, IxDyn, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods,
    PyReadonlyArrayDyn, PyReadwriteArrayDyn, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};

pyo3::create_exception!(
    boad,
    Error,
    PyRuntimeError,
    "A collective (or joining the job) failed. The message names the rank that saw the error."
);

fn boad_err(e: boad::Error) -> PyErr {
    Error::new_err(e.to_string())
}

/// Why a collective method failed.
enum Failed {
    /// An argument was rejected before the collective ran here (`?` on a check gives this); the
    /// other ranks are told (see `PyCommunicator::collective`).
    Rejected(PyErr),
    /// The collective ran and failed (or the communicator is finalized): already known everywhere
    /// it needs to be.
    Ran(PyErr),
}

impl From<PyErr> for Failed {
    fn from(e: PyErr) -> Failed {
        Failed::Rejected(e)
    }
}

/// Calls `$f::<T>(args)` with `T` the Rust type of `$dtype`.
macro_rules! dispatch {
    ($dtype:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $dtype {
            DType::I8 => $f::<i8>($($arg),*),
            DType::I16 => $f::<i16>($($arg),*),
            DType::I32 => $f::<i32>($($arg),*),
            DType::I64 => $f::<i64>($($arg),*),
            DType::U8 => $f::<u8>($($arg),*),
            DType::U16 => $f::<u16>($($arg),*),
            DType::U32 => $f::<u32>($($arg),*),
            DType::U64 => $f::<u64>($($arg),*),
            DType::F32 => $f::<f32>($($arg),*),
            DType::F64 => $f::<f64>($($arg),*),
        }
    };
}

fn descr<T: NpElement>(py: Python<'_>) -> Bound<'_, numpy::PyArrayDescr> {
    numpy::dtype::<T>(py)
}

/// A collective's array argument, checked: a C-contiguous ndarray of a boad dtype.
struct Arr<'py> {
    arr: Bound<'py, PyUntypedArray>,
    dtype: DType,
    name: &'static str,
}

impl<'py> Arr<'py> {
    fn new(obj: &Bound<'py, PyAny>, name: &'static str) -> PyResult<Arr<'py>> {
        let arr = obj.cast::<PyUntypedArray>().map_err(|_| {
            let ty = obj
                .get_type()
                .name()
                .map_or_else(|_| "?".to_owned(), |n| n.to_string());
            PyTypeError::new_err(format!("{name} must be a numpy.ndarray, not {ty}"))
        })?;
        let py = obj.py();
        let d = arr.dtype();
        let dtype = DType::ALL
            .into_iter()
            .find(|t| d.is_equiv_to(&dispatch!(*t, descr(py))))
            .ok_or_else(|| {
                PyTypeError::new_err(format!(
                    "{name} has dtype {d}; boad supports int8, int16, int32, int64, uint8, uint16, uint32, \
                     uint64, float32 and float64 in native byte order"
                ))
            })?;
        if !arr.is_c_contiguous() {
            return Err(PyValueError::new_err(format!(
                "{name} is not C-contiguous; pass numpy.ascontiguousarray({name}) (and copy the result back)"
            )));
        }
        Ok(Arr {
            arr: arr.clone(),
            dtype,
            name,
        })
    }

    /// Checks that `other` has this array's dtype (a receive buffer must match the send buffer).
    fn same_dtype(&self, other: &Arr<'_>) -> PyResult<()> {
        if self.dtype != other.dtype {
            return Err(PyTypeError::new_err(format!(
                "{} has dtype {} but {} has dtype {}; they must be the same",
                other.name,
                other.arr.dtype(),
                self.name,
                self.arr.dtype()
            )));
        }
        Ok(())
    }

    fn typed<T: NpElement>(&self) -> PyResult<&Bound<'py, PyArrayDyn<T>>> {
        self.arr.cast::<PyArrayDyn<T>>().map_err(|_| {
            PyTypeError::new_err(format!("{} does not have the dtype it reports", self.name))
        })
    }

    fn borrow_err(&self, e: numpy::BorrowError) -> PyErr {
        match e {
            numpy::BorrowError::NotWriteable => PyValueError::new_err(format!(
                "{} is read-only but receives the result (pass a writable array)",
                self.name
            )),
            _ => PyValueError::new_err(format!(
                "{} overlaps another array of this call (or is in use by another thread); \
                 to work in place, pass the same array for both",
                self.name
            )),
        }
    }

    fn read<T: NpElement>(&self) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
        self.typed::<T>()?
            .try_readonly()
            .map_err(|e| self.borrow_err(e))
    }

    fn write<T: NpElement>(&self) -> PyResult<PyReadwriteArrayDyn<'py, T>> {
        self.typed::<T>()?
            .try_readwrite()
            .map_err(|e| self.borrow_err(e))
    }
}

/// The bytes of a borrowed C-contiguous array.
fn bytes<'a, T: NpElement>(a: &'a PyReadonlyArrayDyn<'_, T>) -> &'a [u8] {
    let n = a.len() * std::mem::size_of::<T>();
    if n == 0 {
        return &[];
    }
    // SAFETY: the array is C-contiguous (checked by `Arr::new`), so its `len()` elements are the
    // `n` bytes at `data()`, valid while the borrow `a` lives; rust-numpy's borrow tracking
    // guarantees no writable borrow of them exists meanwhile. u8 has no alignment requirement.
    unsafe { std::slice::from_raw_parts(a.data().cast::<u8>(), n) }
}

/// The bytes of a mutably borrowed C-contiguous array.
fn bytes_mut<'a, T: NpElement>(a: &'a mut PyReadwriteArrayDyn<'_, T>) -> &'a mut [u8] {
    let n = a.len() * std::mem::size_of::<T>();
    if n == 0 {
        return &mut [];
    }
    // SAFETY: as in `bytes`; the readwrite borrow guarantees no other borrow of these bytes, and
    // the array is writable.
    unsafe { std::slice::from_raw_parts_mut(a.data().cast::<u8>(), n) }
}

/// The world communicator (`boad.init()`): this process's rank in the job and its collectives.
///
/// Collectives release the GIL while they run; calls from several threads are serialised, but every
/// rank must still call the same collectives in the same order.
#[pyclass(name = "Communicator", module = "boad", frozen)]
struct PyCommunicator {
    /// None once finalized.
    inner: Mutex<Option<Communicator>>,
    rank: usize,
    size: usize,
    last_path: Mutex<Option<&'static str>>,
}

static WORLD: PyOnceLock<Py<PyCommunicator>> = PyOnceLock::new();

impl PyCommunicator {
    /// Runs `f` on the communicator with the GIL released.
    fn run<R: Send>(
        &self,
        py: Python<'_>,
        f: impl Send + FnOnce(&mut Communicator) -> boad::Result<R>,
    ) -> PyResult<R> {
        let r = py.detach(|| {
            let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let comm = g.as_mut().ok_or(None)?;
            let r = f(comm);
            if let Some(p) = comm.last_path() {
                *self
                    .last_path
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(p.name());
            }
            r.map_err(Some)
        });
        r.map_err(|e| match e {
            Some(e) => boad_err(e),
            None => self.finalized_err(),
        })
    }

    /// [`run`](Self::run) in a collective method: its error is [`Failed::Ran`].
    fn run_collective<R: Send>(
        &self,
        py: Python<'_>,
        f: impl Send + FnOnce(&mut Communicator) -> boad::Result<R>,
    ) -> Result<R, Failed> {
        self.run(py, f).map_err(Failed::Ran)
    }

    /// Runs `body`, the collective method of `coll`. If it rejects an argument (the collective did
    /// not run here), the collective fails at once on the other ranks too, which would otherwise
    /// wait for this one until `BOAD_TIMEOUT_MS`; the caller gets the rejection's exception.
    fn collective<R>(
        &self,
        py: Python<'_>,
        coll: Coll,
        body: impl FnOnce() -> Result<R, Failed>,
    ) -> PyResult<R> {
        match body() {
            Ok(r) => Ok(r),
            Err(Failed::Ran(e)) => Err(e),
            Err(Failed::Rejected(e)) => {
                let msg = e.value(py).to_string();
                // The core adds "rank N: " itself (the root check's message already has it).
                let prefix = format!("rank {}: ", self.rank);
                let what = format!(
                    "{}: {}",
                    coll.name(),
                    msg.strip_prefix(&prefix).unwrap_or(&msg)
                );
                py.detach(|| {
                    let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some(comm) = g.as_mut() {
                        comm.fail_collective(coll, what);
                    }
                });
                Err(e)
            }
        }
    }

    fn finalized_err(&self) -> PyErr {
        Error::new_err(format!(
            "rank {}: the communicator has been finalized",
            self.rank
        ))
    }

    fn is_finalized(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }

    fn op(&self, op: i64) -> PyResult<Op> {
        u8::try_from(op)
            .ok()
            .and_then(Op::from_code)
            .ok_or_else(|| {
                PyValueError::new_err(format!("op {op} is not a boad op (boad.SUM ... boad.LOR)"))
            })
    }

    /// A negative root fails here, with the core's wording; one past the job is left to the core,
    /// which tells the other ranks the collective failed.
    fn root(&self, root: i64) -> PyResult<usize> {
        usize::try_from(root).map_err(|_| {
            Error::new_err(format!(
                "rank {}: root {root} is out of range for a communicator of {} ranks",
                self.rank, self.size
            ))
        })
    }
}

fn bcast_t<T: NpElement>(
    py: Python<'_>,
    c: &PyCommunicator,
    buf: &Arr<'_>,
    root: usize,
) -> Result<(), Failed> {
    let mut b = buf.write::<T>()?;
    let bytes = bytes_mut(&mut b);
    let dtype = buf.dtype;
    c.run_collective(py, |comm| comm.bcast_raw(bytes, dtype, root))
}

fn reduce_t<T: NpElement>(
    py: Python<'_>,
    c: &PyCommunicator,
    send: &Arr<'_>,
    recv: Option<&Arr<'_>>,
    op: Op,
    root: usize,
) -> Result<(), Failed> {
    let dtype = send.dtype;
    match recv {
        // recv is send: in place (on the root; elsewhere the array is only read).
        None => {
            let mut b = send.write::<T>()?;
            let bytes = bytes_mut(&mut b);
            c.run_collective(py, |comm| comm.reduce_in_place_raw(bytes, dtype, op, root))
        }
        Some(recv) => {
            let mut r = recv.write::<T>()?;
            let s = send.read::<T>()?;
            let (sb, rb) = (bytes(&s), bytes_mut(&mut r));
            c.run_collective(py, |comm| comm.reduce_raw(sb, Some(rb), dtype, op, root))
        }
    }
}

fn reduce_nonroot_t<T: NpElement>(
    py: Python<'_>,
    c: &PyCommunicator,
    send: &Arr<'_>,
    op: Op,
    root: usize,
) -> Result<(), Failed> {
    let s = send.read::<T>()?;
    let sb = bytes(&s);
    let dtype = send.dtype;
    c.run_collective(py, |comm| comm.reduce_raw(sb, None, dtype, op, root))
}

fn allreduce_t<T: NpElement>(
    py: Python<'_>,
    c: &PyCommunicator,
    send: &Arr<'_>,
    recv: Option<&Arr<'_>>,
    op: Op,
) -> Result<(), Failed> {
    let dtype = send.dtype;
    match recv {
        None => {
            let mut b = send.write::<T>()?;
            let bytes = bytes_mut(&mut b);
            c.run_collective(py, |comm| comm.allreduce_in_place_raw(bytes, dtype, op))
        }
        Some(recv) => {
            let mut r = recv.write::<T>()?;
            let s = send.read::<T>()?;
            let (sb, rb) = (bytes(&s), bytes_mut(&mut r));
            c.run_collective(py, |comm| comm.allreduce_raw(sb, rb, dtype, op))
        }
    }
}

fn allgather_t<T: NpElement>(
    py: Python<'_>,
    c: &PyCommunicator,
    send: &Arr<'_>,
    recv: &Arr<'_>,
) -> Result<(), Failed> {
    let mut r = recv.write::<T>()?;
    let s = send.read::<T>()?;
    let (sb, rb) = (bytes(&s), bytes_mut(&mut r));
    let dtype = send.dtype;
    c.run_collective(py, |comm| comm.allgather_raw(sb, rb, dtype))
}

/// A new zeroed C-contiguous array of `dtype` and `shape`.
fn zeros<'py>(py: Python<'py>, dtype: DType, shape: &[usize]) -> Bound<'py, PyAny> {
    fn z<'py, T: NpElement>(py: Python<'py>, shape: &[usize]) -> Bound<'py, PyAny> {
        PyArrayDyn::<T>::zeros(py, IxDyn(shape), false).into_any()
    }
    dispatch!(dtype, z(py, shape))
}

fn is_same(a: &Bound<'_, PyAny>, b: Option<&Bound<'_, PyAny>>) -> bool {
    b.is_some_and(|b| a.is(b))
}

#[pymethods]
impl PyCommunicator {
    /// This process's rank, in ``range(size)``.
    #[getter]
    fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks in the job.
    #[getter]
    fn size(&self) -> usize {
        self.size
    }

    /// The data path the last completed collective took (``"udp"``), or None before the first.
    #[getter]
    fn last_path(&self) -> Option<&'static str> {
        *self
            .last_path
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// True once :meth:`finalize` has been called.
    #[getter]
    fn finalized(&self) -> bool {
        self.is_finalized()
    }

    /// Copies ``buf`` on ``root`` into ``buf`` on every other rank, in place; returns ``buf``.
    #[pyo3(signature = (buf, root = 0))]
    fn bcast<'py>(
        &self,
        py: Python<'py>,
        buf: Bound<'py, PyAny>,
        root: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.collective(py, Coll::Bcast, || {
            let a = Arr::new(&buf, "buf")?;
            let root = self.root(root)?;
            dispatch!(a.dtype, bcast_t(py, self, &a, root))?;
            Ok(buf)
        })
    }

    /// Reduces every rank's ``send`` with ``op`` onto ``root``.
    ///
    /// On the root, returns ``recv`` holding the result (a new array shaped like ``send`` if
    /// ``recv`` is None; ``recv=send`` works in place); on the other ranks returns None and
    /// ignores ``recv``.
    #[pyo3(signature = (send, recv = None, op = 0, root = 0))]
    fn reduce<'py>(
        &self,
        py: Python<'py>,
        send: Bound<'py, PyAny>,
        recv: Option<Bound<'py, PyAny>>,
        op: i64,
        root: i64,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.collective(py, Coll::Reduce, || {
            let s = Arr::new(&send, "send")?;
            let op = self.op(op)?;
            let root = self.root(root)?;
            if self.rank != root {
                dispatch!(s.dtype, reduce_nonroot_t(py, self, &s, op, root))?;
                return Ok(None);
            }
            if is_same(&send, recv.as_ref()) {
                dispatch!(s.dtype, reduce_t(py, self, &s, None, op, root))?;
                return Ok(Some(send));
            }
            let recv = match recv {
                Some(r) => r,
                None => zeros(py, s.dtype, s.arr.shape()),
            };
            let r = Arr::new(&recv, "recv")?;
            s.same_dtype(&r)?;
            dispatch!(s.dtype, reduce_t(py, self, &s, Some(&r), op, root))?;
            Ok(Some(recv))
        })
    }

    /// Reduces every rank's ``send`` with ``op`` into the result on every rank.
    ///
    /// With ``recv`` None (or ``recv=send``) it works in place: ``send`` receives the result and
    /// is returned. Otherwise ``recv`` (same dtype and size) receives it and is returned.
    #[pyo3(signature = (send, recv = None, op = 0))]
    fn allreduce<'py>(
        &self,
        py: Python<'py>,
        send: Bound<'py, PyAny>,
        recv: Option<Bound<'py, PyAny>>,
        op: i64,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.collective(py, Coll::Allreduce, || {
            let s = Arr::new(&send, "send")?;
            let op = self.op(op)?;
            match recv {
                Some(recv) if !send.is(&recv) => {
                    let r = Arr::new(&recv, "recv")?;
                    s.same_dtype(&r)?;
                    dispatch!(s.dtype, allreduce_t(py, self, &s, Some(&r), op))?;
                    Ok(recv)
                }
                _ => {
                    dispatch!(s.dtype, allreduce_t(py, self, &s, None, op))?;
                    Ok(send)
                }
            }
        })
    }

    /// Gathers every rank's ``send`` on every rank, in rank order.
    ///
    /// Returns ``recv``: a new array of shape ``(size, *send.shape)`` if None, else the given
    /// array (same dtype, ``size * send.size`` elements, any shape).
    #[pyo3(signature = (send, recv = None))]
    fn allgather<'py>(
        &self,
        py: Python<'py>,
        send: Bound<'py, PyAny>,
        recv: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.collective(py, Coll::Allgather, || {
            let s = Arr::new(&send, "send")?;
            let recv = match recv {
                Some(r) => r,
                None => {
                    let mut shape = vec![self.size];
                    shape.extend_from_slice(s.arr.shape());
                    zeros(py, s.dtype, &shape)
                }
            };
            let r = Arr::new(&recv, "recv")?;
            s.same_dtype(&r)?;
            dispatch!(s.dtype, allgather_t(py, self, &s, &r))?;
            Ok(recv)
        })
    }

    /// Returns once every rank has called ``barrier``.
    fn barrier(&self, py: Python<'_>) -> PyResult<()> {
        self.run(py, Communicator::barrier)
    }

    /// This rank's traffic counters, as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.run(py, |c| Ok(c.stats()))?;
        let d = PyDict::new(py);
        d.set_item("datagrams_sent", s.datagrams_sent)?;
        d.set_item("datagrams_received", s.datagrams_received)?;
        d.set_item("bytes_sent", s.bytes_sent)?;
        d.set_item("send_calls", s.send_calls)?;
        d.set_item("retransmits", s.retransmits)?;
        d.set_item("dropped_injected", s.dropped_injected)?;
        d.set_item("foreign", s.foreign)?;
        d.set_item("collectives_udp", s.collectives_udp)?;
        d.set_item("collectives_shm", s.collectives_shm)?;
        d.set_item("collectives_kernel", s.collectives_kernel)?;
        d.set_item("collectives_hier", s.collectives_hier)?;
        d.set_item("shm_messages_sent", s.shm_messages_sent)?;
        d.set_item("shm_messages_received", s.shm_messages_received)?;
        d.set_item("futex_waits", s.futex_waits)?;
        d.set_item("kernel_bcast_sends", s.kernel_bcast_sends)?;
        d.set_item("kernel_results", s.kernel_results)?;
        Ok(d)
    }

    /// Delivers what this rank still has to send and leaves the job; later collectives raise
    /// :class:`boad.Error`. Raises an error an earlier collective raised on another rank, if any.
    /// Calling it again does nothing. Called at interpreter exit if the program did not.
    fn finalize(&self, py: Python<'_>) -> PyResult<()> {
        let comm = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match comm {
            Some(c) => py.detach(|| c.finalize()).map_err(boad_err),
            None => Ok(()),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Finalizes; an error of `finalize` is raised only if the block itself did not raise.
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<Bound<'_, PyType>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let r = self.finalize(py);
        if exc_type.is_none() {
            r?;
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let state = if self.is_finalized() {
            " finalized"
        } else {
            ""
        };
        format!(
            "<boad.Communicator rank={} size={}{state}>",
            self.rank, self.size
        )
    }
}

/// Joins the job (the ranks started together by ``boadrun``; without it, a job of one rank) and
/// returns the world communicator. Later calls return the same object; after
/// :meth:`Communicator.finalize` it raises :class:`boad.Error`.
#[pyfunction]
fn init(py: Python<'_>) -> PyResult<Py<PyCommunicator>> {
    let world = WORLD.get_or_try_init(py, || {
        let comm = py.detach(boad::init).map_err(boad_err)?;
        let (rank, size) = (comm.rank(), comm.size());
        Py::new(
            py,
            PyCommunicator {
                inner: Mutex::new(Some(comm)),
                rank,
                size,
                last_path: Mutex::new(None),
            },
        )
    })?;
    let w = world.get();
    if w.is_finalized() {
        return Err(Error::new_err(format!(
            "rank {}: boad.init: the communicator has been finalized; a process joins its job once",
            w.rank
        )));
    }
    Ok(world.clone_ref(py))
}

/// Finalizes the world communicator if it was created and is still active, printing (not raising)
/// an error. Registered with :mod:`atexit` by ``boad/__init__.py``.
#[pyfunction]
fn _finalize_world(py: Python<'_>) {
    if let Some(w) = WORLD.get(py) {
        if let Err(e) = w.get().finalize(py) {
            eprintln!("boad: {}", e.value(py));
        }
    }
}

/// The native module `boad._boad`.
#[pymodule]
fn _boad(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("Error", py.get_type::<Error>())?;
    m.add_class::<PyCommunicator>()?;
    m.add_function(wrap_pyfunction!(init, m)?)?;
    m.add_function(wrap_pyfunction!(_finalize_world, m)?)?;
    for op in Op::ALL {
        m.add(op.name().to_uppercase(), op as u8)?;
    }
    Ok(())
}
