//! A minimal IGMP proxy (after RFC 4605 §4): one upstream interface, N downstream ones. Group
//! membership heard on a downstream interface pulls that group's traffic from upstream to it.
//!
//! What this does not do yet (README "Status"): no querier, so memberships last until the
//! host leaves; leaves act at once (one host per interface is assumed); no upstream reports;
//! `BLOCK_OLD_SOURCES` in EXCLUDE mode is ignored rather than queried. The spec-exact MGM core
//! is not in this path yet.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use crate::{
    core::{InterfaceId, MapOp},
    igmp::{IgmpMessage, RecordType},
};

/// What one downstream interface wants of one group (RFC 3376 §6.1 router filter state,
/// without timers).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Filter {
    /// Traffic from these sources only.
    Include(BTreeSet<Ipv4Addr>),
    /// Traffic from every source except these.
    Exclude(BTreeSet<Ipv4Addr>),
}

impl Filter {
    fn wants(&self, source: Ipv4Addr) -> bool {
        match self {
            Filter::Include(s) => s.contains(&source),
            Filter::Exclude(s) => !s.contains(&source),
        }
    }
}

/// A membership change the proxy made, for the daemon's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipChange {
    pub ifindex: u32,
    pub group: Ipv4Addr,
    /// `None`: the interface no longer wants the group.
    pub filter: Option<String>,
}

#[derive(Debug)]
pub struct IgmpProxy {
    upstream: InterfaceId,
    downstreams: BTreeSet<u32>,
    /// group → downstream ifindex → filter.
    groups: BTreeMap<Ipv4Addr, BTreeMap<u32, Filter>>,
    /// What the data plane holds, by (source, group): the outgoing list of each entry.
    installed: BTreeMap<(Ipv4Addr, Ipv4Addr), BTreeSet<InterfaceId>>,
}

impl IgmpProxy {
    pub fn new(upstream: u32, downstreams: impl IntoIterator<Item = u32>) -> Self {
        IgmpProxy {
            upstream: InterfaceId::new(upstream),
            downstreams: downstreams.into_iter().collect(),
            groups: BTreeMap::new(),
            installed: BTreeMap::new(),
        }
    }

    /// Applies one IGMP message heard on `ifindex`. Returns the membership changes it made and
    /// the map operations that bring the data plane in line.
    pub fn on_igmp(
        &mut self,
        ifindex: u32,
        msg: &IgmpMessage,
    ) -> (Vec<MembershipChange>, Vec<MapOp>) {
        if !self.downstreams.contains(&ifindex) {
            // Upstream reports and queries are the upstream router's business.
            return (Vec::new(), Vec::new());
        }
        let mut touched = BTreeSet::new();
        match msg {
            IgmpMessage::V1Report { group } | IgmpMessage::V2Report { group } => {
                self.set(ifindex, *group, Some(Filter::Exclude(BTreeSet::new())));
                touched.insert(*group);
            }
            IgmpMessage::V2Leave { group } => {
                self.set(ifindex, *group, None);
                touched.insert(*group);
            }
            IgmpMessage::V3Report { records, .. } => {
                for r in records {
                    let next = self.apply_record(ifindex, r.kind, r.group, &r.sources);
                    self.set(ifindex, r.group, next);
                    touched.insert(r.group);
                }
            }
            IgmpMessage::Query { .. } => {}
        }
        let changes = touched
            .iter()
            .map(|g| MembershipChange {
                ifindex,
                group: *g,
                filter: self
                    .groups
                    .get(g)
                    .and_then(|m| m.get(&ifindex))
                    .map(|f| format!("{f:?}")),
            })
            .collect();
        let ops = touched.into_iter().flat_map(|g| self.sync(g)).collect();
        (changes, ops)
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
        let current = self
            .groups
            .get(&group)
            .and_then(|m| m.get(&ifindex))
            .cloned();
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
        let per_if = self.groups.entry(group).or_default();
        match filter {
            Some(f) => {
                per_if.insert(ifindex, f);
            }
            None => {
                per_if.remove(&ifindex);
                if per_if.is_empty() {
                    self.groups.remove(&group);
                }
            }
        }
    }

    /// Recomputes the entries of `group` and returns the ops that turn what is installed into
    /// them: a (*,G) entry for the interfaces in EXCLUDE mode, and an (S,G) entry for every
    /// source whose outgoing list differs from the (*,G) one (negative if it is empty).
    /// Installs come before deletes, so no packet meets a gap between two entries.
    fn sync(&mut self, group: Ipv4Addr) -> Vec<MapOp> {
        let wanted = self.wanted(group);
        let mut ops = Vec::new();
        let stale: Vec<_> = self
            .installed
            .range((Ipv4Addr::UNSPECIFIED, group)..)
            .filter(|((_, g), _)| *g == group)
            .map(|(k, _)| *k)
            .filter(|k| !wanted.contains_key(k))
            .collect();
        for (key, oifs) in wanted {
            if self.installed.get(&key) != Some(&oifs) {
                self.installed.insert(key, oifs.clone());
                ops.push(MapOp::InstallMfe {
                    source: key.0,
                    group,
                    iif: self.upstream,
                    oifs,
                });
            }
        }
        for key in stale {
            self.installed.remove(&key);
            ops.push(MapOp::DeleteMfe {
                source: key.0,
                group,
            });
        }
        ops
    }

    fn wanted(&self, group: Ipv4Addr) -> BTreeMap<(Ipv4Addr, Ipv4Addr), BTreeSet<InterfaceId>> {
        let mut wanted = BTreeMap::new();
        let Some(per_if) = self.groups.get(&group) else {
            return wanted;
        };
        let any_source: BTreeSet<InterfaceId> = per_if
            .iter()
            .filter(|(_, f)| matches!(f, Filter::Exclude(_)))
            .map(|(i, _)| InterfaceId::new(*i))
            .collect();
        let sources: BTreeSet<Ipv4Addr> = per_if
            .values()
            .flat_map(|f| match f {
                Filter::Include(s) | Filter::Exclude(s) => s.iter().copied(),
            })
            .collect();
        for s in sources {
            let oifs: BTreeSet<InterfaceId> = per_if
                .iter()
                .filter(|(_, f)| f.wants(s))
                .map(|(i, _)| InterfaceId::new(*i))
                .collect();
            if oifs != any_source {
                wanted.insert((s, group), oifs);
            }
        }
        if !any_source.is_empty() {
            wanted.insert((Ipv4Addr::UNSPECIFIED, group), any_source);
        }
        wanted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::igmp::GroupRecord;

    const UP: u32 = 1;
    const D1: u32 = 2;
    const D2: u32 = 3;
    const G: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);
    const S1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const S2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
    const ANY: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

    fn oifs(ifs: &[u32]) -> BTreeSet<InterfaceId> {
        ifs.iter().map(|i| InterfaceId::new(*i)).collect()
    }

    fn install(source: Ipv4Addr, ifs: &[u32]) -> MapOp {
        MapOp::InstallMfe {
            source,
            group: G,
            iif: InterfaceId::new(UP),
            oifs: oifs(ifs),
        }
    }

    fn v3(kind: RecordType, sources: &[Ipv4Addr]) -> IgmpMessage {
        IgmpMessage::V3Report {
            records: vec![GroupRecord {
                kind,
                group: G,
                sources: sources.to_vec(),
            }],
            truncated: false,
        }
    }

    fn proxy() -> IgmpProxy {
        IgmpProxy::new(UP, [D1, D2])
    }

    #[test]
    fn rfc2236_report_then_leave_installs_then_deletes_star_g() {
        let mut p = proxy();
        let (_, ops) = p.on_igmp(D1, &IgmpMessage::V2Report { group: G });
        assert_eq!(ops, [install(ANY, &[D1])]);
        let (_, ops) = p.on_igmp(D2, &IgmpMessage::V2Report { group: G });
        assert_eq!(ops, [install(ANY, &[D1, D2])]);
        let (_, ops) = p.on_igmp(D1, &IgmpMessage::V2Leave { group: G });
        assert_eq!(ops, [install(ANY, &[D2])]);
        let (_, ops) = p.on_igmp(D2, &IgmpMessage::V2Leave { group: G });
        assert_eq!(
            ops,
            [MapOp::DeleteMfe {
                source: ANY,
                group: G
            }]
        );
    }

    #[test]
    fn repeated_report_changes_nothing() {
        let mut p = proxy();
        p.on_igmp(D1, &IgmpMessage::V2Report { group: G });
        let (_, ops) = p.on_igmp(D1, &IgmpMessage::V2Report { group: G });
        assert!(ops.is_empty());
    }

    #[test]
    fn reports_on_upstream_are_ignored() {
        let mut p = proxy();
        let (changes, ops) = p.on_igmp(UP, &IgmpMessage::V2Report { group: G });
        assert!(changes.is_empty() && ops.is_empty());
    }

    #[test]
    fn rfc3376_ssm_include_installs_only_that_source() {
        let mut p = proxy();
        let (_, ops) = p.on_igmp(D1, &v3(RecordType::ChangeToInclude, &[S1]));
        assert_eq!(ops, [install(S1, &[D1])]);
        let (_, ops) = p.on_igmp(D1, &v3(RecordType::AllowNewSources, &[S2]));
        assert_eq!(ops, [install(S2, &[D1])]);
        let (_, ops) = p.on_igmp(D1, &v3(RecordType::BlockOldSources, &[S1]));
        assert_eq!(
            ops,
            [MapOp::DeleteMfe {
                source: S1,
                group: G
            }]
        );
        // Blocking the last source is a leave.
        let (_, ops) = p.on_igmp(D1, &v3(RecordType::BlockOldSources, &[S2]));
        assert_eq!(
            ops,
            [MapOp::DeleteMfe {
                source: S2,
                group: G
            }]
        );
        assert!(p.groups.is_empty());
    }

    #[test]
    fn rfc3376_to_in_empty_is_a_leave() {
        let mut p = proxy();
        p.on_igmp(D1, &v3(RecordType::ChangeToExclude, &[]));
        let (_, ops) = p.on_igmp(D1, &v3(RecordType::ChangeToInclude, &[]));
        assert_eq!(
            ops,
            [MapOp::DeleteMfe {
                source: ANY,
                group: G
            }]
        );
    }

    #[test]
    fn exclude_with_source_installs_negative_source_entry() {
        let mut p = proxy();
        let (_, ops) = p.on_igmp(D1, &v3(RecordType::ChangeToExclude, &[S1]));
        assert_eq!(ops, [install(ANY, &[D1]), install(S1, &[])]);
    }

    #[test]
    fn include_and_exclude_listeners_merge_per_source() {
        let mut p = proxy();
        p.on_igmp(D1, &v3(RecordType::ChangeToExclude, &[]));
        let (_, ops) = p.on_igmp(D2, &v3(RecordType::ChangeToInclude, &[S1]));
        assert_eq!(ops, [install(S1, &[D1, D2])]);
        // D1 leaves: S1 still goes to D2 only; no (*,G) is left.
        let (_, ops) = p.on_igmp(D1, &IgmpMessage::V2Leave { group: G });
        assert_eq!(
            ops,
            [
                install(S1, &[D2]),
                MapOp::DeleteMfe {
                    source: ANY,
                    group: G
                },
            ]
        );
    }
}
