//! An in-process transport for tests: the ranks of a job are threads of one process, and messages
//! travel over channels. It meets the transport contract (see the module docs of `transport`) for
//! jobs whose ranks all run to the end: messages are delivered once and whole, matched by
//! (collective, sender, tag) whatever order they arrive in, a receive that waits too long fails with
//! a timeout naming the silent rank, and `fail` reaches every peer at once.
//!
//! With `shuffle`, a rank keeps what it sends until it next waits or ends a collective and then
//! releases it in a random order, so a test sees arrival orders the real transports can produce.
//! It is a [`Level`] too, so the hierarchical algorithms run on two meshes of it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use super::{Ctx, Level, Service, Session, Stats, Transport};
use crate::error::{CollectiveError, Error, Result};

enum Msg {
    Data {
        seq: u32,
        src: usize,
        tag: u32,
        data: Vec<u8>,
    },
    Abort {
        seq: u32,
        by: usize,
        reason: String,
    },
}

/// One rank of an in-process job.
pub(crate) struct Mem {
    rank: usize,
    peers: Vec<Sender<Msg>>,
    inbox: Receiver<Msg>,
    held: HashMap<(u32, usize, u32), VecDeque<Vec<u8>>>,
    aborted: HashMap<u32, (usize, String)>,
    failed: HashSet<u32>,
    outbox: Vec<(usize, Msg)>,
    shuffle: bool,
    rng: u64,
    timeout: Duration,
    idle: Option<Service>,
    stats: Stats,
}

/// The ranks `0..size` of one in-process job, each to be moved to its own thread.
pub(crate) fn mesh(size: usize, shuffle: bool, seed: u64) -> Vec<Mem> {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..size).map(|_| channel()).unzip();
    rxs.into_iter()
        .enumerate()
        .map(|(rank, inbox)| Mem {
            rank,
            peers: txs.clone(),
            inbox,
            held: HashMap::new(),
            aborted: HashMap::new(),
            failed: HashSet::new(),
            outbox: Vec::new(),
            shuffle,
            // Never zero (xorshift would stay there).
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (rank as u64 + 1),
            timeout: Duration::from_secs(20),
            idle: None,
            stats: Stats::default(),
        })
        .collect()
}

impl Mem {
    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Sends what the shuffle held back, in a random order.
    fn release(&mut self) {
        while !self.outbox.is_empty() {
            let i = (self.next() % self.outbox.len() as u64) as usize;
            let (dst, msg) = self.outbox.swap_remove(i);
            // A peer whose thread ended takes nothing more: that is its receiver's business.
            let _ = self.peers[dst].send(msg);
        }
    }

    fn post(&mut self, dst: usize, msg: Msg) {
        if self.shuffle {
            self.outbox.push((dst, msg));
        } else {
            let _ = self.peers[dst].send(msg);
        }
    }

    fn file(&mut self, msg: Msg) {
        match msg {
            Msg::Data {
                seq,
                src,
                tag,
                data,
            } => self
                .held
                .entry((seq, src, tag))
                .or_default()
                .push_back(data),
            Msg::Abort { seq, by, reason } => {
                self.aborted.entry(seq).or_insert((by, reason));
            }
        }
    }
}

impl Session for Mem {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.peers.len()
    }

    fn begin(&mut self, _ctx: &Ctx) -> Result<()> {
        Ok(())
    }

    fn end(&mut self, ctx: &Ctx) {
        self.release();
        self.held.retain(|(seq, _, _), _| *seq != ctx.seq);
    }

    fn fail(&mut self, ctx: &Ctx, err: &Error) {
        self.failed.insert(ctx.seq);
        let me = self.rank;
        for dst in (0..self.size()).filter(|&d| d != me) {
            self.post(
                dst,
                Msg::Abort {
                    seq: ctx.seq,
                    by: self.rank,
                    reason: err.to_string(),
                },
            );
        }
        self.release();
    }

    fn flush(&mut self) -> Result<()> {
        self.release();
        Ok(())
    }

    fn stats(&self) -> Stats {
        self.stats
    }

    fn path(&self) -> crate::types::Path {
        crate::types::Path::Udp
    }
}

impl Transport for Mem {
    fn send(&mut self, ctx: &Ctx, dst: usize, tag: u32, data: &[u8]) -> Result<()> {
        self.stats.datagrams_sent += 1;
        self.stats.bytes_sent += data.len() as u64;
        let msg = Msg::Data {
            seq: ctx.seq,
            src: self.rank,
            tag,
            data: data.to_vec(),
        };
        self.post(dst, msg);
        Ok(())
    }

    fn recv(&mut self, ctx: &Ctx, src: usize, tag: u32) -> Result<Vec<u8>> {
        self.release();
        let start = Instant::now();
        loop {
            while let Ok(msg) = self.inbox.try_recv() {
                self.file(msg);
            }
            if let Some(data) = self
                .held
                .get_mut(&(ctx.seq, src, tag))
                .and_then(VecDeque::pop_front)
            {
                self.stats.datagrams_received += 1;
                return Ok(data);
            }
            if let Some((by, reason)) = self.aborted.get(&ctx.seq) {
                return Err(Error::aborted(self.rank, ctx.seq, *by, reason.clone()));
            }
            if start.elapsed() > self.timeout {
                return Err(Error::new(
                    self.rank,
                    CollectiveError::Timeout {
                        call: ctx.describe(),
                        peer: src,
                        waited_ms: start.elapsed().as_millis() as u64,
                        timeout_ms: self.timeout.as_millis() as u64,
                    },
                ));
            }
            if let Some(hook) = self.idle.as_mut() {
                hook();
            }
            match self.inbox.recv_timeout(Duration::from_millis(5)) {
                Ok(msg) => self.file(msg),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
            }
        }
    }
}

impl Level for Mem {
    fn service(&mut self) {
        self.release();
    }

    fn seen_aborts(&mut self) -> Vec<(u32, usize, String)> {
        while let Ok(msg) = self.inbox.try_recv() {
            self.file(msg);
        }
        self.aborted
            .iter()
            .filter(|(seq, _)| !self.failed.contains(seq))
            .map(|(seq, (by, reason))| (*seq, *by, reason.clone()))
            .collect()
    }

    fn set_idle_hook(&mut self, hook: Service) {
        self.idle = Some(hook);
    }

    fn set_job_ranks(&mut self, _ranks: Vec<usize>) {}

    fn set_gather_blocks(&mut self, _blocks: usize) {}
}

impl Mem {
    /// Sets how long a receive waits before it fails with a timeout.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }
}
