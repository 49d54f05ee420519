//! The communicator: the collectives a rank calls.

use crate::config::Config;
use crate::engine::Engine;
use crate::error::{Error, Result, UsageError};
use crate::join::{Boot, JobInfo};
use crate::transport::pulse::{Pulse, PulseState};
use crate::transport::{Ctx, Stats};
use crate::types::{Coll, DType, Element, Op, Path, Signature};

/// All the ranks of a job, and the collectives they call together.
///
/// Every rank must call the same collectives in the same order with matching arguments (same count,
/// dtype, op and root); a mismatch is reported as an error on the ranks that see it, and the others
/// are told the collective failed. Dropping the communicator delivers what it still has to send
/// (like [`Communicator::finalize`], but printing an error instead of returning it).
pub struct Communicator {
    info: JobInfo,
    cfg: Config,
    engine: Engine,
    seq: u32,
    last_path: Option<Path>,
    finalized: bool,
    /// Where this rank is, for the liveness thread.
    pulse_state: PulseState,
    /// The liveness thread (ranks that use the network); ends when the communicator is dropped.
    _pulse: Option<Pulse>,
    /// The job's registration with the host's kernel service, on the rank that made it (rank 0 of
    /// a job on one host under another launcher): dropped last, after the engine, which frees the
    /// job's kernel path in the service.
    _service: Option<boad_proto::service::KernelGrant>,
}

/// Joins the job this process belongs to: started by `boadrun`, Slurm's `srun --mpi=pmi2`, MPICH's
/// `mpiexec`, or an env:// environment (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`); a job
/// of one rank when no launcher started it. A launcher whose job cannot be joined is an error
/// naming it (`JoinError::Launcher`), never a job of one rank.
pub fn init() -> Result<Communicator> {
    Communicator::from_env()
}

impl Communicator {
    /// Joins the job described by the environment (see [`init`]).
    pub fn from_env() -> Result<Communicator> {
        crate::log::init();
        let mut info = JobInfo::from_env()?;
        let mut cfg = Config::from_env().map_err(Error::general)?;
        let boot = Boot::open(&mut info, cfg.transport, cfg.timeout)?;
        cfg.resolve(info.bind);
        let started = Engine::start(&info, &cfg, boot)?;
        Ok(Communicator {
            info,
            cfg,
            engine: started.engine,
            seq: 0,
            last_path: None,
            finalized: false,
            pulse_state: started.pulse_state,
            _pulse: started.pulse,
            _service: started.service,
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
        self.engine.session_ref().local_addr()
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

    /// This rank's counters: traffic, and how many folds ran on several threads (counted per
    /// process: one communicator per process is the normal case).
    pub fn stats(&self) -> Stats {
        Stats {
            folds_parallel: crate::ops::par::parallel_folds(),
            ..self.engine.session_ref().stats()
        }
    }

    /// How many threads a large fold runs on in this process (1: on the rank's own thread):
    /// `BOAD_FOLD_THREADS`, or the cores each rank of this host has to itself when that is at
    /// least 2 (see [`crate::ops::par`]).
    pub fn fold_threads(&self) -> usize {
        crate::ops::par::plan().threads
    }

    /// Runs one collective: numbers it, validates, runs `body`, and on failure tells the peers.
    fn run(
        &mut self,
        sig: Signature,
        body: impl FnOnce(&mut Engine, &Ctx) -> Result<()>,
    ) -> Result<()> {
        let ctx = Ctx { seq: self.seq, sig };
        self.seq = self.seq.wrapping_add(1);
        self.pulse_state.enter(ctx.seq);
        let r = self
            .engine
            .session()
            .begin(&ctx)
            .and_then(|()| body(&mut self.engine, &ctx));
        self.pulse_state.leave(ctx.seq);
        let t = self.engine.session();
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
        self.run(sig, |e, ctx| {
            checks?;
            e.bcast(ctx, buf, root)
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
        let recv = recv.filter(|_| is_root);
        self.run(sig, |e, ctx| {
            checks?;
            e.reduce(ctx, send, recv, dtype, op, root)
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
            self.run(sig, |e, ctx| {
                checks?;
                e.reduce_in_place(ctx, buf, dtype, op, root)
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
        self.run(sig, |e, ctx| {
            checks?;
            recv.copy_from_slice(send);
            e.allreduce(ctx, recv, dtype, op)
        })
    }

    /// [`allreduce_in_place`](Self::allreduce_in_place) over raw bytes.
    pub fn allreduce_in_place_raw(&mut self, buf: &mut [u8], dtype: DType, op: Op) -> Result<()> {
        let sig = Self::sig(Coll::Allreduce, Some(op), dtype, buf.len(), 0);
        let checks = self
            .check_bytes("the buffer", buf.len(), dtype)
            .and(self.check_op(op, dtype));
        self.run(sig, |e, ctx| {
            checks?;
            e.allreduce(ctx, buf, dtype, op)
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
        self.run(sig, |e, ctx| {
            checks?;
            recv[rank * block..(rank + 1) * block].copy_from_slice(send);
            e.allgather(ctx, recv, block)
        })
    }

    /// Fails the next collective, of kind `coll`, on this rank with `what` (an argument a binding
    /// rejected before calling boad), and tells the other ranks so they fail it at once instead of
    /// waiting for this rank. Returns the error to hand to the caller.
    pub fn fail_collective(&mut self, coll: Coll, what: impl Into<String>) -> Error {
        let err: Error = Error::new(self.rank(), UsageError::Invalid { what: what.into() });
        let sig = Signature {
            coll,
            op: None,
            dtype: None,
            count: 0,
            root: 0,
        };
        let ctx = Ctx { seq: self.seq, sig };
        self.seq = self.seq.wrapping_add(1);
        self.engine.session().fail(&ctx, &err);
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
        self.run(sig, |e, ctx| e.barrier(ctx))
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
        let left_together = if self.engine.kernel_attached() {
            let sig = Signature {
                coll: Coll::Barrier,
                op: Some(Op::Bor),
                dtype: Some(DType::U8),
                count: 1,
                root: 0,
            };
            self.run(sig, |e, ctx| e.leave(ctx))
        } else {
            Ok(())
        };
        self.finalized = true;
        let seq = self.seq;
        let t = self.engine.session();
        let r = left_together.and_then(|()| t.flush()).and_then(|()| {
            // An error another rank raised for one of our last collectives.
            t.take_deferred(seq).map_or(Ok(()), Err)
        });
        if self.cfg.stats {
            eprintln!("{}", self.stats_line());
        }
        r
    }

    /// `boad stats: rank R path=P fold_threads=T name=value ...` with every counter
    /// ([`Stats::fields`]), what `BOAD_STATS=1` prints at finalize. `P` is `shm`, `udp` (flat, the
    /// kernel path included) or `hier`; `T` the threads a large fold may use (1: folds on the
    /// rank's own thread; whether any did is `folds_parallel`).
    fn stats_line(&self) -> String {
        let shape = match &self.engine {
            Engine::Hier(_) => "hier",
            Engine::Flat(t) if t.path() == Path::Shm => "shm",
            Engine::Flat(_) => "udp",
        };
        let mut line = format!(
            "boad stats: rank {} path={shape} fold_threads={}",
            self.rank(),
            self.fold_threads()
        );
        for (name, value) in self.stats().fields() {
            line += &format!(" {name}={value}");
        }
        line
    }
}

impl Drop for Communicator {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::error!("boad: {e}");
        }
    }
}
