//! The shared-memory segment of a job: its layout, and all the `unsafe` code of the shm transport.
//!
//! Contract: a [`Segment`] is a mapping of the job's file in `/dev/shm` (or an anonymous mapping for
//! a job of one rank) laid out as below; everything in it starts as zero bytes, which is a valid
//! state of every field. The safe methods are the only way to touch it, and each field has one
//! writer: the rank that owns a [`RankBlock`], the producer or the consumer of a ring. A peer that
//! writes garbage (it never should) can make this rank read wrong data or wait, never read or write
//! outside the mapping.
//!
//! ```text
//! [header, 128 B] [RankBlock × size] [slot × SLOTS × size] [ring (src → dst) × size·(size − 1)]
//! RankBlock: bell line (futex word, sleeping flag, slot-reuse wait flag: written by anyone) |
//!            status line (heartbeat, current collective: owner) | abort count | 16 abort slots |
//!            64 call slots
//! slot:      collective, call (2 words), length | SLOT_BYTES data bytes (owner writes, all read)
//! ring:      producer line (tail, messages queued) | consumer line (head) | cap data bytes
//! ```
//!
//! Slots carry the small collectives (`transport::shm`, "Slots"): rank `r` writes slot
//! `seq % SLOTS` of its own for collective `seq` (data, call and length first, then the collective
//! word with a release store); readers poll that one word with acquire loads. The slot's first
//! cache line holds the header and the first 32 data bytes, so a message of up to 32 bytes moves
//! as one line. The owner writes a slot again only once every reader has started a later
//! collective (their `current`), which it waits for.
//!
//! Rings are single-producer single-consumer byte streams: positions grow forever (u64), a byte at
//! position `i` lives at `data[i % cap]`; the producer publishes with a release store of `tail`, the
//! consumer with a release store of `head` (the producer keeps the last `head` it read and reads the
//! consumer's line again only when that leaves too little room). Each rank maps the pages of its
//! rings when it attaches ([`Segment::prefault`]), so that messages do not pay page faults. Abort and call slots are seqlocks (odd generation while
//! being written) made of atomic words, so a torn read is detected and retried, never undefined.
//!
//! Waking: a rank about to sleep sets its `sleeping` flag, issues a SeqCst fence, reads its futex word
//! and re-checks for work; a rank that published something for it issues a SeqCst fence and, if the
//! flag is set, bumps the word and calls `FUTEX_WAKE`. One of the two always sees the other (the
//! store-buffering litmus test with fences on both sides), so no wake-up is lost.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};

/// "BOADSHM1".
const MAGIC: u64 = u64::from_le_bytes(*b"BOADSHM1");
/// Abort slots per rank (a reader that falls further behind misses the oldest).
pub(super) const ABORT_SLOTS: usize = 16;
/// Longest abort reason kept, in bytes.
const REASON_WORDS: usize = 30;
/// Call slots per rank: the calls of the last 64 collectives it started.
const SIG_SLOTS: usize = 64;

/// Keeps `T` on cache lines of its own (128 bytes: adjacent-line prefetch pairs 64-byte lines).
#[repr(C, align(128))]
struct Padded<T>(T);

#[repr(C)]
struct Header {
    magic: AtomicU64,
    /// A tag derived from the job key and the host (not the key itself).
    tag: AtomicU64,
    size: AtomicU64,
    cap: AtomicU64,
    attached: AtomicU32,
    _pad: AtomicU32,
    /// The largest collective (bytes per rank) that goes through the slots, chosen by the rank
    /// that created the segment for the whole job (0: slots unused).
    slot_limit: AtomicU64,
}

#[repr(C)]
struct Bell {
    /// Futex word: bumped by whoever wakes the owner.
    word: AtomicU32,
    /// Non-zero while the owner is (about to be) asleep on `word`.
    sleeping: AtomicU32,
    /// Non-zero while the owner waits for its readers to leave a collective whose slot it wants
    /// to write again: then a rank that starts a collective wakes it.
    reusing: AtomicU32,
}

/// Data bytes of a slot: the largest collective (bytes per rank) the slots carry.
pub(super) const SLOT_BYTES: usize = crate::config::SHM_SLOT_BYTES_MAX;
/// Slots per rank: a rank uses slot `seq % SLOTS` for collective `seq`, so it can post one
/// collective while readers still read the one before.
pub(super) const SLOTS: usize = 2;
/// Bytes of a slot's header (the rest of its first cache line holds data).
const SLOT_HEAD: usize = 32;
/// Bytes of a slot: header and data, rounded up to whole 128-byte lines.
const SLOT_TOTAL: usize = (SLOT_HEAD + SLOT_BYTES).div_ceil(128) * 128;

#[repr(C)]
struct SlotHead {
    /// 1 + the collective whose data the slot holds (0: none yet). Written last, with release.
    seq: AtomicU64,
    /// The owner's call for it (see `sig_words`).
    w0: AtomicU64,
    w1: AtomicU64,
    /// Data bytes.
    len: AtomicU64,
}

#[repr(C)]
struct Status {
    /// Bumped by the owner while it is inside a boad call.
    heartbeat: AtomicU64,
    /// 1 + the sequence number of the collective the owner started last (0: none yet).
    cur: AtomicU64,
}

#[repr(C)]
struct AbortSlot {
    gen: AtomicU32,
    seq: AtomicU32,
    len: AtomicU32,
    _pad: AtomicU32,
    words: [AtomicU64; REASON_WORDS],
}

#[repr(C)]
struct SigSlot {
    gen: AtomicU32,
    seq: AtomicU32,
    w0: AtomicU64,
    w1: AtomicU64,
    _pad: AtomicU64,
}

#[repr(C, align(128))]
struct RankBlock {
    bell: Padded<Bell>,
    status: Padded<Status>,
    abort_count: Padded<AtomicU32>,
    aborts: [AbortSlot; ABORT_SLOTS],
    sigs: [SigSlot; SIG_SLOTS],
}

#[repr(C)]
struct Producer {
    tail: AtomicU64,
    /// Messages the producer has queued for this ring (counted when `send` is called).
    queued: AtomicU64,
}

#[repr(C)]
struct RingCtl {
    prod: Padded<Producer>,
    cons: Padded<AtomicU64>,
}

const HEADER_BYTES: usize = std::mem::size_of::<Padded<Header>>();
const RANK_BYTES: usize = std::mem::size_of::<RankBlock>();
const RING_CTL_BYTES: usize = std::mem::size_of::<RingCtl>();
const _: () =
    assert!(HEADER_BYTES == 128 && RANK_BYTES.is_multiple_of(128) && RING_CTL_BYTES == 256);
const _: () = assert!(std::mem::size_of::<AbortSlot>() == 256);
const _: () =
    assert!(std::mem::size_of::<SlotHead>() == SLOT_HEAD && SLOT_TOTAL >= SLOT_HEAD + SLOT_BYTES);

/// Where the slots start.
fn slots_offset(size: usize) -> usize {
    HEADER_BYTES + size * RANK_BYTES
}

/// Where the rings start.
fn rings_offset(size: usize) -> usize {
    slots_offset(size) + size * SLOTS * SLOT_TOTAL
}

/// Bytes of a segment for `size` ranks with rings of `cap` bytes.
fn total_bytes(size: usize, cap: usize) -> usize {
    rings_offset(size) + size * size.saturating_sub(1) * (RING_CTL_BYTES + cap)
}

/// Ring capacity for a job of `size` ranks: a power of two, 16 KiB to 4 MiB, all rings together at
/// most about 32 MiB (more only for jobs of more than 45 ranks, at 16 KiB each).
pub(super) fn ring_capacity(size: usize) -> usize {
    let pairs = (size * size.saturating_sub(1)).max(1);
    let budget = (32usize << 20) / pairs;
    let pow = if budget.is_power_of_two() {
        budget
    } else {
        budget.next_power_of_two() / 2
    };
    pow.clamp(16 << 10, 4 << 20)
}

/// Why a segment could not be opened yet.
pub(super) enum OpenError {
    /// Not created or not initialised yet: try again.
    NotYet,
    /// It exists but is not a segment of this job, or not one this rank may trust.
    Bad(String),
    /// An I/O error.
    Io(io::Error),
}

/// A mapped segment.
pub(super) struct Segment {
    map: MmapRaw,
    size: usize,
    cap: usize,
    /// Keeps the descriptor of a file-backed segment (the mapping would survive without it).
    _file: Option<File>,
}

impl Segment {
    /// A private segment for a job of one rank (no rings, no file).
    pub fn anonymous() -> io::Result<Segment> {
        let len = total_bytes(1, 0);
        let map: MmapRaw = MmapOptions::new().len(len).map_anon()?.into();
        let s = Segment {
            map,
            size: 1,
            cap: 0,
            _file: None,
        };
        s.header().attached.store(1, Ordering::Relaxed);
        Ok(s)
    }

    /// Creates the segment file at `path` (it must not exist: a file there is an `AlreadyExists`
    /// error), owner-only, sized and initialised for `size` ranks of the job whose tag is `tag`.
    pub fn create(path: &Path, tag: u64, size: usize, slot_limit: usize) -> io::Result<Segment> {
        let cap = ring_capacity(size);
        let len = total_bytes(size, cap);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        // Owner-only whatever the umask (which can only remove bits, but say it anyway).
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.set_len(len as u64)?;
        // Reserve the pages now: on a full tmpfs a later first touch would be a SIGBUS.
        // SAFETY: posix_fallocate only reads its integer arguments; the fd is open for writing.
        let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
        if r != 0 {
            let _ = std::fs::remove_file(path);
            return Err(io::Error::from_raw_os_error(r));
        }
        let map = MmapOptions::new().len(len).map_raw(&file)?;
        let s = Segment {
            map,
            size,
            cap,
            _file: Some(file),
        };
        let h = s.header();
        h.tag.store(tag, Ordering::Relaxed);
        h.size.store(size as u64, Ordering::Relaxed);
        h.cap.store(cap as u64, Ordering::Relaxed);
        h.slot_limit
            .store(slot_limit.min(SLOT_BYTES) as u64, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        Ok(s)
    }

    /// Opens the segment another rank created at `path`, after checking — before mapping it — that
    /// it is a regular file of this user, owner-only, of the size `size` ranks need, whose header
    /// carries `tag`.
    pub fn open(path: &Path, tag: u64, size: usize) -> Result<Segment, OpenError> {
        let cap = ring_capacity(size);
        let len = total_bytes(size, cap);
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(OpenError::NotYet),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(OpenError::Bad(format!(
                    "{} is a symbolic link, not a segment",
                    path.display()
                )))
            }
            Err(e) => return Err(OpenError::Io(e)),
        };
        let meta = file.metadata().map_err(OpenError::Io)?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if !meta.is_file() || meta.uid() != me || meta.mode() & 0o077 != 0 {
            return Err(OpenError::Bad(format!(
                "{} is not this job's segment: it is {} owned by user {} with mode {:o} (a segment \
                 is a regular file of user {me} with mode 600)",
                path.display(),
                if meta.is_file() { "a file" } else { "not a regular file" },
                meta.uid(),
                meta.mode() & 0o7777
            )));
        }
        let flen = meta.len();
        if flen < len as u64 {
            // Created, not sized yet.
            return Err(OpenError::NotYet);
        }
        if flen > len as u64 {
            return Err(OpenError::Bad(format!(
                "{} has {flen} bytes, {len} expected for {size} ranks",
                path.display()
            )));
        }
        // The header, read before mapping: magic, tag, size, capacity.
        let mut head = [0u8; 32];
        file.read_exact_at(&mut head, 0).map_err(OpenError::Io)?;
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&head[i * 8..i * 8 + 8]);
            u64::from_le_bytes(b)
        };
        if word(0) != MAGIC {
            return Err(OpenError::NotYet);
        }
        let (t, n, c) = (word(1), word(2), word(3));
        if t != tag || n != size as u64 || c != cap as u64 {
            return Err(OpenError::Bad(format!(
                "{} belongs to another job (or another job size: {n} ranks, not {size})",
                path.display()
            )));
        }
        let map = MmapOptions::new()
            .len(len)
            .map_raw(&file)
            .map_err(OpenError::Io)?;
        Ok(Segment {
            map,
            size,
            cap,
            _file: Some(file),
        })
    }

    /// Counts this rank as attached; true for the last of the `size` ranks.
    pub fn attach(&self) -> bool {
        self.header().attached.fetch_add(1, Ordering::AcqRel) + 1 == self.size as u32
    }

    /// Maps in advance the pages rank `r` touches on its data path (the header, every rank's block,
    /// the rings to and from `r`), so that no message costs a page fault (a fault per 4 KiB on the
    /// first pass through a ring is microseconds per message). Best effort: a kernel without
    /// `MADV_POPULATE_WRITE` (before 5.14) faults them in on first use as before.
    pub fn prefault(&self, r: usize) {
        self.populate(0, rings_offset(self.size));
        for o in (0..self.size).filter(|&o| o != r) {
            for (src, dst) in [(r, o), (o, r)] {
                let off = self.ring_offset(src, dst);
                self.populate(off, RING_CTL_BYTES + self.cap);
            }
        }
    }

    /// `madvise(MADV_POPULATE_WRITE)` over the pages holding bytes `off..off + len` of the mapping.
    fn populate(&self, off: usize, len: usize) {
        const PAGE: usize = 4096;
        let start = off / PAGE * PAGE;
        let end = (off + len).min(self.map.len());
        if end <= start {
            return;
        }
        // SAFETY: `start..end` lies inside the mapping (`start` rounded down to a page boundary of the
        // page-aligned mapping, `end` clamped to its length); MADV_POPULATE_WRITE only faults the
        // pages in (it writes nothing: the contents stay as they are), and failing is harmless.
        unsafe {
            libc::madvise(
                self.map.as_mut_ptr().add(start).cast::<libc::c_void>(),
                end - start,
                libc::MADV_POPULATE_WRITE,
            );
        }
    }

    fn at<T>(&self, off: usize) -> &T {
        debug_assert!(off + std::mem::size_of::<T>() <= self.map.len());
        debug_assert!(off.is_multiple_of(std::mem::align_of::<T>()));
        // SAFETY: callers pass offsets from the layout above, in bounds of the mapping (which is
        // page-aligned, so the 128-byte alignment of every offset holds); `T` is made only of atomics,
        // for which any bit pattern, and concurrent access through shared references, is valid. The
        // mapping lives as long as `self`.
        unsafe { &*self.map.as_mut_ptr().add(off).cast::<T>() }
    }

    fn header(&self) -> &Header {
        self.at::<Header>(0)
    }

    fn block(&self, r: usize) -> &RankBlock {
        assert!(r < self.size, "rank {r} out of range");
        self.at::<RankBlock>(HEADER_BYTES + r * RANK_BYTES)
    }

    /// The ring carrying messages from `src` to `dst`.
    pub fn ring(&self, src: usize, dst: usize) -> Ring<'_> {
        let off = self.ring_offset(src, dst);
        Ring {
            ctl: self.at::<RingCtl>(off),
            // SAFETY: the data area follows the control block and ends inside the mapping.
            data: unsafe { self.map.as_mut_ptr().add(off + RING_CTL_BYTES) },
            cap: self.cap,
        }
    }

    /// Where the ring from `src` to `dst` starts.
    fn ring_offset(&self, src: usize, dst: usize) -> usize {
        assert!(src < self.size && dst < self.size && src != dst);
        let k = src * (self.size - 1) + if dst < src { dst } else { dst - 1 };
        rings_offset(self.size) + k * (RING_CTL_BYTES + self.cap)
    }

    // ----- slots -----

    /// The largest collective (bytes per rank) the job's slots carry, as the segment's creator
    /// chose it (never more than [`SLOT_BYTES`]; 0: none).
    pub fn slot_limit(&self) -> usize {
        let l = self.header().slot_limit.load(Ordering::Relaxed);
        usize::try_from(l).map_or(0, |l| l.min(SLOT_BYTES))
    }

    /// Where `r`'s slot for collective `seq` starts.
    fn slot_offset(&self, r: usize, seq: u32) -> usize {
        assert!(r < self.size, "rank {r} out of range");
        slots_offset(self.size) + (r * SLOTS + seq as usize % SLOTS) * SLOT_TOTAL
    }

    fn slot_head(&self, r: usize, seq: u32) -> &SlotHead {
        self.at::<SlotHead>(self.slot_offset(r, seq))
    }

    /// Writes `data` (at most [`SLOT_BYTES`]) and the call `(w0, w1)` into `r`'s slot for
    /// collective `seq`, then publishes it. `r` must be this rank, and every reader of what the
    /// slot held before must be done with it.
    pub fn slot_post(&self, r: usize, seq: u32, w0: u64, w1: u64, data: &[u8]) {
        assert!(data.len() <= SLOT_BYTES, "{} bytes for a slot", data.len());
        let off = self.slot_offset(r, seq);
        let h = self.at::<SlotHead>(off);
        h.w0.store(w0, Ordering::Relaxed);
        h.w1.store(w1, Ordering::Relaxed);
        h.len.store(data.len() as u64, Ordering::Relaxed);
        // SAFETY: the data area of the slot (SLOT_BYTES from `off + SLOT_HEAD`) lies inside the
        // mapping and `data.len() <= SLOT_BYTES`; only this rank writes it, and no reader reads it
        // until the release store below publishes it (the caller waited for the readers of what it
        // held before); `data` is process-local memory, so the ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.map.as_mut_ptr().add(off + SLOT_HEAD),
                data.len(),
            );
        }
        h.seq.store(u64::from(seq) + 1, Ordering::Release);
    }

    /// If `r`'s slot holds collective `seq`: the call `(w0, w1)` and the length it was posted
    /// with (a length is whatever the owner wrote: the caller checks it).
    pub fn slot_peek(&self, r: usize, seq: u32) -> Option<(u64, u64, u64)> {
        let h = self.slot_head(r, seq);
        if h.seq.load(Ordering::Acquire) != u64::from(seq) + 1 {
            return None;
        }
        Some((
            h.w0.load(Ordering::Relaxed),
            h.w1.load(Ordering::Relaxed),
            h.len.load(Ordering::Relaxed),
        ))
    }

    /// Copies the first `out.len()` (at most [`SLOT_BYTES`]) data bytes of `r`'s slot for
    /// collective `seq` into `out`. Call after [`slot_peek`](Self::slot_peek) found it there.
    pub fn slot_copy(&self, r: usize, seq: u32, out: &mut [u8]) {
        assert!(out.len() <= SLOT_BYTES, "{} bytes from a slot", out.len());
        let off = self.slot_offset(r, seq);
        // SAFETY: the bytes read lie in the slot's data area inside the mapping; the owner wrote
        // them before the release store `slot_peek` acquired and writes them again only after this
        // rank has started a later collective; `out` is process-local memory. (A peer that writes
        // garbage can only make these bytes wrong.)
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.map.as_mut_ptr().add(off + SLOT_HEAD),
                out.as_mut_ptr(),
                out.len(),
            );
        }
    }

    /// Sets or clears `r`'s (this rank's) flag that it waits for readers of its slot.
    pub fn set_reusing(&self, r: usize, on: bool) {
        self.block(r)
            .bell
            .0
            .reusing
            .store(u32::from(on), Ordering::Relaxed);
    }

    /// Wakes every rank but `me` that waits to write its slot again (call after publishing a new
    /// current collective of `me`).
    pub fn wake_reusers(&self, me: usize) {
        fence(Ordering::SeqCst);
        for r in (0..self.size).filter(|&r| r != me) {
            let bell = &self.block(r).bell.0;
            if bell.reusing.load(Ordering::Relaxed) != 0
                && bell.sleeping.load(Ordering::Relaxed) != 0
            {
                bell.word.fetch_add(1, Ordering::SeqCst);
                futex(&bell.word, libc::FUTEX_WAKE, i32::MAX as u32, None);
            }
        }
    }

    // ----- status -----

    /// Bumps `r`'s heartbeat (`r` must be this rank).
    pub fn beat(&self, r: usize) {
        let h = &self.block(r).status.0.heartbeat;
        h.store(h.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
    }

    /// `r`'s heartbeat.
    pub fn heartbeat(&self, r: usize) -> u64 {
        self.block(r).status.0.heartbeat.load(Ordering::Relaxed)
    }

    /// Publishes that `r` (this rank) started collective `seq` with call `(w0, w1)`.
    pub fn publish_call(&self, r: usize, seq: u32, w0: u64, w1: u64) {
        let b = self.block(r);
        let s = &b.sigs[seq as usize % SIG_SLOTS];
        // The owner is the only writer: plain stores, no read-modify-writes (locked instructions).
        let g = s.gen.load(Ordering::Relaxed);
        s.gen.store(g.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        s.seq.store(seq, Ordering::Relaxed);
        s.w0.store(w0, Ordering::Relaxed);
        s.w1.store(w1, Ordering::Relaxed);
        s.gen.store(g.wrapping_add(2), Ordering::Release);
        b.status.0.cur.store(u64::from(seq) + 1, Ordering::Release);
    }

    /// The collective `r` started last, if any (None too for a value no rank writes).
    pub fn current(&self, r: usize) -> Option<u32> {
        let c = self.block(r).status.0.cur.load(Ordering::Acquire);
        c.checked_sub(1).and_then(|s| u32::try_from(s).ok())
    }

    /// `r`'s call for collective `seq`, if `r` started it and still remembers it.
    pub fn call_of(&self, r: usize, seq: u32) -> Option<(u64, u64)> {
        let s = &self.block(r).sigs[seq as usize % SIG_SLOTS];
        for _ in 0..100 {
            let g1 = s.gen.load(Ordering::Acquire);
            if g1 % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let (q, w0, w1) = (
                s.seq.load(Ordering::Relaxed),
                s.w0.load(Ordering::Relaxed),
                s.w1.load(Ordering::Relaxed),
            );
            fence(Ordering::Acquire);
            if s.gen.load(Ordering::Relaxed) == g1 {
                return (g1 != 0 && q == seq).then_some((w0, w1));
            }
        }
        None
    }

    // ----- aborts -----

    /// Records that `r` (this rank) gave up collective `seq` because of `reason`.
    pub fn post_abort(&self, r: usize, seq: u32, reason: &str) {
        let b = self.block(r);
        let n = b.abort_count.0.load(Ordering::Relaxed);
        let s = &b.aborts[n as usize % ABORT_SLOTS];
        let mut bytes = [0u8; REASON_WORDS * 8];
        let mut len = reason.len().min(bytes.len());
        while !reason.is_char_boundary(len) {
            len -= 1;
        }
        bytes[..len].copy_from_slice(&reason.as_bytes()[..len]);
        s.gen.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::Release);
        s.seq.store(seq, Ordering::Relaxed);
        s.len.store(len as u32, Ordering::Relaxed);
        for (w, c) in s.words.iter().zip(bytes.chunks_exact(8)) {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            w.store(u64::from_le_bytes(a), Ordering::Relaxed);
        }
        s.gen.fetch_add(1, Ordering::Release);
        b.abort_count.0.store(n.wrapping_add(1), Ordering::Release);
    }

    /// How many aborts `r` has posted.
    pub fn abort_count(&self, r: usize) -> u32 {
        self.block(r).abort_count.0.load(Ordering::Acquire)
    }

    /// Abort number `i` of `r`: (collective, reason); None if it was overwritten meanwhile.
    pub fn abort(&self, r: usize, i: u32) -> Option<(u32, String)> {
        let s = &self.block(r).aborts[i as usize % ABORT_SLOTS];
        for _ in 0..100 {
            let g1 = s.gen.load(Ordering::Acquire);
            if g1 % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let seq = s.seq.load(Ordering::Relaxed);
            let len = (s.len.load(Ordering::Relaxed) as usize).min(REASON_WORDS * 8);
            let mut bytes = Vec::with_capacity(REASON_WORDS * 8);
            for w in &s.words {
                bytes.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
            }
            fence(Ordering::Acquire);
            if s.gen.load(Ordering::Relaxed) == g1 {
                bytes.truncate(len);
                return Some((seq, String::from_utf8_lossy(&bytes).into_owned()));
            }
        }
        None
    }

    // ----- sleeping and waking -----

    /// Wakes `r` if it sleeps. Call after publishing what `r` may wait for.
    pub fn notify(&self, r: usize) -> bool {
        let bell = &self.block(r).bell.0;
        fence(Ordering::SeqCst);
        if bell.sleeping.load(Ordering::Relaxed) == 0 {
            return false;
        }
        bell.word.fetch_add(1, Ordering::SeqCst);
        futex(&bell.word, libc::FUTEX_WAKE, i32::MAX as u32, None);
        true
    }

    /// Wakes every rank but `me` that sleeps (one fence for all). Call after publishing what they
    /// may wait for.
    pub fn notify_others(&self, me: usize) {
        fence(Ordering::SeqCst);
        for r in (0..self.size).filter(|&r| r != me) {
            let bell = &self.block(r).bell.0;
            if bell.sleeping.load(Ordering::Relaxed) != 0 {
                bell.word.fetch_add(1, Ordering::SeqCst);
                futex(&bell.word, libc::FUTEX_WAKE, i32::MAX as u32, None);
            }
        }
    }

    /// Sleeps up to `timeout` on `r`'s futex word (`r` is this rank), unless `idle()` — called after
    /// the flag is up — says there is work after all. True if it slept.
    pub fn sleep(&self, r: usize, timeout: Duration, idle: impl FnOnce() -> bool) -> bool {
        let bell = &self.block(r).bell.0;
        bell.sleeping.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let v = bell.word.load(Ordering::Relaxed);
        let slept = idle();
        if slept {
            futex(&bell.word, libc::FUTEX_WAIT, v, Some(timeout));
        }
        bell.sleeping.store(0, Ordering::Relaxed);
        slept
    }
}

fn futex(word: &AtomicU32, op: libc::c_int, val: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs() as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let tsp = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, aligned 32-bit atomic in a shared mapping (so not FUTEX_PRIVATE);
    // `tsp` is NULL or points to a timespec that outlives the call; the other pointer arguments are
    // unused by FUTEX_WAIT and FUTEX_WAKE. Errors (EAGAIN: the word changed, ETIMEDOUT, EINTR) all
    // mean "go and look again", which every caller does.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op,
            val,
            tsp,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// One direction between two ranks. The producer calls `free`, `write*` and `count_queued`; the
/// consumer calls `available` and `read*`. Nobody else touches a ring.
pub(super) struct Ring<'a> {
    ctl: &'a RingCtl,
    data: *mut u8,
    cap: usize,
}

impl Ring<'_> {
    /// Bytes the producer may write now.
    pub fn free(&self) -> usize {
        let tail = self.ctl.prod.0.tail.load(Ordering::Relaxed);
        let head = self.ctl.cons.0.load(Ordering::Acquire);
        self.cap - (tail.wrapping_sub(head) as usize).min(self.cap)
    }

    /// Bytes the consumer may read now.
    pub fn available(&self) -> usize {
        let tail = self.ctl.prod.0.tail.load(Ordering::Acquire);
        let head = self.ctl.cons.0.load(Ordering::Relaxed);
        (tail.wrapping_sub(head) as usize).min(self.cap)
    }

    /// Copies `src` into the ring at position `pos` (wrapping).
    fn put(&self, pos: u64, src: &[u8]) {
        let at = (pos % self.cap as u64) as usize;
        let first = src.len().min(self.cap - at);
        // SAFETY: `at + first <= cap`, and the second piece (`src.len() - first <= cap - first` bytes,
        // as callers never write more than `free() <= cap`) starts at offset 0: both lie inside the
        // data area; the producer only writes bytes between `tail` and `head + cap`, which the
        // consumer does not read until `tail` is published; `src` is process-local memory, so the
        // ranges do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.data.add(at), first);
            if first < src.len() {
                std::ptr::copy_nonoverlapping(
                    src.as_ptr().add(first),
                    self.data,
                    src.len() - first,
                );
            }
        }
    }

    /// Copies `dst.len()` bytes at position `pos` (wrapping) into `dst`.
    fn get(&self, pos: u64, dst: *mut u8, len: usize) {
        let at = (pos % self.cap as u64) as usize;
        let first = len.min(self.cap - at);
        // SAFETY: as in `put`, both pieces lie in the data area; the consumer reads only bytes between
        // `head` and the `tail` it acquired, which the producer does not touch until `head` moves past
        // them; `dst` is valid for `len` bytes of process-local memory (callers' contract).
        unsafe {
            std::ptr::copy_nonoverlapping(self.data.add(at), dst, first);
            if first < len {
                std::ptr::copy_nonoverlapping(self.data, dst.add(first), len - first);
            }
        }
    }

    /// Writes all of `head` and as much of `body` as fits, in one publication; None (nothing
    /// written) if `head` does not fit. Returns the bytes of `body` written. `seen_head` is the
    /// producer's copy of the consumer's `head` (0 at first): the consumer's line is read only when
    /// that copy leaves too little room, so a producer that stays ahead does not pull it over on
    /// every write.
    pub fn write_with(&self, head: &[u8], body: &[u8], seen_head: &mut u64) -> Option<usize> {
        let tail = self.ctl.prod.0.tail.load(Ordering::Relaxed);
        let room = |h: u64| self.cap - (tail.wrapping_sub(h) as usize).min(self.cap);
        let mut free = room(*seen_head);
        if free < head.len() + body.len() {
            *seen_head = self.ctl.cons.0.load(Ordering::Acquire);
            free = room(*seen_head);
        }
        if free < head.len() {
            return None;
        }
        let n = body.len().min(free - head.len());
        // Positions wrap (a peer that scribbled on the ring's words must not make this overflow).
        self.put(tail, head);
        self.put(tail.wrapping_add(head.len() as u64), &body[..n]);
        self.ctl.prod.0.tail.store(
            tail.wrapping_add((head.len() + n) as u64),
            Ordering::Release,
        );
        Some(n)
    }

    /// Counts one more message queued for this ring (producer side, before it is written).
    pub fn count_queued(&self) {
        let q = &self.ctl.prod.0.queued;
        q.store(q.load(Ordering::Relaxed).wrapping_add(1), Ordering::Release);
    }

    /// Messages the producer has queued so far.
    pub fn queued(&self) -> u64 {
        self.ctl.prod.0.queued.load(Ordering::Acquire)
    }

    /// Reads exactly `out.len()` bytes if that many are available.
    pub fn read_exact(&self, out: &mut [u8]) -> bool {
        if self.available() < out.len() {
            return false;
        }
        let head = self.ctl.cons.0.load(Ordering::Relaxed);
        self.get(head, out.as_mut_ptr(), out.len());
        self.ctl
            .cons
            .0
            .store(head.wrapping_add(out.len() as u64), Ordering::Release);
        true
    }

    /// Appends up to `max` available bytes to `v`; returns how many.
    pub fn read_into(&self, v: &mut Vec<u8>, max: usize) -> usize {
        let n = self.available().min(max);
        if n == 0 {
            return 0;
        }
        v.reserve(n);
        let head = self.ctl.cons.0.load(Ordering::Relaxed);
        let spare = v.spare_capacity_mut();
        self.get(head, spare.as_mut_ptr().cast::<u8>(), n);
        // SAFETY: `get` initialised the first `n` bytes of the spare capacity, which holds at least
        // `n` bytes after `reserve(n)`.
        unsafe { v.set_len(v.len() + n) };
        self.ctl
            .cons
            .0
            .store(head.wrapping_add(n as u64), Ordering::Release);
        n
    }
}

/// For tests and fuzzing: a private segment of any size and ring capacity, and a way to write any
/// bytes anywhere in it (what a peer that writes garbage can do).
#[cfg(any(test, feature = "fuzzing"))]
impl Segment {
    /// A private segment for `size` ranks with rings of `cap` bytes (a multiple of 128, so rings
    /// stay on their lines), without a file.
    pub fn scratch(size: usize, cap: usize) -> io::Result<Segment> {
        assert!(cap.is_multiple_of(128), "ring capacity {cap}");
        let map: MmapRaw = MmapOptions::new()
            .len(total_bytes(size, cap))
            .map_anon()?
            .into();
        let s = Segment {
            map,
            size,
            cap,
            _file: None,
        };
        s.header()
            .slot_limit
            .store(SLOT_BYTES as u64, Ordering::Relaxed);
        Ok(s)
    }

    /// Copies `bytes` into the mapping from `off` on, wrapping around its end.
    pub fn scribble(&self, off: usize, bytes: &[u8]) {
        let len = self.map.len();
        for (i, b) in bytes.iter().enumerate() {
            let at = (off.wrapping_add(i)) % len;
            // SAFETY: `at < len`, inside the mapping; the tests that call this use the segment
            // from one thread, so nothing reads these bytes (as atomics or otherwise) meanwhile.
            unsafe { self.map.as_mut_ptr().add(at).write(*b) };
        }
    }

    /// Where rank `r`'s block starts, and its length.
    pub fn block_span(&self, r: usize) -> (usize, usize) {
        (HEADER_BYTES + r * RANK_BYTES, RANK_BYTES)
    }

    /// Where the ring from `src` to `dst` starts (its control lines, then its data), and its
    /// length.
    pub fn ring_span(&self, src: usize, dst: usize) -> (usize, usize) {
        (self.ring_offset(src, dst), RING_CTL_BYTES + self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(r: Result<Segment, OpenError>) -> String {
        match r {
            Err(OpenError::Bad(why)) => why,
            Err(OpenError::NotYet) => "not yet".into(),
            Err(OpenError::Io(e)) => format!("io {e}"),
            Ok(_) => "opened".into(),
        }
    }

    #[test]
    fn create_is_exclusive_and_owner_only_and_open_checks_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("seg");
        // SAFETY: umask has no preconditions; the old mask is restored below.
        let old = unsafe { libc::umask(0) };
        let made = Segment::create(&path, 7, 3, SLOT_BYTES);
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        let seg = made.expect("create");
        let mode = std::fs::metadata(&path).expect("stat").mode() & 0o777;
        assert_eq!(mode, 0o600, "created with mode {mode:o} under umask 000");
        let again = Segment::create(&path, 7, 3, SLOT_BYTES)
            .err()
            .map(|e| e.kind());
        assert_eq!(again, Some(io::ErrorKind::AlreadyExists));
        assert!(Segment::open(&path, 7, 3).is_ok());
        assert!(bad(Segment::open(&path, 8, 3)).contains("another job"));
        assert!(bad(Segment::open(&path, 7, 2)).contains("bytes"));
        drop(seg);
        // A world-writable file, and a symbolic link to the segment, are refused before mapping.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        assert!(bad(Segment::open(&path, 7, 3)).contains("mode 666"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        assert!(bad(Segment::open(&link, 7, 3)).contains("symbolic link"));
        assert!(
            Segment::create(&link, 7, 3, SLOT_BYTES).is_err(),
            "created through a link"
        );
        // Not created yet, and created but not sized yet.
        let none = dir.path().join("none");
        assert_eq!(bad(Segment::open(&none, 7, 3)), "not yet");
        std::fs::File::create(&none).expect("create");
        std::fs::set_permissions(&none, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(bad(Segment::open(&none, 7, 3)), "not yet");
    }

    /// A stream of messages of every length from 0 to past the ring's capacity, written and read
    /// by two threads through a small ring (every message wraps, most need several writes): every
    /// byte arrives, in order.
    #[test]
    fn a_ring_carries_a_stream_across_wraps_between_threads() {
        let seg = Segment::scratch(2, 256).expect("scratch");
        let msg = |i: usize| -> Vec<u8> {
            (0..(i * 37) % 700)
                .map(|j| (i * 31 + j * 7) as u8)
                .collect()
        };
        const N: usize = 3000;
        std::thread::scope(|s| {
            let seg = &seg;
            s.spawn(move || {
                let ring = seg.ring(0, 1);
                let mut seen = 0;
                for i in 0..N {
                    let body = msg(i);
                    let len = (body.len() as u32).to_le_bytes();
                    // The head goes whole with the first piece of the body, the rest as room opens.
                    let mut off = loop {
                        match ring.write_with(&len, &body, &mut seen) {
                            Some(n) => break n,
                            None => std::thread::yield_now(),
                        }
                    };
                    while off < body.len() {
                        match ring.write_with(&[], &body[off..], &mut seen) {
                            Some(n) => off += n,
                            None => std::thread::yield_now(),
                        }
                    }
                }
            });
            s.spawn(move || {
                let ring = seg.ring(0, 1);
                for i in 0..N {
                    let mut len = [0u8; 4];
                    while !ring.read_exact(&mut len) {
                        std::thread::yield_now();
                    }
                    let len = u32::from_le_bytes(len) as usize;
                    let mut got = Vec::new();
                    while got.len() < len {
                        let want = len - got.len();
                        if ring.read_into(&mut got, want) == 0 {
                            std::thread::yield_now();
                        }
                    }
                    assert!(got == msg(i), "message {i} arrived wrong ({len} bytes)");
                }
                assert_eq!(ring.available(), 0, "nothing after the last message");
            });
        });
        // The other direction was never used.
        assert_eq!(seg.ring(1, 0).available(), 0);
    }

    /// A rank's published calls and aborts, read by another thread while the owner keeps writing:
    /// a read is whole or nothing, never half of one write and half of another.
    #[test]
    fn calls_and_aborts_are_read_whole_while_their_owner_writes() {
        use std::sync::atomic::AtomicBool;
        let seg = Segment::scratch(2, 128).expect("scratch");
        let reason = |seq: u32| format!("abort of {seq} {}", "x".repeat((seq % 300) as usize));
        let key = |seq: u32| u64::from(seq).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let (enough, last) = (AtomicBool::new(false), AtomicU32::new(0));
        std::thread::scope(|s| {
            let (seg, enough, last) = (&seg, &enough, &last);
            s.spawn(move || {
                // Writes until the reader has seen enough (or has failed: then it never says so).
                let (mut seq, start) = (0, std::time::Instant::now());
                while !enough.load(Ordering::Acquire)
                    && start.elapsed() < std::time::Duration::from_secs(10)
                {
                    seg.publish_call(0, seq, key(seq), !key(seq));
                    if seq % 7 == 0 {
                        seg.post_abort(0, seq, &reason(seq));
                    }
                    seq += 1;
                }
                last.store(seq - 1, Ordering::Release);
                enough.store(true, Ordering::Release);
            });
            s.spawn(move || {
                let (mut calls, mut aborts) = (0u64, 0u64);
                let start = std::time::Instant::now();
                while !enough.load(Ordering::Acquire) {
                    // The last call, and the oldest one kept: the slot the owner rewrites next.
                    let cur = seg.current(0).unwrap_or(0);
                    for seq in [cur, cur.wrapping_sub(SIG_SLOTS as u32 - 1)] {
                        if let Some((w0, w1)) = seg.call_of(0, seq) {
                            assert_eq!(w0, key(seq), "a torn call of #{seq}");
                            assert_eq!(w1, !w0, "a torn call of #{seq}");
                            calls += 1;
                        }
                    }
                    if let Some(i) = seg.abort_count(0).checked_sub(1) {
                        if let Some((seq, got)) = seg.abort(0, i) {
                            // The slot may hold a later abort by now (it is reused), never a mix.
                            let want = reason(seq);
                            let kept = want.len().min(REASON_WORDS * 8);
                            assert_eq!(got, want[..kept], "a torn abort");
                            aborts += 1;
                        }
                    }
                    // Long enough for reads to overlap writes many times over.
                    if start.elapsed() > std::time::Duration::from_millis(300) {
                        enough.store(true, Ordering::Release);
                    }
                }
                assert!(
                    calls > 0 && aborts > 0,
                    "read {calls} calls and {aborts} aborts"
                );
            });
        });
        // Once the writer is done: its last call, and its last ABORT_SLOTS aborts, are all there.
        let last = last.load(Ordering::Acquire);
        assert_eq!(seg.current(0), Some(last));
        assert_eq!(seg.call_of(0, last), Some((key(last), !key(last))));
        assert_eq!(seg.call_of(0, last - SIG_SLOTS as u32), None, "overwritten");
        let count = seg.abort_count(0);
        for i in count - ABORT_SLOTS as u32..count {
            assert!(seg.abort(0, i).is_some_and(|(seq, _)| seq % 7 == 0));
        }
    }
}
