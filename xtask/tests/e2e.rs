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
    daemon::keep_output,
    downstream, lan_host_addr, mgm_bin, receiver_addr,
    stream::Stream,
    traffic::{Capture, Receiver, Sender},
    unique_tag, Daemon, IgmpVersion, Lab, FAST_IGMP, HOST_IF, SENDER_ADDR, SWITCHED_SOURCE_ADDR,
    SWITCH_MEMBERSHIP_INTERVAL, SWITCH_QUERY_INTERVAL, SWITCH_ROUTER_PORT, UPSTREAM,
};

const G1: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);
const G2: Ipv4Addr = Ipv4Addr::new(239, 2, 2, 2);
/// A second source address on the sender host, for source-specific tests.
const SENDER2_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);

/// A lab plus its running daemon; both go away on drop, in that order.
struct Setup {
    daemon: Daemon,
    lab: Lab,
}

fn setup(versions: &[IgmpVersion], mode: &str) -> Setup {
    let args = ["--xdp-mode", mode, "--igmp-last-member-interval-ms", "100"];
    setup_with(versions, &args, |_| {})
}

/// A lab with one receiver per entry of `versions`, changed by `prepare`, then mgm started
/// on it with `args`.
fn setup_with(versions: &[IgmpVersion], args: &[&str], prepare: impl FnOnce(&mut Lab)) -> Setup {
    let tag = unique_tag("t");
    let mut lab = Lab::up(&tag, versions).expect("lab up");
    prepare(&mut lab);
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let daemon = Daemon::start(&mgm_bin(), &lab, &pin_dir, args, false).expect("mgm starts");
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

    /// `rx` leaves `group`; once the leave latency has passed, nothing more of it arrives.
    fn leave_stops(&self, rx: &Receiver, group: Ipv4Addr, what: &str) {
        rx.leave(group).unwrap();
        std::thread::sleep(LEAVE_LATENCY);
        rx.drain().unwrap();
        if count(rx, None, group, QUIET_WINDOW) != 0 {
            self.fail(what);
        }
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
/// The daemon runs with a 100 ms last-member query interval: a leave ends the stream after two
/// unanswered group-specific queries, about 200 ms.
const LEAVE_LATENCY: Duration = Duration::from_millis(600);
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
        // A one-interface set has no devmap: `show` must still name its interface.
        let show = t.daemon.show().expect("mgm show --json");
        let oifs = show["entries"]
            .as_array()
            .and_then(|a| {
                a.iter().find(|e| {
                    e["group"] == G1.to_string().as_str()
                        && e["source"] == SENDER_ADDR.to_string().as_str()
                })
            })
            .map(|e| e["oifs"].clone());
        if oifs != Some(serde_json::json!([downstream(0)])) {
            t.fail(&format!(
                "mgm show gives the stream's outgoing interfaces as {oifs:?}"
            ));
        }
        t.leave_stops(&r1, G1, "the stream went on after the leave");
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

/// `mgm run --config`: a daemon given its roles, IGMP timers and XDP mode by the file alone
/// forwards like one given flags, and the flags beside the file win (the lab's pin directory,
/// not the one the file names).
#[test]
fn a_daemon_configured_by_its_file_forwards_and_flags_override_the_file() {
    let tag = unique_tag("t");
    let lab = Lab::up(&tag, &[IgmpVersion::V2, IgmpVersion::V3]).expect("lab up");
    let file_pins = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}-from-file"));
    let conf = std::env::temp_dir().join(format!("mgm-{tag}.toml"));
    std::fs::write(
        &conf,
        format!(
            "[interfaces]\nupstream = \"{UPSTREAM}\"\ndownstream = [\"{}\", \"{}\"]\n\
             [igmp]\nlast-member-interval-ms = 100\n\
             [dataplane]\nxdp-mode = \"native\"\npin-dir = \"{}\"\n",
            downstream(0),
            downstream(1),
            file_pins.display()
        ),
    )
    .unwrap();
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _conf = Remove(conf.clone());
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let conf_arg = conf.display().to_string();
    let daemon = Daemon::start_as(
        &mgm_bin(),
        &lab,
        &pin_dir,
        &[],
        &["--config", &conf_arg],
        false,
    )
    .expect("mgm starts from its file");
    let t = Setup { daemon, lab };
    assert!(
        !file_pins.exists() && pin_dir.join(mgm_common::maps::FWD).exists(),
        "--pin-dir on the command line overrides the file's"
    );
    let (r1, r2) = (t.receiver(0), t.receiver(1));
    r1.join(G1).unwrap();
    t.streaming(&[SENDER_ADDR], &[G1], || {
        if !arrives(&r1, None, G1, JOIN_TIMEOUT) {
            t.fail("the receiver that joined got nothing");
        }
        if count(&r2, None, G1, QUIET_WINDOW) != 0 {
            t.fail("the receiver that did not join got the stream");
        }
        // Within LEAVE_LATENCY only with the file's 100 ms last-member interval (default 1 s).
        t.leave_stops(&r1, G1, "the stream went on after the leave");
    });
}

/// `GET /metrics` from inside the router's namespace.
fn scrape(t: &Setup, addr: &str) -> String {
    use std::io::{Read, Write};
    let addr = addr.to_owned();
    t.lab
        .router
        .run(move || -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect(&addr)?;
            write!(s, "GET /metrics HTTP/1.0\r\nHost: mgm\r\n\r\n")?;
            let mut all = String::new();
            s.read_to_string(&mut all)?;
            Ok(all)
        })
        .unwrap()
        .unwrap_or_else(|e| t.fail(&format!("scrape: {e}")))
}

/// The value of one series in an exposition.
fn sample(exposition: &str, series: &str) -> Option<u64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `mgm run --metrics`: the exposition is valid to Prometheus' own checker, a downstream's
/// transmitted-packets counter moves by exactly what its receiver got, and the daemon's own
/// counters are there.
#[test]
fn metrics_are_valid_prometheus_text_and_count_what_receivers_got() {
    const N: usize = 50;
    const ADDR: &str = "127.0.0.1:9464";
    let args = [
        "--xdp-mode",
        "native",
        "--igmp-last-member-interval-ms",
        "100",
        "--metrics",
        ADDR,
    ];
    let t = setup_with(&[IgmpVersion::V2], &args, |_| {});
    let r1 = t.receiver(0);
    r1.join(G1).unwrap();
    t.streaming(&[SENDER_ADDR], &[G1], || {
        if !arrives(&r1, None, G1, JOIN_TIMEOUT) {
            t.fail("the receiver that joined got nothing");
        }
    });
    r1.drain().unwrap();
    let series = format!(
        "mgm_interface_transmitted_packets_total{{interface=\"{}\"}}",
        downstream(0)
    );
    let before = scrape(&t, ADDR);
    let mut tx = Sender::new(&t.lab.sender, SENDER_ADDR, 8).unwrap();
    for _ in 0..N {
        tx.send(G1, 100).unwrap();
    }
    let got = count(&r1, Some(SENDER_ADDR), G1, Duration::from_millis(500));
    let after = scrape(&t, ADDR);
    let body = after.split("\r\n\r\n").nth(1).unwrap_or_default();
    let moved = sample(body, &series).zip(sample(&before, &series));
    if got != N || moved.map(|(a, b)| a - b) != Some(N as u64) {
        t.fail(&format!(
            "receiver got {got} of {N}; {series} moved by {moved:?}:\n{after}"
        ));
    }
    // The daemon's own counters too: the kernel host's reports were handled, and its drop
    // causes are exported though nothing was dropped.
    if sample(body, "mgm_daemon_igmp_messages_total").is_none_or(|n| n == 0)
        || sample(body, "mgm_daemon_unresolved_upcalls_total").is_none()
        || sample(body, "mgm_daemon_events_dropped_queue_full_total").is_none()
    {
        t.fail(&format!("the daemon's counters are missing:\n{body}"));
    }
    use std::{io::Write, process::Stdio};
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (cargo xtask test installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
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

/// The router's view of downstream `i` from `mgm show --json`: (MAC, copies sent).
fn downstream_view(t: &Setup, i: usize) -> (String, u64) {
    let show = t.daemon.show().expect("mgm show --json");
    let name = downstream(i);
    let iface = show["interfaces"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == name.as_str()))
        .unwrap_or_else(|| t.fail(&format!("{name} missing from mgm show: {show}")));
    (
        iface["mac"].as_str().unwrap_or_default().to_owned(),
        iface["stats"]["tx_pkts"].as_u64().unwrap_or(u64::MAX),
    )
}

fn mac_string(frame: &[u8], at: usize) -> String {
    frame[at..at + 6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn ipv4_checksum_ok(frame: &[u8]) -> bool {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let mut sum: u32 = frame[14..14 + ihl]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

/// Receivers join one by one (fan-out 1, 2, 3). After each join exactly N packets are sent:
/// every joined receiver gets all N, the others none, each captured frame carries the egress
/// interface's source MAC, TTL minus one and a valid checksum, and each downstream's
/// per-output counter grew by exactly what its receiver got.
fn fan_out(mode: &str) {
    const N: usize = 40;
    const TTL: u32 = 8;
    let t = setup(&[IgmpVersion::V2, IgmpVersion::V3, IgmpVersion::V2], mode);
    let rx: Vec<Receiver> = (0..3).map(|i| t.receiver(i)).collect();
    let caps: Vec<Capture> = (0..3)
        .map(|i| Capture::new(&t.lab.receivers[i], HOST_IF).expect("capture"))
        .collect();
    let mut sender = Sender::new(&t.lab.sender, SENDER_ADDR, TTL).unwrap();
    for k in 1..=3 {
        rx[k - 1].join(G1).unwrap();
        t.streaming(&[SENDER_ADDR], &[G1], || {
            if !arrives(&rx[k - 1], None, G1, JOIN_TIMEOUT) {
                t.fail(&format!("receiver {k} got nothing after joining"));
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        for (r, c) in rx.iter().zip(&caps) {
            r.drain().unwrap();
            c.frames(Duration::from_millis(100));
        }
        let before: Vec<u64> = (0..3).map(|i| downstream_view(&t, i).1).collect();
        for _ in 0..N {
            sender.send(G1, 100).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(300));
        for i in 0..3 {
            let expected = if i < k { N } else { 0 };
            let got = count(&rx[i], Some(SENDER_ADDR), G1, Duration::from_millis(200));
            if got != expected {
                t.fail(&format!(
                    "fan-out {k} ({mode}): receiver {} got {got} of {expected}",
                    i + 1
                ));
            }
            let (mac, sent) = downstream_view(&t, i);
            if sent - before[i] != got as u64 {
                t.fail(&format!(
                    "fan-out {k}: {} counted {} copies, its receiver got {got}",
                    downstream(i),
                    sent - before[i]
                ));
            }
            let frames = caps[i].frames(Duration::from_millis(200));
            assert_eq!(
                frames.len(),
                expected,
                "captured frames on receiver {}",
                i + 1
            );
            for f in &frames {
                assert_eq!(mac_string(f, 6), mac, "source MAC is {}'s", downstream(i));
                assert_eq!(u32::from(f[22]), TTL - 1, "TTL decremented once");
                assert!(ipv4_checksum_ok(f), "IPv4 checksum valid");
            }
        }
    }
}

#[test]
fn fan_out_one_two_three_native() {
    fan_out("native");
}

#[test]
fn fan_out_one_two_three_skb() {
    fan_out("skb");
}

/// Per-copy policy: copies whose TTL is below the threshold are not sent and are counted per
/// interface by the egress program; copies larger than a downstream's MTU are not sent there
/// (the kernel's devmap drops them) while other downstreams still get them.
#[test]
fn egress_applies_ttl_threshold_and_mtu_per_interface() {
    let args = [
        "--xdp-mode",
        "native",
        "--ttl-threshold",
        "5",
        "--igmp-last-member-interval-ms",
        "100",
    ];
    // dn2 gets a small MTU before mgm reads it; the threshold applies to both.
    let t = setup_with(&[IgmpVersion::V2, IgmpVersion::V2], &args, |lab| {
        lab.router
            .ip(&["link", "set", &downstream(1), "mtu", "1000"])
            .unwrap();
    });
    let (r1, r2) = (t.receiver(0), t.receiver(1));
    r1.join(G1).unwrap();
    r2.join(G1).unwrap();
    // Wait until both joins are installed: a small, high-TTL packet reaches both.
    let mut ok = Sender::new(&t.lab.sender, SENDER_ADDR, 8).unwrap();
    let end = Instant::now() + JOIN_TIMEOUT;
    let mut seen = [false, false];
    while Instant::now() < end && seen != [true, true] {
        ok.send(G1, 100).unwrap();
        seen[0] |= count(&r1, None, G1, Duration::from_millis(50)) > 0;
        seen[1] |= count(&r2, None, G1, Duration::from_millis(50)) > 0;
    }
    if seen != [true, true] {
        t.fail("the receivers never got the stream");
    }
    std::thread::sleep(Duration::from_millis(200));
    r1.drain().unwrap();
    r2.drain().unwrap();
    // TTL 5 leaves the router as 4, below the threshold of 5: nobody gets these.
    let mut low = Sender::new(&t.lab.sender, SENDER_ADDR, 5).unwrap();
    for _ in 0..10 {
        low.send(G1, 100).unwrap();
    }
    // 1200-byte datagrams fit dn1 (MTU 1500) but not dn2 (MTU 1000).
    for _ in 0..10 {
        ok.send(G1, 1200).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        count(&r1, None, G1, Duration::from_millis(200)),
        10,
        "dn1 sends the big ones"
    );
    assert_eq!(
        count(&r2, None, G1, Duration::from_millis(200)),
        0,
        "dn2 sends nothing"
    );
    let show = t.daemon.show().unwrap();
    let stats = |name: &str| {
        show["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap()["stats"]
            .clone()
    };
    assert_eq!(stats("dn1")["ttl_too_low"], 10);
    assert_eq!(stats("dn2")["ttl_too_low"], 10);
}

/// MAC and MTU changes of the downstreams while mgm runs: the next copies leave with the new
/// MACs (the prepared copy and the egress program's alike), and datagrams that fitted the old
/// MTU but not the new one are neither received nor counted as sent.
#[test]
fn link_changes_while_running_reach_the_copies() {
    const N: usize = 20;
    let t = setup(&[IgmpVersion::V2, IgmpVersion::V2], "native");
    let rx: Vec<Receiver> = (0..2).map(|i| t.receiver(i)).collect();
    for r in &rx {
        r.join(G1).unwrap();
    }
    t.streaming(&[SENDER_ADDR], &[G1], || {
        for (i, r) in rx.iter().enumerate() {
            if !arrives(r, None, G1, JOIN_TIMEOUT) {
                t.fail(&format!("receiver {} got nothing after joining", i + 1));
            }
        }
    });
    let macs = ["02:00:00:00:5e:01", "02:00:00:00:5e:02"];
    for (i, mac) in macs.iter().enumerate() {
        t.lab
            .router
            .ip(&["link", "set", &downstream(i), "address", mac, "mtu", "1000"])
            .unwrap();
    }
    let end = Instant::now() + JOIN_TIMEOUT;
    while (0..2).any(|i| downstream_view(&t, i).0 != macs[i]) {
        if Instant::now() > end {
            t.fail("mgm show never reported the new MACs");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let caps: Vec<Capture> = (0..2)
        .map(|i| Capture::new(&t.lab.receivers[i], HOST_IF).expect("capture"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    for (r, c) in rx.iter().zip(&caps) {
        r.drain().unwrap();
        c.frames(Duration::from_millis(100));
    }
    let before: Vec<u64> = (0..2).map(|i| downstream_view(&t, i).1).collect();
    let mut sender = Sender::new(&t.lab.sender, SENDER_ADDR, 8).unwrap();
    for _ in 0..N {
        sender.send(G1, 100).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    // 1200-byte datagrams: within the old MTU of 1500, beyond the new one.
    for _ in 0..N {
        sender.send(G1, 1200).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..2 {
        let got = count(&rx[i], Some(SENDER_ADDR), G1, Duration::from_millis(200));
        let sent = downstream_view(&t, i).1 - before[i];
        if got != N || sent != N as u64 {
            t.fail(&format!(
                "{}: its receiver got {got} and it counted {sent} sent, of {N} that fit",
                downstream(i)
            ));
        }
        let frames = caps[i].frames(Duration::from_millis(200));
        assert_eq!(frames.len(), N, "captured frames on receiver {}", i + 1);
        for f in &frames {
            assert_eq!(
                mac_string(f, 6),
                macs[i],
                "the new MAC of {}",
                downstream(i)
            );
        }
    }
}

/// RPF follows the kernel's routing table: a source routed through a downstream interface
/// gets an MFE whose incoming interface is that downstream, so its packets arriving upstream
/// are wrong-interface drops, while a source routed upstream is forwarded.
#[test]
fn rpf_interface_comes_from_the_kernel_routing_table() {
    const OFF_PATH: Ipv4Addr = Ipv4Addr::new(198, 18, 99, 2);
    let args = [
        "--xdp-mode",
        "native",
        "--igmp-last-member-interval-ms",
        "100",
    ];
    let t = setup_with(&[IgmpVersion::V2, IgmpVersion::V2], &args, |lab| {
        lab.router
            .ip(&["route", "add", "198.18.99.0/24", "dev", &downstream(0)])
            .unwrap();
        lab.sender
            .ip(&["addr", "add", &format!("{OFF_PATH}/24"), "dev", HOST_IF])
            .unwrap();
    });
    // A route added while mgm runs counts too.
    const LATE: Ipv4Addr = Ipv4Addr::new(198, 18, 98, 2);
    t.lab
        .router
        .ip(&["route", "add", "198.18.98.0/24", "dev", &downstream(0)])
        .unwrap();
    t.lab
        .sender
        .ip(&["addr", "add", &format!("{LATE}/24"), "dev", HOST_IF])
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let r2 = t.receiver(1);
    r2.join(G1).unwrap();
    t.streaming(&[SENDER_ADDR, OFF_PATH, LATE], &[G1], || {
        if !arrives(&r2, Some(SENDER_ADDR), G1, JOIN_TIMEOUT) {
            t.fail("the on-path source did not reach the receiver");
        }
        let got = r2.collect(QUIET_WINDOW);
        if got.iter().any(|(s, _)| *s == OFF_PATH || *s == LATE) {
            t.fail("a source that fails RPF was forwarded");
        }
    });
    let show = t.daemon.show().unwrap();
    for source in [OFF_PATH, LATE] {
        let entry = show["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["source"] == source.to_string().as_str())
            .cloned()
            .unwrap_or_else(|| t.fail(&format!("no entry for {source}: {show}")));
        assert_eq!(entry["iif"], downstream(0).as_str(), "{entry}");
        assert!(entry["stats"]["wrong_if"].as_u64().unwrap() > 0, "{entry}");
    }
}

/// RFC 3376 §4 / RFC 2236 §2 on the wire: mgm's general queries leave each downstream with
/// IP TTL 1, the Router Alert option, destination 224.0.0.1, the interface's address as
/// source, a valid IGMP checksum, and the v3 query format with the configured timers.
#[test]
fn general_queries_are_sent_with_the_right_fields() {
    let args = [
        "--xdp-mode",
        "native",
        "--igmp-query-interval",
        "2",
        "--igmp-query-response-ms",
        "1000",
    ];
    // The capture starts before mgm, so it sees the startup queries.
    let mut cap = None;
    let t = setup_with(&[IgmpVersion::V3], &args, |lab| {
        cap = Some(Capture::new(&lab.receivers[0], HOST_IF).expect("capture"));
    });
    let cap = cap.expect("prepared");
    // Startup queries come a quarter of the query interval apart: two within 1.5 s.
    let queries = cap.frames_where(Duration::from_millis(1500), |f| {
        let ihl = usize::from(f[14] & 0x0f) * 4;
        f[23] == 2 && f.get(14 + ihl) == Some(&0x11)
    });
    if queries.len() < 2 {
        t.fail(&format!(
            "{} general queries captured, expected the startup ones",
            queries.len()
        ));
    }
    for f in &queries {
        let ihl = usize::from(f[14] & 0x0f) * 4;
        assert_eq!(ihl, 24, "IPv4 header carries one 4-byte option");
        assert_eq!(
            f[14 + 20..14 + 24],
            [0x94, 0x04, 0x00, 0x00],
            "Router Alert"
        );
        assert_eq!(f[22], 1, "IP TTL 1");
        assert_eq!(f[26..30], [198, 18, 1, 1], "from the downstream's address");
        assert_eq!(f[30..34], [224, 0, 0, 1], "to all systems");
        let igmp = &f[14 + ihl..];
        assert_eq!(igmp.len(), 12, "a v3 query without sources");
        assert_eq!(igmp[0], 0x11);
        assert_eq!(igmp[1], 10, "max resp code: 1000 ms in tenths");
        assert_eq!(igmp[4..8], [0, 0, 0, 0], "general: group 0");
        assert_eq!(igmp[9], 2, "QQIC: the 2 s query interval");
        let mut sum: u32 = igmp
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff, "IGMP checksum");
    }
}

/// RFC 4605 §4.1: the proxy stands for its downstream receivers upstream. The first receiver
/// of a group makes the router's upstream interface report it (from the router's own host
/// stack), and the last one leaving makes it report the leave. A host on the upstream link
/// joining a group makes no state downstream: IGMP does not run on the upstream.
#[test]
fn proxy_reports_downstream_membership_upstream() {
    let t = setup(&[IgmpVersion::V2, IgmpVersion::V3], "native");
    let cap = Capture::new(&t.lab.sender, HOST_IF).expect("capture upstream");
    let upstream_host = Receiver::new(&t.lab.sender, SENDER_ADDR).expect("upstream host socket");
    upstream_host.join(G2).unwrap();
    // v3 records for G1 from the router's upstream address, as (record type) values.
    let records = |window| -> Vec<u8> {
        cap.frames_where(window, |f| f[23] == 2 && f[26..30] == [198, 18, 0, 1])
            .iter()
            .flat_map(|f| {
                let igmp = &f[14 + usize::from(f[14] & 0x0f) * 4..];
                let mut kinds = Vec::new();
                let (mut at, n) = (8, usize::from(u16::from_be_bytes([igmp[6], igmp[7]])));
                for _ in 0..n {
                    if igmp.len() < at + 8 {
                        break;
                    }
                    let sources = usize::from(u16::from_be_bytes([igmp[at + 2], igmp[at + 3]]));
                    if igmp[0] == 0x22 && igmp[at + 4..at + 8] == G1.octets() {
                        kinds.push(igmp[at]);
                    }
                    at += 8 + 4 * sources + 4 * usize::from(igmp[at + 1]);
                }
                kinds
            })
            .collect()
    };
    let (r1, r2) = (t.receiver(0), t.receiver(1));
    r1.join(G1).unwrap();
    r2.join(G1).unwrap();
    let joined = records(Duration::from_millis(1500));
    // CHANGE_TO_EXCLUDE_MODE {}: mgm's upstream host side joined G1 (RFC 3376 §4.2.12).
    if !joined.contains(&4) {
        t.fail(&format!("no upstream join for {G1}: records {joined:?}"));
    }
    r1.leave(G1).unwrap();
    let one_left = records(Duration::from_millis(800));
    assert!(
        !one_left.contains(&3),
        "r2 still wants {G1}: no upstream leave yet"
    );
    r2.leave(G1).unwrap();
    let left = records(Duration::from_millis(1500));
    // CHANGE_TO_INCLUDE_MODE {}: the leave.
    if !left.contains(&3) {
        t.fail(&format!("no upstream leave for {G1}: records {left:?}"));
    }
    // The upstream host's reports reached mgm, and made neither a group nor an entry.
    let stats = t.daemon.show_view("stats").expect("show stats");
    let up0 = stats["stats"]["interfaces"]
        .as_array()
        .and_then(|i| i.iter().find(|i| i["interface"] == UPSTREAM))
        .cloned()
        .unwrap_or_default();
    let reports = ["igmp_v2_report", "igmp_v3_report"].map(|k| up0[k].as_u64().unwrap_or(0));
    if reports == [0, 0] {
        t.fail(&format!("no report heard on {UPSTREAM}: {up0}"));
    }
    let groups = t.daemon.show_view("groups").expect("show groups");
    let mfes = t.daemon.show_view("mfe").expect("show mfe");
    let g2 = G2.to_string();
    let in_view = |view: &serde_json::Value, key: &str| {
        view[key]
            .as_array()
            .is_some_and(|rows| rows.iter().any(|r| r["group"] == g2))
    };
    if in_view(&groups, "groups") || in_view(&mfes, "mfes") {
        t.fail(&format!(
            "{G2}, joined upstream only, made state: {groups}\n{mfes}"
        ));
    }
}

/// Two hosts on one LAN behind one router interface: the first host's leave must not cut the
/// second host's stream — with last-member queries (the second host answers them) and with
/// fast leave (the router tracks each host) — and the second host's leave ends it.
fn two_hosts_one_leaves(extra: &[&str]) {
    // Short query intervals, as on a LAN where reports can be lost: startup queries every
    // 0.5 s, then every 2 s, so each host has answered one before the leave.
    let mut args = FAST_IGMP.to_vec();
    args.extend_from_slice(extra);
    let t = setup_with(&[], &args, |lab| {
        lab.add_lan(&[IgmpVersion::V3, IgmpVersion::V3])
            .expect("lan")
    });
    let a = Receiver::new(&t.lab.lan_hosts[0], lan_host_addr(0)).unwrap();
    let b = Receiver::new(&t.lab.lan_hosts[1], lan_host_addr(1)).unwrap();
    a.join(G1).unwrap();
    b.join(G1).unwrap();
    t.streaming(&[SENDER_ADDR], &[G1], || {
        for (host, rx) in [("A", &a), ("B", &b)] {
            if !arrives(rx, None, G1, JOIN_TIMEOUT) {
                t.fail(&format!("host {host} got nothing after joining"));
            }
        }
        // Both hosts answer a query (and so are known to the router) before A leaves.
        std::thread::sleep(Duration::from_millis(1500));
        a.leave(G1).unwrap();
        std::thread::sleep(LEAVE_LATENCY);
        b.drain().unwrap();
        if count(&b, None, G1, QUIET_WINDOW) == 0 {
            t.fail("host A's leave cut off host B");
        }
        t.leave_stops(&b, G1, "the stream went on after the last host left");
    });
}

#[test]
fn two_hosts_on_a_lan_one_leaves_with_last_member_queries() {
    two_hosts_one_leaves(&[]);
}

#[test]
fn two_hosts_on_a_lan_one_leaves_with_fast_leave() {
    two_hosts_one_leaves(&["--igmp-fast-leave"]);
}

/// Interoperability (RFC 4605): igmpproxy, on the kernel's ipmr, is the upstream router. The
/// lab's sender namespace becomes that router, with the real source one hop behind it; mgm's
/// upstream reports make igmpproxy forward the group to mgm, which forwards it downstream.
#[test]
fn proxy_interoperates_with_igmpproxy_upstream() {
    use std::process::{Command, Stdio};
    if !xtask::kernel::has_ipmr() {
        xtask::kernel::announce_skip(
            "proxy_interoperates_with_igmpproxy_upstream",
            xtask::kernel::NO_IPMR,
        );
        return;
    }
    const SOURCE: Ipv4Addr = Ipv4Addr::new(198, 18, 50, 2);
    let tag = unique_tag("t");
    let lab = Lab::up(&tag, &[IgmpVersion::V2]).expect("lab up");
    let core = &lab.sender;
    let src = xtask::lab::Netns::create(&format!("mgm-{tag}-src")).expect("source ns");
    xtask::lab::veth(&src, "eth0", core, "c_up").unwrap();
    core.ip(&["addr", "add", "198.18.50.1/24", "dev", "c_up"])
        .unwrap();
    core.ip(&["link", "set", "c_up", "up"]).unwrap();
    src.ip(&["addr", "add", &format!("{SOURCE}/24"), "dev", "eth0"])
        .unwrap();
    src.ip(&["link", "set", "eth0", "up"]).unwrap();
    src.ip(&["route", "add", "default", "via", "198.18.50.1"])
        .unwrap();
    src.disable_tx_checksum("eth0").unwrap();
    core.sysctl("net.ipv4.conf.all.rp_filter", "0").unwrap();
    core.sysctl("net.ipv4.conf.c_up.rp_filter", "0").unwrap();
    // mgm's RPF toward the source is its upstream. mgm's own host side reports there, in v2
    // once it hears igmpproxy's v2 queries (RFC 3376 §7.2.1); the sysctl keeps the router's
    // kernel from answering in v3 for anything it joins itself.
    lab.router
        .ip(&["route", "add", "198.18.50.0/24", "via", "198.18.0.2"])
        .unwrap();
    lab.router
        .sysctl(
            &format!("net.ipv4.conf.{}.force_igmp_version", xtask::lab::UPSTREAM),
            "2",
        )
        .unwrap();
    let conf = std::env::temp_dir().join(format!("mgm-{tag}-igmpproxy.conf"));
    std::fs::write(
        &conf,
        "quickleave\nphyint c_up upstream ratelimit 0 threshold 1\n  altnet 198.18.50.0/24\n\
         phyint eth0 downstream ratelimit 0 threshold 1\nphyint lo disabled\n",
    )
    .unwrap();
    let mut igmpproxy = Command::new("ip")
        .args(["netns", "exec", core.name(), "igmpproxy", "-d"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("igmpproxy starts (cargo xtask test installs it)");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _igmpproxy = Kill(&mut igmpproxy);
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let daemon = Daemon::start(&mgm_bin(), &lab, &pin_dir, &["--xdp-mode", "native"], false)
        .expect("mgm starts");
    let t = Setup { daemon, lab };
    let r1 = t.receiver(0);
    r1.join(G1).unwrap();
    let mut tx = Sender::new(&src, SOURCE, 8).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let mut got = 0;
    while Instant::now() < end && got == 0 {
        tx.send(G1, 100).unwrap();
        got = count(&r1, Some(SOURCE), G1, Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(&conf);
    if got == 0 {
        t.fail("no traffic through igmpproxy and mgm within 10 s");
    }
}

/// Interoperability on every kernel (RFC 4605 §4.1): the kernel bridge, an IGMP-snooping switch
/// with its own querier, is mgm's upstream, the source behind it. It must forward the group to
/// mgm only while mgm's proxy reports it: not before a host joins, without a gap across several
/// of its query intervals (a proxy that stopped answering queries would be dropped after
/// [`SWITCH_MEMBERSHIP_INTERVAL`]), and no more soon after the last host left (fast leave).
#[test]
fn a_snooping_switch_upstream_forwards_exactly_while_a_host_behind_mgm_is_joined() {
    let t = setup_with(&[IgmpVersion::V3], &FAST_IGMP, |lab| {
        lab.add_upstream_switch().expect("upstream switch")
    });
    let source = t.lab.upstream_source.as_ref().expect("source host");
    let mut tx = Sender::new(source, SWITCHED_SOURCE_ADDR, 8).unwrap();
    let port = Capture::new(&t.lab.sender, SWITCH_ROUTER_PORT).expect("capture");
    let r1 = t.receiver(0);
    let to_port = |tx: &mut Sender, n: usize| -> usize {
        port.frames(Duration::from_millis(50));
        for _ in 0..n {
            tx.send(G1, 100).unwrap();
        }
        port.frames(Duration::from_millis(200)).len()
    };

    if to_port(&mut tx, 30) != 0 || t.lab.switch_forwards_to_router(G1).unwrap() {
        t.fail("the switch sent the group to mgm before anyone behind mgm joined");
    }

    r1.join(G1).unwrap();
    let end = Instant::now() + JOIN_TIMEOUT;
    let mut joined = false;
    while !joined && Instant::now() < end {
        tx.send(G1, 100).unwrap();
        joined = count(
            &r1,
            Some(SWITCHED_SOURCE_ADDR),
            G1,
            Duration::from_millis(20),
        ) > 0;
    }
    if !joined || !t.lab.switch_forwards_to_router(G1).unwrap() {
        let mdb = t.lab.sender.bridge(&["mdb", "show"]).unwrap_or_default();
        t.fail(&format!(
            "the host's join did not bring the stream through the switch and mgm; mdb:\n{mdb}"
        ));
    }

    // Twice the switch's membership interval, eight of its queries: every datagram arrives.
    r1.drain().unwrap();
    let stop = AtomicBool::new(false);
    let (sent, got) = std::thread::scope(|s| {
        let tx = &mut tx;
        let stop = &stop;
        let sender = s.spawn(move || tx.stream(G1, 100, Duration::from_millis(10), stop));
        let mut got = count(
            &r1,
            Some(SWITCHED_SOURCE_ADDR),
            G1,
            2 * SWITCH_MEMBERSHIP_INTERVAL,
        );
        stop.store(true, Ordering::Relaxed);
        let sent = sender.join().unwrap().expect("send");
        // What was still in flight when the sender stopped.
        got += count(
            &r1,
            Some(SWITCHED_SOURCE_ADDR),
            G1,
            Duration::from_millis(300),
        );
        (sent, got as u64)
    });
    if got != sent {
        t.fail(&format!(
            "across {} queries of the switch the receiver got {got} of {sent} datagrams",
            (2 * SWITCH_MEMBERSHIP_INTERVAL).as_secs() / SWITCH_QUERY_INTERVAL.as_secs()
        ));
    }

    // The last host leaves: mgm leaves upstream and the switch prunes its port at once, well
    // before the membership would time out.
    r1.leave(G1).unwrap();
    let left = Instant::now();
    while t.lab.switch_forwards_to_router(G1).unwrap() {
        if left.elapsed() > SWITCH_MEMBERSHIP_INTERVAL / 2 {
            t.fail("the switch still sends the group to mgm after the last host left");
        }
        port.frames(Duration::from_millis(50));
    }
    if to_port(&mut tx, 30) != 0 {
        t.fail("the switch's mdb let the group go, yet it still reaches mgm");
    }
}

/// RFC 4605 §4.2: a source on a downstream link reaches the upstream link and the other
/// downstream links whose hosts joined, but not the downstream links whose hosts did not.
#[test]
fn traffic_from_a_downstream_source_goes_upstream_and_to_subscribed_downstreams() {
    let t = setup(
        &[IgmpVersion::V2, IgmpVersion::V2, IgmpVersion::V3],
        "native",
    );
    // The upstream host receives redirected frames (GRO) and r1 sends complete checksums.
    t.lab.sender.enable_gro(HOST_IF).unwrap();
    t.lab.receivers[0].disable_tx_checksum(HOST_IF).unwrap();
    let upstream = Receiver::new(&t.lab.sender, SENDER_ADDR).unwrap();
    upstream.join(G2).unwrap();
    let (r2, r3) = (t.receiver(1), t.receiver(2));
    r2.join(G2).unwrap();
    let mut tx = Sender::new(&t.lab.receivers[0], receiver_addr(0), 8).unwrap();
    let src = Some(receiver_addr(0));
    let end = Instant::now() + JOIN_TIMEOUT;
    let (mut up, mut down) = (0, 0);
    while Instant::now() < end && (up == 0 || down == 0) {
        tx.send(G2, 100).unwrap();
        up += count(&upstream, src, G2, Duration::from_millis(25));
        down += count(&r2, src, G2, Duration::from_millis(25));
    }
    if up == 0 || down == 0 {
        t.fail(&format!(
            "upstream got {up}, the subscribed downstream got {down}"
        ));
    }
    if count(&r3, src, G2, QUIET_WINDOW) != 0 {
        t.fail("a downstream whose host did not join got the stream");
    }
}

/// A daemon that dies leaves its maps and XDP links pinned: forwarding goes on without it. The
/// next one adopts them: it swaps its program into the links, the entries keep their
/// counters, and once IGMP has heard the receivers again the core takes the entries over (a
/// leave then stops the stream).
#[test]
fn a_crash_keeps_forwarding_and_a_restart_adopts_the_pinned_state() {
    restart_keeps_forwarding(&[], |d| {
        d.crash();
    });
}

/// The same for a planned restart: stopped with SIGTERM under `--keep-forwarding`, the daemon
/// exits cleanly and leaves XDP forwarding for the next one.
#[test]
fn a_stop_with_keep_forwarding_hands_over_to_the_next_daemon() {
    restart_keeps_forwarding(&["--keep-forwarding"], |d| {
        let (status, log) = d.stop_leaving_pins().expect("stops");
        assert!(
            status.success(),
            "mgm exit status {status}:\n{}",
            log.join("\n")
        );
        assert!(
            log.iter().any(|l| l.contains("keeps forwarding")),
            "{log:?}"
        );
    });
}

fn restart_keeps_forwarding(extra: &[&str], stop: impl FnOnce(Daemon)) {
    let tag = unique_tag("t");
    let lab = Lab::up(&tag, &[IgmpVersion::V2]).expect("lab up");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let mut args = FAST_IGMP.to_vec();
    args.extend_from_slice(extra);
    let first = Daemon::start(&mgm_bin(), &lab, &pin_dir, &args, false).expect("mgm starts");
    let t = Setup { daemon: first, lab };
    let r1 = t.receiver(0);
    r1.join(G1).unwrap();
    let pkts = |d: &Daemon| -> u64 {
        d.show()
            .ok()
            .and_then(|s| {
                s["entries"].as_array()?.iter().find_map(|e| {
                    (e["source"] == SENDER_ADDR.to_string().as_str()
                        && e["group"] == G1.to_string().as_str())
                    .then(|| e["stats"]["pkts"].as_u64())
                    .flatten()
                })
            })
            .unwrap_or(0)
    };
    t.streaming(&[SENDER_ADDR], &[G1], || {
        if !arrives(&r1, None, G1, JOIN_TIMEOUT) {
            t.fail("no stream before the crash");
        }
    });
    let before = pkts(&t.daemon);
    assert!(before > 0, "the entry forwarded before the crash");
    let Setup { daemon, lab } = t;
    stop(daemon);
    assert!(
        pin_dir.join(mgm_common::maps::FWD).exists(),
        "the stop leaves the pins"
    );
    // The pinned links keep XDP attached: forwarding goes on with no daemon running.
    let mut orphan = Sender::new(&lab.sender, SENDER_ADDR, 8).unwrap();
    r1.drain().unwrap();
    let end = Instant::now() + Duration::from_secs(2);
    let mut during = 0;
    while Instant::now() < end && during == 0 {
        orphan.send(G1, 100).unwrap();
        during += count(&r1, None, G1, Duration::from_millis(20));
    }
    assert!(during > 0, "forwarding stopped when the daemon died");
    let mut second = Daemon::start(&mgm_bin(), &lab, &pin_dir, &args, false).expect("restart");
    second
        .wait_for("adopted 1 forwarding entries", Duration::from_secs(5))
        .expect("the pinned entry is adopted");
    assert!(
        second
            .log()
            .iter()
            .any(|l| l.contains("took over the pinned link")),
        "the new daemon swaps its program into the pinned links"
    );
    let t = Setup {
        daemon: second,
        lab,
    };
    assert!(
        pkts(&t.daemon) >= before,
        "the adopted entry kept its counters"
    );
    t.streaming(&[SENDER_ADDR], &[G1], || {
        if !arrives(&r1, None, G1, JOIN_TIMEOUT) {
            t.fail("no stream after the restart");
        }
    });
    let mut t = t;
    t.daemon
        .wait_for("reconciling", Duration::from_secs(10))
        .expect("the core reconciles");
    t.streaming(&[SENDER_ADDR], &[G1], || {
        std::thread::sleep(Duration::from_millis(300));
        r1.drain().unwrap();
        if count(&r1, None, G1, QUIET_WINDOW) == 0 {
            t.fail("reconciliation flushed a stream that was still wanted");
        }
        t.leave_stops(
            &r1,
            G1,
            "after reconciliation a leave did not stop the stream",
        );
    });
}

/// Restarts that name the interfaces in another order, then one fewer: each interface keeps
/// its own counters through both.
#[test]
fn restarts_with_other_interfaces_keep_each_ones_counters() {
    let tag = unique_tag("t");
    let lab = Lab::up(&tag, &[IgmpVersion::V2, IgmpVersion::V2]).expect("lab up");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let first = Daemon::start(&mgm_bin(), &lab, &pin_dir, &FAST_IGMP, false).expect("mgm starts");
    let t = Setup { daemon: first, lab };
    let r1 = t.receiver(0);
    r1.join(G1).unwrap();
    t.streaming(&[SENDER_ADDR], &[G1], || {
        if !arrives(&r1, None, G1, JOIN_TIMEOUT) {
            t.fail("no stream before the restarts");
        }
    });
    let sent_dn1 = downstream_view(&t, 0).1;
    assert!(sent_dn1 > 0, "dn1 sent the stream");
    assert_eq!(downstream_view(&t, 1).1, 0, "dn2 sent nothing");
    let (dn1, dn2) = (downstream(0), downstream(1));
    let restart = |t: Setup, downstreams: &[&str]| -> Setup {
        let Setup { daemon, lab } = t;
        daemon.crash();
        let mut roles = vec!["--upstream", UPSTREAM, "--downstream"];
        roles.extend_from_slice(downstreams);
        let daemon = Daemon::start_as(&mgm_bin(), &lab, &pin_dir, &roles, &FAST_IGMP, false)
            .expect("restart");
        Setup { daemon, lab }
    };
    let t = restart(t, &[&dn2, &dn1]);
    if downstream_view(&t, 0).1 < sent_dn1 || downstream_view(&t, 1).1 != 0 {
        t.fail("reordered: the counters moved to another interface");
    }
    let t = restart(t, &[&dn1]);
    if downstream_view(&t, 0).1 < sent_dn1 {
        t.fail("without dn2: dn1 lost its counters");
    }
}

/// Static routes (smcroute style) forward whatever IGMP says: a receiver that never joined
/// gets the routed group, another downstream does not, and IGMP keeps working on the
/// interface the static route goes out of (its joins and leaves pass through the module).
#[test]
fn static_routes_forward_without_igmp_and_igmp_still_works_beside_them() {
    let route = format!("from up0 source {SENDER_ADDR} group {G2} to dn2");
    let args = [
        "--xdp-mode",
        "native",
        "--igmp-last-member-interval-ms",
        "100",
        "--static-route",
        &route,
    ];
    let t = setup_with(&[IgmpVersion::V2, IgmpVersion::V2], &args, |_| {});
    let (r1, r2) = (t.receiver(0), t.receiver(1));
    // r2's host never joins G2, so its sockets would not take it: a raw capture sees what
    // the static route sends out of dn2.
    let cap = Capture::new(&t.lab.receivers[1], HOST_IF).unwrap();
    t.streaming(&[SENDER_ADDR], &[G1, G2], || {
        let end = Instant::now() + JOIN_TIMEOUT;
        let mut got = 0;
        while Instant::now() < end && got == 0 {
            got = cap
                .frames(Duration::from_millis(100))
                .iter()
                .filter(|f| f[30..34] == G2.octets())
                .count();
        }
        if got == 0 {
            t.fail("the static route did not forward to dn2");
        }
        if count(&r1, None, G2, QUIET_WINDOW) != 0 {
            t.fail("dn1 got the statically routed group");
        }
        // IGMP on dn2, beside the static route.
        r2.join(G1).unwrap();
        if !arrives(&r2, None, G1, JOIN_TIMEOUT) {
            t.fail("a host join on the static route's interface was not forwarded");
        }
        t.leave_stops(
            &r2,
            G1,
            "a host leave on the static route's interface did not stop its group",
        );
    });
}

/// The example module (`mgm-user/examples/module.py`) as a child process; every line it
/// prints is kept. Killed on drop.
struct Module {
    child: std::process::Child,
    out: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Module {
    fn start(socket: &std::path::Path, args: &[&str]) -> Module {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../mgm-user/examples/module.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .arg("--socket")
            .arg(socket)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs the example module");
        let out = keep_output(&mut child, None);
        Module { child, out }
    }

    fn lines(&self) -> Vec<String> {
        self.out.lock().unwrap().clone()
    }

    /// The JSON messages it received ("<") or sent (">").
    fn messages(&self, direction: &str) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .filter_map(|l| l.strip_prefix(direction))
            .filter_map(|l| serde_json::from_str(l.trim()).ok())
            .collect()
    }

    /// Waits until `done` holds for its output.
    fn wait(&self, t: &Setup, what: &str, done: impl Fn(&Module) -> bool) {
        let end = Instant::now() + JOIN_TIMEOUT;
        while !done(self) {
            if Instant::now() > end {
                t.fail(&format!(
                    "{what}; module output:\n{}",
                    self.lines().join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn callbacks(&self, kind: &str) -> Vec<serde_json::Value> {
        self.messages("<")
            .into_iter()
            .filter(|m| m["callback"] == kind)
            .collect()
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request over the module socket, on a connection of its own; returns the response.
fn ask(socket: &std::path::Path, request: serde_json::Value) -> serde_json::Value {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("module socket");
    writeln!(s, "{request}").unwrap();
    let mut lines = std::io::BufReader::new(s).lines();
    let hello: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(hello["hello"], "mgm");
    serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap()
}

#[test]
fn an_out_of_process_module_owns_interfaces_answers_callbacks_and_releases_on_exit() {
    let tag = unique_tag("t");
    let lab = Lab::up(&tag, &[IgmpVersion::V3, IgmpVersion::V3]).expect("lab up");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let roles = ["--external", UPSTREAM, "--downstream", "dn1", "dn2"];
    let mut args = FAST_IGMP.to_vec();
    args.extend(["--module-answer-ms", "300"]);
    let daemon =
        Daemon::start_as(&mgm_bin(), &lab, &pin_dir, &roles, &args, false).expect("mgm starts");
    let t = Setup { daemon, lab };
    let socket = t.daemon.socket();
    let (r1, r2) = (t.receiver(0), t.receiver(1));

    // The module owns up0 and co-owns dn2 with IGMP, where it refuses new entries.
    let module = Module::start(
        &socket,
        &["--take", "up0", "--take", "dn2", "--block", "dn2"],
    );
    module.wait(&t, "the module did not get ready", |m| {
        m.lines().iter().any(|l| l == "ready")
    });
    let owner = ask(
        &socket,
        serde_json::json!({"id": 1, "op": "get_protocol_on_interface", "interface": "up0"}),
    );
    assert_eq!(owner["result"]["protocol_id"], 0x4d47_0100, "{owner}");

    // dn2's host join reaches the module as a local join, which it passes on.
    r1.join(G1).unwrap();
    r2.join(G1).unwrap();
    module.wait(&t, "no local join for dn2 reached the module", |m| {
        m.callbacks("local_join")
            .iter()
            .any(|c| c["interface"] == "dn2" && c["group"] == G1.to_string())
    });
    module.wait(&t, "the module's membership on dn2 was not accepted", |m| {
        let ok = |id: &serde_json::Value| {
            m.messages("<")
                .iter()
                .any(|r| r["id"] == *id && r["ok"] == true)
        };
        m.messages(">")
            .iter()
            .any(|r| r["op"] == "add_membership" && ok(&r["id"]))
    });

    t.streaming(&[SENDER_ADDR], &[G1], || {
        if !arrives(&r1, None, G1, JOIN_TIMEOUT) {
            t.fail("dn1's receiver got nothing while the module owned the upstream");
        }
        if count(&r2, None, G1, QUIET_WINDOW) != 0 {
            t.fail("dn2's receiver got the stream the module refused in its creation alert");
        }
        let rpf = module.callbacks("rpf");
        assert!(
            rpf.iter()
                .any(|c| c["iif"] == "up0" && c["source"] == SENDER_ADDR.to_string()),
            "{rpf:?}"
        );
        let alerts = module.callbacks("creation_alert");
        assert!(
            alerts.iter().any(|c| c["oifs"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o["interface"] == "dn2"))),
            "{alerts:?}"
        );
        let mfes = ask(&socket, serde_json::json!({"op": "mfes"}));
        let mfe = &mfes["result"]["mfes"][0];
        assert_eq!(
            (&mfe["iif"], &mfe["oifs"]),
            (&"up0".into(), &serde_json::json!(["dn1"])),
            "{mfes}"
        );

        // Gone: its interfaces are released (spec §3.2): IGMP alone owns dn2 again, the MFE
        // through up0 is deleted, and with nobody on up0 the next packet makes a negative
        // entry (spec §5.2 step 2), so the stream stops.
        drop(module);
        let end = Instant::now() + JOIN_TIMEOUT;
        while !t
            .daemon
            .log()
            .iter()
            .any(|l| l.contains("deregistered, released [up0, dn2]"))
        {
            if Instant::now() > end {
                t.fail("mgm did not release the module's interfaces when it went away");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let owner = ask(
            &socket,
            serde_json::json!({"op": "get_protocol_on_interface", "interface": "up0"}),
        );
        assert_eq!(owner["error"]["code"], "NotFound", "{owner}");
        let owner = ask(
            &socket,
            serde_json::json!({"op": "get_protocol_on_interface", "interface": "dn2"}),
        );
        assert_eq!(owner["result"]["protocol_id"], 10, "{owner}");
        std::thread::sleep(Duration::from_millis(300));
        r1.drain().unwrap();
        if count(&r1, None, G1, QUIET_WINDOW) != 0 {
            t.fail("the stream went on with nobody owning its incoming interface");
        }
        let mfes = ask(&socket, serde_json::json!({"op": "mfes"}));
        assert_eq!(
            mfes["result"]["mfes"][0]["oifs"],
            serde_json::json!([]),
            "{mfes}"
        );
    });

    // A module that never answers: after the deadline MGM's proposal stands and G2 flows, to
    // dn2 as well now that the refusing module is gone.
    let silent = Module::start(&socket, &["--take", "up0", "--silent"]);
    silent.wait(&t, "the silent module did not get ready", |m| {
        m.lines().iter().any(|l| l == "ready")
    });
    r1.join(G2).unwrap();
    r2.join(G2).unwrap();
    t.streaming(&[SENDER_ADDR], &[G2], || {
        if !arrives(&r1, None, G2, JOIN_TIMEOUT) || !arrives(&r2, None, G2, JOIN_TIMEOUT) {
            t.fail("nothing flowed after the module missed its RPF deadline");
        }
    });
    assert!(!silent.callbacks("rpf").is_empty(), "{:?}", silent.lines());
    assert!(t
        .daemon
        .log()
        .iter()
        .any(|l| l.contains("no answer to callback")));
}

/// The group whose RPF answer the slow module sends late, and what it answers.
const SLOW_G: Ipv4Addr = Ipv4Addr::new(239, 3, 3, 3);
const SLOW: Duration = Duration::from_millis(2500);
const SLOW_UPSTREAM: &str = "198.18.0.77";

/// Issue 19: a module slow to answer one flow's RPF callback (within its deadline) delays
/// that flow alone. Meanwhile a host joining another group on another downstream gets its
/// stream within a second, and a receiver already streaming loses nothing; the slow flow is
/// forwarded once the answer comes, as the answer says.
#[test]
fn a_module_slow_to_answer_one_flow_delays_no_other() {
    let tag = unique_tag("t");
    let lab = Lab::up(&tag, &[IgmpVersion::V3; 3]).expect("lab up");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let roles = ["--external", UPSTREAM, "--downstream", "dn1", "dn2", "dn3"];
    let mut args = FAST_IGMP.to_vec();
    // Long enough that a loop waiting for the answer would stall for all of SLOW.
    args.extend(["--module-answer-ms", "5000"]);
    let daemon =
        Daemon::start_as(&mgm_bin(), &lab, &pin_dir, &roles, &args, false).expect("mgm starts");
    let mut t = Setup { daemon, lab };
    let socket = t.daemon.socket();
    let (r1, r2, r3) = (t.receiver(0), t.receiver(1), t.receiver(2));

    // The module owns up0: every flow's RPF callback goes to it.
    let slow = format!("{SLOW_G}:{}:{SLOW_UPSTREAM}", SLOW.as_millis());
    let module = Module::start(&socket, &["--take", "up0", "--slow", &slow]);
    module.wait(&t, "the module did not get ready", |m| {
        m.lines().iter().any(|l| l == "ready")
    });

    // r3 streams G1 from before the slow callback to after it, every datagram counted.
    r3.grow_buffer(1 << 22).expect("r3 buffer");
    r3.join(G1).unwrap();
    let tx = Sender::new(&t.lab.sender, SENDER_ADDR, 8).expect("sender socket");
    let g1 = Stream::start(tx, r3, G1, Duration::from_millis(5));
    if !g1.wait_received(10, JOIN_TIMEOUT) {
        t.fail("r3's stream never arrived");
    }
    r1.join(SLOW_G).unwrap();
    if let Err(e) = t
        .daemon
        .wait_for(&format!("dn1 joins (*, {SLOW_G})"), JOIN_TIMEOUT)
    {
        t.fail(&format!("r1's join did not reach mgm: {e:#}"));
    }

    t.streaming(&[SENDER_ADDR], &[SLOW_G, G2], || {
        module.wait(&t, "no RPF callback for the slow flow", |m| {
            m.callbacks("rpf")
                .iter()
                .any(|c| c["group"] == SLOW_G.to_string())
        });
        // The module got the callback by now, so its answer leaves by `asked + SLOW`.
        let asked = Instant::now();
        std::thread::scope(|s| {
            let slow_first = s.spawn(|| r1.first_arrival(SLOW_G, SLOW + JOIN_TIMEOUT));
            r2.join(G2).unwrap();
            let joined = Instant::now();
            let first = r2.first_arrival(G2, JOIN_TIMEOUT);
            let delay = first.map(|at| at - joined);
            if delay.is_none_or(|d| d > Duration::from_secs(1)) {
                t.fail(&format!(
                    "r2 joined while the module sat on an answer and got its stream after \
                     {delay:?}, not within 1 s"
                ));
            }
            let slow_first = slow_first.join().unwrap();
            match slow_first {
                // 200 ms for the module's own callback-to-print time and this thread's poll.
                Some(at) if at + Duration::from_millis(200) >= asked + SLOW => {}
                other => t.fail(&format!(
                    "the slow flow arrived at {:?} after its callback, not once the module \
                     answered {SLOW:?} after it",
                    other.map(|at| at.saturating_duration_since(asked))
                )),
            }
        });
        let mfes = ask(&socket, serde_json::json!({"op": "mfes"}));
        let mfe = mfes["result"]["mfes"]
            .as_array()
            .and_then(|a| a.iter().find(|m| m["group"] == SLOW_G.to_string()))
            .unwrap_or_else(|| t.fail(&format!("no entry for the slow flow: {mfes}")));
        assert_eq!(
            (&mfe["upstream"], &mfe["oifs"]),
            (&SLOW_UPSTREAM.into(), &serde_json::json!(["dn1"])),
            "{mfes}"
        );
    });
    match g1.finish() {
        Some(tally) if tally.lost == 0 => {}
        tally => t.fail(&format!(
            "r3 lost datagrams while the module was slow: {tally:?}"
        )),
    }
}

/// Which receiver wants which group in the counter test: two downstreams of G1's MFE (a
/// devmap broadcast: one copy prepared by the ingress program, the other through
/// `mgm_egress`), one of G2's (a plain redirect, no devmap).
const COUNTED: [(&str, Ipv4Addr); 3] = [("dn1", G1), ("dn2", G1), ("dn3", G2)];

/// The per-outgoing-interface figures of the MFE of `group` from the sender, by interface, and
/// its total out, as `mgm show --json` (the pinned maps) gives them.
fn shown_oif_packets(
    show: &serde_json::Value,
    group: Ipv4Addr,
) -> Option<(Vec<(String, u64)>, u64)> {
    let entry = show["entries"]
        .as_array()?
        .iter()
        .find(|e| e["group"] == group.to_string() && e["source"] == SENDER_ADDR.to_string())?;
    let oifs = entry["oif_stats"]
        .as_array()?
        .iter()
        .map(|o| Some((o["interface"].as_str()?.to_owned(), o["packets"].as_u64()?)))
        .collect::<Option<Vec<_>>>()?;
    Some((oifs, entry["stats"]["total_out_packets"].as_u64()?))
}

/// The same from the module protocol's `mfe_stats` (the core's copy of the counters).
fn mfe_stats_oif_packets(
    answer: &serde_json::Value,
    group: Ipv4Addr,
) -> Option<(Vec<(String, u64)>, u64)> {
    let mfe = answer["result"]["mfe_stats"]
        .as_array()?
        .iter()
        .find(|m| m["group"] == group.to_string() && m["source"] == SENDER_ADDR.to_string())?;
    let oifs = mfe["oifs"]
        .as_array()?
        .iter()
        .map(|o| {
            Some((
                o["interface"].as_str()?.to_owned(),
                o["out_packets"].as_u64()?,
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    Some((oifs, mfe["total_out_packets"].as_u64()?))
}

/// The counters of spec §6.3 per outgoing interface per MFE, from the data plane, agree
/// exactly with what each receiver counted, every way mgm reports them: the pinned maps
/// (`mgm show --json`), the metrics scrape, and the module protocol's `mfe_stats`; and
/// `ulTotalOutPackets` is their sum. Every datagram each receiver got counts, from its first.
fn per_interface_counters_agree_with_receivers(mode: &str) {
    const N: usize = 40;
    const ADDR: &str = "127.0.0.1:9464";
    let args = [
        "--xdp-mode",
        mode,
        "--igmp-last-member-interval-ms",
        "100",
        "--metrics",
        ADDR,
    ];
    let t = setup_with(&[IgmpVersion::V2; 3], &args, |_| {});
    let rx: Vec<Receiver> = (0..COUNTED.len()).map(|i| t.receiver(i)).collect();
    for (r, (_, group)) in rx.iter().zip(COUNTED) {
        r.join(group).unwrap();
    }
    let mut got = [0u64; COUNTED.len()];
    let tally = |got: &mut [u64; COUNTED.len()], window: Duration| {
        for (i, (r, (_, group))) in rx.iter().zip(COUNTED).enumerate() {
            got[i] += count(r, Some(SENDER_ADDR), group, window) as u64;
        }
    };
    // Stream until every receiver gets its group: both MFEs exist and reach all three.
    t.streaming(&[SENDER_ADDR], &[G1, G2], || {
        let end = Instant::now() + JOIN_TIMEOUT;
        while got.contains(&0) && Instant::now() < end {
            tally(&mut got, Duration::from_millis(50));
        }
    });
    if got.contains(&0) {
        t.fail(&format!("a receiver got nothing: {got:?}"));
    }
    let mut tx = Sender::new(&t.lab.sender, SENDER_ADDR, 8).unwrap();
    for _ in 0..N {
        tx.send(G1, 100).unwrap();
        tx.send(G2, 100).unwrap();
    }
    // Everything sent has arrived or is lost once a window passes with nothing new.
    loop {
        let before = got;
        tally(&mut got, QUIET_WINDOW);
        if got == before {
            break;
        }
    }
    let expected = |group: Ipv4Addr| -> (Vec<(String, u64)>, u64) {
        let oifs: Vec<(String, u64)> = COUNTED
            .iter()
            .zip(got)
            .filter(|((_, g), _)| *g == group)
            .map(|((name, _), n)| ((*name).to_owned(), n))
            .collect();
        let total = oifs.iter().map(|(_, n)| n).sum();
        (oifs, total)
    };

    let show = t
        .daemon
        .show()
        .unwrap_or_else(|e| t.fail(&format!("{e:#}")));
    for group in [G1, G2] {
        if shown_oif_packets(&show, group) != Some(expected(group)) {
            t.fail(&format!(
                "mgm show for {group}: receivers got {got:?}, shown {:?}",
                shown_oif_packets(&show, group)
            ));
        }
    }

    let scraped = scrape(&t, ADDR);
    for ((oif, group), n) in COUNTED.iter().zip(got) {
        let series = format!(
            "mgm_entry_outgoing_packets_total{{source=\"{SENDER_ADDR}\",group=\"{group}\",iif=\"{UPSTREAM}\",oif=\"{oif}\"}}"
        );
        if sample(&scraped, &series) != Some(n) {
            t.fail(&format!("{series}: receiver got {n}:\n{scraped}"));
        }
    }

    // The core refreshes its copy every 5 s.
    let socket = t.daemon.socket();
    let ask_stats = || ask(&socket, serde_json::json!({"op": "mfe_stats"}));
    let agrees = |answer: &serde_json::Value| {
        [G1, G2]
            .iter()
            .all(|g| mfe_stats_oif_packets(answer, *g) == Some(expected(*g)))
    };
    if !xtask::lab::stream::wait_until(Duration::from_secs(12), || agrees(&ask_stats())) {
        t.fail(&format!(
            "mfe_stats never agreed with the receivers' {got:?}:\n{:#}",
            ask_stats()
        ));
    }
}

#[test]
fn per_interface_counters_of_each_mfe_agree_with_what_each_receiver_got() {
    per_interface_counters_agree_with_receivers("native");
}

/// Generic XDP keeps no metadata across the redirect: `mgm_egress` finds the entry itself.
#[test]
fn per_interface_counters_of_each_mfe_agree_with_what_each_receiver_got_skb() {
    per_interface_counters_agree_with_receivers("skb");
}
