//! Seeded random sequences of reports, leaves, queries and time jumps, with the querier's
//! invariants checked after every step (style §9).

use std::collections::BTreeSet;

use proptest::{
    prelude::*,
    test_runner::{Config as ProptestConfig, RngSeed},
};

use super::*;
use crate::igmp::querier::FilterMode;

const GROUPS: [Ipv4Addr; 3] = [G, G2, G3];
const SOURCES: [Ipv4Addr; 4] = [S1, S2, S3, S4];
const HOSTS: [Ipv4Addr; 3] = [H1, H2, Ipv4Addr::new(10, 0, 0, 103)];
const ROUTERS: [Ipv4Addr; 3] = [LOWER, HIGHER, Ipv4Addr::UNSPECIFIED];

#[derive(Debug, Clone)]
enum Op {
    Old {
        v1: bool,
        host: usize,
        group: usize,
    },
    Leave {
        host: usize,
        group: usize,
    },
    V3 {
        host: usize,
        records: Vec<(u8, usize, Vec<usize>)>,
    },
    Query {
        router: usize,
        group: Option<usize>,
        sources: Vec<usize>,
        s_flag: bool,
        v3: bool,
    },
    /// Jump straight to `now + ms` with one handle_timeout.
    Jump(u64),
    /// Run exactly the next deadline.
    Step,
}

fn sources() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(0..SOURCES.len(), 0..4)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (any::<bool>(), 0..HOSTS.len(), 0..GROUPS.len())
            .prop_map(|(v1, host, group)| Op::Old { v1, host, group }),
        1 => (0..HOSTS.len(), 0..GROUPS.len()).prop_map(|(host, group)| Op::Leave { host, group }),
        3 => (
            0..HOSTS.len(),
            proptest::collection::vec((1u8..=6, 0..GROUPS.len(), sources()), 1..3)
        )
            .prop_map(|(host, records)| Op::V3 { host, records }),
        1 => (
            0..ROUTERS.len(),
            proptest::option::of(0..GROUPS.len()),
            sources(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(router, group, sources, s_flag, v3)| Op::Query {
                router,
                group,
                sources,
                s_flag,
                v3
            }),
        2 => prop_oneof![0u64..3_000, 0u64..300_000].prop_map(Op::Jump),
        2 => Just(Op::Step),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    (
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(1usize..3),
        proptest::option::of(1usize..5),
        1u8..4,
    )
        .prop_map(
            |(v2, fast_leave, max_groups, max_sources, robustness)| Config {
                version: if v2 { Version::V2 } else { Version::V3 },
                fast_leave,
                max_groups,
                max_sources,
                robustness,
                ..Config::default()
            },
        )
}

fn message(op: &Op) -> Option<(Ipv4Addr, IgmpMessage)> {
    Some(match op {
        Op::Old { v1, host, group } => {
            let group = GROUPS[*group];
            let msg = if *v1 {
                IgmpMessage::V1Report { group }
            } else {
                IgmpMessage::V2Report { group }
            };
            (HOSTS[*host], msg)
        }
        Op::Leave { host, group } => (
            HOSTS[*host],
            IgmpMessage::V2Leave {
                group: GROUPS[*group],
            },
        ),
        Op::V3 { host, records } => (
            HOSTS[*host],
            IgmpMessage::V3Report {
                records: records
                    .iter()
                    .map(|(kind, group, sources)| GroupRecord {
                        kind: RecordType::try_from(*kind).unwrap(),
                        group: GROUPS[*group],
                        sources: sources.iter().map(|s| SOURCES[*s]).collect(),
                    })
                    .collect(),
                truncated: false,
            },
        ),
        Op::Query {
            router,
            group,
            sources,
            s_flag,
            v3,
        } => {
            let group = group.map_or(Ipv4Addr::UNSPECIFIED, |g| GROUPS[g]);
            let v3 = v3.then(|| QueryV3 {
                s_flag: *s_flag,
                qrv: 2,
                qqic: 125,
                sources: sources.iter().map(|s| SOURCES[*s]).collect(),
            });
            (
                ROUTERS[*router],
                IgmpMessage::Query {
                    max_resp_code: 10,
                    group,
                    v3,
                },
            )
        }
        Op::Jump(_) | Op::Step => return None,
    })
}

/// Runs `ops` and checks the invariants after each one.
fn run(config: Config, ops: &[Op]) -> Result<(), TestCaseError> {
    let max_groups = config.max_groups;
    let max_sources = config.max_sources;
    let mut now = Instant::from_millis(5_000);
    let mut q = Querier::new(IF, OWN, config, now).unwrap();
    // What the core holds after every membership so far (spec §4.8).
    let mut replayed: BTreeSet<(Ipv4Addr, crate::igmp::querier::Entry)> = BTreeSet::new();
    for op in ops {
        match op {
            Op::Jump(ms) => {
                now = Instant::from_millis(now.as_millis() + ms);
                q.handle_timeout(now);
            }
            Op::Step => {
                if let Some(t) = q.poll_timeout() {
                    now = t;
                    q.handle_timeout(now);
                }
            }
            other => {
                let (from, msg) = message(other).unwrap();
                q.handle_message(now, IpHeader::conforming(from), &msg);
            }
        }
        while q.poll_transmit().is_some() {}
        while let Some(m) = q.poll_membership() {
            prop_assert_eq!(m.ifindex, IF);
            let key = (m.group, (m.source, m.exclude));
            let star = (m.group, (None, false));
            if m.exclude {
                // An exclusion is only ever added or removed under its (*,G), as MGM requires.
                prop_assert!(replayed.contains(&star), "{:?} without its (*,G)", m);
            }
            if m.join {
                prop_assert!(replayed.insert(key), "join of {:?} twice", key);
            } else {
                prop_assert!(replayed.remove(&key), "leave of {:?} never joined", key);
            }
            if !m.join && key == star {
                // MGM drops the exclusions with their (*,G).
                replayed.retain(|(g, (_, exclude))| *g != m.group || !exclude);
            }
        }
        prop_assert_eq!(&replayed, &q.forwarding());
        // The timers' index files every group under its earliest deadline, as a scan finds.
        let [index, scan] = q.deadlines_and_scan();
        prop_assert_eq!(index, scan);
        if let Some(t) = q.poll_timeout() {
            prop_assert!(t > now, "deadline {:?} not after now {:?}", t, now);
        }
        let mut sources = 0;
        for g in q.groups() {
            // Spec §4.8: INCLUDE(A) is (S,G) for A; EXCLUDE(X, Y) is (*,G) minus Y, the
            // sources whose timer is 0.
            let want: BTreeSet<_> = match g.filter_mode() {
                FilterMode::Include => g.sources().map(|(s, _)| (Some(s), false)).collect(),
                FilterMode::Exclude => g
                    .sources()
                    .filter(|(_, t)| t.is_none())
                    .map(|(s, _)| (Some(s), true))
                    .chain([(None, false)])
                    .collect(),
            };
            let got: BTreeSet<_> = replayed
                .iter()
                .filter(|(group, _)| *group == g.address())
                .map(|(_, e)| *e)
                .collect();
            prop_assert_eq!(got, want, "memberships of {}", g.address());
            let timers: Vec<Option<Instant>> = g.sources().map(|(_, t)| t).collect();
            sources += timers.len();
            match g.filter_mode() {
                FilterMode::Include => {
                    prop_assert!(!timers.is_empty());
                    prop_assert!(timers.iter().all(Option::is_some));
                    prop_assert!(g.group_timer().is_none());
                }
                FilterMode::Exclude => prop_assert!(g.group_timer().is_some()),
            }
        }
        prop_assert_eq!(sources, q.source_count());
        let [host_units, held] = q.host_units();
        prop_assert_eq!(host_units, held);
        prop_assert!(max_sources.is_none_or(|m| host_units <= m));
        prop_assert!(max_sources.is_none_or(|m| sources <= m));
        prop_assert!(max_groups.is_none_or(|m| q.groups().count() <= m));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        rng_seed: RngSeed::Fixed(0x6d67_6d71),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn prop_random_sequences_keep_the_invariants(
        config in config(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        run(config, &ops)?;
    }
}
