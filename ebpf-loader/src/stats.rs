//! The run time of loaded eBPF programs (`bpf_stats`): [`RunTimeStats::enable`] turns the kernel's
//! accounting on for as long as the value lives (a `BPF_ENABLE_STATS` file descriptor, nothing left
//! on in `kernel.bpf_stats_enabled`), and [`program_runs`] reads a program's `run_time_ns` and
//! `run_cnt` from its `bpf_prog_info`. For the benchmarks (`boad-osu`).
//!
//! The kernel counts a run of the program it entered: a program reached by a tail call (the
//! fast path's `fold_*`) adds its time to the entry program's (`boad_xdp`), not to its own.

use std::os::fd::OwnedFd;

use crate::{KernelError, Result};

/// `bpf_stats` on until dropped (other holders of such a descriptor keep it on for themselves).
#[derive(Debug)]
pub struct RunTimeStats {
    _fd: OwnedFd,
}

impl RunTimeStats {
    /// Turns run-time accounting of every eBPF program on (root).
    pub fn enable() -> Result<Self> {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .map_err(|e| KernelError::Stats(std::io::Error::other(e)))?;
        Ok(RunTimeStats { _fd: fd })
    }
}

/// One program's accounting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramRuns {
    /// Its name as the kernel keeps it (up to 15 bytes).
    pub name: String,
    /// Total run time while accounting was on, ns.
    pub run_time_ns: u64,
    /// Runs while accounting was on.
    pub run_cnt: u64,
}

/// The accounting of the loaded program with kernel id `id`; `None` if there is none (unloaded).
pub fn program_runs(id: u32) -> Result<Option<ProgramRuns>> {
    for info in aya::programs::loaded_programs() {
        let info = info.map_err(|source| KernelError::Program {
            name: format!("id {id}"),
            source,
        })?;
        if info.id() == id {
            return Ok(Some(ProgramRuns {
                name: info.name_as_str().unwrap_or("").to_string(),
                run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                run_cnt: info.run_count(),
            }));
        }
    }
    Ok(None)
}
