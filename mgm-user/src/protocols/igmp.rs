//! IGMP, the router side (protocol id 10): turns the reports heard on each interface into
//! group-membership entries on the MGM core (spec §4), after RFC 3376 §6.4's filter rules.
//!
//! What this does not do yet (README "Not yet"): no querier, so memberships last until the
//! host leaves; leaves act at once (one host per interface is assumed);
//! `BLOCK_OLD_SOURCES` in EXCLUDE mode is ignored rather than queried; the sources of an
//! EXCLUDE filter are not excluded, because MGM memberships can only say "forward", so
//! EXCLUDE(X) joins (*,G).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use crate::{
    core::{RoutingProtocol, SourceGroupEntry},
    igmp::{IgmpMessage, RecordType},
};

/// What one interface wants of one group (RFC 3376 §6.1 router filter state, without timers).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Filter {
    /// Traffic from these sources only.
    Include(BTreeSet<Ipv4Addr>),
    /// Traffic from every source except these.
    Exclude(BTreeSet<Ipv4Addr>),
}

impl Filter {
    /// The membership entries this filter asks MGM for.
    fn entries(&self, group: Ipv4Addr) -> BTreeSet<SourceGroupEntry> {
        match self {
            Filter::Exclude(_) => [SourceGroupEntry::star_g(group)].into(),
            Filter::Include(sources) => sources
                .iter()
                .map(|s| SourceGroupEntry::sg(*s, group))
                .collect(),
        }
    }
}

/// One membership entry to add to or delete from the core, for IGMP on `ifindex`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipDelta {
    pub ifindex: u32,
    pub entry: SourceGroupEntry,
    pub join: bool,
}

/// The filter state of every interface IGMP runs on.
#[derive(Debug, Default)]
pub struct IgmpMembership {
    interfaces: BTreeSet<u32>,
    /// (ifindex, group) → filter.
    filters: BTreeMap<(u32, Ipv4Addr), Filter>,
}

impl IgmpMembership {
    /// IGMP on `interfaces`; messages heard elsewhere are ignored.
    pub fn new(interfaces: impl IntoIterator<Item = u32>) -> Self {
        IgmpMembership {
            interfaces: interfaces.into_iter().collect(),
            filters: BTreeMap::new(),
        }
    }

    /// Applies one IGMP message heard on `ifindex` and returns the membership entries to add
    /// and delete, additions first so no packet meets a gap.
    pub fn on_igmp(&mut self, ifindex: u32, msg: &IgmpMessage) -> Vec<MembershipDelta> {
        if !self.interfaces.contains(&ifindex) {
            return Vec::new();
        }
        let mut groups: Vec<Ipv4Addr> = Vec::new();
        let mut touch = |g: Ipv4Addr| {
            if !groups.contains(&g) {
                groups.push(g);
            }
        };
        match msg {
            IgmpMessage::V1Report { group }
            | IgmpMessage::V2Report { group }
            | IgmpMessage::V2Leave { group } => touch(*group),
            IgmpMessage::V3Report { records, .. } => records.iter().for_each(|r| touch(r.group)),
            IgmpMessage::Query { .. } => {}
        }
        let before: Vec<BTreeSet<SourceGroupEntry>> =
            groups.iter().map(|g| self.entries(ifindex, *g)).collect();
        match msg {
            IgmpMessage::V1Report { group } | IgmpMessage::V2Report { group } => {
                self.set(ifindex, *group, Some(Filter::Exclude(BTreeSet::new())));
            }
            IgmpMessage::V2Leave { group } => self.set(ifindex, *group, None),
            IgmpMessage::V3Report { records, .. } => {
                // In order: a later record for a group sees what the earlier one did.
                for r in records {
                    let next = self.apply_record(ifindex, r.kind, r.group, &r.sources);
                    self.set(ifindex, r.group, next);
                }
            }
            IgmpMessage::Query { .. } => {}
        }
        let mut joins = Vec::new();
        let mut leaves = Vec::new();
        for (group, before) in groups.iter().zip(before) {
            let after = self.entries(ifindex, *group);
            joins.extend(after.difference(&before).map(|e| MembershipDelta {
                ifindex,
                entry: *e,
                join: true,
            }));
            leaves.extend(before.difference(&after).map(|e| MembershipDelta {
                ifindex,
                entry: *e,
                join: false,
            }));
        }
        joins.extend(leaves);
        joins
    }

    /// The membership entries `ifindex` holds for `group`.
    fn entries(&self, ifindex: u32, group: Ipv4Addr) -> BTreeSet<SourceGroupEntry> {
        self.filters
            .get(&(ifindex, group))
            .map(|f| f.entries(group))
            .unwrap_or_default()
    }

    /// The next filter of `ifindex` for `group` after one v3 record (RFC 3376 §6.4, minus the
    /// timers and queries this proxy does not run yet).
    fn apply_record(
        &self,
        ifindex: u32,
        kind: RecordType,
        group: Ipv4Addr,
        sources: &[Ipv4Addr],
    ) -> Option<Filter> {
        let listed: BTreeSet<Ipv4Addr> = sources.iter().copied().collect();
        let current = self.filters.get(&(ifindex, group)).cloned();
        let include = |s: BTreeSet<Ipv4Addr>| (!s.is_empty()).then_some(Filter::Include(s));
        match (kind, current) {
            (RecordType::ModeIsExclude | RecordType::ChangeToExclude, _) => {
                Some(Filter::Exclude(listed))
            }
            (RecordType::ModeIsInclude | RecordType::ChangeToInclude, _) => include(listed),
            (RecordType::AllowNewSources, Some(Filter::Exclude(x))) => {
                Some(Filter::Exclude(&x - &listed))
            }
            (RecordType::AllowNewSources, Some(Filter::Include(i))) => include(&i | &listed),
            (RecordType::AllowNewSources, None) => include(listed),
            (RecordType::BlockOldSources, Some(Filter::Include(i))) => include(&i - &listed),
            (RecordType::BlockOldSources, other) => other,
        }
    }

    fn set(&mut self, ifindex: u32, group: Ipv4Addr, filter: Option<Filter>) {
        match filter {
            Some(f) => {
                self.filters.insert((ifindex, group), f);
            }
            None => {
                self.filters.remove(&(ifindex, group));
            }
        }
    }
}

/// IGMP's registration with the core. Memberships reach the core as API calls from the
/// daemon (driven by [`IgmpMembership`]), so no callback needs an answer: while IGMP owns its
/// interfaces alone, the defaults are right. Co-ownership with a routing protocol (the
/// disable/enable-IGMP re-add of spec §3.1) comes with the routing-protocol modules.
#[derive(Debug, Default)]
pub struct IgmpClient;

impl RoutingProtocol for IgmpClient {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::igmp::GroupRecord;

    const D1: u32 = 2;
    const D2: u32 = 3;
    const G: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);
    const G2: Ipv4Addr = Ipv4Addr::new(239, 2, 2, 2);
    const S1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const S2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);

    fn join(ifindex: u32, entry: SourceGroupEntry) -> MembershipDelta {
        MembershipDelta {
            ifindex,
            entry,
            join: true,
        }
    }

    fn leave(ifindex: u32, entry: SourceGroupEntry) -> MembershipDelta {
        MembershipDelta {
            ifindex,
            entry,
            join: false,
        }
    }

    fn v3(records: &[(RecordType, Ipv4Addr, &[Ipv4Addr])]) -> IgmpMessage {
        IgmpMessage::V3Report {
            records: records
                .iter()
                .map(|(kind, group, sources)| GroupRecord {
                    kind: *kind,
                    group: *group,
                    sources: sources.to_vec(),
                })
                .collect(),
            truncated: false,
        }
    }

    fn igmp() -> IgmpMembership {
        IgmpMembership::new([D1, D2])
    }

    #[test]
    fn rfc2236_report_joins_star_g_and_leave_deletes_it() {
        let mut m = igmp();
        let star = SourceGroupEntry::star_g(G);
        assert_eq!(
            m.on_igmp(D1, &IgmpMessage::V2Report { group: G }),
            [join(D1, star)]
        );
        assert_eq!(
            m.on_igmp(D2, &IgmpMessage::V1Report { group: G }),
            [join(D2, star)]
        );
        assert_eq!(
            m.on_igmp(D1, &IgmpMessage::V2Leave { group: G }),
            [leave(D1, star)]
        );
    }

    #[test]
    fn repeated_reports_and_leaves_of_unknown_groups_change_nothing() {
        let mut m = igmp();
        m.on_igmp(D1, &IgmpMessage::V2Report { group: G });
        assert!(m
            .on_igmp(D1, &IgmpMessage::V2Report { group: G })
            .is_empty());
        assert!(m
            .on_igmp(D1, &IgmpMessage::V2Leave { group: G2 })
            .is_empty());
    }

    #[test]
    fn messages_on_interfaces_without_igmp_are_ignored() {
        assert!(igmp()
            .on_igmp(99, &IgmpMessage::V2Report { group: G })
            .is_empty());
    }

    #[test]
    fn rfc3376_include_sources_join_sg_and_block_of_the_last_one_leaves() {
        let mut m = igmp();
        let sg1 = SourceGroupEntry::sg(S1, G);
        let sg2 = SourceGroupEntry::sg(S2, G);
        assert_eq!(
            m.on_igmp(D1, &v3(&[(RecordType::ChangeToInclude, G, &[S1])])),
            [join(D1, sg1)]
        );
        assert_eq!(
            m.on_igmp(D1, &v3(&[(RecordType::AllowNewSources, G, &[S2])])),
            [join(D1, sg2)]
        );
        assert_eq!(
            m.on_igmp(D1, &v3(&[(RecordType::BlockOldSources, G, &[S1])])),
            [leave(D1, sg1)]
        );
        assert_eq!(
            m.on_igmp(D1, &v3(&[(RecordType::BlockOldSources, G, &[S2])])),
            [leave(D1, sg2)]
        );
        assert!(m.filters.is_empty());
    }

    #[test]
    fn rfc3376_switch_from_include_to_exclude_joins_before_it_leaves() {
        let mut m = igmp();
        m.on_igmp(D1, &v3(&[(RecordType::ModeIsInclude, G, &[S1])]));
        assert_eq!(
            m.on_igmp(D1, &v3(&[(RecordType::ChangeToExclude, G, &[])])),
            [
                join(D1, SourceGroupEntry::star_g(G)),
                leave(D1, SourceGroupEntry::sg(S1, G))
            ]
        );
        assert_eq!(
            m.on_igmp(D1, &v3(&[(RecordType::ChangeToInclude, G, &[])])),
            [leave(D1, SourceGroupEntry::star_g(G))]
        );
    }

    #[test]
    fn one_report_with_records_for_several_groups_and_two_for_one_group() {
        let mut m = igmp();
        let deltas = m.on_igmp(
            D1,
            &v3(&[
                (RecordType::AllowNewSources, G, &[S1]),
                (RecordType::ChangeToExclude, G2, &[]),
                (RecordType::AllowNewSources, G, &[S2]),
            ]),
        );
        assert_eq!(
            deltas,
            [
                join(D1, SourceGroupEntry::sg(S1, G)),
                join(D1, SourceGroupEntry::sg(S2, G)),
                join(D1, SourceGroupEntry::star_g(G2)),
            ]
        );
    }

    #[test]
    fn block_in_exclude_mode_is_ignored_without_a_querier() {
        let mut m = igmp();
        m.on_igmp(D1, &v3(&[(RecordType::ChangeToExclude, G, &[])]));
        assert!(m
            .on_igmp(D1, &v3(&[(RecordType::BlockOldSources, G, &[S1])]))
            .is_empty());
    }
}
