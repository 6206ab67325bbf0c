//! Per-CPU counter increments. Per-CPU slots need no atomics: one CPU runs one program
//! instance at a time.

use mgm_common::counters::{EntryStats, IfStats, OifStats};

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

/// The counter slot of the member at `pos` of an entry's set, whose block starts at `base`
/// ([`mgm_common::fwd::FwdEntry::oif_base`]); slot 0, "uncounted", for an entry without one.
#[inline(always)]
pub fn oif_slot(base: u32, pos: u32) -> u32 {
    if base == 0 {
        0
    } else {
        base + pos
    }
}

/// Per-outgoing-interface counters of `slot` ([`oif_slot`]), if the slot exists.
#[inline(always)]
pub fn oif_stats(slot: u32) -> Option<&'static mut OifStats> {
    // SAFETY: as for `if_stats`.
    MGM_OIF_STATS.get_ptr_mut(slot).map(|p| unsafe { &mut *p })
}
