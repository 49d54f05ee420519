//! Real multi-process jobs: `boadrun -n N boad-check MODE` for the modes of the worker (see
//! `src/main.rs`). Heavy jobs run one at a time (2-core CI machines).

mod common;

use std::process::Command;
use std::time::Duration;

use common::{
    assert_forgeries_ignored, assert_mismatches_reported, boadrun, cargo_build, count,
    kernel_counters, leftover_segments, rank_lines, rank_stats, root, run_cmd, serial, target_dir,
    wire_loss_dropped, Job, RankLine, FORGE_FOLDS, LIMIT,
};

/// Runs `boadrun <launcher_args> -n N boad-check <args>` over UDP with `env`, killing it after
/// `limit`.
fn run(
    n: usize,
    launcher_args: &[&str],
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> Job {
    run_on("udp", n, launcher_args, args, env, limit)
}

/// [`run`] with `BOAD_TRANSPORT=transport`.
fn run_on(
    transport: &str,
    n: usize,
    launcher_args: &[&str],
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> Job {
    let mut cmd = Command::new(boadrun());
    cmd.args(launcher_args)
        .args(["-n", &n.to_string()])
        .arg(env!("CARGO_BIN_EXE_boad-check"))
        .args(args);
    run_cmd(cmd, transport, env, limit)
}

fn matrix(n: usize) {
    matrix_on("udp", n);
}

fn matrix_on(transport: &str, n: usize) {
    let lines = run_on(transport, n, &[], &["matrix"], &[], LIMIT).assert_every_rank_exact(n);
    assert_ran_on(&lines, transport);
}

/// Every rank's collectives ran on `transport`'s path (`udp` or `shm`), none on another: a
/// transport that fell back silently to another path fails here.
fn assert_ran_on(lines: &[RankLine], transport: &str) {
    let n = lines.len();
    let (this, others) = match transport {
        "udp" => (
            "collectives_udp",
            ["collectives_kernel", "collectives_shm", "collectives_hier"],
        ),
        "shm" => (
            "collectives_shm",
            ["collectives_kernel", "collectives_udp", "collectives_hier"],
        ),
        other => panic!("assert_ran_on({other})"),
    };
    assert_eq!(
        count(lines, |l| l.get(this) > 0
            && others.iter().all(|o| l.get(o) == 0)
            && l.path == transport),
        n,
        "every rank ran its collectives on {transport}, and only there: {lines:#?}"
    );
}

#[test]
fn matrix_1_rank() {
    matrix(1);
}

#[test]
fn matrix_2_ranks() {
    matrix(2);
}

#[test]
fn matrix_3_ranks() {
    matrix(3);
}

#[test]
fn matrix_4_ranks() {
    matrix(4);
}

#[test]
fn matrix_9_ranks() {
    matrix(9);
}

#[test]
fn twenty_ranks_random_cases() {
    let job = run(20, &[], &["random", "100"], &[], LIMIT);
    assert_ran_on(&job.assert_every_rank_exact(20), "udp");
}

#[test]
fn matrix_on_a_virtual_cluster_of_3_hosts() {
    if !root() {
        return;
    }
    let job = run(9, &["--hosts", "3"], &["matrix", "--quick"], &[], LIMIT);
    assert_ran_on(&job.assert_every_rank_exact(9), "udp");
}

#[test]
fn random_cases_on_a_virtual_cluster_of_4_hosts_with_loss() {
    if !root() {
        return;
    }
    let env = [("BOAD_DROP_RATE", "0.05"), ("BOAD_CHUNK_BYTES", "")];
    let job = run(4, &["--hosts", "4"], &["random", "100"], &env, LIMIT);
    let lines = job.assert_every_rank_exact(4);
    assert_ran_on(&lines, "udp");
    assert_loss_recovered(&lines);
}

/// Every rank lost received datagrams to `BOAD_DROP_RATE`, and every rank resent some (each sends
/// to others in the collectives the loss tests run, and loses some of what others send it, so each
/// sees both sides of recovery): one line per rank, counted.
fn assert_loss_recovered(lines: &[RankLine]) {
    let n = lines.len();
    assert_eq!(
        count(lines, |l| l.get("dropped_injected") > 0),
        n,
        "loss was injected on every rank: {lines:#?}"
    );
    assert_eq!(
        count(lines, |l| l.get("retransmits") > 0),
        n,
        "every rank recovered lost datagrams by resending: {lines:#?}"
    );
}

#[test]
fn matrix_default_chunk_size() {
    let job = run(
        5,
        &[],
        &["matrix", "--quick"],
        &[("BOAD_CHUNK_BYTES", "")],
        LIMIT,
    );
    assert_ran_on(&job.assert_every_rank_exact(5), "udp");
}

#[test]
fn sixteen_mib() {
    let job = run(3, &[], &["big"], &[("BOAD_CHUNK_BYTES", "")], LIMIT);
    let lines = job.assert_every_rank_exact(3);
    assert_ran_on(&lines, "udp");
    assert_folds_as_auto_says(&lines, 3);
}

/// The `big` mode without `BOAD_FOLD_THREADS` on `n` ranks of this host (n not a power of two):
/// every rank folds on the threads `auto` gives (one on a machine with fewer than 2n cores); rank
/// 0, the root of the allreduce's reduce, folds the n - 1 others' 16 MiB on them if it has more
/// than one, and no other rank folds.
fn assert_folds_as_auto_says(lines: &[RankLine], n: usize) {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let threads = boad::ops::par::auto_threads(n, cores) as u64;
    for l in lines {
        assert_eq!(l.get("fold_threads"), threads, "{cores} cores: {}", l.line);
        let want = if threads > 1 && l.rank == 0 { n - 1 } else { 0 };
        assert_eq!(l.get("folds_parallel"), want as u64, "{}", l.line);
    }
}

/// Folds on two threads (forced: `auto` gives the ranks of a full host one each) from 1 KiB up,
/// over UDP and shared memory: every case of the matrix (every op x dtype, odd sizes, every root)
/// is still exact, checked with the worker's own arithmetic, and every rank folded on both
/// threads; then the 16 MiB allreduce of 2 ranks (recursive doubling: each rank folds 128 pieces).
#[test]
fn matrix_with_parallel_folds() {
    let forced = [("BOAD_FOLD_THREADS", "2"), ("BOAD_FOLD_PAR_BYTES", "1024")];
    for transport in ["udp", "shm"] {
        let job = run_on(transport, 3, &[], &["matrix", "--quick"], &forced, LIMIT);
        let lines = job.assert_every_rank_exact(3);
        assert_ran_on(&lines, transport);
        for l in &lines {
            assert_eq!(l.get("fold_threads"), 2, "{}", l.line);
            assert!(l.get("folds_parallel") > 0, "{}", l.line);
        }
    }
    let job = run_on("shm", 2, &[], &["big"], &forced[..1], LIMIT);
    for l in job.assert_every_rank_exact(2) {
        assert_eq!(l.get("fold_threads"), 2, "{}", l.line);
        // One 16 MiB fold, over the default threshold.
        assert_eq!(l.get("folds_parallel"), 1, "{}", l.line);
    }
}

fn with_loss(rate: &str) {
    let job = run(
        4,
        &[],
        &["matrix", "--quick"],
        &[("BOAD_DROP_RATE", rate), ("BOAD_DROP_SEED", "42")],
        LIMIT,
    );
    let lines = job.assert_every_rank_exact(4);
    assert_ran_on(&lines, "udp");
    assert_loss_recovered(&lines);
}

#[test]
fn loss_5_percent() {
    with_loss("0.05");
}

#[test]
fn loss_20_percent() {
    with_loss("0.2");
}

#[test]
fn foreign_datagrams_are_ignored() {
    let n = 3;
    let job = run(n, &[], &["foreign"], &[], LIMIT);
    let lines = job.assert_every_rank_exact(n);
    // Each peer sprays 3 kinds x 10 datagrams at each rank before the first barrier (on `lo`: in
    // the socket by then), all of which the rank must count.
    let sprayed = 30 * (n as u64 - 1);
    assert_eq!(
        count(&lines, |l| l.get("foreign") >= sprayed),
        n,
        "every rank counted the {sprayed} foreign datagrams sprayed at it: {lines:#?}"
    );
}

/// Truncated, garbage and absurd datagrams (see `src/hostile.rs`) sent to every rank while the
/// quick matrix runs over UDP, from a stranger's socket and (as root) from a peer's own address:
/// no rank crashes (the `checked` profile turns any overflow into a panic), the results stay exact,
/// and each rank counts at least what was sent to it as foreign.
#[test]
fn hostile_datagrams_are_refused_during_collectives() {
    let n = 3;
    let job = run(n, &[], &["hostile"], &[], LIMIT);
    job.assert_every_rank_exact(n);
    let out = job.stdout();
    assert_eq!(out.matches("hostile ok").count(), n, "{out}");
    if root() {
        assert_eq!(
            out.matches("forging from a peer's address: yes").count(),
            n,
            "{out}"
        );
    }
}

#[test]
fn mismatched_calls_are_errors_on_every_rank() {
    mismatch_on("udp");
}

fn mismatch_on(transport: &str) {
    let job = run_on(transport, 4, &[], &["mismatch"], &[], LIMIT);
    job.assert_ok();
    let out = job.stdout();
    let done = rank_lines(&out, ": mismatch done; ", &[0, 1, 2, 3]);
    let counter = format!("collectives_{transport}");
    assert_eq!(
        count(&done, |l| l.path == transport && l.get(&counter) > 0),
        4,
        "every rank's collectives took {transport}: {done:#?}"
    );
    assert_mismatches_reported(&out, 4, transport == "shm");
}

#[test]
fn a_rank_exiting_mid_job_fails_the_others_naming_it() {
    exit_mid_on("udp", &[]);
}

/// The `rank R: before: path=P ...` line each of `ranks` printed after its first collective: all
/// took `path`; returns them.
fn first_path(job: &Job, ranks: &[usize], path: &str) -> Vec<RankLine> {
    let before = rank_lines(&job.stdout(), ": before: ", ranks);
    assert_eq!(
        count(&before, |l| l.path == path),
        ranks.len(),
        "the first collective took {path} on every rank: {before:#?}"
    );
    before
}

/// Rank 2 of 4 exits with status 3 before an allreduce: boadrun reports it and exits 3, and each
/// other rank fails at once (told by the launcher, well before the 60 s timeout) with an error of
/// its own naming rank 2 and its status.
fn exit_mid_on(transport: &str, launcher: &[&str]) {
    let job = run_on(
        transport,
        4,
        launcher,
        &["exit-mid", "2"],
        &[("BOAD_TIMEOUT_MS", "60000")],
        LIMIT,
    );
    let err = job.stderr();
    assert_eq!(
        job.code(),
        Some(3),
        "boadrun exits with the rank's status:\n{err}"
    );
    first_path(&job, &[0, 1, 2, 3], transport);
    assert_eq!(
        err.lines()
            .filter(
                |l| l.starts_with("boadrun: rank 2 (pid ") && l.ends_with("exited with status 3")
            )
            .count(),
        1,
        "boadrun reports rank 2:\n{err}"
    );
    // The ranks' own errors (not boadrun's line): each names rank 2.
    let lines = rank_lines(&err, "error as expected", &[0, 1, 3]);
    assert_eq!(
        count(&lines, |l| l.line.contains("rank 2 exited with status 3")),
        3,
        "every other rank names rank 2:\n{err}"
    );
    assert!(job.secs < 30.0, "took {:.1} s", job.secs);
}

#[test]
fn a_silent_rank_times_out_naming_it() {
    silent_on("udp", &[]);
}

/// Rank 1 stops (SIGSTOP) before an allreduce: alive to the kernel, it answers nothing, not even
/// its liveness socket; every other rank must report it within a bound.
fn silent_on(transport: &str, launcher: &[&str]) {
    let mut args = vec!["--kill-grace-ms", "500"];
    args.extend_from_slice(launcher);
    let job = run_on(
        transport,
        3,
        &args,
        &["freeze", "1"],
        &[("BOAD_TIMEOUT_MS", "1500")],
        LIMIT,
    );
    let err = job.stderr();
    assert_ne!(job.code(), Some(0), "{err}");
    first_path(&job, &[0, 1, 2], transport);
    // Rank 0 waits for rank 1 itself; rank 2 may wait for rank 0, which passes the error on (its
    // reason quoting rank 0's): either way each names rank 1 as the silent one.
    let lines = rank_lines(&err, "error as expected", &[0, 2]);
    assert_eq!(
        count(&lines, |l| l.line.contains("rank 1 sent nothing")),
        2,
        "{err}"
    );
    assert!(job.secs < 25.0, "took {:.1} s", job.secs);
}

/// Rank 1 computes outside boad for 3.5 s, over twice the timeout, between two allreduces: the
/// others wait for it, warning every timeout, and every result is exact.
fn busy_on(transport: &str, n: usize, launcher: &[&str]) {
    let job = run_on(
        transport,
        n,
        launcher,
        &["busy", "1", "3500"],
        &[("BOAD_TIMEOUT_MS", "1000")],
        LIMIT,
    );
    job.assert_ok();
    let (out, err) = (job.stdout(), job.stderr());
    let all: Vec<usize> = (0..n).collect();
    let done = rank_lines(&out, ": busy ok; ", &all);
    assert_eq!(
        count(&done, |l| l.path == transport),
        n,
        "every rank's collectives took {transport}: {done:#?}"
    );
    assert!(job.secs >= 3.5, "rank 1 was not busy: {:.1} s", job.secs);
    let warnings = err
        .lines()
        .filter(|l| l.contains("still waiting for rank 1") && l.contains("is alive"))
        .count();
    assert!(warnings >= 2, "{warnings} warnings naming rank 1:\n{err}");
    // Waited for, never taken for a silent rank: every line that says rank 1 sent nothing is a
    // warning that it is alive.
    let silent = err.lines().filter(|l| l.contains("sent nothing for"));
    assert!(silent.clone().all(|l| l.contains("is alive")), "{err}");
    assert_eq!(silent.count(), warnings, "{err}");
}

#[test]
fn a_rank_busy_outside_boad_is_waited_for() {
    busy_on("udp", 3, &[]);
}

#[test]
fn shm_a_rank_busy_outside_boad_is_waited_for() {
    busy_on("shm", 3, &[]);
}

#[test]
fn kernel_a_rank_busy_outside_boad_is_waited_for() {
    if root() {
        busy_on("kernel", 3, &[]);
    }
}

#[test]
fn kernel_a_silent_rank_times_out_naming_it() {
    if root() {
        silent_on("kernel", &[]);
    }
}

/// Rank 1's host loses its network before an allreduce (one rank per host): rank 0, which waits
/// for it, must report it silent within a bound, though its process lives on (rank 1 waits longer:
/// its own timeout is 20 s, so it is still there, unheard, when the others give up).
#[test]
fn a_rank_whose_network_is_lost_times_out_naming_it() {
    if !root() {
        return;
    }
    let mut cmd = Command::new(boadrun());
    cmd.args([
        "--hosts",
        "3",
        "--kill-grace-ms",
        "500",
        "-n",
        "3",
        "sh",
        "-c",
    ])
    .arg("if [ \"$BOAD_RANK\" = 1 ]; then export BOAD_TIMEOUT_MS=20000; fi; exec \"$CHECK\" cut 1")
    .env("CHECK", env!("CARGO_BIN_EXE_boad-check"));
    let job = run_cmd(cmd, "udp", &[("BOAD_TIMEOUT_MS", "1500")], LIMIT);
    let err = job.stderr();
    assert_ne!(job.code(), Some(0), "{err}");
    first_path(&job, &[0, 1, 2], "udp");
    assert!(
        err.contains("rank 1: eth0 down: Ok(ExitStatus(unix_wait_status(0)))"),
        "{err}"
    );
    let rank0 = err
        .lines()
        .find(|l| l.starts_with("rank 0: error as expected"))
        .unwrap_or_else(|| panic!("rank 0 did not fail:\n{err}"));
    assert!(rank0.contains("rank 1 sent nothing"), "{err}");
    assert!(job.secs < 25.0, "took {:.1} s", job.secs);
}

#[test]
fn singleton_without_boadrun() {
    let _serial = serial();
    let out = Command::new(env!("CARGO_BIN_EXE_boad-check"))
        .args(["matrix", "--quick"])
        .env_remove("BOAD_SIZE")
        .output()
        .expect("run boad-check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = rank_lines(&stdout, " wrong; path=", &[0]);
    assert!(lines[0].cases > 0 && lines[0].wrong == 0, "{stdout}");
}

#[test]
fn demo_runs_on_9_ranks() {
    let demo = target_dir().join("examples").join("demo");
    if !demo.exists() {
        cargo_build(&["-p", "boad", "--example", "demo"]);
    }
    let _serial = serial();
    let out = Command::new(boadrun())
        .args(["-n", "9"])
        .arg(&demo)
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("all collectives returned the expected results on all 9 ranks"),
        "{stdout}"
    );
}

// ----- the same over shared memory (BOAD_TRANSPORT=shm); loss and foreign datagrams are UDP-only -----

#[test]
fn shm_matrix_1_rank() {
    matrix_on("shm", 1);
}

#[test]
fn shm_matrix_2_ranks() {
    matrix_on("shm", 2);
}

#[test]
fn shm_matrix_3_ranks() {
    matrix_on("shm", 3);
}

#[test]
fn shm_matrix_4_ranks() {
    matrix_on("shm", 4);
}

#[test]
fn shm_matrix_9_ranks() {
    matrix_on("shm", 9);
}

#[test]
fn shm_twenty_ranks_random_cases() {
    let job = run_on("shm", 20, &[], &["random", "100"], &[], LIMIT);
    assert_ran_on(&job.assert_every_rank_exact(20), "shm");
}

#[test]
fn shm_sixteen_mib() {
    let job = run_on("shm", 3, &[], &["big"], &[], LIMIT);
    let lines = job.assert_every_rank_exact(3);
    assert_ran_on(&lines, "shm");
    assert_folds_as_auto_says(&lines, 3);
}

#[test]
fn shm_is_the_automatic_choice_on_one_host() {
    let job = run_on("auto", 3, &[], &["path", "shm"], &[], LIMIT);
    job.assert_ok();
    let job = run_on("udp", 3, &[], &["path", "udp"], &[], LIMIT);
    job.assert_ok();
}

#[test]
fn shm_mismatched_calls_are_errors_on_every_rank() {
    mismatch_on("shm");
}

#[test]
fn shm_a_rank_exiting_mid_job_fails_the_others_naming_it() {
    exit_mid_on("shm", &[]);
}

#[test]
fn shm_a_silent_rank_times_out_naming_it() {
    silent_on("shm", &[]);
}

#[test]
fn shm_a_rank_killed_mid_collective_fails_the_others_and_leaves_no_segment() {
    let job = run_on(
        "shm",
        4,
        &[],
        &["kill-mid", "1"],
        &[("BOAD_TIMEOUT_MS", "60000")],
        LIMIT,
    );
    let err = job.stderr();
    assert_eq!(job.code(), Some(128 + 9), "killed by SIGKILL:\n{err}");
    first_path(&job, &[0, 1, 2, 3], "shm");
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("boadrun: rank 1 (pid ") && l.contains("SIGKILL"))
            .count(),
        1,
        "boadrun reports rank 1:\n{err}"
    );
    // The ranks' own errors (not boadrun's line): each names rank 1.
    let lines = rank_lines(&err, "error as expected", &[0, 2, 3]);
    assert_eq!(
        count(&lines, |l| l.line.contains("rank 1 exited with status 137")),
        3,
        "every other rank names rank 1:\n{err}"
    );
    assert!(job.secs < 30.0, "took {:.1} s", job.secs);
    let key = job.key();
    assert_eq!(leftover_segments(&key), Vec::<String>::new());
}

#[test]
fn boadrun_removes_a_segment_left_by_dead_ranks() {
    // Ranks that die before every rank mapped the segment leave the file; boadrun removes it.
    let mut cmd = Command::new(boadrun());
    cmd.args(["-n", "2", "sh", "-c"])
        .arg(
            "if [ \"$BOAD_RANK\" = 0 ]; then echo job $BOAD_JOB; p=$(\"$CHECK\" shm-path) && : > \"$p\" \
             && ls \"$p\"; fi; kill -9 $$",
        )
        .env("CHECK", env!("CARGO_BIN_EXE_boad-check"));
    let job = run_cmd(cmd, "shm", &[], LIMIT);
    assert_eq!(job.code(), Some(128 + 9), "{}", job.stderr());
    let key = job.key();
    let made = boad_proto::shm::segment_path(u64::from_str_radix(&key, 16).expect("key"), 0);
    assert!(
        job.stdout().contains(&made.display().to_string()),
        "rank 0 did not make {made:?}:\n{}",
        job.stdout()
    );
    assert_eq!(leftover_segments(&key), Vec::<String>::new());
}

// ----- the kernel path (boadrun attaches the eBPF programs; needs root) -----

fn kernel_job(n: usize, launcher: &[&str], args: &[&str], env: &[(&str, &str)]) -> Job {
    let mut env = env.to_vec();
    env.push(("BOAD_STATS", "1"));
    let job = run_on("kernel", n, launcher, args, &env, LIMIT);
    job.assert_ok();
    job
}

/// The matrix with the kernel path forced: results equal the reference (and so the userspace
/// path's, checked against the same reference), every rank took the kernel path (counted: one
/// `BOAD_STATS` line per rank), and the kernel did the folding and cloning. Returns the job, and
/// each rank's summary line.
fn kernel_matrix(
    n: usize,
    launcher: &[&str],
    args: &[&str],
    env: &[(&str, &str)],
) -> Option<(Job, Vec<RankLine>)> {
    if !root() {
        return None;
    }
    let job = kernel_job(n, launcher, args, env);
    let lines = job.assert_every_rank_exact(n);
    let c = kernel_counters(&job);
    // (With 2 ranks a reduction has one contribution: it is folded and passed, none dropped.)
    assert!(c["folded"] > 0 && c["passed"] > 0, "{c:?}");
    assert!(n == 2 || c["dropped"] > 0, "{c:?}");
    assert!(c["clones"] > 0 && c["bcasts"] > 0, "{c:?}");
    assert_eq!(
        c["wrong_source"], 0,
        "a rank's datagram taken for a forgery: {c:?}"
    );
    let all: Vec<usize> = (0..n).collect();
    let stats = rank_stats(&job, &all);
    assert_eq!(
        count(&stats, |l| l.get("collectives_kernel") > 0),
        n,
        "every rank used the kernel path: {stats:#?}"
    );
    Some((job, lines))
}

#[test]
fn kernel_matrix_on_lo_2_ranks() {
    kernel_matrix(2, &[], &["matrix", "--quick"], &[]);
}

#[test]
fn kernel_matrix_on_lo_4_ranks() {
    kernel_matrix(4, &[], &["matrix"], &[]);
}

#[test]
fn kernel_matrix_on_lo_9_ranks() {
    kernel_matrix(9, &[], &["matrix", "--quick"], &[]);
}

#[test]
fn kernel_matrix_on_a_virtual_cluster_of_4_hosts() {
    kernel_matrix(9, &["--hosts", "4"], &["matrix", "--quick"], &[]);
}

/// Loss met by the kernel programs themselves: `args` on 6 ranks over 3 hosts with `percent` of
/// the datagrams each host sends dropped on the wire (`boadrun --wire-loss`: before TC clones a
/// broadcast and before XDP folds a contribution), and `env`. Every result exact, every host lost
/// datagrams, every rank lost some of its own (its `sendto` is refused: `send_failed`) and resent,
/// roots asked again (KNACKs), and XDP saw the resent contributions it had already folded
/// (duplicates). Returns each rank's summary line.
fn kernel_wire_loss(
    percent: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Option<(Job, Vec<RankLine>)> {
    let hosts = 3;
    let launcher = ["--hosts", "3", "--wire-loss", percent];
    let (job, lines) = kernel_matrix(6, &launcher, args, env)?;
    let dropped = wire_loss_dropped(&job, hosts);
    assert_eq!(
        count(&lines, |l| l.get("send_failed") > 0
            && l.get("retransmits") > 0),
        lines.len(),
        "every rank lost datagrams on the wire and resent ({dropped:?}): {lines:#?}"
    );
    // (The liveness threads' datagrams are dropped too, uncounted by the ranks.)
    let refused: u64 = lines.iter().map(|l| l.get("send_failed")).sum();
    assert!(refused <= dropped["dropped"], "{dropped:?}: {lines:#?}");
    let knacks: u64 = lines.iter().map(|l| l.get("kernel_knacks")).sum();
    assert!(
        knacks > 0,
        "{dropped:?} lost on the wire, no KNACK: {lines:#?}"
    );
    let c = kernel_counters(&job);
    assert!(
        c["duplicates"] > 0,
        "contributions resent after a KNACK reach XDP again: {c:?}"
    );
    Some((job, lines))
}

#[test]
fn kernel_matrix_with_loss_on_the_wire_and_at_the_sockets_on_a_virtual_cluster() {
    // 3% lost on the wire (before the kernel programs), and 2% of what reaches a rank's socket
    // dropped there (after them: a RESULT the kernel folded is lost, and must be sent again).
    // (5% on the wire alone takes half as long again on 2 cores.)
    let drop = [("BOAD_DROP_RATE", "0.02")];
    let Some((job, lines)) = kernel_wire_loss("3", &["matrix", "--quick"], &drop) else {
        return;
    };
    assert_eq!(
        count(&lines, |l| l.get("dropped_injected") > 0),
        lines.len(),
        "every rank dropped received datagrams: {lines:#?}"
    );
    let c = kernel_counters(&job);
    assert!(
        c["result_resent"] > 0,
        "XDP re-emitted RESULTs for resent contributions to complete slots: {c:?}"
    );
}

#[test]
fn kernel_random_cases_with_20_percent_loss_on_a_virtual_cluster() {
    kernel_wire_loss("20", &["random", "100"], &[]);
}

#[test]
fn kernel_does_the_work() {
    if !root() {
        return;
    }
    let job = kernel_job(6, &["--hosts", "3"], &["kernel-proof"], &[]);
    assert_eq!(
        job.stdout().matches("kernel proof ok").count(),
        6,
        "{}",
        job.stdout()
    );
    assert!(
        job.stdout().contains("root bcast send calls: median 1"),
        "{}",
        job.stdout()
    );
    let c = kernel_counters(&job);
    // 6 ranks: every reduction folds 5 contributions and passes 1; every bcast becomes 5 clones.
    assert_eq!(c["folded"], c["dropped"] + c["passed"], "{c:?}");
    assert!(c["dropped"] >= 4 * c["passed"], "{c:?}");
    assert_eq!(c["clones"], 5 * c["bcasts"], "{c:?}");
    assert!(
        c["local_clones"] > 0,
        "same-host receivers got clones: {c:?}"
    );
    assert_eq!(c["wrong_source"], 0, "{c:?}");
}

/// A process of the job that is not a rank (rank 0's worker, from a socket of its own, with the job
/// key from its environment) sends CONTRIBs claiming to be every other rank for each next
/// kernel-path allreduce, to every rank's port, from before any rank contributes to it: every
/// result stays exact on every rank, and the kernel counts each forgery.
fn forged_contributions(n: usize, launcher: &[&str]) {
    if !root() {
        return;
    }
    const ROUNDS: u64 = 20;
    let job = kernel_job(n, launcher, &["forge", &ROUNDS.to_string()], &[FORGE_FOLDS]);
    // Rounds 0..ROUNDS-1 forge for the next; n - 1 claims x n ranks x 3 chunks.
    let want = (ROUNDS - 1) * (n as u64 - 1) * n as u64 * 3;
    assert_forgeries_ignored(&job, n, ROUNDS, want, n);
}

#[test]
fn kernel_forged_contributions_change_no_result_on_lo() {
    forged_contributions(4, &[]);
}

#[test]
fn kernel_forged_contributions_change_no_result_on_a_virtual_cluster() {
    // 2 ranks per host: forgeries reach ranks on the forger's host through `lo`, the others
    // through the bridge.
    forged_contributions(6, &["--hosts", "3"]);
}

#[test]
fn kernel_mismatches_are_errors_on_every_rank() {
    if root() {
        mismatch_on("kernel");
    }
}

#[test]
fn kernel_a_rank_exiting_mid_job_fails_the_others() {
    if root() {
        exit_mid_on("kernel", &["--hosts", "2"]);
    }
}
