//! Older hosts on a v3 interface (RFC 3376 §7.3.2).

use super::*;
use crate::igmp::querier::FilterMode;

const OHPI: u64 = GMI;

#[test]
fn rfc3376_7_3_2_v2_report_switches_the_group_to_v2_mode() {
    let mut t = Harness::v3_router();
    t.recv(H1, IgmpMessage::V2Report { group: G });
    assert_eq!(t.members(), [join(None, G)]);
    let g = t.q.group(G).unwrap();
    assert_eq!(g.compatibility(), Version::V2);
    assert_eq!(g.filter_mode(), FilterMode::Exclude);
}

#[test]
fn rfc3376_7_3_2_v2_mode_ignores_block_and_to_ex_sources() {
    let mut t = Harness::v3_router();
    t.recv(H1, IgmpMessage::V2Report { group: G });
    t.v3(H2, RecordType::BlockOldSources, G, &[S1]);
    assert_eq!(t.sources(G), Some(vec![]));
    t.v3(H2, RecordType::ChangeToExclude, G, &[S1]);
    assert_eq!(t.sources(G), Some(vec![]));
    assert_eq!(t.sent(), []);
    assert_eq!(t.q.counters().ignored, 1);
}

#[test]
fn rfc3376_7_3_2_v2_leave_in_v2_mode_is_to_in_nothing() {
    let mut t = Harness::v3_router();
    t.recv(H1, IgmpMessage::V2Report { group: G });
    t.take_members();
    t.advance(1_000);
    t.recv(H1, IgmpMessage::V2Leave { group: G });
    t.advance(10_000);
    assert_eq!(
        t.take_sent(),
        [
            (1_000, group_query(G, false)),
            (1_000 + LMQI, group_query(G, false))
        ]
    );
    assert_eq!(t.take_members(), [(1_000 + LMQT, leave(None, G))]);
}

#[test]
fn rfc3376_7_3_2_v2_leave_is_ignored_in_v1_mode() {
    let mut t = Harness::v3_router();
    t.recv(H1, IgmpMessage::V1Report { group: G });
    t.recv(H2, IgmpMessage::V2Report { group: G });
    assert_eq!(t.q.group(G).unwrap().compatibility(), Version::V1);
    t.take_members();
    t.recv(H2, IgmpMessage::V2Leave { group: G });
    t.advance(10_000);
    assert_eq!(t.sent(), []);
    assert_eq!(t.members(), []);
    assert_eq!(t.q.counters().ignored, 1);
    assert_eq!(t.group_timer(G), Some(GMI));
}

#[test]
fn rfc3376_7_3_2_older_host_present_expiry_returns_to_v3() {
    let mut t = Harness::v3_router();
    t.recv(H1, IgmpMessage::V1Report { group: G });
    // A v3 host keeps the group alive after the v1 host went away.
    t.advance(100_000);
    t.v3(H2, RecordType::ModeIsExclude, G, &[]);
    t.advance_to(OHPI - 1);
    assert_eq!(t.q.group(G).unwrap().compatibility(), Version::V1);
    t.advance(1);
    assert_eq!(t.q.group(G).unwrap().compatibility(), Version::V3);
    // Back in v3 mode, BLOCK counts again.
    t.take_sent();
    t.v3(H2, RecordType::BlockOldSources, G, &[S1]);
    assert_eq!(t.sent(), [source_query(G, &[S1], false)]);
}

#[test]
fn rfc3376_7_3_2_v1_mode_outranks_v2_mode() {
    let mut t = Harness::v3_router();
    t.recv(H2, IgmpMessage::V2Report { group: G });
    t.advance(100_000);
    t.recv(H1, IgmpMessage::V1Report { group: G });
    t.advance_to(OHPI);
    // v2 timer gone, v1 timer still running.
    assert_eq!(t.q.group(G).unwrap().compatibility(), Version::V1);
    t.advance_to(OHPI + 100_000);
    assert!(t.q.group(G).is_none());
}
