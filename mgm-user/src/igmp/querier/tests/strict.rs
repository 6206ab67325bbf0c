//! Reports and leaves without Router Alert or with a TTL other than 1, which hosts never send
//! (RFC 2236 §2, RFC 3376 §4): accepted and counted by default, dropped and counted with
//! `strict_reports` (RFC 3376 §9.2).

use super::*;

fn header(ttl: u8, router_alert: bool) -> IpHeader {
    IpHeader {
        source: H1,
        ttl,
        router_alert,
    }
}

/// (reports without Router Alert, with TTL other than 1, dropped for either).
fn nonconforming(t: &Harness) -> (u64, u64, u64) {
    let c = t.q.counters();
    (
        c.reports_without_router_alert,
        c.reports_ttl_not_1,
        c.nonconforming_dropped,
    )
}

fn strict() -> Harness {
    let mut t = Harness::new(Config {
        strict_reports: true,
        ..Config::default()
    });
    t.sent();
    t
}

#[test]
fn rfc3376_9_2_lenient_report_without_router_alert_joins_and_is_counted() {
    let mut t = Harness::v3_router();
    let report = IgmpMessage::V2Report { group: G };
    assert_eq!(t.recv_with(header(1, false), report), Heard::Nonconforming);
    assert_eq!(t.members(), [join(None, G)]);
    assert_eq!(nonconforming(&t), (1, 0, 0));
}

#[test]
fn rfc3376_9_2_lenient_report_with_ttl_other_than_1_joins_and_is_counted() {
    let mut t = Harness::v3_router();
    let report = v3_report(RecordType::ChangeToExclude, G, &[]);
    assert_eq!(t.recv_with(header(2, true), report), Heard::Nonconforming);
    assert_eq!(t.members(), [join(None, G)]);
    assert_eq!(nonconforming(&t), (0, 1, 0));
}

#[test]
fn rfc3376_9_2_strict_report_without_router_alert_is_dropped_and_counted() {
    let mut t = strict();
    let report = IgmpMessage::V2Report { group: G };
    assert_eq!(t.recv_with(header(1, false), report), Heard::Dropped);
    assert_eq!(t.members(), []);
    assert!(t.q.group(G).is_none());
    let c = t.q.counters();
    assert_eq!(
        (c.reports_without_router_alert, c.nonconforming_dropped),
        (1, 1)
    );
    assert_eq!(
        c.v2_reports_received, 0,
        "a dropped report counts as nothing else"
    );
}

#[test]
fn rfc3376_9_2_strict_leave_with_ttl_other_than_1_is_dropped() {
    let mut t = strict();
    t.recv(H1, IgmpMessage::V2Report { group: G });
    t.take_members();
    let leave = IgmpMessage::V2Leave { group: G };
    assert_eq!(t.recv_with(header(64, true), leave), Heard::Dropped);
    t.advance(LMQT + 1);
    assert_eq!(t.sent(), [], "no last-member query for a dropped leave");
    assert_eq!(t.members(), []);
    assert!(t.q.group(G).is_some());
    assert_eq!(t.q.counters().reports_ttl_not_1, 1);
}

#[test]
fn rfc3376_9_2_strict_counts_a_report_lacking_both_under_each_and_drops_it_once() {
    let mut t = strict();
    let report = v3_report(RecordType::ModeIsInclude, G, &[S1]);
    assert_eq!(t.recv_with(header(0, false), report), Heard::Dropped);
    assert_eq!(nonconforming(&t), (1, 1, 1));
    assert_eq!(t.members(), []);
}

#[test]
fn rfc3376_9_2_strict_conforming_report_joins() {
    let mut t = strict();
    assert_eq!(
        t.recv(H1, IgmpMessage::V2Report { group: G }),
        Heard::Handled
    );
    assert_eq!(t.members(), [join(None, G)]);
    assert_eq!(nonconforming(&t), (0, 0, 0));
}

#[test]
fn rfc3376_9_2_strict_does_not_look_at_queries() {
    let mut t = strict();
    let ip = IpHeader {
        source: LOWER,
        ttl: 2,
        router_alert: false,
    };
    let query = v3_query(Ipv4Addr::UNSPECIFIED, &[], false);
    assert_eq!(t.recv_with(ip, query), Heard::Handled);
    assert_eq!(t.q.querier_address(), LOWER);
    assert_eq!(nonconforming(&t), (0, 0, 0));
}
