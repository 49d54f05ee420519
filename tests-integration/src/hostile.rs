//! The `hostile` mode: while the quick matrix runs over UDP, a thread of every rank sends every
//! other rank datagrams that no rank may accept (empty, truncated at every length, garbage, headers
//! with absurd sizes and chunk numbers), from a socket that is not a rank's and, as root, also from
//! a peer's own address (a raw socket forging the UDP source port), which takes them past the
//! source-address check into the decoder. The results must stay exact, and every rank's `foreign`
//! counter must count at least what was sent to it.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use boad::{Communicator, Op};
use boad_common::{coll, dtype, kind, op, Header, HEADER_LEN, MAGIC, VERSION};
use rand::{Rng, SeedableRng};

/// Payload bytes after the header of the datagram whose truncations are sent.
const EXTRA: usize = 16;
/// A collective number no job of the tests reaches, far outside the window of collectives a rank
/// accepts messages for.
const FAR_SEQ: u32 = 0x8000_0000;
/// Rounds of forged datagrams sent at most, and the pause between two: few enough that a rank's
/// socket buffer never overflows (a dropped datagram would not be counted).
const ROUNDS: usize = 40;
const PAUSE: Duration = Duration::from_millis(25);

/// A DATA header of job `job` from rank `src` to rank `dst`: a one-chunk bcast of `EXTRA` bytes,
/// except that `len` says one byte less (so even whole, the datagram is refused).
fn near_valid(job: u64, src: u32, dst: u32) -> Header {
    Header {
        magic: MAGIC,
        version: VERSION,
        kind: kind::DATA,
        coll: coll::BCAST,
        op: op::NONE,
        dtype: dtype::U8,
        src,
        job,
        comm: 0,
        seq: FAR_SEQ,
        msg: u32::MAX - 1,
        chunk: 0,
        nchunks: 1,
        count: EXTRA as u64,
        root: src,
        len: EXTRA as u32 - 1,
        total: EXTRA as u32,
        dst,
        ..Header::default()
    }
}

fn bytes(h: &Header, payload: &[u8]) -> Vec<u8> {
    let mut v = bytemuck::bytes_of(h).to_vec();
    v.extend_from_slice(payload);
    v
}

/// The datagrams sent to rank `dst` claiming to come from rank `src`: (bytes, whether it is also
/// refused — counted foreign — when it comes from `src`'s own address). None may be accepted.
pub fn forged(job: u64, src: u32, dst: u32, rng: &mut impl Rng) -> Vec<(Vec<u8>, bool)> {
    let mut out = vec![(Vec::new(), true)];
    // Truncated at every length: shorter than a header, or a header whose `len` disagrees.
    let whole = bytes(&near_valid(job, src, dst), &[7; EXTRA]);
    out.extend((1..=whole.len()).map(|n| (whole[..n].to_vec(), true)));
    // Garbage (not starting with the magic), truncated at every length.
    let mut junk = [0u8; HEADER_LEN + EXTRA];
    rng.fill(&mut junk[..]);
    junk[0] = b'X';
    out.extend((1..=junk.len()).map(|n| (junk[..n].to_vec(), true)));
    // Random fields behind the right magic, version and job key; `len` disagrees with the size.
    for _ in 0..8 {
        let mut raw = [0u8; HEADER_LEN];
        rng.fill(&mut raw[..]);
        let mut h: Header = bytemuck::pod_read_unaligned(&raw);
        h.magic = MAGIC;
        h.version = VERSION;
        h.job = job;
        h.len = EXTRA as u32 + 1;
        out.push((bytes(&h, &[1; EXTRA]), true));
    }
    // Whole headers with absurd sizes and chunk numbers (`len` right).
    let absurd = |kind: u8, chunk: u32, nchunks: u32, total: u32, f: &dyn Fn(&mut Header)| {
        let mut h = near_valid(job, src, dst);
        h.kind = kind;
        h.chunk = chunk;
        h.nchunks = nchunks;
        h.total = total;
        h.len = 8;
        f(&mut h);
        bytes(&h, &[9; 8])
    };
    let none = |_: &mut Header| {};
    for k in [kind::DATA, kind::BCAST, kind::CONTRIB, kind::RESULT] {
        for (chunk, nchunks, total) in [
            (u32::MAX - 1, u32::MAX, u32::MAX),
            (u32::MAX, u32::MAX, u32::MAX),
            (0, 1, u32::MAX),
            (0, 0, 8),
            (5, 5, 64),
            (0, 2, 8),
            // Coherent chunks of a message far larger than the call it claims (16 bytes).
            (0, 1 << 27, 1 << 30),
            (3, 4, 32),
        ] {
            out.push((absurd(k, chunk, nchunks, total, &none), true));
        }
        // A call whose size overflows, and one of 2^43 bytes.
        let huge = |count: u64| {
            move |h: &mut Header| {
                h.coll = coll::ALLGATHER;
                h.dtype = dtype::U64;
                h.count = count;
            }
        };
        let (n, t) = ((u32::MAX / 8) + 1, u32::MAX);
        out.push((absurd(k, 0, n, t, &huge(u64::MAX)), true));
        out.push((absurd(k, 0, n, t, &huge(1 << 40)), true));
    }
    // Acknowledgements and resend requests with chunk numbers at the top of the range: refused
    // by the source check from a stranger; from a peer's address they are not foreign (an ACK of
    // no message is a late one), so they go from the stranger's socket only.
    for k in [kind::ACK, kind::PROBE, kind::KNACK] {
        for tag in [0, 1] {
            let f = move |h: &mut Header| {
                h.tag = tag;
                h.msg = u32::MAX;
            };
            out.push((absurd(k, u32::MAX - 3, u32::MAX, u32::MAX, &f), false));
        }
    }
    out
}

/// A raw UDP socket (root only) to send datagrams with any source port from `ip`.
fn raw_socket() -> Option<socket2::Socket> {
    socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::UDP),
    )
    .ok()
}

/// Sends `payload` from `from` (any port of this host's address) to `to` on a raw socket: the UDP
/// header is ours (checksum 0: none, allowed over IPv4), the IP header the kernel's.
fn send_forged(raw: &socket2::Socket, from: SocketAddr, to: SocketAddr, payload: &[u8]) -> bool {
    let mut pkt = Vec::with_capacity(8 + payload.len());
    pkt.extend_from_slice(&from.port().to_be_bytes());
    pkt.extend_from_slice(&to.port().to_be_bytes());
    pkt.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    pkt.extend_from_slice(&[0, 0]);
    pkt.extend_from_slice(payload);
    let dst = SocketAddr::new(to.ip(), 0);
    raw.send_to(&pkt, &dst.into()).is_ok()
}

/// Runs the mode (see the module docs).
pub fn run(comm: &mut Communicator, cases: &[crate::Case]) -> ExitCode {
    let (rank, size) = (comm.rank(), comm.size());
    let job = std::env::var("BOAD_JOB")
        .ok()
        .and_then(|k| u64::from_str_radix(k.trim(), 16).ok())
        .unwrap_or(0);
    let Some(me) = comm.local_addr() else {
        eprintln!("rank {rank}: no UDP socket (run with BOAD_TRANSPORT=udp)");
        return ExitCode::from(2);
    };
    let mut ports = vec![0u32; size];
    if let Err(e) = comm.allgather(&[u32::from(me.port())], &mut ports) {
        eprintln!("rank {rank}: {e}");
        return ExitCode::from(2);
    }
    let addr = |r: usize| SocketAddr::new(me.ip(), ports[r] as u16);
    // (target rank, its address, the rank the datagrams claim to come from, that rank's address)
    let peers: Vec<(usize, SocketAddr, usize, SocketAddr)> = (0..size)
        .filter(|&r| r != rank)
        .map(|r| (r, addr(r), (r + 1) % size, addr((r + 1) % size)))
        .collect();
    let raw = match me.ip() {
        IpAddr::V4(_) => raw_socket(),
        IpAddr::V6(_) => None,
    };
    println!(
        "rank {rank}: forging from a peer's address: {}",
        if raw.is_some() {
            "yes"
        } else {
            "no (not root)"
        }
    );
    let stranger = UdpSocket::bind((me.ip(), 0)).expect("bind a spare socket");
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let sprayer = std::thread::spawn(move || {
        let mut rng = rand::rngs::StdRng::seed_from_u64(rank as u64);
        let mut sent = vec![0u64; size];
        for _ in 0..ROUNDS {
            for &(r, to, claimed, pretend) in &peers {
                for (d, from_peer_too) in forged(job, claimed as u32, r as u32, &mut rng) {
                    if stranger.send_to(&d, to).is_ok() {
                        sent[r] += 1;
                    }
                    if let (Some(raw), true) = (&raw, from_peer_too) {
                        if send_forged(raw, pretend, to, &d) {
                            sent[r] += 1;
                        }
                    }
                }
            }
            if stopped.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(PAUSE);
        }
        sent
    });
    let code = crate::run_all(comm, cases);
    stop.store(true, Ordering::Relaxed);
    let sent = sprayer.join().expect("the sprayer thread");
    // How many forged datagrams were aimed at each rank, by all ranks together.
    let mut aimed = vec![0u64; size];
    if let Err(e) = comm.allreduce(&sent, &mut aimed, Op::Sum) {
        eprintln!("rank {rank}: {e}");
        return ExitCode::from(2);
    }
    let want = aimed[rank];
    // The last ones may still wait in the socket: collectives read it; all ranks stop together.
    for _ in 0..200 {
        let counted = u8::from(comm.stats().foreign >= want);
        let mut all = [0u8];
        if let Err(e) = comm.allreduce(&[counted], &mut all, Op::Min) {
            eprintln!("rank {rank}: {e}");
            return ExitCode::from(2);
        }
        if all[0] == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let foreign = comm.stats().foreign;
    if foreign < want {
        eprintln!(
            "rank {rank}: {want} forged datagrams were sent here, only {foreign} counted foreign"
        );
        return ExitCode::from(1);
    }
    println!(
        "rank {rank}: hostile ok: {want} forged datagrams sent here, {foreign} counted foreign"
    );
    code
}
