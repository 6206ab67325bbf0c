//! Reload under the real `mgm` binary: the configuration file changes under a running stream
//! and SIGHUP applies it. A downstream is added (the kernel IGMP host behind it then gets the
//! stream), one downstream's IGMP settings change (its queries carry the new query interval),
//! and a setting that needs a restart is named in the log; a second reload back to the first
//! file removes the downstream again (released, XDP detached). The receiver of the untouched
//! stream counts every datagram across both reloads and misses none. The log speaks in
//! operator words: joins as `dn1 joins (*, G)`, never a Rust debug structure. Needs root; run
//! through `cargo xtask test`.

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
    unique_tag, Daemon, IgmpVersion, Lab, HOST_IF,
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
    let config = std::env::temp_dir().join(format!("mgm-{tag}.toml"));
    struct Gone(PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _gone = Gone(config.clone());
    std::fs::write(&config, BEFORE).unwrap();
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let config_arg = config.display().to_string();
    let mut extra = vec!["--config", &config_arg];
    extra.extend(FAST_IGMP);
    let mut daemon = Daemon::start_as(&mgm_bin(), &lab, &pin_dir, &[], &extra, false).expect("mgm");
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

    std::fs::write(&config, AFTER).unwrap();
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
    std::fs::write(&config, BEFORE).unwrap();
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
