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
