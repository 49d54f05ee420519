//! The kernel service (`boadd`): started as root on a socket of a fresh directory, it serves the
//! kernel path to jobs of other users (`nobody`, `daemon`) run through `runuser`: the kernel
//! counters show their contributions folded, a job starts about as fast as on UDP, a registration
//! of a socket the user does not own is refused, two users' jobs at once are exact, and killing a
//! job frees what it held. A job another launcher started (env://: four processes started by hand,
//! as `nobody`) takes the kernel path through the service too, registered by its rank 0, and frees
//! it when it ends; without the service it runs on UDP and says so once. Everything the test
//! starts is stopped, and the directory removed, on every exit path (a panic included). Needs
//! root; attaches to `lo`: run under the kernel lock.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use boad_test_support::shared_bins::SharedBins;
use common::*;

/// How long the service may take to load its programs on a busy machine.
const LOAD_WAIT: Duration = Duration::from_secs(180);

fn check_bin() -> &'static str {
    env!("CARGO_BIN_EXE_boad-check")
}

/// A running service on a fresh directory; stopping it (drop) removes the directory.
struct Service {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    /// boadrun and boad-check where the jobs' users may run them, wherever the checkout is.
    bins: SharedBins,
}

impl Service {
    fn start() -> Service {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = PathBuf::from(format!("/tmp/boadd-test-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir).expect("service directory");
        let socket = dir.join("run").join("boadd.sock");
        let log = std::fs::File::create(dir.join("log")).expect("log");
        let child = Command::new(boadd())
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("boadd");
        let bins = SharedBins::new(&[boadrun().as_path(), Path::new(check_bin())])
            .expect("copy the binaries");
        let mut service = Service {
            child,
            dir,
            socket,
            bins,
        };
        let start = Instant::now();
        while !service.socket.exists() {
            if let Ok(Some(status)) = service.child.try_wait() {
                panic!(
                    "boadd ended ({status}) before listening:\n{}",
                    service.log()
                );
            }
            assert!(
                start.elapsed() < LOAD_WAIT,
                "boadd did not listen within {LOAD_WAIT:?}:\n{}",
                service.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        service
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn status(&self) -> boad_proto::service::Status {
        boad_proto::service::status_at(&self.socket).expect("STATUS")
    }

    /// Waits until the service holds `jobs` jobs.
    fn wait_jobs(&self, jobs: usize, limit: Duration) -> boad_proto::service::Status {
        let start = Instant::now();
        loop {
            let s = self.status();
            if s.jobs == jobs {
                return s;
            }
            assert!(
                start.elapsed() < limit,
                "the service still holds {s:?}, want {jobs} jobs"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits for the end: the socket must be gone and `lo` free.
    fn stop(mut self) {
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait boadd");
        assert!(status.success(), "boadd: {status}\n{}", self.log());
        assert!(!self.socket.exists(), "boadd left its socket behind");
        assert!(!lo_has_xdp(), "lo keeps an XDP program after boadd ended");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn lo_has_xdp() -> bool {
    Command::new("ip")
        .args(["-d", "link", "show", "dev", "lo"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("xdp"))
}

/// `runuser -u USER -- env BOAD_SERVICE_SOCKET=... BOAD_STATS=1 boadrun -n N --transport T ARGS`,
/// a job of `service`'s.
fn job_as(user: &str, service: &Service, n: usize, transport: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", user, "--", "env"])
        .arg(format!("BOAD_SERVICE_SOCKET={}", service.socket.display()))
        .arg("BOAD_STATS=1")
        .arg("BOAD_CHUNK_BYTES=1024")
        .arg(service.bins.path("boadrun"))
        .args(["-n", &n.to_string(), "--transport", transport])
        .arg(service.bins.path("boad-check"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: the test can kill runuser and boadrun together.
        .process_group(0);
    cmd
}

/// Waits for a job (at most LIMIT) and checks it succeeded: (stdout, stderr, seconds).
fn finish(child: Child, what: &str) -> (String, String, f64) {
    let start = Instant::now();
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(LIMIT) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            // SAFETY: kill only signals the job's own process group.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            panic!("{what} did not finish within {LIMIT:?}");
        }
    };
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{what}: {}\n{o}\n{e}", out.status);
    (o, e, start.elapsed().as_secs_f64())
}

/// The value of `name=` in boadrun's kernel stats line of `stderr`.
fn kernel_counter(stderr: &str, name: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("boadrun stats: kernel "))
        .unwrap_or_else(|| panic!("no kernel stats line:\n{stderr}"));
    assert!(line.ends_with(" service=boadd"), "{line}");
    line.split(' ')
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

/// A free TCP port on 127.0.0.1 (for an env:// job's store).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("address").port()
}

/// An env:// job of `n` processes of `service`'s copy of boad-check, started by hand as `user` (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
/// `MASTER_ADDR`, `MASTER_PORT`, the secret in `BOAD_SECRET`), with `BOAD_SERVICE_SOCKET=socket`
/// and `BOAD_TRANSPORT=transport`, running `boad-check ARGS`. Waits for all (at most LIMIT, then
/// kills them) and returns each rank's (exit code, stdout, stderr).
fn env_job_as(
    user: &str,
    service: &Service,
    socket: &Path,
    n: usize,
    transport: &str,
    args: &[&str],
) -> Vec<(Option<i32>, String, String)> {
    let port = free_port().to_string();
    let secret = format!("{:032x}{:032x}", rand_secret(), rand_secret());
    let children: Vec<Child> = (0..n)
        .map(|r| {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", user, "--"])
                .arg(service.bins.path("boad-check"))
                .args(args);
            for v in [
                "BOAD_SIZE",
                "BOAD_RANK",
                "BOAD_RENDEZVOUS_FD",
                "BOAD_HOST_ID",
                "BOAD_JOB",
                "BOAD_BIND_ADDR",
                "BOAD_SECRET_FILE",
                "PMI_FD",
                "PMI_SIZE",
                "SLURM_STEP_NUM_TASKS",
                "OMPI_COMM_WORLD_SIZE",
            ] {
                cmd.env_remove(v);
            }
            cmd.env("RANK", r.to_string())
                .env("WORLD_SIZE", n.to_string())
                .env("LOCAL_RANK", r.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .env("BOAD_SECRET", &secret)
                .env("BOAD_SERVICE_SOCKET", socket)
                .env("BOAD_TRANSPORT", transport)
                .env("BOAD_CHUNK_BYTES", "1024")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0);
            cmd.spawn().expect("runuser")
        })
        .collect();
    let pids: Vec<i32> = children.iter().map(|c| c.id() as i32).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let outs: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().expect("wait"))
            .collect();
        let _ = tx.send(outs);
    });
    let outs = match rx.recv_timeout(LIMIT) {
        Ok(outs) => outs,
        Err(_) => {
            for pid in pids {
                // SAFETY: kill only signals the process group of a rank this test started.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            panic!("the env:// job did not finish within {LIMIT:?}");
        }
    };
    outs.into_iter()
        .map(|o| {
            (
                o.status.code(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .collect()
}

/// 128 bits of a job's secret, from the kernel's random source.
fn rand_secret() -> u128 {
    let mut b = [0u8; 16];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").expect("urandom"),
        &mut b,
    )
    .expect("random bytes");
    u128::from_ne_bytes(b)
}

/// The value of `name=` in a rank's summary line (`rank R: ... path=P name=value ...`).
fn rank_counter(line: &str, name: &str) -> u64 {
    line.split(' ')
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

/// Pids of processes whose command line has every word of `words`.
fn processes_with(words: &[&str]) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if words.iter().all(|w| args.iter().any(|a| a == w)) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn the_kernel_service_serves_other_users_and_keeps_them_apart() {
    if !root() {
        return;
    }
    assert!(!lo_has_xdp(), "lo already has an XDP program");
    let service = Service::start();
    assert!(lo_has_xdp(), "boadd did not attach to lo");
    let mode = std::fs::metadata(&service.socket)
        .expect("socket")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o666,
        "every user must be able to connect"
    );

    // 1. nobody's job takes the kernel path: its contributions are folded in the kernel.
    let child = job_as("nobody", &service, 3, "kernel", &["kernel-proof"])
        .spawn()
        .expect("runuser");
    let (out, err, _) = finish(child, "nobody's kernel-proof job");
    assert_eq!(out.matches("kernel proof ok").count(), 3, "{out}\n{err}");
    assert!(kernel_counter(&err, "folded") > 0, "{err}");
    assert!(kernel_counter(&err, "clones") > 0, "{err}");
    assert!(!err.contains("kernel path unavailable"), "{err}");
    assert_eq!(
        service.status().jobs,
        0,
        "the job's registration outlived it"
    );

    // 2. Start-up: a one-collective job on the kernel path (through the service) starts at most
    // 0.5 s slower than on UDP (best of three each, against a busy machine's noise).
    let best = |transport: &str, want: &str| {
        (0..3)
            .map(|_| {
                let child = job_as("nobody", &service, 2, transport, &["path", want])
                    .spawn()
                    .expect("runuser");
                finish(child, &format!("a {transport} job")).2
            })
            .fold(f64::MAX, f64::min)
    };
    let (kernel, udp) = (best("kernel", "kernel"), best("udp", "udp"));
    assert!(
        kernel <= udp + 0.5,
        "kernel path {kernel:.3} s against UDP {udp:.3} s"
    );

    // 3. A registration of a socket the user does not own is refused; of its own, granted.
    let root_sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let root_port = root_sock.local_addr().expect("addr").port();
    let register = |user: &str, extra: &[String]| {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", user, "--"])
            .arg(service.bins.path("boad-check"))
            .arg("service-register")
            .arg(&service.socket)
            .arg("1")
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().expect("runuser")
    };
    let theirs = register("nobody", &[format!("127.0.0.1:{root_port}")])
        .wait_with_output()
        .expect("wait");
    let said = String::from_utf8_lossy(&theirs.stdout);
    assert_eq!(theirs.status.code(), Some(3), "{said}");
    assert!(
        said.contains("refused")
            && said.contains(&format!(
                "127.0.0.1:{root_port} is not a UDP socket of uid 65534"
            )),
        "{said}"
    );
    // A port no socket has, and the address of no single socket.
    for addr in ["127.0.0.1:9", "0.0.0.0:4000"] {
        let out = register("nobody", &[addr.to_string()])
            .wait_with_output()
            .expect("wait");
        assert_eq!(out.status.code(), Some(3), "{addr}");
    }
    assert_eq!(service.status().jobs, 0);
    let mut own = register("nobody", &[]);
    let mut lines = BufReader::new(own.stdout.take().expect("stdout"));
    let mut first = String::new();
    lines.read_line(&mut first).expect("read");
    assert!(first.starts_with("granted "), "{first}");
    let held = service.status();
    assert_eq!((held.jobs, held.comms_used), (1, 1), "{held:?}");
    drop(own.stdin.take());
    assert!(own.wait().expect("wait").success());
    let freed = service.wait_jobs(0, Duration::from_secs(5));
    assert_eq!((freed.comms_used, freed.ports_used), (0, 0), "{freed:?}");
    drop(root_sock);

    // 4. Two users' jobs at once: both exact, both on the kernel path.
    let a = job_as("nobody", &service, 3, "kernel", &["matrix", "--quick"])
        .spawn()
        .expect("runuser");
    let b = job_as("daemon", &service, 4, "kernel", &["matrix", "--quick"])
        .spawn()
        .expect("runuser");
    let (ha, hb) = (
        std::thread::spawn(move || finish(a, "nobody's matrix")),
        std::thread::spawn(move || finish(b, "daemon's matrix")),
    );
    for (user, h, n) in [("nobody", ha, 3), ("daemon", hb, 4)] {
        let (out, err, _) = h.join().expect("job thread");
        assert_eq!(
            out.matches(" cases, 0 wrong; path=kernel ").count(),
            n,
            "{user}:\n{out}"
        );
        assert!(kernel_counter(&err, "folded") > 0, "{user}: {err}");
        assert_eq!(kernel_counter(&err, "foreign"), 0, "{user}: {err}");
        assert_eq!(kernel_counter(&err, "wrong_source"), 0, "{user}: {err}");
    }
    assert_eq!(service.status().jobs, 0);

    // 5. Killing a job (boadrun, by SIGKILL) frees what it held.
    let victim = job_as("nobody", &service, 2, "kernel", &["busy", "1", "60000"])
        .spawn()
        .expect("runuser");
    let pgid = victim.id() as i32;
    service.wait_jobs(1, Duration::from_secs(60));
    // SAFETY: kill only signals the job's own process group (runuser and boadrun).
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = victim.wait_with_output();
    let freed = service.wait_jobs(0, Duration::from_secs(10));
    assert_eq!((freed.comms_used, freed.ports_used), (0, 0), "{freed:?}");
    // boadrun's janitor ends its ranks; make sure, and leave nothing behind either way.
    let start = Instant::now();
    let victim_bin = service.bins.path("boad-check");
    let victim_bin = victim_bin.to_str().expect("a UTF-8 path");
    let mut left = processes_with(&[victim_bin, "busy", "60000"]);
    while !left.is_empty() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        left = processes_with(&[victim_bin, "busy", "60000"]);
    }
    for pid in &left {
        // SAFETY: kill only signals a rank this test started.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    assert!(left.is_empty(), "ranks {left:?} outlived their killed job");

    // 6. A job another launcher started: four env:// processes of `nobody` asking for the kernel
    // path. Rank 0 registers the job with the service (the socket path reaches the ranks through
    // BOAD_SERVICE_SOCKET), every rank takes the kernel path and is exact, and the job's
    // communicator and ports are free once it ended.
    let ran = env_job_as(
        "nobody",
        &service,
        &service.socket,
        4,
        "kernel",
        &["matrix", "--quick"],
    );
    let all: String = ran.iter().map(|(_, o, e)| format!("{o}{e}")).collect();
    for (rank, (code, out, err)) in ran.iter().enumerate() {
        assert_eq!(*code, Some(0), "rank {rank}:\n{out}\n{err}\n{all}");
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("rank {rank}: ")) && l.contains(" wrong; path="))
            .unwrap_or_else(|| panic!("rank {rank} printed no summary:\n{out}\n{err}"));
        assert!(line.contains(" cases, 0 wrong; path=kernel "), "{line}");
        assert!(rank_counter(line, "collectives_kernel") > 0, "{line}");
        assert!(!err.contains("kernel path"), "rank {rank}: {err}");
    }
    let freed = service.wait_jobs(0, Duration::from_secs(5));
    assert_eq!((freed.comms_used, freed.ports_used), (0, 0), "{freed:?}");

    // 7. The same job without a service (a socket path where none listens): UDP, exact, and rank 0
    // alone says why, once.
    let absent = service.dir.join("absent.sock");
    let ran = env_job_as(
        "nobody",
        &service,
        &absent,
        2,
        "kernel",
        &["matrix", "--quick"],
    );
    for (rank, (code, out, err)) in ran.iter().enumerate() {
        assert_eq!(*code, Some(0), "rank {rank}:\n{out}\n{err}");
        assert!(out.contains(" cases, 0 wrong; path=udp "), "{out}");
        let said = err.matches("kernel path unavailable").count();
        assert_eq!(said, usize::from(rank == 0), "rank {rank}: {err}");
    }
    assert!(
        ran[0].2.contains(&absent.display().to_string()),
        "{}",
        ran[0].2
    );

    let _ = std::io::stdout().flush();
    service.stop();
}

#[test]
fn the_unit_file_installs_and_parses() {
    if !root() {
        return;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = PathBuf::from(format!("/tmp/boadd-unit-{}-{nanos}", std::process::id()));
    struct Gone(PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _gone = Gone(dir.clone());
    let out = Command::new(boadd())
        .arg("--install")
        .arg("--prefix")
        .arg(&dir)
        .arg("--unit-dir")
        .arg(dir.join("units"))
        .output()
        .expect("boadd --install");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = std::fs::read_to_string(dir.join("units/boadd.service")).expect("unit");
    assert!(
        unit.contains(&format!("ExecStart={}/sbin/boadd --socket ", dir.display())),
        "{unit}"
    );
    assert!(dir.join("sbin/boadd").exists());
    // systemd's own check where the machine has it.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let v = Command::new("systemd-analyze")
            .arg("verify")
            .arg(dir.join("units/boadd.service"))
            .output()
            .expect("systemd-analyze");
        let err = String::from_utf8_lossy(&v.stderr);
        assert!(v.status.success(), "systemd-analyze verify:\n{err}");
    }
}
