//! The hierarchical path on mixed virtual clusters (`boadrun --hosts H -n N`, several ranks on some
//! host): shared memory inside each host, UDP or the kernel path (`auto` with the eBPF programs
//! attached) between one leader per host. Every test needs root (network namespaces) and is skipped
//! without it. Jobs run one at a time (2-core machines).

mod common;

use std::process::Command;

use common::{
    assert_forgeries_ignored, assert_mismatches_reported, boadrun, count, kernel_counters,
    leftover_segments, lines_of, rank_lines, rank_stats, ranks_of, root, run_cmd,
    wire_loss_dropped, Job, RankLine, FORGE_FOLDS, LIMIT,
};

/// `boadrun --hosts H <extra> -n N boad-check <args>` with `BOAD_TRANSPORT=transport`, 1 KiB chunks
/// (unless `env` says otherwise) and `env`; killed (by pid) after [`LIMIT`].
fn run(
    transport: &str,
    hosts: usize,
    n: usize,
    extra: &[&str],
    args: &[&str],
    env: &[(&str, &str)],
) -> Job {
    let mut cmd = Command::new(boadrun());
    cmd.args(["--hosts", &hosts.to_string()])
        .args(extra)
        .args(["-n", &n.to_string()])
        .arg(env!("CARGO_BIN_EXE_boad-check"))
        .args(args);
    run_cmd(cmd, transport, env, LIMIT)
}

/// The leaders of `n` ranks on `hosts` hosts: the lowest rank of each host (boadrun places ranks
/// in contiguous blocks, `rank * hosts / n` being rank's host).
fn leaders(hosts: usize, n: usize) -> Vec<usize> {
    (0..n)
        .filter(|&r| r == 0 || r * hosts / n != (r - 1) * hosts / n)
        .collect()
}

/// Every rank ran every case of `args` on the hierarchical path and found none wrong; only the
/// leaders sent datagrams; nothing left in /dev/shm. Returns each rank's summary line.
fn all_exact(hosts: usize, n: usize, args: &[&str], env: &[(&str, &str)]) -> Vec<RankLine> {
    let job = run("shm", hosts, n, &[], args, env);
    let lines = job.assert_every_rank_exact(n);
    assert_eq!(
        count(&lines, |l| l.path == "hier"
            && l.get("collectives_hier") > 0),
        n,
        "every rank took the hierarchical path: {lines:#?}"
    );
    // Only leaders send datagrams: a rank that is not the lowest on its host sends none.
    let senders = common::senders(&lines);
    assert_eq!(
        senders,
        leaders(hosts, n),
        "one leader per host uses the network: {lines:#?}"
    );
    assert_eq!(leftover_segments(&job.key()), Vec::<String>::new());
    lines
}

#[test]
fn matrix_on_3_hosts_of_3_ranks() {
    if root() {
        all_exact(3, 9, &["matrix", "--quick"], &[]);
    }
}

#[test]
fn matrix_on_2_hosts_of_3_and_2_ranks() {
    if root() {
        all_exact(2, 5, &["matrix", "--quick"], &[]);
    }
}

#[test]
fn matrix_on_4_hosts_of_3_2_2_2_ranks() {
    if root() {
        all_exact(4, 9, &["matrix", "--quick"], &[]);
    }
}

#[test]
fn random_cases_with_loss_between_leaders() {
    if !root() {
        return;
    }
    let lines = all_exact(3, 7, &["random", "100"], &[("BOAD_DROP_RATE", "0.05")]);
    // Only leaders receive datagrams, so only they can lose some, and each does, and resends.
    let lost: Vec<usize> = lines
        .iter()
        .filter(|l| l.get("dropped_injected") > 0 && l.get("retransmits") > 0)
        .map(|l| l.rank)
        .collect();
    assert_eq!(
        lost,
        leaders(3, 7),
        "every leader lost datagrams and resent: {lines:#?}"
    );
}

#[test]
fn random_cases_on_2_hosts_of_8_ranks() {
    // Deeper trees inside a host: random roots include non-leaders that forward in the host's
    // broadcast tree without being sent the data back.
    if root() {
        all_exact(2, 16, &["random", "100"], &[]);
    }
}

#[test]
fn sixteen_mib_on_2_hosts() {
    if root() {
        all_exact(2, 4, &["big"], &[("BOAD_CHUNK_BYTES", "")]);
    }
}

/// What shows that the leaders' level of an `auto` job of `n` ranks took the kernel path (`auto`
/// falls back to UDP silently for the ranks when the programs cannot be attached): the kernel
/// folded and cloned, and `lines` (at most one per rank, each with `collectives_kernel=` and
/// `datagrams_sent=`; all `n` unless a test says why not) say that each leader among them
/// completed collectives on the kernel path, and no other rank did or sent a datagram.
fn assert_leaders_on_kernel(job: &Job, hosts: usize, n: usize, lines: &[RankLine]) {
    let c = kernel_counters(job);
    assert!(c["folded"] > 0 && c["passed"] > 0, "{c:?}");
    assert!(c["clones"] > 0 && c["bcasts"] > 0, "{c:?}");
    let present = ranks_of(lines);
    let want: Vec<usize> = leaders(hosts, n)
        .into_iter()
        .filter(|r| present.contains(r))
        .collect();
    assert!(!want.is_empty(), "no leader's line: {lines:#?}");
    let kernel: Vec<usize> = lines
        .iter()
        .filter(|l| l.get("collectives_kernel") > 0)
        .map(|l| l.rank)
        .collect();
    assert_eq!(
        kernel, want,
        "every leader, and only leaders, used the kernel: {lines:#?}"
    );
    let silent: Vec<usize> = lines
        .iter()
        .filter(|l| l.get("datagrams_sent") == 0)
        .map(|l| l.rank)
        .collect();
    let others: Vec<usize> = present.into_iter().filter(|r| !want.contains(r)).collect();
    assert_eq!(silent, others, "only leaders use the network: {lines:#?}");
}

/// `args` on `hosts` hosts of `n` ranks with `auto` and the kernel path attached (and `launcher`
/// options): every rank exact, the kernel folded and cloned, every leader's network level went
/// through it, and no other rank sent a datagram. Returns the job and each rank's summary line.
fn kernel_between_leaders(
    hosts: usize,
    n: usize,
    launcher: &[&str],
    args: &[&str],
    env: &[(&str, &str)],
) -> (Job, Vec<RankLine>) {
    let mut env = env.to_vec();
    env.push(("BOAD_STATS", "1"));
    let job = run("auto", hosts, n, launcher, args, &env);
    let lines = job.assert_every_rank_exact(n);
    let c = kernel_counters(&job);
    assert!(hosts == 2 || c["dropped"] > 0, "{c:?}");
    assert_eq!(
        c["wrong_source"], 0,
        "a leader's datagram taken for a forgery: {c:?}"
    );
    let all: Vec<usize> = (0..n).collect();
    let stats = rank_stats(&job, &all);
    assert_eq!(
        count(&stats, |l| l.path == "hier"),
        n,
        "every rank ran hierarchical: {stats:#?}"
    );
    assert_leaders_on_kernel(&job, hosts, n, &stats);
    assert_eq!(
        count(&lines, |l| l.path == "hier-kernel"),
        n,
        "the last collective took hier-kernel on every rank: {lines:#?}"
    );
    assert_eq!(leftover_segments(&job.key()), Vec::<String>::new());
    (job, lines)
}

/// Rank 0's worker, from a socket of its own with the job key, sends CONTRIBs claiming to be each
/// other host's leader (`LEADERS`, numbered by host) for each next allreduce to every leader's port:
/// every result stays exact, and the kernel counts each forgery.
#[test]
fn forged_contributions_between_leaders_change_no_result() {
    if !root() {
        return;
    }
    const ROUNDS: u64 = 20;
    let (hosts, n) = (3, 6);
    let job = run(
        "auto",
        hosts,
        n,
        &[],
        &["forge", &ROUNDS.to_string()],
        &[("BOAD_STATS", "1"), FORGE_FOLDS],
    );
    // hosts - 1 claims x hosts leaders x 3 chunks, for rounds 1..ROUNDS.
    let want = (ROUNDS - 1) * (hosts as u64 - 1) * hosts as u64 * 3;
    assert_forgeries_ignored(&job, n, ROUNDS, want, hosts);
    assert_eq!(leftover_segments(&job.key()), Vec::<String>::new());
}

#[test]
fn kernel_between_leaders_matrix_on_3_hosts_of_3_ranks() {
    if root() {
        kernel_between_leaders(3, 9, &[], &["matrix", "--quick"], &[]);
    }
}

#[test]
fn kernel_between_leaders_matrix_on_4_hosts_of_3_2_2_2_ranks() {
    // Uneven hosts: the leaders' allgather broadcasts slabs padded to the largest host.
    if root() {
        kernel_between_leaders(4, 9, &[], &["matrix", "--quick"], &[]);
    }
}

#[test]
fn kernel_between_leaders_random_cases_with_loss() {
    // Lost contributions and clones between leaders, on the wire before XDP and TC see them (5% of
    // what each host sends), and results lost at a leader's socket after the fold (5% of what it
    // receives): KNACKs, resends and re-emitted results, on the leaders' communicator.
    if !root() {
        return;
    }
    let (hosts, n) = (3, 7);
    let (job, lines) = kernel_between_leaders(
        hosts,
        n,
        &["--wire-loss", "5"],
        &["random", "100"],
        &[("BOAD_DROP_RATE", "0.05")],
    );
    let dropped = wire_loss_dropped(&job, hosts);
    let leaders = leaders(hosts, n);
    // Lost on the wire (a refused `sendto`), lost at its socket, and resent: every leader, and
    // no other rank (they send nothing).
    let recovered: Vec<usize> = lines
        .iter()
        .filter(|l| {
            l.get("send_failed") > 0 && l.get("dropped_injected") > 0 && l.get("retransmits") > 0
        })
        .map(|l| l.rank)
        .collect();
    assert_eq!(
        recovered, leaders,
        "every leader lost datagrams and resent ({dropped:?}): {lines:#?}"
    );
    let knacks: u64 = lines.iter().map(|l| l.get("kernel_knacks")).sum();
    assert!(knacks > 0, "no KNACK: {lines:#?}");
    let c = kernel_counters(&job);
    assert!(
        c["duplicates"] > 0,
        "contributions resent after a KNACK reach XDP again: {c:?}"
    );
}

#[test]
fn selection_and_reported_path() {
    if !root() {
        return;
    }
    // `shm` over several hosts is hierarchical.
    run("shm", 3, 9, &[], &["path", "hier"], &[]).assert_ok();
    // `auto` without the kernel path too (an invalid fold list makes boadrun fall back, saying so).
    let job = run(
        "auto",
        3,
        9,
        &[],
        &["path", "hier"],
        &[("BOAD_KERNEL_FOLDS", "no-such-op")],
    );
    job.assert_ok();
    assert_eq!(fallbacks(&job), 1, "{}", job.stderr());
    // `auto` with the kernel path attached: the leaders use it (a 3-element allreduce fits), and
    // `kernel` keeps every rank on it.
    let folds = [("BOAD_KERNEL_FOLDS", "sum:u32")];
    run("auto", 3, 9, &[], &["path", "hier-kernel"], &folds).assert_ok();
    run("kernel", 3, 9, &[], &["path", "kernel"], &folds).assert_ok();
    // `udp` stays flat, and so does `auto` with one rank per host.
    run("udp", 3, 9, &[], &["path", "udp"], &[]).assert_ok();
    let job = run(
        "auto",
        3,
        3,
        &[],
        &["path", "udp"],
        &[("BOAD_KERNEL_FOLDS", "no-such-op")],
    );
    job.assert_ok();
    assert_eq!(fallbacks(&job), 1, "{}", job.stderr());
}

/// How many times boadrun said the kernel path was unavailable.
fn fallbacks(job: &Job) -> usize {
    job.stderr()
        .lines()
        .filter(|l| l.starts_with("boadrun: kernel path unavailable"))
        .count()
}

/// Mismatched calls by the last rank on `hosts` hosts of `n` ranks with `BOAD_TRANSPORT=transport`:
/// an error on every rank. With `auto`, the leaders' level took the kernel path.
fn mismatches(transport: &str, hosts: usize, n: usize) {
    let job = run(
        transport,
        hosts,
        n,
        &[],
        &["mismatch"],
        &[("BOAD_STATS", "1")],
    );
    job.assert_ok();
    let out = job.stdout();
    let all: Vec<usize> = (0..n).collect();
    let done = rank_lines(&out, ": mismatch done; ", &all);
    let path = if transport == "auto" {
        assert_leaders_on_kernel(&job, hosts, n, &done);
        "hier-kernel"
    } else {
        "hier"
    };
    assert_eq!(
        count(&done, |l| l.path == path),
        n,
        "every rank's last collective took {path}: {done:#?}"
    );
    assert_mismatches_reported(&out, n, true);
}

#[test]
fn mismatched_calls_are_errors_on_every_rank() {
    if root() {
        // The odd rank (8) is not a leader: the other hosts hear of it through its leader (6).
        mismatches("shm", 3, 9);
    }
}

#[test]
fn mismatched_calls_by_a_leader_are_errors_on_every_rank() {
    if root() {
        // 5 ranks on 3 hosts: the odd rank (4) is alone on its host, a leader.
        mismatches("shm", 3, 5);
    }
}

#[test]
fn mismatched_calls_by_a_leader_on_the_kernel_path_are_errors_on_every_rank() {
    if root() {
        // As above with the kernel path between the leaders: XDP passes the odd contribution
        // unfolded, and the root leader reports it.
        mismatches("auto", 3, 5);
    }
}

/// Rank `victim` is SIGKILLed in allreduces of `elems` i32 with `BOAD_TRANSPORT=transport`: every
/// other rank fails promptly with an error naming it (in the collective it was killed in, or in
/// the one before if that still had data in flight from it), boadrun exits 137, and nothing is
/// left in /dev/shm.
fn killed_mid_collective(transport: &str, victim: usize, elems: usize) {
    let v = victim.to_string();
    let e = elems.to_string();
    let job = run(
        transport,
        3,
        9,
        &[],
        &["kill-mid", &v, &e],
        &[
            ("BOAD_TIMEOUT_MS", "60000"),
            ("BOAD_KERNEL_FOLDS", "sum:i32"),
            ("BOAD_STATS", "1"),
        ],
    );
    let err = job.stderr();
    assert_eq!(job.out.status.code(), Some(128 + 9), "{err}");
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with(&format!("boadrun: rank {victim} (pid "))
                && l.contains("SIGKILL"))
            .count(),
        1,
        "boadrun reports rank {victim}:\n{err}"
    );
    // The ranks' own errors (not boadrun's line): each other rank fails once, naming the victim,
    // in a later allreduce or in the first, if that still had data in flight from it.
    let named = format!("rank {victim} exited with status 137");
    let first = lines_of(&err, ": first allreduce failed: ");
    let mut failed = lines_of(&err, ": error as expected: ");
    failed.extend(first.iter().cloned());
    failed.sort_by_key(|l| l.rank);
    let others: Vec<usize> = (0..9).filter(|&r| r != victim).collect();
    assert_eq!(ranks_of(&failed), others, "{err}");
    assert_eq!(
        count(&failed, |l| l.line.contains(&named)),
        8,
        "every other rank names rank {victim}:\n{err}"
    );
    // The first allreduce took the path this test is about on every rank that finished it (the
    // victim among them); with `auto`, the leaders' level ran in the kernel.
    let finished: Vec<usize> = (0..9).filter(|r| !ranks_of(&first).contains(r)).collect();
    let before = rank_lines(&job.stdout(), ": before: ", &finished);
    let path = if transport == "auto" {
        assert_leaders_on_kernel(&job, 3, 9, &before);
        "hier-kernel"
    } else {
        "hier"
    };
    assert_eq!(
        count(&before, |l| l.path == path),
        finished.len(),
        "the first allreduce took {path}: {before:#?}"
    );
    assert!(job.secs < 30.0, "took {:.1} s", job.secs);
    assert_eq!(leftover_segments(&job.key()), Vec::<String>::new());
}

#[test]
fn a_rank_killed_mid_collective_fails_the_others_and_leaves_no_segment() {
    if root() {
        killed_mid_collective("shm", 4, 1 << 20);
    }
}

#[test]
fn a_leader_killed_mid_collective_fails_the_others_and_leaves_no_segment() {
    if root() {
        killed_mid_collective("shm", 3, 1 << 20);
    }
}

#[test]
fn a_leader_killed_mid_kernel_collective_fails_the_others_and_leaves_no_segment() {
    // 16-element allreduces: the leaders' level runs in the kernel (XDP fold, TC clone).
    if root() {
        killed_mid_collective("auto", 3, 16);
    }
}

#[test]
fn a_rank_exiting_mid_job_fails_the_others_naming_it() {
    if !root() {
        return;
    }
    let job = run(
        "shm",
        2,
        5,
        &[],
        &["exit-mid", "4"],
        &[("BOAD_TIMEOUT_MS", "60000")],
    );
    let err = job.stderr();
    assert_eq!(job.out.status.code(), Some(3), "{err}");
    let before = rank_lines(&job.stdout(), ": before: ", &[0, 1, 2, 3, 4]);
    assert_eq!(count(&before, |l| l.path == "hier"), 5, "{before:#?}");
    let lines = rank_lines(&err, "error as expected", &[0, 1, 2, 3]);
    assert_eq!(
        count(&lines, |l| l.line.contains("rank 4 exited with status 3")),
        4,
        "every other rank names rank 4:\n{err}"
    );
    assert!(job.secs < 30.0, "took {:.1} s", job.secs);
}

/// A rank (not a leader) computes outside boad for 3.5 s between two allreduces, and with the
/// kernel path between the leaders, a leader (rank 2) does: the others wait, warning, and all are
/// exact.
#[test]
fn a_rank_busy_outside_boad_is_waited_for() {
    if !root() {
        return;
    }
    for (transport, busy) in [("shm", "1"), ("auto", "2")] {
        let job = run(
            transport,
            2,
            4,
            &[],
            &["busy", busy, "3500"],
            &[("BOAD_TIMEOUT_MS", "1000"), ("BOAD_STATS", "1")],
        );
        job.assert_ok();
        let (out, err) = (job.stdout(), job.stderr());
        let done = rank_lines(&out, ": busy ok; ", &[0, 1, 2, 3]);
        let path = if transport == "auto" {
            assert_leaders_on_kernel(&job, 2, 4, &done);
            "hier-kernel"
        } else {
            "hier"
        };
        assert_eq!(count(&done, |l| l.path == path), 4, "{done:#?}");
        assert!(job.secs >= 3.5, "not busy: {:.1} s", job.secs);
        let warnings = err
            .lines()
            .filter(|l| {
                l.contains(&format!("still waiting for rank {busy}")) && l.contains("is alive")
            })
            .count();
        assert!(
            warnings >= 2,
            "{transport}: {warnings} warnings naming rank {busy}:\n{err}"
        );
    }
}

#[test]
fn a_silent_rank_times_out_naming_it() {
    if !root() {
        return;
    }
    // Rank 1 is not a leader: its leader (0) waits for it on shared memory while the other leaders
    // wait for rank 0 over UDP; rank 0 keeps answering them, so only rank 1 is reported silent.
    let job = run(
        "shm",
        3,
        9,
        &["--kill-grace-ms", "500"],
        &["freeze", "1"],
        &[("BOAD_TIMEOUT_MS", "1500")],
    );
    let err = job.stderr();
    assert_ne!(job.out.status.code(), Some(0), "{err}");
    let all: Vec<usize> = (0..9).collect();
    let before = rank_lines(&job.stdout(), ": before: ", &all);
    assert_eq!(count(&before, |l| l.path == "hier"), 9, "{before:#?}");
    let others: Vec<usize> = (0..9).filter(|&r| r != 1).collect();
    let lines = rank_lines(&err, "error as expected", &others);
    assert_eq!(
        count(&lines, |l| l.line.contains("rank 1 sent nothing")),
        8,
        "{err}"
    );
    assert!(job.secs < 25.0, "took {:.1} s", job.secs);
}
