//! Per-CPU counter increments. Per-CPU slots need no atomics: one CPU runs one program
//! instance at a time.

use mgm_common::counters::{EntryStats, IfStats, OifStats, OifStatsKey};

use crate::maps::{MGM_ENTRY_STATS, MGM_IF_STATS, MGM_OIF_STATS};

/// Per-interface counters of `slot`, if the slot exists.
#[inline(always)]
pub fn if_stats(slot: u32) -> Option<&'static mut IfStats> {
    // SAFETY: per-CPU array slots are preallocated and only this CPU touches its copy.
    MGM_IF_STATS.get_ptr_mut(slot).map(|p| unsafe { &mut *p })
}

/// Per-entry counters of `slot`, if the slot exists.
#[inline(always)]
pub fn entry_stats(slot: u32) -> Option<&'static mut EntryStats> {
    // SAFETY: as for `if_stats`.
    MGM_ENTRY_STATS
        .get_ptr_mut(slot)
        .map(|p| unsafe { &mut *p })
}

/// Adds one to an interface counter chosen by `field`.
#[inline(always)]
pub fn bump_if(slot: u32, field: impl FnOnce(&mut IfStats) -> &mut u64) {
    if let Some(s) = if_stats(slot) {
        *field(s) += 1;
    }
}

/// Counters of outgoing interface `ifindex` of the entry with counter slot `slot`, if the
/// daemon made them. Slot 0 is no entry's: no lookup.
#[inline(always)]
pub fn oif_stats(slot: u32, ifindex: u32) -> Option<&'static mut OifStats> {
    if slot == 0 {
        return None;
    }
    // SAFETY: as for `if_stats`; a per-CPU hash value is this CPU's own copy.
    MGM_OIF_STATS
        .get_ptr_mut(OifStatsKey { slot, ifindex })
        .map(|p| unsafe { &mut *p })
}
