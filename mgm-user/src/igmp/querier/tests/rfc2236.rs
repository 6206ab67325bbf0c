//! IGMPv2 routers (RFC 2236 §3): joins, group-specific queries on leave, timers.

use super::*;

fn v2_query(group: Ipv4Addr) -> IgmpMessage {
    IgmpMessage::Query {
        max_resp_code: 10,
        group,
        v3: None,
    }
}

#[test]
fn rfc2236_3_report_joins_star_g() {
    let mut t = Harness::v2_router();
    t.recv(H1, IgmpMessage::V2Report { group: G });
    assert_eq!(t.members(), [join(None, G)]);
    t.recv(H2, IgmpMessage::V2Report { group: G });
    assert_eq!(t.members(), []);
}

#[test]
fn rfc2236_2_v2_interface_sends_v2_general_queries() {
    let mut t = Harness::new(Config {
        version: Version::V2,
        ..Config::default()
    });
    assert_eq!(
        t.sent(),
        [Transmit {
            destination: ALL_SYSTEMS,
            message: IgmpMessage::Query {
                max_resp_code: 100,
                group: Ipv4Addr::UNSPECIFIED,
                v3: None
            },
        }]
    );
}

#[test]
fn rfc2236_3_leave_sends_last_member_queries_then_leaves() {
    let mut t = Harness::v2_router();
    t.recv(H1, IgmpMessage::V2Report { group: G });
    t.take_members();
    t.advance(5_000);
    t.recv(H1, IgmpMessage::V2Leave { group: G });
    t.advance(10_000);
    let query = Transmit {
        destination: G,
        message: v2_query(G),
    };
    assert_eq!(
        t.take_sent(),
        [(5_000, query.clone()), (5_000 + LMQI, query)]
    );
    assert_eq!(t.take_members(), [(5_000 + LMQT, leave(None, G))]);
    assert!(t.q.group(G).is_none());
    assert_eq!(t.q.counters().group_queries_sent, 2);
}

#[test]
fn rfc2236_3_report_after_leave_keeps_forwarding() {
    let mut t = Harness::v2_router();
    t.recv(H1, IgmpMessage::V2Report { group: G });
    t.take_members();
    t.recv(H1, IgmpMessage::V2Leave { group: G });
    t.advance(500);
    t.recv(H2, IgmpMessage::V2Report { group: G });
    t.advance(10_000);
    assert_eq!(t.members(), []);
    assert_eq!(t.group_timer(G), Some(500 + GMI));
}

#[test]
fn rfc2236_3_membership_timer_expiry_leaves() {
    let mut t = Harness::v2_router();
    t.recv(H1, IgmpMessage::V2Report { group: G });
    t.take_members();
    t.advance(GMI - 1);
    assert_eq!(t.members(), []);
    t.advance(1);
    assert_eq!(t.take_members(), [(GMI, leave(None, G))]);
}

#[test]
fn rfc2236_3_leave_of_unknown_group_does_nothing() {
    let mut t = Harness::v2_router();
    t.recv(H1, IgmpMessage::V2Leave { group: G });
    assert_eq!(t.sent(), []);
    assert_eq!(t.members(), []);
}

#[test]
fn rfc2236_3_non_querier_ignores_leave() {
    let mut t = Harness::v2_router();
    t.recv(LOWER, v2_query(Ipv4Addr::UNSPECIFIED));
    t.recv(H1, IgmpMessage::V2Report { group: G });
    t.recv(H1, IgmpMessage::V2Leave { group: G });
    t.advance(10_000);
    assert_eq!(t.sent(), []);
    assert_eq!(t.members(), [join(None, G)]);
}

#[test]
fn rfc2236_3_non_querier_lowers_timer_on_querier_group_specific_query() {
    let mut t = Harness::v2_router();
    t.recv(LOWER, v2_query(Ipv4Addr::UNSPECIFIED));
    t.recv(H1, IgmpMessage::V2Report { group: G });
    t.take_members();
    t.advance(1_000);
    t.recv(LOWER, v2_query(G));
    // [Last Member Query Count] × the query's Max Response Time.
    assert_eq!(t.group_timer(G), Some(1_000 + LMQT));
    t.advance(LMQT);
    assert_eq!(t.take_members(), [(1_000 + LMQT, leave(None, G))]);
}

#[test]
fn rfc2236_3_v3_reports_are_ignored_on_a_v2_interface() {
    let mut t = Harness::v2_router();
    t.v3(H1, RecordType::ChangeToExclude, G, &[]);
    assert_eq!(t.members(), []);
    assert_eq!(t.q.counters().ignored, 1);
}

#[test]
fn rfc5771_link_local_groups_are_ignored() {
    let mut t = Harness::v2_router();
    t.recv(
        H1,
        IgmpMessage::V2Report {
            group: Ipv4Addr::new(224, 0, 0, 22),
        },
    );
    t.recv(
        H1,
        IgmpMessage::V2Report {
            group: Ipv4Addr::new(10, 1, 1, 1),
        },
    );
    assert_eq!(t.members(), []);
    assert_eq!(t.q.counters().ignored, 2);
}
