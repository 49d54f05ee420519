//! Joining a job another launcher started (Slurm's `srun`, MPICH's `mpiexec`, an env:// store):
//! every rank publishes what its peers need in the launcher's key-value space and reads theirs.
//!
//! Contract: a [`Store`] is a launcher's key-value space: what a rank puts before a fence, every rank
//! can get after it. [`prepare`] (one put, one fence, `size` gets) finds which ranks share a host,
//! this rank's place among them, the job key and the address to bind; [`exchange`] (one put, one
//! fence, `size` gets) gives the job table; the caller then ends the store ([`Store::finish`]), after
//! the kernel step (`join::rendezvous`: on one host, one more put and fence for the kernel
//! service's grant). Everything read from the store is
//! checked before it is used: a malformed value is an error naming the rank it came from.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

use boad_proto::lines::PeerEntry;

use super::{JobInfo, JoinError};

/// A launcher's key-value space, as a rank uses it.
pub(crate) trait Store {
    /// Which launcher serves it, for messages (`"MPICH's mpiexec (PMI-1)"`).
    fn launcher(&self) -> &'static str;
    /// Publishes `key` = `value` (both at most 64 bytes of `[A-Za-z0-9._,:/-]`), visible to every
    /// rank after the next [`fence`](Store::fence).
    fn put(&mut self, key: &str, value: &str) -> Result<(), JoinError>;
    /// Returns when every rank of the job has called it.
    fn fence(&mut self) -> Result<(), JoinError>;
    /// The value a rank put under `key` before the last fence.
    fn get(&mut self, key: &str) -> Result<String, JoinError>;
    /// Tells the launcher this rank is done with the store (PMI's finalize); nothing is called after.
    fn finish(&mut self) -> Result<(), JoinError> {
        Ok(())
    }
}

/// Most addresses a rank publishes for its host.
const MAX_ADDRS: usize = 4;

/// What a rank publishes about its host: which host it is ([`boad_proto::net::host_key`]) and the
/// host's addresses other hosts may reach it on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HostValue {
    /// The host's identity.
    pub key: String,
    /// Its non-loopback IPv4 addresses (at most [`MAX_ADDRS`]).
    pub addrs: Vec<Ipv4Addr>,
}

impl HostValue {
    /// This process's host.
    pub fn here() -> Result<HostValue, JoinError> {
        let key = boad_proto::net::host_key().map_err(|e| JoinError::Host(e.to_string()))?;
        let addrs = boad_proto::net::ipv4_interfaces()
            .map_err(|e| JoinError::Host(format!("cannot list the interfaces: {e}")))?
            .into_iter()
            .filter(|i| i.up && !i.loopback && !i.ip.is_loopback())
            .map(|i| i.ip)
            .take(MAX_ADDRS)
            .collect();
        Ok(HostValue { key, addrs })
    }

    fn format(&self) -> String {
        let mut s = self.key.clone();
        for a in &self.addrs {
            s.push(',');
            s.push_str(&a.to_string());
        }
        s
    }

    fn parse(text: &str) -> Option<HostValue> {
        let mut parts = text.trim().split(',');
        let key = parts.next()?.to_string();
        if !boad_proto::net::is_host_key(&key) {
            return None;
        }
        let addrs = parts
            .map(|a| a.parse::<Ipv4Addr>().ok())
            .collect::<Option<Vec<_>>>()?;
        (addrs.len() <= MAX_ADDRS).then_some(HostValue { key, addrs })
    }
}

/// Where each rank sits, found from every rank's [`HostValue`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    /// Host id of every rank: hosts are numbered in the order of their lowest rank.
    pub host_ids: Vec<u32>,
    /// This rank's index among the ranks of its host.
    pub local_rank: usize,
    /// Ranks on this rank's host.
    pub local_size: usize,
}

/// The placement of `rank` among ranks whose hosts are `hosts` (in rank order).
pub(crate) fn place(hosts: &[HostValue], rank: usize) -> Placement {
    let mut keys: Vec<&str> = Vec::new();
    let host_ids: Vec<u32> = hosts
        .iter()
        .map(|h| match keys.iter().position(|k| *k == h.key) {
            Some(i) => i as u32,
            None => {
                keys.push(&h.key);
                (keys.len() - 1) as u32
            }
        })
        .collect();
    let mine = host_ids[rank];
    Placement {
        local_rank: host_ids[..rank].iter().filter(|&&h| h == mine).count(),
        local_size: host_ids.iter().filter(|&&h| h == mine).count(),
        host_ids,
    }
}

/// The address this host's ranks bind to: 127.0.0.1 on a job of one host; else the address the
/// routing table picks towards the other hosts' addresses (the first that has a route), so no
/// interface name is assumed.
pub(crate) fn bind_address(
    hosts: &[HostValue],
    placement: &Placement,
    rank: usize,
) -> Result<IpAddr, JoinError> {
    let mine = placement.host_ids[rank];
    let others: Vec<(usize, &HostValue)> = hosts
        .iter()
        .enumerate()
        .filter(|(r, _)| placement.host_ids[*r] != mine)
        .collect();
    if others.is_empty() {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    for (_, h) in &others {
        for &a in &h.addrs {
            if let Some(ip) = source_towards(a) {
                return Ok(ip);
            }
        }
    }
    let listed: Vec<String> = others
        .iter()
        .take(4)
        .map(|(r, h)| format!("rank {r} at {:?}", h.addrs))
        .collect();
    Err(JoinError::Host(format!(
        "no address of this host routes to the ranks on other hosts ({}); set BOAD_BIND_ADDR to \
         this host's address on the network that joins them",
        listed.join(", ")
    )))
}

/// The local address the kernel would send from to reach `dst` (a UDP `connect` sends nothing).
fn source_towards(dst: Ipv4Addr) -> Option<IpAddr> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.connect(SocketAddr::from((dst, 9))).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

fn host_key_name(rank: usize) -> String {
    format!("boad-h-{rank}")
}

fn peer_key_name(rank: usize) -> String {
    format!("boad-p-{rank}")
}

const JOB_KEY: &str = "boad-job";

/// The first half of joining through `store`: publishes this rank's host (rank 0 also a fresh job
/// key), waits for every rank, and fills in `info`'s host id, local rank and size, job key and bind
/// address (`bind` overrides the address, from `BOAD_BIND_ADDR`). Returns every rank's host id.
pub(crate) fn prepare(
    store: &mut dyn Store,
    info: &mut JobInfo,
    here: &HostValue,
    bind: Option<IpAddr>,
) -> Result<Vec<u32>, JoinError> {
    let who = store.launcher();
    let bad = |rank: usize, what: &str, value: &str| {
        JoinError::Protocol(format!(
            "{who}: rank {rank} published {what} {value:?}, which is not boad's"
        ))
    };
    if info.rank == 0 {
        let job = loop {
            let k: u64 = rand::random();
            if k != 0 {
                break k;
            }
        };
        store.put(JOB_KEY, &format!("{job:016x}"))?;
    }
    store.put(&host_key_name(info.rank), &here.format())?;
    store.fence()?;
    let job = store.get(JOB_KEY)?;
    info.job = u64::from_str_radix(job.trim(), 16)
        .ok()
        .filter(|&k| k != 0 && job.trim().len() == 16)
        .ok_or_else(|| bad(0, "the job key", &job))?;
    let mut hosts = Vec::with_capacity(info.size);
    for r in 0..info.size {
        let v = store.get(&host_key_name(r))?;
        hosts.push(HostValue::parse(&v).ok_or_else(|| bad(r, "its host", &v))?);
    }
    if hosts[info.rank] != *here {
        return Err(bad(
            info.rank,
            "a host that is not this one",
            &hosts[info.rank].format(),
        ));
    }
    let placement = place(&hosts, info.rank);
    info.host_id = placement.host_ids[info.rank];
    info.local_rank = placement.local_rank;
    info.local_size = placement.local_size;
    info.bind = match bind {
        Some(b) => b,
        None => bind_address(&hosts, &placement, info.rank)?,
    };
    Ok(placement.host_ids)
}

/// The second half: publishes this rank's sockets (`me`), waits for every rank and returns the job
/// table, every entry checked. The caller ends the store ([`Store::finish`]).
pub(crate) fn exchange(
    store: &mut dyn Store,
    host_ids: &[u32],
    me: &PeerEntry,
) -> Result<Vec<PeerEntry>, JoinError> {
    store.put(
        &peer_key_name(me.rank),
        &format!("{},{},{},{}", me.ip, me.port, me.pulse, me.pid),
    )?;
    store.fence()?;
    let who = store.launcher();
    let mut table = Vec::with_capacity(host_ids.len());
    for (rank, &host_id) in host_ids.iter().enumerate() {
        let v = store.get(&peer_key_name(rank))?;
        let entry = parse_peer(&v, rank, host_id).ok_or_else(|| {
            JoinError::Protocol(format!(
                "{who}: rank {rank} published the address {v:?}, which is not boad's"
            ))
        })?;
        table.push(entry);
    }
    if table[me.rank] != *me {
        return Err(JoinError::Protocol(format!(
            "{who} gave this rank's entry as {:?}, not {me:?}",
            table[me.rank]
        )));
    }
    Ok(table)
}

fn parse_peer(v: &str, rank: usize, host_id: u32) -> Option<PeerEntry> {
    let mut f = v.trim().split(',');
    let ip: IpAddr = f.next()?.parse().ok()?;
    let port: u16 = f.next()?.parse().ok()?;
    let pulse: u16 = f.next()?.parse().ok()?;
    let pid: u32 = f.next()?.parse().ok()?;
    if f.next().is_some() || ip.is_unspecified() || ip.is_multicast() || port == 0 || pid == 0 {
        return None;
    }
    Some(PeerEntry {
        rank,
        host_id,
        ip,
        port,
        pulse,
        pid,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Barrier, Mutex};

    /// A store shared by threads (one per rank): puts become visible at the next fence.
    pub(crate) struct ThreadStore {
        shared: Arc<(Mutex<HashMap<String, String>>, Barrier)>,
        pending: Vec<(String, String)>,
    }

    impl ThreadStore {
        pub(crate) fn group(n: usize) -> Vec<ThreadStore> {
            let shared = Arc::new((Mutex::new(HashMap::new()), Barrier::new(n)));
            (0..n)
                .map(|_| ThreadStore {
                    shared: shared.clone(),
                    pending: Vec::new(),
                })
                .collect()
        }
    }

    impl Store for ThreadStore {
        fn launcher(&self) -> &'static str {
            "threads"
        }
        fn put(&mut self, key: &str, value: &str) -> Result<(), JoinError> {
            self.pending.push((key.into(), value.into()));
            Ok(())
        }
        fn fence(&mut self) -> Result<(), JoinError> {
            {
                let mut m = self.shared.0.lock().expect("store");
                m.extend(self.pending.drain(..));
            }
            self.shared.1.wait();
            Ok(())
        }
        fn get(&mut self, key: &str) -> Result<String, JoinError> {
            let m = self.shared.0.lock().expect("store");
            m.get(key)
                .cloned()
                .ok_or_else(|| JoinError::Protocol(format!("no {key}")))
        }
    }

    fn info(rank: usize, size: usize) -> JobInfo {
        let mut i = JobInfo::singleton();
        i.rank = rank;
        i.size = size;
        i
    }

    fn host(key: &str, addrs: &[[u8; 4]]) -> HostValue {
        HostValue {
            key: key.into(),
            addrs: addrs.iter().map(|&a| Ipv4Addr::from(a)).collect(),
        }
    }

    #[test]
    fn ranks_on_one_host_agree_on_the_job_and_their_places_and_bind_to_loopback() {
        let n = 5;
        let here = HostValue::here().expect("this host");
        let handles: Vec<_> = ThreadStore::group(n)
            .into_iter()
            .enumerate()
            .map(|(rank, mut store)| {
                let here = here.clone();
                std::thread::spawn(move || {
                    let mut i = info(rank, n);
                    let ids = prepare(&mut store, &mut i, &here, None).expect("prepare");
                    let me = PeerEntry {
                        rank,
                        host_id: i.host_id,
                        ip: i.bind,
                        port: 5000 + rank as u16,
                        pulse: 6000 + rank as u16,
                        pid: 100 + rank as u32,
                    };
                    let table = exchange(&mut store, &ids, &me).expect("exchange");
                    (i, table)
                })
            })
            .collect();
        let out: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("rank"))
            .collect();
        let job = out[0].0.job;
        assert_ne!(job, 0);
        for (rank, (i, table)) in out.iter().enumerate() {
            assert_eq!(i.job, job);
            assert_eq!((i.host_id, i.local_rank, i.local_size), (0, rank, n));
            assert_eq!(i.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
            assert_eq!(table, &out[0].1);
            assert_eq!(table[rank].port, 5000 + rank as u16);
        }
    }

    #[test]
    fn hosts_are_numbered_by_their_lowest_rank_and_local_ranks_follow_rank_order() {
        let (a, b, c) = ("ab-1/1", "ab-1/2", "cd/1");
        let hosts: Vec<HostValue> = [b, a, b, c, a, b]
            .iter()
            .map(|k| host(k, &[[198, 18, 0, 1]]))
            .collect();
        let p = place(&hosts, 5);
        assert_eq!(p.host_ids, vec![0, 1, 0, 2, 1, 0]);
        assert_eq!((p.local_rank, p.local_size), (2, 3));
        let p = place(&hosts, 3);
        assert_eq!((p.local_rank, p.local_size), (0, 1));
    }

    #[test]
    fn a_job_over_hosts_binds_where_the_route_to_another_host_leaves() {
        // 127.0.0.2 is routed through lo: not an address other hosts could use.
        let hosts = vec![host("a/1", &[]), host("b/1", &[[127, 0, 0, 2]])];
        let p = place(&hosts, 0);
        let err = bind_address(&hosts, &p, 0).expect_err("no usable route");
        assert!(err.to_string().contains("BOAD_BIND_ADDR"), "{err}");
        let one = vec![host("a/1", &[[198, 18, 0, 1]]), host("a/1", &[])];
        assert_eq!(
            bind_address(&one, &place(&one, 1), 1).expect("one host"),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
    }

    #[test]
    fn values_from_the_store_are_checked() {
        assert_eq!(
            HostValue::parse("ab-12/345,198.18.0.1"),
            Some(host("ab-12/345", &[[198, 18, 0, 1]]))
        );
        for bad in [
            "",
            "ab/1,300.1.1.1",
            "ab/1,1.1.1.1,1.1.1.2,1.1.1.3,1.1.1.4,1.1.1.5",
            "zz/1",
            "ab/1;",
        ] {
            assert_eq!(HostValue::parse(bad), None, "{bad:?}");
        }
        assert!(parse_peer("127.0.0.1,5000,6000,42", 3, 1).is_some());
        for bad in [
            "0.0.0.0,5000,6000,42",
            "127.0.0.1,0,6000,42",
            "127.0.0.1,5000,6000,0",
            "127.0.0.1,5000,6000",
            "127.0.0.1,5000,6000,42,1",
            "224.0.0.1,5000,6000,42",
            "127.0.0.1,70000,6000,42",
        ] {
            assert_eq!(parse_peer(bad, 0, 0), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_from_the_store_parses_or_is_refused_without_panicking(s in ".{0,80}") {
            let _ = HostValue::parse(&s);
            let _ = parse_peer(&s, 0, 0);
        }
    }
}
