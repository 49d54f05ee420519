//! The eBPF system call counter (`boad_ebpf_loader::SyscallCounter`) against a process that
//! makes a known number of system calls. Needs root (without it the test fails, or with
//! `BOAD_ALLOW_SKIP` records the skip); attaches a tracepoint program, so run it under the
//! kernel lock on a shared machine.
#![cfg(feature = "ebpf")]

use boad_ebpf_loader::SyscallCounter;

const N: u64 = 10_000;

/// One system call that does nothing else (not cached by libc).
fn getppid() {
    // SAFETY: getppid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_getppid) };
}

#[test]
fn counts_a_child_s_calls_and_its_own() {
    if !boad_test_support::require_root() {
        return;
    }
    let mut counter = SyscallCounter::attach().expect("attach the counter");
    let (mut go, mut done) = ([0i32; 2], [0i32; 2]);
    // SAFETY: pipe writes two descriptors into each array.
    assert_eq!(unsafe { libc::pipe(go.as_mut_ptr()) }, 0);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::pipe(done.as_mut_ptr()) }, 0);
    // SAFETY: the child only makes raw system calls (read, getppid, write, _exit), which are
    // async-signal-safe, so forking a multi-threaded test process is sound.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork: {}", std::io::Error::last_os_error());
    if child == 0 {
        let mut b = 0u8;
        // SAFETY: reads one byte into `b`; writes one byte from it; then exits without running
        // anything of the parent's (no destructors, no atexit).
        unsafe {
            libc::read(go[0], (&raw mut b).cast(), 1);
            for _ in 0..N {
                libc::syscall(libc::SYS_getppid);
            }
            libc::write(done[1], (&raw const b).cast(), 1);
            libc::_exit(0);
        }
    }
    let pid = u32::try_from(child).unwrap();
    counter.watch(pid).expect("watch the child");
    let b = 1u8;
    let mut got = 0u8;
    // SAFETY: one byte to and from the pipes of this test.
    unsafe {
        assert_eq!(libc::write(go[1], (&raw const b).cast(), 1), 1);
        assert_eq!(libc::read(done[0], (&raw mut got).cast(), 1), 1);
    }
    let n = counter.count(pid).expect("read").expect("watched");
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(child, &mut status, 0) };
    for fd in go.into_iter().chain(done) {
        // SAFETY: closes the pipes this test made.
        unsafe { libc::close(fd) };
    }
    // N getppid, the write, perhaps the first read (if the child reached it after the watch)
    // and its exit.
    assert!((N..N + 8).contains(&n), "child: {n} calls counted for {N}");
    counter.unwatch(pid).unwrap();
    assert_eq!(counter.count(pid).unwrap(), None);

    // This process: the second read counts itself, so the calls between are b - a - 1. Other
    // threads of the test binary are idle (one test in this binary).
    let me = std::process::id();
    counter.watch(me).unwrap();
    let a = counter.count(me).unwrap().unwrap();
    for _ in 0..N {
        getppid();
    }
    let b = counter.count(me).unwrap().unwrap();
    let between = b - a - 1;
    assert!((N..N + 8).contains(&between), "self: {between} for {N}");
    eprintln!("counted: child {n} for {N} calls, self {between} for {N}");
    // Dropping detaches: nothing left attached (the kernel closes the link with the fd).
    drop(counter);
}
