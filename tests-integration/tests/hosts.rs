//! Jobs across machines: `boadrun -H` over real ssh. Each test builds namespace hosts joined by a
//! bridge, each running its own OpenSSH server (`boad_test_support::sshhosts`); boadrun runs on host
//! 0 and starts one agent per host over plain `ssh` to the hosts' addresses, exactly as on real
//! machines. Every test needs root (namespaces, sshd) and is skipped without it; everything is
//! removed on every exit path.
//!
//! With `--transport auto` or `kernel` each host's agent attaches the kernel path to its own
//! namespace's `lo` and `eth0` and fills its maps: those tests check that the XDP programs folded
//! and TC cloned on the hosts (the agents' `BOAD_STATS` counters), and that nothing stays attached
//! in any host's namespace when the job ends, even when an agent is killed.
//!
//! With a kernel service (`boadd`) in each host, the agents load and attach nothing: each asks its
//! service which communicators are free, boadrun picks ids free on every host, and each agent
//! registers the job with its service under those ids and one trigger port, as root and as
//! `nobody`, also when some host's lowest communicator is taken by another job, or when a host
//! without a service attaches for itself; every service holds nothing once the job ended.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boad_test_support::sshhosts::SshHosts;
use common::{
    boadrun, count, kernel_counters, rank_stats, run_cmd, HostServices, Job, RankLine, LIMIT,
};

/// `n` namespace hosts with sshd, or None when not root (a recorded skip).
fn hosts(n: usize) -> Option<SshHosts> {
    if !boad_test_support::sshhosts::require() {
        return None;
    }
    Some(SshHosts::create(n).expect("namespace hosts with sshd"))
}

/// `boadrun -H spec <extra> PROGRAM ARGS`, started on host 0 over ssh to the hosts.
fn command(h: &SshHosts, spec: &str, extra: &[&str], program: &str, args: &[&str]) -> Command {
    let boadrun = boadrun();
    let mut cmd = h.command_in(0, &boadrun);
    cmd.args(["--launch-agent", &h.launch_agent()])
        .arg("--agent-path")
        .arg(&boadrun)
        .args(["-H", spec])
        .args(extra)
        .arg(program)
        .args(args);
    cmd
}

fn boad_check() -> &'static str {
    env!("CARGO_BIN_EXE_boad-check")
}

/// `h:slots,...` for hosts `which` of `h`.
fn spec(h: &SshHosts, which: &[(usize, usize)]) -> String {
    which
        .iter()
        .map(|&(i, slots)| format!("{}:{slots}", h.hosts()[i]))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn every_collective_on_every_path_across_three_ssh_hosts() {
    let Some(h) = hosts(4) else { return };
    // Uneven slots: 4, 3 and 2 ranks on hosts 1..3; boadrun itself on host 0.
    let spec = spec(&h, &[(1, 4), (2, 3), (3, 2)]);
    // `auto` takes the kernel path across these hosts: see the kernel_* tests.
    for (transport, path) in [("shm", "hier"), ("udp", "udp")] {
        let job = run_cmd(
            command(&h, &spec, &[], boad_check(), &["matrix", "--quick"]),
            transport,
            &[],
            LIMIT,
        );
        let lines = job.assert_every_rank_exact(9);
        assert_eq!(
            count(&lines, |l| l.path == path),
            9,
            "{transport}: every rank's collectives took {path}: {lines:#?}"
        );
        if path == "hier" {
            // Only the three hosts' leaders (ranks 0, 4, 7) send datagrams.
            let senders = common::senders(&lines);
            assert_eq!(senders, [0, 4, 7], "{transport}: {lines:#?}");
        }
    }
}

/// Lines of boadrun's that say the kernel path is not used.
fn fallbacks(job: &Job) -> Vec<String> {
    job.stderr()
        .lines()
        .filter(|l| l.starts_with("boadrun: kernel path unavailable"))
        .map(str::to_string)
        .collect()
}

/// What is attached in host `host`'s namespace: `IFACE: xdp` for each interface `ip -d link show`
/// shows with an XDP program, and each line of `bpftool net show` naming a boad program (its TC
/// programs, where this bpftool lists TCX; [`boad_programs`] sees them in any case).
fn attached_in(h: &SshHosts, host: usize) -> Vec<String> {
    let run = |program: &str, args: &[&str]| -> String {
        let out = h
            .command_in(host, program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(out.status.success(), "{program} {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut found = Vec::new();
    // Blocks of "N: NAME: <FLAGS> ... xdpgeneric/id:..." then indented lines ("prog/xdp id ...").
    let mut iface = String::new();
    for line in run("ip", &["-d", "link", "show"]).lines() {
        if !line.starts_with(' ') {
            iface = line
                .split(": ")
                .nth(1)
                .map(|n| n.split('@').next().unwrap_or(n).to_string())
                .unwrap_or_default();
        }
        let xdp = line.contains("prog/xdp") || (!line.starts_with(' ') && line.contains(" xdp"));
        let said = format!("{iface}: xdp");
        if xdp && !found.contains(&said) {
            found.push(said);
        }
    }
    let net = run("bpftool", &["net", "show"]);
    found.extend(
        net.lines()
            .filter(|l| l.contains("boad_"))
            .map(str::to_string),
    );
    found
}

/// The ids of the boad programs loaded on the machine (`bpftool prog show`).
fn boad_programs() -> Vec<String> {
    let out = Command::new("bpftool")
        .args(["prog", "show"])
        .output()
        .expect("bpftool prog show");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" name boad_"))
        .filter_map(|l| l.split(':').next().map(str::to_string))
        .collect()
}

/// `boad-check ARGS` over 9 ranks placed `slots` on hosts 1..=3 with `BOAD_TRANSPORT=transport`
/// and `BOAD_STATS=1` (and `env`): every rank exact, no fallback, the XDP programs folded and TC
/// cloned on the hosts (the agents' counters, summed over the 3 hosts), none of it from a wrong
/// source; every rank's last collective took `path` (`boad-check path P` checks that itself); then
/// nothing is left attached on any host. Returns the job, the ranks' summary lines (none for
/// `path`) and their `BOAD_STATS` lines.
fn kernel_job(
    h: &SshHosts,
    transport: &str,
    slots: [usize; 3],
    path: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Job, Vec<RankLine>, Vec<RankLine>) {
    let n: usize = slots.iter().sum();
    let spec = spec(h, &[(1, slots[0]), (2, slots[1]), (3, slots[2])]);
    let mut env = env.to_vec();
    env.push(("BOAD_STATS", "1"));
    let job = run_cmd(
        command(h, &spec, &[], boad_check(), args),
        transport,
        &env,
        LIMIT,
    );
    // `boad-check path P` checks the path on every rank itself, and prints no summary.
    let lines = if args.first() == Some(&"path") {
        job.assert_ok();
        Vec::new()
    } else {
        let lines = job.assert_every_rank_exact(n);
        assert_eq!(
            count(&lines, |l| l.path == path),
            n,
            "{transport}: every rank's last collective took {path}: {lines:#?}"
        );
        lines
    };
    assert_eq!(fallbacks(&job), Vec::<String>::new(), "{}", job.stderr());
    let c = kernel_counters(&job);
    assert_eq!(c["hosts"], 3, "{c:?}");
    assert!(c["folded"] > 0 && c["dropped"] > 0, "XDP folded: {c:?}");
    assert!(c["clones"] > 0 && c["bcasts"] > 0, "TC cloned: {c:?}");
    assert_eq!(c["wrong_source"], 0, "{c:?}");
    let all: Vec<usize> = (0..n).collect();
    let stats = rank_stats(&job, &all);
    for host in 1..=3 {
        assert_eq!(attached_in(h, host), Vec::<String>::new(), "host {host}");
    }
    (job, lines, stats)
}

#[test]
fn kernel_path_between_leaders_across_three_ssh_hosts() {
    let Some(h) = hosts(4) else { return };
    let (_, _, stats) = kernel_job(
        &h,
        "auto",
        [3, 3, 3],
        "hier-kernel",
        &["matrix", "--quick"],
        &[],
    );
    // Hierarchical: the leaders (ranks 0, 3, 6) took the kernel path between the hosts, and no
    // other rank sent a datagram.
    let kernel: Vec<usize> = stats
        .iter()
        .filter(|l| l.get("collectives_kernel") > 0)
        .map(|l| l.rank)
        .collect();
    assert_eq!(kernel, [0, 3, 6], "{stats:#?}");
    let senders = common::senders(&stats);
    assert_eq!(senders, [0, 3, 6], "{stats:#?}");
}

#[test]
fn kernel_path_on_every_rank_across_three_uneven_ssh_hosts() {
    let Some(h) = hosts(4) else { return };
    // `kernel` keeps the job flat: every rank is a member of the world communicator, and the
    // clones for ranks on the root's host go through its lo.
    let (_, _, stats) = kernel_job(
        &h,
        "kernel",
        [4, 3, 2],
        "kernel",
        &["matrix", "--quick"],
        &[],
    );
    assert_eq!(
        count(&stats, |l| l.get("collectives_kernel") > 0),
        9,
        "{stats:#?}"
    );
}

#[test]
fn kernel_path_selection_across_ssh_hosts() {
    let Some(h) = hosts(4) else { return };
    let folds = ("BOAD_KERNEL_FOLDS", "sum:u32");
    // One rank per host: `auto` is the kernel path itself.
    kernel_job(
        &h,
        "auto",
        [1, 1, 1],
        "kernel",
        &["path", "kernel"],
        &[folds],
    );
    // A host that cannot attach (here every host: a fold list no agent accepts): `auto` says so
    // once, naming the hosts, and the job runs on the userspace path...
    let spec = spec(&h, &[(1, 2), (2, 2), (3, 2)]);
    let bad = [("BOAD_KERNEL_FOLDS", "no-such-op")];
    let job = run_cmd(
        command(&h, &spec, &[], boad_check(), &["path", "hier"]),
        "auto",
        &bad,
        LIMIT,
    );
    job.assert_ok();
    let said = fallbacks(&job);
    assert_eq!(said.len(), 1, "{}", job.stderr());
    for ip in &h.hosts()[1..4] {
        assert!(
            said[0].contains(&format!("host {ip}: BOAD_KERNEL_FOLDS: ")),
            "{said:?}"
        );
    }
    // ... and `kernel` fails at once, naming them.
    let job = run_cmd(
        command(&h, &spec, &[], boad_check(), &["path", "kernel"]),
        "kernel",
        &bad,
        LIMIT,
    );
    assert_eq!(job.code(), Some(125), "{}", job.stderr());
    for ip in &h.hosts()[1..4] {
        assert!(
            job.stderr().contains(&format!(
                "boadrun: host {ip}: kernel path: BOAD_KERNEL_FOLDS: "
            )),
            "{}",
            job.stderr()
        );
    }
    for host in 1..=3 {
        assert_eq!(attached_in(&h, host), Vec::<String>::new(), "host {host}");
    }
}

/// A launch agent that logs in over ssh as before but runs every host's agent (and so its ranks)
/// as `nobody`: no CAP_BPF, no CAP_NET_ADMIN anywhere. Written into the fixture's own directory
/// (0700, removed with it).
fn launch_as_nobody(h: &SshHosts) -> std::path::PathBuf {
    let script = h.dir().join("launch-as-nobody");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nhost=$1; shift\n\
             exec ssh -F {cfg} \"$host\" setpriv --reuid=65534 --regid=65534 --clear-groups \"$@\"\n",
            cfg = h.ssh_config().display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    script
}

/// A kernel service in each of hosts `which` of `h`, started while no other job of this file runs
/// (their programs would otherwise appear in the middle of a test that counts the loaded ones).
fn start_services(h: &SshHosts, which: &[usize]) -> HostServices {
    let _serial = common::serial();
    HostServices::start_on(h, h.dir(), which)
}

/// `boad-check matrix --quick` on 9 ranks, 3 on each of hosts 1..=3, through the kernel services
/// `services` of `service_hosts` of them (`BOAD_SERVICE_SOCKET`, `BOAD_STATS=1`; the others' agents
/// attach as root), started with `cmd`: every rank exact on `path`, the ranks `kernel_ranks` with
/// kernel-path collectives, nothing said about the kernel path (no fallback, no warning), the
/// counters of every host, `service_hosts` of them from a service (host-wide: those hosts' agents
/// loaded nothing, or they would have reported their own). Then every service holds nothing.
fn service_job(
    h: &SshHosts,
    services: &HostServices,
    cmd: Command,
    transport: &str,
    (path, kernel_ranks): (&str, &[usize]),
    service_hosts: u64,
) {
    let env = [
        ("BOAD_SERVICE_SOCKET", services.name.as_str()),
        ("BOAD_STATS", "1"),
    ];
    let job = run_cmd(cmd, transport, &env, LIMIT);
    let lines = job.assert_every_rank_exact(9);
    assert_eq!(
        count(&lines, |l| l.path == path),
        9,
        "{transport}: every rank's last collective took {path}: {lines:#?}"
    );
    let err = job.stderr();
    assert_eq!(fallbacks(&job), Vec::<String>::new(), "{err}");
    assert!(!err.contains("kernel path"), "{transport}: {err}");
    let c = kernel_counters(&job);
    assert_eq!(
        (c["hosts"], c.get("service_hosts").copied().unwrap_or(0)),
        (3, service_hosts),
        "{c:?}"
    );
    assert!(c["folded"] > 0 && c["clones"] > 0, "{c:?}");
    assert_eq!(c["wrong_source"], 0, "{c:?}");
    let all: Vec<usize> = (0..9).collect();
    let stats = rank_stats(&job, &all);
    let kernel: Vec<usize> = stats
        .iter()
        .filter(|l| l.get("collectives_kernel") > 0)
        .map(|l| l.rank)
        .collect();
    assert_eq!(kernel, kernel_ranks, "{transport}: {stats:#?}");
    services.assert_idle(h);
}

/// A job of 2 ranks on one host alone, ended (boadrun: SIGTERM, which it passes on to its ranks;
/// SIGKILL after 10 s) when this is dropped, on every exit path of the test.
struct OtherJob(std::process::Child);

impl Drop for OtherJob {
    fn drop(&mut self) {
        // SAFETY: kill only signals our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while self.0.try_wait().ok().flatten().is_none() {
            if start.elapsed() > Duration::from_secs(10) {
                let _ = self.0.kill();
                let _ = self.0.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Starts a job of 2 ranks on host `host` alone (`boadrun -n 2 --transport kernel`, in the host's
/// namespace) that registers with the host's kernel service and then waits a minute, and waits
/// until the service holds it: it takes the lowest communicator there.
fn hold_a_communicator(h: &SshHosts, services: &HostServices, host: usize) -> OtherJob {
    let mut cmd = h.command_in(host, boadrun());
    cmd.args(["-n", "2", "--transport", "kernel"])
        .arg(boad_check())
        .args(["busy", "1", "60000"])
        .env("BOAD_SERVICE_SOCKET", &services.name)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let job = OtherJob(cmd.spawn().expect("start the one-host job"));
    let start = Instant::now();
    while !services.status(h, host).contains("boadd: 1 jobs") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the one-host job never registered: {}",
            services.status(h, host)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    job
}

#[test]
fn kernel_path_through_each_hosts_kernel_service_as_root_and_as_nobody() {
    let Some(h) = hosts(4) else { return };
    // Hosts 1..=3 run the ranks, each with its own service on one abstract name.
    let services = start_services(&h, &[1, 2, 3]);
    let spec = spec(&h, &[(1, 3), (2, 3), (3, 3)]);
    let matrix = ["matrix", "--quick"];
    // Root's agents use the service too (it holds lo): `kernel` puts every rank on the world
    // communicator.
    let all: Vec<usize> = (0..9).collect();
    let cmd = command(&h, &spec, &[], boad_check(), &matrix);
    service_job(&h, &services, cmd, "kernel", ("kernel", &all), 3);
    // `auto` puts the hosts' leaders (ranks 0, 3, 6) on the leaders' communicator, while a job on
    // host 2 alone holds that host's lowest communicator: the job gets the lowest ids free on
    // every host (not the services' first ones), and its ranks use them (KCOMMS).
    let other = hold_a_communicator(&h, &services, 2);
    let cmd = command(&h, &spec, &[], boad_check(), &matrix);
    let env = [
        ("BOAD_SERVICE_SOCKET", services.name.as_str()),
        ("BOAD_STATS", "1"),
    ];
    let job = run_cmd(cmd, "auto", &env, LIMIT);
    drop(other);
    let lines = job.assert_every_rank_exact(9);
    assert_eq!(count(&lines, |l| l.path == "hier-kernel"), 9, "{lines:#?}");
    assert_eq!(fallbacks(&job), Vec::<String>::new(), "{}", job.stderr());
    let c = kernel_counters(&job);
    assert_eq!((c["hosts"], c["service_hosts"]), (3, 3), "{c:?}");
    let stats = rank_stats(&job, &all);
    let kernel: Vec<usize> = stats
        .iter()
        .filter(|l| l.get("collectives_kernel") > 0)
        .map(|l| l.rank)
        .collect();
    assert_eq!(kernel, [0, 3, 6], "{stats:#?}");
    services.assert_idle(&h);
    // The same without the other job.
    let cmd = command(&h, &spec, &[], boad_check(), &matrix);
    service_job(&h, &services, cmd, "auto", ("hier-kernel", &[0, 3, 6]), 3);
    // Agents and ranks of `nobody` (boadrun stays root: the fixture's ssh key is root's): the
    // services check that every socket registered on their host is nobody's.
    let bins = boad_test_support::shared_bins::SharedBins::new(&[
        boadrun().as_path(),
        std::path::Path::new(boad_check()),
    ])
    .expect("copy the binaries");
    let shared = bins.path("boadrun");
    let mut cmd = h.command_in(0, &shared);
    cmd.arg("--launch-agent")
        .arg(launch_as_nobody(&h))
        .arg("--agent-path")
        .arg(&shared)
        .args(["-H", &spec])
        .arg(bins.path("boad-check"))
        .args(matrix);
    service_job(&h, &services, cmd, "kernel", ("kernel", &all), 3);
    services.stop();
}

#[test]
fn kernel_path_across_hosts_with_and_without_a_kernel_service() {
    let Some(h) = hosts(4) else { return };
    // Hosts 1 and 2 have a service; host 3 has none, and its agent (root) attaches the programs
    // itself and fills them under the ids the services had free.
    let services = start_services(&h, &[1, 2]);
    let spec = spec(&h, &[(1, 3), (2, 3), (3, 3)]);
    let cmd = command(&h, &spec, &[], boad_check(), &["matrix", "--quick"]);
    service_job(&h, &services, cmd, "auto", ("hier-kernel", &[0, 3, 6]), 2);
    assert_eq!(attached_in(&h, 3), Vec::<String>::new(), "host 3");
    services.stop();
}

#[test]
fn ranks_run_on_their_hosts_with_the_users_variables() {
    let Some(h) = hosts(3) else { return };
    let script = "echo $BOAD_RANK $BOAD_HOST_ID $BOAD_LOCAL_RANK $BOAD_LOCAL_SIZE $BOAD_BIND_ADDR \
                  \"$FOO\" $BOAD_STATS $(ip -4 -o addr show eth0 | awk '{print $4}')";
    let spec = spec(&h, &[(1, 3), (2, 2)]);
    let mut cmd = command(
        &h,
        &spec,
        &["--map-by", "node", "-n", "4", "-x", "FOO=a b"],
        "sh",
        &["-c", script],
    );
    cmd.env("BOAD_STATS", "7");
    let job = run_cmd(cmd, "udp", &[], LIMIT);
    job.assert_ok();
    let mut lines: Vec<String> = job.stdout().lines().map(str::to_string).collect();
    lines.sort();
    let (a, b) = (h.hosts()[1], h.hosts()[2]);
    // Round robin over the hosts; each rank binds to, and runs in, its host's namespace.
    assert_eq!(
        lines,
        [
            format!("0 0 0 2 {a} a b 7 {a}/24"),
            format!("1 1 0 2 {b} a b 7 {b}/24"),
            format!("2 0 1 2 {a} a b 7 {a}/24"),
            format!("3 1 1 2 {b} a b 7 {b}/24"),
        ]
    );
}

#[test]
fn a_host_refusing_ssh_fails_the_job_naming_it() {
    let Some(mut h) = hosts(3) else { return };
    h.stop_sshd(2);
    let spec = spec(&h, &[(1, 2), (2, 2)]);
    let start = Instant::now();
    let job = run_cmd(
        command(&h, &spec, &[], boad_check(), &["matrix", "--quick"]),
        "udp",
        &[],
        LIMIT,
    );
    assert_eq!(job.code(), Some(125), "{}", job.stderr());
    let refused = h.hosts()[2];
    let err = job.stderr();
    assert!(
        err.contains(&format!(
            "boadrun: host {refused}: ssh: connect to host {refused}"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("boadrun: host {refused}: its agent ended")),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(30), "{err}");
    // The reachable host's ranks are gone too (its ssh session may take a moment to end).
    let until = Instant::now() + Duration::from_secs(5);
    while !ranks_on(&h, 1, 0).is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ranks_on(&h, 1, 0).is_empty(), "{:?}", h.processes(1));
}

/// Pids of the processes in host `h`'s namespace whose environment says `BOAD_HOST_ID=id`.
fn ranks_on(h: &SshHosts, host: usize, id: usize) -> Vec<u32> {
    let want = format!("BOAD_HOST_ID={id}");
    h.processes(host)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|e| e.split(|&b| b == 0).any(|v| v == want.as_bytes()))
        })
        .collect()
}

/// The parent of `pid`.
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[test]
fn a_killed_agent_fails_the_others_naming_its_ranks_and_leaves_nothing_attached() {
    let Some(h) = hosts(4) else { return };
    let spec = spec(&h, &[(1, 2), (2, 2), (3, 2)]);
    let _serial = common::serial();
    let before = boad_programs();
    let mut cmd = command(&h, &spec, &[], boad_check(), &["random", "100000"]);
    // The kernel path between the hosts' leaders; few reduction programs, for a quick start.
    cmd.env("BOAD_TRANSPORT", "auto")
        .env("BOAD_KERNEL_FOLDS", "sum,bor:u8")
        .env("BOAD_TIMEOUT_MS", "60000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("start boadrun");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    // Host 3 (id 2) runs ranks 4 and 5: wait until they run, then SIGKILL their agent.
    let until = Instant::now() + Duration::from_secs(60);
    let agent = loop {
        let ranks = ranks_on(&h, 3, 2);
        if ranks.len() == 2 {
            if let Some(a) = parent(ranks[0]) {
                break a;
            }
        }
        assert!(Instant::now() < until, "host 3's ranks never started");
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(500));
    // The agents attached the programs before starting their ranks.
    for host in 1..=3 {
        let on = attached_in(&h, host);
        for want in ["lo: xdp", "eth0: xdp"] {
            assert!(on.iter().any(|l| l == want), "host {host}: {on:?}");
        }
    }
    let exe = std::fs::read_link(format!("/proc/{agent}/exe")).expect("agent exe");
    assert_eq!(exe, boadrun(), "the ranks' parent is the agent");
    let killed = Command::new("kill")
        .args(["-9", &agent.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let start = Instant::now();
    let out = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("boadrun did not end after its agent on host 3 was killed");
        }
    };
    let job = Job {
        out,
        secs: start.elapsed().as_secs_f64(),
    };
    assert_ne!(job.code(), Some(0), "{}", job.stderr());
    let err = job.stderr();
    assert_eq!(fallbacks(&job), Vec::<String>::new(), "{err}");
    let host = h.hosts()[3];
    assert!(
        err.contains(&format!("boadrun: host {host}: its agent ended"))
            && err.contains("rank(s) 4, 5"),
        "{err}"
    );
    // The other ranks failed naming a rank of the lost host, well before their 60 s timeout.
    let out = job.stdout();
    let named = out
        .lines()
        .chain(err.lines())
        .filter(|l| l.contains("rank 4") || l.contains("rank 5"))
        .count();
    assert!(named >= 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(job.secs < 30.0, "took {} s: {err}", job.secs);
    // Nothing of the job is left on any host: no rank, nothing attached, no program loaded.
    for i in 1..4 {
        let until = Instant::now() + Duration::from_secs(5);
        while !ranks_on(&h, i, i - 1).is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(ranks_on(&h, i, i - 1).is_empty(), "host {i} kept ranks");
        assert_eq!(attached_in(&h, i), Vec::<String>::new(), "host {i}");
    }
    let left: Vec<String> = boad_programs()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "boad programs still loaded");
}

#[test]
fn the_job_ends_on_every_host_when_boadrun_is_killed() {
    let Some(h) = hosts(3) else { return };
    let spec = spec(&h, &[(1, 2), (2, 2)]);
    let _serial = common::serial();
    // Ranks that would run for a minute, each with a child in its process group.
    let mut cmd = command(&h, &spec, &[], "sh", &["-c", "sleep 60 & sleep 60"]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().expect("start boadrun");
    let until = Instant::now() + Duration::from_secs(30);
    while ranks_on(&h, 1, 0).len() < 2 || ranks_on(&h, 2, 1).len() < 2 {
        assert!(Instant::now() < until, "the ranks never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().expect("SIGKILL boadrun");
    let _ = child.wait();
    // Its ssh connections die with it; each agent sees its input end and ends its host's ranks
    // and what they started.
    let until = Instant::now() + Duration::from_secs(10);
    let left = || {
        let mut v = ranks_on(&h, 1, 0);
        v.extend(ranks_on(&h, 2, 1));
        v
    };
    while !left().is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(left().is_empty(), "left running: {:?}", left());
}

#[test]
fn a_host_that_refuses_our_key_fails_the_job_naming_it() {
    let Some(h) = hosts(3) else { return };
    // The fixture's known hosts, but no key of ours: ssh (BatchMode) cannot log in and says so.
    let known = h.dir().join("known_hosts");
    let agent = format!(
        "ssh -F /dev/null -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o IdentityFile=/dev/null -o User=root",
        known.display()
    );
    let boadrun = boadrun();
    let mut cmd = h.command_in(0, &boadrun);
    cmd.args(["--launch-agent", &agent])
        .arg("--agent-path")
        .arg(&boadrun)
        .args(["-H", &spec(&h, &[(1, 1), (2, 1)])])
        .args(["sh", "-c", "sleep 30"]);
    let start = Instant::now();
    let job = run_cmd(cmd, "udp", &[], LIMIT);
    assert_eq!(job.code(), Some(125), "{}", job.stderr());
    let err = job.stderr();
    for i in [1, 2] {
        let host = h.hosts()[i];
        assert!(
            err.contains(&format!("boadrun: host {host}: ")) && err.contains("Permission denied"),
            "{err}"
        );
    }
    assert!(start.elapsed() < Duration::from_secs(30), "{err}");
}

#[test]
fn check_reports_every_ssh_host() {
    let Some(h) = hosts(3) else { return };
    let boadrun = boadrun();
    let mut cmd = h.command_in(0, &boadrun);
    cmd.args(["--check", "--launch-agent", &h.launch_agent()])
        .arg("--agent-path")
        .arg(&boadrun)
        .args(["-H", &spec(&h, &[(1, 1), (2, 1)])]);
    let job = run_cmd(cmd, "auto", &[], LIMIT);
    job.assert_ok();
    let out = job.stdout();
    for i in [1, 2] {
        let at = out
            .find(&format!("== host {}\n", h.hosts()[i]))
            .unwrap_or_else(|| panic!("no report from host {i}:\n{out}"));
        let report = &out[at..];
        // Each report is that host's own boadrun --check, run there over ssh (as root).
        assert!(report.contains("\nCAP_BPF:         yes"), "{out}");
        assert!(report.contains("\npath:"), "{out}");
    }
}

#[test]
fn a_host_whose_agent_is_not_root_puts_the_job_on_userspace_saying_so_once() {
    let Some(h) = hosts(4) else { return };
    // A launch agent that logs in over ssh as before, but runs host 3's agent (and so its ranks)
    // as `nobody`: no CAP_BPF, no CAP_NET_ADMIN there.
    let unprivileged = h.hosts()[3];
    // In the fixture's own directory (0700, removed with it).
    let script = h.dir().join("launch-as-nobody-on-host-3");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nhost=$1; shift\n\
             if [ \"$host\" = {unprivileged} ]; then\n\
               exec ssh -F {cfg} \"$host\" setpriv --reuid=65534 --regid=65534 --clear-groups \"$@\"\n\
             fi\n\
             exec ssh -F {cfg} \"$host\" \"$@\"\n",
            cfg = h.ssh_config().display()
        ),
    )
    .expect("write");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    // nobody runs the agent and the ranks: copies it may reach wherever the checkout is.
    let bins = boad_test_support::shared_bins::SharedBins::new(&[
        boadrun().as_path(),
        std::path::Path::new(boad_check()),
    ])
    .expect("copy the binaries");
    let boadrun = bins.path("boadrun");
    let mut cmd = h.command_in(0, &boadrun);
    cmd.arg("--launch-agent")
        .arg(&script)
        .arg("--agent-path")
        .arg(&boadrun)
        .args(["-H", &spec(&h, &[(1, 2), (2, 2), (3, 2)])])
        .arg(bins.path("boad-check"))
        .args(["matrix", "--quick"]);
    let job = run_cmd(cmd, "auto", &[], LIMIT);
    let lines = job.assert_every_rank_exact(6);
    assert_eq!(
        count(&lines, |l| l.path == "hier"),
        6,
        "every rank on the userspace hierarchical path: {lines:#?}"
    );
    let said = fallbacks(&job);
    assert_eq!(said.len(), 1, "said once: {}", job.stderr());
    assert!(
        said[0].contains(&format!("host {unprivileged}: ")),
        "names the host: {said:?}"
    );
    for host in 1..=3 {
        assert_eq!(attached_in(&h, host), Vec::<String>::new(), "host {host}");
    }
}
