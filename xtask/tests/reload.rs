//! Reload under the real `mgm` binary: the configuration file changes under a running stream
//! and SIGHUP applies it. A downstream is added (the kernel IGMP host behind it then gets the
//! stream), one downstream's IGMP settings change (its queries carry the new query interval),
//! and a setting that needs a restart is named in the log; a second reload back to the first
//! file removes the downstream again (released, XDP detached). The receiver of the untouched
//! stream counts every datagram across both reloads and misses none. The log speaks in
//! operator words: joins as `dn1 joins (*, G)`, never a Rust debug structure. Static routes
//! follow the file on reload too, and one added at run time goes. Needs root; run through
//! `cargo xtask test`.

mod events;

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use events::{gaps, mgm_bin, Counter, Stream, FAST_IGMP, PATIENCE};
use xtask::lab::{
    receiver_addr,
    stream::wait_until,
    traffic::{Capture, Receiver},
    unique_tag, Daemon, IgmpVersion, Lab, HOST_IF, SENDER_ADDR,
};

const G: Ipv4Addr = Ipv4Addr::new(239, 5, 5, 1);

/// The configuration before the reload: an IGMP proxy for dn1 only (the short IGMP timers
/// come from the tests' flags).
const BEFORE: &str = "\
[interfaces]
upstream = \"up0\"
downstream = [\"dn1\"]
";

/// After: dn2 is a downstream too, dn1 queries every 3 s (its own table overrides the flag's
/// default), and the MFE lifetime (which needs a restart) changed.
const AFTER: &str = "\
[interfaces]
upstream = \"up0\"
downstream = [\"dn1\", \"dn2\"]

[igmp.interface.dn1]
query-interval = 3

[rpf]
mfe-lifetime = 600
";

/// A configuration file of the test's own, removed when dropped.
struct ConfigFile(PathBuf);

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Starts mgm in `lab` with only a configuration file, `text` (and the tests' short IGMP
/// timers).
fn start(tag: &str, lab: &Lab, text: &str) -> (ConfigFile, Daemon) {
    let config = ConfigFile(std::env::temp_dir().join(format!("mgm-{tag}.toml")));
    std::fs::write(&config.0, text).unwrap();
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let config_arg = config.0.display().to_string();
    let mut extra = vec!["--config", &config_arg];
    extra.extend(FAST_IGMP);
    let daemon = Daemon::start_as(&mgm_bin(), lab, &pin_dir, &[], &extra, false).expect("mgm");
    (config, daemon)
}

/// The QQIC of an IGMPv3 query in an Ethernet frame.
fn qqic(frame: &[u8]) -> Option<u8> {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let igmp = frame.get(14 + ihl..)?;
    (frame[23] == 2 && igmp.len() >= 12 && igmp[0] == 0x11).then(|| igmp[9])
}

/// Waits until a general query with QQIC `want` arrives on `capture`; false after `timeout`.
fn query_with_qqic(capture: &Capture, want: u8, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        let got = capture.frames_where(Duration::from_millis(200), |f| qqic(f) == Some(want));
        if !got.is_empty() {
            return true;
        }
    }
    false
}

#[test]
fn sighup_applies_a_changed_file_and_the_untouched_stream_loses_nothing() {
    let tag = unique_tag("t");
    let lab = Lab::up(&tag, &[IgmpVersion::V3, IgmpVersion::V3]).expect("lab up");
    let (config, mut daemon) = start(&tag, &lab, BEFORE);
    let config = &config.0;
    let fail = |daemon: &Daemon, what: &str| -> ! {
        panic!("{what}\nmgm log:\n{}", daemon.log().join("\n"))
    };

    // The host on dn1 gets the stream; the host on dn2 wants it too, but dn2 is not managed.
    let receiver = |i: usize| Receiver::new(&lab.receivers[i], receiver_addr(i)).unwrap();
    let (r1, r2) = (receiver(0), receiver(1));
    r1.join(G).unwrap();
    r2.join(G).unwrap();
    let capture = Capture::new(&lab.receivers[0], HOST_IF).unwrap();
    let stream = Stream::start(&lab, G);
    let mut stays = Counter::start(r1, G);
    if !stays.more(20, PATIENCE) {
        fail(&daemon, "the host on dn1 never got the stream");
    }
    let from = stays.first().expect("counted");
    if !query_with_qqic(&capture, 2, PATIENCE) {
        fail(
            &daemon,
            "no query with the first query interval (2 s) on dn1",
        );
    }
    let mut added = Counter::start(r2, G);

    std::fs::write(config, AFTER).unwrap();
    daemon.hang_up();
    if let Err(e) = daemon.wait_for("reload: downstream added: dn2", PATIENCE) {
        panic!("{e:#}");
    }
    // dn2 is managed and queried now: its host answers, and gets the stream.
    if !added.more(20, PATIENCE) {
        fail(
            &daemon,
            "the host on dn2, added by the reload, never got the stream",
        );
    }
    // dn1's querier runs with its own query interval now.
    if !query_with_qqic(&capture, 3, PATIENCE) {
        fail(
            &daemon,
            "dn1 never queried with its new query interval (3 s)",
        );
    }
    let log = daemon.log();
    assert!(
        log.iter()
            .any(|l| l.contains("needs restart: mfe-lifetime stays 900")),
        "the MFE lifetime change is not reported as needing a restart:\n{}",
        log.join("\n")
    );

    // Back to the first file: dn2 is released and its XDP program detached, dn1 queries at
    // the flags' interval again.
    // This time through the control socket: `mgm reload` answers with what changed.
    std::fs::write(config, BEFORE).unwrap();
    let (ok, out, err) = daemon.control(&["reload"]).expect("mgm runs");
    assert!(
        ok && out.contains("dn2"),
        "mgm reload: {out} {err}\n{}",
        daemon.log().join("\n")
    );
    if let Err(e) = daemon.wait_for("reload: downstream removed: dn2", PATIENCE) {
        panic!("{e:#}");
    }
    let attached = || {
        lab.router
            .ip_output(&["link", "show", "dn2"])
            .unwrap()
            .contains("xdp")
    };
    if !wait_until(PATIENCE, || !attached()) {
        fail(
            &daemon,
            "dn2 kept its XDP program after the reload removed it",
        );
    }
    if !query_with_qqic(&capture, 2, PATIENCE) {
        fail(
            &daemon,
            "dn1 never went back to the flags' query interval (2 s)",
        );
    }

    let last = stream.stop();
    let (missing, got) = stays.missing(from, last, PATIENCE);
    if !missing.is_empty() {
        fail(
            &daemon,
            &format!(
                "the host on dn1 lost datagrams across the reload: got {got} of {}, missing {}",
                last - from + 1,
                gaps(&missing)
            ),
        );
    }
    let (_, log) = daemon.stop().expect("mgm stops");
    // Operator words at info: the join as a phrase, no Rust debug structure anywhere.
    let join = format!("dn1 joins (*, {G})");
    assert!(
        log.iter()
            .any(|l| l.contains(" INFO ") && l.contains(&join)),
        "no info line says {join:?}:\n{}",
        log.join("\n")
    );
    let braces: Vec<&String> = log.iter().filter(|l| l.contains('{')).collect();
    assert!(
        braces.is_empty(),
        "debug structures in the log: {braces:#?}"
    );
}

/// Static routes follow the file on reload, and a run-time one does not outlive it: the file
/// routes GA to dn1, `mgm route add` routes GB to dn2, and the reload's file keeps GA and adds
/// GC to dn2. GA's datagrams all arrive across the reload, GC starts, GB stops. No host joins:
/// captures on the hosts' links count what the router sends.
#[test]
fn reload_makes_the_static_routes_what_the_file_says() {
    const GA: Ipv4Addr = Ipv4Addr::new(239, 5, 6, 1);
    const GB: Ipv4Addr = Ipv4Addr::new(239, 5, 6, 2);
    const GC: Ipv4Addr = Ipv4Addr::new(239, 5, 6, 3);
    let route =
        |g: Ipv4Addr, oif: &str| format!("from up0 source {SENDER_ADDR} group {g} to {oif}");
    let file = |routes: &[String]| {
        let quoted: Vec<String> = routes.iter().map(|r| format!("\"{r}\"")).collect();
        format!(
            "[interfaces]\nupstream = \"up0\"\ndownstream = [\"dn1\", \"dn2\"]\n\n[routes]\nstatic = [{}]\n",
            quoted.join(", ")
        )
    };
    let (a, b, c) = (route(GA, "dn1"), route(GB, "dn2"), route(GC, "dn2"));
    let tag = unique_tag("t");
    let lab = Lab::up(&tag, &[IgmpVersion::V3, IgmpVersion::V3]).expect("lab up");
    let (config, daemon) = start(&tag, &lab, &file(std::slice::from_ref(&a)));
    let fail = |what: &str| -> ! { panic!("{what}\nmgm log:\n{}", daemon.log().join("\n")) };
    let on = |i: usize, g: Ipv4Addr| {
        Counter::on_link(
            Capture::new(&lab.receivers[i], HOST_IF).expect("capture"),
            g,
        )
    };
    let (mut kept, mut run_time, mut added) = (on(0, GA), on(1, GB), on(1, GC));
    let streams = [GA, GB, GC].map(|g| Stream::start(&lab, g));
    if !kept.more(20, PATIENCE) {
        fail("the file's route never forwarded GA to dn1");
    }
    let from = kept.first().expect("counted");

    let (ok, out, err) = daemon.control(&["route", "add", &b]).expect("mgm runs");
    assert!(ok, "mgm route add: {out} {err}");
    if !run_time.more(20, PATIENCE) {
        fail("the run-time route never forwarded GB to dn2");
    }
    if added.count() > 0 {
        fail("GC reached dn2 before any route said so");
    }

    std::fs::write(&config.0, file(&[a.clone(), c.clone()])).unwrap();
    let (ok, out, err) = daemon.control(&["reload"]).expect("mgm runs");
    assert!(
        ok && out.contains(&format!("static route added: \"{c}\""))
            && out.contains(&format!("static route removed: \"{b}\"")),
        "mgm reload: {out} {err}\n{}",
        daemon.log().join("\n")
    );
    if !added.more(20, PATIENCE) {
        fail("the route the reload added never forwarded GC to dn2");
    }
    if !run_time.stops(Duration::from_millis(500), PATIENCE) {
        fail("the run-time route still forwards GB after a reload whose file lacks it");
    }

    let [ga, _, _] = streams.map(Stream::stop);
    let (missing, got) = kept.missing(from, ga, PATIENCE);
    if !missing.is_empty() {
        fail(&format!(
            "dn1 lost GA datagrams across the reload: got {got} of {}, missing {}",
            ga - from + 1,
            gaps(&missing)
        ));
    }
}
