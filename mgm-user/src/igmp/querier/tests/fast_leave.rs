//! Fast leave with per-host tracking: one host's leave never cuts off another's stream.

use super::*;

fn fast() -> Harness {
    let mut t = Harness::new(Config {
        fast_leave: true,
        ..Config::default()
    });
    t.take_sent();
    t
}

#[test]
fn fast_leave_v2_second_reporter_keeps_the_group_until_it_leaves() {
    let mut t = fast();
    t.recv(H1, IgmpMessage::V2Report { group: G });
    t.recv(H2, IgmpMessage::V2Report { group: G });
    assert_eq!(t.members(), [join(None, G)]);
    let reporters: Vec<Ipv4Addr> = t.q.group(G).unwrap().reporters().collect();
    assert_eq!(reporters, [H1, H2]);
    t.recv(H1, IgmpMessage::V2Leave { group: G });
    assert_eq!(t.members(), []);
    t.advance(10_000);
    assert_eq!(t.members(), []);
    t.recv(H2, IgmpMessage::V2Leave { group: G });
    assert_eq!(t.members(), [leave(None, G)]);
    assert_eq!(t.sent(), []);
    assert!(t.q.group(G).is_none());
}

#[test]
fn fast_leave_v3_sources_leave_when_no_host_wants_them() {
    let mut t = fast();
    t.v3(H1, RecordType::ModeIsInclude, G, &[S1, S2]);
    t.v3(H2, RecordType::ModeIsInclude, G, &[S2]);
    t.take_members();
    t.v3(H1, RecordType::ChangeToInclude, G, &[]);
    assert_eq!(t.members(), [leave(Some(S1), G)]);
    t.v3(H2, RecordType::BlockOldSources, G, &[S2]);
    assert_eq!(t.members(), [leave(Some(S2), G)]);
    assert_eq!(t.sent(), []);
    assert!(t.q.group(G).is_none());
}

#[test]
fn fast_leave_v3_exclude_host_keeps_star_g() {
    let mut t = fast();
    t.v3(H1, RecordType::ChangeToExclude, G, &[]);
    t.v3(H2, RecordType::ChangeToExclude, G, &[S1]);
    t.take_members();
    // H1 leaves: H2 alone is left, and it blocks S1.
    t.v3(H1, RecordType::ChangeToInclude, G, &[]);
    assert_eq!(t.members(), [exclusion(S1, G)]);
    t.v3(H2, RecordType::ChangeToInclude, G, &[S2]);
    assert_eq!(t.members(), [join(Some(S2), G), leave(None, G)]);
}

#[test]
fn fast_leave_forgets_silent_hosts_after_the_membership_interval() {
    let mut t = fast();
    t.recv(H1, IgmpMessage::V2Report { group: G });
    t.advance(100_000);
    t.recv(H2, IgmpMessage::V2Report { group: G });
    t.advance_to(GMI);
    let reporters: Vec<Ipv4Addr> = t.q.group(G).unwrap().reporters().collect();
    assert_eq!(reporters, [H2]);
    t.take_members();
    t.recv(H2, IgmpMessage::V2Leave { group: G });
    assert_eq!(t.members(), [leave(None, G)]);
}

#[test]
fn fast_leave_tracked_hosts_are_held_to_the_source_limit() {
    let mut t = Harness::new(Config {
        fast_leave: true,
        max_sources: Some(4),
        ..Config::default()
    });
    // Spoofed v2 reporters: one unit each.
    for i in 0..10 {
        t.recv(
            Ipv4Addr::new(10, 0, 0, 110 + i),
            IgmpMessage::V2Report { group: G },
        );
    }
    assert_eq!(t.q.group(G).unwrap().reporters().count(), 4);
    assert_eq!(t.q.counters().host_limit_hits, 6);
    assert_eq!(t.q.counters().source_limit_hits, 0);
    // Forgotten hosts give their units back.
    t.advance(GMI);
    assert!(t.q.group(G).is_none());
    t.recv(H1, IgmpMessage::V2Report { group: G });
    assert_eq!(t.q.group(G).unwrap().reporters().count(), 1);
    assert_eq!(t.q.counters().host_limit_hits, 6);
}

#[test]
fn fast_leave_host_source_sets_are_held_to_the_source_limit() {
    let mut t = fast_limited(4);
    // H1 costs 3 (itself, S1, S2); H2 would cost 2 more.
    t.v3(H1, RecordType::ModeIsInclude, G, &[S1, S2]);
    t.v3(H2, RecordType::ModeIsInclude, G, &[S3]);
    let reporters: Vec<Ipv4Addr> = t.q.group(G).unwrap().reporters().collect();
    assert_eq!(reporters, [H1]);
    assert_eq!(t.q.counters().host_limit_hits, 1);
    // A host's growth is refused too, and its earlier filter stays.
    t.v3(H1, RecordType::AllowNewSources, G, &[S3, S4]);
    assert_eq!(t.q.counters().host_limit_hits, 2);
    t.take_members();
    t.v3(H1, RecordType::BlockOldSources, G, &[S1, S2]);
    assert_eq!(
        t.members(),
        [leave(Some(S1), G), leave(Some(S2), G)],
        "H1 was tracked with S1 and S2 only"
    );
    // What H1 gave back, H2 can take.
    t.v3(H2, RecordType::ModeIsInclude, G, &[S3]);
    let reporters: Vec<Ipv4Addr> = t.q.group(G).unwrap().reporters().collect();
    assert_eq!(reporters, [H2]);
    assert_eq!(t.q.counters().host_limit_hits, 2);
}

fn fast_limited(max_sources: usize) -> Harness {
    let mut t = Harness::new(Config {
        fast_leave: true,
        max_sources: Some(max_sources),
        ..Config::default()
    });
    t.take_sent();
    t
}
