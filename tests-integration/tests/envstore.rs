//! env:// direct launch, as torchrun or a Kubernetes operator starts a job: no boadrun; every
//! process is started by hand with `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`,
//! `MASTER_PORT` and the job's secret (`BOAD_SECRET_FILE`), and rank 0 serves the job's store.
//!
//! On one host (any user): 9 processes over UDP and over shared memory, every collective checked
//! by every rank (the README's commands, "Running under torchrun / Kubernetes (env://)"); a rank
//! killed mid-job; a wrong secret, no secret, a secret file others may read, partial variables.
//! Across 3 namespace hosts (root; `boad_test_support::sshhosts`, each process started inside its
//! host's network namespace, as a pod's containers are): 9 ranks, 3 per host, on the hierarchical
//! path and over UDP (also when asked for `kernel` where no host has a kernel service: UDP, rank 0
//! alone saying so); a rank killed. With a kernel service in each namespace host (`boadd` on an
//! abstract socket name, which is each network namespace's own): the same job on the kernel path,
//! every rank (`kernel`) or the hosts' leaders (`auto`), with the same communicator ids from every
//! host's service, and nothing held once it ended.

mod common;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boad_test_support::sshhosts::SshHosts;
use common::{lines_of, serial, HostServices, RankLine};

/// How long a job may take before the test kills its processes and fails.
const JOB_LIMIT: Duration = Duration::from_secs(150);

/// What one process of a job did.
#[derive(Debug)]
struct Ran {
    rank: usize,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// A directory of the test's own (the secret files, the processes' output), removed on drop.
fn workdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("boad-envstore-test-")
        .tempdir()
        .expect("temporary directory")
}

/// A secret file of 64 hex digits in `dir`, mode `mode`.
fn secret_file(dir: &Path, name: &str, byte: u8, mode: u32) -> PathBuf {
    let path = dir.join(name);
    let mut f = File::create(&path).expect("secret file");
    writeln!(f, "{}", format!("{byte:02x}").repeat(32)).expect("write secret");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

/// A TCP port nobody listens on now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("address").port()
}

/// `cmd` without any launcher's variables from the test's own environment.
fn clean(cmd: &mut Command) {
    for v in [
        "BOAD_SIZE",
        "BOAD_RANK",
        "BOAD_RENDEZVOUS_FD",
        "BOAD_HOST_ID",
        "BOAD_JOB",
        "BOAD_BIND_ADDR",
        "BOAD_SECRET",
        "BOAD_SECRET_FILE",
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "SLURM_JOB_ID",
        "SLURM_STEP_ID",
        "SLURM_STEP_NUM_TASKS",
        "PMI_FD",
        "PMI_SIZE",
        "OMPI_COMM_WORLD_SIZE",
    ] {
        cmd.env_remove(v);
    }
}

/// Starts every command (rank order), each with its output in files of `dir`, and waits for all;
/// past [`JOB_LIMIT`] kills them (by pid) and fails.
fn run_all(dir: &Path, cmds: Vec<Command>) -> Vec<Ran> {
    let mut children = Vec::new();
    for (rank, mut cmd) in cmds.into_iter().enumerate() {
        let out = dir.join(format!("out.{rank}"));
        let err = dir.join(format!("err.{rank}"));
        cmd.stdin(Stdio::null())
            .stdout(File::create(&out).expect("stdout file"))
            .stderr(File::create(&err).expect("stderr file"));
        children.push((rank, cmd.spawn().expect("start a rank"), out, err));
    }
    let start = Instant::now();
    let mut codes = vec![None; children.len()];
    let mut left = children.len();
    while left > 0 {
        for (rank, child, _, _) in &mut children {
            if codes[*rank].is_none() {
                if let Some(status) = child.try_wait().expect("wait for a rank") {
                    codes[*rank] = Some(status.code());
                    left -= 1;
                }
            }
        }
        if start.elapsed() > JOB_LIMIT {
            for (_, child, _, _) in &mut children {
                let _ = child.kill();
                let _ = child.wait();
            }
            let outs: Vec<String> = children
                .iter()
                .map(|(r, _, o, e)| {
                    format!(
                        "rank {r}:\n{}{}",
                        std::fs::read_to_string(o).unwrap_or_default(),
                        std::fs::read_to_string(e).unwrap_or_default()
                    )
                })
                .collect();
            panic!("the job hung for {JOB_LIMIT:?}:\n{}", outs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    children
        .into_iter()
        .map(|(rank, _, out, err)| Ran {
            rank,
            code: codes[rank].flatten(),
            stdout: std::fs::read_to_string(out).expect("stdout"),
            stderr: std::fs::read_to_string(err).expect("stderr"),
        })
        .collect()
}

/// The five variables of rank `rank` of `size`, and the secret file.
fn env_vars(cmd: &mut Command, rank: usize, size: usize, master: &str, port: u16, secret: &Path) {
    clean(cmd);
    cmd.env("RANK", rank.to_string())
        .env("WORLD_SIZE", size.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", master)
        .env("MASTER_PORT", port.to_string())
        .env("BOAD_SECRET_FILE", secret);
}

fn boad_check() -> &'static str {
    env!("CARGO_BIN_EXE_boad-check")
}

/// Each rank's summary line, having checked that every rank exited 0 and found no case wrong,
/// on path `path`.
fn all_exact(ran: &[Ran], path: &str) -> Vec<RankLine> {
    let text: String = ran.iter().map(|r| r.stdout.clone()).collect();
    for r in ran {
        assert_eq!(r.code, Some(0), "rank {} failed:\n{ran:#?}", r.rank);
    }
    let lines = lines_of(&text, " wrong; path=");
    let ranks: Vec<usize> = lines.iter().map(|l| l.rank).collect();
    assert_eq!(ranks, (0..ran.len()).collect::<Vec<_>>(), "{text}");
    for l in &lines {
        assert!(l.cases > 0 && l.wrong == 0, "{}", l.line);
        assert_eq!(l.path, path, "{}", l.line);
    }
    lines
}

/// 9 ranks on this host, as the README starts them.
fn one_host_job(dir: &Path, transport: &str, args: &[&str], extra: &[(&str, &str)]) -> Vec<Ran> {
    let secret = secret_file(dir, "secret", 0x5a, 0o600);
    let port = free_port();
    let cmds = (0..9)
        .map(|r| {
            let mut c = Command::new(boad_check());
            env_vars(&mut c, r, 9, "127.0.0.1", port, &secret);
            c.args(args)
                .env("BOAD_TRANSPORT", transport)
                .envs(extra.iter().copied());
            c
        })
        .collect();
    run_all(dir, cmds)
}

#[test]
fn nine_processes_on_one_host_meet_through_the_store_on_udp_and_shared_memory() {
    let _serial = serial();
    let dir = workdir();
    // Every collective x op x dtype x size, checked by every rank, in shared memory.
    let ran = one_host_job(dir.path(), "shm", &["matrix", "--quick"], &[]);
    let lines = all_exact(&ran, "shm");
    assert!(lines.iter().all(|l| l.get("collectives_shm") > 0));
    // Every collective (the seeded random cases include each) over UDP, rank to rank.
    let ran = one_host_job(dir.path(), "udp", &["random", "60"], &[]);
    let lines = all_exact(&ran, "udp");
    assert!(lines.iter().all(|l| l.get("datagrams_sent") > 0));
    // Nobody complained about LOCAL_RANK (= RANK on one host, as boad found).
    assert!(
        ran.iter().all(|r| !r.stderr.contains("LOCAL_RANK")),
        "{ran:#?}"
    );
}

/// No launcher writes `EXIT` lines here, and the timeout stays at its default of a minute: a
/// killed rank is seen by the others themselves (`transport::gone`), at once.
#[test]
fn a_killed_rank_makes_the_others_fail_naming_it_within_seconds() {
    let _serial = serial();
    let dir = workdir();
    for transport in ["udp", "shm"] {
        let t0 = Instant::now();
        let ran = one_host_job(
            dir.path(),
            transport,
            &["kill-mid", "4", "4096"],
            &[("BOAD_TIMEOUT_MS", "60000")],
        );
        assert_killed_named(&ran, 4, transport);
        assert_all_say(&ran, 4, "is gone", transport);
        assert!(t0.elapsed() < QUICK_END, "{transport}: {:?}", t0.elapsed());
    }
}

/// Containers of one pod share a network namespace (one boad host) but not always pids: a rank in
/// another pid namespace has a pid that is not its own here, so the others cannot watch its process
/// and see its end from its closed port instead, on shared memory and over UDP.
#[test]
fn a_killed_rank_in_another_pid_namespace_is_seen_by_its_closed_port() {
    use boad_test_support::Need;
    if !boad_test_support::require(&[Need::Root, Need::Program("unshare")]) {
        return;
    }
    let _serial = serial();
    let dir = workdir();
    let secret = secret_file(dir.path(), "secret", 0x5b, 0o600);
    for transport in ["shm", "udp"] {
        let t0 = Instant::now();
        let port = free_port();
        let cmds = (0..3)
            .map(|r| {
                let mut c = if r == 1 {
                    // Under sh, so that rank 1 is not its namespace's pid 1 (which ignores the
                    // SIGKILL it sends itself).
                    let mut c = Command::new("unshare");
                    c.args(["--pid", "--fork", "sh", "-c", "\"$0\" \"$@\"; exit $?"])
                        .arg(boad_check());
                    c
                } else {
                    Command::new(boad_check())
                };
                env_vars(&mut c, r, 3, "127.0.0.1", port, &secret);
                c.args(["kill-mid", "1", "4096"])
                    .env("BOAD_TRANSPORT", transport)
                    .env("BOAD_TIMEOUT_MS", "60000");
                c
            })
            .collect();
        let ran = run_all(dir.path(), cmds);
        for r in [0, 2] {
            assert_eq!(ran[r].code, Some(4), "{transport}: {ran:#?}");
        }
        assert_ne!(ran[1].code, Some(0), "{transport}: {ran:#?}");
        assert_all_say(&ran, 1, "rank 1 is gone", transport);
        assert_all_say(&ran, 1, "refused probes", transport);
        assert!(t0.elapsed() < QUICK_END, "{transport}: {:?}", t0.elapsed());
    }
}

/// How long a job with a killed rank may take at most, start to end, with the timeout at a
/// minute: far below the timeout, so that only prompt news of the death passes.
const QUICK_END: Duration = Duration::from_secs(15);

/// Every rank but `victim` failed with an error saying `what`.
fn assert_all_say(ran: &[Ran], victim: usize, what: &str, case: &str) {
    for r in ran.iter().filter(|r| r.rank != victim) {
        assert!(
            r.stderr
                .lines()
                .any(|l| l.contains("error as expected") && l.contains(what)),
            "{case}: rank {} does not say {what:?}:\n{r:?}",
            r.rank
        );
    }
}

/// Rank `victim` died by SIGKILL; every other rank failed (exit 4) with an error naming it.
fn assert_killed_named(ran: &[Ran], victim: usize, what: &str) {
    for r in ran {
        if r.rank == victim {
            assert_eq!(r.code, None, "{what}: rank {victim} was killed: {r:?}");
            continue;
        }
        let named = format!("rank {victim}");
        let error = r
            .stderr
            .lines()
            .find(|l| l.contains("error as expected"))
            .unwrap_or_default();
        assert!(
            r.code == Some(4) && error.contains(&named),
            "{what}: rank {} did not fail naming rank {victim}:\n{r:?}",
            r.rank
        );
    }
}

/// One process alone with its variables: exit code and stderr.
fn alone(vars: &[(&str, &str)], secret: Option<&Path>) -> (Option<i32>, String) {
    let mut c = Command::new(boad_check());
    clean(&mut c);
    c.args(["random", "3"]).envs(vars.iter().copied());
    if let Some(s) = secret {
        c.env("BOAD_SECRET_FILE", s);
    }
    let out = c.output().expect("run boad-check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn missing_variables_or_secrets_and_a_wrong_secret_are_clear_errors() {
    let _serial = serial();
    let dir = workdir();
    let port = free_port().to_string();
    let job = [
        ("RANK", "1"),
        ("WORLD_SIZE", "2"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", port.as_str()),
        ("BOAD_TIMEOUT_MS", "2000"),
    ];
    // Partial variables: named, never a job of one rank.
    let (code, err) = alone(&job[..2], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("env://") && err.contains("MASTER_ADDR, MASTER_PORT are not"),
        "{err}"
    );
    let (code, err) = alone(&job[..3], None);
    assert!(
        code == Some(2) && err.contains("MASTER_PORT is not"),
        "{err}"
    );
    // No secret: says how to give one.
    let (code, err) = alone(&job, None);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("BOAD_SECRET") && err.contains("BOAD_SECRET_FILE"),
        "{err}"
    );
    // A secret file others may read.
    let open = secret_file(dir.path(), "open", 1, 0o644);
    let (code, err) = alone(&job, Some(&open));
    assert!(code == Some(2) && err.contains("chmod 600"), "{err}");
    // Nobody serves the store: an error within the timeout, naming where it looked.
    let good = secret_file(dir.path(), "good", 1, 0o600);
    let t0 = Instant::now();
    let (code, err) = alone(&job, Some(&good));
    assert!(
        code == Some(2) && err.contains("is rank 0 running"),
        "{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(10));

    // Rank 1 with another secret than rank 0's: refused; rank 0 names it.
    let other = secret_file(dir.path(), "other", 2, 0o600);
    let port: u16 = port.parse().expect("port");
    let cmds = [(0, &good), (1, &other)]
        .into_iter()
        .map(|(r, s)| {
            let mut c = Command::new(boad_check());
            env_vars(&mut c, r, 2, "127.0.0.1", port, s);
            c.args(["random", "3"]).env("BOAD_TIMEOUT_MS", "2000");
            c
        })
        .collect();
    let ran = run_all(dir.path(), cmds);
    assert_eq!(ran[1].code, Some(2), "{ran:#?}");
    assert!(
        ran[1].stderr.contains("refused this process's secret"),
        "{ran:#?}"
    );
    assert_eq!(ran[0].code, Some(2), "{ran:#?}");
    assert!(
        ran[0].stderr.contains("never connected: 1"),
        "rank 0 names rank 1: {ran:#?}"
    );
}

/// 3 namespace hosts with 3 ranks each, started inside their hosts; rank 0's host serves the store.
fn three_host_job(
    hosts: &SshHosts,
    dir: &Path,
    transport: &str,
    args: &[&str],
    extra: &[(&str, &str)],
) -> Vec<Ran> {
    let secret = secret_file(dir, "secret", 0x77, 0o600);
    let master = hosts.hosts()[0].to_string();
    let cmds = (0..9)
        .map(|r| {
            let mut c = hosts.command_in(r / 3, boad_check());
            env_vars(&mut c, r, 9, &master, 29500, &secret);
            // LOCAL_RANK as torchrun sets it: the rank's index on its node.
            c.env("LOCAL_RANK", (r % 3).to_string())
                .env("BOAD_TRANSPORT", transport)
                .args(args)
                .envs(extra.iter().copied());
            c
        })
        .collect();
    run_all(dir, cmds)
}

#[test]
fn nine_ranks_on_three_namespace_hosts_hierarchical_udp_and_a_killed_rank() {
    if !boad_test_support::sshhosts::require() {
        return;
    }
    let _serial = serial();
    let hosts = SshHosts::create(3).expect("namespace hosts");
    let dir = workdir();
    // Shared memory inside each host, UDP between the hosts' leaders.
    let ran = three_host_job(&hosts, dir.path(), "shm", &["random", "40"], &[]);
    let lines = all_exact(&ran, "hier");
    let senders = common::senders(&lines);
    assert_eq!(
        senders,
        [0, 3, 6],
        "only the hosts' leaders use the network"
    );
    assert!(
        ran.iter().all(|r| !r.stderr.contains("LOCAL_RANK")),
        "{ran:#?}"
    );
    // UDP rank to rank across the hosts.
    let ran = three_host_job(&hosts, dir.path(), "udp", &["random", "40"], &[]);
    all_exact(&ran, "udp");
    // `kernel` across hosts where no host has a kernel service: UDP, and rank 0 alone says so,
    // once, naming the hosts' leaders.
    let ran = three_host_job(
        &hosts,
        dir.path(),
        "kernel",
        &["random", "5"],
        &[("BOAD_SERVICE_SOCKET", "@boad-no-service-here")],
    );
    all_exact(&ran, "udp");
    for r in &ran {
        let said = r.stderr.matches("kernel path unavailable").count();
        assert_eq!(
            said,
            usize::from(r.rank == 0),
            "rank {}: {}",
            r.rank,
            r.stderr
        );
    }
    assert!(
        ran[0].stderr.contains("the hosts of ranks 0, 3 and 6"),
        "{}",
        ran[0].stderr
    );
    // A LOCAL_RANK that disagrees with the hosts' placement is reported, and not used.
    let ran = three_host_job(
        &hosts,
        dir.path(),
        "shm",
        &["random", "5"],
        &[("LOCAL_RANK", "7")],
    );
    all_exact(&ran, "hier");
    assert!(
        ran[4]
            .stderr
            .contains("LOCAL_RANK=7, but rank 4 is local rank 1 of the 3 ranks"),
        "{:?}",
        ran[4]
    );
    // Rank 4 (host 1) killed mid-job, the timeout at its default of a minute: every other rank,
    // on every host, fails naming it within seconds.
    let t0 = Instant::now();
    let ran = three_host_job(
        &hosts,
        dir.path(),
        "udp",
        &["kill-mid", "4", "4096"],
        &[("BOAD_TIMEOUT_MS", "60000")],
    );
    assert_killed_named(&ran, 4, "3 hosts, udp");
    assert_all_say(&ran, 4, "is gone", "3 hosts, udp");
    assert!(t0.elapsed() < QUICK_END, "{:?}", t0.elapsed());
    // One rank per host, rank 1 killed: no peer shares its host, so ranks 0 and 2 learn it from
    // its closed liveness port (ICMP port unreachable), not from its process.
    let t0 = Instant::now();
    let secret = secret_file(dir.path(), "secret1", 0x78, 0o600);
    let master = hosts.hosts()[0].to_string();
    let cmds = (0..3)
        .map(|r| {
            let mut c = hosts.command_in(r, boad_check());
            env_vars(&mut c, r, 3, &master, 29501, &secret);
            c.env("LOCAL_RANK", "0")
                .env("BOAD_TRANSPORT", "udp")
                .env("BOAD_TIMEOUT_MS", "60000")
                .args(["kill-mid", "1", "4096"]);
            c
        })
        .collect();
    let ran = run_all(dir.path(), cmds);
    assert_killed_named(&ran, 1, "1 rank per host, udp");
    assert_all_say(&ran, 1, "refused probes", "1 rank per host, udp");
    assert!(t0.elapsed() < QUICK_END, "{:?}", t0.elapsed());
}

#[test]
fn nine_ranks_on_three_namespace_hosts_take_the_kernel_path_through_each_hosts_service() {
    if !boad_test_support::sshhosts::require() {
        return;
    }
    let _serial = serial();
    let hosts = SshHosts::create(3).expect("namespace hosts");
    let dir = workdir();
    let services = HostServices::start(&hosts, dir.path());
    let socket = [
        ("BOAD_SERVICE_SOCKET", services.name.as_str()),
        ("BOAD_STATS", "1"),
    ];
    // Start-up, for the note (printed, never asserted: timing is the benchmarks' business): a
    // one-case job on UDP and on the kernel path through the services.
    for transport in ["udp", "kernel"] {
        let t0 = Instant::now();
        let ran = three_host_job(&hosts, dir.path(), transport, &["random", "1"], &socket);
        all_exact(&ran, transport);
        eprintln!(
            "one-case job, 9 ranks on 3 hosts, {transport}: {:.3} s",
            t0.elapsed().as_secs_f64()
        );
    }
    // `kernel`: every rank is a member of one communicator, which every host's service gave the
    // job under the same id; each rank's collectives ran on the kernel path, and it is exact.
    let ran = three_host_job(
        &hosts,
        dir.path(),
        "kernel",
        &["matrix", "--quick"],
        &socket,
    );
    let lines = all_exact(&ran, "kernel");
    for (r, l) in ran.iter().zip(&lines) {
        assert!(l.get("collectives_kernel") > 0, "{}", l.line);
        assert!(
            !r.stderr.contains("kernel path"),
            "rank {}: {}",
            r.rank,
            r.stderr
        );
    }
    // `auto`: shared memory inside each host, the hosts' leaders on the kernel path between them
    // (the leaders' communicator, also the same id on every host).
    let ran = three_host_job(&hosts, dir.path(), "auto", &["matrix", "--quick"], &socket);
    let lines = all_exact(&ran, "hier-kernel");
    let kernel: Vec<usize> = lines
        .iter()
        .filter(|l| l.get("collectives_kernel") > 0)
        .map(|l| l.rank)
        .collect();
    assert_eq!(kernel, [0, 3, 6], "{lines:#?}");
    assert_eq!(common::senders(&lines), [0, 3, 6], "{lines:#?}");
    // Each job's registrations ended with it: every service holds nothing.
    services.assert_idle(&hosts);
    services.stop();
}
