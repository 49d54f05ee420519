//! The maps the programs share (BTF-defined, since a [`Slot`] holds a `bpf_spin_lock`), filled by
//! the loader (`boad-ebpf-loader`), and the counters.

use aya_ebpf::{
    btf_maps::{Array, HashMap, PerCpuArray, ProgramArray},
    macros::btf_map,
};
use boad_common::{
    dtype,
    kernel::{counter, CommInfo, Config, Member, MAX_COMMS, MAX_PORTS, MAX_RANKS, NSLOTS},
    op,
};

use crate::fold::Slot;

/// The key of datagrams of a communicator not in `COMMS`, 0 = off (one entry).
#[btf_map]
pub static CONFIG: Array<Config, 1> = Array::new();
/// UDP destination port (host order) -> [`port`](boad_common::kernel::port) bits: every rank's port
/// and the trigger port of every job served (a map of 64 entries used to stop jobs above 63 ranks).
#[btf_map]
pub static PORTS: HashMap<u16, u32, { MAX_PORTS as usize }> = HashMap::new();
/// Communicator id -> how many contributions complete a reduction, members to broadcast to.
#[btf_map]
pub static COMMS: HashMap<u32, CommInfo, { MAX_COMMS as usize }> = HashMap::new();
/// Members of every communicator (block `CommInfo::members_base`, then member index = rank): the
/// broadcast destinations and the only sources either program takes a rank's datagrams from.
#[btf_map]
pub static MEMBERS: Array<Member, { (MAX_COMMS * MAX_RANKS) as usize }> = Array::new();
/// Fold programs, at `prog_index(op, dtype)`.
#[btf_map]
pub static PROGS: ProgramArray<{ (op::COUNT as usize) * (dtype::COUNT as usize) }> =
    ProgramArray::new();
/// In-flight reductions, at `slot_index(comm, seq, chunk)`.
#[btf_map]
pub static SLOTS: Array<Slot, { NSLOTS as usize }> = Array::new();
/// Per-CPU counters, indexed by [`counter`].
#[btf_map]
pub static COUNTERS: PerCpuArray<u64, { counter::COUNT as usize }> = PerCpuArray::new();

/// Adds one to this CPU's counter `index` (one of [`counter`]).
#[inline(always)]
pub fn increment(index: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: `p` points to this CPU's u64 counter in the map; nothing else on this CPU runs
        // while the program does.
        unsafe { *p += 1 };
    }
}
