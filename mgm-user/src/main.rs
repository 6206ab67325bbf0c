//! The `mgm` command: parse arguments, run, and turn the result into one exit code.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{bail, Context};
use clap::{parser::ValueSource, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use mgm_user::{
    config,
    control::proto::{Request, View},
    daemon,
    dataplane::{loader, Tunables, XdpMode},
    igmp::querier,
    managed::Names,
    protocols::{remote::access::Access, static_routes::StaticRoute},
    reload::{ReloadRequest, ReloadSender, Settings},
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
    Run(Box<RunArgs>),
    /// Show what the running daemon knows, asked over its control socket: `interfaces`,
    /// `groups` (IGMP and static memberships), `mfe` (forwarding entries with per-interface
    /// counters), `protocols` or `stats`. Tables by default, --json for scripts (the schema is
    /// mgm-user/docs/control-schema.json). When no daemon answers, the entries and interface
    /// counters are read from the pinned maps instead, and a note on stderr says so. Without a
    /// view: the pinned maps, as the data plane has them.
    ///
    /// Example: mgm show groups
    ///
    /// Example: mgm show mfe --json
    Show(ShowArgs),
    /// Add or delete a static route in the running daemon, in --static-route's words. It lasts
    /// until mgm stops or reloads: put it in the configuration file to keep it.
    ///
    /// Example: mgm route add "from eth0 group 239.1.2.3 to eth1 eth2"
    ///
    /// Example: mgm route del "from eth0 group 239.1.2.3 to eth1 eth2"
    Route(RouteArgs),
    /// Forward a group to a downstream interface as if a host there had joined it (a static
    /// membership), until `mgm leave`, or until mgm stops or reloads: put a static route in the
    /// configuration file to keep it.
    ///
    /// Example: mgm join eth1 239.1.2.3
    ///
    /// Example: mgm join eth1 232.1.1.1 --source 198.51.100.7
    Join(MembershipArgs),
    /// Undo an `mgm join`.
    ///
    /// Example: mgm leave eth1 239.1.2.3
    Leave(MembershipArgs),
    /// Ask the running daemon to read its configuration file again, as SIGHUP does.
    Reload(ControlArgs),
    /// Check a configuration file without running anything: every problem is printed with
    /// its line and what to write instead; the exit code is 1 when there is one.
    ///
    /// Example: mgm check --config /etc/mgm/mgm.toml
    Check(CheckArgs),
    /// Load both XDP programs without attaching them and print how many instructions the
    /// kernel's verifier processed for each: checks this kernel accepts them, and makes
    /// program growth visible (`cargo xtask build` runs it).
    Verify,
}

/// Where the running daemon takes operators' commands.
#[derive(Debug, clap::Args)]
struct ControlArgs {
    /// The daemon's control socket (as given to `mgm run --control-socket`).
    #[arg(long, value_name = "PATH", default_value = mgm_user::control::DEFAULT_SOCKET)]
    control_socket: PathBuf,
}

#[derive(Debug, clap::Args)]
struct RouteArgs {
    #[arg(value_enum)]
    action: RouteAction,
    /// The route: "from IF [source ADDR] group ADDR to IF [IF...]" (one argument, quoted, or
    /// several words).
    #[arg(value_name = "ROUTE", required = true, num_args = 1..)]
    route: Vec<String>,
    #[command(flatten)]
    control: ControlArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RouteAction {
    Add,
    Del,
}

#[derive(Debug, clap::Args)]
struct MembershipArgs {
    /// A downstream interface.
    #[arg(value_name = "IF")]
    interface: String,
    /// The multicast group.
    #[arg(value_name = "GROUP")]
    group: std::net::Ipv4Addr,
    /// Only this source's traffic (an (S,G) membership); without it, every source's.
    #[arg(long, value_name = "ADDR")]
    source: Option<std::net::Ipv4Addr>,
    #[command(flatten)]
    control: ControlArgs,
}

#[derive(Debug, clap::Args)]
struct ShowArgs {
    /// What to show; without it, the pinned maps as the data plane has them.
    #[arg(value_enum)]
    view: Option<View>,

    #[command(flatten)]
    control: ControlArgs,

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
struct CheckArgs {
    /// The configuration file (TOML; mgm-user/examples/mgm.toml is a commented example).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Configuration file (TOML; mgm-user/examples/mgm.toml is a commented example). Every
    /// flag has a key there; flags given here override the file.
    /// Example: --config /etc/mgm/mgm.toml
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Interface towards the multicast sources; mgm runs an IGMP proxy (RFC 4605) with it as
    /// the upstream. Leave it out when an out-of-process module decides (--external).
    /// Example: --upstream eth0
    #[arg(long, value_name = "IF")]
    upstream: Option<String>,

    /// Interface towards receivers (at least one, here or in the configuration file; repeat
    /// the flag or list several).
    /// Example: --downstream eth1 --downstream eth2
    #[arg(long, value_name = "IF", num_args = 1..)]
    downstream: Vec<String>,

    /// Interface to manage but leave for out-of-process routing-protocol modules to take over
    /// --socket, such as a PIM or DVMRP side (repeatable). IGMP does not run there.
    #[arg(long, value_name = "IF", num_args = 1..)]
    external: Vec<String>,

    /// Unix socket where out-of-process modules connect (JSON lines; see
    /// mgm-user/docs/module-protocol.md). Root only.
    #[arg(long, value_name = "PATH", default_value = "/run/mgm/mgm.sock")]
    socket: PathBuf,

    /// Let the members of this group use --socket too (its mode becomes 0660 and its group
    /// this one); without it, root only. Every connection's credentials are checked.
    /// Example: --socket-group mgm
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,

    /// Unix socket where operators' commands connect (`mgm show`, `mgm route`, `mgm join`,
    /// `mgm reload`; JSON lines, see mgm-user/docs/control-schema.json). Root only.
    #[arg(long, value_name = "PATH", default_value = mgm_user::control::DEFAULT_SOCKET)]
    control_socket: PathBuf,

    /// Let the members of this group use --control-socket too (mode 0660): they can then
    /// change static routes and joins. Without it, root only.
    /// Example: --control-group mgm
    #[arg(long, value_name = "GROUP")]
    control_group: Option<String>,

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

    /// IGMP group records per second each interface hands the daemon (an IGMPv3 report counts
    /// its records, any other message one; bursts of a quarter second's worth); more are
    /// passed to the host only and counted as `igmp_limited`. 0: no limit.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    igmp_admit_rate: u32,

    /// Packets of unknown flows per second each interface raises an upcall (and a
    /// placeholder) for; more are dropped and counted as `upcall_limited`, except that a flow
    /// seen missing recently draws on a second budget of the same rate. 0: no limit.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    upcall_admit_rate: u32,

    /// Most negative forwarding entries per incoming interface; a new one past it evicts the
    /// interface's oldest, counted and logged. An evicted flow's packets are dropped as before
    /// and raise an upcall again within the upcall budget.
    #[arg(long, value_name = "N", default_value_t = 1_024)]
    negative_budget: usize,

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

    /// Drop IGMP reports and leaves that lack the Router Alert option or arrive with a TTL
    /// other than 1. Hosts send them with both (RFC 2236 §2, RFC 3376 §4), so others were
    /// forged off the link (RFC 3376 §9.2) or come from an old stack that omits Router Alert.
    /// Without it they are accepted. Either way each is counted per interface in `mgm show
    /// stats` (no RA / TTL not 1 / dropped).
    #[arg(long)]
    igmp_strict_reports: bool,

    /// Most groups kept per interface; more are refused, counted and logged.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    igmp_max_groups: usize,

    /// Most source records kept per interface; more are refused, counted and logged. With
    /// fast leave, also the most tracked hosts (one each, plus one per source they name).
    #[arg(long, value_name = "N", default_value_t = 16_384)]
    igmp_max_sources: usize,

    /// Serve Prometheus metrics (the data plane's counters, as `mgm show` has them) over HTTP
    /// at http://ADDR:PORT/metrics. Off unless given; keep it on loopback or a management
    /// network. Example: --metrics 127.0.0.1:9464
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<std::net::SocketAddr>,

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
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let (cli, file) = match resolve(cli, &matches) {
        Ok(resolved) => resolved,
        Err(e) => {
            eprintln!("mgm: error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    env_logger::Builder::new()
        .filter_level(cli.log_level)
        .parse_default_env()
        .format_timestamp_millis()
        .init();
    match try_main(cli, file) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mgm: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The command line with, for `mgm run`, the `--config` file's values where no flag was
/// given, and the file itself.
///
/// # Errors
/// The command line does not parse, or the file has problems.
fn resolve(
    mut cli: Cli,
    matches: &clap::ArgMatches,
) -> anyhow::Result<(Cli, Option<config::Config>)> {
    let mut file = None;
    if let Command::Run(args) = &mut cli.command {
        let run = matches.subcommand_matches("run").unwrap_or(matches);
        let given = |id: &str| {
            [matches, run]
                .iter()
                .any(|m| m.value_source(id) == Some(ValueSource::CommandLine))
        };
        file = apply_config(args, &mut cli.log_level, given)?;
    }
    Ok((cli, file))
}

/// Fills in from the `--config` file what the command line did not give (`given` says which
/// flags it did), so flags override the file and the file overrides the defaults. Returns
/// the file, whose per-interface IGMP tables [`settings`] applies.
fn apply_config(
    args: &mut RunArgs,
    log_level: &mut log::LevelFilter,
    given: impl Fn(&str) -> bool,
) -> anyhow::Result<Option<config::Config>> {
    use mgm_user::config::{names, value};
    let Some(path) = &args.config else {
        return Ok(None);
    };
    let c = mgm_user::config::load(path)?;
    let level = |v: &Option<toml::Spanned<String>>| -> anyhow::Result<Option<log::LevelFilter>> {
        // `load` accepted only the level names.
        value(v).map(|l| l.parse().context("log level")).transpose()
    };
    macro_rules! unless_given {
        ($($field:ident = $value:expr;)*) => {$(
            if !given(stringify!($field)) {
                if let Some(v) = $value {
                    args.$field = v;
                }
            }
        )*};
    }
    unless_given! {
        upstream = value(&c.interfaces.upstream).map(Some);
        downstream = names(&c.interfaces.downstream);
        external = names(&c.interfaces.external);
        netns = value(&c.netns).map(Some);
        metrics = value(&c.metrics)
            .map(|m| m.parse().context("metrics").map(Some))
            .transpose()?;
        socket = value(&c.modules.socket).map(PathBuf::from);
        socket_group = value(&c.modules.socket_group).map(Some);
        module_answer_ms = value(&c.modules.answer_ms);
        control_socket = value(&c.control.socket).map(PathBuf::from);
        control_group = value(&c.control.group).map(Some);
        xdp_mode = value(&c.dataplane.xdp_mode)
            .map(|m| Mode::from_str(&m, false).map_err(anyhow::Error::msg))
            .transpose()?;
        pin_dir = value(&c.dataplane.pin_dir).map(PathBuf::from);
        ttl_threshold = value(&c.dataplane.ttl_threshold);
        pending_retry_ms = value(&c.dataplane.pending_retry_ms);
        wrong_if_interval_ms = value(&c.dataplane.wrong_if_interval_ms);
        igmp_admit_rate = value(&c.dataplane.igmp_admit_rate);
        upcall_admit_rate = value(&c.dataplane.upcall_admit_rate);
        negative_budget = value(&c.dataplane.negative_budget);
        keep_forwarding = value(&c.dataplane.keep_forwarding);
        ebpf_log_level = level(&c.dataplane.ebpf_log_level)?;
        rpf_table = value(&c.rpf.table);
        mfe_lifetime = value(&c.rpf.mfe_lifetime);
        static_route = names(&c.routes.static_routes)
            .map(|l| l.iter().map(|r| r.parse()).collect::<Result<Vec<StaticRoute>, _>>())
            .transpose()?;
        igmp_version = value(&c.igmp.version);
        igmp_query_interval = value(&c.igmp.query_interval);
        igmp_query_response_ms = value(&c.igmp.query_response_ms);
        igmp_robustness = value(&c.igmp.robustness);
        igmp_last_member_interval_ms = value(&c.igmp.last_member_interval_ms);
        igmp_fast_leave = value(&c.igmp.fast_leave);
        igmp_strict_reports = value(&c.igmp.strict_reports);
        igmp_max_groups = value(&c.igmp.max_groups);
        igmp_max_sources = value(&c.igmp.max_sources);
    }
    if !given("log_level") {
        if let Some(l) = level(&c.log_level)? {
            *log_level = l;
        }
    }
    Ok(Some(c))
}

/// The IGMP settings of the flags and `[igmp]`: every downstream's default.
fn igmp_default(args: &RunArgs) -> querier::Config {
    querier::Config {
        version: if args.igmp_version == 2 {
            querier::Version::V2
        } else {
            querier::Version::V3
        },
        robustness: args.igmp_robustness,
        query_interval: Duration::from_secs(args.igmp_query_interval),
        query_response_interval: Duration::from_millis(args.igmp_query_response_ms),
        last_member_query_interval: Duration::from_millis(args.igmp_last_member_interval_ms),
        fast_leave: args.igmp_fast_leave,
        strict_reports: args.igmp_strict_reports,
        max_groups: Some(args.igmp_max_groups),
        max_sources: Some(args.igmp_max_sources),
        ..querier::Config::default()
    }
}

/// The settings a reload compares, from the resolved command line and the file: each
/// downstream's IGMP settings are the default with its `[igmp.interface.IF]` table over it.
///
/// # Errors
/// A table names no downstream, settings cannot run, or a static route does not fit the
/// roles.
fn settings(
    args: &RunArgs,
    log_level: log::LevelFilter,
    file: Option<&config::Config>,
) -> anyhow::Result<Settings> {
    check_roles(args)?;
    let base = igmp_default(args);
    base.validate().context("invalid IGMP settings")?;
    let tables = file.map(|f| &f.igmp.interface);
    if let Some(name) = tables
        .into_iter()
        .flat_map(|t| t.keys())
        .find(|n| !args.downstream.contains(n))
    {
        bail!(
            "[igmp.interface.{name}]: {name} is not a downstream, and IGMP runs on downstreams \
             only"
        );
    }
    let mut igmp = std::collections::BTreeMap::new();
    for name in &args.downstream {
        let config = match tables.and_then(|t| t.get(name)) {
            Some(table) => table.get_ref().over(base.clone()),
            None => base.clone(),
        };
        config
            .validate()
            .with_context(|| format!("invalid IGMP settings on {name}"))?;
        igmp.insert(name.clone(), config);
    }
    let downstream: Vec<&str> = args.downstream.iter().map(String::as_str).collect();
    for r in &args.static_route {
        if let Some(why) = config::static_route_problem(r, args.upstream.as_deref(), &downstream) {
            bail!("static route \"{r}\": {why}");
        }
    }
    let path = |p: &std::path::Path| p.display().to_string();
    let fixed = [
        ("log-level", log_level.as_str().to_lowercase()),
        ("netns", format!("{:?}", args.netns)),
        ("metrics", format!("{:?}", args.metrics)),
        ("socket", path(&args.socket)),
        ("socket-group", format!("{:?}", args.socket_group)),
        ("answer-ms", args.module_answer_ms.to_string()),
        ("xdp-mode", format!("{:?}", args.xdp_mode).to_lowercase()),
        ("pin-dir", path(&args.pin_dir)),
        ("ttl-threshold", args.ttl_threshold.to_string()),
        ("pending-retry-ms", args.pending_retry_ms.to_string()),
        (
            "wrong-if-interval-ms",
            args.wrong_if_interval_ms.to_string(),
        ),
        (
            "ebpf-log-level",
            args.ebpf_log_level.as_str().to_lowercase(),
        ),
        ("table", args.rpf_table.to_string()),
        ("mfe-lifetime", args.mfe_lifetime.to_string()),
        // The proxy's host side upstream runs with the default's robustness and intervals.
        (
            "[igmp] on the upstream",
            format!(
                "robustness {}, query-interval {}, query-response-ms {}",
                base.robustness,
                base.query_interval.as_secs(),
                base.query_response_interval.as_millis()
            ),
        ),
    ];
    Ok(Settings {
        upstream: args.upstream.clone(),
        downstream: args.downstream.clone(),
        external: args.external.clone(),
        igmp,
        static_routes: args.static_route.clone(),
        keep_forwarding: args.keep_forwarding,
        fixed: fixed.into_iter().collect(),
    })
}

/// Reads the settings again as `mgm run` was started: its command line, with the
/// `--config` file as it is now.
fn read_again() -> anyhow::Result<Settings> {
    let matches = Cli::command().try_get_matches()?;
    let (cli, file) = resolve(Cli::from_arg_matches(&matches)?, &matches)?;
    let Command::Run(args) = &cli.command else {
        bail!("not started as mgm run");
    };
    settings(args, cli.log_level, file.as_ref())
}

fn try_main(cli: Cli, file: Option<config::Config>) -> anyhow::Result<()> {
    let log_level = cli.log_level;
    match cli.command {
        Command::Check(args) => {
            mgm_user::config::load(&args.config)?;
            println!("{}: no problems", args.config.display());
            Ok(())
        }
        Command::Verify => {
            let loaded = loader::load_programs(&Tunables::default())
                .context("the kernel did not accept the XDP programs")?;
            for (name, count) in loader::verified_instructions(&loaded.ebpf)? {
                match count {
                    Some(n) => println!("{name}: verifier processed {n} instructions"),
                    None => println!("{name}: accepted (this kernel does not report a count)"),
                }
            }
            if !loaded.xdp_meta {
                println!(
                    "bpf_xdp_adjust_meta: refused by this kernel; copies find their entry's \
                     counters by a lookup"
                );
            }
            Ok(())
        }
        Command::Show(args) => show(args),
        Command::Route(args) => {
            let route = args.route.join(" ");
            let request = match args.action {
                RouteAction::Add => Request::RouteAdd { route },
                RouteAction::Del => Request::RouteDel { route },
            };
            change(&args.control, &request)
        }
        Command::Join(a) => change(
            &a.control,
            &Request::Join {
                interface: a.interface,
                group: a.group,
                source: a.source,
            },
        ),
        Command::Leave(a) => change(
            &a.control,
            &Request::Leave {
                interface: a.interface,
                group: a.group,
                source: a.source,
            },
        ),
        Command::Reload(c) => change(&c, &Request::Reload {}),
        Command::Run(args) => {
            let settings = settings(&args, log_level, file.as_ref())?;
            if let Some(ns) = &args.netns {
                enter_netns(ns)?;
            }
            let (mut clients, upstream_host) = match &args.upstream {
                Some(up) => daemon::Options::proxy(up.clone()),
                None => (Vec::new(), None),
            };
            let names = Names::default();
            let (statics, rpf_routes, static_table) = static_routes(
                &args.static_route,
                args.upstream.as_deref(),
                &args.downstream,
                &names,
            )?;
            clients.push(statics);
            let igmp_config = igmp_default(&args);
            let (reloads, requests) = tokio::sync::mpsc::unbounded_channel();
            let opts = daemon::Options {
                upstream_host,
                clients,
                names,
                igmp: args.downstream.clone(),
                external: args.external.clone(),
                socket: args.socket.clone(),
                socket_access: match &args.socket_group {
                    Some(g) => Access::root_and_group(g).context("--socket-group")?,
                    None => Access::root_only(),
                },
                answer_within: Duration::from_millis(args.module_answer_ms),
                control_socket: args.control_socket.clone(),
                control_access: match &args.control_group {
                    Some(g) => Access::root_and_group(g).context("--control-group")?,
                    None => Access::root_only(),
                },
                statics: static_table,
                igmp_config,
                settings,
                reload: Some((Box::new(read_again), requests)),
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
                    igmp_admit_rate: args.igmp_admit_rate,
                    upcall_admit_rate: args.upcall_admit_rate,
                },
                negative_budget: args.negative_budget,
                published: args.metrics.map(|_| Default::default()),
            };
            if let (Some(addr), Some(published)) = (args.metrics, &opts.published) {
                mgm_user::cli::metrics::serve(addr, opts.pin_dir.clone(), published.clone())?;
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(async {
                forward_hangups(reloads);
                daemon::run(opts, shutdown_signal()).await
            })
        }
    }
}

/// `mgm show`: asks the daemon for a view; falls back to the pinned maps when none answers.
fn show(args: ShowArgs) -> anyhow::Result<()> {
    use mgm_user::control::{client, render};
    if let Some(view) = args.view {
        match client::show(&args.control.control_socket, view) {
            Ok(answer) => {
                let Some(doc) = answer.document.as_ref().filter(|_| answer.ok) else {
                    bail!("{}", answer.error.unwrap_or_else(|| "no document".into()));
                };
                if args.json {
                    println!("{:#}", serde_json::to_value(&answer)?);
                } else {
                    print!("{}", render::render(doc));
                }
                return Ok(());
            }
            Err(e @ client::ClientError::NoDaemon { .. }) => {
                let what = if matches!(view, View::Groups | View::Protocols) {
                    "groups and protocols are known only to a running daemon; "
                } else {
                    ""
                };
                eprintln!(
                    "mgm: {e}; {what}showing the forwarding entries and interface counters \
                     of the pinned maps in {} instead",
                    args.pin_dir.display()
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(ns) = &args.netns {
        enter_netns(ns)?;
    }
    let state = mgm_user::dataplane::inspect::read_pinned(&args.pin_dir)
        .with_context(|| format!("no mgm data plane pinned in {}", args.pin_dir.display()))?;
    if args.json {
        print!("{}", mgm_user::cli::show::render_json(&state));
    } else {
        print!("{}", render::pinned(&state));
    }
    Ok(())
}

/// Sends a run-time change to the daemon and prints its answer.
fn change(control: &ControlArgs, request: &Request) -> anyhow::Result<()> {
    let answer = mgm_user::control::client::ask(&control.control_socket, request)?;
    if !answer.ok {
        bail!("{}", answer.error.unwrap_or_default());
    }
    if let Some(m) = answer.message {
        println!("{m}");
    }
    Ok(())
}

/// Refuses a run without downstreams, and an interface named in two roles.
fn check_roles(args: &RunArgs) -> anyhow::Result<()> {
    if args.downstream.is_empty() {
        bail!(
            "no downstream interface: name one with --downstream IF, or as \
             [interfaces] downstream = [\"IF\"] in the --config file"
        );
    }
    let named = args
        .upstream
        .iter()
        .map(|i| ("--upstream", i.as_str(), ()))
        .chain(
            args.downstream
                .iter()
                .map(|i| ("--downstream", i.as_str(), ())),
        )
        .chain(args.external.iter().map(|i| ("--external", i.as_str(), ())));
    if let Some((first, role, name, ())) = mgm_user::config::named_twice(named) {
        bail!("{name} is named twice, as {first} and as {role}");
    }
    Ok(())
}

/// The static-routes client (always registered: `mgm route` and `mgm join` add to it at run
/// time), the RPF host routes of its (S,G) routes, and its table, after checking the routes
/// name managed interfaces in the right roles.
fn static_routes(
    routes: &[StaticRoute],
    upstream: Option<&str>,
    downstream: &[String],
    names: &Names,
) -> anyhow::Result<(
    daemon::ClientPlan,
    Vec<mgm_user::core::Route>,
    mgm_user::protocols::static_routes::StaticTable,
)> {
    use mgm_user::{
        core::{InterfaceId, Route},
        dataplane::netdev::NetDev,
        protocols::static_routes as st,
    };
    let mut interfaces: Vec<String> = Vec::new();
    let mut memberships = Vec::new();
    let mut rpf = Vec::new();
    let downstream_names: Vec<&str> = downstream.iter().map(String::as_str).collect();
    for r in routes {
        if let Some(why) = mgm_user::config::static_route_problem(r, upstream, &downstream_names) {
            bail!("static route \"{r}\": {why}");
        }
        for oif in &r.oifs {
            let i = match interfaces.iter().position(|n| n == oif) {
                Some(i) => i,
                None => {
                    interfaces.push(oif.clone());
                    interfaces.len() - 1
                }
            };
            memberships.push((r.entry(), i));
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
    let module = st::StaticRoutes::new(routes, names.clone());
    let table = module.table();
    let plan = daemon::ClientPlan {
        protocol: Box::new(module),
        protocol_id: st::PROTOCOL_ID,
        component_id: st::COMPONENT_ID,
        interfaces,
        memberships,
    };
    Ok((plan, rpf, table))
}

/// Turns every SIGHUP into a reload request, from a task of its own.
fn forward_hangups(reloads: ReloadSender) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            log::warn!("cannot watch SIGHUP ({e}); reload with a restart");
            return;
        }
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            log::info!("SIGHUP: reloading the configuration");
            if reloads.send(ReloadRequest { reply: None }).is_err() {
                break;
            }
        }
    });
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
