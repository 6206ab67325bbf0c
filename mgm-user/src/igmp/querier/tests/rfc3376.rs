//! IGMPv3 router filter state (RFC 3376 §6.2–§6.6): every record type against both filter
//! modes, the queries they send, and what the timers do after.

use super::*;
use crate::igmp::querier::FilterMode;
use RecordType::{
    AllowNewSources as ALLOW, BlockOldSources as BLOCK, ChangeToExclude as TO_EX,
    ChangeToInclude as TO_IN, ModeIsExclude as IS_EX, ModeIsInclude as IS_IN,
};

fn mode(t: &Harness) -> Option<FilterMode> {
    t.q.group(G).map(|g| g.filter_mode())
}

/// EXCLUDE(X, Y) at time 0 with timers of GMI.
fn exclude(x: &[Ipv4Addr], y: &[Ipv4Addr]) -> Harness {
    let mut t = Harness::v3_router();
    t.v3(H1, IS_EX, G, y);
    t.v3(H1, IS_IN, G, x);
    t.take_members();
    t
}

/// INCLUDE(A) at time 0 with timers of GMI.
fn include(a: &[Ipv4Addr]) -> Harness {
    let mut t = Harness::v3_router();
    t.v3(H1, IS_IN, G, a);
    t.take_members();
    t
}

#[test]
fn rfc3376_6_4_1_is_in_in_include_mode() {
    let mut t = Harness::v3_router();
    t.v3(H1, IS_IN, G, &[S1, S2]);
    assert_eq!(t.members(), [join(Some(S1), G), join(Some(S2), G)]);
    assert_eq!(mode(&t), Some(FilterMode::Include));
    assert_eq!(t.source_timer(G, S1), Some(GMI));
    assert_eq!(t.source_timer(G, S2), Some(GMI));
    assert_eq!(t.sent(), []);
}

#[test]
fn rfc3376_6_4_1_is_ex_in_include_mode() {
    let mut t = include(&[S1, S2]);
    t.advance(1_000);
    t.v3(H1, IS_EX, G, &[S2, S3]);
    // EXCLUDE(A*B, B-A); (B-A)=0; Delete (A-B); Group Timer=GMI.
    assert_eq!(mode(&t), Some(FilterMode::Exclude));
    assert_eq!(t.sources(G), Some(vec![(S2, true), (S3, false)]));
    assert_eq!(t.source_timer(G, S2), Some(GMI));
    assert_eq!(t.group_timer(G), Some(1_000 + GMI));
    assert_eq!(
        t.members(),
        [
            join(None, G),
            exclusion(S3, G),
            leave(Some(S1), G),
            leave(Some(S2), G)
        ]
    );
    assert_eq!(t.sent(), []);
}

#[test]
fn rfc3376_6_4_1_is_in_in_exclude_mode() {
    let mut t = exclude(&[], &[S1]);
    t.advance(1_000);
    t.v3(H1, IS_IN, G, &[S1, S2]);
    // EXCLUDE(X+A, Y-A); (A)=GMI.
    assert_eq!(t.sources(G), Some(vec![(S1, true), (S2, true)]));
    assert_eq!(t.source_timer(G, S1), Some(1_000 + GMI));
    assert_eq!(t.group_timer(G), Some(GMI));
    assert_eq!(t.members(), [end_exclusion(S1, G)]);
}

#[test]
fn rfc3376_6_4_1_is_ex_in_exclude_mode() {
    let mut t = exclude(&[S1, S2], &[S3]);
    t.advance(1_000);
    t.v3(H1, IS_EX, G, &[S2, S3, S4]);
    // EXCLUDE(A-Y, Y*A); (A-X-Y)=GMI; Delete (X-A), (Y-A); Group Timer=GMI.
    assert_eq!(
        t.sources(G),
        Some(vec![(S2, true), (S3, false), (S4, true)])
    );
    assert_eq!(t.source_timer(G, S2), Some(GMI));
    assert_eq!(t.source_timer(G, S4), Some(1_000 + GMI));
    assert_eq!(t.group_timer(G), Some(1_000 + GMI));
    assert_eq!(t.members(), []);
    assert_eq!(t.sent(), []);
}

#[test]
fn rfc3376_6_4_2_allow_in_include_mode() {
    let mut t = include(&[S1]);
    t.advance(1_000);
    t.v3(H1, ALLOW, G, &[S2]);
    assert_eq!(t.sources(G), Some(vec![(S1, true), (S2, true)]));
    assert_eq!(t.source_timer(G, S2), Some(1_000 + GMI));
    assert_eq!(t.members(), [join(Some(S2), G)]);
    assert_eq!(t.sent(), []);
}

#[test]
fn rfc3376_6_4_2_block_in_include_mode_queries_the_blocked_sources() {
    let mut t = include(&[S1, S2]);
    t.advance(1_000);
    t.v3(H1, BLOCK, G, &[S2, S3]);
    // INCLUDE(A); Send Q(G, A*B): the source timer drops to LMQT.
    assert_eq!(t.source_timer(G, S2), Some(1_000 + LMQT));
    t.advance(10_000);
    assert_eq!(
        t.take_sent(),
        [
            (1_000, source_query(G, &[S2], false)),
            (1_000 + LMQI, source_query(G, &[S2], false)),
        ]
    );
    assert_eq!(t.take_members(), [(1_000 + LMQT, leave(Some(S2), G))]);
    assert_eq!(t.sources(G), Some(vec![(S1, true)]));
    assert_eq!(t.q.counters().group_source_queries_sent, 2);
}

#[test]
fn rfc3376_6_4_2_block_in_include_mode_answered_keeps_the_source() {
    let mut t = include(&[S1, S2]);
    t.advance(1_000);
    t.v3(H1, BLOCK, G, &[S2]);
    t.advance(500);
    t.v3(H2, IS_IN, G, &[S2]);
    t.advance(10_000);
    assert_eq!(t.members(), []);
    assert_eq!(t.source_timer(G, S2), Some(1_500 + GMI));
}

#[test]
fn rfc3376_6_4_2_to_ex_in_include_mode() {
    let mut t = include(&[S1, S2]);
    t.advance(1_000);
    t.v3(H1, TO_EX, G, &[S2, S3]);
    // EXCLUDE(A*B, B-A); (B-A)=0; Delete (A-B); Send Q(G, A*B); Group Timer=GMI.
    assert_eq!(mode(&t), Some(FilterMode::Exclude));
    assert_eq!(t.sources(G), Some(vec![(S2, true), (S3, false)]));
    assert_eq!(t.source_timer(G, S2), Some(1_000 + LMQT));
    assert_eq!(t.group_timer(G), Some(1_000 + GMI));
    assert_eq!(
        t.members(),
        [
            join(None, G),
            exclusion(S3, G),
            leave(Some(S1), G),
            leave(Some(S2), G)
        ]
    );
    t.advance(10_000);
    assert_eq!(
        t.take_sent(),
        [
            (1_000, source_query(G, &[S2], false)),
            (1_000 + LMQI, source_query(G, &[S2], false)),
        ]
    );
    // The unanswered source joins the exclude list, and stops being forwarded.
    assert_eq!(t.sources(G), Some(vec![(S2, false), (S3, false)]));
    assert_eq!(t.take_members(), [(1_000 + LMQT, exclusion(S2, G))]);
}

#[test]
fn rfc3376_6_4_2_to_in_in_include_mode() {
    let mut t = include(&[S1, S2]);
    t.advance(1_000);
    t.v3(H1, TO_IN, G, &[S2, S3]);
    // INCLUDE(A+B); (B)=GMI; Send Q(G, A-B).
    assert_eq!(t.source_timer(G, S1), Some(1_000 + LMQT));
    assert_eq!(t.source_timer(G, S2), Some(1_000 + GMI));
    assert_eq!(t.source_timer(G, S3), Some(1_000 + GMI));
    assert_eq!(t.members(), [join(Some(S3), G)]);
    t.advance(10_000);
    assert_eq!(
        t.take_sent(),
        [
            (1_000, source_query(G, &[S1], false)),
            (1_000 + LMQI, source_query(G, &[S1], false)),
        ]
    );
    assert_eq!(t.take_members(), [(1_000 + LMQT, leave(Some(S1), G))]);
}

#[test]
fn rfc3376_6_4_2_allow_in_exclude_mode() {
    let mut t = exclude(&[], &[S1]);
    t.advance(1_000);
    t.v3(H1, ALLOW, G, &[S1]);
    // EXCLUDE(X+A, Y-A); (A)=GMI.
    assert_eq!(t.sources(G), Some(vec![(S1, true)]));
    assert_eq!(t.source_timer(G, S1), Some(1_000 + GMI));
    assert_eq!(t.members(), [end_exclusion(S1, G)]);
    assert_eq!(t.sent(), []);
}

#[test]
fn rfc3376_6_4_2_block_in_exclude_mode() {
    let mut t = exclude(&[S1], &[S2]);
    t.advance(1_000);
    t.v3(H1, BLOCK, G, &[S1, S2, S3]);
    // EXCLUDE(X+(A-Y), Y); (A-X-Y)=Group Timer; Send Q(G, A-Y).
    assert_eq!(
        t.sources(G),
        Some(vec![(S1, true), (S2, false), (S3, true)])
    );
    assert_eq!(t.source_timer(G, S1), Some(1_000 + LMQT));
    assert_eq!(t.source_timer(G, S3), Some(1_000 + LMQT));
    t.advance(10_000);
    assert_eq!(
        t.take_sent(),
        [
            (1_000, source_query(G, &[S1, S3], false)),
            (1_000 + LMQI, source_query(G, &[S1, S3], false)),
        ]
    );
    assert_eq!(
        t.sources(G),
        Some(vec![(S1, false), (S2, false), (S3, false)])
    );
    assert_eq!(
        t.take_members(),
        [
            (1_000 + LMQT, exclusion(S1, G)),
            (1_000 + LMQT, exclusion(S3, G))
        ]
    );
}

#[test]
fn rfc3376_6_4_2_block_in_exclude_mode_new_source_takes_the_group_timer() {
    // As a non-querier, nothing lowers the new source's timer: it is the group timer.
    let mut t = exclude(&[], &[]);
    t.recv(LOWER, v3_query(Ipv4Addr::UNSPECIFIED, &[], false));
    t.advance(1_000);
    t.v3(H1, BLOCK, G, &[S3]);
    assert_eq!(t.source_timer(G, S3), Some(GMI));
    assert_eq!(t.sent(), []);
}

#[test]
fn rfc3376_6_4_2_to_ex_in_exclude_mode() {
    let mut t = exclude(&[S1, S2], &[S3]);
    t.advance(1_000);
    t.v3(H1, TO_EX, G, &[S2, S3, S4]);
    // EXCLUDE(A-Y, Y*A); (A-X-Y)=Group Timer; Delete (X-A), (Y-A); Send Q(G, A-Y);
    // Group Timer=GMI.
    assert_eq!(
        t.sources(G),
        Some(vec![(S2, true), (S3, false), (S4, true)])
    );
    assert_eq!(t.source_timer(G, S2), Some(1_000 + LMQT));
    assert_eq!(t.source_timer(G, S4), Some(1_000 + LMQT));
    assert_eq!(t.group_timer(G), Some(1_000 + GMI));
    t.advance(10_000);
    assert_eq!(
        t.take_sent(),
        [
            (1_000, source_query(G, &[S2, S4], false)),
            (1_000 + LMQI, source_query(G, &[S2, S4], false)),
        ]
    );
    assert_eq!(
        t.take_members(),
        [
            (1_000 + LMQT, exclusion(S2, G)),
            (1_000 + LMQT, exclusion(S4, G))
        ]
    );
}

#[test]
fn rfc3376_6_4_2_to_in_in_exclude_mode_queries_group_and_sources() {
    let mut t = exclude(&[S1], &[S2]);
    t.advance(1_000);
    t.v3(H1, TO_IN, G, &[S2]);
    // EXCLUDE(X+A, Y-A); (A)=GMI; Send Q(G, X-A); Send Q(G).
    assert_eq!(t.sources(G), Some(vec![(S1, true), (S2, true)]));
    assert_eq!(t.source_timer(G, S1), Some(1_000 + LMQT));
    assert_eq!(t.source_timer(G, S2), Some(1_000 + GMI));
    assert_eq!(t.group_timer(G), Some(1_000 + LMQT));
    t.advance(10_000);
    assert_eq!(
        t.take_sent(),
        [
            (1_000, source_query(G, &[S1], false)),
            (1_000, group_query(G, false)),
            (1_000 + LMQI, group_query(G, false)),
            (1_000 + LMQI, source_query(G, &[S1], false)),
        ]
    );
    // S2 is wanted at once; §6.5: nobody answered, so the group switches to INCLUDE with S2
    // only.
    assert_eq!(
        t.take_members(),
        [
            (1_000, end_exclusion(S2, G)),
            (1_000 + LMQT, join(Some(S2), G)),
            (1_000 + LMQT, leave(None, G))
        ]
    );
    assert_eq!(mode(&t), Some(FilterMode::Include));
    assert_eq!(t.sources(G), Some(vec![(S2, true)]));
}

#[test]
fn rfc3376_6_6_3_1_retransmission_sets_s_flag_once_the_group_timer_is_raised() {
    let mut t = exclude(&[], &[]);
    t.advance(1_000);
    t.v3(H1, TO_IN, G, &[]);
    t.advance(500);
    t.v3(H2, IS_EX, G, &[]);
    t.advance(10_000);
    assert_eq!(
        t.take_sent(),
        [
            (1_000, group_query(G, false)),
            (1_000 + LMQI, group_query(G, true)),
        ]
    );
    assert_eq!(t.members(), []);
    assert_eq!(t.group_timer(G), Some(1_500 + GMI));
}

#[test]
fn rfc3376_6_6_3_2_retransmission_splits_sources_by_timer() {
    let mut t = include(&[S1, S2]);
    t.advance(1_000);
    t.v3(H1, BLOCK, G, &[S1, S2]);
    t.advance(500);
    t.v3(H2, IS_IN, G, &[S1]);
    t.advance(10_000);
    assert_eq!(
        t.take_sent(),
        [
            (1_000, source_query(G, &[S1, S2], false)),
            (1_000 + LMQI, source_query(G, &[S2], false)),
            (1_000 + LMQI, source_query(G, &[S1], true)),
        ]
    );
    assert_eq!(t.take_members(), [(1_000 + LMQT, leave(Some(S2), G))]);
}

#[test]
fn rfc3376_6_5_group_timer_expiry_switches_to_include_with_running_sources() {
    let mut t = Harness::v3_router();
    t.v3(H1, IS_EX, G, &[]);
    assert_eq!(t.members(), [join(None, G)]);
    t.advance(100_000);
    t.v3(H1, ALLOW, G, &[S1]);
    t.advance_to(GMI + 100_000);
    assert_eq!(
        t.take_members(),
        [
            (GMI, join(Some(S1), G)),
            (GMI, leave(None, G)),
            (GMI + 100_000, leave(Some(S1), G)),
        ]
    );
    assert!(t.q.group(G).is_none());
}

#[test]
fn rfc3376_6_2_2_group_timer_expiry_without_sources_deletes_the_group() {
    let mut t = exclude(&[], &[S1]);
    t.advance(GMI);
    assert_eq!(t.take_members(), [(GMI, leave(None, G))]);
    assert!(t.q.group(G).is_none());
    assert_eq!(t.q.source_count(), 0);
}

#[test]
fn rfc3376_6_2_3_source_timers_expire_one_by_one_in_include_mode() {
    let mut t = include(&[S1]);
    t.advance(100_000);
    t.v3(H1, IS_IN, G, &[S2]);
    t.advance_to(GMI + 100_000);
    assert_eq!(
        t.take_members(),
        [
            (100_000, join(Some(S2), G)),
            (GMI, leave(Some(S1), G)),
            (GMI + 100_000, leave(Some(S2), G)),
        ]
    );
    assert!(t.q.group(G).is_none());
}

#[test]
fn rfc3376_6_6_1_querier_source_query_lowers_source_timers() {
    let mut t = include(&[S1, S2]);
    t.recv(LOWER, v3_query(Ipv4Addr::UNSPECIFIED, &[], false));
    t.advance(1_000);
    t.recv(LOWER, v3_query(G, &[S1], false));
    assert_eq!(t.source_timer(G, S1), Some(1_000 + LMQT));
    assert_eq!(t.source_timer(G, S2), Some(GMI));
    t.recv(LOWER, v3_query(G, &[S2], true));
    assert_eq!(t.source_timer(G, S2), Some(GMI));
    t.advance(LMQT);
    assert_eq!(t.members(), [leave(Some(S1), G)]);
}

#[test]
fn rfc3376_6_6_1_querier_group_query_lowers_group_timer() {
    let mut t = exclude(&[], &[]);
    t.recv(LOWER, v3_query(Ipv4Addr::UNSPECIFIED, &[], false));
    t.recv(LOWER, v3_query(G, &[], true));
    assert_eq!(t.group_timer(G), Some(GMI));
    t.recv(LOWER, v3_query(G, &[], false));
    assert_eq!(t.group_timer(G), Some(LMQT));
}

#[test]
fn rfc3376_6_6_2_non_querier_sends_no_specific_queries() {
    let mut t = include(&[S1, S2]);
    t.recv(LOWER, v3_query(Ipv4Addr::UNSPECIFIED, &[], false));
    t.v3(H1, BLOCK, G, &[S1]);
    t.v3(H1, TO_IN, G, &[]);
    assert_eq!(t.sent(), []);
    assert_eq!(t.source_timer(G, S1), Some(GMI));
}

#[test]
fn rfc3376_4_2_records_of_one_report_apply_in_order_and_joins_come_first() {
    let mut t = include(&[S1]);
    t.recv(
        H1,
        IgmpMessage::V3Report {
            records: vec![
                GroupRecord {
                    kind: TO_EX,
                    group: G,
                    sources: vec![],
                },
                GroupRecord {
                    kind: ALLOW,
                    group: G2,
                    sources: vec![S2],
                },
            ],
            truncated: false,
        },
    );
    assert_eq!(
        t.members(),
        [join(None, G), join(Some(S2), G2), leave(Some(S1), G)]
    );
}

#[test]
fn rfc3376_4_1_1_float_code_encodes_what_decodes_back() {
    use crate::igmp::codec::decode_float_code;
    use crate::igmp::querier::encode_float_code;
    for value in 0..128 {
        assert_eq!(decode_float_code(encode_float_code(value)), value);
    }
    for code in 128..=255u8 {
        assert_eq!(encode_float_code(decode_float_code(code)), code);
    }
    // Between two codes, round down; above the largest, clamp.
    assert_eq!(decode_float_code(encode_float_code(137)), 136);
    assert_eq!(encode_float_code(1_000_000), 0xff);
}

#[test]
fn rfc3376_8_8_last_member_query_interval_above_12_7_s_uses_the_float_code() {
    let mut t = Harness::new(Config {
        last_member_query_interval: std::time::Duration::from_secs(20),
        ..Config::default()
    });
    t.take_sent();
    t.v3(H1, IS_IN, G, &[S1]);
    t.v3(H1, BLOCK, G, &[S1]);
    let sent = t.sent();
    let IgmpMessage::Query { max_resp_code, .. } = &sent[0].message else {
        panic!("not a query: {sent:?}");
    };
    assert_eq!(crate::igmp::codec::decode_float_code(*max_resp_code), 200);
}
