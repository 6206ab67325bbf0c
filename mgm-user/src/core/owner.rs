//! Interface ownership records: at most one routing-protocol owner plus an optional IGMP
//! co-owner per interface id (spec §3). Plain bookkeeping; the take/release sequences with
//! their callbacks live in `mod.rs`. Nothing here performs I/O.

use super::error::MgmError;
use super::time::Instant;
use super::types::{ComponentId, InterfaceId, ProtocolHandle, ProtocolId};
use super::Mgm;

/// Who owns one interface id. An id with neither owner is forgotten (spec §3).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Owner {
    /// The non-IGMP owner.
    pub(crate) routing: Option<ProtocolHandle>,
    /// IGMP, as sole owner or as co-owner.
    pub(crate) igmp: Option<ProtocolHandle>,
    /// True between the disable-IGMP and enable-IGMP callbacks of an ownership change: IGMP
    /// requests queued then get `CanNotComplete` (spec §3.1 step 1).
    pub(crate) igmp_disabled: bool,
}

impl Owner {
    /// The client that callbacks "to the owner" go to: the routing protocol if there is one,
    /// else IGMP (spec §3.3).
    pub(crate) fn primary(&self) -> Option<ProtocolHandle> {
        self.routing.or(self.igmp)
    }

    pub(crate) fn is_owned_by(&self, h: ProtocolHandle) -> bool {
        self.routing == Some(h) || self.igmp == Some(h)
    }

    /// True when `h` is IGMP co-owning beside a routing protocol, so its memberships are local
    /// (spec §4.4).
    pub(crate) fn is_local_igmp(&self, h: ProtocolHandle) -> bool {
        self.igmp == Some(h) && self.routing.is_some()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.routing.is_none() && self.igmp.is_none()
    }
}

impl Mgm {
    /// `MgmTakeInterfaceOwnership` (spec §3.1).
    ///
    /// # Errors
    /// `InvalidParameter` for a bad handle; `AlreadyExists` if another routing protocol owns the
    /// id, the caller already owns it, or another IGMP instance owns it; `NotEnoughMemory` when
    /// [`Config::max_interfaces`](super::Config::max_interfaces) is reached.
    pub fn take_interface_ownership(
        &mut self,
        handle: ProtocolHandle,
        if_id: InterfaceId,
        now: Instant,
    ) -> Result<(), MgmError> {
        let result = self.take_ownership(handle, if_id, now);
        self.run_queued(now);
        result
    }

    /// `MgmReleaseInterfaceOwnership` (spec §3.2).
    ///
    /// # Errors
    /// `InvalidParameter` for a bad handle, or if the caller does not own the id.
    pub fn release_interface_ownership(
        &mut self,
        handle: ProtocolHandle,
        if_id: InterfaceId,
        now: Instant,
    ) -> Result<(), MgmError> {
        let result = self.release_ownership(handle, if_id, now);
        self.run_queued(now);
        result
    }

    /// `MgmGetProtocolOnInterface`: the routing protocol on the id if there is one, else IGMP
    /// (spec §3.3). Needs no handle.
    ///
    /// # Errors
    /// `NotFound` if no client owns the id.
    pub fn get_protocol_on_interface(
        &self,
        if_id: InterfaceId,
    ) -> Result<(ProtocolId, ComponentId), MgmError> {
        let owner = self.owner_of(if_id).ok_or(MgmError::NotFound)?;
        let reg = self.registration(owner)?;
        Ok((reg.protocol_id, reg.component_id))
    }

    /// The Linux interface `ifindex` vanished (`RTM_DELLINK`): a forced release, with the
    /// §3.2 steps, for every owner of every id on it (spec §10 \[Dec\]).
    pub fn interface_removed(&mut self, ifindex: u32, now: Instant) {
        let ids: Vec<InterfaceId> = self
            .interfaces
            .keys()
            .filter(|id| id.ifindex == ifindex)
            .copied()
            .collect();
        for id in ids {
            let owner = self.interfaces[&id];
            for h in owner.routing.into_iter().chain(owner.igmp) {
                // Cannot fail: `h` is a registered owner of `id`.
                let _ = self.release_ownership(h, id, now);
            }
        }
        self.run_queued(now);
    }

    pub(super) fn take_ownership(
        &mut self,
        h: ProtocolHandle,
        id: InterfaceId,
        now: Instant,
    ) -> Result<(), MgmError> {
        self.registration(h)?;
        let igmp = self.is_igmp(h);
        let current = self.interfaces.get(&id).copied().unwrap_or_default();
        let igmp_h = match (igmp, current.routing, current.igmp) {
            (_, None, None) => {
                if self.interfaces.len() >= self.config.max_interfaces {
                    return Err(MgmError::NotEnoughMemory);
                }
                // Case A. MFEs can only have an unowned iif if they were created while nobody
                // owned it; re-resolve them so their RPF callback reaches the new owner, as
                // §3.1 step 3 does for an owner change.
                self.delete_mfes_with_iif(id);
                self.set_owner(id, |o| {
                    if igmp {
                        o.igmp = Some(h);
                    } else {
                        o.routing = Some(h);
                    }
                });
                return Ok(());
            }
            (true, Some(_), None) => {
                // Case B: co-ownership; IGMP's memberships here are local from now on.
                self.set_owner(id, |o| o.igmp = Some(h));
                return Ok(());
            }
            (false, None, Some(igmp_h)) => igmp_h,
            // Another routing owner, a re-take by the owner (§3.1 rule 3 [Dec]), or a second
            // IGMP instance: one IGMP slot per id [Dec].
            _ => return Err(MgmError::AlreadyExists),
        };
        // Case C: R takes an id that IGMP owns alone; the order is fixed by spec §3.1.
        self.set_owner(id, |o| o.igmp_disabled = true);
        self.call(igmp_h, now, |p, cx| p.disable_igmp(cx, id));
        for key in self.members.joins_on(igmp_h, id) {
            self.remove_join(igmp_h, key, id, now);
        }
        self.clear_oif_state(id);
        self.sync_mfes(now, true);
        self.delete_mfes_with_iif(id);
        self.set_owner(id, |o| {
            o.routing = Some(h);
            o.igmp_disabled = false;
        });
        self.call(igmp_h, now, |p, cx| p.enable_igmp(cx, id));
        Ok(())
    }

    pub(super) fn release_ownership(
        &mut self,
        h: ProtocolHandle,
        id: InterfaceId,
        now: Instant,
    ) -> Result<(), MgmError> {
        self.registration(h)?;
        let owner = self
            .interfaces
            .get(&id)
            .copied()
            .filter(|o| o.is_owned_by(h))
            .ok_or(MgmError::InvalidParameter)?;
        if let (true, Some(routing)) = (owner.igmp == Some(h), owner.routing) {
            // IGMP leaving a co-owned id: its local entries become local leaves, and the
            // routing protocol's MFEs stay (spec §3.2, caller is IGMP).
            for key in self.members.locals_on(id) {
                self.members.remove_local(key, id);
                self.call(routing, now, |p, cx| p.local_leave(cx, key.entry(), id));
            }
            self.set_owner(id, |o| o.igmp = None);
            return Ok(());
        }
        let co_igmp = owner.igmp.filter(|i| *i != h);
        if let Some(igmp_h) = co_igmp {
            self.set_owner(id, |o| o.igmp_disabled = true);
            self.call(igmp_h, now, |p, cx| p.disable_igmp(cx, id));
        }
        self.delete_mfes_with_iif(id);
        for key in self.members.joins_on(h, id) {
            self.remove_join(h, key, id, now);
        }
        // FORWARD pins and vetoes on the id were the leaving owner's.
        self.clear_oif_state(id);
        self.sync_mfes(now, true);
        for key in self.members.locals_on(id) {
            self.members.remove_local(key, id);
        }
        if owner.routing == Some(h) {
            self.set_owner(id, |o| o.routing = None);
        } else {
            self.set_owner(id, |o| o.igmp = None);
        }
        if let Some(igmp_h) = co_igmp {
            self.set_owner(id, |o| o.igmp_disabled = false);
            self.call(igmp_h, now, |p, cx| p.enable_igmp(cx, id));
        }
        if self.interfaces.get(&id).is_some_and(Owner::is_empty) {
            self.interfaces.remove(&id);
        }
        self.settle_waiting(h, id, now);
        Ok(())
    }

    fn set_owner(&mut self, id: InterfaceId, f: impl FnOnce(&mut Owner)) {
        f(self.interfaces.entry(id).or_default());
    }
}
