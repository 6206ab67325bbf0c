//! Scale: mgm forwarding one flow while it holds 100k (S,G) entries on 64 interfaces, against
//! the same flow with its entry alone, on one lab of 64 router interfaces.
//!
//! The entries go in the way a deployment fills them ([`crate::bench::table`]), the packets
//! that resolve them from the generator.

use std::{net::Ipv4Addr, path::Path, time::Instant};

use anyhow::bail;
use serde_json::{json, Value};

use super::{
    check_stop, enter, feed_missing, generator::udp_frame, median, rate_cell, rate_is,
    router::Running, sender_mac, Bench, Flow, Forwarder, Plan, Scratch,
};
use crate::{
    bench::table,
    lab::{self, IgmpVersion, Lab, SENDER_ADDR},
};

/// Router interfaces: the upstream and 63 downstreams.
const INTERFACES: usize = 64;
/// The measured flow's frame size.
const FRAME: usize = 64;

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
    println!("scale: {}", bench.generator.announce());
    let feed_missing = feed_missing(&bench.generator);
    if let Some(why) = &feed_missing {
        println!("scale: the router's path fed directly left out: {why}");
    }
    table::prepare_router(&lab.router, entries)?;
    let flow = Flow {
        source: SENDER_ADDR,
        group: super::GROUP,
        fanout: 1,
    };
    let mac = sender_mac(&lab)?;
    let flow_frame = udp_frame(mac, SENDER_ADDR, flow.group, FRAME);
    let args = table::daemon_args(entries.div_ceil(INTERFACES as u32 - 1) as usize);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    println!("scale: {}", table::ADMISSION);
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
    let (generator, sender) = (&mut bench.generator, &bench.lab.sender);
    let (reports_secs, resolved) = table::fill(
        &bench.lab.receivers,
        daemon,
        entries,
        // In calls of 128 frames with a pause after each (the generator's pacing): bursts
        // overflowed the router's veth ring (256 frames) while its miss path drained it, and
        // lost most groups' frames sweep after sweep.
        &mut |groups: &[Ipv4Addr]| generator.send_to_each(sender, groups),
        &check_stop,
    )?;
    let fill_secs = start.elapsed().as_secs_f64();
    let mut full = Vec::new();
    for _ in 0..rounds {
        check_stop()?;
        full.push(bench.sample_with_path(Forwarder::Mgm, &flow, FRAME)?);
    }
    let installed = table::resolved_groups(daemon.pin_dir())?.len();
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
    // Whether most of them saturated the router: only then is a rate its capacity.
    let saturated =
        |v: &[Value]| 2 * v.iter().filter(|r| r["router_saturated"] == true).count() > v.len();
    let correct = full
        .iter()
        .all(|r| r["min_receiver_pps"].as_f64().is_some_and(|x| x > 0.0));
    let summary = json!({
        "generator": bench.generator.describe(),
        "left_out": feed_missing.as_ref().map(|why| json!({"path_fed_directly": why})),
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
        "full_vs_alone_rate_is": rate_is(saturated(&full), saturated(&alone)),
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
    let f = |k: &str| summary[k].as_f64().unwrap_or(f64::NAN);
    let path = if feed_missing.is_some() {
        String::new()
    } else {
        format!(
            "path fed directly: alone {:.0} ns/packet, among them {:.0}: capacity {:.2}×; with the receiver on the router's CPU: alone {:.0}, among them {:.0}: capacity {:.2}×, alone again afterwards {:.0}: {:.2}×; ",
            f("alone_path_ns_per_packet"),
            f("full_path_ns_per_packet"),
            f("full_vs_alone_path_capacity"),
            f("alone_local_path_ns_per_packet"),
            f("full_local_path_ns_per_packet"),
            f("full_vs_alone_local_path_capacity"),
            f("alone_after_local_path_ns_per_packet"),
            f("full_vs_alone_after_local_path_capacity"),
        )
    };
    println!(
        "\nscale ({} entries, {INTERFACES} interfaces, {FRAME}-byte frames, fan-out 1, medians):\n  \
         alone {:.3} Mpps ({:.0} ns/packet), among them {:.3} Mpps ({:.0} ns/packet): {}× \
         (≥: only the runs alone saturated the router, ≤: only those among them did, in \
         brackets: neither did, so no capacity ratio); \
         {path}flow reached only its receiver: {correct}; filled in {:.1} s ({:.1} s of it for the reports); stopped in {stop_secs:.1} s{}",
        entries + 1,
        f("alone_per_receiver_pps") / 1e6,
        f("alone_router_ns_per_packet"),
        f("full_per_receiver_pps") / 1e6,
        f("full_router_ns_per_packet"),
        rate_cell(
            f("full_vs_alone_rate"),
            summary["full_vs_alone_rate_is"].as_str().unwrap_or("?")
        ),
        fill_secs,
        reports_secs,
        if stopped { "" } else { " (killed after 10 s)" },
    );
    Ok(summary)
}
