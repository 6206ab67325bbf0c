//! Interfaces that come and go (spec §10) under the real `mgm` binary: a managed downstream
//! deleted and created again under a stream, and one named at start that exists only later,
//! created under another name and renamed to its own as udev does. mgm manages each as it
//! appears (XDP, IGMP with startup queries once it has an address) without a restart; the
//! kernel IGMP host behind it joins and gets the stream; the receiver on the downstream that
//! stays gets every datagram throughout. The proxy's upstream, deleted and created again
//! behind a snooping switch, is taken back the same way. Needs root; run through `cargo xtask
//! test`.

mod events;

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use events::{gaps, mgm_bin, nothing_lost, Counter, Stream, TwoHosts, FAST_IGMP, PATIENCE};
use xtask::lab::{
    receiver_addr, traffic::Receiver, unique_tag, Daemon, IgmpVersion, Lab, SWITCHED_SOURCE_ADDR,
};

const G: Ipv4Addr = Ipv4Addr::new(239, 4, 4, 4);

#[test]
fn spec10_downstreams_deleted_created_and_renamed_are_managed_without_a_restart() {
    let tag = unique_tag("t");
    let versions = [IgmpVersion::V3, IgmpVersion::V2, IgmpVersion::V3];
    let lab = Lab::up(&tag, &versions).expect("lab up");
    // dn3 does not exist when mgm starts.
    lab.router.ip(&["link", "del", "dn3"]).unwrap();
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let mut daemon = Daemon::start(&mgm_bin(), &lab, &pin_dir, &FAST_IGMP, false).expect("mgm");
    let fail = |daemon: &Daemon, what: &str| -> ! {
        panic!("{what}\nmgm log:\n{}", daemon.log().join("\n"))
    };
    let wait = |daemon: &mut Daemon, needle: &str| {
        if let Err(e) = daemon.wait_for(needle, PATIENCE) {
            panic!("{e:#}");
        }
    };
    wait(&mut daemon, "manages dn3 once it appears");

    // Hosts on dn1 and dn2 join; both get the stream.
    let receiver = |i: usize| Receiver::new(&lab.receivers[i], receiver_addr(i)).unwrap();
    let TwoHosts {
        stream,
        stays,
        from,
        other: goes,
    } = TwoHosts::start(&lab, G, receiver(0), receiver(1)).unwrap_or_else(|e| fail(&daemon, &e));

    // dn2 is deleted under the stream, and created again with the same name.
    lab.router.ip(&["link", "del", "dn2"]).unwrap();
    wait(&mut daemon, "dn2 is gone");
    drop(goes);
    lab.rewire_downstream(1, "dn2", versions[1]).unwrap();
    wait(&mut daemon, "dn2 appeared");
    // The host joins on the new link (its old membership went with the old one).
    let r2 = receiver(1);
    r2.join(G).unwrap();
    let mut again = Counter::start(r2, G);
    if !again.more(20, PATIENCE) {
        fail(
            &daemon,
            "the host on the re-created dn2 never got the stream",
        );
    }

    // dn3 comes into being as dn3-new and is renamed dn3: mgm manages it from the rename on.
    lab.rewire_downstream(2, "dn3-new", versions[2]).unwrap();
    wait(&mut daemon, "dn3 appeared");
    let r3 = receiver(2);
    r3.join(G).unwrap();
    let mut late = Counter::start(r3, G);
    if !late.more(20, PATIENCE) {
        fail(
            &daemon,
            "the host on dn3, created after mgm started, never got the stream",
        );
    }

    // The maps hold the interfaces as they are now: the old dn2's settings went with it, and
    // the entry copies to the new dn2 and dn3.
    let ifindex = |name: &str| -> u64 {
        let out = lab.router.ip_output(&["-o", "link", "show", name]).unwrap();
        out.split(':').next().unwrap().trim().parse().unwrap()
    };
    let now: BTreeSet<u64> = ["up0", "dn1", "dn2", "dn3"].map(ifindex).into();
    let show = daemon.show().expect("mgm show");
    let held: BTreeSet<u64> = show["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["ifindex"].as_u64())
        .collect();
    assert_eq!(held, now, "{show:#}");
    let entry = show["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["group"] == G.to_string())
        .unwrap_or_else(|| panic!("no entry for {G}: {show:#}"));
    let oifs: BTreeSet<u64> = entry["oif_indexes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i.as_u64())
        .collect();
    assert_eq!(oifs, ["dn1", "dn2", "dn3"].map(ifindex).into(), "{show:#}");

    if let Err(e) = nothing_lost(stream, stays, from, "while dn2 went and came back") {
        fail(&daemon, &e);
    }
}

/// Fails the test with `what`, the upstream switch's mdb and mgm's log.
fn fail(lab: &Lab, daemon: &Daemon, what: &str) -> ! {
    let mdb = lab.sender.bridge(&["mdb", "show"]).unwrap_or_default();
    panic!(
        "{what}\nswitch mdb:\n{mdb}\nmgm log:\n{}",
        daemon.log().join("\n")
    )
}

/// How soon after the re-created upstream is up the hosts behind mgm get the stream again.
const BACK_WITHIN: Duration = Duration::from_secs(2);

#[test]
fn spec10_the_upstream_deleted_and_created_again_is_taken_back_and_reported_at_once() {
    let tag = unique_tag("t");
    let mut lab = Lab::up(&tag, &[IgmpVersion::V3, IgmpVersion::V2]).expect("lab up");
    lab.add_upstream_switch().expect("upstream switch");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let mut daemon = Daemon::start(&mgm_bin(), &lab, &pin_dir, &FAST_IGMP, false).expect("mgm");
    let in_mdb = |lab: &Lab| lab.switch_forwards_to_router(G).expect("bridge mdb");

    // Kernel hosts on dn1 (IGMPv3) and dn2 (IGMPv2) join; the stream comes through the switch.
    let source = lab.upstream_source.as_ref().expect("source host");
    let stream = Stream::from_host(source, SWITCHED_SOURCE_ADDR, G);
    let mut counters: Vec<Counter> = (0..2)
        .map(|i| {
            let rx = Receiver::new(&lab.receivers[i], receiver_addr(i)).expect("receiver");
            rx.join(G).unwrap();
            Counter::start(rx, G)
        })
        .collect();
    for c in &mut counters {
        if !c.more(20, PATIENCE) {
            fail(
                &lab,
                &daemon,
                "a host never got the stream through the switch",
            );
        }
    }
    let from: Vec<u64> = counters.iter_mut().map(|c| c.first().unwrap()).collect();

    // up0 goes, and the switch's port with it: the switch forgets that mgm wanted G, and
    // the stream stops; `cut` is the last datagram each host got before.
    lab.router.ip(&["link", "del", "up0"]).unwrap();
    if let Err(e) = daemon.wait_for("up0 is gone", PATIENCE) {
        fail(&lab, &daemon, &format!("{e:#}"));
    }
    if in_mdb(&lab) {
        fail(&lab, &daemon, "the switch kept G for a port that is gone");
    }
    for c in &mut counters {
        if !c.stops(Duration::from_millis(300), PATIENCE) {
            fail(&lab, &daemon, "the stream went on without up0");
        }
    }
    let cut: Vec<u64> = counters.iter_mut().map(|c| c.last().unwrap()).collect();

    // up0 comes again: mgm takes it, reports G there at once, and the stream resumes.
    lab.rewire_upstream_switch().expect("up0 again");
    let up = Instant::now();
    for (c, cut) in counters.iter_mut().zip(&cut) {
        let left = (up + BACK_WITHIN).saturating_duration_since(Instant::now());
        if !c.beyond(*cut, left) {
            fail(
                &lab,
                &daemon,
                &format!("a host got no datagram within {BACK_WITHIN:?} of up0 coming back"),
            );
        }
    }
    let back = up.elapsed();
    if !in_mdb(&lab) {
        fail(&lab, &daemon, "the switch does not hold G for mgm again");
    }
    let resumed: Vec<u64> = counters.iter_mut().map(|c| c.last().unwrap()).collect();
    assert_eq!(relinks(&daemon), 1, "counted once");

    // Every datagram arrives after the outage too, and only the outage's were lost.
    if let Some(c) = counters.first_mut() {
        if !c.more(200, PATIENCE) {
            fail(
                &lab,
                &daemon,
                "the stream stopped again after up0 came back",
            );
        }
    }
    let last = stream.stop();
    for (i, c) in counters.into_iter().enumerate() {
        let (missing, got) = c.missing(from[i], last, PATIENCE);
        let outside: Vec<u64> = missing
            .iter()
            .copied()
            .filter(|s| *s <= cut[i] || *s >= resumed[i])
            .collect();
        if !outside.is_empty() {
            fail(
                &lab,
                &daemon,
                &format!(
                    "host {} lost datagrams outside the outage ({}..{}): got {got} of {}, \
                     missing {}",
                    i + 1,
                    cut[i],
                    resumed[i],
                    last - from[i] + 1,
                    gaps(&outside)
                ),
            );
        }
    }
    eprintln!("the stream was back {back:?} after up0 came up");
}

#[test]
fn spec10_an_upstream_missing_at_start_is_waited_for_and_taken_when_it_appears() {
    let tag = unique_tag("t");
    let mut lab = Lab::up(&tag, &[IgmpVersion::V3]).expect("lab up");
    lab.add_upstream_switch().expect("upstream switch");
    // up0 does not exist when mgm starts.
    lab.router.ip(&["link", "del", "up0"]).unwrap();
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let mut daemon = Daemon::start(&mgm_bin(), &lab, &pin_dir, &FAST_IGMP, false).expect("mgm");
    if let Err(e) = daemon.wait_for("reports there once it is up", PATIENCE) {
        fail(&lab, &daemon, &format!("{e:#}"));
    }

    // A host joins meanwhile; the stream reaches mgm once up0 exists.
    let rx = Receiver::new(&lab.receivers[0], receiver_addr(0)).expect("receiver");
    rx.join(G).unwrap();
    let mut counter = Counter::start(rx, G);
    let source = lab.upstream_source.as_ref().expect("source host");
    let stream = Stream::from_host(source, SWITCHED_SOURCE_ADDR, G);
    if let Err(e) = daemon.wait_for("membership: dn1 joins", PATIENCE) {
        fail(&lab, &daemon, &format!("{e:#}"));
    }
    lab.rewire_upstream_switch().expect("up0");
    let up = Instant::now();
    if !counter.more(1, BACK_WITHIN) {
        fail(
            &lab,
            &daemon,
            &format!("the host got no datagram within {BACK_WITHIN:?} of up0 appearing"),
        );
    }
    if !lab.switch_forwards_to_router(G).expect("bridge mdb") {
        fail(&lab, &daemon, "the switch does not hold G for mgm");
    }
    eprintln!("the stream came {:?} after up0 came up", up.elapsed());
    assert_eq!(relinks(&daemon), 1, "counted once");
    drop(stream);
}

/// How many times the proxy's host side started on its upstream after waiting for it.
fn relinks(daemon: &Daemon) -> u64 {
    let stats = daemon.show_view("stats").expect("show stats");
    stats["stats"]["upstream_relinks"]
        .as_u64()
        .unwrap_or_else(|| panic!("no upstream_relinks: {stats:#}"))
}
