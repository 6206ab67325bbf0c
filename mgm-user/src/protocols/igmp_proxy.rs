//! The IGMP proxy's routing side (after RFC 4605): it owns the upstream interface, so every
//! MFE whose traffic arrives there has an owner to ask (spec §5.2), and it stands for the
//! downstream receivers upstream. MGM's join and prune alerts (spec §4.5, §4.6) tell it when
//! the first receiver for a (\*,G) or (S,G) appears downstream and when the last one goes; it
//! turns them into host memberships on the upstream interface, which the daemon applies
//! through the kernel's host stack (so the kernel answers upstream queries and sends the
//! unsolicited reports).
//!
//! It also holds a (\*,\*) membership on the upstream interface, so traffic from downstream
//! sources goes upstream as well as to the other downstreams that want it (RFC 4605 §4.2).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use crate::core::{ComponentId, Cx, InterfaceId, ProtocolId, RoutingProtocol, SourceGroupEntry};

/// The proxy's protocol id: outside the ids Windows assigns to routing protocols.
pub const PROTOCOL_ID: ProtocolId = ProtocolId(0x4d47_0001);
pub const COMPONENT_ID: ComponentId = ComponentId(1);

/// A change of the proxy's host membership on the upstream interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamChange {
    Join(SourceGroupEntry),
    Leave(SourceGroupEntry),
}

/// Upstream membership changes the proxy decided and the daemon has not applied yet.
pub type UpstreamQueue = Arc<Mutex<VecDeque<UpstreamChange>>>;

/// Owner of the upstream interface. The RPF interface the core picks and the outgoing list it
/// computes from memberships are what a proxy wants, so those callbacks keep their defaults.
#[derive(Debug, Default)]
pub struct ProxyUpstream {
    changes: UpstreamQueue,
}

impl ProxyUpstream {
    /// A proxy that reports its upstream membership changes into `changes`.
    pub fn new(changes: UpstreamQueue) -> Self {
        ProxyUpstream { changes }
    }

    fn push(&self, change: UpstreamChange) {
        self.changes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push_back(change);
    }
}

impl RoutingProtocol for ProxyUpstream {
    fn join_alert(&mut self, _cx: &mut Cx, sg: SourceGroupEntry, member_update: bool) {
        // Alerts without `member_update` are about one MFE's outgoing list, not receivers.
        if member_update && !sg.group.is_unspecified() {
            self.push(UpstreamChange::Join(sg));
        }
    }

    fn prune_alert(
        &mut self,
        _cx: &mut Cx,
        sg: SourceGroupEntry,
        _if_id: InterfaceId,
        member_delete: bool,
        _timeout_s: &mut u32,
    ) {
        if member_delete && !sg.group.is_unspecified() {
            self.push(UpstreamChange::Leave(sg));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::core::{Config, Instant, Mgm, MGM_JOIN_STATE_FLAG};

    const G: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);
    const UP: InterfaceId = InterfaceId::new(1);
    const D1: InterfaceId = InterfaceId::new(2);
    const D2: InterfaceId = InterfaceId::new(3);

    /// The proxy on UP and IGMP on D1 and D2, as `mgm run` registers them.
    fn setup() -> (Mgm, crate::core::ProtocolHandle, UpstreamQueue) {
        let queue = UpstreamQueue::default();
        let mut mgm = Mgm::new(Config::default());
        let now = Instant::from_millis(0);
        let proxy = mgm
            .register(
                Box::new(ProxyUpstream::new(queue.clone())),
                PROTOCOL_ID,
                COMPONENT_ID,
            )
            .unwrap();
        mgm.take_interface_ownership(proxy, UP, now).unwrap();
        let igmp = crate::protocols::igmp::Igmp::register(&mut mgm, Default::default())
            .unwrap()
            .handle();
        for d in [D1, D2] {
            mgm.take_interface_ownership(igmp, d, now).unwrap();
        }
        (mgm, igmp, queue)
    }

    fn drain(q: &UpstreamQueue) -> Vec<UpstreamChange> {
        q.lock().unwrap().drain(..).collect()
    }

    #[test]
    fn spec4_5_first_receiver_downstream_joins_upstream_and_the_last_leaves() {
        let (mut mgm, igmp, queue) = setup();
        let now = Instant::from_millis(0);
        let star = SourceGroupEntry::star_g(G);
        mgm.add_group_membership_entry(igmp, star, D1, MGM_JOIN_STATE_FLAG, now)
            .unwrap();
        assert_eq!(drain(&queue), [UpstreamChange::Join(star)]);
        // A second interface of the same holder: no alert, nothing upstream.
        mgm.add_group_membership_entry(igmp, star, D2, MGM_JOIN_STATE_FLAG, now)
            .unwrap();
        mgm.delete_group_membership_entry(igmp, star, D1, MGM_JOIN_STATE_FLAG, now)
            .unwrap();
        assert!(drain(&queue).is_empty());
        mgm.delete_group_membership_entry(igmp, star, D2, MGM_JOIN_STATE_FLAG, now)
            .unwrap();
        assert_eq!(drain(&queue), [UpstreamChange::Leave(star)]);
    }
}
