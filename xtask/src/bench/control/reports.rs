//! IGMP reports per second, end to end: a host namespace sends membership reports for N new
//! groups from a raw socket straight into the router's downstream veth, and a run is done
//! when the router has joined all N on its upstream interface as a host (for mgm: XDP snoop →
//! ring buffer → querier → MGM core → proxy → IP_ADD_MEMBERSHIP).
//!
//! The generator is closed-loop: it keeps at most [`WINDOW_MESSAGES`] reports ahead of what
//! the router has finished, so neither mgm's ring buffer nor igmpproxy's socket buffer
//! overflows and the rate measured is what the router sustains, not what it drops.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context;
use serde_json::{json, Value};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{Kind, Memory, Router, Sched};
use crate::lab::{
    receiver_addr,
    traffic::{
        set_igmp_checksum, set_router_alert, v3_report, ALL_V3_ROUTERS, MODE_IS_EXCLUDE,
        RECORDS_PER_REPORT,
    },
    unique_tag, IgmpVersion, Lab, Netns, HOST_IF,
};

/// Reports sent and not yet finished by the router, at most. 32 of mgm's 1.5 KiB ring-buffer
/// records, or of igmpproxy's socket buffer, leave plenty of room.
const WINDOW_MESSAGES: usize = 32;
/// A run without progress for this long is over: the router lost reports or refused groups.
const STALL: Duration = Duration::from_secs(10);
/// A run is cut off after this long, and the rate so far is reported. igmpproxy sends its
/// second startup query 31 s after it starts; the generator's host answers no query, so
/// from about 41 s igmpproxy drops the groups it learned, and a longer run would measure that.
const RUN_LIMIT: Duration = Duration::from_secs(30);
/// How often the generator looks at the router's progress while its window is full.
const POLL: Duration = Duration::from_micros(200);

/// Group `i` of a run: 239.128.0.0 upwards, administratively scoped and outside the ranges
/// the latency runs use.
fn group(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(239, 128, 0, 0)) + i as u32)
}

/// The reports that announce `groups`: IGMPv3 reports of up to [`RECORDS_PER_REPORT`]
/// MODE_IS_EXCLUDE {} records (what a host answers a general query with), or one IGMPv2
/// report per group. Each with its destination and record count.
fn encode(version: IgmpVersion, groups: &[Ipv4Addr]) -> Vec<(Vec<u8>, Ipv4Addr, usize)> {
    match version {
        IgmpVersion::V2 => groups
            .iter()
            .map(|g| {
                let mut m = vec![0x16, 0, 0, 0];
                m.extend_from_slice(&g.octets());
                set_igmp_checksum(&mut m);
                (m, *g, 1)
            })
            .collect(),
        IgmpVersion::V3 => groups
            .chunks(RECORDS_PER_REPORT)
            .map(|chunk| {
                // MODE_IS_EXCLUDE {}: what a host answers a general query with.
                (
                    v3_report(MODE_IS_EXCLUDE, chunk, &[]),
                    ALL_V3_ROUTERS,
                    chunk.len(),
                )
            })
            .collect(),
    }
}

/// A raw IGMP socket on a host's `eth0`, with reports ready to send.
struct Generator {
    sock: Socket,
    reports: Vec<(Vec<u8>, SockAddr, usize)>,
}

impl Generator {
    fn new(
        host: &Netns,
        iface: Ipv4Addr,
        version: IgmpVersion,
        groups: usize,
    ) -> anyhow::Result<Generator> {
        let all: Vec<Ipv4Addr> = (0..groups).map(group).collect();
        let sock = host
            .run(|| -> std::io::Result<Socket> {
                let s = Socket::new(
                    Domain::IPV4,
                    Type::RAW,
                    Some(Protocol::from(libc::IPPROTO_IGMP)),
                )?;
                s.bind_device(Some(HOST_IF.as_bytes()))?;
                s.bind(&SocketAddrV4::new(iface, 0).into())?;
                s.set_multicast_if_v4(&iface)?;
                s.set_multicast_ttl_v4(1)?;
                s.set_multicast_loop_v4(false)?;
                set_router_alert(&s)?;
                Ok(s)
            })?
            .context("cannot open the raw IGMP socket of the report generator")?;
        let reports = encode(version, &all)
            .into_iter()
            .map(|(m, dst, n)| (m, SocketAddrV4::new(dst, 0).into(), n))
            .collect();
        Ok(Generator { sock, reports })
    }

    fn send(&self, i: usize) -> anyhow::Result<()> {
        let (m, dst, _) = &self.reports[i];
        self.sock
            .send_to(m, dst)
            .with_context(|| format!("send IGMP report {i}"))?;
        Ok(())
    }

    /// Sends every report as fast as the socket takes them and returns reports per second:
    /// what the generator offers, with nobody waiting for the router.
    fn open_loop(&self) -> anyhow::Result<f64> {
        let start = Instant::now();
        for i in 0..self.reports.len() {
            self.send(i)?;
        }
        Ok(self.reports.len() as f64 / start.elapsed().as_secs_f64())
    }
}

/// What a closed-loop run got to.
struct Progress {
    /// Groups the router joined upstream.
    completed: usize,
    /// Reports sent.
    sent: usize,
    /// From the first report sent until the last group the router finished.
    elapsed: Duration,
    /// Why the run ended early, if it did.
    cut: Option<&'static str>,
}

/// Sends the reports, keeping at most [`WINDOW_MESSAGES`] ahead of the router.
fn drive(gen: &Generator, router: &mut Router) -> anyhow::Result<Progress> {
    let total: usize = gen.reports.iter().map(|r| r.2).sum();
    let base = router.upstream_groups()?;
    let start = Instant::now();
    let (mut sent, mut records_sent, mut completed) = (0, 0, 0);
    let mut last = start;
    loop {
        // Whole reports ahead of the router, counted by the records it has not finished.
        while sent < gen.reports.len()
            && records_sent - completed < WINDOW_MESSAGES * gen.reports[sent].2
        {
            gen.send(sent)?;
            records_sent += gen.reports[sent].2;
            sent += 1;
        }
        let now_done = router.upstream_groups()?.saturating_sub(base);
        let now = Instant::now();
        if now_done > completed {
            completed = now_done;
            last = now;
        }
        let cut = if completed >= total {
            None
        } else if now - last > STALL {
            Some("stalled")
        } else if now - start > RUN_LIMIT {
            Some("time limit")
        } else {
            std::thread::sleep(POLL);
            continue;
        };
        return Ok(Progress {
            completed,
            sent,
            elapsed: last - start,
            cut,
        });
    }
}

/// One run: a fresh lab, `kind` as its router, `groups` new groups reported in `version`.
/// Memory is read before the first report and after the last group.
///
/// # Errors
/// The lab, the router or the generator could not be set up.
pub fn measure(
    kind: Kind,
    mgm: &Path,
    version: IgmpVersion,
    groups: usize,
) -> anyhow::Result<Value> {
    let ver = match version {
        IgmpVersion::V2 => "v2",
        IgmpVersion::V3 => "v3",
    };
    eprintln!(
        "control: {} learning {groups} groups from IGMP{ver} reports",
        kind.name()
    );
    // Tags start with "t" so that `sweep_stale` removes the lab if this process is killed.
    let lab = Lab::up(&unique_tag("t"), &[version])?;
    // igmpproxy keeps its upstream host memberships on one socket, and the kernel refuses
    // more than igmp_max_memberships (default 20) groups per socket and more than
    // optmem_max (default 128 KiB, 48 bytes a group: about 2,700) of option memory. mgm
    // spreads them over sockets and runs with the defaults.
    if kind == Kind::Igmpproxy {
        lab.router
            .sysctl("net.ipv4.igmp_max_memberships", &(groups + 64).to_string())?;
        lab.router
            .sysctl("net.core.optmem_max", &(131_072 + 128 * groups).to_string())?;
    }
    let gen = Generator::new(&lab.receivers[0], receiver_addr(0), version, groups)?;
    let offered = gen.open_loop()?;
    let max_groups = (groups + 1_000).to_string();
    let mut router = Router::start(
        kind,
        mgm,
        &lab,
        // No admission limit: by default each interface hands mgm 1,000 group records a
        // second, and the run would measure that limiter (igmpproxy has none).
        &[
            "--xdp-mode",
            "native",
            "--igmp-max-groups",
            &max_groups,
            "--igmp-admit-rate",
            "0",
        ],
        true,
    )?;
    let idle = Memory::of(router.pid())?;
    let (sched, own) = (Sched::of(router.pid())?, Sched::of_this_thread()?);
    let p = drive(&gen, &mut router)?;
    let sched = Sched::of(router.pid())?.since(sched);
    let own = Sched::of_this_thread()?.since(own);
    // Let the kernel settle the last joins before memory is read.
    std::thread::sleep(Duration::from_millis(200));
    let after = Memory::of(router.pid())?;
    let lost = router.lost()?;
    let secs = p.elapsed.as_secs_f64().max(1e-6);
    let records_per_message = match version {
        IgmpVersion::V2 => 1,
        IgmpVersion::V3 => RECORDS_PER_REPORT,
    };
    let messages_done = p.completed.div_ceil(records_per_message);
    Ok(json!({
        "router": kind.name(),
        "version": ver,
        "groups": groups,
        "records_per_message": records_per_message,
        "completed": p.completed,
        "messages_sent": p.sent,
        "cut": p.cut,
        "seconds": secs,
        "records_per_second": p.completed as f64 / secs,
        "messages_per_second": messages_done as f64 / secs,
        "generator_messages_per_second": offered,
        // The router's own CPU time over the run, and how long it waited runnable for a CPU:
        // records per CPU second hold on a machine busy with other work, records/s do not.
        "router_cpu_seconds": sched.run.as_secs_f64(),
        "router_runqueue_seconds": sched.waited.as_secs_f64(),
        "records_per_cpu_second": p.completed as f64 / sched.run.as_secs_f64().max(1e-6),
        // The generator's thread (sends, polls, and the XDP program runs in its softirqs):
        // on two CPUs its time is time the router does not get.
        "generator_cpu_seconds": own.run.as_secs_f64(),
        "lost_messages": lost,
        "memory_idle": idle.json(),
        "memory": after.json(),
    }))
}

/// Adds to each mgm run its ratio against the igmpproxy run of the same version and scale.
pub fn with_ratios(runs: Vec<Value>) -> Vec<Value> {
    let baseline = |r: &Value| -> Option<f64> {
        runs.iter().find(|b| {
            b["router"] == "igmpproxy" && b["version"] == r["version"] && b["groups"] == r["groups"]
        })?["records_per_second"]
            .as_f64()
    };
    let ratios: Vec<Option<f64>> = runs
        .iter()
        .map(|r| {
            let own = r["records_per_second"].as_f64()?;
            (r["router"] == "mgm").then(|| baseline(r).map(|b| own / b))?
        })
        .collect();
    runs.into_iter()
        .zip(ratios)
        .map(|(mut r, ratio)| {
            r["ratio_vs_igmpproxy"] = json!(ratio);
            r
        })
        .collect()
}

pub fn print(reports: &[Value]) {
    println!(
        "\ncontrol plane: IGMP reports processed end to end (report sent → group joined upstream),"
    );
    println!(
        "IGMPv3 with {RECORDS_PER_REPORT} group records per report, IGMPv2 with one; closed loop, \
         {WINDOW_MESSAGES} reports in flight; mgm with --igmp-admit-rate 0 (no admission limit):"
    );
    println!(
        "  {:<10} {:>3} {:>8} {:>9} {:>8} {:>10} {:>10} {:>11} {:>5} {:>15} {:>6} {:>8} {:>12} {:>7}",
        "router",
        "ver",
        "groups",
        "completed",
        "seconds",
        "reports/s",
        "records/s",
        "× igmpproxy",
        "lost",
        "generator rep/s",
        "cpu s",
        "waited s",
        "records/cpu s",
        "gen cpu s"
    );
    for r in reports {
        let ratio = r["ratio_vs_igmpproxy"]
            .as_f64()
            .map_or(String::new(), |x| format!("{x:.2}"));
        let cut = r["cut"]
            .as_str()
            .map_or(String::new(), |c| format!("  ({c})"));
        println!(
            "  {:<10} {:>3} {:>8} {:>9} {:>8.3} {:>10.0} {:>10.0} {:>11} {:>5} {:>15.0} {:>6.3} {:>8.3} {:>12.0} {:>7.3}{cut}",
            r["router"].as_str().unwrap_or("?"),
            r["version"].as_str().unwrap_or("?"),
            r["groups"].to_string(),
            r["completed"].to_string(),
            r["seconds"].as_f64().unwrap_or(f64::NAN),
            r["messages_per_second"].as_f64().unwrap_or(f64::NAN),
            r["records_per_second"].as_f64().unwrap_or(f64::NAN),
            ratio,
            r["lost_messages"].to_string(),
            r["generator_messages_per_second"]
                .as_f64()
                .unwrap_or(f64::NAN),
            r["router_cpu_seconds"].as_f64().unwrap_or(f64::NAN),
            r["router_runqueue_seconds"].as_f64().unwrap_or(f64::NAN),
            r["records_per_cpu_second"].as_f64().unwrap_or(f64::NAN),
            r["generator_cpu_seconds"].as_f64().unwrap_or(f64::NAN),
        );
    }
}
