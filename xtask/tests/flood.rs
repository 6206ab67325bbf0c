//! End-to-end: floods cost only the interface they arrive on (issue 19).
//!
//! A hostile host on dn1 sends IGMPv3 reports of random groups from a raw socket, thousands a
//! second; meanwhile a kernel IGMPv3 host on dn2 joins a group whose stream is already running
//! and must get it within a second of its join, and r3, joined before the flood, must lose
//! nothing. Then a data flood to random groups arrives on the upstream, and a new stream for a
//! group a receiver joined must be forwarded within a second of its first datagram.
//! With `--igmp-admit-rate 0`, a burst of IGMPv2 reports far over the default admission
//! reaches the daemon whole.
//! Needs root; run through `cargo xtask test`.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use xtask::lab::{
    mgm_bin, receiver_addr,
    stream::{wait_until, Stream},
    traffic::{raw_igmp_socket, set_igmp_checksum, set_router_alert, Receiver, Sender},
    unique_tag, Daemon, IgmpVersion, Lab, FAST_IGMP, SENDER_ADDR,
};

/// The group r3 joined before the flood.
const JOINED: Ipv4Addr = Ipv4Addr::new(239, 30, 0, 1);
/// The group a host joins, or a stream starts for, during the flood.
const LATE: Ipv4Addr = Ipv4Addr::new(239, 30, 0, 2);
/// The bound of issue 19: join (or first datagram) to first forwarded datagram.
const BOUND: Duration = Duration::from_secs(1);
/// How long each flood lasts.
const FLOOD: Duration = Duration::from_secs(10);
/// Paced streams: one datagram every 5 ms.
const STREAM_INTERVAL: Duration = Duration::from_millis(5);
/// Records per hostile report, and sources per record (issue 19's flood).
const RECORDS: usize = 20;
const SOURCES: usize = 4;
/// Hostile reports per 10 ms tick: 6,000 a second.
const REPORTS_PER_TICK: usize = 60;

/// xorshift64: random enough for random groups, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 16) as u32
    }

    /// A group in 225.0.0.0–238.255.255.255: never the test's own 239/8 groups nor link-local.
    fn group(&mut self) -> Ipv4Addr {
        let r = self.next();
        Ipv4Addr::from(((225 + (r >> 24) % 14) << 24) | (r & 0x00ff_ffff))
    }

    fn unicast(&mut self) -> Ipv4Addr {
        Ipv4Addr::from((10 << 24) | (self.next() & 0x00ff_ffff))
    }
}

/// An IGMPv3 report of [`RECORDS`] MODE_IS_INCLUDE records, each of a random group with
/// [`SOURCES`] random sources (RFC 3376 §4.2), checksummed.
fn hostile_report(rng: &mut Rng) -> Vec<u8> {
    let mut m = vec![0x22, 0, 0, 0, 0, 0, 0, RECORDS as u8];
    for _ in 0..RECORDS {
        m.extend_from_slice(&[1, 0, 0, SOURCES as u8]);
        m.extend_from_slice(&rng.group().octets());
        for _ in 0..SOURCES {
            m.extend_from_slice(&rng.unicast().octets());
        }
    }
    set_igmp_checksum(&mut m);
    m
}

/// A flood running on its own thread until [`FLOOD`] has passed or it is stopped; `sent`
/// counts what it sent.
struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Flood {
    /// Runs `burst` every 10 ms (pacing, not synchronisation); `burst` returns how many it sent.
    fn start(mut burst: impl FnMut() -> u64 + Send + 'static) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
            std::thread::spawn(move || {
                let end = Instant::now() + FLOOD;
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    sent.fetch_add(burst(), Ordering::Relaxed);
                    next += Duration::from_millis(10);
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
            })
        };
        Flood {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits for the flood's end; returns how much it sent.
    fn join(mut self) -> u64 {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.sent()
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A paced stream to `group` from its own thread, for a receiver to catch its first datagram.
struct Paced {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<u64>>>,
}

impl Paced {
    fn start(mut tx: Sender, group: Ipv4Addr) -> Paced {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || tx.stream(group, 100, STREAM_INTERVAL, &stop))
        };
        Paced {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Paced {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Datagrams to random groups from the upstream host, 500 every 10 ms or as many as one
/// socket sends.
fn data_flood(lab: &Lab) -> Flood {
    let mut tx = Sender::new(&lab.sender, SENDER_ADDR, 8).expect("flood sender");
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    Flood::start(move || {
        (0..500)
            .filter(|_| tx.send(rng.group(), 64).is_ok())
            .count() as u64
    })
}

/// One interface's counters from `mgm show --json`.
fn if_stat(daemon: &Daemon, ifname: &str, counter: &str) -> u64 {
    let show = daemon.show().expect("mgm show");
    show["interfaces"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == ifname))
        .and_then(|i| i["stats"][counter].as_u64())
        .unwrap_or_else(|| panic!("no {counter} for {ifname} in {show:#}"))
}

fn fail(daemon: &Daemon, what: &str) -> ! {
    let show = daemon
        .show()
        .map_or_else(|e| format!("{e:#}"), |v| format!("{v:#}"));
    let log = daemon.log();
    let tail = &log[log.len().saturating_sub(200)..];
    panic!(
        "{what}\nlast {} lines of the mgm log:\n{}\nmgm show:\n{show}",
        tail.len(),
        tail.join("\n")
    );
}

#[test]
fn a_report_flood_on_one_downstream_delays_no_other() {
    let tag = unique_tag("fl");
    let lab = Lab::up(&tag, &[IgmpVersion::V3; 3]).expect("lab up");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    // IGMP's default timers, as a new user runs mgm.
    let daemon = Daemon::start(&mgm_bin(), &lab, &pin_dir, &["--xdp-mode", "native"], false)
        .expect("mgm starts");

    // r3 joined before the flood and must keep every datagram across it.
    let r3 = Receiver::new(&lab.receivers[2], receiver_addr(2)).expect("r3 socket");
    r3.grow_buffer(1 << 22).expect("r3 buffer");
    r3.join(JOINED).expect("r3 joins");
    let tx = Sender::new(&lab.sender, SENDER_ADDR, 8).expect("sender");
    let joined = Stream::start(tx, r3, JOINED, STREAM_INTERVAL);
    if !joined.wait_received(10, Duration::from_secs(5)) {
        fail(&daemon, "r3's stream never arrived before the flood");
    }
    // The stream r2 will join is already running when it joins.
    let late = Paced::start(
        Sender::new(&lab.sender, SENDER_ADDR, 8).expect("sender"),
        LATE,
    );
    let r2 = Receiver::new(&lab.receivers[1], receiver_addr(1)).expect("r2 socket");

    let raw = raw_igmp_socket(&lab.receivers[0], receiver_addr(0)).expect("raw IGMP socket");
    let to = SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 22), 0).into();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let flood = Flood::start(move || {
        (0..REPORTS_PER_TICK)
            .filter(|_| raw.send_to(&hostile_report(&mut rng), &to).is_ok())
            .count() as u64
    });
    // As in issue 19, the upstream carries data to random groups meanwhile.
    let data = data_flood(&lab);
    // Two seconds into the flood: any backlog it causes has built up by then.
    if !wait_until(Duration::from_secs(5), || flood.sent() >= 12_000) {
        fail(&daemon, "the hostile host could not send its flood");
    }
    r2.join(LATE).expect("r2 joins");
    let joined_at = Instant::now();
    let first = r2.first_arrival(LATE, Duration::from_secs(5));
    let reports = flood.join();
    let frames = data.join();
    drop(late);
    let tally = joined.finish();
    let delay = first.map(|at| at - joined_at);
    eprintln!(
        "report flood: {reports} hostile reports and {frames} frames to random groups in \
         {FLOOD:?}; r2's join to first datagram: {delay:?}; r3: {tally:?}"
    );
    match delay {
        Some(d) if d <= BOUND => {}
        _ => fail(
            &daemon,
            &format!("r2 joined during the flood and got its stream after {delay:?}, not within {BOUND:?}"),
        ),
    }
    match tally {
        Some(t) if t.lost == 0 => {}
        t => fail(
            &daemon,
            &format!("r3 lost datagrams across the flood: {t:?}"),
        ),
    }
    // The flood was cut at dn1's admission and counted there; dn2's reports all got through.
    let limited = if_stat(&daemon, "dn1", "igmp_limited");
    if limited == 0 {
        fail(&daemon, "dn1's report admission counted nothing");
    }
    assert_eq!(if_stat(&daemon, "dn2", "igmp_limited"), 0);
    assert_eq!(if_stat(&daemon, "dn2", "ring_full"), 0);
    eprintln!("dn1: {limited} IGMP messages over its admission");
}

#[test]
fn a_data_flood_to_random_groups_starves_no_new_stream() {
    let tag = unique_tag("fd");
    let lab = Lab::up(&tag, &[IgmpVersion::V3]).expect("lab up");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let mut daemon =
        Daemon::start(&mgm_bin(), &lab, &pin_dir, &FAST_IGMP, false).expect("mgm starts");
    let r1 = Receiver::new(&lab.receivers[0], receiver_addr(0)).expect("r1 socket");
    r1.join(LATE).expect("r1 joins");
    daemon
        .wait_for(&format!("dn1 joins (*, {LATE})"), Duration::from_secs(5))
        .expect("the join reaches mgm");

    let flood = data_flood(&lab);
    // Three seconds of flood: long enough to fill a table that has no budget.
    if !wait_until(Duration::from_secs(8), || flood.sent() >= 90_000) {
        fail(&daemon, "the upstream host could not send its flood");
    }
    let started = Instant::now();
    let stream = Paced::start(
        Sender::new(&lab.sender, SENDER_ADDR, 8).expect("sender"),
        LATE,
    );
    let first = r1.first_arrival(LATE, Duration::from_secs(5));
    let frames = flood.join();
    drop(stream);
    let delay = first.map(|at| at - started);
    eprintln!(
        "data flood: {frames} frames in {FLOOD:?}; new stream's first datagram after {delay:?}"
    );
    match delay {
        Some(d) if d <= BOUND => {}
        _ => fail(
            &daemon,
            &format!("the new stream was forwarded after {delay:?}, not within {BOUND:?}"),
        ),
    }
    let limited = if_stat(&daemon, "up0", "upcall_limited");
    if limited == 0 {
        fail(&daemon, "up0's upcall budget counted nothing");
    }
    eprintln!("up0: {limited} misses over the upcall budget");
    if !daemon
        .log()
        .iter()
        .any(|l| l.contains("negative entries evicted"))
    {
        fail(&daemon, "no negative entry was evicted over the budget");
    }
}

/// `--igmp-admit-rate 0` turns IGMP admission off for IGMPv2 reports too (one token each, as
/// every message that is not an IGMPv3 report): a burst of [`BURST`] reports, over twice what
/// the default rate lets through at once (a quarter second's worth, 250), all reach the daemon
/// and none is counted as limited. The control part of `cargo xtask bench` relies on this.
#[test]
fn igmp_admit_rate_0_admits_a_burst_of_v2_reports_whole() {
    const BURST: u64 = 600;
    let tag = unique_tag("fa");
    let lab = Lab::up(&tag, &[IgmpVersion::V2]).expect("lab up");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let daemon = Daemon::start(
        &mgm_bin(),
        &lab,
        &pin_dir,
        &["--xdp-mode", "native", "--igmp-admit-rate", "0"],
        false,
    )
    .expect("mgm starts");
    let raw = raw_igmp_socket(&lab.receivers[0], receiver_addr(0)).expect("raw IGMP socket");
    set_router_alert(&raw).expect("router alert");
    let handled = || {
        daemon.show_view("stats").expect("mgm show stats")["stats"]["igmp_messages"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = handled();
    for i in 0..BURST {
        let group = Ipv4Addr::from(u32::from(Ipv4Addr::new(239, 31, 0, 0)) + i as u32);
        let mut report = vec![0x16, 0, 0, 0];
        report.extend_from_slice(&group.octets());
        set_igmp_checksum(&mut report);
        raw.send_to(&report, &SocketAddrV4::new(group, 0).into())
            .expect("send a report");
    }
    if !wait_until(Duration::from_secs(10), || handled() - before >= BURST) {
        fail(
            &daemon,
            &format!(
                "{} of {BURST} IGMPv2 reports reached the daemon",
                handled() - before
            ),
        );
    }
    assert_eq!(if_stat(&daemon, "dn1", "igmp_limited"), 0);
    assert_eq!(if_stat(&daemon, "dn1", "ring_full"), 0);
}
