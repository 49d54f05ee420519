//! `boad._boad`: the native half of the `boad` Python package (see `python/python/boad`).
//!
//! Collectives take NumPy arrays and work on their memory directly (no copy): arrays must be
//! C-contiguous, of one of the ten boad dtypes, and writable where they receive data. The GIL is
//! released while a collective runs, so the program's other threads go on meanwhile; two rules
//! keep that safe:
//!
//! - Every array of a call is held until the call returns (`Held`): rust-numpy's borrow (which
//!   refuses overlapping arrays), a buffer export (`PyObject_GetBuffer` with `PyBUF_C_CONTIGUOUS`,
//!   and `PyBUF_WRITABLE` where data is received; `PyBuffer_Release` after), and a weak reference
//!   to the array and to each array its memory belongs to. The export alone does not protect the
//!   memory: NumPy does not count exports, and `ndarray.resize(refcheck=False)` frees the memory of
//!   an exported array; it refuses (`ValueError`) to resize an array that has a weak reference.
//!   The buffer protocol is in the limited API from Python 3.11, hence the `abi3-py311` floor.
//!   Two things stay out of reach short of a copy: NumPy's unpickling hook `ndarray.__setstate__`
//!   replaces (and frees) an array's memory with no check at all (a `memoryview` held on it
//!   crashes as well), and another thread writing the elements meanwhile races on their values.
//! - No call waits while holding the GIL. A call holds the communicator's lock for its whole length
//!   and waits for it (another thread's call) with the GIL released; the properties and `stats()`
//!   read what is kept outside that lock (an atomic flag, and a snapshot refreshed at the end of
//!   every call), so they answer at once while another thread is in a collective.
#![deny(missing_docs)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use boad::{Coll, Communicator, DType, Op, Stats};
use numpy::{
    Element as NpElement, IxDyn, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods,
    PyReadonlyArrayDyn, PyReadwriteArrayDyn, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType, PyWeakrefReference};

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

    /// Holds the array for a call that only reads it.
    fn read<T: NpElement>(&self) -> PyResult<Held<'py, PyReadonlyArrayDyn<'py, T>>> {
        let borrow = self
            .typed::<T>()?
            .try_readonly()
            .map_err(|e| self.borrow_err(e))?;
        self.hold(borrow, false)
    }

    /// Holds the array for a call that writes into it.
    fn write<T: NpElement>(&self) -> PyResult<Held<'py, PyReadwriteArrayDyn<'py, T>>> {
        let borrow = self
            .typed::<T>()?
            .try_readwrite()
            .map_err(|e| self.borrow_err(e))?;
        self.hold(borrow, true)
    }

    /// Exports the array's buffer and pins it (and the arrays owning its memory), keeping `borrow`.
    fn hold<B>(&self, borrow: B, writable: bool) -> PyResult<Held<'py, B>> {
        let export = Export::get(self.arr.as_any(), writable)?;
        let size = self.dtype.size();
        // The export is the array's own view of its memory: it cannot disagree with what NumPy
        // reported (C-contiguous, checked by `new`), short of a broken exporter.
        if export.itemsize() != size || export.len() != self.arr.len() * size {
            return Err(PyValueError::new_err(format!(
                "{} exports {} bytes of {}-byte items, not the {} elements of {} bytes it reports",
                self.name,
                export.len(),
                export.itemsize(),
                self.arr.len(),
                size
            )));
        }
        Ok(Held {
            export,
            _pins: pins(&self.arr)?,
            _borrow: borrow,
        })
    }
}

/// One array of a collective, held from before the GIL is released until the call returns (see
/// the module docs); dropped, with the GIL, in field order.
struct Held<'py, B> {
    /// The buffer export the collective's bytes come from.
    export: Export<'py>,
    /// Weak references to the array and to each array its memory belongs to: while one exists,
    /// NumPy refuses to resize that array, even with `refcheck=False`.
    _pins: Vec<Bound<'py, PyWeakrefReference>>,
    /// rust-numpy's borrow: no other array of this call (or another thread's call) overlaps this
    /// one, unless both only read it.
    _borrow: B,
}

impl<T: NpElement> Held<'_, PyReadonlyArrayDyn<'_, T>> {
    /// The array's bytes.
    fn bytes(&self) -> &[u8] {
        if self.export.len() == 0 {
            return &[];
        }
        // SAFETY: the export is of a C-contiguous buffer (`PyBUF_C_CONTIGUOUS`), so its `len()`
        // bytes at `buf` are the array's memory, which stays allocated while the export and the
        // pins live (as long as `self`: the slice borrows it); the read-only borrow guarantees no
        // writable borrow of these bytes meanwhile. u8 has no alignment requirement.
        unsafe { std::slice::from_raw_parts(self.export.buf().cast::<u8>(), self.export.len()) }
    }
}

impl<T: NpElement> Held<'_, PyReadwriteArrayDyn<'_, T>> {
    /// The array's bytes, to write.
    fn bytes_mut(&mut self) -> &mut [u8] {
        if self.export.len() == 0 {
            return &mut [];
        }
        // SAFETY: as in `bytes`; the export is writable (`PyBUF_WRITABLE`), and the read-write
        // borrow guarantees no other borrow of these bytes while `self` (borrowed mutably) lives.
        unsafe { std::slice::from_raw_parts_mut(self.export.buf().cast::<u8>(), self.export.len()) }
    }
}

/// A buffer export: `PyObject_GetBuffer`, released by `PyBuffer_Release` on drop.
///
/// Not pyo3's `PyBuffer`, which always asks for `PyBUF_FULL_RO` (never `PyBUF_WRITABLE`) and
/// refuses the NULL shape NumPy exports for a 0-d array.
struct Export<'py> {
    /// Boxed: an exporter may point into the struct it fills in, so it must not move.
    view: Box<ffi::Py_buffer>,
    /// The release needs the GIL: an `Export` lives (and is dropped) on an attached thread.
    _py: Python<'py>,
}

impl<'py> Export<'py> {
    /// Exports `obj`'s memory as one C-contiguous block, writable if `writable`.
    fn get(obj: &Bound<'py, PyAny>, writable: bool) -> PyResult<Export<'py>> {
        let mut flags = ffi::PyBUF_C_CONTIGUOUS | ffi::PyBUF_FORMAT;
        if writable {
            flags |= ffi::PyBUF_WRITABLE;
        }
        let mut view = Box::new(ffi::Py_buffer::new());
        // SAFETY: `obj` is a live object and we are attached; `view` is a valid `Py_buffer` to
        // fill in, at an address that does not change until `PyBuffer_Release` (in `drop`).
        if unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut *view, flags) } != 0 {
            // Nothing to release: a failed request leaves no export.
            return Err(PyErr::fetch(obj.py()));
        }
        Ok(Export {
            view,
            _py: obj.py(),
        })
    }

    fn buf(&self) -> *mut std::ffi::c_void {
        self.view.buf
    }

    /// Bytes exported.
    fn len(&self) -> usize {
        usize::try_from(self.view.len).unwrap_or(0)
    }

    fn itemsize(&self) -> usize {
        usize::try_from(self.view.itemsize).unwrap_or(0)
    }
}

impl Drop for Export<'_> {
    fn drop(&mut self) {
        // SAFETY: `view` was filled in by a successful `PyObject_GetBuffer` and is released once,
        // here, on the attached thread this `Export` lives on (its `Python<'py>` makes it !Send).
        unsafe { ffi::PyBuffer_Release(&mut *self.view) }
    }
}

/// Weak references to `arr` and to each array its memory belongs to (its chain of `base` arrays,
/// which NumPy keeps short). The chain is read from the array struct (`PyArray_BASE`, what NumPy's
/// resize checks), not through a `base` attribute a subclass could override.
fn pins<'py>(arr: &Bound<'py, PyUntypedArray>) -> PyResult<Vec<Bound<'py, PyWeakrefReference>>> {
    let py = arr.py();
    let mut pins = Vec::new();
    let mut cur = arr.clone();
    loop {
        pins.push(PyWeakrefReference::new(cur.as_any())?);
        // SAFETY: `cur` is a live ndarray and we are attached; its `base` is NULL or a reference
        // the array owns (and never changes once set), made a new strong reference at once.
        let base =
            unsafe { Bound::from_borrowed_ptr_or_opt(py, (*cur.as_array_ptr()).fields.base) };
        match base.and_then(|b| b.cast_into::<PyUntypedArray>().ok()) {
            Some(b) => cur = b,
            // Not an array: none, or an object that tracks the exports of its memory itself (a
            // memoryview holding one, as `numpy.frombuffer` leaves).
            None => return Ok(pins),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The world communicator (`boad.init()`): this process's rank in the job and its collectives.
///
/// Collectives release the GIL while they run; calls from several threads are serialised, but every
/// rank must still call the same collectives in the same order.
#[pyclass(name = "Communicator", module = "boad", frozen)]
struct PyCommunicator {
    /// None once finalized. A call holds the lock for its whole length, and every wait for it is
    /// made with the GIL released ([`with_comm`](Self::with_comm), `finalize`).
    inner: Mutex<Option<Communicator>>,
    rank: usize,
    size: usize,
    /// Set by `finalize` when it takes the communicator; read without `inner`.
    finalized: AtomicBool,
    /// What the properties report, as the last call left it: refreshed at the end of every call
    /// (under `inner`) and read without `inner`. Locked only to copy it, so never for long.
    seen: Mutex<Seen>,
}

/// A communicator's path and counters as of the end of its last call. Only calls change them (they
/// are the communicator's own fields), so between calls they are current.
#[derive(Clone, Copy)]
struct Seen {
    last_path: Option<&'static str>,
    stats: Stats,
}

impl Seen {
    fn of(comm: &Communicator) -> Seen {
        Seen {
            last_path: comm.last_path().map(|p| p.name()),
            stats: comm.stats(),
        }
    }
}

static WORLD: PyOnceLock<Py<PyCommunicator>> = PyOnceLock::new();

impl PyCommunicator {
    fn new(comm: Communicator) -> PyCommunicator {
        PyCommunicator {
            rank: comm.rank(),
            size: comm.size(),
            finalized: AtomicBool::new(false),
            seen: Mutex::new(Seen::of(&comm)),
            inner: Mutex::new(Some(comm)),
        }
    }

    /// Runs `f` on the communicator with the GIL released (also while waiting for another
    /// thread's call to end), then refreshes what the properties report. None if finalized.
    fn with_comm<R: Send>(
        &self,
        py: Python<'_>,
        f: impl Send + FnOnce(&mut Communicator) -> R,
    ) -> Option<R> {
        py.detach(|| {
            let mut g = lock(&self.inner);
            let comm = g.as_mut()?;
            let r = f(comm);
            *lock(&self.seen) = Seen::of(comm);
            Some(r)
        })
    }

    /// Runs `f` on the communicator with the GIL released.
    fn run<R: Send>(
        &self,
        py: Python<'_>,
        f: impl Send + FnOnce(&mut Communicator) -> boad::Result<R>,
    ) -> PyResult<R> {
        match self.with_comm(py, f) {
            Some(r) => r.map_err(boad_err),
            None => Err(self.finalized_err()),
        }
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
                self.with_comm(py, |comm| {
                    comm.fail_collective(coll, what);
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
        self.finalized.load(Ordering::Acquire)
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
    let bytes = b.bytes_mut();
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
            let bytes = b.bytes_mut();
            c.run_collective(py, |comm| comm.reduce_in_place_raw(bytes, dtype, op, root))
        }
        Some(recv) => {
            let mut r = recv.write::<T>()?;
            let s = send.read::<T>()?;
            let (sb, rb) = (s.bytes(), r.bytes_mut());
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
    let sb = s.bytes();
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
            let bytes = b.bytes_mut();
            c.run_collective(py, |comm| comm.allreduce_in_place_raw(bytes, dtype, op))
        }
        Some(recv) => {
            let mut r = recv.write::<T>()?;
            let s = send.read::<T>()?;
            let (sb, rb) = (s.bytes(), r.bytes_mut());
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
    let (sb, rb) = (s.bytes(), r.bytes_mut());
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
        lock(&self.seen).last_path
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

    /// This rank's traffic counters, as a dict: as the last call left them (while another thread
    /// is in a collective, as they were before it began).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        if self.is_finalized() {
            return Err(self.finalized_err());
        }
        let s = lock(&self.seen).stats;
        let d = PyDict::new(py);
        for (name, value) in s.fields() {
            d.set_item(name, value)?;
        }
        Ok(d)
    }

    /// Delivers what this rank still has to send and leaves the job; later collectives raise
    /// :class:`boad.Error`. Raises an error an earlier collective raised on another rank, if any.
    /// Calling it again does nothing. Called at interpreter exit if the program did not.
    /// Waits (with the GIL released) for a call another thread is making.
    fn finalize(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| {
            let comm = {
                let mut g = lock(&self.inner);
                let comm = g.take();
                if comm.is_some() {
                    self.finalized.store(true, Ordering::Release);
                }
                comm
            };
            comm.map_or(Ok(()), Communicator::finalize)
        })
        .map_err(boad_err)
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
        Py::new(py, PyCommunicator::new(comm))
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

/// What boad finds about the launcher that started this process, as text (lines ending in a
/// newline: ``launcher: boadrun: rank 3 of 4``, ``launcher: no launcher (a job of one rank)``, or
/// ``launcher: error: ...`` saying why its job cannot be joined). Reads the environment only: needs
/// no :func:`init`.
#[pyfunction]
fn check() -> String {
    boad::check()
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
    m.add_function(wrap_pyfunction!(check, m)?)?;
    m.add_function(wrap_pyfunction!(_finalize_world, m)?)?;
    for op in Op::ALL {
        m.add(op.name().to_uppercase(), op as u8)?;
    }
    Ok(())
}
