//! The daemon's driver: one task owns all state and serialises ring-buffer events, timers and
//! shutdown (spec §10). The MGM core and the protocol modules decide; this file feeds them
//! inputs with the time, and moves the map operations they emit to the data plane.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    net::Ipv4Addr,
    path::PathBuf,
    sync::atomic::Ordering,
    time::Duration,
};

use anyhow::{bail, Context};
use log::{debug, error, info, warn};
use mgm_common::{fwd::FwdKey, maps::FWD_CAPACITY};
use tokio::io::unix::AsyncFd;

use crate::{
    control::{self, server::ControlServer},
    core::{
        self, ComponentId, Config, InterfaceId, Mgm, ProtocolHandle, ProtocolId, RoutingProtocol,
        SourceGroupEntry, MGM_JOIN_STATE_FLAG,
    },
    dataplane::{
        error::report,
        maps::Counted,
        netdev::{mac_string, NetDev},
    },
    dataplane::{ringbuf, Dataplane, Event, LoadOptions, Outcome, Tunables, XdpMode},
    fair::Fair,
    handover::Handover,
    igmp::querier,
    links,
    managed::{Change, Managed, Names},
    protocols::{
        igmp::Igmp,
        igmp_proxy::{self, ProxyUpstream, UpstreamQueue},
        remote::{link, ModuleServer},
        static_routes,
    },
    ratelimit::{suppressed, RateLimit},
    reload::{self, Diff, Reader, ReloadRequest, Settings},
    routes,
    sockets::QuerySocket,
    upstream::UpstreamEdge,
};

/// Where the daemon takes reload requests from.
pub type ReloadRequests = tokio::sync::mpsc::UnboundedReceiver<ReloadRequest>;

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

/// A routing-protocol client registered with MGM, and what it owns by name, so it can take
/// its interfaces whenever they appear (spec §10).
struct Client {
    handle: ProtocolHandle,
    protocol_id: ProtocolId,
    interfaces: Vec<String>,
    /// Memberships it holds on its own interfaces, by interface name.
    memberships: Vec<(SourceGroupEntry, String)>,
}

/// The MGM core with its clients registered, and the clock it runs on.
struct Router {
    mgm: Mgm,
    /// IGMP: its registration and the querier of every interface it runs on.
    igmp: Igmp,
    /// The sockets IGMP's queries leave through, by ifindex.
    sockets: BTreeMap<u32, QuerySocket>,
    clients: Vec<Client>,
    /// The static-routes module's routes and joins, run-time ones included: what it takes
    /// again on an interface that comes back.
    statics: static_routes::StaticTable,
    /// The core's epoch: its `Instant`s are milliseconds since this moment.
    epoch: std::time::Instant,
    /// The deadline the event loop last slept towards, for [`Router::catch_up`].
    armed: Option<tokio::time::Instant>,
    /// Times [`Router::catch_up`] found the loop stalled.
    stalls: u64,
}

impl Router {
    /// Registers every client, then IGMP (the `igmp_count` interfaces it may run on size the
    /// core's membership table). Nobody owns an interface yet: see [`Router::manage`].
    fn new(
        plans: Vec<ClientPlan>,
        igmp: &BTreeMap<String, querier::Config>,
        mfe_lifetime_s: u32,
        negative_budget: usize,
        statics: static_routes::StaticTable,
    ) -> anyhow::Result<Router> {
        // The core holds every membership IGMP's limits let in, on every interface.
        let igmp_memberships = igmp.values().fold(0usize, |sum, c| {
            sum.saturating_add(c.max_memberships().unwrap_or(usize::MAX))
        });
        let defaults = Config::default();
        let mut mgm = Mgm::new(Config {
            max_mfes: FWD_CAPACITY as usize,
            max_memberships: defaults.max_memberships.max(igmp_memberships),
            mfe_lifetime_s,
            negative_budget,
            ..defaults
        });
        let mut clients = Vec::new();
        for plan in plans {
            let id = plan.protocol_id;
            let handle = mgm
                .register(plan.protocol, id, plan.component_id)
                .with_context(|| format!("registering protocol {} with MGM", id.0))?;
            let memberships = plan
                .memberships
                .iter()
                .filter_map(|(sg, i)| plan.interfaces.get(*i).map(|n| (*sg, n.clone())))
                .collect();
            clients.push(Client {
                handle,
                protocol_id: id,
                interfaces: plan.interfaces,
                memberships,
            });
        }
        let igmp = Igmp::register(&mut mgm).context("registering IGMP with MGM")?;
        Ok(Router {
            mgm,
            igmp,
            sockets: BTreeMap::new(),
            clients,
            statics,
            epoch: std::time::Instant::now(),
            armed: None,
            stalls: 0,
        })
    }

    fn now(&self) -> core::Instant {
        core::Instant::from_millis(self.epoch.elapsed().as_millis() as u64)
    }

    /// The static-routes module's registration.
    fn static_handle(&self) -> Option<ProtocolHandle> {
        self.clients
            .iter()
            .find(|c| c.protocol_id == static_routes::PROTOCOL_ID)
            .map(|c| c.handle)
    }

    /// Gives `dev` to the protocols configured for it: each routing protocol naming it takes
    /// it and adds its memberships there, then IGMP, where it runs, starts there beside them
    /// (spec §3.1 case B), with startup queries. Without an IPv4 address IGMP cannot query:
    /// `Ok(false)` then, and the caller starts it when an address comes.
    ///
    /// # Errors
    /// MGM refused an ownership or membership, or IGMP's query socket cannot be opened.
    fn manage(&mut self, dev: &NetDev, igmp: Option<&querier::Config>) -> anyhow::Result<bool> {
        let now = self.now();
        let id = InterfaceId::new(dev.ifindex);
        for c in &self.clients {
            // The static routes take back what their table holds there now: the configured
            // routes and those `mgm route` and `mgm join` added at run time.
            let memberships: Vec<SourceGroupEntry> = if c.protocol_id == static_routes::PROTOCOL_ID
            {
                let held = self.statics.held();
                held.into_iter()
                    .filter(|(_, n)| *n == dev.name)
                    .map(|(sg, _)| sg)
                    .collect()
            } else if c.interfaces.contains(&dev.name) {
                c.memberships
                    .iter()
                    .filter(|(_, n)| *n == dev.name)
                    .map(|(sg, _)| *sg)
                    .collect()
            } else {
                continue;
            };
            if c.protocol_id == static_routes::PROTOCOL_ID && memberships.is_empty() {
                continue;
            }
            self.mgm
                .take_interface_ownership(c.handle, id, now)
                .with_context(|| format!("protocol {:#x} taking {}", c.protocol_id.0, dev.name))?;
            for sg in memberships {
                self.mgm
                    .add_group_membership_entry(c.handle, sg, id, MGM_JOIN_STATE_FLAG, now)
                    .with_context(|| format!("protocol {:#x} joining {sg:?}", c.protocol_id.0))?;
            }
        }
        if let Some(config) = igmp {
            return self.start_igmp(dev, config);
        }
        Ok(true)
    }

    /// Starts IGMP on `dev` with `config`; `Ok(false)` if it has no IPv4 address to query
    /// from yet.
    fn start_igmp(&mut self, dev: &NetDev, config: &querier::Config) -> anyhow::Result<bool> {
        let Some(address) = dev.ipv4 else {
            return Ok(false);
        };
        let sock = QuerySocket::new(dev, address)
            .with_context(|| format!("cannot open the IGMP query socket on {}", dev.name))?;
        let now = self.now();
        self.igmp
            .start(&mut self.mgm, dev.ifindex, address, config.clone(), now)
            .with_context(|| format!("IGMP on {}", dev.name))?;
        self.igmp.set_subnets(dev.ifindex, dev.ipv4_subnets.clone());
        self.sockets.insert(dev.ifindex, sock);
        Ok(true)
    }

    /// `ifindex` vanished: a forced release for every owner (spec §10, with the §3.2 steps),
    /// and IGMP's querier and socket there go.
    fn unmanage(&mut self, ifindex: u32) {
        let now = self.now();
        self.mgm.interface_removed(ifindex, now);
        self.igmp.stop(&mut self.mgm, ifindex, now);
        self.sockets.remove(&ifindex);
    }

    /// When the core or a querier next needs its timers run, as a tokio deadline.
    fn next_deadline(&self) -> Option<tokio::time::Instant> {
        self.mgm
            .poll_timeout()
            .into_iter()
            .chain(self.igmp.poll_timeout())
            .min()
            .map(|at| self.deadline(at))
    }

    /// Called when the loop wakes, before IGMP hears anything: a deadline missed by more than
    /// [`querier::STALL`] means the loop did not run (the process was stopped, or starved),
    /// and IGMP's timers move on by as much, so no host is dropped for reports nobody asked
    /// for or read in the meantime.
    fn catch_up(&mut self) {
        let Some(armed) = self.armed.take() else {
            return;
        };
        let late = tokio::time::Instant::now().saturating_duration_since(armed);
        if late > querier::STALL {
            warn!("the event loop ran {late:?} late (stopped or starved): IGMP timers postponed by as much");
            self.stalls += 1;
            self.igmp.postpone(late);
        }
    }

    fn deadline(&self, at: core::Instant) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.epoch + Duration::from_millis(at.as_millis()))
    }

    /// Runs every timer that is due at `now`.
    fn handle_timeout(&mut self, now: core::Instant) {
        self.mgm.handle_timeout(now);
        self.igmp.handle_timeout(now);
    }

    /// Moves what IGMP decided to the wire (queries) and to the core (memberships); returns
    /// the groups whose memberships changed.
    fn pump_igmp(&mut self, name: &impl Fn(u32) -> String, seen: &mut Seen) -> Vec<Ipv4Addr> {
        let now = self.now();
        while let Some((ifindex, t)) = self.igmp.poll_transmit() {
            let bytes = crate::igmp::codec::encode(&t.message);
            if let Some(sock) = self.sockets.get(&ifindex) {
                // Never waits on the loop: a full send buffer is a query not sent, counted.
                if let Err(e) = sock.try_send(t.destination, &bytes) {
                    seen.query_send_errors += 1;
                    limited(&mut seen.limits.query_send, now, log::Level::Warn, || {
                        format!("cannot send an IGMP query on {}: {e}", name(ifindex))
                    });
                }
            }
        }
        let mut touched = Vec::new();
        for a in self.igmp.apply_memberships(&mut self.mgm, now) {
            let m = a.membership;
            touched.push(m.group);
            let verb = match (m.exclude, m.join) {
                (false, true) => "joins",
                (false, false) => "leaves",
                (true, true) => "excludes",
                (true, false) => "stops excluding",
            };
            let source = m.source.map_or("*".to_owned(), |s| s.to_string());
            match a.result {
                Ok(()) => info!(
                    "membership: {} {verb} ({source}, {})",
                    name(m.ifindex),
                    m.group
                ),
                Err(e) => {
                    seen.refused += 1;
                    limited(&mut seen.limits.refused, now, log::Level::Warn, || {
                        format!(
                            "membership: {} {verb} ({source}, {}) refused by MGM: {e}",
                            name(m.ifindex),
                            m.group
                        )
                    });
                }
            }
        }
        // The queriers count every refusal; each line gives the totals so far.
        for (ifindex, groups, sources, hosts) in self.igmp.new_limit_hits() {
            limited(&mut seen.limits.limit_hits, now, log::Level::Warn, || {
                format!(
                    "IGMP on {}: {groups} groups, {sources} sources and {hosts} fast-leave \
                     hosts refused so far at the configured limits",
                    name(ifindex)
                )
            });
        }
        touched
    }
}

/// Where a proxy's upstream memberships go: its host side on one interface.
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
    /// The managed interfaces' names by ifindex, kept current as they come and go, for the
    /// module socket and the protocols that know interfaces by name (static routes).
    pub names: Names,
    /// Interfaces IGMP runs on.
    pub igmp: Vec<String>,
    /// Interfaces managed with no built-in owner, for out-of-process modules to take.
    pub external: Vec<String>,
    /// Where out-of-process modules connect.
    pub socket: PathBuf,
    /// Who may connect there.
    pub socket_access: crate::protocols::remote::access::Access,
    /// How long a callback waits for a module's answer (rpf, creation and prune alerts).
    pub answer_within: Duration,
    /// Where operators' commands (`mgm show`, `mgm route`...) connect, and who may.
    pub control_socket: PathBuf,
    pub control_access: crate::protocols::remote::access::Access,
    /// The static-routes module's routes and joins, which `mgm route` and `mgm join` change.
    pub statics: crate::protocols::static_routes::StaticTable,
    /// IGMP querier settings of `[igmp]` and the flags: the proxy's host side upstream takes
    /// its robustness and intervals, and adopted entries wait for its startup queries.
    pub igmp_config: querier::Config,
    /// The settings in force, with each downstream's IGMP settings, for reloads to compare.
    pub settings: Settings,
    /// Reloads: how the settings are read again, and where requests come from (SIGHUP, and
    /// `mgm reload` through a [`ReloadSender`](crate::reload::ReloadSender)).
    pub reload: Option<(Reader, ReloadRequests)>,
    pub mode: XdpMode,
    pub pin_dir: PathBuf,
    pub ttl_threshold: u8,
    pub tunables: Tunables,
    /// The routing table whose IPv4 routes make the RPF table (254 is main).
    pub rpf_table: u32,
    /// Routes added to the RPF table on top of the kernel's (static routes' sources).
    pub rpf_routes: Vec<core::Route>,
    /// Lifetime of an MFE before it is refreshed or deleted (spec §5.6).
    pub mfe_lifetime_s: u32,
    /// Most negative MFEs per incoming interface (oldest evicted past it).
    pub negative_budget: usize,
    /// On SIGTERM/SIGINT, leave XDP forwarding with the last state for the next daemon to
    /// adopt, and the proxy's groups joined upstream. An error or a panic always does that.
    pub keep_forwarding: bool,
    /// Where the daemon publishes its counters after every loop turn, if anyone reads them
    /// (the metrics endpoint).
    pub published: Option<control::SharedCounters>,
}

impl Options {
    /// The IGMP proxy: the proxy owns `upstream` and reports its memberships there as a host;
    /// IGMP alone owns each downstream.
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
/// decoding, upcalls, and every other cause of a warning, whose log lines are rate-limited.
#[derive(Debug, Default)]
struct Seen {
    igmp: u64,
    bad_igmp: u64,
    no_cache: u64,
    wrong_if: u64,
    unknown: u64,
    map_errors: u64,
    /// No-cache upcalls MGM could not resolve.
    unresolved: u64,
    /// Membership changes IGMP decided that MGM refused.
    refused: u64,
    /// IGMP queries the socket did not send.
    query_send_errors: u64,
    /// Routing-table routes the core's RPF table refused.
    rpf_refused: u64,
    /// Events dropped because their interface's queue to the core was full.
    queue_full: u64,
    /// Negative MFE evictions the last log line counted.
    evictions_logged: u64,
    limits: Limits,
}

/// Least time between two log lines of one kind of warning a peer can repeat per packet.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// The rate limit of each warning a peer can repeat.
#[derive(Debug)]
struct Limits {
    bad_igmp: RateLimit,
    unresolved: RateLimit,
    refused: RateLimit,
    query_send: RateLimit,
    unknown: RateLimit,
    map_errors: RateLimit,
    limit_hits: RateLimit,
    queue_full: RateLimit,
    evictions: RateLimit,
    foreign_query: RateLimit,
    nonconforming: RateLimit,
}

impl Default for Limits {
    fn default() -> Self {
        let limit = RateLimit::new(WARN_INTERVAL);
        Limits {
            bad_igmp: limit.clone(),
            unresolved: limit.clone(),
            refused: limit.clone(),
            query_send: limit.clone(),
            unknown: limit.clone(),
            map_errors: limit.clone(),
            limit_hits: limit.clone(),
            queue_full: limit.clone(),
            evictions: limit.clone(),
            foreign_query: limit.clone(),
            nonconforming: limit,
        }
    }
}

/// Logs `message` at `level` unless `limit` leaves it out; a line logged after some were
/// left out says how many.
fn limited(
    limit: &mut RateLimit,
    now: core::Instant,
    level: log::Level,
    message: impl FnOnce() -> String,
) {
    if let Some(n) = limit.allow(now) {
        log::log!(level, "{}{}", message(), suppressed(n, WARN_INTERVAL));
    }
}

impl Seen {
    /// Every drop cause the daemon counts, for `mgm show stats` and the shutdown line.
    fn counters(
        &self,
        router: &Router,
        upstream: Option<&UpstreamEdge>,
        ifs: &Interfaces,
    ) -> control::Counters {
        let hits = &link::BOUND_HITS;
        control::Counters {
            igmp: self.igmp,
            igmp_rejected: self.bad_igmp,
            no_cache: self.no_cache,
            wrong_if: self.wrong_if,
            unknown: self.unknown,
            map_errors: self.map_errors,
            unresolved: self.unresolved,
            memberships_refused: self.refused,
            queries_not_sent: self.query_send_errors,
            rpf_routes_refused: self.rpf_refused,
            queue_full: self.queue_full,
            negative_evictions: router.mgm.negative_evictions(),
            stalls: router.stalls,
            module_out_full: hits.out_full.load(Ordering::Relaxed),
            module_replies_too_large: hits.reply_too_large.load(Ordering::Relaxed),
            module_answers_dropped: hits.answers_dropped.load(Ordering::Relaxed),
            module_decisions_not_waited: router.mgm.waiting_full(),
            upstream_reports_dropped: upstream.map_or(0, UpstreamEdge::reports_dropped),
            upstream_failures: upstream.map_or(0, UpstreamEdge::failures),
            upstream_relinks: upstream.map_or(0, UpstreamEdge::relinks),
            attach_failures: ifs.attach_failures,
            queriers: router
                .igmp
                .queriers(|q| q.iter().map(|(i, q)| (*i, q.counters())).collect()),
        }
    }
}

/// How long one loop turn serves queued events: between two turns the ring buffer is drained
/// and timers, links and modules get their turn, however costly the events.
const EVENT_BATCH: Duration = Duration::from_millis(20);

/// Loads the data plane, runs until `shutdown` resolves, then detaches (unless
/// `keep_forwarding`). An error return, like a panic or a kill, leaves XDP forwarding with
/// the last state and the proxy's groups joined upstream, for the next daemon to adopt.
///
/// # Errors
/// Loading or attaching failed, or a protocol refused an interface at start. Interfaces that
/// do not exist yet are waited for (spec §10).
pub async fn run(opts: Options, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // Before the interfaces are read, so a change in between still arrives.
    let mut link_watch = links::LinkWatch::start()?;
    let mut ifs = Interfaces::new(&opts);
    let mut interfaces: Vec<NetDev> = Vec::new();
    for n in opts.interfaces() {
        match NetDev::lookup(&n) {
            Ok(dev) => {
                ifs.managed.link(dev.ifindex, &dev.name);
                interfaces.push(dev);
            }
            Err(e) => warn!("{}; mgm manages {n} once it appears", report(&e)),
        }
    }
    let names = ifs.names.clone();
    let summary = describe(&opts);
    let mut roles = control::Roles {
        upstream: opts.upstream_host.as_ref().map(|h| h.interface.clone()),
        downstream: opts.igmp.clone(),
        external: opts.external.clone(),
    };
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
    let mut router = Router::new(
        opts.clients,
        &opts.settings.igmp,
        opts.mfe_lifetime_s,
        opts.negative_budget,
        opts.statics.clone(),
    )?;
    for dev in &interfaces {
        ifs.start(&mut router, dev)?;
    }
    let mut modules = ModuleServer::bind(
        &opts.socket,
        opts.socket_access.clone(),
        names.clone(),
        opts.answer_within,
    )
    .context("cannot open the module socket")?;
    let mut control = ControlServer::bind(&opts.control_socket, opts.control_access.clone())
        .context("cannot open the control socket")?;
    let mut route_watch = routes::RouteWatch::start(opts.rpf_table)?;
    let now = router.now();
    load_rpf_table(&mut router.mgm, opts.rpf_table, &opts.rpf_routes, now).await?;
    let name = |i: u32| names.get(i).unwrap_or_else(|| format!("ifindex {i}"));
    info!(
        "mgm running: {summary}; maps pinned in {}; modules connect to {}; control socket {}",
        opts.pin_dir.display(),
        opts.socket.display(),
        opts.control_socket.display()
    );

    let mut upstream = match &opts.upstream_host {
        Some(h) => {
            let dev = interfaces.iter().find(|d| d.name == h.interface);
            let edge = UpstreamEdge::open(&h.interface, dev, h.changes.clone(), &opts.igmp_config)
                .with_context(|| format!("cannot report upstream on {}", h.interface))?;
            Some(edge)
        }
        None => None,
    };
    if let (Some(u), true) = (&mut upstream, dp.adopted > 0) {
        u.adopt(router.now(), &dp.forwarding.snapshot());
    }
    let mut reconcile_at = (dp.adopted > 0).then(|| reconcile_deadline(&opts.igmp_config));
    let mut handover = Handover::default();
    let mut seen = Seen::default();
    let mut settings = opts.settings;
    let mut keep_forwarding = opts.keep_forwarding;
    let (reader, mut reload_requests) = match opts.reload {
        Some((reader, requests)) => (Some(reader), Some(requests)),
        None => (None, None),
    };
    let mut fair = Fair::default();
    let mut counters = tokio::time::interval(COUNTER_SYNC);
    counters.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let deadline = router.next_deadline();
        router.armed = deadline;
        let hold_ends = handover.poll_timeout().map(|at| router.deadline(at));
        let upstream_deadline = upstream
            .as_ref()
            .and_then(UpstreamEdge::poll_timeout)
            .map(|at| router.deadline(at));
        // Membership changes no alert and no IGMP report tells the upstream side of: a
        // module's requests, an interface that went or came.
        let mut all_groups = false;
        tokio::select! {
            guard = events.readable_mut() => {
                let mut guard = guard.context("event ring buffer poll failed")?;
                router.catch_up();
                enqueue(guard.get_inner_mut(), &mut fair, &mut dp, &mut seen);
                guard.clear_ready();
            }
            // More events wait: serve the next batch after whatever else is ready.
            () = std::future::ready(()), if !fair.is_empty() => {}
            () = sleep_until(deadline) => {
                router.catch_up();
                // Fresh counters tell the core which expiring MFEs still carry a flow.
                let now = router.now();
                let due = router.mgm.expiring(now);
                sync_counters(&mut dp, &mut router.mgm, &due);
                router.handle_timeout(now);
            }
            () = sleep_until(hold_ends) => {
                let now = router.now();
                let ops = handover.expire(now, &router.mgm.forwarding_table());
                write_map_ops(&mut dp, ops, &mut seen, now);
            }
            () = sleep_until(upstream_deadline) => {
                if let Some(u) = &mut upstream {
                    u.handle_timeout(router.now());
                }
            }
            failure = upstream_failure(&mut upstream) => {
                if let Some(u) = &mut upstream {
                    u.failed(router.now(), &failure);
                }
            }
            () = sleep_until(reconcile_at) => {
                reconcile_at = None;
                let entries = dp.forwarding.snapshot();
                info!("reconciling {} adopted or installed entries with the core", entries.len());
                let now = router.now();
                router.mgm.reconcile(entries, now);
                if let Some(u) = &mut upstream {
                    u.end_adoption(now);
                }
            }
            _ = counters.tick() => dp.forwarding.start_counter_sweep(),
            // A sweep goes a bounded step a turn, between whatever else is ready.
            () = std::future::ready(()), if dp.forwarding.sweeping() => {
                match dp.forwarding.sweep_counters() {
                    Ok(counted) => give_counters(&mut router.mgm, counted),
                    Err(e) => warn!("cannot read the MFE counters: {}", report(&e)),
                }
            }
            change = route_watch.next() => {
                let now = router.now();
                follow_route(&mut router.mgm, change, now, &mut seen)?;
            }
            change = link_watch.next() => {
                let change = change.context("the link-change subscription closed")?;
                ifs.follow(&mut dp, &mut router, &mut modules, &change);
                follow_upstream(&mut upstream, &ifs, None, router.now());
                follow_link(&mut dp, &name, change);
                all_groups = true;
            }
            outcome = dp.next_outcome() => {
                let dev = match &outcome {
                    Outcome::Attached { dev, .. } | Outcome::Found(dev) => Some(dev.clone()),
                    _ => None,
                };
                ifs.outcome(&mut dp, &mut router, &mut modules, outcome);
                follow_upstream(&mut upstream, &ifs, dev.as_ref(), router.now());
                all_groups = true;
            }
            guard = readable_logger(&mut logger) => {
                let mut guard = guard.context("XDP log ring buffer poll failed")?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            event = modules.next() => {
                let now = router.now();
                modules.handle(event, &mut router.mgm, now);
                all_groups = true;
            }
            request = next_reload(&mut reload_requests) => {
                let Some(request) = request else {
                    reload_requests = None;
                    continue;
                };
                let cx = Running { dp: &mut dp, router: &mut router, ifs: &mut ifs, modules: &mut modules, names: &names, roles: &mut roles, statics: &opts.statics };
                let outcome = reload_now(reader.as_ref(), cx, &mut settings, &mut keep_forwarding);
                if let Some(reply) = request.reply {
                    let _ = reply.send(outcome);
                }
            }
            call = control.next() => {
                let answer = match call.request.clone() {
                    control::proto::Request::Reload {} => {
                        let cx = Running { dp: &mut dp, router: &mut router, ifs: &mut ifs, modules: &mut modules, names: &names, roles: &mut roles, statics: &opts.statics };
                        match reload_now(reader.as_ref(), cx, &mut settings, &mut keep_forwarding) {
                            Ok(diff) => control::proto::Answer::done(diff.to_string()),
                            Err(e) => control::proto::Answer::error(e),
                        }
                    }
                    request => {
                        let if_stats = |i: u32| dp.interfaces.stats(i).ok().flatten();
                        let counters = seen.counters(&router, upstream.as_ref(), &ifs);
                        let mut d = control::Daemon {
                            now: router.now(),
                            static_handle: router.static_handle(),
                            mgm: &mut router.mgm,
                            igmp: &router.igmp,
                            names: &names,
                            roles: &roles,
                            statics: &opts.statics,
                            modules: modules.modules(),
                            counters,
                            if_stats: &if_stats,
                        };
                        control::answer(request, &mut d)
                    }
                };
                call.answer(answer);
            }
            () = &mut shutdown => break,
        }
        enqueue(events.get_mut(), &mut fair, &mut dp, &mut seen);
        let mut touched = Vec::new();
        log_queue_full(&mut fair, &mut seen, &name, router.now());
        let batch_ends = std::time::Instant::now() + EVENT_BATCH;
        while let Some(event) = fair.pop() {
            let (ifindex, started) = (event.ifindex(), std::time::Instant::now());
            upstream_igmp(&mut upstream, router.now(), &event);
            handle(&mut dp, &mut router, &mut seen, &name, event);
            // Each event's memberships right after it, on its interface's account.
            touched.extend(router.pump_igmp(&name, &mut seen));
            let done = std::time::Instant::now();
            fair.charge(ifindex, done - started);
            if done >= batch_ends {
                break;
            }
        }
        touched.extend(router.pump_igmp(&name, &mut seen));
        let now = router.now();
        let owners = names.all().into_iter().map(|(i, _)| {
            let id = InterfaceId::new(i);
            (id, router.mgm.get_protocol_on_interface(id).ok())
        });
        if handover.owners(now, owners) {
            if let Some(u) = &mut upstream {
                u.hold(now);
            }
        }
        let ops = std::iter::from_fn(|| router.mgm.poll_map_op()).collect();
        write_map_ops(&mut dp, handover.filter(now, ops), &mut seen, now);
        log_evictions(&router.mgm, opts.negative_budget, &mut seen, now);
        if let Some(p) = &opts.published {
            *p.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                seen.counters(&router, upstream.as_ref(), &ifs);
        }
        ifs.detach_vanished(&mut dp);
        if let Some(u) = &mut upstream {
            u.pump(router.now(), &router.mgm, &touched, all_groups);
        }
    }
    modules.shutdown();
    drop(control);
    info!(
        "shutting down: {} IGMP messages, {} rejected, {} no-cache ({} unresolved) and {} \
         wrong-interface upcalls, {} memberships refused by MGM, {} IGMP queries not sent, {} \
         RPF routes refused, {} unknown records, {} map errors, {} events over their \
         interface's queue, {} negative entries evicted",
        seen.igmp,
        seen.bad_igmp,
        seen.no_cache,
        seen.unresolved,
        seen.wrong_if,
        seen.refused,
        seen.query_send_errors,
        seen.rpf_refused,
        seen.unknown,
        seen.map_errors,
        seen.queue_full,
        router.mgm.negative_evictions()
    );
    for (ifindex, name) in names.all() {
        if let Ok(Some(s)) = dp.interfaces.stats(ifindex) {
            info!("{name}: {}", if_stats(&s));
        }
    }
    if keep_forwarding {
        drop(dp);
        info!(
            "stopped; XDP keeps forwarding with the last state, and the next mgm run with pin \
             directory {} takes over",
            opts.pin_dir.display()
        );
    } else {
        if let Some(u) = upstream {
            u.stop(router.now());
        }
        dp.detach_all();
        info!("XDP detached and pins removed");
    }
    Ok(())
}

/// What a reload changes: the data plane, the core with its protocols, the managed
/// interfaces, the module socket, the roles and the static routes and joins, borrowed from
/// [`run`]'s loop for one reload.
struct Running<'a> {
    dp: &'a mut Dataplane,
    router: &'a mut Router,
    ifs: &'a mut Interfaces,
    modules: &'a mut ModuleServer,
    names: &'a Names,
    roles: &'a mut control::Roles,
    statics: &'a static_routes::StaticTable,
}

impl Running<'_> {
    /// Applies what changed from `settings` to `read` and makes `settings` what runs now.
    /// Downstreams removed go first, so a name moved between roles is free; what the diff does
    /// not name is not touched, and keeps forwarding.
    fn reload(&mut self, settings: &mut Settings, read: Settings, keep: &mut bool) -> Diff {
        // The static routes are compared with those held, run-time ones included.
        settings.static_routes = self.statics.routes();
        let mut diff = reload::diff(settings, &read);
        for name in &diff.downstream_removed {
            self.ifs
                .remove_downstream(self.dp, self.router, self.modules, name);
        }
        for (name, config) in &diff.downstream_added {
            self.ifs.add_downstream(self.dp, name, config.clone());
        }
        for (name, config) in &diff.igmp_changed {
            self.ifs.reconfigure(self.router, name, config.clone());
        }
        if let Some(k) = diff.keep_forwarding {
            *keep = k;
        }
        // Routes to a downstream the reload added are checked against the roles as they are now.
        self.roles.downstream.clone_from(&read.downstream);
        let if_stats = |_: u32| None;
        // Only the static routes and joins change here: the other fields are not read.
        let mut d = control::Daemon {
            now: self.router.now(),
            static_handle: self.router.static_handle(),
            mgm: &mut self.router.mgm,
            igmp: &self.router.igmp,
            names: self.names,
            roles: self.roles,
            statics: self.statics,
            modules: Vec::new(),
            counters: control::Counters::default(),
            if_stats: &if_stats,
        };
        let followed = control::follow_config(&diff.routes_added, &diff.routes_removed, &mut d);
        diff.routes_added = followed.added;
        diff.routes_removed = followed.removed;
        diff.joins_removed = followed.joins_removed;
        diff.refused = followed.refused;
        info!("reload: {diff}");
        for why in &diff.refused {
            warn!("reload: refused: {why}");
        }
        for n in &diff.needs_restart {
            warn!("reload: needs restart: {n}");
        }
        // What waits for a restart stays as it runs, so the next reload reports it again.
        *settings = Settings {
            upstream: settings.upstream.take(),
            external: std::mem::take(&mut settings.external),
            static_routes: self.statics.routes(),
            fixed: std::mem::take(&mut settings.fixed),
            ..read
        };
        diff
    }
}

/// Reads the settings again and applies them: SIGHUP and `mgm reload` both come here.
fn reload_now(
    reader: Option<&Reader>,
    mut cx: Running<'_>,
    settings: &mut Settings,
    keep: &mut bool,
) -> Result<Diff, String> {
    match reader.map(|read| read()) {
        Some(Ok(read)) => Ok(cx.reload(settings, read, keep)),
        Some(Err(e)) => {
            error!("reload refused, nothing changed: {e:#}");
            Err(format!("{e:#}"))
        }
        None => Err("this daemon was started without reloads".to_owned()),
    }
}

/// The next reload request, or never when there is no source of them.
async fn next_reload(requests: &mut Option<ReloadRequests>) -> Option<ReloadRequest> {
    match requests {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// The interfaces mgm was told to manage, as they come and go (spec §10), and what runs on
/// each: every managed interface gets XDP; a routing protocol naming it takes it; IGMP, where
/// it runs, starts with startup queries once the interface has an IPv4 address.
struct Interfaces {
    managed: Managed,
    /// Names IGMP runs on, with its settings there.
    igmp: BTreeMap<String, querier::Config>,
    /// Managed interfaces by ifindex, shared with the module socket.
    names: Names,
    /// IGMP interfaces waiting for an IPv4 address, by ifindex.
    no_address: BTreeSet<u32>,
    /// The proxy's upstream interface: read again on each of its link and address changes,
    /// as its host side reports only while it is up with an IPv4 address.
    upstream: Option<String>,
    /// Interfaces that vanished, to remove from the maps once the entries no longer copy to
    /// them: the set member whose copy the ingress program prepares must keep its settings
    /// until its set is rewritten, or that program drops the packet.
    to_detach: Vec<(String, u32)>,
    /// Interfaces that appeared but could not be attached, for `mgm show stats` and the log.
    attach_failures: u64,
    attach_failed: RateLimit,
}

impl Interfaces {
    fn new(opts: &Options) -> Interfaces {
        Interfaces {
            managed: Managed::new(opts.interfaces()),
            igmp: opts
                .igmp
                .iter()
                .map(|n| {
                    let config = opts.settings.igmp.get(n).unwrap_or(&opts.igmp_config);
                    (n.clone(), config.clone())
                })
                .collect(),
            names: opts.names.clone(),
            no_address: BTreeSet::new(),
            upstream: opts.upstream_host.as_ref().map(|h| h.interface.clone()),
            to_detach: Vec::new(),
            attach_failures: 0,
            attach_failed: RateLimit::new(WARN_INTERVAL),
        }
    }

    /// Hands `dev`, attached, to its protocols.
    ///
    /// # Errors
    /// A protocol refused it (see [`Router::manage`]).
    fn start(&mut self, router: &mut Router, dev: &NetDev) -> anyhow::Result<()> {
        self.names.set(dev.ifindex, &dev.name);
        if !router.manage(dev, self.igmp.get(&dev.name))? {
            warn!(
                "{} has no IPv4 address; IGMP starts there when it gets one",
                dev.name
            );
            self.no_address.insert(dev.ifindex);
        }
        Ok(())
    }

    /// Acts on one link announcement: managed interfaces that vanished are released and
    /// detached, ones that appeared go to be attached (and are taken once they are, see
    /// [`Interfaces::outcome`]), and IGMP starts where an address it waited for came.
    fn follow(
        &mut self,
        dp: &mut Dataplane,
        router: &mut Router,
        modules: &mut ModuleServer,
        event: &links::LinkEvent,
    ) {
        let changes = match event {
            links::LinkEvent::Changed(c) => {
                let changes = match &c.name {
                    Some(n) => self.managed.link(c.ifindex, n),
                    None => Vec::new(),
                };
                // The upstream's host side follows its link going up and down.
                self.look_at_upstream(dp, c.ifindex);
                changes
            }
            links::LinkEvent::Removed(ifindex) => self.managed.removed(*ifindex),
            links::LinkEvent::Address(ifindex) => {
                self.address_changed(dp, router, *ifindex);
                self.look_at_upstream(dp, *ifindex);
                Vec::new()
            }
        };
        self.apply(dp, router, modules, changes);
    }

    fn apply(
        &mut self,
        dp: &mut Dataplane,
        router: &mut Router,
        modules: &mut ModuleServer,
        changes: Vec<Change>,
    ) {
        for change in changes {
            match change {
                Change::Vanished { name, ifindex } => {
                    self.vanished(dp, router, modules, &name, ifindex);
                }
                Change::Appeared { name, ifindex } => {
                    info!("{name} exists now (ifindex {ifindex}): XDP is being attached");
                    dp.attach(&name, ifindex);
                }
            }
        }
    }

    fn vanished(
        &mut self,
        dp: &mut Dataplane,
        router: &mut Router,
        modules: &mut ModuleServer,
        name: &str,
        ifindex: u32,
    ) {
        router.unmanage(ifindex);
        modules.interface_removed(ifindex);
        self.names.remove(ifindex);
        self.no_address.remove(&ifindex);
        // Queued now, so the worker removes the name's pin before it attaches anything
        // announced after this (the same name again, or this interface under another name).
        dp.detach(name);
        self.to_detach.push((name.to_owned(), ifindex));
        warn!(
            "{name} is gone (ifindex {ifindex}): released by every owner, its entries and \
             querier removed; mgm manages {name} again when it appears"
        );
    }

    /// Manages `name` as a downstream running IGMP with `config` (a reload added it): once
    /// the worker finds it, or when it appears.
    fn add_downstream(&mut self, dp: &mut Dataplane, name: &str, config: querier::Config) {
        self.igmp.insert(name.to_owned(), config);
        self.managed.add(name);
        dp.lookup(name, None);
    }

    /// Stops managing downstream `name` (a reload removed it): released by every owner, its
    /// entries and querier removed, XDP detached, and its settings removed once the maps no
    /// longer copy to it.
    fn remove_downstream(
        &mut self,
        dp: &mut Dataplane,
        router: &mut Router,
        modules: &mut ModuleServer,
        name: &str,
    ) {
        self.igmp.remove(name);
        let Some(ifindex) = self.managed.forget(name) else {
            return;
        };
        router.unmanage(ifindex);
        modules.interface_removed(ifindex);
        self.names.remove(ifindex);
        self.no_address.remove(&ifindex);
        dp.detach(name);
        self.to_detach.push((name.to_owned(), ifindex));
        info!("{name} is no longer managed: released, its entries and querier removed");
    }

    /// Gives downstream `name`'s querier `config` (a reload changed it); used from then on
    /// if IGMP waits for it to appear or get an address.
    fn reconfigure(&mut self, router: &mut Router, name: &str, config: querier::Config) {
        self.igmp.insert(name.to_owned(), config.clone());
        let Some(ifindex) = self.managed.ifindex(name) else {
            return;
        };
        let now = router.now();
        match router.igmp.reconfigure(ifindex, config, now) {
            Ok(true) => info!("{name}: IGMP runs with the new settings"),
            Ok(false) => {}
            Err(e) => error!("{name}: the new IGMP settings cannot run, the old ones stay: {e}"),
        }
    }

    /// Removes the settings of the interfaces that vanished from the maps; call once the
    /// core's map operations of their release are written.
    fn detach_vanished(&mut self, dp: &mut Dataplane) {
        for (name, ifindex) in std::mem::take(&mut self.to_detach) {
            if let Err(e) = dp.forget(ifindex) {
                error!("{name}: cannot remove it from the maps: {}", report(&e));
            }
        }
    }

    /// Acts on what the attach worker did: an interface attached is taken by its protocols;
    /// one found (a reload added it, or an address came) is managed, or starts IGMP.
    fn outcome(
        &mut self,
        dp: &mut Dataplane,
        router: &mut Router,
        modules: &mut ModuleServer,
        outcome: Outcome,
    ) {
        match outcome {
            Outcome::Attached { dev, mode } => {
                info!(
                    "{} appeared (ifindex {}): XDP attached in {mode} mode",
                    dev.name, dev.ifindex
                );
                if let Err(e) = self.start(router, &dev) {
                    error!("{}: {e:#}", dev.name);
                }
            }
            Outcome::Failed { name, error } => {
                self.attach_failures += 1;
                let n = self.attach_failures;
                limited(
                    &mut self.attach_failed,
                    router.now(),
                    log::Level::Error,
                    || {
                        format!(
                            "{name} cannot be managed ({n} attaches failed): {}",
                            report(&error)
                        )
                    },
                );
            }
            Outcome::Gone { name, ifindex } => {
                // Not there as announced: released now, so a phantom never holds the name;
                // the announcement of what became of it finds nothing more to release.
                debug!("{name} (ifindex {ifindex}) is gone or renamed before its attach");
                if self.managed.ifindex(&name) == Some(ifindex) {
                    let changes = self.managed.removed(ifindex);
                    self.apply(dp, router, modules, changes);
                }
            }
            Outcome::Found(dev) => {
                // A name a reload added, found: managed from now on, unless an announcement
                // was first.
                if self.managed.missing().any(|n| n == dev.name) {
                    let changes = self.managed.link(dev.ifindex, &dev.name);
                    self.apply(dp, router, modules, changes);
                }
                self.address_found(router, &dev);
            }
        }
    }

    /// The proxy's upstream `ifindex` changed (flags, address): the worker reads it again,
    /// for its host side, which reports only from an interface up with an IPv4 address.
    fn look_at_upstream(&self, dp: &mut Dataplane, ifindex: u32) {
        if let Some(name) = self.managed.name(ifindex) {
            if Some(name) == self.upstream.as_deref() {
                dp.lookup(name, Some(ifindex));
            }
        }
    }

    /// An address appeared on or went from `ifindex`: where IGMP waits for one or runs (its
    /// querier needs the interface's subnets), the worker reads the interface again (also
    /// while its attach is under way: that attach's lookup may have come before the change).
    fn address_changed(&mut self, dp: &mut Dataplane, router: &Router, ifindex: u32) {
        if !self.no_address.contains(&ifindex)
            && !dp.attaching(ifindex)
            && !router.igmp.runs_on(ifindex)
        {
            return;
        }
        if let Some(name) = self.managed.name(ifindex) {
            dp.lookup(name, Some(ifindex));
        }
    }

    fn address_found(&mut self, router: &mut Router, dev: &NetDev) {
        let ifindex = dev.ifindex;
        if self.managed.name(ifindex) != Some(&dev.name) {
            return;
        }
        let subnets = router.igmp.subnets(ifindex);
        if subnets.as_ref().is_some_and(|s| *s != dev.ipv4_subnets) {
            router.igmp.set_subnets(ifindex, dev.ipv4_subnets.clone());
            let list: Vec<String> = dev.ipv4_subnets.iter().map(|s| s.to_string()).collect();
            let from = if list.is_empty() {
                "any source (it has no IPv4 address)".to_owned()
            } else {
                list.join(", ")
            };
            info!(
                "{}: the querier election hears queries from {from}",
                dev.name
            );
        }
        if !self.no_address.contains(&ifindex) {
            return;
        }
        let Some(config) = self.igmp.get(&dev.name) else {
            return;
        };
        match router.start_igmp(dev, config) {
            Ok(true) => {
                self.no_address.remove(&ifindex);
                info!("{} has an IPv4 address now: IGMP started there", dev.name);
            }
            Ok(false) => {}
            Err(e) => {
                self.no_address.remove(&ifindex);
                error!("{}: {e:#}", dev.name);
            }
        }
    }
}

/// Fills the core's RPF table from routing table `table` and the `extra` routes.
async fn load_rpf_table(
    mgm: &mut Mgm,
    table: u32,
    extra: &[core::Route],
    now: core::Instant,
) -> anyhow::Result<()> {
    let (routes, multipath) = routes::dump_ipv4(table)
        .await
        .context("cannot read the routing table for RPF")?;
    let (mut added, mut bad) = (0, 0);
    for r in routes.iter().chain(extra) {
        match mgm.add_route(*r, now) {
            Ok(()) => added += 1,
            Err(_) => bad += 1,
        }
    }
    info!(
        "RPF table: {added} IPv4 routes from table {table} and static routes ({multipath} multipath ones by one next hop each, {bad} malformed left out), changes followed"
    );
    Ok(())
}

/// Applies one change of the RPF table's routing table to the core, which moves the MFEs it
/// reroutes shortly after (spec §9 item 11).
fn follow_route(
    mgm: &mut Mgm,
    change: Option<routes::RouteChange>,
    now: core::Instant,
    seen: &mut Seen,
) -> anyhow::Result<()> {
    match change {
        Some(routes::RouteChange::Added(r)) => {
            debug!("RPF route added: {r}");
            if let Err(e) = mgm.add_route(r, now) {
                seen.rpf_refused += 1;
                warn!("RPF route {r} refused: {e}");
            }
        }
        Some(routes::RouteChange::Deleted {
            network,
            prefix_len,
            metric,
        }) => {
            debug!("RPF route deleted: {network}/{prefix_len} metric {metric}");
            mgm.delete_route(network, prefix_len, metric, now);
        }
        None => bail!("the route-change subscription closed"),
    }
    Ok(())
}

/// A managed interface's new MAC or MTU goes into the maps: copies leave with the MAC the
/// interface has now, and the MTU check of the prepared copy uses the MTU it has now.
fn follow_link(dp: &mut Dataplane, name: &impl Fn(u32) -> String, event: links::LinkEvent) {
    let links::LinkEvent::Changed(c) = event else {
        return;
    };
    match dp.follow(c.ifindex, c.mac, c.mtu) {
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
}

/// Follows the upstream interface as it goes and comes (spec §10): the host side stops with
/// the link it ran on, or when that goes down or loses its address (the switch upstream
/// forgets a port that goes down), and starts again on `dev` (attached or read again) when
/// that is the link under the upstream's name, up, with an IPv4 address to report from.
fn follow_upstream(
    upstream: &mut Option<UpstreamEdge>,
    ifs: &Interfaces,
    dev: Option<&NetDev>,
    now: core::Instant,
) {
    let Some(u) = upstream else {
        return;
    };
    let current = ifs.managed.ifindex(u.name());
    if current != Some(u.ifindex()) {
        u.gone();
    }
    let Some(dev) = dev.filter(|d| d.name == u.name() && current == Some(d.ifindex)) else {
        return;
    };
    if !dev.up || dev.ipv4.is_none() {
        u.gone();
        return;
    }
    if u.runs_on(dev.ifindex) {
        return;
    }
    if let Err(e) = u.relink(now, dev) {
        error!("upstream: cannot report on {}: {e:#}", dev.name);
    }
}

/// Hands an IGMP message heard on the upstream interface to the proxy's host side (the
/// upstream's queries, which it answers).
fn upstream_igmp(upstream: &mut Option<UpstreamEdge>, now: core::Instant, event: &Event) {
    if let (
        Some(u),
        Event::Igmp {
            ifindex, message, ..
        },
    ) = (upstream, event)
    {
        if *ifindex == u.ifindex() {
            u.handle_message(now, message);
        }
    }
}

/// The next failure of the proxy's upstream system calls, made off the loop; never without
/// a proxy.
async fn upstream_failure(upstream: &mut Option<UpstreamEdge>) -> crate::offload::Failure {
    match upstream {
        Some(u) => u.next_failure().await,
        None => std::future::pending().await,
    }
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
pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How often the core's copy of the MFE counters (spec §6.2 statistics) is refreshed from the
/// per-CPU maps.
const COUNTER_SYNC: Duration = Duration::from_secs(5);

/// Gives the core fresh data-plane counters of the MFEs `keys` names, as (source, group).
fn sync_counters(dp: &mut Dataplane, mgm: &mut Mgm, keys: &[(Ipv4Addr, Ipv4Addr)]) {
    let keys: Vec<FwdKey> = keys.iter().map(|&(s, g)| key(s, g)).collect();
    match dp.forwarding.read_counters(&keys) {
        Ok(counted) => give_counters(mgm, counted),
        Err(e) => warn!("cannot read the counters of expiring MFEs: {}", report(&e)),
    }
}

/// Hands the core the counters the data plane read.
fn give_counters(mgm: &mut Mgm, counted: Vec<Counted>) {
    for Counted {
        source,
        group,
        stats,
        oifs,
    } in counted
    {
        let counters = core::MfeCounters {
            in_pkts: stats.pkts,
            in_octets: stats.bytes,
            different_if: stats.wrong_if,
            negative_mfe: stats.negative,
            in_hdr_errors: stats.ttl_expired,
            in_discards: stats.negative + stats.ttl_expired + stats.no_oif_set,
            uninit_mfe: stats.uninit,
            // mgm queues nothing while an MFE is resolved (spec §6.3 makes the queue optional):
            // every packet that finds it unresolved overflows a queue of length 0.
            queue_overflow: stats.uninit,
            oifs: oifs
                .into_iter()
                .map(|(ifindex, o)| {
                    let c = core::OifCounters {
                        ttl_too_low: o.ttl_too_low,
                        out_packets: o.packets,
                        out_bytes: o.bytes,
                        ..core::OifCounters::default()
                    };
                    (InterfaceId::new(ifindex), c)
                })
                .collect(),
        };
        // The data plane holds entries the core does not know yet (adopted, before the
        // reconciliation), and an MFE may have expired since.
        let _ = mgm.set_mfe_counters(source, group, counters);
    }
}

/// Moves the ring buffer's records to their interfaces' queues.
fn enqueue(ring: &mut ringbuf::EventRing, fair: &mut Fair, dp: &mut Dataplane, seen: &mut Seen) {
    ringbuf::drain(ring, |event| {
        if let Err(Event::NoCache { source, group, .. }) = fair.push(event) {
            // Dropped: the flow's next packet asks again, rather than waiting out its
            // placeholder's retry time.
            if let Err(e) = dp.forwarding.forget_placeholder(key(source, group)) {
                seen.map_errors += 1;
                error!(
                    "cannot remove the placeholder of ({source}, {group}): {}",
                    report(&e)
                );
            }
        }
    });
}

/// Counts the events dropped over full interface queues, and logs them rate-limited.
fn log_queue_full(
    fair: &mut Fair,
    seen: &mut Seen,
    name: &impl Fn(u32) -> String,
    now: core::Instant,
) {
    let dropped = fair.take_dropped();
    if dropped.is_empty() {
        return;
    }
    seen.queue_full += dropped.values().sum::<u64>();
    let total = seen.queue_full;
    limited(&mut seen.limits.queue_full, now, log::Level::Warn, || {
        let which: Vec<String> = dropped
            .iter()
            .map(|(i, n)| format!("{n} on {}", name(*i)))
            .collect();
        format!(
            "events dropped over their interface's queue to the core ({total} so far): {}",
            which.join(", ")
        )
    });
}

/// Logs negative MFEs evicted over the budget since the last line, rate-limited.
fn log_evictions(mgm: &Mgm, budget: usize, seen: &mut Seen, now: core::Instant) {
    let evicted = mgm.negative_evictions();
    let logged = &mut seen.evictions_logged;
    if evicted == *logged {
        return;
    }
    limited(&mut seen.limits.evictions, now, log::Level::Warn, || {
        let line = format!(
            "{} negative entries evicted over the budget of {budget} per incoming interface \
             ({evicted} so far): a flood of unknown flows",
            evicted - *logged
        );
        *logged = evicted;
        line
    });
}

/// Writes map operations to the data plane, in order.
fn write_map_ops(dp: &mut Dataplane, ops: Vec<core::MapOp>, seen: &mut Seen, now: core::Instant) {
    for op in ops {
        debug!("map op: {op}");
        if let Err(e) = dp.forwarding.apply(&op) {
            seen.map_errors += 1;
            limited(&mut seen.limits.map_errors, now, log::Level::Error, || {
                format!("cannot {op}: {}", report(&e))
            });
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
            ttl,
            router_alert,
            message,
            ..
        } => {
            seen.igmp += 1;
            debug!("IGMP on {} from {reporter}: {message}", name(ifindex));
            let ip = querier::IpHeader {
                source: reporter,
                ttl,
                router_alert,
            };
            match router.igmp.handle_message(ifindex, now, ip, &message) {
                Some(heard) => log_heard(seen, now, name, ifindex, ip, heard),
                None => debug!("IGMP does not run on {}: message ignored", name(ifindex)),
            }
        }
        Event::BadIgmp {
            ifindex,
            reporter,
            error,
        } => {
            seen.bad_igmp += 1;
            limited(&mut seen.limits.bad_igmp, now, log::Level::Warn, || {
                format!(
                    "IGMP from {reporter} on {} rejected: {error}",
                    name(ifindex)
                )
            });
        }
        Event::NoCache {
            ifindex,
            source,
            group,
            header,
        } => {
            seen.no_cache += 1;
            debug!(
                "no entry for ({source}, {group}) arriving on {}",
                name(ifindex)
            );
            if let Err(e) = dp.forwarding.on_no_cache(key(source, group)) {
                seen.map_errors += 1;
                limited(&mut seen.limits.map_errors, now, log::Level::Error, || {
                    format!(
                        "cannot clear the placeholder of ({source}, {group}): {}",
                        report(&e)
                    )
                });
            }
            if let Err(e) =
                router
                    .mgm
                    .no_cache_upcall(source, group, InterfaceId::new(ifindex), &header, now)
            {
                seen.unresolved += 1;
                limited(&mut seen.limits.unresolved, now, log::Level::Warn, || {
                    format!("MGM could not resolve ({source}, {group}): {e}")
                });
            }
        }
        Event::WrongIf {
            ifindex,
            source,
            group,
            expected_iif,
            header,
        } => {
            seen.wrong_if += 1;
            debug!(
                "({source}, {group}) arrived on {} instead of {}",
                name(ifindex),
                name(expected_iif)
            );
            router
                .mgm
                .wrong_if_upcall(source, group, InterfaceId::new(ifindex), &header, now);
        }
        Event::Unknown { kind, len } => {
            seen.unknown += 1;
            limited(&mut seen.limits.unknown, now, log::Level::Warn, || {
                format!("unknown ring-buffer record (kind {kind}, {len} bytes) ignored")
            });
        }
    }
}

/// Logs what the querier on `ifindex` set aside or flagged in a message whose IPv4 header was
/// `ip`, each kind at most once per [`WARN_INTERVAL`]; the querier counts every one.
fn log_heard(
    seen: &mut Seen,
    now: core::Instant,
    name: &impl Fn(u32) -> String,
    ifindex: u32,
    ip: querier::IpHeader,
    heard: querier::Heard,
) {
    let (limit, level) = match heard {
        querier::Heard::Handled => return,
        querier::Heard::ForeignQuery => (&mut seen.limits.foreign_query, log::Level::Warn),
        querier::Heard::Nonconforming => (&mut seen.limits.nonconforming, log::Level::Info),
        querier::Heard::Dropped => (&mut seen.limits.nonconforming, log::Level::Warn),
    };
    limited(limit, now, level, || {
        let (interface, from) = (name(ifindex), ip.source);
        let ra = if ip.router_alert { "with" } else { "without" };
        let header = format!("TTL {}, {ra} Router Alert", ip.ttl);
        match heard {
            querier::Heard::ForeignQuery => format!(
                "IGMP query on {interface} from {from}, outside the interface's subnets: kept \
                 out of the querier election"
            ),
            querier::Heard::Nonconforming => format!(
                "IGMP report or leave on {interface} from {from} ({header}) accepted, though \
                 hosts send TTL 1 with Router Alert (--igmp-strict-reports drops them)"
            ),
            // Dropped (Handled returned above).
            _ => format!(
                "IGMP report or leave on {interface} from {from} ({header}) dropped: hosts \
                 send TTL 1 with Router Alert (--igmp-strict-reports)"
            ),
        }
    });
}

/// An interface's data-plane counters in words, for the log: "IGMP received: 3 queries, ...".
fn if_stats(s: &mgm_common::counters::IfStats) -> String {
    format!(
        "IGMP received: {} queries, {} v1, {} v2 and {} v3 reports, {} leaves, {} other; \
         {} copies sent ({} bytes), {} below the TTL threshold; {} packets without an entry; \
         passed to the host: {} malformed, {} VLAN-tagged; {} IGMP messages truncated, {} \
         events lost to a full ring",
        s.igmp_query,
        s.igmp_v1_report,
        s.igmp_v2_report,
        s.igmp_v3_report,
        s.igmp_v2_leave,
        s.igmp_other,
        s.tx_pkts,
        s.tx_bytes,
        s.ttl_too_low,
        s.no_entry,
        s.malformed,
        s.vlan_tagged,
        s.truncated,
        s.ring_full
    )
}

fn key(source: Ipv4Addr, group: Ipv4Addr) -> FwdKey {
    FwdKey {
        source: u32::from(source).to_be(),
        group: u32::from(group).to_be(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{core::InterfaceId, managed::Names, protocols::static_routes::StaticRoutes};

    fn dev(name: &str, ifindex: u32) -> NetDev {
        NetDev {
            name: name.to_owned(),
            ifindex,
            mac: [2, 0, 0, 0, 0, 1],
            mtu: 1500,
            ipv4: None,
            ipv4_subnets: Vec::new(),
            up: true,
        }
    }

    /// A join made at run time on dn2 is taken back when dn2 comes again with another ifindex,
    /// though the configuration names no static route at all.
    #[test]
    fn an_interface_that_comes_back_gets_the_run_time_joins() {
        let names = Names::new(BTreeMap::from([(5, "dn2".to_owned())]));
        let module = StaticRoutes::new(&[], names.clone());
        let table = module.table();
        let plan = ClientPlan {
            protocol: Box::new(module),
            protocol_id: static_routes::PROTOCOL_ID,
            component_id: static_routes::COMPONENT_ID,
            interfaces: Vec::new(),
            memberships: Vec::new(),
        };
        let mut router = Router::new(vec![plan], &BTreeMap::new(), 60, 64, table.clone()).unwrap();
        assert!(router.manage(&dev("dn2", 5), None).unwrap());
        let handle = router.static_handle().unwrap();
        let sg = SourceGroupEntry::sg(
            "198.51.100.7".parse().unwrap(),
            "239.1.1.1".parse().unwrap(),
        );
        let now = router.now();
        table
            .hold(&mut router.mgm, handle, sg, "dn2", 5, now)
            .unwrap();
        assert!(table.add_join(sg, "dn2"));

        router.unmanage(5);
        names.remove(5);
        names.set(6, "dn2");
        assert!(router.manage(&dev("dn2", 6), None).unwrap());

        let owned = router.mgm.protocols();
        assert!(
            owned
                .iter()
                .any(|(p, _, ids)| *p == static_routes::PROTOCOL_ID
                    && ids.contains(&InterfaceId::new(6))),
            "{owned:?}"
        );
        let now = router.now();
        router
            .mgm
            .delete_group_membership_entry(
                handle,
                sg,
                InterfaceId::new(6),
                MGM_JOIN_STATE_FLAG,
                now,
            )
            .expect("the join is held on the new dn2");
    }
}
