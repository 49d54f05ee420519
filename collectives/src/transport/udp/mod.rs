//! Userspace UDP transport: reliable, chunked messages over one UDP socket per rank.
//!
//! Each message is cut into chunks of `BOAD_CHUNK_BYTES`, each sent as one datagram behind the shared
//! [`Header`]. The receiver acknowledges (`ACK`: all chunks below `next` plus a 64-chunk bitmap) every
//! few chunks, on a gap and on completion; the sender keeps a message until it is fully acknowledged,
//! keeps at most `BOAD_WINDOW` chunks of it unacknowledged, resends holes an ACK reveals, and resends
//! everything unacknowledged when no ACK came for a retransmission timeout (doubling up to 1 s). A
//! receiver waiting for a message sends `PROBE`s (also carrying its bitmap, so a probe is a NACK); a
//! sender that has not produced the message yet answers `STATUS` with its current call, which is how a
//! live-but-busy peer is told from a dead one and how mismatched calls are found.
//!
//! Completed messages are numbered per (sender, receiver) pair, so a resent chunk of a finished
//! message is acknowledged again but never delivered twice.
//!
//! What is received: every datagram is first classified by [`wire::classify`] (a pure function of
//! its bytes, source address and the peer table; anything it refuses is counted in
//! `Stats::foreign`). A new message is received only for a collective within the window of
//! `SIG_LOG` collectives of this rank's current one, from a message id within `MSG_WINDOW` of the
//! sender's, and only as large as this rank's call for it can need, or, for a collective this rank
//! has not started, as one of its remembered calls ([`wire::admit`]): no datagram makes a rank
//! allocate more than its own collectives need. A refused message is sent again by its sender
//! later (its retransmission timer, or this rank's probe once it waits for it). A message of a call
//! other than this rank's is not received: the mismatch is noted and the sender told it arrived.
//!
//! System calls: the socket is polled edge-triggered for READABLE only, and for WRITABLE too only
//! while a send is blocked (a full socket buffer) — registered for good, every datagram sent would
//! wake the next wait for nothing. A wake-up reads with one `recvmmsg` per batch of up to
//! [`rx::BATCH`] datagrams into fixed buffers, and reads again only after a full batch
//! (`rx`, for why a short batch means the socket is empty). Messages are assembled in buffers taken
//! from a pool ([`rx::MsgPool`]) and handed back after the caller copied or folded them
//! ([`Transport::recv_in_place`]): no allocation per message for the sizes a program repeats.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use boad_common::{flags, kind, Header, HEADER_LEN, MAGIC, VERSION};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use rand::{Rng, SeedableRng};

use super::gone::{self, PortProbe, ProcWatch};
use super::launcher::LauncherFeed;
use super::ledger::{check_peer, Exit, Ledger, Life};
use super::{Ctx, Level, Session, Stats, Transport};
use crate::config::Config;
use crate::error::{Error, Result, UsageError};
use crate::types::Signature;
use boad_proto::lines::PeerEntry;
use wire::{Admit, Chunk, Datagram, Receiver};

pub(crate) mod reliable;
pub(crate) mod rx;
pub(crate) mod wire;

use reliable::{Bits, DoneSet};
use rx::{MsgPool, RxBatch};

/// The kernel path's share of what this transport receives (`transport::kernel`): the datagrams of
/// its kinds (RESULT, CONTRIB, BCAST, KNACK), at once, whatever this rank is waiting for — a KNACK
/// must be answered even while the rank waits in a userspace collective — and the start of every
/// collective. Every receiving method takes one; a transport without the kernel path passes
/// [`NoKernel`].
pub(crate) trait KernelSide {
    /// Takes datagram `d`, its payload at `payload` of [`Udp::received`].
    fn on_datagram(&mut self, udp: &mut Udp, d: &Datagram, payload: Range<usize>) -> Result<()>;
    /// Collective `seq` starts.
    fn begin(&mut self, seq: u32);
}

/// No kernel path: its datagrams are foreign.
pub(crate) struct NoKernel;

impl KernelSide for NoKernel {
    fn on_datagram(&mut self, udp: &mut Udp, _d: &Datagram, _p: Range<usize>) -> Result<()> {
        udp.wire.stats.foreign += 1;
        Ok(())
    }
    fn begin(&mut self, _seq: u32) {}
}

const SOCK: Token = Token(0);
const LAUNCHER: Token = Token(1);
/// Rank r's pidfd (`transport::gone`): token `PIDFD + r`.
const PIDFD: usize = 2;
/// Largest datagram we send (header + the largest chunk).
const MAX_DATAGRAM: usize = rx::SLOT;
const RTO_BASE: Duration = Duration::from_millis(20);
const RTO_MAX: Duration = Duration::from_secs(1);
/// A hole an ACK reveals is resent at most this often.
const FAST_GAP: Duration = Duration::from_millis(2);
pub(crate) const PROBE_BASE: Duration = Duration::from_millis(30);
pub(crate) const PROBE_MAX: Duration = Duration::from_millis(500);
/// How many times one datagram is sent again when errors of earlier datagrams fail its send
/// ([`Wire::send`]).
const ICMP_RETRIES: usize = 4;
/// ACK after this many chunks of one message even without a gap.
const ACK_EVERY: u32 = 16;
/// A collective starts or ends without reading the socket when it was read to the end this
/// recently ([`Udp::drain_if_stale`]): what arrived since waits for the next wait, as MPI's eager
/// sends wait for the next call. Keeps a kernel-path bcast root and a reduce contributor at one
/// system call per collective.
const FRESH: Duration = Duration::from_millis(10);
/// ... and at most this many collectives in a row skip reading it (KNACKs for resends must be served
/// well within the `RETAIN` collectives a rank can resend).
const MAX_SKIPPED_DRAINS: u32 = 128;

struct Peer {
    addr: SocketAddr,
    next_msg: u32,
    last_heard: Instant,
    /// Its end, once the launcher said so or this rank saw it.
    exited: Option<Exit>,
    /// When this rank saw its end itself (`Exit::Gone`; see [`Udp::saw_gone`]).
    gone_at: Option<Instant>,
    done: DoneSet,
    /// Its liveness socket (`transport::pulse`), if it has one.
    pulse: Option<SocketAddr>,
    /// Its last PONG: when, the collective it was at, its `flags::INSIDE` bit.
    pong: Option<(Instant, u32, bool)>,
    /// When we last PINGed it.
    pinged: Option<Instant>,
    /// When we first PINGed it since we last heard from it (datagram or PONG): how long it has
    /// left us asking.
    asking: Option<Instant>,
    /// When we last warned that we wait for it.
    warned: Option<Instant>,
    /// When this rank started the wait for it that is going on (see [`Udp::watch`]).
    watched: Instant,
    /// Probes of its liveness port for refusals, without a launcher (`transport::gone`).
    probe: PortProbe,
}

struct OutMsg {
    dst: usize,
    msg: u32,
    seq: u32,
    tag: u32,
    sig: Signature,
    data: Vec<u8>,
    chunk: usize,
    nchunks: u32,
    acked: Bits,
    n_acked: u32,
    sent_upto: u32,
    last_tx: Vec<Option<Instant>>,
    last_progress: Instant,
    rto: Duration,
}

/// A message being received.
pub(crate) struct InMsg {
    seq: u32,
    tag: u32,
    sig: Signature,
    nchunks: u32,
    /// Its chunk size (see [`wire::chunk_of`]).
    stride: usize,
    /// Its size.
    total: usize,
    n_got: u32,
    since_ack: u32,
    store: Store,
}

/// Where a message's chunks go as they arrive.
enum Store {
    /// A buffer of the message's size (a size this rank's own calls need), and which chunks are in.
    Whole { buf: Vec<u8>, got: Bits },
    /// The chunks as they come, for a message of a collective this rank has not started and whose
    /// size it cannot vouch for yet: what it holds grows with what arrives, never with what a header
    /// claims (see [`Admit::Early`]).
    Pieces(std::collections::BTreeMap<u32, Vec<u8>>),
}

impl InMsg {
    /// The message whose first datagram to arrive (any chunk `c` of it) is `d`; `early`: its size
    /// is not vouched for (see [`Store::Pieces`]); else its buffer comes from `pool`.
    pub(crate) fn new(d: &Datagram, c: &Chunk, early: bool, pool: &mut MsgPool) -> InMsg {
        InMsg {
            seq: d.h.seq,
            tag: d.h.tag,
            sig: d.sig,
            nchunks: d.h.nchunks,
            stride: c.stride,
            total: c.total,
            n_got: 0,
            since_ack: 0,
            store: if early {
                Store::Pieces(std::collections::BTreeMap::new())
            } else {
                Store::Whole {
                    buf: pool.take(c.total),
                    got: Bits::new(d.h.nchunks),
                }
            },
        }
    }

    /// Whether `d` (chunk `c`) belongs to this message: the same collective, step and call, cut
    /// the same way.
    pub(crate) fn fits(&self, d: &Datagram, c: &Chunk) -> bool {
        self.seq == d.h.seq
            && self.tag == d.h.tag
            && self.sig == d.sig
            && self.nchunks == d.h.nchunks
            && self.stride == c.stride
            && self.total == c.total
    }

    /// Copies chunk number `i` (`c`, bytes `payload`) in; true if it had not arrived yet. `d` must
    /// [`fit`](Self::fits).
    pub(crate) fn put(&mut self, i: u32, c: &Chunk, payload: &[u8]) -> bool {
        let fresh = match &mut self.store {
            Store::Whole { buf, got } => {
                let fresh = got.set(i);
                if fresh {
                    buf[c.off..c.off + c.len].copy_from_slice(payload);
                }
                fresh
            }
            Store::Pieces(pieces) => match pieces.entry(i) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(payload.to_vec());
                    true
                }
                std::collections::btree_map::Entry::Occupied(_) => false,
            },
        };
        if fresh {
            self.n_got += 1;
            self.since_ack += 1;
        }
        fresh
    }

    /// All chunks arrived.
    pub(crate) fn complete(&self) -> bool {
        self.n_got == self.nchunks
    }

    /// (first chunk not in, bitmap of the 64 chunks from it): what an ACK says.
    fn ack_state(&self) -> (u32, u64) {
        match &self.store {
            Store::Whole { got, .. } => got.ack_state(self.nchunks),
            Store::Pieces(pieces) => {
                let has = |i: u32| pieces.contains_key(&i);
                let next = (0..self.nchunks).find(|&i| !has(i)).unwrap_or(self.nchunks);
                let mut map = 0u64;
                for i in 0..64 {
                    if next
                        .checked_add(i)
                        .is_some_and(|c| c < self.nchunks && has(c))
                    {
                        map |= 1 << i;
                    }
                }
                (next, map)
            }
        }
    }

    /// The message's bytes (complete).
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        match self.store {
            Store::Whole { buf, .. } => buf,
            Store::Pieces(pieces) => {
                let mut buf = Vec::with_capacity(self.total);
                for piece in pieces.into_values() {
                    buf.extend_from_slice(&piece);
                }
                buf
            }
        }
    }
}

struct Status {
    cur: u32,
    sig: Option<Signature>,
    aborted: Option<String>,
}

/// The socket and what is needed to put datagrams on it.
struct Wire {
    rank: usize,
    job: u64,
    /// Communicator id in every header (`boad_common::kernel::comm`): which of the kernel path's
    /// communicators this transport is; datagrams with another are foreign.
    comm: u32,
    sock: UdpSocket,
    tx: Vec<u8>,
    stats: Stats,
    /// The last send found the socket buffer full, and no WRITABLE event came since.
    blocked: bool,
    /// The socket queues ICMP errors (`gone::queue_errors`): a send may fail with one that an
    /// earlier datagram caused.
    icmp_errors: bool,
}

impl Wire {
    fn header(&self, kind: u8, dst: usize, seq: u32, sig: &Signature) -> Header {
        let (coll, op, dtype) = sig.codes();
        Header {
            magic: MAGIC,
            version: VERSION,
            kind,
            coll,
            op,
            dtype,
            src: self.rank as u32,
            job: self.job,
            comm: self.comm,
            seq,
            count: sig.count,
            root: sig.root,
            dst: dst as u32,
            ..Header::default()
        }
    }

    /// Sends one datagram; false if the socket buffer is full (the caller retries later).
    fn send(&mut self, mut h: Header, payload: &[u8], to: SocketAddr) -> Result<bool> {
        h.len = payload.len() as u32;
        self.tx.clear();
        self.tx.extend_from_slice(bytemuck::bytes_of(&h));
        self.tx.extend_from_slice(payload);
        self.stats.send_calls += 1;
        let mut sent = self.sock.send_to(&self.tx, to);
        // With ICMP errors queued, the pending error of an earlier datagram (a refusal) fails this
        // send and is cleared by it: this datagram did not leave, so it is sent again, as often as
        // errors wait (each failed send clears one; the refusals stay in the error queue for
        // `Udp::read_refusals`). Without this, a rank that failed because a peer is gone could lose
        // the ABORT that tells another peer why, while the dead peer's refusals arrive.
        for _ in 0..ICMP_RETRIES {
            match &sent {
                Err(e) if self.icmp_errors && gone::from_icmp(e) => {
                    self.stats.send_calls += 1;
                    sent = self.sock.send_to(&self.tx, to);
                }
                _ => break,
            }
        }
        match sent {
            Ok(_) => {
                self.stats.datagrams_sent += 1;
                if h.kind == kind::DATA {
                    self.stats.bytes_sent += payload.len() as u64;
                }
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                self.blocked = true;
                Ok(false)
            }
            // A peer's socket that is gone makes the kernel report ECONNREFUSED on a later send; the
            // launcher tells us about exits, so this is not an error of ours.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(true),
            // Errors of earlier datagrams failed every try above: this datagram is lost (resends
            // deal with it; the refusals are read from the queue by `Udp::read_refusals`).
            Err(e) if self.icmp_errors && gone::from_icmp(&e) => {
                self.stats.send_failed += 1;
                Ok(true)
            }
            // No route (a link went down), a firewall's drop, full device queues: to this rank the
            // datagram is lost, as in the network; resends and timeouts deal with it, and a network
            // that stays away shows as a peer silent past the timeout.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::NetworkUnreachable
                        | ErrorKind::HostUnreachable
                        | ErrorKind::NetworkDown
                        | ErrorKind::PermissionDenied
                ) || e.raw_os_error() == Some(libc::ENOBUFS) =>
            {
                self.stats.send_failed += 1;
                Ok(true)
            }
            Err(source) => Err(Error::io(self.rank, "sending a datagram", source)),
        }
    }
}

/// Fuzz and property-test harness of the receive path's decisions, without a socket: `data` is a
/// job shape, calls this rank made, and a sequence of datagrams, each from a peer's own address or
/// a stranger's; each is classified ([`wire::classify`]) and its chunks received into messages as
/// [`Udp::on_data`] does (admission, [`InMsg`]). Panics on any inconsistency; returns how many
/// messages came whole.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn exercise_datagrams(data: &[u8]) -> usize {
    use crate::types::{Coll, DType};
    let Some((&[size_sel, rank_sel, calls, count_sel, flags_sel], mut rest)) =
        data.split_first_chunk()
    else {
        return 0;
    };
    let mut whole = 0;
    let size = usize::from(size_sel % 8) + 2;
    let me = Receiver {
        rank: usize::from(rank_sel) % size,
        size,
        job: 0x0b0a_d0b0_ad0b_0ad0,
        comm: 0,
        gather_blocks: size,
    };
    let addr = |r: usize| SocketAddr::from(([127, 0, 0, 1], 5000 + r as u16));
    // This rank's last calls: bcasts of a few sizes (`count_sel`), up to collective `calls`.
    let mut ledger = Ledger::default();
    for seq in 0..=u32::from(calls % 8) {
        let sig = Signature {
            coll: Coll::Bcast,
            op: None,
            dtype: Some(DType::U8),
            count: u64::from(count_sel) * u64::from(seq + 1),
            root: 0,
        };
        ledger.start(&Ctx { seq, sig });
    }
    let cur = u32::from(calls % 8);
    let mut partial: HashMap<(usize, u32), InMsg> = HashMap::new();
    let mut pool = MsgPool::default();
    while let Some((&[lo, hi, from_sel], tail)) = rest.split_first_chunk() {
        let n = usize::from(u16::from_le_bytes([lo, hi])).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        let mut bytes = bytes.to_vec();
        // Make most headers plausible, so that the deeper checks run.
        if flags_sel & 1 != 0 && bytes.len() >= HEADER_LEN {
            let mut h: Header = bytemuck::pod_read_unaligned(&bytes[..HEADER_LEN]);
            h.magic = MAGIC;
            h.version = VERSION;
            h.job = me.job;
            h.comm = me.comm;
            h.dst = me.rank as u32;
            if flags_sel & 2 != 0 {
                h.len = (bytes.len() - HEADER_LEN) as u32;
            }
            bytes[..HEADER_LEN].copy_from_slice(bytemuck::bytes_of(&h));
        }
        let from = addr(usize::from(from_sel) % (size + 1));
        let Ok(d) = wire::classify(&bytes, from, &me, |r| (r < size).then(|| addr(r))) else {
            continue;
        };
        assert_eq!(from, addr(d.src));
        assert!(d.src < size && d.src != me.rank);
        let payload = &bytes[HEADER_LEN..];
        assert_eq!(payload.len(), d.h.len as usize);
        let Some(c) = d.chunk else {
            assert!(!matches!(
                d.h.kind,
                kind::DATA | kind::BCAST | kind::CONTRIB | kind::RESULT
            ));
            continue;
        };
        assert!(c.off + c.len <= c.total && c.len == payload.len());
        if d.h.kind != kind::DATA {
            continue;
        }
        let key = (d.src, d.h.msg);
        let m = match partial.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => match wire::admit(&ledger, cur, size, d.h.seq, &d.sig, c.total) {
                Admit::Take => {
                    // A buffer sized up front is bounded by a call this rank made.
                    let most = ledger
                        .calls()
                        .filter_map(|s| crate::transport::ledger::message_limit(s, size))
                        .max()
                        .unwrap_or(0);
                    assert!(c.total as u64 <= most);
                    e.insert(InMsg::new(&d, &c, false, &mut pool))
                }
                // Anything else holds only what arrives.
                Admit::Early => e.insert(InMsg::new(&d, &c, true, &mut pool)),
                Admit::Refuse | Admit::Mismatch => continue,
            },
        };
        if !m.fits(&d, &c) {
            continue;
        }
        m.put(d.h.chunk, &c, payload);
        if m.complete() {
            let m = partial.remove(&key).expect("present");
            let bytes = m.into_bytes();
            assert_eq!(bytes.len(), c.total);
            pool.give(bytes);
            whole += 1;
        }
    }
    whole
}

/// Sets a socket buffer size past `net.core.*mem_max` (needs CAP_NET_ADMIN); false if refused.
fn set_buffer_force(s: &socket2::Socket, opt: libc::c_int, bytes: libc::c_int) -> bool {
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a pointer to a live c_int, and the fd is
    // owned by `s` for the duration of the call.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// Reliable messages over UDP.
pub(crate) struct Udp {
    wire: Wire,
    size: usize,
    cfg: Config,
    poll: Poll,
    events: Events,
    /// Whether the socket is registered for WRITABLE too (while [`Wire::blocked`]).
    writable: bool,
    /// The receive buffers and the last batch read into them.
    rx: RxBatch,
    /// The last drain stopped before the socket was empty (a handler's error): no wake-up may
    /// announce what is left.
    unread: bool,
    /// Buffers of messages, reused.
    pool: MsgPool,
    peers: Vec<Peer>,
    out: Vec<OutMsg>,
    partial: HashMap<(usize, u32), InMsg>,
    ledger: Ledger,
    status: HashMap<(usize, u32), Status>,
    cur_seq: u32,
    launcher: LauncherFeed,
    /// Without a launcher: the processes of this host's peers (`transport::gone`)...
    procs: ProcWatch,
    /// ... and whether silent peers' liveness ports are probed for refusals.
    probe_ports: bool,
    /// The latest end of a grace some peer seen gone is held for (`gone::GONE_GRACE`): waits wake
    /// then to report it.
    grace_until: Option<Instant>,
    drop_rng: rand::rngs::SmallRng,
    /// Run on every round of a wait (the hierarchical path: keeps the shared-memory level going).
    idle_hook: Option<super::Service>,
    /// When the socket was last read to the end, and how many drains were skipped since.
    last_drain: Instant,
    skipped_drains: u32,
    /// The job rank of each rank of this transport, for messages (empty: the same numbers).
    job_ranks: Vec<usize>,
    /// Blocks of the largest message of an allgather on this transport (see
    /// [`crate::transport::ledger::message_limit`]): its size, or what [`Udp::set_gather_blocks`] says.
    gather_blocks: usize,
}

impl Udp {
    /// Binds a socket on `bind`, without peers yet; returns it with its port.
    pub fn bind(rank: usize, bind: std::net::IpAddr) -> Result<(UdpSocket, u16)> {
        let io = |what| Error::io_at(rank, what);
        let domain = if bind.is_ipv4() {
            socket2::Domain::IPV4
        } else {
            socket2::Domain::IPV6
        };
        let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))
            .map_err(io("creating the UDP socket"))?;
        // Large buffers absorb a burst from several senders; FORCE works as root, else the plain
        // call is capped by net.core.{r,w}mem_max, which is fine too.
        if !set_buffer_force(&s, libc::SO_RCVBUFFORCE, 8 << 20) {
            let _ = s.set_recv_buffer_size(8 << 20);
        }
        if !set_buffer_force(&s, libc::SO_SNDBUFFORCE, 4 << 20) {
            let _ = s.set_send_buffer_size(4 << 20);
        }
        s.set_nonblocking(true)
            .map_err(io("making the socket non-blocking"))?;
        s.bind(&SocketAddr::new(bind, 0).into())
            .map_err(io("binding the UDP socket"))?;
        let sock: UdpSocket = s.into();
        let port = sock
            .local_addr()
            .map_err(io("reading the socket address"))?
            .port();
        Ok((sock, port))
    }

    /// A transport for `rank` of `table.len()` ranks over `sock`.
    pub fn new(
        rank: usize,
        job: u64,
        sock: UdpSocket,
        table: &[PeerEntry],
        launcher: Option<UnixStream>,
        launcher_buf: Vec<u8>,
        cfg: Config,
    ) -> Result<Udp> {
        let io = |what| Error::io_at(rank, what);
        let poll = Poll::new().map_err(io("creating the poller"))?;
        poll.registry()
            .register(&mut SourceFd(&sock.as_raw_fd()), SOCK, Interest::READABLE)
            .map_err(io("registering the socket"))?;
        let launcher = LauncherFeed::new(launcher, launcher_buf)
            .map_err(io("making the launcher connection non-blocking"))?;
        if let Some(fd) = launcher.fd() {
            poll.registry()
                .register(&mut SourceFd(&fd), LAUNCHER, Interest::READABLE)
                .map_err(io("registering the launcher connection"))?;
        }
        // Without a launcher's EXIT lines, this rank watches its peers itself.
        let direct = launcher.fd().is_none();
        let procs = if direct {
            ProcWatch::new(rank, table)
        } else {
            ProcWatch::default()
        };
        // ... and reads which of its datagrams a closed port refused (`transport::gone`).
        if direct && table.len() > 1 {
            gone::queue_errors(&sock).map_err(io("asking for the socket's ICMP errors"))?;
        }
        for r in 0..table.len() {
            if let Some(fd) = procs.fd(r) {
                poll.registry()
                    .register(&mut SourceFd(&fd), Token(PIDFD + r), Interest::READABLE)
                    .map_err(io("registering a peer's pidfd"))?;
            }
        }
        let now = Instant::now();
        let peers = table
            .iter()
            .map(|e| Peer {
                addr: SocketAddr::new(e.ip, e.port),
                next_msg: 0,
                last_heard: now,
                exited: None,
                gone_at: None,
                done: DoneSet::default(),
                pulse: (e.pulse != 0).then(|| SocketAddr::new(e.ip, e.pulse)),
                pong: None,
                pinged: None,
                asking: None,
                warned: None,
                watched: now,
                probe: PortProbe::default(),
            })
            .collect();
        let seed = cfg.drop_seed ^ (rank as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut t = Udp {
            wire: Wire {
                rank,
                job,
                comm: boad_common::kernel::comm::WORLD,
                sock,
                tx: Vec::with_capacity(MAX_DATAGRAM),
                stats: Stats::default(),
                blocked: false,
                icmp_errors: direct && table.len() > 1,
            },
            size: table.len(),
            cfg,
            poll,
            events: Events::with_capacity(64),
            writable: false,
            rx: RxBatch::default(),
            unread: false,
            pool: MsgPool::default(),
            peers,
            out: Vec::new(),
            partial: HashMap::new(),
            ledger: Ledger::default(),
            status: HashMap::new(),
            cur_seq: 0,
            launcher,
            procs,
            probe_ports: direct,
            grace_until: None,
            drop_rng: rand::rngs::SmallRng::seed_from_u64(seed),
            idle_hook: None,
            last_drain: now,
            skipped_drains: 0,
            job_ranks: Vec::new(),
            gather_blocks: table.len(),
        };
        // EXIT lines the rendezvous read along with its own.
        t.read_launcher();
        Ok(t)
    }

    /// What this rank is, for [`wire::classify`].
    fn receiver(&self) -> Receiver {
        Receiver {
            rank: self.wire.rank,
            size: self.size,
            job: self.wire.job,
            comm: self.wire.comm,
            gather_blocks: self.gather_blocks,
        }
    }

    /// Non-blocking progress for a rank waiting on another transport: reads what arrived (answers
    /// probes, acknowledges data) and sends what windows allow.
    pub fn service_with(&mut self, ks: &mut dyn KernelSide) {
        let _ = self.drain(ks).and_then(|()| self.pump());
    }

    /// The aborts peers sent for collectives this rank did not fail itself: (seq, peer, reason).
    pub fn seen_aborts_with(&mut self, ks: &mut dyn KernelSide) -> Vec<(u32, usize, String)> {
        let _ = self.drain(ks);
        self.ledger.peer_aborts()
    }

    fn run_idle_hook(&mut self) {
        if let Some(hook) = self.idle_hook.as_mut() {
            hook();
        }
    }

    fn rank_(&self) -> usize {
        self.wire.rank
    }

    /// Notes the exits the launcher reported.
    fn read_launcher(&mut self) {
        let registry = self.poll.registry();
        // The launcher is gone (its death signal ends us soon): stop polling its connection.
        let exits = self.launcher.poll(|fd| {
            let _ = registry.deregister(&mut SourceFd(&fd));
        });
        for (rank, code) in exits {
            if rank != self.wire.rank {
                if let Some(p) = self.peers.get_mut(rank) {
                    p.exited = Some(Exit::Code(code));
                }
            }
        }
    }

    /// Asks for WRITABLE events only while a send is blocked, and drops them once it is not: a
    /// UDP socket is writable nearly always, and edge-triggered epoll reports WRITABLE again each
    /// time a sent datagram leaves the socket buffer, so registered for good it would end every
    /// wait after a send at once. Re-registering reports the socket writable at once if it already
    /// is, so no wake-up is lost between the blocked send and this call.
    fn sync_interest(&mut self) -> Result<()> {
        if self.writable == self.wire.blocked {
            return Ok(());
        }
        let interest = if self.wire.blocked {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        self.poll
            .registry()
            .reregister(&mut SourceFd(&self.wire.sock.as_raw_fd()), SOCK, interest)
            .map_err(|source| Error::io(self.rank_(), "registering the socket", source))?;
        self.writable = self.wire.blocked;
        Ok(())
    }

    /// Waits for events up to `timeout`, then handles every datagram and timer.
    fn progress(&mut self, timeout: Duration, ks: &mut dyn KernelSide) -> Result<()> {
        self.sync_interest()?;
        let timeout = if self.wire.blocked {
            timeout.min(Duration::from_millis(1))
        } else {
            timeout
        };
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(source) => return Err(Error::io(self.rank_(), "waiting for datagrams", source)),
        }
        let launcher_ready = self.events.iter().any(|e| e.token() == LAUNCHER);
        let sock_ready = self.events.iter().any(|e| e.token() == SOCK);
        if self
            .events
            .iter()
            .any(|e| e.token() == SOCK && e.is_writable())
        {
            self.wire.blocked = false;
        }
        if launcher_ready {
            self.read_launcher();
        }
        if self.probe_ports
            && self
                .events
                .iter()
                .any(|e| e.token() == SOCK && e.is_error())
        {
            self.read_refusals();
        }
        let ended: Vec<usize> = self
            .events
            .iter()
            .filter_map(|e| e.token().0.checked_sub(PIDFD))
            .collect();
        for r in ended {
            if let Some(how) = self.procs.ended_one(r) {
                self.saw_gone(r, how);
            }
        }
        // Edge-triggered, and every drain reads the socket empty: without an event for it (a
        // wait that ended on a timer, the launcher or a pidfd) it holds nothing new, unless the
        // last drain stopped early.
        if sock_ready || self.unread {
            self.drain(ks)?;
        }
        self.pump()
    }

    /// [`drain`](Self::drain)s unless the socket was drained less than [`FRESH`] ago (and fewer
    /// than [`MAX_SKIPPED_DRAINS`] drains were skipped since): a drain that finds nothing is a
    /// system call, and the socket is edge-triggered, so anything that arrived since the last drain
    /// wakes the next wait.
    fn drain_if_stale(&mut self, ks: &mut dyn KernelSide) -> Result<()> {
        if self.last_drain.elapsed() < FRESH && self.skipped_drains < MAX_SKIPPED_DRAINS {
            self.skipped_drains += 1;
            return Ok(());
        }
        self.drain(ks)
    }

    /// Reads every datagram waiting on the socket: one `recvmmsg` per batch, and another only
    /// after a full batch (see [`RxBatch::drained`]).
    fn drain(&mut self, ks: &mut dyn KernelSide) -> Result<()> {
        self.drain_from(ks, |rx, sock| rx.read(sock))
    }

    /// [`drain`](Self::drain), each batch read by `read` (the seam the tests count reads through).
    fn drain_from(
        &mut self,
        ks: &mut dyn KernelSide,
        mut read: impl FnMut(&mut RxBatch, &UdpSocket) -> std::io::Result<usize>,
    ) -> Result<()> {
        self.skipped_drains = 0;
        self.last_drain = Instant::now();
        self.unread = true;
        // What a handler's error left of the last batch first: reading over it would lose it.
        self.handle_batch(ks)?;
        loop {
            self.wire.stats.recv_calls += 1;
            match read(&mut self.rx, &self.wire.sock) {
                Ok(n) => {
                    self.handle_batch(ks)?;
                    // A short batch emptied the socket: another read would only say EAGAIN.
                    if RxBatch::drained(n) {
                        self.unread = false;
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.unread = false;
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // ICMP errors of earlier sends surface here; they carry no datagram.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    self.read_refusals();
                    continue;
                }
                // With ICMP errors queued, those of other kinds surface here too (a host or
                // network unreachable): lost datagrams, not this rank's failure.
                Err(e) if self.wire.icmp_errors && gone::from_icmp(&e) => {
                    self.read_refusals();
                    continue;
                }
                Err(source) => return Err(Error::io(self.rank_(), "receiving a datagram", source)),
            }
        }
    }

    /// Handles the datagrams of the last batch not handled yet, in order.
    fn handle_batch(&mut self, ks: &mut dyn KernelSide) -> Result<()> {
        while let Some(next) = self.rx.advance() {
            match next {
                Ok((n, from)) => self.on_datagram(n, from, ks)?,
                // Larger than any datagram of ours, or not from an IP address.
                Err(()) => self.wire.stats.foreign += 1,
            }
        }
        Ok(())
    }

    /// Handles the datagram of `n` bytes from `from` that is [`RxBatch::current`].
    fn on_datagram(&mut self, n: usize, from: SocketAddr, ks: &mut dyn KernelSide) -> Result<()> {
        if self.cfg.drop_rate > 0.0 && self.drop_rng.gen::<f64>() < self.cfg.drop_rate {
            self.wire.stats.dropped_injected += 1;
            return Ok(());
        }
        if n == HEADER_LEN && self.on_pong(from) {
            return Ok(());
        }
        let me = self.receiver();
        let peers = &self.peers;
        let decided = self
            .rx
            .current()
            .get(..n)
            .map_or(Err(wire::Refusal::Short), |bytes| {
                wire::classify(bytes, from, &me, |r| peers.get(r).map(|p| p.addr))
            });
        let Ok(d) = decided else {
            self.wire.stats.foreign += 1;
            return Ok(());
        };
        let (h, src) = (d.h, d.src);
        // Kinds that carry state for one collective: only within the window of collectives.
        let windowed = matches!(
            h.kind,
            kind::STATUS | kind::ABORT | kind::RESULT | kind::CONTRIB
        );
        if windowed && !crate::transport::ledger::in_window(h.seq, self.cur_seq) {
            self.wire.stats.foreign += 1;
            return Ok(());
        }
        self.wire.stats.datagrams_received += 1;
        self.peers[src].last_heard = Instant::now();
        self.peers[src].asking = None;
        self.peers[src].probe.heard();
        let payload = HEADER_LEN..n;
        match h.kind {
            kind::DATA => self.on_data(&d, payload),
            kind::ACK | kind::PROBE => {
                let map = self.bitmap(payload);
                self.on_ack(&h, map)
            }
            kind::STATUS => {
                let reason = String::from_utf8_lossy(&self.rx.current()[payload]).into_owned();
                self.status.insert(
                    (src, h.seq),
                    Status {
                        cur: h.tag,
                        sig: (h.flags & flags::HAS_SIG != 0).then_some(d.sig),
                        aborted: (h.flags & flags::ABORTED != 0).then(|| {
                            self.ledger.note_failure(h.seq, src, &reason);
                            reason
                        }),
                    },
                );
                Ok(())
            }
            kind::ABORT => {
                let reason = String::from_utf8_lossy(&self.rx.current()[payload]).into_owned();
                self.ledger.note_abort(h.seq, src, reason);
                Ok(())
            }
            kind::RESULT | kind::CONTRIB | kind::BCAST | kind::KNACK => {
                ks.on_datagram(self, &d, payload)
            }
            _ => {
                self.wire.stats.foreign += 1;
                Ok(())
            }
        }
    }

    /// A PONG from a peer's liveness socket (the current datagram, from `from`): noted; true if it
    /// was one.
    fn on_pong(&mut self, from: SocketAddr) -> bool {
        let Some(h) = self
            .rx
            .current()
            .get(..HEADER_LEN)
            .map(bytemuck::pod_read_unaligned::<Header>)
        else {
            return false;
        };
        if h.kind != kind::PONG
            || h.magic != MAGIC
            || h.version != VERSION
            || h.job != self.wire.job
        {
            return false;
        }
        let Some(p) = self.peers.iter_mut().find(|p| p.pulse == Some(from)) else {
            return false;
        };
        let started = h.flags & flags::STARTED != 0;
        p.asking = None;
        p.probe.heard();
        p.pong = Some((
            Instant::now(),
            if started { h.seq } else { u32::MAX },
            h.flags & flags::INSIDE != 0,
        ));
        true
    }

    /// Without a launcher: notes the peers whose ports refused datagrams of this rank's socket
    /// (ICMP port unreachable, from its error queue), as refused probes (`transport::gone`).
    fn read_refusals(&mut self) {
        if !self.probe_ports {
            return;
        }
        let now = Instant::now();
        for to in gone::refused_destinations(&self.wire.sock) {
            let Some(r) = self
                .peers
                .iter()
                .position(|p| p.exited.is_none() && (p.addr == to || p.pulse == Some(to)))
            else {
                continue;
            };
            if let Some(how) = self.peers[r].probe.refused_now(to, now) {
                self.saw_gone(r, how);
            }
        }
    }

    /// This rank saw for itself that rank `r` is gone (`transport::gone`), described by `how`:
    /// noted once, with when (see [`gone::GONE_GRACE`]).
    fn saw_gone(&mut self, r: usize, how: String) {
        let Some(p) = self.peers.get_mut(r) else {
            return;
        };
        if p.exited.is_some() {
            return;
        }
        let now = Instant::now();
        p.exited = Some(Exit::Gone(how));
        p.gone_at = Some(now);
        let until = now + gone::GONE_GRACE;
        self.grace_until = Some(self.grace_until.map_or(until, |t| t.max(until)));
    }

    /// Whether this rank's own verdict that `peer` is gone waits a little longer: for at most
    /// [`gone::GONE_GRACE`] after it, until the abort the peer sent before it ended (naming what
    /// made it leave) is read. A peer that said it failed, or an end the launcher reported, waits
    /// for nothing.
    fn in_grace(&self, peer: usize, now: Instant) -> bool {
        let p = &self.peers[peer];
        matches!(p.exited, Some(Exit::Gone(_)))
            && !self.ledger.failed(peer)
            && p.gone_at.is_some_and(|t| now < t + gone::GONE_GRACE)
    }

    /// How often a silent peer is PINGed.
    fn ping_every(&self) -> Duration {
        (self.cfg.timeout / 4).clamp(Duration::from_millis(20), Duration::from_secs(1))
    }

    /// Whether waiting for `peer`, silent on the data path for `silent`, may go on (see
    /// `ledger::check_peer`): PINGs its liveness socket once it has been silent for a quarter of
    /// the timeout, and waits as long as its PONGs come. A peer with a liveness socket is reported
    /// silent only once it has also left this rank's PINGs unanswered for the timeout: silence
    /// this rank did not ask about proves nothing (on the kernel path a rank never hears the
    /// contributors whose data the kernel folds, and back-to-back collectives can keep a peer
    /// unheard for as long as another rank was busy).
    pub(crate) fn keep_waiting(
        &mut self,
        ctx: Option<&Ctx>,
        peer: usize,
        mut silent: Duration,
    ) -> Result<()> {
        let now = Instant::now();
        let every = self.ping_every();
        let timeout = self.cfg.timeout;
        if self.probe_ports && silent >= gone::PROBE_AFTER {
            self.read_refusals();
        }
        if let (true, Some(to), None) = (
            self.probe_ports,
            self.peers[peer].pulse,
            &self.peers[peer].exited,
        ) {
            if let Some(how) = self.peers[peer].probe.step(to, silent, now) {
                self.saw_gone(peer, how);
            }
        }
        if ctx.is_none() && matches!(self.peers[peer].exited, Some(Exit::Gone(_))) {
            // Delivering the last messages: a receiver that is gone is done with
            // (`Session::flush`), as after the launcher's EXIT line.
            return Ok(());
        }
        if self.in_grace(peer, now) {
            return Ok(());
        }
        if let Some(to) = self.peers[peer].pulse {
            let due = self.peers[peer].pinged.is_none_or(|t| now - t >= every);
            if silent >= timeout / 4 && due {
                self.peers[peer].pinged = Some(now);
                self.peers[peer].asking.get_or_insert(now);
                let h = Header {
                    magic: MAGIC,
                    version: VERSION,
                    kind: kind::PING,
                    src: self.wire.rank as u32,
                    job: self.wire.job,
                    ..Header::default()
                };
                self.wire.send(h, &[], to)?;
            }
        }
        let rank = self.rank_();
        let exited = self.ledger.explain(peer, self.peers[peer].exited.as_ref());
        let p = &mut self.peers[peer];
        let life = match p.pong {
            Some((t, seq, inside)) if now - t <= timeout => Life::Alive {
                at: (seq != u32::MAX).then_some((seq, inside)),
            },
            _ => Life::Unknown,
        };
        if p.pulse.is_some() && matches!(life, Life::Unknown) {
            // No sign of life: silent for as long as it has left us asking, at most.
            silent = silent.min(p.asking.map_or(Duration::ZERO, |t| now - t));
        }
        check_peer(
            rank,
            ctx,
            peer,
            exited.as_ref(),
            silent,
            timeout,
            life,
            &mut p.warned,
            &self.job_ranks,
        )
    }

    /// When a wait for a peer silent since `since` should look again: at the timeout, or once it
    /// is past (the peer is alive), at the next PING; sooner when a verdict that a peer is gone is
    /// held for its grace (`Udp::in_grace`), at its end.
    pub(crate) fn wake_for(&self, since: Instant) -> Instant {
        let now = Instant::now();
        let at = (since + self.cfg.timeout).max(now + self.ping_every());
        // A verdict held for its grace is reported when the grace ends.
        match self.grace_until {
            Some(t) if t > now => at.min(t),
            _ => at,
        }
    }

    pub(crate) fn bitmap(&self, payload: std::ops::Range<usize>) -> u64 {
        self.rx
            .current()
            .get(payload)
            .and_then(|p| p.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    }

    fn on_data(&mut self, d: &Datagram, payload: std::ops::Range<usize>) -> Result<()> {
        let (h, src) = (&d.h, d.src);
        let Some(c) = d.chunk else {
            self.wire.stats.foreign += 1;
            return Ok(());
        };
        if self.peers[src].done.contains(h.msg) {
            return self.send_ack(src, h.msg, h.nchunks, 0, h);
        }
        let m = match self.partial.entry((src, h.msg)) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let admit = if self.peers[src].done.in_reach(h.msg) {
                    wire::admit(
                        &self.ledger,
                        self.cur_seq,
                        self.gather_blocks,
                        h.seq,
                        &d.sig,
                        c.total,
                    )
                } else {
                    Admit::Refuse
                };
                match admit {
                    Admit::Take => e.insert(InMsg::new(d, &c, false, &mut self.pool)),
                    Admit::Early => e.insert(InMsg::new(d, &c, true, &mut self.pool)),
                    Admit::Refuse => {
                        self.wire.stats.foreign += 1;
                        return Ok(());
                    }
                    Admit::Mismatch => {
                        // This rank made another call for this collective: that is all it needs
                        // to know (it fails the collective), not the data. The sender may forget
                        // the message.
                        self.ledger.mismatches.entry(h.seq).or_insert((src, d.sig));
                        self.peers[src].done.insert(h.msg);
                        return self.send_ack(src, h.msg, h.nchunks, 0, h);
                    }
                }
            }
        };
        if !m.fits(d, &c) {
            self.wire.stats.foreign += 1;
            return Ok(());
        }
        let fresh = m.put(h.chunk, &c, &self.rx.current()[payload]);
        if m.complete() {
            let m = self.partial.remove(&(src, h.msg)).expect("entry present");
            self.peers[src].done.insert(h.msg);
            if self.ledger.sig_of(m.seq).is_some_and(|mine| mine != m.sig) {
                self.ledger.mismatches.entry(m.seq).or_insert((src, m.sig));
            }
            let (seq, tag, sig) = (m.seq, m.tag, m.sig);
            self.ledger
                .inbox
                .insert((src, seq, tag), (sig, m.into_bytes()));
            return self.send_ack(src, h.msg, h.nchunks, 0, h);
        }
        let (next, map) = m.ack_state();
        let gap = next < h.chunk;
        if !fresh || gap || m.since_ack >= ACK_EVERY {
            m.since_ack = 0;
            return self.send_ack(src, h.msg, next, map, h);
        }
        Ok(())
    }

    fn send_ack(
        &mut self,
        dst: usize,
        msg: u32,
        next: u32,
        map: u64,
        about: &Header,
    ) -> Result<()> {
        let sig = self.ledger.sig_of(about.seq).unwrap_or(Signature {
            coll: crate::types::Coll::Barrier,
            op: None,
            dtype: None,
            count: 0,
            root: 0,
        });
        let mut h = self.wire.header(kind::ACK, dst, about.seq, &sig);
        h.tag = about.tag;
        h.msg = msg;
        h.chunk = next;
        let addr = self.peers[dst].addr;
        self.wire.send(h, &map.to_le_bytes(), addr).map(|_| ())
    }

    /// ACK or PROBE from the receiver `h.src` of one of our messages.
    fn on_ack(&mut self, h: &Header, map: u64) -> Result<()> {
        let src = h.src as usize;
        let idx = if h.kind == kind::ACK {
            self.out.iter().position(|m| m.dst == src && m.msg == h.msg)
        } else {
            self.out
                .iter()
                .position(|m| m.dst == src && m.seq == h.seq && m.tag == h.tag)
        };
        let Some(i) = idx else {
            if h.kind == kind::PROBE {
                return self.send_status(src, h.seq);
            }
            return Ok(()); // a late ACK of a message already done
        };
        let now = Instant::now();
        let m = &mut self.out[i];
        let mut progressed = false;
        for c in 0..h.chunk.min(m.nchunks) {
            if m.acked.set(c) {
                m.n_acked += 1;
                progressed = true;
            }
        }
        let mut top = h.chunk;
        for b in 0..64 {
            let Some(c) = h.chunk.checked_add(b) else {
                break;
            };
            if map & (1 << b) != 0 && c < m.nchunks {
                top = c;
                if m.acked.set(c) {
                    m.n_acked += 1;
                    progressed = true;
                }
            }
        }
        if progressed {
            m.last_progress = now;
            m.rto = RTO_BASE;
        }
        if m.n_acked == m.nchunks {
            let done = self.out.swap_remove(i);
            self.pool.give(done.data);
            return Ok(());
        }
        // Resend holes: below the highest chunk the receiver has (ACK), or everything outstanding
        // (PROBE: the receiver is stuck waiting).
        let limit = if h.kind == kind::PROBE {
            m.sent_upto
        } else {
            top.min(m.sent_upto)
        };
        let force = h.kind == kind::PROBE;
        let holes: Vec<u32> = (h.chunk..limit)
            .filter(|&c| !m.acked.get(c))
            .filter(|&c| force || m.last_tx[c as usize].is_none_or(|t| now - t >= FAST_GAP))
            .take(self.cfg.window as usize)
            .collect();
        for c in holes {
            if !self.send_chunk(i, c, true)? {
                break;
            }
        }
        Ok(())
    }

    pub(crate) fn send_status(&mut self, dst: usize, seq: u32) -> Result<()> {
        let sig = self.ledger.sig_of(seq);
        let mut h = self.wire.header(
            kind::STATUS,
            dst,
            seq,
            &sig.unwrap_or(Signature {
                coll: crate::types::Coll::Barrier,
                op: None,
                dtype: None,
                count: 0,
                root: 0,
            }),
        );
        h.tag = self.cur_seq;
        if sig.is_some() {
            h.flags |= flags::HAS_SIG;
        }
        let reason = self.ledger.my_aborts.get(&seq).cloned().unwrap_or_default();
        if self.ledger.my_aborts.contains_key(&seq) {
            h.flags |= flags::ABORTED;
        }
        let addr = self.peers[dst].addr;
        self.wire.send(h, reason.as_bytes(), addr).map(|_| ())
    }

    /// Sends chunk `c` of `self.out[i]`; false if the socket is full.
    fn send_chunk(&mut self, i: usize, c: u32, again: bool) -> Result<bool> {
        let m = &mut self.out[i];
        let off = c as usize * m.chunk;
        let end = (off + m.chunk).min(m.data.len());
        let mut h = self.wire.header(kind::DATA, m.dst, m.seq, &m.sig);
        h.tag = m.tag;
        h.msg = m.msg;
        h.chunk = c;
        h.nchunks = m.nchunks;
        h.total = m.data.len() as u32;
        let addr = self.peers[m.dst].addr;
        let sent = self.wire.send(h, &m.data[off..end], addr)?;
        if sent {
            m.last_tx[c as usize] = Some(Instant::now());
            if again {
                self.wire.stats.retransmits += 1;
            }
        }
        Ok(sent)
    }

    /// Sends new chunks where windows allow, and resends after a retransmission timeout.
    fn pump(&mut self) -> Result<()> {
        let now = Instant::now();
        let window = self.cfg.window;
        for i in 0..self.out.len() {
            if self.peers[self.out[i].dst].exited.is_some() {
                continue;
            }
            let m = &self.out[i];
            if m.sent_upto > m.n_acked && now - m.last_progress >= m.rto {
                let todo: Vec<u32> = (0..m.sent_upto)
                    .filter(|&c| !m.acked.get(c))
                    .take(window as usize)
                    .collect();
                let m = &mut self.out[i];
                m.last_progress = now;
                m.rto = (m.rto * 2).min(RTO_MAX);
                for c in todo {
                    if !self.send_chunk(i, c, true)? {
                        return Ok(());
                    }
                }
            }
            loop {
                let m = &self.out[i];
                if m.sent_upto >= m.nchunks || m.sent_upto - m.n_acked.min(m.sent_upto) >= window {
                    break;
                }
                let c = m.sent_upto;
                if !self.send_chunk(i, c, false)? {
                    return Ok(());
                }
                self.out[i].sent_upto += 1;
            }
        }
        // Messages to ranks that exited can never be acknowledged.
        let peers = &self.peers;
        self.out.retain(|m| peers[m.dst].exited.is_none());
        Ok(())
    }

    /// Handles traffic until `deadline` or the next retransmission timer, whichever is first.
    pub(crate) fn wait_until(&mut self, deadline: Instant, ks: &mut dyn KernelSide) -> Result<()> {
        let deadline = self.next_timer().map_or(deadline, |t| deadline.min(t));
        self.progress(
            deadline.saturating_duration_since(Instant::now()) + Duration::from_micros(50),
            ks,
        )
    }

    /// When the next retransmission timer fires.
    fn next_timer(&self) -> Option<Instant> {
        self.out
            .iter()
            .filter(|m| m.sent_upto > m.n_acked)
            .map(|m| m.last_progress + m.rto)
            .min()
    }

    fn probe(&mut self, ctx: &Ctx, src: usize, tag: u32) -> Result<()> {
        let (next, map) = self
            .partial
            .iter()
            .find(|((s, _), m)| *s == src && m.seq == ctx.seq && m.tag == tag)
            .map_or((0, 0), |(_, m)| m.ack_state());
        let mut h = self.wire.header(kind::PROBE, src, ctx.seq, &ctx.sig);
        h.tag = tag;
        h.msg = u32::MAX;
        h.chunk = next;
        let addr = self.peers[src].addr;
        self.wire.send(h, &map.to_le_bytes(), addr).map(|_| ())
    }

    pub(crate) fn check_status(&mut self, ctx: &Ctx, src: usize) -> Result<()> {
        let rank = self.rank_();
        self.ledger.current(rank, ctx)?;
        if let Some(st) = self.status.get(&(src, ctx.seq)) {
            if let Some(reason) = &st.aborted {
                return Err(Error::aborted(rank, ctx.seq, src, reason.clone()));
            }
            match st.sig {
                Some(theirs) if theirs != ctx.sig => {
                    return Err(Error::mismatch(rank, ctx.seq, src, ctx.sig, theirs))
                }
                Some(_) if st.cur > ctx.seq => {
                    return Err(Error::protocol(rank, ctx.describe(), format!(
                            "rank {src} finished this collective without sending this rank the data it waits for (do all ranks pass the same root?)"
                        )))
                }
                _ => {}
            }
        }
        let silent = self.silence(src);
        self.keep_waiting(Some(ctx), src, silent)
    }

    /// How long `peer` has been silent while this rank listened.
    pub(crate) fn silence(&self, peer: usize) -> Duration {
        self.heard_since(peer).elapsed()
    }

    /// Starts a wait for `peer`: its silence counts from now at the earliest. Only a peer this rank
    /// waits for, and listens to, is expected to speak: one that is not, or a rank that was away
    /// from boad (computing between collectives), hears nothing for a while without any peer being
    /// silent.
    pub(crate) fn watch(&mut self, peer: usize) {
        self.peers[peer].watched = Instant::now();
    }
}

/// The receiving half of the [`Session`] and [`Transport`] methods, with the kernel path's share
/// of what arrives handed to `ks` (the kernel transport calls these; this transport's own trait
/// methods pass [`NoKernel`]).
impl Udp {
    /// [`Session::begin`].
    pub(crate) fn begin_with(&mut self, ctx: &Ctx, ks: &mut dyn KernelSide) -> Result<()> {
        self.cur_seq = ctx.seq;
        self.ledger.start(ctx);
        self.status.retain(|(_, s), _| *s >= ctx.seq);
        self.drain_if_stale(ks)?;
        ks.begin(ctx.seq);
        let rank = self.rank();
        self.ledger.settle(rank, ctx)
    }

    /// [`Session::take_deferred`].
    pub(crate) fn take_deferred_with(
        &mut self,
        seq: u32,
        ks: &mut dyn KernelSide,
    ) -> Option<Error> {
        self.drain_if_stale(ks).ok()?;
        let rank = self.rank();
        self.ledger.take_deferred(rank, seq)
    }

    /// [`Session::end`], counting the collective as one of the kernel path's when `kernel`.
    pub(crate) fn end_as(&mut self, kernel: bool) {
        if kernel {
            self.wire.stats.collectives_kernel += 1;
        } else {
            self.wire.stats.collectives_udp += 1;
        }
    }

    /// [`Session::flush`].
    pub(crate) fn flush_with(&mut self, ks: &mut dyn KernelSide) -> Result<()> {
        let mut watching = None;
        loop {
            self.pump()?;
            let Some(m) = self.out.first() else {
                return Ok(());
            };
            let dst = m.dst;
            if watching != Some(dst) {
                watching = Some(dst);
                self.watch(dst);
            }
            let silent = self.silence(dst);
            if let Err(e) = self.keep_waiting(None, dst, silent) {
                self.out.clear();
                return Err(e);
            }
            let deadline = self
                .next_timer()
                .unwrap_or_else(|| Instant::now() + RTO_BASE)
                .min(self.wake_for(self.heard_since(dst)));
            self.run_idle_hook();
            self.progress(
                deadline.saturating_duration_since(Instant::now()) + Duration::from_micros(50),
                ks,
            )?;
        }
    }

    /// [`Transport::recv_in_place`]: the message's buffer goes back to the pool after `take`.
    pub(crate) fn recv_in_place_with(
        &mut self,
        ctx: &Ctx,
        src: usize,
        tag: u32,
        ks: &mut dyn KernelSide,
        take: &mut dyn FnMut(&mut [u8]) -> Result<()>,
    ) -> Result<()> {
        let mut data = self.recv_with(ctx, src, tag, ks)?;
        let done = take(&mut data);
        self.pool.give(data);
        done
    }

    /// [`Transport::recv`].
    pub(crate) fn recv_with(
        &mut self,
        ctx: &Ctx,
        src: usize,
        tag: u32,
        ks: &mut dyn KernelSide,
    ) -> Result<Vec<u8>> {
        let mut probe_every = PROBE_BASE;
        let mut next_probe = Instant::now() + probe_every;
        self.watch(src);
        loop {
            if let Some((theirs, data)) = self.ledger.inbox.remove(&(src, ctx.seq, tag)) {
                if theirs != ctx.sig {
                    return Err(Error::mismatch(self.rank(), ctx.seq, src, ctx.sig, theirs));
                }
                return Ok(data);
            }
            self.check_status(ctx, src)?;
            let now = Instant::now();
            if now >= next_probe {
                self.probe(ctx, src, tag)?;
                probe_every = (probe_every * 2).min(PROBE_MAX);
                next_probe = now + probe_every;
            }
            self.run_idle_hook();
            let since = self.heard_since(src);
            self.wait_until(next_probe.min(self.wake_for(since)), ks)?;
        }
    }
}

impl Session for Udp {
    fn rank(&self) -> usize {
        self.wire.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn begin(&mut self, ctx: &Ctx) -> Result<()> {
        self.begin_with(ctx, &mut NoKernel)
    }
    fn take_deferred(&mut self, seq: u32) -> Option<Error> {
        self.take_deferred_with(seq, &mut NoKernel)
    }
    fn end(&mut self, _ctx: &Ctx) {
        self.end_as(false);
    }
    fn fail(&mut self, ctx: &Ctx, err: &Error) {
        let reason = err.to_string();
        self.ledger.my_aborts.insert(ctx.seq, reason.clone());
        for dst in 0..self.size {
            if dst != self.rank() && self.peers[dst].exited.is_none() {
                let h = self.wire.header(kind::ABORT, dst, ctx.seq, &ctx.sig);
                let addr = self.peers[dst].addr;
                // Best effort: peers that miss it learn it from a STATUS when they probe us.
                let _ = self.wire.send(h, reason.as_bytes(), addr);
            }
        }
    }
    fn flush(&mut self) -> Result<()> {
        self.flush_with(&mut NoKernel)
    }
    fn stats(&self) -> Stats {
        self.wire.stats
    }
    fn path(&self) -> crate::types::Path {
        crate::types::Path::Udp
    }
    fn local_addr(&self) -> Option<SocketAddr> {
        self.wire.sock.local_addr().ok()
    }
}

impl Transport for Udp {
    fn send(&mut self, ctx: &Ctx, dst: usize, tag: u32, data: &[u8]) -> Result<()> {
        let max = u32::MAX as usize;
        if data.len() > max {
            return Err(Error::new(
                self.rank(),
                UsageError::TooLarge {
                    bytes: data.len(),
                    max,
                },
            ));
        }
        let mut copy = self.pool.take(data.len());
        copy.copy_from_slice(data);
        if dst == self.rank() {
            self.ledger
                .inbox
                .insert((dst, ctx.seq, tag), (ctx.sig, copy));
            return Ok(());
        }
        let chunk = self.cfg.chunk_bytes;
        let nchunks = data.len().div_ceil(chunk).max(1) as u32;
        let peer = &mut self.peers[dst];
        let msg = peer.next_msg;
        peer.next_msg += 1;
        self.out.push(OutMsg {
            dst,
            msg,
            seq: ctx.seq,
            tag,
            sig: ctx.sig,
            data: copy,
            chunk,
            nchunks,
            acked: Bits::new(nchunks),
            n_acked: 0,
            sent_upto: 0,
            last_tx: vec![None; nchunks as usize],
            last_progress: Instant::now(),
            rto: RTO_BASE,
        });
        self.pump()
    }
    fn recv(&mut self, ctx: &Ctx, src: usize, tag: u32) -> Result<Vec<u8>> {
        self.recv_with(ctx, src, tag, &mut NoKernel)
    }
    fn recv_in_place(
        &mut self,
        ctx: &Ctx,
        src: usize,
        tag: u32,
        take: &mut dyn FnMut(&mut [u8]) -> Result<()>,
    ) -> Result<()> {
        self.recv_in_place_with(ctx, src, tag, &mut NoKernel, take)
    }
}

impl Level for Udp {
    /// Sets how many blocks the largest message of an allgather on this transport holds (its size
    /// by default): the hierarchical path's leaders move a slab of a host's blocks at once.
    fn set_gather_blocks(&mut self, blocks: usize) {
        self.gather_blocks = blocks;
    }

    /// Sets what every round of a wait runs besides this transport's own work.
    fn set_idle_hook(&mut self, hook: super::Service) {
        self.idle_hook = Some(hook);
    }

    /// Sets the job rank of each rank of this transport (a level of the hierarchical path), for the
    /// warnings it prints.
    fn set_job_ranks(&mut self, ranks: Vec<usize>) {
        self.job_ranks = ranks;
    }

    fn service(&mut self) {
        self.service_with(&mut NoKernel);
    }

    fn seen_aborts(&mut self) -> Vec<(u32, usize, String)> {
        self.seen_aborts_with(&mut NoKernel)
    }
}

/// What the kernel path (`transport::kernel`) uses of the transport it runs on: the socket, the
/// peers, the ledger, the waits.
impl Udp {
    /// Payload bytes per datagram (`BOAD_CHUNK_BYTES`).
    pub(crate) fn chunk_bytes(&self) -> usize {
        self.cfg.chunk_bytes
    }

    /// `BOAD_TIMEOUT_MS`.
    pub(crate) fn timeout(&self) -> Duration {
        self.cfg.timeout
    }

    /// Where rank `r`'s socket is.
    pub(crate) fn peer_addr(&self, r: usize) -> SocketAddr {
        self.peers[r].addr
    }

    /// When rank `r` was last heard, or this rank started waiting for it, whichever is later.
    pub(crate) fn heard_since(&self, r: usize) -> Instant {
        self.peers[r].last_heard.max(self.peers[r].watched)
    }

    /// Rank `r`'s end, if the launcher said it exited or this rank saw it go.
    pub(crate) fn exited(&self, r: usize) -> Option<&Exit> {
        self.peers[r].exited.as_ref()
    }

    /// The header of a datagram of this transport: `kind`, to `dst`, for collective `seq` with
    /// call `sig`.
    pub(crate) fn header(&self, kind: u8, dst: usize, seq: u32, sig: &Signature) -> Header {
        self.wire.header(kind, dst, seq, sig)
    }

    /// Sends one datagram; false if the socket buffer is full.
    pub(crate) fn send_datagram(
        &mut self,
        h: Header,
        payload: &[u8],
        to: SocketAddr,
    ) -> Result<bool> {
        self.wire.send(h, payload, to)
    }

    /// The counters, to add to.
    pub(crate) fn stats_mut(&mut self) -> &mut Stats {
        &mut self.wire.stats
    }

    /// What this rank remembers of collectives.
    pub(crate) fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The same, to note a mismatch in.
    pub(crate) fn ledger_mut(&mut self) -> &mut Ledger {
        &mut self.ledger
    }

    /// The bytes of the datagram just received, at `range`.
    pub(crate) fn received(&self, range: Range<usize>) -> &[u8] {
        &self.rx.current()[range]
    }

    /// A copy of [`received`](Self::received)`(range)` in a buffer of the pool (give it back with
    /// [`give_buffer`](Self::give_buffer) once used).
    pub(crate) fn copy_received(&mut self, range: Range<usize>) -> Vec<u8> {
        let bytes = &self.rx.current()[range];
        let mut buf = self.pool.take(bytes.len());
        buf.copy_from_slice(bytes);
        buf
    }

    /// A zeroed buffer of `len` bytes from the pool.
    pub(crate) fn take_buffer(&mut self, len: usize) -> Vec<u8> {
        self.pool.take(len)
    }

    /// Gives a buffer back to the pool.
    pub(crate) fn give_buffer(&mut self, buf: Vec<u8>) {
        self.pool.give(buf);
    }

    /// Whether a broadcast of `total` bytes for collective `seq` with call `sig` may be received
    /// (see [`wire::admit`]).
    pub(crate) fn admit(&self, seq: u32, sig: &Signature, total: usize) -> Admit {
        wire::admit(
            &self.ledger,
            self.cur_seq,
            self.gather_blocks,
            seq,
            sig,
            total,
        )
    }

    /// A mismatch or abort a peer's STATUS shows for collective `ctx` (not silence or exit).
    pub(crate) fn status_error(&self, ctx: &Ctx, src: usize) -> Option<Error> {
        let st = self.status.get(&(src, ctx.seq))?;
        if let Some(reason) = &st.aborted {
            return Some(Error::aborted(self.rank(), ctx.seq, src, reason.clone()));
        }
        match st.sig {
            Some(theirs) if theirs != ctx.sig => {
                Some(Error::mismatch(self.rank(), ctx.seq, src, ctx.sig, theirs))
            }
            _ => None,
        }
    }

    /// Sets the communicator id every header carries (`boad_common::kernel::comm`).
    pub(crate) fn set_comm(&mut self, comm: u32) {
        self.wire.comm = comm;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Coll, DType};

    /// A message received chunk by chunk (early) or into a buffer sized up front gives the same
    /// bytes and the same ACKs, whatever order the chunks come in, and an early one holds only what
    /// arrived.
    #[test]
    fn early_messages_hold_what_arrived_and_assemble_the_same() {
        let sig = Signature {
            coll: Coll::Bcast,
            op: None,
            dtype: Some(DType::U8),
            count: 100,
            root: 0,
        };
        let total = 100usize;
        let stride = 16usize;
        let nchunks = total.div_ceil(stride) as u32;
        let data: Vec<u8> = (0..total as u8).collect();
        let datagram = |i: u32| {
            let h = Header {
                seq: 3,
                tag: 1,
                chunk: i,
                nchunks,
                total: total as u32,
                len: (stride.min(total - i as usize * stride)) as u32,
                ..Header::default()
            };
            let c = Chunk {
                off: i as usize * stride,
                len: h.len as usize,
                stride,
                total,
            };
            (
                Datagram {
                    h,
                    src: 1,
                    sig,
                    chunk: Some(c),
                },
                c,
            )
        };
        let order = [3u32, 0, 6, 3, 1, 5, 2, 4];
        let (d0, c0) = datagram(order[0]);
        let mut pool = MsgPool::default();
        let mut whole = InMsg::new(&d0, &c0, false, &mut pool);
        let mut early = InMsg::new(&d0, &c0, true, &mut pool);
        for &i in &order {
            let (d, c) = datagram(i);
            let bytes = &data[c.off..c.off + c.len];
            assert!(whole.fits(&d, &c) && early.fits(&d, &c));
            assert_eq!(whole.put(i, &c, bytes), early.put(i, &c, bytes));
            assert_eq!(whole.ack_state(), early.ack_state());
            if let Store::Pieces(p) = &early.store {
                let held: usize = p.values().map(Vec::len).sum();
                assert!(held <= total);
            }
        }
        assert!(whole.complete() && early.complete());
        assert_eq!(whole.into_bytes(), data);
        assert_eq!(early.into_bytes(), data);
    }

    fn transport_on_lo() -> Udp {
        let lo = std::net::IpAddr::from([127, 0, 0, 1]);
        let (sock, port) = Udp::bind(0, lo).expect("bind");
        let entry = |rank, port, pid| PeerEntry {
            rank,
            host_id: 1,
            ip: lo,
            port,
            pulse: 0,
            pid,
        };
        // Rank 1 is never heard from: nothing here sends to it.
        let table = vec![entry(0, port, std::process::id()), entry(1, 9, 1 << 23)];
        Udp::new(0, 42, sock, &table, None, Vec::new(), Config::default()).expect("transport")
    }

    /// Drains `t` as if `queued` datagrams (not boad's) waited on its socket, each read taking a
    /// batch of them: how many reads it made.
    fn reads_to_drain(t: &mut Udp, mut queued: usize) -> usize {
        let stranger = SocketAddr::from(([127, 0, 0, 1], 9999));
        let mut reads = 0;
        t.drain_from(&mut NoKernel, |rx, _sock| {
            reads += 1;
            rx.fill_with(|slots| {
                let k = queued.min(rx::BATCH);
                if k == 0 {
                    return Err(ErrorKind::WouldBlock.into());
                }
                for i in 0..k {
                    slots.put(i, b"not boad", stranger);
                }
                queued -= k;
                Ok(k)
            })
        })
        .expect("drain");
        reads
    }

    /// One read per wake-up: a batch that comes back short is all the socket held, so no read
    /// that could only say EAGAIN follows it; after a full batch the socket is read again.
    #[test]
    fn a_short_batch_ends_the_drain_and_a_full_one_does_not() {
        let mut t = transport_on_lo();
        let b = rx::BATCH;
        for (queued, reads) in [
            (5, 1),
            (b - 1, 1),
            (b + 3, 2),
            (b, 2),
            (0, 1),
            (2 * b + 1, 3),
        ] {
            let before = t.stats();
            assert_eq!(reads_to_drain(&mut t, queued), reads, "{queued} queued");
            let after = t.stats();
            assert_eq!(after.recv_calls - before.recv_calls, reads as u64);
            // Every datagram was handled (and refused: not boad's).
            assert_eq!(after.foreign - before.foreign, queued as u64);
        }
    }

    /// The socket is polled for WRITABLE only while a send is blocked: a datagram sent does not end
    /// the next wait (nor is the socket read after a wait no event ended), and a blocked send's
    /// WRITABLE event comes and then stops being asked for.
    #[test]
    fn writable_is_asked_for_only_while_a_send_is_blocked() {
        let mut t = transport_on_lo();
        let sink = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = sink.local_addr().expect("address");
        let wait = Duration::from_millis(60);
        let sig = Signature {
            coll: Coll::Barrier,
            op: None,
            dtype: None,
            count: 0,
            root: 0,
        };
        let h = t.wire.header(kind::STATUS, 1, 0, &sig);
        assert!(t.wire.send(h, b"x", to).expect("send"));
        let reads = t.stats().recv_calls;
        let t0 = Instant::now();
        t.progress(wait, &mut NoKernel).expect("progress");
        assert!(t0.elapsed() >= wait, "woken after {:?}", t0.elapsed());
        assert!(!t.writable);
        // Nothing announced a datagram: the socket was not read.
        assert_eq!(t.stats().recv_calls, reads);
        // A send found the socket buffer full: the next wait asks for WRITABLE, and ends at once
        // (the socket is writable again).
        t.wire.blocked = true;
        let t0 = Instant::now();
        t.progress(Duration::from_secs(5), &mut NoKernel)
            .expect("progress");
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        assert!(t.writable && !t.wire.blocked);
        // Not blocked any more: the wait after drops it, and sends do not end waits again.
        assert!(t.wire.send(h, b"x", to).expect("send"));
        let t0 = Instant::now();
        t.progress(wait, &mut NoKernel).expect("progress");
        assert!(t0.elapsed() >= wait, "woken after {:?}", t0.elapsed());
        assert!(!t.writable);
    }

    #[test]
    fn the_fuzz_seeds_reach_whole_messages() {
        let seed = include_bytes!("../../../../fuzz/seeds/udp_datagrams/two-chunks");
        assert_eq!(super::exercise_datagrams(seed), 1);
    }
}

/// Without a launcher, a waiting rank sees for itself that the peer it waits for is gone
/// (`transport::gone`), long before the timeout of a minute; a silent peer that lives is not.
#[cfg(test)]
mod gone_tests {
    use super::*;
    use crate::error::{CollectiveError, ErrorKind as Kind};
    use crate::types::{Coll, DType, Op};
    use std::net::IpAddr;
    use std::process::{Command, Stdio};

    const LO: [u8; 4] = [127, 0, 0, 1];

    fn ctx() -> Ctx {
        Ctx {
            seq: 1,
            sig: Signature {
                coll: Coll::Allreduce,
                op: Some(Op::Sum),
                dtype: Some(DType::I32),
                count: 4,
                root: 0,
            },
        }
    }

    /// Rank 0 of two (rank 1: data port `port1`, liveness port `pulse1`, pid `pid1`, on this host)
    /// waits for rank 1's message with `timeout`: its error, and how long it took.
    fn wait_for_rank_1(port1: u16, pulse1: u16, pid1: u32, timeout: Duration) -> (Error, Duration) {
        let lo = IpAddr::from(LO);
        let (sock, port0) = Udp::bind(0, lo).expect("bind");
        let entry = |rank, port, pulse, pid| PeerEntry {
            rank,
            host_id: 1,
            ip: lo,
            port,
            pulse,
            pid,
        };
        let table = vec![
            entry(0, port0, 0, std::process::id()),
            entry(1, port1, pulse1, pid1),
        ];
        let cfg = Config {
            timeout,
            ..Config::default()
        };
        let mut t = Udp::new(0, 42, sock, &table, None, Vec::new(), cfg).expect("transport");
        let c = ctx();
        t.begin(&c).expect("begin");
        let t0 = Instant::now();
        let e = t.recv(&c, 1, 0).expect_err("rank 1 sends nothing");
        (e, t0.elapsed())
    }

    fn gone_how(e: &Error) -> &str {
        match e.kind() {
            Kind::Collective(CollectiveError::PeerGone { peer: 1, how, .. }) => how,
            other => panic!("not PeerGone of rank 1: {other:?}: {e}"),
        }
    }

    #[test]
    fn a_peer_whose_liveness_port_closed_is_gone_within_a_second() {
        let data1 = UdpSocket::bind((IpAddr::from(LO), 0)).expect("bind");
        let port1 = data1.local_addr().expect("address").port();
        let closed = UdpSocket::bind((IpAddr::from(LO), 0))
            .and_then(|s| s.local_addr())
            .expect("a port")
            .port();
        // Rank 1's pid is not visible (above the kernel's largest): only its port can tell.
        let (e, took) = wait_for_rank_1(port1, closed, 1 << 23, Duration::from_secs(60));
        assert!(gone_how(&e).contains("refused probes"), "{e}");
        assert!(took < Duration::from_millis(1500), "{took:?}: {e}");
    }

    #[test]
    fn a_peer_whose_process_ended_is_gone_at_once() {
        // Rank 1 is a child process holding rank 1's data socket (as its stdin).
        let data1 = UdpSocket::bind((IpAddr::from(LO), 0)).expect("bind");
        let port1 = data1.local_addr().expect("address").port();
        let mut child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(data1)))
            .spawn()
            .expect("start sleep");
        let pid = child.id();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let _ = child.kill();
            let _ = child.wait();
        });
        // No liveness port: only its process can tell.
        let (e, took) = wait_for_rank_1(port1, 0, pid, Duration::from_secs(60));
        killer.join().expect("killer");
        assert_eq!(gone_how(&e), format!("its process (pid {pid}) ended"));
        // Held for the grace (no abort of rank 1 came), then reported.
        assert!(
            took >= Duration::from_millis(300) + gone::GONE_GRACE && took < Duration::from_secs(1),
            "{took:?}: {e}"
        );
    }

    #[test]
    fn a_gone_peer_is_named_with_its_own_failure_even_when_its_abort_comes_after_its_end() {
        // Rank 1 fails collective #1 because rank 2 failed it (rank 2's abort comes first), then
        // its process ends, and its ABORT reaches rank 0 only after rank 0 saw the end: rank 0,
        // waiting for rank 1 in #2, names rank 1 gone with the failure that made it leave.
        let lo = IpAddr::from(LO);
        let (sock0, port0) = Udp::bind(0, lo).expect("bind");
        let (sock1, port1) = Udp::bind(1, lo).expect("bind");
        let (sock2, port2) = Udp::bind(2, lo).expect("bind");
        // Rank 1's process: a child holding rank 1's socket (as its stdin).
        let mut child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(
                sock1.try_clone().expect("clone"),
            )))
            .spawn()
            .expect("start sleep");
        let pid = child.id();
        let entry = |rank, port, pid| PeerEntry {
            rank,
            host_id: 1,
            ip: lo,
            port,
            pulse: 0,
            pid,
        };
        let table = vec![
            entry(0, port0, std::process::id()),
            entry(1, port1, pid),
            entry(2, port2, 1 << 23),
        ];
        let cfg = || Config {
            timeout: Duration::from_secs(60),
            ..Config::default()
        };
        let first = ctx();
        let second = Ctx { seq: 2, ..first };
        let peers_table = table.clone();
        let peers = std::thread::spawn(move || {
            let mut t1 =
                Udp::new(1, 42, sock1, &peers_table, None, Vec::new(), cfg()).expect("rank 1");
            let mut t2 =
                Udp::new(2, 42, sock2, &peers_table, None, Vec::new(), cfg()).expect("rank 2");
            t1.begin(&first).expect("begin");
            t2.begin(&first).expect("begin");
            std::thread::sleep(Duration::from_millis(200));
            let gone = |rank, peer| {
                Error::new(
                    rank,
                    CollectiveError::PeerGone {
                        call: first.describe(),
                        peer,
                        how: "its process ended".into(),
                    },
                )
            };
            t2.fail(&first, &gone(2, 3));
            let why = Error::aborted(1, 1, 2, gone(2, 3).to_string());
            let _ = child.kill();
            let _ = child.wait();
            // Rank 0 sees the end before the abort: well within the grace.
            std::thread::sleep(gone::GONE_GRACE / 4);
            t1.fail(&first, &why);
            why.to_string()
        });
        let mut t0 = Udp::new(0, 42, sock0, &table, None, Vec::new(), cfg()).expect("rank 0");
        t0.begin(&first).expect("begin #1");
        t0.begin(&second).expect("begin #2");
        let start = Instant::now();
        let e = t0.recv(&second, 1, 0).expect_err("rank 1 sends nothing");
        let took = start.elapsed();
        let why = peers.join().expect("the peers");
        assert_eq!(
            gone_how(&e),
            format!("its process (pid {pid}) ended, after it failed collective #1: {why}"),
            "{e}"
        );
        assert!(why.contains("rank 3 is gone"), "{why}");
        assert!(took < Duration::from_secs(1), "{took:?}: {e}");
        // Rank 2's abort of #1 came first, and stays the one of the collective.
        assert_eq!(t0.ledger().aborts.get(&1).map(|(by, _)| *by), Some(2));
    }

    #[test]
    fn a_silent_peer_whose_port_is_open_is_not_gone() {
        // Rank 1's sockets are open and answer nothing (a frozen process): the timeout decides.
        let data1 = UdpSocket::bind((IpAddr::from(LO), 0)).expect("bind");
        let pulse1 = UdpSocket::bind((IpAddr::from(LO), 0)).expect("bind");
        let port = |s: &UdpSocket| s.local_addr().expect("address").port();
        let (e, took) = wait_for_rank_1(
            port(&data1),
            port(&pulse1),
            1 << 23,
            Duration::from_millis(1200),
        );
        assert!(
            matches!(
                e.kind(),
                Kind::Collective(CollectiveError::Timeout { peer: 1, .. })
            ),
            "{e}"
        );
        assert!(took >= Duration::from_millis(1200), "{took:?}");
        // It was probed all along (empty datagrams), and refused none.
        pulse1.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 64];
        assert_eq!(pulse1.recv(&mut buf).ok(), Some(0), "no probe came");
    }
}
