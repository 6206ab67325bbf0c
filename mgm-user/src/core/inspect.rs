//! Read-only views for the operator (`mgm show`): who owns what, and the MFE counters at full
//! width, which the Windows-shaped records of spec §6.3 wrap to 32 bits.

use std::net::Ipv4Addr;

use super::mfe::{MfeCounters, MfeKey};
use super::types::{ComponentId, InterfaceId, ProtocolId};
use super::Mgm;

impl Mgm {
    /// The counters of MFE (`source`, `group`) as last set, if it exists.
    pub fn mfe_counters(&self, source: Ipv4Addr, group: Ipv4Addr) -> Option<&MfeCounters> {
        self.mfes
            .get(&MfeKey { group, source })
            .map(|m| &m.counters)
    }

    /// Every registered client, in (protocol id, component id) order, with the interface ids
    /// it owns or co-owns.
    pub fn protocols(&self) -> Vec<(ProtocolId, ComponentId, Vec<InterfaceId>)> {
        let mut out: Vec<_> = self
            .registrations
            .iter()
            .map(|(h, r)| {
                let owned = self
                    .interfaces
                    .iter()
                    .filter(|(_, o)| o.is_owned_by(*h))
                    .map(|(id, _)| *id)
                    .collect();
                (r.protocol_id, r.component_id, owned)
            })
            .collect();
        out.sort_by_key(|(p, c, _)| (*p, *c));
        out
    }
}
