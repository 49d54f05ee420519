//! A virtual cluster on one machine: `boadrun --hosts H` runs the ranks on H hosts, each a network
//! namespace with one interface (`eth0`, 198.18.0.(h+1)/24, the benchmarking range of RFC 2544),
//! joined by veth pairs to a bridge that lives in a namespace of its own.
//!
//! Contract: nothing outside the cluster's own namespaces changes (no interface, address or route of
//! the machine's own namespace), and every namespace is anonymous, held only by a keeper process that
//! dies with boadrun (PR_SET_PDEATHSIG): when boadrun exits, however it exits (SIGKILL too), the
//! namespaces, their veths and the bridge are gone.

use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use crate::error::Error;

/// Most hosts a virtual cluster can have (one /24).
pub const MAX_HOSTS: usize = 250;

/// One host of the cluster.
pub struct Host {
    /// Its address on `eth0`.
    pub ip: Ipv4Addr,
    /// Its network namespace, to `setns` into.
    netns: File,
}

impl Host {
    /// A descriptor of the host's network namespace (valid while the cluster lives).
    pub fn netns_fd(&self) -> RawFd {
        self.netns.as_raw_fd()
    }
}

/// The namespaces and keeper processes of a virtual cluster.
pub struct Cluster {
    /// The hosts, in host-id order.
    pub hosts: Vec<Host>,
    keepers: Vec<Child>,
}

fn cluster_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Setup {
        what: format!(
            "virtual cluster: {what} (--hosts needs root: CAP_SYS_ADMIN and CAP_NET_ADMIN)"
        ),
        source,
    }
}

/// Starts a process that sits in a new network namespace until boadrun dies. Must be called from the
/// main thread (PR_SET_PDEATHSIG follows the forking thread).
fn keeper() -> Result<Child, Error> {
    let launcher = std::process::id() as libc::pid_t;
    let mut cmd = Command::new("sleep");
    cmd.arg("infinity")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0);
    // SAFETY: runs in the forked child before exec; prctl, getppid, unshare and _exit are
    // async-signal-safe and the closure allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let (sig, zero): (libc::c_ulong, libc::c_ulong) = (libc::SIGKILL as _, 0);
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig, zero, zero, zero) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != launcher {
                libc::_exit(1);
            }
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    cmd.spawn()
        .map_err(cluster_err("cannot create a network namespace"))
}

/// Runs `ip -batch -` with `script` inside the namespace of process `pid`.
fn ip_batch(pid: u32, script: &str) -> Result<(), Error> {
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["ip", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(cluster_err("cannot run nsenter ip (iproute2, util-linux)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(cluster_err("cannot talk to ip"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(cluster_err("cannot wait for ip"))?;
    if !out.status.success() {
        return Err(cluster_err(format!(
            "ip failed on:\n{script}{}",
            String::from_utf8_lossy(&out.stderr)
        ))(std::io::Error::other("ip -batch")));
    }
    Ok(())
}

impl Cluster {
    /// Builds a cluster of `n` hosts.
    pub fn create(n: usize) -> Result<Cluster, Error> {
        let mut keepers = Vec::with_capacity(n + 1);
        // Keepers die with us; until they are all up, a failure kills those already started.
        let result = (|| {
            keepers.push(keeper()?);
            for _ in 0..n {
                keepers.push(keeper()?);
            }
            let switch = keepers[0].id();
            let mut script =
                String::from("link set lo up\nlink add br0 type bridge\nlink set br0 up\n");
            for (h, k) in keepers[1..].iter().enumerate() {
                script += &format!(
                    "link add h{h} type veth peer name eth0 netns {}\nlink set h{h} master br0\nlink set h{h} up\n",
                    k.id()
                );
            }
            ip_batch(switch, &script)?;
            let mut hosts = Vec::with_capacity(n);
            for (h, k) in keepers[1..].iter().enumerate() {
                let ip = Ipv4Addr::new(198, 18, 0, h as u8 + 1);
                ip_batch(
                    k.id(),
                    &format!("link set lo up\naddr add {ip}/24 dev eth0\nlink set eth0 up\n"),
                )?;
                // Real checksums on the wire (the kernel path rewrites headers of cloned packets;
                // with offload a veth would carry partial ones that prove nothing). Best effort.
                let _ = Command::new("nsenter")
                    .arg(format!("--net=/proc/{}/ns/net", k.id()))
                    .args(["ethtool", "-K", "eth0", "tx", "off"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                let netns = File::open(format!("/proc/{}/ns/net", k.id()))
                    .map_err(cluster_err("cannot open a host's namespace"))?;
                hosts.push(Host { ip, netns });
            }
            Ok(hosts)
        })();
        match result {
            Ok(hosts) => Ok(Cluster { hosts, keepers }),
            Err(e) => {
                for k in &mut keepers {
                    let _ = k.kill();
                    let _ = k.wait();
                }
                Err(e)
            }
        }
    }
}

impl Cluster {
    /// New descriptors of every host's network namespace, in host-id order (they keep the
    /// namespaces alive while open).
    pub fn netns_handles(&self) -> Result<Vec<OwnedFd>, Error> {
        self.hosts
            .iter()
            .map(|h| {
                h.netns
                    .try_clone()
                    .map(OwnedFd::from)
                    .map_err(cluster_err("cannot duplicate a namespace descriptor"))
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Our own children, by pid: with them go the namespaces, veths and the bridge.
        for k in &mut self.keepers {
            let _ = k.kill();
            let _ = k.wait();
        }
    }
}

/// Which host rank `rank` of `size` runs on with `hosts` hosts: contiguous blocks, sizes differing
/// by at most one (9 ranks on 4 hosts: 3, 2, 2, 2).
pub fn host_of(rank: usize, size: usize, hosts: usize) -> usize {
    // Ranks r with floor(r * hosts / size) == h go to host h.
    rank * hosts / size
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn blocks_are_balanced() {
        let hosts: Vec<usize> = (0..9).map(|r| host_of(r, 9, 4)).collect();
        assert_eq!(hosts, [0, 0, 0, 1, 1, 2, 2, 3, 3]);
        for (n, h) in [(4, 4), (16, 3), (64, 64), (7, 1)] {
            let mut count = vec![0; h];
            (0..n).for_each(|r| count[host_of(r, n, h)] += 1);
            let (min, max) = (count.iter().min(), count.iter().max());
            assert!(
                max.zip(min).is_some_and(|(a, b)| a - b <= 1 && *b > 0),
                "{n} on {h}: {count:?}"
            );
        }
    }
}
