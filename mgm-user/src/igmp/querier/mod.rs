//! The router side of IGMP on one interface (RFC 2236, RFC 3376 §6 and §7.3): querier
//! election, the queries to send, group and source timers, last-member queries,
//! compatibility with v1/v2 hosts, and the forwarding state that results.
//!
//! This module is sans-IO in the quinn-proto style (style §9): it owns no socket, never
//! reads the clock and starts no thread. Every input carries `now`; outputs are polled:
//! [`Querier::poll_transmit`] for the queries the daemon sends (with TTL 1 and Router Alert,
//! which are the socket's business), [`Querier::poll_membership`] for the (S,G)/(*,G)
//! memberships to add to or delete from the MGM core, and [`Querier::poll_timeout`] for
//! when to call [`Querier::handle_timeout`] next.
//!
//! The daemon's loop per interface is: feed every IGMP message heard there to
//! [`Querier::handle_message`], call [`Querier::handle_timeout`] at the deadline, and after
//! each call drain both poll queues. It tells the querier the interface's subnets with
//! [`Querier::set_subnets`] whenever its addresses change.

mod config;
mod group;
mod query;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    fmt,
    net::Ipv4Addr,
    time::Duration,
};

pub use config::{Config, ConfigError, Version};
pub use group::FilterMode;
pub use query::{encode_float_code, ALL_SYSTEMS};

use config::{Adopted, Params};
use group::{Group, GroupTimer, Host, QueryActions, SourceBudget};
use query::QueryFields;

use crate::igmp::codec::{decode_float_code, IgmpMessage, QueryV3, RecordType};

/// The core's clock: milliseconds since the daemon's epoch.
pub use crate::core::Instant;

/// `t + d`, saturating.
fn after(t: Instant, d: Duration) -> Instant {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    Instant::from_millis(t.as_millis().saturating_add(ms))
}

/// One of the interface's own prefixes: an address with its prefix length, as `ip addr`
/// shows it. Routers on the link query from inside one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnet {
    pub address: Ipv4Addr,
    /// 0 to 32; more counts as 32.
    pub prefix_len: u8,
}

impl Subnet {
    /// Whether `ip` lies inside the prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let host_bits = 32 - u32::from(self.prefix_len.min(32));
        let mask = u32::MAX.checked_shl(host_bits).unwrap_or(0);
        (u32::from(ip) ^ u32::from(self.address)) & mask == 0
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// The IPv4 header of a message heard on the interface, as far as IGMP looks at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpHeader {
    pub source: Ipv4Addr,
    /// The TTL it arrived with; IGMP is sent with 1 (RFC 2236 §2, RFC 3376 §4).
    pub ttl: u8,
    /// Whether it carried the Router Alert option (RFC 2113), as IGMP is sent with too.
    pub router_alert: bool,
}

impl IpHeader {
    /// A header as hosts and routers send IGMP from `source`: TTL 1 and Router Alert.
    pub fn conforming(source: Ipv4Addr) -> IpHeader {
        IpHeader {
            source,
            ttl: 1,
            router_alert: true,
        }
    }
}

/// What [`Querier::handle_message`] made of a message, for the daemon's log: the exceptions
/// are counted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// Handled as the RFCs say.
    Handled,
    /// A report or leave without Router Alert or with a TTL other than 1, handled all the
    /// same ([`Config::strict_reports`] is off).
    Nonconforming,
    /// A report or leave without Router Alert or with a TTL other than 1, dropped
    /// ([`Config::strict_reports`]).
    Dropped,
    /// A query from outside the interface's subnets: it neither won the election nor
    /// changed a timer.
    ForeignQuery,
}

/// A query to send on this interface. The daemon encodes `message` with
/// [`crate::igmp::codec::encode`] and sends it with IP TTL 1 and the Router Alert option
/// (RFC 3376 §4), from the interface address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// [`ALL_SYSTEMS`] for general queries, the group for group(-and-source)-specific ones
    /// (RFC 3376 §4.1.12).
    pub destination: Ipv4Addr,
    /// The query.
    pub message: IgmpMessage,
}

/// One membership of this interface to add to (`join`) or delete from the MGM core: the
/// group's RFC 3376 router state mapped as spec §4.8 says.
///
/// - INCLUDE(A): `source: Some(S)`, `exclude: false`, an (S,G) JOIN for each S in A.
/// - EXCLUDE(X, Y): `source: None`, a (*,G) JOIN, plus `source: Some(S)`, `exclude: true`, an
///   (S,G) EXCLUDE for each S in Y (the sources whose timer is 0); the sources of X are
///   forwarded by the (*,G).
///
/// For one input the changes come in an order that never forwards what neither the old nor
/// the new state forwards, and that keeps every exclusion under its (*,G): joins, then new
/// exclusions, then ended exclusions, then leaves. When the (*,G) goes, its exclusions go with
/// it in the core (spec §4.8), so they are not deleted one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Membership {
    /// The interface the querier runs on.
    pub ifindex: u32,
    /// The source of (S,G), or `None` for (*,G).
    pub source: Option<Ipv4Addr>,
    /// The group.
    pub group: Ipv4Addr,
    /// `true` for an excluded source (`MGM_EXCLUDE_STATE_FLAG`), `false` for a JOIN.
    pub exclude: bool,
    /// `true` to add the membership, `false` to delete it.
    pub join: bool,
}

/// One entry a group asks of MGM: `(source, exclude)` as in [`Membership`]; `(None, false)` is
/// the (*,G) JOIN.
pub type Entry = (Option<Ipv4Addr>, bool);

/// What the querier has done and seen since it started, for `mgm show`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// General queries handed to [`Querier::poll_transmit`].
    pub general_queries_sent: u64,
    /// Group-specific queries, retransmissions included.
    pub group_queries_sent: u64,
    /// Group-and-source-specific queries, retransmissions included.
    pub group_source_queries_sent: u64,
    /// Queries heard from any router, ours excluded.
    pub queries_received: u64,
    /// Queries of an older version than the interface runs: RFC 3376 §7.3.1 asks for a
    /// warning, since the querier must then be configured down.
    pub older_version_queries_received: u64,
    /// IGMPv1 membership reports.
    pub v1_reports_received: u64,
    /// IGMPv2 membership reports.
    pub v2_reports_received: u64,
    /// IGMPv3 membership reports (messages, not records).
    pub v3_reports_received: u64,
    /// IGMPv2 leave group messages.
    pub leaves_received: u64,
    /// Messages or records dropped on purpose: v3 reports on a v2 interface, groups that
    /// are not routable multicast, v2 leaves in v1 mode, BLOCK records in v1/v2 mode.
    pub ignored: u64,
    /// Times another router took over as querier, or we took it back.
    pub querier_changes: u64,
    /// Groups refused because of [`Config::max_groups`].
    pub group_limit_hits: u64,
    /// Source records refused because of [`Config::max_sources`].
    pub source_limit_hits: u64,
    /// Fast-leave host records (or their growth) refused because of [`Config::max_sources`].
    pub host_limit_hits: u64,
    /// Stalls of the driver the querier was told of: see [`Querier::postpone`].
    pub stalls: u64,
    /// Queries from a source outside every subnet of the interface (see
    /// [`Querier::set_subnets`]), in [`Self::queries_received`] too.
    pub foreign_queries: u64,
    /// Reports and leaves without the Router Alert option.
    pub reports_without_router_alert: u64,
    /// Reports and leaves with a TTL other than 1.
    pub reports_ttl_not_1: u64,
    /// Reports and leaves dropped for either under [`Config::strict_reports`]; they count in
    /// no other counter but the two above.
    pub nonconforming_dropped: u64,
}

/// A deadline missed by more than this means the querier's driver did not run (the daemon was
/// stopped or starved), which hosts cannot be blamed for: well above how late a busy event
/// loop runs a timer, well below the shortest group membership interval anyone configures.
/// The driver then calls [`Querier::postpone`].
pub const STALL: Duration = Duration::from_secs(1);

/// The interface-wide timers, indexing [`Querier::timers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Next general query, while we are querier.
    GeneralQuery = 0,
    /// Other Querier Present timer, while another router is querier (RFC 3376 §6.6.2).
    OtherQuerierPresent = 1,
}

impl Timer {
    const COUNT: usize = 2;
}

/// The router side of IGMP on one interface.
///
/// # Election (RFC 3376 §6.6.2, RFC 2236 §3)
/// Every router starts as querier and sends [startup query count] general queries
/// [startup query interval] apart, then one every [query interval]. A query from a lower
/// address makes us non-querier until the Other Querier Present timer runs out; then we send
/// a general query at once and resume. Queries from 0.0.0.0 never win (no router sends from
/// it), nor do queries from outside the interface's subnets ([`Querier::set_subnets`]): a
/// forged query from a lower address would take the querier duties (RFC 3376 §9.1), and a
/// router that shares the link has an address on it. A non-querier adopts the querier's QRV and QQIC, sends nothing, and ignores the
/// "Send Q" actions of §6.4.2; the querier's own specific queries lower its timers instead
/// (§6.6.1).
///
/// # Fast leave
/// With [`Config::fast_leave`], each reporting host's filter is tracked per group. Where
/// RFC 3376 would send a group(-and-source)-specific query, the querier instead stops
/// forwarding at once what no tracked host still wants, and keeps forwarding the rest: one
/// host's leave never cuts another host off. It relies on hosts not suppressing reports
/// (IGMPv3 hosts never do; v2 hosts do when they hear each other's reports, so a silent v2
/// host may lose its stream until it answers the next general query). The hosts tracked,
/// each counting once plus once per source in its filter, are held to [`Config::max_sources`]
/// over the interface, apart from the source records; a host over it is not tracked and
/// counted in [`Counters::host_limit_hits`].
#[derive(Debug)]
pub struct Querier {
    /// The interface, copied into every [`Membership`].
    ifindex: u32,
    /// Our address on the interface: the election compares it.
    own_address: Ipv4Addr,
    /// The interface's prefixes: queries from outside them do not elect. Empty while none is
    /// known; every query is then taken as on the link.
    subnets: Vec<Subnet>,
    config: Config,
    /// The latest `now` seen; time never goes back.
    now: Instant,
    /// The other router that is querier, or `None` while we are.
    other_querier: Option<Ipv4Addr>,
    /// The querier's QRV and QQIC while another router is querier.
    adopted: Adopted,
    /// Deadlines indexed by [`Timer`].
    timers: [Option<Instant>; Timer::COUNT],
    /// Startup general queries still to send after the next one.
    startup_queries_left: u32,
    groups: BTreeMap<Ipv4Addr, Group>,
    /// Every group with a deadline, under its earliest one ([`Group::next_deadline`], kept in
    /// [`Group::indexed`]): the timers touch only the groups that are due, and a message
    /// re-files only the groups it names.
    deadlines: BTreeSet<(Instant, Ipv4Addr)>,
    /// Source records in use over all groups, against [`Config::max_sources`].
    budget: SourceBudget,
    /// With fast leave, the tracked hosts over all groups, each counting once plus once per
    /// source in its filter ([`Host::cost`]), against [`Config::max_sources`] too.
    host_budget: SourceBudget,
    /// The memberships already handed out, by group: the next output is the difference.
    published: BTreeSet<(Ipv4Addr, Entry)>,
    /// Groups whose forwarding may have changed since the last [`Self::flush`].
    dirty: BTreeSet<Ipv4Addr>,
    transmits: VecDeque<Transmit>,
    memberships: VecDeque<Membership>,
    /// [`Self::flush`]'s joins, exclusions, ended exclusions and leaves, empty between calls.
    staged: [Vec<Membership>; 4],
    counters: Counters,
}

impl Querier {
    /// IGMP on interface `ifindex`, whose address is `own_address`, starting at `now` as
    /// querier: the first startup general query is ready in [`Self::poll_transmit`].
    ///
    /// # Errors
    /// [`ConfigError`] when `config` fails [`Config::validate`].
    pub fn new(
        ifindex: u32,
        own_address: Ipv4Addr,
        config: Config,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let budget = SourceBudget {
            used: 0,
            max: config.max_sources,
            refused: 0,
        };
        let host_budget = SourceBudget {
            used: 0,
            max: config.max_sources,
            refused: 0,
        };
        let mut querier = Querier {
            ifindex,
            own_address,
            subnets: Vec::new(),
            config,
            now,
            other_querier: None,
            adopted: Adopted::default(),
            timers: [None; Timer::COUNT],
            startup_queries_left: 0,
            groups: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            budget,
            host_budget,
            published: BTreeSet::new(),
            dirty: BTreeSet::new(),
            transmits: VecDeque::new(),
            memberships: VecDeque::new(),
            staged: Default::default(),
            counters: Counters::default(),
        };
        // RFC 3376 §8.7: [Startup Query Count] general queries, the first one now.
        querier.startup_queries_left = querier.params().startup_query_count;
        querier.send_general_query(now);
        Ok(querier)
    }

    /// Runs on with `config` from `now` on (a reload): the state of every group stays. A
    /// querier that waits longer than the new query interval for its next general query
    /// sends it at the new interval instead, so a shorter interval shows on the wire within
    /// one new interval; every other timer takes the new values when it is next set.
    ///
    /// # Errors
    /// [`ConfigError`] when `config` fails [`Config::validate`]; the old one stays then.
    pub fn reconfigure(&mut self, now: Instant, config: Config) -> Result<(), ConfigError> {
        config.validate()?;
        let now = self.tick(now);
        self.budget.max = config.max_sources;
        self.host_budget.max = config.max_sources;
        self.config = config;
        let next = after(now, self.params().query_interval);
        if self.is_querier() && self.startup_queries_left == 0 {
            let timer = &mut self.timers[Timer::GeneralQuery as usize];
            *timer = Some(timer.map_or(next, |t| t.min(next)));
        }
        Ok(())
    }

    /// The interface's prefixes are now `subnets` (its addresses changed). Without any, every
    /// query is taken as from the link, as the querier cannot tell. An elected querier that is
    /// no longer inside one stays until its Other Querier Present timer runs out, as its
    /// queries no longer keep it.
    pub fn set_subnets(&mut self, subnets: Vec<Subnet>) {
        self.subnets = subnets;
    }

    /// The interface's prefixes, as last set.
    pub fn subnets(&self) -> &[Subnet] {
        &self.subnets
    }

    /// Handles one IGMP message heard on the interface, `ip` being its IPv4 header.
    ///
    /// Reports and leaves drive the filter state (RFC 3376 §6.4, §7.3.2); queries from
    /// other routers drive the election and lower timers (§6.6.1, §6.6.2). Timers already
    /// due at `now` run first.
    pub fn handle_message(&mut self, now: Instant, ip: IpHeader, msg: &IgmpMessage) -> Heard {
        let now = self.tick(now);
        self.run_timers(now);
        let from = ip.source;
        let mut heard = match msg {
            IgmpMessage::Query { .. } => Heard::Handled,
            _ => self.check_header(ip),
        };
        if heard == Heard::Dropped {
            self.flush();
            return heard;
        }
        match msg {
            IgmpMessage::Query {
                max_resp_code,
                group,
                v3,
            } => heard = self.on_query(now, from, *max_resp_code, *group, v3.as_ref()),
            IgmpMessage::V1Report { group } => {
                self.counters.v1_reports_received += 1;
                self.on_old_report(now, from, *group, Version::V1);
            }
            IgmpMessage::V2Report { group } => {
                self.counters.v2_reports_received += 1;
                self.on_old_report(now, from, *group, Version::V2);
            }
            IgmpMessage::V2Leave { group } => {
                self.counters.leaves_received += 1;
                self.on_leave(now, from, *group);
            }
            IgmpMessage::V3Report { records, .. } => {
                self.counters.v3_reports_received += 1;
                if self.config.version < Version::V3 {
                    // An RFC 2236 router does not know this message type.
                    self.counters.ignored += 1;
                } else {
                    // In order: a later record for a group sees what an earlier one did.
                    for r in records {
                        self.on_v3_record(now, from, r.kind, r.group, &r.sources);
                    }
                }
            }
        }
        // A message changes the timers of the groups it names, and no others (a takeover by
        // another querier re-files every group in `stop_querying`).
        match msg {
            IgmpMessage::V1Report { group } | IgmpMessage::V2Report { group } => {
                self.reported(*group, from);
            }
            IgmpMessage::V3Report { records, .. } => {
                records.iter().for_each(|r| self.reported(r.group, from));
            }
            IgmpMessage::Query { group, .. } | IgmpMessage::V2Leave { group } => {
                self.reindex(*group);
            }
        }
        self.flush();
        heard
    }

    /// Counts a report or leave sent without Router Alert or with a TTL other than 1, which
    /// no host does (RFC 3376 §4): one forged off the link, or from an old stack that omits
    /// Router Alert. RFC 3376 §9.2 lets a router drop them, at the cost of those stacks:
    /// [`Config::strict_reports`] says whether to.
    fn check_header(&mut self, ip: IpHeader) -> Heard {
        let c = &mut self.counters;
        if !ip.router_alert {
            c.reports_without_router_alert += 1;
        }
        if ip.ttl != 1 {
            c.reports_ttl_not_1 += 1;
        }
        if ip.router_alert && ip.ttl == 1 {
            Heard::Handled
        } else if self.config.strict_reports {
            c.nonconforming_dropped += 1;
            Heard::Dropped
        } else {
            Heard::Nonconforming
        }
    }

    /// Whether `address` lies inside one of the interface's prefixes, or none is known.
    fn on_link(&self, address: Ipv4Addr) -> bool {
        self.subnets.is_empty() || self.subnets.iter().any(|s| s.contains(address))
    }

    /// `from` reported about `group`: its last reporter, and its timers re-filed.
    fn reported(&mut self, group: Ipv4Addr, from: Ipv4Addr) {
        if let Some(state) = self.groups.get_mut(&group) {
            state.last_reporter = Some(from);
        }
        self.reindex(group);
    }

    /// Re-files `group` in [`Self::deadlines`] under its earliest deadline now.
    fn reindex(&mut self, group: Ipv4Addr) {
        let Some(g) = self.groups.get_mut(&group) else {
            return;
        };
        let next = g.next_deadline();
        if next == g.indexed {
            return;
        }
        if let Some(t) = g.indexed {
            self.deadlines.remove(&(t, group));
        }
        if let Some(t) = next {
            self.deadlines.insert((t, group));
        }
        g.indexed = next;
    }

    /// The host budget's count and what the tracked hosts add up to, for the tests to compare.
    #[cfg(test)]
    fn host_units(&self) -> [usize; 2] {
        let held = self.groups.values().flat_map(|g| g.hosts.values());
        [self.host_budget.used, held.map(Host::cost).sum()]
    }

    /// The deadline index and what a scan of every group finds, for the tests to compare.
    #[cfg(test)]
    fn deadlines_and_scan(&self) -> [Vec<(Instant, Ipv4Addr)>; 2] {
        let mut scan: Vec<(Instant, Ipv4Addr)> = self
            .groups
            .iter()
            .filter_map(|(a, g)| Some((g.next_deadline()?, *a)))
            .collect();
        scan.sort_unstable();
        [self.deadlines.iter().copied().collect(), scan]
    }

    /// Forgets `group`, and its place in [`Self::deadlines`].
    fn remove_group(&mut self, group: Ipv4Addr) {
        let Some(g) = self.groups.remove(&group) else {
            return;
        };
        if let Some(t) = g.indexed {
            self.deadlines.remove(&(t, group));
        }
        let hosts = g.hosts.values().map(Host::cost).sum();
        self.host_budget.recharge(hosts, 0);
    }

    /// Runs every timer due at `now`: general queries, querier takeover, query
    /// retransmissions, and group, source and host-present expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.tick(now);
        self.run_timers(now);
        self.flush();
    }

    /// When [`Self::handle_timeout`] must next be called: the earliest deadline of the
    /// interface, its groups, sources and tracked hosts. It may come early, after a report
    /// pushed a group's timers back; that call then finds nothing due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let own = self.timers.iter().flatten().min().copied();
        let groups = self.deadlines.first().map(|(t, _)| *t);
        own.into_iter().chain(groups).min()
    }

    /// The next query to send, oldest first.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next membership change for the MGM core, in order.
    pub fn poll_membership(&mut self) -> Option<Membership> {
        self.memberships.pop_front()
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        Counters {
            source_limit_hits: self.budget.refused,
            host_limit_hits: self.host_budget.refused,
            ..self.counters
        }
    }

    /// The interface this querier runs on.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether we are the querier on the interface.
    pub fn is_querier(&self) -> bool {
        self.other_querier.is_none()
    }

    /// The address of the current querier: ours, or the other router's.
    pub fn querier_address(&self) -> Ipv4Addr {
        self.other_querier.unwrap_or(self.own_address)
    }

    /// When we take over as querier unless the other querier is heard again.
    pub fn other_querier_expires(&self) -> Option<Instant> {
        self.timers[Timer::OtherQuerierPresent as usize]
    }

    /// The groups with state on the interface, by address.
    pub fn groups(&self) -> impl Iterator<Item = GroupView<'_>> + '_ {
        self.groups.iter().map(|(address, group)| GroupView {
            address: *address,
            group,
            version: self.config.version,
        })
    }

    /// The state of one group, if it has any.
    pub fn group(&self, address: Ipv4Addr) -> Option<GroupView<'_>> {
        self.groups.get(&address).map(|group| GroupView {
            address,
            group,
            version: self.config.version,
        })
    }

    /// The (group, entry) memberships the current state asks for: what all [`Membership`]s
    /// output so far add up to once drained, in the core, where deleting a (*,G) deletes its
    /// exclusions.
    pub fn forwarding(&self) -> BTreeSet<(Ipv4Addr, Entry)> {
        self.groups
            .iter()
            .flat_map(|(g, state)| state.forwarding().into_iter().map(|s| (*g, s)))
            .collect()
    }

    /// Source records on the interface over all groups (what [`Config::max_sources`] caps).
    pub fn source_count(&self) -> usize {
        self.budget.used
    }

    /// The driver did not run for `by` (a stall, see [`STALL`]): every timer moves on by as
    /// much, so no membership expires for reports the hosts could not send (no query went
    /// out) or the driver did not read. The overdue deadlines then fire at the next call,
    /// usually the general query that asks the hosts again.
    pub fn postpone(&mut self, by: Duration) {
        self.counters.stalls += 1;
        for t in self.timers.iter_mut().flatten() {
            *t = after(*t, by);
        }
        for g in self.groups.values_mut() {
            g.postpone(by);
        }
        self.reindex_all();
    }

    /// Re-files every group: after a change to the timers of all of them.
    fn reindex_all(&mut self) {
        let groups: Vec<Ipv4Addr> = self.groups.keys().copied().collect();
        for g in groups {
            self.reindex(g);
        }
    }

    fn tick(&mut self, now: Instant) -> Instant {
        self.now = self.now.max(now);
        self.now
    }

    fn params(&self) -> Params {
        self.config.params(self.adopted)
    }

    fn query_fields(&self) -> QueryFields {
        let p = self.params();
        QueryFields {
            version: self.config.version,
            robustness: p.robustness,
            query_interval: p.query_interval,
        }
    }

    fn due(&self, timer: Timer, now: Instant) -> bool {
        self.timers[timer as usize].is_some_and(|t| t <= now)
    }

    fn run_timers(&mut self, now: Instant) {
        if self.due(Timer::OtherQuerierPresent, now) {
            self.become_querier(now);
        }
        if self.due(Timer::GeneralQuery, now) {
            self.send_general_query(now);
        }
        if self.deadlines.first().is_none_or(|(t, _)| *t > now) {
            return;
        }
        // In address order, as the queries they send go out.
        let mut due: Vec<Ipv4Addr> = self
            .deadlines
            .range(..=(now, Ipv4Addr::BROADCAST))
            .map(|(_, g)| *g)
            .collect();
        due.sort_unstable();
        for group in due {
            self.expire_group(now, group);
        }
    }

    /// The other querier went quiet: we query again (RFC 3376 §6.6.2).
    fn become_querier(&mut self, now: Instant) {
        self.timers[Timer::OtherQuerierPresent as usize] = None;
        self.other_querier = None;
        self.adopted = Adopted::default();
        self.counters.querier_changes += 1;
        self.startup_queries_left = 0;
        self.send_general_query(now);
    }

    /// Sends a general query and schedules the next one (RFC 3376 §6.1, §8.6, §8.7).
    fn send_general_query(&mut self, now: Instant) {
        let p = self.params();
        let message = self.query_fields().build(
            Ipv4Addr::UNSPECIFIED,
            Vec::new(),
            p.query_response_interval,
            false,
        );
        self.transmit(ALL_SYSTEMS, message);
        self.counters.general_queries_sent += 1;
        self.startup_queries_left = self.startup_queries_left.saturating_sub(1);
        let next = if self.startup_queries_left > 0 {
            p.startup_query_interval
        } else {
            p.query_interval
        };
        self.timers[Timer::GeneralQuery as usize] = Some(after(now, next));
    }

    fn transmit(&mut self, destination: Ipv4Addr, message: IgmpMessage) {
        self.transmits.push_back(Transmit {
            destination,
            message,
        });
    }

    /// Runs the due timers of one group, in an order that makes a long jump of time come
    /// out as if each had run on time: host-present, source and group timers first, then the
    /// retransmissions, which see the result.
    fn expire_group(&mut self, now: Instant, address: Ipv4Addr) {
        let p = self.params();
        let fields = self.query_fields();
        let is_querier = self.is_querier();
        let Some(g) = self.groups.get_mut(&address) else {
            return;
        };
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        for t in [GroupTimer::V1Host, GroupTimer::V2Host] {
            if due(g.timer(t)) {
                g.set_timer(t, None);
            }
        }
        g.expire_sources(now, &mut self.budget);
        if due(g.timer(GroupTimer::Filter)) {
            g.group_timer_expired(&mut self.budget);
        }
        let hosts = &mut self.host_budget;
        g.hosts.retain(|_, h| {
            let keep = h.expires > now;
            if !keep {
                hosts.recharge(h.cost(), 0);
            }
            keep
        });
        let mut sends = Vec::new();
        if due(g.timer(GroupTimer::GroupQuery)) {
            g.set_timer(GroupTimer::GroupQuery, None);
            if is_querier && g.mode == FilterMode::Exclude && g.group_queries_left > 0 {
                sends.push(group_query(g, address, now, &p, &fields));
                g.group_queries_left -= 1;
                if g.group_queries_left > 0 {
                    let next = after(now, p.last_member_query_interval);
                    g.set_timer(GroupTimer::GroupQuery, Some(next));
                }
            } else {
                g.group_queries_left = 0;
            }
        }
        if due(g.timer(GroupTimer::SourceQuery)) {
            g.set_timer(GroupTimer::SourceQuery, None);
            if is_querier {
                sends.extend(source_queries(g, address, now, &p, &fields, None));
                if !g.source_queries_left.is_empty() {
                    let next = after(now, p.last_member_query_interval);
                    g.set_timer(GroupTimer::SourceQuery, Some(next));
                }
            } else {
                g.source_queries_left.clear();
            }
        }
        if g.is_empty() {
            self.remove_group(address);
        } else {
            self.reindex(address);
        }
        self.dirty.insert(address);
        self.send_specific(address, sends);
    }

    fn send_specific(&mut self, group: Ipv4Addr, messages: Vec<IgmpMessage>) {
        for message in messages {
            match &message {
                IgmpMessage::Query {
                    v3: Some(QueryV3 { sources, .. }),
                    ..
                } if !sources.is_empty() => self.counters.group_source_queries_sent += 1,
                _ => self.counters.group_queries_sent += 1,
            }
            self.transmit(group, message);
        }
    }

    fn on_query(
        &mut self,
        now: Instant,
        from: Ipv4Addr,
        max_resp_code: u8,
        group: Ipv4Addr,
        v3: Option<&QueryV3>,
    ) -> Heard {
        if from == self.own_address {
            // Our own query, looped back.
            return Heard::Handled;
        }
        self.counters.queries_received += 1;
        let older = match self.config.version {
            Version::V3 => v3.is_none(),
            Version::V1 | Version::V2 => max_resp_code == 0,
        };
        if older {
            self.counters.older_version_queries_received += 1;
        }
        if !from.is_unspecified() && !self.on_link(from) {
            self.counters.foreign_queries += 1;
            return Heard::ForeignQuery;
        }
        // §6.6.2: a query from a lower address wins the election.
        if !from.is_unspecified() && from < self.own_address {
            if self.is_querier() {
                self.counters.querier_changes += 1;
                self.stop_querying();
            }
            self.other_querier = Some(from);
            if let Some(q) = v3 {
                // §4.1.6, §4.1.7: adopt the querier's values, unless sent as 0.
                if q.qrv != 0 {
                    self.adopted.robustness = Some(q.qrv);
                }
                if q.qqic != 0 {
                    let secs = u64::from(decode_float_code(q.qqic));
                    self.adopted.query_interval = Some(Duration::from_secs(secs));
                }
            }
            let oqpi = self.params().other_querier_present_interval;
            self.timers[Timer::OtherQuerierPresent as usize] = Some(after(now, oqpi));
        }
        self.lower_timers(now, from, max_resp_code, group, v3);
        Heard::Handled
    }

    /// §6.6.1: a specific query of the querier with S clear lowers our timers to its LMQT
    /// (RFC 2236 §3: count × the query's Max Response Time).
    fn lower_timers(
        &mut self,
        now: Instant,
        from: Ipv4Addr,
        max_resp_code: u8,
        group: Ipv4Addr,
        v3: Option<&QueryV3>,
    ) {
        if group.is_unspecified()
            || self.other_querier != Some(from)
            || v3.is_some_and(|q| q.s_flag)
        {
            return;
        }
        let tenths = match v3 {
            Some(_) => decode_float_code(max_resp_code),
            None => u32::from(max_resp_code),
        };
        if tenths == 0 {
            return;
        }
        let lmqt =
            Duration::from_millis(100 * u64::from(tenths)) * self.params().last_member_query_count;
        let lowered = Some(after(now, lmqt));
        let Some(g) = self.groups.get_mut(&group) else {
            return;
        };
        match v3.map(|q| q.sources.as_slice()).unwrap_or_default() {
            [] => {
                if g.mode == FilterMode::Exclude {
                    let t = g.timer(GroupTimer::Filter).min(lowered);
                    g.set_timer(GroupTimer::Filter, t);
                }
            }
            sources => {
                for s in sources {
                    if let Some(t @ Some(_)) = g.sources.get_mut(s) {
                        *t = (*t).min(lowered);
                    }
                }
            }
        }
    }

    /// Another router became querier: stop our general queries and retransmissions.
    fn stop_querying(&mut self) {
        self.timers[Timer::GeneralQuery as usize] = None;
        self.startup_queries_left = 0;
        for g in self.groups.values_mut() {
            g.group_queries_left = 0;
            g.source_queries_left.clear();
            g.set_timer(GroupTimer::GroupQuery, None);
            g.set_timer(GroupTimer::SourceQuery, None);
        }
        self.reindex_all();
    }

    /// A v1 or v2 report: sets the group's older host present timer and counts as
    /// IS_EX({}) (RFC 3376 §7.3.2).
    fn on_old_report(&mut self, now: Instant, from: Ipv4Addr, group: Ipv4Addr, version: Version) {
        if !routable(group) {
            self.counters.ignored += 1;
            return;
        }
        if !self.make_group(group) {
            return;
        }
        let ohpi = self.params().older_host_present_interval;
        if let Some(g) = self.groups.get_mut(&group) {
            let timer = match version {
                Version::V1 => GroupTimer::V1Host,
                Version::V2 | Version::V3 => GroupTimer::V2Host,
            };
            g.set_timer(timer, Some(after(now, ohpi)));
        }
        self.apply(now, from, group, RecordType::ModeIsExclude, BTreeSet::new());
    }

    /// A v2 leave: TO_IN({}), except in v1 mode, where it is ignored (RFC 3376 §7.3.2).
    fn on_leave(&mut self, now: Instant, from: Ipv4Addr, group: Ipv4Addr) {
        let Some(g) = self.groups.get(&group) else {
            // Nobody asked for the group here: nothing to leave.
            return;
        };
        if g.compatibility(self.config.version) == Version::V1 {
            self.counters.ignored += 1;
            return;
        }
        self.apply(
            now,
            from,
            group,
            RecordType::ChangeToInclude,
            BTreeSet::new(),
        );
    }

    /// One v3 group record. In v1/v2 compatibility mode BLOCK is ignored and TO_EX loses
    /// its sources (RFC 3376 §7.3.2).
    fn on_v3_record(
        &mut self,
        now: Instant,
        from: Ipv4Addr,
        kind: RecordType,
        group: Ipv4Addr,
        sources: &[Ipv4Addr],
    ) {
        if !routable(group) {
            self.counters.ignored += 1;
            return;
        }
        let mut b: BTreeSet<Ipv4Addr> = sources.iter().copied().collect();
        let compatibility = self
            .groups
            .get(&group)
            .map_or(Version::V3, |g| g.compatibility(Version::V3));
        if compatibility < Version::V3 {
            match kind {
                RecordType::BlockOldSources => {
                    self.counters.ignored += 1;
                    return;
                }
                RecordType::ChangeToExclude => b.clear(),
                _ => {}
            }
        }
        if !self.groups.contains_key(&group) {
            // INCLUDE({}) only changes with an EXCLUDE record or sources to add.
            let creates = matches!(
                kind,
                RecordType::ModeIsExclude | RecordType::ChangeToExclude
            ) || (kind != RecordType::BlockOldSources && !b.is_empty());
            if !creates || !self.make_group(group) {
                return;
            }
        }
        self.apply(now, from, group, kind, b);
    }

    /// Creates `group` in INCLUDE({}) unless it exists; `false` when the group limit
    /// refuses it.
    fn make_group(&mut self, group: Ipv4Addr) -> bool {
        if self.groups.contains_key(&group) {
            return true;
        }
        if self
            .config
            .max_groups
            .is_some_and(|max| self.groups.len() >= max)
        {
            self.counters.group_limit_hits += 1;
            return false;
        }
        self.groups.insert(group, Group::new());
        true
    }

    /// Applies one (translated) record to an existing group, then its query actions.
    fn apply(
        &mut self,
        now: Instant,
        from: Ipv4Addr,
        group: Ipv4Addr,
        kind: RecordType,
        b: BTreeSet<Ipv4Addr>,
    ) {
        let p = self.params();
        let fields = self.query_fields();
        let is_querier = self.is_querier();
        let Some(g) = self.groups.get_mut(&group) else {
            return;
        };
        if self.config.fast_leave {
            let expires = after(now, p.group_membership_interval);
            track_host(g, from, kind, &b, expires, &mut self.host_budget);
        }
        let ask = g.apply(now, kind, &b, &p, &mut self.budget);
        self.dirty.insert(group);
        if self.config.fast_leave {
            fast_leave(g, ask, &mut self.budget);
        } else if is_querier {
            let sends = send_queries(g, group, now, &p, &fields, ask);
            self.send_specific(group, sends);
        }
        if self.groups.get(&group).is_some_and(Group::is_empty) {
            self.remove_group(group);
        }
    }

    /// Hands out the membership changes of every group touched since the last call, in the
    /// order [`Membership`] describes.
    fn flush(&mut self) {
        // Kept between calls: a report's changes cost no allocation once these have grown.
        let mut staged = std::mem::take(&mut self.staged);
        let [joins, excludes, unexcludes, leaves] = &mut staged;
        while let Some(group) = self.dirty.pop_first() {
            let now: BTreeSet<Entry> = self
                .groups
                .get(&group)
                .map(Group::forwarding)
                .unwrap_or_default();
            let before: BTreeSet<Entry> = self
                .published
                .range((group, (None, false))..=(group, (Some(Ipv4Addr::BROADCAST), true)))
                .map(|(_, e)| *e)
                .collect();
            let star_stays = now.contains(&(None, false));
            for &(source, exclude) in now.difference(&before) {
                self.published.insert((group, (source, exclude)));
                let out = if exclude { &mut *excludes } else { &mut *joins };
                out.push(self.membership(group, source, exclude, true));
            }
            for &(source, exclude) in before.difference(&now) {
                self.published.remove(&(group, (source, exclude)));
                match (exclude, star_stays) {
                    (false, _) => leaves.push(self.membership(group, source, false, false)),
                    (true, true) => unexcludes.push(self.membership(group, source, true, false)),
                    // The (*,G) leave takes it along.
                    (true, false) => {}
                }
            }
        }
        for out in &mut staged {
            self.memberships.extend(out.drain(..));
        }
        self.staged = staged;
    }

    fn membership(
        &self,
        group: Ipv4Addr,
        source: Option<Ipv4Addr>,
        exclude: bool,
        join: bool,
    ) -> Membership {
        Membership {
            ifindex: self.ifindex,
            source,
            group,
            exclude,
            join,
        }
    }
}

/// Whether reports for `group` can mean anything to a router: multicast, and outside
/// 224.0.0.0/24, which is never forwarded (RFC 5771 §4).
fn routable(group: Ipv4Addr) -> bool {
    group.is_multicast() && group.octets()[..3] != [224, 0, 0]
}

/// Records what host `from` now wants of a group, for fast leave. A record the host budget
/// cannot hold is refused (counted there) and the host's earlier one, if any, stays: the
/// host may then lose a stream at another host's leave until it reports again.
fn track_host(
    g: &mut Group,
    from: Ipv4Addr,
    kind: RecordType,
    b: &BTreeSet<Ipv4Addr>,
    expires: Instant,
    budget: &mut SourceBudget,
) {
    let (mode, sources) = match (kind, g.hosts.get(&from)) {
        (RecordType::ModeIsInclude | RecordType::ChangeToInclude, _) => {
            (FilterMode::Include, b.clone())
        }
        (RecordType::ModeIsExclude | RecordType::ChangeToExclude, _) => {
            (FilterMode::Exclude, b.clone())
        }
        (RecordType::AllowNewSources, None) => (FilterMode::Include, b.clone()),
        (RecordType::AllowNewSources, Some(h)) => match h.mode {
            FilterMode::Include => (h.mode, &h.sources | b),
            FilterMode::Exclude => (h.mode, &h.sources - b),
        },
        (RecordType::BlockOldSources, None) => return,
        (RecordType::BlockOldSources, Some(h)) => match h.mode {
            FilterMode::Include => (h.mode, &h.sources - b),
            FilterMode::Exclude => (h.mode, &h.sources | b),
        },
    };
    let old = g.hosts.get(&from).map_or(0, Host::cost);
    if mode == FilterMode::Include && sources.is_empty() {
        g.hosts.remove(&from);
        budget.recharge(old, 0);
        return;
    }
    let host = Host {
        mode,
        sources,
        expires,
    };
    if budget.recharge(old, host.cost()) {
        g.hosts.insert(from, host);
    }
}

/// Fast leave in place of "Send Q": what no tracked host wants any more stops now.
fn fast_leave(g: &mut Group, ask: QueryActions, budget: &mut SourceBudget) {
    for s in ask.sources {
        if !g.hosts.values().any(|h| h.wants(s)) {
            g.expire_source(s, budget);
        }
    }
    if ask.group && !g.hosts.values().any(|h| h.mode == FilterMode::Exclude) {
        g.group_timer_expired(budget);
    }
}

/// The querier's "Send Q(G, X)" and "Send Q(G)" (RFC 3376 §6.6.3.1, §6.6.3.2): lower the
/// timers to LMQT, send at once, and schedule [LMQC − 1] retransmissions [LMQI] apart.
fn send_queries(
    g: &mut Group,
    group: Ipv4Addr,
    now: Instant,
    p: &Params,
    fields: &QueryFields,
    ask: QueryActions,
) -> Vec<IgmpMessage> {
    let lmqt = Some(after(now, p.last_member_query_time));
    let next = Some(after(now, p.last_member_query_interval));
    let mut sends = Vec::new();
    if !ask.sources.is_empty() {
        for s in &ask.sources {
            if let Some(t @ Some(_)) = g.sources.get_mut(s) {
                *t = (*t).min(lmqt);
            }
            g.source_queries_left.insert(*s, p.last_member_query_count);
        }
        sends.extend(source_queries(g, group, now, p, fields, Some(&ask.sources)));
        if !g.source_queries_left.is_empty() && g.timer(GroupTimer::SourceQuery).is_none() {
            g.set_timer(GroupTimer::SourceQuery, next);
        }
    }
    if ask.group && g.mode == FilterMode::Exclude {
        let t = g.timer(GroupTimer::Filter).min(lmqt);
        g.set_timer(GroupTimer::Filter, t);
        sends.push(group_query(g, group, now, p, fields));
        g.group_queries_left = p.last_member_query_count - 1;
        let retransmit = next.filter(|_| g.group_queries_left > 0);
        g.set_timer(GroupTimer::GroupQuery, retransmit);
    }
    sends
}

/// One group-specific query; S is set when the group timer is above LMQT (§6.6.3.1).
fn group_query(
    g: &Group,
    group: Ipv4Addr,
    now: Instant,
    p: &Params,
    fields: &QueryFields,
) -> IgmpMessage {
    let lmqt = after(now, p.last_member_query_time);
    let s_flag = g.timer(GroupTimer::Filter).is_some_and(|t| t > lmqt);
    fields.build(group, Vec::new(), p.last_member_query_interval, s_flag)
}

/// The group-and-source-specific queries due now for the sources in `only` (all pending
/// ones if `None`): one with S clear for sources whose timers are at most LMQT, one with S
/// set for the rest; each source sent counts down its retransmissions (§6.6.3.2).
fn source_queries(
    g: &mut Group,
    group: Ipv4Addr,
    now: Instant,
    p: &Params,
    fields: &QueryFields,
    only: Option<&BTreeSet<Ipv4Addr>>,
) -> Vec<IgmpMessage> {
    let lmqt = after(now, p.last_member_query_time);
    let sources = &g.sources;
    g.source_queries_left.retain(|s, _| sources.contains_key(s));
    let (mut clear, mut suppressed) = (Vec::new(), Vec::new());
    for (s, left) in g.source_queries_left.iter_mut() {
        if only.is_some_and(|o| !o.contains(s)) {
            continue;
        }
        if sources.get(s).copied().flatten().is_some_and(|t| t > lmqt) {
            suppressed.push(*s);
        } else {
            clear.push(*s);
        }
        *left -= 1;
    }
    g.source_queries_left.retain(|_, left| *left > 0);
    let lmqi = p.last_member_query_interval;
    let mut out = Vec::new();
    if !clear.is_empty() {
        out.push(fields.build(group, clear, lmqi, false));
    }
    if !suppressed.is_empty() {
        out.push(fields.build(group, suppressed, lmqi, true));
    }
    out
}

/// A read-only view of one group's state, for `mgm show` and tests.
#[derive(Debug, Clone, Copy)]
pub struct GroupView<'a> {
    address: Ipv4Addr,
    group: &'a Group,
    version: Version,
}

impl GroupView<'_> {
    /// The group address.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// INCLUDE or EXCLUDE (RFC 3376 §6.2.1).
    pub fn filter_mode(&self) -> FilterMode {
        self.group.mode
    }

    /// The group compatibility mode (RFC 3376 §7.3.2).
    pub fn compatibility(&self) -> Version {
        self.group.compatibility(self.version)
    }

    /// When the group timer runs out; only EXCLUDE mode has one.
    pub fn group_timer(&self) -> Option<Instant> {
        self.group.timer(GroupTimer::Filter)
    }

    /// Every source record with its timer; `None` is a timer of 0, an excluded source of
    /// an EXCLUDE-mode group (RFC 3376 §6.2.3).
    pub fn sources(&self) -> impl Iterator<Item = (Ipv4Addr, Option<Instant>)> + '_ {
        self.group.sources.iter().map(|(s, t)| (*s, *t))
    }

    /// The hosts tracked for fast leave.
    pub fn reporters(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.group.hosts.keys().copied()
    }

    /// The host whose report about the group came last.
    pub fn last_reporter(&self) -> Option<Ipv4Addr> {
        self.group.last_reporter
    }
}
