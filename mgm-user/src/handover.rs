//! Make before break when an interface changes owner. The core follows spec §3.1 and §3.2 to
//! the letter: when a routing protocol takes an interface IGMP runs on, IGMP's memberships
//! there are discarded and come back through the new owner, which decides whether to forward
//! (a local join, then its own Add). An in-process owner answers within the same core call;
//! an out-of-process module answers a few milliseconds later, over its socket. Applied to the
//! data plane as they come, the two steps would stop a host's stream for that long.
//!
//! So for [`HOLD`] after an interface changed owner, the data plane keeps forwarding to it on
//! the entries that did: an install that would drop the interface keeps it, and once the hold
//! ends, whatever the core holds then for those entries is written. An owner that re-adds the
//! membership in time causes no gap; one that decides not to forward stops the stream when
//! the hold ends. Operations the core emits within one batch are also merged per entry (only
//! the last is written), so a release followed by IGMP's re-add in the same call never reaches
//! the data plane as a removal. Pure bookkeeping: no I/O.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    time::Duration,
};

use crate::core::{ComponentId, Instant, InterfaceId, MapOp, ProtocolId};

/// How long a new owner has to decide about forwarding before the old forwarding stops.
pub const HOLD: Duration = Duration::from_secs(1);

type Key = (Ipv4Addr, Ipv4Addr);
type Owner = (ProtocolId, ComponentId);

/// The holds in force and what the data plane was last given.
#[derive(Debug, Default)]
pub struct Handover {
    /// Each interface's owner at the last [`Handover::owners`] call.
    owners: BTreeMap<InterfaceId, Owner>,
    /// Interfaces whose owner changed, and when their hold ends.
    held: BTreeMap<InterfaceId, Instant>,
    /// The outgoing interfaces of every entry as written.
    written: BTreeMap<Key, BTreeSet<InterfaceId>>,
    /// Entries written with a held interface the core had dropped.
    kept: BTreeSet<Key>,
}

fn key(op: &MapOp) -> Key {
    match op {
        MapOp::InstallMfe { source, group, .. } | MapOp::DeleteMfe { source, group } => {
            (*source, *group)
        }
    }
}

fn at(t: Instant, d: Duration) -> Instant {
    Instant::from_millis(t.as_millis() + d.as_millis() as u64)
}

impl Handover {
    /// Takes note of each interface's current owner (`None`: nobody owns it); an interface
    /// that passed from one owner to another is held from `now`. True if one did.
    pub fn owners(
        &mut self,
        now: Instant,
        current: impl IntoIterator<Item = (InterfaceId, Option<Owner>)>,
    ) -> bool {
        let mut changed = false;
        for (id, owner) in current {
            let before = match owner {
                Some(o) => self.owners.insert(id, o),
                None => self.owners.remove(&id),
            };
            if before.is_some() && owner.is_some() && before != owner {
                self.held.insert(id, at(now, HOLD));
                changed = true;
            }
        }
        changed
    }

    /// When the earliest hold ends.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.held.values().min().copied()
    }

    /// The operations to write for `ops`, the core's latest, in order: merged per entry, with
    /// held interfaces kept.
    pub fn filter(&mut self, now: Instant, ops: Vec<MapOp>) -> Vec<MapOp> {
        let mut last: BTreeMap<Key, (usize, MapOp)> = BTreeMap::new();
        for (seq, op) in ops.into_iter().enumerate() {
            last.insert(key(&op), (seq, op));
        }
        let mut merged: Vec<(usize, MapOp)> = last.into_values().collect();
        merged.sort_by_key(|(seq, _)| *seq);
        merged
            .into_iter()
            .map(|(_, op)| self.hold(now, op))
            .collect()
    }

    fn hold(&mut self, now: Instant, op: MapOp) -> MapOp {
        let k = key(&op);
        let MapOp::InstallMfe {
            source,
            group,
            iif,
            mut oifs,
        } = op
        else {
            self.written.remove(&k);
            self.kept.remove(&k);
            return op;
        };
        let before = self.written.get(&k);
        let keep: Vec<InterfaceId> = self
            .held
            .iter()
            .filter(|(id, until)| **until > now && **id != iif && !oifs.contains(id))
            .map(|(id, _)| *id)
            .filter(|id| before.is_some_and(|b| b.contains(id)))
            .collect();
        if keep.is_empty() {
            self.kept.remove(&k);
        } else {
            oifs.extend(keep);
            self.kept.insert(k);
        }
        self.written.insert(k, oifs.clone());
        MapOp::InstallMfe {
            source,
            group,
            iif,
            oifs,
        }
    }

    /// Ends the holds due at `now`. Entries that kept a held interface get what the core holds
    /// for them now (`table`, the core's forwarding table), with any hold still in force.
    pub fn expire(
        &mut self,
        now: Instant,
        table: &BTreeMap<Key, (InterfaceId, BTreeSet<InterfaceId>)>,
    ) -> Vec<MapOp> {
        self.held.retain(|_, until| *until > now);
        let kept = std::mem::take(&mut self.kept);
        kept.into_iter()
            .map(|(source, group)| match table.get(&(source, group)) {
                Some((iif, oifs)) => MapOp::InstallMfe {
                    source,
                    group,
                    iif: *iif,
                    oifs: oifs.clone(),
                },
                None => MapOp::DeleteMfe { source, group },
            })
            .map(|op| self.hold(now, op))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const G: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);
    const UP: InterfaceId = InterfaceId::new(1);
    const DN: InterfaceId = InterfaceId::new(2);
    const IGMP: Owner = (ProtocolId::IGMP, ComponentId(0));
    const MODULE: Owner = (ProtocolId(0x100), ComponentId(1));

    fn install(oifs: &[InterfaceId]) -> MapOp {
        MapOp::InstallMfe {
            source: S,
            group: G,
            iif: UP,
            oifs: oifs.iter().copied().collect(),
        }
    }

    fn ms(t: u64) -> Instant {
        Instant::from_millis(t)
    }

    #[test]
    fn ops_of_one_batch_are_merged_per_entry() {
        let mut h = Handover::default();
        let ops = vec![install(&[DN]), install(&[]), install(&[DN])];
        assert_eq!(h.filter(ms(0), ops), [install(&[DN])]);
    }

    #[test]
    fn a_new_owner_gets_the_hold_to_re_add_before_forwarding_stops() {
        let mut h = Handover::default();
        h.owners(ms(0), [(DN, Some(IGMP))]);
        assert_eq!(h.filter(ms(0), vec![install(&[DN])]), [install(&[DN])]);
        // A module takes DN: the core drops DN until the module adds its membership.
        h.owners(ms(10), [(DN, Some(MODULE))]);
        assert_eq!(h.filter(ms(10), vec![install(&[])]), [install(&[DN])]);
        // It does, in time: written as is, nothing left to do when the hold ends.
        assert_eq!(h.filter(ms(15), vec![install(&[DN])]), [install(&[DN])]);
        let table = BTreeMap::from([((S, G), (UP, [DN].into()))]);
        assert_eq!(h.expire(ms(2000), &table), []);
        assert_eq!(h.poll_timeout(), None);
    }

    #[test]
    fn an_owner_that_does_not_forward_stops_the_stream_when_the_hold_ends() {
        let mut h = Handover::default();
        h.owners(ms(0), [(DN, Some(IGMP))]);
        h.filter(ms(0), vec![install(&[DN])]);
        h.owners(ms(10), [(DN, Some(MODULE))]);
        assert_eq!(h.filter(ms(10), vec![install(&[])]), [install(&[DN])]);
        assert_eq!(h.poll_timeout(), Some(ms(1010)));
        let table = BTreeMap::from([((S, G), (UP, BTreeSet::new()))]);
        assert_eq!(h.expire(ms(1010), &table), [install(&[])]);
        // An interface nobody owns any more (it vanished) is never held.
        h.owners(ms(2000), [(DN, None)]);
        h.filter(ms(2000), vec![install(&[DN])]);
        h.owners(ms(2001), [(DN, Some(MODULE))]);
        assert_eq!(h.filter(ms(2001), vec![install(&[])]), [install(&[])]);
    }
}
