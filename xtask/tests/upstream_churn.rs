//! The IGMP proxy's upstream reports, sent off the event loop by its worker thread (issue 19),
//! against a kernel snooping bridge upstream: across many joins and leaves by kernel hosts on
//! two downstreams, the groups the switch sends to mgm end as exactly the groups some host
//! behind mgm still wants, and a host joined throughout gets every datagram. Needs root; run
//! through `cargo xtask test`.

mod events;

use std::{collections::BTreeSet, net::Ipv4Addr, path::PathBuf};

use events::{gaps, mgm_bin, Counter, Stream, FAST_IGMP, PATIENCE};
use xtask::lab::{
    receiver_addr, traffic::Receiver, unique_tag, Daemon, IgmpVersion, Lab, SWITCHED_SOURCE_ADDR,
    SWITCH_MEMBERSHIP_INTERVAL, SWITCH_ROUTER_PORT,
};

/// Joined by a host on dn1 throughout, with a stream from behind the switch.
const KEEP: Ipv4Addr = Ipv4Addr::new(239, 7, 7, 7);
/// Groups the hosts join and leave.
const CHURNED: u8 = 24;
const ROUNDS: u8 = 6;

fn group(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(239, 7, 0, i + 1)
}

/// The groups the switch sends out of its port to mgm, from its mdb.
fn switch_groups(lab: &Lab) -> BTreeSet<Ipv4Addr> {
    let out = lab
        .sender
        .bridge(&["-j", "mdb", "show", "dev", "br0"])
        .expect("bridge mdb");
    let mdb: serde_json::Value = serde_json::from_str(&out).expect("mdb JSON");
    mdb.as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["mdb"].as_array())
        .flatten()
        .filter(|e| e["port"] == SWITCH_ROUTER_PORT)
        .filter_map(|e| e["grp"].as_str()?.parse().ok())
        .collect()
}

#[test]
fn rfc4605_the_switch_upstream_ends_with_the_downstream_hosts_groups_after_many_joins_and_leaves() {
    let tag = unique_tag("t");
    let mut lab = Lab::up(&tag, &[IgmpVersion::V3, IgmpVersion::V2]).expect("lab up");
    lab.add_upstream_switch().expect("upstream switch");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let daemon = Daemon::start(&mgm_bin(), &lab, &pin_dir, &FAST_IGMP, false).expect("mgm");
    let fail = |lab: &Lab, what: &str| -> ! {
        let mdb = lab.sender.bridge(&["mdb", "show"]).unwrap_or_default();
        panic!(
            "{what}\nswitch mdb:\n{mdb}\nmgm log:\n{}",
            daemon.log().join("\n")
        )
    };

    let rx = Receiver::new(&lab.receivers[0], receiver_addr(0)).expect("receiver");
    rx.join(KEEP).unwrap();
    let source = lab.upstream_source.as_ref().expect("source host");
    let stream = Stream::from_host(source, SWITCHED_SOURCE_ADDR, KEEP);
    let mut counter = Counter::start(rx, KEEP);
    if !counter.more(20, PATIENCE) {
        fail(
            &lab,
            "the host on dn1 never got the stream through the switch",
        );
    }
    let from = counter.first().expect("counted");

    // Kernel hosts on dn1 (IGMPv3) and dn2 (IGMPv2) join and leave groups by rounds (154
    // joins and leaves in all); host h wants group i in round r when i + r(h + 1) is a
    // multiple of 3 + h, so the rounds end with some groups wanted by one host, some by both
    // and some by none.
    let hosts = [
        Receiver::new(&lab.receivers[0], receiver_addr(0)).expect("dn1 host"),
        Receiver::new(&lab.receivers[1], receiver_addr(1)).expect("dn2 host"),
    ];
    let mut wanted = [BTreeSet::new(), BTreeSet::new()];
    for round in 0..ROUNDS {
        for i in 0..CHURNED {
            for (h, host) in hosts.iter().enumerate() {
                let step = h as u8 + 1;
                let join = (i + round * step).is_multiple_of(step + 2);
                let g = group(i);
                if join && wanted[h].insert(g) {
                    host.join(g).unwrap();
                } else if !join && wanted[h].remove(&g) {
                    host.leave(g).unwrap();
                }
            }
        }
        // The stream goes on between rounds (and paces them).
        if !counter.more(50, PATIENCE) {
            fail(&lab, &format!("the stream stopped in round {round}"));
        }
    }
    let mut expected: BTreeSet<Ipv4Addr> = wanted.iter().flatten().copied().collect();
    expected.insert(KEEP);
    assert!(
        expected.len() > 2 && expected.len() < usize::from(CHURNED),
        "the rounds leave some groups joined and some left: {expected:?}"
    );

    // Leaves take the proxy's last-member queries, then the switch prunes at once (fast
    // leave); a join the switch missed would show only after its membership interval.
    let deadline = std::time::Instant::now() + PATIENCE + SWITCH_MEMBERSHIP_INTERVAL;
    let mut seen = switch_groups(&lab);
    while seen != expected {
        if std::time::Instant::now() > deadline {
            fail(
                &lab,
                &format!("the switch sends mgm {seen:?}, the hosts behind mgm want {expected:?}"),
            );
        }
        // Paced by the stream, which must go on meanwhile.
        if !counter.more(20, PATIENCE) {
            fail(&lab, "the stream stopped while the switch caught up");
        }
        seen = switch_groups(&lab);
    }

    let last = stream.stop();
    let (missing, got) = counter.missing(from, last, PATIENCE);
    if !missing.is_empty() {
        fail(
            &lab,
            &format!(
                "the host joined throughout lost datagrams: got {got} of {}, missing {}",
                last - from + 1,
                gaps(&missing)
            ),
        );
    }
}
