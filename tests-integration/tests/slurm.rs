//! Direct launch under a real Slurm (Debian's slurm-wlm and munge; scripts/install-slurm.sh): a
//! munged with a key of its own, a slurmctld, and one slurmd per host of three network-namespace
//! hosts (`boad_test_support::sshhosts`: host `h` is node `n<h>` at 198.18.1.(h+1)), so that
//! `srun --mpi=pmi2 -N 3 -n 9 boad-check ...` runs three ranks on each of three "nodes" that
//! meet through Slurm's PMI-2 server. Checks every collective on each path (UDP, shared memory,
//! hierarchical, and the kernel path through a kernel service on each node) at 9 ranks, a rank killed mid-job (the others fail naming it), and srun without
//! `--mpi=pmi2` (each rank fails saying what to do).
//!
//! Everything lives in the fixture's private directory (`/tmp/boad-sshhosts-*`, mode 0700): the
//! munge key and socket, slurm.conf, the daemons' state, spool, logs and pid files; nothing of the
//! machine's own Slurm or munge configuration is read or written. The daemons run in the
//! foreground as children of the test's thread (they die with it, even if the test is killed), are
//! stopped when the fixture drops (on success and on panic), after which the hosts fixture kills
//! whatever still runs in a host's namespace (slurmstepd, ranks) and removes the directory (a test
//! killed by SIGKILL leaves that directory, as every use of the hosts fixture does). Needs root.

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use boad_test_support::sshhosts::{self, SshHosts};
use boad_test_support::{require, Need};
use common::{count, lines_of, ranks_of, run_cmd, HostServices, Job, RankLine};

/// Nodes of the test cluster.
const NODES: usize = 3;
/// Ranks per node.
const PER_NODE: usize = 3;
/// How long one srun may take before the test kills it and fails.
const JOB_LIMIT: Duration = Duration::from_secs(120);
/// How long the cluster may take to have every node idle.
const READY: Duration = Duration::from_secs(30);

/// The slurm.conf of the test cluster in `dir`: controller on host 0 (`ctl_host` is this machine's
/// short host name, which slurmctld checks against `SlurmctldHost`), node `n<h>` on host `h`; no
/// cgroups (process tracking by /proc, no task plugin), no accounting; MPI off by default (srun
/// --mpi=pmi2 asks for PMI-2); the nodes' CPU counts are taken from here, not from the hardware.
fn slurm_conf(dir: &Path, ctl_host: &str, hosts: &SshHosts) -> String {
    let d = dir.display();
    let mut conf = format!(
        "ClusterName=boadtest\n\
         SlurmctldHost={ctl_host}({ctl})\n\
         SlurmUser=root\n\
         SlurmdUser=root\n\
         AuthType=auth/munge\n\
         AuthInfo=socket={d}/munge.socket\n\
         CredType=cred/munge\n\
         MpiDefault=none\n\
         ProctrackType=proctrack/linuxproc\n\
         TaskPlugin=task/none\n\
         JobAcctGatherType=jobacct_gather/none\n\
         AccountingStorageType=accounting_storage/none\n\
         JobCompType=jobcomp/none\n\
         SelectType=select/linear\n\
         SchedulerType=sched/builtin\n\
         SlurmdParameters=config_overrides\n\
         ReturnToService=2\n\
         MailProg=/bin/true\n\
         StateSaveLocation={d}/ctld\n\
         SlurmdSpoolDir={d}/spool-%n\n\
         SlurmctldPidFile={d}/slurmctld.pid\n\
         SlurmdPidFile={d}/slurmd-%n.pid\n\
         SlurmctldLogFile={d}/slurmctld.log\n\
         SlurmdLogFile={d}/slurmd-%n.log\n\
         SlurmctldPort=6817\n\
         SlurmdPort=6818\n",
        ctl = hosts.hosts()[0],
    );
    for (h, ip) in hosts.hosts().iter().enumerate() {
        conf.push_str(&format!(
            "NodeName=n{h} NodeAddr={ip} CPUs={} State=UNKNOWN\n",
            NODES * PER_NODE
        ));
    }
    let nodes: Vec<String> = (0..NODES).map(|h| format!("n{h}")).collect();
    conf.push_str(&format!(
        "PartitionName=boad Nodes={} Default=YES MaxTime=INFINITE State=UP\n",
        nodes.join(",")
    ));
    conf
}

/// A running Slurm cluster on namespace hosts; stops everything when dropped.
struct Slurm {
    /// The daemons, in start order (munged, slurmctld, the slurmds).
    daemons: Vec<(String, Child)>,
    dir: PathBuf,
    conf: PathBuf,
    /// Last: kills what is left in the hosts' namespaces and removes `dir`.
    hosts: SshHosts,
}

impl Slurm {
    fn start() -> Slurm {
        let hosts = SshHosts::create(NODES).expect("namespace hosts");
        let dir = hosts.dir().join("slurm");
        std::fs::create_dir(&dir).expect("slurm dir");
        let conf = dir.join("slurm.conf");
        let mut slurm = Slurm {
            daemons: Vec::new(),
            dir: dir.clone(),
            conf: conf.clone(),
            hosts,
        };
        // munge: a fresh key (root's, 0400) and its own socket; munged runs in host 0's namespace
        // (its socket is a file, reachable from every host).
        let key = dir.join("munge.key");
        std::fs::write(&key, rand::random::<[u8; 32]>().repeat(32)).expect("munge key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        let socket = dir.join("munge.socket");
        let mut munged = slurm.hosts.command_in(0, "munged");
        munged
            .arg("--foreground")
            .arg("--force")
            .arg(format!("--key-file={}", key.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", dir.join("munged.pid").display()))
            .arg(format!("--seed-file={}", dir.join("munged.seed").display()))
            .arg(format!("--log-file={}", dir.join("munged.log").display()));
        slurm.spawn("munged", munged);
        slurm.wait_for("munged's socket", |_| socket.exists());

        let name = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
        let short = name
            .trim()
            .split('.')
            .next()
            .unwrap_or("localhost")
            .to_string();
        std::fs::write(&conf, slurm_conf(&dir, &short, &slurm.hosts)).expect("slurm.conf");
        std::fs::create_dir(dir.join("ctld")).expect("state dir");
        let mut ctld = slurm.hosts.command_in(0, "slurmctld");
        ctld.args(["-D", "-i", "-f"]).arg(&conf);
        slurm.spawn("slurmctld", ctld);
        for h in 0..NODES {
            std::fs::create_dir(dir.join(format!("spool-n{h}"))).expect("spool dir");
            let mut slurmd = slurm.hosts.command_in(h, "slurmd");
            slurmd.args(["-D", "-N", &format!("n{h}"), "-f"]).arg(&conf);
            slurm.spawn(&format!("slurmd n{h}"), slurmd);
        }
        slurm.wait_for("every node idle (sinfo)", |slurm| {
            let out = slurm
                .command("sinfo")
                .args(["-h", "-N", "-o", "%N %T"])
                .stderr(Stdio::null())
                .output();
            out.is_ok_and(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned();
                text.lines().filter(|l| l.ends_with(" idle")).count() == NODES
            })
        });
        slurm
    }

    /// Starts a daemon (its standard output and error to `<dir>/<name>.out`), kept to be stopped.
    fn spawn(&mut self, name: &str, mut cmd: Command) {
        let out = File::create(self.dir.join(format!("{}.out", name.replace(' ', "-"))))
            .expect("daemon output file");
        let err = out.try_clone().expect("dup");
        cmd.env("SLURM_CONF", &self.conf)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.daemons.push((name.to_string(), child));
    }

    /// Waits up to [`READY`] for `ready`; fails with every daemon's output if it never holds or a
    /// daemon exits.
    fn wait_for(&mut self, what: &str, ready: impl Fn(&Slurm) -> bool) {
        let start = Instant::now();
        while !ready(self) {
            let exited = self.daemons.iter_mut().find_map(|(name, child)| {
                child
                    .try_wait()
                    .ok()
                    .flatten()
                    .map(|status| format!("{name} exited ({status})"))
            });
            if let Some(e) = exited {
                panic!("{e} before {what}\n{}", self.logs());
            }
            if start.elapsed() > READY {
                panic!("no {what} after {READY:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The daemons' output and logs, for a failure message.
    fn logs(&self) -> String {
        let mut s = String::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return s;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "out" || x == "log") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                s.push_str(&format!("--- {}:\n", p.display()));
                for l in tail.into_iter().rev() {
                    s.push_str(l);
                    s.push('\n');
                }
            }
        }
        s
    }

    /// A Slurm client command (srun, sinfo) run on host 0 with this cluster's configuration.
    fn command(&self, program: &str) -> Command {
        let mut cmd = self.hosts.command_in(0, program);
        cmd.env("SLURM_CONF", &self.conf);
        cmd
    }

    /// `srun <srun_args> boad-check <args>` with `BOAD_TRANSPORT=transport` and `env`.
    fn srun(
        &self,
        srun_args: &[&str],
        args: &[&str],
        transport: &str,
        env: &[(&str, &str)],
    ) -> Job {
        let mut cmd = self.command("srun");
        cmd.args(srun_args)
            .arg(env!("CARGO_BIN_EXE_boad-check"))
            .args(args);
        run_cmd(cmd, transport, env, JOB_LIMIT)
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        // The slurmds first, then slurmctld, then munged: SIGTERM, then SIGKILL after 10 s.
        for (_, mut child) in self.daemons.drain(..).rev() {
            // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let start = Instant::now();
            while matches!(child.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // `hosts` drops next: it kills what is left in its namespaces (slurmstepd, ranks) and
        // removes its directory, `dir` with it.
    }
}

/// `srun --mpi=pmi2` with `per_node` ranks on each of `nodes` nodes.
fn pmi2_on(nodes: usize, per_node: usize) -> Vec<String> {
    let (nodes, tasks, per_node) = (
        nodes.to_string(),
        (nodes * per_node).to_string(),
        per_node.to_string(),
    );
    [
        "--mpi=pmi2",
        "-N",
        &nodes,
        "-n",
        &tasks,
        "--ntasks-per-node",
        &per_node,
    ]
    .map(str::to_string)
    .to_vec()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Every rank of a 9-rank job ran every case exact, all on `path`.
fn assert_exact_on(job: &Job, path: &str) -> Vec<RankLine> {
    let n = NODES * PER_NODE;
    let lines = job.assert_every_rank_exact(n);
    assert_eq!(
        count(&lines, |l| l.path == path),
        n,
        "every rank took the {path} path:\n{lines:#?}\n{}",
        job.stderr()
    );
    eprintln!(
        "slurm: {path}: every rank exact, {} cases each, in {:.1} s",
        lines[0].cases, job.secs
    );
    lines
}

/// The shared-memory segments of boad jobs in /dev/shm. (Under direct launch the job key is drawn
/// by rank 0 and not printed, so the segments a job leaves are found by comparing before and
/// after.)
fn segments() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with("boad-"))
                .collect()
        })
        .unwrap_or_default()
}

/// No segment in /dev/shm that was not there `before`.
fn assert_no_new_segments(before: &BTreeSet<String>, what: &str) {
    let left: Vec<String> = segments().difference(before).cloned().collect();
    assert!(
        left.is_empty(),
        "{what} left segments in /dev/shm: {left:?}"
    );
}

#[test]
fn srun_with_pmi2_runs_every_collective_on_three_nodes() {
    if !sshhosts::require()
        || !require(&[
            Need::Program("munged"),
            Need::Program("slurmctld"),
            Need::Program("slurmd"),
            Need::Program("srun"),
            Need::Program("sinfo"),
        ])
    {
        return;
    }
    let before = segments();
    let slurm = Slurm::start();
    let n = NODES * PER_NODE;
    let started = Instant::now();

    // Three nodes of three ranks: UDP between every pair, then the hierarchical path (shared
    // memory inside a node, UDP between the nodes' leaders).
    let three = pmi2_on(NODES, PER_NODE);
    let job = slurm.srun(&refs(&three), &["matrix", "--quick"], "udp", &[]);
    let lines = assert_exact_on(&job, "udp");
    // Ranks learnt their hosts from Slurm's key-value space: three per node, each node's ranks
    // sending from that node's address.
    assert!(
        lines.iter().all(|l| l.get("datagrams_sent") > 0),
        "{lines:#?}"
    );
    let job = slurm.srun(&refs(&three), &["matrix", "--quick"], "shm", &[]);
    let lines = assert_exact_on(&job, "hier");
    assert_no_new_segments(&before, "the hierarchical job");
    let senders = common::senders(&lines);
    assert_eq!(
        senders,
        vec![0, 3, 6],
        "one leader per node uses the network"
    );

    // The kernel path through a kernel service on each node (`boadd --socket @NAME --iface eth0`
    // in the node's namespace; srun passes BOAD_SERVICE_SOCKET on): `kernel` puts every rank on it
    // with the same communicator ids from the three services, `auto` the nodes' leaders; every
    // service holds nothing once the job ended.
    let services = HostServices::start(&slurm.hosts, slurm.hosts.dir());
    let via = [
        ("BOAD_SERVICE_SOCKET", services.name.as_str()),
        ("BOAD_STATS", "1"),
    ];
    let job = slurm.srun(&refs(&three), &["matrix", "--quick"], "kernel", &via);
    let lines = assert_exact_on(&job, "kernel");
    assert_eq!(
        count(&lines, |l| l.get("collectives_kernel") > 0),
        n,
        "{lines:#?}"
    );
    assert!(!job.stderr().contains("kernel path"), "{}", job.stderr());
    let job = slurm.srun(&refs(&three), &["matrix", "--quick"], "auto", &via);
    let lines = assert_exact_on(&job, "hier-kernel");
    let kernel: Vec<usize> = lines
        .iter()
        .filter(|l| l.get("collectives_kernel") > 0)
        .map(|l| l.rank)
        .collect();
    assert_eq!(kernel, [0, 3, 6], "{lines:#?}");
    services.assert_idle(&slurm.hosts);
    services.stop();
    assert_no_new_segments(&before, "the kernel-path jobs");

    // One node of nine ranks: shared memory only.
    let one = pmi2_on(1, n);
    let job = slurm.srun(&refs(&one), &["matrix", "--quick"], "shm", &[]);
    assert_exact_on(&job, "shm");
    assert_no_new_segments(&before, "the shared-memory job");
    eprintln!(
        "slurm: three matrices in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // A rank SIGKILLed mid-job: every other one fails, naming it, in bounded time.
    let victim = 4;
    let job = slurm.srun(
        &refs(&three),
        &["kill-mid", &victim.to_string(), "4096"],
        "shm",
        &[("BOAD_TIMEOUT_MS", "3000")],
    );
    let err = job.stderr();
    assert!(!job.out.status.success(), "{err}");
    let mut failed = lines_of(&err, ": error as expected: ");
    failed.extend(lines_of(&err, ": first allreduce failed: "));
    failed.sort_by_key(|l| l.rank);
    let others: Vec<usize> = (0..n).filter(|&r| r != victim).collect();
    assert_eq!(ranks_of(&failed), others, "{err}");
    let named = format!("rank {victim}");
    assert_eq!(
        count(&failed, |l| l.line.contains(&named)),
        n - 1,
        "every other rank names rank {victim}:\n{err}"
    );
    assert!(job.secs < 60.0, "took {:.1} s:\n{err}", job.secs);
    eprintln!(
        "slurm: rank {victim} killed: the others failed in {:.1} s; rank 0 said: {}",
        job.secs, failed[0].line
    );
    assert_no_new_segments(&before, "the killed job");

    // srun without --mpi=pmi2 (MpiDefault=none): no PMI server, so each rank fails at init saying
    // how to start it, instead of running as nine jobs of one rank.
    let job = slurm.srun(&["-N", "3", "-n", "9"], &["random", "3"], "udp", &[]);
    let err = job.stderr();
    assert!(!job.out.status.success(), "{err}");
    let refused = err
        .lines()
        .filter(|l| {
            l.contains("boad-check: init failed")
                && l.contains("Slurm's srun")
                && l.contains("srun --mpi=pmi2")
        })
        .count();
    assert_eq!(refused, n, "every rank names Slurm and --mpi=pmi2:\n{err}");
    assert!(!job.stdout().contains(" cases, "), "{}", job.stdout());
    eprintln!(
        "slurm: without --mpi=pmi2: {}",
        err.lines()
            .find(|l| l.contains("init failed"))
            .unwrap_or("")
    );
    eprintln!(
        "slurm: all cases in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
