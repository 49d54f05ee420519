//! The process-wide communicator, the thread's last error message and the panic boundary.

use std::any::Any;
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard, Once};

use boad::{Communicator, Error};

use crate::boad_result;

/// The world communicator, shared by every thread of the process (MPI style).
pub(crate) enum World {
    /// `boad_init` has not succeeded yet.
    Uninit,
    /// Between `boad_init` and `boad_finalize`.
    Active(Box<Communicator>),
    /// `boad_finalize` was called.
    Finalized,
}

static WORLD: Mutex<World> = Mutex::new(World::Uninit);
static AT_EXIT: Once = Once::new();

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A failed call: the code it returns and the full message `boad_last_error_message` gives.
#[derive(Debug)]
pub(crate) struct Fail {
    pub(crate) code: boad_result,
    pub(crate) msg: String,
}

impl Fail {
    pub(crate) fn new(code: boad_result, msg: impl Into<String>) -> Fail {
        Fail {
            code,
            msg: msg.into(),
        }
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail {
            code: crate::code_of(&e),
            msg: e.to_string(),
        }
    }
}

/// Locks the world, recovering from a panic that happened while it was held (the panic has already
/// been reported to the caller as `BOAD_ERR_PANIC`).
pub(crate) fn lock_world() -> MutexGuard<'static, World> {
    WORLD
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Records `msg` as this thread's last error.
pub(crate) fn set_last_error(msg: String) {
    // `try_with`: during thread exit the slot may already be gone; then the message is dropped.
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = msg);
}

/// This thread's last error message ("" if none).
pub(crate) fn last_error() -> String {
    LAST_ERROR
        .try_with(|e| e.borrow().clone())
        .unwrap_or_default()
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// The panic boundary every `extern "C"` function that returns a `boad_result` runs its body in: a
/// failure becomes its code (and this thread's last error message), a panic `BOAD_ERR_PANIC`.
pub(crate) fn guard(name: &str, body: impl FnOnce() -> Result<(), Fail>) -> boad_result {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => boad_result::BOAD_OK,
        Ok(Err(f)) => {
            set_last_error(f.msg);
            f.code
        }
        Err(payload) => {
            let rank = std::env::var("BOAD_RANK").unwrap_or_else(|_| "0".into());
            set_last_error(format!(
                "rank {rank}: {name}: internal error (panic): {}",
                panic_message(payload.as_ref())
            ));
            boad_result::BOAD_ERR_PANIC
        }
    }
}

/// Runs `f` on the world communicator; `name` is the C function, for messages.
pub(crate) fn with_comm(
    name: &str,
    f: impl FnOnce(&mut Communicator) -> Result<(), Fail>,
) -> Result<(), Fail> {
    let mut world = lock_world();
    match &mut *world {
        World::Active(comm) => f(comm),
        World::Uninit => Err(Fail::new(
            boad_result::BOAD_ERR_NOT_INITIALIZED,
            format!("{name}: boad_init has not been called (or failed)"),
        )),
        World::Finalized => Err(Fail::new(
            boad_result::BOAD_ERR_FINALIZED,
            format!("{name}: boad_finalize has already been called"),
        )),
    }
}

/// `boad_init`: joins the job once; later calls succeed without doing anything.
pub(crate) fn init() -> Result<(), Fail> {
    let mut world = lock_world();
    match &*world {
        World::Active(_) => Ok(()),
        World::Finalized => Err(Fail::new(
            boad_result::BOAD_ERR_FINALIZED,
            "boad_init: boad_finalize has already been called; a process joins its job once",
        )),
        World::Uninit => {
            let comm = boad::init()?;
            *world = World::Active(Box::new(comm));
            AT_EXIT.call_once(|| {
                // SAFETY: `finalize_at_exit` is an `extern "C" fn()` that never unwinds (it catches
                // panics) and stays valid for the life of the process (this library is not
                // unloaded while it has a communicator: nothing calls dlclose on itself).
                let rc = unsafe { libc::atexit(finalize_at_exit) };
                if rc != 0 {
                    eprintln!("boad: atexit failed; call boad_finalize before exiting");
                }
            });
            Ok(())
        }
    }
}

/// `boad_finalize`.
pub(crate) fn finalize() -> Result<(), Fail> {
    let mut world = lock_world();
    match std::mem::replace(&mut *world, World::Finalized) {
        World::Active(comm) => (*comm).finalize().map_err(Fail::from),
        World::Finalized => Ok(()),
        World::Uninit => {
            *world = World::Uninit;
            Err(Fail::new(
                boad_result::BOAD_ERR_NOT_INITIALIZED,
                "boad_finalize: boad_init has not been called",
            ))
        }
    }
}

/// Registered with `atexit` by the first successful `boad_init`: a program that returns from
/// `main` without `boad_finalize` still delivers what its rank has left to send (as a Rust program
/// dropping its communicator does).
extern "C" fn finalize_at_exit() {
    let _ = catch_unwind(|| {
        // try_lock: another thread may be inside a collective while this one exits.
        let mut world = match WORLD.try_lock() {
            Ok(w) => w,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        if let World::Active(comm) = std::mem::replace(&mut *world, World::Finalized) {
            if let Err(e) = (*comm).finalize() {
                eprintln!("boad: {e}");
            }
        }
    });
}
