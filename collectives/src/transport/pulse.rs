//! Liveness across hosts: every rank with a network transport answers, from a thread of its own,
//! whether it is alive and where it is, even while it computes outside boad for hours.
//!
//! A rank's data path only speaks inside boad calls, so a peer that computes between two
//! collectives sends nothing, exactly like one whose network is gone. The pulse tells them apart:
//! a second UDP socket per rank (its port is in the job table), served by a thread that answers a
//! `PING` from a peer's data socket with a `PONG` saying which collective the rank started last and
//! whether it is inside it ([`PulseState`], set by the communicator at the start and end of every
//! collective). A waiting rank pings a peer that has been silent for a while: a peer that answers is
//! alive and is waited for (with a warning naming it every `BOAD_TIMEOUT_MS`); one that answers
//! nothing for `BOAD_TIMEOUT_MS` — a lost network, a frozen process — is reported.
//!
//! A peer whose process has ended is told apart sooner. Under `boadrun` the launcher's `EXIT` line
//! says so at once; without a launcher (Slurm, Hydra, env://) the waiting rank sees it itself within
//! about a second (`transport::gone`): on its own host from a pidfd of the peer's process, on any
//! host because this socket's port is closed once the process is gone, so empty probes to it from a
//! connected socket come back refused (ICMP port unreachable). Only a port that keeps refusing
//! (twice, 200 ms apart or more, with nothing heard from the peer in between) counts; a frozen
//! process or a lost network refuses nothing and keeps the timeout above. Probes are not PINGs:
//! this thread ignores them.
//!
//! Contract: the thread answers only well-formed PINGs of this job (magic, version, key) from the
//! data address of a rank of the job table, with one datagram of header size (no amplification),
//! reads nothing but its own socket and the state word, and ends when the [`Pulse`] is dropped.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use boad_common::{flags, kind, Header, HEADER_LEN, MAGIC, VERSION};

/// Where this rank is: the collective it started last, and whether it is inside it. Cheap to
/// update (one relaxed store) from the communicator.
#[derive(Clone, Default)]
pub(crate) struct PulseState(Arc<AtomicU64>);

impl PulseState {
    /// Collective `seq` starts.
    pub fn enter(&self, seq: u32) {
        self.0.store(
            u64::from(seq) << 32 | u64::from(flags::STARTED | flags::INSIDE),
            Ordering::Relaxed,
        );
    }

    /// Collective `seq` ended (completed or failed).
    pub fn leave(&self, seq: u32) {
        self.0.store(
            u64::from(seq) << 32 | u64::from(flags::STARTED),
            Ordering::Relaxed,
        );
    }

    /// (collective, `flags::STARTED | flags::INSIDE` bits).
    fn get(&self) -> (u32, u8) {
        let v = self.0.load(Ordering::Relaxed);
        ((v >> 32) as u32, v as u8)
    }
}

/// A bound liveness socket, before its thread starts.
pub(crate) struct PulseSocket {
    sock: UdpSocket,
}

impl PulseSocket {
    /// Binds it on `ip`; returns it with its port.
    pub fn bind(ip: IpAddr) -> std::io::Result<(PulseSocket, u16)> {
        let sock = UdpSocket::bind(SocketAddr::new(ip, 0))?;
        let port = sock.local_addr()?.port();
        Ok((PulseSocket { sock }, port))
    }

    /// Starts answering PINGs of job `job` from the data addresses `peers`, with `state`.
    pub fn start(
        self,
        job: u64,
        rank: usize,
        peers: Vec<SocketAddr>,
        state: PulseState,
    ) -> std::io::Result<Pulse> {
        let stop = Arc::new(AtomicBool::new(false));
        let own = self.sock.local_addr()?;
        let sock = self.sock;
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("boad-pulse".into())
            .spawn(move || serve(&sock, job, rank, &peers, &state, &flag))?;
        Ok(Pulse {
            stop,
            own,
            thread: Some(thread),
        })
    }
}

/// The running liveness thread; dropping it ends the thread.
pub(crate) struct Pulse {
    stop: Arc<AtomicBool>,
    own: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Pulse {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the thread from its receive with an empty datagram to its own socket.
        let any = SocketAddr::new(self.own.ip(), 0);
        if let Ok(s) = UdpSocket::bind(any) {
            let _ = s.send_to(&[], self.own);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A PING of job `job` in `bytes`?
pub(crate) fn is_ping(bytes: &[u8], job: u64) -> bool {
    let Some(h) = bytes
        .get(..HEADER_LEN)
        .map(bytemuck::pod_read_unaligned::<Header>)
    else {
        return false;
    };
    bytes.len() == HEADER_LEN
        && h.magic == MAGIC
        && h.version == VERSION
        && h.job == job
        && h.kind == kind::PING
        && h.len == 0
}

/// The PONG rank `rank` of job `job` answers with, at collective `seq` with `bits`.
pub(crate) fn pong(job: u64, rank: usize, seq: u32, bits: u8) -> Header {
    Header {
        magic: MAGIC,
        version: VERSION,
        kind: kind::PONG,
        flags: bits & (flags::STARTED | flags::INSIDE),
        src: rank as u32,
        job,
        seq,
        ..Header::default()
    }
}

fn serve(
    sock: &UdpSocket,
    job: u64,
    rank: usize,
    peers: &[SocketAddr],
    state: &PulseState,
    stop: &AtomicBool,
) {
    let mut buf = [0u8; HEADER_LEN + 1];
    loop {
        let got = sock.recv_from(&mut buf);
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok((n, from)) = got else {
            continue;
        };
        let bytes = &buf[..n.min(buf.len())];
        if n > HEADER_LEN || !is_ping(bytes, job) || !peers.contains(&from) {
            continue;
        }
        let (seq, bits) = state.get();
        let h = pong(job, rank, seq, bits);
        let _ = sock.send_to(bytemuck::bytes_of(&h), from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ping(job: u64) -> Header {
        Header {
            magic: MAGIC,
            version: VERSION,
            kind: kind::PING,
            job,
            ..Header::default()
        }
    }

    #[test]
    fn answers_pings_of_its_job_from_its_peers_only() {
        let lo = IpAddr::from([127, 0, 0, 1]);
        let peer = UdpSocket::bind((lo, 0)).expect("bind");
        let stranger = UdpSocket::bind((lo, 0)).expect("bind");
        for s in [&peer, &stranger] {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .expect("timeout");
        }
        let (ps, port) = PulseSocket::bind(lo).expect("bind pulse");
        let state = PulseState::default();
        let pulse = ps
            .start(7, 3, vec![peer.local_addr().expect("addr")], state.clone())
            .expect("start");
        let to = SocketAddr::new(lo, port);
        let mut buf = [0u8; 256];
        let ask = |s: &UdpSocket, h: &Header, buf: &mut [u8]| {
            s.send_to(bytemuck::bytes_of(h), to).expect("send");
            s.recv(buf).ok()
        };
        // Nothing started yet; then inside collective 5; then done with it.
        let n = ask(&peer, &ping(7), &mut buf).expect("an answer");
        let h: Header = bytemuck::pod_read_unaligned(&buf[..n]);
        assert_eq!(
            (h.kind, h.src, h.flags & flags::STARTED),
            (kind::PONG, 3, 0)
        );
        state.enter(5);
        let n = ask(&peer, &ping(7), &mut buf).expect("an answer");
        let h: Header = bytemuck::pod_read_unaligned(&buf[..n]);
        assert_eq!((h.seq, h.flags), (5, flags::STARTED | flags::INSIDE));
        state.leave(5);
        let n = ask(&peer, &ping(7), &mut buf).expect("an answer");
        let h: Header = bytemuck::pod_read_unaligned(&buf[..n]);
        assert_eq!((h.seq, h.flags), (5, flags::STARTED));
        // Another job's key, another kind, a stranger: no answer.
        assert!(ask(&peer, &ping(8), &mut buf).is_none());
        let mut other = ping(7);
        other.kind = kind::PROBE;
        assert!(ask(&peer, &other, &mut buf).is_none());
        assert!(ask(&stranger, &ping(7), &mut buf).is_none());
        drop(pulse);
        assert!(
            ask(&peer, &ping(7), &mut buf).is_none(),
            "answered after drop"
        );
    }
}
