//! Golden tests: each view rendered from a fixed state, as a table and as JSON, compared with
//! the files under `testdata/`; and the answers to run-time changes over a real core.

use std::{net::Ipv4Addr, path::PathBuf};

use super::{
    fixture::{Fixture, DN1, DN2, UP},
    proto::{Answer, Document, Request, View, CONTROL_VERSION},
    render::render,
    view::*,
    Counters,
};
use crate::{
    core::{Instant, InterfaceId},
    igmp::codec::IgmpMessage,
    protocols::static_routes::StaticRoute,
    reload::{self, Settings},
};

fn oif(interface: &str, packets: u64, bytes: u64) -> Oif {
    Oif {
        interface: interface.into(),
        packets,
        bytes,
    }
}

/// One document per view, with every kind of row: a one-interface entry and a
/// two-interface one, a negative one, groups in both modes, a static group.
fn fixed() -> Vec<(&'static str, Document)> {
    let mfe = |source: &str, group: &str, oifs: Vec<Oif>, packets: u64| Mfe {
        source: source.into(),
        group: group.into(),
        iif: "up0".into(),
        upstream: "0.0.0.0".into(),
        total_out_packets: oifs.iter().map(|o| o.packets).sum(),
        oifs,
        packets,
        bytes: packets * 1028,
        wrong_if: 2,
        discards: 0,
        uptime_s: 42,
        expires_s: 858,
    };
    vec![
        (
            "interfaces",
            Document::Interfaces {
                interfaces: vec![
                    Interface {
                        name: "up0".into(),
                        ifindex: Some(2),
                        role: "upstream".into(),
                        owners: vec!["igmp-proxy".into()],
                        igmp: None,
                        tx_packets: 0,
                        tx_bytes: 0,
                    },
                    Interface {
                        name: "dn1".into(),
                        ifindex: Some(3),
                        role: "downstream".into(),
                        owners: vec!["static".into(), "igmp".into()],
                        igmp: Some(Querier {
                            version: 3,
                            querier: true,
                            querier_address: "198.18.1.1".into(),
                            groups: 2,
                        }),
                        tx_packets: 300,
                        tx_bytes: 308_400,
                    },
                    Interface {
                        name: "dn3".into(),
                        ifindex: None,
                        role: "downstream".into(),
                        owners: vec![],
                        igmp: None,
                        tx_packets: 0,
                        tx_bytes: 0,
                    },
                ],
            },
        ),
        (
            "groups",
            Document::Groups {
                groups: vec![
                    Group {
                        interface: "dn1".into(),
                        group: "232.1.1.1".into(),
                        origin: "igmp".into(),
                        filter_mode: "include".into(),
                        version: Some(3),
                        sources: vec![
                            Source {
                                address: "198.18.0.2".into(),
                                expires_s: Some(250),
                            },
                            Source {
                                address: "198.18.0.3".into(),
                                expires_s: Some(17),
                            },
                        ],
                        reporter: Some("198.18.1.2".into()),
                        expires_s: Some(250),
                    },
                    Group {
                        interface: "dn1".into(),
                        group: "239.1.1.1".into(),
                        origin: "igmp".into(),
                        filter_mode: "exclude".into(),
                        version: Some(2),
                        sources: vec![],
                        reporter: Some("198.18.1.3".into()),
                        expires_s: Some(259),
                    },
                    Group {
                        interface: "dn2".into(),
                        group: "239.1.1.1".into(),
                        origin: "igmp".into(),
                        filter_mode: "exclude".into(),
                        version: Some(3),
                        sources: vec![Source {
                            address: "198.18.0.9".into(),
                            expires_s: None,
                        }],
                        reporter: Some("198.18.2.2".into()),
                        expires_s: Some(12),
                    },
                    Group {
                        interface: "dn2".into(),
                        group: "239.2.2.2".into(),
                        origin: "static".into(),
                        filter_mode: "exclude".into(),
                        version: None,
                        sources: vec![],
                        reporter: None,
                        expires_s: None,
                    },
                ],
            },
        ),
        (
            "mfe",
            Document::Mfe {
                mfes: vec![
                    mfe(
                        "198.18.0.2",
                        "239.1.1.1",
                        vec![oif("dn1", 100, 102_800), oif("dn2", 99, 101_772)],
                        100,
                    ),
                    mfe(
                        "198.18.0.2",
                        "239.2.2.2",
                        vec![oif("dn2", 200, 205_600)],
                        200,
                    ),
                    mfe("*", "239.3.3.3", vec![], 5),
                ],
            },
        ),
        (
            "protocols",
            Document::Protocols {
                protocols: vec![
                    Protocol {
                        name: "igmp".into(),
                        protocol_id: 10,
                        component_id: 0,
                        interfaces: vec!["dn1".into(), "dn2".into()],
                        detail: vec![],
                    },
                    Protocol {
                        name: "igmp-proxy".into(),
                        protocol_id: 0x4d47_0001,
                        component_id: 1,
                        interfaces: vec!["up0".into()],
                        detail: vec![],
                    },
                    Protocol {
                        name: "static".into(),
                        protocol_id: 0x4d47_0002,
                        component_id: 1,
                        interfaces: vec!["dn2".into()],
                        detail: vec![
                            "route from up0 group 239.2.2.2 to dn2".into(),
                            "join dn2 (*, 239.4.4.4)".into(),
                        ],
                    },
                    Protocol {
                        name: "module".into(),
                        protocol_id: 0x1234,
                        component_id: 0,
                        interfaces: vec!["ext0".into()],
                        detail: vec!["module connection 1".into()],
                    },
                ],
            },
        ),
        (
            "stats",
            Document::Stats {
                stats: Stats {
                    uptime_s: 3600,
                    igmp_messages: 40,
                    igmp_rejected: 1,
                    no_cache_upcalls: 3,
                    wrong_if_upcalls: 2,
                    unknown_records: 0,
                    map_errors: 0,
                    unresolved_upcalls: 1,
                    memberships_refused: 2,
                    queries_not_sent: 0,
                    rpf_routes_refused: 1,
                    events_dropped_queue_full: 120,
                    negative_evictions: 7,
                    loop_stalls: 1,
                    module_out_full: 0,
                    module_replies_too_large: 1,
                    module_answers_dropped: 2,
                    mfes: 3,
                    interfaces: vec![
                        InterfaceStats {
                            interface: "up0".into(),
                            no_entry: 3,
                            ..InterfaceStats::default()
                        },
                        InterfaceStats {
                            interface: "dn1".into(),
                            igmp_v2_report: 10,
                            igmp_v3_report: 30,
                            igmp_v2_leave: 1,
                            malformed: 1,
                            tx_packets: 300,
                            tx_bytes: 308_400,
                            ..InterfaceStats::default()
                        },
                    ],
                },
            },
        ),
    ]
}

fn testdata(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/control/testdata")
        .join(file)
}

/// `now` matches the committed file; `MGM_WRITE_GOLDEN=1` rewrites it after a deliberate change.
fn golden(file: &str, now: &str) {
    let path = testdata(file);
    if std::env::var_os("MGM_WRITE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, now).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == now,
        "{} differs (MGM_WRITE_GOLDEN=1 cargo test -p mgm-user golden rewrites it):\n{now}",
        path.display()
    );
}

#[test]
fn golden_tables() {
    for (name, doc) in fixed() {
        golden(&format!("{name}.txt"), &render(&doc));
    }
}

#[test]
fn golden_json_documents_read_back_as_the_schema_types() {
    for (name, doc) in fixed() {
        let answer = Answer::document(doc);
        let text = format!("{:#}\n", serde_json::to_value(&answer).unwrap());
        golden(&format!("{name}.json"), &text);
        let back: Answer = serde_json::from_str(&text).unwrap();
        assert_eq!(back, answer, "{name}");
        assert_eq!(back.version, CONTROL_VERSION);
    }
}

#[test]
fn a_one_interface_entry_lists_its_interface_in_the_table() {
    let (_, doc) = fixed().into_iter().find(|(n, _)| *n == "mfe").unwrap();
    let text = render(&doc);
    let line = text.lines().find(|l| l.contains("239.2.2.2")).unwrap();
    assert!(line.contains("dn2") && line.contains("200"), "{line}");
}

const G: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);
const S: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

impl Fixture {
    fn error(&mut self, request: Request) -> String {
        let a = self.ask(request);
        assert!(!a.ok, "{a:?}");
        a.error.unwrap()
    }

    /// The outgoing interfaces of (S, G) once a packet arrived on up0.
    fn oifs(&mut self) -> Vec<InterfaceId> {
        let now = Instant::from_millis(5_000);
        self.mgm
            .no_cache_upcall(S, G, InterfaceId::new(UP), &[], now)
            .unwrap();
        self.mgm
            .forwarding_table()
            .get(&(S, G))
            .map(|(_, o)| o.iter().copied().collect())
            .unwrap_or_default()
    }
}

fn join(interface: &str, group: Ipv4Addr) -> Request {
    Request::Join {
        interface: interface.into(),
        group,
        source: None,
    }
}

#[test]
fn a_static_join_forwards_shows_and_leaves() {
    let mut f = Fixture::default();
    let a = f.ask(join("dn2", G));
    assert!(a.ok, "{a:?}");
    assert_eq!(f.oifs(), [InterfaceId::new(DN2)]);
    let Some(Document::Groups { groups }) = f.ask(Request::Show { view: View::Groups }).document
    else {
        panic!("no groups document")
    };
    assert_eq!(groups.len(), 1);
    assert_eq!(
        (groups[0].interface.as_str(), groups[0].origin.as_str()),
        ("dn2", "static")
    );
    let Some(Document::Mfe { mfes }) = f.ask(Request::Show { view: View::Mfe }).document else {
        panic!("no mfe document")
    };
    assert_eq!(mfes[0].oifs, [oif("dn2", 0, 0)], "the one-interface entry");
    assert!(f.error(join("dn2", G)).contains("already"));
    let leave = Request::Leave {
        interface: "dn2".into(),
        group: G,
        source: None,
    };
    assert!(f.ask(leave.clone()).ok);
    assert!(f.error(leave).contains("has no static join"));
    assert_eq!(f.oifs(), [], "nobody wants G any more");
}

#[test]
fn a_host_join_survives_a_static_leave_on_the_same_interface() {
    let mut f = Fixture::default();
    let now = Instant::from_millis(1_000);
    let host = Ipv4Addr::new(198, 18, 1, 2);
    f.igmp
        .handle_message(DN1, now, host, &IgmpMessage::V2Report { group: G });
    f.igmp.apply_memberships(&mut f.mgm, now);
    assert!(f.ask(join("dn1", G)).ok);
    assert!(
        f.ask(Request::Leave {
            interface: "dn1".into(),
            group: G,
            source: None
        })
        .ok
    );
    assert_eq!(f.oifs(), [InterfaceId::new(DN1)], "the host still wants G");
}

#[test]
fn static_routes_are_added_refused_and_deleted() {
    let mut f = Fixture::default();
    let route = "from up0 source 198.18.0.2 group 239.1.1.1 to dn1 dn2";
    let add = Request::RouteAdd {
        route: route.into(),
    };
    assert!(f.ask(add.clone()).ok);
    assert_eq!(f.oifs(), [InterfaceId::new(DN1), InterfaceId::new(DN2)]);
    assert!(f.error(add).contains("is there already"));
    assert!(f
        .error(Request::RouteAdd {
            route: "from dn1 source 198.18.0.2 group 239.1.1.1 to dn2".into()
        })
        .contains("delete it first"));
    let del = Request::RouteDel {
        route: route.into(),
    };
    assert!(f.ask(del.clone()).ok);
    assert!(f.error(del).contains("no static route"));
}

#[test]
fn bad_changes_say_what_is_wrong() {
    let mut f = Fixture::default();
    for (request, why) in [
        (join("eth9", G), "unknown interface eth9"),
        (join("up0", G), "is the upstream interface"),
        (
            join("dn1", Ipv4Addr::new(10, 1, 1, 1)),
            "not a multicast group",
        ),
        (
            Request::Join {
                interface: "dn1".into(),
                group: G,
                source: Some(Ipv4Addr::new(239, 9, 9, 9)),
            },
            "not a unicast source",
        ),
        (
            Request::RouteAdd {
                route: "from up0 group 10.0.0.1 to dn1".into(),
            },
            "not a multicast group",
        ),
        (
            Request::RouteAdd {
                route: "from up0 group 239.1.1.1 to eth7".into(),
            },
            "outgoing interface eth7 is not a downstream",
        ),
        (
            Request::RouteAdd {
                route: "up0 239.1.1.1 dn1".into(),
            },
            "must start with \"from\"",
        ),
    ] {
        let e = f.error(request.clone());
        assert!(e.contains(why), "{request:?}: {e}");
    }
    assert_eq!(f.oifs(), [], "no refused change forwards anything");
}

#[test]
fn stats_shows_every_counter_of_the_daemon_under_its_own_name() {
    let mut f = Fixture::default();
    // Distinct values, so a counter shown under another's name is caught.
    f.counters = Counters {
        igmp: 1,
        igmp_rejected: 2,
        no_cache: 3,
        wrong_if: 4,
        unknown: 5,
        map_errors: 6,
        unresolved: 7,
        memberships_refused: 8,
        queries_not_sent: 9,
        rpf_routes_refused: 10,
        queue_full: 11,
        negative_evictions: 12,
        stalls: 13,
        module_out_full: 14,
        module_replies_too_large: 15,
        module_answers_dropped: 16,
    };
    let Some(Document::Stats { stats }) = f.ask(Request::Show { view: View::Stats }).document
    else {
        panic!("no stats document")
    };
    let shown = [
        stats.igmp_messages,
        stats.igmp_rejected,
        stats.no_cache_upcalls,
        stats.wrong_if_upcalls,
        stats.unknown_records,
        stats.map_errors,
        stats.unresolved_upcalls,
        stats.memberships_refused,
        stats.queries_not_sent,
        stats.rpf_routes_refused,
        stats.events_dropped_queue_full,
        stats.negative_evictions,
        stats.loop_stalls,
        stats.module_out_full,
        stats.module_replies_too_large,
        stats.module_answers_dropped,
    ];
    assert_eq!(shown, std::array::from_fn(|i| i as u64 + 1));
    let table = render(&Document::Stats { stats });
    for (row, value) in [
        ("unresolved upcalls", 7),
        ("events dropped (queue full)", 11),
        ("event loop stalls", 13),
        ("module answers dropped", 16),
    ] {
        let line = table.lines().find(|l| l.contains(row)).unwrap_or_default();
        assert!(line.contains(&format!(" {value} ")), "{row}: {table}");
    }
}

#[test]
fn a_reload_makes_the_routes_what_the_configuration_says_and_drops_static_joins() {
    let mut f = Fixture::default();
    let route = |r: &str| -> StaticRoute { r.parse().unwrap() };
    let kept = route("from up0 group 239.1.1.1 to dn1");
    let run_time = route("from up0 source 198.18.0.2 group 239.1.1.1 to dn2");
    for r in [&kept, &run_time] {
        let a = f.ask(Request::RouteAdd {
            route: r.to_string(),
        });
        assert!(a.ok, "{a:?}");
    }
    let joined = Ipv4Addr::new(239, 2, 2, 2);
    assert!(f.ask(join("dn2", joined)).ok);
    assert_eq!(f.oifs(), [InterfaceId::new(DN1), InterfaceId::new(DN2)]);
    // The configuration keeps the first route, has (S, G) forwarded by another one (which
    // needs the run-time one gone first), and names an interface mgm does not manage.
    let replaces = route("from up0 source 198.18.0.2 group 239.1.1.1 to dn1");
    let bad = route("from up0 group 239.3.3.3 to eth7");
    let running = Settings {
        static_routes: f.statics.routes(),
        ..Settings::default()
    };
    let read = Settings {
        static_routes: vec![kept.clone(), replaces.clone(), bad.clone()],
        ..Settings::default()
    };
    let mut diff = reload::diff(&running, &read);
    assert_eq!(diff.routes_added, [replaces.clone(), bad]);
    assert_eq!(diff.routes_removed, std::slice::from_ref(&run_time));
    let done = f.lend(|d| super::follow_config(&diff.routes_added, &diff.routes_removed, d));
    assert_eq!(done.added, std::slice::from_ref(&replaces));
    assert_eq!(done.removed, [run_time]);
    assert_eq!(done.joins_removed, ["dn2 (*, 239.2.2.2)"]);
    assert!(
        done.refused.len() == 1 && done.refused[0].contains("eth7 is not a downstream"),
        "{:?}",
        done.refused
    );
    assert_eq!(f.statics.routes(), [kept, replaces]);
    assert!(f.statics.joins().is_empty());
    assert!(
        f.statics.held().iter().all(|(sg, _)| sg.group != joined),
        "{:?}",
        f.statics.held()
    );
    assert_eq!(f.oifs(), [InterfaceId::new(DN1)], "dn2 forwards no more");
    diff.joins_removed = done.joins_removed;
    diff.refused = done.refused;
    let said = diff.to_string();
    assert!(
        said.contains("static join removed: dn2 (*, 239.2.2.2)")
            && said
                .contains("refused: static route \"from up0 group 239.3.3.3 to eth7\" not added"),
        "{said}"
    );
}
