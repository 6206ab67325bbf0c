//! Who receives a membership-driven join or prune alert (spec §4.5, §4.6). Pure functions over
//! the holder sets; the caller invokes the callbacks. Nothing here performs I/O.

use std::collections::BTreeSet;

use super::types::ProtocolHandle;

/// Targets when `new_holder` just became a holder of a (*,G) or (*,*) key (spec §4.5).
/// `registered` is every registered client in ascending (protocol id, component id) order.
pub(crate) fn wildcard_join_targets(
    new_holder: ProtocolHandle,
    holders: &BTreeSet<ProtocolHandle>,
    registered: &[ProtocolHandle],
) -> Vec<ProtocolHandle> {
    match holders.len() {
        // First holder: everyone else, so they start drawing traffic.
        1 => others(registered, new_holder),
        // Second holder: only the first one learns it is no longer alone.
        2 => holders
            .iter()
            .copied()
            .filter(|h| *h != new_holder)
            .collect(),
        _ => Vec::new(),
    }
}

/// Targets when `leaver` just stopped holding a (*,G) or (*,*) key (spec §4.6).
pub(crate) fn wildcard_prune_targets(
    leaver: ProtocolHandle,
    holders: &BTreeSet<ProtocolHandle>,
    registered: &[ProtocolHandle],
) -> Vec<ProtocolHandle> {
    match holders.len() {
        0 => others(registered, leaver),
        // The remaining holder is now alone and may prune upstream.
        1 => holders.iter().copied().collect(),
        _ => Vec::new(),
    }
}

/// The target of an (S,G) alert: the owner of the RPF interface toward S, unless that is the
/// caller itself or nobody (spec §4.5 \[Dec\], mirrored for prunes in §4.6).
pub(crate) fn source_specific_target(
    caller: ProtocolHandle,
    rpf_owner: Option<ProtocolHandle>,
) -> Option<ProtocolHandle> {
    rpf_owner.filter(|o| *o != caller)
}

fn others(registered: &[ProtocolHandle], me: ProtocolHandle) -> Vec<ProtocolHandle> {
    registered.iter().copied().filter(|h| *h != me).collect()
}
