//! End-to-end: the real `mgm` binary as the router of a private netns lab, receivers joining
//! through their kernel's IGMP host stack, multicast from a real socket. Needs root; run
//! through `cargo xtask test`, which builds `mgm` and passes its path in `MGM_BIN`.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use xtask::lab::{
    receiver_addr,
    traffic::{Receiver, Sender},
    unique_tag, Daemon, IgmpVersion, Lab, HOST_IF, SENDER_ADDR,
};

const G1: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);
const G2: Ipv4Addr = Ipv4Addr::new(239, 2, 2, 2);
/// A second source address on the sender host, for source-specific tests.
const SENDER2_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);

fn mgm_bin() -> PathBuf {
    let path = std::env::var_os("MGM_BIN").map(PathBuf::from).expect(
        "MGM_BIN is not set: run these tests with `cargo xtask test`, which builds mgm first",
    );
    assert!(path.is_file(), "MGM_BIN={} does not exist", path.display());
    path
}

/// A lab plus its running daemon; both go away on drop, in that order.
struct Setup {
    daemon: Daemon,
    lab: Lab,
}

fn setup(versions: &[IgmpVersion], mode: &str) -> Setup {
    let tag = unique_tag("t");
    let lab = Lab::up(&tag, versions).expect("lab up");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let daemon = Daemon::start(&mgm_bin(), &lab, &pin_dir, &["--xdp-mode", mode], false)
        .expect("mgm starts");
    Setup { daemon, lab }
}

impl Setup {
    fn receiver(&self, i: usize) -> Receiver {
        Receiver::new(&self.lab.receivers[i], receiver_addr(i)).expect("receiver socket")
    }

    /// Runs `f` while the sender streams to `groups` from each of `sources` every 10 ms.
    fn streaming<T>(&self, sources: &[Ipv4Addr], groups: &[Ipv4Addr], f: impl FnOnce() -> T) -> T {
        let mut senders: Vec<Sender> = sources
            .iter()
            .map(|s| Sender::new(&self.lab.sender, *s, 8).expect("sender socket"))
            .collect();
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            // Stops the sender however `f` ends, so a failing assertion cannot hang the scope.
            struct StopOnDrop<'a>(&'a AtomicBool);
            impl Drop for StopOnDrop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let _stop = StopOnDrop(&done);
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    for tx in senders.iter_mut() {
                        for g in groups {
                            tx.send(*g, 100).expect("send");
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
            f()
        })
    }

    fn fail(&self, what: &str) -> ! {
        panic!("{what}\nmgm log:\n{}", self.daemon.log().join("\n"));
    }
}

/// Collects until something of `group` arrives (true) or `timeout` passes (false).
fn arrives(rx: &Receiver, source: Option<Ipv4Addr>, group: Ipv4Addr, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if rx
            .collect(Duration::from_millis(100))
            .iter()
            .any(|(s, g)| *g == group && source.is_none_or(|src| src == *s))
        {
            return true;
        }
    }
    false
}

/// Count of `group` datagrams (from `source`, if given) over `window`.
fn count(rx: &Receiver, source: Option<Ipv4Addr>, group: Ipv4Addr, window: Duration) -> usize {
    rx.collect(window)
        .iter()
        .filter(|(s, g)| *g == group && source.is_none_or(|src| src == *s))
        .count()
}

const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Leaves act at once (no querier yet); this covers the host's report and the map update.
const LEAVE_LATENCY: Duration = Duration::from_millis(500);
const QUIET_WINDOW: Duration = Duration::from_secs(1);

fn join_then_leave(version: IgmpVersion, mode: &str) {
    let t = setup(&[version, version], mode);
    let (r1, r2) = (t.receiver(0), t.receiver(1));
    r1.join(G1).unwrap();
    t.streaming(&[SENDER_ADDR], &[G1], || {
        if !arrives(&r1, None, G1, JOIN_TIMEOUT) {
            t.fail("the receiver that joined got nothing");
        }
        if count(&r2, None, G1, QUIET_WINDOW) != 0 {
            t.fail("the receiver that did not join got the stream");
        }
        r1.leave(G1).unwrap();
        std::thread::sleep(LEAVE_LATENCY);
        r1.drain().unwrap();
        if count(&r1, None, G1, QUIET_WINDOW) != 0 {
            t.fail("the stream went on after the leave");
        }
    });
}

#[test]
fn igmpv2_join_gets_stream_non_member_gets_nothing_leave_stops_it() {
    join_then_leave(IgmpVersion::V2, "native");
}

#[test]
fn igmpv3_join_gets_stream_non_member_gets_nothing_to_in_empty_stops_it() {
    join_then_leave(IgmpVersion::V3, "native");
}

#[test]
fn skb_mode_forwards_too() {
    join_then_leave(IgmpVersion::V2, "skb");
}

#[test]
fn each_receiver_gets_exactly_the_groups_it_joined() {
    let t = setup(
        &[IgmpVersion::V2, IgmpVersion::V3, IgmpVersion::V2],
        "native",
    );
    let rx: Vec<Receiver> = (0..3).map(|i| t.receiver(i)).collect();
    rx[0].join(G1).unwrap();
    rx[1].join(G1).unwrap();
    rx[1].join(G2).unwrap();
    t.streaming(&[SENDER_ADDR], &[G1, G2], || {
        for (i, groups) in [(0, vec![G1]), (1, vec![G1, G2])] {
            for g in groups {
                if !arrives(&rx[i], None, g, JOIN_TIMEOUT) {
                    t.fail(&format!("receiver {} did not get {g}", i + 1));
                }
            }
        }
        // Let every receiver's queue settle, then check exact group sets over one window.
        let got: Vec<Vec<(Ipv4Addr, Ipv4Addr)>> = std::thread::scope(|s| {
            let h: Vec<_> = rx
                .iter()
                .map(|r| s.spawn(move || r.collect(QUIET_WINDOW)))
                .collect();
            h.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let groups = |i: usize| -> Vec<Ipv4Addr> {
            let mut g: Vec<_> = got[i].iter().map(|(_, g)| *g).collect();
            g.sort();
            g.dedup();
            g
        };
        assert_eq!(groups(0), vec![G1], "receiver 1");
        assert_eq!(groups(1), vec![G1, G2], "receiver 2");
        assert_eq!(
            groups(2),
            Vec::<Ipv4Addr>::new(),
            "receiver 3 joined nothing"
        );
    });
}

#[test]
fn igmpv3_source_specific_join_gets_only_that_source_and_block_stops_it() {
    let t = setup(&[IgmpVersion::V3], "native");
    t.lab
        .sender
        .ip(&["addr", "add", &format!("{SENDER2_ADDR}/24"), "dev", HOST_IF])
        .unwrap();
    let r1 = t.receiver(0);
    r1.join_source(G1, SENDER_ADDR).unwrap();
    t.streaming(&[SENDER_ADDR, SENDER2_ADDR], &[G1], || {
        if !arrives(&r1, Some(SENDER_ADDR), G1, JOIN_TIMEOUT) {
            t.fail("the INCLUDE{S1} receiver did not get S1's stream");
        }
        // Everything queued counts here: S2's stream must never have arrived at all.
        if count(&r1, Some(SENDER2_ADDR), G1, QUIET_WINDOW) != 0 {
            t.fail("the INCLUDE{S1} receiver got S2's stream");
        }
        // Dropping the last source is a BLOCK of it: a leave.
        r1.leave_source(G1, SENDER_ADDR).unwrap();
        std::thread::sleep(LEAVE_LATENCY);
        r1.drain().unwrap();
        if count(&r1, None, G1, QUIET_WINDOW) != 0 {
            t.fail("the stream went on after BLOCK of the last source");
        }
    });
}

#[test]
fn daemon_detaches_and_removes_pins_on_sigterm() {
    let t = setup(&[IgmpVersion::V2], "native");
    let pin_dir = t.daemon.pin_dir().to_owned();
    assert!(
        pin_dir.join(mgm_common::maps::FWD).exists(),
        "maps are pinned while running"
    );
    let Setup { daemon, lab } = t;
    let (status, log) = daemon.stop().unwrap();
    assert!(
        status.success(),
        "mgm exit status {status}:\n{}",
        log.join("\n")
    );
    assert!(!pin_dir.exists(), "pins removed on exit");
    let links = lab.router.ip_output(&["link", "show", "up0"]).unwrap();
    assert!(
        !links.contains("xdp"),
        "XDP still attached after exit: {links}"
    );
}
