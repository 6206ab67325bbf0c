//! The IGMP proxy (after RFC 4605). Its routing side owns the upstream interface, so every
//! MFE whose traffic arrives there has an owner to ask (spec §5.2), and it stands for the
//! downstream receivers upstream. MGM's join and prune alerts (spec §4.5, §4.6) tell it when
//! the first receiver for a (\*,G) or (S,G) appears downstream and when the last one goes.
//!
//! Its host side ([`Upstream`]) turns those into a filter mode and source list per group and
//! reports them upstream itself (RFC 4605 §4.1, RFC 3376 §5), answering the upstream's queries
//! from that state. The kernel's host stack is not used: its memberships live in sockets, so a
//! daemon that died would have left every group upstream (the kernel sends the leaves when it
//! closes them) and a pruning upstream would stop the streams its XDP goes on forwarding.
//!
//! It also holds a (\*,\*) membership on the upstream interface, so traffic from downstream
//! sources goes upstream as well as to the other downstreams that want it (RFC 4605 §4.2).

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::Ipv4Addr,
    sync::{Arc, Mutex},
};

use crate::{
    core::{ComponentId, Cx, Instant, InterfaceId, ProtocolId, RoutingProtocol, SourceGroupEntry},
    igmp::{
        host::{self, Host},
        querier::FilterMode,
        IgmpMessage,
    },
};

/// The proxy's protocol id: outside the ids Windows assigns to routing protocols.
pub const PROTOCOL_ID: ProtocolId = ProtocolId(0x4d47_0001);
pub const COMPONENT_ID: ComponentId = ComponentId(1);

/// A change of the proxy's host membership on the upstream interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamChange {
    Join(SourceGroupEntry),
    Leave(SourceGroupEntry),
}

/// "join (198.18.0.2, 232.1.1.1)", "leave (*, 239.1.1.1)".
impl std::fmt::Display for UpstreamChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamChange::Join(sg) => write!(f, "join {sg}"),
            UpstreamChange::Leave(sg) => write!(f, "leave {sg}"),
        }
    }
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

/// What the receivers downstream want of one group, from the core's join alerts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Joins {
    /// A (\*,G) join: every source.
    any_source: bool,
    /// (S,G) joins.
    sources: BTreeSet<Ipv4Addr>,
}

/// A change of the groups the upstream interface must receive at the link layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterChange {
    Add(Ipv4Addr),
    Remove(Ipv4Addr),
}

/// The proxy's host side on the upstream interface, sans-IO: the joins it was given, the
/// interface state per group they make, and the IGMP host that reports it.
///
/// Each group's state is a filter mode and a source list, as RFC 3376 §3.2 merges them: today
/// a (\*,G) join makes EXCLUDE {} and (S,G) joins make INCLUDE of their sources, and a
/// merge of downstream EXCLUDE filters would set the same state.
#[derive(Debug)]
pub struct Upstream {
    joins: BTreeMap<Ipv4Addr, Joins>,
    /// Adopted forwarding entries from the upstream, as joins, reported until the core has
    /// re-learned the receivers ([`Upstream::end_adoption`]).
    adopted: BTreeMap<Ipv4Addr, Joins>,
    host: Host,
    filter: VecDeque<FilterChange>,
}

impl Upstream {
    /// A host side with no group; `seed` drives its random report delays.
    pub fn new(config: host::Config, seed: u64) -> Upstream {
        Upstream {
            joins: BTreeMap::new(),
            adopted: BTreeMap::new(),
            host: Host::new(config, seed),
            filter: VecDeque::new(),
        }
    }

    /// Applies one membership change the routing side decided.
    pub fn apply(&mut self, now: Instant, change: UpstreamChange) {
        let (UpstreamChange::Join(sg) | UpstreamChange::Leave(sg)) = change;
        let joins = self.joins.entry(sg.group).or_default();
        let join = matches!(change, UpstreamChange::Join(_));
        if sg.source.is_unspecified() {
            joins.any_source = join;
        } else if join {
            joins.sources.insert(sg.source);
        } else {
            joins.sources.remove(&sg.source);
        }
        if *joins == Joins::default() {
            self.joins.remove(&sg.group);
        }
        self.update(now, sg.group);
    }

    /// Takes the forwarding entries a previous daemon left that arrive on the upstream and go
    /// somewhere, as (source, group) with 0.0.0.0 for (\*,G): they are reported at once, so
    /// the upstream goes on sending them while the receivers are heard again.
    pub fn adopt(&mut self, now: Instant, entries: impl IntoIterator<Item = (Ipv4Addr, Ipv4Addr)>) {
        for (source, group) in entries {
            let joins = self.adopted.entry(group).or_default();
            if source.is_unspecified() {
                joins.any_source = true;
            } else {
                joins.sources.insert(source);
            }
        }
        let groups: Vec<Ipv4Addr> = self.adopted.keys().copied().collect();
        for g in groups {
            self.update(now, g);
        }
    }

    /// The core has taken the adopted entries over: only its joins count from now on.
    pub fn end_adoption(&mut self, now: Instant) {
        let adopted = std::mem::take(&mut self.adopted);
        for g in adopted.into_keys() {
            self.update(now, g);
        }
    }

    /// Leaves every group at once, for a planned stop.
    pub fn leave_all(&mut self, now: Instant) {
        for g in self.host.groups() {
            self.filter.push_back(FilterChange::Remove(g));
        }
        self.host.leave_all(now);
        self.joins.clear();
        self.adopted.clear();
    }

    /// Takes an IGMP message heard on the upstream interface.
    pub fn handle_message(&mut self, now: Instant, msg: &IgmpMessage) {
        self.host.handle_message(now, msg);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.host.handle_timeout(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.host.poll_timeout()
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

    /// The interface state of `group` (RFC 3376 §3.2): EXCLUDE {} with a (\*,G) join, else
    /// INCLUDE of the joined sources, adopted ones included.
    fn state(&self, group: Ipv4Addr) -> (FilterMode, BTreeSet<Ipv4Addr>) {
        let all = [self.joins.get(&group), self.adopted.get(&group)];
        if all.iter().flatten().any(|j| j.any_source) {
            return (FilterMode::Exclude, BTreeSet::new());
        }
        let sources = all
            .into_iter()
            .flatten()
            .flat_map(|j| j.sources.iter().copied())
            .collect();
        (FilterMode::Include, sources)
    }

    fn update(&mut self, now: Instant, group: Ipv4Addr) {
        let had = self.host.is_member(group);
        let (mode, sources) = self.state(group);
        self.host.set(now, group, mode, sources);
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
    use crate::core::{Config, Instant, Mgm, MGM_JOIN_STATE_FLAG};

    const G: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);
    const UP: InterfaceId = InterfaceId::new(1);
    const D1: InterfaceId = InterfaceId::new(2);
    const D2: InterfaceId = InterfaceId::new(3);

    #[test]
    fn upstream_changes_and_entries_read_as_the_operator_writes_them() {
        let sg = SourceGroupEntry::sg(Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(232, 1, 1, 1));
        assert_eq!(
            UpstreamChange::Join(sg).to_string(),
            "join (198.18.0.2, 232.1.1.1)"
        );
        assert_eq!(
            UpstreamChange::Leave(SourceGroupEntry::star_g(G)).to_string(),
            "leave (*, 239.1.1.1)"
        );
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
        let igmp = crate::protocols::igmp::Igmp::register(&mut mgm)
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

    use crate::igmp::{
        host::{self, ALL_IGMPV3_ROUTERS},
        GroupRecord, IgmpMessage, RecordType,
    };

    const S: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const S2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);

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

    #[test]
    fn rfc4605_4_1_joins_become_the_groups_filter_mode_and_sources_upstream() {
        let mut up = Upstream::new(host::Config::default(), 1);
        let now = Instant::from_millis(0);
        up.apply(now, UpstreamChange::Join(SourceGroupEntry::sg(S, G)));
        assert_eq!(
            records(&mut up),
            [record(RecordType::AllowNewSources, &[S])]
        );
        assert_eq!(filter(&mut up), [FilterChange::Add(G)]);
        // A (*,G) join on top makes the group EXCLUDE {}.
        up.apply(now, UpstreamChange::Join(SourceGroupEntry::star_g(G)));
        assert_eq!(records(&mut up), [record(RecordType::ChangeToExclude, &[])]);
        up.apply(now, UpstreamChange::Leave(SourceGroupEntry::star_g(G)));
        assert_eq!(
            records(&mut up),
            [record(RecordType::ChangeToInclude, &[S])]
        );
        assert!(filter(&mut up).is_empty(), "still a member");
        up.apply(now, UpstreamChange::Leave(SourceGroupEntry::sg(S, G)));
        assert_eq!(filter(&mut up), [FilterChange::Remove(G)]);
        assert_eq!(up.groups().count(), 0);
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
        up.apply(now, UpstreamChange::Join(SourceGroupEntry::star_g(G)));
        assert_eq!(records(&mut up), [record(RecordType::ChangeToExclude, &[])]);
        up.end_adoption(now);
        assert!(records(&mut up).is_empty(), "the (*,G) join covers them");
        up.apply(now, UpstreamChange::Leave(SourceGroupEntry::star_g(G)));
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
}
