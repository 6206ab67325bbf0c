//! The forwarding-rate benchmark: mgm's XDP path against the kernel's bridge with IGMP
//! snooping (the stack's skb replication, at L2), a TC program that replicates with
//! `bpf_clone_redirect` (the other eBPF design), the kernel's ipmr (smcroute) where the kernel
//! has multicast routing, a raw XDP broadcast redirect with and without the source MAC written,
//! and an XDP_DROP ceiling, on one lab topology, with one generator, runs interleaved. Two CPUs: the router's ingress NAPI thread on one, the generator and the
//! receivers on the other; the router CPU's busy share and its cost per ingress packet are
//! reported next to every rate, since a generator that cannot saturate the router leaves the
//! per-packet cost as the fair comparison.

mod cpu;
mod generator;
mod plot;
mod profile;
mod receive;
mod router;
mod scale;
mod split;
mod turns;

pub use scale::scale;

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use self::{
    cpu::{CpuTimes, HOST_CPU, ROUTER_CPU},
    generator::{udp_frame, Generator},
    receive::{rx_stats, tx_dropped, Receivers},
    router::{attached_xdp, Flow, Forwarder, Harness},
    turns::Turns,
};
use crate::lab::{self, IgmpVersion, Lab, HOST_IF, SENDER_ADDR, UPSTREAM};

/// Frame sizes as handed to the veth, Ethernet header included, no FCS: 64 is the smallest
/// Ethernet frame, 1514 carries a 1500-byte IPv4 packet (the MTU).
pub const FRAME_SIZES: [usize; 2] = [64, 1514];
/// The measured flow's group.
const GROUP: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);
/// Receivers in the lab: the largest fan-out.
const RECEIVERS: usize = 8;
/// The forwarders compared at every fan-out, mgm first: ipmr only where the kernel has it.
fn forwarders(ipmr: bool) -> Vec<Forwarder> {
    let mut all = vec![Forwarder::Mgm];
    if ipmr {
        all.push(Forwarder::Kernel);
    }
    all.extend([
        Forwarder::Bridge,
        Forwarder::Tc,
        Forwarder::Raw,
        Forwarder::RawMac,
    ]);
    all
}

/// What the tables say beside the baselines that are not routers like mgm.
const BASELINE_NOTES: &str = "bridge = the kernel bridge, IGMP snooping with static mdb entries: L2, no TTL or MAC rewrite; \
tc = bench_tc_clone at TC ingress, one bpf_clone_redirect per outgoing interface, source MAC and TTL written; \
raw = XDP broadcast redirect that writes nothing; raw+mac = the same writing each copy's source MAC, the least a correct router does";
/// What the tables say where the socket generator sent.
const SOCKET_NOTE: &str = "socket generator: frames reach the router as the sender's skbs, not as \
a NIC's pages: its veth copies each into a page before an XDP forwarder runs, and hands the bridge \
and tc the skb, which a NIC's frame would need built; so ns against bridge and tc lean towards \
them, and against raw and raw+mac compare like with like. Not comparable with live-frames runs";
/// A font for the plot (Debian's fonts-dejavu-core).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// How much to measure.
struct Plan {
    fanouts: Vec<usize>,
    rounds: usize,
    duration: Duration,
    warmup: Duration,
    /// How long the router's path is fed directly after each rate run.
    path: Duration,
    /// The path of all forwarders by turns, receivers on the router's CPU, after each frame
    /// size's rate runs.
    turns: Turns,
    /// `--profile`: where each run's perf data and report go.
    profile: Option<PathBuf>,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                fanouts: vec![1, 8],
                rounds: 1,
                duration: Duration::from_millis(500),
                warmup: Duration::from_millis(100),
                path: Duration::from_millis(200),
                turns: Turns {
                    count: 9,
                    slice: Duration::from_millis(50),
                },
                profile: None,
            }
        } else {
            Plan {
                fanouts: vec![1, 2, 4, 8],
                rounds: 5,
                duration: Duration::from_secs(2),
                warmup: Duration::from_millis(300),
                path: Duration::from_millis(500),
                turns: Turns {
                    count: 25,
                    slice: Duration::from_millis(100),
                },
                profile: None,
            }
        }
    }
}

/// Set by SIGINT/SIGTERM: the bench stops at the next check and its guards clean up.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// While it lives, SIGINT and SIGTERM set [`STOP`] instead of killing the process, so the
/// guards of namespaces and daemons run.
struct Signals;

impl Signals {
    fn catch() -> Signals {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: the handler only stores to an atomic.
            unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
        }
        Signals
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: restoring the default disposition.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
}

/// What every run on a lab starts with: no lab left over from a killed run, two CPUs, this
/// thread (and so every daemon it starts) on the router's CPU, and SIGINT and SIGTERM
/// unwinding through the guards instead of killing the process.
fn enter() -> anyhow::Result<(cpu::PinGuard, Signals)> {
    lab::sweep_stale()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        bail!("the forwarding and scale benchmarks need 2 CPUs (router and hosts apart); this machine has {cpus}");
    }
    // mgm and smcrouted are the router's control plane: they belong on its CPU, and there they
    // cannot take time from the generator and the receivers.
    let pin = cpu::PinGuard::new(ROUTER_CPU)?;
    Ok((pin, Signals::catch()))
}

/// Fails once SIGINT or SIGTERM arrived, so the caller unwinds through its guards.
fn check_stop() -> anyhow::Result<()> {
    if STOP.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Programs the benchmark runs against: smcroute (where the kernel has ipmr), a font for the
/// plot, and perf (the receivers' share by turns, and `--profile`). Idempotent.
fn tools(ipmr: bool) -> anyhow::Result<()> {
    let mut tools = vec![(FONT, "fonts-dejavu-core"), (profile::PERF, "linux-perf")];
    if ipmr {
        tools.push((router::SMCROUTED, "smcroute"));
    }
    crate::setup::ensure_packages(
        &tools,
        "the kernel baseline, the plot's font, the receivers' share by turns",
    )
}

/// Where the flow's receivers take in their copies while the router's path is fed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Receive {
    /// On the other CPU, as in the rate runs. The router's CPU wakes their NAPI threads, at a
    /// cost that depends on whether they were asleep: on this VM a cross-CPU wake-up is an
    /// interrupt between virtual CPUs, often the largest cost of the path, and it varies with
    /// how far behind the receivers are, not with the forwarder.
    Apart,
    /// On the router's CPU, in softirq right after the router hands the copies over: no
    /// wake-ups, and every copy's receive (the veth ring, `bench_count`, freeing the frame) is
    /// in the time, the same for every XDP forwarder. The kernel's copies arrive as skbs that
    /// the receiver must copy into an XDP buffer, which adds to ipmr's time.
    Local,
}

impl Receive {
    fn profile_suffix(self) -> &'static str {
        match self {
            Receive::Apart => "path",
            Receive::Local => "path-local",
        }
    }
}

/// Everything one measurement needs.
struct Bench<'a> {
    lab: &'a Lab,
    harness: Harness<'a>,
    generator: Generator,
    receivers: Receivers,
    /// The router's ingress NAPI thread(s), whose run time is the router's work.
    router_napi: Vec<libc::pid_t>,
    plan: Plan,
    /// What is compared: [`forwarders`] for this kernel.
    forwarders: Vec<Forwarder>,
}

/// Counters read before and after the generator runs, away from the send.
struct Slow {
    received: Vec<u64>,
    ingress: (u64, u64),
    /// Copies the flow's receivers had no room for, summed over receivers. A veth counts a
    /// redirected frame it had no room for on both ends (receiver rx, router tx) and a
    /// transmitted skb on the router's end only, so each receiver's is the larger of the two.
    receiver_drops: u64,
    /// The socket generator's frames the sender's veth had no room for in the router's ring
    /// (its tx_dropped; 0 for live frames, whose refusals the router's rx_dropped counts).
    refused_at_sender: u64,
}

/// Counters that must be read right next to the generator's send.
struct Fast {
    at: Instant,
    cpu: CpuTimes,
    napi_ns: u64,
}

impl<'a> Bench<'a> {
    /// Prepares `lab` for measuring: router settings, counters on every receiver, NAPI
    /// threads pinned (the router's ingress, and the first `pinned_receivers` receivers'),
    /// the generator loaded.
    fn new(
        lab: &'a Lab,
        tag: &str,
        mgm: &'a Path,
        bench_object: &'a Path,
        scratch: &'a Path,
        plan: Plan,
        pinned_receivers: usize,
    ) -> anyhow::Result<Bench<'a>> {
        prepare_router(lab)?;
        let receivers = Receivers::attach(lab, bench_object)?;
        let router_napi = cpu::threaded_napi(&lab.router, UPSTREAM, ROUTER_CPU)?;
        for host in &lab.receivers[..pinned_receivers] {
            cpu::threaded_napi(host, HOST_IF, HOST_CPU)?;
        }
        let frame = udp_frame(sender_mac(lab)?, SENDER_ADDR, GROUP, FRAME_SIZES[0]);
        let generator = Generator::load(bench_object, &lab.sender, frame)?;
        Ok(Bench {
            lab,
            harness: Harness {
                lab,
                mgm,
                bench_object,
                scratch,
                pin_dir: PathBuf::from("/sys/fs/bpf").join(format!("mgm-{tag}")),
            },
            generator,
            receivers,
            router_napi,
            plan,
            forwarders: forwarders(crate::bench::ipmr_missing().is_none()),
        })
    }

    fn fast(&self) -> anyhow::Result<Fast> {
        Ok(Fast {
            at: Instant::now(),
            cpu: CpuTimes::read(ROUTER_CPU)?,
            napi_ns: self
                .router_napi
                .iter()
                .map(|&p| cpu::run_time_ns(p))
                .sum::<anyhow::Result<u64>>()?,
        })
    }

    /// Counters of the flow's path; `ip` makes these slow (tens of ms), so they are read
    /// before [`Bench::fast`] at the start and after it at the end.
    fn slow(&self, fanout: usize) -> anyhow::Result<Slow> {
        Ok(Slow {
            received: self.receivers.counts()?,
            ingress: rx_stats(&self.lab.router, UPSTREAM)?,
            receiver_drops: (0..fanout)
                .map(|i| {
                    let (_, rx_dropped) = rx_stats(&self.lab.receivers[i], HOST_IF)?;
                    let tx_dropped = tx_dropped(&self.lab.router, &lab::downstream(i))?;
                    Ok(rx_dropped.max(tx_dropped))
                })
                .sum::<anyhow::Result<u64>>()?,
            refused_at_sender: match self.generator.live_frames_refused() {
                Some(_) => tx_dropped(&self.lab.sender, HOST_IF)?,
                None => 0,
            },
        })
    }

    /// One run: start `fw` for `flow`, measure its rate and its path with the receivers
    /// apart, stop. (With the receivers on the router's CPU, every forwarder is measured by
    /// turns instead.)
    fn measure(&mut self, fw: Forwarder, flow: &Flow, size: usize) -> anyhow::Result<Value> {
        check_stop()?;
        let _running = self.harness.start(fw, flow, &[])?;
        let mut run = self.sample(fw, flow, size)?;
        self.add_path(&mut run, fw, flow, size, Receive::Apart)?;
        Ok(run)
    }

    /// The running `fw`'s rate ([`Bench::sample`]) and then its path ([`Bench::path`]), with
    /// the receivers apart and on the router's CPU: the scale part's runs, which measure one
    /// forwarder with and without its table rather than forwarders against each other.
    fn sample_with_path(
        &mut self,
        fw: Forwarder,
        flow: &Flow,
        size: usize,
    ) -> anyhow::Result<Value> {
        let mut run = self.sample(fw, flow, size)?;
        self.add_path(&mut run, fw, flow, size, Receive::Apart)?;
        self.add_path(&mut run, fw, flow, size, Receive::Local)?;
        Ok(run)
    }

    /// [`Bench::path`] into `run`'s fields for `receive`; nothing where the kernel refuses
    /// live-frames test runs, which feeding the router needs.
    fn add_path(
        &mut self,
        run: &mut Value,
        fw: Forwarder,
        flow: &Flow,
        size: usize,
        receive: Receive,
    ) -> anyhow::Result<()> {
        if self.generator.live_frames_refused().is_some() {
            return Ok(());
        }
        let (ns, delivered) = self.path(fw, flow, size, receive)?;
        let prefix = match receive {
            Receive::Apart => "",
            Receive::Local => "local_",
        };
        run[format!("{prefix}path_ns_per_packet")] = json!(ns);
        run[format!("{prefix}path_copies_delivered")] = json!(delivered);
        Ok(())
    }

    /// The router's forwarding path alone: frames fed on the router's CPU into what runs on
    /// its ingress interface (the XDP program attached there, or the kernel's stack), timed
    /// by the kernel. Returns ns per ingress packet and the share of the copies the flow's
    /// receivers counted (a receiver that cannot keep up drops the rest at its ring).
    fn path(
        &mut self,
        fw: Forwarder,
        flow: &Flow,
        size: usize,
        receive: Receive,
    ) -> anyhow::Result<(f64, f64)> {
        let next = attached_xdp(&self.lab.router, UPSTREAM)?;
        let recording = match &self.plan.profile {
            Some(dir) => {
                let name = format!(
                    "{size}B-fanout{}-{}-{}",
                    flow.fanout,
                    fw.name(),
                    receive.profile_suffix()
                );
                Some(profile::start(dir, &name, &[])?)
            }
            None => None,
        };
        let lab = self.lab;
        let before = self.receivers.counts()?;
        let mut feed = || {
            self.generator.feed(
                &lab.router,
                UPSTREAM,
                next.as_ref(),
                ROUTER_CPU,
                self.plan.path,
            )
        };
        let fed = match receive {
            Receive::Apart => feed(),
            Receive::Local => {
                cpu::with_softirq_napi(&lab.receivers[..flow.fanout], HOST_IF, HOST_CPU, feed)
            }
        }?;
        if let Some(r) = recording {
            println!("  profile: {}", r.finish()?.display());
        }
        // Receivers on the other CPU finish what their rings hold.
        std::thread::sleep(Duration::from_millis(100));
        let after = self.receivers.counts()?;
        let got: u64 = after[..flow.fanout]
            .iter()
            .zip(&before)
            .map(|(a, b)| a - b)
            .sum();
        let copies = fed.frames as f64 * flow.fanout as f64;
        Ok((fed.ns_per_frame, got as f64 / copies))
    }

    /// Measures the running `fw` with the generator's current frame: warm up (mgm installs
    /// its entry on the first packet), then count around one send.
    fn sample(&self, fw: Forwarder, flow: &Flow, size: usize) -> anyhow::Result<Value> {
        self.generator.send(&self.lab.sender, self.plan.warmup)?;
        std::thread::sleep(Duration::from_millis(200));
        let recording = match &self.plan.profile {
            Some(dir) => {
                let name = format!("{size}B-fanout{}-{}", flow.fanout, fw.name());
                Some(profile::start(dir, &name, &self.router_napi)?)
            }
            None => None,
        };
        let a = self.slow(flow.fanout)?;
        let a_fast = self.fast()?;
        let offered = self.generator.send(&self.lab.sender, self.plan.duration)?;
        let b_fast = self.fast()?;
        let b = self.slow(flow.fanout)?;
        if let Some(r) = recording {
            println!("  profile: {}", r.finish()?.display());
        }
        let secs = b_fast.at.duration_since(a_fast.at).as_secs_f64();
        let got: Vec<u64> = b
            .received
            .iter()
            .zip(&a.received)
            .map(|(b, a)| b - a)
            .collect();
        let received: u64 = got.iter().sum();
        let ingress = b.ingress.0 - a.ingress.0;
        // Frames that did not fit the router's ingress ring: at its veth for live frames, at
        // the sender's for the socket's, which are offered too.
        let refused_at_sender = b.refused_at_sender - a.refused_at_sender;
        let refused = b.ingress.1 - a.ingress.1 + refused_at_sender;
        let offered_frames = offered.frames + refused_at_sender;
        let busy = a_fast.cpu.busy_until(b_fast.cpu);
        let napi_ns = (b_fast.napi_ns - a_fast.napi_ns) as f64;
        let napi_busy = napi_ns / (secs * 1e9);
        // Only the flow's receivers may get it.
        let stray: u64 = got[flow.fanout..].iter().sum();
        if stray > 0 && fw != Forwarder::Drop {
            bail!(
                "{} sent {stray} frames to receivers outside the flow",
                fw.name()
            );
        }
        Ok(json!({
            "forwarder": fw.name(),
            "frame_bytes": size,
            "fanout": flow.fanout,
            "seconds": secs,
            "offered_pps": offered_frames as f64 / offered.seconds,
            "generator_cpu_share": offered.cpu_share,
            "ingress_pps": ingress as f64 / secs,
            "ingress_ring_drops_pps": refused as f64 / secs,
            "received_pps": received as f64 / secs,
            "receiver_ring_drops_pps": (b.receiver_drops - a.receiver_drops) as f64 / secs,
            "per_receiver_pps": received as f64 / secs / flow.fanout as f64,
            "min_receiver_pps": got[..flow.fanout].iter().min().copied().unwrap_or(0) as f64 / secs,
            "router_napi_busy": napi_busy,
            "router_cpu0_busy": busy,
            "router_ns_per_ingress_packet": if ingress > 0 { napi_ns / ingress as f64 } else { f64::NAN },
            "router_saturated": saturated(napi_busy, offered_frames, refused),
        }))
    }
}

/// Runs the forwarding benchmark and returns its results (the `forwarding` key of
/// results.json); prints a table and writes the plot.
///
/// # Errors
/// The lab, a forwarder or the generator failed; every namespace and daemon is gone again.
pub fn forwarding(
    mgm: &Path,
    bench_object: &Path,
    quick: bool,
    profile: bool,
    fanouts: &[u8],
) -> anyhow::Result<Value> {
    let missing = crate::bench::ipmr_missing();
    if let Some(why) = &missing {
        println!("forwarding: kernel ipmr (smcroute) left out: {why}");
    }
    tools(missing.is_none())?;
    let _guards = enter()?;
    let tag = lab::unique_tag("t");
    let scratch = Scratch::new(&tag)?;
    let lab = Lab::up(&tag, &[IgmpVersion::V3; RECEIVERS])?;
    let mut plan = Plan::new(quick);
    if !fanouts.is_empty() {
        plan.fanouts = fanouts.iter().map(|&n| usize::from(n)).collect();
        plan.fanouts.sort_unstable();
        plan.fanouts.dedup();
    }
    if profile {
        plan.profile = Some(crate::workspace_root().join("target/bench/profile"));
    }
    let planned = plan.fanouts.clone();
    let bench = Bench::new(&lab, &tag, mgm, bench_object, &scratch.0, plan, RECEIVERS)?;
    println!("forwarding: {}", bench.generator.announce());
    let feed_missing = feed_missing(&bench.generator);
    if let Some(why) = &feed_missing {
        println!("forwarding: the router's path fed directly and by turns left out: {why}");
    }
    let generator = bench.generator.describe();
    let socket = bench.generator.live_frames_refused().is_some();
    let compared = bench.forwarders.clone();
    let (runs, by_turns) = run_all(bench, &lab)?;
    drop(lab);
    let summary = summarize(&runs);
    let with_path = feed_missing.is_none();
    let ratios = ratios(&summary, &compared, with_path);
    let kernel = crate::bench::kernel_release();
    print_table(&summary, &ratios, &compared, &kernel, with_path);
    print_turns(&by_turns, &compared);
    println!("  ({BASELINE_NOTES})");
    if socket {
        println!("  ({SOCKET_NOTE})");
    }
    let png = crate::workspace_root().join("target/bench/forwarding.png");
    if let Some(dir) = png.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    plot::plot(&summary, &by_turns, &png, FONT).context("cannot draw the plot")?;
    println!("wrote {}", png.display());
    let mut left_out = serde_json::Map::new();
    if let Some(why) = missing {
        left_out.insert("kernel_ipmr".into(), json!(why));
    }
    if let Some(why) = feed_missing {
        left_out.insert("path_fed_directly".into(), json!(why));
        left_out.insert("by_turns".into(), json!(why));
    }
    Ok(json!({
        "method": "one lab of network namespaces; generator (below) on CPU 1; router: threaded NAPI of its ingress veth on CPU 0; receivers: bench_count (XDP, counts and drops) with NAPI on CPU 1; medians of interleaved runs",
        "generator": generator,
        "saturated": SATURATED,
        "frame_bytes": "Ethernet frame handed to the veth, header included, no FCS (1514 = a 1500-byte IPv4 packet)",
        "kernel": kernel,
        "forwarders": compared.iter().map(|fw| fw.name()).collect::<Vec<_>>(),
        "left_out": (!left_out.is_empty()).then_some(Value::Object(left_out)),
        "baselines": BASELINE_NOTES,
        "fanouts": planned,
        "rounds": Plan::new(quick).rounds,
        "seconds_per_run": Plan::new(quick).duration.as_secs_f64(),
        "summary": summary,
        "ratios": ratios,
        "by_turns": by_turns,
        "runs": runs,
        "plot": png.display().to_string(),
    }))
}

/// Multicast forwarding needs reverse-path filtering off and, for ipmr, IP forwarding on; the
/// upstream veth needs GRO so its NAPI lives on with no XDP program (ipmr runs) and threaded
/// NAPI keeps one thread to pin.
fn prepare_router(lab: &Lab) -> anyhow::Result<()> {
    lab.router.sysctl("net.ipv4.ip_forward", "1")?;
    for conf in ["all", "default", UPSTREAM] {
        lab.router
            .sysctl(&format!("net.ipv4.conf.{conf}.rp_filter"), "0")?;
    }
    lab.router.enable_gro(UPSTREAM)
}

/// Why the router's path cannot be fed directly (per run and by turns), if it cannot.
fn feed_missing(generator: &Generator) -> Option<String> {
    generator.live_frames_refused().map(|why| {
        format!(
            "bench_feed needs live-frames test runs (a plain test run performs no redirect); {why}"
        )
    })
}

/// Every rate run, then (per frame size) the by-turns measurement of each fan-out where the
/// router can be fed directly.
fn run_all(mut bench: Bench<'_>, lab: &Lab) -> anyhow::Result<(Vec<Value>, Vec<Value>)> {
    let mac = sender_mac(lab)?;
    let (mut runs, mut by_turns) = (Vec::new(), Vec::new());
    let flow = |fanout| Flow {
        source: SENDER_ADDR,
        group: GROUP,
        fanout,
    };
    for size in FRAME_SIZES {
        bench
            .generator
            .set_frame(udp_frame(mac, SENDER_ADDR, GROUP, size))?;
        for round in 0..bench.plan.rounds {
            println!("forwarding: {size}-byte frames, round {}", round + 1);
            runs.push(bench.measure(Forwarder::Drop, &flow(1), size)?);
            // Each round starts with another forwarder: what ran just before (ipmr's skbs, a
            // page allocator drained by clones) shows in the next run's cost.
            let mut order = bench.forwarders.clone();
            let n = order.len();
            order.rotate_left(round % n);
            for fanout in bench.plan.fanouts.clone() {
                for &fw in &order {
                    let r = bench.measure(fw, &flow(fanout), size)?;
                    let path = r["path_ns_per_packet"]
                        .as_f64()
                        .map_or(String::new(), |ns| {
                            format!("; path fed directly {ns:>5.0} ns/packet")
                        });
                    println!(
                        "  fan-out {fanout} {:<12} offered {:>6.3} Mpps, router took {:>6.3}, received {:>6.3} per receiver ({:>6.3} lost at receivers), router {:>4.0} ns/packet, {}{path}",
                        fw.name(),
                        r["offered_pps"].as_f64().unwrap_or(0.0) / 1e6,
                        r["ingress_pps"].as_f64().unwrap_or(0.0) / 1e6,
                        r["per_receiver_pps"].as_f64().unwrap_or(0.0) / 1e6,
                        r["receiver_ring_drops_pps"].as_f64().unwrap_or(0.0) / 1e6,
                        r["router_ns_per_ingress_packet"].as_f64().unwrap_or(f64::NAN),
                        if r["router_saturated"] == true { "saturated" } else { "not saturated" },
                    );
                    runs.push(r);
                }
            }
        }
        if bench.generator.live_frames_refused().is_some() {
            continue;
        }
        for fanout in bench.plan.fanouts.clone() {
            let plan = bench.plan.turns;
            for t in turns::by_turns(&mut bench, &flow(fanout), size, plan)? {
                let times: Vec<String> = bench
                    .forwarders
                    .iter()
                    .map(|fw| {
                        let ns = t[format!("{}_ns_per_packet", fw.name())].as_f64();
                        format!("{} {:>5.0}", fw.name(), ns.unwrap_or(f64::NAN))
                    })
                    .collect();
                println!(
                    "  fan-out {fanout} by turns (ns/packet, receivers on the router's CPU counting in {}): {}",
                    t["receivers_count_in"].as_str().unwrap_or("?"),
                    times.join(", "),
                );
                by_turns.push(t);
            }
        }
    }
    Ok((runs, by_turns))
}

/// The sender's MAC, the source of every generated frame.
fn sender_mac(lab: &Lab) -> anyhow::Result<[u8; 6]> {
    router::mac_of(&lab.sender, HOST_IF)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Fields of a run whose medians the summary keeps.
const METRICS: [&str; 11] = [
    "offered_pps",
    "generator_cpu_share",
    "ingress_pps",
    "received_pps",
    "per_receiver_pps",
    "min_receiver_pps",
    "router_napi_busy",
    "router_cpu0_busy",
    "router_ns_per_ingress_packet",
    "path_ns_per_packet",
    "path_copies_delivered",
];

/// Medians per (frame size, fan-out, forwarder), and the share of its runs that saturated
/// the router.
fn summarize(runs: &[Value]) -> Vec<Value> {
    let mut groups: BTreeMap<(u64, u64, String), Vec<&Value>> = BTreeMap::new();
    for r in runs {
        let key = (
            r["frame_bytes"].as_u64().unwrap_or(0),
            r["fanout"].as_u64().unwrap_or(0),
            r["forwarder"].as_str().unwrap_or("?").to_owned(),
        );
        groups.entry(key).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|((size, fanout, fw), rs)| {
            let mut o =
                json!({"frame_bytes": size, "fanout": fanout, "forwarder": fw, "runs": rs.len()});
            for m in METRICS {
                o[m] = json!(median(rs.iter().filter_map(|r| r[m].as_f64()).collect()));
            }
            let saturated = rs.iter().filter(|r| r["router_saturated"] == true).count();
            o["router_saturated_share"] = json!(saturated as f64 / rs.len() as f64);
            o
        })
        .collect()
}

fn find(summary: &[Value], size: u64, fanout: u64, fw: Forwarder) -> Option<&Value> {
    summary.iter().find(|s| {
        s["frame_bytes"].as_u64() == Some(size)
            && s["fanout"].as_u64() == Some(fanout)
            && s["forwarder"].as_str() == Some(fw.name())
    })
}

/// How a run counts as saturating the router, for results.json.
const SATURATED: &str = "a run saturated the router when the router's ingress NAPI thread \
(all its forwarding work) was busy 90 % of the run or more, or its ingress ring refused more than \
1 % of the frames offered (also when other load on its CPU held it back: router_cpu0_busy); \
otherwise the router forwarded what the generator offered";

/// Whether the router was the bottleneck of a run ([`SATURATED`]). Otherwise its received
/// rate is what the generator (and the receivers beside it) allowed, not the router's
/// capacity.
fn saturated(napi_busy: f64, offered: u64, refused: u64) -> bool {
    napi_busy >= 0.9 || refused as f64 > 0.01 * offered as f64
}

/// What mgm's received rate over a baseline's says of their capacities, from whether each
/// saturated the router (in most of its runs): `capacity` when both did; `at_least` when only
/// the baseline did (mgm could have forwarded more); `at_most` when only mgm did; `offered`
/// when neither did, and both forwarded what was offered: no capacity ratio at all.
fn rate_is(mgm_saturated: bool, baseline_saturated: bool) -> &'static str {
    match (mgm_saturated, baseline_saturated) {
        (true, true) => "capacity",
        (false, true) => "at_least",
        (true, false) => "at_most",
        (false, false) => "offered",
    }
}

/// A rate ratio as the table shows it: a bound with its sign, bracketed when it is no
/// capacity ratio ([`rate_is`]).
fn rate_cell(ratio: f64, is: &str) -> String {
    match is {
        "capacity" => format!("{ratio:.2}"),
        "at_least" => format!("≥{ratio:.2}"),
        "at_most" => format!("≤{ratio:.2}"),
        _ => format!("({ratio:.2})"),
    }
}

/// mgm against each baseline per (frame size, fan-out), from the medians of the same run:
/// `mgm_vs_<baseline>_rate` (received per receiver) with `mgm_vs_<baseline>_rate_is`
/// ([`rate_is`]), `<baseline>_vs_mgm_ns_per_packet` (router CPU per ingress packet) and, where
/// the path was fed directly, `mgm_vs_<baseline>_path_capacity` (1 / path ns), for every
/// forwarder compared but mgm; and `mgm_vs_xdp_drop_rate`.
fn ratios(summary: &[Value], compared: &[Forwarder], with_path: bool) -> Vec<Value> {
    let mut out = Vec::new();
    for s in summary.iter().filter(|s| s["forwarder"] == "mgm") {
        let (size, fanout) = (
            s["frame_bytes"].as_u64().unwrap_or(0),
            s["fanout"].as_u64().unwrap_or(0),
        );
        let get = |fw, m: &str| {
            find(summary, size, fanout, fw)
                .and_then(|v| v[m].as_f64())
                .unwrap_or(f64::NAN)
        };
        let drop_ceiling = find(summary, size, 1, Forwarder::Drop)
            .and_then(|v| v["ingress_pps"].as_f64())
            .unwrap_or(f64::NAN);
        let rate = |fw| get(fw, "per_receiver_pps");
        let saturated = |fw| get(fw, "router_saturated_share") > 0.5;
        let ns = |fw| get(fw, "router_ns_per_ingress_packet");
        let path = |fw| get(fw, "path_ns_per_packet");
        let mut r = json!({
            "frame_bytes": size,
            "fanout": fanout,
            "mgm_vs_xdp_drop_rate": rate(Forwarder::Mgm) / drop_ceiling,
        });
        for &b in compared.iter().filter(|&&fw| fw != Forwarder::Mgm) {
            let name = b.name();
            r[format!("mgm_vs_{name}_rate")] = json!(rate(Forwarder::Mgm) / rate(b));
            r[format!("mgm_vs_{name}_rate_is")] =
                json!(rate_is(saturated(Forwarder::Mgm), saturated(b)));
            r[format!("{name}_vs_mgm_ns_per_packet")] = json!(ns(b) / ns(Forwarder::Mgm));
            if with_path {
                r[format!("mgm_vs_{name}_path_capacity")] = json!(path(b) / path(Forwarder::Mgm));
            }
        }
        out.push(r);
    }
    out
}

fn print_table(
    summary: &[Value],
    ratios: &[Value],
    compared: &[Forwarder],
    kernel: &str,
    with_path: bool,
) {
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let path_head = if with_path {
        format!(
            "; path = the router's path fed directly on CPU {ROUTER_CPU}, ns per ingress packet \
             and the share of copies received, with the receivers on CPU {HOST_CPU}"
        )
    } else {
        String::new()
    };
    println!(
        "\nforwarding rate on kernel {kernel} (medians; Mpps; rtr = the router's ingress NAPI \
         thread on CPU {ROUTER_CPU}: its share of the CPU and its run time per ingress packet; \
         cpu{ROUTER_CPU} = how busy that CPU was, the router and anything else; sat = the share \
         of runs that saturated the router; gen = the generator's share of CPU {HOST_CPU}\
         {path_head}):"
    );
    let path_cols = |ns: String, rxd: String| {
        if with_path {
            format!(" {ns:>9} {rxd:>6}")
        } else {
            String::new()
        }
    };
    println!(
        "  {:>5} {:>6} {:<17} {:>5} {:>8} {:>8} {:>10} {:>10} {:>8} {:>5} {:>10} {:>5}{}",
        "bytes",
        "fanout",
        "forwarder",
        "gen",
        "offered",
        "ingress",
        "rx total",
        "rx/recvr",
        "rtr busy",
        format!("cpu{ROUTER_CPU}"),
        "rtr ns/pkt",
        "sat",
        path_cols("path ns".into(), "rx'd".into()),
    );
    for s in summary {
        println!(
            "  {:>5} {:>6} {:<17} {:>4.0}% {:>8.3} {:>8.3} {:>10.3} {:>10.3} {:>7.0}% {:>4.0}% {:>10.0} {:>4.0}%{}",
            int(s, "frame_bytes"),
            int(s, "fanout"),
            s["forwarder"].as_str().unwrap_or("?"),
            f(s, "generator_cpu_share") * 100.0,
            f(s, "offered_pps") / 1e6,
            f(s, "ingress_pps") / 1e6,
            f(s, "received_pps") / 1e6,
            f(s, "per_receiver_pps") / 1e6,
            f(s, "router_napi_busy") * 100.0,
            f(s, "router_cpu0_busy") * 100.0,
            f(s, "router_ns_per_ingress_packet"),
            f(s, "router_saturated_share") * 100.0,
            path_cols(
                format!("{:.0}", f(s, "path_ns_per_packet")),
                format!("{:.0}%", f(s, "path_copies_delivered") * 100.0)
            ),
        );
    }
    let baselines: Vec<Forwarder> = compared
        .iter()
        .copied()
        .filter(|&fw| fw != Forwarder::Mgm)
        .collect();
    let mut tables = vec![
        (
            "rate = received per receiver, mgm's over the baseline's (≥ only the baseline \
             saturated the router, ≤ only mgm did, (in brackets) neither did: both forwarded \
             what the generator offered, which says nothing of capacity; compare ns there)",
            "mgm_vs_{}_rate",
        ),
        (
            "ns = the baseline's router CPU per ingress packet over mgm's",
            "{}_vs_mgm_ns_per_packet",
        ),
    ];
    if with_path {
        tables.push((
            "cap = capacity, 1 / path ns, what one router CPU forwards, mgm's over the baseline's",
            "mgm_vs_{}_path_capacity",
        ));
    }
    for (title, key) in tables {
        println!("\nmgm against the baselines, {title}:");
        let heads: String = baselines
            .iter()
            .map(|b| format!(" {:>10}", format!("× {}", b.short())))
            .collect();
        let rate = key == "mgm_vs_{}_rate";
        println!(
            "  {:>5} {:>6}{heads}{}",
            "bytes",
            "fanout",
            if rate { "     × drop" } else { "" }
        );
        for r in ratios {
            let cells: String = baselines
                .iter()
                .map(|b| {
                    let key = key.replace("{}", b.name());
                    let cell = if rate {
                        rate_cell(f(r, &key), r[format!("{key}_is")].as_str().unwrap_or("?"))
                    } else {
                        format!("{:.2}", f(r, &key))
                    };
                    format!(" {cell:>10}")
                })
                .collect();
            let ceiling = if rate {
                format!(" {:>10.2}", f(r, "mgm_vs_xdp_drop_rate"))
            } else {
                String::new()
            };
            println!(
                "  {:>5} {:>6}{cells}{ceiling}",
                int(r, "frame_bytes"),
                int(r, "fanout")
            );
        }
    }
}

/// The by-turns table: each forwarder's median time, and mgm's capacity against each
/// baseline as the median of the turns' ratios, with the quartiles.
fn print_turns(by_turns: &[Value], compared: &[Forwarder]) {
    let Some(first) = by_turns.first() else {
        return;
    };
    println!(
        "\nrouter path fed by turns, receivers on the router's CPU counting in XDP or at TC \
         ingress ({} turns of {:.2} s per forwarder; ns per ingress packet, medians; ratios: \
         median over turns of the turn's capacity ratio [quartiles]):",
        first["turns"],
        first["slice_seconds"].as_f64().unwrap_or(f64::NAN),
    );
    print_turns_table(by_turns, compared, "", "capacity");
    let shares: Vec<&str> = compared.iter().map(|fw| fw.short()).collect();
    println!(
        "\nthe same without the receivers: perf's share of each forwarder's time in the receive \
         softirq (rx % {}) taken out of its time and ratios:",
        shares.join("/")
    );
    print_turns_table(by_turns, compared, "router_", "router_capacity");
}

/// One table of the by-turns results: times `<fw>_<ns>ns_per_packet` and ratios
/// `<a>_vs_<b>_<ratio>` ([`turns::pairs`]); the receivers' shares with the router-only times.
fn print_turns_table(by_turns: &[Value], compared: &[Forwarder], ns: &str, ratio: &str) {
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let with_quartiles = |v: &Value, k: &str| {
        let q = &v[format!("{k}_quartiles")];
        format!(
            "{:.2} [{:.2}–{:.2}]",
            f(v, k),
            q[0].as_f64().unwrap_or(f64::NAN),
            q[1].as_f64().unwrap_or(f64::NAN)
        )
    };
    let pairs = turns::pairs(compared);
    let heads: String = compared
        .iter()
        .map(|fw| format!(" {:>8}", fw.short()))
        .chain(
            pairs
                .iter()
                .map(|(a, b)| format!(" {:>18}", format!("{} × {}", a.short(), b.short()))),
        )
        .collect();
    // The shares go with the router-only times.
    let shares_column = |s: String| {
        if ns.is_empty() {
            String::new()
        } else {
            format!(" {s:>18}")
        }
    };
    println!(
        "  {:>5} {:>6} {:>4}{}{heads}",
        "bytes",
        "fanout",
        "rx",
        shares_column("rx %".into()),
    );
    for t in by_turns {
        let shares = compared
            .iter()
            .map(|fw| {
                format!(
                    "{:.0}",
                    100.0 * f(t, &format!("{}_receivers_share", fw.name()))
                )
            })
            .collect::<Vec<_>>()
            .join("/");
        let cells: String = compared
            .iter()
            .map(|fw| {
                format!(
                    " {:>8.0}",
                    f(t, &format!("{}_{ns}ns_per_packet", fw.name()))
                )
            })
            .chain(pairs.iter().map(|(a, b)| {
                let key = format!("{}_vs_{}_{ratio}", a.name(), b.name());
                format!(" {:>18}", with_quartiles(t, &key))
            }))
            .collect();
        println!(
            "  {:>5} {:>6} {:>4}{}{cells}",
            int(t, "frame_bytes"),
            int(t, "fanout"),
            t["receivers_count_in"].as_str().unwrap_or("?"),
            shares_column(shares),
        );
    }
}

/// `v[key]` as a number the table's widths apply to (a `Value` ignores them).
fn int(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// A directory for smcroute's files, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> anyhow::Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("mgm-bench-{tag}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(fw: Forwarder, rate: f64, ns: f64, path: f64) -> Value {
        json!({
            "frame_bytes": 64, "fanout": 2, "forwarder": fw.name(),
            "per_receiver_pps": rate, "router_ns_per_ingress_packet": ns,
            "path_ns_per_packet": path, "router_saturated_share": 1.0,
        })
    }

    #[test]
    fn ipmr_is_compared_only_where_the_kernel_has_it() {
        assert!(forwarders(true).contains(&Forwarder::Kernel));
        let without = forwarders(false);
        assert!(!without.contains(&Forwarder::Kernel));
        assert_eq!(without[0], Forwarder::Mgm);
        assert!(without.contains(&Forwarder::Bridge) && without.contains(&Forwarder::Tc));
    }

    #[test]
    fn ratios_cover_every_baseline_compared_and_no_other() {
        let summary = [
            row(Forwarder::Mgm, 4.0, 100.0, 200.0),
            row(Forwarder::Bridge, 1.0, 400.0, 1000.0),
            row(Forwarder::Tc, 2.0, 300.0, 600.0),
        ];
        let compared = [Forwarder::Mgm, Forwarder::Bridge, Forwarder::Tc];
        let r = &ratios(&summary, &compared, true)[0];
        assert_eq!(r["mgm_vs_bridge_rate"], 4.0);
        assert_eq!(r["mgm_vs_bridge_rate_is"], "capacity");
        assert_eq!(r["bridge_vs_mgm_ns_per_packet"], 4.0);
        assert_eq!(r["mgm_vs_bridge_path_capacity"], 5.0);
        assert_eq!(r["mgm_vs_tc_clone_redirect_rate"], 2.0);
        assert_eq!(r["mgm_vs_tc_clone_redirect_path_capacity"], 3.0);
        assert!(r.get("mgm_vs_kernel_rate").is_none());
        // Without the path fed directly, no capacity from it.
        let r = &ratios(&summary, &compared, false)[0];
        assert_eq!(r["bridge_vs_mgm_ns_per_packet"], 4.0);
        assert!(r.get("mgm_vs_bridge_path_capacity").is_none());
    }

    #[test]
    fn a_router_that_kept_up_with_the_generator_was_not_saturated() {
        assert!(!saturated(0.15, 1_000_000, 0));
        assert!(
            !saturated(0.5, 1_000_000, 10_000),
            "1 % refused is still keeping up"
        );
        assert!(saturated(0.5, 1_000_000, 10_001));
        assert!(saturated(0.95, 1_000_000, 0));
    }

    #[test]
    fn rate_ratios_claim_a_capacity_only_where_both_saturated() {
        let mut summary = [
            row(Forwarder::Mgm, 4.0, 100.0, 200.0),
            row(Forwarder::Bridge, 1.0, 400.0, 1000.0),
        ];
        let compared = [Forwarder::Mgm, Forwarder::Bridge];
        let is = |summary: &[Value]| {
            ratios(summary, &compared, false)[0]["mgm_vs_bridge_rate_is"].clone()
        };
        summary[0]["router_saturated_share"] = json!(0.0);
        assert_eq!(is(&summary), "at_least");
        summary[1]["router_saturated_share"] = json!(0.4);
        assert_eq!(is(&summary), "offered");
        summary[0]["router_saturated_share"] = json!(0.6);
        assert_eq!(is(&summary), "at_most");
        assert_eq!(rate_cell(2.0, "capacity"), "2.00");
        assert_eq!(rate_cell(2.0, "at_least"), "≥2.00");
        assert_eq!(rate_cell(2.0, "at_most"), "≤2.00");
        assert_eq!(rate_cell(1.0, "offered"), "(1.00)");
    }

    #[test]
    fn turns_compare_mgm_with_each_baseline_and_raw_mac_with_raw() {
        let pairs = turns::pairs(&[Forwarder::Mgm, Forwarder::Bridge, Forwarder::Raw]);
        assert_eq!(
            pairs,
            [
                (Forwarder::Mgm, Forwarder::Bridge),
                (Forwarder::Mgm, Forwarder::Raw),
                (Forwarder::RawMac, Forwarder::Raw),
            ]
        );
    }
}
