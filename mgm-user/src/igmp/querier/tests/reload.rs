//! A querier given new settings at run time (a reload) keeps its groups and takes the new
//! values at once where they show on the wire.

use std::time::Duration;

use super::*;
use crate::igmp::querier::ConfigError;

/// The QQIC and QRV of a query, if it is a v3 one.
fn qqic_qrv(t: &Transmit) -> Option<(u8, u8)> {
    match &t.message {
        IgmpMessage::Query { v3: Some(v3), .. } => Some((v3.qqic, v3.qrv)),
        _ => None,
    }
}

#[test]
fn a_shorter_query_interval_brings_the_next_general_query_forward_and_groups_stay() {
    let mut t = Harness::v3_router();
    // Past the startup queries, into the 125 s rhythm.
    t.advance(2 * SQI);
    t.recv(H1, IgmpMessage::V2Report { group: G });
    t.take_sent();
    assert_eq!(t.members(), [join(None, G)]);
    t.q.reconfigure(
        t.now,
        Config {
            query_interval: Duration::from_secs(20),
            robustness: 3,
            ..Config::default()
        },
    )
    .unwrap();
    t.advance(20_000);
    let sent = t.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(qqic_qrv(&sent[0]), Some((20, 3)));
    // The group was kept, with nothing published again.
    assert!(t.q.group(G).is_some());
    assert_eq!(t.members(), []);
}

#[test]
fn a_longer_query_interval_keeps_the_query_already_due() {
    let mut t = Harness::v3_router();
    t.advance(2 * SQI);
    t.take_sent();
    let due = t.q.poll_timeout().unwrap();
    t.q.reconfigure(
        t.now,
        Config {
            query_interval: Duration::from_secs(300),
            ..Config::default()
        },
    )
    .unwrap();
    assert_eq!(t.q.poll_timeout(), Some(due));
}

#[test]
fn invalid_settings_are_refused_and_the_old_ones_stay() {
    let mut t = Harness::v3_router();
    let bad = Config {
        robustness: 0,
        ..Config::default()
    };
    assert_eq!(
        t.q.reconfigure(t.now, bad),
        Err(ConfigError::ZeroRobustness)
    );
    assert_eq!(t.q.config(), &Config::default());
}

#[test]
fn a_lower_source_limit_refuses_new_sources_from_then_on() {
    let mut t = Harness::v3_router();
    t.v3(H1, RecordType::ModeIsInclude, G, &[S1, S2]);
    t.take_members();
    t.q.reconfigure(
        t.now,
        Config {
            max_sources: Some(2),
            ..Config::default()
        },
    )
    .unwrap();
    t.v3(H1, RecordType::AllowNewSources, G, &[S3]);
    assert_eq!(t.members(), []);
    assert_eq!(t.q.counters().source_limit_hits, 1);
}
