//! The IGMP proxy (after RFC 4605). Its routing side owns the upstream interface, so every
//! MFE whose traffic arrives there has an owner to ask (spec §5.2), and it stands for the
//! downstream receivers upstream. MGM's join and prune alerts (spec §4.5, §4.6) tell it when
//! the first receiver for a (\*,G) or (S,G) appears downstream and when the last one goes.
//!
//! Its host side ([`Upstream`]) reports the downstream source filters of those groups, merged
//! into a filter mode and source list per group ([`downstream_state`]), upstream itself
//! (RFC 4605 §4.1, RFC 3376 §5), answering the upstream's queries from that state. The
//! kernel's host stack is not used: its memberships live in sockets, so a daemon that died
//! would have left every group upstream (the kernel sends the leaves when it closes them) and
//! a pruning upstream would stop the streams its XDP goes on forwarding.
//!
//! It also holds a (\*,\*) membership on the upstream interface, so traffic from downstream
//! sources goes upstream as well as to the other downstreams that want it (RFC 4605 §4.2).

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::Ipv4Addr,
    sync::{Arc, Mutex},
};

use crate::{
    core::{
        ComponentId, Cx, GroupFilter, Instant, InterfaceId, Mgm, ProtocolId, RoutingProtocol,
        SourceGroupEntry,
    },
    handover::HOLD,
    igmp::{
        host::{self, Host},
        querier::FilterMode,
        IgmpMessage,
    },
};

/// The proxy's protocol id: outside the ids Windows assigns to routing protocols.
pub const PROTOCOL_ID: ProtocolId = ProtocolId(0x4d47_0001);
pub const COMPONENT_ID: ComponentId = ComponentId(1);

/// Groups whose first or last receiver downstream came or went since the daemon last read
/// the downstream state (the routing side's join and prune alerts).
pub type UpstreamQueue = Arc<Mutex<BTreeSet<Ipv4Addr>>>;

/// Owner of the upstream interface. The RPF interface the core picks and the outgoing list it
/// computes from memberships are what a proxy wants, so those callbacks keep their defaults.
#[derive(Debug, Default)]
pub struct ProxyUpstream {
    changes: UpstreamQueue,
}

impl ProxyUpstream {
    /// A proxy that notes the groups its alerts are about in `changes`.
    pub fn new(changes: UpstreamQueue) -> Self {
        ProxyUpstream { changes }
    }

    fn push(&self, group: Ipv4Addr) {
        self.changes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(group);
    }
}

impl RoutingProtocol for ProxyUpstream {
    fn join_alert(&mut self, _cx: &mut Cx, sg: SourceGroupEntry, member_update: bool) {
        // Alerts without `member_update` are about one MFE's outgoing list, not receivers.
        if member_update && !sg.group.is_unspecified() {
            self.push(sg.group);
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
            self.push(sg.group);
        }
    }
}

/// What the receivers downstream of `upstream` want of `group`: every other interface's
/// source filter, merged as RFC 3376 §3.2 merges socket states (RFC 4605 §4.1). The proxy's
/// own (\*,\*) membership on the upstream interface is not a receiver and is left out.
pub fn downstream_state(mgm: &Mgm, group: Ipv4Addr, upstream: InterfaceId) -> Option<GroupFilter> {
    let filters = mgm.group_filters(group);
    GroupFilter::merge(
        filters
            .iter()
            .filter(|(id, _)| **id != upstream)
            .map(|(_, f)| f),
    )
}

/// A change of the groups the upstream interface must receive at the link layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterChange {
    Add(Ipv4Addr),
    Remove(Ipv4Addr),
}

/// The proxy's host side on the upstream interface, sans-IO: the merged downstream state of
/// each group, and the IGMP host that reports it (a filter mode and source list per group,
/// RFC 3376 §3.2).
#[derive(Debug)]
pub struct Upstream {
    /// The merged downstream state of each group ([`downstream_state`]).
    wanted: BTreeMap<Ipv4Addr, GroupFilter>,
    /// Adopted forwarding entries from the upstream, reported until the core has re-learned
    /// the receivers ([`Upstream::end_adoption`]).
    adopted: BTreeMap<Ipv4Addr, GroupFilter>,
    /// What the host reports of each group.
    reported: BTreeMap<Ipv4Addr, GroupFilter>,
    /// While an interface changes owner, no reported state shrinks before this moment: the
    /// new owner re-adds the receivers it keeps within the handover hold, and an upstream
    /// that prunes at once would cut them off in between.
    hold_until: Option<Instant>,
    /// The reported state, at the start of the hold, of each group that changed during it.
    held: BTreeMap<Ipv4Addr, Option<GroupFilter>>,
    host: Host,
    filter: VecDeque<FilterChange>,
}

impl Upstream {
    /// A host side with no group; `seed` drives its random report delays.
    pub fn new(config: host::Config, seed: u64) -> Upstream {
        Upstream {
            wanted: BTreeMap::new(),
            adopted: BTreeMap::new(),
            reported: BTreeMap::new(),
            hold_until: None,
            held: BTreeMap::new(),
            host: Host::new(config, seed),
            filter: VecDeque::new(),
        }
    }

    /// Sets the merged downstream state of `group` (`None`: no receiver).
    pub fn set(&mut self, now: Instant, group: Ipv4Addr, state: Option<GroupFilter>) {
        match state {
            Some(f) => self.wanted.insert(group, f),
            None => self.wanted.remove(&group),
        };
        self.update(now, group);
    }

    /// The merged downstream state of `group` last set.
    pub fn wanted(&self, group: Ipv4Addr) -> Option<&GroupFilter> {
        self.wanted.get(&group)
    }

    /// The groups some downstream receiver wants.
    pub fn wanted_groups(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.wanted.keys().copied()
    }

    /// An interface changed owner at `now`: for [`HOLD`], what the host reports only grows.
    pub fn hold(&mut self, now: Instant) {
        self.hold_until = Some(now + HOLD);
    }

    /// Takes the forwarding entries a previous daemon left that arrive on the upstream and go
    /// somewhere, as (source, group) with 0.0.0.0 for (\*,G): they are reported at once, so
    /// the upstream goes on sending them while the receivers are heard again.
    pub fn adopt(&mut self, now: Instant, entries: impl IntoIterator<Item = (Ipv4Addr, Ipv4Addr)>) {
        for (source, group) in entries {
            let entry = if source.is_unspecified() {
                GroupFilter::Exclude(BTreeSet::new())
            } else {
                GroupFilter::Include([source].into())
            };
            let merged = GroupFilter::merge(self.adopted.get(&group).into_iter().chain([&entry]));
            self.adopted.extend(merged.map(|m| (group, m)));
        }
        let groups: Vec<Ipv4Addr> = self.adopted.keys().copied().collect();
        for g in groups {
            self.update(now, g);
        }
    }

    /// The core has taken the adopted entries over: only its state counts from now on.
    pub fn end_adoption(&mut self, now: Instant) {
        let adopted = std::mem::take(&mut self.adopted);
        for g in adopted.into_keys() {
            self.update(now, g);
        }
    }

    /// The upstream interface is a new link (deleted and created again): nothing was
    /// reported on it, so every group of the interface state is reported at once and
    /// repeated, as a new membership (RFC 3376 §5.1), and let in at the link layer again;
    /// what was pending for the old link is dropped.
    pub fn relink(&mut self, now: Instant) {
        self.host.restart();
        self.filter.clear();
        let groups: BTreeSet<Ipv4Addr> = self
            .reported
            .keys()
            .chain(self.wanted.keys())
            .chain(self.adopted.keys())
            .copied()
            .collect();
        for g in groups {
            self.update(now, g);
        }
    }

    /// Leaves every group at once, for a planned stop.
    pub fn leave_all(&mut self, now: Instant) {
        for g in self.host.groups() {
            self.filter.push_back(FilterChange::Remove(g));
        }
        self.host.leave_all(now);
        self.wanted.clear();
        self.adopted.clear();
        self.reported.clear();
        self.held.clear();
        self.hold_until = None;
    }

    /// Takes an IGMP message heard on the upstream interface.
    pub fn handle_message(&mut self, now: Instant, msg: &IgmpMessage) {
        self.host.handle_message(now, msg);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.host.handle_timeout(now);
        if self.hold_until.is_some_and(|at| at <= now) {
            self.hold_until = None;
            for g in std::mem::take(&mut self.held).into_keys() {
                self.update(now, g);
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.host
            .poll_timeout()
            .into_iter()
            .chain(self.hold_until)
            .min()
    }

    /// The next report to send upstream.
    pub fn poll_transmit(&mut self) -> Option<host::Transmit> {
        self.host.poll_transmit()
    }

    /// The groups reported upstream.
    pub fn groups(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.host.groups()
    }

    /// The next change of the groups the interface must receive.
    pub fn poll_filter(&mut self) -> Option<FilterChange> {
        self.filter.pop_front()
    }

    /// The interface state of `group` (RFC 3376 §3.2): the downstream state merged with the
    /// adopted entries and, during a hold, with what was reported when it began.
    fn state(&mut self, now: Instant, group: Ipv4Addr) -> Option<GroupFilter> {
        let state = GroupFilter::merge(
            self.wanted
                .get(&group)
                .into_iter()
                .chain(self.adopted.get(&group)),
        );
        if self.hold_until.is_none_or(|at| at <= now) {
            return state;
        }
        let before = self
            .held
            .entry(group)
            .or_insert_with(|| self.reported.get(&group).cloned());
        GroupFilter::merge(state.iter().chain(before.iter()))
    }

    fn update(&mut self, now: Instant, group: Ipv4Addr) {
        let had = self.host.is_member(group);
        let state = self.state(now, group);
        let (mode, sources) = match &state {
            Some(GroupFilter::Exclude(x)) => (FilterMode::Exclude, x.clone()),
            Some(GroupFilter::Include(i)) => (FilterMode::Include, i.clone()),
            None => (FilterMode::Include, BTreeSet::new()),
        };
        self.host.set(now, group, mode, sources);
        match state {
            Some(s) => self.reported.insert(group, s),
            None => self.reported.remove(&group),
        };
        let has = self.host.is_member(group);
        match (had, has) {
            (false, true) => self.filter.push_back(FilterChange::Add(group)),
            (true, false) => self.filter.push_back(FilterChange::Remove(group)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::core::{Config, Instant, Mgm, MGM_EXCLUDE_STATE_FLAG, MGM_JOIN_STATE_FLAG};

    const G: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);
    const UP: InterfaceId = InterfaceId::new(1);
    const D1: InterfaceId = InterfaceId::new(2);
    const D2: InterfaceId = InterfaceId::new(3);

    #[test]
    fn entries_and_map_ops_read_as_the_operator_writes_them() {
        let sg = SourceGroupEntry::sg(Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(232, 1, 1, 1));
        assert_eq!(sg.to_string(), "(198.18.0.2, 232.1.1.1)");
        assert_eq!(SourceGroupEntry::star_g(G).to_string(), "(*, 239.1.1.1)");
        assert_eq!(SourceGroupEntry::star_star().to_string(), "(*, *)");
        let op = crate::core::MapOp::InstallMfe {
            source: Ipv4Addr::UNSPECIFIED,
            group: G,
            iif: UP,
            oifs: [InterfaceId::new(3), InterfaceId::new(4)].into(),
        };
        assert_eq!(
            op.to_string(),
            "install (*, 239.1.1.1) from ifindex 1 to 3, 4"
        );
    }

    /// The proxy on UP with its (\*,\*) membership there, and IGMP on D1 and D2, as `mgm run`
    /// registers them.
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
        mgm.add_group_membership_entry(
            proxy,
            SourceGroupEntry::star_star(),
            UP,
            MGM_JOIN_STATE_FLAG,
            now,
        )
        .unwrap();
        let igmp = crate::protocols::igmp::Igmp::register(&mut mgm)
            .unwrap()
            .handle();
        for d in [D1, D2] {
            mgm.take_interface_ownership(igmp, d, now).unwrap();
        }
        (mgm, igmp, queue)
    }

    fn drain(q: &UpstreamQueue) -> Vec<Ipv4Addr> {
        std::mem::take(&mut *q.lock().unwrap())
            .into_iter()
            .collect()
    }

    #[test]
    fn spec4_5_alerts_of_the_first_and_last_receiver_downstream_name_the_group() {
        let (mut mgm, igmp, queue) = setup();
        let now = Instant::from_millis(0);
        let star = SourceGroupEntry::star_g(G);
        mgm.add_group_membership_entry(igmp, star, D1, MGM_JOIN_STATE_FLAG, now)
            .unwrap();
        assert_eq!(drain(&queue), [G]);
        // A second interface of the same holder: no alert.
        mgm.add_group_membership_entry(igmp, star, D2, MGM_JOIN_STATE_FLAG, now)
            .unwrap();
        mgm.delete_group_membership_entry(igmp, star, D1, MGM_JOIN_STATE_FLAG, now)
            .unwrap();
        assert!(drain(&queue).is_empty());
        mgm.delete_group_membership_entry(igmp, star, D2, MGM_JOIN_STATE_FLAG, now)
            .unwrap();
        assert_eq!(drain(&queue), [G]);
    }

    use crate::igmp::{
        host::{self, ALL_IGMPV3_ROUTERS},
        GroupRecord, IgmpMessage, RecordType,
    };

    const S: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const S2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
    const S3: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 4);

    /// The v3 records `up` sends now, in order.
    fn records(up: &mut Upstream) -> Vec<GroupRecord> {
        std::iter::from_fn(|| up.poll_transmit())
            .flat_map(|t| {
                assert_eq!(t.destination, ALL_IGMPV3_ROUTERS);
                match t.message {
                    IgmpMessage::V3Report { records, .. } => records,
                    other => panic!("{other:?}"),
                }
            })
            .collect()
    }

    fn filter(up: &mut Upstream) -> Vec<FilterChange> {
        std::iter::from_fn(|| up.poll_filter()).collect()
    }

    fn record(kind: RecordType, sources: &[Ipv4Addr]) -> GroupRecord {
        GroupRecord {
            kind,
            group: G,
            sources: sources.to_vec(),
        }
    }

    fn include(sources: &[Ipv4Addr]) -> Option<GroupFilter> {
        Some(GroupFilter::Include(sources.iter().copied().collect()))
    }

    fn exclude(sources: &[Ipv4Addr]) -> Option<GroupFilter> {
        Some(GroupFilter::Exclude(sources.iter().copied().collect()))
    }

    /// IGMP's entries for `state` of G on `id` (spec §4.8: EXCLUDE(X) is (\*,G) plus an
    /// exclusion per source of X), added or, with `add` false, deleted.
    fn igmp_state(
        mgm: &mut Mgm,
        igmp: crate::core::ProtocolHandle,
        id: InterfaceId,
        state: &GroupFilter,
        add: bool,
    ) {
        let now = Instant::from_millis(0);
        let entries: Vec<(SourceGroupEntry, u32)> = match state {
            GroupFilter::Include(i) => i
                .iter()
                .map(|s| (SourceGroupEntry::sg(*s, G), MGM_JOIN_STATE_FLAG))
                .collect(),
            GroupFilter::Exclude(x) => {
                std::iter::once((SourceGroupEntry::star_g(G), MGM_JOIN_STATE_FLAG))
                    .chain(
                        x.iter()
                            .map(|s| (SourceGroupEntry::sg(*s, G), MGM_EXCLUDE_STATE_FLAG)),
                    )
                    .collect()
            }
        };
        // Exclusions go before the (*,G) join they stand under.
        let ordered: Vec<_> = if add {
            entries
        } else {
            entries.into_iter().rev().collect()
        };
        for (sg, flags) in ordered {
            if add {
                mgm.add_group_membership_entry(igmp, sg, id, flags, now)
                    .unwrap();
            } else {
                mgm.delete_group_membership_entry(igmp, sg, id, flags, now)
                    .unwrap();
            }
        }
    }

    #[test]
    fn rfc4605_4_1_the_downstream_states_merge_into_the_state_reported_upstream() {
        let (mut mgm, igmp, _queue) = setup();
        let mut up = Upstream::new(host::Config::default(), 1);
        // Each step 10 s after the last, once the last change's reports were repeated.
        let mut now = Instant::from_millis(0);
        let mut report = |mgm: &Mgm, up: &mut Upstream| {
            now = now + std::time::Duration::from_secs(10);
            settle(up, now);
            up.set(now, G, downstream_state(mgm, G, UP));
            records(up)
        };
        // The proxy's own (*,*) on UP is no receiver: nothing downstream, nothing upstream.
        assert_eq!(downstream_state(&mgm, G, UP), None);
        // INCLUDE {S, S2} on D2 alone.
        let d2 = include(&[S, S2]).unwrap();
        igmp_state(&mut mgm, igmp, D2, &d2, true);
        assert_eq!(
            report(&mgm, &mut up),
            [record(RecordType::AllowNewSources, &[S, S2])]
        );
        assert_eq!(filter(&mut up), [FilterChange::Add(G)]);
        // EXCLUDE {S, S3} on D1: EXCLUDE of what every EXCLUDE blocks and no INCLUDE lists.
        let d1 = exclude(&[S, S3]).unwrap();
        igmp_state(&mut mgm, igmp, D1, &d1, true);
        assert_eq!(downstream_state(&mgm, G, UP), exclude(&[S3]));
        assert_eq!(
            report(&mgm, &mut up),
            [record(RecordType::ChangeToExclude, &[S3])]
        );
        // D2 goes EXCLUDE {S2, S3} instead: the intersection of the EXCLUDE lists, {S3}, so
        // nothing changes upstream.
        igmp_state(&mut mgm, igmp, D2, &d2, false);
        let d2 = exclude(&[S2, S3]).unwrap();
        igmp_state(&mut mgm, igmp, D2, &d2, true);
        assert_eq!(downstream_state(&mgm, G, UP), exclude(&[S3]));
        assert!(report(&mgm, &mut up).is_empty());
        // D1 leaves: EXCLUDE {S2, S3}, the blocked S2 told as a BLOCK.
        igmp_state(&mut mgm, igmp, D1, &d1, false);
        assert_eq!(
            report(&mgm, &mut up),
            [record(RecordType::BlockOldSources, &[S2])]
        );
        // D2 leaves too: the proxy leaves the group upstream.
        igmp_state(&mut mgm, igmp, D2, &d2, false);
        assert_eq!(
            report(&mgm, &mut up),
            [record(RecordType::ChangeToInclude, &[])]
        );
        assert_eq!(filter(&mut up), [FilterChange::Remove(G)]);
        assert_eq!(up.groups().count(), 0);
    }

    /// Runs `up`'s timers due before `until` (the repetitions of its reports) and drains what
    /// they send.
    fn settle(up: &mut Upstream, until: Instant) {
        while let Some(at) = up.poll_timeout().filter(|at| *at < until) {
            up.handle_timeout(at);
            records(up);
        }
    }

    #[test]
    fn a_leave_during_the_handover_hold_is_held_and_a_join_in_time_cancels_it() {
        let mut up = Upstream::new(host::Config::default(), 1);
        let t = Instant::from_millis;
        up.set(t(0), G, exclude(&[]));
        filter(&mut up);
        settle(&mut up, t(10_000));
        // An interface changes owner; its receivers go, and come back 50 ms later.
        up.hold(t(10_000));
        up.set(t(10_000), G, None);
        assert!(records(&mut up).is_empty(), "the leave waits for the hold");
        assert_eq!(up.poll_timeout(), Some(t(10_000) + HOLD));
        up.set(t(10_050), G, exclude(&[]));
        up.handle_timeout(t(10_000) + HOLD);
        assert!(records(&mut up).is_empty());
        assert!(filter(&mut up).is_empty());
        assert_eq!(up.groups().collect::<Vec<_>>(), [G]);
        assert_eq!(up.poll_timeout(), None);
        // Another change of owner, and nobody wants G after it: it is left when the hold
        // ends. A group that comes during a hold is reported at once.
        let g2 = Ipv4Addr::new(239, 1, 1, 2);
        up.hold(t(20_000));
        up.set(t(20_000), G, None);
        up.set(t(20_010), g2, include(&[S]));
        assert_eq!(
            records(&mut up),
            [GroupRecord {
                kind: RecordType::AllowNewSources,
                group: g2,
                sources: vec![S],
            }]
        );
        settle(&mut up, t(20_000) + HOLD);
        assert_eq!(up.groups().count(), 2, "G is still reported");
        up.handle_timeout(t(20_000) + HOLD);
        assert_eq!(records(&mut up), [record(RecordType::ChangeToInclude, &[])]);
        assert_eq!(
            filter(&mut up),
            [FilterChange::Add(g2), FilterChange::Remove(G)]
        );
    }

    #[test]
    fn adopted_entries_are_reported_at_once_until_the_core_takes_over() {
        let mut up = Upstream::new(host::Config::default(), 1);
        let now = Instant::from_millis(0);
        up.adopt(now, [(S, G), (S2, G)]);
        assert_eq!(
            records(&mut up),
            [record(RecordType::AllowNewSources, &[S, S2])]
        );
        assert_eq!(filter(&mut up), [FilterChange::Add(G)]);
        // A host re-joined (*,G) downstream before the end of the adoption.
        up.set(now, G, exclude(&[]));
        assert_eq!(records(&mut up), [record(RecordType::ChangeToExclude, &[])]);
        up.end_adoption(now);
        assert!(records(&mut up).is_empty(), "the (*,G) join covers them");
        up.set(now, G, None);
        assert_eq!(records(&mut up), [record(RecordType::ChangeToInclude, &[])]);
        assert_eq!(filter(&mut up), [FilterChange::Remove(G)]);
    }

    #[test]
    fn adopted_groups_nobody_rejoined_are_left_when_the_adoption_ends() {
        let mut up = Upstream::new(host::Config::default(), 1);
        let now = Instant::from_millis(0);
        up.adopt(now, [(Ipv4Addr::UNSPECIFIED, G)]);
        assert_eq!(records(&mut up), [record(RecordType::ChangeToExclude, &[])]);
        up.end_adoption(now);
        assert_eq!(records(&mut up), [record(RecordType::ChangeToInclude, &[])]);
        assert_eq!(
            filter(&mut up),
            [FilterChange::Add(G), FilterChange::Remove(G)]
        );
    }

    #[test]
    fn a_new_upstream_link_hears_every_group_at_once_and_repeated() {
        let config = host::Config::default();
        let mut up = Upstream::new(config.clone(), 1);
        let t = Instant::from_millis;
        let g2 = Ipv4Addr::new(239, 1, 1, 2);
        up.set(t(0), G, exclude(&[]));
        up.set(t(0), g2, include(&[S]));
        filter(&mut up);
        settle(&mut up, t(10_000));
        // A change made while the link was gone was for the old link.
        up.set(t(10_000), g2, include(&[S, S2]));
        assert_eq!(up.poll_filter(), None);
        up.relink(t(10_500));
        let first = [
            record(RecordType::ChangeToExclude, &[]),
            GroupRecord {
                kind: RecordType::AllowNewSources,
                group: g2,
                sources: vec![S, S2],
            },
        ];
        assert_eq!(records(&mut up), first, "every group at once, as new");
        assert_eq!(
            filter(&mut up),
            [FilterChange::Add(G), FilterChange::Add(g2)]
        );
        // Each sent robustness times in all, as a host's first report (RFC 3376 §5.1).
        let mut repeats = Vec::new();
        while let Some(at) = up.poll_timeout().filter(|at| *at < t(20_000)) {
            up.handle_timeout(at);
            repeats.extend(records(&mut up));
        }
        let times = |r: &GroupRecord| 1 + repeats.iter().filter(|x| *x == r).count();
        assert!(
            first
                .iter()
                .all(|r| times(r) == usize::from(config.robustness)),
            "{repeats:?}"
        );
        assert_eq!(
            repeats.len(),
            first.len() * usize::from(config.robustness - 1)
        );
        assert_eq!(up.groups().collect::<Vec<_>>(), [G, g2]);
    }
}
