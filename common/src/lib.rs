//! Definitions shared by boad's userspace runtime and its eBPF programs.
//!
//! Everything here is `no_std`, `#[repr(C)]` and free of pointers so the same bytes mean the same thing
//! to a Rust program in userspace and to the XDP/TC programs in the kernel. All multi-byte fields are
//! little-endian on the wire: boad runs on little-endian hosts only (x86_64, aarch64), and the eBPF
//! target is `bpfel`, so the in-memory layout *is* the wire layout.
#![no_std]
#![deny(missing_docs)]

pub mod fold;

/// `"BOAD"` read as a little-endian `u32`: the first four bytes of every boad datagram.
pub const MAGIC: u32 = u32::from_le_bytes(*b"BOAD");
/// Version of the wire format. A datagram with another version is ignored and counted as foreign.
pub const VERSION: u8 = 1;
/// Size of [`Header`] in bytes.
pub const HEADER_LEN: usize = core::mem::size_of::<Header>();

/// Kind of a datagram (the `kind` field of [`Header`]).
pub mod kind {
    /// A chunk of a point-to-point message of the userspace transport.
    pub const DATA: u8 = 1;
    /// Receiver to sender: which chunks of a message have arrived (`chunk` = all below received,
    /// payload = 8-byte bitmap of the 64 chunks after it).
    pub const ACK: u8 = 2;
    /// Receiver to sender: "I am waiting for message (seq, tag) from you"; same payload as ACK.
    pub const PROBE: u8 = 3;
    /// Answer to a PROBE when the message does not exist yet: the responder is alive; `tag` holds the
    /// responder's current collective sequence number, the signature fields hold its call for `seq`
    /// when `flags & flags::HAS_SIG`.
    pub const STATUS: u8 = 4;
    /// A collective failed on the sender; the payload is a UTF-8 reason.
    pub const ABORT: u8 = 5;
    /// To a rank's liveness socket: "are you alive, and where are you?" (no payload).
    pub const PING: u8 = 6;
    /// Answer to a PING, from the liveness socket: `seq` is the collective the rank started last,
    /// `flags::INSIDE` set while it is inside it (no payload).
    pub const PONG: u8 = 7;
    /// Kernel path: a contribution to an in-kernel reduction.
    pub const CONTRIB: u8 = 16;
    /// Kernel path: the folded result of an in-kernel reduction.
    pub const RESULT: u8 = 17;
    /// Kernel path: a datagram the TC program clones to every member of a communicator.
    pub const BCAST: u8 = 18;
    /// Kernel path, userspace only: "resend chunks of collective `seq`" (`tag` 0: your contribution
    /// to my reduction, with `flags::BYPASS` to skip the kernel; `tag` 1: your broadcast). `chunk` is
    /// the first chunk asked for, the payload an 8-byte bitmap of the 64 chunks from it.
    pub const KNACK: u8 = 19;
}

/// Bits of the `flags` field of [`Header`].
pub mod flags {
    /// STATUS: the signature fields are valid.
    pub const HAS_SIG: u8 = 1;
    /// STATUS: the responder aborted collective `seq`.
    pub const ABORTED: u8 = 2;
    /// Set on clones made by the TC program so it does not clone them again.
    pub const CLONED: u8 = 4;
    /// CONTRIB: the kernel path's XDP program passes it to the socket unfolded and untouched
    /// (counter `kernel::counter::BYPASSED`): the runtime's fallback to a userspace fold.
    pub const BYPASS: u8 = 8;
    /// PONG: the rank is inside collective `seq` (else it finished it, or has started none).
    pub const INSIDE: u8 = 16;
    /// PONG: the rank has started a collective (`seq` is meaningful).
    pub const STARTED: u8 = 32;
}

/// Collective kind codes (the `coll` field of [`Header`]).
pub mod coll {
    /// Broadcast.
    pub const BCAST: u8 = 1;
    /// Reduce to a root.
    pub const REDUCE: u8 = 2;
    /// Reduce, result on every rank.
    pub const ALLREDUCE: u8 = 3;
    /// Gather every rank's block on every rank.
    pub const ALLGATHER: u8 = 4;
    /// Barrier.
    pub const BARRIER: u8 = 5;
}

/// Reduction operation codes (the `op` field of [`Header`]).
pub mod op {
    /// Sum (wrapping for integers).
    pub const SUM: u8 = 0;
    /// Product (wrapping for integers).
    pub const PROD: u8 = 1;
    /// Minimum.
    pub const MIN: u8 = 2;
    /// Maximum.
    pub const MAX: u8 = 3;
    /// Bitwise and (integers only).
    pub const BAND: u8 = 4;
    /// Bitwise or (integers only).
    pub const BOR: u8 = 5;
    /// Bitwise xor (integers only).
    pub const BXOR: u8 = 6;
    /// Logical and, result 0 or 1 (integers only).
    pub const LAND: u8 = 7;
    /// Logical or, result 0 or 1 (integers only).
    pub const LOR: u8 = 8;
    /// Number of op codes.
    pub const COUNT: u8 = 9;
    /// No reduction (bcast, allgather, barrier).
    pub const NONE: u8 = 255;
}

/// Element type codes (the `dtype` field of [`Header`]).
pub mod dtype {
    /// `i8`
    pub const I8: u8 = 0;
    /// `i16`
    pub const I16: u8 = 1;
    /// `i32`
    pub const I32: u8 = 2;
    /// `i64`
    pub const I64: u8 = 3;
    /// `u8`
    pub const U8: u8 = 4;
    /// `u16`
    pub const U16: u8 = 5;
    /// `u32`
    pub const U32: u8 = 6;
    /// `u64`
    pub const U64: u8 = 7;
    /// `f32`
    pub const F32: u8 = 8;
    /// `f64`
    pub const F64: u8 = 9;
    /// Number of dtype codes.
    pub const COUNT: u8 = 10;
    /// No element type (barrier).
    pub const NONE: u8 = 255;

    /// Size in bytes of one element of `code`, 0 for an unknown code.
    pub const fn size(code: u8) -> usize {
        match code {
            I8 | U8 => 1,
            I16 | U16 => 2,
            I32 | U32 | F32 => 4,
            I64 | U64 | F64 => 8,
            _ => 0,
        }
    }
}

/// Index of the reduction program for (`op`, `dtype`) in the kernel path's program array.
pub const fn prog_index(op: u8, dtype: u8) -> u32 {
    (op as u32) * (dtype::COUNT as u32) + dtype as u32
}

/// The header at the start of every boad datagram (72 bytes, little-endian fields).
///
/// The signature fields (`coll`, `op`, `dtype`, `count`, `root`) describe the collective call of the
/// sender, so a receiver can tell a mismatched call (other count, dtype, op or root) from a good one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Always [`MAGIC`].
    pub magic: u32,
    /// Always [`VERSION`].
    pub version: u8,
    /// One of [`kind`].
    pub kind: u8,
    /// Collective of the sender's call, one of [`coll`].
    pub coll: u8,
    /// Reduction op of the sender's call, one of [`op`].
    pub op: u8,
    /// Element type of the sender's call, one of [`dtype`].
    pub dtype: u8,
    /// Bits from [`flags`].
    pub flags: u8,
    /// Zero.
    pub reserved: u16,
    /// Rank of the sender.
    pub src: u32,
    /// Job key: datagrams of another job are ignored.
    pub job: u64,
    /// Communicator id.
    pub comm: u32,
    /// Collective sequence number within the communicator.
    pub seq: u32,
    /// Algorithm step within the collective.
    pub tag: u32,
    /// Message id, numbered per (sender, receiver) pair.
    pub msg: u32,
    /// Index of this chunk within the message.
    pub chunk: u32,
    /// Number of chunks of the message.
    pub nchunks: u32,
    /// Element count of the sender's call.
    pub count: u64,
    /// Root of the sender's call (0 where there is none).
    pub root: u32,
    /// Payload bytes in this datagram.
    pub len: u32,
    /// Bytes of the whole message.
    pub total: u32,
    /// Rank of the receiver.
    pub dst: u32,
}

#[cfg(feature = "user")]
// SAFETY: Header is repr(C), every field is an integer, and the fields leave no padding (checked by
// the size assertion below), so every bit pattern is a valid Header.
unsafe impl bytemuck::Pod for Header {}
#[cfg(feature = "user")]
// SAFETY: all-zero bytes are a valid Header (see the Pod impl).
unsafe impl bytemuck::Zeroable for Header {}

const _: () = assert!(core::mem::size_of::<Header>() == 72);

/// Map layouts and limits of the kernel path, shared by the eBPF programs (`collectives-ebpf`) and
/// their userspace loader (`boad-ebpf-loader`). Added for the kernel fast path; nothing above depends on it.
pub mod kernel {
    /// Largest payload (bytes after the [`Header`](super::Header)) one CONTRIB datagram may carry to be
    /// folded in the kernel: 1024 `u8`/`i8`, 512 16-bit, 256 32-bit or 128 64-bit elements. A longer
    /// CONTRIB is passed to the socket unfolded (counter [`counter::UNFOLDED`]).
    pub const MAX_PAYLOAD: usize = 1024;
    /// Ranks per communicator the kernel path serves: contributors must have `src < MAX_RANKS`, and the
    /// broadcast program clones to at most this many members.
    pub const MAX_RANKS: u32 = 128;
    /// Largest reduction (bytes per rank) the kernel path folds: 64 chunks of [`MAX_PAYLOAD`], the
    /// slots one `seq` has in the kernel's table (see [`slot_index`]).
    pub const KREDUCE_MAX: usize = 64 * MAX_PAYLOAD;
    /// Largest broadcast (bytes) the runtime sends through TC's clones: TC has no flow control, so
    /// a burst must fit the receivers' socket buffers.
    pub const KBCAST_MAX: usize = 1 << 20;

    /// Whether the kernel's programs fold `op` over `dtype` (codes from [`op`](crate::op) and
    /// [`dtype`](crate::dtype)): every integer op on every integer type, and float min/max (on bit
    /// patterns); float sum and product need floating point, which eBPF has not. The one definition
    /// the loader (which programs exist) and the runtime (which calls take the kernel path) share.
    pub const fn folds(op: u8, dtype: u8) -> bool {
        use crate::{dtype as d, op as o};
        if op >= o::COUNT || dtype >= d::COUNT {
            return false;
        }
        match dtype {
            d::F32 | d::F64 => op == o::MIN || op == o::MAX,
            _ => true,
        }
    }
    /// Communicators the kernel path can serve at once (entries of the `COMMS` map; each has a block of
    /// `MAX_RANKS` entries in the `MEMBERS` array starting at [`CommInfo::members_base`]): every
    /// communicator of every job a host's kernel service (`boadd`) serves at once.
    pub const MAX_COMMS: u32 = 64;
    /// Entries of the `PORTS` map: the ports of every job served at once (each rank's port and each
    /// job's trigger port).
    pub const MAX_PORTS: u32 = 8 * MAX_RANKS;
    /// Communicator ids the launcher fills in the `COMMS` map (the header's `comm` field).
    pub mod comm {
        /// Every rank of the job, numbered by job rank.
        pub const WORLD: u32 = 0;
        /// One leader per host (its lowest rank), numbered by host in order of those ranks: the
        /// network level of the hierarchical path. Filled on jobs over several hosts where some host
        /// has several ranks.
        pub const LEADERS: u32 = 1;
    }
    /// Reduction slots (entries of the `SLOTS` array, about 1 KiB each), a power of two. With
    /// [`slot_index`], the chunks `0..64` of `NSLOTS / 64` consecutive `seq`s of one communicator
    /// use distinct slots: the in-flight window of the kernel path.
    pub const NSLOTS: u32 = 4096;
    /// Value of `skb->mark` on the clones the broadcast program makes.
    pub const BCAST_MARK: u32 = 0xB0AD_0C10;
    /// Index of the loopback device in every network namespace: the broadcast program hands it the
    /// clone for a member on the sending host (member IP == the original's source IP).
    pub const LOOPBACK_IFINDEX: u32 = 1;
    /// Bits of the values of the `PORTS` hash map (key: UDP destination port in host byte order, `u16`;
    /// value: `u32`).
    pub mod port {
        /// CONTRIBs to this port are folded by the XDP program.
        pub const REDUCE: u32 = 1;
        /// BCAST datagrams to this port are cloned to the communicator's members by the TC program.
        pub const BCAST: u32 = 2;
    }

    /// Indices into the per-CPU `COUNTERS` array (each a `u64`, summed over CPUs by userspace).
    pub mod counter {
        /// Contributions folded into a slot (including the last one of each reduction).
        pub const FOLDED: u32 = 0;
        /// Contributions folded and dropped (all but the last of each reduction).
        pub const DROPPED: u32 = 1;
        /// RESULT datagrams passed to the socket (one per completed reduction).
        pub const PASSED: u32 = 2;
        /// Contributions dropped because the slot had one from the same `src` already.
        pub const DUPLICATES: u32 = 3;
        /// Datagrams to a boad port with the wrong magic, version or job key, passed untouched.
        pub const FOREIGN: u32 = 4;
        /// CONTRIBs of this job passed to the socket unfolded: op/dtype without a kernel program (float
        /// sum/prod), payload over [`MAX_PAYLOAD`](super::MAX_PAYLOAD) or not a multiple of the element
        /// size, unknown communicator, `src` out of range, slot held by another unfinished reduction,
        /// or a new contributor to a complete reduction.
        pub const UNFOLDED: u32 = 5;
        /// Clones sent by the broadcast program.
        pub const CLONES: u32 = 6;
        /// Clones the broadcast program failed to send.
        pub const CLONE_ERRORS: u32 = 7;
        /// BCAST datagrams the broadcast program consumed (each replaced by its clones).
        pub const BCASTS: u32 = 8;
        /// CONTRIBs resent by a contributor already folded into a *complete* reduction, rewritten into
        /// a copy of its RESULT and passed (the first RESULT was lost). Not counted in `PASSED`.
        pub const RESULT_RESENT: u32 = 9;
        /// CONTRIBs with [`flags::BYPASS`](crate::flags::BYPASS), passed to the socket unfolded.
        pub const BYPASSED: u32 = 10;
        /// CONTRIBs passed unfolded because their signature (`coll`, `op`, `dtype`, `count`, `root`,
        /// `len`) differs from that of the first contribution to the same (comm, seq, chunk).
        pub const MISMATCHED: u32 = 11;
        /// Broadcast clones sent to `lo` for a member on the sending host (included in `CLONES`).
        pub const LOCAL_CLONES: u32 = 12;
        /// Datagrams of this job that do not come from the IPv4 address and UDP port registered for
        /// the rank their header names (`src`, member `src` of communicator `comm` in `MEMBERS`), or
        /// name no member: CONTRIBs passed to the socket without touching a slot, BCASTs passed
        /// without being cloned.
        pub const WRONG_SOURCE: u32 = 13;
        /// Number of counters.
        pub const COUNT: u32 = 14;
    }

    /// Value of the one-entry `CONFIG` array.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Config {
        /// 0 = not configured: everything passes. Otherwise the job key of datagrams whose
        /// communicator is not in `COMMS` (a communicator that is there has its own key,
        /// [`CommInfo::job`]); datagrams with another key are foreign.
        pub job: u64,
    }

    /// Value of the `COMMS` hash map (key: communicator id, `u32`).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct CommInfo {
        /// CONTRIBs that complete one (seq, chunk) of a reduction (e.g. size - 1 when the root does
        /// not send to itself).
        pub contribs: u32,
        /// Members (ranks `0..nmembers`) the broadcast program clones to and takes datagrams from
        /// (≤ [`MAX_RANKS`]).
        pub nmembers: u32,
        /// Index of member 0 in the `MEMBERS` array (a multiple of [`MAX_RANKS`]).
        pub members_base: u32,
        /// Zero.
        pub reserved: u32,
        /// Job key of the communicator's datagrams: a datagram naming this communicator with another
        /// key is foreign. Each job served by one set of programs has its own communicators and key.
        pub job: u64,
    }

    /// Value of the `MEMBERS` array: member `i` of a communicator (at `members_base + i`) is its rank
    /// `i`. The broadcast program sends member `i`'s clone there, and both programs take only
    /// datagrams whose header says `src == i` from this address and port (its IPv4 source address
    /// and UDP source port): the rank's own socket.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Member {
        /// IPv4 address of the member's socket, network byte order (as the bytes on the wire).
        pub ip_be: u32,
        /// UDP port of the member's socket, network byte order.
        pub port_be: u16,
        /// Zero.
        pub reserved: u16,
        /// Rank written into the clone's header `dst`; always `i` for member `i`.
        pub rank: u32,
        /// Interface to send the clone out of; 0 = the one the original leaves by. Ignored (the clone
        /// enters `lo`, [`LOOPBACK_IFINDEX`], on its receive side, with `lo`'s all-zero MAC) when
        /// `ip_be` is the original's source address: the member is on the sending host.
        pub ifindex: u32,
        /// Destination MAC; all zero = keep the original's (on `lo`).
        pub mac: [u8; 6],
        /// Zero.
        pub reserved2: [u8; 2],
    }

    /// Slot of the reduction of (`comm`, `seq`, `chunk`) in the `SLOTS` array: distinct for
    /// `chunk < 64` and `seq`s less than `NSLOTS / 64` apart.
    pub const fn slot_index(comm: u32, seq: u32, chunk: u32) -> u32 {
        (comm.wrapping_mul(0x9E37_79B1) ^ seq.wrapping_mul(64)).wrapping_add(chunk) & (NSLOTS - 1)
    }

    const _: () = assert!(core::mem::size_of::<Config>() == 8);
    const _: () = assert!(core::mem::size_of::<CommInfo>() == 24);
    const _: () = assert!(core::mem::size_of::<Member>() == 24);
    const _: () = assert!(NSLOTS.is_power_of_two() && MAX_RANKS.is_multiple_of(64));
}
