//! Loading, attaching and filling the maps of the eBPF programs (see the crate docs).

use std::collections::HashMap as StdHashMap;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, BorrowedFd};

use aya::maps::{Array, HashMap, MapData, PerCpuArray, ProgramArray};
use aya::programs::tc::{SchedClassifierLinkId, TcAttachType};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{SchedClassifier, Xdp};
use aya::{Ebpf, EbpfLoader};
use boad_common::kernel::{counter, port, CommInfo, Config, Member};

pub use boad_common::kernel::{MAX_COMMS, MAX_PORTS};
use boad_common::prog_index;

pub use boad_common::kernel::{comm, MAX_PAYLOAD, MAX_RANKS};

use boad::{DType, Op};

/// The eBPF object built by `build.rs` from `collectives-ebpf`.
static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/boad-collectives-ebpf"));

const XDP_PROG: &str = "boad_xdp";
const TC_PROG: &str = "boad_tc_bcast";

/// Errors of the kernel path.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The object could not be parsed or its maps created.
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program failed to load (verifier) or attach.
    #[error("eBPF program {name}: {source}")]
    Program {
        /// Program name.
        name: String,
        /// What went wrong.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map operation failed.
    #[error("eBPF map {name}: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// What went wrong.
        #[source]
        source: aya::maps::MapError,
    },
    /// The object lacks a program or map the loader needs (object and loader out of sync).
    #[error("the eBPF object has no {0}")]
    Missing(String),
    /// An interface name that cannot name an interface.
    #[error("bad interface name {0:?}")]
    Interface(String),
    /// A request over the kernel path's fixed limits.
    #[error("kernel path limit: {0}")]
    Limit(String),
    /// A communicator's members are not numbered `0..n`, each rank once.
    #[error("communicator {comm}: {why}")]
    Members {
        /// The communicator.
        comm: u32,
        /// What is wrong.
        why: String,
    },
    /// Entering a network namespace failed.
    #[error("entering the network namespace: {0}")]
    Netns(#[source] std::io::Error),
    /// Writing a sysctl failed.
    #[error("setting a sysctl: {0}")]
    Sysctl(#[source] std::io::Error),
    /// Turning the programs' run-time accounting (`BPF_ENABLE_STATS`) on failed.
    #[error("enabling bpf_stats: {0}")]
    Stats(#[source] std::io::Error),
}

/// Result of the kernel path's operations.
pub type Result<T> = std::result::Result<T, KernelError>;

/// How [`KernelPath::attach_xdp`] attaches the XDP program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// Generic (SKB) mode: works on every interface; the only mode on `lo`.
    Generic,
    /// Driver (native) mode: veth and NICs with XDP support.
    Driver,
    /// Driver mode, falling back to generic mode where the driver refuses.
    Auto,
}

/// What the programs do with datagrams to a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortRole {
    /// XDP folds CONTRIBs to this port (a reducing rank's port).
    Reduce,
    /// TC clones BCAST datagrams sent to this port (a root's trigger port).
    Bcast,
    /// Both.
    Both,
}

impl PortRole {
    fn bits(self) -> u32 {
        match self {
            PortRole::Reduce => port::REDUCE,
            PortRole::Bcast => port::BCAST,
            PortRole::Both => port::REDUCE | port::BCAST,
        }
    }
}

/// One member of a communicator: a destination of the broadcast program, and the only source
/// whose datagrams either program takes as rank `rank`'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BcastMember {
    /// The member's socket: where its clones go, and the IPv4 source address and UDP source port
    /// its CONTRIBs and BCASTs must come from.
    pub addr: SocketAddrV4,
    /// The member's rank in the communicator (header `src` of what it sends, `dst` of its clones).
    pub rank: u32,
    /// Interface the clone leaves by; 0 = the original's.
    pub ifindex: u32,
    /// Destination MAC (needed off `lo`); `None` keeps the original's.
    pub mac: Option<[u8; 6]>,
}

impl BcastMember {
    /// The members of the host leaders' communicator: the member of each host's leader (rank
    /// `leaders[h]` of `members`), renumbered by host, since the leaders' transport calls leader `h`
    /// rank `h`.
    pub fn leaders_of(members: &[BcastMember], leaders: &[usize]) -> Vec<BcastMember> {
        leaders
            .iter()
            .enumerate()
            .map(|(h, &r)| BcastMember {
                rank: h as u32,
                ..members[r]
            })
            .collect()
    }
}

/// Counters of the programs, summed over CPUs (see `boad_common::kernel::counter`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Contributions folded (all of them, including each reduction's last).
    pub folded: u64,
    /// Contributions folded and dropped (all but each reduction's last).
    pub dropped: u64,
    /// RESULT datagrams delivered.
    pub passed: u64,
    /// Resent contributions dropped.
    pub duplicates: u64,
    /// Datagrams to a boad port with a wrong magic, version or job key.
    pub foreign: u64,
    /// CONTRIBs passed to the socket unfolded.
    pub unfolded: u64,
    /// Broadcast clones sent.
    pub clones: u64,
    /// Broadcast clones that failed.
    pub clone_errors: u64,
    /// BCAST datagrams replaced by clones.
    pub bcasts: u64,
    /// Resent CONTRIBs to a complete reduction, rewritten into a copy of its RESULT.
    pub result_resent: u64,
    /// CONTRIBs with `flags::BYPASS`, passed unfolded.
    pub bypassed: u64,
    /// CONTRIBs passed unfolded because their signature differs from their reduction's first.
    pub mismatched: u64,
    /// Broadcast clones sent through `lo` to a member on the sender's host (included in `clones`).
    pub local_clones: u64,
    /// CONTRIBs and BCASTs not from the address and port of the member their header names,
    /// passed untouched (not folded, not cloned).
    pub wrong_source: u64,
}

impl Counters {
    /// The counters as `(name, value)` pairs, in the order `BOAD_STATS` prints them.
    pub fn pairs(&self) -> Vec<(String, u64)> {
        [
            ("folded", self.folded),
            ("dropped", self.dropped),
            ("passed", self.passed),
            ("duplicates", self.duplicates),
            ("foreign", self.foreign),
            ("unfolded", self.unfolded),
            ("clones", self.clones),
            ("local_clones", self.local_clones),
            ("clone_errors", self.clone_errors),
            ("bcasts", self.bcasts),
            ("result_resent", self.result_resent),
            ("bypassed", self.bypassed),
            ("mismatched", self.mismatched),
            ("wrong_source", self.wrong_source),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// What happened since `before` (an earlier reading): the field-wise difference.
    pub fn since(&self, before: &Counters) -> Counters {
        let d = |a: u64, b: u64| a.wrapping_sub(b);
        Counters {
            folded: d(self.folded, before.folded),
            dropped: d(self.dropped, before.dropped),
            passed: d(self.passed, before.passed),
            duplicates: d(self.duplicates, before.duplicates),
            foreign: d(self.foreign, before.foreign),
            unfolded: d(self.unfolded, before.unfolded),
            clones: d(self.clones, before.clones),
            clone_errors: d(self.clone_errors, before.clone_errors),
            bcasts: d(self.bcasts, before.bcasts),
            result_resent: d(self.result_resent, before.result_resent),
            bypassed: d(self.bypassed, before.bypassed),
            mismatched: d(self.mismatched, before.mismatched),
            local_clones: d(self.local_clones, before.local_clones),
            wrong_source: d(self.wrong_source, before.wrong_source),
        }
    }
}

/// Sets `net.ipv4.conf.lo.accept_local = 1` in the calling thread's network namespace, so `lo`
/// accepts packets with a local source address: needed for the broadcast program's clones to a
/// member on the sender's host (a packet that *enters* `lo` is routed as received, and IPv4 takes a
/// local source address on it for a martian otherwise). Packets on `lo` come from this host only, so
/// this admits nothing from outside. Needs CAP_NET_ADMIN in the namespace.
pub fn accept_local_on_lo() -> Result<()> {
    std::fs::write("/proc/sys/net/ipv4/conf/lo/accept_local", "1").map_err(KernelError::Sysctl)
}

/// Runs `f` on a new thread that has entered the network namespace `netns` (an open
/// `/run/netns/NAME` or `/proc/PID/ns/net` file) and returns its result; a panic in `f` is re-raised
/// in the caller. The calling thread's own namespace is unchanged.
///
/// Interface names and indices (and so aya's attachments, see the module docs) are per namespace:
/// this is how a process attaches to an interface of a namespace it does not live in. What `f`
/// creates there (sockets, BPF links) stays in that namespace after the thread ends.
pub fn with_netns<T: Send>(netns: BorrowedFd<'_>, f: impl FnOnce() -> T + Send) -> Result<T> {
    let fd = netns.as_raw_fd();
    std::thread::scope(|scope| {
        let handle = scope.spawn(move || {
            // SAFETY: `fd` is borrowed for the whole scope (the thread is joined before it ends);
            // setns changes only this new thread's network namespace.
            if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                return Err(KernelError::Netns(std::io::Error::last_os_error()));
            }
            Ok(f())
        });
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// True if the kernel folds `op` on `dtype` (the others pass to userspace as CONTRIBs): the one
/// rule, `boad_common::kernel::folds`, for the typed enums.
pub const fn folds_in_kernel(op: Op, dtype: DType) -> bool {
    boad_common::kernel::folds(op as u8, dtype as u8)
}

/// Name of the reduction program for (`op`, `dtype`) in the object.
fn fold_prog_name(op: Op, dtype: DType) -> String {
    format!("fold_{}_{}", op.name(), dtype.name())
}

// aya reads and writes map values as plain bytes of types implementing its `Pod`; the shared types
// live in boad-common, which does not depend on aya, hence these wrappers.
macro_rules! pod_wrapper {
    ($($w:ident($t:ty)),*) => {$(
        #[derive(Clone, Copy)]
        #[repr(transparent)]
        struct $w($t);
        // SAFETY: the wrapped type is repr(C), made of integers and integer arrays only, without
        // padding (boad-common asserts its size), so every byte pattern is a valid value.
        unsafe impl aya::Pod for $w {}
    )*};
}
pod_wrapper!(PodConfig(Config), PodCommInfo(CommInfo), PodMember(Member));

/// The loaded programs and their maps; detaches everything on drop.
pub struct KernelPath {
    ebpf: Ebpf,
    /// Communicator id -> its block in MEMBERS.
    comm_blocks: StdHashMap<u32, u32>,
    /// The key of [`KernelPath::set_job`], given to communicators [`KernelPath::set_comm`] registers.
    job: u64,
    xdp_links: Vec<XdpLinkId>,
    tc_links: Vec<SchedClassifierLinkId>,
}

impl Drop for KernelPath {
    fn drop(&mut self) {
        // Dropping `ebpf` would detach too; doing it first keeps the order explicit.
        let _ = self.detach_all();
    }
}

impl std::fmt::Debug for KernelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelPath")
            .field("comms", &self.comm_blocks.len())
            .finish_non_exhaustive()
    }
}

fn program_err(name: &str) -> impl FnOnce(aya::programs::ProgramError) -> KernelError + '_ {
    move |source| KernelError::Program {
        name: name.to_string(),
        source,
    }
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> KernelError {
    move |source| KernelError::Map { name, source }
}

impl KernelPath {
    /// Loads the embedded programs (the verifier runs on each: a few seconds) without attaching them.
    pub fn load() -> Result<Self> {
        Self::load_object(OBJECT, |_, _| true)
    }

    /// Like [`KernelPath::load`], but loads only the reduction programs of the (op, dtype) pairs
    /// `wanted` accepts (each costs a verifier run); CONTRIBs of the others pass unfolded.
    pub fn load_folds(wanted: impl Fn(Op, DType) -> bool) -> Result<Self> {
        Self::load_object(OBJECT, wanted)
    }

    /// Loads the programs from an eBPF object built from `collectives-ebpf`, with the reduction
    /// programs `wanted` accepts.
    pub fn load_object(object: &[u8], wanted: impl Fn(Op, DType) -> bool) -> Result<Self> {
        let mut ebpf = EbpfLoader::new().load(object)?;
        let mut folds = Vec::new();
        for op in Op::ALL {
            for dtype in DType::ALL {
                if folds_in_kernel(op, dtype) && wanted(op, dtype) {
                    folds.push((op, dtype, fold_prog_name(op, dtype)));
                }
            }
        }
        for name in [XDP_PROG, TC_PROG]
            .into_iter()
            .chain(folds.iter().map(|(_, _, n)| n.as_str()))
        {
            let prog = ebpf
                .program_mut(name)
                .ok_or_else(|| KernelError::Missing(format!("program {name}")))?;
            if name == TC_PROG {
                let tc: &mut SchedClassifier = prog.try_into().map_err(program_err(name))?;
                tc.load().map_err(program_err(name))?;
            } else {
                let xdp: &mut Xdp = prog.try_into().map_err(program_err(name))?;
                xdp.load().map_err(program_err(name))?;
            }
        }
        let mut table = Vec::new();
        for (op, dtype, name) in &folds {
            let prog = ebpf
                .program(name)
                .ok_or_else(|| KernelError::Missing(format!("program {name}")))?;
            let fd = prog
                .fd()
                .map_err(program_err(name))?
                .try_clone()
                .map_err(|e| program_err(name)(aya::programs::ProgramError::IOError(e)))?;
            table.push((prog_index(*op as u8, *dtype as u8), fd));
        }
        let mut progs: ProgramArray<&mut MapData> = ProgramArray::try_from(
            ebpf.map_mut("PROGS")
                .ok_or_else(|| KernelError::Missing("map PROGS".into()))?,
        )
        .map_err(map_err("PROGS"))?;
        for (index, fd) in &table {
            progs.set(*index, fd, 0).map_err(map_err("PROGS"))?;
        }
        Ok(KernelPath {
            ebpf,
            comm_blocks: StdHashMap::new(),
            job: 0,
            xdp_links: Vec::new(),
            tc_links: Vec::new(),
        })
    }

    fn map(&mut self, name: &'static str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .ok_or_else(|| KernelError::Missing(format!("map {name}")))
    }

    /// Sets the job key: datagrams with another key are foreign. 0 turns both programs off.
    /// Communicators registered afterwards with [`KernelPath::set_comm`] carry this key; one
    /// registered with [`KernelPath::set_job_comm`] carries its own (a service serving several jobs
    /// sets a key here that no job knows, only to turn the programs on).
    pub fn set_job(&mut self, job: u64) -> Result<()> {
        let mut config: Array<_, PodConfig> =
            Array::try_from(self.map("CONFIG")?).map_err(map_err("CONFIG"))?;
        config
            .set(0, PodConfig(Config { job }), 0)
            .map_err(map_err("CONFIG"))?;
        self.job = job;
        Ok(())
    }

    /// Registers UDP port `port` (host order) with `role`, replacing its previous role.
    pub fn add_port(&mut self, port: u16, role: PortRole) -> Result<()> {
        let mut ports: HashMap<_, u16, u32> =
            HashMap::try_from(self.map("PORTS")?).map_err(map_err("PORTS"))?;
        ports.insert(port, role.bits(), 0).map_err(map_err("PORTS"))
    }

    /// Unregisters `port`; datagrams to it pass untouched again.
    pub fn remove_port(&mut self, port: u16) -> Result<()> {
        let mut ports: HashMap<_, u16, u32> =
            HashMap::try_from(self.map("PORTS")?).map_err(map_err("PORTS"))?;
        match ports.remove(&port) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err("PORTS")(e)),
        }
    }

    /// Registers communicator `comm`: `contribs` CONTRIBs complete one (seq, chunk) of a reduction,
    /// and `members` (at most [`MAX_RANKS`]; their ranks are `0..members.len()`, each once, in any
    /// order) receive its broadcasts and are the only sources whose CONTRIBs and BCASTs the programs
    /// take (see the module docs, Source). Its datagrams carry the key of [`KernelPath::set_job`].
    /// Replaces a previous registration.
    pub fn set_comm(&mut self, comm: u32, contribs: u32, members: &[BcastMember]) -> Result<()> {
        self.register_comm(self.job, comm, contribs, members)
    }

    /// Like [`KernelPath::set_comm`] for a communicator of job key `job` (nonzero): datagrams naming
    /// `comm` with another key are foreign, whatever [`KernelPath::set_job`] set. How one set of
    /// programs serves several jobs at once, each on communicators of its own.
    pub fn set_job_comm(
        &mut self,
        job: u64,
        comm: u32,
        contribs: u32,
        members: &[BcastMember],
    ) -> Result<()> {
        if job == 0 {
            return Err(KernelError::Limit(format!(
                "communicator {comm}: job key 0 turns the programs off"
            )));
        }
        self.register_comm(job, comm, contribs, members)
    }

    fn register_comm(
        &mut self,
        job: u64,
        comm: u32,
        contribs: u32,
        members: &[BcastMember],
    ) -> Result<()> {
        if members.len() > MAX_RANKS as usize || contribs > MAX_RANKS {
            return Err(KernelError::Limit(format!(
                "communicator {comm}: {} members / {contribs} contributions, at most {MAX_RANKS}",
                members.len()
            )));
        }
        // The programs find member `src` at `base + src`: the ranks must number the members.
        let mut seen = vec![false; members.len()];
        for m in members {
            match seen.get_mut(m.rank as usize) {
                Some(s) if !*s => *s = true,
                _ => {
                    return Err(KernelError::Members {
                        comm,
                        why: format!(
                            "rank {} given twice or not below the {} members",
                            m.rank,
                            members.len()
                        ),
                    })
                }
            }
        }
        let block = match self.comm_blocks.get(&comm) {
            Some(b) => *b,
            None => (0..MAX_COMMS)
                .find(|b| !self.comm_blocks.values().any(|used| used == b))
                .ok_or_else(|| {
                    KernelError::Limit(format!("more than {MAX_COMMS} communicators"))
                })?,
        };
        let base = block * MAX_RANKS;
        {
            let mut table: Array<_, PodMember> =
                Array::try_from(self.map("MEMBERS")?).map_err(map_err("MEMBERS"))?;
            for m in members {
                let member = Member {
                    ip_be: u32::from_ne_bytes(m.addr.ip().octets()),
                    port_be: u16::from_ne_bytes(m.addr.port().to_be_bytes()),
                    rank: m.rank,
                    ifindex: m.ifindex,
                    mac: m.mac.unwrap_or([0; 6]),
                    ..Member::default()
                };
                table
                    .set(base + m.rank, PodMember(member), 0)
                    .map_err(map_err("MEMBERS"))?;
            }
        }
        let mut comms: HashMap<_, u32, PodCommInfo> =
            HashMap::try_from(self.map("COMMS")?).map_err(map_err("COMMS"))?;
        let info = CommInfo {
            contribs,
            nmembers: members.len() as u32,
            members_base: base,
            reserved: 0,
            job,
        };
        comms
            .insert(comm, PodCommInfo(info), 0)
            .map_err(map_err("COMMS"))?;
        self.comm_blocks.insert(comm, block);
        Ok(())
    }

    /// Unregisters communicator `comm`: its CONTRIBs pass unfolded, its BCASTs are not cloned.
    pub fn remove_comm(&mut self, comm: u32) -> Result<()> {
        let mut comms: HashMap<_, u32, PodCommInfo> =
            HashMap::try_from(self.map("COMMS")?).map_err(map_err("COMMS"))?;
        match comms.remove(&comm) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err("COMMS")(e)),
        }
        self.comm_blocks.remove(&comm);
        Ok(())
    }

    /// Attaches the XDP program to interface `iface` of the calling thread's network namespace (use
    /// [`XdpMode::Generic`] on `lo`).
    pub fn attach_xdp(&mut self, iface: &str, mode: XdpMode) -> Result<()> {
        let ifindex = ifindex(iface)?;
        let xdp: &mut Xdp = self
            .ebpf
            .program_mut(XDP_PROG)
            .ok_or_else(|| KernelError::Missing(format!("program {XDP_PROG}")))?
            .try_into()
            .map_err(program_err(XDP_PROG))?;
        let attach = |xdp: &mut Xdp, m| xdp.attach_to_if_index(ifindex, m);
        let res = match mode {
            XdpMode::Generic => attach(xdp, aya::programs::XdpMode::Skb),
            XdpMode::Driver => attach(xdp, aya::programs::XdpMode::Driver),
            XdpMode::Auto => attach(xdp, aya::programs::XdpMode::Driver)
                .or_else(|_| attach(xdp, aya::programs::XdpMode::Skb)),
        };
        let id = res.map_err(program_err(XDP_PROG))?;
        self.xdp_links.push(id);
        Ok(())
    }

    /// Like [`KernelPath::attach_xdp`] for interface `iface` of the network namespace `netns` (an
    /// open `/run/netns/NAME` or `/proc/PID/ns/net` file), through [`with_netns`]. The attachment is
    /// detached like the others (on drop or [`KernelPath::detach_all`]), from any namespace.
    pub fn attach_xdp_in(
        &mut self,
        netns: BorrowedFd<'_>,
        iface: &str,
        mode: XdpMode,
    ) -> Result<()> {
        with_netns(netns, || self.attach_xdp(iface, mode))?
    }

    /// Like [`KernelPath::attach_tc_egress`] for interface `iface` of the network namespace `netns`,
    /// through [`with_netns`]. Detached like the others, from any namespace.
    pub fn attach_tc_egress_in(&mut self, netns: BorrowedFd<'_>, iface: &str) -> Result<()> {
        with_netns(netns, || self.attach_tc_egress(iface))?
    }

    /// Attaches the broadcast program to the egress (TCX) of `iface` in the calling thread's network
    /// namespace.
    pub fn attach_tc_egress(&mut self, iface: &str) -> Result<()> {
        ifindex(iface)?;
        let tc: &mut SchedClassifier = self
            .ebpf
            .program_mut(TC_PROG)
            .ok_or_else(|| KernelError::Missing(format!("program {TC_PROG}")))?
            .try_into()
            .map_err(program_err(TC_PROG))?;
        let id = tc
            .attach(iface, TcAttachType::Egress)
            .map_err(program_err(TC_PROG))?;
        self.tc_links.push(id);
        Ok(())
    }

    /// Detaches every attachment made through this `KernelPath` (also done on drop); the programs
    /// stay loaded and the maps keep their contents.
    pub fn detach_all(&mut self) -> Result<()> {
        let mut first_err = None;
        if let Some(prog) = self.ebpf.program_mut(XDP_PROG) {
            let xdp: &mut Xdp = prog.try_into().map_err(program_err(XDP_PROG))?;
            for id in self.xdp_links.drain(..) {
                if let Err(e) = xdp.detach(id) {
                    first_err.get_or_insert(program_err(XDP_PROG)(e));
                }
            }
        }
        if let Some(prog) = self.ebpf.program_mut(TC_PROG) {
            let tc: &mut SchedClassifier = prog.try_into().map_err(program_err(TC_PROG))?;
            for id in self.tc_links.drain(..) {
                if let Err(e) = tc.detach(id) {
                    first_err.get_or_insert(program_err(TC_PROG)(e));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Reads the counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters> {
        let map = self
            .ebpf
            .map("COUNTERS")
            .ok_or_else(|| KernelError::Missing("map COUNTERS".into()))?;
        let table: PerCpuArray<_, u64> = PerCpuArray::try_from(map).map_err(map_err("COUNTERS"))?;
        let sums = crate::readback::sum_counters(|i| {
            table
                .get(&i, 0)
                .map(|v| v.to_vec())
                .map_err(map_err("COUNTERS"))
        })?;
        let get = |i: u32| -> Result<u64> { Ok(sums[i as usize]) };
        Ok(Counters {
            folded: get(counter::FOLDED)?,
            dropped: get(counter::DROPPED)?,
            passed: get(counter::PASSED)?,
            duplicates: get(counter::DUPLICATES)?,
            foreign: get(counter::FOREIGN)?,
            unfolded: get(counter::UNFOLDED)?,
            clones: get(counter::CLONES)?,
            clone_errors: get(counter::CLONE_ERRORS)?,
            bcasts: get(counter::BCASTS)?,
            result_resent: get(counter::RESULT_RESENT)?,
            bypassed: get(counter::BYPASSED)?,
            mismatched: get(counter::MISMATCHED)?,
            local_clones: get(counter::LOCAL_CLONES)?,
            wrong_source: get(counter::WRONG_SOURCE)?,
        })
    }
}

/// Index of interface `name`, checked so a bad name is an error, not a panic.
fn ifindex(name: &str) -> Result<u32> {
    if name.is_empty() || name.len() >= libc::IF_NAMESIZE || name.contains(['\0', '/']) {
        return Err(KernelError::Interface(name.to_string()));
    }
    let c = std::ffi::CString::new(name).map_err(|_| KernelError::Interface(name.to_string()))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(KernelError::Interface(name.to_string()));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_folds_integers_and_float_min_max_only() {
        let n = Op::ALL
            .iter()
            .flat_map(|op| DType::ALL.iter().map(move |d| (*op, *d)))
            .filter(|(op, d)| folds_in_kernel(*op, *d))
            .count();
        assert_eq!(n, 9 * 8 + 2 * 2);
        assert!(!folds_in_kernel(Op::Sum, DType::F32));
        assert!(!folds_in_kernel(Op::Prod, DType::F64));
        assert!(folds_in_kernel(Op::Max, DType::F64));
        assert_eq!(fold_prog_name(Op::Band, DType::U16), "fold_band_u16");
    }

    #[test]
    fn bad_interface_names_are_errors() {
        for name in ["", "a\0b", "../lo", "averyveryverylongname0"] {
            assert!(
                matches!(ifindex(name), Err(KernelError::Interface(_))),
                "{name:?}"
            );
        }
        assert!(matches!(
            ifindex("boad-no-such-if"),
            Err(KernelError::Interface(_))
        ));
    }

    #[test]
    fn embedded_object_is_an_ebpf_elf() {
        assert_eq!(&OBJECT[..4], b"\x7fELF");
        // EM_BPF = 247 at offset 18 (little-endian).
        assert_eq!(u16::from_le_bytes([OBJECT[18], OBJECT[19]]), 247);
    }
}
