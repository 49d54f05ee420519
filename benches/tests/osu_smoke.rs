//! Smoke test of the benchmark worker: `boadrun -n 3 boad-osu` over UDP (boad and both baselines)
//! and shared memory, a tiny matrix, and sane records out.

use std::path::PathBuf;
use std::process::Command;

use boad_benches::record::Record;

fn target_dir() -> PathBuf {
    // .../target/<profile>/deps/osu_smoke-<hash>
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf()
}

/// boadrun, built (or found up to date) once per test run: a stale one would test old code.
fn boadrun() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", "boadrun"]);
        if target_dir().ends_with("release") {
            cmd.arg("--release");
        }
        assert!(cmd.status().expect("cargo build -p boadrun").success());
    });
    target_dir().join("boadrun")
}

fn run(transport: &str, impls: &str, extra: &[&str]) -> Vec<Record> {
    let out = Command::new(boadrun())
        .args(["-n", "3", "--transport", transport, "--timeout-ms", "20000"])
        .arg(env!("CARGO_BIN_EXE_boad-osu"))
        .args(["--impls", impls, "--asked", transport, "--sizes", "4,4096"])
        .args(["--iters", "10", "--warmup", "2"])
        .args(extra)
        .output()
        .expect("run boadrun");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn check_latency(recs: &[Record], implementation: &str) {
    let lat: Vec<&Record> = recs
        .iter()
        .filter(|r| r.bench == "latency" && r.implementation == implementation)
        .collect();
    assert_eq!(lat.len(), 8, "4 collectives x 2 sizes of {implementation}");
    for r in lat {
        let (avg, p50, p99) = (r.avg_us.unwrap(), r.p50_us.unwrap(), r.p99_us.unwrap());
        assert!(avg > 0.0 && p50 > 0.0 && p50 <= p99, "{r:?}");
        assert_eq!((r.ranks, r.hosts, r.iters), (3, 1, 10), "{r:?}");
        assert!(r.note.is_none(), "{r:?}");
    }
}

#[test]
fn udp_with_baselines_and_shm() {
    // System calls are counted with strace here (the fallback; the eBPF counter has its own test
    // below): without strace the test fails (or, with BOAD_ALLOW_SKIP, records the skip), rather
    // than passing without the check.
    let have_strace = boad_test_support::require(&[boad_test_support::Need::Program("strace")]);
    if !have_strace {
        return;
    }
    let mut extra = vec![
        "--tput-colls",
        "bcast,reduce,allreduce",
        "--tput-iters",
        "50",
        "--cpu-colls",
        "bcast,reduce",
        "--cpu-iters",
        "50",
    ];
    extra.extend(["--syscall-colls", "bcast,reduce", "--syscall-iters", "10"]);
    extra.extend(["--syscall-counter", "strace"]);
    let recs = run("udp", "boad,naive,epoll", &extra);
    for imp in ["boad-udp", "naive", "epoll"] {
        check_latency(&recs, imp);
        let of = |bench: &str| -> Vec<&Record> {
            recs.iter()
                .filter(|r| r.bench == bench && r.implementation == imp)
                .collect()
        };
        let tput = of("throughput");
        let colls: Vec<&str> = tput.iter().map(|r| r.coll.as_str()).collect();
        assert_eq!(colls, ["bcast", "reduce", "allreduce"], "{imp}: {tput:?}");
        for r in tput {
            assert!(r.ops_per_s.is_some_and(|v| v > 0.0), "{r:?}");
        }
        // One CPU record per collective asked for, each with both numbers.
        let cpu = of("cpu");
        let colls: Vec<&str> = cpu.iter().map(|r| r.coll.as_str()).collect();
        assert_eq!(colls, ["bcast", "reduce"], "{imp}: {cpu:?}");
        for r in cpu {
            assert!(
                r.cpu_us_root.is_some_and(|v| v > 0.0) && r.cpu_us_other.is_some_and(|v| v >= 0.0),
                "{r:?}"
            );
        }
        // One system-call record per collective asked for, each with both counts. The rank that
        // sends must make calls: the root of a bcast, the last rank (a contributor) of a reduce.
        // The rank that only receives may make none between the markers: what its peers sent
        // ahead can all have been read (and acknowledged) before, while it left the barrier.
        let sys = of("syscalls");
        let colls: Vec<&str> = sys.iter().map(|r| r.coll.as_str()).collect();
        assert_eq!(colls, ["bcast", "reduce"], "{imp}: {sys:?}");
        for r in sys {
            assert_eq!(r.syscall_counter.as_deref(), Some("strace"), "{r:?}");
            let (sender, receiver) = match r.coll.as_str() {
                "bcast" => (r.syscalls_root, r.syscalls_receiver),
                _ => (r.syscalls_receiver, r.syscalls_root),
            };
            assert!(
                sender.is_some_and(|v| v > 0.0) && receiver.is_some_and(|v| v >= 0.0),
                "{r:?}"
            );
        }
    }
    // The naive root of a bcast makes one sendto per receiver (2), a receiver one recvfrom.
    let naive = recs
        .iter()
        .find(|r| r.bench == "syscalls" && r.implementation == "naive" && r.coll == "bcast")
        .expect("naive bcast syscalls");
    assert_eq!(naive.syscalls_root, Some(2.0), "{naive:?}");
    assert_eq!(naive.syscalls_receiver, Some(1.0), "{naive:?}");
    let shm = run("shm", "boad", &[]);
    check_latency(&shm, "boad-shm");
    assert_eq!(shm.len(), 8, "latency only: {shm:?}");
    assert!(shm.iter().all(|r| r.path.as_deref() == Some("shm")));
}

/// The system call pass with the eBPF counter (root; it attaches a tracepoint program, so run it
/// under the kernel lock on a shared machine): counts, context switches, CPU and the machine's CPU
/// in every record, and the naive bcast's known calls.
#[test]
fn syscall_pass_with_the_ebpf_counter() {
    if !boad_test_support::require_root() {
        return;
    }
    let extra = [
        "--syscall-colls",
        "bcast,reduce",
        "--syscall-iters",
        "300",
        "--syscall-counter",
        "ebpf",
    ];
    let recs = run("udp", "boad,naive", &extra);
    let sys: Vec<&Record> = recs.iter().filter(|r| r.bench == "syscalls").collect();
    assert_eq!(sys.len(), 4, "{sys:?}");
    for r in &sys {
        assert_eq!(r.syscall_counter.as_deref(), Some("ebpf"), "{r:?}");
        let (sender, receiver) = match r.coll.as_str() {
            "bcast" => (r.syscalls_root, r.syscalls_receiver),
            _ => (r.syscalls_receiver, r.syscalls_root),
        };
        assert!(sender.is_some_and(|v| v > 0.0), "{r:?}");
        assert!(receiver.is_some_and(|v| v >= 0.0), "{r:?}");
        assert!(r.syscalls_other.is_some_and(|v| v > 0.0), "{r:?}");
        assert!(r.ctxsw_root.is_some_and(|v| v >= 0.0), "{r:?}");
        assert!(r.ctxsw_other.is_some_and(|v| v >= 0.0), "{r:?}");
        assert!(r.cpu_us_ranks.is_some_and(|v| v > 0.0), "{r:?}");
        // The machine's CPU, unless the loop was too short for /proc/stat's ticks (said so).
        let coarse = r
            .note
            .as_deref()
            .is_some_and(|n| n.contains("no machine CPU"));
        assert!(
            coarse || r.machine_cpu_us.is_some_and(|v| v >= 0.0),
            "{r:?}"
        );
        assert_eq!(r.softirq_us.is_some(), r.machine_cpu_us.is_some(), "{r:?}");
    }
    // The naive root of a bcast makes one sendto per receiver (2), a receiver one recvfrom; the
    // counter also counts each rank's helper threads (boad's), a few calls over the loop.
    let naive = sys
        .iter()
        .find(|r| r.implementation == "naive" && r.coll == "bcast")
        .expect("naive bcast");
    let (root, recv) = (
        naive.syscalls_root.unwrap(),
        naive.syscalls_receiver.unwrap(),
    );
    assert!((2.0..2.2).contains(&root), "{naive:?}");
    assert!((1.0..1.2).contains(&recv), "{naive:?}");
}
