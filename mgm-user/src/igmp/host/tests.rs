//! The host side driven by a simulated clock: inputs in, the reports it sends checked with the
//! time it sent them.

use std::{collections::BTreeSet, net::Ipv4Addr, time::Duration};

use super::*;
use crate::igmp::codec::{encode, QueryV3};

const G: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);
const G2: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 2);
const S1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const S2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const S3: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);

/// A host side, a clock, and what it sent (milliseconds since start, report).
struct Harness {
    host: Host,
    now: Instant,
    start: Instant,
}

impl Harness {
    fn new() -> Self {
        let start = Instant::from_millis(5_000_000);
        Harness {
            host: Host::new(Config::default(), 42),
            now: start,
            start,
        }
    }

    fn ms(&self) -> u64 {
        self.now.as_millis() - self.start.as_millis()
    }

    /// Runs every timer up to `ms` after the start; returns what was sent, with when.
    fn run_to(&mut self, ms: u64) -> Vec<(u64, Transmit)> {
        let end = self.start + Duration::from_millis(ms);
        let mut sent = self.drain();
        while let Some(at) = self.host.poll_timeout().filter(|at| *at <= end) {
            assert!(at >= self.now, "a deadline in the past");
            self.now = at;
            self.host.handle_timeout(at);
            sent.extend(self.drain());
        }
        self.now = end;
        sent
    }

    fn drain(&mut self) -> Vec<(u64, Transmit)> {
        let ms = self.ms();
        std::iter::from_fn(|| self.host.poll_transmit())
            .map(|t| (ms, t))
            .collect()
    }

    fn join(&mut self, group: Ipv4Addr) {
        self.host
            .set(self.now, group, FilterMode::Exclude, BTreeSet::new());
    }

    fn include(&mut self, group: Ipv4Addr, sources: &[Ipv4Addr]) {
        let sources = sources.iter().copied().collect();
        self.host.set(self.now, group, FilterMode::Include, sources);
    }

    fn query(&mut self, group: Ipv4Addr, max_resp_code: u8, v3: Option<&[Ipv4Addr]>) {
        let msg = IgmpMessage::Query {
            max_resp_code,
            group,
            v3: v3.map(|s| QueryV3 {
                s_flag: false,
                qrv: 2,
                qqic: 125,
                sources: s.to_vec(),
            }),
        };
        self.host.handle_message(self.now, &msg);
    }
}

fn record(kind: RecordType, group: Ipv4Addr, sources: &[Ipv4Addr]) -> GroupRecord {
    GroupRecord {
        kind,
        group,
        sources: sources.to_vec(),
    }
}

fn v3(records: Vec<GroupRecord>) -> Transmit {
    Transmit {
        destination: ALL_IGMPV3_ROUTERS,
        message: IgmpMessage::V3Report {
            records,
            truncated: false,
        },
    }
}

fn reports(sent: &[(u64, Transmit)]) -> Vec<Transmit> {
    sent.iter().map(|(_, t)| t.clone()).collect()
}

#[test]
fn rfc3376_5_1_a_join_is_reported_at_once_and_once_more_within_the_interval() {
    let mut h = Harness::new();
    h.join(G);
    let sent = h.run_to(10_000);
    let to_ex = v3(vec![record(RecordType::ChangeToExclude, G, &[])]);
    assert_eq!(reports(&sent), [to_ex.clone(), to_ex]);
    assert_eq!(sent[0].0, 0, "the first report goes at once");
    assert!(
        sent[1].0 <= 1_000,
        "repeated within the unsolicited report interval"
    );
    assert_eq!(h.host.poll_timeout(), None, "nothing left to send");
    assert_eq!(h.host.groups().collect::<Vec<_>>(), [G]);
}

#[test]
fn rfc3376_5_1_a_leave_is_reported_twice_and_the_group_forgotten() {
    let mut h = Harness::new();
    h.join(G);
    h.run_to(5_000);
    h.include(G, &[]);
    let sent = h.run_to(10_000);
    let to_in = v3(vec![record(RecordType::ChangeToInclude, G, &[])]);
    assert_eq!(reports(&sent), [to_in.clone(), to_in]);
    assert_eq!(h.host.groups().count(), 0);
    assert_eq!(h.host.poll_timeout(), None);
}

#[test]
fn rfc3376_5_1_source_changes_are_allow_and_block_records_merged_while_pending() {
    let mut h = Harness::new();
    h.include(G, &[S1]);
    // Before the repetition: S2 added and S1 gone; the repetition carries both changes.
    h.include(G, &[S2]);
    let sent = h.run_to(10_000);
    let allow_s1 = v3(vec![record(RecordType::AllowNewSources, G, &[S1])]);
    let both = v3(vec![
        record(RecordType::AllowNewSources, G, &[S2]),
        record(RecordType::BlockOldSources, G, &[S1]),
    ]);
    assert_eq!(reports(&sent), [allow_s1, both.clone(), both]);
    h.include(G, &[]);
    let sent = h.run_to(20_000);
    let block = v3(vec![record(RecordType::BlockOldSources, G, &[S2])]);
    assert_eq!(reports(&sent), [block.clone(), block]);
    assert_eq!(h.host.groups().count(), 0);
}

#[test]
fn rfc3376_5_1_a_mode_change_while_pending_is_repeated_as_the_current_state() {
    let mut h = Harness::new();
    h.include(G, &[S1]);
    h.join(G);
    let sent = h.run_to(10_000);
    let allow = v3(vec![record(RecordType::AllowNewSources, G, &[S1])]);
    let to_ex = v3(vec![record(RecordType::ChangeToExclude, G, &[])]);
    assert_eq!(reports(&sent), [allow, to_ex.clone(), to_ex]);
}

#[test]
fn rfc3376_5_2_general_query_is_answered_with_every_group_within_max_resp_time() {
    let mut h = Harness::new();
    h.join(G);
    h.include(G2, &[S1, S2]);
    h.run_to(10_000);
    // Max Resp Code 50: 5 s.
    h.query(Ipv4Addr::UNSPECIFIED, 50, Some(&[]));
    let sent = h.run_to(20_000);
    assert_eq!(
        reports(&sent),
        [v3(vec![
            record(RecordType::ModeIsExclude, G, &[]),
            record(RecordType::ModeIsInclude, G2, &[S1, S2]),
        ])]
    );
    assert!(sent[0].0 <= 15_000, "answered at {} ms", sent[0].0);
}

#[test]
fn rfc3376_5_2_group_and_source_queries_are_answered_for_that_group_only() {
    let mut h = Harness::new();
    h.join(G);
    h.include(G2, &[S1, S2]);
    h.run_to(10_000);
    h.query(G, 10, Some(&[]));
    let sent = h.run_to(12_000);
    assert_eq!(
        reports(&sent),
        [v3(vec![record(RecordType::ModeIsExclude, G, &[])])]
    );
    // Of the queried sources, the ones the state lets through.
    h.query(G2, 10, Some(&[S2, S3]));
    h.query(G, 10, Some(&[S3]));
    let sent = h.run_to(14_000);
    let mut got = reports(&sent)
        .into_iter()
        .flat_map(|t| match t.message {
            IgmpMessage::V3Report { records, .. } => records,
            other => panic!("{other:?}"),
        })
        .collect::<Vec<_>>();
    got.sort_by_key(|r| r.group);
    assert_eq!(
        got,
        [
            record(RecordType::ModeIsInclude, G, &[S3]),
            record(RecordType::ModeIsInclude, G2, &[S2]),
        ]
    );
    // A group it has no state for: no answer.
    h.query(Ipv4Addr::new(239, 9, 9, 9), 10, Some(&[]));
    assert!(h.run_to(20_000).is_empty());
}

#[test]
fn rfc3376_7_2_1_a_v2_querier_gets_v2_reports_and_leaves_until_it_is_gone() {
    let mut h = Harness::new();
    h.query(Ipv4Addr::UNSPECIFIED, 100, None);
    assert_eq!(h.host.version(h.now), Version::V2);
    h.join(G);
    let sent = h.run_to(5_000);
    let report = Transmit {
        destination: G,
        message: IgmpMessage::V2Report { group: G },
    };
    assert_eq!(reports(&sent), [report.clone(), report.clone()]);
    h.query(Ipv4Addr::UNSPECIFIED, 100, None);
    let sent = h.run_to(20_000);
    assert_eq!(reports(&sent), [report], "the v2 general query is answered");
    h.include(G, &[]);
    let sent = h.run_to(25_000);
    let leave = Transmit {
        destination: ALL_ROUTERS,
        message: IgmpMessage::V2Leave { group: G },
    };
    assert_eq!(reports(&sent), [leave.clone(), leave]);
    // Older Version Querier Present Timeout: 2 × 125 s + 10 s after the last v2 query.
    h.run_to(5_000 + 260_000 + 1);
    assert_eq!(h.host.version(h.now), Version::V3);
    h.join(G2);
    let sent = h.run_to(300_000);
    assert_eq!(
        reports(&sent)[0],
        v3(vec![record(RecordType::ChangeToExclude, G2, &[])])
    );
}

#[test]
fn rfc3376_7_2_1_a_v1_querier_gets_v1_reports_and_no_leave() {
    let mut h = Harness::new();
    h.query(Ipv4Addr::UNSPECIFIED, 0, None);
    assert_eq!(h.host.version(h.now), Version::V1);
    h.include(G, &[S1]);
    let sent = h.run_to(5_000);
    let report = Transmit {
        destination: G,
        message: IgmpMessage::V1Report { group: G },
    };
    assert_eq!(reports(&sent), [report.clone(), report]);
    h.include(G, &[]);
    assert!(h.run_to(10_000).is_empty());
    assert_eq!(h.host.groups().count(), 0);
}

#[test]
fn leave_all_sends_every_leave_robustness_times_at_once_and_ends_every_timer() {
    let mut h = Harness::new();
    h.join(G);
    h.include(G2, &[S1]);
    h.run_to(10_000);
    h.query(Ipv4Addr::UNSPECIFIED, 100, Some(&[]));
    h.host.leave_all(h.now);
    let sent = h.drain();
    let mut records: Vec<GroupRecord> = reports(&sent)
        .into_iter()
        .flat_map(|t| match t.message {
            IgmpMessage::V3Report { records, .. } => records,
            other => panic!("{other:?}"),
        })
        .collect();
    records.sort_by_key(|r| (r.group, r.kind as u8));
    let to_in = record(RecordType::ChangeToInclude, G, &[]);
    let block = record(RecordType::BlockOldSources, G2, &[S1]);
    assert_eq!(records, [to_in.clone(), to_in, block.clone(), block]);
    assert_eq!(
        h.host.poll_timeout(),
        None,
        "nothing more, not even the answer"
    );
    assert_eq!(h.host.groups().count(), 0);
}

#[test]
fn a_general_answer_for_many_groups_is_split_into_reports_that_fit_a_frame() {
    let mut h = Harness::new();
    let groups: Vec<Ipv4Addr> = (0..500u32)
        .map(|i| Ipv4Addr::from(u32::from(Ipv4Addr::new(239, 2, 0, 0)) + i))
        .collect();
    for g in &groups {
        h.join(*g);
    }
    h.run_to(10_000);
    h.query(Ipv4Addr::UNSPECIFIED, 10, Some(&[]));
    let sent = h.run_to(20_000);
    let mut answered = Vec::new();
    for (_, t) in &sent {
        assert!(encode(&t.message).len() <= MAX_REPORT_LEN);
        if let IgmpMessage::V3Report { records, .. } = &t.message {
            answered.extend(records.iter().map(|r| r.group));
        }
    }
    assert!(sent.len() > 1, "one report could not hold 500 records");
    assert_eq!(answered, groups);
}

#[test]
fn queries_without_state_and_reports_of_others_send_nothing() {
    let mut h = Harness::new();
    h.query(Ipv4Addr::UNSPECIFIED, 10, Some(&[]));
    h.host
        .handle_message(h.now, &IgmpMessage::V2Report { group: G });
    assert!(h.run_to(10_000).is_empty());
    h.include(G, &[]);
    assert!(h.run_to(20_000).is_empty(), "INCLUDE {{}} is no membership");
}
