//! [`SyscallCounter`]: system calls per process, counted in the kernel (the benchmarks' counter,
//! `boad-osu`; no part of the kernel fast path).
//!
//! The program `boad_sys_enter` (crate `collectives-ebpf`, `src/syscount.rs`, built into its own
//! object `boad-syscount` and embedded here) runs on the tracepoint `raw_syscalls/sys_enter`, i.e.
//! at the entry of every system call on the machine. When the caller's thread-group id (its
//! process id) has been given to [`SyscallCounter::watch`], it adds one to that process's count on
//! the current CPU; [`SyscallCounter::count`] sums the CPUs. Every thread of a watched process is
//! counted (helper threads included), and a call is counted when it starts, whether it then
//! blocks, fails or is restarted.
//!
//! Unlike `strace`, nothing stops the traced process: the cost is one hash lookup per system call
//! of any process while the program is attached (and one more for a watched one).
//!
//! Reading the count is itself a system call (`bpf`). A process reading *its own* count sees that
//! read already counted: the calls strictly between two reads of one's own count are
//! `second - first - 1`.
//!
//! Needs root (CAP_BPF and CAP_PERFMON). The program and its attachment belong to the
//! [`SyscallCounter`] (file descriptors of this process, nothing pinned): dropping it, or the
//! process ending, detaches it.

use aya::maps::{HashMap, PerCpuHashMap, PerCpuValues};
use aya::programs::trace_point::TracePointLinkId;
use aya::programs::TracePoint;
use aya::{Ebpf, EbpfLoader};

use crate::{KernelError, Result};

/// The counter object built by `build.rs` from `collectives-ebpf` (`[[bin]] boad-syscount`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/boad-syscount"));

const PROG: &str = "boad_sys_enter";
const WATCH: &str = "WATCH";
const COUNTS: &str = "COUNTS";

/// Processes one counter can watch at once (the size of its maps).
pub const MAX_WATCHED: usize = 256;

/// The system call counter, attached to `raw_syscalls/sys_enter` until dropped.
pub struct SyscallCounter {
    ebpf: Ebpf,
    link: Option<TracePointLinkId>,
}

impl std::fmt::Debug for SyscallCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyscallCounter")
            .field("attached", &self.link.is_some())
            .finish_non_exhaustive()
    }
}

fn program_err(source: aya::programs::ProgramError) -> KernelError {
    KernelError::Program {
        name: PROG.to_string(),
        source,
    }
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> KernelError {
    move |source| KernelError::Map { name, source }
}

/// Whether a map operation failed only because the key is not there.
fn not_found(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

impl SyscallCounter {
    /// Loads the embedded counter and attaches it to `raw_syscalls/sys_enter`; it watches no
    /// process yet.
    pub fn attach() -> Result<Self> {
        let mut ebpf = EbpfLoader::new().load(OBJECT)?;
        let prog: &mut TracePoint = ebpf
            .program_mut(PROG)
            .ok_or_else(|| KernelError::Missing(format!("program {PROG}")))?
            .try_into()
            .map_err(program_err)?;
        prog.load().map_err(program_err)?;
        let link = prog
            .attach("raw_syscalls", "sys_enter")
            .map_err(program_err)?;
        Ok(SyscallCounter {
            ebpf,
            link: Some(link),
        })
    }

    /// Starts counting the system calls of process `tgid` (all its threads) from zero; watching
    /// a process already watched resets its count.
    pub fn watch(&mut self, tgid: u32) -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| KernelError::Map {
            name: COUNTS,
            source: aya::maps::MapError::IoError(e),
        })?;
        let zeros = PerCpuValues::try_from(vec![0u64; cpus]).map_err(|e| KernelError::Map {
            name: COUNTS,
            source: aya::maps::MapError::IoError(e),
        })?;
        // The count first, so the program never has to insert it.
        let mut counts: PerCpuHashMap<_, u32, u64> = PerCpuHashMap::try_from(
            self.ebpf
                .map_mut(COUNTS)
                .ok_or_else(|| KernelError::Missing(format!("map {COUNTS}")))?,
        )
        .map_err(map_err(COUNTS))?;
        counts.insert(tgid, zeros, 0).map_err(map_err(COUNTS))?;
        let mut watch: HashMap<_, u32, u8> = HashMap::try_from(
            self.ebpf
                .map_mut(WATCH)
                .ok_or_else(|| KernelError::Missing(format!("map {WATCH}")))?,
        )
        .map_err(map_err(WATCH))?;
        watch.insert(tgid, 1, 0).map_err(map_err(WATCH))?;
        Ok(())
    }

    /// Stops counting process `tgid` and forgets its count (nothing happens if it was not
    /// watched).
    pub fn unwatch(&mut self, tgid: u32) -> Result<()> {
        for name in [WATCH, COUNTS] {
            let map = self
                .ebpf
                .map_mut(name)
                .ok_or_else(|| KernelError::Missing(format!("map {name}")))?;
            let r = if name == WATCH {
                HashMap::<_, u32, u8>::try_from(map)
                    .map_err(map_err(name))?
                    .remove(&tgid)
            } else {
                PerCpuHashMap::<_, u32, u64>::try_from(map)
                    .map_err(map_err(name))?
                    .remove(&tgid)
            };
            match r {
                Ok(()) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(map_err(name)(e)),
            }
        }
        Ok(())
    }

    /// The system calls process `tgid` entered since [`SyscallCounter::watch`], summed over CPUs;
    /// `None` if it is not watched. Reading one's own count is itself a counted call (see the
    /// module docs).
    pub fn count(&self, tgid: u32) -> Result<Option<u64>> {
        let counts: PerCpuHashMap<_, u32, u64> = PerCpuHashMap::try_from(
            self.ebpf
                .map(COUNTS)
                .ok_or_else(|| KernelError::Missing(format!("map {COUNTS}")))?,
        )
        .map_err(map_err(COUNTS))?;
        match counts.get(&tgid, 0) {
            Ok(v) => Ok(Some(v.iter().fold(0u64, |a, c| a.wrapping_add(*c)))),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(COUNTS)(e)),
        }
    }

    /// The kernel's id of the loaded program (for `bpf_prog_info`, e.g. its run time with
    /// `bpf_stats` on).
    pub fn program_id(&self) -> Result<u32> {
        let prog: &TracePoint = self
            .ebpf
            .program(PROG)
            .ok_or_else(|| KernelError::Missing(format!("program {PROG}")))?
            .try_into()
            .map_err(program_err)?;
        Ok(prog.info().map_err(program_err)?.id())
    }
}

impl Drop for SyscallCounter {
    fn drop(&mut self) {
        // Dropping `ebpf` would detach too; doing it first keeps the order explicit.
        if let (Some(link), Some(prog)) = (self.link.take(), self.ebpf.program_mut(PROG)) {
            if let Ok(tp) = <&mut TracePoint>::try_from(prog) {
                let _ = tp.detach(link);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_counter_is_an_ebpf_elf() {
        assert_eq!(&OBJECT[..4], b"\x7fELF");
        // EM_BPF = 247 at offset 18 (little-endian).
        assert_eq!(u16::from_le_bytes([OBJECT[18], OBJECT[19]]), 247);
    }
}
