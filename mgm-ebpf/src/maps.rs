//! Every map of the data plane, BTF-defined so `bpftool` shows field names. Names and sizes
//! come from `mgm_common::maps`; the daemon pins them under its pin directory.

use aya_ebpf::{
    btf_maps::{Array, ArrayOfMaps, DevMapHash, HashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use mgm_common::{
    counters::{EntryStats, IfStats},
    fwd::{FwdEntry, FwdKey, IfConfig, Meta},
    maps as m,
};

/// An outgoing set: ifindex → devmap value (egress ifindex + egress program).
pub type OifSet = DevMapHash<{ m::OIF_SET_WIDTH as usize }>;

#[btf_map]
pub static MGM_FWD: HashMap<FwdKey, FwdEntry, { m::FWD_CAPACITY as usize }> = HashMap::new();

/// Indexed by set id: an array lookup, which the verifier inlines, keeps the hot path to one
/// hash lookup (the forwarding entry).
#[btf_map]
pub static MGM_OIF_SETS: ArrayOfMaps<OifSet, { m::OIF_SETS_CAPACITY as usize }> =
    ArrayOfMaps::new();

#[btf_map]
pub static MGM_IFCFG: HashMap<u32, IfConfig, { m::IF_CAPACITY as usize }> = HashMap::new();

#[btf_map]
pub static MGM_EVENTS: RingBuf<u8, { m::EVENTS_BYTES as usize }> = RingBuf::new();

#[btf_map]
pub static MGM_ENTRY_STATS: PerCpuArray<EntryStats, { m::ENTRY_STATS_CAPACITY as usize }> =
    PerCpuArray::new();

#[btf_map]
pub static MGM_IF_STATS: PerCpuArray<IfStats, { m::IF_CAPACITY as usize }> = PerCpuArray::new();

#[btf_map]
pub static MGM_META: Array<Meta, 1> = Array::new();
