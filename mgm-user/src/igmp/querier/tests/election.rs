//! Querier election and general queries (RFC 3376 §6.1, §6.6.2, §8; RFC 2236 §3).

use std::time::Duration;

use super::*;
use crate::igmp::querier::ConfigError;

fn lower_query() -> IgmpMessage {
    v3_query(Ipv4Addr::UNSPECIFIED, &[], false)
}

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
