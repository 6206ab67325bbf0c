//! The router's path with every forwarder ready at once, fed by turns, with the flow's
//! receivers on the router's CPU.
//!
//! Receivers on the router's CPU take no wake-ups between CPUs, so XDP forwarders compare on
//! equal terms; but measured one forwarder at a time, a forwarder's time moved by about ±15 %
//! between runs minutes apart (the page allocator's state, the host under the VM): as much as
//! the differences being measured. Here every forwarder compared is in place on the router
//! together. They do not disturb each other: mgm's program sits on the interfaces, the raw
//! redirects are only loaded, and each forwarder in the stack takes frames on an ingress of its
//! own: ipmr on the upstream interface (its route names it), the bridge and the TC program
//! each on an interface of their own ([`FeedIngress`]; the feed hands a frame to the stack on
//! the interface it names, and no frame the feed makes passes a veth on its way in). The
//! feeder hands frames to each in turn for a short slice, turn after turn, so every turn
//! compares the forwarders within a second, and each ratio is the median over turns of that
//! turn's ratio.
//!
//! The receivers' work is in these times, and it depends on how the copies arrive
//! ([`Counter`]): with the receivers counting in XDP, ipmr's copies cost them a copy each;
//! at TC ingress, XDP forwarders' copies cost them an skb each. Every case is measured with
//! both; between XDP forwarders either is a fair comparison, against ipmr the two differ.
//! perf samples the router's CPU meanwhile, so each forwarder's time is also given without the
//! receivers' share ([`split`]): the router's own work, which should come out the same
//! whichever way the receivers count.

use std::time::Duration;

use anyhow::Context;
use aya::programs::ProgramFd;
use serde_json::{json, Value};

use super::{
    check_stop, cpu, median,
    receive::Counter,
    router::{attached_xdp, FeedIngress, Flow, Forwarder},
    split::{self, Samples},
    Bench, HOST_CPU, ROUTER_CPU,
};
use crate::lab::{HOST_IF, UPSTREAM};

/// How many turns, and each forwarder's slice of a turn.
#[derive(Clone, Copy)]
pub struct Turns {
    pub count: usize,
    pub slice: Duration,
}

/// One forwarder's times over the turns.
struct Times {
    fw: Forwarder,
    ns: Vec<f64>,
    /// The smallest share of the copies the receivers counted in one slice.
    delivered: f64,
    /// The threads that fed its slices.
    tids: Vec<libc::pid_t>,
    /// perf's samples of those threads.
    samples: Samples,
}

/// Feeds `flow`'s frames (the generator's current frame) to every forwarder by turns, with
/// the flow's receivers on the router's CPU, counting in XDP and then at TC ingress: one
/// result for each.
///
/// # Errors
/// A forwarder did not start, a feed failed, or a forwarder's receivers missed copies.
pub(super) fn by_turns(
    bench: &mut Bench<'_>,
    flow: &Flow,
    size: usize,
    plan: Turns,
) -> anyhow::Result<Vec<Value>> {
    check_stop()?;
    let harness = &bench.harness;
    let router = &bench.lab.router;
    let _mgm = harness.start(Forwarder::Mgm, flow, &[])?;
    let mgm = attached_xdp(router, UPSTREAM)?.context("mgm attached no program")?;
    let _kernel = if bench.forwarders.contains(&Forwarder::Kernel) {
        Some(harness.start(Forwarder::Kernel, flow, &[])?)
    } else {
        None
    };
    // Declared before the forwarders on them, these are dropped after them.
    let (bridge_in, tc_in) = (
        FeedIngress::new(router, "fbr0")?,
        FeedIngress::new(router, "ftc0")?,
    );
    let _bridge = harness.start_on(Forwarder::Bridge, flow, &[], bridge_in.name())?;
    let _tc = harness.start_on(Forwarder::Tc, flow, &[], tc_in.name())?;
    let raw = harness.load_unattached(Forwarder::Raw, flow)?;
    let raw_mac = harness.load_unattached(Forwarder::RawMac, flow)?;
    // With no program in the feeder's slot, the frame goes to the stack of the interface.
    let program = |fw| -> (Option<&ProgramFd>, &str) {
        match fw {
            Forwarder::Mgm => (Some(&mgm), UPSTREAM),
            Forwarder::Raw => (Some(&raw.1), UPSTREAM),
            Forwarder::RawMac => (Some(&raw_mac.1), UPSTREAM),
            Forwarder::Bridge => (None, bridge_in.name()),
            Forwarder::Tc => (None, tc_in.name()),
            // ipmr, whose route names the upstream interface.
            _ => (None, UPSTREAM),
        }
    };
    let lab = bench.lab;
    cpu::with_softirq_napi(&lab.receivers[..flow.fanout], HOST_IF, HOST_CPU, || {
        let fed = [Counter::Xdp, Counter::Tc].map(|counter| {
            bench.receivers.count_with(lab, flow.fanout, counter)?;
            let name = format!("turns-{size}B-fanout{}-{}", flow.fanout, counter.name());
            let recording = split::record(bench.harness.scratch, &name)?;
            let mut times = feed_by_turns(bench, flow, plan, &program)?;
            let threads = recording.finish()?;
            for t in &mut times {
                for tid in &t.tids {
                    if let Some(samples) = threads.get(tid) {
                        t.samples.add(samples);
                    }
                }
            }
            let summary = summarize(size, flow.fanout, plan, counter, &times)?;
            if let Some(dir) = &bench.plan.profile {
                for t in &times {
                    let ns = &summary[format!("{}_router_ns_per_packet", t.fw.name())];
                    let path = dir.join(format!("{name}-{}.txt", t.fw.name()));
                    split::write_top(&path, &t.samples.own, ns.as_f64().unwrap_or(f64::NAN))?;
                }
            }
            Ok(summary)
        });
        // Back as the rate runs need them, also when feeding failed.
        bench.receivers.count_with(lab, flow.fanout, Counter::Xdp)?;
        fed.into_iter().collect()
    })
}

/// The turns themselves. mgm installs its entry on the first packet, so one unmeasured turn
/// comes first.
fn feed_by_turns<'p>(
    bench: &mut Bench<'_>,
    flow: &Flow,
    plan: Turns,
    program: &impl Fn(Forwarder) -> (Option<&'p ProgramFd>, &'p str),
) -> anyhow::Result<Vec<Times>> {
    let mut times: Vec<Times> = bench
        .forwarders
        .iter()
        .map(|&fw| Times {
            fw,
            ns: Vec::new(),
            delivered: 1.0,
            tids: Vec::new(),
            samples: Samples::default(),
        })
        .collect();
    for turn in 0..=plan.count {
        check_stop()?;
        // What ran just before shows in a forwarder's time: each turn starts with another.
        let n = times.len();
        for i in 0..n {
            let t = &mut times[(i + turn) % n];
            let before = bench.receivers.counts()?;
            let (next, ingress) = program(t.fw);
            let fed =
                bench
                    .generator
                    .feed(&bench.lab.router, ingress, next, ROUTER_CPU, plan.slice)?;
            if turn == 0 {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            let after = bench.receivers.counts()?;
            let got: u64 = (0..flow.fanout).map(|r| after[r] - before[r]).sum();
            let share = got as f64 / (fed.frames as f64 * flow.fanout as f64);
            t.delivered = t.delivered.min(share);
            t.ns.push(fed.ns_per_frame);
            t.tids.push(fed.tid);
        }
    }
    // The receivers take their copies in during the feed; a forwarder whose copies did not
    // all arrive was not doing the work being timed.
    for t in &times {
        anyhow::ensure!(
            t.delivered > 0.99,
            "{} delivered only {:.0} % of its copies while fed by turns",
            t.fw.name(),
            t.delivered * 100.0
        );
    }
    Ok(times)
}

/// Medians of each forwarder's times, and mgm's capacity against each other forwarder as the
/// median over turns of that turn's ratio, with its quartiles; then the same without the
/// receivers' share of each forwarder's time.
///
/// # Errors
/// perf sampled none of a forwarder's feeds.
fn summarize(
    size: usize,
    fanout: usize,
    plan: Turns,
    counter: Counter,
    times: &[Times],
) -> anyhow::Result<Value> {
    let of = |fw| times.iter().find(|t| t.fw == fw).expect("every forwarder");
    let mut out = json!({
        "frame_bytes": size,
        "fanout": fanout,
        "receivers_count_in": counter.name(),
        "turns": plan.count,
        "slice_seconds": plan.slice.as_secs_f64(),
    });
    // Each forwarder's own part of its time: 1 − the receivers' share.
    let mut own = Vec::new();
    for t in times {
        let share = t.samples.split.receivers_share().with_context(|| {
            format!(
                "perf sampled nothing of {}'s feeds by turns (did the kernel rename {}?)",
                t.fw.name(),
                split::BATCH
            )
        })?;
        let fw = t.fw.name();
        let ns = median(t.ns.clone());
        out[format!("{fw}_ns_per_packet")] = json!(ns);
        out[format!("{fw}_copies_delivered")] = json!(t.delivered);
        out[format!("{fw}_receivers_share")] = json!(share);
        out[format!("{fw}_perf_samples")] = json!(t.samples.split.timed);
        out[format!("{fw}_router_ns_per_packet")] = json!(ns * (1.0 - share));
        own.push((t.fw, 1.0 - share));
    }
    let own = |fw| {
        own.iter()
            .find(|(f, _)| *f == fw)
            .map_or(f64::NAN, |(_, o)| *o)
    };
    let compared: Vec<Forwarder> = times.iter().map(|t| t.fw).collect();
    for (a, b) in pairs(&compared) {
        let scale = own(b) / own(a);
        let (a, b) = (of(a), of(b));
        // Capacity is 1 / ns: a's capacity over b's is b's time over a's.
        let ratios: Vec<f64> = a.ns.iter().zip(&b.ns).map(|(x, y)| y / x).collect();
        let router: Vec<f64> = ratios.iter().map(|r| r * scale).collect();
        let key = format!("{}_vs_{}", a.fw.name(), b.fw.name());
        for (key, ratios) in [
            (format!("{key}_capacity"), ratios),
            (format!("{key}_router_capacity"), router),
        ] {
            out[format!("{key}_quartiles")] = json!(quartiles(&ratios));
            out[key] = json!(median(ratios));
        }
    }
    Ok(out)
}

/// The capacity ratios reported: mgm against every other forwarder compared, and what writing
/// the source MAC costs the raw redirect.
pub(super) fn pairs(compared: &[Forwarder]) -> Vec<(Forwarder, Forwarder)> {
    compared
        .iter()
        .filter(|&&fw| fw != Forwarder::Mgm)
        .map(|&b| (Forwarder::Mgm, b))
        .chain([(Forwarder::RawMac, Forwarder::Raw)])
        .collect()
}

/// First and third quartile (nearest rank).
fn quartiles(v: &[f64]) -> [f64; 2] {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| {
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    [at(0.25).unwrap_or(f64::NAN), at(0.75).unwrap_or(f64::NAN)]
}
