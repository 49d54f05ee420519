//! `boad-syscount`: counts system calls per process, for the benchmarks (`boad-osu`); no part of
//! the kernel fast path. Loaded and read by `boad_ebpf_loader::SyscallCounter`.
//!
//! * `boad_sys_enter` (tracepoint `raw_syscalls/sys_enter`, runs on every system call of every
//!   process): if the caller's thread-group id (its process id; every thread of a process counts)
//!   is a key of `WATCH`, adds one to this CPU's value of `COUNTS[tgid]`. Nothing else is read or
//!   written. `COUNTS` is per-CPU, so the increment needs no atomic: userspace sums the CPUs.
//!   The loader inserts a zeroed `COUNTS` entry with the `WATCH` entry; if that entry is missing
//!   (removed by userspace), the program inserts one for this CPU.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    btf_maps::{HashMap, PerCpuHashMap},
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_map, tracepoint},
    programs::TracePointContext,
};

/// Entries of `WATCH` and `COUNTS`: processes watched at once by one loaded counter.
const MAX_WATCHED: usize = 256;

/// Thread-group ids whose system calls are counted (value unused, 1).
#[btf_map]
static WATCH: HashMap<u32, u8, MAX_WATCHED> = HashMap::new();
/// Thread-group id -> system calls entered, per CPU.
#[btf_map]
static COUNTS: PerCpuHashMap<u32, u64, MAX_WATCHED> = PerCpuHashMap::new();

/// Tracepoint `raw_syscalls/sys_enter`: count the call if its process is watched.
#[tracepoint]
pub fn boad_sys_enter(_ctx: TracePointContext) -> u32 {
    // The upper 32 bits are the thread-group id (what userspace calls the process id).
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if WATCH.get_ptr(tgid).is_none() {
        return 0;
    }
    match COUNTS.get_ptr_mut(tgid) {
        // SAFETY: `p` points to this CPU's u64 for `tgid`; a per-CPU value is only written by
        // programs on this CPU, and a tracepoint program is not preempted by another run of itself
        // on the same CPU.
        Some(p) => unsafe { *p += 1 },
        None => {
            let _ = COUNTS.insert(tgid, 1u64, BPF_NOEXIST as u64);
        }
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
