//! Several hosts on one machine, each a network namespace running a real OpenSSH server, reachable
//! over plain `ssh` from any of them: what the tests of `boadrun --launch-agent "ssh ..."` need.
//!
//! Contract: [`SshHosts::create`]`(n)` makes hosts `0..n` (2 to 8). Host `h` is an anonymous
//! network namespace with loopback up and one interface, `eth0`, addressed `198.18.1.(h+1)/24`
//! (the benchmarking range of RFC 2544, beside the `198.18.0.0/24` of boadrun's own virtual
//! clusters), joined by a veth pair to a bridge that lives in a namespace of its own; transmit
//! checksum offload is off on both ends of every veth, so XDP programs see complete checksums. In
//! every host an `sshd` listens on port 22 of that address; when `create` returns, each one has
//! accepted a login (`ssh HOST true` from host 0), or `create` failed saying which did not and
//! what that sshd printed. The client side is one `ssh` configuration file ([`SshHosts::ssh_config`],
//! [`SshHosts::launch_agent`]) that logs in as root with the fixture's own key and knows every
//! host's key (strict checking, batch mode, 5 s connection timeout).
//!
//! Nothing of the fixture outlives it: the namespaces are held by keeper processes (and the
//! sshds) that die with the thread that created the fixture (`PR_SET_PDEATHSIG`, so a test killed
//! by any signal leaves no namespace), and dropping an [`SshHosts`] kills every process still in a
//! host's namespace (the sshds, their sessions, whatever a test started there), then the keepers,
//! waits for them, and removes the fixture's directory (a test killed by SIGKILL runs no drop: its
//! directory stays, which `scripts/check-leftovers.sh` reports, and so does a process that a
//! session left running on a host, with that host's namespace). That directory,
//! `/tmp/boad-sshhosts-XXXXXX` (mode 0700), holds every key and configuration file: the host
//! keys, the client key, `authorized_keys` (usable only from 198.18.1.0/24), `known_hosts`, one
//! `sshd_config` per host and the client's `ssh_config`. The machine's own ssh configuration and
//! host keys (`/etc/ssh`) are not used, `/root/.ssh` is neither read nor written, and no sshd
//! listens outside the fixture's namespaces.
//!
//! One side effect on the machine: sshd needs its privilege-separation directory, `/run/sshd`;
//! `create` makes it (root's, mode 0755) when it is missing, and leaves it (the system's sshd uses
//! the same one).
//!
//! What a remote command sees: sshd runs it with root's login shell in `/root`, with sshd's default
//! `PATH` (`/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`) and none of the client's
//! environment (no `AcceptEnv`, no PAM). The hosts share the machine's file system, so a program
//! named by its absolute path (e.g. `target/release/boadrun`, canonicalized) runs the same on every
//! host. There is no terminal: when the local `ssh` dies, a remote command that does not read its
//! standard input goes on running (nothing hangs it up); one that reads it sees its end.
//!
//! Needs root, `sshd`, `ssh`, `ssh-keygen`, `ip` (iproute2), `ethtool` and `sleep` on `PATH`: a test
//! calls [`require`] first (a recorded skip or a failure when one is missing, see the crate docs);
//! `create` itself fails, never passes silently, when one is missing.

use std::fmt::Write as _;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Need;

/// Fewest hosts a fixture has.
pub const MIN_HOSTS: usize = 2;
/// Most hosts a fixture has.
pub const MAX_HOSTS: usize = 8;
/// How long [`SshHosts::create`] waits for every sshd to accept a login.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// The `ConnectTimeout` of the client configuration: how long `ssh` waits for a host that does not
/// answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the fixture needs on the machine.
const NEEDS: [Need; 7] = [
    Need::Root,
    Need::Program("sshd"),
    Need::Program("ssh"),
    Need::Program("ssh-keygen"),
    Need::Program("ip"),
    Need::Program("ethtool"),
    Need::Program("sleep"),
];

/// Whether the fixture can be made here (root, OpenSSH's server and client, iproute2, ethtool).
/// When not, the test fails or, under `BOAD_ALLOW_SKIP`, records a skip and must return at once
/// (see the crate docs).
pub fn require() -> bool {
    crate::require(&NEEDS)
}

/// Why an [`SshHosts`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SshHostsError {
    /// The number of hosts is outside `MIN_HOSTS..=MAX_HOSTS`.
    #[error("ssh hosts: {0} hosts asked for, {MIN_HOSTS} to {MAX_HOSTS} can be made")]
    HostCount(usize),
    /// A prerequisite is missing (call [`require`] first).
    #[error("ssh hosts need {0} (install openssh-server, openssh-client, iproute2 and ethtool; run as root)")]
    Unmet(String),
    /// A system call, file or process operation failed.
    #[error("ssh hosts: {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A tool (`ip`, `ethtool`, `ssh-keygen`) ran and failed.
    #[error("ssh hosts: `{command}` failed ({status}): {stderr}")]
    Tool {
        /// The command line.
        command: String,
        /// How it ended.
        status: std::process::ExitStatus,
        /// What it printed on its standard error.
        stderr: String,
    },
    /// A host's sshd did not accept a login in time, or exited.
    #[error(
        "ssh hosts: the sshd of host {host} ({ip}) {why}\n--- last ssh attempt:\n{ssh}\n--- sshd's \
         standard error:\n{sshd}"
    )]
    NotReady {
        /// The host.
        host: usize,
        /// Its address.
        ip: Ipv4Addr,
        /// What went wrong (it exited, or did not accept within [`READY_TIMEOUT`]).
        why: String,
        /// What the last `ssh HOST true` printed on its standard error.
        ssh: String,
        /// What that sshd printed on its standard error.
        sshd: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SshHostsError {
    let what = what.into();
    move |source| SshHostsError::Io { what, source }
}

/// One host: its address, the keeper holding its namespace, and its sshd.
struct Host {
    ip: Ipv4Addr,
    keeper: Child,
    /// The namespace (`/proc/KEEPER/ns/net`), open: what `setns` joins.
    netns: File,
    /// The namespace's identity (`net:[INODE]`), to recognise the processes in it.
    netns_id: PathBuf,
    sshd: Option<Child>,
}

/// A set of hosts, each a network namespace with a real sshd (see the module docs).
///
/// Create and use it in one thread (a test's own): its processes die when the thread that created
/// it exits. Dropping it removes everything it made.
pub struct SshHosts {
    hosts: Vec<Host>,
    ips: Vec<Ipv4Addr>,
    /// The keeper of the bridge's namespace.
    switch: Option<Child>,
    sshd: PathBuf,
    ssh_config: PathBuf,
    /// Last, so it goes after every process that uses its files.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for SshHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshHosts")
            .field("hosts", &self.ips)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

/// The address of host `h`.
fn host_ip(h: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, h as u8 + 1)
}

/// Sets up a child before it runs its program: it dies with the thread that spawns it
/// (`PR_SET_PDEATHSIG`), and joins the network namespace `netns` (an open descriptor, or the error
/// that kept it from being opened) when given. The descriptor must stay open until the spawn.
fn in_child(cmd: &mut Command, netns: Option<Result<RawFd, i32>>) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec: it only makes async-signal-safe calls
    // (prctl, getppid, setns, _exit) and allocates nothing. `netns`'s descriptor is open in the
    // child (closed on exec only) as long as its owner outlives the spawn, which every caller
    // ensures.
    unsafe {
        cmd.pre_exec(move || {
            let (sig, zero): (libc::c_ulong, libc::c_ulong) = (libc::SIGKILL as _, 0);
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig, zero, zero, zero) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before the prctl: nothing would kill this child later.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            match netns {
                Some(Err(errno)) => Err(std::io::Error::from_raw_os_error(errno)),
                Some(Ok(fd)) if libc::setns(fd, libc::CLONE_NEWNET) != 0 => {
                    Err(std::io::Error::last_os_error())
                }
                _ => Ok(()),
            }
        })
    };
}

/// Starts a process that sits in a new network namespace until it is killed or the creating thread
/// exits.
fn keeper() -> Result<Child, SshHostsError> {
    let mut cmd = Command::new("sleep");
    cmd.arg("infinity")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    in_child(&mut cmd, None);
    // SAFETY: unshare is async-signal-safe; this runs after in_child's prctl.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    cmd.spawn()
        .map_err(io_err("cannot create a network namespace (sleep infinity)"))
}

/// Runs `program args` (in namespace `netns` when given), `input` on its standard input; fails with
/// its standard error unless it succeeds.
fn run(
    netns: Option<&File>,
    program: &str,
    args: &[&str],
    input: &str,
) -> Result<(), SshHostsError> {
    use std::io::Write;
    let command = format!("{program} {}", args.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    in_child(&mut cmd, netns.map(|f| Ok(f.as_raw_fd())));
    let mut child = cmd
        .spawn()
        .map_err(io_err(format!("cannot run `{command}`")))?;
    let written = match child.stdin.take() {
        Some(mut stdin) => stdin.write_all(input.as_bytes()),
        None => Ok(()),
    };
    if let Err(e) = written {
        let _ = child.kill();
        let _ = child.wait();
        return Err(io_err(format!("cannot write to `{command}`"))(e));
    }
    let out = child
        .wait_with_output()
        .map_err(io_err(format!("cannot wait for `{command}`")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(SshHostsError::Tool {
            command: format!("{command}\n{input}"),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// Makes an ed25519 key pair at `path` (private) and `path.pub`; returns the public key's type and
/// base64 text (`ssh-ed25519 AAAA...`, without the comment).
fn keygen(path: &Path, comment: &str) -> Result<String, SshHostsError> {
    let path_text = path.to_string_lossy();
    run(
        None,
        "ssh-keygen",
        &[
            "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", &path_text,
        ],
        "",
    )?;
    let public = std::fs::read_to_string(path.with_extension("pub"))
        .map_err(io_err(format!("cannot read {path_text}.pub")))?;
    let mut fields = public.split_whitespace();
    match (fields.next(), fields.next()) {
        (Some(kind @ "ssh-ed25519"), Some(key)) => Ok(format!("{kind} {key}")),
        _ => Err(SshHostsError::Io {
            what: format!("{path_text}.pub is not an ed25519 public key: {public:?}"),
            source: std::io::Error::from(std::io::ErrorKind::InvalidData),
        }),
    }
}

/// Writes `text` to `path` (mode 0600).
fn write_file(path: &Path, text: &str) -> Result<(), SshHostsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(io_err(format!("cannot write {}", path.display())))
}

/// The identity of the network namespace of `pid` (`net:[INODE]`), if it can be read.
fn netns_of(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
}

/// Kills process `pid` with SIGKILL if it is still in the namespace `netns_id`: a pidfd pins the
/// process, so a pid reused meanwhile by an unrelated process is never signalled.
fn kill_if_in(pid: u32, netns_id: &Path) {
    // SAFETY: pidfd_open takes a pid and flags, and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    let Ok(fd) = RawFd::try_from(fd) else { return };
    if fd < 0 {
        return;
    }
    // SAFETY: `fd` was just returned by pidfd_open and nothing else owns it.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    if netns_of(pid).as_deref() == Some(netns_id) {
        // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
}

impl SshHosts {
    /// Makes `n` hosts (2 to 8), each running an sshd that accepts logins (see the module docs).
    /// Takes 1 to 2 s on 2 busy cores (mostly the first login on each host, tried in parallel).
    /// Fails if a prerequisite is missing ([`require`] says so first), if the network cannot be
    /// made, or if an sshd does not accept a login within [`READY_TIMEOUT`]; whatever was made by
    /// then is removed.
    pub fn create(n: usize) -> Result<SshHosts, SshHostsError> {
        if !(MIN_HOSTS..=MAX_HOSTS).contains(&n) {
            return Err(SshHostsError::HostCount(n));
        }
        if let Some(missing) = crate::unmet_need(&NEEDS) {
            return Err(SshHostsError::Unmet(missing));
        }
        // sshd re-executes itself, so it must be started by its absolute path.
        let sshd = crate::find_program("sshd")
            .ok_or_else(|| SshHostsError::Unmet(Need::Program("sshd").describe()))?;
        let dir = tempfile::Builder::new()
            .prefix("boad-sshhosts-")
            .tempdir_in("/tmp")
            .map_err(io_err("cannot make a directory in /tmp"))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).map_err(
            io_err(format!("cannot chmod 0700 {}", dir.path().display())),
        )?;
        let ssh_config = dir.path().join("ssh_config");
        // From here on, dropping `fixture` (on an error) removes whatever was made.
        let mut fixture = SshHosts {
            hosts: Vec::with_capacity(n),
            ips: (0..n).map(host_ip).collect(),
            switch: None,
            sshd,
            ssh_config,
            dir,
        };
        fixture.network(n)?;
        fixture.files()?;
        fixture.start_sshds()?;
        fixture.wait_ready()?;
        Ok(fixture)
    }

    /// The namespaces: the bridge's, then one per host with its veth, addresses and loopback.
    fn network(&mut self, n: usize) -> Result<(), SshHostsError> {
        let switch = self.switch.insert(keeper()?).id();
        for h in 0..n {
            let keeper = keeper()?;
            let pid = keeper.id();
            // Killed here if its namespace cannot be opened; pushed, Drop kills it.
            let path = format!("/proc/{pid}/ns/net");
            let opened = File::open(&path).and_then(|f| Ok((f, std::fs::read_link(&path)?)));
            let (netns, netns_id) = match opened {
                Ok(both) => both,
                Err(e) => {
                    self.kill_child(keeper);
                    return Err(io_err(format!("cannot open {path}"))(e));
                }
            };
            self.hosts.push(Host {
                ip: host_ip(h),
                keeper,
                netns,
                netns_id,
                sshd: None,
            });
        }
        let switch_ns = File::open(format!("/proc/{switch}/ns/net"))
            .map_err(io_err("cannot open the bridge's namespace"))?;
        let mut script =
            String::from("link set lo up\nlink add br0 type bridge\nlink set br0 up\n");
        for (h, host) in self.hosts.iter().enumerate() {
            let _ = writeln!(
                script,
                "link add h{h} type veth peer name eth0 netns {}\nlink set h{h} master br0\nlink set h{h} up",
                host.keeper.id()
            );
        }
        run(Some(&switch_ns), "ip", &["-batch", "-"], &script)?;
        for h in 0..self.hosts.len() {
            let host = &self.hosts[h];
            run(
                Some(&host.netns),
                "ip",
                &["-batch", "-"],
                &format!(
                    "link set lo up\naddr add {}/24 dev eth0\nlink set eth0 up\n",
                    host.ip
                ),
            )?;
            // Complete checksums on the wire, for XDP programs on these veths.
            run(
                Some(&host.netns),
                "ethtool",
                &["-K", "eth0", "tx", "off"],
                "",
            )?;
            run(
                Some(&switch_ns),
                "ethtool",
                &["-K", &format!("h{h}"), "tx", "off"],
                "",
            )?;
        }
        Ok(())
    }

    /// Keys and configuration files, in the fixture's directory.
    fn files(&self) -> Result<(), SshHostsError> {
        let dir = self.dir.path();
        let client_key = dir.join("client_ed25519");
        let client_public = keygen(&client_key, "boad-sshhosts-client")?;
        let authorized_keys = dir.join("authorized_keys");
        write_file(
            &authorized_keys,
            &format!("from=\"198.18.1.0/24\" {client_public}\n"),
        )?;
        let known_hosts = dir.join("known_hosts");
        let mut known = String::new();
        for (h, host) in self.hosts.iter().enumerate() {
            let key = dir.join(format!("host{h}_ed25519"));
            let public = keygen(&key, &format!("boad-sshhosts-host{h}"))?;
            let _ = writeln!(known, "{} {public}", host.ip);
            write_file(
                &dir.join(format!("sshd_config{h}")),
                &format!(
                    "# boad-test-support sshhosts: host {h}\n\
                     ListenAddress {ip}\n\
                     Port 22\n\
                     HostKey {key}\n\
                     AuthorizedKeysFile {authorized_keys}\n\
                     PidFile none\n\
                     UsePAM no\n\
                     PermitRootLogin prohibit-password\n\
                     PubkeyAuthentication yes\n\
                     PasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\n\
                     AuthenticationMethods publickey\n\
                     StrictModes no\n\
                     PermitUserRC no\n\
                     PermitUserEnvironment no\n\
                     X11Forwarding no\n\
                     PrintMotd no\n\
                     PrintLastLog no\n\
                     UseDNS no\n\
                     MaxStartups 100\n\
                     LogLevel ERROR\n",
                    ip = host.ip,
                    key = key.display(),
                    authorized_keys = authorized_keys.display(),
                ),
            )?;
        }
        write_file(&known_hosts, &known)?;
        write_file(
            &self.ssh_config,
            &format!(
                "# boad-test-support sshhosts: the client side\n\
                 Host *\n\
                 \tUser root\n\
                 \tIdentityFile {client_key}\n\
                 \tIdentitiesOnly yes\n\
                 \tUserKnownHostsFile {known_hosts}\n\
                 \tGlobalKnownHostsFile /dev/null\n\
                 \tStrictHostKeyChecking yes\n\
                 \tUpdateHostKeys no\n\
                 \tBatchMode yes\n\
                 \tConnectTimeout {timeout}\n\
                 \tLogLevel ERROR\n",
                client_key = client_key.display(),
                known_hosts = known_hosts.display(),
                timeout = CONNECT_TIMEOUT.as_secs(),
            ),
        )
    }

    /// Starts an sshd in every host.
    fn start_sshds(&mut self) -> Result<(), SshHostsError> {
        // The privilege-separation directory sshd insists on (the machine's one side effect).
        match std::fs::create_dir("/run/sshd") {
            Ok(()) => std::fs::set_permissions("/run/sshd", std::fs::Permissions::from_mode(0o755))
                .map_err(io_err("cannot chmod 0755 /run/sshd"))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("cannot make /run/sshd")(e)),
        }
        for h in 0..self.hosts.len() {
            let config = self.dir.path().join(format!("sshd_config{h}"));
            let log_path = self.sshd_log(h);
            let log = File::create(&log_path)
                .map_err(io_err(format!("cannot create {}", log_path.display())))?;
            let mut cmd = Command::new(&self.sshd);
            cmd.arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .process_group(0);
            let host = &mut self.hosts[h];
            in_child(&mut cmd, Some(Ok(host.netns.as_raw_fd())));
            host.sshd = Some(
                cmd.spawn()
                    .map_err(io_err(format!("cannot start {}", self.sshd.display())))?,
            );
        }
        Ok(())
    }

    /// Where host `h`'s sshd writes its standard error.
    fn sshd_log(&self, h: usize) -> PathBuf {
        self.dir.path().join(format!("sshd{h}.log"))
    }

    /// Waits until every sshd accepts a login from host 0 (all hosts tried at once, again every
    /// 50 ms until each has answered or [`READY_TIMEOUT`] has passed; a login still under way then
    /// is ended).
    fn wait_ready(&mut self) -> Result<(), SshHostsError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut waiting: Vec<usize> = (0..self.hosts.len()).collect();
        // What the last `ssh HOST true` of each host printed.
        let mut last = vec![String::new(); self.hosts.len()];
        loop {
            for &h in &waiting {
                let exited = match self.hosts[h].sshd.as_mut().map(|c| c.try_wait()) {
                    Some(Ok(None)) => None,
                    Some(Ok(Some(status))) => Some(format!("exited ({status})")),
                    Some(Err(e)) => Some(format!("cannot be waited for: {e}")),
                    None => Some("was not started".into()),
                };
                if let Some(why) = exited {
                    return Err(self.not_ready(h, why, std::mem::take(&mut last[h])));
                }
            }
            let probes = waiting
                .iter()
                .map(|&h| {
                    self.ssh(0, h)
                        .arg("true")
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped())
                        .spawn()
                        .map(|c| (h, c))
                        .map_err(io_err("cannot run ssh"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            waiting.clear();
            for (h, mut probe) in probes {
                // A login that hangs past the deadline is ended (the wait stays bounded).
                while matches!(probe.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = probe.kill();
                let out = probe
                    .wait_with_output()
                    .map_err(io_err("cannot wait for ssh"))?;
                if !out.status.success() {
                    last[h] = format!(
                        "{}\n{}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim_end()
                    );
                    waiting.push(h);
                }
            }
            let Some(&h) = waiting.first() else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                let why = format!("did not accept a login within {READY_TIMEOUT:?}");
                return Err(self.not_ready(h, why, std::mem::take(&mut last[h])));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn not_ready(&self, h: usize, why: String, ssh: String) -> SshHostsError {
        SshHostsError::NotReady {
            host: h,
            ip: self.ips[h],
            why,
            ssh,
            sshd: std::fs::read_to_string(self.sshd_log(h))
                .unwrap_or_else(|e| format!("(cannot read it: {e})")),
        }
    }

    /// The hosts' addresses, in host order (host `h` is `198.18.1.(h+1)`).
    pub fn hosts(&self) -> &[Ipv4Addr] {
        &self.ips
    }

    /// The client configuration file: `ssh -F` it to reach any host as root.
    pub fn ssh_config(&self) -> &Path {
        &self.ssh_config
    }

    /// A command line for `boadrun --launch-agent`: `ssh -F CONFIG` (the path has no space nor
    /// shell metacharacter). Host and remote command follow it.
    pub fn launch_agent(&self) -> String {
        format!("ssh -F {}", self.ssh_config.display())
    }

    /// A command that runs `program` inside host `h`'s network namespace (e.g. `boadrun` on host 0,
    /// the launching host). Like the fixture's own processes, it is killed when the thread that
    /// spawns it exits (`PR_SET_PDEATHSIG`): spawn it from the thread that waits for it. Dropping
    /// the fixture kills it if it still runs.
    ///
    /// # Panics
    /// If `h` is not a host of the fixture.
    pub fn command_in(&self, h: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let netns = self.hosts[h].netns.try_clone();
        let mut cmd = Command::new(program);
        let fd = match &netns {
            Ok(f) => Ok(f.as_raw_fd()),
            Err(e) => Err(e.raw_os_error().unwrap_or(libc::EBADF)),
        };
        in_child(&mut cmd, Some(fd));
        // The duplicate lives as long as the command, so its descriptor is open when it spawns.
        // SAFETY: does nothing in the child; it only ties the descriptor's life to the command.
        unsafe {
            cmd.pre_exec(move || {
                let _keep = &netns;
                Ok(())
            })
        };
        cmd
    }

    /// `ssh -F CONFIG ADDRESS-OF-to`, run in host `from`'s namespace: append the remote command.
    ///
    /// # Panics
    /// If `from` or `to` is not a host of the fixture.
    pub fn ssh(&self, from: usize, to: usize) -> Command {
        let mut cmd = self.command_in(from, "ssh");
        cmd.arg("-F")
            .arg(&self.ssh_config)
            .arg(self.ips[to].to_string());
        cmd
    }

    /// Kills host `h`'s sshd (by its pid) and waits for it: the host refuses ssh from then on
    /// (connections are refused at once). Sessions already open go on. Does nothing if it is
    /// already stopped.
    ///
    /// # Panics
    /// If `h` is not a host of the fixture.
    pub fn stop_sshd(&mut self, h: usize) {
        if let Some(sshd) = self.hosts[h].sshd.take() {
            self.kill_child(sshd);
        }
    }

    /// The pid of host `h`'s sshd, while it runs.
    ///
    /// # Panics
    /// If `h` is not a host of the fixture.
    pub fn sshd_pid(&self, h: usize) -> Option<u32> {
        self.hosts[h].sshd.as_ref().map(Child::id)
    }

    /// The pids of the fixture's own processes: the keepers of the namespaces and the sshds still
    /// running (what must be gone once the fixture is dropped).
    pub fn own_pids(&self) -> Vec<u32> {
        let keepers = self
            .switch
            .iter()
            .chain(self.hosts.iter().map(|h| &h.keeper));
        let sshds = self.hosts.iter().filter_map(|h| h.sshd.as_ref());
        keepers.chain(sshds).map(Child::id).collect()
    }

    /// The fixture's directory (keys and configuration files; removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `/proc/KEEPER/ns/net`: host `h`'s network namespace, for tools (`nsenter --net=`, `ip
    /// netns` is not needed) while the fixture lives.
    ///
    /// # Panics
    /// If `h` is not a host of the fixture.
    pub fn netns_path(&self, h: usize) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.hosts[h].keeper.id()))
    }

    /// The pids of the processes in host `h`'s namespace other than its keeper and its sshd: the
    /// sshd's sessions and what they or [`command_in`](Self::command_in) started (e.g. the ranks of
    /// a job). Empty once every job on the host is over and its ssh sessions have closed.
    ///
    /// # Panics
    /// If `h` is not a host of the fixture.
    pub fn processes(&self, h: usize) -> Vec<u32> {
        let host = &self.hosts[h];
        let own = [Some(host.keeper.id()), host.sshd.as_ref().map(Child::id)];
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| !own.contains(&Some(*pid)))
            .filter(|&pid| netns_of(pid).as_deref() == Some(host.netns_id.as_path()))
            .collect()
    }

    /// Kills one of the fixture's children and reaps it.
    fn kill_child(&self, mut child: Child) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for SshHosts {
    fn drop(&mut self) {
        // The sshds first, so no session starts while the rest goes.
        for h in 0..self.hosts.len() {
            self.stop_sshd(h);
        }
        // Whatever else runs in a host's namespace (sessions, a test's programs) was started
        // through this fixture: killed by pid, a few rounds in case one was forking.
        for _ in 0..50 {
            let left: Vec<(u32, usize)> = (0..self.hosts.len())
                .flat_map(|h| self.processes(h).into_iter().map(move |p| (p, h)))
                .collect();
            if left.is_empty() {
                break;
            }
            for (pid, h) in left {
                kill_if_in(pid, &self.hosts[h].netns_id);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for host in std::mem::take(&mut self.hosts) {
            self.kill_child(host.keeper);
        }
        if let Some(switch) = self.switch.take() {
            self.kill_child(switch);
        }
        // `dir` is removed when the fields drop, after this.
    }
}
