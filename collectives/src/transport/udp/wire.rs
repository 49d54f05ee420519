//! Decoding of the UDP transport's datagrams, apart from any socket: which peer sent these bytes,
//! with which header, and whether they are well formed.
//!
//! Contract: [`classify`] is a pure function of the bytes, their source address, what the receiving
//! rank is ([`Receiver`]) and its peers' addresses. It reads nothing before it has checked the
//! length, uses checked arithmetic on every field, allocates nothing, and accepts a datagram only
//! if every field a handler relies on is consistent:
//! - at least a header, the right magic, version, job key and communicator, addressed to this
//!   rank, from a peer (not itself) whose table address is the source address, `len` equal to the
//!   payload's size, known call codes;
//! - DATA, BCAST, CONTRIB, RESULT: a chunk ([`chunk_of`]) of a message whose size (`total`) the
//!   declared call can need ([`message_limit`]), and the kernel path's own limits for its kinds;
//! - ACK, PROBE, KNACK: an 8-byte bitmap; STATUS, ABORT: any payload (a reason as text);
//! - no other kind.
//!
//! What depends on the transport's state (which collectives it accepts messages for, whether a
//! call matches this rank's) is decided by its handlers, with [`in_window`] for the collectives.

use std::net::SocketAddr;

use boad_common::kernel::{KBCAST_MAX, KREDUCE_MAX, MAX_PAYLOAD};
use boad_common::{kind, Header, HEADER_LEN, MAGIC, VERSION};

use crate::transport::ledger::{in_window, message_limit, Ledger};
use crate::types::Signature;

/// Smallest chunk of a message of several chunks: `BOAD_CHUNK_BYTES` is at least 8, and the kernel
/// path's reductions use chunks of `MAX_PAYLOAD` bytes.
pub(crate) const MIN_CHUNK: u64 = 8;

/// What the receiving rank is, as far as decoding goes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Receiver {
    /// This rank.
    pub rank: usize,
    /// Ranks of the transport.
    pub size: usize,
    /// Job key.
    pub job: u64,
    /// Communicator id of the transport.
    pub comm: u32,
    /// Blocks of the largest message of an allgather on this transport (see [`message_limit`]).
    pub gather_blocks: usize,
}

/// Why a datagram is refused (each is counted in `Stats::foreign`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Shorter than a header.
    Short,
    /// Not boad's magic.
    Magic,
    /// Another wire version.
    Version,
    /// Another job's key.
    Job,
    /// Another communicator.
    Comm,
    /// Addressed to another rank.
    Dst,
    /// `src` is not a peer of this rank.
    Src,
    /// `len` is not the payload's size.
    Length,
    /// Not from the address the table gives `src`.
    Source,
    /// Unknown call codes.
    Call,
    /// Unknown kind.
    Kind,
    /// Chunk fields that no message has (see [`chunk_of`]).
    Chunk,
    /// A message larger than its call can need, or than the kernel path carries.
    Size,
    /// An ACK, PROBE or KNACK without its 8-byte bitmap.
    Bitmap,
}

/// Where a chunk's payload goes in its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// Offset of its first byte.
    pub off: usize,
    /// Its bytes (the header's `len`).
    pub len: usize,
    /// The message's chunk size: every chunk but the last has this many bytes (the whole message
    /// when it has one chunk).
    pub stride: usize,
    /// The message's bytes (the header's `total`).
    pub total: usize,
}

/// An accepted datagram: its header, sender, call, and for message chunks where they go. The
/// payload is the bytes after the header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Datagram {
    /// The header.
    pub h: Header,
    /// The sender (`h.src`), a peer of this rank.
    pub src: usize,
    /// The sender's call.
    pub sig: Signature,
    /// For DATA, BCAST, CONTRIB and RESULT: the chunk.
    pub chunk: Option<Chunk>,
}

/// Decides what `bytes`, received from `from`, are for rank `me` whose peer `r` is at
/// `peer_addr(r)` (see the module docs).
pub(crate) fn classify(
    bytes: &[u8],
    from: SocketAddr,
    me: &Receiver,
    peer_addr: impl Fn(usize) -> Option<SocketAddr>,
) -> Result<Datagram, Refusal> {
    let (head, payload) = bytes
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(Refusal::Short)?;
    let h: Header = bytemuck::pod_read_unaligned(head);
    check(h.magic == MAGIC, Refusal::Magic)?;
    check(h.version == VERSION, Refusal::Version)?;
    check(h.job == me.job, Refusal::Job)?;
    check(h.comm == me.comm, Refusal::Comm)?;
    check(
        usize::try_from(h.dst).is_ok_and(|d| d == me.rank),
        Refusal::Dst,
    )?;
    let src = usize::try_from(h.src)
        .ok()
        .filter(|&s| s < me.size && s != me.rank)
        .ok_or(Refusal::Src)?;
    check(
        usize::try_from(h.len).is_ok_and(|l| l == payload.len()),
        Refusal::Length,
    )?;
    check(peer_addr(src) == Some(from), Refusal::Source)?;
    let sig = Signature::from_codes(h.coll, h.op, h.dtype, h.count, h.root).ok_or(Refusal::Call)?;
    let chunk = match h.kind {
        kind::DATA | kind::BCAST | kind::CONTRIB | kind::RESULT => {
            let c = chunk_of(&h).ok_or(Refusal::Chunk)?;
            let most = match h.kind {
                kind::BCAST => KBCAST_MAX,
                kind::CONTRIB | kind::RESULT => KREDUCE_MAX,
                _ => usize::MAX,
            };
            let fits = message_limit(&sig, me.gather_blocks).is_some_and(|l| c.total as u64 <= l);
            check(fits && c.total <= most, Refusal::Size)?;
            // The kernel folds chunks of MAX_PAYLOAD bytes (contributors cut them so).
            let kernel_chunks = c.len <= MAX_PAYLOAD && (c.stride == MAX_PAYLOAD || h.nchunks == 1);
            if matches!(h.kind, kind::CONTRIB | kind::RESULT) {
                check(kernel_chunks, Refusal::Chunk)?;
            }
            Some(c)
        }
        kind::ACK | kind::PROBE | kind::KNACK => {
            check(payload.len() == 8, Refusal::Bitmap)?;
            None
        }
        kind::STATUS | kind::ABORT => None,
        _ => return Err(Refusal::Kind),
    };
    Ok(Datagram { h, src, sig, chunk })
}

fn check(ok: bool, why: Refusal) -> Result<(), Refusal> {
    if ok {
        Ok(())
    } else {
        Err(why)
    }
}

/// The chunk `h.chunk` of a message of `h.total` bytes in `h.nchunks` chunks, this one of `h.len`
/// bytes, if these fields describe a chunk a sender makes: one chunk holds the whole message (even
/// empty); several have a chunk size `s` of at least [`MIN_CHUNK`] bytes with `nchunks` =
/// ⌈`total` / `s`⌉, every chunk but the last `s` bytes long and the last 1 to `s` bytes. So
/// `off + len <= total`, and every chunk of one message gives the same `s`.
pub(crate) fn chunk_of(h: &Header) -> Option<Chunk> {
    let (chunk, n, len, total) = (
        u64::from(h.chunk),
        u64::from(h.nchunks),
        u64::from(h.len),
        u64::from(h.total),
    );
    if chunk >= n {
        return None;
    }
    let (off, stride) = if n == 1 {
        if len != total {
            return None;
        }
        (0, total)
    } else {
        // All products below are of two numbers under 2^32: no u64 overflows.
        let stride = if chunk + 1 == n {
            let before = total.checked_sub(len)?;
            if before % (n - 1) != 0 {
                return None;
            }
            before / (n - 1)
        } else {
            len
        };
        if stride < MIN_CHUNK || len == 0 || len > stride {
            return None;
        }
        if (n - 1) * stride >= total || total > n * stride {
            return None;
        }
        (chunk * stride, stride)
    };
    debug_assert!(off + len <= total);
    Some(Chunk {
        off: usize::try_from(off).ok()?,
        len: usize::try_from(len).ok()?,
        stride: usize::try_from(stride).ok()?,
        total: usize::try_from(total).ok()?,
    })
}

/// What to do with the first datagram of a message (or broadcast) not seen before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Receive it.
    Take,
    /// This rank's call for its collective is another: note the mismatch; the data is not needed.
    Mismatch,
    /// Receive it chunk by chunk, holding only what arrives: its collective is one this rank has
    /// not started, and the message is larger than any call it remembers needs (a sender running
    /// ahead into a larger collective). No buffer is sized from the header.
    Early,
    /// Ignore it (foreign): its collective is outside the window of collectives.
    Refuse,
}

/// Whether to start receiving a message of `total` bytes of call `sig` for collective `seq`, on a
/// transport whose last collective is `cur` and whose allgathers move `gather_blocks` blocks at
/// most (see [`message_limit`]). A buffer is allocated up front only as large as a call this rank
/// makes or remembers needs; anything else is received as it comes ([`Admit::Early`]), so no
/// datagram makes a rank allocate more than its own collectives need or the bytes that arrived.
pub(crate) fn admit(
    ledger: &Ledger,
    cur: u32,
    gather_blocks: usize,
    seq: u32,
    sig: &Signature,
    total: usize,
) -> Admit {
    if !in_window(seq, cur) {
        return Admit::Refuse;
    }
    match ledger.sig_of(seq) {
        Some(mine) if mine == *sig => Admit::Take,
        Some(_) => Admit::Mismatch,
        None => {
            let needed = ledger
                .calls()
                .any(|s| message_limit(s, gather_blocks).is_some_and(|l| total as u64 <= l));
            if needed {
                Admit::Take
            } else {
                Admit::Early
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::ledger::SIG_LOG;
    use crate::types::{Coll, DType, Op};
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr};

    const JOB: u64 = 0x1234_5678_9abc_def0;

    fn addr(r: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4000 + r as u16)
    }

    fn me() -> Receiver {
        Receiver {
            rank: 1,
            size: 4,
            job: JOB,
            comm: 0,
            gather_blocks: 4,
        }
    }

    fn peers(r: usize) -> Option<SocketAddr> {
        (r < 4).then(|| addr(r))
    }

    /// A good DATA chunk from rank 2 to rank 1: a bcast of `count` u32s cut in `stride` chunks.
    fn data(count: u64, stride: u32, chunk: u32) -> (Header, Vec<u8>) {
        let total = (count * 4) as u32;
        let nchunks = total.div_ceil(stride).max(1);
        let off = chunk * stride;
        let len = (total - off).min(stride);
        let h = Header {
            magic: MAGIC,
            version: VERSION,
            kind: kind::DATA,
            coll: Coll::Bcast as u8,
            op: boad_common::op::NONE,
            dtype: DType::U32 as u8,
            src: 2,
            job: JOB,
            seq: 3,
            chunk,
            nchunks,
            count,
            root: 2,
            len,
            total,
            dst: 1,
            ..Header::default()
        };
        let mut b = bytemuck::bytes_of(&h).to_vec();
        b.extend(std::iter::repeat_n(5u8, len as usize));
        (h, b)
    }

    #[test]
    fn a_good_chunk_is_accepted_where_it_belongs() {
        let (_, b) = data(100, 64, 6);
        let d = classify(&b, addr(2), &me(), peers).expect("accepted");
        assert_eq!(d.src, 2);
        assert_eq!(
            d.chunk,
            Some(Chunk {
                off: 384,
                len: 16,
                stride: 64,
                total: 400
            })
        );
    }

    #[test]
    fn every_truncation_and_every_broken_field_is_refused() {
        let (h, b) = data(100, 64, 2);
        for n in 0..b.len() {
            let why = classify(&b[..n], addr(2), &me(), peers).expect_err("truncated");
            let want = if n < HEADER_LEN {
                Refusal::Short
            } else {
                Refusal::Length
            };
            assert_eq!(why, want, "{n} bytes");
        }
        type Break = fn(&mut Header);
        let broken: [(Break, Refusal); 12] = [
            (|h| h.magic ^= 1, Refusal::Magic),
            (|h| h.version += 1, Refusal::Version),
            (|h| h.job ^= 1, Refusal::Job),
            (|h| h.comm = 1, Refusal::Comm),
            (|h| h.dst = 2, Refusal::Dst),
            (|h| h.src = 1, Refusal::Src),
            (|h| h.src = 4, Refusal::Src),
            (|h| h.coll = 9, Refusal::Call),
            (|h| h.kind = 99, Refusal::Kind),
            (|h| h.nchunks = u32::MAX, Refusal::Chunk),
            (|h| h.total = u32::MAX, Refusal::Chunk),
            (|h| h.count = 10, Refusal::Size),
        ];
        for (f, want) in broken {
            let mut h2 = h;
            f(&mut h2);
            let mut b2 = b.clone();
            b2[..HEADER_LEN].copy_from_slice(bytemuck::bytes_of(&h2));
            assert_eq!(classify(&b2, addr(2), &me(), peers).err(), Some(want));
        }
        // The right fields from another address.
        assert_eq!(
            classify(&b, addr(3), &me(), peers).err(),
            Some(Refusal::Source)
        );
    }

    #[test]
    fn the_kernel_kinds_keep_to_the_kernel_limits() {
        let (mut h, _) = data(1 << 18, 1024, 0);
        h.kind = kind::BCAST;
        h.len = 1024;
        let mut b = bytemuck::bytes_of(&h).to_vec();
        b.extend([0u8; 1024]);
        assert_eq!(
            classify(&b, addr(2), &me(), peers).err(),
            None,
            "1 MiB bcast"
        );
        h.count += 1;
        h.total += 4;
        h.nchunks += 1;
        b[..HEADER_LEN].copy_from_slice(bytemuck::bytes_of(&h));
        assert_eq!(
            classify(&b, addr(2), &me(), peers).err(),
            Some(Refusal::Size)
        );
        h.kind = kind::CONTRIB;
        b[..HEADER_LEN].copy_from_slice(bytemuck::bytes_of(&h));
        assert_eq!(
            classify(&b, addr(2), &me(), peers).err(),
            Some(Refusal::Size)
        );
        let (mut h, _) = data(1024, 512, 0);
        h.kind = kind::CONTRIB;
        let mut b = bytemuck::bytes_of(&h).to_vec();
        b.extend([0u8; 512]);
        assert_eq!(
            classify(&b, addr(2), &me(), peers).err(),
            Some(Refusal::Chunk),
            "CONTRIBs come in chunks of MAX_PAYLOAD"
        );
    }

    #[test]
    fn bitmaps_are_eight_bytes() {
        let (mut h, _) = data(1, 64, 0);
        h.kind = kind::ACK;
        for n in [0usize, 7, 8, 9] {
            h.len = n as u32;
            let mut b = bytemuck::bytes_of(&h).to_vec();
            b.extend(std::iter::repeat_n(0u8, n));
            let got = classify(&b, addr(2), &me(), peers).err();
            assert_eq!(got, (n != 8).then_some(Refusal::Bitmap), "{n}");
        }
    }

    #[test]
    fn message_limits() {
        let sig = |coll, dtype: Option<DType>, count| Signature {
            coll,
            op: None,
            dtype,
            count,
            root: 0,
        };
        assert_eq!(
            message_limit(&sig(Coll::Bcast, Some(DType::F64), 10), 4),
            Some(80)
        );
        assert_eq!(
            message_limit(&sig(Coll::Allgather, Some(DType::I16), 10), 4),
            Some(80)
        );
        assert_eq!(message_limit(&sig(Coll::Barrier, None, 0), 4), Some(0));
        assert_eq!(
            message_limit(&sig(Coll::Barrier, Some(DType::U8), 1), 4),
            Some(1)
        );
        assert_eq!(
            message_limit(&sig(Coll::Allgather, Some(DType::U64), u64::MAX / 8), 4),
            None
        );
        let mut s = sig(Coll::Allreduce, Some(DType::U8), 3);
        s.op = Some(Op::Sum);
        assert_eq!(message_limit(&s, 100), Some(3));
    }

    #[test]
    fn the_window_wraps() {
        let w = SIG_LOG as u32;
        assert!(in_window(5, 5) && in_window(5 + w, 5) && !in_window(6 + w, 5));
        assert!(in_window(0, w - 1) && !in_window(0, w));
        assert!(in_window(u32::MAX, 3) && in_window(3, u32::MAX));
        assert!(!in_window(u32::MAX / 2, 0));
    }

    fn header_of(raw: &[u8; HEADER_LEN]) -> Header {
        bytemuck::pod_read_unaligned(raw)
    }

    proptest! {
        /// What a sender makes is accepted, at the offset it was cut from.
        #[test]
        fn every_chunk_a_sender_makes_is_accepted(total in 0u32..200_000, stride in 1u32..9000, pick in any::<u32>()) {
            let stride = stride * 8;
            let n = total.div_ceil(stride).max(1);
            let chunk = pick % n;
            let off = chunk * stride;
            let len = (total - off.min(total)).min(stride);
            let h = Header { chunk, nchunks: n, len, total, ..Header::default() };
            let c = chunk_of(&h).expect("a sender's chunk");
            prop_assert_eq!(c.off, off as usize);
            prop_assert_eq!(c.len, len as usize);
            prop_assert!(n == 1 || c.stride == stride as usize);
        }

        /// Whatever the fields, an accepted chunk lies inside its message and its message is cut in
        /// `nchunks` chunks of `stride` bytes.
        #[test]
        fn accepted_chunks_lie_inside_their_message(chunk in any::<u32>(), n in any::<u32>(), len in any::<u32>(), total in any::<u32>(), small in any::<bool>()) {
            let h = if small {
                Header { chunk: chunk % 8, nchunks: n % 8, len: len % 64, total: total % 256, ..Header::default() }
            } else {
                Header { chunk, nchunks: n, len, total, ..Header::default() }
            };
            if let Some(c) = chunk_of(&h) {
                prop_assert!(c.off + c.len <= c.total);
                prop_assert!(c.len <= c.stride || h.nchunks == 1);
                prop_assert_eq!(c.total.div_ceil(c.stride.max(1)).max(1), h.nchunks as usize);
                prop_assert!(h.nchunks == 1 || c.stride as u64 >= MIN_CHUNK);
            }
        }

        /// Random bytes never panic the decoder, and what it accepts is consistent.
        #[test]
        fn random_datagrams(raw in proptest::collection::vec(any::<u8>(), 0..200), fix in any::<bool>(), from in 0usize..5) {
            let mut bytes = raw;
            if fix && bytes.len() >= HEADER_LEN {
                // Make the header plausible so the deeper checks run.
                let mut h = header_of(bytes[..HEADER_LEN].try_into().expect("header"));
                h.magic = MAGIC;
                h.version = VERSION;
                h.job = JOB;
                h.comm = 0;
                h.dst = 1;
                h.src %= 4;
                h.len = (bytes.len() - HEADER_LEN) as u32;
                h.coll %= 6;
                h.dtype %= 10;
                h.op = boad_common::op::NONE;
                h.kind %= 20;
                bytes[..HEADER_LEN].copy_from_slice(bytemuck::bytes_of(&h));
            }
            if let Ok(d) = classify(&bytes, addr(from), &me(), peers) {
                prop_assert_eq!(d.h.len as usize, bytes.len() - HEADER_LEN);
                prop_assert!(d.src < 4 && d.src != 1 && from == d.src);
                if let Some(c) = d.chunk {
                    prop_assert!(c.off + c.len <= c.total);
                    prop_assert!(message_limit(&d.sig, 4).is_some_and(|l| c.total as u64 <= l));
                }
            }
        }
    }
}
