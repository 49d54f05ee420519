//! The baselines the sgbpf paper measured against, over plain UDP sockets, with no loss recovery:
//!
//! - [`Flavor::Naive`]: blocking sockets; the root of a broadcast makes one `sendto` per receiver
//!   (per chunk), the root of a reduction one `recvfrom` per contribution (per chunk) and folds it;
//!   allreduce = reduce to rank 0 + broadcast from rank 0; allgather = every rank sends its block to
//!   every other.
//! - [`Flavor::Epoll`]: the same over non-blocking sockets, waiting with epoll (`mio`).
//!
//! Reductions are `i32` wrapping sums. Each datagram is a 16-byte header (collective number, source
//! rank, chunk) and at most `chunk` bytes of payload. A lost datagram is not recovered: a wait longer
//! than the timeout is a [`BaselineError::Timeout`].

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const HDR: usize = 16;
/// Largest UDP payload on IPv4.
const MAX_DGRAM: usize = 65507;

/// Which baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Blocking `sendto`/`recvfrom`.
    Naive,
    /// Non-blocking sockets and epoll.
    Epoll,
}

impl Flavor {
    /// `naive` or `epoll` (the record's implementation name).
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Naive => "naive",
            Flavor::Epoll => "epoll",
        }
    }
}

/// What went wrong in a baseline collective.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// A socket call failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// Nothing arrived in time: a datagram was lost (the baselines do not recover) or a peer died.
    #[error("rank {rank}: collective {seq} timed out after {waited:?} with {got} of {want} datagrams (lost: no loss recovery in the baseline)")]
    Timeout {
        /// This rank.
        rank: usize,
        /// The collective's number.
        seq: u64,
        /// How long it waited.
        waited: Duration,
        /// Datagrams received.
        got: usize,
        /// Datagrams expected.
        want: usize,
    },
    /// Called with buffers of the wrong size or a bad root.
    #[error("bad call: {0}")]
    Usage(String),
}

enum Sock {
    Blocking(UdpSocket),
    Epoll {
        sock: mio::net::UdpSocket,
        poll: mio::Poll,
        events: mio::Events,
    },
}

/// One rank's end of a baseline: a socket, the peers' addresses, and early datagrams.
pub struct Baseline {
    flavor: Flavor,
    sock: Sock,
    peers: Vec<SocketAddr>,
    rank: usize,
    chunk: usize,
    seq: u64,
    timeout: Duration,
    stash: HashMap<u64, Vec<(usize, usize, Vec<u8>)>>,
    rbuf: Vec<u8>,
    sbuf: Vec<u8>,
}

/// Asks for big socket buffers (the baselines have no flow control): `SO_RCVBUFFORCE` (root), else
/// `SO_RCVBUF` up to the system maximum; the same for sending.
fn big_buffers(sock: &UdpSocket) {
    let fd = sock.as_raw_fd();
    let size: libc::c_int = 64 << 20;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        for opt in [force, plain] {
            // SAFETY: setsockopt on a socket we own, with a pointer to a c_int and its length.
            let r = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r == 0 {
                break;
            }
        }
    }
}

impl Baseline {
    /// Binds a socket on `ip` (port chosen by the kernel). `chunk`: payload bytes per datagram;
    /// `timeout`: the longest wait for a datagram before the collective fails.
    pub fn bind(
        flavor: Flavor,
        ip: IpAddr,
        rank: usize,
        chunk: usize,
        timeout: Duration,
    ) -> Result<Baseline, BaselineError> {
        let std_sock = UdpSocket::bind(SocketAddr::new(ip, 0))?;
        big_buffers(&std_sock);
        let sock = match flavor {
            Flavor::Naive => {
                std_sock.set_read_timeout(Some(timeout))?;
                Sock::Blocking(std_sock)
            }
            Flavor::Epoll => {
                std_sock.set_nonblocking(true)?;
                let mut sock = mio::net::UdpSocket::from_std(std_sock);
                let poll = mio::Poll::new()?;
                poll.registry().register(
                    &mut sock,
                    mio::Token(0),
                    mio::Interest::READABLE | mio::Interest::WRITABLE,
                )?;
                Sock::Epoll {
                    sock,
                    poll,
                    events: mio::Events::with_capacity(64),
                }
            }
        };
        let chunk = chunk.clamp(1, MAX_DGRAM - HDR);
        Ok(Baseline {
            flavor,
            sock,
            peers: vec![],
            rank,
            chunk,
            seq: 0,
            timeout,
            stash: HashMap::new(),
            rbuf: vec![0; MAX_DGRAM + 1],
            sbuf: Vec::with_capacity(HDR + chunk),
        })
    }

    /// This baseline's flavor.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// The socket's address (to exchange with the peers).
    pub fn local_addr(&self) -> Result<SocketAddr, BaselineError> {
        Ok(match &self.sock {
            Sock::Blocking(s) => s.local_addr()?,
            Sock::Epoll { sock, .. } => sock.local_addr()?,
        })
    }

    /// Every rank's address, indexed by rank.
    pub fn set_peers(&mut self, peers: Vec<SocketAddr>) {
        self.peers = peers;
    }

    /// Forgets early datagrams (after a failed collective, whose leftovers must not be used).
    pub fn reset(&mut self) {
        self.stash.clear();
    }

    fn size(&self) -> usize {
        self.peers.len()
    }

    fn chunks(&self, bytes: usize) -> usize {
        bytes.div_ceil(self.chunk).max(1)
    }

    fn send_chunk(
        &mut self,
        dst: usize,
        seq: u64,
        chunk: usize,
        payload: &[u8],
    ) -> Result<(), BaselineError> {
        self.sbuf.clear();
        self.sbuf.extend_from_slice(&seq.to_le_bytes());
        self.sbuf
            .extend_from_slice(&(self.rank as u32).to_le_bytes());
        self.sbuf.extend_from_slice(&(chunk as u32).to_le_bytes());
        self.sbuf.extend_from_slice(payload);
        let addr = self.peers[dst];
        match &mut self.sock {
            Sock::Blocking(s) => {
                s.send_to(&self.sbuf, addr)?;
            }
            Sock::Epoll { sock, poll, events } => loop {
                match sock.send_to(&self.sbuf, addr) {
                    Ok(_) => break,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        poll.poll(events, Some(self.timeout))?;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            },
        }
        Ok(())
    }

    fn send_all(&mut self, dst: usize, seq: u64, data: &[u8]) -> Result<(), BaselineError> {
        let n = self.chunks(data.len());
        for c in 0..n {
            let lo = (c * self.chunk).min(data.len());
            let hi = ((c + 1) * self.chunk).min(data.len());
            self.send_chunk(dst, seq, c, &data[lo..hi])?;
        }
        Ok(())
    }

    /// Receives one datagram into `rbuf`; Ok(None) when `deadline` passed.
    fn recv_one(&mut self, deadline: Instant) -> Result<Option<usize>, BaselineError> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            match &mut self.sock {
                Sock::Blocking(s) => match s.recv_from(&mut self.rbuf) {
                    Ok((n, _)) => return Ok(Some(n)),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        return Ok(None)
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                },
                Sock::Epoll { sock, poll, events } => match sock.recv_from(&mut self.rbuf) {
                    Ok((n, _)) => return Ok(Some(n)),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        poll.poll(events, Some(deadline - now))?;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                },
            }
        }
    }

    /// Waits for `want` datagrams of collective `seq` (from `from` only, if given) and hands each
    /// to `f(src, chunk, payload)`. Datagrams of later collectives are kept for later.
    fn collect(
        &mut self,
        seq: u64,
        from: Option<usize>,
        want: usize,
        mut f: impl FnMut(usize, usize, &[u8]),
    ) -> Result<(), BaselineError> {
        let mut got = 0;
        if let Some(early) = self.stash.remove(&seq) {
            let mut keep = vec![];
            for (src, chunk, data) in early {
                if from.is_none_or(|r| r == src) && got < want {
                    f(src, chunk, &data);
                    got += 1;
                } else {
                    keep.push((src, chunk, data));
                }
            }
            if !keep.is_empty() {
                self.stash.insert(seq, keep);
            }
        }
        let t0 = Instant::now();
        while got < want {
            let Some(n) = self.recv_one(t0 + self.timeout)? else {
                return Err(BaselineError::Timeout {
                    rank: self.rank,
                    seq,
                    waited: t0.elapsed(),
                    got,
                    want,
                });
            };
            if n < HDR {
                continue;
            }
            let word = |i: usize| {
                let mut b = [0u8; 4];
                b.copy_from_slice(&self.rbuf[i..i + 4]);
                u32::from_le_bytes(b) as usize
            };
            let mut s = [0u8; 8];
            s.copy_from_slice(&self.rbuf[..8]);
            let dseq = u64::from_le_bytes(s);
            let (src, chunk) = (word(8), word(12));
            if dseq == seq && from.is_none_or(|r| r == src) {
                f(src, chunk, &self.rbuf[HDR..n]);
                got += 1;
            } else if dseq >= seq {
                self.stash
                    .entry(dseq)
                    .or_default()
                    .push((src, chunk, self.rbuf[HDR..n].to_vec()));
            }
        }
        Ok(())
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn check_root(&self, root: usize) -> Result<(), BaselineError> {
        if root >= self.size() {
            return Err(BaselineError::Usage(format!(
                "root {root} of {} ranks",
                self.size()
            )));
        }
        Ok(())
    }

    /// Broadcast of `buf` from `root`: one send per receiver and chunk.
    pub fn bcast(&mut self, buf: &mut [u8], root: usize) -> Result<(), BaselineError> {
        self.check_root(root)?;
        let seq = self.next_seq();
        if self.rank == root {
            for dst in (0..self.size()).filter(|&d| d != root) {
                self.send_all(dst, seq, buf)?;
            }
            return Ok(());
        }
        let (n, chunk) = (self.chunks(buf.len()), self.chunk);
        self.collect(seq, Some(root), n, |_, c, data| {
            let lo = (c * chunk).min(buf.len());
            let hi = (lo + data.len()).min(buf.len());
            buf[lo..hi].copy_from_slice(&data[..hi - lo]);
        })
    }

    /// Sum (wrapping, `i32`) of every rank's `send` into `recv` at `root` (`recv` is ignored
    /// elsewhere): every rank sends to the root, which receives and folds each contribution.
    pub fn reduce(
        &mut self,
        send: &[u8],
        recv: &mut [u8],
        root: usize,
    ) -> Result<(), BaselineError> {
        self.check_root(root)?;
        let seq = self.next_seq();
        if self.rank != root {
            return self.send_all(root, seq, send);
        }
        if recv.len() != send.len() || !send.len().is_multiple_of(4) {
            return Err(BaselineError::Usage(format!(
                "reduce of {} bytes into {} (i32 elements)",
                send.len(),
                recv.len()
            )));
        }
        recv.copy_from_slice(send);
        let (n, chunk) = (self.chunks(send.len()), self.chunk);
        let want = n * (self.size() - 1);
        self.collect(seq, None, want, |_, c, data| {
            let lo = (c * chunk).min(recv.len());
            let hi = (lo + data.len()).min(recv.len());
            fold_i32(&mut recv[lo..hi], &data[..hi - lo]);
        })
    }

    /// Sum of every rank's `send` into every rank's `recv`: reduce to rank 0, then broadcast.
    pub fn allreduce(&mut self, send: &[u8], recv: &mut [u8]) -> Result<(), BaselineError> {
        self.reduce(send, recv, 0)?;
        self.bcast(recv, 0)
    }

    /// Every rank's block of `send.len()` bytes into `recv` (blocks in rank order).
    pub fn allgather(&mut self, send: &[u8], recv: &mut [u8]) -> Result<(), BaselineError> {
        let block = send.len();
        if recv.len() != block * self.size() {
            return Err(BaselineError::Usage(format!(
                "allgather of {block}-byte blocks into {} bytes",
                recv.len()
            )));
        }
        let seq = self.next_seq();
        recv[self.rank * block..(self.rank + 1) * block].copy_from_slice(send);
        let me = self.rank;
        for dst in (0..self.size()).filter(|&d| d != me) {
            self.send_all(dst, seq, send)?;
        }
        let (n, chunk) = (self.chunks(block), self.chunk);
        let want = n * (self.size() - 1);
        self.collect(seq, None, want, |src, c, data| {
            let base = src * block;
            let lo = (c * chunk).min(block);
            let hi = (lo + data.len()).min(block);
            recv[base + lo..base + hi].copy_from_slice(&data[..hi - lo]);
        })
    }
}

/// `acc[i] += x[i]` on little-endian `i32`s (wrapping).
fn fold_i32(acc: &mut [u8], x: &[u8]) {
    for (a, b) in acc.chunks_exact_mut(4).zip(x.chunks_exact(4)) {
        let s = i32::from_le_bytes([a[0], a[1], a[2], a[3]])
            .wrapping_add(i32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        a.copy_from_slice(&s.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// Runs `f(rank, baseline)` on `p` threads, each a rank over loopback.
    fn job(flavor: Flavor, p: usize, chunk: usize, f: fn(usize, &mut Baseline)) {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut bs: Vec<Baseline> = (0..p)
            .map(|r| Baseline::bind(flavor, ip, r, chunk, Duration::from_secs(5)).unwrap())
            .collect();
        let addrs: Vec<SocketAddr> = bs.iter().map(|b| b.local_addr().unwrap()).collect();
        std::thread::scope(|s| {
            for (r, mut b) in bs.drain(..).enumerate() {
                b.set_peers(addrs.clone());
                s.spawn(move || f(r, &mut b));
            }
        });
    }

    fn ints(v: &[i32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// Rank `r`'s data: 5 ints, distinct per rank and per element (a copy of another rank's block,
    /// or a chunk in the wrong place, shows).
    fn data(r: usize) -> Vec<i32> {
        (0..5).map(|j| 100 * (r as i32 + 1) + j).collect()
    }

    fn every_collective(r: usize, b: &mut Baseline) {
        let p = 3;
        // Several chunks (chunk = 8 bytes, 5 ints = 20 bytes).
        let mine = ints(&data(r));
        // Receivers start from something else than the root's data.
        let mut buf = if r == 1 { mine.clone() } else { ints(&[-1; 5]) };
        b.bcast(&mut buf, 1).unwrap();
        assert_eq!(buf, ints(&data(1)));
        // The sums, by hand: 100 (r + 1) + j over r = 0, 1, 2 is 600 + 3 j.
        let sum = ints(&[600, 603, 606, 609, 612]);
        let mut out = vec![0; 20];
        b.reduce(&mine, &mut out, 2).unwrap();
        if r == 2 {
            assert_eq!(out, sum);
        } else {
            assert_eq!(out, vec![0; 20], "recv is the root's only");
        }
        let mut all = vec![0; 20];
        b.allreduce(&mine, &mut all).unwrap();
        assert_eq!(all, sum);
        let mut g = vec![0; 20 * p];
        b.allgather(&mine, &mut g).unwrap();
        for q in 0..p {
            assert_eq!(g[q * 20..(q + 1) * 20], ints(&data(q)));
        }
        // Back to back with rotating roots, one int each: early datagrams are kept for their
        // collective. Each root sends a value of its own (1000 i + root); the others start from a
        // value that is no root's (-1 - r), so a bcast that delivers nothing, or another
        // collective's datagram, shows.
        for i in 0..20 {
            let root = i as usize % p;
            let sent = 1000 * i + root as i32;
            let mut x = ints(&[if r == root { sent } else { -1 - r as i32 }]);
            b.bcast(&mut x, root).unwrap();
            assert_eq!(x, ints(&[sent]), "bcast {i} from {root}");
            let mut y = vec![0; 4];
            b.reduce(&ints(&[i + r as i32]), &mut y, root).unwrap();
            if r == root {
                assert_eq!(y, ints(&[3 * i + 3]), "reduce {i} to {root}");
            }
        }
    }

    #[test]
    fn naive_collectives() {
        job(Flavor::Naive, 3, 8, every_collective);
    }

    #[test]
    fn epoll_collectives() {
        job(Flavor::Epoll, 3, 8, every_collective);
    }

    #[test]
    fn a_lost_datagram_is_a_timeout() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut b = Baseline::bind(Flavor::Epoll, ip, 1, 64, Duration::from_millis(50)).unwrap();
        let other = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        b.set_peers(vec![other.local_addr().unwrap(), b.local_addr().unwrap()]);
        let mut buf = vec![0; 4];
        let e = b.bcast(&mut buf, 0).unwrap_err();
        assert!(matches!(e, BaselineError::Timeout { want: 1, .. }), "{e}");
    }
}
