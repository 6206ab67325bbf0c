//! Faults under a stream, on the real `mgm` binary (issue 19): the daemon stopped for 10 s
//! (its ring-buffer consumer stalled) while new flows fill the ring buffer and a host joins,
//! then resumed; and a downstream flapped 100 times. Receivers are the kernel's IGMP hosts;
//! every datagram of the stream to the host that stays joined is counted across the event.
//! Needs root; run through `cargo xtask test`. (The daemon killed under load and restarted is
//! `restart.rs`.)

mod events;

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use events::{gaps, mgm_bin, nothing_lost, Counter, Stream, TwoHosts, FAST_IGMP, PATIENCE};
use xtask::lab::{
    receiver_addr, traffic::Receiver, traffic::Sender, unique_tag, Daemon, IgmpVersion, Lab,
    SENDER_ADDR,
};

const G: Ipv4Addr = Ipv4Addr::new(239, 5, 5, 5);
const G2: Ipv4Addr = Ipv4Addr::new(239, 5, 5, 6);
/// How long the daemon is stopped, counted in datagrams of the stream to dn1 (one per
/// [`Stream::PERIOD`] at most), so the stall ends on what the host got, not on a timer.
const STALL: Duration = Duration::from_secs(10);
const STALL_DATAGRAMS: usize = 10_000;
/// New flows sent while it is stopped: one upcall each, more than the 2 MiB ring buffer holds
/// (about 20,000 records of 104 bytes).
const NEW_FLOWS: u32 = 40_000;
const FLOOD_BASE: u32 = u32::from_be_bytes([239, 200, 0, 0]);
const FLAPS: usize = 100;

/// Sends SIGSTOP now and SIGCONT when dropped, so a failing test never leaves a stopped daemon
/// that its own drop could not stop.
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        signal(pid, libc::SIGSTOP);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on the daemon this test started.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(
        r,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// Upcalls the daemon never got, counted: refused by the interface's admission, or lost to a
/// full ring buffer.
fn upcalls_lost(daemon: &Daemon) -> u64 {
    let show = daemon.show().expect("mgm show");
    show["interfaces"]
        .as_array()
        .map(|all| {
            all.iter()
                .flat_map(|i| ["ring_full", "upcall_limited"].map(|c| i["stats"][c].as_u64()))
                .flatten()
                .sum()
        })
        .unwrap_or(0)
}

fn fail(daemon: &Daemon, what: &str) -> ! {
    panic!("{what}\nmgm log (last 60 lines):\n{}", {
        let log = daemon.log();
        log[log.len().saturating_sub(60)..].join("\n")
    })
}

fn start(tag: &str, lab: &Lab) -> Daemon {
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    // The flows of the stall stay negative; info logging of each would only slow the test.
    Daemon::start(&mgm_bin(), lab, &pin_dir, &FAST_IGMP, false).expect("mgm")
}

#[test]
fn a_daemon_stopped_for_ten_seconds_keeps_forwarding_counts_its_losses_and_catches_up() {
    let tag = unique_tag("t");
    let lab = Lab::up(&tag, &[IgmpVersion::V3, IgmpVersion::V3]).expect("lab up");
    let daemon = start(&tag, &lab);
    let r1 = Receiver::new(&lab.receivers[0], receiver_addr(0)).unwrap();
    r1.join(G).unwrap();
    let stream = Stream::start(&lab, G);
    let stream2 = Stream::start(&lab, G2);
    let mut stays = Counter::start(r1, G);
    if !stays.more(20, PATIENCE) {
        fail(&daemon, "the host on dn1 never got the stream");
    }
    let from = stays.first().expect("counted");
    let lost_before = upcalls_lost(&daemon);

    let stopped_at = Instant::now();
    let stopped = Stopped::new(daemon.pid());
    // New flows fill the ring buffer the stopped daemon does not read.
    let mut flood = Sender::new(&lab.sender, SENDER_ADDR, 8).unwrap();
    for i in 0..NEW_FLOWS {
        flood.send(Ipv4Addr::from(FLOOD_BASE + i), 64).unwrap();
    }
    // A host joins while the daemon cannot hear it (its report may be lost with the ring).
    let r2 = Receiver::new(&lab.receivers[1], receiver_addr(1)).unwrap();
    r2.join(G2).unwrap();
    let mut joined = Counter::start(r2, G2);
    // The stall itself: the data plane forwards on without the daemon.
    if !stays.more(STALL_DATAGRAMS, 3 * STALL) {
        fail(&daemon, "forwarding to dn1 stopped with the daemon");
    }
    let stalled = stopped_at.elapsed();
    assert!(stalled >= STALL, "stalled only {stalled:?}");
    drop(stopped);

    // Resumed: the losses are counted, and the host that joined during the stall gets its
    // stream once the daemon caught up (its report again, or its answer to the next query).
    if !joined.more(20, 3 * PATIENCE) {
        fail(
            &daemon,
            "the host that joined during the stall never got its stream after it",
        );
    }
    let lost = upcalls_lost(&daemon) - lost_before;
    assert!(
        lost > 0,
        "{NEW_FLOWS} new flows against a stalled 2 MiB ring buffer and no upcall counted as lost"
    );
    let last = stream.stop();
    drop(stream2);
    let (missing, got) = stays.missing(from, last, PATIENCE);
    if !missing.is_empty() {
        fail(
            &daemon,
            &format!(
                "the host on dn1 lost datagrams while the daemon was stopped: got {got} of {}, \
                 missing {}",
                last - from + 1,
                gaps(&missing)
            ),
        );
    }
    println!(
        "stall of {stalled:?}: {lost} ring-buffer records lost and counted, dn1 got {got} of {got}"
    );
}

#[test]
fn a_downstream_flapped_a_hundred_times_forwards_to_the_hosts_still_joined() {
    let tag = unique_tag("t");
    let lab = Lab::up(&tag, &[IgmpVersion::V3, IgmpVersion::V3]).expect("lab up");
    let daemon = start(&tag, &lab);
    let r1 = Receiver::new(&lab.receivers[0], receiver_addr(0)).unwrap();
    let r2 = Receiver::new(&lab.receivers[1], receiver_addr(1)).unwrap();
    let TwoHosts {
        stream,
        stays,
        from,
        other: mut flapped,
    } = TwoHosts::start(&lab, G, r1, r2).unwrap_or_else(|e| fail(&daemon, &e));

    for _ in 0..FLAPS {
        lab.router.ip(&["link", "set", "dn2", "down"]).unwrap();
        lab.router.ip(&["link", "set", "dn2", "up"]).unwrap();
    }
    // dn2's host is still joined: it gets the stream again (mgm keeps or relearns its
    // membership), and dn1's never missed a datagram.
    flapped.count();
    if !flapped.more(100, 3 * PATIENCE) {
        fail(
            &daemon,
            &format!("the host on dn2 got no stream after {FLAPS} flaps"),
        );
    }
    if let Err(e) = nothing_lost(stream, stays, from, "while dn2 flapped") {
        fail(&daemon, &e);
    }
    assert!(
        daemon.log().iter().all(|l| !l.contains("panicked")),
        "the daemon panicked"
    );
}
