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
    igmp::{
        codec::IgmpMessage,
        querier::{IpHeader, Subnet},
    },
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
                    module_decisions_not_waited: 0,
                    upstream_reports_dropped: 0,
                    upstream_failures: 0,
                    upstream_relinks: 0,
                    attach_failures: 0,
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
                            igmp_foreign_queries: 2,
                            igmp_no_router_alert: 5,
                            igmp_ttl_not_1: 1,
                            igmp_nonconforming_dropped: 0,
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
    let Some(Document::Groups { groups }) = f.ask(Request::show(View::Groups)).document else {
        panic!("no groups document")
    };
    assert_eq!(groups.len(), 1);
    assert_eq!(
        (groups[0].interface.as_str(), groups[0].origin.as_str()),
        ("dn2", "static")
    );
    let Some(Document::Mfe { mfes }) = f.ask(Request::show(View::Mfe)).document else {
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
    let host = IpHeader::conforming(Ipv4Addr::new(198, 18, 1, 2));
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
        module_decisions_not_waited: 17,
        upstream_reports_dropped: 18,
        upstream_failures: 19,
        upstream_relinks: 20,
        attach_failures: 21,
        queriers: vec![],
    };
    let Some(Document::Stats { stats }) = f.ask(Request::show(View::Stats)).document else {
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
        stats.module_decisions_not_waited,
        stats.upstream_reports_dropped,
        stats.upstream_failures,
        stats.upstream_relinks,
        stats.attach_failures,
    ];
    assert_eq!(shown, std::array::from_fn(|i| i as u64 + 1));
    let table = render(&Document::Stats { stats });
    for (row, value) in [
        ("unresolved upcalls", 7),
        ("events dropped (queue full)", 11),
        ("event loop stalls", 13),
        ("module answers dropped", 16),
        ("module decisions not waited for", 17),
        ("upstream reports dropped", 18),
        ("upstream calls failed", 19),
        ("upstream links taken again", 20),
        ("interface attaches failed", 21),
    ] {
        let line = table.lines().find(|l| l.contains(row)).unwrap_or_default();
        assert!(line.contains(&format!(" {value} ")), "{row}: {table}");
    }
}

#[test]
fn stats_shows_what_each_interfaces_querier_set_aside_or_flagged() {
    let mut f = Fixture::default();
    let now = Instant::from_millis(1_000);
    let link = Subnet {
        address: Ipv4Addr::new(198, 18, 1, 1),
        prefix_len: 24,
    };
    f.igmp.set_subnets(DN1, vec![link]);
    let query = IgmpMessage::Query {
        max_resp_code: 100,
        group: Ipv4Addr::UNSPECIFIED,
        v3: None,
    };
    let forged = IpHeader::conforming(Ipv4Addr::new(10, 0, 0, 1));
    f.igmp.handle_message(DN1, now, forged, &query);
    let old_stack = IpHeader {
        router_alert: false,
        ..IpHeader::conforming(Ipv4Addr::new(198, 18, 1, 2))
    };
    let routed = IpHeader {
        ttl: 3,
        ..IpHeader::conforming(Ipv4Addr::new(198, 18, 1, 3))
    };
    for ip in [old_stack, old_stack, routed] {
        f.igmp
            .handle_message(DN1, now, ip, &IgmpMessage::V2Report { group: G });
    }
    let Some(Document::Stats { stats }) = f.ask(Request::show(View::Stats)).document else {
        panic!("no stats document")
    };
    let checks: Vec<(&str, [u64; 4])> = stats
        .interfaces
        .iter()
        .map(|i| {
            let counts = [
                i.igmp_foreign_queries,
                i.igmp_no_router_alert,
                i.igmp_ttl_not_1,
                i.igmp_nonconforming_dropped,
            ];
            (i.interface.as_str(), counts)
        })
        .collect();
    assert_eq!(
        checks,
        [("up0", [0; 4]), ("dn1", [1, 2, 1, 0]), ("dn2", [0; 4])]
    );
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

/// The rows of `view` page by page, `limit` at a time, with `between` run after each page
/// but the last (given how many pages came); each row as "source group" (mfe) or
/// "interface group source" (groups), and the size of each page.
fn walk(
    f: &mut Fixture,
    view: View,
    limit: u32,
    mut between: impl FnMut(&mut Fixture, usize),
) -> (Vec<String>, Vec<usize>) {
    let (mut rows, mut sizes, mut after) = (Vec::new(), Vec::new(), None);
    loop {
        let a = f.ask(Request::Show {
            view,
            after: after.take(),
            limit: Some(limit),
        });
        assert!(a.ok, "{a:?}");
        let page: Vec<String> = match a.document {
            Some(Document::Mfe { mfes }) => mfes
                .iter()
                .map(|m| format!("{} {}", m.source, m.group))
                .collect(),
            Some(Document::Groups { groups }) => groups
                .iter()
                .map(|g| {
                    let s = g.sources.first().map_or("*", |s| s.address.as_str());
                    format!("{} {} {s}", g.interface, g.group)
                })
                .collect(),
            other => panic!("{other:?}"),
        };
        assert!(page.len() <= limit as usize);
        sizes.push(page.len());
        rows.extend(page);
        match a.next {
            None => return (rows, sizes),
            Some(next) => {
                between(f, sizes.len());
                after = Some(next);
            }
        }
    }
}

/// Negative MFEs from 198.18.0.2 to 239.9.0.1 … 239.9.0.`n`, in the fixture.
fn mfes(f: &mut Fixture, n: u16) {
    for i in 1..=n {
        let [a, b] = i.to_be_bytes();
        f.mgm
            .no_cache_upcall(
                S,
                Ipv4Addr::new(239, 9, a, b),
                InterfaceId::new(UP),
                &[],
                Instant::from_millis(5_000),
            )
            .unwrap();
    }
}

#[test]
fn mfe_pages_cover_the_table_once_at_every_boundary() {
    let mut f = Fixture::default();
    assert_eq!(walk(&mut f, View::Mfe, 3, |_, _| ()), (vec![], vec![0]));
    mfes(&mut f, 6);
    let whole = f.ask(Request::show(View::Mfe));
    assert_eq!(whole.next, None, "6 rows fit the default page");
    let (rows, sizes) = walk(&mut f, View::Mfe, 3, |_, _| ());
    assert_eq!(sizes, [3, 3], "no empty last page");
    let Some(Document::Mfe { mfes: all }) = whole.document else {
        panic!()
    };
    let want: Vec<String> = all
        .iter()
        .map(|m| format!("{} {}", m.source, m.group))
        .collect();
    assert_eq!(rows, want);
    assert_eq!(walk(&mut f, View::Mfe, 4, |_, _| ()).1, [4, 2]);
    assert_eq!(walk(&mut f, View::Mfe, 6, |_, _| ()).1, [6]);
    assert_eq!(
        walk(&mut f, View::Mfe, u32::MAX, |_, _| ()).1,
        [6],
        "cut to the cap"
    );
}

#[test]
fn group_pages_show_rows_that_stay_once_while_others_come_and_go() {
    let mut f = Fixture::default();
    let g = |i: u8| Ipv4Addr::new(239, 5, 0, i);
    for i in 1..=4 {
        assert!(f.ask(join("dn1", g(i))).ok);
        assert!(f.ask(join("dn2", g(i))).ok);
    }
    // Two static rows that differ only in their source.
    let with_source = Request::Join {
        interface: "dn2".into(),
        group: g(1),
        source: Some(S),
    };
    assert!(f.ask(with_source).ok);
    let (rows, sizes) = walk(&mut f, View::Groups, 3, |_, _| ());
    assert_eq!(sizes, [3, 3, 3]);
    let want: Vec<String> = (1..=4)
        .map(|i| format!("dn1 {} *", g(i)))
        .chain([format!("dn2 {} *", g(1)), format!("dn2 {} {S}", g(1))])
        .chain((2..=4).map(|i| format!("dn2 {} *", g(i))))
        .collect();
    assert_eq!(rows, want);
    let (rows, _) = walk(&mut f, View::Groups, 3, |f, page| {
        if page != 1 {
            return;
        }
        // After dn1 g1..g3: the cursor's row goes, as do one seen and one ahead; rows come
        // before the cursor (already passed) and after it.
        let leave = |interface: &str, i| Request::Leave {
            interface: interface.into(),
            group: g(i),
            source: None,
        };
        for (interface, i) in [("dn1", 3), ("dn1", 1), ("dn2", 2)] {
            assert!(f.ask(leave(interface, i)).ok);
        }
        for (interface, i) in [("dn1", 0), ("dn1", 9), ("dn2", 9)] {
            assert!(f.ask(join(interface, g(i))).ok);
        }
    });
    let want: Vec<String> = [
        "dn1 1 *", "dn1 2 *", "dn1 3 *", "dn1 4 *", "dn1 9 *", "dn2 1 *", "dn2 1 S", "dn2 3 *",
        "dn2 4 *", "dn2 9 *",
    ]
    .iter()
    .map(|r| {
        let [i, n, s] = r.split(' ').collect::<Vec<_>>()[..] else {
            unreachable!()
        };
        let s = if s == "S" {
            S.to_string()
        } else {
            s.to_owned()
        };
        format!("{i} {} {s}", g(n.parse().unwrap()))
    })
    .collect();
    assert_eq!(rows, want);
}

#[test]
fn bad_pages_are_refused_with_a_reason() {
    let mut f = Fixture::default();
    let show = |view, after: &str, limit| Request::Show {
        view,
        after: Some(after.to_owned()).filter(|a| !a.is_empty()),
        limit,
    };
    for (request, why) in [
        (show(View::Mfe, "", Some(0)), "limit 0"),
        (show(View::Mfe, "239.1.1.1", None), "not the next of an mfe"),
        (
            show(View::Groups, "dn1 239.1.1.1", None),
            "not the next of a groups",
        ),
        (
            show(View::Groups, "dn1 x igmp *", None),
            "not the next of a groups",
        ),
        (
            show(View::Stats, "x", None),
            "the stats view comes in one answer",
        ),
    ] {
        let e = f.error(request);
        assert!(e.contains(why), "{e}");
    }
}

#[test]
fn the_client_gathers_every_page_into_one_answer() {
    use std::io::{BufRead, BufReader, Write};
    let mut f = Fixture::default();
    // More than a default page, under the per-interface budget of negative entries.
    mfes(&mut f, 1_020);
    let whole = f.ask(Request::Show {
        view: View::Mfe,
        after: None,
        limit: Some(super::proto::MAX_PAGE),
    });
    let Some(Document::Mfe { mfes: all }) = &whole.document else {
        panic!("{whole:?}")
    };
    assert!(all.len() > super::proto::DEFAULT_PAGE as usize && whole.next.is_none());
    let dir = std::env::temp_dir().join(format!("mgm-ctl-pages-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.sock");
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let client = std::thread::spawn({
        let path = path.clone();
        move || super::client::show(&path, View::Mfe)
    });
    let mut pages = 0;
    loop {
        let (stream, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        let answer = f.ask(Request::parse(line.trim_end()).unwrap());
        let last = answer.next.is_none();
        writeln!(&stream, "{}", serde_json::to_string(&answer).unwrap()).unwrap();
        pages += 1;
        if last {
            break;
        }
    }
    let gathered = client.join().unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(pages, 2);
    assert_eq!(gathered, whole, "the same answer as one page of everything");
    assert_eq!(
        render(gathered.document.as_ref().unwrap()),
        render(whole.document.as_ref().unwrap())
    );
}
