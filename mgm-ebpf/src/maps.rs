//! Every map of the data plane, BTF-defined so `bpftool` shows field names. Names and sizes
//! come from `mgm_common::maps`; the daemon pins them under its pin directory.

use aya_ebpf::{
    btf_maps::{Array, ArrayOfMaps, DevMapHash, HashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use mgm_common::{
    counters::{EntryStats, IfStats, OifStats},
    fwd::{FwdEntry, FwdKey, IfConfig, Meta, SetInfo, SetMembers, IF_ENABLED},
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

/// Beside `MGM_OIF_SETS`, same index: lets a one-interface set skip its devmap.
#[btf_map]
pub static MGM_SET_INFO: Array<SetInfo, { m::OIF_SETS_CAPACITY as usize }> = Array::new();

/// Beside `MGM_OIF_SETS`, same index: `mgm_egress` finds its copy's position here.
#[btf_map]
pub static MGM_SET_MEMBERS: Array<SetMembers, { m::OIF_SETS_CAPACITY as usize }> = Array::new();

#[btf_map]
pub static MGM_IFCFG: HashMap<u32, IfConfig, { m::IF_CAPACITY as usize }> = HashMap::new();

#[btf_map]
pub static MGM_IFCFG_DIRECT: Array<IfConfig, { m::IFCFG_DIRECT_LIMIT as usize }> = Array::new();

/// The settings of a managed interface, by the direct array where the ifindex fits.
#[inline(always)]
pub fn if_config(ifindex: u32) -> Option<&'static IfConfig> {
    if ifindex < m::IFCFG_DIRECT_LIMIT {
        MGM_IFCFG_DIRECT
            .get(ifindex)
            .filter(|c| c.flags & IF_ENABLED != 0)
    } else {
        // SAFETY: read-only lookup of a plain value.
        unsafe { MGM_IFCFG.get(ifindex) }
    }
}

#[btf_map]
pub static MGM_EVENTS: RingBuf<u8, { m::EVENTS_BYTES as usize }> = RingBuf::new();

#[btf_map]
pub static MGM_ENTRY_STATS: PerCpuArray<EntryStats, { m::ENTRY_STATS_CAPACITY as usize }> =
    PerCpuArray::new();

#[btf_map]
pub static MGM_IF_STATS: PerCpuArray<IfStats, { m::IF_CAPACITY as usize }> = PerCpuArray::new();

/// An array, not a hash keyed by (entry, interface): every copy counts here, and an index
/// costs a few ns where a hash lookup cost a one-copy flow a fifth of its time.
#[btf_map]
pub static MGM_OIF_STATS: PerCpuArray<OifStats, { m::OIF_STATS_CAPACITY as usize }> =
    PerCpuArray::new();

#[btf_map]
pub static MGM_META: Array<Meta, 1> = Array::new();
