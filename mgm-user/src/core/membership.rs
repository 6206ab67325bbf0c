//! The group-membership table: JOIN-state entries per key, client and interface, the excluded
//! sources under a client's wildcard entries, and IGMP's local (shadow) entries on interfaces a
//! routing protocol owns (spec §4.1, §4.4, §4.8).
//!
//! Membership is a set, not a reference count (spec §4.1). The table answers the questions the
//! alert rules and the OIF computation ask; it performs no I/O and invokes no callbacks.
//!
//! An exclusion lives only under a (*,G) or (*,*) entry of the same client on the same interface
//! (spec §4.8). Removing the last such wildcard removes the exclusions it carried, silently: they
//! no longer exclude anything, and a co-owner heard the wildcard's `local_leave` \[Dec\].

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::alerts;
use super::error::MgmError;
use super::mfe::OifState;
use super::time::Instant;
use super::types::{
    GroupFilter, InterfaceId, MembershipKey, ProtocolHandle, SourceGroupEntry, StateFlags,
};
use super::Mgm;

#[derive(Debug, Default)]
pub(crate) struct MembershipTable {
    /// JOIN-state entries: key → holder → interfaces. Empty inner maps are removed, so the
    /// holders of a key are exactly its inner keys (spec §4.5).
    joins: BTreeMap<MembershipKey, BTreeMap<ProtocolHandle, BTreeSet<InterfaceId>>>,
    /// EXCLUDE-state entries: (S,G) keys a client's wildcard entries do not forward on an
    /// interface (spec §4.8).
    excludes: BTreeSet<(MembershipKey, ProtocolHandle, InterfaceId)>,
    /// IGMP's local entries. They notify the owner but never forward (spec §4.4, §9 item 2).
    locals: BTreeSet<(InterfaceId, MembershipKey)>,
    /// IGMP's local exclusions, under its local wildcard entries (spec §4.8).
    local_excludes: BTreeSet<(InterfaceId, MembershipKey)>,
    /// Entries in all four sets, for the capacity limit.
    len: usize,
}

/// What inserting or removing a JOIN entry changed for the alert rules.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// The entry was already present (insert) or absent (remove).
    None,
    /// The client still holds the key on another interface (or did already).
    SameHolders,
    /// The client became a holder (insert) or stopped being one (remove).
    HoldersChanged,
}

impl MembershipTable {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn insert_join(
        &mut self,
        key: MembershipKey,
        h: ProtocolHandle,
        id: InterfaceId,
    ) -> Change {
        let ids = self.joins.entry(key).or_default().entry(h).or_default();
        let first = ids.is_empty();
        if !ids.insert(id) {
            return Change::None;
        }
        self.len += 1;
        if first {
            Change::HoldersChanged
        } else {
            Change::SameHolders
        }
    }

    pub(crate) fn remove_join(
        &mut self,
        key: MembershipKey,
        h: ProtocolHandle,
        id: InterfaceId,
    ) -> Change {
        let Some(by_client) = self.joins.get_mut(&key) else {
            return Change::None;
        };
        let Some(ids) = by_client.get_mut(&h) else {
            return Change::None;
        };
        if !ids.remove(&id) {
            return Change::None;
        }
        self.len -= 1;
        let change = if ids.is_empty() {
            by_client.remove(&h);
            if by_client.is_empty() {
                self.joins.remove(&key);
            }
            Change::HoldersChanged
        } else {
            Change::SameHolders
        };
        if !key.is_source_specific() {
            self.drop_uncovered_excludes(h, id);
        }
        change
    }

    /// Whether `h` holds a (*,G) or (*,*) JOIN entry on `id` that covers the (S,G) `key`: what
    /// an exclusion needs (spec §4.8).
    fn wildcard_over(&self, key: MembershipKey, h: ProtocolHandle, id: InterfaceId) -> bool {
        let [_, star_g, star_star] = MembershipKey::covering(key.source, key.group);
        self.has_join(star_g, h, id) || self.has_join(star_star, h, id)
    }

    /// Adds an exclusion; `Ok(false)` if it existed.
    ///
    /// # Errors
    /// `InvalidParameter` if `h` holds no wildcard over `key` on `id` (spec §4.8).
    pub(crate) fn insert_exclude(
        &mut self,
        key: MembershipKey,
        h: ProtocolHandle,
        id: InterfaceId,
    ) -> Result<bool, MgmError> {
        if !self.wildcard_over(key, h, id) {
            return Err(MgmError::InvalidParameter);
        }
        let added = self.excludes.insert((key, h, id));
        if added {
            self.len += 1;
        }
        Ok(added)
    }

    pub(crate) fn remove_exclude(
        &mut self,
        key: MembershipKey,
        h: ProtocolHandle,
        id: InterfaceId,
    ) -> bool {
        let removed = self.excludes.remove(&(key, h, id));
        if removed {
            self.len -= 1;
        }
        removed
    }

    pub(crate) fn has_exclude(
        &self,
        key: MembershipKey,
        h: ProtocolHandle,
        id: InterfaceId,
    ) -> bool {
        self.excludes.contains(&(key, h, id))
    }

    /// Removes the exclusions of `h` on `id` that no wildcard of `h` covers any more.
    fn drop_uncovered_excludes(&mut self, h: ProtocolHandle, id: InterfaceId) {
        let stale: Vec<MembershipKey> = self
            .excludes
            .iter()
            .filter(|(k, eh, eid)| *eh == h && *eid == id && !self.wildcard_over(*k, h, id))
            .map(|(k, _, _)| *k)
            .collect();
        for k in stale {
            self.remove_exclude(k, h, id);
        }
    }

    pub(crate) fn has_join(&self, key: MembershipKey, h: ProtocolHandle, id: InterfaceId) -> bool {
        self.joins
            .get(&key)
            .and_then(|m| m.get(&h))
            .is_some_and(|ids| ids.contains(&id))
    }

    /// Clients holding at least one JOIN entry for `key`, on any interface (spec §4.5).
    pub(crate) fn holders(&self, key: MembershipKey) -> BTreeSet<ProtocolHandle> {
        self.joins
            .get(&key)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The keys `h` holds on `id`, in key order.
    pub(crate) fn joins_on(&self, h: ProtocolHandle, id: InterfaceId) -> Vec<MembershipKey> {
        self.joins
            .iter()
            .filter(|(_, m)| m.get(&h).is_some_and(|ids| ids.contains(&id)))
            .map(|(k, _)| *k)
            .collect()
    }

    /// The OIF candidates of an MFE (S,G) (spec §5.3, §4.8): every interface on which some
    /// client holds (S,G) JOIN, or holds a covering (*,G)/(*,*) JOIN without an (S,G) EXCLUDE
    /// of its own there. Exclusion is per client: another client's entry still wins.
    pub(crate) fn covering_ids(&self, source: Ipv4Addr, group: Ipv4Addr) -> BTreeSet<InterfaceId> {
        let [sg, star_g, star_star] = MembershipKey::covering(source, group);
        let exact = self
            .joins
            .get(&sg)
            .into_iter()
            .flat_map(|m| m.values().flatten());
        let wildcard = [star_g, star_star]
            .into_iter()
            .filter_map(|k| self.joins.get(&k))
            .flat_map(|m| m.iter())
            .flat_map(|(h, ids)| ids.iter().map(move |id| (*h, id)))
            .filter(|(h, id)| !self.excludes.contains(&(sg, *h, **id)))
            .map(|(_, id)| id);
        exact.chain(wildcard).copied().collect()
    }

    /// The source filter of `group` on every interface with a JOIN entry covering it (spec
    /// §4.8): what the OIF rule forwards there of any source.
    pub(crate) fn filters(&self, group: Ipv4Addr) -> BTreeMap<InterfaceId, GroupFilter> {
        let any = Ipv4Addr::UNSPECIFIED;
        let star_star = MembershipKey::MIN;
        let star_g = MembershipKey { group, source: any };
        let mut joined: BTreeMap<InterfaceId, BTreeSet<Ipv4Addr>> = BTreeMap::new();
        let mut wildcard: BTreeMap<InterfaceId, BTreeSet<ProtocolHandle>> = BTreeMap::new();
        let keys = self.joins.range(
            star_g..=MembershipKey {
                group,
                source: Ipv4Addr::BROADCAST,
            },
        );
        for (key, by_client) in keys.chain(self.joins.get_key_value(&star_star)) {
            for (h, ids) in by_client {
                for id in ids {
                    if key.is_source_specific() {
                        joined.entry(*id).or_default().insert(key.source);
                    } else {
                        wildcard.entry(*id).or_default().insert(*h);
                    }
                }
            }
        }
        let mut out: BTreeMap<InterfaceId, GroupFilter> = joined
            .iter()
            .map(|(id, sources)| (*id, GroupFilter::Include(sources.clone())))
            .collect();
        for (id, holders) in wildcard {
            // A source is blocked only if every wildcard holder there excludes it, and no (S,G)
            // join there wants it.
            let mut blocked: Option<BTreeSet<Ipv4Addr>> = None;
            for h in holders {
                let mine: BTreeSet<Ipv4Addr> = self
                    .excludes
                    .iter()
                    .filter(|(k, eh, eid)| k.group == group && *eh == h && *eid == id)
                    .map(|(k, _, _)| k.source)
                    .collect();
                blocked = Some(match blocked {
                    Some(b) => &b & &mine,
                    None => mine,
                });
            }
            let wanted = joined.get(&id).cloned().unwrap_or_default();
            let blocked = &blocked.unwrap_or_default() - &wanted;
            out.insert(id, GroupFilter::Exclude(blocked));
        }
        out
    }

    pub(crate) fn insert_local(&mut self, key: MembershipKey, id: InterfaceId) -> bool {
        let added = self.locals.insert((id, key));
        if added {
            self.len += 1;
        }
        added
    }

    pub(crate) fn remove_local(&mut self, key: MembershipKey, id: InterfaceId) -> bool {
        let removed = self.locals.remove(&(id, key));
        if removed {
            self.len -= 1;
            if !key.is_source_specific() {
                let stale: Vec<MembershipKey> = self
                    .local_excludes_on(id)
                    .into_iter()
                    .filter(|k| !self.local_wildcard_over(*k, id))
                    .collect();
                for k in stale {
                    self.remove_local_exclude(k, id);
                }
            }
        }
        removed
    }

    /// Whether IGMP holds a local wildcard over the (S,G) `key` on `id` (spec §4.8).
    fn local_wildcard_over(&self, key: MembershipKey, id: InterfaceId) -> bool {
        let [_, star_g, star_star] = MembershipKey::covering(key.source, key.group);
        self.locals.contains(&(id, star_g)) || self.locals.contains(&(id, star_star))
    }

    /// Adds a local exclusion; `Ok(false)` if it existed.
    ///
    /// # Errors
    /// `InvalidParameter` without a local wildcard over `key` on `id` (spec §4.8).
    pub(crate) fn insert_local_exclude(
        &mut self,
        key: MembershipKey,
        id: InterfaceId,
    ) -> Result<bool, MgmError> {
        if !self.local_wildcard_over(key, id) {
            return Err(MgmError::InvalidParameter);
        }
        let added = self.local_excludes.insert((id, key));
        if added {
            self.len += 1;
        }
        Ok(added)
    }

    pub(crate) fn remove_local_exclude(&mut self, key: MembershipKey, id: InterfaceId) -> bool {
        let removed = self.local_excludes.remove(&(id, key));
        if removed {
            self.len -= 1;
        }
        removed
    }

    pub(crate) fn has_local_exclude(&self, key: MembershipKey, id: InterfaceId) -> bool {
        self.local_excludes.contains(&(id, key))
    }

    fn local_excludes_on(&self, id: InterfaceId) -> Vec<MembershipKey> {
        self.local_excludes
            .range((id, MembershipKey::MIN)..)
            .take_while(|(i, _)| *i == id)
            .map(|(_, k)| *k)
            .collect()
    }

    /// The local entries on `id`, in key order.
    pub(crate) fn locals_on(&self, id: InterfaceId) -> Vec<MembershipKey> {
        self.locals
            .range((id, MembershipKey::MIN)..)
            .take_while(|(i, _)| *i == id)
            .map(|(_, k)| *k)
            .collect()
    }

    /// Every distinct key with a JOIN or local entry, in (G, S) order (spec §6.4).
    pub(crate) fn keys(&self) -> BTreeSet<MembershipKey> {
        self.joins
            .keys()
            .copied()
            .chain(self.locals.iter().map(|(_, k)| *k))
            .collect()
    }
}

impl Mgm {
    /// `MgmAddGroupMembershipEntry` (spec §4.2): receivers for `sg` exist behind `if_id`.
    ///
    /// Adding an entry that exists changes nothing except that the owner's add clears its own
    /// veto on covered MFEs (spec §4.7 \[Dec\], which overrides the "no MFE change" of §4.1).
    /// IGMP on an interface a routing protocol owns records a local entry whatever the flags
    /// (spec §4.4): the owner alone decides about forwarding state there. An EXCLUDE entry
    /// there reaches the owner as `local_leave` of the (S,G) (spec §4.8).
    ///
    /// # Errors
    /// `InvalidParameter` for a bad handle, mask or flags, an interface the caller does not
    /// own, or an EXCLUDE entry without the caller's (*,G) or (*,*) over it on the interface
    /// (spec §4.8); `NotEnoughMemory` when [`Config::max_memberships`](super::Config) is reached.
    /// A request IGMP queued between disable and enable gets `CanNotComplete` (spec §3.1).
    pub fn add_group_membership_entry(
        &mut self,
        handle: ProtocolHandle,
        sg: SourceGroupEntry,
        if_id: InterfaceId,
        flags: u32,
        now: Instant,
    ) -> Result<(), MgmError> {
        let result = self.add_membership(handle, sg, if_id, flags, now);
        self.run_queued(now);
        result
    }

    /// `MgmDeleteGroupMembershipEntry` (spec §4.3): no more receivers for `sg` behind `if_id`.
    ///
    /// # Errors
    /// `InvalidParameter` for a bad handle, mask or flags, or an interface owned by another
    /// client; `NotFound` for an unknown interface or a missing JOIN, EXCLUDE or local entry.
    pub fn delete_group_membership_entry(
        &mut self,
        handle: ProtocolHandle,
        sg: SourceGroupEntry,
        if_id: InterfaceId,
        flags: u32,
        now: Instant,
    ) -> Result<(), MgmError> {
        let result = self.delete_membership(handle, sg, if_id, flags, now);
        self.run_queued(now);
        result
    }

    /// The source filter of `group` on each interface whose JOIN entries cover it: what MGM
    /// forwards of `group` there by membership (spec §4.8, §5.3), in the terms of an IGMPv3
    /// report. IGMP's local entries are left out: they forward nothing (spec §4.4). A proxy
    /// merges the downstream ones with [`GroupFilter::merge`] to report upstream
    /// (RFC 4605 §4.1).
    pub fn group_filters(&self, group: Ipv4Addr) -> BTreeMap<InterfaceId, GroupFilter> {
        self.members.filters(group)
    }

    pub(super) fn add_membership(
        &mut self,
        h: ProtocolHandle,
        sg: SourceGroupEntry,
        id: InterfaceId,
        flags: u32,
        now: Instant,
    ) -> Result<(), MgmError> {
        self.registration(h)?;
        let key = MembershipKey::parse(&sg)?;
        let flags = StateFlags::parse(flags, key)?;
        let owner = self
            .interfaces
            .get(&id)
            .copied()
            .filter(|o| o.is_owned_by(h))
            .ok_or(MgmError::InvalidParameter)?;
        let full = self.members.len() >= self.config.max_memberships;
        if let (true, Some(routing)) = (owner.is_local_igmp(h), owner.routing) {
            // Step 1: a local join only tells the owner; it decides whether to forward.
            if flags == StateFlags::Exclude {
                // §4.8: the owner hears an exclusion as the (S,G) leaving.
                if full && !self.members.has_local_exclude(key, id) {
                    return Err(MgmError::NotEnoughMemory);
                }
                if self.members.insert_local_exclude(key, id)? {
                    self.call(routing, now, |p, cx| p.local_leave(cx, key.entry(), id));
                }
                return Ok(());
            }
            if full && !self.members.locals_on(id).contains(&key) {
                return Err(MgmError::NotEnoughMemory);
            }
            if self.members.insert_local(key, id) {
                self.call(routing, now, |p, cx| p.local_join(cx, key.entry(), id));
            }
            return Ok(());
        }
        let (join, forward) = match flags {
            StateFlags::Forward { join, forward } => (join, forward),
            StateFlags::Exclude => {
                if full && !self.members.has_exclude(key, h, id) {
                    return Err(MgmError::NotEnoughMemory);
                }
                // §4.8: only the OIF lists change, with their §4.7 alerts.
                if self.members.insert_exclude(key, h, id)? {
                    self.sync_covered_mfes(key, now);
                }
                return Ok(());
            }
        };
        if join && full && !self.members.has_join(key, h, id) {
            return Err(MgmError::NotEnoughMemory);
        }
        self.for_covered_mfes(key, id, |s| s.vetoed = false);
        if join && self.members.insert_join(key, h, id) == Change::HoldersChanged {
            self.join_alerts(h, key, now);
        }
        if forward {
            self.for_covered_mfes(key, id, |s| s.forward_pin = true);
        }
        self.sync_covered_mfes(key, now);
        Ok(())
    }

    pub(super) fn delete_membership(
        &mut self,
        h: ProtocolHandle,
        sg: SourceGroupEntry,
        id: InterfaceId,
        flags: u32,
        now: Instant,
    ) -> Result<(), MgmError> {
        self.registration(h)?;
        let key = MembershipKey::parse(&sg)?;
        let flags = StateFlags::parse(flags, key)?;
        let owner = self
            .interfaces
            .get(&id)
            .copied()
            .ok_or(MgmError::NotFound)?;
        if !owner.is_owned_by(h) {
            return Err(MgmError::InvalidParameter);
        }
        if let (true, Some(routing)) = (owner.is_local_igmp(h), owner.routing) {
            if flags == StateFlags::Exclude {
                // §4.8: the end of an exclusion is the (S,G) joining again under the wildcard.
                if !self.members.remove_local_exclude(key, id) {
                    return Err(MgmError::NotFound);
                }
                self.call(routing, now, |p, cx| p.local_join(cx, key.entry(), id));
                return Ok(());
            }
            if !self.members.remove_local(key, id) {
                return Err(MgmError::NotFound);
            }
            self.call(routing, now, |p, cx| p.local_leave(cx, key.entry(), id));
            return Ok(());
        }
        let (join, forward) = match flags {
            StateFlags::Forward { join, forward } => (join, forward),
            StateFlags::Exclude => {
                if !self.members.remove_exclude(key, h, id) {
                    return Err(MgmError::NotFound);
                }
                self.sync_covered_mfes(key, now);
                return Ok(());
            }
        };
        if join && !self.members.has_join(key, h, id) {
            return Err(MgmError::NotFound);
        }
        if join {
            self.remove_join(h, key, id, now);
        }
        if forward {
            self.for_covered_mfes(key, id, |s| s.forward_pin = false);
        }
        self.sync_covered_mfes(key, now);
        Ok(())
    }

    /// Removes one JOIN entry and sends the prune alerts of spec §4.6 if the client stopped
    /// holding the key. The caller syncs MFEs afterwards.
    pub(super) fn remove_join(
        &mut self,
        h: ProtocolHandle,
        key: MembershipKey,
        id: InterfaceId,
        now: Instant,
    ) {
        if self.members.remove_join(key, h, id) != Change::HoldersChanged {
            return;
        }
        let holders = self.members.holders(key);
        let targets = if key.is_source_specific() {
            if holders.is_empty() {
                let rpf_owner = self.rpf_owner(key.source);
                alerts::source_specific_target(h, rpf_owner)
                    .into_iter()
                    .collect()
            } else {
                Vec::new()
            }
        } else {
            alerts::wildcard_prune_targets(h, &holders, &self.registered_in_order())
        };
        let lifetime = self.config.mfe_lifetime_s;
        for to in targets {
            // The timeout means nothing in a membership-driven prune (spec §4.6).
            let mut timeout = lifetime;
            self.call(to, now, |p, cx| {
                p.prune_alert(cx, key.entry(), id, true, &mut timeout)
            });
        }
    }

    /// Sends the join alerts of spec §4.5 after `h` became a holder of `key`.
    fn join_alerts(&mut self, h: ProtocolHandle, key: MembershipKey, now: Instant) {
        let holders = self.members.holders(key);
        let targets = if key.is_source_specific() {
            if holders.len() == 1 {
                let rpf_owner = self.rpf_owner(key.source);
                alerts::source_specific_target(h, rpf_owner)
                    .into_iter()
                    .collect()
            } else {
                Vec::new()
            }
        } else {
            alerts::wildcard_join_targets(h, &holders, &self.registered_in_order())
        };
        for to in targets {
            self.call(to, now, |p, cx| p.join_alert(cx, key.entry(), true));
        }
    }

    /// The owner of the RPF interface toward `source`, if there is a route and an owner.
    fn rpf_owner(&self, source: Ipv4Addr) -> Option<ProtocolHandle> {
        self.routes
            .lookup(source)
            .and_then(|r| self.owner_of(r.if_id))
    }

    /// Applies `f` to the state of `id` on every existing MFE that `key` covers.
    fn for_covered_mfes(
        &mut self,
        key: MembershipKey,
        id: InterfaceId,
        mut f: impl FnMut(&mut OifState),
    ) {
        for k in self.covered_mfes(key) {
            if let Some(mfe) = self.mfes.get_mut(&k) {
                mfe.update_oif(id, &mut f);
            }
        }
    }
}
