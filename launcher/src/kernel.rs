//! The kernel path on the launcher side: choosing the transport, loading boad's eBPF programs once
//! per job, attaching them to every host's interfaces before the ranks start, filling their maps
//! from the rendezvous table, reporting their counters, and `boadrun --check`.
//!
//! On this machine, when the host's kernel service (`boadd`, `boad_proto::service`) listens, a job
//! does not load anything: [`Setup::Service`] registers it with the service once its ranks have
//! joined and holds the registration until boadrun ends. Likewise on each host of a job across
//! machines: where the host's service listens, the host's agent loads nothing and registers its
//! host's part of the job with it ([`HostService`]) under the trigger port and communicator ids
//! boadrun picked for every host (the lowest free on every service); elsewhere it attaches
//! ([`HostSetup`]); [`HostKernel`] is either.
//!
//! Two owners share one attach rule ([`attach_here`](imp)) and one fill rule (`fill_maps`):
//! [`Setup`], boadrun's own for a job on this machine (`lo`) or on a `--hosts` virtual cluster
//! (`lo` and `eth0` of every host's namespace, one load for all hosts: see below), and
//! [`HostSetup`], the one each host's agent makes for a job across machines (`-H`, `--hostfile`):
//! `lo` and the interface that holds the address the host reaches boadrun from, with each
//! member's MAC the next hop towards its host.
//!
//! A virtual cluster's hosts are reached through agents like real machines, but its kernel path
//! is boadrun's: the verifier's seconds of CPU per load would be paid once per host on one
//! machine's cores (3- and 4-host jobs then missed the agents' launch timeout), so boadrun loads
//! the programs once, attaches them in every host's namespace and tells the agents not to
//! (`AgentSpec::kernel_by_launcher`).
//!
//! Everything attached is a BPF link (XDP link, TCX link) held by a descriptor of the process that
//! attached it (boadrun or the agent; close-on-exec, so no rank inherits one) and nothing is pinned:
//! when that process exits, however it exits (SIGKILL too), the kernel closes the descriptors and
//! the programs are gone from every interface.

use boad::{DType, Op};
use boad_proto::TransportKind;

/// `--transport`: the ranks' data path ([`TransportKind`], defined with the ranks' side in
/// `boad-proto`), as a command-line value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transport(pub TransportKind);

impl clap::ValueEnum for Transport {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            Transport(TransportKind::Auto),
            Transport(TransportKind::Kernel),
            Transport(TransportKind::Udp),
            Transport(TransportKind::Shm),
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let help = match self.0 {
            TransportKind::Auto => {
                "The kernel path if boadrun can set it up, else the userspace path (saying so once)"
            }
            TransportKind::Kernel => "The kernel path, or boadrun fails (exit 125)",
            TransportKind::Udp => "Userspace UDP only",
            TransportKind::Shm => {
                "Shared memory; over several hosts, hierarchical (shared memory inside hosts, UDP \
                 between leaders)"
            }
        };
        Some(clap::builder::PossibleValue::new(self.0.name()).help(help))
    }
}

/// The variable through which ranks learn the transport.
pub const ENV_TRANSPORT: &str = boad_proto::env::TRANSPORT;

/// Which reduction programs boadrun loads (each costs a verifier run when the job starts).
pub const ENV_FOLDS: &str = "BOAD_KERNEL_FOLDS";

/// The (op, dtype) pairs a `BOAD_KERNEL_FOLDS` value selects: `all`, `none`, or a comma-separated
/// list of `OP`, `DTYPE` or `OP:DTYPE` (`sum,max:f32`: sum on every type and max on f32).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Folds(Vec<(Op, DType)>);

impl Folds {
    /// Every pair.
    pub fn all() -> Folds {
        Folds(
            Op::ALL
                .iter()
                .flat_map(|op| DType::ALL.iter().map(move |d| (*op, *d)))
                .collect(),
        )
    }

    /// Parses a `BOAD_KERNEL_FOLDS` value.
    pub fn parse(text: &str) -> Result<Folds, String> {
        let text = text.trim();
        match text {
            "" | "all" => return Ok(Folds::all()),
            "none" => return Ok(Folds(Vec::new())),
            _ => {}
        }
        let op = |w: &str| Op::ALL.iter().copied().find(|o| o.name() == w);
        let dtype = |w: &str| DType::ALL.iter().copied().find(|d| d.name() == w);
        let mut pairs = Vec::new();
        for item in text.split(',').map(str::trim) {
            let bad = || format!("{ENV_FOLDS}: {item:?} is not OP, DTYPE or OP:DTYPE");
            let picked: Vec<(Op, DType)> = match item.split_once(':') {
                Some((o, d)) => vec![(op(o).ok_or_else(bad)?, dtype(d).ok_or_else(bad)?)],
                None => match (op(item), dtype(item)) {
                    (Some(o), _) => DType::ALL.iter().map(|d| (o, *d)).collect(),
                    (None, Some(d)) => Op::ALL.iter().map(|o| (*o, d)).collect(),
                    (None, None) => return Err(bad()),
                },
            };
            pairs.extend(picked);
        }
        Ok(Folds(pairs))
    }

    /// From the environment (default: all).
    pub fn from_env() -> Result<Folds, String> {
        std::env::var(ENV_FOLDS).map_or_else(|_| Ok(Folds::all()), |v| Folds::parse(&v))
    }

    /// Whether the pair is selected.
    #[cfg(any(feature = "kernel", test))]
    pub fn contains(&self, op: Op, dtype: DType) -> bool {
        self.0.contains(&(op, dtype))
    }
}

/// CAP_NET_ADMIN and CAP_BPF, by bit number in `CapEff`.
const CAP_NET_ADMIN: u32 = 12;
const CAP_BPF: u32 = 38;

/// The effective capability set of this process (`CapEff` of `/proc/self/status`).
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// Whether this process has capability `bit`.
fn has_cap(bit: u32) -> bool {
    effective_caps().is_some_and(|c| c & (1 << bit) != 0)
}

/// Why the kernel path cannot be used, if the capabilities say so already.
pub fn missing_caps() -> Option<String> {
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_NET_ADMIN, "CAP_NET_ADMIN")]
        .into_iter()
        .filter(|(bit, _)| !has_cap(*bit))
        .map(|(_, name)| name)
        .collect();
    (!missing.is_empty()).then(|| format!("needs {} (run as root)", missing.join(" and ")))
}

/// `sysname release` of the running kernel.
fn kernel_release() -> String {
    // SAFETY: utsname is plain old data; all-zero is a valid value.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    let field = |f: &[libc::c_char]| -> String {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    format!("{} {}", field(&u.sysname), field(&u.release))
}

/// Whether `ip -d link show dev lo` (in the calling thread's namespace) shows an XDP program.
fn lo_has_xdp() -> bool {
    std::process::Command::new("ip")
        .args(["-d", "link", "show", "dev", "lo"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("xdp"))
}

/// `--check`'s `launcher:` line: what started boadrun itself, from `report` (`boad::check()` in
/// boadrun's own environment) and the Slurm allocation boadrun runs in, if any (`SLURM_JOB_ID`).
pub fn launcher_line(report: &str, slurm_job: Option<String>) -> String {
    let what = report.trim_end();
    let what = what.strip_prefix("launcher: ").unwrap_or(what);
    if what != boad::Launcher::Alone.name() {
        return format!(
            "launcher:        boadrun itself runs under another launcher: {}",
            what.replace('\n', "; ")
        );
    }
    match slurm_job {
        Some(job) => format!(
            "launcher:        none: boadrun starts the ranks (inside Slurm allocation {job}; \
             `srun --mpi=pmi2 PROGRAM` would start them without boadrun)"
        ),
        None => "launcher:        none: boadrun starts the ranks".into(),
    }
}

/// `boadrun --check`: what the machine offers the kernel path, and the path a job would take.
/// Prints a report to stdout; never fails.
pub fn check(transport: TransportKind) {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let btf = std::path::Path::new("/sys/kernel/btf/vmlinux").exists();
    println!("boadrun {}", env!("CARGO_PKG_VERSION"));
    println!(
        "{}",
        launcher_line(&boad::check(), std::env::var("SLURM_JOB_ID").ok())
    );
    println!("kernel:          {}", kernel_release());
    println!("BTF:             {} (/sys/kernel/btf/vmlinux)", yes(btf));
    println!("CAP_BPF:         {}", yes(has_cap(CAP_BPF)));
    println!("CAP_NET_ADMIN:   {}", yes(has_cap(CAP_NET_ADMIN)));
    println!(
        "eBPF programs:   {}",
        if cfg!(feature = "kernel") {
            "compiled in"
        } else {
            "not compiled in (build boadrun with --features kernel)"
        }
    );
    println!("BOAD_TRANSPORT:  {}", transport.name());
    let lo_busy = lo_has_xdp();
    println!(
        "lo:              {}",
        if lo_busy {
            "has an XDP program (another job?)"
        } else {
            "no XDP program"
        }
    );
    let socket = boad_proto::service::socket_path();
    let service = boad_proto::service::status_at(&socket);
    match &service {
        Ok(s) => println!(
            "kernel service:  boadd at {} ({} jobs, communicators {}/{})",
            socket.display(),
            s.jobs,
            s.comms_used,
            s.comms_max
        ),
        Err(e) => println!("kernel service:  none ({e})"),
    }
    let path = if !transport.wants_kernel() {
        Err(format!("BOAD_TRANSPORT={}", transport.name()))
    } else if service.is_ok() {
        println!("path:            kernel (through the kernel service)");
        return;
    } else {
        Folds::from_env()
            .and_then(|f| {
                missing_caps().map_or_else(
                    || imp::probe(&f),
                    |why| Err(format!("{why}, or the kernel service boadd")),
                )
            })
            .and_then(|took| {
            if lo_busy {
                Err("lo already has an XDP program (another job?); --hosts jobs are not affected".into())
            } else {
                Ok(took)
            }
        })
    };
    match path {
        Ok(took) => println!(
            "path:            kernel (programs loaded and attached in a scratch namespace in {:.1} s)",
            took.as_secs_f64()
        ),
        Err(why) => println!("path:            userspace: {why}"),
    }
}

pub use imp::HostSetup;

/// The kernel path of a job on this machine (or on a `--hosts` virtual cluster): boad's programs
/// loaded and attached by boadrun itself for this job alone, or served by the host's kernel service
/// (`boadd`, see `boad_proto::service`) when its socket exists and the job runs on this machine
/// (for root too: the service's programs hold `lo`). Dropping it detaches the programs or ends the
/// registration.
pub enum Setup {
    /// Loaded and attached by boadrun (CAP_BPF + CAP_NET_ADMIN).
    Own(imp::Setup),
    /// Served by the kernel service.
    Service(ServiceJob),
}

/// A job's registration with the kernel service, made when the ranks have joined.
pub struct ServiceJob {
    grant: std::sync::Mutex<Option<boad_proto::service::KernelGrant>>,
    /// The service's (host-wide) counters when the job registered.
    before: Vec<(String, u64)>,
}

/// How long loading may take before boadrun says how long it took (also said under `BOAD_STATS`).
const SAY_LOAD_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

impl Setup {
    /// The kernel path for a job: through the kernel service when `hosts` is empty (the job runs
    /// in boadrun's namespace) and the service's socket exists, else the programs loaded with the
    /// reduction programs `folds` and attached (see `imp::Setup::attach`), saying how long loading
    /// took when that was long.
    pub fn attach(hosts: Vec<std::os::fd::OwnedFd>, folds: &Folds) -> Result<Setup, String> {
        if hosts.is_empty() && boad_proto::service::present() {
            return Ok(Setup::Service(ServiceJob {
                grant: std::sync::Mutex::new(None),
                before: Vec::new(),
            }));
        }
        if let Some(why) = missing_caps() {
            return Err(if hosts.is_empty() {
                format!(
                    "{why}, or the kernel service boadd: none listens at {}",
                    boad_proto::service::socket_path().display()
                )
            } else {
                why
            });
        }
        let start = std::time::Instant::now();
        let own = imp::Setup::attach(hosts, folds)?;
        let took = start.elapsed();
        if took >= SAY_LOAD_AFTER || stats_wanted() {
            eprintln!(
                "boadrun: kernel path: programs loaded and attached in {:.1} s ({ENV_FOLDS} selects \
                 fewer reduction programs; the kernel service boadd loads them once per host)",
                took.as_secs_f64()
            );
        }
        Ok(Setup::Own(own))
    }

    /// Fills the maps for job `job` whose ranks said HELLO with `peers` (in rank order), or
    /// registers it with the kernel service, and returns the lines that tell the ranks (`KERNEL`,
    /// and `KCOMMS` for the service's communicators).
    pub fn fill(
        &mut self,
        job: u64,
        peers: &[boad_proto::PeerEntry],
    ) -> Result<Vec<boad_proto::Line>, String> {
        match self {
            Setup::Own(s) => s.fill(job, peers).map(|(trigger_port, leaders)| {
                vec![boad_proto::Line::Kernel {
                    trigger_port,
                    leaders,
                }]
            }),
            Setup::Service(s) => {
                let mut grant =
                    boad_proto::service::register(job, peers, None).map_err(|e| e.to_string())?;
                if stats_wanted() {
                    s.before = grant.counters().unwrap_or_default();
                }
                let lines = grant.grant().lines();
                *s.grant
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(grant);
                Ok(lines)
            }
        }
    }
}

/// Prints the kernel counters of `setup` for `BOAD_STATS` (through the service: what its programs
/// counted while the job was registered, over every job it served meanwhile).
pub fn print_stats(setup: &Setup) {
    match setup {
        Setup::Own(s) => print_own_stats(s),
        Setup::Service(s) => {
            let mut grant = s
                .grant
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(grant) = grant.as_mut() else { return };
            match grant.counters() {
                Ok(now) => {
                    let since: Vec<(String, u64)> = now
                        .iter()
                        .map(|(n, v)| {
                            let was = s.before.iter().find(|(b, _)| b == n).map_or(0, |(_, b)| *b);
                            (n.clone(), v.wrapping_sub(was))
                        })
                        .collect();
                    eprintln!("{} service=boadd", stats_line(&since, 1));
                }
                Err(e) => eprintln!("boadrun: reading the kernel counters: {e}"),
            }
        }
    }
}

/// Whether the job whose ranks said HELLO with `peers` (in rank order) uses the host leaders'
/// communicator too: several hosts, and some host with several ranks (the hierarchical path's
/// network level).
pub fn uses_leaders(peers: &[boad_proto::PeerEntry]) -> bool {
    let leaders = boad_proto::Layout::of(peers).leaders.len();
    leaders > 1 && leaders < peers.len()
}

/// One `BOAD_STATS` line of kernel counters (`(name, value)` in the programs' order, summed over
/// `hosts` hosts).
pub fn stats_line(counters: &[(String, u64)], hosts: usize) -> String {
    let mut line = format!("boadrun stats: kernel hosts={hosts}");
    for (name, value) in counters {
        line += &format!(" {name}={value}");
    }
    line
}

/// Adds `more` to `sum`, counter by counter (by name; a name `sum` lacks is appended).
pub fn add_counters(sum: &mut Vec<(String, u64)>, more: &[(String, u64)]) {
    for (name, value) in more {
        match sum.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = v.saturating_add(*value),
            None => sum.push((name.clone(), *value)),
        }
    }
}

/// The error's message followed by those of its sources not already part of it.
#[cfg(feature = "kernel")]
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

#[cfg(feature = "kernel")]
mod imp {
    use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};
    use std::os::fd::{AsFd, OwnedFd};
    use std::time::{Duration, Instant};

    use boad_ebpf_loader::{
        comm, with_netns, BcastMember, Counters, KernelPath, PortRole, XdpMode,
    };
    use boad_proto::control::Filled;
    use boad_proto::neigh::{iface_with, mac_of, next_hop_macs};
    use boad_proto::service::Comms;
    use boad_proto::{Layout, PeerEntry};

    use super::{chain, host_ipv4, lo_has_xdp, missing_caps, uses_leaders, Folds};

    /// Why a job without `--hosts` cannot have the kernel path.
    const LO_BUSY: &str = "lo already has an XDP program (another boad job?)";
    /// Attempts at a trigger port free on every host.
    const TRIGGER_TRIES: usize = 32;

    /// The job's loaded and attached programs. Dropping it detaches everything.
    pub struct Setup {
        // Declared first: dropped (detached) before the namespaces' descriptors are closed.
        path: KernelPath,
        /// Each host's network namespace, in host-id order; empty = boadrun's own namespace.
        hosts: Vec<OwnedFd>,
        /// MAC of each host's `eth0` (virtual cluster only).
        macs: Vec<[u8; 6]>,
        /// Sockets holding the trigger port on every host, so that nothing else binds it.
        trigger: Vec<UdpSocket>,
    }

    /// Loads the programs (the verifier runs on each of them) with the reduction programs `folds`.
    fn load(folds: &Folds) -> Result<KernelPath, String> {
        if let Some(why) = missing_caps() {
            return Err(why);
        }
        KernelPath::load_folds(|op, dtype| folds.contains(op, dtype)).map_err(|e| chain(&e))
    }

    /// Attaches XDP (generic mode) and TC egress to `lo` of the calling thread's namespace; with
    /// `iface` (the interface towards the other hosts: `eth0` of a virtual host, the routed one of a
    /// real host), also to `iface` (XDP in driver mode where the driver allows), and returns its MAC.
    /// The one attach rule of every kernel-path job.
    fn attach_here(path: &mut KernelPath, iface: Option<&str>) -> Result<Option<[u8; 6]>, String> {
        path.attach_xdp("lo", XdpMode::Generic)
            .map_err(|e| format!("attaching XDP to lo: {}", chain(&e)))?;
        path.attach_tc_egress("lo")
            .map_err(|e| format!("attaching TC egress to lo: {}", chain(&e)))?;
        let Some(iface) = iface else {
            return Ok(None);
        };
        // A host of several: TC sends the clones for ranks on the root's host to lo ingress, which
        // drops packets from a local source address unless this is on.
        boad_ebpf_loader::accept_local_on_lo()
            .map_err(|e| format!("setting accept_local on lo: {}", chain(&e)))?;
        path.attach_xdp(iface, XdpMode::Auto)
            .map_err(|e| format!("attaching XDP to {iface}: {}", chain(&e)))?;
        path.attach_tc_egress(iface)
            .map_err(|e| format!("attaching TC egress to {iface}: {}", chain(&e)))?;
        mac_of(iface)
            .map(Some)
            .map_err(|e| format!("reading the MAC of {iface}: {e}"))
    }

    /// Fills the maps for job `job` whose ranks said HELLO with `peers` (in rank order): the job
    /// key, every rank's port (reduce), the trigger port (broadcast), the world communicator
    /// (`comms.world`) and, on a job over several hosts where some host has several ranks
    /// ([`uses_leaders`]; then and only then `comms.leaders` is given), the host leaders'
    /// communicator (the hierarchical path's network level: leader `h` is the `h`-th leader of
    /// `boad_proto::Layout`); `mac` gives the destination MAC of each member's clones.
    /// Returns whether the leaders' communicator is filled. The one fill rule of every
    /// kernel-path job.
    ///
    /// Each member is given under the rank its transport puts in the header's `src` (job rank in
    /// `WORLD`, host index in `LEADERS`) with the address and port of its socket (the one it said
    /// HELLO with, which the leaders' transport keeps): the programs take a CONTRIB or BCAST naming
    /// `src` only from there.
    fn fill_maps(
        path: &mut KernelPath,
        job: u64,
        peers: &[PeerEntry],
        trigger: u16,
        comms: Comms,
        mac: impl Fn(&PeerEntry) -> Option<[u8; 6]>,
    ) -> Result<bool, String> {
        let hierarchical = uses_leaders(peers);
        if hierarchical != comms.leaders.is_some() {
            return Err(format!(
                "the job {} a host leaders' communicator, but was given {}",
                if hierarchical { "uses" } else { "does not use" },
                if comms.leaders.is_some() {
                    "one"
                } else {
                    "none"
                }
            ));
        }
        let map = |e: boad_ebpf_loader::KernelError| chain(&e);
        path.set_job(job).map_err(map)?;
        let mut members = Vec::with_capacity(peers.len());
        for p in peers {
            let IpAddr::V4(ip) = p.ip else {
                return Err(format!("rank {} has an IPv6 address ({})", p.rank, p.ip));
            };
            path.add_port(p.port, PortRole::Reduce).map_err(map)?;
            members.push(BcastMember {
                addr: SocketAddrV4::new(ip, p.port),
                rank: p.rank as u32,
                ifindex: 0,
                mac: mac(p),
            });
        }
        path.add_port(trigger, PortRole::Bcast).map_err(map)?;
        let contribs = (peers.len() as u32).saturating_sub(1);
        path.set_comm(comms.world, contribs, &members)
            .map_err(map)?;
        if let Some(leaders) = comms.leaders {
            let heads = BcastMember::leaders_of(&members, &Layout::of(peers).leaders);
            let contribs = (heads.len() as u32).saturating_sub(1);
            path.set_comm(leaders, contribs, &heads).map_err(map)?;
        }
        Ok(hierarchical)
    }

    /// Runs `f` in namespace `ns`, or here if there is none.
    fn in_ns<T: Send>(ns: Option<&OwnedFd>, f: impl FnOnce() -> T + Send) -> Result<T, String> {
        match ns {
            Some(fd) => with_netns(fd.as_fd(), f).map_err(|e| chain(&e)),
            None => Ok(f()),
        }
    }

    impl Setup {
        /// Loads the programs and attaches them: to `lo` of boadrun's namespace when `hosts` is
        /// empty, else to `lo` and `eth0` of every host's namespace.
        pub fn attach(hosts: Vec<OwnedFd>, folds: &Folds) -> Result<Setup, String> {
            // Not worth a load (seconds of verifier time) when the attach is sure to fail.
            if hosts.is_empty() && lo_has_xdp() {
                return Err(LO_BUSY.into());
            }
            let mut setup = Setup {
                path: load(folds)?,
                hosts,
                macs: Vec::new(),
                trigger: Vec::new(),
            };
            if setup.hosts.is_empty() {
                attach_here(&mut setup.path, None).map_err(|e| {
                    // Another job won the race for lo since the check above.
                    if lo_has_xdp() {
                        format!("{LO_BUSY}: {e}")
                    } else {
                        e
                    }
                })?;
                return Ok(setup);
            }
            for (h, ns) in setup.hosts.iter().enumerate() {
                let path = &mut setup.path;
                let mac = in_ns(Some(ns), || attach_here(path, Some("eth0")))
                    .and_then(|r| r)
                    .map_err(|e| format!("host {h}: {e}"))?;
                setup.macs.push(mac.unwrap_or_default());
            }
            Ok(setup)
        }

        /// Picks a UDP port free on every host (in boadrun's namespace without a cluster) and
        /// keeps it bound there.
        fn reserve_trigger(&mut self) -> Result<u16, String> {
            let bind = |port: u16| UdpSocket::bind(("0.0.0.0", port));
            let mut last = String::new();
            for _ in 0..TRIGGER_TRIES {
                let first = in_ns(self.hosts.first(), || bind(0))?
                    .map_err(|e| format!("binding a trigger port: {e}"))?;
                let port = first
                    .local_addr()
                    .map_err(|e| format!("binding a trigger port: {e}"))?
                    .port();
                let mut socks = vec![first];
                for ns in self.hosts.iter().skip(1) {
                    match in_ns(Some(ns), || bind(port))? {
                        Ok(s) => socks.push(s),
                        Err(e) => {
                            last = format!("port {port}: {e}");
                            break;
                        }
                    }
                }
                if socks.len() == self.hosts.len().max(1) {
                    self.trigger = socks;
                    return Ok(port);
                }
            }
            Err(format!("no trigger port free on every host ({last})"))
        }

        /// Fills the maps for job `job` whose ranks said HELLO with `peers` (in rank order; see
        /// `fill_maps`), with a trigger port free on every host, and returns it and whether the
        /// leaders' communicator is filled.
        pub fn fill(&mut self, job: u64, peers: &[PeerEntry]) -> Result<(u16, bool), String> {
            let trigger = self.reserve_trigger()?;
            let macs = &self.macs;
            let comms = Comms {
                world: comm::WORLD,
                leaders: uses_leaders(peers).then_some(comm::LEADERS),
            };
            let leaders = fill_maps(&mut self.path, job, peers, trigger, comms, |p| {
                macs.get(p.host_id as usize).copied()
            })?;
            Ok((trigger, leaders))
        }

        /// The programs' counters (one set of maps serves every host, so these are the sums).
        pub fn counters(&self) -> Result<Counters, String> {
            self.path.counters().map_err(|e| chain(&e))
        }

        /// Number of hosts the programs are attached on.
        pub fn host_count(&self) -> usize {
            self.hosts.len().max(1)
        }
    }

    /// `--check`: loads the programs and attaches them to `lo` of a scratch network namespace
    /// (a thread of its own that left ours), then detaches them; returns how long that took.
    pub fn probe(folds: &Folds) -> Result<Duration, String> {
        let start = Instant::now();
        let folds = folds.clone();
        let handle = std::thread::spawn(move || -> Result<(), String> {
            // SAFETY: unshare(CLONE_NEWNET) only moves this thread into a new network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(format!(
                    "cannot create a scratch network namespace: {}",
                    std::io::Error::last_os_error()
                ));
            }
            let mut path = load(&folds)?;
            attach_here(&mut path, None)?;
            path.detach_all().map_err(|e| chain(&e))
        });
        handle
            .join()
            .map_err(|_| "the probe thread panicked".to_string())??;
        Ok(start.elapsed())
    }

    /// The counters as `(name, value)` pairs, in the order `BOAD_STATS` prints them.
    pub fn counter_pairs(c: &Counters) -> Vec<(String, u64)> {
        c.pairs()
    }

    /// One host's part of the kernel path in a job across machines (`boadrun -H`), set up by that
    /// host's agent in its own namespace: the programs loaded and attached to `lo` and to the
    /// interface that holds the address the host reaches boadrun from (the route towards the other
    /// hosts), then its maps filled once boadrun sends the job table. Dropping it detaches
    /// everything (and so does the agent's end, however it ends: the links are its descriptors).
    pub struct HostSetup {
        path: KernelPath,
        /// The interface towards the other hosts.
        iface: String,
        /// Its MAC.
        mac: [u8; 6],
        /// This host's id in the job.
        host_id: u32,
        /// The socket holding the trigger port, once filled.
        trigger: Option<(u16, UdpSocket)>,
    }

    impl HostSetup {
        /// Loads the programs with the reduction programs `folds` and attaches them to `lo` and to
        /// the interface that has `bind` (the address this host's ranks bind and advertise).
        pub fn attach(bind: IpAddr, host_id: usize, folds: &Folds) -> Result<HostSetup, String> {
            let ip = host_ipv4(bind)?;
            let host_id =
                u32::try_from(host_id).map_err(|_| format!("host id {host_id} is too large"))?;
            let iface = iface_with(ip)?;
            if lo_has_xdp() {
                return Err(LO_BUSY.into());
            }
            let mut path = load(folds)?;
            let mac = attach_here(&mut path, Some(&iface))?.unwrap_or_default();
            Ok(HostSetup {
                path,
                iface,
                mac,
                host_id,
                trigger: None,
            })
        }

        /// The interface towards the other hosts.
        pub fn iface(&self) -> &str {
            &self.iface
        }

        /// Fills the maps for job `job` whose ranks said HELLO with `peers` (every rank, in rank
        /// order; see `fill_maps`) under communicator ids `comms`, each member's MAC being the
        /// next hop towards its host (this host's own MAC for its own ranks, whose clones go
        /// through `lo`), and binds `trigger` (kept until the next fill or the end).
        /// [`Filled::PortBusy`] if `trigger` is taken here.
        pub fn fill(
            &mut self,
            job: u64,
            peers: &[PeerEntry],
            trigger: u16,
            comms: Comms,
        ) -> Filled {
            match self.try_fill(job, peers, trigger, comms) {
                Ok(()) => Filled::Ok,
                Err(None) => Filled::PortBusy,
                Err(Some(why)) => Filled::No(why),
            }
        }

        fn try_fill(
            &mut self,
            job: u64,
            peers: &[PeerEntry],
            trigger: u16,
            comms: Comms,
        ) -> Result<(), Option<String>> {
            // The other hosts' addresses, each once.
            let mut remote: Vec<Ipv4Addr> = Vec::new();
            for p in peers.iter().filter(|p| p.host_id != self.host_id) {
                let IpAddr::V4(ip) = p.ip else {
                    return Err(Some(format!(
                        "rank {} has an IPv6 address ({})",
                        p.rank, p.ip
                    )));
                };
                if !remote.contains(&ip) {
                    remote.push(ip);
                }
            }
            let macs = next_hop_macs(&remote, &self.iface).map_err(Some)?;
            if self.trigger.as_ref().map(|(p, _)| *p) != Some(trigger) {
                if let Some((old, sock)) = self.trigger.take() {
                    drop(sock);
                    let _ = self.path.remove_port(old);
                }
                match UdpSocket::bind((Ipv4Addr::UNSPECIFIED, trigger)) {
                    Ok(sock) => self.trigger = Some((trigger, sock)),
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Err(None),
                    Err(e) => return Err(Some(format!("binding trigger port {trigger}: {e}"))),
                }
            }
            let (own, own_mac) = (self.host_id, self.mac);
            fill_maps(&mut self.path, job, peers, trigger, comms, |p| {
                if p.host_id == own {
                    return Some(own_mac);
                }
                let IpAddr::V4(ip) = p.ip else { return None };
                remote
                    .iter()
                    .position(|r| *r == ip)
                    .and_then(|i| macs.get(i).copied())
            })
            .map(|_| ())
            .map_err(Some)
        }

        /// The programs' counters on this host, as `(name, value)` pairs.
        pub fn counters(&self) -> Result<Vec<(String, u64)>, String> {
            self.path
                .counters()
                .map(|c| counter_pairs(&c))
                .map_err(|e| chain(&e))
        }
    }
}

#[cfg(not(feature = "kernel"))]
mod imp {
    use std::os::fd::OwnedFd;
    use std::time::Duration;

    use boad_proto::PeerEntry;

    use super::Folds;

    /// Why nothing can be set up.
    pub const NOT_COMPILED: &str =
        "the kernel path is not compiled in (build boadrun with --features kernel)";

    /// Stand-in for the kernel path's setup in a build without it: never exists.
    pub enum Setup {}

    /// Stand-in for a host's part of the kernel path in a build without it: never exists.
    pub enum HostSetup {}

    impl HostSetup {
        /// Always fails: the programs are not compiled in.
        pub fn attach(
            _bind: std::net::IpAddr,
            _host_id: usize,
            _folds: &Folds,
        ) -> Result<HostSetup, String> {
            Err(NOT_COMPILED.into())
        }

        /// Unreachable (no `HostSetup` exists).
        pub fn iface(&self) -> &str {
            match *self {}
        }

        /// Unreachable (no `HostSetup` exists).
        pub fn fill(
            &mut self,
            _job: u64,
            _peers: &[PeerEntry],
            _trigger: u16,
            _comms: boad_proto::service::Comms,
        ) -> boad_proto::control::Filled {
            match *self {}
        }

        /// Unreachable (no `HostSetup` exists).
        pub fn counters(&self) -> Result<Vec<(String, u64)>, String> {
            match *self {}
        }
    }

    impl Setup {
        /// Always fails: the programs are not compiled in.
        pub fn attach(_hosts: Vec<OwnedFd>, _folds: &Folds) -> Result<Setup, String> {
            Err(NOT_COMPILED.into())
        }

        /// Unreachable (no `Setup` exists).
        pub fn fill(&mut self, _job: u64, _peers: &[PeerEntry]) -> Result<(u16, bool), String> {
            match *self {}
        }
    }

    /// `--check`: nothing to probe.
    pub fn probe(_folds: &Folds) -> Result<Duration, String> {
        Err(NOT_COMPILED.into())
    }
}

/// Prints the counters of programs boadrun attached.
#[cfg(feature = "kernel")]
fn print_own_stats(setup: &imp::Setup) {
    match setup.counters() {
        Ok(c) => eprintln!(
            "{}",
            stats_line(&imp::counter_pairs(&c), setup.host_count())
        ),
        Err(e) => eprintln!("boadrun: reading the kernel counters: {e}"),
    }
}

/// Prints the counters of programs boadrun attached (none exist in this build).
#[cfg(not(feature = "kernel"))]
fn print_own_stats(setup: &imp::Setup) {
    match *setup {}
}

/// Whether `BOAD_STATS` asks for counters (the library's rule: set and not 0/false/no/off).
pub fn stats_wanted() -> bool {
    stats_on(std::env::var("BOAD_STATS").ok().as_deref())
}

/// Whether a `BOAD_STATS` value asks for counters (None: unset).
pub fn stats_on(value: Option<&str>) -> bool {
    value.is_some_and(|s| !matches!(s, "0" | "false" | "no" | "off"))
}

/// The IPv4 address a host of a job across machines reaches boadrun from (`bind`, the address its
/// ranks bind and advertise), or why the kernel path cannot serve that host.
pub fn host_ipv4(bind: std::net::IpAddr) -> Result<std::net::Ipv4Addr, String> {
    let std::net::IpAddr::V4(ip) = bind else {
        return Err(format!(
            "the kernel path is IPv4 only, and this host reaches boadrun over {bind}"
        ));
    };
    if ip.is_loopback() {
        return Err(format!(
            "this host reaches boadrun over loopback ({ip}): ranks on one machine take the kernel \
             path with boadrun -n N (or --hosts H), not -H"
        ));
    }
    Ok(ip)
}

/// How long a service-backed host waits for its kernel service to release the job's previous
/// registration before registering it again (the service frees a job when it has read the end of
/// its connection).
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// One host's part of the kernel path in a job across machines (`boadrun -H`) when the host's
/// kernel service (`boadd`) serves it: the agent loads nothing; once boadrun sends the job table,
/// it registers the job with the service (the trigger port and communicator ids boadrun picked,
/// the same on every host) and holds the registration until the job ends or boadrun says `KOFF`
/// (dropping this ends it; so does the agent's end, however it ends: the service frees a job when
/// its connection closes).
pub struct HostService {
    /// The service's socket.
    socket: std::path::PathBuf,
    /// The job's registration, once filled.
    grant: Option<boad_proto::service::KernelGrant>,
    /// The service's (host-wide) counters when the job registered (with `BOAD_STATS`).
    before: Vec<(String, u64)>,
    /// Whether the job wants counters (`BOAD_STATS`).
    stats: bool,
}

impl HostService {
    /// The service listening at `socket` for a job with `BOAD_STATS` on or off, and the
    /// communicators it has free now (its `FREE`).
    pub fn open(socket: std::path::PathBuf, stats: bool) -> Result<(HostService, u64), String> {
        let free = boad_proto::service::free_at(&socket).map_err(|e| e.to_string())?;
        Ok((
            HostService {
                socket,
                grant: None,
                before: Vec::new(),
                stats,
            },
            free,
        ))
    }

    /// Registers job `job` whose ranks said HELLO with `peers` (every rank, in rank order) with the
    /// service, asking for trigger port `trigger` and communicator ids `comms`, and keeps the
    /// registration (a previous one of this job is ended first). [`Filled::PortBusy`] if
    /// `trigger` is bound on this host already, so that boadrun tries another.
    ///
    /// [`Filled::PortBusy`]: boad_proto::control::Filled::PortBusy
    pub fn fill(
        &mut self,
        job: u64,
        peers: &[boad_proto::PeerEntry],
        trigger: u16,
        comms: boad_proto::service::Comms,
    ) -> boad_proto::control::Filled {
        use boad_proto::control::Filled;
        use boad_proto::service::{register_at, Grant};
        if let Some(old) = self.grant.take() {
            let held = old.grant();
            drop(old);
            self.wait_released(&held);
        }
        // The service binds the trigger port for the job; a port bound here already is one for
        // boadrun to replace, not a reason to give up on the kernel path.
        match std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, trigger)) {
            Ok(probe) => drop(probe),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Filled::PortBusy,
            Err(e) => return Filled::No(format!("binding trigger port {trigger}: {e}")),
        }
        let want = Grant {
            trigger,
            world: comms.world,
            leaders: comms.leaders,
        };
        match register_at(&self.socket, job, peers, Some(trigger), Some(comms)) {
            Ok(mut grant) if grant.grant() == want => {
                if self.stats {
                    self.before = grant.counters().unwrap_or_default();
                }
                self.grant = Some(grant);
                Filled::Ok
            }
            Ok(grant) => Filled::No(format!(
                "the kernel service at {} granted {:?} when asked for {want:?}",
                self.socket.display(),
                grant.grant()
            )),
            Err(e) => Filled::No(e.to_string()),
        }
    }

    /// Waits (at most [`RELEASE_WAIT`]) until the service has freed the communicators of `held`.
    fn wait_released(&self, held: &boad_proto::service::Grant) {
        let ids = std::iter::once(held.world).chain(held.leaders);
        let mask = ids.filter(|&id| id < 64).fold(0u64, |m, id| m | (1 << id));
        let until = std::time::Instant::now() + RELEASE_WAIT;
        while std::time::Instant::now() < until {
            match boad_proto::service::free_at(&self.socket) {
                Ok(free) if free & mask == mask => return,
                Ok(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                Err(_) => return,
            }
        }
    }

    /// What the service's programs counted while the job was registered (host-wide: over every
    /// job the service served meanwhile, as `KernelGrant::counters` says).
    pub fn counters(&mut self) -> Result<Vec<(String, u64)>, String> {
        let grant = self
            .grant
            .as_mut()
            .ok_or("the job is not registered with the kernel service")?;
        let now = grant.counters().map_err(|e| e.to_string())?;
        Ok(now
            .into_iter()
            .map(|(n, v)| {
                let was = self
                    .before
                    .iter()
                    .find(|(b, _)| *b == n)
                    .map_or(0, |(_, b)| *b);
                (n, v.wrapping_sub(was))
            })
            .collect())
    }
}

/// One host's part of the kernel path in a job across machines, as its agent set it up.
pub enum HostKernel {
    /// The programs loaded and attached by the agent itself (root).
    Own(HostSetup),
    /// The host's kernel service.
    Service(HostService),
}

impl HostKernel {
    /// Fills the maps (or registers the job with the service) for job `job` whose ranks said
    /// HELLO with `peers`, with trigger port `trigger` and communicator ids `comms`.
    pub fn fill(
        &mut self,
        job: u64,
        peers: &[boad_proto::PeerEntry],
        trigger: u16,
        comms: boad_proto::service::Comms,
    ) -> boad_proto::control::Filled {
        match self {
            HostKernel::Own(h) => h.fill(job, peers, trigger, comms),
            HostKernel::Service(s) => s.fill(job, peers, trigger, comms),
        }
    }

    /// The programs' counters on this host (through the service: host-wide, since the job
    /// registered).
    pub fn counters(&mut self) -> Result<Vec<(String, u64)>, String> {
        match self {
            HostKernel::Own(h) => h.counters(),
            HostKernel::Service(s) => s.counters(),
        }
    }
}

/// Whether a job across machines (`-H`, `--hostfile`) sets up the kernel path on its hosts: with
/// `--transport kernel`, and with `auto` when it has several hosts (on one host the ranks use
/// shared memory, and loading the programs costs seconds of verifier time; a build without the
/// programs says so for `kernel` only, not on every `auto` job). boadrun and every agent decide by
/// this one rule (an agent knows there are several hosts when its ranks are not all of the job's).
pub fn across_hosts(transport: TransportKind, several_hosts: bool) -> bool {
    transport == TransportKind::Kernel
        || (transport == TransportKind::Auto && several_hosts && cfg!(feature = "kernel"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_parse() {
        assert_eq!(Folds::parse("all"), Ok(Folds::all()));
        assert_eq!(Folds::parse(""), Ok(Folds::all()));
        assert_eq!(Folds::all().0.len(), Op::ALL.len() * DType::ALL.len());
        let none = Folds::parse("none").expect("none");
        assert!(!none.contains(Op::Sum, DType::I32));
        let some = Folds::parse("sum, max:f32,u8").expect("list");
        assert!(some.contains(Op::Sum, DType::I64));
        assert!(some.contains(Op::Max, DType::F32));
        assert!(!some.contains(Op::Max, DType::F64));
        assert!(some.contains(Op::Bxor, DType::U8));
        assert!(!some.contains(Op::Bxor, DType::U16));
        for bad in ["summ", "sum:f16", "sum:", ",", "max:f32:x"] {
            let err = Folds::parse(bad).expect_err(bad);
            assert!(err.starts_with("BOAD_KERNEL_FOLDS: "), "{err}");
        }
    }

    #[test]
    fn transport_names() {
        for t in TransportKind::ALL {
            let parsed = <Transport as clap::ValueEnum>::from_str(t.name(), false);
            assert_eq!(parsed, Ok(Transport(t)));
        }
    }
}
