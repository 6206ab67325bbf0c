//! `cargo xtask bench`: measurements that go with a ratio against a baseline from the same run.
//! Today: the XDP program's per-packet CPU cost against a parse-nothing broadcast redirect
//! (BPF_PROG_TEST_RUN timing), MFE installs per second against plain map inserts, membership
//! changes through the core with 100k entries against an empty table, and the verifier's
//! instruction counts; and the forwarding rate against the kernel's bridge, a TC
//! `bpf_clone_redirect` forwarder, the kernel's ipmr (where the kernel has it), raw XDP
//! redirects and an XDP_DROP ceiling on the lab topology ([`forwarding`]); and the control
//! plane (IGMP reports per second, join latency, memory) against igmpproxy where the kernel has
//! ipmr ([`control`]), and the real daemon's join latency and membership changes per second
//! with 100k entries against an empty table ([`control::scale`]).

mod forwarding;

mod control;
mod table;

use std::{fs, path::Path, process::Command};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::{
    build::{build, cargo, ebpf_object, ebpf_target_dir},
    is_root, output,
    setup::setup,
    workspace_root,
};

/// A part of the benchmark, for `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// The XDP program's cost per packet (test runs), MFE installs/s, membership changes
    /// through the core, verifier counts.
    PerPacket,
    /// IGMP reports/s, join latency and memory against igmpproxy.
    Control,
    /// Forwarding rate against ipmr, raw redirect and XDP_DROP.
    Forwarding,
    /// 100k entries on 64 interfaces.
    Scale,
    /// The daemon's join-to-first-packet latency and membership changes/s with 100k entries
    /// against an empty table.
    ControlScale,
}

/// Runs the parts in `only` (all when empty) and writes target/bench/results.json; `fanouts`
/// (the plan's when empty) narrows the forwarding part.
///
/// # Errors
/// Setup, the build or a part failed.
pub fn bench(quick: bool, only: &[Part], profile: bool, fanouts: &[u8]) -> anyhow::Result<()> {
    let runs = |p: Part| only.is_empty() || only.contains(&p);
    setup()?;
    let mgm = build()?;
    if !is_root() {
        bail!("the benchmarks load XDP programs: run as root");
    }
    let bench_object = ebpf_target_dir().join("bpfel-unknown-none/release/mgm-bench");
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = kernel_release();
    println!(
        "bench: kernel {kernel}, {cpus} CPUs, multicast routing (ipmr): {}",
        ipmr_missing().map_or("present", |_| "absent")
    );
    let mut results = json!({
        "quick": quick,
        "machine": {
            "kernel": kernel,
            "cpus": cpus,
            "ipmr": ipmr_missing().is_none(),
        },
    });
    if runs(Part::PerPacket) {
        per_packet(&mgm, &bench_object, quick, &mut results)?;
    }
    if runs(Part::Control) {
        results["control"] = control::bench(&mgm, quick)?;
    }
    if runs(Part::Forwarding) {
        results["forwarding"] =
            forwarding::forwarding(&mgm, &bench_object, quick, profile, fanouts)?;
    }
    if runs(Part::Scale) {
        results["scale"] = forwarding::scale(&mgm, &bench_object, quick)?;
    }
    if runs(Part::ControlScale) {
        results["control_scale"] = control::scale(&mgm, quick)?;
    }
    let dir = workspace_root().join("target/bench");
    fs::create_dir_all(&dir)?;
    let path = dir.join("results.json");
    fs::write(&path, format!("{results:#}\n"))?;
    println!("\nwrote {}", path.display());
    Ok(())
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |r| r.trim().to_owned())
}

/// Why the kernel's multicast routing (ipmr), which smcroute and igmpproxy drive, cannot be
/// used; `None` where the kernel has it.
pub fn ipmr_missing() -> Option<&'static str> {
    (!Path::new("/proc/net/ip_mr_vif").exists()).then_some(
        "this kernel has no multicast routing (CONFIG_IP_MROUTE: no /proc/net/ip_mr_vif)",
    )
}

/// Test-run costs, control-plane microbenchmarks and verifier counts into `results`.
fn per_packet(
    mgm: &Path,
    bench_object: &Path,
    quick: bool,
    results: &mut Value,
) -> anyhow::Result<()> {
    let mut cmd = cargo();
    cmd.args(["bench", "-p", "mgm-user", "--bench", "xdp_cost", "--"])
        .env("MGM_EBPF_OBJECT", ebpf_object())
        .env("MGM_BENCH_OBJECT", bench_object);
    if quick {
        cmd.arg("--quick");
    }
    let mut printed = output(&mut cmd)?;
    // The core's membership changes with a full table against an empty one (no root needed).
    // With the object's path, as every build of mgm-user: cargo builds the package's binary for
    // a bench too, and without it would replace `mgm` with one that cannot load.
    let mut core = cargo();
    core.args(["bench", "-p", "mgm-user", "--bench", "core_scale", "--"])
        .env("MGM_EBPF_OBJECT", ebpf_object());
    if quick {
        core.arg("--quick");
    }
    printed += &output(&mut core)?;
    let lines: Vec<Value> = printed
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("the benchmark printed something that is not JSON")?;
    let (control, per_packet): (Vec<Value>, Vec<Value>) =
        lines.into_iter().partition(|v| v.get("control").is_some());
    let verifier: Vec<String> = output(Command::new(mgm).arg("verify"))?
        .lines()
        .map(str::to_owned)
        .collect();

    println!("\nXDP ingress, CPU per packet (BPF_PROG_TEST_RUN, median of rounds):");
    println!(
        "  {:<36} {:>10} {:>14}",
        "case", "ns/packet", "× raw redirect"
    );
    for r in &per_packet {
        println!(
            "  {:<36} {:>10.1} {:>14.2}",
            r["case"].as_str().unwrap_or("?"),
            r["ns_per_packet"].as_f64().unwrap_or(f64::NAN),
            r["ratio_vs_raw"].as_f64().unwrap_or(f64::NAN)
        );
    }
    println!("\ncontrol plane (median of rounds):");
    for r in &control {
        if let Some(micros) = r["micros"].as_f64() {
            println!(
                "  {}: {micros:.1} us, {:.2} × {} ({:.1} us)",
                r["control"].as_str().unwrap_or("?"),
                r["ratio"].as_f64().unwrap_or(f64::NAN),
                r["baseline"].as_str().unwrap_or("?"),
                r["baseline_micros"].as_f64().unwrap_or(f64::NAN)
            );
            continue;
        }
        println!(
            "  {}: {:.0}/s, {:.2} × {} ({:.0}/s)",
            r["control"].as_str().unwrap_or("?"),
            r["per_second"].as_f64().unwrap_or(f64::NAN),
            r["ratio"].as_f64().unwrap_or(f64::NAN),
            r["baseline"].as_str().unwrap_or("?"),
            r["baseline_per_second"].as_f64().unwrap_or(f64::NAN)
        );
    }
    println!("\nverifier:");
    verifier.iter().for_each(|l| println!("  {l}"));
    results["per_packet"] = json!(per_packet);
    results["control_plane"] = json!(control);
    results["verifier"] = json!(verifier);
    Ok(())
}
