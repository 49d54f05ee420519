//! `boad-bench`: runs every benchmark of boad and writes all measurements to one JSON-lines file.
//!
//! Sweeps (each `boadrun` launch runs a whole matrix of `boad-osu`, the worker):
//!
//! 1. `local`: one host, 2, 4 and 9 ranks: boad over shared memory and over UDP, every collective,
//!    4 B to 1 MiB (latency).
//! 2. `cluster`: a virtual cluster of 3 hosts, 9 ranks: boad on the kernel path, boad on UDP, the
//!    naive and epoll baselines: latency at every size, throughput, CPU and system calls at 4 B.
//! 3. `fanout`: bcast and allreduce of 4 B with 2..64 receivers on min(ranks, 8) hosts: latency,
//!    CPU and system calls of the same four.
//! 4. `mpi`: Open MPI and MPICH (the osu-style C program `benches/mpi/osu_mpi.c`) over shared memory
//!    and over TCP, one host (MPI cannot run across boadrun's network namespaces).
//! 5. `hosts`: boad and Open MPI on the same hosts, both launched over ssh: 4 network namespaces
//!    with an sshd each (`boad_test_support::sshhosts`), the launcher on host 0, 9 ranks = 3 on
//!    each of hosts 1..3; latency of every collective, 4 B to 1 MiB, of boad over `boadrun -H` on
//!    the hierarchical path (`--transport shm`: shared memory inside a host, UDP between leaders),
//!    on UDP, and on `auto` (the kernel path between leaders where it exists across machines; the
//!    records say which path ran), and of Open MPI through its ssh launcher (TCP between every two
//!    ranks). Skipped, saying why, when not root or sshd is missing.
//! 6. `apps`: the PageRank and BFS examples on each path.
//!
//! `--quick` shrinks every sweep (fewer sizes, ranks and iterations) to finish in a few minutes.
#![deny(missing_docs)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use boad_benches::record::{self, Record};
use boad_benches::stats::sizes;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    about = "Runs boad's benchmarks (osu-style, baselines, MPI, apps) into one JSON-lines file"
)]
struct Args {
    /// The JSON-lines file to write (appended to: remove it first for a fresh run).
    #[arg(long)]
    out: PathBuf,
    /// A few minutes instead of a quarter of an hour: fewer sizes, ranks, iterations.
    #[arg(long)]
    quick: bool,
    /// Sweeps to run: local, cluster, fanout, mpi, hosts, apps.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "local,cluster,fanout,mpi,hosts,apps"
    )]
    only: Vec<String>,
    /// The directory holding boadrun, boad-osu and examples/ (default: next to this program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The osu-style MPI benchmark's C source.
    #[arg(long, default_value = "benches/mpi/osu_mpi.c")]
    mpi_src: PathBuf,
    /// MPI implementations to run (ompi, mpich).
    #[arg(long, value_delimiter = ',', default_value = "ompi,mpich")]
    mpi: Vec<String>,
    /// Kill a launch that runs longer than this many seconds.
    #[arg(long, default_value_t = 600)]
    launch_timeout_s: u64,
}

/// Sizes and iteration counts of one mode.
struct Plan {
    local_ranks: Vec<u32>,
    local_sizes: Vec<u64>,
    cluster_sizes: Vec<u64>,
    iters: u64,
    warmup: u64,
    fanout_ranks: Vec<u32>,
    fanout_iters: u64,
    pass_iters: u64,
    syscall_iters: u64,
    app_vertices: u64,
    hosts_sizes: Vec<u64>,
    hosts_iters: u64,
    hosts_warmup: u64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                local_ranks: vec![2, 4],
                local_sizes: vec![4, 4096, 65536],
                cluster_sizes: vec![4, 4096, 65536],
                iters: 50,
                warmup: 5,
                fanout_ranks: vec![3, 5],
                fanout_iters: 50,
                pass_iters: 100,
                syscall_iters: 20,
                app_vertices: 2000,
                hosts_sizes: vec![4, 4096],
                hosts_iters: 20,
                hosts_warmup: 3,
            }
        } else {
            Plan {
                local_ranks: vec![2, 4, 9],
                local_sizes: sizes(4, 1 << 20, 4),
                cluster_sizes: sizes(4, 1 << 20, 4),
                iters: 600,
                warmup: 50,
                fanout_ranks: vec![3, 5, 9, 17, 33, 65],
                fanout_iters: 600,
                pass_iters: 3000,
                // Long enough for /proc/stat's 10 ms ticks (the machine's CPU per collective).
                syscall_iters: 1000,
                app_vertices: 50_000,
                hosts_sizes: sizes(4, 1 << 20, 4),
                hosts_iters: 300,
                hosts_warmup: 30,
            }
        }
    }
}

struct Driver {
    a: Args,
    plan: Plan,
    bin: PathBuf,
    started: Instant,
    launches: u32,
    failures: Vec<String>,
    /// The next launch is capped on purpose (oversubscribed MPICH): reaching the cap after it
    /// printed records is a note, not a failure.
    capped: bool,
    /// Notes printed at the end that do not fail the run.
    notes: Vec<String>,
    /// Set by the `hosts` sweep: the hosts its ranks run on, written into every record of a launch
    /// (with `launch: ssh`) before it is appended.
    over_ssh: Option<u32>,
}

fn join(v: &[impl ToString]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The lines of `out` that are records (the programs print other lines too).
fn records(out: &str) -> Vec<Record> {
    out.lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

impl Driver {
    fn progress(&self, what: &str) {
        eprintln!(
            "boad-bench [{:>5.0} s] {what}",
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Runs `cmd`, forwarding its stderr, killing it after the launch timeout; returns its records.
    fn launch(&mut self, what: &str, mut cmd: Command) -> Vec<Record> {
        self.launches += 1;
        self.progress(what);
        let t0 = Instant::now();
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("{what}: cannot start {:?}: {e}", cmd.get_program());
                eprintln!("boad-bench: {msg}");
                self.failures.push(msg);
                return vec![];
            }
        };
        let mut stdout = child.stdout.take();
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(o) = stdout.as_mut() {
                let _ = o.read_to_string(&mut s);
            }
            s
        });
        let limit = Duration::from_secs(self.a.launch_timeout_s);
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if t0.elapsed() > limit => {
                    if let Ok(pid) = i32::try_from(child.id()) {
                        // SAFETY: kill(2) on our own child, not reaped yet (boadrun forwards
                        // SIGTERM to its ranks).
                        unsafe {
                            libc::kill(pid, libc::SIGTERM);
                        }
                    }
                    std::thread::sleep(Duration::from_secs(3));
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(_) => break None,
            }
        };
        let out = reader.join().unwrap_or_default();
        let mut recs = records(&out);
        if let Some(hosts) = self.over_ssh {
            for r in &mut recs {
                r.hosts = hosts;
                r.launch = Some(record::LAUNCH_SSH.into());
            }
        }
        match status {
            Some(st) if st.success() => {}
            Some(st) => {
                let msg = format!("{what}: exited with {st} ({} records kept)", recs.len());
                eprintln!("boad-bench: {msg}");
                self.failures.push(msg);
            }
            None => {
                let msg = format!(
                    "{what}: killed after {limit:?} ({} records kept)",
                    recs.len()
                );
                eprintln!("boad-bench: {msg}");
                if self.capped && !recs.is_empty() {
                    self.notes.push(format!("{msg}: its cap, expected"));
                } else {
                    self.failures.push(msg);
                }
            }
        }
        if let Err(e) = record::append(&self.a.out, &recs) {
            let msg = format!("cannot write {}: {e}", self.a.out.display());
            eprintln!("boad-bench: {msg}");
            self.failures.push(msg);
        }
        self.progress(&format!(
            "  {} records in {:.1} s",
            recs.len(),
            t0.elapsed().as_secs_f64()
        ));
        recs
    }

    fn boadrun(&self, transport: &str, ranks: u32, hosts: u32) -> Command {
        let mut c = Command::new(self.bin.join("boadrun"));
        c.args(["-n", &ranks.to_string(), "--transport", transport]);
        if hosts > 1 {
            c.args(["--hosts", &hosts.to_string()]);
        }
        if transport == "kernel" || (transport == "auto" && hosts > 1) {
            // Only the folds the benchmark uses (i32 sum; the barrier's u8 bor): a faster load.
            c.env("BOAD_KERNEL_FOLDS", "sum:i32,bor:u8");
        }
        c
    }

    fn osu(&self, transport: &str, ranks: u32, hosts: u32, impls: &str) -> Command {
        // `hier-kernel` is `auto` on a cluster with several ranks per host: the hierarchical path
        // with the kernel path between the leaders (a call too big for the kernel then runs on
        // `hier` and its record says so); `hier` is `shm` on such a cluster (UDP between leaders).
        let asked = transport;
        let transport = match asked {
            "hier-kernel" => "auto",
            "hier" => "shm",
            t => t,
        };
        let mut c = self.boadrun(transport, ranks, hosts);
        c.arg(self.bin.join("boad-osu")).args([
            "--impls",
            impls,
            "--hosts",
            &hosts.to_string(),
            "--asked",
            asked,
        ]);
        c
    }

    fn local(&mut self) {
        let p = &self.plan;
        let (sz, it, wu) = (join(&p.local_sizes), p.iters, p.warmup);
        for n in p.local_ranks.clone() {
            for t in ["shm", "udp"] {
                let mut c = self.osu(t, n, 1, "boad");
                let iters = if n > 4 { it / 2 } else { it };
                c.args(["--sizes", &sz, "--iters", &iters.to_string()]);
                c.args(["--warmup", &wu.to_string()]);
                self.launch(&format!("local: {n} ranks, boad over {t}"), c);
            }
        }
    }

    fn cluster(&mut self) {
        let p = &self.plan;
        let (it, wu) = (p.iters, p.warmup);
        let (pi, si) = (p.pass_iters, p.syscall_iters);
        let rest: Vec<u64> = p.cluster_sizes.iter().copied().filter(|&s| s > 4).collect();
        let rest = join(&rest);
        // Flat (every rank on the network) and hierarchical (shared memory inside each host, one
        // leader per host on the network: `hier` = UDP between leaders, `hier-kernel` = the kernel
        // path between them).
        let paths = [
            ("kernel", "boad"),
            ("udp", "boad,naive,epoll"),
            ("hier-kernel", "boad"),
            ("hier", "boad"),
        ];
        for (t, impls) in paths {
            // First one datagram (latency, throughput, CPU and system calls at 4 B), then the other
            // sizes in a second launch, so that a slow large-message case cannot cost the first.
            let mut c = self.osu(t, 9, 3, impls);
            c.args(["--sizes", "4", "--iters", &(it * 2).to_string()]);
            c.args(["--warmup", &wu.to_string()]);
            c.args(["--tput-colls", "bcast,reduce,allreduce"]);
            c.args(["--tput-iters", &pi.to_string()]);
            c.args(["--cpu-colls", "bcast,reduce,allreduce,allgather"]);
            c.args(["--cpu-iters", &pi.to_string()]);
            c.args(["--syscall-colls", "bcast,reduce,allreduce,allgather"]);
            c.args(["--syscall-iters", &si.to_string()]);
            self.launch(
                &format!("cluster: 9 ranks on 3 hosts, {impls} over {t}, 4 B"),
                c,
            );
            if rest.is_empty() {
                continue;
            }
            let mut c = self.osu(t, 9, 3, impls);
            // Half the iterations: with three implementations at 1 MiB this launch is the longest.
            c.args(["--sizes", &rest, "--iters", &(it / 2).to_string()]);
            c.args(["--warmup", &wu.to_string()]);
            self.launch(
                &format!("cluster: 9 ranks on 3 hosts, {impls} over {t}, larger"),
                c,
            );
        }
    }

    fn fanout(&mut self) {
        let p = &self.plan;
        let (fi, si) = (p.fanout_iters, p.syscall_iters);
        for n in p.fanout_ranks.clone() {
            let hosts = n.min(8);
            // Fewer iterations as the job outgrows the 2 cores.
            let iters = (fi * 8 / u64::from(n).max(8)).max(20);
            for (t, impls) in [("kernel", "boad"), ("udp", "boad,naive,epoll")] {
                let mut c = self.osu(t, n, hosts, impls);
                c.args(["--fanout", "--colls", "bcast,allreduce", "--sizes", "4"]);
                c.args(["--iters", &iters.to_string(), "--warmup", "10"]);
                c.args(["--cpu-colls", "bcast,allreduce"]);
                c.args(["--cpu-iters", &(iters * 2).to_string()]);
                c.args(["--syscall-colls", "bcast,allreduce"]);
                c.args(["--syscall-iters", &si.min(iters).to_string()]);
                self.launch(
                    &format!(
                        "fanout: {} receivers on {hosts} hosts, {impls} over {t}",
                        n - 1
                    ),
                    c,
                );
            }
        }
    }

    /// The MPI baselines, built into a private temporary directory removed afterwards.
    fn mpi(&mut self) {
        match tempfile::Builder::new().prefix("boad-bench-mpi.").tempdir() {
            Ok(dir) => self.mpi_in(dir.path()),
            Err(e) => self
                .failures
                .push(format!("mpi: cannot create a temporary directory: {e}")),
        }
    }

    fn mpi_in(&mut self, dir: &std::path::Path) {
        let p = &self.plan;
        let max = p.local_sizes.last().copied().unwrap_or(4);
        let (it, wu, pi) = (p.iters, p.warmup, p.pass_iters);
        let ranks = p.local_ranks.clone();
        for which in self.a.mpi.clone() {
            let (cc, run) = match which.as_str() {
                "ompi" => ("mpicc.openmpi", "mpirun.openmpi"),
                "mpich" => ("mpicc.mpich", "mpirun.mpich"),
                other => {
                    self.failures
                        .push(format!("mpi: unknown implementation {other}"));
                    continue;
                }
            };
            let Some(exe) = self.build_mpi(dir, &which, cc) else {
                continue;
            };
            for n in &ranks {
                if self.a.quick && which == "mpich" && *n > 2 {
                    // Oversubscribed MPICH crawls (see below): not in a smoke test.
                    continue;
                }
                for net in ["shm", "tcp"] {
                    let name = format!("{which}-{net}");
                    let mut c = Command::new(run);
                    if which == "ompi" {
                        c.args([
                            "--allow-run-as-root",
                            "--oversubscribe",
                            "--mca",
                            "pml",
                            "ob1",
                        ]);
                        let btl = if net == "shm" {
                            "self,vader"
                        } else {
                            "self,tcp"
                        };
                        c.args(["--mca", "btl", btl]);
                        if net == "tcp" {
                            c.args(["--mca", "btl_tcp_if_include", "lo"]);
                        }
                    } else if net == "tcp" {
                        // No shared memory between local ranks: MPICH's netmod (UCX) carries
                        // everything, and UCX only over TCP.
                        c.env("MPIR_CVAR_NOLOCAL", "1").env("UCX_TLS", "tcp,self");
                    }
                    c.args(["-n", &n.to_string()]).arg(&exe);
                    let (mut iters, mut warm, mut pass) = (it, wu, pi);
                    if *n > 4 {
                        iters /= 2;
                    }
                    let (mut top, mut cap) = (max, 120);
                    if which == "mpich" && *n > 2 {
                        // Debian's MPICH (ch4:ucx) polls without yielding: with more ranks than
                        // cores every step waits for a scheduler time slice (ms), so few
                        // iterations, sizes up to 16 KiB, and what it printed after 90 s.
                        (iters, warm, pass) = (10, 1, 10);
                        (top, cap) = (top.min(16384), 90);
                    }
                    c.args([
                        name.as_str(),
                        &iters.to_string(),
                        &warm.to_string(),
                        &top.to_string(),
                        &pass.to_string(),
                    ]);
                    let keep = self.a.launch_timeout_s;
                    self.a.launch_timeout_s = keep.min(cap);
                    self.capped = cap < 120;
                    self.launch(&format!("mpi: {n} ranks, {name}"), c);
                    self.capped = false;
                    self.a.launch_timeout_s = keep;
                }
            }
        }
    }

    /// Compiles the osu-style MPI benchmark with `cc` (an MPI's compiler wrapper) into `dir`.
    fn build_mpi(&mut self, dir: &Path, which: &str, cc: &str) -> Option<PathBuf> {
        let exe = dir.join(format!("osu_mpi_{which}"));
        self.progress(&format!("mpi: {cc} {}", self.a.mpi_src.display()));
        let built = Command::new(cc)
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(&self.a.mpi_src)
            .status();
        if matches!(built, Ok(s) if s.success()) {
            return Some(exe);
        }
        let msg = format!("mpi: {cc} failed ({built:?}): is {which} installed?");
        eprintln!("boad-bench: {msg}");
        self.failures.push(msg);
        None
    }

    /// The `hosts` sweep: namespace hosts with an sshd each, made here and removed (every process
    /// in them too) when this returns; skipped with a note when they cannot be made here.
    fn hosts(&mut self) {
        use boad_test_support::sshhosts::{SshHosts, SshHostsError};
        let h = match SshHosts::create(4) {
            Ok(h) => h,
            Err(SshHostsError::Unmet(what)) => {
                let msg = format!(
                    "hosts: skipped: it needs {what} (namespace hosts with sshd: run as root with \
                     openssh-server installed, as scripts/bench.sh does)"
                );
                eprintln!("boad-bench: {msg}");
                self.notes.push(msg);
                return;
            }
            Err(e) => {
                let msg = format!("hosts: cannot make the namespace hosts: {e}");
                eprintln!("boad-bench: {msg}");
                self.failures.push(msg);
                return;
            }
        };
        let dir = tempfile::Builder::new()
            .prefix("boad-bench-hosts.")
            .tempdir();
        match dir {
            Ok(dir) => self.hosts_on(&h, dir.path()),
            Err(e) => self
                .failures
                .push(format!("hosts: cannot create a temporary directory: {e}")),
        }
        self.over_ssh = None;
        // `h` drops here: every process still in its namespaces is killed, then the namespaces and
        // the keys go.
    }

    fn hosts_on(&mut self, h: &boad_test_support::sshhosts::SshHosts, dir: &Path) {
        // Every host runs programs by the same absolute paths (one file system).
        let bin = match self.bin.canonicalize() {
            Ok(b) => b,
            Err(e) => {
                let msg = format!("hosts: cannot resolve {}: {e}", self.bin.display());
                self.failures.push(msg);
                return;
            }
        };
        const PER_HOST: u32 = 3;
        let ranked = &h.hosts()[1..];
        let spec = ranked
            .iter()
            .map(|ip| format!("{ip}:{PER_HOST}"))
            .collect::<Vec<_>>()
            .join(",");
        let hosts = ranked.len() as u32;
        let ranks = hosts * PER_HOST;
        let p = &self.plan;
        let (sizes, iters, warm) = (join(&p.hosts_sizes), p.hosts_iters, p.hosts_warmup);
        let max = p.hosts_sizes.last().copied().unwrap_or(4);
        self.over_ssh = Some(hosts);
        // `asked` names the path in the records: `hier` = shm inside hosts and UDP between their
        // leaders; `hier-kernel` = auto, the kernel path between the leaders where boadrun sets it
        // up across machines (else its records say which path ran instead).
        for (transport, asked) in [("shm", "hier"), ("udp", "udp"), ("auto", "hier-kernel")] {
            let boadrun = bin.join("boadrun");
            let mut c = h.command_in(0, &boadrun);
            c.args(["--launch-agent", &h.launch_agent()])
                .arg("--agent-path")
                .arg(&boadrun)
                .args(["-H", &spec, "--transport", transport]);
            if transport == "auto" {
                // Only the folds the benchmark uses, should the kernel path be loaded.
                c.env("BOAD_KERNEL_FOLDS", "sum:i32,bor:u8");
            }
            c.arg(bin.join("boad-osu")).args([
                "--impls",
                "boad",
                "--hosts",
                &hosts.to_string(),
                "--asked",
                asked,
                "--sizes",
                &sizes,
                "--iters",
                &iters.to_string(),
                "--warmup",
                &warm.to_string(),
            ]);
            self.launch(
                &format!(
                    "hosts: {ranks} ranks on {hosts} hosts over ssh, boadrun -H --transport {transport}"
                ),
                c,
            );
        }
        let Some(exe) = self.build_mpi(dir, "ompi", "mpicc.openmpi") else {
            return;
        };
        let mut c = h.command_in(0, "mpirun.openmpi");
        c.args(["--allow-run-as-root", "-H", &spec, "-n", &ranks.to_string()]);
        for (k, v) in [
            // Open MPI's own ssh launcher, one daemon per host from host 0 (as boadrun's agents).
            ("plm_rsh_agent", h.launch_agent().as_str()),
            ("plm_rsh_no_tree_spawn", "1"),
            ("oob_tcp_if_include", "eth0"),
            // TCP between every two ranks. Not vader (shared memory) inside a host: it names its
            // segments by host name and local rank, and the namespace hosts share one host name, so
            // the ranks of different hosts would map the same files.
            ("pml", "ob1"),
            ("btl", "tcp,self"),
            ("btl_tcp_if_include", "eth0"),
            // 3 ranks per host on 2 cores: ranks yield while they wait, as boad's do.
            ("mpi_yield_when_idle", "1"),
        ] {
            c.args(["--mca", k, v]);
        }
        c.args(["--bind-to", "none"]).arg(&exe).args([
            "ompi-tcp",
            &iters.to_string(),
            &warm.to_string(),
            &max.to_string(),
            // No throughput nor CPU pass: only latency is compared here.
            "0",
        ]);
        self.launch(
            &format!(
                "hosts: {ranks} ranks on {hosts} hosts over ssh, Open MPI (ssh launcher, TCP)"
            ),
            c,
        );
    }

    fn apps(&mut self) {
        let v = self.plan.app_vertices.to_string();
        for app in ["pagerank", "bfs"] {
            let exe = self.bin.join("examples").join(app);
            if !exe.exists() {
                let msg = format!(
                    "apps: {} is missing (cargo build --release -p boad-benches --examples)",
                    exe.display()
                );
                eprintln!("boad-bench: {msg}");
                self.failures.push(msg);
                continue;
            }
            for (t, n, hosts) in [
                ("kernel", 9, 3),
                ("udp", 9, 3),
                ("auto", 9, 3),
                ("shm", 9, 1),
            ] {
                let mut c = self.boadrun(t, n, hosts);
                c.arg(&exe).args(["--vertices", &v, "--json"]);
                c.args(["--hosts", &hosts.to_string()]);
                self.launch(&format!("apps: {app}, {n} ranks on {hosts} hosts, {t}"), c);
            }
        }
    }
}

fn main() -> ExitCode {
    let a = Args::parse();
    let bin = match a.bin_dir.clone() {
        Some(d) => d,
        None => match std::env::current_exe() {
            Ok(p) => p.parent().map(Path::to_path_buf).unwrap_or_default(),
            Err(e) => {
                eprintln!("boad-bench: cannot find my own directory: {e} (use --bin-dir)");
                return ExitCode::from(2);
            }
        },
    };
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("boad-bench: cannot create {}: {e}", dir.display());
            return ExitCode::from(2);
        }
    }
    let plan = Plan::new(a.quick);
    let mut d = Driver {
        a,
        plan,
        bin,
        started: Instant::now(),
        launches: 0,
        failures: vec![],
        capped: false,
        notes: vec![],
        over_ssh: None,
    };
    for sweep in d.a.only.clone() {
        match sweep.as_str() {
            "local" => d.local(),
            "cluster" => d.cluster(),
            "fanout" => d.fanout(),
            "mpi" => d.mpi(),
            "hosts" => d.hosts(),
            "apps" => d.apps(),
            other => {
                eprintln!(
                    "boad-bench: unknown sweep {other} (local, cluster, fanout, mpi, hosts, apps)"
                );
                return ExitCode::from(2);
            }
        }
    }
    d.progress(&format!(
        "done: {} launches, results in {}",
        d.launches,
        d.a.out.display()
    ));
    for n in &d.notes {
        eprintln!("boad-bench: note: {n}");
    }
    if d.failures.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!("boad-bench: {} problems:", d.failures.len());
    for f in &d.failures {
        eprintln!("  - {f}");
    }
    ExitCode::from(1)
}
