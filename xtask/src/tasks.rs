//! The tasks behind `run`, `test` and `lab`.

use std::process::Command;

use anyhow::{bail, Context};
use xtask::{
    build::{build, cargo, mgm_binary, nightly_cargo},
    is_root,
    lab::{IgmpVersion, Lab},
    run as run_cmd,
    setup::{cargo_fuzz, setup},
    workspace_root,
};

use crate::demo;

/// The tag of the lab `lab up`/`lab down` and the demo use.
pub const LAB_TAG: &str = "lab";
pub const LAB_VERSIONS: [IgmpVersion; 3] = [IgmpVersion::V2, IgmpVersion::V3, IgmpVersion::V2];

pub fn run(args: &[String], seconds: u64) -> anyhow::Result<()> {
    setup()?;
    let mgm = build()?;
    if args.is_empty() {
        require_root("the demo")?;
        return demo::demo(&mgm, seconds);
    }
    let mut cmd = if is_root() {
        Command::new(&mgm)
    } else {
        let mut c = Command::new("sudo");
        c.arg("-E").arg(&mgm);
        c
    };
    run_cmd(cmd.args(args))
}

pub fn test() -> anyhow::Result<()> {
    setup()?;
    let mgm = build()?;
    run_cmd(cargo().args(["fmt", "--all", "--check"]))
        .context("formatting differs; run `cargo fmt --all`")?;
    // The fuzz crate is a workspace of its own, which `--all` does not reach.
    run_cmd(cargo().args([
        "fmt",
        "--check",
        "--manifest-path",
        "mgm-user/fuzz/Cargo.toml",
    ]))
    .context("formatting differs; run `cargo fmt --manifest-path mgm-user/fuzz/Cargo.toml`")?;
    run_cmd(
        cargo()
            .args([
                "clippy",
                "-p",
                "mgm-common",
                "-p",
                "mgm-user",
                "-p",
                "xtask",
            ])
            .args(["--all-targets", "--release", "--", "-D", "warnings"])
            .env("MGM_EBPF_OBJECT", xtask::build::ebpf_object()),
    )
    .context("clippy found problems")?;
    run_cmd(xtask::build::ebpf_cargo("clippy").args(["--", "-D", "warnings"]))
        .context("clippy found problems in mgm-ebpf")?;
    // Its own workspace, built with nightly as `fuzz` builds it (without the sanitizers, so
    // into its own directory under target/fuzz).
    run_cmd(nightly_cargo("clippy").args([
        "--manifest-path",
        "mgm-user/fuzz/Cargo.toml",
        "--target-dir",
        "target/fuzz",
        "--all-targets",
        "--release",
        "--",
        "-D",
        "warnings",
    ]))
    .context("clippy found problems in the fuzz targets")?;
    require_root("the netns integration tests")?;
    xtask::lab::sweep_stale()?;
    test_tools()?;
    let skips = xtask::workspace_root().join("target/test-skips.log");
    // A log left by an earlier run would be counted again.
    match std::fs::remove_file(&skips) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("remove {}", skips.display()))
        }
        _ => {}
    }
    let tests = run_cmd(
        cargo()
            .args([
                "test",
                "--release",
                "-p",
                "mgm-common",
                "-p",
                "mgm-user",
                "-p",
                "xtask",
            ])
            .env("MGM_EBPF_OBJECT", xtask::build::ebpf_object())
            .env("MGM_BIN", &mgm)
            .env(xtask::kernel::SKIP_LOG_ENV, &skips),
    );
    report_skips(&skips);
    tests.context("tests failed")?;
    fuzz(None, FUZZ_SHORT_SECONDS)?;
    println!("all checks and tests passed ({})", mgm_binary().display());
    Ok(())
}

/// The fuzz targets in mgm-user/fuzz, one per decoder.
pub const FUZZ_TARGETS: [&str; 5] = [
    "igmp_codec",
    "ringbuf_record",
    "module_line",
    "control_line",
    "config",
];
/// Seconds each target runs in `cargo xtask test`: enough to shake out shallow crashes, short
/// enough that the five stay near a minute and a half.
const FUZZ_SHORT_SECONDS: u64 = 15;

/// Runs `target` (or each target in turn) for `seconds` seconds of fuzzing. The corpus grows in
/// target/fuzz/corpus/<target>, started from the committed seeds; a crash fails the run, and
/// cargo-fuzz prints the reproducer's path and how to replay it.
pub fn fuzz(target: Option<&str>, seconds: u64) -> anyhow::Result<()> {
    let targets: Vec<&str> = match target {
        None => FUZZ_TARGETS.to_vec(),
        Some(t) if FUZZ_TARGETS.contains(&t) => vec![t],
        Some(t) => bail!(
            "no fuzz target {t}; the targets: {}",
            FUZZ_TARGETS.join(", ")
        ),
    };
    setup()?;
    cargo_fuzz()?;
    let root = workspace_root();
    let fuzz_dir = root.join("mgm-user/fuzz");
    let fuzz_cargo = |subcommand: &str| {
        let mut cmd = nightly_cargo("fuzz");
        cmd.arg(subcommand)
            .arg("--fuzz-dir")
            .arg(&fuzz_dir)
            .arg("--target-dir")
            .arg(root.join("target/fuzz"));
        cmd
    };
    run_cmd(&mut fuzz_cargo("build")).context("building the fuzz targets failed")?;
    for t in targets {
        let corpus = root.join("target/fuzz/corpus").join(t);
        std::fs::create_dir_all(&corpus).with_context(|| format!("create {}", corpus.display()))?;
        println!("fuzz: {t} for {seconds} s");
        run_cmd(
            fuzz_cargo("run")
                .arg(t)
                .arg(&corpus)
                .arg(fuzz_dir.join("seeds").join(t))
                .arg("--")
                .arg(format!("-max_total_time={seconds}")),
        )
        .with_context(|| format!("fuzz target {t} failed (its reproducer is named above)"))?;
    }
    Ok(())
}

pub fn lab_up() -> anyhow::Result<()> {
    require_root("the lab")?;
    let lab = Lab::up(LAB_TAG, &LAB_VERSIONS)?;
    println!(
        "lab up: {}, {}, {}",
        lab.sender.name(),
        lab.router.name(),
        lab.receivers
            .iter()
            .map(|r| r.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "run mgm in it: cargo xtask run -- run --netns {} --upstream up0 --downstream dn1 dn2 dn3",
        lab.router.name()
    );
    // The lab outlives this command: `lab down` removes it.
    std::mem::forget(lab);
    Ok(())
}

pub fn lab_down() -> anyhow::Result<()> {
    require_root("the lab")?;
    match Lab::down(LAB_TAG, LAB_VERSIONS.len()) {
        0 => println!("no lab was up"),
        n => println!("lab down ({n} namespaces removed)"),
    }
    Ok(())
}

/// Programs from other projects the integration tests run against: igmpproxy as an upstream
/// multicast router (kernel ipmr) for the proxy interoperability test, which skips itself where
/// the kernel has no ipmr (the kernel bridge needs no install); Prometheus' `promtool` to check
/// the metrics exposition.
fn test_tools() -> anyhow::Result<()> {
    xtask::setup::ensure_packages(
        &[
            ("/usr/sbin/igmpproxy", "igmpproxy"),
            ("/usr/bin/promtool", "prometheus"),
        ],
        "an upstream router for the interoperability test, the metrics checker",
    )
}

/// Prints how many tests could not run on this kernel and why, so a green run says what it
/// did not check.
fn report_skips(log: &std::path::Path) {
    let lines = std::fs::read_to_string(log).unwrap_or_default();
    let skipped: Vec<&str> = lines.lines().collect();
    println!("tests skipped on this kernel: {}", skipped.len());
    for line in skipped {
        println!("  {line}");
    }
}

fn require_root(what: &str) -> anyhow::Result<()> {
    if !is_root() {
        bail!("{what} needs root (network namespaces, XDP); run as root or with sudo");
    }
    Ok(())
}
