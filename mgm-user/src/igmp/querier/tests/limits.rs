//! Per-interface limits on groups and sources.

use super::*;

#[test]
fn limit_max_groups_refuses_and_counts_extra_groups() {
    let mut t = Harness::new(Config {
        max_groups: Some(2),
        ..Config::default()
    });
    t.recv(H1, IgmpMessage::V2Report { group: G });
    t.recv(H1, IgmpMessage::V2Report { group: G2 });
    t.recv(H1, IgmpMessage::V2Report { group: G3 });
    t.v3(H1, RecordType::AllowNewSources, G3, &[S1]);
    assert_eq!(t.members(), [join(None, G), join(None, G2)]);
    assert_eq!(t.q.counters().group_limit_hits, 2);
    assert!(t.q.group(G3).is_none());
    // Known groups are still served, and a freed slot can be taken.
    t.recv(H1, IgmpMessage::V2Report { group: G });
    t.advance(GMI);
    t.take_members();
    t.recv(H1, IgmpMessage::V2Report { group: G3 });
    assert_eq!(t.members(), [join(None, G3)]);
}

#[test]
fn limit_max_sources_refuses_and_counts_extra_sources() {
    let mut t = Harness::new(Config {
        max_sources: Some(3),
        ..Config::default()
    });
    t.v3(H1, RecordType::ModeIsInclude, G, &[S1, S2]);
    t.v3(H1, RecordType::ModeIsInclude, G2, &[S3, S4]);
    assert_eq!(
        t.members(),
        [join(Some(S1), G), join(Some(S2), G), join(Some(S3), G2)]
    );
    assert_eq!(t.q.counters().source_limit_hits, 1);
    assert_eq!(t.q.source_count(), 3);
    // Refreshing known sources costs nothing.
    t.v3(H1, RecordType::ModeIsInclude, G, &[S1, S2]);
    assert_eq!(t.q.counters().source_limit_hits, 1);
}

#[test]
fn limit_max_memberships_bounds_what_the_core_is_handed() {
    let config = Config {
        max_groups: Some(2),
        max_sources: Some(3),
        ..Config::default()
    };
    assert_eq!(config.max_memberships(), Some(5));
    let mut t = Harness::new(config);
    t.recv(H1, IgmpMessage::V2Report { group: G });
    t.v3(H1, RecordType::ModeIsInclude, G2, &[S1, S2, S3, S4]);
    t.v3(H1, RecordType::ModeIsInclude, G3, &[S1]);
    assert!(t.members().len() <= 5);
    assert_eq!(Config::default().max_memberships(), None);
}
