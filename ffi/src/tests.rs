//! The C API in a job of one rank (the test process, not started by boadrun). The world is
//! process-wide, so the calls that use it run in one test, in order.

use std::ffi::{c_int, c_void, CStr};
use std::ptr::{null, null_mut};

use super::*;
use boad_result::*;

const IP: *const c_void = IN_PLACE as *const c_void;

fn last_error() -> String {
    // SAFETY: NULL with length 0 asks for the length only.
    let n = unsafe { boad_last_error_message(null_mut(), 0) };
    let mut buf = vec![0 as c_char; n + 1];
    // SAFETY: buf has n + 1 writable bytes.
    let m = unsafe { boad_last_error_message(buf.as_mut_ptr(), buf.len()) };
    assert_eq!(m, n);
    // SAFETY: boad_last_error_message NUL-terminated buf.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn p<T>(v: &[T]) -> *const c_void {
    v.as_ptr().cast()
}

fn pm<T>(v: &mut [T]) -> *mut c_void {
    v.as_mut_ptr().cast()
}

#[test]
fn world_lifecycle_and_every_call() {
    // Before init.
    let mut r: c_int = -1;
    // SAFETY: r is a valid int.
    assert_eq!(unsafe { boad_rank(&mut r) }, BOAD_ERR_NOT_INITIALIZED);
    assert!(
        last_error().contains("boad_init has not been called"),
        "{}",
        last_error()
    );
    assert_eq!(boad_barrier(), BOAD_ERR_NOT_INITIALIZED);
    assert_eq!(boad_finalize(), BOAD_ERR_NOT_INITIALIZED);
    let mut flag: c_int = -1;
    // SAFETY: flag is a valid int.
    assert_eq!(unsafe { boad_initialized(&mut flag) }, BOAD_OK);
    assert_eq!(flag, 0);

    assert_eq!(boad_init(), BOAD_OK, "{}", last_error());
    assert_eq!(boad_init(), BOAD_OK, "init is idempotent");
    // SAFETY: flag is a valid int.
    assert_eq!(unsafe { boad_initialized(&mut flag) }, BOAD_OK);
    assert_eq!(flag, 1);

    let (mut rank, mut size): (c_int, c_int) = (-1, -1);
    // SAFETY: valid ints; NULL is an error, not UB.
    unsafe {
        assert_eq!(boad_rank(&mut rank), BOAD_OK);
        assert_eq!(boad_size(&mut size), BOAD_OK);
        assert_eq!(boad_initialized(null_mut()), BOAD_ERR_NULL_POINTER);
        assert_eq!(boad_rank(null_mut()), BOAD_ERR_NULL_POINTER);
    }
    assert_eq!((rank, size), (0, 1));
    assert!(
        last_error().starts_with("rank 0: boad_rank: out is NULL"),
        "{}",
        last_error()
    );

    let mut path = c"x".as_ptr();
    // SAFETY: path is a valid pointer slot.
    assert_eq!(unsafe { boad_last_path(&mut path) }, BOAD_OK);
    assert!(path.is_null(), "no collective yet");

    // SAFETY: (whole block) every pointer passed is NULL, BOAD_IN_PLACE or points to a live
    // array with at least `count` elements of the dtype given.
    unsafe {
        // allreduce, both forms
        let send = [1.5f64, -2.0, 3.25];
        let mut recv = [0f64; 3];
        assert_eq!(boad_allreduce(p(&send), pm(&mut recv), 3, 9, 0), BOAD_OK);
        assert_eq!(recv, send);
        let mut v = [7i32, 8, 9];
        assert_eq!(boad_allreduce(IP, pm(&mut v), 3, 2, 3), BOAD_OK);
        assert_eq!(v, [7, 8, 9]);
        assert_eq!(boad_last_path(&mut path), BOAD_OK);
        assert_eq!(CStr::from_ptr(path).to_str(), Ok("udp"));

        // argument errors
        assert_eq!(
            boad_allreduce(p(&send), pm(&mut recv), 3, 10, 0),
            BOAD_ERR_INVALID_DTYPE
        );
        assert!(
            last_error().contains("10 is not a boad_dtype"),
            "{}",
            last_error()
        );
        assert_eq!(
            boad_allreduce(p(&send), pm(&mut recv), 3, u32::MAX, 0),
            BOAD_ERR_INVALID_DTYPE
        );
        assert_eq!(
            boad_allreduce(p(&send), pm(&mut recv), 3, 9, 9),
            BOAD_ERR_INVALID_OP
        );
        assert_eq!(
            boad_allreduce(p(&send), pm(&mut recv), 3, 9, 4),
            BOAD_ERR_INVALID_OP
        );
        assert!(
            last_error().contains("op band is not defined on f64"),
            "{}",
            last_error()
        );
        assert_eq!(
            boad_allreduce(null(), pm(&mut recv), 3, 9, 0),
            BOAD_ERR_NULL_POINTER
        );
        assert_eq!(
            boad_allreduce(p(&send), null_mut(), 3, 9, 0),
            BOAD_ERR_NULL_POINTER
        );
        assert!(last_error().contains("recvbuf is NULL"), "{}", last_error());
        assert_eq!(
            boad_allreduce(null(), null_mut(), 0, 9, 0),
            BOAD_OK,
            "count 0 needs no memory"
        );
        assert_eq!(
            boad_allreduce(p(&recv), pm(&mut recv), 3, 9, 0),
            BOAD_ERR_BUFFER
        );
        assert!(last_error().contains("overlap"), "{}", last_error());
        assert_eq!(
            boad_allreduce(p(&send), IP as *mut c_void, 3, 9, 0),
            BOAD_ERR_BUFFER
        );
        assert_eq!(
            boad_allreduce(p(&send), pm(&mut recv), usize::MAX / 4, 9, 0),
            BOAD_ERR_BUFFER
        );

        // bcast
        let mut b = [5u16, 6];
        assert_eq!(boad_bcast(pm(&mut b), 2, 5, 0), BOAD_OK);
        assert_eq!(b, [5, 6]);
        assert_eq!(boad_bcast(pm(&mut b), 2, 5, 1), BOAD_ERR_INVALID_ROOT);
        assert!(
            last_error().contains("root 1 is out of range"),
            "{}",
            last_error()
        );
        assert_eq!(boad_bcast(pm(&mut b), 2, 5, -1), BOAD_ERR_INVALID_ROOT);
        assert_eq!(boad_bcast(null_mut(), 2, 5, 0), BOAD_ERR_NULL_POINTER);

        // reduce: root needs recvbuf; in place on every rank
        let s = [3u8, 4];
        let mut d = [0u8; 2];
        assert_eq!(boad_reduce(p(&s), pm(&mut d), 2, 4, 1, 0), BOAD_OK);
        assert_eq!(d, s);
        assert_eq!(
            boad_reduce(p(&s), null_mut(), 2, 4, 1, 0),
            BOAD_ERR_NULL_POINTER
        );
        let mut x = [-1i64, 2];
        assert_eq!(boad_reduce(IP, pm(&mut x), 2, 3, 7, 0), BOAD_OK);
        assert_eq!(x, [-1, 2], "one rank: the result is its contribution");
        assert_eq!(
            boad_reduce(p(&s), pm(&mut d), 2, 4, 1, 3),
            BOAD_ERR_INVALID_ROOT
        );

        // allgather, both forms
        let g = [1u32, 2, 3];
        let mut all = [0u32; 3];
        assert_eq!(boad_allgather(p(&g), pm(&mut all), 3, 6), BOAD_OK);
        assert_eq!(all, g);
        let mut all = [9i8, 8];
        assert_eq!(boad_allgather(IP, pm(&mut all), 2, 0), BOAD_OK);
        assert_eq!(all, [9, 8]);

        assert_eq!(boad_barrier(), BOAD_OK);
    }

    // Truncation keeps a NUL and reports the full length.
    let full = last_error();
    let mut small = [1 as c_char; 5];
    // SAFETY: small has 5 writable bytes.
    let n = unsafe { boad_last_error_message(small.as_mut_ptr(), small.len()) };
    assert_eq!(n, full.len());
    // SAFETY: NUL-terminated by the call.
    let got = unsafe { CStr::from_ptr(small.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    assert_eq!(got, full[..4]);

    assert_eq!(boad_finalize(), BOAD_OK);
    assert_eq!(boad_finalize(), BOAD_OK, "finalize is idempotent");
    assert_eq!(boad_barrier(), BOAD_ERR_FINALIZED);
    assert_eq!(boad_init(), BOAD_ERR_FINALIZED);
}

#[test]
fn strerror_names_every_code() {
    for (i, r) in boad_result::ALL.iter().enumerate() {
        assert_eq!(*r as usize, i);
        // SAFETY: boad_strerror returns a static NUL-terminated string.
        let s = unsafe { CStr::from_ptr(boad_strerror(*r as u32)) }
            .to_str()
            .unwrap_or("");
        assert!(s.starts_with(&format!("{r:?}:")), "{r:?} -> {s}");
    }
    // SAFETY: as above.
    let s = unsafe { CStr::from_ptr(boad_strerror(999)) };
    assert_eq!(s.to_str(), Ok("unknown boad_result"));
    // SAFETY: as above.
    let v = unsafe { CStr::from_ptr(boad_version()) };
    assert_eq!(v.to_str(), Ok(env!("CARGO_PKG_VERSION")));
}

#[test]
fn check_reports_the_launcher_like_snprintf() {
    // SAFETY: NULL with length 0 asks for the length only.
    let n = unsafe { boad_check(null_mut(), 0) };
    let mut buf = vec![0x55 as c_char; n + 1];
    // SAFETY: buf has n + 1 writable bytes.
    assert_eq!(unsafe { boad_check(buf.as_mut_ptr(), buf.len()) }, n);
    // SAFETY: boad_check NUL-terminated buf.
    let text = unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    assert_eq!(text, boad::check());
    assert!(
        text.starts_with("launcher: ") && text.ends_with('\n'),
        "{text}"
    );
    // Truncated to len - 1 bytes and terminated.
    let mut small = [0x55 as c_char; 5];
    // SAFETY: small has 5 writable bytes.
    assert_eq!(unsafe { boad_check(small.as_mut_ptr(), small.len()) }, n);
    // SAFETY: boad_check NUL-terminated small.
    let cut = unsafe { CStr::from_ptr(small.as_ptr()) };
    assert_eq!(cut.to_bytes(), b"laun");
}

#[test]
fn panics_become_an_error_code() {
    let r = guard("boad_test", || panic!("boom"));
    assert_eq!(r, BOAD_ERR_PANIC);
    assert!(
        last_error().contains("boad_test: internal error (panic): boom"),
        "{}",
        last_error()
    );
}
