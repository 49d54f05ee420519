//! `boadrun -H` / `--hostfile` through agents, without ssh: hosts named `localhost` (boadrun starts
//! their agents itself) and a launch agent that is a local script (runs the agent here, ignoring the
//! host name). The same code path as over ssh (tests-integration/tests/hosts.rs runs it across
//! namespace hosts with a real sshd): agents, the authenticated TCP rendezvous, the relay of the
//! ranks' connections, output, exit codes and signals. Runs as any user.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{boadrun, sorted_lines, text, BOADRUN};

/// A launch agent that runs the agent on this machine whatever host it is given: `SCRIPT HOST
/// AGENT --agent` runs `AGENT --agent`.
struct FakeAgent {
    dir: tempfile::TempDir,
}

impl FakeAgent {
    fn new(body: &str) -> FakeAgent {
        let dir = tempfile::Builder::new()
            .prefix("agents-test")
            .tempdir()
            .expect("temp dir");
        let path = dir.path().join("launch");
        let mut f = std::fs::File::create(&path).expect("create");
        writeln!(f, "#!/bin/sh\n{body}").expect("write");
        drop(f);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        FakeAgent { dir }
    }

    fn path(&self) -> String {
        self.dir.path().join("launch").display().to_string()
    }
}

#[test]
fn localhost_hosts_get_their_ranks_and_environment() {
    let out = boadrun(&[
        "-H",
        "localhost:2,localhost:1",
        "-H",
        "localhost:2",
        "-x",
        "FOO=bar baz",
        "-x",
        "HOME",
        "--tag-output",
        "sh",
        "-c",
        "echo $BOAD_RANK $BOAD_SIZE $BOAD_HOST_ID $BOAD_LOCAL_RANK $BOAD_LOCAL_SIZE \"$FOO\" $BOAD_TRANSPORT; echo err$BOAD_RANK >&2",
    ]);
    assert!(out.status.success(), "{out:?}");
    // "localhost" three times is one host of 5 slots (names add up, as in Open MPI).
    assert_eq!(
        sorted_lines(&out.stdout),
        [
            "[0] 0 5 0 0 5 bar baz udp",
            "[1] 1 5 0 1 5 bar baz udp",
            "[2] 2 5 0 2 5 bar baz udp",
            "[3] 3 5 0 3 5 bar baz udp",
            "[4] 4 5 0 4 5 bar baz udp",
        ]
    );
    let err = sorted_lines(&out.stderr);
    for r in 0..5 {
        assert!(err.contains(&format!("[{r}] err{r}")), "{err:?}");
    }
}

#[test]
fn ranks_fill_slots_or_go_round_robin() {
    let agent = FakeAgent::new("shift; exec \"$@\"");
    let launch = agent.path();
    let script = "echo $BOAD_RANK $BOAD_HOST_ID $BOAD_LOCAL_RANK $BOAD_LOCAL_SIZE";
    let common = [
        "--launch-agent",
        &launch,
        "--agent-path",
        BOADRUN,
        "--rendezvous-addr",
        "127.0.0.1",
    ];
    let mut args: Vec<&str> = common.to_vec();
    args.extend(["-H", "198.18.7.1:3,198.18.7.2:2", "sh", "-c", script]);
    let out = boadrun(&args);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        sorted_lines(&out.stdout),
        ["0 0 0 3", "1 0 1 3", "2 0 2 3", "3 1 0 2", "4 1 1 2"]
    );
    let mut args: Vec<&str> = common.to_vec();
    args.extend([
        "--map-by",
        "node",
        "-n",
        "4",
        "-H",
        "198.18.7.1:3,198.18.7.2:2",
        "sh",
        "-c",
        script,
    ]);
    let out = boadrun(&args);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        sorted_lines(&out.stdout),
        ["0 0 0 2", "1 1 0 2", "2 0 1 2", "3 1 1 2"]
    );
}

#[test]
fn a_failing_rank_on_a_host_ends_the_job_with_its_code() {
    let start = Instant::now();
    let out = boadrun(&[
        "-H",
        "localhost:2,127.0.0.1:2",
        "--kill-grace-ms",
        "200",
        "sh",
        "-c",
        "if [ $BOAD_RANK = 2 ]; then exit 7; fi; sleep 30",
    ]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let err = text(&out.stderr);
    // Read as for a rank of boadrun's own, with the host: "rank 2 (pid N on 127.0.0.1) ...".
    let line = err
        .lines()
        .find(|l| l.starts_with("boadrun: rank 2 (pid "))
        .unwrap_or_else(|| panic!("no line for rank 2: {err}"));
    let pid = line
        .strip_prefix("boadrun: rank 2 (pid ")
        .and_then(|l| l.strip_suffix(" on 127.0.0.1) exited with status 7"));
    assert!(
        pid.is_some_and(|p| p.parse::<u32>().is_ok_and(|p| p > 1)),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(20), "{err}");
}

#[test]
fn a_host_whose_agent_cannot_start_fails_the_job_naming_it() {
    // The launch agent fails at once, as ssh does for a host that refuses it.
    let agent = FakeAgent::new(
        "echo 'ssh: connect to host nowhere port 22: Connection refused' >&2; exit 255",
    );
    let launch = agent.path();
    let start = Instant::now();
    let out = boadrun(&[
        "--launch-agent",
        &launch,
        "-H",
        "localhost:1,198.18.7.9:1",
        "--rendezvous-addr",
        "127.0.0.1",
        "sh",
        "-c",
        "sleep 30",
    ]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "boadrun: host 198.18.7.9: ssh: connect to host nowhere port 22: Connection refused"
        ),
        "{err}"
    );
    assert!(
        err.contains("boadrun: host 198.18.7.9: its agent ended"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(20), "{err}");

    // A program that does not exist there: the agent says so, naming the host.
    let out = boadrun(&["-H", "localhost:2", "./no-such-boad-program"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains("boadrun: host localhost: ./no-such-boad-program: no such file"),
        "{err}"
    );
}

#[test]
fn a_silent_host_fails_within_the_launch_timeout() {
    // A launch agent that never starts the agent, and never ends.
    let agent = FakeAgent::new("exec sleep 60");
    let launch = agent.path();
    let start = Instant::now();
    let out = boadrun(&[
        "--launch-agent",
        &launch,
        "--launch-timeout",
        "2",
        "-H",
        "198.18.7.3:1",
        "--rendezvous-addr",
        "127.0.0.1",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains("boadrun: host 198.18.7.3: its agent did not start within 2 s"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(10), "{err}");
}

#[test]
fn bad_host_lists_are_usage_errors() {
    for (args, says) in [
        (vec!["-H", "a:0", "true"], "a:0"),
        (vec!["-H", "a,-oProxyCommand=x", "true"], "-oProxyCommand=x"),
        (vec!["-H", "localhost:1", "-n", "3", "true"], "3"),
        (vec!["-H", "localhost", "--hosts", "2", "true"], "--hosts"),
        (vec!["-H", "localhost", "-x", "1BAD=x", "true"], "1BAD"),
        (
            vec!["-H", "localhost", "--transport", "kernel", "true"],
            "kernel path",
        ),
        (
            vec!["--hostfile", "/nonexistent/hosts", "true"],
            "/nonexistent/hosts",
        ),
    ] {
        let out = boadrun(&args);
        let err = text(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// The TCP ports process `pid` listens on (from /proc: its sockets' inodes in /proc/net/tcp*).
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for row in text.lines().skip(1) {
            let f: Vec<&str> = row.split_whitespace().collect();
            // local_address, ..., st (0A = LISTEN), ..., inode
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let port = f[1].rsplit(':').next().unwrap_or("0");
                ports.push(u16::from_str_radix(port, 16).expect("hex port"));
            }
        }
    }
    ports
}

#[test]
fn the_rendezvous_refuses_a_wrong_secret_and_closes_once_every_agent_joined() {
    // A launch agent that takes 2 s before it starts the agent: the rendezvous waits for it.
    let agent = FakeAgent::new("sleep 2; shift; exec \"$@\"");
    let launch = agent.path();
    let mut child = Command::new(BOADRUN)
        .env("BOAD_TRANSPORT", "udp")
        .args(["--launch-agent", &launch, "--agent-path", BOADRUN])
        .args(["--rendezvous-addr", "127.0.0.1", "-H", "198.18.7.4:2"])
        .args([
            "sh",
            "-c",
            "echo started $BOAD_RANK; sleep 3; echo done $BOAD_RANK",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start boadrun");
    let until = Instant::now() + Duration::from_secs(2);
    let port = loop {
        if let Some(&p) = listening_ports(child.id()).first() {
            break p;
        }
        assert!(Instant::now() < until, "boadrun never listened");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Someone who does not know the secret: refused, and the job goes on.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let wrong = boad_proto::auth::Secret::random().expect("random");
    let refused = boad_proto::auth::client_handshake(&mut s, &wrong, b"agent 0");
    assert!(refused.is_err(), "a wrong secret was accepted");
    // Once the agent has joined (its ranks run), nobody else can even connect, while the job runs.
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("read");
    assert!(line.starts_with("started "), "{line:?}");
    let until = Instant::now() + Duration::from_secs(1);
    while !listening_ports(child.id()).is_empty() {
        assert!(Instant::now() < until, "the listener stayed open");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the job still runs"
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).expect("read");
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}: {line}{rest}");
    let all = format!("{line}{rest}");
    assert_eq!(
        sorted_lines(all.as_bytes()),
        ["done 0", "done 1", "started 0", "started 1"]
    );
}

#[test]
fn check_reports_every_host_and_names_one_it_cannot_reach() {
    let out = boadrun(&["--check", "-H", "localhost,127.0.0.1", "--transport", "udp"]);
    assert!(out.status.success(), "{out:?}");
    let report_text = text(&out.stdout);
    let text = report_text;
    for host in ["localhost", "127.0.0.1"] {
        let at = text
            .find(&format!("== host {host}\n"))
            .unwrap_or_else(|| panic!("no report from {host}:\n{text}"));
        let report = &text[at..];
        assert!(
            report.contains("\nkernel:") && report.contains("\npath:"),
            "{text}"
        );
    }
    // A launch agent that cannot reach the host: that host's entry says so, the exit status is 1.
    let agent =
        FakeAgent::new("echo 'ssh: connect to host x port 22: Connection refused' >&2; exit 255");
    let launch = agent.path();
    let out = boadrun(&[
        "--check",
        "--launch-agent",
        &launch,
        "-H",
        "localhost,198.18.7.5",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("== host localhost\n"), "{text}");
    assert!(
        text.contains("== host 198.18.7.5\n  cannot check this host (exited with status 255): ssh: connect to host x port 22: Connection refused"),
        "{text}"
    );
}
