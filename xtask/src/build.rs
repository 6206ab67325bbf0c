//! `cargo xtask build`: the XDP object first (nightly, bpf-linker, BTF), then the `mgm` binary
//! that embeds it.

use std::{path::PathBuf, process::Command};

use anyhow::Context;

use crate::{run, setup::NIGHTLY, workspace_root};

/// Where the eBPF crate builds, apart from the host target dir so the two toolchains never
/// invalidate each other's artefacts.
pub fn ebpf_target_dir() -> PathBuf {
    workspace_root().join("target/ebpf")
}

/// The compiled XDP object.
pub fn ebpf_object() -> PathBuf {
    ebpf_target_dir().join("bpfel-unknown-none/release/mgm-ebpf")
}

/// The `mgm` binary `build` produces.
pub fn mgm_binary() -> PathBuf {
    workspace_root().join("target/release/mgm")
}

pub fn build() -> anyhow::Result<PathBuf> {
    build_ebpf()?;
    run(cargo()
        .args(["build", "--release", "-p", "mgm-user"])
        .env("MGM_EBPF_OBJECT", ebpf_object()))
    .context("building mgm failed")?;
    report_verifier(&mgm_binary());
    Ok(mgm_binary())
}

/// Prints the verifier's processed-instruction count per program, so growth shows in review.
/// Loading needs root; without it this says so and moves on.
fn report_verifier(mgm: &std::path::Path) {
    if !crate::is_root() {
        println!("build: not root, so the verifier instruction counts are skipped");
        return;
    }
    match crate::output(Command::new(mgm).arg("verify")) {
        Ok(out) => out.lines().for_each(|l| println!("build: {l}")),
        Err(e) => println!("build: the kernel rejected the XDP programs: {e:#}"),
    }
}

/// Builds the XDP object with BTF, so the kernel and bpftool know every map's field names.
pub fn build_ebpf() -> anyhow::Result<()> {
    run(&mut ebpf_cargo("build"))
        .context("building the XDP program failed (is `cargo xtask setup` done?)")
}

/// `cargo <subcommand>` on the eBPF crate with nightly, for the BPF target.
pub fn ebpf_cargo(subcommand: &str) -> Command {
    let mut cmd = nightly_cargo(subcommand);
    cmd.args(["-p", "mgm-ebpf", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(ebpf_target_dir())
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            ["-Cdebuginfo=2", "-Clink-arg=--btf"].join("\x1f"),
        );
    cmd
}

/// `cargo <subcommand>` with the pinned nightly, from the workspace root.
pub fn nightly_cargo(subcommand: &str) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", NIGHTLY, "cargo", subcommand])
        .current_dir(workspace_root());
    // Variables cargo sets for the xtask run would pin the stable toolchain.
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "CARGO",
        "RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// `cargo` for host builds, from the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}
