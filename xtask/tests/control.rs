//! The control socket on the real binary: `mgm show` asks the running daemon (and reads the
//! pins when it is gone), `mgm route` and `mgm join`/`leave` change what is forwarded, and bad
//! calls get clear errors. Receivers are kernel IGMP hosts; what leaves the router is counted
//! on the receivers' links.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use xtask::lab::{
    daemon::remove_stale_sockets,
    mgm_bin, receiver_addr,
    stream::wait_until,
    traffic::{Capture, Receiver, Sender},
    unique_tag, Daemon, IgmpVersion, Lab, FAST_IGMP, HOST_IF, SENDER_ADDR,
};

const G1: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);
const G2: Ipv4Addr = Ipv4Addr::new(239, 2, 2, 2);
const TIMEOUT: Duration = Duration::from_secs(5);

/// A lab and its daemon; both go away on drop, the daemon first.
struct Setup {
    daemon: Option<Daemon>,
    lab: Lab,
    pin_dir: PathBuf,
}

impl Setup {
    fn up(tag: &str) -> Setup {
        let tag = unique_tag(tag);
        let lab = Lab::up(&tag, &[IgmpVersion::V2, IgmpVersion::V3]).expect("lab up");
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
        let daemon =
            Daemon::start(&mgm_bin(), &lab, &pin_dir, &FAST_IGMP, false).expect("mgm starts");
        Setup {
            daemon: Some(daemon),
            lab,
            pin_dir,
        }
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("daemon running")
    }

    /// `mgm ARGS` against the daemon; panics with its output unless it succeeds.
    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.daemon().control(args).expect("mgm runs");
        assert!(ok, "mgm {args:?} failed: {err}\n{}", self.log());
        out
    }

    /// `mgm ARGS` against the daemon; its error, which it must fail with.
    fn error(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.daemon().control(args).expect("mgm runs");
        assert!(!ok, "mgm {args:?} succeeded: {out}");
        err
    }

    fn log(&self) -> String {
        self.daemon
            .as_ref()
            .map(|d| d.log().join("\n"))
            .unwrap_or_default()
    }

    /// Runs `f` while the sender sends to `group` every 10 ms.
    fn streaming<T>(&self, group: Ipv4Addr, f: impl FnOnce() -> T) -> T {
        let mut tx = Sender::new(&self.lab.sender, SENDER_ADDR, 8).expect("sender socket");
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            struct Stop<'a>(&'a AtomicBool);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            s.spawn(|| tx.stream(group, 100, Duration::from_millis(10), &done));
            let _stop = Stop(&done);
            f()
        })
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        drop(self.daemon.take());
        // A crashed daemon leaves its pins and sockets.
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        remove_stale_sockets(&self.pin_dir);
    }
}

/// Frames of `group` the capture sees within `window`.
fn frames(cap: &Capture, group: Ipv4Addr, window: Duration) -> usize {
    cap.frames(window)
        .iter()
        .filter(|f| f[30..34] == group.octets())
        .count()
}

/// Waits until `group` arrives on the captured link (true) or `TIMEOUT` passes.
fn flows(cap: &Capture, group: Ipv4Addr) -> bool {
    wait_until(TIMEOUT, || {
        frames(cap, group, Duration::from_millis(100)) > 0
    })
}

/// Waits until a half second passes without `group` on the captured link.
fn stops(cap: &Capture, group: Ipv4Addr) -> bool {
    wait_until(TIMEOUT, || {
        frames(cap, group, Duration::from_millis(500)) == 0
    })
}

fn entry(mfes: &serde_json::Value, group: Ipv4Addr) -> Option<&serde_json::Value> {
    mfes["mfes"]
        .as_array()?
        .iter()
        .find(|m| m["group"] == group.to_string())
}

fn oif_names(m: &serde_json::Value) -> Vec<String> {
    m["oifs"]
        .as_array()
        .map(|o| {
            o.iter()
                .filter_map(|o| o["interface"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Every view answers from the daemon's state: a kernel host's join is a group with its
/// reporter and version, the entry it makes lists its one outgoing interface (with that
/// interface's counters), and the tables show the same. With the daemon gone, `mgm show`
/// reads the pins and says so, and the one-interface entry still lists its interface.
#[test]
fn show_asks_the_daemon_and_falls_back_to_the_pins() {
    let mut t = Setup::up("ctl");
    let r1 = Receiver::new(&t.lab.receivers[0], receiver_addr(0)).expect("receiver socket");
    r1.join(G1).expect("join");
    t.streaming(G1, || {
        assert!(
            r1.first_arrival(G1, TIMEOUT).is_some(),
            "G1 never reached r1:\n{}",
            t.log()
        );
        let groups = t.daemon().show_view("groups").expect("show groups");
        assert_eq!(groups["version"], 1, "{groups}");
        let g = groups["groups"]
            .as_array()
            .and_then(|g| g.iter().find(|g| g["group"] == G1.to_string()))
            .unwrap_or_else(|| panic!("no G1 in {groups}"));
        assert_eq!(g["interface"], "dn1", "{g}");
        assert_eq!(g["origin"], "igmp", "{g}");
        assert_eq!(g["version"], 2, "r1 speaks IGMPv2: {g}");
        assert_eq!(g["reporter"], receiver_addr(0).to_string(), "{g}");
        assert!(g["expires_s"].as_u64().is_some_and(|e| e > 0), "{g}");

        let mfes = t.daemon().show_view("mfe").expect("show mfe");
        let m = entry(&mfes, G1).unwrap_or_else(|| panic!("no G1 entry in {mfes}"));
        assert_eq!(m["source"], SENDER_ADDR.to_string(), "{m}");
        assert_eq!(m["iif"], "up0", "{m}");
        assert_eq!(oif_names(m), ["dn1"], "the one-interface entry: {m}");
        assert!(m["oifs"][0]["packets"].is_u64() && m["oifs"][0]["bytes"].is_u64());

        let table = t.ok(&["show", "mfe"]);
        let line = table
            .lines()
            .find(|l| l.contains(&G1.to_string()))
            .unwrap_or_else(|| panic!("no G1 line in\n{table}"));
        assert!(line.contains("dn1") && line.contains("up0"), "{line}");
        let protocols = t.ok(&["show", "protocols"]);
        for p in ["igmp-proxy", "igmp", "static"] {
            assert!(protocols.contains(p), "{p} missing:\n{protocols}");
        }
        let interfaces = t.ok(&["show", "interfaces"]);
        assert!(
            interfaces.contains("dn1") && interfaces.contains("upstream"),
            "{interfaces}"
        );
        let stats = t.daemon().show_view("stats").expect("show stats");
        assert!(
            stats["stats"]["igmp_messages"]
                .as_u64()
                .is_some_and(|n| n > 0),
            "{stats}"
        );
    });

    // The daemon dies; its pins keep forwarding.
    let daemon = t.daemon.take().expect("daemon");
    let (netns, socket) = (t.lab.router.name().to_owned(), daemon.control_socket());
    daemon.crash();
    let out = Command::new(mgm_bin())
        .args(["show", "mfe", "--netns", &netns, "--pin-dir"])
        .arg(&t.pin_dir)
        .arg("--control-socket")
        .arg(&socket)
        .output()
        .expect("mgm runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no mgm daemon answers") && stderr.contains("pinned maps"),
        "{stderr}"
    );
    let line = stdout
        .lines()
        .find(|l| l.contains(&G1.to_string()))
        .unwrap_or_else(|| panic!("no G1 line in the pinned maps:\n{stdout}"));
    assert!(
        line.contains("dn1"),
        "one-interface set from the pins: {line}"
    );
}

/// `mgm route add` forwards a group nobody joined to dn2, `mgm route del` stops it; `mgm join`
/// and `mgm leave` do the same as a static membership. r2's host never joins, so a capture on
/// its link counts what the router sends; r1's link never gets the group.
#[test]
fn route_and_join_change_forwarding_at_run_time() {
    let t = Setup::up("ctl");
    let on_dn2 = Capture::new(&t.lab.receivers[1], HOST_IF).expect("capture on r2");
    let on_dn1 = Capture::new(&t.lab.receivers[0], HOST_IF).expect("capture on r1");
    let route = format!("from up0 source {SENDER_ADDR} group {G2} to dn2");
    t.streaming(G2, || {
        assert_eq!(
            frames(&on_dn2, G2, Duration::from_secs(1)),
            0,
            "nobody asked"
        );

        let said = t.ok(&["route", "add", &route]);
        assert!(said.contains("added"), "{said}");
        assert!(
            flows(&on_dn2, G2),
            "route add did not forward:\n{}",
            t.log()
        );
        let protocols = t.daemon().show_view("protocols").expect("show protocols");
        assert!(protocols.to_string().contains(&route), "{protocols}");
        let mfes = t.daemon().show_view("mfe").expect("show mfe");
        let m = entry(&mfes, G2).unwrap_or_else(|| panic!("no G2 entry in {mfes}"));
        assert_eq!(oif_names(m), ["dn2"], "{m}");
        assert_eq!(frames(&on_dn1, G2, Duration::from_millis(500)), 0);

        t.ok(&["route", "del", &route]);
        assert!(
            stops(&on_dn2, G2),
            "route del did not stop G2:\n{}",
            t.log()
        );

        t.ok(&["join", "dn2", &G2.to_string()]);
        assert!(flows(&on_dn2, G2), "join did not forward:\n{}", t.log());
        let groups = t.daemon().show_view("groups").expect("show groups");
        assert!(
            groups["groups"].as_array().is_some_and(|g| g
                .iter()
                .any(|g| g["interface"] == "dn2" && g["origin"] == "static")),
            "{groups}"
        );
        t.ok(&["leave", "dn2", &G2.to_string()]);
        assert!(stops(&on_dn2, G2), "leave did not stop G2:\n{}", t.log());
        assert_eq!(frames(&on_dn1, G2, Duration::from_millis(500)), 0);
    });
}

/// A route and a join made at run time are held by name (spec §10): dn2, deleted and created
/// again, gets both streams back without a restart, and the route is still listed.
#[test]
fn run_time_route_and_join_come_back_with_their_interface() {
    let mut t = Setup::up("ctlhp");
    let route = format!("from up0 source {SENDER_ADDR} group {G2} to dn2");
    t.ok(&["route", "add", &route]);
    t.ok(&["join", "dn2", &G1.to_string()]);
    let wait = |t: &mut Setup, needle: &str| {
        let d = t.daemon.as_mut().expect("daemon running");
        if let Err(e) = d.wait_for(needle, TIMEOUT) {
            panic!("{e:#}\n{}", d.log().join("\n"));
        }
    };
    let both = |t: &Setup, what: &str| {
        let on_dn2 = Capture::new(&t.lab.receivers[1], HOST_IF).expect("capture on r2");
        t.streaming(G1, || {
            t.streaming(G2, || {
                assert!(
                    flows(&on_dn2, G2),
                    "route: no G2 on dn2 {what}:\n{}",
                    t.log()
                );
                assert!(
                    flows(&on_dn2, G1),
                    "join: no G1 on dn2 {what}:\n{}",
                    t.log()
                );
            })
        });
    };
    both(&t, "at first");

    t.lab
        .router
        .ip(&["link", "del", "dn2"])
        .expect("delete dn2");
    wait(&mut t, "dn2 is gone");
    t.lab
        .rewire_downstream(1, "dn2", IgmpVersion::V3)
        .expect("dn2 again");
    wait(&mut t, "dn2 appeared");
    both(&t, "after it came back");

    let protocols = t.daemon().show_view("protocols").expect("show protocols");
    assert!(protocols.to_string().contains(&route), "{protocols}");
    let groups = t.daemon().show_view("groups").expect("show groups");
    assert!(
        groups["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g["interface"] == "dn2"
                && g["group"] == G1.to_string()
                && g["origin"] == "static")),
        "{groups}"
    );
}

/// Bad calls are refused with what is wrong, and change nothing; the daemon keeps serving.
#[test]
fn bad_calls_get_clear_errors() {
    let t = Setup::up("ctl");
    let g = G2.to_string();
    for (args, why) in [
        (vec!["join", "eth9", &g], "unknown interface eth9"),
        (vec!["join", "up0", &g], "is the upstream interface"),
        (vec!["join", "dn1", "10.1.1.1"], "not a multicast group"),
        (vec!["join", "dn1", "239.1.1"], "invalid value"),
        (vec!["leave", "dn1", &g], "has no static join"),
        (
            vec![
                "route",
                "add",
                "from",
                "up0",
                "group",
                "239.1.1.1",
                "to",
                "eth7",
            ],
            "outgoing interface eth7 is not a downstream",
        ),
        (
            vec![
                "route", "add", "from", "up0", "group", "10.0.0.1", "to", "dn1",
            ],
            "not a multicast group",
        ),
        (
            vec![
                "route",
                "del",
                "from",
                "up0",
                "group",
                "239.1.1.1",
                "to",
                "dn1",
            ],
            "no static route",
        ),
    ] {
        let e = t.error(&args);
        assert!(e.contains(why), "mgm {args:?}: {e}");
    }
    // Started without a file, a reload reads the same command line again: nothing changes.
    t.ok(&["reload"]);
    t.ok(&["join", "dn1", &g]);
    let e = t.error(&["join", "dn1", &g]);
    assert!(e.contains("already"), "{e}");
    // Still serving, and only the one good join holds.
    let groups = t.daemon().show_view("groups").expect("show groups");
    assert_eq!(
        groups["groups"].as_array().map(Vec::len),
        Some(1),
        "{groups}"
    );

    // No daemon there: said so, nothing else tried.
    let out = Command::new(mgm_bin())
        .args([
            "join",
            "dn1",
            &g,
            "--control-socket",
            "/run/mgm/no-such.ctl.sock",
        ])
        .output()
        .expect("mgm runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no mgm daemon answers"),
        "{err}"
    );
}
