//! IGMP as an MGM client (protocol id 10): one querier ([`crate::igmp::querier`]) per interface
//! IGMP runs on, and the registration their memberships are added and deleted with. Where a
//! routing protocol owns the interface too, MGM turns those calls into local joins and leaves
//! for it (spec §4.4).
//!
//! Ownership changes are handled here, in one place: when a routing protocol takes or releases
//! an interface IGMP runs on, MGM discards IGMP's memberships there between `disable_igmp`
//! and `enable_igmp` (spec §3.1, §3.2), and IGMP re-adds every membership its querier holds
//! there. The re-adds are queued from `enable_igmp` and run after the ownership change
//! returns, never inside the callback (spec §3.1, §10), so the new owner gets a local join for
//! each host already joined, and after a release they forward again as IGMP's own.
//!
//! Sans-IO like the queriers: the daemon feeds what it hears and the time in, sends the queries
//! polled out, and hands the core over for the memberships.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::{Arc, Mutex, MutexGuard},
};

use log::warn;

use crate::{
    core::{
        ComponentId, Cx, Instant, InterfaceId, Mgm, MgmError, ProtocolHandle, ProtocolId, Request,
        RoutingProtocol, SourceGroupEntry, MGM_EXCLUDE_STATE_FLAG, MGM_JOIN_STATE_FLAG,
    },
    igmp::{
        codec::IgmpMessage,
        querier::{self, ConfigError, Heard, IpHeader, Querier, Subnet, Transmit},
    },
};

/// The queriers by ifindex, shared by [`Igmp`] (driven by the daemon) and its registration in
/// the core (called back by MGM). Both run on the daemon's one thread; the lock is never held
/// across a call into MGM, because MGM may call back.
type Queriers = Arc<Mutex<BTreeMap<u32, Querier>>>;

fn lock(q: &Queriers) -> MutexGuard<'_, BTreeMap<u32, Querier>> {
    q.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why IGMP cannot run on an interface.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("MGM refused IGMP the interface: {0}")]
    Take(#[source] MgmError),
    #[error("invalid IGMP settings: {0}")]
    Config(#[source] ConfigError),
}

/// A membership change IGMP made in the core, for the daemon's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub membership: querier::Membership,
    pub result: Result<(), MgmError>,
}

/// IGMP: its registration and its queriers.
pub struct Igmp {
    handle: ProtocolHandle,
    queriers: Queriers,
    /// Querier limit hits already reported, by ifindex, so each new one is reported once.
    limit_hits: BTreeMap<u32, u64>,
}

impl Igmp {
    /// Registers IGMP with `mgm` as protocol 10, component 0; it runs on no interface yet.
    ///
    /// # Errors
    /// What `MgmRegisterMProtocol` returns (IGMP already registered, no room).
    pub fn register(mgm: &mut Mgm) -> Result<Igmp, MgmError> {
        let queriers = Queriers::default();
        let client = IgmpClient {
            queriers: queriers.clone(),
        };
        let handle = mgm.register(Box::new(client), ProtocolId::IGMP, ComponentId(0))?;
        Ok(Igmp {
            handle,
            queriers,
            limit_hits: BTreeMap::new(),
        })
    }

    /// IGMP's registration handle.
    pub fn handle(&self) -> ProtocolHandle {
        self.handle
    }

    /// Starts IGMP on `ifindex`, whose address is `address`, with the settings `config`:
    /// takes the interface (as sole owner, or co-owner beside a routing protocol) and starts
    /// its querier, whose first startup query is then ready in [`Igmp::poll_transmit`].
    ///
    /// # Errors
    /// The settings are invalid, or MGM refuses the interface.
    pub fn start(
        &mut self,
        mgm: &mut Mgm,
        ifindex: u32,
        address: Ipv4Addr,
        config: querier::Config,
        now: Instant,
    ) -> Result<(), StartError> {
        let q = Querier::new(ifindex, address, config, now).map_err(StartError::Config)?;
        mgm.take_interface_ownership(self.handle, InterfaceId::new(ifindex), now)
            .map_err(StartError::Take)?;
        lock(&self.queriers).insert(ifindex, q);
        self.limit_hits.remove(&ifindex);
        Ok(())
    }

    /// Stops IGMP on `ifindex`: its querier and its state go. If IGMP still owns the
    /// interface it releases it (spec §3.2, caller IGMP); after the interface vanished the
    /// core has already released it for every owner (spec §10).
    pub fn stop(&mut self, mgm: &mut Mgm, ifindex: u32, now: Instant) -> bool {
        let running = lock(&self.queriers).remove(&ifindex).is_some();
        // `InvalidParameter` when the core no longer knows the interface: nothing to release.
        let _ = mgm.release_interface_ownership(self.handle, InterfaceId::new(ifindex), now);
        self.limit_hits.remove(&ifindex);
        running
    }

    /// Gives the querier on `ifindex` new settings (a reload), keeping its groups. `Ok(false)`
    /// if IGMP does not run there.
    ///
    /// # Errors
    /// The settings are invalid; the querier keeps its old ones.
    pub fn reconfigure(
        &mut self,
        ifindex: u32,
        config: querier::Config,
        now: Instant,
    ) -> Result<bool, ConfigError> {
        match lock(&self.queriers).get_mut(&ifindex) {
            Some(q) => q.reconfigure(now, config).map(|()| true),
            None => Ok(false),
        }
    }

    /// Runs `f` over every querier, by ifindex: what `mgm show` reads.
    pub fn queriers<R>(&self, f: impl FnOnce(&BTreeMap<u32, Querier>) -> R) -> R {
        f(&lock(&self.queriers))
    }

    /// Whether IGMP runs on `ifindex`.
    pub fn runs_on(&self, ifindex: u32) -> bool {
        lock(&self.queriers).contains_key(&ifindex)
    }

    /// Feeds an IGMP message heard on `ifindex`, `ip` being its IPv4 header, to the querier
    /// there, and returns what it made of it. `None` if IGMP does not run there: above all
    /// on the upstream, where hosts' reports must never make memberships downstream.
    pub fn handle_message(
        &mut self,
        ifindex: u32,
        now: Instant,
        ip: IpHeader,
        msg: &IgmpMessage,
    ) -> Option<Heard> {
        lock(&self.queriers)
            .get_mut(&ifindex)
            .map(|q| q.handle_message(now, ip, msg))
    }

    /// Tells the querier on `ifindex`, if IGMP runs there, the interface's prefixes.
    pub fn set_subnets(&mut self, ifindex: u32, subnets: Vec<Subnet>) {
        if let Some(q) = lock(&self.queriers).get_mut(&ifindex) {
            q.set_subnets(subnets);
        }
    }

    /// The prefixes the querier on `ifindex` knows; `None` if IGMP does not run there.
    pub fn subnets(&self, ifindex: u32) -> Option<Vec<Subnet>> {
        lock(&self.queriers)
            .get(&ifindex)
            .map(|q| q.subnets().to_vec())
    }

    /// Runs every querier timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for q in lock(&self.queriers).values_mut() {
            q.handle_timeout(now);
        }
    }

    /// Every querier's timers move on by `by`, the time the daemon did not run
    /// ([`Querier::postpone`]).
    pub fn postpone(&mut self, by: std::time::Duration) {
        for q in lock(&self.queriers).values_mut() {
            q.postpone(by);
        }
    }

    /// When [`Igmp::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        lock(&self.queriers)
            .values()
            .filter_map(Querier::poll_timeout)
            .min()
    }

    /// The next query to send, with the interface to send it on.
    pub fn poll_transmit(&mut self) -> Option<(u32, Transmit)> {
        lock(&self.queriers)
            .iter_mut()
            .find_map(|(i, q)| q.poll_transmit().map(|t| (*i, t)))
    }

    /// Adds and deletes in `mgm` the memberships the queriers decided on since the last call,
    /// in order, and returns each with MGM's answer.
    pub fn apply_memberships(&mut self, mgm: &mut Mgm, now: Instant) -> Vec<Applied> {
        // Taken out first: MGM calls back into IGMP (enable_igmp) when a callback of these
        // memberships makes a routing protocol take or release an interface.
        let mut pending: Vec<querier::Membership> = Vec::new();
        for q in lock(&self.queriers).values_mut() {
            pending.extend(std::iter::from_fn(|| q.poll_membership()));
        }
        pending
            .into_iter()
            .map(|m| {
                let sg = entry(m.group, m.source);
                let id = InterfaceId::new(m.ifindex);
                // Spec §4.8: an EXCLUDE-mode group's blocked sources are exclusions.
                let flags = if m.exclude {
                    MGM_EXCLUDE_STATE_FLAG
                } else {
                    MGM_JOIN_STATE_FLAG
                };
                let result = if m.join {
                    mgm.add_group_membership_entry(self.handle, sg, id, flags, now)
                } else {
                    mgm.delete_group_membership_entry(self.handle, sg, id, flags, now)
                };
                Applied {
                    membership: m,
                    result,
                }
            })
            .collect()
    }

    /// Interfaces whose querier refused groups, sources or fast-leave hosts at the configured
    /// limits since the last call: (ifindex, groups, sources, hosts refused so far).
    pub fn new_limit_hits(&mut self) -> Vec<(u32, u64, u64, u64)> {
        let queriers = lock(&self.queriers);
        let mut out = Vec::new();
        for (ifindex, q) in queriers.iter() {
            let c = q.counters();
            let hits = c.group_limit_hits + c.source_limit_hits + c.host_limit_hits;
            let logged = self.limit_hits.entry(*ifindex).or_default();
            if hits > *logged {
                let (groups, sources, hosts) =
                    (c.group_limit_hits, c.source_limit_hits, c.host_limit_hits);
                out.push((*ifindex, groups, sources, hosts));
                *logged = hits;
            }
        }
        out
    }
}

/// (S,G) for a source, (\*,G) without one.
fn entry(group: Ipv4Addr, source: Option<Ipv4Addr>) -> SourceGroupEntry {
    match source {
        Some(s) => SourceGroupEntry::sg(s, group),
        None => SourceGroupEntry::star_g(group),
    }
}

/// IGMP's registration in the core.
struct IgmpClient {
    queriers: Queriers,
}

impl RoutingProtocol for IgmpClient {
    fn enable_igmp(&mut self, cx: &mut Cx, if_id: InterfaceId) {
        // Queued, so they run once the ownership change has returned (spec §3.1): as local
        // joins into a routing protocol that took the interface, or as IGMP's own after a
        // release.
        let queriers = lock(&self.queriers);
        let Some(q) = queriers.get(&if_id.ifindex) else {
            return;
        };
        // In order: a group's (*,G) comes before the exclusions that need it (spec §4.8).
        for (group, (source, exclude)) in q.forwarding() {
            cx.queue(Request::AddGroupMembership {
                sg: entry(group, source),
                if_id,
                flags: if exclude {
                    MGM_EXCLUDE_STATE_FLAG
                } else {
                    MGM_JOIN_STATE_FLAG
                },
            });
        }
    }

    fn request_done(&mut self, _cx: &mut Cx, request: &Request, result: Result<(), MgmError>) {
        if let Err(e) = result {
            warn!("IGMP: MGM refused to {request} after an ownership change: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Config;

    const G: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);

    #[test]
    fn a_second_start_on_one_interface_is_refused_and_stop_forgets_it() {
        let mut mgm = Mgm::new(Config::default());
        let mut igmp = Igmp::register(&mut mgm).unwrap();
        let now = Instant::from_millis(0);
        let addr = Ipv4Addr::new(198, 18, 1, 1);
        igmp.start(&mut mgm, 3, addr, querier::Config::default(), now)
            .unwrap();
        assert!(igmp.poll_transmit().is_some_and(|(i, _)| i == 3));
        assert!(matches!(
            igmp.start(&mut mgm, 3, addr, querier::Config::default(), now),
            Err(StartError::Take(MgmError::AlreadyExists))
        ));
        let report = IgmpMessage::V2Report { group: G };
        let host = IpHeader::conforming(Ipv4Addr::new(198, 18, 1, 2));
        assert_eq!(
            igmp.handle_message(3, now, host, &report),
            Some(Heard::Handled)
        );
        let applied = igmp.apply_memberships(&mut mgm, now);
        assert_eq!(applied.len(), 1);
        assert_eq!(applied[0].result, Ok(()));
        assert!(igmp.stop(&mut mgm, 3, now));
        assert!(!igmp.runs_on(3));
        assert_eq!(igmp.handle_message(3, now, host, &report), None);
        assert_eq!(
            mgm.get_protocol_on_interface(InterfaceId::new(3)),
            Err(MgmError::NotFound)
        );
    }

    #[test]
    fn spec10_an_interface_that_comes_back_gets_a_fresh_querier_and_forwards_again() {
        let mut mgm = Mgm::new(Config::default());
        let mut igmp = Igmp::register(&mut mgm).unwrap();
        let now = Instant::from_millis(0);
        let addr = Ipv4Addr::new(198, 18, 1, 1);
        let host = IpHeader::conforming(Ipv4Addr::new(198, 18, 1, 2));
        let report = IgmpMessage::V2Report { group: G };
        igmp.start(&mut mgm, 3, addr, querier::Config::default(), now)
            .unwrap();
        while igmp.poll_transmit().is_some() {}
        igmp.handle_message(3, now, host, &report);
        igmp.apply_memberships(&mut mgm, now);
        // The interface vanishes: the core releases it for every owner, IGMP forgets it.
        mgm.interface_removed(3, now);
        igmp.stop(&mut mgm, 3, now);
        assert_eq!(igmp.poll_timeout(), None);
        // It comes back as ifindex 7: startup queries, and the host's report forwards there.
        igmp.start(&mut mgm, 7, addr, querier::Config::default(), now)
            .unwrap();
        assert!(igmp.poll_transmit().is_some_and(|(i, _)| i == 7));
        igmp.handle_message(7, now, host, &report);
        let applied = igmp.apply_memberships(&mut mgm, now);
        assert_eq!(applied.len(), 1);
        assert_eq!(
            (applied[0].membership.ifindex, &applied[0].result),
            (7, &Ok(()))
        );
        assert_eq!(
            mgm.get_protocol_on_interface(InterfaceId::new(7)),
            Ok((ProtocolId::IGMP, ComponentId(0)))
        );
    }

    #[test]
    fn igmp_heard_on_the_upstream_makes_no_membership_anywhere() {
        // IGMP runs on the downstream only; the upstream (2) is the proxy's host side.
        const UP: u32 = 2;
        const DOWN: u32 = 3;
        let mut mgm = Mgm::new(Config::default());
        let mut igmp = Igmp::register(&mut mgm).unwrap();
        let now = Instant::from_millis(0);
        igmp.start(
            &mut mgm,
            DOWN,
            Ipv4Addr::new(198, 18, 1, 1),
            querier::Config::default(),
            now,
        )
        .unwrap();
        while igmp.poll_transmit().is_some() {}
        let upstream_host = IpHeader::conforming(Ipv4Addr::new(198, 18, 0, 2));
        let joins = [
            IgmpMessage::V1Report { group: G },
            IgmpMessage::V2Report { group: G },
            IgmpMessage::V3Report {
                records: vec![crate::igmp::GroupRecord {
                    kind: crate::igmp::RecordType::ChangeToExclude,
                    group: G,
                    sources: vec![],
                }],
                truncated: false,
            },
        ];
        for msg in &joins {
            assert_eq!(igmp.handle_message(UP, now, upstream_host, msg), None);
        }
        assert_eq!(igmp.apply_memberships(&mut mgm, now), []);
        assert!(igmp.queriers(|q| q[&DOWN].groups().next().is_none()));
        // The same report heard downstream does join there: the upstream made the difference.
        let downstream_host = IpHeader::conforming(Ipv4Addr::new(198, 18, 1, 2));
        igmp.handle_message(DOWN, now, downstream_host, &joins[1]);
        let applied = igmp.apply_memberships(&mut mgm, now);
        assert_eq!(applied.len(), 1);
        assert_eq!(
            (applied[0].membership.ifindex, applied[0].membership.join),
            (DOWN, true)
        );
    }
}
