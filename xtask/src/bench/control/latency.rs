//! Join-to-first-packet latency: the sender streams to a group the receiver has not joined
//! (so the router has already seen the flow and decided it goes nowhere), then the receiver
//! joins through its kernel's host stack; the time from the join syscall to the first
//! datagram of the group on the receiver's socket. mgm and igmpproxy each get a lab of their
//! own, and their joins alternate (A B B A …), each on a group neither has seen before.

use std::{
    net::Ipv4Addr,
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::Context;
use serde_json::{json, Value};

use super::{Kind, Router};
use crate::lab::{
    receiver_addr,
    traffic::{Receiver, Sender},
    unique_tag, IgmpVersion, Lab, SENDER_ADDR,
};

/// The sender's packet spacing: the resolution of every latency below.
const PACKET_INTERVAL: Duration = Duration::from_millis(1);
/// How long the group streams before the join, so the router has handled the unwanted flow.
const WARMUP: Duration = Duration::from_millis(200);
/// A join with no packet after this long counts as a miss.
const GIVE_UP: Duration = Duration::from_secs(3);
/// Short last-member timers for mgm, so a leave is done quickly; each join uses a new group,
/// so they do not change what is measured. igmpproxy runs with quickleave.
const MGM_ARGS: [&str; 4] = [
    "--xdp-mode",
    "native",
    "--igmp-last-member-interval-ms",
    "100",
];

/// A router with its lab, one receiver and a sender.
struct Bed {
    kind: Kind,
    rx: Receiver,
    tx: Sender,
    /// Latencies of the joins that got a packet.
    samples: Vec<Duration>,
    misses: usize,
    /// Kept running until the bed drops, before its lab.
    _router: Router,
    _lab: Lab,
}

impl Bed {
    fn new(kind: Kind, mgm: &Path) -> anyhow::Result<Bed> {
        let lab = Lab::up(&unique_tag("t"), &[IgmpVersion::V3])?;
        let router = Router::start(kind, mgm, &lab, &MGM_ARGS, false)?;
        let rx = Receiver::new(&lab.receivers[0], receiver_addr(0))?;
        let tx = Sender::new(&lab.sender, SENDER_ADDR, 8)?;
        Ok(Bed {
            kind,
            rx,
            tx,
            samples: Vec::new(),
            misses: 0,
            _router: router,
            _lab: lab,
        })
    }

    /// One join of `group` while the sender streams it; leaves it again afterwards.
    fn trial(&mut self, group: Ipv4Addr) -> anyhow::Result<()> {
        match join_latency(&mut self.tx, &self.rx, group)? {
            Some(d) => self.samples.push(d),
            None => self.misses += 1,
        }
        Ok(())
    }

    fn json(&self) -> Value {
        summary(&self.samples, self.misses)
    }
}

/// The joins' latency figures: count, misses, p50, p99, min, max and every sample, in ms.
pub(super) fn summary(samples: &[Duration], misses: usize) -> Value {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    json!({
        "joins": ms.len() + misses,
        "misses": misses,
        "p50_ms": percentile(&ms, 50.0),
        "p99_ms": percentile(&ms, 99.0),
        "min_ms": ms.first(),
        "max_ms": ms.last(),
        "samples_ms": ms,
    })
}

/// One join of `group` by `rx` while `tx` streams to it: the time from the join to the first
/// datagram, `None` after [`GIVE_UP`]. The receiver leaves the group again afterwards.
///
/// # Errors
/// A socket operation failed.
pub(super) fn join_latency(
    tx: &mut Sender,
    rx: &Receiver,
    group: Ipv4Addr,
) -> anyhow::Result<Option<Duration>> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| -> anyhow::Result<Option<Duration>> {
        let stream = s.spawn(|| -> anyhow::Result<()> {
            while !stop.load(Ordering::Relaxed) {
                tx.send(group, 100)?;
                std::thread::sleep(PACKET_INTERVAL);
            }
            Ok(())
        });
        let measured = (|| {
            std::thread::sleep(WARMUP);
            rx.drain()?;
            let joined = Instant::now();
            rx.join(group)?;
            let first = rx.first_arrival(group, GIVE_UP);
            rx.leave(group)?;
            anyhow::Ok(first.map(|at| at - joined))
        })();
        stop.store(true, Ordering::Relaxed);
        stream
            .join()
            .map_err(|_| anyhow::anyhow!("the sender thread panicked"))??;
        measured
    })
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// `joins` joins on each router of `kinds`, alternating, each on a fresh group.
///
/// # Errors
/// A lab or router could not be set up, or a socket operation failed.
pub fn measure(mgm: &Path, joins: usize, kinds: &[Kind]) -> anyhow::Result<Value> {
    let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    eprintln!(
        "control: join-to-first-packet latency, {joins} joins each on {}",
        names.join(" and ")
    );
    let mut beds = kinds
        .iter()
        .map(|&k| Bed::new(k, mgm))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for k in 0..joins {
        // A B, then B A: neither router always goes first after the other's trial.
        let mut order: Vec<usize> = (0..beds.len()).collect();
        if k % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let group = Ipv4Addr::new(239, 77, i as u8, k as u8);
            beds[i]
                .trial(group)
                .with_context(|| format!("{} join of {group}", beds[i].kind.name()))?;
        }
    }
    let mut out = json!({
        "packet_interval_ms": PACKET_INTERVAL.as_secs_f64() * 1e3,
        "warmup_ms": WARMUP.as_millis() as u64,
    });
    for bed in &beds {
        out[bed.kind.name()] = bed.json();
    }
    Ok(out)
}

pub fn print(latency: &Value) {
    println!(
        "\ncontrol plane: join-to-first-packet latency (IP_ADD_MEMBERSHIP → first datagram; sender every {} ms):",
        latency["packet_interval_ms"]
    );
    println!(
        "  {:<10} {:>6} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "router", "joins", "misses", "p50 ms", "p99 ms", "min ms", "max ms"
    );
    for name in ["mgm", "igmpproxy"] {
        let r = &latency[name];
        if r.is_null() {
            continue;
        }
        let ms = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.2}"));
        println!(
            "  {:<10} {:>6} {:>7} {:>9} {:>9} {:>9} {:>9}",
            name,
            r["joins"].to_string(),
            r["misses"].to_string(),
            ms(&r["p50_ms"]),
            ms(&r["p99_ms"]),
            ms(&r["min_ms"]),
            ms(&r["max_ms"]),
        );
    }
}
