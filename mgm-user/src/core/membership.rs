//! The group-membership table: JOIN-state entries per key, client and interface, and IGMP's
//! local (shadow) entries on interfaces a routing protocol owns (spec §4.1, §4.4).
//!
//! Membership is a set, not a reference count (spec §4.1). The table answers the questions the
//! alert rules and the OIF computation ask; it performs no I/O and invokes no callbacks.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::alerts;
use super::error::MgmError;
use super::mfe::OifState;
use super::time::Instant;
use super::types::{InterfaceId, MembershipKey, ProtocolHandle, SourceGroupEntry, StateFlags};
use super::Mgm;

#[derive(Debug, Default)]
pub(crate) struct MembershipTable {
    /// JOIN-state entries: key → holder → interfaces. Empty inner maps are removed, so the
    /// holders of a key are exactly its inner keys (spec §4.5).
    joins: BTreeMap<MembershipKey, BTreeMap<ProtocolHandle, BTreeSet<InterfaceId>>>,
    /// IGMP's local entries. They notify the owner but never forward (spec §4.4, §9 item 2).
    locals: BTreeSet<(InterfaceId, MembershipKey)>,
    /// Entries in both sets, for the capacity limit.
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
        if !ids.is_empty() {
            return Change::SameHolders;
        }
        by_client.remove(&h);
        if by_client.is_empty() {
            self.joins.remove(&key);
        }
        Change::HoldersChanged
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

    /// The OIF candidates of an MFE (S,G): every interface of every JOIN entry that covers it
    /// (spec §5.3).
    pub(crate) fn covering_ids(&self, source: Ipv4Addr, group: Ipv4Addr) -> BTreeSet<InterfaceId> {
        MembershipKey::covering(source, group)
            .iter()
            .filter_map(|k| self.joins.get(k))
            .flat_map(|m| m.values().flatten().copied())
            .collect()
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
        }
        removed
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
    /// (spec §4.4): the owner alone decides about forwarding state there.
    ///
    /// # Errors
    /// `InvalidParameter` for a bad handle, mask or flags, or an interface the caller does not
    /// own; `NotEnoughMemory` when [`Config::max_memberships`](super::Config) is reached.
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
    /// client; `NotFound` for an unknown interface or a missing JOIN or local entry.
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
        let flags = StateFlags::parse(flags)?;
        let owner = self
            .interfaces
            .get(&id)
            .copied()
            .filter(|o| o.is_owned_by(h))
            .ok_or(MgmError::InvalidParameter)?;
        let full = self.members.len() >= self.config.max_memberships;
        if let (true, Some(routing)) = (owner.is_local_igmp(h), owner.routing) {
            // Step 1: a local join only tells the owner; it decides whether to forward.
            if full && !self.members.locals_on(id).contains(&key) {
                return Err(MgmError::NotEnoughMemory);
            }
            if self.members.insert_local(key, id) {
                self.call(routing, now, |p, cx| p.local_join(cx, key.entry(), id));
            }
            return Ok(());
        }
        if flags.join && full && !self.members.has_join(key, h, id) {
            return Err(MgmError::NotEnoughMemory);
        }
        self.for_covered_mfes(key, id, |s| s.vetoed = false);
        if flags.join && self.members.insert_join(key, h, id) == Change::HoldersChanged {
            self.join_alerts(h, key, now);
        }
        if flags.forward {
            self.for_covered_mfes(key, id, |s| s.forward_pin = true);
        }
        self.sync_mfes(now, true);
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
        let flags = StateFlags::parse(flags)?;
        let owner = self
            .interfaces
            .get(&id)
            .copied()
            .ok_or(MgmError::NotFound)?;
        if !owner.is_owned_by(h) {
            return Err(MgmError::InvalidParameter);
        }
        if let (true, Some(routing)) = (owner.is_local_igmp(h), owner.routing) {
            if !self.members.remove_local(key, id) {
                return Err(MgmError::NotFound);
            }
            self.call(routing, now, |p, cx| p.local_leave(cx, key.entry(), id));
            return Ok(());
        }
        if flags.join && !self.members.has_join(key, h, id) {
            return Err(MgmError::NotFound);
        }
        if flags.join {
            self.remove_join(h, key, id, now);
        }
        if flags.forward {
            self.for_covered_mfes(key, id, |s| s.forward_pin = false);
        }
        self.sync_mfes(now, true);
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
        for (k, mfe) in &mut self.mfes {
            if key.covers(k.source, k.group) {
                mfe.update_oif(id, &mut f);
            }
        }
    }
}
