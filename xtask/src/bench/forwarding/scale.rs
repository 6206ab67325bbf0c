//! Scale: mgm forwarding one flow while it holds 100k (S,G) entries on 64 interfaces, against
//! the same flow with its entry alone, on one lab of 64 router interfaces.
//!
//! The entries go in the way a deployment fills them: each receiver host reports (S,G)
//! memberships with IGMPv3 (`MODE_IS_INCLUDE {S}` records, crafted on a raw socket so one
//! report carries [`RECORDS_PER_REPORT`] groups), and then one packet per group from the
//! generator makes the daemon resolve its entry, as any new stream would. The
//! command line cannot carry 100k `--static-route` flags (Linux caps argv at 6 MiB), and mgm
//! has no route file, so IGMP is the honest way in.

use std::{
    collections::HashSet,
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use aya::maps::{HashMap, Map, MapData};
use mgm_common::{
    fwd::{FwdEntry, FwdKey, FWD_PENDING},
    maps as m,
};
use serde_json::{json, Value};
use socket2::{Domain, Protocol, Socket, Type};

use super::{
    check_stop, enter, generator::udp_frame, median, router::Running, sender_mac, Bench, Flow,
    Forwarder, Plan, Scratch,
};
use crate::lab::{self, receiver_addr, Daemon, IgmpVersion, Lab, Netns, SENDER_ADDR};

/// Router interfaces: the upstream and 63 downstreams.
const INTERFACES: usize = 64;
/// Group records per IGMPv3 report: 8 + 100 × 12 bytes, under mgm's 1476-byte snoop copy.
const RECORDS_PER_REPORT: usize = 100;
/// The first of the scale run's groups (the measured flow uses 239.1.1.1).
const FIRST_GROUP: u32 = u32::from_be_bytes([239, 2, 0, 0]);
/// The measured flow's frame size.
const FRAME: usize = 64;
/// The daemon's `--pending-retry-ms`: a placeholder whose upcall was lost raises it again on
/// the first packet after this long.
const PENDING_RETRY: Duration = Duration::from_millis(200);

/// Runs the scale comparison; `entries` (S,G) entries besides the flow's.
///
/// # Errors
/// The lab, the daemon or the generator failed, or the entries did not all appear.
pub fn scale(mgm: &Path, bench_object: &Path, quick: bool) -> anyhow::Result<Value> {
    let entries: u32 = if quick { 10_000 } else { 100_000 };
    let rounds = if quick { 1 } else { 3 };
    let _guards = enter()?;
    let tag = lab::unique_tag("t");
    let scratch = Scratch::new(&tag)?;
    println!("scale: building a router with {INTERFACES} interfaces");
    let lab = Lab::up(&tag, &[IgmpVersion::V3; INTERFACES - 1])?;
    let mut bench = Bench::new(
        &lab,
        &tag,
        mgm,
        bench_object,
        &scratch.0,
        Plan::new(quick),
        1,
    )?;
    // mgm proxies every membership upstream with a socket join; the kernel's defaults allow
    // 20 groups per socket, in 20 KiB of option memory.
    lab.router
        .sysctl("net.ipv4.igmp_max_memberships", &(entries + 64).to_string())?;
    lab.router.sysctl(
        "net.core.optmem_max",
        &(u64::from(entries) * 256).to_string(),
    )?;
    let flow = Flow {
        source: SENDER_ADDR,
        group: super::GROUP,
        fanout: 1,
    };
    let mac = sender_mac(&lab)?;
    let flow_frame = udp_frame(mac, SENDER_ADDR, flow.group, FRAME);
    let per_interface = entries.div_ceil(INTERFACES as u32 - 1).to_string();
    // Room for every membership, quick retries of upcalls lost to a full ring, and
    // memberships that outlive the bench: the receivers report once and answer no query, and
    // with the default timers all 100k expire 260 s later, in the middle of the runs.
    let args = [
        "--igmp-max-groups",
        &per_interface,
        "--igmp-max-sources",
        &per_interface,
        "--pending-retry-ms",
        &PENDING_RETRY.as_millis().to_string(),
        "--igmp-query-interval",
        "3600",
    ];
    bench.generator.set_frame(flow_frame)?;
    let mut alone = Vec::new();
    {
        let _mgm = bench.harness.start(Forwarder::Mgm, &flow, &args)?;
        for _ in 0..rounds {
            check_stop()?;
            alone.push(bench.sample_with_path(Forwarder::Mgm, &flow, FRAME)?);
        }
    }
    // Filling takes minutes at 100k, so it happens once and the runs with the full table
    // follow the runs without it instead of alternating.
    let running = bench.harness.start(Forwarder::Mgm, &flow, &args)?;
    let Running::Mgm(daemon) = &running else {
        bail!("mgm did not start as a daemon");
    };
    let start = Instant::now();
    let (reports_secs, resolved) = fill(&mut bench, daemon, entries)?;
    let fill_secs = start.elapsed().as_secs_f64();
    let mut full = Vec::new();
    for _ in 0..rounds {
        check_stop()?;
        full.push(bench.sample_with_path(Forwarder::Mgm, &flow, FRAME)?);
    }
    let installed = resolved_groups(daemon.pin_dir())?.len();
    // Stopping leaves every upstream membership, a walk of the kernel's list per group.
    let Running::Mgm(daemon) = running else {
        bail!("mgm did not start as a daemon");
    };
    let stopping = Instant::now();
    let stopped = daemon.stop().is_ok();
    let stop_secs = stopping.elapsed().as_secs_f64();
    // The runs with the table came minutes after the runs alone: the flow alone once more
    // tells the table's cost from a drift of the machine in between.
    let mut after = Vec::new();
    {
        let _mgm = bench.harness.start(Forwarder::Mgm, &flow, &args)?;
        for _ in 0..rounds {
            check_stop()?;
            after.push(bench.sample_with_path(Forwarder::Mgm, &flow, FRAME)?);
        }
    }
    let med = |v: &[Value], k: &str| median(v.iter().filter_map(|r| r[k].as_f64()).collect());
    let correct = full
        .iter()
        .all(|r| r["min_receiver_pps"].as_f64().is_some_and(|x| x > 0.0));
    let summary = json!({
        "interfaces": INTERFACES,
        "entries": entries + 1,
        "frame_bytes": FRAME,
        "fanout": flow.fanout,
        "rounds": rounds,
        "entries_resolved_by_fill": resolved,
        "entries_resolved_after_runs": installed,
        "seconds_to_fill": fill_secs,
        "seconds_to_handle_reports": reports_secs,
        "seconds_to_stop": stop_secs,
        "stopped_within_10_s": stopped,
        "flow_reaches_its_receiver_only": correct,
        "alone_per_receiver_pps": med(&alone, "per_receiver_pps"),
        "full_per_receiver_pps": med(&full, "per_receiver_pps"),
        "full_vs_alone_rate": med(&full, "per_receiver_pps") / med(&alone, "per_receiver_pps"),
        "alone_router_ns_per_packet": med(&alone, "router_ns_per_ingress_packet"),
        "full_router_ns_per_packet": med(&full, "router_ns_per_ingress_packet"),
        "alone_path_ns_per_packet": med(&alone, "path_ns_per_packet"),
        "full_path_ns_per_packet": med(&full, "path_ns_per_packet"),
        "full_vs_alone_path_capacity": med(&alone, "path_ns_per_packet") / med(&full, "path_ns_per_packet"),
        "alone_local_path_ns_per_packet": med(&alone, "local_path_ns_per_packet"),
        "full_local_path_ns_per_packet": med(&full, "local_path_ns_per_packet"),
        "full_vs_alone_local_path_capacity":
            med(&alone, "local_path_ns_per_packet") / med(&full, "local_path_ns_per_packet"),
        "alone_after_path_ns_per_packet": med(&after, "path_ns_per_packet"),
        "alone_after_local_path_ns_per_packet": med(&after, "local_path_ns_per_packet"),
        "full_vs_alone_after_local_path_capacity":
            med(&after, "local_path_ns_per_packet") / med(&full, "local_path_ns_per_packet"),
        "runs_alone": alone,
        "runs_full": full,
        "runs_alone_after": after,
    });
    println!(
        "\nscale ({} entries, {INTERFACES} interfaces, {FRAME}-byte frames, fan-out 1, medians):\n  \
         alone {:.3} Mpps ({:.0} ns/packet), among them {:.3} Mpps ({:.0} ns/packet): {:.2}×; \
         path fed directly: alone {:.0} ns/packet, among them {:.0}: capacity {:.2}×; with the receiver on the router's CPU: alone {:.0}, among them {:.0}: capacity {:.2}×, alone again afterwards {:.0}: {:.2}×; flow reached only its receiver: {correct}; filled in {:.1} s ({:.1} s of it for the reports); stopped in {stop_secs:.1} s{}",
        entries + 1,
        summary["alone_per_receiver_pps"].as_f64().unwrap_or(0.0) / 1e6,
        summary["alone_router_ns_per_packet"].as_f64().unwrap_or(f64::NAN),
        summary["full_per_receiver_pps"].as_f64().unwrap_or(0.0) / 1e6,
        summary["full_router_ns_per_packet"].as_f64().unwrap_or(f64::NAN),
        summary["full_vs_alone_rate"].as_f64().unwrap_or(f64::NAN),
        summary["alone_path_ns_per_packet"].as_f64().unwrap_or(f64::NAN),
        summary["full_path_ns_per_packet"].as_f64().unwrap_or(f64::NAN),
        summary["full_vs_alone_path_capacity"].as_f64().unwrap_or(f64::NAN),
        summary["alone_local_path_ns_per_packet"].as_f64().unwrap_or(f64::NAN),
        summary["full_local_path_ns_per_packet"].as_f64().unwrap_or(f64::NAN),
        summary["full_vs_alone_local_path_capacity"].as_f64().unwrap_or(f64::NAN),
        summary["alone_after_local_path_ns_per_packet"].as_f64().unwrap_or(f64::NAN),
        summary["full_vs_alone_after_local_path_capacity"].as_f64().unwrap_or(f64::NAN),
        fill_secs,
        reports_secs,
        if stopped { "" } else { " (killed after 10 s)" },
    );
    Ok(summary)
}

/// Group `i` of the scale run.
fn group(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(FIRST_GROUP + i)
}

/// Waits until the daemon has logged `joins` memberships (one per group record reported;
/// each IGMP message is logged at debug only).
fn wait_for_joins(daemon: &Daemon, joins: usize, limit: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + limit;
    loop {
        check_stop()?;
        let seen = daemon
            .log()
            .iter()
            .filter(|l| l.contains("membership: dn") && l.contains(" joins ("))
            .count();
        if seen >= joins {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("mgm applied {seen} of {joins} reported memberships within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Fills mgm's forwarding table with `entries` (S,G) entries: memberships by IGMP spread over
/// every downstream, then one packet for each group without an entry, round after round,
/// until the daemon has resolved them (all, or 99 % and no progress for 15 s). Returns the
/// seconds until the daemon had handled every report, and how many entries it resolved.
fn fill(bench: &mut Bench<'_>, daemon: &Daemon, entries: u32) -> anyhow::Result<(f64, usize)> {
    let start = Instant::now();
    let hosts = bench.lab.receivers.len();
    let mut joins = 0;
    for (h, host) in bench.lab.receivers.iter().enumerate() {
        let groups: Vec<Ipv4Addr> = (h as u32..entries).step_by(hosts).map(group).collect();
        report(host, receiver_addr(h), &groups)?;
        joins += groups.len();
        // The snooped reports queue in a 2 MiB ring (~1400 of them): let the daemon drain it.
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every membership before the first entry: a membership change revisits every entry.
    // Each upstream join of the proxy walks the interface's membership list in the kernel,
    // quadratic over the fill, so allow a second per 500 entries.
    let limit = Duration::from_secs(60 + u64::from(entries) / 500);
    wait_for_joins(daemon, joins, limit)?;
    let reports_secs = start.elapsed().as_secs_f64();
    let end = Instant::now() + limit;
    let (mut last, mut since) = (0, Instant::now());
    loop {
        check_stop()?;
        let resolved = resolved_groups(daemon.pin_dir())?;
        let missing: Vec<Ipv4Addr> = (0..entries)
            .map(group)
            .filter(|g| !resolved.contains(g))
            .collect();
        let n = entries as usize - missing.len();
        if missing.is_empty() {
            return Ok((reports_secs, n));
        }
        if n != last {
            println!("scale: {n} of {entries} entries resolved");
            (last, since) = (n, Instant::now());
        }
        // A few placeholders can stay pending for long (BENCHMARKS.md); 99 % of the table is
        // enough for the rate comparison, and the count is reported.
        let nearly = n as f64 >= 0.99 * f64::from(entries);
        if nearly && since.elapsed() > Duration::from_secs(15) {
            println!(
                "scale: {} entries still pending, going on",
                entries as usize - n
            );
            return Ok((reports_secs, n));
        }
        if Instant::now() > end {
            bail!("only {n} of {entries} forwarding entries appeared within {limit:?}");
        }
        // One frame per missing group, paced. Bursts overflowed the router's veth ring (256
        // frames) while its miss path drained it, and lost most groups' frames sweep after
        // sweep. A group whose upcall was lost gets its next frame after the retry time.
        bench.generator.send_to_each(&bench.lab.sender, &missing)?;
        std::thread::sleep(PENDING_RETRY + Duration::from_millis(100));
    }
}

/// Groups of the resolved (not pending) entries in the pinned forwarding map.
fn resolved_groups(pin_dir: &Path) -> anyhow::Result<HashSet<Ipv4Addr>> {
    let path = pin_dir.join(m::FWD);
    let data = MapData::from_pin(&path).with_context(|| format!("open {}", path.display()))?;
    let fwd: HashMap<MapData, FwdKey, FwdEntry> = HashMap::try_from(Map::from_map_data(data)?)?;
    let mut groups = HashSet::new();
    for item in fwd.iter() {
        let (key, entry) = item?;
        if entry.flags & FWD_PENDING == 0 {
            groups.insert(Ipv4Addr::from(u32::from_be(key.group)));
        }
    }
    Ok(groups)
}

/// Sends IGMPv3 reports from `host` (interface address `iface`) with one `MODE_IS_INCLUDE
/// {sender}` record per group, TTL 1 and Router Alert, as the host stack would.
fn report(host: &Netns, iface: Ipv4Addr, groups: &[Ipv4Addr]) -> anyhow::Result<()> {
    let sock = host.run(|| -> std::io::Result<Socket> {
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_IGMP)),
        )?;
        s.set_multicast_if_v4(&iface)?;
        s.set_multicast_ttl_v4(1)?;
        s.set_multicast_loop_v4(false)?;
        // IP option 148 (Router Alert), length 4, value 0.
        let ra: [u8; 4] = [0x94, 0x04, 0, 0];
        // SAFETY: `ra` outlives the call; IP_OPTIONS copies it.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::IPPROTO_IP,
                libc::IP_OPTIONS,
                ra.as_ptr().cast(),
                ra.len() as u32,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(s)
    })??;
    let to = SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 22), 0).into();
    for chunk in groups.chunks(RECORDS_PER_REPORT) {
        sock.send_to(&v3_report(chunk, SENDER_ADDR), &to)
            .context("send an IGMPv3 report")?;
    }
    Ok(())
}

/// An IGMPv3 report (RFC 3376 §4.2) with one `MODE_IS_INCLUDE {source}` record per group.
fn v3_report(groups: &[Ipv4Addr], source: Ipv4Addr) -> Vec<u8> {
    let mut m = vec![0x22, 0, 0, 0, 0, 0];
    m.extend_from_slice(&(groups.len() as u16).to_be_bytes());
    for g in groups {
        m.extend_from_slice(&[1, 0, 0, 1]);
        m.extend_from_slice(&g.octets());
        m.extend_from_slice(&source.octets());
    }
    let mut sum: u32 = m
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    m[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    m
}
