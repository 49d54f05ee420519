//! The hierarchical path, for jobs over several hosts with several ranks on some host: the ranks of
//! a host talk through shared memory (a [`Shm`] transport over just them, local ranks `0..k` in job
//! rank order), and one leader per host (its lowest rank) talks to the other leaders over UDP (a
//! [`Udp`] transport over just the leaders, leader ranks `0..H` in order of their hosts' lowest
//! ranks). The collectives themselves (`algorithms/hier_shm_net.rs`) run the flat algorithms on
//! these two sub-transports, one phase after the other.
//!
//! Contract: [`Hier`] meets the [`Transport`] contract for everything but `send`/`recv` (the
//! collectives use the sub-transports through [`Hier::local`] and [`Hier::net`] instead), with
//! errors naming job ranks: every error a sub-transport raises is renumbered from its local or
//! leader numbering to job ranks ([`Error::renumber`]).
//!
//! The launcher connection: both sub-transports must hear `EXIT` lines while they wait, and each
//! reads its own connection. A relay thread reads the real one and writes every line to one socket
//! pair per sub-transport, with the rank of an `EXIT` line translated into that sub-transport's
//! numbering (lines about ranks it does not hold are dropped). When the launcher connection closes,
//! the relay closes both.
//!
//! Failures cross levels: a rank that fails a collective posts the abort on both sub-transports, so
//! a leader tells its host and the other leaders at once. An abort a leader only learns of later (a
//! collective it had already finished failed elsewhere, e.g. a wrong root) is relayed to the other
//! level between the phases of its next collective and in `take_deferred`, so every rank hears of it
//! at the latest in its next collective, as on the flat paths.
//!
//! Waiting on one level services the other: while a leader waits for the network, its shared-memory
//! heartbeat keeps beating and its rings keep moving, and while it waits for its host it keeps
//! answering the other leaders' probes (see [`Service`]). A leader busy in a long network phase
//! thus never looks dead to its host, nor one in a long local phase to the other leaders.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};

use super::kernel::{kernel_fits, KernelUdp};
use super::ledger::{SigLog, SIG_LOG};
use super::shm::Shm;
use super::udp::Udp;
use super::{Ctx, Level, Session, Stats, Transport};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::join::JobInfo;
use crate::types::{Coll, Signature};
use boad_proto::lines::{Line, PeerEntry, MAX_LINE};
use boad_proto::Layout;

/// A level shared between [`Hier`] and the other level's idle hook.
type Shared = Arc<Mutex<Box<dyn Level>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Both levels of the hierarchical path, for one rank.
pub(crate) struct Hier {
    rank: usize,
    layout: Layout,
    /// This rank's host.
    host: usize,
    local: Shared,
    /// The leaders' transport; `Some` on leaders only.
    net: Option<Shared>,
    /// Recent calls: to relay an abort of a finished collective with its call, and to tell which
    /// path the last one took.
    sigs: SigLog,
    /// Collectives whose abort this rank relayed, or failed itself (posted on both levels).
    relayed: BTreeSet<u32>,
    /// Collectives whose deferred error was handed out (both levels may hold one).
    reported: BTreeSet<u32>,
    /// Collectives completed on this path (`Stats::collectives_hier`).
    collectives: u64,
    /// The leaders' transport has the kernel path (the launcher filled the leaders' communicator);
    /// known on every rank.
    net_kernel: bool,
    /// The launcher connection the relay thread reads; shut down on drop, which ends the thread.
    launcher: Option<UnixStream>,
}

impl Drop for Hier {
    fn drop(&mut self) {
        if let Some(c) = &self.launcher {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Copies the launcher's lines to one socket per sub-transport, translating `EXIT` ranks.
fn relay(
    mut conn: UnixStream,
    leftover: Vec<u8>,
    feeds: Vec<(socket2::Socket, Vec<Option<usize>>)>,
) {
    let mut feeds: Vec<Option<(socket2::Socket, Vec<Option<usize>>)>> =
        feeds.into_iter().map(Some).collect();
    let mut buf = leftover;
    let mut chunk = [0u8; 1024];
    loop {
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let parsed = Line::parse(&String::from_utf8_lossy(&line));
            for slot in feeds.iter_mut() {
                let Some((sock, map)) = slot.as_ref() else {
                    continue;
                };
                let out = match &parsed {
                    Some(Line::Exit { rank, code }) => match map.get(*rank).copied().flatten() {
                        Some(r) => Line::Exit {
                            rank: r,
                            code: *code,
                        }
                        .format()
                        .into_bytes(),
                        None => continue,
                    },
                    _ => line.clone(),
                };
                // MSG_NOSIGNAL: a reader that is gone (the communicator was dropped) must not raise
                // SIGPIPE in a C or Python host process; that feed is just closed.
                let mut off = 0;
                while off < out.len() {
                    match sock.send_with_flags(&out[off..], libc::MSG_NOSIGNAL) {
                        Ok(n) => off += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            *slot = None;
                            break;
                        }
                    }
                }
            }
        }
        if feeds.iter().all(Option::is_none) {
            return;
        }
        // An unfinished line this long is no protocol line.
        if buf.len() > MAX_LINE {
            buf.clear();
        }
        match conn.read(&mut chunk) {
            // The launcher is gone: closing the feeds tells the sub-transports.
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

impl Hier {
    /// Joins this host's shared memory and, on a leader, the leaders' UDP transport over `sock`,
    /// with the kernel path's leaders communicator when the launcher attached it (`kernel`: its
    /// trigger port and the communicator's id).
    pub fn new(
        info: &JobInfo,
        table: &[PeerEntry],
        sock: std::net::UdpSocket,
        conn: Option<UnixStream>,
        leftover: Vec<u8>,
        cfg: Config,
        kernel: Option<(u16, u32)>,
    ) -> Result<Hier> {
        let rank = info.rank;
        let layout = Layout::of(table);
        let (host, local_rank) = layout.place[rank];
        let leaders = layout.leaders.clone();
        let is_leader = local_rank == 0;
        let io = |what| Error::io_at(rank, what);

        // The feeds of the launcher's lines, one per sub-transport.
        let mut launcher = None;
        let (local_conn, net_conn) = match conn {
            None => (None, None),
            Some(conn) => {
                conn.set_nonblocking(false)
                    .map_err(io("reading the launcher connection"))?;
                launcher = Some(
                    conn.try_clone()
                        .map_err(io("reading the launcher connection"))?,
                );
                let mut feeds = Vec::new();
                let (mine, theirs) =
                    UnixStream::pair().map_err(io("creating the launcher relay"))?;
                let local_map = (0..table.len())
                    .map(|r| (layout.place[r].0 == host).then_some(layout.place[r].1))
                    .collect();
                feeds.push((socket2::Socket::from(theirs), local_map));
                let net_conn = if is_leader {
                    let (m, t) = UnixStream::pair().map_err(io("creating the launcher relay"))?;
                    let net_map = (0..table.len())
                        .map(|r| leaders.iter().position(|&l| l == r))
                        .collect();
                    feeds.push((socket2::Socket::from(t), net_map));
                    Some(m)
                } else {
                    None
                };
                std::thread::Builder::new()
                    .name("boad-launcher-relay".into())
                    .spawn(move || relay(conn, leftover, feeds))
                    .map_err(io("starting the launcher relay thread"))?;
                (Some(mine), net_conn)
            }
        };

        let members = &layout.hosts[host];
        let local_table = Self::sub_table(table, members);
        let local_info = JobInfo {
            rank: local_rank,
            size: members.len(),
            local_rank,
            local_size: members.len(),
            ..info.clone()
        };
        let note_local = Self::note_of("the ranks of this host", members);
        let global_local = |r: usize| members.get(r).copied().unwrap_or(r);
        let mut local = Shm::new(
            &local_info,
            &local_table,
            local_conn,
            Vec::new(),
            cfg.clone(),
        )
        .map_err(|e| e.renumber(&global_local, &note_local))?;
        // Only leaders use the network; the others keep the socket bound for the rendezvous, which
        // tells this host's peers this process is this rank (`transport::gone`).
        let sock = if is_leader {
            Some(sock)
        } else {
            local.hold_socket(sock);
            None
        };
        // An allgather ends with a bcast of every rank's block inside each host.
        local.set_gather_blocks(table.len());
        local.set_job_ranks(members.clone());
        let local: Box<dyn Level> = Box::new(local);

        let net = if let Some(sock) = sock {
            let net_table = Self::sub_table(table, &leaders);
            let note_net = Self::note_of("the host leaders", &leaders);
            let global_net = |r: usize| leaders.get(r).copied().unwrap_or(r);
            let mut udp = Udp::new(host, info.job, sock, &net_table, net_conn, Vec::new(), cfg)
                .map_err(|e| e.renumber(&global_net, &note_net))?;
            udp.set_job_ranks(leaders.clone());
            // The leaders' allgather gathers slabs of a host's blocks, padded to the largest host.
            udp.set_gather_blocks(layout.hosts.len() * layout.max_local());
            let leaders_net: Box<dyn Level> = match kernel {
                Some((trigger, comm)) => Box::new(KernelUdp::new(udp, trigger, comm)),
                None => Box::new(udp),
            };
            Some(leaders_net)
        } else {
            None
        };
        let mut hier = Hier::from_levels(rank, layout, local, net, kernel.is_some());
        hier.launcher = launcher;
        Ok(hier)
    }

    /// The hierarchical path of `rank` of a job laid out as `layout` over its two levels: `local`
    /// (the ranks of its host, local ranks `0..k`) and, on a host's leader, `net` (the leaders,
    /// leader ranks `0..H`), whose transport takes the kernel path where calls fit when
    /// `net_kernel` (known on every rank). Each level, while it waits, keeps the other going.
    pub(crate) fn from_levels(
        rank: usize,
        layout: Layout,
        local: Box<dyn Level>,
        net: Option<Box<dyn Level>>,
        net_kernel: bool,
    ) -> Hier {
        let local = Arc::new(Mutex::new(local));
        let net = net.map(|n| Arc::new(Mutex::new(n)));
        // Weak references in the hooks: no reference cycle.
        if let Some(net) = &net {
            let weak_net = Arc::downgrade(net);
            lock(&local).set_idle_hook(Box::new(move || {
                if let Some(n) = weak_net.upgrade() {
                    if let Ok(mut n) = n.try_lock() {
                        n.service();
                    }
                }
            }));
            let weak_local = Arc::downgrade(&local);
            lock(net).set_idle_hook(Box::new(move || {
                if let Some(l) = weak_local.upgrade() {
                    if let Ok(mut l) = l.try_lock() {
                        l.service();
                    }
                }
            }));
        }
        let host = layout.place[rank].0;
        Hier {
            rank,
            layout,
            host,
            local,
            net,
            sigs: SigLog::default(),
            relayed: BTreeSet::new(),
            reported: BTreeSet::new(),
            collectives: 0,
            net_kernel,
            launcher: None,
        }
    }
}

impl Hier {
    /// The hosts of the job.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Whether the leaders use the kernel path where a call fits it.
    pub fn net_kernel(&self) -> bool {
        self.net_kernel
    }

    /// Whether the network level of a collective `sig` takes the kernel path: the leaders'
    /// transport decides with the same function over the bytes each leader sends (a whole host's
    /// blocks, padded to the largest host, for allgather).
    fn net_takes_kernel(&self, sig: &Signature) -> bool {
        let elem = sig.dtype.map_or(1, |d| d.size());
        let bytes = match sig.coll {
            Coll::Barrier => 1,
            Coll::Allgather => self.layout.max_local() * sig.count as usize * elem,
            Coll::Bcast | Coll::Reduce | Coll::Allreduce => sig.count as usize * elem,
        };
        self.net_kernel && kernel_fits(self.layout.hosts.len(), sig, bytes)
    }

    /// This rank's (host, index among the host's ranks).
    pub fn place(&self) -> (usize, usize) {
        self.layout.place[self.rank]
    }

    /// Runs `f` on this host's shared-memory transport (local ranks `0..k`); errors name job ranks.
    pub fn local<R>(&self, f: impl FnOnce(&mut dyn Transport) -> Result<R>) -> Result<R> {
        let members = &self.layout.hosts[self.host];
        let r = f(lock(&self.local).as_mut());
        r.map_err(|e| {
            e.renumber(
                &|r| members.get(r).copied().unwrap_or(r),
                &Self::note_of("the ranks of this host", members),
            )
        })
    }

    /// Runs `f` on the leaders' network transport (leader ranks `0..H`); errors name job ranks.
    pub fn net<R>(&self, f: impl FnOnce(&mut dyn Transport) -> Result<R>) -> Result<R> {
        let Some(net) = &self.net else {
            return Err(Error::protocol(
                self.rank,
                "a hierarchical collective".into(),
                "only a host's leader uses the network (internal error)".into(),
            ));
        };
        let leaders = &self.layout.leaders;
        let r = f(lock(net).as_mut());
        r.map_err(|e| {
            e.renumber(
                &|r| leaders.get(r).copied().unwrap_or(r),
                &Self::note_of("the host leaders", leaders),
            )
        })
    }

    /// On a leader: passes on to the other level the aborts of collectives before `cur` that one
    /// level heard of (see the module docs). A no-op elsewhere.
    pub fn relay_aborts(&mut self, cur: u32) {
        let Some(net) = &self.net else {
            return;
        };
        let members = &self.layout.hosts[self.host];
        let leaders = &self.layout.leaders;
        let from_local = lock(&self.local).seen_aborts();
        let from_net = lock(net).seen_aborts();
        let old = |s: u32| cur.wrapping_sub(s).wrapping_sub(1) < SIG_LOG as u32;
        for (to_net, (seq, by, reason)) in from_local
            .into_iter()
            .map(|a| (true, a))
            .chain(from_net.into_iter().map(|a| (false, a)))
        {
            if !old(seq) || self.relayed.contains(&seq) {
                continue;
            }
            let Some(sig) = self.sigs.get(seq) else {
                continue;
            };
            let by = if to_net {
                members.get(by).copied().unwrap_or(by)
            } else {
                leaders.get(by).copied().unwrap_or(by)
            };
            let err: Error = Error::aborted(self.rank, seq, by, reason);
            let ctx = Ctx { seq, sig };
            if to_net {
                lock(net).fail(&ctx, &err);
            } else {
                lock(&self.local).fail(&ctx, &err);
            }
            self.relayed.insert(seq);
        }
    }

    /// The entries of job ranks `ranks`, renumbered `0..` in that order: a sub-transport's table.
    fn sub_table(table: &[PeerEntry], ranks: &[usize]) -> Vec<PeerEntry> {
        ranks
            .iter()
            .enumerate()
            .map(|(i, &r)| PeerEntry {
                rank: i,
                ..table[r].clone()
            })
            .collect()
    }

    fn note_of(what: &str, ids: &[usize]) -> String {
        format!("rank numbers in this message count {what}, whose job ranks are {ids:?}")
    }
}

impl Session for Hier {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.layout.place.len()
    }

    fn begin(&mut self, ctx: &Ctx) -> Result<()> {
        self.sigs.push(ctx);
        let cutoff = ctx.seq.saturating_sub(SIG_LOG as u32);
        self.relayed.retain(|s| *s >= cutoff);
        self.reported.retain(|s| *s >= cutoff);
        let local = self.local(|t| t.begin(ctx));
        let net = match self.net {
            Some(_) => self.net(|t| t.begin(ctx)),
            None => Ok(()),
        };
        self.relay_aborts(ctx.seq);
        local.and(net)
    }

    fn take_deferred(&mut self, seq: u32) -> Option<Error> {
        self.relay_aborts(seq);
        let mut levels = vec![true];
        if self.net.is_some() {
            levels.push(false);
        }
        for is_local in levels {
            let got = if is_local {
                self.local(|t| t.take_deferred(seq).map_or(Ok(()), Err))
            } else {
                self.net(|t| t.take_deferred(seq).map_or(Ok(()), Err))
            };
            if let Err(e) = got {
                // Both levels may hold an error for the same collective: hand it out once.
                if e.seq().is_none_or(|s| self.reported.insert(s)) {
                    return Some(e);
                }
            }
        }
        None
    }

    fn end(&mut self, ctx: &Ctx) {
        lock(&self.local).end(ctx);
        if let Some(n) = &self.net {
            lock(n).end(ctx);
        }
        self.collectives += 1;
    }

    fn fail(&mut self, ctx: &Ctx, err: &Error) {
        // Posted on both levels: the host and the other leaders hear of it at once.
        self.relayed.insert(ctx.seq);
        lock(&self.local).fail(ctx, err);
        if let Some(n) = &self.net {
            lock(n).fail(ctx, err);
        }
    }

    fn flush(&mut self) -> Result<()> {
        let net = match self.net {
            Some(_) => self.net(|t| t.flush()),
            None => Ok(()),
        };
        let local = self.local(|t| t.flush());
        net.and(local)
    }

    fn stats(&self) -> Stats {
        let l = lock(&self.local).stats();
        let n = self
            .net
            .as_ref()
            .map(|n| lock(n).stats())
            .unwrap_or_default();
        Stats {
            collectives_shm: l.collectives_shm,
            shm_messages_sent: l.shm_messages_sent,
            shm_messages_received: l.shm_messages_received,
            shm_bytes_sent: l.shm_bytes_sent,
            shm_slot_posts: l.shm_slot_posts,
            futex_waits: l.futex_waits,
            collectives_hier: self.collectives,
            ..n
        }
    }

    fn path(&self) -> crate::types::Path {
        // The last collective's call decides it on every rank, as the leaders' transport decided.
        if self
            .sigs
            .last()
            .is_some_and(|sig| self.net_takes_kernel(sig))
        {
            crate::types::Path::HierKernel
        } else {
            crate::types::Path::Hier
        }
    }

    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.net.as_ref().and_then(|n| lock(n).local_addr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CollectiveError;

    #[test]
    fn errors_leave_a_sub_transport_with_job_ranks() {
        let ids = [3usize, 4, 5];
        let global = |r: usize| ids[r];
        let e: Error = Error::new(
            0,
            CollectiveError::PeerExited {
                call: "allreduce #2".into(),
                peer: 2,
                code: 137,
            },
        );
        let e = e.renumber(&global, "n");
        assert_eq!(
            e.to_string(),
            "rank 3: allreduce #2: rank 5 exited with status 137 before sending the data this rank waits for"
        );
        let e: Error = Error::aborted(1, 9, 0, "r".into());
        let e = e.renumber(&global, "n");
        assert_eq!(e.seq(), Some(9));
        assert_eq!(e.to_string(), "rank 4: collective #9 failed on rank 3: r");
    }
}
