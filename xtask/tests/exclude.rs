//! End-to-end: IGMPv3 source filtering (RFC 3376 §6.4, spec §4.8). A host on dn1 drives every
//! row of the router state tables with reports this test builds and sends from a raw socket
//! (the host's kernel joined none of the groups, so it adds nothing of its own). Then sources
//! behind the upstream send to every group, and captures on the wire count every datagram: dn1
//! must get exactly the sources the RFC state forwards, while r2, a kernel IGMPv3 host that
//! joined every group, gets all of them, so a blocked source is cut only where it is blocked.
//! Needs root; run through `cargo xtask test`.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Condvar, Mutex,
    },
    time::{Duration, Instant},
};

use xtask::lab::{
    mgm_bin, receiver_addr,
    stream::wait_until,
    traffic::{raw_igmp_socket, set_igmp_checksum, Capture, Receiver, Sender},
    unique_tag, Daemon, IgmpVersion, Lab, HOST_IF, SENDER_ADDR,
};

/// Sources behind the upstream: extra addresses of the sender host.
const S1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
const S2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 12);
const S3: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 13);
const S4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 14);
const S20: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 20);
const S21: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 21);
const SOURCES: [Ipv4Addr; 6] = [S1, S2, S3, S4, S20, S21];
/// The group whose datagram, sent last from [`SENDER_ADDR`], marks the end of the traffic.
const SENTINEL: Ipv4Addr = Ipv4Addr::new(239, 20, 0, 99);
/// Rounds of one datagram per source and group after the MFEs exist.
const BURST: usize = 3;
const DEADLINE: Duration = Duration::from_secs(10);
/// Datagrams sent before waiting for them: few enough for the capture sockets' buffers
/// however late their threads run.
const BATCH: usize = 8;
/// How long one round of first datagrams waits for arrivals before the next round.
const PRIME_ROUND: Duration = Duration::from_millis(200);

/// IGMPv3 group record types (RFC 3376 §4.2.12).
#[derive(Clone, Copy, Debug)]
enum Record {
    IsIn = 1,
    IsEx = 2,
    ToIn = 3,
    ToEx = 4,
    Allow = 5,
    Block = 6,
}
use Record::*;

/// One row of RFC 3376 §6.4.1 on its own group: the reports that reach the starting state,
/// the report of the row, the sources dn1 must get once the router has settled, and the log
/// lines that say it has (the membership changes its unanswered queries end in).
struct Row {
    name: &'static str,
    group: Ipv4Addr,
    reports: Vec<(Record, Vec<Ipv4Addr>)>,
    forwarded: Vec<Ipv4Addr>,
    settled: Vec<String>,
}

/// INCLUDE({S1,S2}).
fn include_a() -> Vec<(Record, Vec<Ipv4Addr>)> {
    vec![(IsIn, vec![S1, S2])]
}

/// EXCLUDE(X = {S1,S2}, Y = {S20,S21}).
fn exclude_xy() -> Vec<(Record, Vec<Ipv4Addr>)> {
    vec![(IsIn, vec![S1, S2]), (IsEx, vec![S1, S2, S20, S21])]
}

fn rows() -> Vec<Row> {
    let all_but = |out: &[Ipv4Addr]| -> Vec<Ipv4Addr> {
        SOURCES
            .iter()
            .filter(|s| !out.contains(s))
            .copied()
            .collect()
    };
    let mut rows = Vec::new();
    let mut row = |name, start: Vec<_>, report: (Record, Vec<Ipv4Addr>), fwd: Vec<_>, settled| {
        let group = Ipv4Addr::new(239, 20, 0, rows.len() as u8 + 1);
        let mut reports = start;
        reports.push(report);
        let settled = settled_lines(group, settled);
        rows.push(Row {
            name,
            group,
            reports,
            forwarded: fwd,
            settled,
        });
    };
    // INCLUDE(A) + IS_IN(B) → INCLUDE(A+B).
    row(
        "INCLUDE + IS_IN",
        include_a(),
        (IsIn, vec![S2, S3]),
        vec![S1, S2, S3],
        vec![("joins", "S3")],
    );
    // INCLUDE(A) + IS_EX(B) → EXCLUDE(A*B, B-A).
    row(
        "INCLUDE + IS_EX",
        include_a(),
        (IsEx, vec![S2, S3]),
        all_but(&[S3]),
        vec![("excludes", "S3")],
    );
    // INCLUDE(A) + ALLOW(B) → INCLUDE(A+B).
    row(
        "INCLUDE + ALLOW",
        include_a(),
        (Allow, vec![S3]),
        vec![S1, S2, S3],
        vec![("joins", "S3")],
    );
    // INCLUDE(A) + BLOCK(B) → INCLUDE(A), Q(G, A*B) goes unanswered: INCLUDE(A-B).
    row(
        "INCLUDE + BLOCK",
        include_a(),
        (Block, vec![S2, S3]),
        vec![S1],
        vec![("leaves", "S2")],
    );
    // INCLUDE(A) + TO_IN(B) → INCLUDE(A+B), Q(G, A-B) goes unanswered: INCLUDE(B).
    row(
        "INCLUDE + TO_IN",
        include_a(),
        (ToIn, vec![S3]),
        vec![S3],
        vec![("leaves", "S1"), ("leaves", "S2")],
    );
    // INCLUDE(A) + TO_EX(B) → EXCLUDE(A*B, B-A), Q(G, A*B) unanswered: EXCLUDE({}, B).
    row(
        "INCLUDE + TO_EX",
        include_a(),
        (ToEx, vec![S2, S3]),
        all_but(&[S2, S3]),
        vec![("excludes", "S2"), ("excludes", "S3")],
    );
    // EXCLUDE(X,Y) + IS_IN(A) → EXCLUDE(X+A, Y-A).
    row(
        "EXCLUDE + IS_IN",
        exclude_xy(),
        (IsIn, vec![S3, S20]),
        all_but(&[S21]),
        vec![("stops excluding", "S20")],
    );
    // EXCLUDE(X,Y) + IS_EX(A) → EXCLUDE(A-Y, Y*A).
    row(
        "EXCLUDE + IS_EX",
        exclude_xy(),
        (IsEx, vec![S2, S3, S20]),
        all_but(&[S20]),
        vec![("stops excluding", "S21")],
    );
    // EXCLUDE(X,Y) + ALLOW(A) → EXCLUDE(X+A, Y-A).
    row(
        "EXCLUDE + ALLOW",
        exclude_xy(),
        (Allow, vec![S20]),
        all_but(&[S21]),
        vec![("stops excluding", "S20")],
    );
    // EXCLUDE(X,Y) + BLOCK(A) → EXCLUDE(X+(A-Y), Y), Q(G, A-Y) unanswered: those join Y.
    row(
        "EXCLUDE + BLOCK",
        exclude_xy(),
        (Block, vec![S2, S3, S21]),
        vec![S1, S4],
        vec![("excludes", "S2"), ("excludes", "S3")],
    );
    // EXCLUDE(X,Y) + TO_IN(A) → EXCLUDE(X+A, Y-A), Q(G, X-A) and Q(G) unanswered: the group
    // timer runs out and INCLUDE(A) remains.
    row(
        "EXCLUDE + TO_IN",
        exclude_xy(),
        (ToIn, vec![S20]),
        vec![S20],
        vec![("leaves", "*")],
    );
    // EXCLUDE(X,Y) + TO_EX(A) → EXCLUDE(A-Y, Y*A), Q(G, A-Y) unanswered: EXCLUDE({}, A).
    row(
        "EXCLUDE + TO_EX",
        exclude_xy(),
        (ToEx, vec![S2, S3, S20]),
        vec![S1, S4, S21],
        vec![("excludes", "S2"), ("excludes", "S3")],
    );
    rows
}

/// The daemon's log lines for membership changes on dn1 (see `daemon.rs`).
fn settled_lines(group: Ipv4Addr, changes: Vec<(&str, &str)>) -> Vec<String> {
    let name = |s: &str| match s {
        "*" => "*".to_owned(),
        s => SOURCES[["S1", "S2", "S3", "S4", "S20", "S21"]
            .iter()
            .position(|n| *n == s)
            .expect("a source name")]
        .to_string(),
    };
    changes
        .into_iter()
        .map(|(verb, s)| format!("membership: dn1 {verb} ({}, {group})", name(s)))
        .collect()
}

/// An IGMPv3 membership report with one group record (RFC 3376 §4.2).
fn report(kind: Record, group: Ipv4Addr, sources: &[Ipv4Addr]) -> Vec<u8> {
    let mut m = vec![0x22, 0, 0, 0, 0, 0, 0, 1];
    m.extend_from_slice(&[kind as u8, 0]);
    m.extend_from_slice(&(sources.len() as u16).to_be_bytes());
    m.extend_from_slice(&group.octets());
    for s in sources {
        m.extend_from_slice(&s.octets());
    }
    set_igmp_checksum(&mut m);
    m
}

/// Datagrams seen on one host's wire, by (source, group).
type Counts = BTreeMap<(Ipv4Addr, Ipv4Addr), usize>;

/// Both receivers' counts, updated by the capture threads.
#[derive(Default)]
struct Seen {
    r1: Counts,
    r2: Counts,
}

fn fail(daemon: &Daemon, what: &str) -> ! {
    let show = daemon
        .show()
        .map_or_else(|e| format!("{e:#}"), |v| format!("{v:#}"));
    panic!(
        "{what}\nmgm log:\n{}\nmgm show:\n{show}",
        daemon.log().join("\n")
    );
}

fn every_rfc3376_row_forwards_exactly_the_sources_the_state_allows(mode: &str) {
    let tag = unique_tag("t");
    let lab = Lab::up(&tag, &[IgmpVersion::V3, IgmpVersion::V3]).expect("lab up");
    for s in SOURCES {
        lab.sender
            .ip(&["addr", "add", &format!("{s}/24"), "dev", HOST_IF])
            .expect("source address");
    }
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    // Last-member queries 100 ms apart: an unanswered one settles within 200 ms.
    let args = ["--xdp-mode", mode, "--igmp-last-member-interval-ms", "100"];
    let mut daemon = Daemon::start(&mgm_bin(), &lab, &pin_dir, &args, false).expect("mgm starts");
    let rows = rows();

    // r2's kernel joins every group (IGMPv3 TO_EX{}): it must get every source.
    let r2 = Receiver::new(&lab.receivers[1], receiver_addr(1)).expect("receiver socket");
    for g in rows.iter().map(|r| r.group).chain([SENTINEL]) {
        r2.join(g).expect("kernel join");
    }
    // r1 reports from a raw socket: every row, then EXCLUDE({}) for the sentinel.
    let raw = raw_igmp_socket(&lab.receivers[0], receiver_addr(0)).expect("raw IGMP socket");
    let to = SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 22), 0).into();
    for row in &rows {
        for (kind, sources) in &row.reports {
            raw.send_to(&report(*kind, row.group, sources), &to)
                .expect("send report");
        }
    }
    raw.send_to(&report(IsEx, SENTINEL, &[]), &to)
        .expect("send report");
    let mut settled: Vec<String> = rows.iter().flat_map(|r| r.settled.clone()).collect();
    settled.push(format!("membership: dn1 joins (*, {SENTINEL})"));
    settled.push(format!("membership: dn2 joins (*, {SENTINEL})"));
    for line in &settled {
        if let Err(e) = daemon.wait_for(line, DEADLINE) {
            panic!("the router did not settle: {e:#}");
        }
    }

    let caps = [
        Capture::new(&lab.receivers[0], HOST_IF).expect("capture r1"),
        Capture::new(&lab.receivers[1], HOST_IF).expect("capture r2"),
    ];
    let seen = Mutex::new(Seen::default());
    let changed = Condvar::new();
    let done = AtomicBool::new(false);
    let mut flows: Vec<(Ipv4Addr, Ipv4Addr)> = rows
        .iter()
        .flat_map(|r| SOURCES.map(|s| (s, r.group)))
        .collect();
    flows.push((SENDER_ADDR, SENTINEL));
    let mut senders: BTreeMap<Ipv4Addr, Sender> = SOURCES
        .iter()
        .chain([&SENDER_ADDR])
        .map(|s| (*s, Sender::new(&lab.sender, *s, 8).expect("sender socket")))
        .collect();
    let mut send = |(s, g): (Ipv4Addr, Ipv4Addr)| {
        senders
            .get_mut(&s)
            .expect("a sender")
            .send(g, 100)
            .expect("send");
    };
    // Waits until `cond` holds of the counts; false after `limit`.
    let wait = |limit: Duration, cond: &dyn Fn(&Seen) -> bool| {
        let guard = seen.lock().unwrap();
        let (_guard, timeout) = changed
            .wait_timeout_while(guard, limit, |s| !cond(s))
            .unwrap();
        !timeout.timed_out()
    };
    let outcome = std::thread::scope(|scope| {
        for (i, cap) in caps.iter().enumerate() {
            let (seen, changed, done) = (&seen, &changed, &done);
            scope.spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let frames = cap.frames(Duration::from_millis(20));
                    let mut s = seen.lock().unwrap();
                    let counts = if i == 0 { &mut s.r1 } else { &mut s.r2 };
                    for f in frames {
                        let ip = |at: usize| Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]);
                        *counts.entry((ip(26), ip(30))).or_default() += 1;
                    }
                    changed.notify_all();
                }
            });
        }
        let result = (|| {
            // The first datagram of each (S,G) makes its MFE; send until r2 has one of each.
            let start = Instant::now();
            let mut first = true;
            loop {
                let missing: Vec<_> = {
                    let s = seen.lock().unwrap();
                    flows
                        .iter()
                        .filter(|f| !s.r2.contains_key(f))
                        .copied()
                        .collect()
                };
                if missing.is_empty() {
                    break;
                }
                if start.elapsed() > DEADLINE {
                    return Err(format!("r2 never got {missing:?}"));
                }
                // A first datagram is dropped while its MFE is made: the next round resends, a
                // batch at a time once MFEs forward. Rounds never overlap, so no two datagrams
                // of one flow are in flight together (the receivers' GRO could merge them into
                // one captured frame).
                let batch = &missing[..missing.len().min(if first { usize::MAX } else { BATCH })];
                first = false;
                batch.iter().for_each(|f| send(*f));
                wait(PRIME_ROUND, &|s: &Seen| {
                    batch.iter().all(|f| s.r2.contains_key(f))
                });
            }
            // Then rounds of one datagram per flow, each waited for at r2, which wants them all.
            for round in 1..=BURST {
                for batch in flows.chunks(BATCH) {
                    let base = seen.lock().unwrap().r2.clone();
                    batch.iter().for_each(|f| send(*f));
                    let arrived = |s: &Seen| batch.iter().all(|f| s.r2.get(f) > base.get(f));
                    if !wait(DEADLINE, &arrived) {
                        return Err(format!("round {round}: r2 did not get all of {batch:?}"));
                    }
                }
            }
            // Last, the sentinel: once r1 has it and matches r2 on every flow it wants, all
            // that was sent to r1 has arrived.
            let sentinel = (SENDER_ADDR, SENTINEL);
            let before = seen.lock().unwrap().r2[&sentinel];
            send(sentinel);
            let complete = |s: &Seen| {
                s.r2[&sentinel] > before
                    && s.r1.get(&sentinel) == s.r2.get(&sentinel)
                    && rows.iter().all(|row| {
                        row.forwarded
                            .iter()
                            .all(|src| s.r1.get(&(*src, row.group)) == s.r2.get(&(*src, row.group)))
                    })
            };
            if !wait(DEADLINE, &complete) {
                return Err("r1 never caught up with r2 on the sources it wants".to_owned());
            }
            Ok(())
        })();
        done.store(true, Ordering::Relaxed);
        result
    });
    if let Err(e) = outcome {
        let s = seen.lock().unwrap();
        fail(&daemon, &format!("{e}\nr1: {:?}\nr2: {:?}", s.r1, s.r2));
    }

    let s = seen.lock().unwrap();
    let mut wrong = Vec::new();
    for row in &rows {
        let got: Vec<Ipv4Addr> = SOURCES
            .iter()
            .filter(|src| s.r1.contains_key(&(**src, row.group)))
            .copied()
            .collect();
        if got != row.forwarded {
            wrong.push(format!(
                "{} ({}): dn1 got {got:?}, the RFC state forwards {:?}",
                row.name, row.group, row.forwarded
            ));
        }
        for src in SOURCES {
            let n = s.r2.get(&(src, row.group)).copied().unwrap_or_default();
            if n <= BURST {
                wrong.push(format!("{}: r2 got {n} of {src}", row.name));
            }
        }
    }
    if !wrong.is_empty() {
        fail(&daemon, &wrong.join("\n"));
    }
}

#[test]
fn rfc3376_6_4_every_row_forwards_exactly_the_allowed_sources_native() {
    every_rfc3376_row_forwards_exactly_the_sources_the_state_allows("native");
}

#[test]
fn rfc3376_6_4_every_row_forwards_exactly_the_allowed_sources_skb() {
    every_rfc3376_row_forwards_exactly_the_sources_the_state_allows("skb");
}

/// One downstream's IGMPv3 state of one group in the proxy test: the report its host sends and
/// the sources that must reach it.
struct Downstream {
    report: (Record, Vec<Ipv4Addr>),
    forwarded: Vec<Ipv4Addr>,
}

/// One group of the proxy test: each downstream's state, and the sources the merged state
/// (RFC 3376 §3.2) blocks, which the snooping switch upstream must hold as blocked.
struct Merged {
    group: Ipv4Addr,
    downstreams: [Downstream; 2],
    blocked: Vec<Ipv4Addr>,
}

/// The sources the snooping switch holds as blocked (timer 0) for `group` on its port to the
/// router, if that port is in EXCLUDE mode; from `bridge -d mdb`, the kernel's reading of
/// mgm's reports.
fn switch_blocked(lab: &Lab, group: Ipv4Addr) -> Option<Vec<Ipv4Addr>> {
    let out = lab
        .sender
        .bridge(&["-d", "-j", "mdb", "show", "dev", "br0"])
        .ok()?;
    let mdb: serde_json::Value = serde_json::from_str(&out).ok()?;
    let entry = mdb
        .as_array()?
        .iter()
        .filter_map(|m| m["mdb"].as_array())
        .flatten()
        .find(|e| {
            e["grp"] == group.to_string().as_str()
                && e["port"] == xtask::lab::SWITCH_ROUTER_PORT
                && e.get("src").is_none()
        })?;
    if entry["filter_mode"] != "exclude" {
        return None;
    }
    let blocked = entry["source_list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| {
            s["timer"]
                .as_str()
                .and_then(|t| t.trim().parse::<f64>().ok())
                == Some(0.0)
        })
        .filter_map(|s| s["address"].as_str()?.parse().ok())
        .collect();
    Some(blocked)
}

/// RFC 4605 §4.1: the proxy reports upstream the union of the downstream states, merged as
/// RFC 3376 §3.2 merges socket states. Two hosts, one per downstream, report different
/// EXCLUDE and INCLUDE states of the same groups; the kernel bridge upstream, a snooping
/// switch with IGMPv3 source tracking, must hold exactly the merged blocked sources for mgm's
/// port, and sources behind it reach each downstream as that downstream's own state says.
#[test]
fn rfc4605_4_1_the_proxy_reports_the_merged_downstream_states_upstream() {
    let g1 = Ipv4Addr::new(239, 21, 0, 1);
    let g2 = Ipv4Addr::new(239, 21, 0, 2);
    let groups = [
        // EXCLUDE {S1,S2} and INCLUDE {S2,S3}: EXCLUDE({S1,S2} - {S2,S3}) = EXCLUDE {S1}.
        Merged {
            group: g1,
            downstreams: [
                Downstream {
                    report: (IsEx, vec![S1, S2]),
                    forwarded: vec![S3, S4],
                },
                Downstream {
                    report: (IsIn, vec![S2, S3]),
                    forwarded: vec![S2, S3],
                },
            ],
            blocked: vec![S1],
        },
        // EXCLUDE {S1,S2} and EXCLUDE {S2,S3}: the intersection, EXCLUDE {S2}.
        Merged {
            group: g2,
            downstreams: [
                Downstream {
                    report: (IsEx, vec![S1, S2]),
                    forwarded: vec![S3, S4],
                },
                Downstream {
                    report: (IsEx, vec![S2, S3]),
                    forwarded: vec![S1, S4],
                },
            ],
            blocked: vec![S2],
        },
    ];
    let sources = [S1, S2, S3, S4];

    let tag = unique_tag("t");
    let mut lab = Lab::up(&tag, &[IgmpVersion::V3, IgmpVersion::V3]).expect("lab up");
    lab.add_upstream_switch().expect("upstream switch");
    let source_host = lab.upstream_source.as_ref().expect("source host");
    for s in sources {
        source_host
            .ip(&["addr", "add", &format!("{s}/24"), "dev", HOST_IF])
            .expect("source address");
    }
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    // The hosts report from raw sockets and answer no query: the default group membership
    // interval keeps their state for the whole test.
    let args = [
        "--xdp-mode",
        "native",
        "--igmp-last-member-interval-ms",
        "100",
    ];
    let mut daemon = Daemon::start(&mgm_bin(), &lab, &pin_dir, &args, false).expect("mgm starts");

    let to = SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 22), 0).into();
    let mut settled = Vec::new();
    for (i, host) in lab.receivers.iter().enumerate() {
        let raw = raw_igmp_socket(host, receiver_addr(i)).expect("raw IGMP socket");
        for m in &groups {
            let (kind, srcs) = &m.downstreams[i].report;
            raw.send_to(&report(*kind, m.group, srcs), &to)
                .expect("send report");
            let (verb, last) = match kind {
                IsIn => ("joins", srcs.last()),
                _ => ("excludes", srcs.last()),
            };
            let last = last.expect("a source");
            settled.push(format!(
                "membership: dn{} {verb} ({last}, {})",
                i + 1,
                m.group
            ));
        }
    }
    for line in &settled {
        if let Err(e) = daemon.wait_for(line, DEADLINE) {
            fail(&daemon, &format!("the router did not settle: {e:#}"));
        }
    }

    // What the upstream heard: the switch answers its own queries' reports from mgm.
    for m in &groups {
        if !wait_until(DEADLINE, || {
            switch_blocked(&lab, m.group).as_deref() == Some(&m.blocked[..])
        }) {
            let mdb = lab
                .sender
                .bridge(&["-d", "-j", "mdb", "show", "dev", "br0"])
                .unwrap_or_default();
            fail(
                &daemon,
                &format!(
                    "the switch upstream does not hold EXCLUDE with {:?} blocked for {}: {mdb}",
                    m.blocked, m.group
                ),
            );
        }
    }

    // Then every source sends to every group; each downstream's captures count every datagram.
    let caps = [
        Capture::new(&lab.receivers[0], HOST_IF).expect("capture r1"),
        Capture::new(&lab.receivers[1], HOST_IF).expect("capture r2"),
    ];
    let wanted = |i: usize| -> Vec<(Ipv4Addr, Ipv4Addr)> {
        groups
            .iter()
            .flat_map(|m| m.downstreams[i].forwarded.iter().map(|s| (*s, m.group)))
            .collect()
    };
    let wanted = [wanted(0), wanted(1)];
    let flows: Vec<(Ipv4Addr, Ipv4Addr)> = groups
        .iter()
        .flat_map(|m| sources.map(|s| (s, m.group)))
        .collect();
    let mut senders: BTreeMap<Ipv4Addr, Sender> = sources
        .iter()
        .map(|s| (*s, Sender::new(source_host, *s, 8).expect("sender socket")))
        .collect();
    let seen = Mutex::new(Seen::default());
    let changed = Condvar::new();
    let done = AtomicBool::new(false);
    // Has every receiver more than `base` of each flow it wants?
    let ahead = |s: &Seen, base: &Seen| {
        [(&s.r1, &base.r1, &wanted[0]), (&s.r2, &base.r2, &wanted[1])]
            .iter()
            .all(|(now, before, want)| want.iter().all(|f| now.get(f) > before.get(f)))
    };
    let outcome = std::thread::scope(|scope| {
        for (i, cap) in caps.iter().enumerate() {
            let (seen, changed, done) = (&seen, &changed, &done);
            scope.spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    let frames = cap.frames(Duration::from_millis(20));
                    let mut s = seen.lock().unwrap();
                    let counts = if i == 0 { &mut s.r1 } else { &mut s.r2 };
                    for f in frames {
                        let ip = |at: usize| Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]);
                        *counts.entry((ip(26), ip(30))).or_default() += 1;
                    }
                    changed.notify_all();
                }
            });
        }
        let result = (|| {
            // Rounds of one datagram per flow, the unwanted ones first, each round waited
            // for at both receivers. The first rounds make the MFEs (their datagrams are
            // dropped meanwhile): they go on until both have one of each flow they want.
            let mut round = |limit: Duration| -> bool {
                let base = {
                    let s = seen.lock().unwrap();
                    Seen {
                        r1: s.r1.clone(),
                        r2: s.r2.clone(),
                    }
                };
                let unwanted = flows
                    .iter()
                    .filter(|f| !wanted[0].contains(f) && !wanted[1].contains(f));
                let wanted_any = flows
                    .iter()
                    .filter(|f| wanted[0].contains(f) || wanted[1].contains(f));
                for (s, g) in unwanted.chain(wanted_any) {
                    senders
                        .get_mut(s)
                        .expect("a sender")
                        .send(*g, 100)
                        .expect("send");
                }
                let guard = seen.lock().unwrap();
                let (_guard, timeout) = changed
                    .wait_timeout_while(guard, limit, |s| !ahead(s, &base))
                    .unwrap();
                !timeout.timed_out()
            };
            let start = Instant::now();
            while !round(PRIME_ROUND) {
                if start.elapsed() > DEADLINE {
                    return Err("the receivers never got every source they want".to_owned());
                }
            }
            for n in 1..=BURST {
                if !round(DEADLINE) {
                    return Err(format!("round {n}: a receiver missed a datagram it wants"));
                }
            }
            Ok(())
        })();
        done.store(true, Ordering::Relaxed);
        result
    });
    let s = seen.lock().unwrap();
    if let Err(e) = outcome {
        fail(&daemon, &format!("{e}\nr1: {:?}\nr2: {:?}", s.r1, s.r2));
    }
    let mut wrong = Vec::new();
    for (i, counts) in [&s.r1, &s.r2].into_iter().enumerate() {
        for f in &flows {
            let n = counts.get(f).copied().unwrap_or_default();
            let want = wanted[i].contains(f);
            if want && n <= BURST {
                wrong.push(format!("dn{} got {n} of {f:?}", i + 1));
            }
            if !want && n > 0 {
                wrong.push(format!(
                    "dn{} got {n} of {f:?}, which its state blocks",
                    i + 1
                ));
            }
        }
    }
    if !wrong.is_empty() {
        fail(&daemon, &wrong.join("\n"));
    }
}
