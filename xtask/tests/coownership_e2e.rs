//! Co-ownership end to end (spec §3.1, §3.2, §4.4) on the real `mgm` binary: an
//! out-of-process module (the example, `mgm-user/examples/module.py`) takes a downstream where
//! a kernel IGMP host already joined, holds it, and disconnects. IGMP re-adds the host's
//! membership after each ownership change, as a local join into the module (which passes it
//! on as its own membership) and then as its own again, so the host gets every datagram
//! throughout. Needs root; run through `cargo xtask test`.

mod events;

use std::{net::Ipv4Addr, path::PathBuf};

use events::{ask, gaps, mgm_bin, Counter, Module, Stream, FAST_IGMP, PATIENCE};
use xtask::lab::{
    receiver_addr, traffic::Receiver, unique_tag, Daemon, IgmpVersion, Lab, SWITCHED_SOURCE_ADDR,
};

const G: Ipv4Addr = Ipv4Addr::new(239, 3, 3, 3);
/// The example module's default protocol id.
const MODULE_ID: u32 = 0x4d47_0100;

#[test]
fn spec3_1_a_host_keeps_its_stream_while_a_module_takes_holds_and_leaves_its_interface() {
    let tag = unique_tag("t");
    let lab = Lab::up(&tag, &[IgmpVersion::V3, IgmpVersion::V2]).expect("lab up");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let mut daemon = Daemon::start(&mgm_bin(), &lab, &pin_dir, &FAST_IGMP, false).expect("mgm");
    let socket = daemon.socket();
    let fail = |daemon: &Daemon, what: &str| -> ! {
        panic!("{what}\nmgm log:\n{}", daemon.log().join("\n"))
    };

    // A host on dn1 joins and gets the stream from IGMP's membership.
    let rx = Receiver::new(&lab.receivers[0], receiver_addr(0)).expect("receiver");
    rx.join(G).unwrap();
    let stream = Stream::start(&lab, G);
    let mut counter = Counter::start(rx, G);
    if !counter.more(20, PATIENCE) {
        fail(&daemon, "the host on dn1 never got the stream");
    }
    let from = counter.first().expect("counted");

    // The module takes dn1: IGMP's re-add reaches it as a local join, which it passes on
    // after thinking about it for 100 ms.
    let mut module = Module::start(&socket, &["--take", "dn1", "--decide-ms", "100"]);
    if !module.wait(PATIENCE, |l| l == "ready") {
        fail(
            &daemon,
            &format!("the module did not get ready: {:?}", module.seen),
        );
    }
    let joins = module.messages("<");
    assert!(
        joins.iter().any(|m| m["callback"] == "local_join"
            && m["interface"] == "dn1"
            && m["group"] == G.to_string()),
        "no local join for the host already joined on dn1: {:?}",
        module.seen
    );
    let owner = ask(
        &socket,
        serde_json::json!({"op": "get_protocol_on_interface", "interface": "dn1"}),
    );
    assert_eq!(owner["result"]["protocol_id"], MODULE_ID, "{owner}");
    // It holds dn1 for a while (half a second of datagrams)...
    if !counter.more(500, PATIENCE) {
        fail(&daemon, "the stream stopped while the module owned dn1");
    }

    // ...and goes away: IGMP owns dn1 alone again and its membership forwards there.
    drop(module);
    if let Err(e) = daemon.wait_for("deregistered, released [dn1]", PATIENCE) {
        panic!("{e:#}");
    }
    let owner = ask(
        &socket,
        serde_json::json!({"op": "get_protocol_on_interface", "interface": "dn1"}),
    );
    assert_eq!(owner["result"]["protocol_id"], 10, "{owner}");
    if !counter.more(500, PATIENCE) {
        fail(&daemon, "the stream stopped after the module left dn1");
    }

    let last = stream.stop();
    let (missing, got) = counter.missing(from, last, PATIENCE);
    if !missing.is_empty() {
        fail(
            &daemon,
            &format!(
                "the host lost datagrams through the take and release: got {got} of {}, \
                 missing {}",
                last - from + 1,
                gaps(&missing)
            ),
        );
    }
}

/// The same take behind an upstream that prunes at once: a snooping switch with fast leave.
/// Taking dn1 removes the last receiver of the group the proxy knows of until the module's
/// own join arrives (spec §3.1 step 2); the proxy holds the leave for the handover hold, so
/// the switch never stops sending, and the host loses nothing through the take and the
/// module's disconnect.
#[test]
fn spec3_1_a_take_behind_a_pruning_upstream_switch_loses_nothing() {
    let tag = unique_tag("t");
    let mut lab = Lab::up(&tag, &[IgmpVersion::V3]).expect("lab up");
    lab.add_upstream_switch().expect("upstream switch");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let mut daemon = Daemon::start(&mgm_bin(), &lab, &pin_dir, &FAST_IGMP, false).expect("mgm");
    let socket = daemon.socket();
    let fail = |daemon: &Daemon, lab: &Lab, what: &str| -> ! {
        let mdb = lab.sender.bridge(&["mdb", "show"]).unwrap_or_default();
        panic!(
            "{what}\nswitch mdb:\n{mdb}\nmgm log:\n{}",
            daemon.log().join("\n")
        )
    };

    let rx = Receiver::new(&lab.receivers[0], receiver_addr(0)).expect("receiver");
    rx.join(G).unwrap();
    let source = lab.upstream_source.as_ref().expect("source host");
    let stream = Stream::from_host(source, SWITCHED_SOURCE_ADDR, G);
    let mut counter = Counter::start(rx, G);
    if !counter.more(20, PATIENCE) {
        fail(&daemon, &lab, "the host on dn1 never got the stream");
    }
    let from = counter.first().expect("counted");

    let mut module = Module::start(&socket, &["--take", "dn1", "--decide-ms", "100"]);
    if !module.wait(PATIENCE, |l| l == "ready") {
        fail(
            &daemon,
            &lab,
            &format!("the module did not get ready: {:?}", module.seen),
        );
    }
    // The module passes the host's local join on as its own membership once it has decided.
    let group = G.to_string();
    if !module.wait(PATIENCE, |l| {
        l.starts_with('>') && l.contains("add_membership") && l.contains(&group)
    }) {
        fail(
            &daemon,
            &lab,
            &format!(
                "the module never added the host's membership: {:?}",
                module.seen
            ),
        );
    }
    if !counter.more(500, PATIENCE) {
        fail(
            &daemon,
            &lab,
            "the stream stopped while the module owned dn1",
        );
    }
    drop(module);
    if let Err(e) = daemon.wait_for("deregistered, released [dn1]", PATIENCE) {
        fail(&daemon, &lab, &format!("{e:#}"));
    }
    if !counter.more(500, PATIENCE) {
        fail(
            &daemon,
            &lab,
            "the stream stopped after the module left dn1",
        );
    }

    let last = stream.stop();
    let (missing, got) = counter.missing(from, last, PATIENCE);
    if !missing.is_empty() {
        fail(
            &daemon,
            &lab,
            &format!(
                "the host lost datagrams through the take and release: got {got} of {}, \
                 missing {}",
                last - from + 1,
                gaps(&missing)
            ),
        );
    }
}
