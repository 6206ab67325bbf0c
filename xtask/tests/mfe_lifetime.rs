//! End-to-end, the MFE life cycle on the real `mgm` binary (issue 17 item 4): an entry whose
//! lifetime ends under a flow is refreshed in place without losing a datagram, an idle one
//! goes, and a unicast route change toward the source moves the entry's incoming interface
//! within a second (spec §5.6 and §9 item 11). Receivers join through their kernel's IGMP host
//! stack and count every datagram by its sequence number. Needs root; run through
//! `cargo xtask test`, which builds `mgm` and passes its path in `MGM_BIN`.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use xtask::lab::{
    downstream, mgm_bin, receiver_addr,
    traffic::{Datagram, Receiver, Sender},
    unique_tag, Daemon, IgmpVersion, Lab, HOST_IF, SENDER_ADDR, UPSTREAM,
};

const G1: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A running daemon and its lab; the daemon stops first when this drops.
struct Setup {
    daemon: Daemon,
    lab: Lab,
}

impl Setup {
    /// A lab with `receivers` IGMPv2 hosts, changed by `prepare`, and mgm as its proxy with
    /// `args`.
    fn start(receivers: usize, args: &[&str], prepare: impl FnOnce(&Lab)) -> Setup {
        let tag = unique_tag("t");
        let lab = Lab::up(&tag, &vec![IgmpVersion::V2; receivers]).expect("lab up");
        prepare(&lab);
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
        let daemon = Daemon::start(&mgm_bin(), &lab, &pin_dir, args, false).expect("mgm starts");
        Setup { daemon, lab }
    }

    /// Receiver `i`, joined to `group`, with room to queue seconds of a stream.
    fn receiver(&self, i: usize, group: Ipv4Addr) -> Receiver {
        let rx = Receiver::new(&self.lab.receivers[i], receiver_addr(i)).expect("receiver");
        rx.grow_buffer(16 << 20).expect("receive buffer");
        rx.join(group).expect("join");
        rx
    }

    /// The `mgm show` entry of (source, group), if the data plane holds one.
    fn entry(&self, source: Ipv4Addr, group: Ipv4Addr) -> Option<serde_json::Value> {
        let show = self.daemon.show().expect("mgm show");
        show["entries"]
            .as_array()?
            .iter()
            .find(|e| {
                e["source"] == source.to_string().as_str()
                    && e["group"] == group.to_string().as_str()
            })
            .cloned()
    }

    fn fail(&self, what: &str) -> ! {
        let show = self
            .daemon
            .show()
            .map_or_else(|e| format!("{e:#}"), |v| format!("{v:#}"));
        panic!(
            "{what}\nmgm log:\n{}\nmgm show:\n{show}",
            self.daemon.log().join("\n")
        );
    }
}

/// Sets the flag when dropped, so a sender thread stops however the test body ends.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Reads until a datagram that `wanted` accepts arrives, keeping everything read on the way
/// in `log`; returns that datagram, or `None` after `timeout`.
fn read_until(
    rx: &Receiver,
    log: &mut Vec<Datagram>,
    timeout: Duration,
    wanted: impl Fn(&Datagram) -> bool,
) -> Option<Datagram> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        let got = rx.datagrams(Duration::from_millis(20));
        let hit = got.iter().find(|d| wanted(d)).copied();
        log.extend(got);
        if hit.is_some() {
            return hit;
        }
    }
    None
}

/// A lifetime short enough to end several times while the test streams.
const LIFETIME: Duration = Duration::from_secs(1);
/// One datagram every 500 µs: a gap at an expiry the length of one upcall round trip drops
/// some of them.
const INTERVAL: Duration = Duration::from_micros(500);

#[test]
fn a_stream_across_several_expiries_loses_no_datagram_and_the_idle_entry_goes() {
    // given: mgm with a one-second MFE lifetime, a receiver joined to G1
    let lifetime = LIFETIME.as_secs().to_string();
    let args = ["--xdp-mode", "native", "--mfe-lifetime", &lifetime];
    let t = Setup::start(1, &args, |_| {});
    let rx = t.receiver(0, G1);
    let mut tx = Sender::new(&t.lab.sender, SENDER_ADDR, 8).expect("sender");
    let stop = AtomicBool::new(false);
    let mut got: Vec<Datagram> = Vec::new();
    // when: the stream runs across four lifetimes and more after it reached the receiver
    let sent = std::thread::scope(|s| {
        let sender = s.spawn(|| tx.stream(G1, 64, INTERVAL, &stop));
        let stopper = StopOnDrop(&stop);
        let Some(first) = read_until(&rx, &mut got, JOIN_TIMEOUT, |_| true) else {
            t.fail("the stream never reached the receiver");
        };
        read_until(&rx, &mut got, 4 * LIFETIME + LIFETIME / 2, |_| false);
        drop(stopper);
        let sent = sender.join().expect("sender thread").expect("every send");
        // what is still in flight arrives now; the last datagram sent ends the wait
        let last = |d: &Datagram| d.seq == sent;
        if !got.iter().any(last)
            && read_until(&rx, &mut got, Duration::from_secs(2), last).is_none()
        {
            t.fail(&format!("the last datagram ({sent}) never arrived"));
        }
        assert!(
            got.last().unwrap().at - first.at > 4 * LIFETIME,
            "the stream spans four lifetimes"
        );
        sent
    });
    // then: every datagram from the first one received to the last one sent arrived, once
    let first = got[0].seq;
    let seqs: Vec<u64> = got
        .iter()
        .filter(|d| d.source == SENDER_ADDR && d.group == G1)
        .map(|d| d.seq)
        .collect();
    let unique: BTreeSet<u64> = seqs.iter().copied().collect();
    let missing: Vec<u64> = (first..=sent).filter(|s| !unique.contains(s)).collect();
    if !missing.is_empty() || unique.len() != seqs.len() {
        t.fail(&format!(
            "sent {} datagrams from {first} to {sent}, received {} ({} distinct); missing {:?}",
            sent - first + 1,
            seqs.len(),
            unique.len(),
            &missing[..missing.len().min(50)],
        ));
    }
    // and once the flow stops, its entry lives out at most two lifetimes (the one in which
    // packets moved ends in a refresh, the idle one after it in the delete)
    let end = Instant::now() + 3 * LIFETIME + Duration::from_secs(2);
    while t.entry(SENDER_ADDR, G1).is_some() {
        if Instant::now() > end {
            t.fail("the idle entry was not deleted");
        }
        if !rx.datagrams(Duration::from_millis(100)).is_empty() {
            t.fail("datagrams arrived after the stream stopped");
        }
    }
}

/// A source both the sender host and receiver host 2 send from, so the router can reach it
/// through `up0` and through `dn2`.
const ANYCAST_SOURCE: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 1);
/// The two copies of the stream tell their path by their length.
const VIA_UP0: usize = 100;
const VIA_DN2: usize = 200;

#[test]
fn a_route_change_toward_the_source_moves_the_incoming_interface_within_a_second() {
    // given: the source streams into the router on up0 and on dn2 at once; the router's route
    // to it points at up0, and receiver 1 (on dn1) joined the group
    let host_route = format!("{ANYCAST_SOURCE}/32");
    let t = Setup::start(2, &["--xdp-mode", "native"], |lab| {
        for host in [&lab.sender, &lab.receivers[1]] {
            host.ip(&["addr", "add", &host_route, "dev", "lo"])
                .expect("source address");
        }
        // As on the sender: a veth hands over partial UDP checksums forwarding cannot complete.
        lab.receivers[1]
            .disable_tx_checksum(HOST_IF)
            .expect("checksum offload off");
        let via = SENDER_ADDR.to_string();
        lab.router
            .ip(&["route", "add", &host_route, "via", &via, "dev", UPSTREAM])
            .expect("route via up0");
    });
    let rx = t.receiver(0, G1);
    let mut up = Sender::on_device(&t.lab.sender, ANYCAST_SOURCE, HOST_IF, 8).expect("sender");
    let mut dn = Sender::on_device(&t.lab.receivers[1], ANYCAST_SOURCE, HOST_IF, 8).expect("2nd");
    let stop = AtomicBool::new(false);
    let mut got: Vec<Datagram> = Vec::new();
    let every = Duration::from_millis(2);
    std::thread::scope(|s| {
        s.spawn(|| up.stream(G1, VIA_UP0, every, &stop));
        s.spawn(|| dn.stream(G1, VIA_DN2, every, &stop));
        let _stop = StopOnDrop(&stop);
        // the entry takes up0 from the route: only that copy is forwarded
        if read_until(&rx, &mut got, JOIN_TIMEOUT, |d| d.len == VIA_UP0).is_none() {
            t.fail("the stream via up0 never reached the receiver");
        }
        read_until(&rx, &mut got, Duration::from_millis(300), |_| false);
        if got.iter().any(|d| d.len == VIA_DN2) {
            t.fail("the copy arriving on dn2 was forwarded while the route said up0");
        }
        // when: the route to the source moves to dn2
        let via = receiver_addr(1).to_string();
        let dn2 = downstream(1);
        let changed = Instant::now();
        t.lab
            .router
            .ip(&["route", "replace", &host_route, "via", &via, "dev", &dn2])
            .expect("route change");
        // then: dn2's copy reaches the receiver within a second of the change
        let Some(moved) = read_until(&rx, &mut got, Duration::from_secs(3), |d| d.len == VIA_DN2)
        else {
            t.fail("the entry never followed the route to dn2");
        };
        let took = moved.at - changed;
        if took >= Duration::from_secs(1) {
            t.fail(&format!("the entry followed the route after {took:?}"));
        }
        eprintln!("the entry followed the route change in {took:?}");
        // and up0's copy, now on the wrong interface, is no longer forwarded
        read_until(&rx, &mut got, Duration::from_millis(500), |_| false);
        let late = moved.at + Duration::from_millis(100);
        let stale = got
            .iter()
            .filter(|d| d.len == VIA_UP0 && d.at > late)
            .count();
        if stale > 0 {
            t.fail(&format!("{stale} copies via up0 forwarded after the move"));
        }
    });
    let entry = t
        .entry(ANYCAST_SOURCE, G1)
        .unwrap_or_else(|| t.fail("no entry for the source"));
    assert_eq!(entry["iif"], downstream(1).as_str(), "{entry}");
}
