//! Querier election and general queries (RFC 3376 §6.1, §6.6.2, §8; RFC 2236 §3).

use std::time::Duration;

use super::*;
use crate::igmp::querier::{ConfigError, Subnet};

fn lower_query() -> IgmpMessage {
    v3_query(Ipv4Addr::UNSPECIFIED, &[], false)
}

/// The harness's link: our address, the other routers' and the hosts' lie inside it.
const LINK: Subnet = Subnet {
    address: OWN,
    prefix_len: 24,
};
/// Lower than ours, off the link.
const FOREIGN: Ipv4Addr = Ipv4Addr::new(9, 9, 9, 9);
/// A prefix around [`FOREIGN`].
const FOREIGN_NET: Subnet = Subnet {
    address: Ipv4Addr::new(9, 9, 9, 1),
    prefix_len: 24,
};

#[test]
fn rfc3376_8_7_startup_sends_startup_query_count_queries_startup_interval_apart() {
    let mut t = Harness::new(Config::default());
    t.advance(200_000);
    let sent = t.take_sent();
    assert_eq!(
        sent,
        [
            (0, general_query()),
            (SQI, general_query()),
            (SQI + QI, general_query())
        ]
    );
}

#[test]
fn rfc3376_8_7_startup_query_count_follows_robustness() {
    let mut t = Harness::new(Config {
        robustness: 3,
        ..Config::default()
    });
    t.advance(100_000);
    let times: Vec<u64> = t.take_sent().into_iter().map(|(at, _)| at).collect();
    assert_eq!(times, [0, SQI, 2 * SQI]);
}

#[test]
fn rfc3376_6_1_general_query_every_query_interval() {
    let mut t = Harness::v3_router();
    t.advance(SQI + 4 * QI);
    let times: Vec<u64> = t.take_sent().into_iter().map(|(at, _)| at).collect();
    assert_eq!(
        times,
        [SQI, SQI + QI, SQI + 2 * QI, SQI + 3 * QI, SQI + 4 * QI]
    );
    assert_eq!(t.q.counters().general_queries_sent, 6);
}

#[test]
fn rfc3376_4_1_general_query_fields() {
    let mut t = Harness::new(Config::default());
    assert_eq!(
        t.sent(),
        [Transmit {
            destination: ALL_SYSTEMS,
            message: IgmpMessage::Query {
                max_resp_code: 100,
                group: Ipv4Addr::UNSPECIFIED,
                v3: Some(QueryV3 {
                    s_flag: false,
                    qrv: 2,
                    qqic: 125,
                    sources: vec![],
                }),
            },
        }]
    );
}

#[test]
fn rfc3376_6_6_2_query_from_lower_address_makes_us_non_querier() {
    let mut t = Harness::v3_router();
    t.recv(LOWER, lower_query());
    assert!(!t.q.is_querier());
    assert_eq!(t.q.querier_address(), LOWER);
    t.advance(OQPI - 1);
    assert_eq!(t.sent(), []);
}

#[test]
fn rfc3376_6_6_2_query_from_higher_address_leaves_us_querier() {
    let mut t = Harness::v3_router();
    t.recv(HIGHER, lower_query());
    assert!(t.q.is_querier());
    assert_eq!(t.q.querier_address(), OWN);
    t.advance(SQI);
    assert_eq!(t.sent(), [general_query()]);
}

#[test]
fn rfc3376_6_6_2_own_and_unspecified_queries_do_not_elect() {
    let mut t = Harness::v3_router();
    t.recv(OWN, lower_query());
    t.recv(Ipv4Addr::UNSPECIFIED, lower_query());
    assert!(t.q.is_querier());
    assert_eq!(t.q.counters().queries_received, 1);
}

#[test]
fn rfc3376_6_6_2_other_querier_present_expiry_makes_us_querier_again() {
    let mut t = Harness::v3_router();
    t.advance(10_000);
    t.recv(LOWER, lower_query());
    t.advance(OQPI - 1);
    assert_eq!(t.sent(), []);
    t.advance(1);
    assert!(t.q.is_querier());
    assert_eq!(t.take_sent(), [(10_000 + OQPI, general_query())]);
    t.advance(QI);
    assert_eq!(t.take_sent(), [(10_000 + OQPI + QI, general_query())]);
    assert_eq!(t.q.counters().querier_changes, 2);
}

#[test]
fn rfc3376_6_6_2_querier_heard_regularly_keeps_us_quiet() {
    let mut t = Harness::v3_router();
    for _ in 0..8 {
        t.recv(LOWER, lower_query());
        t.advance(QI);
    }
    assert_eq!(t.sent(), []);
    assert!(!t.q.is_querier());
}

#[test]
fn rfc3376_4_1_6_non_querier_adopts_qrv_and_qqic() {
    let mut t = Harness::v3_router();
    t.recv(
        LOWER,
        IgmpMessage::Query {
            max_resp_code: 100,
            group: Ipv4Addr::UNSPECIFIED,
            v3: Some(QueryV3 {
                s_flag: false,
                qrv: 3,
                qqic: 60,
                sources: vec![],
            }),
        },
    );
    // Other Querier Present Interval = 3 × 60 s + 10 s / 2.
    let expires = t.q.other_querier_expires().unwrap();
    assert_eq!(expires.as_millis() - t.now.as_millis(), 185_000);
    // The group membership interval follows too: 3 × 60 s + 10 s.
    t.recv(H1, IgmpMessage::V2Report { group: G });
    assert_eq!(t.group_timer(G), Some(190_000));
}

#[test]
fn rfc3376_7_3_1_older_version_query_is_counted() {
    let mut t = Harness::v3_router();
    t.recv(
        HIGHER,
        IgmpMessage::Query {
            max_resp_code: 100,
            group: Ipv4Addr::UNSPECIFIED,
            v3: None,
        },
    );
    assert_eq!(t.q.counters().older_version_queries_received, 1);
}

#[test]
fn rfc3376_8_3_response_interval_must_be_below_query_interval() {
    let config = Config {
        query_response_interval: Duration::from_secs(125),
        ..Config::default()
    };
    assert!(matches!(
        Querier::new(IF, OWN, config, Instant::from_millis(0)),
        Err(ConfigError::ResponseNotBelowInterval { .. })
    ));
    let config = Config {
        robustness: 0,
        ..Config::default()
    };
    assert_eq!(config.validate(), Err(ConfigError::ZeroRobustness));
}

#[test]
fn rfc3376_9_1_query_from_outside_the_subnets_does_not_elect() {
    let mut t = Harness::v3_router();
    t.q.set_subnets(vec![LINK]);
    assert_eq!(t.recv(FOREIGN, lower_query()), Heard::ForeignQuery);
    assert!(t.q.is_querier());
    assert_eq!(t.q.querier_address(), OWN);
    assert_eq!(t.q.other_querier_expires(), None);
    // 0.0.0.0 never elects, and is not counted as foreign: hosts without an address send it.
    assert_eq!(t.recv(Ipv4Addr::UNSPECIFIED, lower_query()), Heard::Handled);
    let c = t.q.counters();
    assert_eq!((c.foreign_queries, c.queries_received), (1, 2));
    t.advance(SQI);
    assert_eq!(t.sent(), [general_query()], "we go on querying");
}

#[test]
fn rfc3376_9_1_query_from_inside_any_subnet_elects() {
    let mut t = Harness::v3_router();
    t.q.set_subnets(vec![FOREIGN_NET, LINK]);
    assert_eq!(t.recv(LOWER, lower_query()), Heard::Handled);
    assert_eq!(t.q.querier_address(), LOWER);
    assert_eq!(t.q.counters().foreign_queries, 0);
}

#[test]
fn rfc3376_9_1_without_a_known_subnet_every_query_elects_as_before() {
    let mut t = Harness::v3_router();
    assert_eq!(t.recv(FOREIGN, lower_query()), Heard::Handled);
    assert_eq!(t.q.querier_address(), FOREIGN);
    assert_eq!(t.q.counters().foreign_queries, 0);
}

#[test]
fn rfc3376_9_1_subnets_follow_the_interface_addresses() {
    let mut t = Harness::v3_router();
    t.q.set_subnets(vec![LINK]);
    t.recv(FOREIGN, lower_query());
    assert!(t.q.is_querier());
    // The interface gets an address on FOREIGN's prefix: FOREIGN is a neighbour now.
    t.q.set_subnets(vec![LINK, FOREIGN_NET]);
    assert_eq!(t.recv(FOREIGN, lower_query()), Heard::Handled);
    assert_eq!(t.q.querier_address(), FOREIGN);
    // The address goes again: FOREIGN's queries no longer keep it querier.
    t.q.set_subnets(vec![LINK]);
    t.advance(QI);
    assert_eq!(t.recv(FOREIGN, lower_query()), Heard::ForeignQuery);
    t.advance(OQPI - QI - 1);
    assert!(!t.q.is_querier());
    t.advance(1);
    assert!(t.q.is_querier());
    assert_eq!(t.sent(), [general_query()]);
}

#[test]
fn subnet_contains_what_its_prefix_covers() {
    let net = |prefix_len| Subnet {
        address: Ipv4Addr::new(10, 1, 2, 3),
        prefix_len,
    };
    assert!(net(24).contains(Ipv4Addr::new(10, 1, 2, 255)));
    assert!(!net(24).contains(Ipv4Addr::new(10, 1, 3, 0)));
    assert!(net(32).contains(Ipv4Addr::new(10, 1, 2, 3)));
    assert!(!net(32).contains(Ipv4Addr::new(10, 1, 2, 4)));
    assert!(net(0).contains(Ipv4Addr::new(198, 51, 100, 1)));
    assert!(
        !net(33).contains(Ipv4Addr::new(10, 1, 2, 4)),
        "past 32 counts as 32"
    );
}
