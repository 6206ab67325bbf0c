//! The `mgm` command: parse arguments, run, and turn the result into one exit code.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use mgm_user::{
    daemon,
    dataplane::{loader, Tunables, XdpMode},
    igmp::querier,
    protocols::static_routes::StaticRoute,
};

/// XDP-accelerated IPv4 multicast forwarding.
///
/// mgm attaches an XDP program to a router's interfaces. The program snoops IGMP and forwards
/// multicast data in the driver, by forwarding entries the daemon derives from IGMP
/// membership; the kernel's multicast routing (ipmr) is not used. Needs root (CAP_BPF and
/// CAP_NET_ADMIN) and Linux 5.15 or newer with BTF.
#[derive(Debug, Parser)]
#[command(name = "mgm", version)]
struct Cli {
    /// Log level: error, warn, info, debug or trace. RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL")]
    log_level: log::LevelFilter,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon. With --upstream it is an IGMP proxy: traffic from the upstream
    /// interface goes to the downstream interfaces whose hosts joined its group. Routing
    /// protocols running as other processes connect to --socket and take the interfaces
    /// named with --external (or co-own downstreams with IGMP).
    ///
    /// Example: mgm run --upstream eth0 --downstream eth1 --downstream eth2
    ///
    /// Example: mgm run --external eth0 --downstream eth1   (a module owns eth0)
    Run(RunArgs),
    /// Print the forwarding entries and interface counters of a running daemon, read from its
    /// pinned maps (works while the daemon runs; needs root).
    ///
    /// Example: mgm show --netns router
    Show(ShowArgs),
    /// Load both XDP programs without attaching them and print how many instructions the
    /// kernel's verifier processed for each: checks this kernel accepts them, and makes
    /// program growth visible (`cargo xtask build` runs it).
    Verify,
}

#[derive(Debug, clap::Args)]
struct ShowArgs {
    /// The daemon's pin directory (as given to `mgm run --pin-dir`).
    #[arg(long, value_name = "DIR", default_value = mgm_common::maps::PIN_DIR)]
    pin_dir: PathBuf,

    /// Network namespace the daemon runs in, so interface names resolve.
    #[arg(long, value_name = "NAME")]
    netns: Option<String>,

    /// Print JSON instead of tables (stable field names, for scripts).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Interface towards the multicast sources; mgm runs an IGMP proxy (RFC 4605) with it as
    /// the upstream. Leave it out when an out-of-process module decides (--external).
    /// Example: --upstream eth0
    #[arg(long, value_name = "IF")]
    upstream: Option<String>,

    /// Interface towards receivers (required; repeat the flag or list several).
    /// Example: --downstream eth1 --downstream eth2
    #[arg(long, value_name = "IF", required = true, num_args = 1..)]
    downstream: Vec<String>,

    /// Interface to manage but leave for out-of-process routing-protocol modules to take over
    /// --socket, such as a PIM or DVMRP side (repeatable). IGMP does not run there.
    #[arg(long, value_name = "IF", num_args = 1..)]
    external: Vec<String>,

    /// Unix socket where out-of-process modules connect (JSON lines; see
    /// mgm-user/docs/module-protocol.md). Root only.
    #[arg(long, value_name = "PATH", default_value = "/run/mgm/mgm.sock")]
    socket: PathBuf,

    /// Milliseconds a callback that needs a module's answer (rpf, creation alert, prune
    /// alert of a negative entry) waits; after that MGM's own proposal stands.
    #[arg(long, value_name = "MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    module_answer_ms: u64,

    /// How to attach XDP: native (in the driver), skb (generic, works on any interface), or
    /// auto (native, falling back to skb with a warning).
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    xdp_mode: Mode,

    /// Directory on a BPF filesystem where the maps are pinned, for `bpftool map dump pinned`.
    /// bpffs is mounted at /sys/fs/bpf if nothing is.
    #[arg(long, value_name = "DIR", default_value = mgm_common::maps::PIN_DIR)]
    pin_dir: PathBuf,

    /// Run inside this network namespace (a name under /run/netns, as `ip netns` makes).
    /// Unlike `ip netns exec`, this keeps the host's /sys/fs/bpf, so pins stay visible.
    #[arg(long, value_name = "NAME")]
    netns: Option<String>,

    /// Copies whose TTL (after the router's decrement) is below this are not sent out.
    #[arg(long, value_name = "TTL", default_value_t = 1)]
    ttl_threshold: u8,

    /// Milliseconds before a packet with no forwarding entry raises its upcall again.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pending_retry_ms: u64,

    /// Least milliseconds between two wrong-interface upcalls of one entry.
    #[arg(long, value_name = "MS", default_value_t = 1_000)]
    wrong_if_interval_ms: u64,

    /// On SIGINT/SIGTERM, leave XDP attached and forwarding with the last state instead of
    /// detaching: for restarts and upgrades without losing traffic. The next `mgm run` with
    /// the same --pin-dir takes over the links and maps. Without it, stopping detaches.
    #[arg(long)]
    keep_forwarding: bool,

    /// Routing table whose IPv4 routes decide the RPF (incoming) interface of each source:
    /// the "multicast view" of unicast routing. 254 is the main table.
    #[arg(long, value_name = "ID", default_value_t = mgm_user::routes::RT_TABLE_MAIN)]
    rpf_table: u32,

    /// Seconds a forwarding entry lives before MGM resolves it again (RPF callback, creation
    /// alerts): an entry that carried traffic is replaced in place, without a gap, and an idle
    /// one is deleted.
    #[arg(long, value_name = "SECS", default_value_t = 900, value_parser = clap::value_parser!(u32).range(1..))]
    mfe_lifetime: u32,

    /// A static route, forwarded whatever IGMP says, in smcroute's words (repeatable):
    /// "from IF [source ADDR] group ADDR to IF [IF...]". The incoming interface is the
    /// upstream or a downstream; outgoing ones are downstreams, where IGMP keeps working.
    /// Example: --static-route "from eth0 group 239.1.2.3 to eth1 eth2"
    #[arg(long, value_name = "ROUTE")]
    static_route: Vec<StaticRoute>,

    /// IGMP version of the queries sent downstream: 3 (hosts may answer in v2 or v1, and are
    /// served in compatibility mode) or 2.
    #[arg(long, value_name = "2|3", default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=3))]
    igmp_version: u8,

    /// Seconds between general queries (RFC 3376 Query Interval).
    #[arg(long, value_name = "SECS", default_value_t = 125)]
    igmp_query_interval: u64,

    /// Milliseconds hosts may wait before answering a general query (Query Response Interval).
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    igmp_query_response_ms: u64,

    /// Robustness variable: how many lost packets IGMP tolerates (RFC 3376 §8.1).
    #[arg(long, value_name = "N", default_value_t = 2)]
    igmp_robustness: u8,

    /// Milliseconds between last-member queries after a leave; a group goes after
    /// robustness × this without a report.
    #[arg(long, value_name = "MS", default_value_t = 1_000)]
    igmp_last_member_interval_ms: u64,

    /// Track each host and stop a stream the moment the last host that wants it leaves,
    /// without last-member queries. For links where hosts are known not to suppress reports.
    #[arg(long)]
    igmp_fast_leave: bool,

    /// Most groups kept per interface; more are refused, counted and logged.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    igmp_max_groups: usize,

    /// Most source records kept per interface; more are refused, counted and logged.
    #[arg(long, value_name = "N", default_value_t = 16_384)]
    igmp_max_sources: usize,

    /// Most verbose level the XDP program logs at (its logs cost nothing when filtered out).
    #[arg(long, value_name = "LEVEL", default_value = "warn")]
    ebpf_log_level: log::LevelFilter,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Native,
    Skb,
    Auto,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::new()
        .filter_level(cli.log_level)
        .parse_default_env()
        .format_timestamp_millis()
        .init();
    match try_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mgm: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Verify => {
            let loaded = loader::load_programs(&Tunables::default())
                .context("the kernel did not accept the XDP programs")?;
            for (name, count) in loader::verified_instructions(&loaded.ebpf)? {
                match count {
                    Some(n) => println!("{name}: verifier processed {n} instructions"),
                    None => println!("{name}: accepted (this kernel does not report a count)"),
                }
            }
            Ok(())
        }
        Command::Show(args) => {
            if let Some(ns) = &args.netns {
                enter_netns(ns)?;
            }
            let state =
                mgm_user::dataplane::inspect::read_pinned(&args.pin_dir).with_context(|| {
                    format!("no mgm data plane pinned in {}", args.pin_dir.display())
                })?;
            if args.json {
                print!("{}", mgm_user::cli::show::render_json(&state));
            } else {
                print!("{}", mgm_user::cli::show::render(&state));
            }
            Ok(())
        }
        Command::Run(args) => {
            check_roles(&args)?;
            if let Some(ns) = &args.netns {
                enter_netns(ns)?;
            }
            let (mut clients, upstream_host) = match &args.upstream {
                Some(up) => daemon::Options::proxy(up.clone()),
                None => (Vec::new(), None),
            };
            let (statics, rpf_routes) = static_routes(
                &args.static_route,
                args.upstream.as_deref(),
                &args.downstream,
            )?;
            clients.extend(statics);
            let igmp_config = querier::Config {
                version: if args.igmp_version == 2 {
                    querier::Version::V2
                } else {
                    querier::Version::V3
                },
                robustness: args.igmp_robustness,
                query_interval: Duration::from_secs(args.igmp_query_interval),
                query_response_interval: Duration::from_millis(args.igmp_query_response_ms),
                last_member_query_interval: Duration::from_millis(
                    args.igmp_last_member_interval_ms,
                ),
                fast_leave: args.igmp_fast_leave,
                max_groups: Some(args.igmp_max_groups),
                max_sources: Some(args.igmp_max_sources),
                ..querier::Config::default()
            };
            igmp_config.validate().context("invalid IGMP settings")?;
            let opts = daemon::Options {
                upstream_host,
                clients,
                igmp: args.downstream.clone(),
                external: args.external.clone(),
                socket: args.socket.clone(),
                answer_within: Duration::from_millis(args.module_answer_ms),
                igmp_config,
                mode: match args.xdp_mode {
                    Mode::Native => XdpMode::Native,
                    Mode::Skb => XdpMode::Skb,
                    Mode::Auto => XdpMode::Auto,
                },
                pin_dir: args.pin_dir,
                ttl_threshold: args.ttl_threshold,
                rpf_table: args.rpf_table,
                rpf_routes,
                mfe_lifetime_s: args.mfe_lifetime,
                keep_forwarding: args.keep_forwarding,
                tunables: Tunables {
                    pending_retry: Duration::from_millis(args.pending_retry_ms),
                    wrong_if_interval: Duration::from_millis(args.wrong_if_interval_ms),
                    ebpf_log_level: args.ebpf_log_level,
                },
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(daemon::run(opts, shutdown_signal()))
        }
    }
}

/// Refuses an interface named in two roles.
fn check_roles(args: &RunArgs) -> anyhow::Result<()> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    let named = args
        .upstream
        .iter()
        .map(|i| ("--upstream", i))
        .chain(args.downstream.iter().map(|i| ("--downstream", i)))
        .chain(args.external.iter().map(|i| ("--external", i)));
    for (role, name) in named {
        if let Some((first, _)) = seen.iter().find(|(_, n)| *n == name.as_str()) {
            bail!("{name} is named twice, as {first} and as {role}");
        }
        seen.push((role, name));
    }
    Ok(())
}

/// The static-routes client and the RPF host routes of its (S,G) routes, after checking the
/// routes name managed interfaces in the right roles.
fn static_routes(
    routes: &[StaticRoute],
    upstream: Option<&str>,
    downstream: &[String],
) -> anyhow::Result<(Option<daemon::ClientPlan>, Vec<mgm_user::core::Route>)> {
    use mgm_user::{
        core::{InterfaceId, Route},
        dataplane::netdev::NetDev,
        protocols::static_routes as st,
    };
    if routes.is_empty() {
        return Ok((None, Vec::new()));
    }
    let mut interfaces: Vec<String> = Vec::new();
    let mut memberships = Vec::new();
    let mut configured = Vec::new();
    let mut rpf = Vec::new();
    for r in routes {
        if upstream != Some(r.iif.as_str()) && !downstream.contains(&r.iif) {
            bail!(
                "static route \"{r}\": {} is neither --upstream nor --downstream",
                r.iif
            );
        }
        for oif in &r.oifs {
            if !downstream.contains(oif) {
                bail!("static route \"{r}\": outgoing interface {oif} is not a --downstream");
            }
            let i = match interfaces.iter().position(|n| n == oif) {
                Some(i) => i,
                None => {
                    interfaces.push(oif.clone());
                    interfaces.len() - 1
                }
            };
            memberships.push((r.entry(), i));
            let dev = NetDev::lookup(oif)?;
            configured.push((r.entry(), InterfaceId::new(dev.ifindex)));
        }
        if let Some(source) = r.source {
            rpf.push(Route {
                network: source,
                prefix_len: 32,
                if_id: InterfaceId::new(NetDev::lookup(&r.iif)?.ifindex),
                upstream: std::net::Ipv4Addr::UNSPECIFIED,
                // RTPROT_STATIC
                protocol: 4,
                metric: 0,
            });
        }
    }
    let plan = daemon::ClientPlan {
        protocol: Box::new(st::StaticRoutes::new(configured)),
        protocol_id: st::PROTOCOL_ID,
        component_id: st::COMPONENT_ID,
        interfaces,
        memberships,
    };
    Ok((Some(plan), rpf))
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("cannot watch SIGTERM ({e}); only Ctrl-C stops mgm");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    log::info!("signal received");
}

/// Moves this (still single-threaded) process into the named network namespace.
fn enter_netns(name: &str) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let path = PathBuf::from("/run/netns").join(name);
    let file = std::fs::File::open(&path)
        .with_context(|| format!("network namespace {name:?} ({})", path.display()))?;
    // SAFETY: `file` is an open namespace fd for the duration of the call.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot enter network namespace {name:?}"));
    }
    Ok(())
}
