//! The engine: the one place that decides how a rank's collectives run.
//!
//! At start it picks the data path from the job (where the ranks are, what the launcher attached)
//! and `BOAD_TRANSPORT` ([`choose`]): flat — every rank on one transport (shared memory, UDP, UDP
//! with the kernel path) — or hierarchical (shared memory inside each host, a network transport
//! between one leader per host). For every collective it then runs the algorithm for that shape:
//! the flat dispatch (`algorithms/flat.rs`: the kernel path where the call fits it, else userspace)
//! or the hierarchical algorithms (`algorithms/hier_shm_net.rs`). The communicator sees only
//! [`Engine`]: its collectives and its [`Session`].

use boad_proto::{Layout, TransportKind};

use crate::algorithms;
use crate::config::Config;
use crate::error::{Error, Result, UsageError};
use crate::join::{self, JobInfo};
use crate::transport::hier::Hier;
use crate::transport::kernel::KernelUdp;
use crate::transport::pulse::{Pulse, PulseSocket, PulseState};
use crate::transport::shm::Shm;
use crate::transport::udp::Udp;
use crate::transport::{Ctx, Session, Transport};
use crate::types::{DType, Op};

/// The shape a job's collectives take on this rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Choice {
    /// Every rank on shared memory (one host).
    Shm,
    /// Shared memory inside each host, a network transport between one leader per host.
    Hier,
    /// Every rank on UDP (with the kernel path where the launcher attached it).
    Udp,
}

/// The shape for a job laid out as `layout`, asked `kind`; `kernel_attached`: the launcher attached
/// the kernel path. An error if `kind` asks for the kernel path and it is not attached.
pub(crate) fn choose(
    kind: TransportKind,
    layout: &Layout,
    kernel_attached: bool,
) -> Result<Choice> {
    let one_host = layout.one_host();
    Ok(match kind {
        TransportKind::Kernel if !kernel_attached => {
            return Err(Error::general(UsageError::Config {
                name: boad_proto::env::TRANSPORT,
                value: "kernel".into(),
                why: "the launcher did not attach the kernel path for this job (boadrun says why; \
                      it needs root and a build with the eBPF programs)"
                    .into(),
            }))
        }
        // On one host shared memory beats any network path (`auto` on one rank needs neither).
        TransportKind::Shm if one_host => Choice::Shm,
        TransportKind::Auto if one_host && layout.place.len() > 1 => Choice::Shm,
        // Over several hosts `shm` means shared memory inside each host, UDP between leaders.
        TransportKind::Shm if !one_host => Choice::Hier,
        // Several hosts, some with several ranks: hierarchical, with the kernel path between the
        // leaders when the launcher attached it for them.
        TransportKind::Auto if layout.shared_host() => Choice::Hier,
        // `kernel` keeps every rank on the kernel path, flat; one rank alone needs no network.
        _ => Choice::Udp,
    })
}

/// A rank's data path.
pub(crate) enum Engine {
    /// Every rank on one transport.
    Flat(Box<dyn Transport>),
    /// Two levels: shared memory inside each host, the network between their leaders.
    Hier(Box<Hier>),
}

/// What joining a job gives a rank.
pub(crate) struct Started {
    /// How its collectives run.
    pub engine: Engine,
    /// Its liveness thread, when it uses the network.
    pub pulse: Option<Pulse>,
    /// Where the liveness thread says this rank is.
    pub pulse_state: PulseState,
    /// The job's registration with the host's kernel service, on the rank of a job under another
    /// launcher that made it: to keep until the rank is done (dropping it frees the kernel path).
    pub service: Option<boad_proto::service::KernelGrant>,
}

impl Engine {
    /// Joins the job described by `info` (whose launcher `boot` has met) with settings `cfg`: binds this rank's sockets, meets the
    /// other ranks, and starts the data path [`choose`] picks.
    pub fn start(info: &JobInfo, cfg: &Config, boot: join::Boot) -> Result<Started> {
        // Every rank binds a socket: its port goes into the job table, and until the table is in
        // nobody knows whether the job fits on one host.
        let (sock, port) = Udp::bind(info.rank, info.bind)?;
        // ... and its liveness socket (see `transport::pulse`), used if it talks over the network.
        let pulse_sock = if info.size > 1 {
            Some(
                PulseSocket::bind(info.bind)
                    .map_err(Error::io_at(info.rank, "binding the liveness socket"))?,
            )
        } else {
            None
        };
        let pulse_port = pulse_sock.as_ref().map_or(0, |(_, p)| *p);
        let mut joined = join::rendezvous(info, boot, port, pulse_port, cfg.timeout)?;
        let layout = Layout::of(&joined.table);
        // Under another launcher the kernel path comes from the host's kernel service when it can
        // serve the job; when it cannot, rank 0 said why (`join::kernel_step`) and `kernel` runs on
        // UDP instead of failing the job.
        let transport = if info.launcher.uses_store()
            && cfg.transport == TransportKind::Kernel
            && joined.kernel_trigger.is_none()
        {
            TransportKind::Udp
        } else {
            cfg.transport
        };
        let choice = choose(transport, &layout, joined.kernel_trigger.is_some())?;
        // Large folds use spare cores: the ranks on this host, as the job table and the launcher
        // count them (the larger, to stay off cores another rank may need).
        let on_host = layout
            .place
            .get(info.rank)
            .and_then(|&(h, _)| layout.hosts.get(h))
            .map_or(1, Vec::len)
            .max(info.local_size);
        let folds = crate::ops::par::configure(on_host, cfg.fold_threads, cfg.fold_par_bytes);
        tracing::debug!(
            "boad: rank {}: {on_host} rank(s) on this host: folds of {} bytes or more on {} thread(s)",
            info.rank,
            folds.min_bytes,
            folds.threads
        );
        tracing::debug!(
            "boad: rank {}: BOAD_TRANSPORT={} on {} host(s), kernel path {}: {choice:?}",
            info.rank,
            cfg.transport,
            layout.hosts.len(),
            if joined.kernel_trigger.is_some() {
                "attached"
            } else {
                "not attached"
            }
        );
        // The kernel path is used where `auto` or `kernel` lets it.
        let kernel = joined
            .kernel_trigger
            .filter(|_| cfg.transport.wants_kernel());
        // Ranks that talk over the network answer their peers' PINGs from a thread of their own.
        let uses_net = match choice {
            Choice::Udp => true,
            Choice::Hier => layout.leaders.contains(&info.rank),
            Choice::Shm => false,
        };
        let pulse_state = PulseState::default();
        let pulse = match pulse_sock {
            Some((s, _)) if uses_net && info.size > 1 => {
                let peers = joined
                    .table
                    .iter()
                    .map(|e| std::net::SocketAddr::new(e.ip, e.port))
                    .collect();
                Some(
                    s.start(info.job, info.rank, peers, pulse_state.clone())
                        .map_err(Error::io_at(info.rank, "starting the liveness thread"))?,
                )
            }
            _ => None,
        };
        let engine = match choice {
            Choice::Shm => {
                let mut shm = Shm::new(
                    info,
                    &joined.table,
                    joined.conn,
                    joined.leftover,
                    cfg.clone(),
                )?;
                // Unused for data, but it tells this host's peers this process is this rank.
                shm.hold_socket(sock);
                Engine::Flat(Box::new(shm))
            }
            Choice::Hier => Engine::Hier(Box::new(Hier::new(
                info,
                &joined.table,
                sock,
                joined.conn,
                joined.leftover,
                cfg.clone(),
                // The leaders' communicator of the kernel path, when the launcher filled it.
                kernel
                    .filter(|_| joined.kernel_leaders)
                    .map(|t| (t, joined.kernel_comms[1])),
            )?)),
            Choice::Udp => {
                let udp = Udp::new(
                    info.rank,
                    info.job,
                    sock,
                    &joined.table,
                    joined.conn,
                    joined.leftover,
                    cfg.clone(),
                )?;
                match kernel {
                    Some(trigger) => Engine::Flat(Box::new(KernelUdp::new(
                        udp,
                        trigger,
                        joined.kernel_comms[0],
                    ))),
                    None => Engine::Flat(Box::new(udp)),
                }
            }
        };
        Ok(Started {
            engine,
            pulse,
            pulse_state,
            service: joined.service.take(),
        })
    }

    /// The session collectives are numbered, failed and counted on.
    pub fn session(&mut self) -> &mut dyn Session {
        match self {
            Engine::Flat(t) => t.as_mut(),
            Engine::Hier(h) => h.as_mut(),
        }
    }

    /// The same, to read.
    pub fn session_ref(&self) -> &dyn Session {
        match self {
            Engine::Flat(t) => t.as_ref(),
            Engine::Hier(h) => h.as_ref(),
        }
    }

    /// Whether collectives may use the kernel path here, which sends without acknowledgements: then
    /// leaving the job is collective (see `Communicator::finalize`).
    pub fn kernel_attached(&mut self) -> bool {
        match self {
            Engine::Flat(t) => t.kernel().is_some(),
            Engine::Hier(h) => h.net_kernel(),
        }
    }

    /// `buf` on `root` to every rank.
    pub fn bcast(&mut self, ctx: &Ctx, buf: &mut [u8], root: usize) -> Result<()> {
        match self {
            Engine::Flat(t) => algorithms::bcast_flat(t.as_mut(), ctx, buf, root),
            Engine::Hier(h) => algorithms::bcast_hier(h, ctx, buf, root),
        }
    }

    /// Every rank's `send` folded into `recv` on `root` (`recv` is `Some` on the root only).
    pub fn reduce(
        &mut self,
        ctx: &Ctx,
        send: &[u8],
        recv: Option<&mut [u8]>,
        dtype: DType,
        op: Op,
        root: usize,
    ) -> Result<()> {
        match (self, recv) {
            (Engine::Hier(h), Some(r)) => {
                r.copy_from_slice(send);
                algorithms::reduce_hier(h, ctx, r, dtype, op, root)
            }
            (Engine::Hier(h), None) => {
                algorithms::reduce_hier(h, ctx, &mut send.to_vec(), dtype, op, root)
            }
            (Engine::Flat(t), Some(r)) => {
                r.copy_from_slice(send);
                algorithms::reduce_flat(t.as_mut(), ctx, r, dtype, op, root, 0)
            }
            (Engine::Flat(t), None) => {
                algorithms::contribute_flat(t.as_mut(), ctx, send, dtype, op, root)
            }
        }
    }

    /// [`reduce`](Self::reduce) with `buf` as contribution and, on `root`, result.
    pub fn reduce_in_place(
        &mut self,
        ctx: &Ctx,
        buf: &mut [u8],
        dtype: DType,
        op: Op,
        root: usize,
    ) -> Result<()> {
        match self {
            Engine::Flat(t) => algorithms::reduce_flat(t.as_mut(), ctx, buf, dtype, op, root, 0),
            Engine::Hier(h) => algorithms::reduce_hier(h, ctx, buf, dtype, op, root),
        }
    }

    /// Every rank's `buf` becomes the fold of all of them.
    pub fn allreduce(&mut self, ctx: &Ctx, buf: &mut [u8], dtype: DType, op: Op) -> Result<()> {
        match self {
            Engine::Flat(t) => algorithms::allreduce_flat(t.as_mut(), ctx, buf, dtype, op),
            Engine::Hier(h) => algorithms::allreduce_hier(h, ctx, buf, dtype, op),
        }
    }

    /// `recv` holds one block of `block` bytes per rank, this rank's filled; all on return.
    pub fn allgather(&mut self, ctx: &Ctx, recv: &mut [u8], block: usize) -> Result<()> {
        match self {
            Engine::Flat(t) => algorithms::allgather_flat(t.as_mut(), ctx, recv, block),
            Engine::Hier(h) => algorithms::allgather_hier(h, ctx, recv, block),
        }
    }

    /// Returns once every rank has entered.
    pub fn barrier(&mut self, ctx: &Ctx) -> Result<()> {
        match self {
            Engine::Flat(t) => algorithms::barrier_flat(t.as_mut(), ctx),
            Engine::Hier(h) => algorithms::barrier_hier(h, ctx),
        }
    }

    /// The barrier ranks leave the job with when the kernel path is attached: userspace messages,
    /// acknowledged before a rank goes.
    pub fn leave(&mut self, ctx: &Ctx) -> Result<()> {
        match self {
            Engine::Flat(t) => algorithms::barrier_dissemination(t.as_mut(), ctx),
            Engine::Hier(h) => algorithms::leave_hier(h, ctx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shape_of_every_job() {
        use TransportKind::*;
        let one = Layout::of_host_ids([0, 0, 0]);
        let mixed = Layout::of_host_ids([0, 0, 1, 1]);
        let spread = Layout::of_host_ids([0, 1, 2]);
        let single = Layout::of_host_ids([0]);
        let c = |k, l: &Layout, attached| choose(k, l, attached).ok();
        for attached in [false, true] {
            assert_eq!(c(Auto, &one, attached), Some(Choice::Shm));
            assert_eq!(c(Shm, &one, attached), Some(Choice::Shm));
            assert_eq!(c(Udp, &one, attached), Some(Choice::Udp));
            assert_eq!(c(Auto, &mixed, attached), Some(Choice::Hier));
            assert_eq!(c(Shm, &mixed, attached), Some(Choice::Hier));
            assert_eq!(c(Shm, &spread, attached), Some(Choice::Hier));
            assert_eq!(c(Auto, &spread, attached), Some(Choice::Udp));
            assert_eq!(c(Udp, &mixed, attached), Some(Choice::Udp));
            assert_eq!(c(Auto, &single, attached), Some(Choice::Udp));
            assert_eq!(c(Shm, &single, attached), Some(Choice::Shm));
        }
        assert_eq!(c(Kernel, &mixed, true), Some(Choice::Udp));
        assert_eq!(c(Kernel, &one, true), Some(Choice::Udp));
        assert_eq!(c(Kernel, &mixed, false), None);
    }
}
