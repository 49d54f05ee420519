//! Receiving in batches: one `recvmmsg(2)` fills up to [`BATCH`] fixed receive buffers ([`RxBatch`]),
//! allocated once with the transport; the datagrams are then handled straight from them.
//!
//! Why `libc::recvmmsg` and not a crate: `rustix` has `sendmmsg` but no `recvmmsg`, `socket2` 0.5 has
//! neither, and `nix`'s `recvmmsg` needs a `MultiHeaders` that is not `Send` (a transport is), so it
//! would have to be built, with heap allocations, on every call. Here the `mmsghdr`s, `iovec`s and
//! address buffers are built on the stack for each call and point into the batch's own buffers.
//!
//! When to read again ([`RxBatch::drained`]): the socket is registered edge-triggered, so a drain
//! must leave it empty or no new wake-up comes for what is left. A batch that came back with fewer
//! than [`BATCH`] datagrams means the kernel found the receive queue empty (it stops a batch early
//! only at EAGAIN on a non-blocking socket, or at an error: see below), so reading again would only
//! return EAGAIN: one system call for nothing. A full batch may have left datagrams behind: read
//! again. The one other way a batch ends early is an error after some datagrams (the socket's ICMP
//! error, with `IP_RECVERR` on): the kernel then keeps that error for the next read, and raising it
//! woke the poller (`sk_error_report`), so the next wait returns at once and reads what is left.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// Datagrams read by one system call at most.
pub(crate) const BATCH: usize = 32;
/// Bytes of one receive buffer: the largest UDP datagram (a larger one is cut and refused).
pub(crate) const SLOT: usize = 65_536;

/// Where a source of datagrams puts one batch ([`RxBatch::fill_with`]).
pub(crate) struct Slots<'a> {
    bufs: &'a mut [u8],
    len: &'a mut [usize; BATCH],
    from: &'a mut [Option<SocketAddr>; BATCH],
    cut: &'a mut [bool; BATCH],
}

impl Slots<'_> {
    /// Puts datagram `i` of the batch: `bytes` (cut to [`SLOT`] bytes) from `from`. For tests and
    /// harnesses without a socket.
    #[cfg(test)]
    pub(crate) fn put(&mut self, i: usize, bytes: &[u8], from: SocketAddr) {
        let n = bytes.len().min(SLOT);
        self.bufs[i * SLOT..i * SLOT + n].copy_from_slice(&bytes[..n]);
        self.len[i] = n;
        self.from[i] = Some(from);
        self.cut[i] = n < bytes.len();
    }
}

/// The fixed receive buffers and what the last batch put in them.
pub(crate) struct RxBatch {
    /// [`BATCH`] buffers of [`SLOT`] bytes, back to back.
    bufs: Vec<u8>,
    len: [usize; BATCH],
    from: [Option<SocketAddr>; BATCH],
    /// Datagram `i` was larger than its buffer.
    cut: [bool; BATCH],
    /// Datagrams the last batch holds.
    filled: usize,
    /// The next one not handled yet.
    next: usize,
    /// The one being handled (see [`RxBatch::current`]).
    cur: usize,
}

impl Default for RxBatch {
    fn default() -> Self {
        RxBatch {
            // Zeroed pages are mapped lazily: a rank touches only what its datagrams fill.
            bufs: vec![0; BATCH * SLOT],
            len: [0; BATCH],
            from: [None; BATCH],
            cut: [false; BATCH],
            filled: 0,
            next: 0,
            cur: 0,
        }
    }
}

impl RxBatch {
    /// Reads a new batch from `sock` (non-blocking) with one `recvmmsg`; how many datagrams came.
    /// Only once every datagram of the last batch was handled.
    pub(crate) fn read(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        self.fill_with(|s| recvmmsg(sock, s))
    }

    /// Reads a new batch with `source`, which fills [`Slots`] from the first and returns how many
    /// it filled (at most [`BATCH`]): the seam tests read through.
    pub(crate) fn fill_with(
        &mut self,
        source: impl FnOnce(&mut Slots<'_>) -> io::Result<usize>,
    ) -> io::Result<usize> {
        debug_assert!(
            self.pending() == 0,
            "a batch read over datagrams not handled"
        );
        self.filled = 0;
        self.next = 0;
        let n = source(&mut Slots {
            bufs: &mut self.bufs,
            len: &mut self.len,
            from: &mut self.from,
            cut: &mut self.cut,
        })?;
        self.filled = n.min(BATCH);
        Ok(self.filled)
    }

    /// Whether a read that returned `n` datagrams left the socket empty (see the module docs).
    pub(crate) fn drained(n: usize) -> bool {
        n < BATCH
    }

    /// Datagrams of the last batch not handled yet.
    pub(crate) fn pending(&self) -> usize {
        self.filled - self.next
    }

    /// The next datagram to handle, which becomes [`current`](Self::current): its size and source;
    /// `Err(())` for one that cannot be handled (cut, or from an address that is not IP), `None`
    /// when the batch is done.
    pub(crate) fn advance(&mut self) -> Option<Result<(usize, SocketAddr), ()>> {
        if self.next >= self.filled {
            return None;
        }
        let i = self.next;
        self.next += 1;
        self.cur = i;
        Some(match self.from[i] {
            Some(from) if !self.cut[i] => Ok((self.len[i], from)),
            _ => Err(()),
        })
    }

    /// The bytes of the datagram being handled.
    pub(crate) fn current(&self) -> &[u8] {
        let at = self.cur * SLOT;
        &self.bufs[at..at + self.len[self.cur]]
    }
}

/// Message buffers to reuse: a message being received takes one ([`take`](Self::take)), and it
/// comes back ([`give`](Self::give)) once the message was copied or folded into the caller's buffer,
/// so that collectives of the sizes a program repeats receive without allocating. Holds at most
/// [`POOL_BUFFERS`] buffers and [`POOL_BYTES`] bytes; what does not fit is freed.
#[derive(Default)]
pub(crate) struct MsgPool {
    free: Vec<Vec<u8>>,
    bytes: usize,
}

/// Most buffers a [`MsgPool`] keeps.
pub(crate) const POOL_BUFFERS: usize = 32;
/// Most bytes (capacity) a [`MsgPool`] keeps.
pub(crate) const POOL_BYTES: usize = 16 << 20;

impl MsgPool {
    /// A zeroed buffer of `len` bytes: a kept one when there is one (the largest, which is the most
    /// likely not to grow), else a new one.
    pub(crate) fn take(&mut self, len: usize) -> Vec<u8> {
        if len == 0 {
            return Vec::new();
        }
        let mut buf = match self.free.pop() {
            Some(b) => {
                self.bytes -= b.capacity();
                b
            }
            None => Vec::new(),
        };
        buf.clear();
        buf.resize(len, 0);
        buf
    }

    /// Takes `buf` back, if it fits.
    pub(crate) fn give(&mut self, buf: Vec<u8>) {
        let cap = buf.capacity();
        if cap == 0 || self.free.len() >= POOL_BUFFERS || self.bytes + cap > POOL_BYTES {
            return;
        }
        self.bytes += cap;
        // Kept sorted by capacity, so `take` hands out the largest.
        let at = self.free.partition_point(|b| b.capacity() <= cap);
        self.free.insert(at, buf);
    }

    /// Buffers kept.
    #[cfg(test)]
    pub(crate) fn kept(&self) -> usize {
        self.free.len()
    }
}

/// One `recvmmsg` into `s`'s buffers; how many datagrams came (EAGAIN when none).
fn recvmmsg(sock: &UdpSocket, s: &mut Slots<'_>) -> io::Result<usize> {
    // SAFETY: all-zero is a valid value of these plain C structs (null pointers, zero lengths).
    let mut names: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (i, ((m, iov), name)) in msgs
        .iter_mut()
        .zip(iovs.iter_mut())
        .zip(names.iter_mut())
        .enumerate()
    {
        let buf = &mut s.bufs[i * SLOT..(i + 1) * SLOT];
        iov.iov_base = buf.as_mut_ptr().cast();
        iov.iov_len = buf.len();
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
        m.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
        m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    }
    // SAFETY: `msgs` holds BATCH valid headers, each pointing at one live iovec (into `s.bufs`, SLOT
    // bytes, exclusively borrowed) and one live sockaddr_storage of the size given; all outlive the
    // call, which writes only within them. The socket fd is owned by `sock` for the call.
    let n = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            msgs.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = (n as usize).min(BATCH);
    for (i, (m, name)) in msgs.iter().zip(names.iter()).take(n).enumerate() {
        s.len[i] = (m.msg_len as usize).min(SLOT);
        s.cut[i] = m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        // SAFETY: the kernel wrote an address of `msg_namelen` bytes (at most the storage's size)
        // into `name`; SockAddr only reads it as the family it says.
        let addr = unsafe { socket2::SockAddr::new(*name, m.msg_hdr.msg_namelen) };
        s.from[i] = addr.as_socket();
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer given back is handed out again, zeroed, without growing the pool past its bounds.
    #[test]
    fn the_pool_reuses_its_buffers_within_bounds() {
        let mut p = MsgPool::default();
        let mut a = p.take(100);
        a.fill(7);
        let at = a.as_ptr();
        p.give(a);
        let b = p.take(60);
        assert_eq!(b.as_ptr(), at, "the same allocation");
        assert!(b.len() == 60 && b.iter().all(|&x| x == 0));
        assert!(p.take(0).capacity() == 0 && p.kept() == 0);
        for _ in 0..2 * POOL_BUFFERS {
            p.give(vec![1; 8]);
        }
        assert_eq!(p.kept(), POOL_BUFFERS);
        let mut q = MsgPool::default();
        q.give(vec![0; POOL_BYTES + 1]);
        assert_eq!(q.kept(), 0);
    }

    /// Datagrams sent on loopback come back from one read with their bytes and sources, and a
    /// datagram too large for its buffer is marked.
    #[test]
    fn one_read_returns_what_loopback_queued() {
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_nonblocking(true).expect("nonblocking");
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = rx.local_addr().expect("address");
        for i in 0..5u8 {
            tx.send_to(&[i; 3], to).expect("send");
        }
        let mut b = RxBatch::default();
        // Loopback delivers in the sender's softirq, normally before send_to returns; allow for a
        // loaded machine deferring it.
        let mut got = 0;
        for _ in 0..100 {
            got += b.read(&rx).unwrap_or(0);
            while let Some(d) = b.advance() {
                let (n, from) = d.expect("whole");
                assert_eq!(n, 3);
                assert_eq!(from, tx.local_addr().expect("address"));
                assert!(b
                    .current()
                    .iter()
                    .all(|&x| usize::from(x) == got - b.pending() - 1));
            }
            if got == 5 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got, 5);
        assert_eq!(
            b.read(&rx).map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock)
        );
    }
}
