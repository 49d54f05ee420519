//! What a collective costs the machine, measured around a loop: this process's CPU time
//! ([`process_cpu_ns`]), its context switches ([`context_switches`], `getrusage`) and the whole
//! machine's CPU time from `/proc/stat` ([`MachineCpu`]). System calls are counted by
//! `boad_ebpf_loader::SyscallCounter` (an eBPF program on `raw_syscalls/sys_enter`) or, as a
//! fallback, with `strace` ([`crate::strace`]).
//!
//! `/proc/stat` counts in clock ticks (`USER_HZ`, 100 per second here): a loop must last long
//! enough for 10 ms steps not to matter (the `syscalls` pass runs 1000 collectives in a full run).
//! Whether softirq time run in a process's context is also in that process's CPU clock depends on
//! the kernel: without `CONFIG_IRQ_TIME_ACCOUNTING` (this machine's) it is, so the ranks' CPU and
//! `/proc/stat`'s softirq overlap; the machine's busy time counts each tick once.

/// Failures reading `/proc/stat` or the process's clocks.
#[derive(Debug, thiserror::Error)]
pub enum CostError {
    /// `/proc/stat` could not be read.
    #[error("reading /proc/stat: {0}")]
    Read(#[from] std::io::Error),
    /// `/proc/stat` has no well-formed `cpu` line.
    #[error("/proc/stat: {0}")]
    Parse(String),
    /// A system call failed.
    #[error("{call}: {err}")]
    Sys {
        /// Which.
        call: &'static str,
        /// Why.
        err: std::io::Error,
    },
}

/// The machine's CPU time over all CPUs (the `cpu` line of `/proc/stat`), in clock ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MachineCpu {
    /// User mode (guest time included, as the kernel does).
    pub user: u64,
    /// User mode at low priority.
    pub nice: u64,
    /// Kernel mode (system calls, not interrupts).
    pub system: u64,
    /// Idle.
    pub idle: u64,
    /// Idle waiting for I/O.
    pub iowait: u64,
    /// Hard interrupts.
    pub irq: u64,
    /// Soft interrupts (on a network path: packet delivery, XDP, TC).
    pub softirq: u64,
    /// Stolen by the hypervisor.
    pub steal: u64,
}

impl MachineCpu {
    /// Parses the contents of `/proc/stat`: its first line that starts with the word `cpu` (the
    /// sum over CPUs), which needs at least the 8 fields up to `steal` (Linux 2.6.11+); later
    /// fields are ignored.
    pub fn parse(stat: &str) -> Result<MachineCpu, CostError> {
        let line = stat
            .lines()
            .find(|l| l.split_ascii_whitespace().next() == Some("cpu"))
            .ok_or_else(|| CostError::Parse("no \"cpu\" line".into()))?;
        let mut v = [0u64; 8];
        let mut fields = line.split_ascii_whitespace().skip(1);
        for (i, slot) in v.iter_mut().enumerate() {
            let f = fields
                .next()
                .ok_or_else(|| CostError::Parse(format!("\"cpu\" line has {i} fields, not 8")))?;
            *slot = f
                .parse()
                .map_err(|_| CostError::Parse(format!("field {} is {f:?}", i + 1)))?;
        }
        let [user, nice, system, idle, iowait, irq, softirq, steal] = v;
        Ok(MachineCpu {
            user,
            nice,
            system,
            idle,
            iowait,
            irq,
            softirq,
            steal,
        })
    }

    /// Reads `/proc/stat` now.
    pub fn now() -> Result<MachineCpu, CostError> {
        MachineCpu::parse(&std::fs::read_to_string("/proc/stat")?)
    }

    /// The ticks spent since `before` (each field; a counter that went backwards counts 0).
    pub fn since(&self, before: &MachineCpu) -> MachineCpu {
        MachineCpu {
            user: self.user.saturating_sub(before.user),
            nice: self.nice.saturating_sub(before.nice),
            system: self.system.saturating_sub(before.system),
            idle: self.idle.saturating_sub(before.idle),
            iowait: self.iowait.saturating_sub(before.iowait),
            irq: self.irq.saturating_sub(before.irq),
            softirq: self.softirq.saturating_sub(before.softirq),
            steal: self.steal.saturating_sub(before.steal),
        }
    }

    /// Busy ticks: user + nice + system + irq + softirq (not idle, iowait nor steal).
    pub fn busy(&self) -> u64 {
        self.user
            .saturating_add(self.nice)
            .saturating_add(self.system)
            .saturating_add(self.irq)
            .saturating_add(self.softirq)
    }
}

/// Clock ticks per second of `/proc/stat` (`sysconf(_SC_CLK_TCK)`; 100 if unknown).
pub fn ticks_per_s() -> u64 {
    // SAFETY: sysconf reads a configuration value; no memory is passed.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// Microseconds of `ticks` clock ticks.
pub fn ticks_to_us(ticks: u64) -> f64 {
    ticks as f64 * 1e6 / ticks_per_s() as f64
}

/// This process's CPU time (user + sys, all threads, `CLOCK_PROCESS_CPUTIME_ID`), ns.
pub fn process_cpu_ns() -> Result<u64, CostError> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the one we pass.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return Err(CostError::Sys {
            call: "clock_gettime",
            err: std::io::Error::last_os_error(),
        });
    }
    let s = u64::try_from(ts.tv_sec).unwrap_or(0);
    let ns = u64::try_from(ts.tv_nsec).unwrap_or(0);
    Ok(s.saturating_mul(1_000_000_000).saturating_add(ns))
}

/// This process's context switches so far, all threads: voluntary + involuntary
/// (`getrusage(RUSAGE_SELF)`: `ru_nvcsw + ru_nivcsw`).
pub fn context_switches() -> Result<u64, CostError> {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage into the one we pass.
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if r != 0 {
        return Err(CostError::Sys {
            call: "getrusage",
            err: std::io::Error::last_os_error(),
        });
    }
    let n = |v: libc::c_long| u64::try_from(v).unwrap_or(0);
    Ok(n(ru.ru_nvcsw).saturating_add(n(ru.ru_nivcsw)))
}

/// The value of the first line `KEY:<whitespace>NUMBER` of a `/proc` status-like text (as in
/// `/proc/PID/status`'s `PPid:` or `/proc/PID/fdinfo/N`'s `prog_id:`).
pub fn proc_field(text: &str, key: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// Ids of the eBPF programs process `pid` holds file descriptors of (`/proc/PID/fd` links
/// `anon_inode:bpf-prog`, each id from its `fdinfo`), sorted, without repeats.
pub fn bpf_programs_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return vec![];
    };
    let mut ids: Vec<u32> = dir
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:bpf-prog")
        })
        .filter_map(|e| {
            let fdinfo = format!("/proc/{pid}/fdinfo/{}", e.file_name().to_string_lossy());
            proc_field(&std::fs::read_to_string(fdinfo).ok()?, "prog_id")
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The eBPF programs of this process's job: those held by its nearest ancestor (parent,
/// grandparent, ... up to 4 levels) that holds any. On the kernel path that is the `boadrun` that
/// loaded them; elsewhere none is found. Empty if none.
pub fn job_bpf_programs() -> Vec<u32> {
    let mut pid = std::process::id();
    for _ in 0..4 {
        let Some(parent) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| proc_field(&s, "PPid"))
            .filter(|&p| p > 1)
        else {
            return vec![];
        };
        let ids = bpf_programs_of(parent);
        if !ids.is_empty() {
            return ids;
        }
        pid = parent;
    }
    vec![]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn proc_fields() {
        let status = "Name:\tboad-osu\nState:\tS (sleeping)\nTgid:\t42\nPPid:\t41\nTracerPid:\t0\n";
        assert_eq!(proc_field(status, "PPid"), Some(41));
        assert_eq!(proc_field(status, "Tgid"), Some(42));
        assert_eq!(proc_field(status, "Pid"), None);
        let fdinfo = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t2071\nprog_type:\t6\nprog_jited:\t1\nprog_tag:\t0123456789abcdef\nmemlock:\t4096\nprog_id:\t317\nrun_time_ns:\t0\n";
        assert_eq!(proc_field(fdinfo, "prog_id"), Some(317));
        assert_eq!(proc_field("prog_id:\tx\n", "prog_id"), None);
        assert_eq!(proc_field("prog_id:\t99999999999\n", "prog_id"), None);
    }

    #[test]
    fn no_programs_without_a_kernel_path_parent() {
        // The test runner holds no eBPF programs (nor do its ancestors, normally); at least the
        // walk ends without failing.
        let _ = job_bpf_programs();
        assert!(bpf_programs_of(u32::MAX).is_empty());
    }

    const STAT: &str = "cpu  4383263 122782 1327115 2201813 16623 0 43222 2687 0 0
cpu0 2191631 61391 663557 1100906 8311 0 21611 1343 0 0
cpu1 2191632 61391 663558 1100907 8312 0 21611 1344 0 0
intr 12345 0 0
ctxt 99887766
btime 1700000000
";

    #[test]
    fn parses_the_sum_line() {
        let m = MachineCpu::parse(STAT).unwrap();
        assert_eq!(
            m,
            MachineCpu {
                user: 4383263,
                nice: 122782,
                system: 1327115,
                idle: 2201813,
                iowait: 16623,
                irq: 0,
                softirq: 43222,
                steal: 2687,
            }
        );
        assert_eq!(m.busy(), 4383263 + 122782 + 1327115 + 43222);
    }

    #[test]
    fn deltas_and_busy() {
        let a = MachineCpu::parse("cpu 10 0 5 100 0 0 1 0\n").unwrap();
        let b = MachineCpu::parse("cpu 30 1 9 150 2 1 4 0\n").unwrap();
        let d = b.since(&a);
        assert_eq!(d.busy(), 20 + 1 + 4 + 1 + 3);
        assert_eq!(d.idle, 50);
        // A counter that went backwards (never on Linux, but not trusted) counts 0.
        assert_eq!(a.since(&b), MachineCpu::default());
    }

    #[test]
    fn rejects_malformed_input() {
        for bad in [
            "",
            "cpu0 1 2 3 4 5 6 7 8\n",
            "cpu 1 2 3\n",
            "cpu 1 2 3 4 5 6 x 8\n",
            "cpu -1 2 3 4 5 6 7 8\n",
            "cpu 1 2 3 4 5 6 7 99999999999999999999999\n",
            "cpus 1 2 3 4 5 6 7 8\n",
        ] {
            assert!(MachineCpu::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reads_this_machine() {
        let a = MachineCpu::now().unwrap();
        let c0 = process_cpu_ns().unwrap();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(process_cpu_ns().unwrap() > c0);
        let b = MachineCpu::now().unwrap();
        assert!(b.busy() >= a.busy());
        assert!(context_switches().is_ok());
        assert!(ticks_per_s() > 0);
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,200}") {
            let _ = MachineCpu::parse(&s);
            let _ = proc_field(&s, "prog_id");
        }

        #[test]
        fn parse_round_trips(v in proptest::array::uniform8(any::<u64>()), extra in 0usize..4) {
            let mut line = String::from("cpu ");
            for x in v {
                line.push_str(&format!(" {x}"));
            }
            for _ in 0..extra {
                line.push_str(" 0");
            }
            let m = MachineCpu::parse(&format!("{line}\ncpu0 1 1 1 1 1 1 1 1\n")).unwrap();
            prop_assert_eq!(
                [m.user, m.nice, m.system, m.idle, m.iowait, m.irq, m.softirq, m.steal],
                v
            );
        }
    }
}
