//! What the service holds and how it serves one connection: the loaded and attached programs, the
//! communicators and ports of every registered job, the checks a registration passes before
//! anything is filled, and the release of everything a job holds when its connection closes.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use boad_ebpf_loader::{BcastMember, KernelPath, PortRole, MAX_COMMS, MAX_PORTS};
use boad_proto::service::{read_line, Comms, Grant, Reply, Request, Status, MAX_MEMBERS};
use boad_proto::{Layout, PeerEntry};

/// How long a client may take to send its whole registration.
const REGISTER_WAIT: Duration = Duration::from_secs(10);
/// Lowest trigger port a client may ask for (the service binds it as root).
const MIN_TRIGGER: u16 = 1024;

/// Limits on what clients can make the service hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Jobs one user may have registered at once.
    pub jobs_per_user: usize,
    /// Connections open at once (registered or not).
    pub connections: usize,
    /// Connections one user may have open at once.
    pub connections_per_user: usize,
}

/// One registered job.
struct Job {
    uid: u32,
    comms: Vec<u32>,
    /// Member ports (each registered once per job).
    ports: Vec<u16>,
    trigger: (u16, UdpSocket),
}

/// The programs and what every job holds in them.
pub struct Service {
    state: Mutex<State>,
    pub limits: Limits,
    /// The interfaces the programs are attached to besides `lo` (towards other hosts).
    ifaces: Vec<String>,
}

struct State {
    path: KernelPath,
    free_comms: BTreeSet<u32>,
    /// Reduce port -> number of jobs that registered it (ports of different jobs on different
    /// addresses may be equal).
    ports: HashMap<u16, usize>,
    jobs: HashMap<u64, Job>,
    next_id: u64,
    /// Open connections per uid.
    connections: HashMap<u32, usize>,
}

/// The peer credentials (uid, pid) of a Unix stream's other end.
pub use boad_proto::net::peer_cred;

/// The IPv4 addresses of this namespace's interfaces (none if they cannot be listed).
fn local_addrs() -> Vec<Ipv4Addr> {
    boad_proto::net::ipv4_interfaces()
        .map(|all| all.into_iter().map(|i| i.ip).collect())
        .unwrap_or_default()
}

/// One socket of `/proc/net/udp`: local address, port, owner uid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpEntry {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub uid: u32,
}

/// Parses the text of `/proc/net/udp` (lines it cannot read are skipped), through
/// `boad_proto::net::parse_udp_line`.
pub fn parse_proc_udp(text: &str) -> Vec<UdpEntry> {
    text.lines()
        .skip(1)
        .filter_map(boad_proto::net::parse_udp_line)
        .filter_map(|e| match e.ip {
            std::net::IpAddr::V4(ip) => Some(UdpEntry {
                ip,
                port: e.port,
                uid: e.uid,
            }),
            std::net::IpAddr::V6(_) => None,
        })
        .collect()
}

/// Why member `addr` may not be registered by user `uid`, if it may not: a member whose address is
/// on this host must be a UDP socket of that user bound to that address (or to every address).
/// A member elsewhere is not checked here (its host's service checks it).
pub fn check_member(
    addr: SocketAddrV4,
    uid: u32,
    sockets: &[UdpEntry],
    local: &[Ipv4Addr],
) -> Result<(), String> {
    let ip = *addr.ip();
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
        return Err(format!("{addr} is not the address of one socket"));
    }
    if !(ip.is_loopback() || local.contains(&ip)) {
        return Ok(());
    }
    let matching: Vec<&UdpEntry> = sockets
        .iter()
        .filter(|s| s.port == addr.port() && (s.ip == ip || s.ip.is_unspecified()))
        .collect();
    if matching.is_empty() {
        return Err(format!("{addr} is not a UDP socket on this host"));
    }
    if matching.iter().any(|s| s.uid != uid) {
        return Err(format!("{addr} is not a UDP socket of uid {uid}"));
    }
    Ok(())
}

/// Whether the job whose members are `peers` uses its host leaders' communicator too (several
/// hosts, some with several ranks): the rule boadrun fills by.
fn uses_leaders(peers: &[PeerEntry]) -> bool {
    let leaders = Layout::of(peers).leaders.len();
    leaders > 1 && leaders < peers.len()
}

impl Service {
    /// Serves with `path` (loaded, attached to `lo` and `ifaces`, its `CONFIG` key set).
    pub fn new(path: KernelPath, limits: Limits, ifaces: Vec<String>) -> Service {
        Service {
            state: Mutex::new(State {
                path,
                free_comms: (0..MAX_COMMS).collect(),
                ports: HashMap::new(),
                jobs: HashMap::new(),
                next_id: 0,
                connections: HashMap::new(),
            }),
            limits,
            ifaces,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the service holds.
    pub fn status(&self) -> Status {
        let s = self.state();
        Status {
            jobs: s.jobs.len(),
            comms_used: MAX_COMMS as usize - s.free_comms.len(),
            comms_max: MAX_COMMS as usize,
            ports_used: s.ports.len() + s.jobs.len(),
            ports_max: MAX_PORTS as usize,
        }
    }

    fn counters(&self) -> Result<Vec<(String, u64)>, String> {
        self.state()
            .path
            .counters()
            .map(|c| c.pairs())
            .map_err(|e| e.to_string())
    }

    /// Counts a new connection of user `uid`; why not if there are too many already.
    pub fn admit(&self, uid: u32) -> Result<(), String> {
        let mut s = self.state();
        let all: usize = s.connections.values().sum();
        if all >= self.limits.connections {
            return Err(format!("the service has {all} connections open"));
        }
        let mine = s.connections.entry(uid).or_insert(0);
        if *mine >= self.limits.connections_per_user {
            return Err(format!("uid {uid} has {mine} connections open"));
        }
        *mine += 1;
        Ok(())
    }

    /// Serves one connection of user `uid` admitted by [`Service::admit`] to its end, then frees
    /// what it registered.
    pub fn serve(&self, conn: UnixStream, uid: u32) {
        let job = self.serve_conn(conn, uid);
        if let Some(id) = job {
            self.state().release(id);
        }
        self.leave(uid);
    }

    /// Uncounts a connection of `uid` that [`Service::admit`] counted.
    pub fn leave(&self, uid: u32) {
        let mut s = self.state();
        if let Some(n) = s.connections.get_mut(&uid) {
            *n -= 1;
            if *n == 0 {
                s.connections.remove(&uid);
            }
        }
    }

    /// The answer to STATUS / COUNTERS.
    fn answer(&self, req: &Request) -> Option<Reply> {
        match req {
            Request::Status => Some(Reply::Status(self.status())),
            Request::Counters => Some(match self.counters() {
                Ok(c) => Reply::Counters(c),
                Err(e) => Reply::Refused(format!("reading the counters: {e}")),
            }),
            Request::Free => Some(Reply::Free(
                self.state()
                    .free_comms
                    .iter()
                    .fold(0u64, |m, &c| m | 1 << c),
            )),
            _ => None,
        }
    }

    /// Serves the connection; returns the id of the job it registered, if any (still held).
    fn serve_conn(&self, conn: UnixStream, uid: u32) -> Option<u64> {
        conn.set_read_timeout(Some(REGISTER_WAIT)).ok()?;
        conn.set_write_timeout(Some(REGISTER_WAIT)).ok()?;
        let mut writer = conn.try_clone().ok()?;
        let mut reader = BufReader::new(conn);
        let mut send = |r: &Reply| writer.write_all(r.format().as_bytes()).is_ok();
        let mut job = None;
        loop {
            let line = match read_line(&mut reader) {
                Ok(Some(l)) => l,
                // The end of the connection (or of the registration time, or a line too long).
                Ok(None) | Err(_) => return job,
            };
            let req = match Request::parse(&line) {
                Ok(r) => r,
                Err(e) => {
                    send(&Reply::Refused(e.to_string()));
                    return job;
                }
            };
            if let Some(reply) = self.answer(&req) {
                if !send(&reply) {
                    return job;
                }
                continue;
            }
            let Request::Job {
                key,
                members,
                trigger,
                comms,
            } = req
            else {
                send(&Reply::Refused(
                    "expected JOB, FREE, STATUS or COUNTERS".into(),
                ));
                return job;
            };
            if job.is_some() {
                send(&Reply::Refused("one job per connection".into()));
                return job;
            }
            let mut peers = Vec::with_capacity(members.min(MAX_MEMBERS));
            for rank in 0..members {
                let member = read_line(&mut reader)
                    .ok()
                    .flatten()
                    .map(|l| Request::parse(&l));
                match member {
                    Some(Ok(Request::Member { host_id, ip, port })) => peers.push(PeerEntry {
                        rank,
                        host_id,
                        ip: IpAddr::V4(ip),
                        port,
                        pulse: 0,
                        pid: 1,
                    }),
                    Some(Ok(_)) | Some(Err(_)) => {
                        send(&Reply::Refused(format!("expected MEMBER line {rank}")));
                        return None;
                    }
                    None => return None,
                }
            }
            match self.register(uid, key, &peers, trigger, comms) {
                Ok((id, grant)) => {
                    job = Some(id);
                    if !send(&Reply::Grant(grant)) {
                        return job;
                    }
                    // Registered: the connection lives as long as the job.
                    if reader.get_ref().set_read_timeout(None).is_err() {
                        return job;
                    }
                }
                Err(why) => {
                    send(&Reply::Refused(why));
                    return None;
                }
            }
        }
    }

    /// The destination MAC of each member's clones: none on a job whose members are all on this
    /// host (its clones stay on `lo`); on a job over several hosts, the next hop towards each other
    /// host's members and, for this host's own members (whose clones go through `lo`), the MAC of
    /// the interface towards the others, which must be one the programs are attached to.
    fn member_macs(
        &self,
        peers: &[PeerEntry],
        local: &[Ipv4Addr],
    ) -> Result<Vec<Option<[u8; 6]>>, String> {
        let v4 = |p: &PeerEntry| match p.ip {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        let here = |ip: Ipv4Addr| ip.is_loopback() || local.contains(&ip);
        let mut remote: Vec<Ipv4Addr> = Vec::new();
        for p in peers {
            let ip = v4(p);
            if !here(ip) && !remote.contains(&ip) {
                remote.push(ip);
            }
        }
        let Some(first) = remote.first() else {
            return Ok(vec![None; peers.len()]);
        };
        let iface = boad_proto::neigh::route_iface(*first)?;
        if !self.ifaces.contains(&iface) {
            return Err(format!(
                "this job's other hosts are reached through {iface}, which the service is not \
                 attached to (start boadd with --iface {iface})"
            ));
        }
        for ip in &remote {
            let other = boad_proto::neigh::route_iface(*ip)?;
            if other != iface {
                return Err(format!(
                    "this job's other hosts are reached through {iface} and {other}; the kernel \
                     path serves jobs whose hosts one interface reaches"
                ));
            }
        }
        let own = boad_proto::neigh::mac_of(&iface)
            .map_err(|e| format!("reading the MAC of {iface}: {e}"))?;
        let hops = boad_proto::neigh::next_hop_macs(&remote, &iface)?;
        Ok(peers
            .iter()
            .map(|p| {
                let ip = v4(p);
                if here(ip) {
                    return Some(own);
                }
                remote
                    .iter()
                    .position(|r| *r == ip)
                    .and_then(|i| hops.get(i).copied())
            })
            .collect())
    }

    /// Checks job `key` of user `uid` with members `peers` and fills the maps for it.
    fn register(
        &self,
        uid: u32,
        key: u64,
        peers: &[PeerEntry],
        trigger: Option<u16>,
        asked: Option<Comms>,
    ) -> Result<(u64, Grant), String> {
        let addrs: Vec<SocketAddrV4> = peers
            .iter()
            .map(|p| match p.ip {
                IpAddr::V4(ip) => SocketAddrV4::new(ip, p.port),
                // Members are parsed as IPv4.
                IpAddr::V6(_) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
            })
            .collect();
        for (i, a) in addrs.iter().enumerate() {
            if addrs[..i].contains(a) {
                return Err(format!("{a} is given for two ranks"));
            }
        }
        if let Some(t) = trigger {
            if t < MIN_TRIGGER {
                return Err(format!(
                    "trigger port {t}: the service binds no port below {MIN_TRIGGER}"
                ));
            }
        }
        // The socket table after the client sent its members: each of its ports must be there.
        let table = std::fs::read_to_string("/proc/net/udp")
            .map_err(|e| format!("reading /proc/net/udp: {e}"))?;
        let sockets = parse_proc_udp(&table);
        let local = local_addrs();
        for (rank, a) in addrs.iter().enumerate() {
            check_member(*a, uid, &sockets, &local).map_err(|why| format!("rank {rank}: {why}"))?;
        }
        let leaders = uses_leaders(peers);
        if let Some(c) = asked {
            if c.leaders.is_some() != leaders {
                return Err(format!(
                    "the job {} a host leaders' communicator, but asks for {}",
                    if leaders { "uses" } else { "does not use" },
                    if c.leaders.is_some() { "one" } else { "none" }
                ));
            }
        }
        // Where the clones for other hosts' members go: resolved before anything is held.
        let macs = self.member_macs(peers, &local)?;
        let mut s = self.state();
        let held = s.jobs.values().filter(|j| j.uid == uid).count();
        if held >= self.limits.jobs_per_user {
            return Err(format!(
                "uid {uid} has {held} jobs registered already (at most {})",
                self.limits.jobs_per_user
            ));
        }
        let want_comms = if leaders { 2 } else { 1 };
        let comms: Vec<u32> = match asked {
            Some(c) => {
                let ids: Vec<u32> = std::iter::once(c.world).chain(c.leaders).collect();
                for id in &ids {
                    if *id >= MAX_COMMS {
                        return Err(format!(
                            "communicator {id} does not exist (ids are 0..{MAX_COMMS})"
                        ));
                    }
                    if !s.free_comms.contains(id) {
                        return Err(format!("communicator {id} is in use by another job"));
                    }
                }
                ids
            }
            None => {
                if s.free_comms.len() < want_comms {
                    return Err(format!(
                        "all {MAX_COMMS} communicators are in use by other jobs"
                    ));
                }
                s.free_comms.iter().copied().take(want_comms).collect()
            }
        };
        let mut distinct: Vec<u16> = addrs.iter().map(|a| a.port()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let new_ports = distinct.iter().filter(|p| !s.ports.contains_key(p)).count();
        if s.ports.len() + s.jobs.len() + new_ports + 1 > MAX_PORTS as usize {
            return Err(format!("all {MAX_PORTS} ports of the programs are in use"));
        }
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, trigger.unwrap_or(0)))
            .map_err(|e| format!("binding a trigger port: {e}"))?;
        let trigger = sock
            .local_addr()
            .map_err(|e| format!("binding a trigger port: {e}"))?
            .port();
        for c in &comms {
            s.free_comms.remove(c);
        }
        let id = s.next_id;
        s.next_id += 1;
        for p in &distinct {
            *s.ports.entry(*p).or_insert(0) += 1;
        }
        s.jobs.insert(
            id,
            Job {
                uid,
                comms: comms.clone(),
                ports: distinct,
                trigger: (trigger, sock),
            },
        );
        // From here on, a failure releases what the job took.
        match s.fill(key, peers, &addrs, trigger, &comms, &macs) {
            Ok(()) => Ok((
                id,
                Grant {
                    trigger,
                    world: comms[0],
                    leaders: comms.get(1).copied(),
                },
            )),
            Err(e) => {
                s.release(id);
                Err(e)
            }
        }
    }
}

impl State {
    fn fill(
        &mut self,
        key: u64,
        peers: &[PeerEntry],
        addrs: &[SocketAddrV4],
        trigger: u16,
        comms: &[u32],
        macs: &[Option<[u8; 6]>],
    ) -> Result<(), String> {
        let err = |e: boad_ebpf_loader::KernelError| e.to_string();
        let members: Vec<BcastMember> = addrs
            .iter()
            .enumerate()
            .map(|(rank, a)| BcastMember {
                addr: *a,
                rank: rank as u32,
                ifindex: 0,
                mac: macs.get(rank).copied().flatten(),
            })
            .collect();
        for a in addrs {
            self.path
                .add_port(a.port(), PortRole::Reduce)
                .map_err(err)?;
        }
        self.path.add_port(trigger, PortRole::Bcast).map_err(err)?;
        let contribs = (members.len() as u32).saturating_sub(1);
        self.path
            .set_job_comm(key, comms[0], contribs, &members)
            .map_err(err)?;
        if let Some(&lc) = comms.get(1) {
            let heads = BcastMember::leaders_of(&members, &Layout::of(peers).leaders);
            let contribs = (heads.len() as u32).saturating_sub(1);
            self.path
                .set_job_comm(key, lc, contribs, &heads)
                .map_err(err)?;
        }
        Ok(())
    }

    /// Frees everything job `id` holds: its communicators, its ports no other job holds, its
    /// trigger port.
    fn release(&mut self, id: u64) {
        let Some(job) = self.jobs.remove(&id) else {
            return;
        };
        for c in &job.comms {
            if let Err(e) = self.path.remove_comm(*c) {
                eprintln!("boadd: removing communicator {c}: {e}");
            }
            self.free_comms.insert(*c);
        }
        for p in &job.ports {
            let gone = match self.ports.get_mut(p) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                _ => true,
            };
            if gone {
                self.ports.remove(p);
                if let Err(e) = self.path.remove_port(*p) {
                    eprintln!("boadd: removing port {p}: {e}");
                }
            }
        }
        let (trigger, sock) = job.trigger;
        if let Err(e) = self.path.remove_port(trigger) {
            eprintln!("boadd: removing trigger port {trigger}: {e}");
        }
        drop(sock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 014D007F:9C40 00000000:0000 07 00000000:00000000 00:00000000 00000000 65534        0 1 2 ffff 0
  2: 00000000:9C41 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 2 2 ffff 0
  3: 024D007F:9C42 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 3 2 ffff 0
";

    #[test]
    fn proc_udp_is_read() {
        let t = parse_proc_udp(TABLE);
        assert_eq!(t.len(), 3);
        assert_eq!(
            t[0],
            UdpEntry {
                ip: Ipv4Addr::new(127, 0, 77, 1),
                port: 40000,
                uid: 65534
            }
        );
        assert_eq!(t[1].ip, Ipv4Addr::UNSPECIFIED);
        assert!(parse_proc_udp("header\ngarbage line\n").is_empty());
    }

    #[test]
    fn members_must_be_the_users_own_sockets() {
        let t = parse_proc_udp(TABLE);
        let local = [Ipv4Addr::new(10, 0, 0, 1)];
        let a = |o: [u8; 4], p| SocketAddrV4::new(Ipv4Addr::from(o), p);
        // Its own socket.
        assert_eq!(
            check_member(a([127, 0, 77, 1], 40000), 65534, &t, &local),
            Ok(())
        );
        // Another user's socket, on its address or bound to every address.
        assert!(check_member(a([127, 0, 77, 1], 40000), 1000, &t, &local).is_err());
        assert!(check_member(a([127, 0, 0, 1], 40001), 65534, &t, &local).is_err());
        assert!(check_member(a([10, 0, 0, 1], 40001), 65534, &t, &local).is_err());
        // No socket there at all.
        assert!(check_member(a([127, 0, 77, 1], 40005), 65534, &t, &local).is_err());
        // Bound to another loopback address.
        assert!(check_member(a([127, 0, 77, 9], 40002), 1000, &t, &local).is_err());
        assert_eq!(
            check_member(a([127, 0, 77, 2], 40002), 1000, &t, &local),
            Ok(())
        );
        // Not an address of one socket.
        assert!(check_member(a([0, 0, 0, 0], 40000), 65534, &t, &local).is_err());
        // Elsewhere: its host's service checks it.
        assert_eq!(
            check_member(a([10, 0, 0, 2], 40009), 65534, &t, &local),
            Ok(())
        );
    }
}
