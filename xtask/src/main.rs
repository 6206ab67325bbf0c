//! `cargo xtask <task>`: one subcommand per developer task.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;
mod tasks;

/// Developer tasks for mgm. Each installs what it needs first (see `setup`).
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install the XDP build toolchain if missing: nightly rust-src, Debian llvm-22-dev and
    /// bpf-linker 0.13. Idempotent.
    Setup,
    /// Build the XDP object, then the `mgm` binary that embeds it (target/release/mgm).
    Build,
    /// Build and run mgm as root. Without arguments: the built-in demo on the lab topology.
    /// Example: cargo xtask run -- run --upstream eth0 --downstream eth1
    Run {
        /// Arguments for `mgm` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
        /// Demo only: seconds to stream before tearing down (Ctrl-C ends it earlier).
        #[arg(long, default_value_t = 12)]
        seconds: u64,
    },
    /// Format check, clippy, unit tests and the netns integration tests (root).
    Test,
    /// Benchmarks (root), each a ratio against a baseline from the same run: the XDP
    /// program's per-packet cost, the forwarding rate against ipmr (smcroute), a raw redirect
    /// and an XDP_DROP ceiling, 100k entries on 64 interfaces, and the control plane against
    /// igmpproxy. Results in target/bench/results.json and forwarding.png (see BENCHMARKS.md).
    Bench {
        /// Seconds instead of minutes: fewer repetitions, same cases.
        #[arg(long)]
        quick: bool,
        /// Run only these parts (repeatable; default: all). The results file then holds only
        /// their keys.
        #[arg(long, value_enum)]
        only: Vec<xtask::bench::Part>,
        /// Forwarding part: record the router CPU with perf during each run and write its
        /// NAPI thread's hottest symbols to
        /// target/bench/profile/<bytes>B-fanout<n>-<forwarder>.txt (last round kept); from the
        /// by-turns samples, where each forwarder's own time went (ns per packet by function)
        /// to turns-<bytes>B-fanout<n>-<xdp|tc>-<forwarder>.txt there. perf adds load: take
        /// rates from a run without it.
        #[arg(long)]
        profile: bool,
        /// Forwarding part: only these fan-outs (repeatable, 1 to 8; default: 1, 2, 4 and 8,
        /// or 1 and 8 with --quick).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=8))]
        fanout: Vec<u8>,
    },
    /// Fuzz the decoders (IGMP codec, ring-buffer records, module and control lines, config file) with
    /// cargo-fuzz, installed if missing. `cargo xtask test` runs each for 15 s.
    Fuzz {
        /// One target (igmp_codec, ringbuf_record, module_line, control_line, config); default: each
        /// in turn.
        target: Option<String>,
        /// Seconds of fuzzing per target.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
    },
    /// Create or remove the lab topology (namespaces mgm-lab-*).
    Lab {
        #[command(subcommand)]
        action: LabAction,
    },
}

#[derive(Debug, Subcommand)]
enum LabAction {
    /// Create the sender, router and three receiver namespaces and their veths.
    Up,
    /// Remove them.
    Down,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => xtask::setup::setup(),
        Task::Build => xtask::setup::setup()
            .and_then(|()| xtask::build::build())
            .map(|bin| println!("built {}", bin.display())),
        Task::Run { args, seconds } => tasks::run(&args, seconds),
        Task::Test => tasks::test(),
        Task::Bench {
            quick,
            only,
            profile,
            fanout,
        } => xtask::bench::bench(quick, &only, profile, &fanout),
        Task::Fuzz { target, seconds } => tasks::fuzz(target.as_deref(), seconds),
        Task::Lab { action } => match action {
            LabAction::Up => tasks::lab_up(),
            LabAction::Down => tasks::lab_down(),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
