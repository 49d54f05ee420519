//! The kernel path's loader, for `boadrun` and the privileged tests: loads boad's eBPF programs
//! (crate `collectives-ebpf`, built by this crate's build script and embedded, feature `programs`,
//! on by default), attaches them, and fills their maps; and (always, without aya) decodes what
//! userspace reads back from them ([`readback`]). The ranks themselves never load anything: they
//! only send datagrams the programs act on (`boad`'s kernel transport).
//!
//! # Contract
//!
//! * **Reduce (XDP, `boad_xdp` + `fold_<op>_<dtype>`).** On an interface where
//!   [`KernelPath::attach_xdp`] attached it, a UDP/IPv4 datagram (no IP options, not a fragment) to a
//!   port registered with [`KernelPath::add_port`]`(port, `[`PortRole::Reduce`]`)`, carrying a boad
//!   [`Header`](boad_common::Header) with its communicator's job key ([`KernelPath::set_job`] for
//!   [`KernelPath::set_comm`], or the key given to [`KernelPath::set_job_comm`]: one set of programs
//!   serves several jobs, each on communicators of its own) and
//!   `kind == CONTRIB`, is folded in the kernel when its (op, dtype) has a program
//!   ([`folds_in_kernel`], i.e. `boad_common::kernel::folds`: every integer op on every integer type,
//!   float min/max), its communicator
//!   is registered ([`KernelPath::set_comm`]), `src < MAX_RANKS`, `0 < len ≤ MAX_PAYLOAD` bytes,
//!   and it comes from its sender (below). Each distinct `src` counts once; the datagram completing `contribs` contributions is rewritten
//!   in place into a `RESULT` (same header otherwise, `reserved` = number of contributions folded,
//!   UDP checksum 0, payload = the fold, equal to `boad::ops::fold` over the contributions in any
//!   order) and delivered to the socket; the others are dropped. Anything else passes untouched: a
//!   CONTRIB the kernel cannot fold arrives as a CONTRIB and userspace must fold it (counter
//!   `unfolded`); a datagram to a registered port with a wrong magic/version/job counts as `foreign`.
//! * **Source.** A CONTRIB is folded, and a BCAST cloned, only if its IPv4 source address and UDP
//!   source port are those given to [`KernelPath::set_comm`] for member `src` (the header's) of its
//!   `comm`: the socket of the rank it says it is. Any other (a socket outside the job that knows
//!   the job key, a rank speaking for another, a `src` that is no member) passes untouched and
//!   never touches a slot, nor is cloned (counter `wrong_source`); the transport drops it, since it
//!   checks every datagram's source against its peer table. A RESULT is the completing
//!   contributor's datagram rewritten, so its source and `src` are still that contributor's.
//! * **Resends.** A CONTRIB from a `src` already folded into its (comm, seq, chunk) is dropped
//!   (`duplicates`) while the reduction is incomplete (its RESULT leaves when the missing
//!   contribution arrives), and rewritten into a copy of the RESULT (same rules as above, header of
//!   the resent CONTRIB, counter `result_resent`, not `passed`) once it is complete: a root that lost
//!   the RESULT NACKs and any one contributor's resend brings it back, while the slot still holds it
//!   (see the in-flight window).
//! * **Signature.** The first CONTRIB of a (comm, seq, chunk) fixes its signature (header `coll`,
//!   `op`, `dtype`, `count`, `root`, `len`); a later one with another signature is passed unfolded
//!   and untouched (counter `mismatched`) and leaves the fold alone, so the root sees a CONTRIB
//!   where it expected a RESULT and can report the mismatch.
//! * **Bypass.** A CONTRIB with `flags::BYPASS` is passed unfolded and untouched (counter
//!   `bypassed`): the runtime's last-resort userspace fold.
//! * **In-flight window.** Reductions of one communicator have distinct kernel slots while their
//!   `seq`s are less than 64 apart and `chunk < 64` (`NSLOTS / 64`, see
//!   `boad_common::kernel::slot_index`). A reduction still incomplete when a CONTRIB 64 or more `seq`s
//!   newer takes its slot is abandoned: its partial fold is lost and its later CONTRIBs pass
//!   unfolded. The runtime must keep contributors within the window (or fall back to userspace and
//!   have contributors resend). A slot held by an incomplete reduction of *another* communicator
//!   is never taken over: the CONTRIB passes unfolded (several jobs' communicators share the slots
//!   when one set of programs serves them).
//! * **Broadcast (TC egress, `boad_tc_bcast`).** On an interface where
//!   [`KernelPath::attach_tc_egress`] attached it, a datagram of `kind == BCAST` of this job, without
//!   `flags::CLONED`, leaving for a port registered with [`PortRole::Bcast`], is cloned to every
//!   member given to [`KernelPath::set_comm`] for its `comm` (destination IP, port, header `dst` and,
//!   when given, MAC rewritten; IP and UDP checksums fixed; `flags::CLONED` set) and the original is
//!   dropped, if it comes from member `src` (see Source). That member (the root itself) gets no
//!   clone. A
//!   member whose IP is the original's source IP (same host as the sender) gets its clone through
//!   `lo` (ifindex 1 in every namespace, destination MAC set to `lo`'s all-zero address), whatever
//!   its `ifindex`/`mac`: a bridge does not send a frame back out of the port it came in by (counter
//!   `local_clones`, included in `clones`). The clone enters `lo` on its receive side and is routed
//!   like a received packet, so with a local source address IPv4 drops it as a martian unless
//!   `net.ipv4.conf.lo.accept_local` is 1 in the sender's namespace: call [`accept_local_on_lo`]
//!   there (the sender, i.e. where [`KernelPath::attach_tc_egress`] attached). The BCAST must leave by the interface the
//!   program is attached to (e.g. send it to a remote member's trigger port). On one host's `lo`,
//!   XDP does not see these clones: broadcast and in-kernel reduction compose only across hosts
//!   (veth/bridge or real NICs).
//! * **Network namespaces.** aya attaches by interface index, resolved (name -> index, and the
//!   index by the kernel at attach time) in the network namespace *of the calling thread*. To attach
//!   in another namespace use [`KernelPath::attach_xdp_in`] / [`KernelPath::attach_tc_egress_in`],
//!   or run code there with [`with_netns`]. Maps and counters are namespace-independent. Both
//!   attachments are BPF links (XDP link, TCX link) held by file descriptors of this process:
//!   detaching does not depend on the namespace, and when the process dies (even by SIGKILL) the
//!   kernel closes the descriptors and the links go away (checked by the privileged tests).
//! * Everything attached is detached when the [`KernelPath`] is dropped (or by
//!   [`KernelPath::detach_all`]); nothing is pinned, so nothing outlives the process.
//! * Needs root (CAP_BPF + CAP_NET_ADMIN) and a kernel with BTF, bpf_spin_lock and TCX (6.6+).
//!
//! # The benchmarks' system call counter
//!
//! [`SyscallCounter`] (feature `programs`) is no part of the fast path: a tracepoint program on
//! `raw_syscalls/sys_enter` (`collectives-ebpf/src/syscount.rs`, its own object) that counts the
//! system calls of the processes it is told to watch, for `boad-osu`. See its module docs. So is
//! [`stats`]: the run time per run of loaded programs (`bpf_stats`).
#![deny(missing_docs)]

pub mod readback;

#[cfg(feature = "programs")]
mod programs;
#[cfg(feature = "programs")]
pub use programs::*;
#[cfg(feature = "programs")]
pub mod stats;
#[cfg(feature = "programs")]
mod syscount;
#[cfg(feature = "programs")]
pub use syscount::{SyscallCounter, MAX_WATCHED};
