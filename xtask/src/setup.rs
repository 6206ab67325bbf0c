//! `cargo xtask setup`: installs what building the XDP program needs, idempotently. Each step
//! checks first, says what it found or did, and on failure names the missing piece and the
//! command that installs it.

use std::{path::Path, process::Command};

use anyhow::{bail, Context};

use crate::{is_root, output, run};

/// Debian's LLVM that matches the nightly toolchain's LLVM, which bpf-linker links against.
pub const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const LLVM_PACKAGE: &str = "llvm-22-dev";
const BPF_LINKER_VERSION: &str = "0.13";
pub const NIGHTLY: &str = "nightly";

pub fn setup() -> anyhow::Result<()> {
    rust_src()?;
    llvm()?;
    bpf_linker()?;
    Ok(())
}

/// Nightly with rust-src (for `-Z build-std=core`) and clippy (to lint the XDP crate).
fn rust_src() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))
    .unwrap_or_default();
    let missing: Vec<&str> = ["rust-src", "clippy"]
        .into_iter()
        .filter(|c| !installed.lines().any(|l| l.starts_with(c)))
        .collect();
    if missing.is_empty() {
        println!("setup: nightly rust-src and clippy present");
        return Ok(());
    }
    println!("setup: installing nightly {}", missing.join(" and "));
    // An installed nightly only gets the components: `toolchain install` would move it to
    // the newest nightly, whose LLVM may no longer match bpf-linker's.
    let have_nightly = output(Command::new("rustup").args(["toolchain", "list"]))
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with(NIGHTLY));
    let mut cmd = Command::new("rustup");
    if have_nightly {
        cmd.args(["component", "add", "--toolchain", NIGHTLY])
            .args(&missing);
    } else {
        cmd.args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]);
        for c in &missing {
            cmd.args(["--component", c]);
        }
    }
    run(&mut cmd).with_context(|| {
        format!(
            "installing nightly {} failed; run: rustup component add {} --toolchain nightly",
            missing.join(", "),
            missing.join(" ")
        )
    })
}

fn llvm() -> anyhow::Result<()> {
    // A header only the -dev package ships: llvm-config alone comes with the runtime package.
    let dev = Path::new(LLVM_PREFIX).join("include/llvm/Config/llvm-config.h");
    if dev.exists() {
        println!("setup: {LLVM_PACKAGE} present ({LLVM_PREFIX})");
        return Ok(());
    }
    if bpf_linker_ok() {
        // bpf-linker is already built; LLVM is only needed to build it.
        return Ok(());
    }
    if !is_root() || !Path::new("/usr/bin/apt-get").exists() {
        bail!(
            "{LLVM_PACKAGE} is missing and cannot be installed from here (needs root and apt); \
             run: sudo apt-get install -y {LLVM_PACKAGE}"
        );
    }
    println!("setup: installing {LLVM_PACKAGE} with apt-get (needed to build bpf-linker)");
    apt_install(&[LLVM_PACKAGE])
}

/// Installs, with apt, each package whose file (`(path, package)`) is missing; `why` says
/// what they are for. Idempotent.
pub fn ensure_packages(wanted: &[(&str, &str)], why: &str) -> anyhow::Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(path, _)| !std::path::Path::new(path).exists())
        .map(|(_, package)| *package)
        .collect();
    let names: Vec<&str> = wanted.iter().map(|(_, p)| *p).collect();
    if missing.is_empty() {
        println!("setup: {} present", names.join(", "));
        return Ok(());
    }
    println!("setup: installing {} ({why})", missing.join(" "));
    apt_install(&missing)
}

/// `apt-get install -y` after one `apt-get update`, without prompts.
pub fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    run(Command::new("apt-get")
        .args(["update", "-qq"])
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("apt-get update failed")?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .with_context(|| format!("run: apt-get install -y {}", packages.join(" ")))
}

fn bpf_linker_ok() -> bool {
    output(Command::new("bpf-linker").arg("--version"))
        .map(|v| v.contains(&format!(" {BPF_LINKER_VERSION}.")))
        .unwrap_or(false)
}

fn bpf_linker() -> anyhow::Result<()> {
    if bpf_linker_ok() {
        println!("setup: bpf-linker {BPF_LINKER_VERSION} present");
        return Ok(());
    }
    println!("setup: building bpf-linker {BPF_LINKER_VERSION} against {LLVM_PREFIX} (a few minutes, once)");
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--version",
            &format!("^{BPF_LINKER_VERSION}"),
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .env_remove("RUSTUP_TOOLCHAIN"))
    .with_context(|| {
        format!(
            "building bpf-linker failed; run: LLVM_PREFIX={LLVM_PREFIX} cargo install bpf-linker \
             --version ^{BPF_LINKER_VERSION} --no-default-features --features llvm-22"
        )
    })?;
    if !bpf_linker_ok() {
        bail!("bpf-linker was installed but is not on PATH; add ~/.cargo/bin to PATH");
    }
    Ok(())
}

/// cargo-fuzz, which runs the fuzz targets in mgm-user/fuzz with the nightly toolchain (its
/// sanitizers need nightly; `rust_src` keeps that toolchain installed).
pub fn cargo_fuzz() -> anyhow::Result<()> {
    let installed = output(Command::new("cargo").args(["fuzz", "--version"]))
        .is_ok_and(|v| v.starts_with("cargo-fuzz"));
    if installed {
        println!("setup: cargo-fuzz present");
        return Ok(());
    }
    println!("setup: installing cargo-fuzz (once)");
    run(Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .env_remove("RUSTUP_TOOLCHAIN"))
    .context("installing cargo-fuzz failed; run: cargo install cargo-fuzz --locked")
}
