//! The communicator: the collectives a rank calls.

use crate::algorithms;
use crate::config::{Config, TransportKind};
use crate::error::{Error, Result, UsageError};
use crate::join::{self, JobInfo};
use crate::transport::hier::Hier;
use crate::transport::pulse::{Pulse, PulseSocket, PulseState};
use crate::transport::shm::Shm;
use crate::transport::udp::Udp;
use crate::transport::{Ctx, Stats, Transport};
use crate::types::{Coll, DType, Element, Op, Signature};

/// Which data path carried a collective.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Userspace UDP sockets.
    Udp,
    /// Shared memory between the ranks of one host.
    Shm,
    /// The eBPF kernel path: XDP folds contributions, TC clones broadcasts.
    Kernel,
    /// Hierarchical: shared memory inside each host, userspace UDP between one leader per host.
    Hier,
    /// Hierarchical with the kernel path between the leaders: shared memory inside each host,
    /// XDP folds and TC clones between one leader per host.
    HierKernel,
}

impl Path {
    /// Every path.
    pub const ALL: [Path; 5] = [
        Path::Kernel,
        Path::Udp,
        Path::Shm,
        Path::Hier,
        Path::HierKernel,
    ];

    /// `"udp"`, `"shm"`, `"kernel"`, `"hier"`, `"hier-kernel"`.
    pub const fn name(self) -> &'static str {
        match self {
            Path::Udp => "udp",
            Path::Shm => "shm",
            Path::Kernel => "kernel",
            Path::Hier => "hier",
            Path::HierKernel => "hier-kernel",
        }
    }

    /// [`name`](Self::name) as a C string (for the C bindings).
    pub const fn c_name(self) -> &'static std::ffi::CStr {
        match self {
            Path::Udp => c"udp",
            Path::Shm => c"shm",
            Path::Kernel => c"kernel",
            Path::Hier => c"hier",
            Path::HierKernel => c"hier-kernel",
        }
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which transport a job uses (see `Communicator::from_env`).
enum Choice {
    Shm,
    Hier,
    Udp,
}

/// All the ranks of a job, and the collectives they call together.
///
/// Every rank must call the same collectives in the same order with matching arguments (same count,
/// dtype, op and root); a mismatch is reported as an error on the ranks that see it, and the others
/// are told the collective failed. Dropping the communicator delivers what it still has to send
/// (like [`Communicator::finalize`], but printing an error instead of returning it).
pub struct Communicator {
    info: JobInfo,
    cfg: Config,
    transport: Box<dyn Transport>,
    seq: u32,
    last_path: Option<Path>,
    finalized: bool,
    /// Where this rank is, for the liveness thread.
    pulse_state: PulseState,
    /// The liveness thread (ranks that use the network); ends when the communicator is dropped.
    _pulse: Option<Pulse>,
}

/// Joins the job this process belongs to (or a job of one rank when not started by `boadrun`).
pub fn init() -> Result<Communicator> {
    Communicator::from_env()
}

impl Communicator {
    /// Joins the job described by the environment (see [`init`]).
    pub fn from_env() -> Result<Communicator> {
        let info = JobInfo::from_env()?;
        let mut cfg = Config::from_env().map_err(Error::general)?;
        cfg.resolve(info.bind);
        // Every rank binds a socket: its port goes into the job table, and until the table is in
        // nobody knows whether the job fits on one host.
        let (sock, port) = Udp::bind(info.rank, info.bind)?;
        // ... and its liveness socket (see `transport::pulse`), for the ranks that will use the
        // network.
        let pulse_sock = if info.size > 1 {
            let (s, p) = PulseSocket::bind(info.bind)
                .map_err(|source| Error::io(info.rank, "binding the liveness socket", source))?;
            Some((s, p))
        } else {
            None
        };
        let pulse_port = pulse_sock.as_ref().map_or(0, |(_, p)| *p);
        let joined = join::rendezvous(&info, port, pulse_port, cfg.timeout)?;
        let one_host = joined.table.iter().all(|e| e.host_id == info.host_id);
        // Some host has several ranks (fewer leaders than ranks): the launcher's test for filling
        // the kernel path's leaders communicator too.
        let layout = boad_proto::Layout::of(&joined.table);
        let shared_host = layout.shared_host();
        let kernel =
            match (cfg.transport, joined.kernel_trigger) {
                (TransportKind::Kernel, None) => return Err(Error::general(UsageError::Config {
                    name: "BOAD_TRANSPORT",
                    value: "kernel".into(),
                    why: "the launcher did not attach the kernel path for this job (boadrun says \
                          why; it needs root and a build with the eBPF programs)"
                        .into(),
                })),
                (TransportKind::Kernel | TransportKind::Auto, trigger) => trigger,
                _ => None,
            };
        let choice = match cfg.transport {
            // On one host shared memory beats any network path.
            TransportKind::Shm if one_host => Choice::Shm,
            TransportKind::Auto if one_host && joined.table.len() > 1 => Choice::Shm,
            // Over several hosts `shm` means shared memory inside each host, UDP between leaders.
            TransportKind::Shm => Choice::Hier,
            // Several hosts, some with several ranks: shared memory inside each host, and between
            // the hosts' leaders the kernel path when the launcher attached it for them (it fills
            // the leaders' communicator on exactly these jobs), else UDP.
            TransportKind::Auto if shared_host => Choice::Hier,
            // `kernel` keeps every rank on the kernel path (the eBPF programs' world communicator).
            TransportKind::Auto | TransportKind::Udp | TransportKind::Kernel => Choice::Udp,
        };
        // The leaders' communicator, for the hierarchical path's network level.
        let leaders_kernel = kernel.filter(|_| joined.kernel_leaders);
        // Ranks that talk over the network answer their peers' PINGs from a thread of their own.
        let uses_net = match choice {
            Choice::Udp => true,
            Choice::Hier => layout.leaders.contains(&info.rank),
            Choice::Shm => false,
        };
        let pulse_state = PulseState::default();
        let pulse = match pulse_sock {
            Some((s, _)) if uses_net => {
                let peers = joined
                    .table
                    .iter()
                    .map(|e| std::net::SocketAddr::new(e.ip, e.port))
                    .collect();
                Some(
                    s.start(info.job, info.rank, peers, pulse_state.clone())
                        .map_err(|source| {
                            Error::io(info.rank, "starting the liveness thread", source)
                        })?,
                )
            }
            _ => None,
        };
        let transport: Box<dyn Transport> = match choice {
            Choice::Shm => {
                drop(sock);
                Box::new(Shm::new(
                    &info,
                    &joined.table,
                    joined.conn,
                    joined.leftover,
                    cfg.clone(),
                )?)
            }
            Choice::Hier => Box::new(Hier::new(
                &info,
                &joined.table,
                sock,
                joined.conn,
                joined.leftover,
                cfg.clone(),
                leaders_kernel,
            )?),
            Choice::Udp => {
                let mut udp = Udp::new(
                    info.rank,
                    info.job,
                    sock,
                    &joined.table,
                    joined.conn,
                    joined.leftover,
                    cfg.clone(),
                )?;
                if let Some(trigger) = kernel {
                    udp.enable_kernel(trigger, boad_common::kernel::comm::WORLD);
                }
                Box::new(udp)
            }
        };
        Ok(Communicator {
            info,
            cfg,
            transport,
            seq: 0,
            last_path: None,
            finalized: false,
            pulse_state,
            _pulse: pulse,
        })
    }

    /// This rank, in `0..size()`.
    pub fn rank(&self) -> usize {
        self.info.rank
    }

    /// Number of ranks.
    pub fn size(&self) -> usize {
        self.info.size
    }

    /// This rank's index among the ranks on its host.
    pub fn local_rank(&self) -> usize {
        self.info.local_rank
    }

    /// Number of ranks on this host.
    pub fn local_size(&self) -> usize {
        self.info.local_size
    }

    /// The address of this rank's UDP socket (None on the shared-memory path, on the hierarchical
    /// path for a rank that is not its host's leader, or if it cannot be read).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.transport.local_addr()
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Payload bytes per datagram (`BOAD_CHUNK_BYTES`).
    pub fn chunk_bytes(&self) -> usize {
        self.cfg.chunk_bytes
    }

    /// The path the last completed collective took (None before the first).
    pub fn last_path(&self) -> Option<Path> {
        self.last_path
    }

    /// This rank's traffic counters.
    pub fn stats(&self) -> Stats {
        self.transport.stats()
    }

    /// Runs one collective: numbers it, validates, runs `body`, and on failure tells the peers.
    fn run(
        &mut self,
        sig: Signature,
        body: impl FnOnce(&mut dyn Transport, &Ctx) -> Result<()>,
    ) -> Result<()> {
        let ctx = Ctx { seq: self.seq, sig };
        self.seq = self.seq.wrapping_add(1);
        self.pulse_state.enter(ctx.seq);
        let t = self.transport.as_mut();
        let r = t.begin(&ctx).and_then(|()| body(t, &ctx));
        self.pulse_state.leave(ctx.seq);
        match r {
            Ok(()) => {
                t.end(&ctx);
                self.last_path = Some(t.path());
                // An earlier collective that completed here but failed on another rank is reported
                // now, after this one completed (aborting this one too would cascade).
                t.take_deferred(ctx.seq.wrapping_add(1)).map_or(Ok(()), Err)
            }
            Err(e) => {
                t.fail(&ctx, &e);
                Err(e)
            }
        }
    }

    fn sig(coll: Coll, op: Option<Op>, dtype: DType, bytes: usize, root: usize) -> Signature {
        Signature {
            coll,
            op,
            dtype: Some(dtype),
            count: (bytes / dtype.size()) as u64,
            root: root as u32,
        }
    }

    fn check_root(&self, root: usize) -> Result<()> {
        if root >= self.size() {
            return Err(Error::new(
                self.rank(),
                UsageError::InvalidRoot {
                    root,
                    size: self.size(),
                },
            ));
        }
        Ok(())
    }

    fn check_len(
        &self,
        what: &'static str,
        got: usize,
        expected: usize,
        dtype: DType,
    ) -> Result<()> {
        if got != expected {
            return Err(Error::new(
                self.rank(),
                UsageError::BufferLength {
                    what,
                    expected: expected / dtype.size(),
                    got: got / dtype.size(),
                },
            ));
        }
        Ok(())
    }

    fn check_op(&self, op: Op, dtype: DType) -> Result<()> {
        if !op.supports(dtype) {
            return Err(Error::new(
                self.rank(),
                UsageError::OpNotSupported { op, dtype },
            ));
        }
        Ok(())
    }

    fn check_bytes(&self, what: &'static str, len: usize, dtype: DType) -> Result<()> {
        if !len.is_multiple_of(dtype.size()) {
            return Err(Error::new(
                self.rank(),
                UsageError::BufferLength {
                    what,
                    expected: len.div_ceil(dtype.size()),
                    got: len / dtype.size(),
                },
            ));
        }
        Ok(())
    }

    // ----- untyped API (bytes + dtype), used by the typed API and the C and Python bindings -----

    /// [`bcast`](Self::bcast) over raw bytes holding elements of `dtype`.
    pub fn bcast_raw(&mut self, buf: &mut [u8], dtype: DType, root: usize) -> Result<()> {
        let sig = Self::sig(Coll::Bcast, None, dtype, buf.len(), root);
        let checks = self
            .check_bytes("the buffer", buf.len(), dtype)
            .and(self.check_root(root));
        self.run(sig, |t, ctx| {
            checks?;
            if let Some(h) = t.hier() {
                return algorithms::bcast_hier(h, ctx, buf, root);
            }
            algorithms::bcast_flat(t, ctx, buf, root)
        })
    }

    /// [`reduce`](Self::reduce) over raw bytes. `recv` is needed on the root only.
    pub fn reduce_raw(
        &mut self,
        send: &[u8],
        recv: Option<&mut [u8]>,
        dtype: DType,
        op: Op,
        root: usize,
    ) -> Result<()> {
        let sig = Self::sig(Coll::Reduce, Some(op), dtype, send.len(), root);
        let is_root = self.rank() == root;
        let mut checks = self
            .check_bytes("the send buffer", send.len(), dtype)
            .and(self.check_root(root))
            .and(self.check_op(op, dtype));
        if is_root {
            let got = recv.as_ref().map_or(0, |r| r.len());
            checks = checks.and(self.check_len("the receive buffer", got, send.len(), dtype));
        }
        self.run(sig, |t, ctx| {
            checks?;
            if let Some(h) = t.hier() {
                return match recv {
                    Some(r) if is_root => {
                        r.copy_from_slice(send);
                        algorithms::reduce_hier(h, ctx, r, dtype, op, root)
                    }
                    _ => algorithms::reduce_hier(h, ctx, &mut send.to_vec(), dtype, op, root),
                };
            }
            // A kernel-path contributor sends `send` as it is (no scratch copy).
            if let Some(k) = t
                .kernel()
                .filter(|k| !is_root && k.fits(&ctx.sig, send.len()))
            {
                return k.contrib(ctx, root, send);
            }
            match recv {
                Some(r) if is_root => {
                    r.copy_from_slice(send);
                    algorithms::reduce_flat(t, ctx, r, dtype, op, root, 0)
                }
                _ => algorithms::reduce_flat(t, ctx, &mut send.to_vec(), dtype, op, root, 0),
            }
        })
    }

    /// [`reduce_in_place`](Self::reduce_in_place) over raw bytes.
    pub fn reduce_in_place_raw(
        &mut self,
        buf: &mut [u8],
        dtype: DType,
        op: Op,
        root: usize,
    ) -> Result<()> {
        if self.rank() == root {
            let sig = Self::sig(Coll::Reduce, Some(op), dtype, buf.len(), root);
            let checks = self
                .check_bytes("the buffer", buf.len(), dtype)
                .and(self.check_root(root))
                .and(self.check_op(op, dtype));
            self.run(sig, |t, ctx| {
                checks?;
                if let Some(h) = t.hier() {
                    return algorithms::reduce_hier(h, ctx, buf, dtype, op, root);
                }
                algorithms::reduce_flat(t, ctx, buf, dtype, op, root, 0)
            })
        } else {
            self.reduce_raw(buf, None, dtype, op, root)
        }
    }

    /// [`allreduce`](Self::allreduce) over raw bytes.
    pub fn allreduce_raw(
        &mut self,
        send: &[u8],
        recv: &mut [u8],
        dtype: DType,
        op: Op,
    ) -> Result<()> {
        let sig = Self::sig(Coll::Allreduce, Some(op), dtype, send.len(), 0);
        let checks = self
            .check_bytes("the send buffer", send.len(), dtype)
            .and(self.check_len("the receive buffer", recv.len(), send.len(), dtype))
            .and(self.check_op(op, dtype));
        self.run(sig, |t, ctx| {
            checks?;
            recv.copy_from_slice(send);
            if let Some(h) = t.hier() {
                return algorithms::allreduce_hier(h, ctx, recv, dtype, op);
            }
            algorithms::allreduce_flat(t, ctx, recv, dtype, op)
        })
    }

    /// [`allreduce_in_place`](Self::allreduce_in_place) over raw bytes.
    pub fn allreduce_in_place_raw(&mut self, buf: &mut [u8], dtype: DType, op: Op) -> Result<()> {
        let sig = Self::sig(Coll::Allreduce, Some(op), dtype, buf.len(), 0);
        let checks = self
            .check_bytes("the buffer", buf.len(), dtype)
            .and(self.check_op(op, dtype));
        self.run(sig, |t, ctx| {
            checks?;
            if let Some(h) = t.hier() {
                return algorithms::allreduce_hier(h, ctx, buf, dtype, op);
            }
            algorithms::allreduce_flat(t, ctx, buf, dtype, op)
        })
    }

    /// [`allgather`](Self::allgather) over raw bytes.
    pub fn allgather_raw(&mut self, send: &[u8], recv: &mut [u8], dtype: DType) -> Result<()> {
        let sig = Self::sig(Coll::Allgather, None, dtype, send.len(), 0);
        let block = send.len();
        let checks = self
            .check_bytes("the send buffer", send.len(), dtype)
            .and(self.check_len("the receive buffer", recv.len(), block * self.size(), dtype));
        let rank = self.rank();
        self.run(sig, |t, ctx| {
            checks?;
            recv[rank * block..(rank + 1) * block].copy_from_slice(send);
            if let Some(h) = t.hier() {
                return algorithms::allgather_hier(h, ctx, recv, block);
            }
            algorithms::allgather_flat(t, ctx, recv, block)
        })
    }

    /// Fails the next collective, of kind `coll`, on this rank with `what` (an argument a binding
    /// rejected before calling boad), and tells the other ranks so they fail it at once instead of
    /// waiting for this rank. Returns the error to hand to the caller.
    pub fn fail_collective(&mut self, coll: Coll, what: impl Into<String>) -> crate::Error {
        let err: crate::Error = Error::new(self.rank(), UsageError::Invalid { what: what.into() });
        let sig = Signature {
            coll,
            op: None,
            dtype: None,
            count: 0,
            root: 0,
        };
        let ctx = Ctx { seq: self.seq, sig };
        self.seq = self.seq.wrapping_add(1);
        self.transport.fail(&ctx, &err);
        err
    }

    // ----- typed API -----

    /// Copies `buf` on `root` into `buf` on every rank. Every rank passes a buffer of the same length.
    pub fn bcast<T: Element>(&mut self, buf: &mut [T], root: usize) -> Result<()> {
        self.bcast_raw(bytemuck::cast_slice_mut(buf), T::DTYPE, root)
    }

    /// Reduces every rank's `send` with `op` into `recv` on `root`. `recv` must be as long as `send`
    /// on the root and is not touched elsewhere (pass `&mut []` there).
    pub fn reduce<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        op: Op,
        root: usize,
    ) -> Result<()> {
        let recv = (self.rank() == root).then_some(bytemuck::cast_slice_mut(recv));
        self.reduce_raw(bytemuck::cast_slice(send), recv, T::DTYPE, op, root)
    }

    /// Like [`reduce`](Self::reduce) with `buf` as both contribution and, on `root`, result; on other
    /// ranks `buf` is left unchanged.
    pub fn reduce_in_place<T: Element>(
        &mut self,
        buf: &mut [T],
        op: Op,
        root: usize,
    ) -> Result<()> {
        self.reduce_in_place_raw(bytemuck::cast_slice_mut(buf), T::DTYPE, op, root)
    }

    /// Reduces every rank's `send` with `op` into `recv` on every rank.
    pub fn allreduce<T: Element>(&mut self, send: &[T], recv: &mut [T], op: Op) -> Result<()> {
        self.allreduce_raw(
            bytemuck::cast_slice(send),
            bytemuck::cast_slice_mut(recv),
            T::DTYPE,
            op,
        )
    }

    /// Like [`allreduce`](Self::allreduce) with `buf` as both contribution and result.
    pub fn allreduce_in_place<T: Element>(&mut self, buf: &mut [T], op: Op) -> Result<()> {
        self.allreduce_in_place_raw(bytemuck::cast_slice_mut(buf), T::DTYPE, op)
    }

    /// Gathers every rank's `send` into `recv` on every rank, in rank order: `recv` is
    /// `size() * send.len()` long.
    pub fn allgather<T: Element>(&mut self, send: &[T], recv: &mut [T]) -> Result<()> {
        self.allgather_raw(
            bytemuck::cast_slice(send),
            bytemuck::cast_slice_mut(recv),
            T::DTYPE,
        )
    }

    /// Returns once every rank has called `barrier`.
    pub fn barrier(&mut self) -> Result<()> {
        // A barrier is an allreduce of one byte with `bor` on the kernel path, so its call says so
        // everywhere (the datagrams the kernel folds carry it).
        let sig = Signature {
            coll: Coll::Barrier,
            op: Some(Op::Bor),
            dtype: Some(DType::U8),
            count: 1,
            root: 0,
        };
        self.run(sig, |t, ctx| {
            if let Some(h) = t.hier() {
                return algorithms::barrier_hier(h, ctx);
            }
            algorithms::barrier_flat(t, ctx)
        })
    }

    /// Delivers what this rank still has to send, prints the counters if `BOAD_STATS` is set, and
    /// leaves the job. Returns an error an earlier collective raised on another rank, if any.
    pub fn finalize(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        if self.finalized {
            return Ok(());
        }
        // The kernel path sends contributions without acknowledgements: a rank must not leave while
        // a root may still ask it to resend, so leaving is collective there (like MPI_Finalize).
        // The userspace barrier: its messages are acknowledged before a rank leaves, so no rank
        // waits for the last message of one that is gone (a kernel broadcast has no such ack).
        let kernel = self.transport.kernel().is_some()
            || self.transport.hier().is_some_and(|h| h.net_kernel());
        let left_together = if kernel {
            let sig = Signature {
                coll: Coll::Barrier,
                op: Some(Op::Bor),
                dtype: Some(DType::U8),
                count: 1,
                root: 0,
            };
            self.run(sig, |t, ctx| match t.hier() {
                Some(h) => algorithms::leave_hier(h, ctx),
                None => algorithms::barrier_dissemination(t, ctx),
            })
        } else {
            Ok(())
        };
        self.finalized = true;
        let r = left_together
            .and_then(|()| self.transport.flush())
            .and_then(|()| {
                // An error another rank raised for one of our last collectives.
                let seq = self.seq;
                self.transport.take_deferred(seq).map_or(Ok(()), Err)
            });
        if self.cfg.stats {
            let s = self.stats();
            let path = self.transport.path();
            if matches!(path, Path::Hier | Path::HierKernel) {
                eprintln!(
                    "boad stats: rank {} path=hier collectives={} collectives_kernel={} kernel_contribs={} kernel_results={} kernel_bcast_sends={} kernel_bcast_received={} shm_messages_sent={} shm_messages_received={} shm_bytes_sent={} futex_waits={} datagrams_sent={} send_calls={} datagrams_received={} bytes_sent={} retransmits={} dropped_injected={} foreign={}",
                    self.rank(),
                    s.collectives_hier,
                    s.collectives_kernel,
                    s.kernel_contribs,
                    s.kernel_results,
                    s.kernel_bcast_sends,
                    s.kernel_bcast_received,
                    s.shm_messages_sent,
                    s.shm_messages_received,
                    s.shm_bytes_sent,
                    s.futex_waits,
                    s.datagrams_sent,
                    s.send_calls,
                    s.datagrams_received,
                    s.bytes_sent,
                    s.retransmits,
                    s.dropped_injected,
                    s.foreign
                );
                return r;
            }
            if path == Path::Shm {
                eprintln!(
                    "boad stats: rank {} path=shm collectives={} messages_sent={} messages_received={} bytes_sent={} futex_waits={}",
                    self.rank(),
                    s.collectives_shm,
                    s.shm_messages_sent,
                    s.shm_messages_received,
                    s.shm_bytes_sent,
                    s.futex_waits
                );
                return r;
            }
            eprintln!(
                "boad stats: rank {} collectives_udp={} collectives_kernel={} datagrams_sent={} send_calls={} datagrams_received={} bytes_sent={} retransmits={} dropped_injected={} foreign={} kernel_contribs={} kernel_results={} kernel_bcast_sends={} kernel_bcast_received={} kernel_knacks={} kernel_bypass_rounds={}",
                self.rank(),
                s.collectives_udp,
                s.collectives_kernel,
                s.datagrams_sent,
                s.send_calls,
                s.datagrams_received,
                s.bytes_sent,
                s.retransmits,
                s.dropped_injected,
                s.foreign,
                s.kernel_contribs,
                s.kernel_results,
                s.kernel_bcast_sends,
                s.kernel_bcast_received,
                s.kernel_knacks,
                s.kernel_bypass_rounds
            );
        }
        r
    }
}

impl Drop for Communicator {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            eprintln!("boad: {e}");
        }
    }
}
