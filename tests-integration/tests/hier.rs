//! The hierarchical path on mixed virtual clusters (`boadrun --hosts H -n N`, several ranks on some
//! host): shared memory inside each host, UDP or the kernel path (`auto` with the eBPF programs
//! attached) between one leader per host. Every test needs root (network namespaces) and is skipped
//! without it. Jobs run one at a time (2-core machines).

mod common;

use std::process::Command;

use common::{
    assert_forgeries_ignored, boadrun, kernel_counters, leftover_segments, root, run_cmd, Job,
    FORGE_FOLDS, LIMIT,
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

/// Every rank ran every case of `args` and found none wrong; nothing left in /dev/shm.
fn all_exact(hosts: usize, n: usize, args: &[&str], env: &[(&str, &str)]) {
    let job = run("shm", hosts, n, &[], args, env);
    job.assert_every_rank_exact(n);
    let out = job.stdout();
    // Only leaders send datagrams: a rank that is not the lowest on its host sends none.
    let senders = out
        .lines()
        .filter(|l| l.contains(" 0 wrong") && !l.contains("datagrams sent 0 "))
        .count();
    assert_eq!(
        senders, hosts,
        "one leader per host uses the network:\n{out}"
    );
    assert_eq!(leftover_segments(&job.key()), Vec::<String>::new());
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
    if root() {
        all_exact(3, 7, &["random", "100"], &[("BOAD_DROP_RATE", "0.05")]);
    }
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

/// `args` on `hosts` hosts of `n` ranks with `auto` and the kernel path attached: every rank exact,
/// the kernel folded and cloned, every leader's network level went through it, and no other rank
/// sent a datagram.
fn kernel_between_leaders(hosts: usize, n: usize, args: &[&str], env: &[(&str, &str)]) {
    let mut env = env.to_vec();
    env.push(("BOAD_STATS", "1"));
    let job = run("auto", hosts, n, &[], args, &env);
    job.assert_every_rank_exact(n);
    let c = kernel_counters(&job);
    assert!(c["folded"] > 0 && c["passed"] > 0, "{c:?}");
    assert!(hosts == 2 || c["dropped"] > 0, "{c:?}");
    assert!(c["clones"] > 0 && c["bcasts"] > 0, "{c:?}");
    assert_eq!(
        c["wrong_source"], 0,
        "a leader's datagram taken for a forgery: {c:?}"
    );
    let err = job.stderr();
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("boad stats: rank") && l.contains("path=hier "))
        .collect();
    assert_eq!(lines.len(), n, "{err}");
    let leaders = lines
        .iter()
        .filter(|l| !l.contains("collectives_kernel=0 "))
        .count();
    assert_eq!(
        leaders, hosts,
        "every leader, and only leaders, used the kernel:\n{err}"
    );
    let silent = lines
        .iter()
        .filter(|l| l.contains("collectives_kernel=0 ") && l.contains(" datagrams_sent=0 "))
        .count();
    assert_eq!(silent, n - hosts, "only leaders use the network:\n{err}");
    assert_eq!(leftover_segments(&job.key()), Vec::<String>::new());
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
        kernel_between_leaders(3, 9, &["matrix", "--quick"], &[]);
    }
}

#[test]
fn kernel_between_leaders_matrix_on_4_hosts_of_3_2_2_2_ranks() {
    // Uneven hosts: the leaders' allgather broadcasts slabs padded to the largest host.
    if root() {
        kernel_between_leaders(4, 9, &["matrix", "--quick"], &[]);
    }
}

#[test]
fn kernel_between_leaders_random_cases_with_loss() {
    // Lost contributions, results and clones between leaders: KNACKs, resends and the userspace
    // fold fallback, on the leaders' communicator.
    if root() {
        kernel_between_leaders(3, 7, &["random", "100"], &[("BOAD_DROP_RATE", "0.05")]);
    }
}

#[test]
fn selection_and_reported_path() {
    if !root() {
        return;
    }
    // `shm` over several hosts is hierarchical.
    run("shm", 3, 9, &[], &["path", "hier"], &[]).assert_ok();
    // `auto` without the kernel path too (an invalid fold list makes boadrun fall back).
    run(
        "auto",
        3,
        9,
        &[],
        &["path", "hier"],
        &[("BOAD_KERNEL_FOLDS", "no-such-op")],
    )
    .assert_ok();
    // `auto` with the kernel path attached: the leaders use it (a 3-element allreduce fits), and
    // `kernel` keeps every rank on it.
    let folds = [("BOAD_KERNEL_FOLDS", "sum:u32")];
    run("auto", 3, 9, &[], &["path", "hier-kernel"], &folds).assert_ok();
    run("kernel", 3, 9, &[], &["path", "kernel"], &folds).assert_ok();
    // `udp` stays flat, and so does `auto` with one rank per host.
    run("udp", 3, 9, &[], &["path", "udp"], &[]).assert_ok();
    run(
        "auto",
        3,
        3,
        &[],
        &["path", "udp"],
        &[("BOAD_KERNEL_FOLDS", "no-such-op")],
    )
    .assert_ok();
}

/// Mismatched calls by the last rank on `hosts` hosts of `n` ranks with `BOAD_TRANSPORT=transport`:
/// an error on every rank.
fn mismatches(transport: &str, hosts: usize, n: usize) {
    let job = run(transport, hosts, n, &[], &["mismatch"], &[]);
    job.assert_ok();
    let out = job.stdout();
    for what in [
        "count mismatch",
        "dtype mismatch",
        "op mismatch",
        "root mismatch",
        "float with band",
        "local error",
    ] {
        let got = out.matches(&format!("{what}: error as expected")).count();
        assert_eq!(got, n, "every rank reports the {what}:\n{out}");
    }
    // Whichever side sees the other's call first reports both (on the kernel path the odd leader
    // may hear the others' call before they see its unfolded contribution).
    let odd = n - 1;
    let seen_by_others = format!(
        "this rank called allreduce(count=10, dtype=i32, op=sum) but rank {odd} called allreduce(count=11"
    );
    let seen_by_odd = format!(
        "rank {odd}: collective #0: this rank called allreduce(count=11, dtype=i32, op=sum) but rank "
    );
    assert!(
        out.contains(&seen_by_others) || out.contains(&seen_by_odd),
        "{out}"
    );
    assert!(out.contains("rejected by the binding"), "{out}");
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
        ],
    );
    let err = job.stderr();
    assert_eq!(job.out.status.code(), Some(128 + 9), "{err}");
    assert!(
        err.contains(&format!("rank {victim} (pid")) && err.contains("SIGKILL"),
        "{err}"
    );
    let named = format!("rank {victim} exited with status 137");
    for r in (0..9).filter(|&r| r != victim) {
        let line = err
            .lines()
            .find(|l| {
                l.starts_with(&format!("rank {r}: "))
                    && (l.contains("error as expected") || l.contains("first allreduce failed"))
            })
            .unwrap_or_else(|| panic!("rank {r} reported no error:\n{err}"));
        assert!(
            line.contains(&named),
            "rank {r} does not name the victim: {line}"
        );
    }
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
    assert_eq!(err.matches("error as expected").count(), 4, "{err}");
    assert_eq!(
        err.matches("rank 4 exited with status 3").count(),
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
            &[("BOAD_TIMEOUT_MS", "1000")],
        );
        job.assert_ok();
        let (out, err) = (job.stdout(), job.stderr());
        assert_eq!(out.matches("busy ok").count(), 4, "{out}\n{err}");
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
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("error as expected"))
        .collect();
    assert_eq!(lines.len(), 8, "{err}");
    for l in lines {
        assert!(l.contains("rank 1 sent nothing"), "{err}");
    }
    assert!(job.secs < 25.0, "took {:.1} s", job.secs);
}
