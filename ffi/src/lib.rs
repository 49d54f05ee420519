//! C API of boad: `libboad.so` / `libboad.a` with the header `boad.h` (generated from this file by
//! cbindgen, see `ffi/gen-header.sh`).
//!
//! Conventions (those of rustls-ffi): every function has the `boad_` prefix and returns a
//! `boad_result` (except `boad_strerror`, `boad_last_error_message` and `boad_version`);
//! enum arguments are taken as plain integers and checked, so a bad value is an error code, never
//! undefined behaviour; a NULL pointer where `count > 0` needs memory is `BOAD_ERR_NULL_POINTER`;
//! no panic crosses the C boundary (it becomes `BOAD_ERR_PANIC`).
//!
//! There is one communicator per process, the world (MPI style): `boad_init` joins the job,
//! `boad_finalize` leaves it, and the collectives in between use it. Calls from several threads
//! are serialised; every rank must still call the same collectives in the same order.
#![deny(missing_docs)]
// The C names (`boad_result`, `BOAD_OK`, ...) are the API.
#![allow(non_camel_case_types)]

mod state;

use std::ffi::{c_char, c_int, c_void, CStr};

use boad::{Coll, CollectiveError, Communicator, DType, Error, ErrorKind, Op, UsageError};

use state::{guard, with_comm, Fail};

/// What every `boad_` function returns (`BOAD_OK` is 0). `boad_strerror` describes a code;
/// `boad_last_error_message` gives the full message of the calling thread's last failure, which
/// names the rank that saw it.
///
/// Argument errors a rank can see alone (NULL pointer, unknown dtype or op code, negative root,
/// overlapping buffers) are returned to the caller with their code, and the collective fails at
/// once on the other ranks too (`BOAD_ERR_ABORTED`, the message says why) instead of waiting for
/// this one until `BOAD_TIMEOUT_MS`. Those the collective finds (op not defined on the dtype, root
/// not below the size, ranks calling different collectives) are reported on every rank as well.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum boad_result {
    /// Success.
    BOAD_OK = 0,
    /// `boad_init` has not been called (or did not succeed).
    BOAD_ERR_NOT_INITIALIZED = 1,
    /// A pointer argument is NULL where memory is needed.
    BOAD_ERR_NULL_POINTER = 2,
    /// The dtype argument is not a `boad_dtype`.
    BOAD_ERR_INVALID_DTYPE = 3,
    /// The op argument is not a `boad_op`, or the op is not defined on the dtype (bitwise and
    /// logical ops take integers only).
    BOAD_ERR_INVALID_OP = 4,
    /// The root is not a rank of the job.
    BOAD_ERR_INVALID_ROOT = 5,
    /// A buffer is unusable: its size overflows, the send and receive buffers overlap, or
    /// `BOAD_IN_PLACE` is passed where it is not allowed.
    BOAD_ERR_BUFFER = 6,
    /// A peer sent nothing for `BOAD_TIMEOUT_MS`.
    BOAD_ERR_TIMEOUT = 7,
    /// A peer exited before sending what this rank needed.
    BOAD_ERR_PEER_EXITED = 8,
    /// Ranks called different collectives, or with different count, dtype, op or root.
    BOAD_ERR_MISMATCH = 9,
    /// The collective failed on another rank (the message says why).
    BOAD_ERR_ABORTED = 10,
    /// A socket call failed.
    BOAD_ERR_TRANSPORT = 11,
    /// Joining the job failed (launcher environment or rendezvous).
    BOAD_ERR_BOOTSTRAP = 12,
    /// A `BOAD_*` environment setting is invalid.
    BOAD_ERR_CONFIG = 13,
    /// A peer sent data inconsistent with the collective.
    BOAD_ERR_PROTOCOL = 14,
    /// `boad_finalize` has already been called.
    BOAD_ERR_FINALIZED = 15,
    /// Internal error: a panic was caught at the C boundary.
    BOAD_ERR_PANIC = 16,
}

impl boad_result {
    /// Every code, in order (the code of `ALL[i]` is `i`).
    pub const ALL: [boad_result; 17] = {
        use boad_result::*;
        [
            BOAD_OK,
            BOAD_ERR_NOT_INITIALIZED,
            BOAD_ERR_NULL_POINTER,
            BOAD_ERR_INVALID_DTYPE,
            BOAD_ERR_INVALID_OP,
            BOAD_ERR_INVALID_ROOT,
            BOAD_ERR_BUFFER,
            BOAD_ERR_TIMEOUT,
            BOAD_ERR_PEER_EXITED,
            BOAD_ERR_MISMATCH,
            BOAD_ERR_ABORTED,
            BOAD_ERR_TRANSPORT,
            BOAD_ERR_BOOTSTRAP,
            BOAD_ERR_CONFIG,
            BOAD_ERR_PROTOCOL,
            BOAD_ERR_FINALIZED,
            BOAD_ERR_PANIC,
        ]
    };

    /// The result with code `code`.
    pub fn from_code(code: u32) -> Option<boad_result> {
        usize::try_from(code)
            .ok()
            .and_then(|i| Self::ALL.get(i))
            .copied()
    }
}

/// Element type of a buffer. The codes are those of the wire format (`boad::DType`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum boad_dtype {
    /// `int8_t`
    BOAD_I8 = 0,
    /// `int16_t`
    BOAD_I16 = 1,
    /// `int32_t`
    BOAD_I32 = 2,
    /// `int64_t`
    BOAD_I64 = 3,
    /// `uint8_t`
    BOAD_U8 = 4,
    /// `uint16_t`
    BOAD_U16 = 5,
    /// `uint32_t`
    BOAD_U32 = 6,
    /// `uint64_t`
    BOAD_U64 = 7,
    /// `float`
    BOAD_F32 = 8,
    /// `double`
    BOAD_F64 = 9,
}

/// Reduction operation. The codes are those of the wire format (`boad::Op`).
///
/// Integer `SUM` and `PROD` wrap on overflow; float `MIN`/`MAX` return NaN if any input is NaN.
/// Bitwise and logical ops take integers only (`LAND`/`LOR` give 1 or 0).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum boad_op {
    /// Sum.
    BOAD_SUM = 0,
    /// Product.
    BOAD_PROD = 1,
    /// Minimum.
    BOAD_MIN = 2,
    /// Maximum.
    BOAD_MAX = 3,
    /// Bitwise and.
    BOAD_BAND = 4,
    /// Bitwise or.
    BOAD_BOR = 5,
    /// Bitwise xor.
    BOAD_BXOR = 6,
    /// Logical and.
    BOAD_LAND = 7,
    /// Logical or.
    BOAD_LOR = 8,
}

// The C codes are the core's codes, and `boad_result::ALL[i]` has code `i`.
const _: () = {
    let d = [
        (boad_dtype::BOAD_I8, DType::I8),
        (boad_dtype::BOAD_I16, DType::I16),
        (boad_dtype::BOAD_I32, DType::I32),
        (boad_dtype::BOAD_I64, DType::I64),
        (boad_dtype::BOAD_U8, DType::U8),
        (boad_dtype::BOAD_U16, DType::U16),
        (boad_dtype::BOAD_U32, DType::U32),
        (boad_dtype::BOAD_U64, DType::U64),
        (boad_dtype::BOAD_F32, DType::F32),
        (boad_dtype::BOAD_F64, DType::F64),
    ];
    let mut i = 0;
    while i < d.len() {
        assert!(d[i].0 as u32 == d[i].1 as u32);
        i += 1;
    }
    let o = [
        (boad_op::BOAD_SUM, Op::Sum),
        (boad_op::BOAD_PROD, Op::Prod),
        (boad_op::BOAD_MIN, Op::Min),
        (boad_op::BOAD_MAX, Op::Max),
        (boad_op::BOAD_BAND, Op::Band),
        (boad_op::BOAD_BOR, Op::Bor),
        (boad_op::BOAD_BXOR, Op::Bxor),
        (boad_op::BOAD_LAND, Op::Land),
        (boad_op::BOAD_LOR, Op::Lor),
    ];
    let mut i = 0;
    while i < o.len() {
        assert!(o[i].0 as u32 == o[i].1 as u32);
        i += 1;
    }
    let mut i = 0;
    while i < boad_result::ALL.len() {
        assert!(boad_result::ALL[i] as usize == i);
        i += 1;
    }
};

// Argument types: plain integers in Rust (any value is valid, and checked), shown in the header as
// the enum's typedef (cbindgen.toml renames them and does not emit them).
/// A `boad_dtype` as passed by C.
pub type DTypeArg = u32;
/// A `boad_op` as passed by C.
pub type OpArg = u32;
/// A `boad_result` as passed by C.
pub type ResultArg = u32;

/// `BOAD_IN_PLACE` (`(const void *)1` in the header).
const IN_PLACE: usize = 1;

/// The code of a core error.
pub(crate) fn code_of(e: &Error) -> boad_result {
    use boad_result::*;
    match e.kind() {
        ErrorKind::Join(_) => BOAD_ERR_BOOTSTRAP,
        ErrorKind::Usage(u) => match u {
            UsageError::InvalidRoot { .. } => BOAD_ERR_INVALID_ROOT,
            UsageError::OpNotSupported { .. } => BOAD_ERR_INVALID_OP,
            UsageError::Config { .. } => BOAD_ERR_CONFIG,
            // `Invalid` only comes from `Communicator::fail_collective`, for an argument this
            // library rejected: the caller gets that rejection's own code (see `collective`).
            _ => BOAD_ERR_BUFFER,
        },
        ErrorKind::Collective(c) => match c {
            CollectiveError::Timeout { .. } => BOAD_ERR_TIMEOUT,
            CollectiveError::PeerExited { .. } | CollectiveError::PeerGone { .. } => {
                BOAD_ERR_PEER_EXITED
            }
            CollectiveError::Mismatch { .. } => BOAD_ERR_MISMATCH,
            CollectiveError::Aborted { .. } => BOAD_ERR_ABORTED,
            _ => BOAD_ERR_PROTOCOL,
        },
        _ => BOAD_ERR_TRANSPORT,
    }
}

/// An argument of a collective that this library rejects before calling the core: the code the
/// caller gets and what was wrong (starting with the C function's name).
struct Reject {
    code: boad_result,
    what: String,
}

/// One call's context, for the messages of errors found before anything is sent.
struct Call {
    name: &'static str,
    rank: usize,
}

impl Call {
    fn new(name: &'static str, comm: &Communicator) -> Call {
        Call {
            name,
            rank: comm.rank(),
        }
    }

    /// An error of a call that is not a collective (nothing to tell the other ranks).
    fn fail(&self, code: boad_result, what: impl std::fmt::Display) -> Fail {
        Fail::new(code, format!("rank {}: {}: {what}", self.rank, self.name))
    }

    /// A rejected argument of a collective (see `collective`).
    fn reject(&self, code: boad_result, what: impl std::fmt::Display) -> Reject {
        Reject {
            code,
            what: format!("{}: {what}", self.name),
        }
    }

    fn dtype(&self, code: DTypeArg) -> Result<DType, Reject> {
        u8::try_from(code)
            .ok()
            .and_then(DType::from_code)
            .ok_or_else(|| {
                self.reject(
                    boad_result::BOAD_ERR_INVALID_DTYPE,
                    format_args!("{code} is not a boad_dtype"),
                )
            })
    }

    fn op(&self, code: OpArg) -> Result<Op, Reject> {
        u8::try_from(code)
            .ok()
            .and_then(Op::from_code)
            .ok_or_else(|| {
                self.reject(
                    boad_result::BOAD_ERR_INVALID_OP,
                    format_args!("{code} is not a boad_op"),
                )
            })
    }

    /// A negative root is rejected here; one past the job is left to the core, which tells the
    /// other ranks.
    fn root(&self, root: c_int, size: usize) -> Result<usize, Reject> {
        usize::try_from(root).map_err(|_| {
            self.reject(
                boad_result::BOAD_ERR_INVALID_ROOT,
                format_args!("root {root} is out of range for a communicator of {size} ranks"),
            )
        })
    }

    /// Bytes of `count` elements of `dtype` (times `blocks`).
    fn bytes(&self, count: usize, blocks: usize, dtype: DType) -> Result<usize, Reject> {
        count
            .checked_mul(blocks)
            .and_then(|n| n.checked_mul(dtype.size()))
            .filter(|b| isize::try_from(*b).is_ok())
            .ok_or_else(|| {
                self.reject(
                    boad_result::BOAD_ERR_BUFFER,
                    format_args!("count {count} of {dtype} is too large for memory"),
                )
            })
    }

    fn check_ptr(&self, ptr: usize, len: usize, what: &str) -> Result<(), Reject> {
        if len > 0 && ptr == 0 {
            return Err(self.reject(
                boad_result::BOAD_ERR_NULL_POINTER,
                format_args!("{what} is NULL but {len} bytes are needed"),
            ));
        }
        if ptr == IN_PLACE {
            return Err(self.reject(
                boad_result::BOAD_ERR_BUFFER,
                format_args!(
                    "BOAD_IN_PLACE is not a valid {what} (only a send buffer can be BOAD_IN_PLACE)"
                ),
            ));
        }
        Ok(())
    }

    /// The `len` bytes at `ptr` (empty if `len` is 0, whatever `ptr` is).
    ///
    /// # Safety
    /// Unless `len` is 0 or `ptr` is NULL or `BOAD_IN_PLACE` (errors), `ptr` must be valid for
    /// reads of `len` bytes, not written by anyone while the returned slice lives.
    unsafe fn input<'a>(
        &self,
        ptr: *const c_void,
        len: usize,
        what: &str,
    ) -> Result<&'a [u8], Reject> {
        self.check_ptr(ptr.addr(), len, what)?;
        if len == 0 {
            return Ok(&[]);
        }
        // SAFETY: ptr is not NULL (checked), len <= isize::MAX (checked by `bytes`), and the caller
        // guarantees ptr is valid for len bytes of reads for 'a.
        Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
    }

    /// The `len` bytes at `ptr`, writable (empty if `len` is 0, whatever `ptr` is).
    ///
    /// # Safety
    /// Unless `len` is 0 or `ptr` is NULL or `BOAD_IN_PLACE` (errors), `ptr` must be valid for
    /// reads and writes of `len` bytes, not accessed by anyone else while the returned slice lives.
    unsafe fn output<'a>(
        &self,
        ptr: *mut c_void,
        len: usize,
        what: &str,
    ) -> Result<&'a mut [u8], Reject> {
        self.check_ptr(ptr.addr(), len, what)?;
        if len == 0 {
            return Ok(&mut []);
        }
        // SAFETY: ptr is not NULL (checked), len <= isize::MAX (checked by `bytes`), and the caller
        // guarantees ptr is valid for len bytes of reads and writes, unaliased, for 'a.
        Ok(unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>(), len) })
    }

    /// Rejects a send buffer that overlaps the receive buffer (Rust must not see them as a shared
    /// and a mutable slice at once; MPI forbids it too).
    fn disjoint(&self, send: &[u8], recv: &[u8]) -> Result<(), Reject> {
        let (s, r) = (send.as_ptr_range(), recv.as_ptr_range());
        if !send.is_empty() && !recv.is_empty() && s.start < r.end && r.start < s.end {
            return Err(self.reject(
                boad_result::BOAD_ERR_BUFFER,
                "sendbuf and recvbuf overlap; pass BOAD_IN_PLACE as sendbuf to work in place",
            ));
        }
        Ok(())
    }
}

/// Runs the collective `coll` of the C function `name`: `body` checks the arguments (`Err` for one
/// it rejects) and calls the core (whose result it returns in `Ok`). A rejected argument fails the
/// collective on this rank and, at once, on the other ranks, which would otherwise wait for this
/// one until `BOAD_TIMEOUT_MS`; the caller gets the rejection's code.
fn collective(
    name: &'static str,
    coll: Coll,
    body: impl FnOnce(&mut Communicator, &Call) -> Result<boad::Result<()>, Reject>,
) -> boad_result {
    guard(name, || {
        with_comm(name, |comm| {
            let call = Call::new(name, comm);
            match body(comm, &call) {
                Ok(r) => r.map_err(Fail::from),
                Err(Reject { code, what }) => {
                    let e = comm.fail_collective(coll, what);
                    Err(Fail::new(code, e.to_string()))
                }
            }
        })
    })
}

/// Joins the job (the ranks started together by `boadrun`; a process started without it is a job
/// of one rank). Calling it again after it succeeded does nothing and returns `BOAD_OK`; after
/// `boad_finalize` it returns `BOAD_ERR_FINALIZED`.
///
/// A program that exits without calling `boad_finalize` is finalized by an `atexit` handler.
#[no_mangle]
pub extern "C" fn boad_init() -> boad_result {
    guard("boad_init", state::init)
}

/// Delivers what this rank still has to send and leaves the job. Returns an error that an earlier
/// collective raised on another rank, if any. Calling it again returns `BOAD_OK`.
#[no_mangle]
pub extern "C" fn boad_finalize() -> boad_result {
    guard("boad_finalize", state::finalize)
}

/// Sets `*flag` to 1 between a successful `boad_init` and `boad_finalize`, else 0.
///
/// # Safety
/// `flag` must be NULL or valid for writing an `int`.
#[no_mangle]
pub unsafe extern "C" fn boad_initialized(flag: *mut c_int) -> boad_result {
    guard("boad_initialized", || {
        if flag.is_null() {
            return Err(Fail::new(
                boad_result::BOAD_ERR_NULL_POINTER,
                "boad_initialized: flag is NULL",
            ));
        }
        let on = matches!(&*state::lock_world(), state::World::Active(_));
        // SAFETY: flag is not NULL and the caller guarantees it is valid for writing an int.
        unsafe { flag.write(c_int::from(on)) };
        Ok(())
    })
}

/// Writes `v` to `*out` after the usual checks.
///
/// # Safety
/// `out` must be NULL or valid for writing an `int`.
unsafe fn write_int(
    name: &'static str,
    out: *mut c_int,
    get: impl FnOnce(&Communicator) -> usize,
) -> boad_result {
    guard(name, || {
        with_comm(name, |comm| {
            let call = Call::new(name, comm);
            if out.is_null() {
                return Err(call.fail(boad_result::BOAD_ERR_NULL_POINTER, "out is NULL"));
            }
            let v = c_int::try_from(get(comm)).map_err(|_| {
                call.fail(
                    boad_result::BOAD_ERR_BUFFER,
                    "the value does not fit in an int",
                )
            })?;
            // SAFETY: out is not NULL and the caller guarantees it is valid for writing an int.
            unsafe { out.write(v) };
            Ok(())
        })
    })
}

/// Sets `*out` to this process's rank, in `0..size`.
///
/// # Safety
/// `out` must be NULL (an error) or valid for writing an `int`.
#[no_mangle]
pub unsafe extern "C" fn boad_rank(out: *mut c_int) -> boad_result {
    // SAFETY: forwarded from the caller.
    unsafe { write_int("boad_rank", out, Communicator::rank) }
}

/// Sets `*out` to the number of ranks in the job.
///
/// # Safety
/// `out` must be NULL (an error) or valid for writing an `int`.
#[no_mangle]
pub unsafe extern "C" fn boad_size(out: *mut c_int) -> boad_result {
    // SAFETY: forwarded from the caller.
    unsafe { write_int("boad_size", out, Communicator::size) }
}

/// Sets `*out` to the name of the data path the last completed collective took (`"udp"`, `"shm"`,
/// `"kernel"`, `"hier"` or `"hier-kernel"`), or to NULL before the first. The string is static.
///
/// # Safety
/// `out` must be NULL (an error) or valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn boad_last_path(out: *mut *const c_char) -> boad_result {
    guard("boad_last_path", || {
        with_comm("boad_last_path", |comm| {
            let call = Call::new("boad_last_path", comm);
            if out.is_null() {
                return Err(call.fail(boad_result::BOAD_ERR_NULL_POINTER, "out is NULL"));
            }
            let name = comm
                .last_path()
                .map_or(std::ptr::null(), |p| p.c_name().as_ptr());
            // SAFETY: out is not NULL and the caller guarantees it is valid for writing a pointer.
            unsafe { out.write(name) };
            Ok(())
        })
    })
}

/// Copies `count` elements of `dtype` at `buf` on `root` into `buf` on every other rank.
///
/// # Safety
/// `buf` must be valid for reads and writes of `count` elements of `dtype` (or NULL if `count` is
/// 0), and not be accessed by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn boad_bcast(
    buf: *mut c_void,
    count: usize,
    dtype: DTypeArg,
    root: c_int,
) -> boad_result {
    collective("boad_bcast", Coll::Bcast, |comm, call| {
        let dtype = call.dtype(dtype)?;
        let root = call.root(root, comm.size())?;
        let bytes = call.bytes(count, 1, dtype)?;
        // SAFETY: the caller guarantees buf is valid for count elements of dtype, unaliased.
        let buf = unsafe { call.output(buf, bytes, "buf") }?;
        Ok(comm.bcast_raw(buf, dtype, root))
    })
}

/// Reduces every rank's `count` elements at `sendbuf` with `op` into `recvbuf` on `root`.
/// `recvbuf` is used on the root only (it may be NULL elsewhere).
///
/// With `sendbuf == BOAD_IN_PLACE`, `recvbuf` holds the rank's contribution and, on the root,
/// receives the result (on the other ranks it is left unchanged). MPI allows `BOAD_IN_PLACE` on
/// the root only; boad accepts it on every rank.
///
/// # Safety
/// `sendbuf` must be `BOAD_IN_PLACE` or valid for reads of `count` elements of `dtype`; `recvbuf`,
/// where it is used, valid for reads and writes of `count` elements and not overlapping `sendbuf`.
/// Neither may be written by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn boad_reduce(
    sendbuf: *const c_void,
    recvbuf: *mut c_void,
    count: usize,
    dtype: DTypeArg,
    op: OpArg,
    root: c_int,
) -> boad_result {
    collective("boad_reduce", Coll::Reduce, |comm, call| {
        let dtype = call.dtype(dtype)?;
        let op = call.op(op)?;
        let root = call.root(root, comm.size())?;
        let bytes = call.bytes(count, 1, dtype)?;
        if sendbuf.addr() == IN_PLACE {
            // SAFETY: the caller guarantees recvbuf is valid for count elements, unaliased.
            let buf = unsafe { call.output(recvbuf, bytes, "recvbuf") }?;
            return Ok(comm.reduce_in_place_raw(buf, dtype, op, root));
        }
        // SAFETY: the caller guarantees sendbuf is valid for reads of count elements.
        let send = unsafe { call.input(sendbuf, bytes, "sendbuf") }?;
        if comm.rank() == root {
            // SAFETY: on the root the caller guarantees recvbuf is valid for count elements,
            // unaliased (overlap with sendbuf is checked next).
            let recv = unsafe { call.output(recvbuf, bytes, "recvbuf") }?;
            call.disjoint(send, recv)?;
            Ok(comm.reduce_raw(send, Some(recv), dtype, op, root))
        } else {
            Ok(comm.reduce_raw(send, None, dtype, op, root))
        }
    })
}

/// Reduces every rank's `count` elements at `sendbuf` with `op` into `recvbuf` on every rank.
/// With `sendbuf == BOAD_IN_PLACE`, `recvbuf` holds the contribution and receives the result.
///
/// # Safety
/// `sendbuf` must be `BOAD_IN_PLACE` or valid for reads of `count` elements of `dtype`; `recvbuf`
/// valid for reads and writes of `count` elements and not overlapping `sendbuf`. Neither may be
/// written by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn boad_allreduce(
    sendbuf: *const c_void,
    recvbuf: *mut c_void,
    count: usize,
    dtype: DTypeArg,
    op: OpArg,
) -> boad_result {
    collective("boad_allreduce", Coll::Allreduce, |comm, call| {
        let dtype = call.dtype(dtype)?;
        let op = call.op(op)?;
        let bytes = call.bytes(count, 1, dtype)?;
        // SAFETY: the caller guarantees recvbuf is valid for count elements, unaliased (overlap
        // with sendbuf is checked below).
        let recv = unsafe { call.output(recvbuf, bytes, "recvbuf") }?;
        if sendbuf.addr() == IN_PLACE {
            return Ok(comm.allreduce_in_place_raw(recv, dtype, op));
        }
        // SAFETY: the caller guarantees sendbuf is valid for reads of count elements.
        let send = unsafe { call.input(sendbuf, bytes, "sendbuf") }?;
        call.disjoint(send, recv)?;
        Ok(comm.allreduce_raw(send, recv, dtype, op))
    })
}

/// Gathers every rank's `count` elements at `sendbuf` into `recvbuf` on every rank, in rank order:
/// `recvbuf` holds `size * count` elements. With `sendbuf == BOAD_IN_PLACE`, each rank's
/// contribution is already in its place in `recvbuf` (elements `rank * count` onwards).
///
/// # Safety
/// `sendbuf` must be `BOAD_IN_PLACE` or valid for reads of `count` elements of `dtype`; `recvbuf`
/// valid for reads and writes of `size * count` elements and not overlapping `sendbuf`. Neither may
/// be written by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn boad_allgather(
    sendbuf: *const c_void,
    recvbuf: *mut c_void,
    count: usize,
    dtype: DTypeArg,
) -> boad_result {
    collective("boad_allgather", Coll::Allgather, |comm, call| {
        let dtype = call.dtype(dtype)?;
        let block = call.bytes(count, 1, dtype)?;
        let total = call.bytes(count, comm.size(), dtype)?;
        // SAFETY: the caller guarantees recvbuf is valid for size * count elements, unaliased
        // (overlap with sendbuf is checked below).
        let recv = unsafe { call.output(recvbuf, total, "recvbuf") }?;
        if sendbuf.addr() == IN_PLACE {
            let at = comm.rank() * block;
            let mine = recv
                .get(at..at + block)
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
            return Ok(comm.allgather_raw(&mine, recv, dtype));
        }
        // SAFETY: the caller guarantees sendbuf is valid for reads of count elements.
        let send = unsafe { call.input(sendbuf, block, "sendbuf") }?;
        call.disjoint(send, recv)?;
        Ok(comm.allgather_raw(send, recv, dtype))
    })
}

/// Returns once every rank has called `boad_barrier`.
#[no_mangle]
pub extern "C" fn boad_barrier() -> boad_result {
    collective("boad_barrier", Coll::Barrier, |comm, _| Ok(comm.barrier()))
}

/// A static description of `code` (`"BOAD_ERR_TIMEOUT: a peer sent nothing for BOAD_TIMEOUT_MS"`).
/// Never NULL; an unknown code gives `"unknown boad_result"`.
#[no_mangle]
pub extern "C" fn boad_strerror(code: ResultArg) -> *const c_char {
    use boad_result::*;
    let s: &CStr = match boad_result::from_code(code) {
        Some(BOAD_OK) => c"BOAD_OK: success",
        Some(BOAD_ERR_NOT_INITIALIZED) => {
            c"BOAD_ERR_NOT_INITIALIZED: boad_init has not been called"
        }
        Some(BOAD_ERR_NULL_POINTER) => c"BOAD_ERR_NULL_POINTER: a pointer argument is NULL",
        Some(BOAD_ERR_INVALID_DTYPE) => c"BOAD_ERR_INVALID_DTYPE: not a boad_dtype",
        Some(BOAD_ERR_INVALID_OP) => {
            c"BOAD_ERR_INVALID_OP: not a boad_op, or the op is not defined on the dtype"
        }
        Some(BOAD_ERR_INVALID_ROOT) => c"BOAD_ERR_INVALID_ROOT: the root is not a rank of the job",
        Some(BOAD_ERR_BUFFER) => {
            c"BOAD_ERR_BUFFER: unusable buffer (too large, overlapping, or misplaced BOAD_IN_PLACE)"
        }
        Some(BOAD_ERR_TIMEOUT) => c"BOAD_ERR_TIMEOUT: a peer sent nothing for BOAD_TIMEOUT_MS",
        Some(BOAD_ERR_PEER_EXITED) => {
            c"BOAD_ERR_PEER_EXITED: a peer exited before sending its data"
        }
        Some(BOAD_ERR_MISMATCH) => {
            c"BOAD_ERR_MISMATCH: ranks called different collectives or arguments"
        }
        Some(BOAD_ERR_ABORTED) => c"BOAD_ERR_ABORTED: the collective failed on another rank",
        Some(BOAD_ERR_TRANSPORT) => c"BOAD_ERR_TRANSPORT: a socket call failed",
        Some(BOAD_ERR_BOOTSTRAP) => c"BOAD_ERR_BOOTSTRAP: joining the job failed",
        Some(BOAD_ERR_CONFIG) => c"BOAD_ERR_CONFIG: a BOAD_* environment setting is invalid",
        Some(BOAD_ERR_PROTOCOL) => c"BOAD_ERR_PROTOCOL: a peer sent inconsistent data",
        Some(BOAD_ERR_FINALIZED) => c"BOAD_ERR_FINALIZED: boad_finalize has already been called",
        Some(BOAD_ERR_PANIC) => c"BOAD_ERR_PANIC: internal error (panic caught at the C boundary)",
        None => c"unknown boad_result",
    };
    s.as_ptr()
}

/// Copies the full message of the calling thread's last failed `boad_` call (naming the rank that
/// saw the error; `""` if none failed) into `buf`, truncated to `len - 1` bytes and NUL-terminated
/// (nothing is written if `buf` is NULL or `len` is 0). Returns the message's full length, like
/// `snprintf`: the message was truncated if the result is `>= len`. Successful calls do not clear
/// the message.
///
/// # Safety
/// `buf` must be NULL or valid for writing `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn boad_last_error_message(buf: *mut c_char, len: usize) -> usize {
    let r = std::panic::catch_unwind(|| {
        let msg = state::last_error();
        // SAFETY: the caller guarantees buf is NULL or valid for len bytes; msg is a different
        // allocation.
        unsafe { copy_out(&msg, buf, len) };
        msg.len()
    });
    r.unwrap_or(0)
}

/// Copies what `boad::check()` says about this process's launcher (one or more lines, each ending
/// in a newline: `launcher: ...`, e.g. which launcher started it and its rank, or why its job
/// cannot be joined) into `buf`, truncated to `len - 1` bytes and NUL-terminated (nothing is
/// written if `buf` is NULL or `len` is 0). Returns the report's full length, like `snprintf`: call
/// it with `len` 0 to size the buffer. Reads the environment only: callable before
/// [`boad_init`], which it does not need, and from any thread.
///
/// # Safety
/// `buf` must be NULL or valid for writing `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn boad_check(buf: *mut c_char, len: usize) -> usize {
    let r = std::panic::catch_unwind(|| {
        let report = boad::check();
        // SAFETY: the caller's guarantee on buf and len, passed on.
        unsafe { copy_out(&report, buf, len) };
        report.len()
    });
    r.unwrap_or(0)
}

/// Copies `text` into `buf` (at most `len - 1` bytes, cut at a character boundary, then a NUL);
/// nothing if `buf` is NULL or `len` is 0.
///
/// # Safety
/// `buf` must be NULL or valid for writing `len` bytes, and not overlap `text`.
unsafe fn copy_out(text: &str, buf: *mut c_char, len: usize) {
    if buf.is_null() || len == 0 {
        return;
    }
    let mut n = text.len().min(len - 1);
    while !text.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: buf is not NULL and valid for len > n bytes (the caller's guarantee), and does not
    // overlap text.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
        buf.add(n).write(0);
    }
}

/// How many traffic counters [`boad_stats`] reports (the same list `BOAD_STATS=1` prints and
/// Python's `stats()` returns).
#[no_mangle]
pub extern "C" fn boad_stats_count() -> usize {
    boad::Stats::NAMES.len()
}

/// The name of counter `index` (`"datagrams_sent"`, ...), static; NULL if `index` is not below
/// [`boad_stats_count`].
#[no_mangle]
pub extern "C" fn boad_stats_name(index: usize) -> *const c_char {
    static NAMES: std::sync::OnceLock<Vec<std::ffi::CString>> = std::sync::OnceLock::new();
    let r = std::panic::catch_unwind(|| {
        let names = NAMES.get_or_init(|| {
            boad::Stats::NAMES
                .iter()
                .filter_map(|n| std::ffi::CString::new(*n).ok())
                .collect()
        });
        names.get(index).map_or(std::ptr::null(), |n| n.as_ptr())
    });
    r.unwrap_or(std::ptr::null())
}

/// Writes this rank's counters, in the order of [`boad_stats_name`], into `values[0..len]` (the
/// first `len` of them if there are more; the rest of `values` is left alone).
///
/// # Safety
/// `values` must be valid for writing `len` `uint64_t`s (or NULL if `len` is 0).
#[no_mangle]
pub unsafe extern "C" fn boad_stats(values: *mut u64, len: usize) -> boad_result {
    guard("boad_stats", || {
        with_comm("boad_stats", |comm| {
            let call = Call::new("boad_stats", comm);
            if values.is_null() && len > 0 {
                return Err(call.fail(boad_result::BOAD_ERR_NULL_POINTER, "values is NULL"));
            }
            let stats = comm.stats();
            for (i, (_, v)) in stats.fields().take(len).enumerate() {
                // SAFETY: i < len, and the caller guarantees values is valid for len writes.
                unsafe { values.add(i).write(v) };
            }
            Ok(())
        })
    })
}

/// The library's version (`"0.1.0"`), static.
#[no_mangle]
pub extern "C" fn boad_version() -> *const c_char {
    const V: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => panic!("version has a NUL"),
        };
    V.as_ptr()
}

#[cfg(test)]
mod tests;
