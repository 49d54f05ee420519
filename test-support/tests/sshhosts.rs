//! The ssh hosts fixture on real namespaces and real sshds (root; run under the kernel lock:
//! `flock /work/locks/kernel.lock cargo test --release -p boad-test-support --test sshhosts`).

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use boad_test_support::sshhosts::{self, SshHosts, SshHostsError, CONNECT_TIMEOUT, MAX_HOSTS};

fn text(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A fixture of `n` hosts; a failure panics with its message (what the failing sshd printed).
fn create(n: usize) -> SshHosts {
    SshHosts::create(n).unwrap_or_else(|e| panic!("create {n} ssh hosts: {e}"))
}

/// Runs `remote` on host `to` over ssh from host `from`.
fn ssh(fx: &SshHosts, from: usize, to: usize, remote: &str) -> Output {
    fx.ssh(from, to)
        .arg(remote)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh")
}

/// The IPv4 addresses `ip -4 -o addr show eth0` lists.
fn addresses(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().skip_while(|w| *w != "inet");
            f.next()?;
            f.next().map(str::to_string)
        })
        .collect()
}

#[test]
fn host_counts_outside_2_to_8_are_refused() {
    for n in [0, 1, 9] {
        assert!(
            matches!(SshHosts::create(n), Err(SshHostsError::HostCount(m)) if m == n),
            "{n} hosts"
        );
    }
}

#[test]
fn every_host_runs_what_ssh_asks_in_its_own_namespace() {
    if !sshhosts::require() {
        return;
    }
    let started = Instant::now();
    let fx = create(3);
    eprintln!("create(3) took {:?}", started.elapsed());
    assert_eq!(fx.hosts().len(), 3);
    assert!(fx.launch_agent().starts_with("ssh -F /tmp/boad-sshhosts-"));

    // The launching host itself: a command run in host 0's namespace sees host 0's eth0.
    let local = fx
        .command_in(0, "ip")
        .args(["-4", "-o", "addr", "show", "eth0"])
        .output()
        .expect("run ip in host 0");
    assert!(local.status.success(), "{}", text(&local));
    assert_eq!(
        addresses(&String::from_utf8_lossy(&local.stdout)),
        ["198.18.1.1/24"]
    );

    // From host 0 to every host, itself included: the command ran in THAT host's namespace.
    for (h, ip) in fx.hosts().iter().enumerate() {
        let out = ssh(&fx, 0, h, "ip -4 -o addr show eth0");
        assert!(out.status.success(), "host {h}: {}", text(&out));
        assert_eq!(
            addresses(&String::from_utf8_lossy(&out.stdout)),
            [format!("{ip}/24")],
            "host {h}: {}",
            text(&out)
        );
    }

    // Host 1 to host 2: runs on host 2, and host 2's sshd saw the connection come from host 1.
    let out = ssh(&fx, 1, 2, "echo \"$SSH_CLIENT\"; ip -4 -o addr show eth0");
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("198.18.1.2 "), "{}", text(&out));
    assert_eq!(addresses(&stdout), ["198.18.1.3/24"], "{}", text(&out));
}

#[test]
fn a_stopped_sshd_refuses_ssh_and_the_others_still_answer() {
    if !sshhosts::require() {
        return;
    }
    let mut fx = create(3);
    let pid = fx.sshd_pid(1).expect("host 1's sshd runs");
    fx.stop_sshd(1);
    assert_eq!(fx.sshd_pid(1), None);
    assert!(
        !PathBuf::from(format!("/proc/{pid}")).exists(),
        "sshd {pid} still there"
    );

    let started = Instant::now();
    let out = ssh(&fx, 0, 1, "true");
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(255), "{}", text(&out));
    assert!(
        took < CONNECT_TIMEOUT + Duration::from_secs(1),
        "ssh to a host without sshd took {took:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused"),
        "{}",
        text(&out)
    );

    for (from, to) in [(0, 0), (0, 2), (1, 2), (2, 0)] {
        let out = ssh(&fx, from, to, "true");
        assert!(out.status.success(), "{from} -> {to}: {}", text(&out));
    }
    // Stopping it again does nothing.
    fx.stop_sshd(1);
}

#[test]
fn nothing_is_left_after_drop() {
    if !sshhosts::require() {
        return;
    }
    // The most hosts a fixture has, so that count is tried too.
    let started = Instant::now();
    let fx = create(MAX_HOSTS);
    eprintln!("create({MAX_HOSTS}) took {:?}", started.elapsed());
    assert_eq!(fx.hosts().len(), MAX_HOSTS);
    let dir = fx.dir().to_path_buf();
    let own = fx.own_pids();
    assert_eq!(
        own.len(),
        2 * MAX_HOSTS + 1,
        "host keepers, the bridge's, sshds: {own:?}"
    );
    let namespaces: Vec<PathBuf> = (0..MAX_HOSTS)
        .map(|h| std::fs::read_link(fx.netns_path(h)).expect("read a host's namespace"))
        .collect();
    let distinct: std::collections::BTreeSet<_> = namespaces.iter().collect();
    assert_eq!(distinct.len(), MAX_HOSTS, "{namespaces:?}");
    for f in [
        "ssh_config",
        "known_hosts",
        "authorized_keys",
        "client_ed25519",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing in {}", dir.display());
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dir)
        .expect("stat dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{}", dir.display());

    // Left running: a program started in host 0, and one a session detached on the last host.
    let mut local = fx
        .command_in(0, "sleep")
        .arg("1000")
        .spawn()
        .expect("start sleep in host 0");
    let last = MAX_HOSTS - 1;
    let out = ssh(&fx, 0, last, "sleep 1000 </dev/null >/dev/null 2>&1 &");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        fx.processes(0).contains(&local.id()),
        "{:?}",
        fx.processes(0)
    );
    assert!(
        !fx.processes(last).is_empty(),
        "the detached sleep is not on host {last}"
    );

    let started = Instant::now();
    drop(fx);
    eprintln!("drop took {:?}", started.elapsed());
    // The fixture killed it; it is this test's child, so reap it here.
    let status = local.wait().expect("wait for sleep");
    assert!(!status.success(), "{status}");

    for pid in own {
        assert!(
            !PathBuf::from(format!("/proc/{pid}")).exists(),
            "process {pid} of the fixture is still there"
        );
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
    // No process (nor a descriptor of this one) is in the hosts' namespaces any more.
    let mut in_them = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/net")) {
            if namespaces.contains(&ns) {
                in_them.push(pid);
            }
        }
    }
    assert!(
        in_them.is_empty(),
        "still in the hosts' namespaces: {in_them:?}"
    );
    for fd in std::fs::read_dir("/proc/self/fd")
        .expect("read fds")
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            assert!(
                !namespaces.contains(&target),
                "fd {:?} holds a namespace",
                fd.path()
            );
        }
    }
}
