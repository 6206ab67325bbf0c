//! The daemon's driver: one task owns all state and serialises ring-buffer events, timers and
//! shutdown (spec §10). The MGM core and the protocol modules decide; this file feeds them
//! inputs with the time, and moves the map operations they emit to the data plane.

use std::{
    collections::BTreeMap, future::Future, net::Ipv4Addr, path::PathBuf, sync::Arc, time::Duration,
};

use anyhow::{bail, Context};
use log::{debug, error, info, warn};
use mgm_common::{fwd::FwdKey, maps::FWD_CAPACITY};
use tokio::io::unix::AsyncFd;

use crate::{
    core::{
        self, ComponentId, Config, InterfaceId, Mgm, ProtocolHandle, ProtocolId, RoutingProtocol,
        SourceGroupEntry, MGM_EXCLUDE_STATE_FLAG, MGM_JOIN_STATE_FLAG,
    },
    dataplane::{
        error::report,
        netdev::{mac_string, NetDev},
    },
    dataplane::{ringbuf, Dataplane, Event, LoadOptions, Tunables, XdpMode},
    igmp::querier::{self, Querier},
    links,
    protocols::{
        igmp::IgmpClient,
        igmp_proxy::{self, ProxyUpstream, UpstreamChange, UpstreamQueue},
        remote::ModuleServer,
    },
    routes,
    sockets::{HostMembership, QuerySocket},
};

/// One routing-protocol client to register with MGM, and the interfaces it owns.
pub struct ClientPlan {
    pub protocol: Box<dyn RoutingProtocol>,
    pub protocol_id: ProtocolId,
    pub component_id: ComponentId,
    pub interfaces: Vec<String>,
    /// Memberships the client holds from the start, on its own interfaces (index into
    /// `interfaces`).
    pub memberships: Vec<(SourceGroupEntry, usize)>,
}

/// The MGM core with its clients registered, and the clock it runs on.
struct Router {
    mgm: Mgm,
    igmp: ProtocolHandle,
    /// The IGMP querier of every interface IGMP runs on, by ifindex.
    queriers: BTreeMap<u32, Querier>,
    /// Their sockets for sending queries.
    sockets: BTreeMap<u32, QuerySocket>,
    /// Querier limit hits already logged, by ifindex, so each new one is logged once.
    limit_hits: BTreeMap<u32, u64>,
    /// The core's epoch: its `Instant`s are milliseconds since this moment.
    epoch: std::time::Instant,
}

impl Router {
    /// Registers every client and takes its interfaces, then registers IGMP on `igmp`: alone
    /// where no client owns the interface (its memberships forward), as co-owner elsewhere
    /// (its memberships become local joins into the owner, spec §4.4).
    fn new(
        clients: Vec<(ClientPlan, Vec<u32>)>,
        igmp: &[&NetDev],
        igmp_config: &querier::Config,
    ) -> anyhow::Result<Router> {
        // The core holds every membership IGMP's limits let in, on every interface.
        let igmp_memberships = igmp_config
            .max_memberships()
            .map_or(usize::MAX, |n| n.saturating_mul(igmp.len()));
        let defaults = Config::default();
        let mut mgm = Mgm::new(Config {
            max_mfes: FWD_CAPACITY as usize,
            max_memberships: defaults.max_memberships.max(igmp_memberships),
            ..defaults
        });
        let epoch = std::time::Instant::now();
        let now = core::Instant::from_millis(0);
        for (plan, ifindexes) in clients {
            let id = plan.protocol_id;
            let handle = mgm
                .register(plan.protocol, id, plan.component_id)
                .with_context(|| format!("registering protocol {} with MGM", id.0))?;
            for (name, ifindex) in plan.interfaces.iter().zip(&ifindexes) {
                mgm.take_interface_ownership(handle, InterfaceId::new(*ifindex), now)
                    .with_context(|| format!("protocol {} taking {name}", id.0))?;
            }
            for (sg, i) in &plan.memberships {
                let ifindex = ifindexes.get(*i).copied().unwrap_or(0);
                mgm.add_group_membership_entry(
                    handle,
                    *sg,
                    InterfaceId::new(ifindex),
                    MGM_JOIN_STATE_FLAG,
                    now,
                )
                .with_context(|| format!("protocol {} joining {sg:?}", id.0))?;
            }
        }
        let igmp_handle = mgm
            .register(Box::new(IgmpClient), ProtocolId::IGMP, ComponentId(0))
            .context("registering IGMP with MGM")?;
        let mut queriers = BTreeMap::new();
        let mut sockets = BTreeMap::new();
        for dev in igmp {
            mgm.take_interface_ownership(igmp_handle, InterfaceId::new(dev.ifindex), now)
                .with_context(|| format!("IGMP taking {}", dev.name))?;
            let address = dev.ipv4.with_context(|| {
                format!(
                    "{} has no IPv4 address; IGMP needs one to send queries from",
                    dev.name
                )
            })?;
            let q = Querier::new(dev.ifindex, address, igmp_config.clone(), now)
                .with_context(|| format!("IGMP settings for {}", dev.name))?;
            queriers.insert(dev.ifindex, q);
            let sock = QuerySocket::new(dev, address)
                .with_context(|| format!("cannot open the IGMP query socket on {}", dev.name))?;
            sockets.insert(dev.ifindex, sock);
        }
        Ok(Router {
            mgm,
            igmp: igmp_handle,
            queriers,
            sockets,
            limit_hits: BTreeMap::new(),
            epoch,
        })
    }

    fn now(&self) -> core::Instant {
        core::Instant::from_millis(self.epoch.elapsed().as_millis() as u64)
    }

    /// When the core or a querier next needs its timers run, as a tokio deadline.
    fn next_deadline(&self) -> Option<tokio::time::Instant> {
        let queriers = self.queriers.values().filter_map(Querier::poll_timeout);
        self.mgm
            .poll_timeout()
            .into_iter()
            .chain(queriers)
            .min()
            .map(|at| {
                tokio::time::Instant::from_std(self.epoch + Duration::from_millis(at.as_millis()))
            })
    }

    /// Runs every timer that is due.
    fn handle_timeout(&mut self) {
        let now = self.now();
        self.mgm.handle_timeout(now);
        for q in self.queriers.values_mut() {
            q.handle_timeout(now);
        }
    }

    /// Moves what the queriers decided to the wire (queries) and to the core (memberships).
    fn pump_queriers(&mut self, name: &impl Fn(u32) -> String) {
        let now = self.now();
        for (ifindex, q) in &mut self.queriers {
            while let Some(t) = q.poll_transmit() {
                let bytes = crate::igmp::codec::encode(&t.message);
                if let Some(sock) = self.sockets.get(ifindex) {
                    if let Err(e) = sock.send(t.destination, &bytes) {
                        warn!("cannot send an IGMP query on {}: {e}", name(*ifindex));
                    }
                }
            }
            while let Some(m) = q.poll_membership() {
                let entry = match m.source {
                    Some(s) => SourceGroupEntry::sg(s, m.group),
                    None => SourceGroupEntry::star_g(m.group),
                };
                let if_id = InterfaceId::new(m.ifindex);
                // Spec §4.8: an EXCLUDE-mode group's blocked sources are exclusions.
                let (flags, verbs) = match m.exclude {
                    true => (MGM_EXCLUDE_STATE_FLAG, ("excludes", "stops excluding")),
                    false => (MGM_JOIN_STATE_FLAG, ("joins", "leaves")),
                };
                let (verb, result) = if m.join {
                    let r = self
                        .mgm
                        .add_group_membership_entry(self.igmp, entry, if_id, flags, now);
                    (verbs.0, r)
                } else {
                    let r = self
                        .mgm
                        .delete_group_membership_entry(self.igmp, entry, if_id, flags, now);
                    (verbs.1, r)
                };
                let source = m.source.map_or("*".to_owned(), |s| s.to_string());
                match result {
                    Ok(()) => info!(
                        "membership: {} {verb} ({source}, {})",
                        name(m.ifindex),
                        m.group
                    ),
                    Err(e) => warn!(
                        "membership: {} {verb} ({source}, {}) refused by MGM: {e}",
                        name(m.ifindex),
                        m.group
                    ),
                }
            }
            let c = q.counters();
            let hits = c.group_limit_hits + c.source_limit_hits;
            let logged = self.limit_hits.entry(*ifindex).or_default();
            if hits > *logged {
                warn!(
                    "IGMP on {}: {} groups and {} sources refused so far at the configured limits",
                    name(*ifindex),
                    c.group_limit_hits,
                    c.source_limit_hits
                );
                *logged = hits;
            }
        }
    }
}

/// Where a proxy's upstream memberships go: the host stack of one interface.
pub struct UpstreamHost {
    pub interface: String,
    pub changes: UpstreamQueue,
}

/// Everything `mgm run` needs, validated by the CLI.
pub struct Options {
    /// The host membership a proxy keeps upstream, if one runs.
    pub upstream_host: Option<UpstreamHost>,
    /// The routing protocols and what each owns.
    pub clients: Vec<ClientPlan>,
    /// Interfaces IGMP runs on.
    pub igmp: Vec<String>,
    /// Interfaces managed with no built-in owner, for out-of-process modules to take.
    pub external: Vec<String>,
    /// Where out-of-process modules connect.
    pub socket: PathBuf,
    /// How long a callback waits for a module's answer (rpf, creation and prune alerts).
    pub answer_within: Duration,
    /// IGMP querier settings, the same on every interface.
    pub igmp_config: querier::Config,
    pub mode: XdpMode,
    pub pin_dir: PathBuf,
    pub ttl_threshold: u8,
    pub tunables: Tunables,
    /// The routing table whose IPv4 routes make the RPF table (254 is main).
    pub rpf_table: u32,
    /// Routes added to the RPF table on top of the kernel's (static routes' sources).
    pub rpf_routes: Vec<core::Route>,
    /// On stop, leave XDP forwarding with the last state for the next daemon to adopt.
    pub keep_forwarding: bool,
}

impl Options {
    /// The IGMP proxy: the proxy owns `upstream` and its upstream memberships are applied on
    /// `upstream`'s host stack; IGMP alone owns each downstream.
    pub fn proxy(upstream: String) -> (Vec<ClientPlan>, Option<UpstreamHost>) {
        let queue = UpstreamQueue::default();
        let proxy = ClientPlan {
            protocol: Box::new(ProxyUpstream::new(queue.clone())),
            protocol_id: igmp_proxy::PROTOCOL_ID,
            component_id: igmp_proxy::COMPONENT_ID,
            interfaces: vec![upstream.clone()],
            // RFC 4605 §4.2: traffic from downstream sources also goes upstream.
            memberships: vec![(SourceGroupEntry::star_star(), 0)],
        };
        let host = UpstreamHost {
            interface: upstream,
            changes: queue,
        };
        (vec![proxy], Some(host))
    }

    /// Every managed interface name, once, in the order first named.
    fn interfaces(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        let named = self
            .clients
            .iter()
            .flat_map(|c| c.interfaces.iter())
            .chain(self.igmp.iter())
            .chain(self.external.iter());
        for name in named {
            if !all.contains(name) {
                all.push(name.clone());
            }
        }
        all
    }
}

/// Counts of what the daemon saw that the XDP counters cannot: IGMP it rejected after
/// decoding, and upcalls.
#[derive(Debug, Default)]
struct Seen {
    igmp: u64,
    bad_igmp: u64,
    no_cache: u64,
    wrong_if: u64,
    unknown: u64,
    map_errors: u64,
}

/// Loads the data plane, runs until `shutdown` resolves, then detaches.
///
/// # Errors
/// An interface is missing, or loading or attaching failed.
pub async fn run(opts: Options, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // Before the interfaces are read, so a change in between still arrives.
    let mut link_watch = links::LinkWatch::start()?;
    let interfaces: Vec<NetDev> = opts
        .interfaces()
        .iter()
        .map(|n| NetDev::lookup(n))
        .collect::<Result<_, _>>()?;
    let names: BTreeMap<u32, String> = interfaces
        .iter()
        .map(|d| (d.ifindex, d.name.clone()))
        .collect();
    let ifindex = |n: &String| -> u32 {
        interfaces
            .iter()
            .find(|d| &d.name == n)
            .map_or(0, |d| d.ifindex)
    };
    let igmp: Vec<&NetDev> = opts
        .igmp
        .iter()
        .filter_map(|n| interfaces.iter().find(|d| &d.name == n))
        .collect();
    let summary = describe(&opts);
    let mut dp = Dataplane::load(&LoadOptions {
        interfaces: interfaces.clone(),
        mode: opts.mode,
        pin_dir: opts.pin_dir.clone(),
        ttl_threshold: opts.ttl_threshold,
        tunables: opts.tunables.clone(),
    })
    .context("cannot start the data plane")?;
    let mut events = watch(dp.take_events().context("event ring already taken")?)
        .context("cannot poll the event ring buffer")?;
    let mut logger = match dp.take_logger() {
        Some(l) => Some(watch(l).context("cannot poll the XDP log ring buffer")?),
        None => None,
    };
    let clients: Vec<(ClientPlan, Vec<u32>)> = opts
        .clients
        .into_iter()
        .map(|c| {
            let idx = c.interfaces.iter().map(ifindex).collect();
            (c, idx)
        })
        .collect();
    let mut router = Router::new(clients, &igmp, &opts.igmp_config)?;
    let mut modules = ModuleServer::bind(&opts.socket, Arc::new(names.clone()), opts.answer_within)
        .context("cannot open the module socket")?;
    let mut route_watch = routes::RouteWatch::start(opts.rpf_table)?;
    load_rpf_table(&mut router.mgm, opts.rpf_table, &opts.rpf_routes).await?;
    let name = |i: u32| {
        names
            .get(&i)
            .cloned()
            .unwrap_or_else(|| format!("ifindex {i}"))
    };
    info!(
        "mgm running: {summary}; maps pinned in {}; modules connect to {}",
        opts.pin_dir.display(),
        opts.socket.display()
    );

    let mut upstream = match &opts.upstream_host {
        Some(h) => Some(upstream_socket(h, &interfaces)?),
        None => None,
    };
    let mut reconcile_at = (dp.adopted > 0).then(|| reconcile_deadline(&opts.igmp_config));
    let mut seen = Seen::default();
    let mut counters = tokio::time::interval(COUNTER_SYNC);
    counters.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let deadline = router.next_deadline();
        tokio::select! {
            guard = events.readable_mut() => {
                let mut guard = guard.context("event ring buffer poll failed")?;
                while let Some(record) = guard.get_inner_mut().next() {
                    let event = ringbuf::decode(&record);
                    handle(&mut dp, &mut router, &mut seen, &name, event);
                }
                guard.clear_ready();
            }
            () = sleep_until(deadline) => router.handle_timeout(),
            () = sleep_until(reconcile_at) => {
                reconcile_at = None;
                let entries = dp.forwarding.snapshot();
                info!("reconciling {} adopted or installed entries with the core", entries.len());
                let now = router.now();
                router.mgm.reconcile(entries, now);
            }
            _ = counters.tick() => sync_counters(&dp, &mut router.mgm),
            change = route_watch.next() => follow_route(&mut router.mgm, change)?,
            change = link_watch.next() => follow_link(&mut dp, &name, change)?,
            guard = readable_logger(&mut logger) => {
                let mut guard = guard.context("XDP log ring buffer poll failed")?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            event = modules.next() => {
                let now = router.now();
                modules.handle(event, &mut router.mgm, now);
            }
            () = &mut shutdown => break,
        }
        router.pump_queriers(&name);
        apply_map_ops(&mut dp, &mut router.mgm, &mut seen);
        if let Some((socket, changes)) = &mut upstream {
            apply_upstream(socket, changes);
        }
    }
    modules.shutdown();
    info!(
        "shutting down: {} IGMP messages, {} rejected, {} no-cache and {} wrong-interface upcalls, {} unknown records, {} map errors",
        seen.igmp, seen.bad_igmp, seen.no_cache, seen.wrong_if, seen.unknown, seen.map_errors
    );
    for dev in &interfaces {
        if let Ok(Some(s)) = dp.interfaces.stats(dev.ifindex) {
            info!("{}: {s:?}", dev.name);
        }
    }
    if opts.keep_forwarding {
        dp.leave_running();
        info!(
            "stopped; XDP keeps forwarding with the last state, and the next mgm run with pin \
             directory {} takes over",
            opts.pin_dir.display()
        );
    } else {
        drop(dp);
        info!("XDP detached and pins removed");
    }
    Ok(())
}

/// Fills the core's RPF table from routing table `table` and the `extra` routes.
async fn load_rpf_table(mgm: &mut Mgm, table: u32, extra: &[core::Route]) -> anyhow::Result<()> {
    let (routes, multipath) = routes::dump_ipv4(table)
        .await
        .context("cannot read the routing table for RPF")?;
    let (mut added, mut bad) = (0, 0);
    for r in routes.iter().chain(extra) {
        match mgm.add_route(*r) {
            Ok(()) => added += 1,
            Err(_) => bad += 1,
        }
    }
    info!(
        "RPF table: {added} IPv4 routes from table {table} and static routes ({multipath} multipath and {bad} malformed left out), changes followed"
    );
    Ok(())
}

/// Applies one change of the RPF table's routing table to the core.
fn follow_route(mgm: &mut Mgm, change: Option<routes::RouteChange>) -> anyhow::Result<()> {
    match change {
        Some(routes::RouteChange::Added(r)) => {
            debug!("RPF route added: {r:?}");
            if let Err(e) = mgm.add_route(r) {
                warn!("RPF route {r:?} refused: {e}");
            }
        }
        Some(routes::RouteChange::Deleted {
            network,
            prefix_len,
        }) => {
            debug!("RPF route deleted: {network}/{prefix_len}");
            mgm.delete_route(network, prefix_len);
        }
        None => bail!("the route-change subscription closed"),
    }
    Ok(())
}

/// A managed interface's new MAC or MTU goes into the maps: copies leave with the MAC the
/// interface has now, and the MTU check of the prepared copy uses the MTU it has now.
fn follow_link(
    dp: &mut Dataplane,
    name: &impl Fn(u32) -> String,
    event: Option<links::LinkEvent>,
) -> anyhow::Result<()> {
    let c = match event {
        Some(links::LinkEvent::Changed(c)) => c,
        Some(links::LinkEvent::Removed(ifindex)) => {
            if dp.interfaces.slot(ifindex).is_some() {
                warn!(
                    "{} is gone: nothing is sent out of it or received on it, and mgm does not \
                     take interfaces that come back (restart mgm)",
                    name(ifindex)
                );
            }
            return Ok(());
        }
        None => bail!("the link-change subscription closed"),
    };
    match dp.interfaces.follow(c.ifindex, c.mac, c.mtu) {
        Ok(Some(moved)) => info!(
            "{}: now MAC {} and MTU {} (was {} and {})",
            name(c.ifindex),
            mac_string(&moved.after.mac),
            moved.after.mtu,
            mac_string(&moved.before.mac),
            moved.before.mtu
        ),
        Ok(None) => {}
        Err(e) => error!(
            "{}: cannot take its new settings into the maps: {}",
            name(c.ifindex),
            report(&e)
        ),
    }
    Ok(())
}

/// The proxy's host socket on the upstream interface, and the queue its changes come in.
fn upstream_socket(
    host: &UpstreamHost,
    interfaces: &[NetDev],
) -> anyhow::Result<(HostMembership, UpstreamQueue)> {
    let dev = interfaces
        .iter()
        .find(|d| d.name == host.interface)
        .context("the upstream interface is not managed")?;
    let address = dev.ipv4.with_context(|| {
        format!(
            "{} has no IPv4 address; the proxy reports upstream from it",
            dev.name
        )
    })?;
    let socket = HostMembership::new(dev, address)
        .with_context(|| format!("cannot open the upstream host socket on {}", dev.name))?;
    match crate::sockets::raise_open_files_limit() {
        Ok(limit) => debug!("open files limit {limit}: room for that many upstream sockets"),
        Err(e) => warn!(
            "cannot raise the open files limit: {e}; upstream memberships may run out of sockets"
        ),
    }
    Ok((socket, host.changes.clone()))
}

/// Adopted entries keep forwarding as they were until IGMP has had the time to hear every
/// receiver again (startup queries and their answers); then the core decides about them.
fn reconcile_deadline(c: &querier::Config) -> tokio::time::Instant {
    let startup = c.startup_query_interval.unwrap_or(c.query_interval / 4);
    let grace = startup * u32::from(c.robustness) + c.query_response_interval;
    info!("the core reconciles the adopted entries in {grace:?}");
    tokio::time::Instant::now() + grace
}

/// "protocol 0x4d470001 owns up0; IGMP on dn1, dn2", for the log.
fn describe(opts: &Options) -> String {
    let mut parts: Vec<String> = opts
        .clients
        .iter()
        .map(|c| {
            format!(
                "protocol {:#x} owns {}",
                c.protocol_id.0,
                c.interfaces.join(", ")
            )
        })
        .collect();
    parts.push(format!("IGMP on {}", opts.igmp.join(", ")));
    if !opts.external.is_empty() {
        parts.push(format!("left for modules: {}", opts.external.join(", ")));
    }
    parts.join("; ")
}

/// Registers a ring buffer's fd with the runtime for readability.
fn watch<T: std::os::fd::AsRawFd>(inner: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: ring buffers own their map fd and keep it open, unchanged, until dropped, and
    // the AsyncFd owns the ring buffer.
    unsafe { AsyncFd::register_with_interest(inner, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Applies the proxy's upstream membership changes to the upstream host socket.
fn apply_upstream(socket: &mut HostMembership, changes: &UpstreamQueue) {
    let pending: Vec<UpstreamChange> = changes
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .drain(..)
        .collect();
    for change in pending {
        let (verb, result) = match change {
            UpstreamChange::Join(sg) => ("joins", socket.join(sg)),
            UpstreamChange::Leave(sg) => ("leaves", socket.leave(sg)),
        };
        match result {
            Ok(()) => info!("upstream: the proxy {verb} {change:?}"),
            Err(e) => warn!("upstream: the proxy cannot apply {change:?}: {e}"),
        }
    }
}

/// How often the core's copy of the MFE counters (spec §6.2 statistics) is refreshed from the
/// per-CPU maps.
const COUNTER_SYNC: Duration = Duration::from_secs(5);

/// Gives the core the data plane's counters of every MFE it holds.
fn sync_counters(dp: &Dataplane, mgm: &mut Mgm) {
    for (source, group) in mgm.forwarding_table().into_keys() {
        let stats = match dp.forwarding.stats(key(source, group)) {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(e) => {
                warn!(
                    "cannot read the counters of ({source}, {group}): {}",
                    report(&e)
                );
                continue;
            }
        };
        let counters = core::MfeCounters {
            in_pkts: stats.pkts,
            in_octets: stats.bytes,
            different_if: stats.wrong_if,
            negative_mfe: stats.negative,
            in_hdr_errors: stats.ttl_expired,
            in_discards: stats.negative + stats.ttl_expired + stats.no_oif_set,
            ..core::MfeCounters::default()
        };
        // The MFE can only be missing if it expired between the two calls.
        let _ = mgm.set_mfe_counters(source, group, counters);
    }
}

/// Moves every map operation the core has queued to the data plane.
fn apply_map_ops(dp: &mut Dataplane, mgm: &mut Mgm, seen: &mut Seen) {
    while let Some(op) = mgm.poll_map_op() {
        debug!("map op: {op:?}");
        if let Err(e) = dp.forwarding.apply(&op) {
            seen.map_errors += 1;
            error!("cannot apply {op:?}: {}", report(&e));
        }
    }
}

async fn readable_logger<T: std::os::fd::AsRawFd>(
    logger: &mut Option<AsyncFd<T>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'_, T>> {
    match logger {
        Some(l) => l.readable_mut().await,
        None => std::future::pending().await,
    }
}

fn handle(
    dp: &mut Dataplane,
    router: &mut Router,
    seen: &mut Seen,
    name: &impl Fn(u32) -> String,
    event: Event,
) {
    let now = router.now();
    match event {
        Event::Igmp {
            ifindex,
            reporter,
            message,
            vlan,
            ..
        } => {
            seen.igmp += 1;
            let vlan = match vlan {
                [0, 0] => String::new(),
                [outer, 0] => format!(" vlan {outer}"),
                [outer, inner] => format!(" vlan {outer}.{inner}"),
            };
            info!(
                "IGMP on {}{vlan} from {reporter}: {message:?}",
                name(ifindex)
            );
            match router.queriers.get_mut(&ifindex) {
                Some(q) => q.handle_message(now, reporter, &message),
                None => debug!("IGMP does not run on {}: message ignored", name(ifindex)),
            }
        }
        Event::BadIgmp {
            ifindex,
            reporter,
            error,
        } => {
            seen.bad_igmp += 1;
            warn!(
                "IGMP from {reporter} on {} rejected: {error}",
                name(ifindex)
            );
        }
        Event::NoCache {
            ifindex,
            source,
            group,
        } => {
            seen.no_cache += 1;
            debug!(
                "no entry for ({source}, {group}) arriving on {}",
                name(ifindex)
            );
            if let Err(e) = dp.forwarding.on_no_cache(key(source, group)) {
                seen.map_errors += 1;
                error!(
                    "cannot clear the placeholder of ({source}, {group}): {}",
                    report(&e)
                );
            }
            if let Err(e) =
                router
                    .mgm
                    .no_cache_upcall(source, group, InterfaceId::new(ifindex), &[], now)
            {
                warn!("MGM could not resolve ({source}, {group}): {e}");
            }
        }
        Event::WrongIf {
            ifindex,
            source,
            group,
            expected_iif,
        } => {
            seen.wrong_if += 1;
            debug!(
                "({source}, {group}) arrived on {} instead of {}",
                name(ifindex),
                name(expected_iif)
            );
            router
                .mgm
                .wrong_if_upcall(source, group, InterfaceId::new(ifindex), &[], now);
        }
        Event::Unknown { kind, len } => {
            seen.unknown += 1;
            warn!("unknown ring-buffer record (kind {kind}, {len} bytes) ignored");
        }
    }
}

fn key(source: Ipv4Addr, group: Ipv4Addr) -> FwdKey {
    FwdKey {
        source: u32::from(source).to_be(),
        group: u32::from(group).to_be(),
    }
}
