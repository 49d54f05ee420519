//! Shared-memory transport, for jobs whose ranks all run on one host.
//!
//! Contract: the [`Transport`] contract (see `transport/mod.rs`), with the same errors as the UDP
//! transport: `Mismatch` when a peer's call differs (every message carries its sender's call, and
//! every rank publishes its calls of the last 64 collectives in the segment, so a waiting rank sees a
//! mismatch even when no data flows), `PeerExited` from the launcher's `EXIT` lines (without a launcher, `PeerGone` as soon as
//! a peer's process ends, from a pidfd of it: see `transport::gone`), `Timeout` when
//! the peer waited for made no progress (its heartbeat, bumped while it is inside boad calls, did not
//! move) for `BOAD_TIMEOUT_MS`, `Aborted` when a peer posted an abort for the collective (peers see it
//! at once: the abort wakes them), and the same deferred errors (`take_deferred`).
//!
//! Data path: one segment per job and host (`/dev/shm/boad-<name>`, the name a hash of the job key
//! and the host that reveals neither, see `boad_proto::shm` and [`segment`]) holding a
//! single-producer single-consumer byte ring for every ordered pair of ranks. A message is a 32-byte
//! record header (collective number, tag, length, the sender's call) followed by its payload, streamed
//! through the ring in as many pieces as the ring's free space allows. `send` writes what fits and
//! keeps the rest (copied) to write later, so it never waits for the receiver; every wait in this
//! transport (`recv`, `flush`) keeps writing pending data and reading every incoming ring, so no two
//! ranks can wait for each other's ring space.
//!
//! Slots: collectives of at most `BOAD_SHM_SLOT_BYTES` (4096, the most) bytes per rank skip the
//! rings ([`SlotOps`], algorithms in `algorithms/shm_slots.rs`). Each rank has [`segment::SLOTS`]
//! slots in the segment and uses slot `seq % SLOTS` for collective `seq`: it writes its data, its
//! call and the length, then the collective's number with a release store; a reader polls that
//! one word with acquire loads, checks the call (another call is a `Mismatch`) and the length, and
//! copies the data. So a broadcast is one post by the root and one copy by every other rank, a
//! reduce one post per non-root and the root's fold of all of them (in the binomial tree's order:
//! the bits of the message algorithms), allreduce and allgather one post per rank and a read of
//! all, a barrier one post per rank. A rank writes a slot again only after every other rank has
//! started a later collective than the one the slot holds (their current collective in the
//! segment; one that waits for this sets a flag in its bell line, and a rank that starts a
//! collective wakes it). Slot waits are the transport's waits: they keep moving ring data, and end
//! on aborts, a peer's different call (its published call, as for `recv`), exits and timeouts. The
//! limit is the one of the segment's creator (rank 0 of the host), so every rank of the job
//! decides the same; the decision depends only on the call, so ranks that make the same call take
//! the same path, and ranks that do not see a `Mismatch` whichever path each took.
//!
//! Waiting: a short spin polling the rings, then `sched_yield`s, then a futex sleep on this rank's
//! word in the segment (woken by a peer that writes to or drains a ring of ours, posts into its
//! slot, starts a collective while we wait to write our slot again, or posts an abort),
//! with a 20 ms timeout to read `EXIT` lines, bump the heartbeat and check the timeout (yield rounds
//! read `EXIT` lines and peers' heartbeats at most every millisecond, so that a round costs little
//! more than the yield). With more ranks than cores there is no spin (a few polls, then yields for
//! 10 ms with at most 2 ranks per core, 100 µs with more, before it sleeps), so a waiting rank gives
//! its core to the rank it waits for at once; a yield that took over 500 µs (another job's process
//! ran) makes waits sleep after 100 µs of yields for the next 100 ms.
//!
//! Lifetime of the segment: rank 0 creates it, the others open it, and the last rank to map it
//! unlinks it, so once a job has started nothing is left in `/dev/shm` whatever happens later (even
//! SIGKILL of every process). A job that dies before every rank mapped it leaves the file behind;
//! `boadrun` removes it when it ends (`boad_proto::shm::remove_segment`), or its cleanup process does
//! if boadrun is killed.
//!
//! Other users: the segment is created exclusively, owner-only (0600), under a name nobody can
//! predict or reverse without the job key; a rank opening it checks, before mapping it, that it is a
//! regular file of this user, owner-only, of the expected size, whose header names this job (a
//! keyed tag, not the key). A name taken by someone else's file is an error that says so, never a
//! map of that file.

mod segment;
mod slots;

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use segment::{OpenError, Segment};

use super::gone::{PortProbe, ProcWatch};
use super::launcher::LauncherFeed;
use super::ledger::{self, check_peer, Exit, Ledger, Life};
use super::{Ctx, Level, Service, Session, SlotOps, Stats, Transport};
use crate::config::Config;
use crate::error::{CollectiveError, Error, Result, UsageError};
use crate::join::JobInfo;
use crate::types::Signature;
use boad_proto::lines::PeerEntry;

/// Bytes of a message's record header in a ring.
const REC: usize = 32;
/// How long a sleeping rank sleeps at most before it looks around (exits, timeouts, heartbeat).
const SLEEP: Duration = Duration::from_millis(20);
/// Idle polls between slow rounds (clock, heartbeat, peer status) while spinning...
const SLOW_EVERY: u32 = 64;
/// ... and with more ranks than cores (so that a waiting rank soon yields its core).
const SLOW_EVERY_CROWDED: u32 = 4;
/// How often slow rounds also read the launcher connection (`EXIT` lines) and the peers'
/// heartbeats: a yield round is short, and a system call in each would make it several times longer.
const LOOK_EVERY: Duration = Duration::from_millis(1);
/// How long a waiting rank polls before it yields its core, with at most one rank per core...
const SPIN: Duration = Duration::from_micros(100);
/// ... and then polls between `sched_yield`s before it sleeps on its futex (none: with a core each,
/// a yield only hands the core to an unrelated process, for a whole time slice).
const YIELD: Duration = Duration::ZERO;
/// Spin and yield times grow up to 2^MAX_BOOST times while sleeps turn out needless.
const MAX_BOOST: u32 = 4;
/// The same with more ranks than cores: the rank waited for may need this core, so a wait yields
/// it at once (after SLOW_EVERY_CROWDED idle polls). Handing the core over costs about 1.7 µs on the
/// 2-core machines here; a 2 µs spin first doubled the cost of every hand-over. It then yields for
/// YIELD_CROWDED before it sleeps...
const SPIN_CROWDED: Duration = Duration::ZERO;
const YIELD_CROWDED: Duration = Duration::from_micros(100);
/// ... or, with at most 2 ranks per core, for YIELD_PAIRED (as Open MPI, which never sleeps when
/// oversubscribed): there a yield hands the core to the one other rank of the core, and a rank that
/// sleeps costs its waker a `FUTEX_WAKE` and itself a wake-up (small collectives of 4 ranks on 2
/// cores took 1.5-2.5 times longer with 100 µs than with 10 ms). With more ranks per core a yield
/// also runs every other yielding rank, and the processes of other jobs for a whole time slice:
/// there, on a busy host, yielding for 10 ms gave 9 ranks on 2 cores p99 latencies of 1-3 ms where
/// sleeping after 100 µs kept them under 0.2 ms.
const YIELD_PAIRED: Duration = Duration::from_millis(10);
/// A yield that takes longer than this ran a process of another job (a rank's turn between two
/// polls is a few µs)...
const BUSY_YIELD: Duration = Duration::from_micros(500);
/// ... and then waits yield at most YIELD_CROWDED before they sleep, for this long.
const BUSY_FOR: Duration = Duration::from_millis(100);

/// A call as two words: (coll, op, dtype, root) and count.
fn sig_words(sig: &Signature) -> (u64, u64) {
    let (c, o, d) = sig.codes();
    (
        u64::from(c) | u64::from(o) << 8 | u64::from(d) << 16 | u64::from(sig.root) << 32,
        sig.count,
    )
}

/// The call of [`sig_words`]; None for words no call makes (unknown codes, or the unused byte set).
fn sig_from_words(w0: u64, w1: u64) -> Option<Signature> {
    if (w0 >> 24) & 0xff != 0 {
        return None;
    }
    Signature::from_codes(
        w0 as u8,
        (w0 >> 8) as u8,
        (w0 >> 16) as u8,
        w1,
        (w0 >> 32) as u32,
    )
}

/// The record header of a message.
fn record(ctx: &Ctx, tag: u32, len: usize) -> [u8; REC] {
    let (w0, w1) = sig_words(&ctx.sig);
    let mut h = [0u8; REC];
    h[0..4].copy_from_slice(&ctx.seq.to_le_bytes());
    h[4..8].copy_from_slice(&tag.to_le_bytes());
    h[8..16].copy_from_slice(&(len as u64).to_le_bytes());
    h[16..24].copy_from_slice(&w0.to_le_bytes());
    h[24..32].copy_from_slice(&w1.to_le_bytes());
    h
}

/// A record header as read from a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    /// Collective.
    pub seq: u32,
    /// Step within it.
    pub tag: u32,
    /// The sender's call.
    pub sig: Signature,
    /// Payload bytes that follow.
    pub len: usize,
}

/// Why a record header read from a ring is refused (the sender wrote garbage: the ring cannot be
/// read further).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BadRecord {
    /// Words that are not a call.
    Call,
    /// A payload longer than the call can need (see `ledger::message_limit`).
    Length(u64),
}

/// Decodes a record header of a transport whose allgathers move `gather_blocks` blocks at most.
pub(crate) fn decode_record(h: &[u8; REC], gather_blocks: usize) -> Result<Record, BadRecord> {
    let word = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&h[8 * i..8 * i + 8]);
        u64::from_le_bytes(a)
    };
    let (w, len, w0, w1) = (word(0), word(1), word(2), word(3));
    let sig = sig_from_words(w0, w1).ok_or(BadRecord::Call)?;
    let fits = ledger::message_limit(&sig, gather_blocks).is_some_and(|l| len <= l);
    let len = usize::try_from(len)
        .ok()
        .filter(|_| fits && len <= u64::from(u32::MAX))
        .ok_or(BadRecord::Length(len))?;
    Ok(Record {
        seq: w as u32,
        tag: (w >> 32) as u32,
        sig,
        len,
    })
}

/// Reads what is available of the next message from `ring` into `inp` (the message being read
/// from it, if its record header was read already): (whether anything was read, the message once
/// it is whole). A record header that does not decode is an error (and consumed). A message's
/// buffer is allocated whole up to `prealloc` bytes (the largest message of a call this rank
/// made), and beyond that only as its bytes arrive.
fn read_ring(
    ring: &segment::Ring<'_>,
    inp: &mut Option<InMsg>,
    gather_blocks: usize,
    prealloc: usize,
) -> std::result::Result<(bool, Option<InMsg>), BadRecord> {
    let mut read = false;
    if inp.is_none() {
        let mut h = [0u8; REC];
        if !ring.read_exact(&mut h) {
            return Ok((false, None));
        }
        read = true;
        let r = decode_record(&h, gather_blocks)?;
        *inp = Some(InMsg {
            seq: r.seq,
            tag: r.tag,
            sig: r.sig,
            len: r.len,
            buf: Vec::with_capacity(r.len.min(prealloc)),
        });
    }
    let Some(m) = inp.as_mut() else {
        return Ok((read, None));
    };
    let missing = m.len - m.buf.len();
    if missing > 0 {
        let n = ring.read_into(&mut m.buf, missing);
        read |= n > 0;
        if n < missing {
            return Ok((read, None));
        }
    }
    Ok((read, inp.take()))
}

/// Fuzz and property-test harness of what a rank reads from shared memory a peer may have
/// scribbled on: `data` overwrites a ring's control lines and data and the peer's block (abort
/// slots, call slots, current collective) of a 2-rank segment with small rings; then the ring is
/// read message by message, and the slots decoded. Panics on any inconsistency; returns how many
/// messages came whole.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn exercise_segment(data: &[u8]) -> usize {
    let Some((&[cap_sel, blocks, seq_lo, seq_hi, where_sel], rest)) = data.split_first_chunk()
    else {
        return 0;
    };
    let mut whole = 0;
    // Rings start on 128-byte lines: a capacity of a multiple of 128 keeps them there.
    let cap = 128usize << (cap_sel % 4);
    let seg = Segment::scratch(2, cap).expect("map a scratch segment");
    let (ring_at, ring_len) = seg.ring_span(1, 0);
    let (block_at, block_len) = seg.block_span(1);
    // First the ring (control lines and data), then the peer's block.
    let (on_ring, on_block) = rest.split_at(rest.len().min(ring_len));
    seg.scribble(ring_at, on_ring);
    let shift = usize::from(where_sel) * 64 % block_len;
    seg.scribble(block_at + shift, on_block);
    let ring = seg.ring(1, 0);
    let gather_blocks = usize::from(blocks % 8) + 1;
    let prealloc = usize::from(blocks) << 12;
    let mut inp = None;
    for _ in 0..16 {
        match read_ring(&ring, &mut inp, gather_blocks, prealloc) {
            Ok((_, Some(m))) => {
                assert_eq!(m.buf.len(), m.len);
                let limit = ledger::message_limit(&m.sig, gather_blocks).expect("limit");
                assert!(m.len as u64 <= limit);
                whole += 1;
            }
            Ok((false, None)) | Err(_) => break,
            Ok((true, None)) => {}
        }
        assert!(inp.as_ref().is_none_or(|m| m.buf.len() <= m.len));
        assert!(ring.available() <= cap);
    }
    let seq = u32::from_le_bytes([seq_lo, seq_hi, 0, 0]);
    for i in 0..segment::ABORT_SLOTS as u32 {
        if let Some((_, reason)) = seg.abort(1, seg.abort_count(1).wrapping_sub(i)) {
            assert!(reason.len() <= 4 * 240);
        }
    }
    if let Some((w0, w1)) = seg.call_of(1, seq) {
        if let Some(sig) = sig_from_words(w0, w1) {
            assert_eq!(sig_words(&sig), (w0, w1));
        }
    }
    let _ = (seg.current(1), seg.heartbeat(1));
    whole
}

/// A message not yet fully written into its ring.
struct OutMsg {
    head: [u8; REC],
    head_done: bool,
    /// The payload not written yet.
    rest: Vec<u8>,
    off: usize,
}

/// What a `recv` waits for.
struct Want {
    src: usize,
    seq: u32,
    tag: u32,
    sig: Signature,
}

/// A message being read from a ring.
pub(crate) struct InMsg {
    seq: u32,
    tag: u32,
    sig: Signature,
    len: usize,
    buf: Vec<u8>,
}

struct Peer {
    /// Its end, once the launcher said so or this rank saw it.
    exited: Option<Exit>,
    /// Last heartbeat value seen, and when it was first seen.
    beat: u64,
    beat_at: Instant,
    aborts_seen: u32,
    /// Its process (on this host).
    pid: u32,
    /// When we last warned that we wait for it.
    warned: Option<Instant>,
    /// When this rank started the wait for it that is going on (see `Udp::watch`).
    watched: Instant,
    /// Without a launcher, for a peer whose process is not watched (another pid namespace): its
    /// UDP socket of the table, probed for refusals while it is silent (`transport::gone`).
    port: Option<std::net::SocketAddr>,
    probe: PortProbe,
}

/// Messages through shared memory.
pub(crate) struct Shm {
    rank: usize,
    size: usize,
    cfg: Config,
    seg: Segment,
    /// Per destination: messages not fully written into its ring, in order.
    out: Vec<VecDeque<OutMsg>>,
    /// Per destination: the consumer's ring position last read (see [`segment::Ring::write_with`]).
    seen_heads: Vec<u64>,
    /// Per source: the message being read.
    inp: Vec<Option<InMsg>>,
    /// Per source: messages fully read.
    consumed: Vec<u64>,
    ledger: Ledger,
    peers: Vec<Peer>,
    launcher: LauncherFeed,
    /// The peers' processes, watched when no launcher reports their ends (`transport::gone`).
    procs: ProcWatch,
    /// This rank's UDP socket of the job table, kept open for its whole life: it is what proves to
    /// the peers of this host that this process is this rank (`transport::gone`).
    held_socket: Option<std::net::UdpSocket>,
    stats: Stats,
    /// How long a wait polls before it yields, and polls and yields before it sleeps.
    spin: Duration,
    yields: Duration,
    /// When the current wait went idle (its first slow round, see [`Shm::idle`]).
    idle_since: Instant,
    /// Whether `idle_since` was set for the current wait.
    idle_timed: bool,
    /// When the last slow round yielded (cleared by the next one, which measures the yield).
    yielded_at: Option<Instant>,
    /// Until when yields are short because one took long (see BUSY_YIELD).
    busy_until: Option<Instant>,
    /// Idle polls between slow rounds: SLOW_EVERY, or SLOW_EVERY_CROWDED.
    slow_every: u32,
    /// When slow rounds next read the launcher connection and the heartbeats.
    next_look: Instant,
    /// Whether the current wait slept on the futex.
    slept: bool,
    /// Spin and yield times are scaled by 2^boost (0..=max_boost), see [`Shm::adapt`].
    boost: u32,
    /// MAX_BOOST with at most one rank per core, else 0 (a busy core is not halted).
    max_boost: u32,
    /// Run in every slow round of a wait (the hierarchical path: keeps the network level going).
    idle_hook: Option<super::Service>,
    /// The job rank of each rank of this transport, for messages (empty: the same numbers).
    job_ranks: Vec<usize>,
    /// Blocks of the largest message of an allgather on this transport (see
    /// `ledger::message_limit`): its size, or what [`Shm::set_gather_blocks`] says.
    gather_blocks: usize,
    /// The largest message a call of this rank needs (see [`read_ring`]).
    prealloc: usize,
    /// The largest collective (bytes per rank) that goes through the slots (the segment says).
    slot_limit: usize,
    /// Per slot of this rank: the collective it holds, if any.
    slot_posted: [Option<u32>; segment::SLOTS],
    /// What the slot wait going on waits for (see [`Shm::has_work`]).
    slot_waiting: Option<slots::SlotWait>,
    /// Where a slot's data is copied to before it is handed on (kept between calls).
    slot_buf: Vec<u8>,
}

impl Shm {
    /// Maps the job's segment (creating it on rank 0), for `info.rank` of the ranks in `table`, which
    /// must all run on this host.
    pub fn new(
        info: &JobInfo,
        table: &[PeerEntry],
        conn: Option<UnixStream>,
        leftover: Vec<u8>,
        cfg: Config,
    ) -> Result<Shm> {
        let (rank, size) = (info.rank, table.len());
        let io = |what| Error::io_at(rank, what);
        let mut launcher = LauncherFeed::new(conn, leftover)
            .map_err(io("making the launcher connection non-blocking"))?;
        // Without a launcher's EXIT lines, this rank watches its peers' processes itself.
        let direct = launcher.fd().is_none();
        let mut procs = if direct {
            ProcWatch::new(rank, table)
        } else {
            ProcWatch::default()
        };
        let seg = if size == 1 {
            Segment::anonymous().map_err(io("mapping memory"))?
        } else {
            let path = boad_proto::shm::segment_path(info.job, info.host_id);
            let tag = boad_proto::shm::segment_tag(info.job, info.host_id);
            let seg = if rank == 0 {
                Segment::create(&path, tag, size, cfg.shm_slot_bytes).map_err(|e| {
                    let what = if e.kind() == ErrorKind::AlreadyExists {
                        "creating the shared-memory segment: its name in /dev/shm is taken by a file \
                         this job did not create (refusing to use it; BOAD_TRANSPORT=udp avoids shared \
                         memory)"
                    } else {
                        "creating the shared-memory segment in /dev/shm (BOAD_TRANSPORT=udp avoids it)"
                    };
                    io(what)(e)
                })?
            } else {
                Self::open(rank, &path, tag, size, &cfg, &mut launcher, &mut procs)?
            };
            seg.prefault(rank);
            if seg.attach() {
                // Everybody has it mapped: from now on nothing can leak.
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != ErrorKind::NotFound => {
                        return Err(io("removing the shared-memory segment file")(e))
                    }
                    _ => {}
                }
            }
            seg
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let crowded = info.local_size.max(size) > cores;
        let paired = info.local_size.max(size) <= 2 * cores;
        let (spin, yields) = cfg.shm_spin.unwrap_or(if crowded && paired {
            (SPIN_CROWDED, YIELD_PAIRED)
        } else if crowded {
            (SPIN_CROWDED, YIELD_CROWDED)
        } else {
            (SPIN, YIELD)
        });
        let now = Instant::now();
        let mut t = Shm {
            rank,
            size,
            cfg,
            seg,
            out: (0..size).map(|_| VecDeque::new()).collect(),
            seen_heads: vec![0; size],
            inp: (0..size).map(|_| None).collect(),
            consumed: vec![0; size],
            ledger: Ledger::default(),
            peers: table
                .iter()
                .enumerate()
                .map(|(r, e)| Peer {
                    exited: None,
                    beat: 0,
                    beat_at: now,
                    aborts_seen: 0,
                    pid: e.pid,
                    warned: None,
                    watched: now,
                    port: (direct && r != rank && e.port != 0 && procs.fd(r).is_none())
                        .then(|| std::net::SocketAddr::new(e.ip, e.port)),
                    probe: PortProbe::default(),
                })
                .collect(),
            launcher,
            procs,
            held_socket: None,
            stats: Stats::default(),
            spin,
            yields,
            idle_since: now,
            idle_timed: false,
            yielded_at: None,
            busy_until: None,
            slow_every: if crowded {
                SLOW_EVERY_CROWDED
            } else {
                SLOW_EVERY
            },
            next_look: now,
            slept: false,
            boost: 0,
            max_boost: if crowded { 0 } else { MAX_BOOST },
            idle_hook: None,
            job_ranks: Vec::new(),
            gather_blocks: size,
            prealloc: 0,
            slot_limit: 0,
            slot_posted: [None; segment::SLOTS],
            slot_waiting: None,
            slot_buf: Vec::new(),
        };
        t.slot_limit = t.seg.slot_limit();
        t.read_launcher();
        Ok(t)
    }

    /// Opens the segment rank 0 creates, waiting for it as long as rank 0 lives and the timeout.
    fn open(
        rank: usize,
        path: &std::path::Path,
        tag: u64,
        size: usize,
        cfg: &Config,
        launcher: &mut LauncherFeed,
        procs: &mut ProcWatch,
    ) -> Result<Segment> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(50);
        loop {
            match Segment::open(path, tag, size) {
                Ok(s) => return Ok(s),
                Err(OpenError::NotYet) => {}
                Err(OpenError::Bad(why)) => {
                    return Err(Error::io(
                        rank,
                        "opening the shared-memory segment",
                        std::io::Error::other(why),
                    ))
                }
                Err(OpenError::Io(source)) => {
                    return Err(Error::io(rank, "opening the shared-memory segment", source))
                }
            }
            let call = "init (opening the shared-memory segment)";
            if let Some((_, code)) = launcher.poll(|_| {}).into_iter().find(|(r, _)| *r == 0) {
                return Err(Error::new(
                    rank,
                    CollectiveError::PeerExited {
                        call: call.into(),
                        peer: 0,
                        code,
                    },
                ));
            }
            if let Some(how) = procs.ended_one(0) {
                return Err(Error::new(
                    rank,
                    CollectiveError::PeerGone {
                        call: call.into(),
                        peer: 0,
                        how,
                    },
                ));
            }
            let waited = start.elapsed();
            if waited > cfg.timeout {
                return Err(Error::new(
                    rank,
                    CollectiveError::Timeout {
                        call: call.into(),
                        peer: 0,
                        waited_ms: waited.as_millis() as u64,
                        timeout_ms: cfg.timeout.as_millis() as u64,
                    },
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    fn read_launcher(&mut self) {
        for (r, code) in self.launcher.poll(|_| {}) {
            if r != self.rank {
                if let Some(p) = self.peers.get_mut(r) {
                    p.exited = Some(Exit::Code(code));
                }
            }
        }
        for (r, how) in self.procs.ended() {
            if let Some(p) = self.peers.get_mut(r) {
                p.exited.get_or_insert(Exit::Gone(how));
            }
        }
    }

    /// Keeps `sock` (this rank's UDP socket of the job table) open as long as this transport.
    pub fn hold_socket(&mut self, sock: std::net::UdpSocket) {
        // Never read: only peers' probes reach it, and they need no room.
        let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(4096);
        self.held_socket = Some(sock);
    }

    /// Writes what fits of the messages pending for `dst`; true if anything was written.
    fn push(&mut self, dst: usize) -> bool {
        let ring = self.seg.ring(self.rank, dst);
        let mut wrote = false;
        while let Some(m) = self.out[dst].front_mut() {
            let body = &m.rest[m.off..];
            let head: &[u8] = if m.head_done { &[] } else { &m.head };
            let Some(n) = ring.write_with(head, body, &mut self.seen_heads[dst]) else {
                break;
            };
            if !head.is_empty() || n > 0 {
                wrote = true;
            }
            m.head_done = true;
            m.off += n;
            if m.off < m.rest.len() {
                break;
            }
            self.out[dst].pop_front();
        }
        if wrote {
            self.seg.notify(dst);
        }
        wrote
    }

    /// Reads everything available from `src`'s ring into the inbox; true if anything was read. The
    /// message `want` waits for, if it comes whole with the caller's call, is returned instead of
    /// filed (and reading stops there): no inbox round trip on the common path.
    fn pull(&mut self, src: usize, want: Option<&Want>) -> Result<(bool, Option<Vec<u8>>)> {
        let ring = self.seg.ring(src, self.rank);
        let mut read = false;
        let mut got = None;
        loop {
            let (r, whole) =
                read_ring(&ring, &mut self.inp[src], self.gather_blocks, self.prealloc).map_err(
                    |bad| -> Error {
                        Error::protocol(
                            self.rank,
                            "reading shared memory".into(),
                            match bad {
                                BadRecord::Call => {
                                    format!("rank {src} wrote a message with an unknown call")
                                }
                                BadRecord::Length(len) => format!(
                            "rank {src} wrote a message of {len} bytes, more than its call needs"
                        ),
                            },
                        )
                    },
                )?;
            read |= r;
            let Some(m) = whole else {
                break;
            };
            self.consumed[src] += 1;
            self.stats.shm_messages_received += 1;
            if want
                .is_some_and(|w| w.src == src && w.seq == m.seq && w.tag == m.tag && w.sig == m.sig)
            {
                got = Some(m.buf);
                break;
            }
            if self.ledger.sig_of(m.seq).is_some_and(|mine| mine != m.sig) {
                self.ledger.mismatches.entry(m.seq).or_insert((src, m.sig));
            }
            self.ledger
                .inbox
                .insert((src, m.seq, m.tag), (m.sig, m.buf));
        }
        if read {
            // The producer may wait for space.
            self.seg.notify(src);
        }
        Ok((read, got))
    }

    /// Writes pending data and reads every incoming ring; true if anything moved.
    fn progress(&mut self) -> Result<bool> {
        Ok(self.progress_for(None)?.0)
    }

    /// [`progress`](Self::progress) for a wait for `want`: its ring is read first, and the message,
    /// once whole, is returned (the other rings are then left for the next round).
    fn progress_for(&mut self, want: Option<&Want>) -> Result<(bool, Option<Vec<u8>>)> {
        let mut moved = false;
        for dst in 0..self.size {
            if !self.out[dst].is_empty() {
                if self.peers[dst].exited.is_some() {
                    self.out[dst].clear();
                } else {
                    moved |= self.push(dst);
                }
            }
        }
        if let Some(w) = want.filter(|w| w.src != self.rank) {
            let (read, got) = self.pull(w.src, want)?;
            if got.is_some() {
                return Ok((true, got));
            }
            moved |= read;
        }
        for src in 0..self.size {
            if src != self.rank && want.is_none_or(|w| w.src != src) {
                moved |= self.pull(src, None)?.0;
            }
        }
        Ok((moved, None))
    }

    /// True if a ring has data for us, a pending message has room, a peer posted an abort, or
    /// what a slot wait waits for happened.
    fn has_work(&self) -> bool {
        if self.slot_waiting.is_some_and(|w| self.slot_ready(w)) {
            return true;
        }
        (0..self.size).filter(|&r| r != self.rank).any(|r| {
            self.seg.ring(r, self.rank).available() > 0
                || self.out[r].front().is_some_and(|m| {
                    self.seg.ring(self.rank, r).free() >= if m.head_done { 1 } else { REC }
                })
                || self.seg.abort_count(r) != self.peers[r].aborts_seen
        })
    }

    /// Collects the aborts peers posted since the last look.
    fn scan_aborts(&mut self) {
        for r in 0..self.size {
            if r == self.rank {
                continue;
            }
            let n = self.seg.abort_count(r);
            let seen = self.peers[r].aborts_seen;
            if n == seen {
                continue;
            }
            // A reader more than ABORT_SLOTS behind has lost the oldest ones.
            let behind = n.wrapping_sub(seen).min(segment::ABORT_SLOTS as u32);
            for k in (1..=behind).rev() {
                if let Some((seq, reason)) = self.seg.abort(r, n.wrapping_sub(k)) {
                    self.ledger.note_abort(seq, r, reason);
                }
            }
            self.peers[r].aborts_seen = n;
        }
    }

    /// Bumps our heartbeat, and (at most every LOOK_EVERY) reads the launcher's `EXIT` lines and
    /// notes the peers' heartbeats.
    fn slow_checks(&mut self) {
        if let Some(hook) = self.idle_hook.as_mut() {
            hook();
        }
        self.seg.beat(self.rank);
        let now = Instant::now();
        if now < self.next_look {
            return;
        }
        self.next_look = now + LOOK_EVERY;
        self.read_launcher();
        for r in 0..self.size {
            let b = self.seg.heartbeat(r);
            let p = &mut self.peers[r];
            if b != p.beat {
                p.beat = b;
                p.beat_at = now;
                p.probe.heard();
            }
        }
    }

    /// One idle round of a wait: poll, yield or sleep. `idle` counts the rounds since the last
    /// progress (0 when a wait starts or after progress). True when the caller should run its slow
    /// checks (peer status) this round.
    fn idle(&mut self, idle: &mut u32) -> bool {
        if *idle == 0 {
            // The clock is read from the first slow round on: most waits end before it, and a
            // clock read costs about what a whole small collective does.
            self.idle_timed = false;
            self.yielded_at = None;
            self.slept = false;
        }
        *idle += 1;
        if !idle.is_multiple_of(self.slow_every) {
            std::hint::spin_loop();
            return false;
        }
        let now = Instant::now();
        let waited = if self.idle_timed {
            now - self.idle_since
        } else {
            self.idle_timed = true;
            self.idle_since = now;
            Duration::ZERO
        };
        // A yield that came back after more than BUSY_YIELD ran another process for a time
        // slice: this host is busy beyond this job, and long yields would hand it the cores
        // (see YIELD_PAIRED). Then waits yield no longer than YIELD_CROWDED for BUSY_FOR.
        if let Some(at) = self.yielded_at.take() {
            if now - at > BUSY_YIELD {
                self.busy_until = Some(now + BUSY_FOR);
            }
        }
        let busy = self.busy_until.is_some_and(|u| now < u);
        let (spin, yields) = (
            self.spin * (1 << self.boost),
            if busy {
                self.yields.min(YIELD_CROWDED)
            } else {
                self.yields
            } * (1 << self.boost),
        );
        if waited < spin {
            std::hint::spin_loop();
        } else {
            if waited < spin + yields {
                std::thread::yield_now();
                self.yielded_at = Some(now);
            } else if self.seg.sleep(self.rank, SLEEP, || !self.has_work()) {
                self.stats.futex_waits += 1;
                self.slept = true;
            }
            // Yield and sleep rounds are slow already: every next one is a slow round.
            *idle = self.slow_every - 1;
        }
        if waited >= spin || idle.is_multiple_of(self.slow_every * 16) {
            self.slow_checks();
        }
        true
    }

    /// Called when a wait that went idle ends. Waking a sleeping rank can take longer than the spin
    /// (a halted virtual CPU), and then the peer waiting for the woken rank's answer outlasts its
    /// own spin and sleeps too: two ranks can lock into sleeping on every message. So (with a core
    /// per rank) a wait that
    /// slept but ended soon after makes waits spin longer (up to 2^MAX_BOOST times), and a wait
    /// for a really slow peer brings the spin back down.
    fn adapt(&mut self) {
        if !self.slept {
            return;
        }
        self.slept = false;
        let waited = self.idle_since.elapsed();
        let budget = (self.spin + self.yields) * (1 << self.boost);
        if waited < budget + Duration::from_millis(1) {
            self.boost = (self.boost + 1).min(self.max_boost);
        } else if waited > budget * 8 + SLEEP {
            self.boost = self.boost.saturating_sub(1);
        }
    }

    /// Errors that end a wait for `src` in collective `ctx`.
    fn check_status(&mut self, ctx: &Ctx, src: usize) -> Result<()> {
        let rank = self.rank;
        self.ledger.current(rank, ctx)?;
        if let Some(cur) = self.seg.current(src) {
            // Has the peer started this collective (or a later one)?
            if cur.wrapping_sub(ctx.seq) < 1 << 31 {
                if let Some(theirs) = self
                    .seg
                    .call_of(src, ctx.seq)
                    .and_then(|(w0, w1)| sig_from_words(w0, w1))
                {
                    if theirs != ctx.sig {
                        return Err(Error::mismatch(rank, ctx.seq, src, ctx.sig, theirs));
                    }
                    // It moved on, and everything it queued for us has been read. A rank that gave
                    // up the collective posted its abort before moving on: look again for it.
                    if cur != ctx.seq
                        && self.inp[src].is_none()
                        && self.seg.ring(src, rank).queued() == self.consumed[src]
                    {
                        self.scan_aborts();
                        self.ledger.current(rank, ctx)?;
                        return Err(Error::protocol(rank, ctx.describe(), format!(
                                "rank {src} finished this collective without sending this rank the data it waits for (do all ranks pass the same root?)"
                            )));
                    }
                }
            }
        }
        self.keep_waiting(Some(ctx), src)
    }

    /// Whether waiting for `src` may go on (see `ledger::check_peer`): its heartbeat moves only
    /// inside boad calls, so once it has stood still for the timeout, the peer's process decides:
    /// one that runs is alive (busy outside boad, or waiting for another rank) and is waited for.
    fn keep_waiting(&mut self, ctx: Option<&Ctx>, src: usize) -> Result<()> {
        let p = &mut self.peers[src];
        if let (Some(to), None) = (p.port, &p.exited) {
            let silent = p.beat_at.max(p.watched).elapsed();
            if let Some(how) = p.probe.step(to, silent, Instant::now()) {
                p.exited = Some(Exit::Gone(how));
                if ctx.is_none() {
                    // Delivering the last messages: a receiver that is gone is done with.
                    return Ok(());
                }
            }
        }
        let mut silent = self.peers[src]
            .beat_at
            .max(self.peers[src].watched)
            .elapsed();
        if silent > self.cfg.timeout {
            // The heartbeat is noted only every LOOK_EVERY of a wait on this level: look again.
            let b = self.seg.heartbeat(src);
            let p = &mut self.peers[src];
            if b != p.beat {
                p.beat = b;
                p.beat_at = Instant::now();
                silent = Duration::ZERO;
            }
        }
        let life = if silent > self.cfg.timeout && ledger::process_runs(self.peers[src].pid) {
            let now_seq = ctx.map_or(u32::MAX, |c| c.seq);
            Life::Alive {
                at: self.seg.current(src).map(|c| (c, c == now_seq)),
            }
        } else {
            Life::Unknown
        };
        if matches!(self.peers[src].exited, Some(Exit::Gone(_))) {
            // An abort it posted before it ended says why it left: read what is there first.
            self.scan_aborts();
        }
        let exited = self.ledger.explain(src, self.peers[src].exited.as_ref());
        let peer = &mut self.peers[src];
        check_peer(
            self.rank,
            ctx,
            src,
            exited.as_ref(),
            silent,
            self.cfg.timeout,
            life,
            &mut peer.warned,
            &self.job_ranks,
        )
    }

    /// The message (`src`, `ctx.seq`, `tag`) if it has arrived.
    fn take(&mut self, ctx: &Ctx, src: usize, tag: u32) -> Result<Option<Vec<u8>>> {
        if self.ledger.inbox.is_empty() {
            // The common case: no hashing.
            return Ok(None);
        }
        match self.ledger.inbox.remove(&(src, ctx.seq, tag)) {
            Some((theirs, _)) if theirs != ctx.sig => {
                Err(Error::mismatch(self.rank, ctx.seq, src, ctx.sig, theirs))
            }
            Some((_, data)) => Ok(Some(data)),
            None => Ok(None),
        }
    }
}

impl Session for Shm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn begin(&mut self, ctx: &Ctx) -> Result<()> {
        self.ledger.start(ctx);
        let need = ledger::message_limit(&ctx.sig, self.gather_blocks)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0);
        self.prealloc = self.prealloc.max(need);
        let (w0, w1) = sig_words(&ctx.sig);
        self.seg.publish_call(self.rank, ctx.seq, w0, w1);
        if self.slot_limit > 0 {
            // A peer may wait for this rank to leave a collective whose slot it writes again.
            self.seg.wake_reusers(self.rank);
        }
        self.seg.beat(self.rank);
        self.progress()?;
        self.ledger.settle(self.rank, ctx)
    }
    fn take_deferred(&mut self, seq: u32) -> Option<Error> {
        self.progress().ok()?;
        self.scan_aborts();
        self.ledger.take_deferred(self.rank, seq)
    }
    fn end(&mut self, _ctx: &Ctx) {
        self.stats.collectives_shm += 1;
    }
    fn fail(&mut self, ctx: &Ctx, err: &Error) {
        let reason = err.to_string();
        self.seg.post_abort(self.rank, ctx.seq, &reason);
        self.ledger.my_aborts.insert(ctx.seq, reason);
        for r in 0..self.size {
            if r != self.rank {
                self.seg.notify(r);
            }
        }
    }
    fn flush(&mut self) -> Result<()> {
        let mut idle = 0u32;
        let mut watching = None;
        loop {
            if self.progress()? {
                self.adapt();
                idle = 0;
            }
            let Some(dst) = (0..self.size).find(|&d| !self.out[d].is_empty()) else {
                return Ok(());
            };
            if watching != Some(dst) {
                watching = Some(dst);
                self.peers[dst].watched = Instant::now();
            }
            if let Err(e) = self.keep_waiting(None, dst) {
                self.out.iter_mut().for_each(VecDeque::clear);
                return Err(e);
            }
            self.idle(&mut idle);
        }
    }
    fn stats(&self) -> Stats {
        self.stats
    }
    fn path(&self) -> crate::types::Path {
        crate::types::Path::Shm
    }
}

impl Transport for Shm {
    fn send(&mut self, ctx: &Ctx, dst: usize, tag: u32, data: &[u8]) -> Result<()> {
        let max = u32::MAX as usize;
        if data.len() > max {
            return Err(Error::new(
                self.rank,
                UsageError::TooLarge {
                    bytes: data.len(),
                    max,
                },
            ));
        }
        if dst == self.rank {
            self.ledger
                .inbox
                .insert((dst, ctx.seq, tag), (ctx.sig, data.to_vec()));
            return Ok(());
        }
        self.stats.shm_messages_sent += 1;
        self.stats.shm_bytes_sent += data.len() as u64;
        let head = record(ctx, tag, data.len());
        let ring = self.seg.ring(self.rank, dst);
        ring.count_queued();
        if self.out[dst].is_empty() {
            if let Some(n) = ring.write_with(&head, data, &mut self.seen_heads[dst]) {
                self.seg.notify(dst);
                if n < data.len() {
                    self.out[dst].push_back(OutMsg {
                        head,
                        head_done: true,
                        rest: data[n..].to_vec(),
                        off: 0,
                    });
                }
                return Ok(());
            }
        }
        self.out[dst].push_back(OutMsg {
            head,
            head_done: false,
            rest: data.to_vec(),
            off: 0,
        });
        Ok(())
    }
    fn recv(&mut self, ctx: &Ctx, src: usize, tag: u32) -> Result<Vec<u8>> {
        let mut idle = 0u32;
        let mut slow = false;
        let want = Want {
            src,
            seq: ctx.seq,
            tag,
            sig: ctx.sig,
        };
        // The inbox changes only when a ring is read: look into it first and after each read.
        let mut look = true;
        // The wait for `src` starts (its silence counts) at the first slow round, not on the fast
        // path: a clock read there would cost more than many a whole message.
        let mut watching = false;
        loop {
            self.scan_aborts();
            if look {
                if let Some(data) = self.take(ctx, src, tag)? {
                    self.adapt();
                    return Ok(data);
                }
                look = false;
            }
            let (moved, got) = self.progress_for(Some(&want))?;
            if let Some(data) = got {
                self.adapt();
                return Ok(data);
            }
            if moved {
                self.adapt();
                idle = 0;
                look = true;
                continue;
            }
            // Only after a poll that found the rings empty: a peer that wrote its last message and
            // exited is not reported before that message was read. Reading the peer's status lines
            // on every poll would pull them between caches while the peer writes them; a mismatch
            // or a silent peer can wait for the next slow round.
            if slow || (!self.ledger.aborts.is_empty() && self.ledger.aborts.contains_key(&ctx.seq))
            {
                if !watching {
                    watching = true;
                    self.peers[src].watched = Instant::now();
                }
                self.check_status(ctx, src)?;
            }
            slow = self.idle(&mut idle);
        }
    }
    fn slots(&mut self) -> Option<&mut dyn SlotOps> {
        self.slot_ops()
    }
}

impl Shm {
    /// Every rank of this transport is on this host: the slots are there for the small calls.
    fn slot_ops(&mut self) -> Option<&mut dyn SlotOps> {
        (self.slot_limit > 0 && self.size > 1).then_some(self as &mut dyn SlotOps)
    }
}

impl Level for Shm {
    /// Sets how many blocks the largest message of an allgather on this transport holds (its size
    /// by default): on the hierarchical path a host's leader sends it the whole job's result.
    fn set_gather_blocks(&mut self, blocks: usize) {
        self.gather_blocks = blocks;
    }

    /// Sets what every slow round of a wait runs besides this transport's own checks.
    fn set_idle_hook(&mut self, hook: Service) {
        self.idle_hook = Some(hook);
    }

    /// Sets the job rank of each rank of this transport (a level of the hierarchical path), for the
    /// warnings it prints.
    fn set_job_ranks(&mut self, ranks: Vec<usize>) {
        self.job_ranks = ranks;
    }

    /// Non-blocking progress for a rank waiting on another transport: bumps the heartbeat (the
    /// rank is inside a boad call), moves pending data, reads the rings.
    fn service(&mut self) {
        self.seg.beat(self.rank);
        let _ = self.progress();
    }

    /// The aborts peers posted for collectives this rank did not fail itself: (seq, peer, reason).
    fn seen_aborts(&mut self) -> Vec<(u32, usize, String)> {
        self.scan_aborts();
        self.ledger.peer_aborts()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Coll, DType, Op};
    use proptest::prelude::*;

    fn ctx(coll: Coll, count: u64) -> Ctx {
        Ctx {
            seq: 7,
            sig: Signature {
                coll,
                op: (coll == Coll::Allreduce).then_some(Op::Sum),
                dtype: Some(DType::I32),
                count,
                root: 0,
            },
        }
    }

    #[test]
    fn records_decode_within_their_call() {
        let c = ctx(Coll::Allreduce, 10);
        let r = decode_record(&record(&c, 3, 40), 4).expect("a good record");
        assert_eq!((r.seq, r.tag, r.sig, r.len), (7, 3, c.sig, 40));
        assert_eq!(
            decode_record(&record(&c, 3, 41), 4),
            Err(BadRecord::Length(41))
        );
        let g = ctx(Coll::Allgather, 10);
        assert!(decode_record(&record(&g, 0, 160), 4).is_ok());
        assert_eq!(
            decode_record(&record(&g, 0, 161), 4),
            Err(BadRecord::Length(161))
        );
        let mut bad = record(&c, 3, 40);
        bad[19] = 1; // the unused byte of the call's first word
        assert_eq!(decode_record(&bad, 4), Err(BadRecord::Call));
        let mut huge = record(&ctx(Coll::Allgather, u64::MAX / 2), 0, 0);
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(decode_record(&huge, 4), Err(BadRecord::Length(u64::MAX)));
    }

    #[test]
    fn a_ring_with_garbage_positions_is_read_without_overflow() {
        let seg = segment::Segment::scratch(2, 128).expect("scratch segment");
        let (at, _) = seg.ring_span(1, 0);
        // head (consumer line, 128 bytes on) at the top of u64, tail (producer line) past the wrap.
        seg.scribble(at, &16u64.to_le_bytes());
        seg.scribble(at + 128, &(u64::MAX - 20).to_le_bytes());
        let ring = seg.ring(1, 0);
        assert_eq!(ring.available(), 37);
        let mut inp = None;
        // A record header read across the wrap of the positions (refused or not), never a panic.
        let _ = read_ring(&ring, &mut inp, 2, 64);
        assert_eq!(ring.available(), 5);
    }

    #[test]
    fn the_fuzz_seed_reaches_a_whole_message() {
        let seed = include_bytes!("../../../../fuzz/seeds/shm_segment/one-message");
        assert_eq!(exercise_segment(seed), 1);
    }

    proptest! {
        #[test]
        fn any_record_bytes(bytes in proptest::array::uniform32(any::<u8>()), blocks in 1usize..64) {
            if let Ok(r) = decode_record(&bytes, blocks) {
                let limit = ledger::message_limit(&r.sig, blocks).expect("limit");
                prop_assert!(r.len as u64 <= limit && r.len as u64 <= u64::from(u32::MAX));
            }
        }
    }
}
