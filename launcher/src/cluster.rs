//! A virtual cluster on one machine: `boadrun --hosts H` runs the ranks on H hosts, each a network
//! namespace with one interface (`eth0`, 198.18.0.(h+1)/24, the benchmarking range of RFC 2544),
//! joined by veth pairs to a bridge that lives in a namespace of its own, where the bridge has
//! [`HEAD_IP`] (198.18.0.254).
//!
//! This module only builds the network. The job on it runs through the machinery of a job across
//! machines (`remote`, `agent`): each host is reached by starting `boadrun --agent` inside its
//! namespace ([`Host::netns_fd`], entered between fork and exec), and the agents join boadrun's
//! TCP rendezvous on a listener in the bridge's namespace ([`Cluster::head_listener`]) and start
//! their host's ranks, exactly as on real machines. The kernel path is the exception: boadrun loads
//! it once and attaches it in every host's namespace ([`Cluster::netns_handles`]; see `kernel`).
//!
//! Contract: nothing outside the cluster's own namespaces changes (no interface, address or route of
//! the machine's own namespace), and every namespace is anonymous, held only by a keeper process that
//! dies with boadrun (PR_SET_PDEATHSIG): when boadrun exits, however it exits (SIGKILL too), the
//! namespaces, their veths and the bridge are gone.
//!
//! Loss on the wire (`--wire-loss PERCENT`, [`Cluster::add_wire_loss`]): an nftables rule in every
//! host's namespace drops that share of the boad datagrams (UDP, payload starting with the magic
//! `BOAD`) the host sends, on `eth0` and on `lo` alike, and counts them. It sits on the `output`
//! hook, which runs before TC egress (so a dropped broadcast is never cloned) and before the
//! receiving host's XDP (which runs before any netfilter ingress hook: a rule there would come too
//! late for the kernel path). The rule goes with its namespace.

use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use crate::error::Error;

/// Most hosts a virtual cluster can have (one /24).
pub const MAX_HOSTS: usize = 250;

/// The bridge's address in its own namespace: where boadrun's rendezvous listens for the hosts'
/// agents (above every host's address).
pub const HEAD_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);

/// One host of the cluster.
pub struct Host {
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
            crate::spawn::die_with(launcher)?;
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    cmd.spawn()
        .map_err(cluster_err("cannot create a network namespace"))
}

/// Runs `tool` with `args` inside the namespace of process `pid`, `script` on its standard input;
/// returns its standard output.
fn run_in(pid: u32, tool: &str, args: &[&str], script: &str) -> Result<String, Error> {
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .arg(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(cluster_err(format!("cannot run nsenter {tool}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(cluster_err(format!("cannot talk to {tool}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(cluster_err(format!("cannot wait for {tool}")))?;
    if !out.status.success() {
        return Err(cluster_err(format!(
            "{tool} {} failed on:\n{script}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))(std::io::Error::other(tool.to_string())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip -batch -` with `script` inside the namespace of process `pid` (iproute2, util-linux).
fn ip_batch(pid: u32, script: &str) -> Result<(), Error> {
    run_in(pid, "ip", &["-batch", "-"], script).map(|_| ())
}

/// The nftables table `--wire-loss` adds to every host.
const LOSS_TABLE: &str = "boadrun_wire_loss";

/// `--wire-loss PERCENT`: a share of the boad datagrams each host sends is dropped on the wire, in
/// hundredths of a percent (1..=9999).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireLoss(u32);

impl WireLoss {
    /// Parses a percentage above 0 and below 100, with at most two decimals that count (`5`,
    /// `0.5`, `12.25`).
    pub fn parse(text: &str) -> Result<WireLoss, String> {
        let p: f64 = text
            .trim()
            .parse()
            .map_err(|e| format!("{text:?} is not a percentage: {e}"))?;
        if !(p > 0.0 && p < 100.0) {
            return Err(format!(
                "{text}: a percentage above 0 and below 100 (of the datagrams each host sends)"
            ));
        }
        let hundredths = (p * 100.0).round();
        if !(1.0..=9999.0).contains(&hundredths) {
            return Err(format!("{text}: between 0.01 and 99.99"));
        }
        Ok(WireLoss(hundredths as u32))
    }

    /// The percentage, as given (to two decimals).
    pub fn percent(self) -> String {
        let (whole, frac) = (self.0 / 100, self.0 % 100);
        if frac == 0 {
            whole.to_string()
        } else {
            format!("{whole}.{frac:02}")
                .trim_end_matches('0')
                .to_string()
        }
    }

    /// The nftables script that adds the table and its one rule: UDP datagrams whose payload starts
    /// with boad's magic, dropped when a random number below 10000 falls under the share, counted.
    fn script(self) -> String {
        let magic = u32::from_be_bytes(*b"BOAD");
        format!(
            "table ip {LOSS_TABLE} {{\n\
             \tchain output {{\n\
             \t\ttype filter hook output priority 0; policy accept;\n\
             \t\tmeta l4proto udp @th,64,32 {magic:#010x} numgen random mod 10000 < {} counter drop\n\
             \t}}\n\
             }}\n",
            self.0
        )
    }

    /// Fails with a clear message if `nft` (nftables) cannot be run.
    pub fn check_nft() -> Result<(), Error> {
        match Command::new("nft")
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(Error::Setup {
                what: "--wire-loss needs nftables: `nft --version` failed".into(),
                source: std::io::Error::other(s.to_string()),
            }),
            Err(source) => Err(Error::Setup {
                what: "--wire-loss needs nftables: cannot run `nft` (install it, e.g. apt-get \
                       install nftables)"
                    .into(),
                source,
            }),
        }
    }
}

/// The packet count of the first `counter` in an `nft list` listing.
fn counted_packets(listing: &str) -> Option<u64> {
    let rest = &listing[listing.find("counter packets ")? + "counter packets ".len()..];
    rest.split_whitespace().next()?.parse().ok()
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
            let mut script = format!(
                "link set lo up\nlink add br0 type bridge\nlink set br0 up\naddr add {HEAD_IP}/24 dev br0\n"
            );
            for (h, k) in keepers[1..].iter().enumerate() {
                script += &format!(
                    "link add h{h} type veth peer name eth0 netns {}\nlink set h{h} master br0\nlink set h{h} up\n",
                    k.id()
                );
            }
            ip_batch(switch, &script)?;
            let mut hosts = Vec::with_capacity(n);
            for (h, k) in keepers[1..].iter().enumerate() {
                let ip = host_ip(h);
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
                hosts.push(Host { netns });
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

    /// A TCP listener on [`HEAD_IP`] (a port the system chooses) in the bridge's namespace, which
    /// every host reaches over its `eth0`: where the hosts' agents find boadrun's rendezvous. The
    /// socket is made by a thread that enters that namespace and ends; boadrun's own namespace is
    /// not touched.
    pub fn head_listener(&self) -> Result<TcpListener, Error> {
        let switch = File::open(format!("/proc/{}/ns/net", self.keepers[0].id()))
            .map_err(cluster_err("cannot open the bridge's namespace"))?;
        let made = std::thread::spawn(move || -> std::io::Result<TcpListener> {
            // SAFETY: setns moves only the calling thread (this one, which ends right after) into
            // the namespace `switch` refers to; it touches no memory of ours.
            if unsafe { libc::setns(switch.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            TcpListener::bind((HEAD_IP, 0))
        })
        .join()
        .map_err(|_| {
            cluster_err("the thread opening the rendezvous listener panicked")(
                std::io::Error::other("panic"),
            )
        })?;
        made.map_err(cluster_err(format!(
            "cannot listen for the hosts' agents on {HEAD_IP}"
        )))
    }
}

impl Cluster {
    /// Installs `loss` in every host (see the module docs), before any rank starts.
    pub fn add_wire_loss(&self, loss: WireLoss) -> Result<(), Error> {
        let script = loss.script();
        for k in &self.keepers[1..] {
            run_in(k.id(), "nft", &["-f", "-"], &script)?;
        }
        Ok(())
    }

    /// How many datagrams `--wire-loss` dropped on each host so far, in host-id order.
    pub fn wire_loss_dropped(&self) -> Result<Vec<u64>, Error> {
        self.keepers[1..]
            .iter()
            .map(|k| {
                let listing = run_in(k.id(), "nft", &["list", "table", "ip", LOSS_TABLE], "")?;
                counted_packets(&listing).ok_or_else(|| {
                    cluster_err(format!("no counter in the wire-loss rule:\n{listing}"))(
                        std::io::Error::other("nft list"),
                    )
                })
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

/// The address of host `h` (below [`MAX_HOSTS`]) on its `eth0`: 198.18.0.(h+1).
pub fn host_ip(h: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, (h % MAX_HOSTS) as u8 + 1)
}

/// Which host rank `rank` of `size` runs on with `hosts` hosts: contiguous blocks, sizes differing
/// by at most one (9 ranks on 4 hosts: 3, 2, 2, 2).
pub fn host_of(rank: usize, size: usize, hosts: usize) -> usize {
    // Ranks r with floor(r * hosts / size) == h go to host h.
    rank * hosts / size
}

#[cfg(test)]
mod tests {
    use super::{counted_packets, host_of, WireLoss};

    #[test]
    fn wire_loss_percentages() {
        for (text, hundredths, shown) in [
            ("5", 500, "5"),
            ("0.5", 50, "0.5"),
            ("12.25", 1225, "12.25"),
            ("99.99", 9999, "99.99"),
            ("0.01", 1, "0.01"),
        ] {
            let l = WireLoss::parse(text).expect(text);
            assert_eq!((l.0, l.percent().as_str()), (hundredths, shown), "{text}");
        }
        for bad in ["0", "100", "-1", "0.001", "x", "", "NaN", "inf"] {
            assert!(WireLoss::parse(bad).is_err(), "{bad:?} accepted");
        }
        let script = WireLoss::parse("20").expect("20").script();
        assert!(
            script.contains(
                "meta l4proto udp @th,64,32 0x424f4144 numgen random mod 10000 < 2000 counter drop"
            ),
            "{script}"
        );
        assert!(script.contains("hook output"), "{script}");
    }

    #[test]
    fn counter_of_a_listing() {
        let listing = "table ip boadrun_wire_loss {\n\tchain output {\n\t\ttype filter hook output priority filter; policy accept;\n\t\tmeta l4proto udp @th,64,32 0x424f4144 numgen random mod 10000 < 500 counter packets 42 bytes 4200 drop\n\t}\n}\n";
        assert_eq!(counted_packets(listing), Some(42));
        assert_eq!(counted_packets("table ip x {}"), None);
        assert_eq!(counted_packets("counter packets many"), None);
    }

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
