//! The sans-IO core of mgm: the Multicast Group Manager state machine of spec §2–§7.
//!
//! [`Mgm`] owns the registrations, interface ownership, the group-membership table, the MFE
//! table and its timers. It performs no I/O, never reads a clock and starts no thread:
//! - every input that can move time carries `now` ([`Instant`]);
//! - data-plane effects are queued [`MapOp`]s, taken with [`Mgm::poll_map_op`];
//! - the next timer deadline comes from [`Mgm::poll_timeout`], and the driver calls
//!   [`Mgm::handle_timeout`] when it passes;
//! - client callbacks run synchronously on the registered [`RoutingProtocol`] objects, which can
//!   only queue further requests through [`Cx`] (spec §7, §10); a client that answers from
//!   elsewhere may promise a callback's out-parameters for later, and the driver hands the
//!   answer in with [`Mgm::answer`] while the decision waits (`waiting.rs`).
//!
//! The driver (daemon) feeds API calls, ring-buffer upcalls, route changes and counter snapshots
//! in, and applies what comes out.

mod action;
mod alerts;
mod enumerate;
mod error;
mod inspect;
mod membership;
mod mfe;
mod owner;
mod protocol;
mod reconcile;
mod route;
mod time;
mod types;
mod waiting;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::time::Duration;

pub use action::MapOp;
pub use enumerate::{
    Batch, MfeRecord, MfeStatsEx, MfeStatsRecord, OifStatsRecord, WireSize, ALL_SOURCES,
    ANY_SOURCE, MGM_MFE_STATS_0, MGM_MFE_STATS_1,
};
pub use error::MgmError;
pub use mfe::{MfeCounters, OifCounters};
pub use protocol::{Answer, Cx, MgmIfEntry, NoWait, Request, RouteInfo, RoutingProtocol};
pub use reconcile::DataPlaneEntry;
pub use route::Route;
pub use time::Instant;
pub use types::{
    ComponentId, EnumHandle, GroupFilter, InterfaceId, ProtocolHandle, ProtocolId,
    SourceGroupEntry, ALL_ONES, MGM_EXCLUDE_STATE_FLAG, MGM_FORWARD_STATE_FLAG,
    MGM_JOIN_STATE_FLAG,
};

use enumerate::Enumeration;
use membership::MembershipTable;
use mfe::{Mfe, MfeKey};
use owner::Owner;
use route::RouteTable;

/// Tunables and capacities. Capacities stand in for allocation failure: when one is used up the
/// call fails with [`MgmError::NotEnoughMemory`], as Windows does when it cannot allocate
/// (spec §8); in the real daemon they follow the BPF map sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// MFE lifetime when no client chooses one: 900 s (spec §1, §5.6).
    pub mfe_lifetime_s: u32,
    /// Whether wrong-interface upcalls reach protocols; Windows never sends them (spec §5.5).
    pub wrong_if_enabled: bool,
    /// At most one wrong-interface callback per MFE in this interval (spec §5.5, §10). 3 s is
    /// what Linux ipmr uses for `IGMPMSG_WRONGVIF`.
    pub wrong_if_interval: Duration,
    /// Maximum concurrent registrations.
    pub max_registrations: usize,
    /// Maximum interface ids MGM knows at once.
    pub max_interfaces: usize,
    /// Maximum membership entries (JOIN and local) at once.
    pub max_memberships: usize,
    /// Maximum MFEs; in the daemon, the `mfe` map's size.
    pub max_mfes: usize,
    /// Most negative MFEs per incoming interface: a flood to random groups creates one per
    /// flow, and would otherwise fill the table for everyone. Past it, the interface's oldest
    /// negative MFE goes (an early expiry) and is counted.
    pub negative_budget: usize,
    /// Maximum open group enumerations.
    pub max_enumerations: usize,
    /// Most decisions waiting for one client's answers ([`Cx::answer_later`]); past it, the
    /// client's callbacks get MGM's proposal at once, counted in [`Mgm::waiting_full`].
    pub max_waiting: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mfe_lifetime_s: 900,
            wrong_if_enabled: true,
            wrong_if_interval: Duration::from_secs(3),
            max_registrations: 64,
            max_interfaces: 4096,
            max_memberships: 65_536,
            max_mfes: 65_536,
            negative_budget: 1_024,
            max_enumerations: 64,
            max_waiting: 64,
        }
    }
}

/// One registered client (spec §2.1).
struct Registration {
    protocol_id: ProtocolId,
    component_id: ComponentId,
    protocol: Box<dyn RoutingProtocol>,
}

/// A request queued by a callback, waiting for the current operation to finish (spec §10).
struct Queued {
    from: ProtocolHandle,
    request: Request,
    /// IGMP queued it for an interface between disable and enable: refused with
    /// `CanNotComplete` (spec §3.1 step 1).
    refused: bool,
}

/// The Multicast Group Manager. See the module docs for how a driver runs it.
pub struct Mgm {
    config: Config,
    registrations: BTreeMap<ProtocolHandle, Registration>,
    /// Next handle value; handles are never reused, so stale ones stay invalid (spec §2.2).
    next_handle: u32,
    interfaces: BTreeMap<InterfaceId, Owner>,
    members: MembershipTable,
    mfes: BTreeMap<MfeKey, Mfe>,
    /// MFE deadlines, earliest first (spec §5.6).
    expiry: BTreeSet<(Instant, MfeKey)>,
    /// What the data plane holds once every queued [`MapOp`] is applied; the diff source for
    /// new ops.
    installed: BTreeMap<MfeKey, (InterfaceId, BTreeSet<InterfaceId>)>,
    /// Negative MFEs by incoming interface, oldest first, for [`Config::negative_budget`].
    negatives: BTreeMap<InterfaceId, BTreeSet<(Instant, MfeKey)>>,
    /// Where each negative MFE sits in `negatives`.
    negative_at: BTreeMap<MfeKey, (InterfaceId, Instant)>,
    /// Negative MFEs evicted over the budget so far.
    negative_evictions: u64,
    routes: RouteTable,
    enumerations: BTreeMap<EnumHandle, Enumeration>,
    map_ops: VecDeque<MapOp>,
    queue: VecDeque<Queued>,
    /// MFEs a route change may have moved, checked at `reroute_at` (spec §9 item 11).
    rerouted: BTreeSet<MfeKey>,
    reroute_at: Option<Instant>,
    /// Decisions waiting for an answer, by client and ticket (`waiting.rs`).
    waiting: BTreeMap<(ProtocolHandle, u64), waiting::Waiting>,
    /// Their deadlines, earliest first.
    answer_deadlines: BTreeSet<(Instant, ProtocolHandle, u64)>,
    /// Clients that missed a deadline and have not answered since: not waited for.
    unresponsive: BTreeSet<ProtocolHandle>,
    /// Times a client had [`Config::max_waiting`] decisions waiting already.
    waiting_full: u64,
}

/// How long a route change waits for the rest of its burst before it moves MFEs: well inside
/// the second spec §9 item 11 allows.
pub const REROUTE_DELAY: Duration = Duration::from_millis(100);

/// The most MFEs one [`Mgm::handle_timeout`] call expires, and as many again that it moves
/// after a route change: a restart's adopted entries all end their lifetime in the same
/// instant, and a default route's change moves every MFE, so the rest waits for the next
/// call (the deadline stays due) and the driver's other work goes in between.
pub const TIMEOUTS_PER_CALL: usize = 256;

impl Default for Mgm {
    fn default() -> Self {
        Self::new(Config::default())
    }
}

impl Mgm {
    /// An MGM with no clients, interfaces, memberships, routes or MFEs.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            registrations: BTreeMap::new(),
            next_handle: 1,
            interfaces: BTreeMap::new(),
            members: MembershipTable::default(),
            mfes: BTreeMap::new(),
            expiry: BTreeSet::new(),
            installed: BTreeMap::new(),
            negatives: BTreeMap::new(),
            negative_at: BTreeMap::new(),
            negative_evictions: 0,
            routes: RouteTable::default(),
            enumerations: BTreeMap::new(),
            map_ops: VecDeque::new(),
            queue: VecDeque::new(),
            rerouted: BTreeSet::new(),
            reroute_at: None,
            waiting: BTreeMap::new(),
            answer_deadlines: BTreeSet::new(),
            unresponsive: BTreeSet::new(),
            waiting_full: 0,
        }
    }

    /// `MgmRegisterMProtocol` (spec §2.1). `protocol` receives every callback for this client.
    ///
    /// # Errors
    /// `AlreadyExists` if (protocol_id, component_id) is registered; `NotEnoughMemory` when
    /// [`Config::max_registrations`] is reached.
    pub fn register(
        &mut self,
        protocol: Box<dyn RoutingProtocol>,
        protocol_id: ProtocolId,
        component_id: ComponentId,
    ) -> Result<ProtocolHandle, MgmError> {
        if self
            .registrations
            .values()
            .any(|r| r.protocol_id == protocol_id && r.component_id == component_id)
        {
            return Err(MgmError::AlreadyExists);
        }
        if self.registrations.len() >= self.config.max_registrations {
            return Err(MgmError::NotEnoughMemory);
        }
        let handle = ProtocolHandle(self.next_handle);
        self.next_handle += 1;
        self.registrations.insert(
            handle,
            Registration {
                protocol_id,
                component_id,
                protocol,
            },
        );
        Ok(handle)
    }

    /// `MgmDeRegisterMProtocol` (spec §2.2). Closes the client's group enumerations; invokes no
    /// callback.
    ///
    /// # Errors
    /// `InvalidParameter` for a bad handle; `CanNotComplete` while the client owns an interface.
    pub fn deregister(&mut self, handle: ProtocolHandle) -> Result<(), MgmError> {
        self.registration(handle)?;
        if self.interfaces.values().any(|o| o.is_owned_by(handle)) {
            return Err(MgmError::CanNotComplete);
        }
        self.enumerations.retain(|_, e| e.owner != handle);
        // Releasing its interfaces settled every decision that waited for it.
        self.forget_client(handle);
        self.registrations.remove(&handle);
        Ok(())
    }

    /// Adds or replaces a route of the multicast RPF view (spec §5.2 step 1, §10). The MFEs
    /// whose RPF answer it changes are refreshed in place within [`REROUTE_DELAY`] (spec §9
    /// item 11).
    ///
    /// # Errors
    /// `InvalidParameter` for a prefix longer than 32 or with host bits set.
    pub fn add_route(&mut self, route: Route, now: Instant) -> Result<(), MgmError> {
        self.routes.insert(route)?;
        self.reroute(route.network, route.prefix_len, now);
        Ok(())
    }

    /// Removes the route to `network/prefix_len` with `metric`; returns it if it existed. The
    /// MFEs it covered are refreshed as for [`Mgm::add_route`].
    pub fn delete_route(
        &mut self,
        network: Ipv4Addr,
        prefix_len: u8,
        metric: u32,
        now: Instant,
    ) -> Option<Route> {
        let removed = self.routes.remove(network, prefix_len, metric)?;
        self.reroute(network, prefix_len, now);
        Some(removed)
    }

    /// The next data-plane change to apply, oldest first.
    pub fn poll_map_op(&mut self) -> Option<MapOp> {
        self.map_ops.pop_front()
    }

    /// The earliest timer deadline: when the next MFE expires (spec §5.6), when route changes
    /// are due to move MFEs (spec §9 item 11), or when a client's answer is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let expiry = self.expiry.first().map(|(t, _)| *t);
        expiry
            .into_iter()
            .chain(self.reroute_at)
            .chain(self.next_answer_deadline())
            .min()
    }

    /// The MFEs the next [`Mgm::handle_timeout`] at `now` expires (at most
    /// [`TIMEOUTS_PER_CALL`]), as (source, group). The driver gives the core their latest
    /// counters ([`Mgm::set_mfe_counters`]) before that call, which tells active flows from
    /// idle ones by them.
    pub fn expiring(&self, now: Instant) -> Vec<(Ipv4Addr, Ipv4Addr)> {
        self.expiry
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(TIMEOUTS_PER_CALL)
            .map(|(_, k)| (k.source, k.group))
            .collect()
    }

    /// Fires every timer due at `now`:
    /// - decisions whose client's answer is overdue go on with MGM's proposal;
    /// - route changes move the MFEs whose RPF answer they changed (refresh in place);
    /// - an MFE whose lifetime ended is refreshed in place if its packet count moved during the
    ///   lifetime, and deleted otherwise (spec §5.6 \[Dec\]). Expiry itself invokes no
    ///   callback; a refresh invokes those of §5.2.
    ///
    /// Each call moves and expires at most [`TIMEOUTS_PER_CALL`] MFEs; [`Mgm::poll_timeout`]
    /// stays due while more wait.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.answers_due(now);
        if self.reroute_at.is_some_and(|at| at <= now) {
            let batch: Vec<MfeKey> = self
                .rerouted
                .iter()
                .take(TIMEOUTS_PER_CALL)
                .copied()
                .collect();
            for key in &batch {
                self.rerouted.remove(key);
            }
            self.reroute_at = (!self.rerouted.is_empty()).then_some(now);
            for key in batch {
                let moved = self
                    .mfes
                    .get(&key)
                    .is_some_and(|m| self.rpf_candidate(key.source, m.iif) != m.rpf_candidate);
                if moved {
                    self.refresh_mfe(key, false, now);
                }
            }
        }
        for _ in 0..TIMEOUTS_PER_CALL {
            let Some(&(at, key)) = self.expiry.first() else {
                break;
            };
            if at > now {
                break;
            }
            let active = self
                .mfes
                .get(&key)
                .is_some_and(|m| m.counters.packets() != m.packets_at_start);
            if active {
                self.refresh_mfe(key, true, now);
            } else {
                self.remove_mfe(key);
            }
        }
        self.run_queued(now);
    }

    /// Marks the MFEs whose source `network/prefix_len` covers for a refresh check after
    /// [`REROUTE_DELAY`]: a routing daemon's change often comes as several messages (a delete
    /// and an add), and the MFEs should move once, to where the last one leaves them.
    fn reroute(&mut self, network: Ipv4Addr, prefix_len: u8, now: Instant) {
        let mask = match prefix_len {
            0 => 0,
            n => u32::MAX << (32 - u32::from(n.min(32))),
        };
        let covered = self
            .mfes
            .keys()
            .filter(|k| u32::from(k.source) & mask == u32::from(network));
        let before = self.rerouted.len();
        self.rerouted.extend(covered);
        if self.rerouted.len() > before && self.reroute_at.is_none() {
            self.reroute_at = Some(now + REROUTE_DELAY);
        }
    }

    /// The core's forwarding table, keyed by (source, group): the iif and active OIF list of
    /// every MFE. Applying every [`MapOp`] emitted so far to an empty map yields exactly this.
    pub fn forwarding_table(
        &self,
    ) -> BTreeMap<(Ipv4Addr, Ipv4Addr), (InterfaceId, BTreeSet<InterfaceId>)> {
        self.mfes
            .iter()
            .map(|(k, m)| ((k.source, k.group), (m.iif, self.active_oifs(*k, m))))
            .collect()
    }

    fn registration(&self, handle: ProtocolHandle) -> Result<&Registration, MgmError> {
        self.registrations
            .get(&handle)
            .ok_or(MgmError::InvalidParameter)
    }

    fn is_igmp(&self, handle: ProtocolHandle) -> bool {
        self.registrations
            .get(&handle)
            .is_some_and(|r| r.protocol_id == ProtocolId::IGMP)
    }

    /// Every registered client in ascending (protocol id, component id) order: the order in
    /// which fan-out callbacks run (spec §5.2 step 4 \[Dec\], applied to §4.5/§4.6 too).
    fn registered_in_order(&self) -> Vec<ProtocolHandle> {
        let mut all: Vec<_> = self
            .registrations
            .iter()
            .map(|(h, r)| ((r.protocol_id, r.component_id), *h))
            .collect();
        all.sort();
        all.into_iter().map(|(_, h)| h).collect()
    }

    fn sort_key(&self, h: ProtocolHandle) -> (ProtocolId, ComponentId) {
        self.registrations
            .get(&h)
            .map_or((ProtocolId(0), ComponentId(0)), |r| {
                (r.protocol_id, r.component_id)
            })
    }

    /// The client that callbacks "to the owner of `id`" go to (spec §3.3).
    fn owner_of(&self, id: InterfaceId) -> Option<ProtocolHandle> {
        self.interfaces.get(&id).and_then(Owner::primary)
    }

    /// Invokes one callback on `to` and queues whatever it asked for. Returns `None` if `to` is
    /// not registered.
    fn call<T>(
        &mut self,
        to: ProtocolHandle,
        now: Instant,
        f: impl FnOnce(&mut dyn RoutingProtocol, &mut Cx) -> T,
    ) -> Option<T> {
        let mut out = None;
        self.invoke(to, Cx::new(to, now), |p, cx| out = Some(f(p, cx)))?;
        out
    }

    /// Invokes one callback on `to` with `cx` and queues whatever it asked for. Returns
    /// `None` if `to` is not registered, else the answer it promised for later, if it tried.
    fn invoke(
        &mut self,
        to: ProtocolHandle,
        mut cx: Cx,
        f: impl FnOnce(&mut dyn RoutingProtocol, &mut Cx),
    ) -> Option<Option<protocol::Promise>> {
        let reg = self.registrations.get_mut(&to)?;
        let igmp = reg.protocol_id == ProtocolId::IGMP;
        f(reg.protocol.as_mut(), &mut cx);
        let (requests, later) = cx.into_parts();
        for request in requests {
            let refused = igmp && self.igmp_disabled_for(&request);
            self.queue.push_back(Queued {
                from: to,
                request,
                refused,
            });
        }
        Some(later)
    }

    fn igmp_disabled_for(&self, request: &Request) -> bool {
        match request {
            Request::AddGroupMembership { if_id, .. }
            | Request::DeleteGroupMembership { if_id, .. } => {
                self.interfaces.get(if_id).is_some_and(|o| o.igmp_disabled)
            }
            _ => false,
        }
    }

    /// Runs queued requests in order until none are left, reporting each result to its client.
    /// Called at the end of every public entry point, so requests never run re-entrantly
    /// (spec §10).
    fn run_queued(&mut self, now: Instant) {
        while let Some(q) = self.queue.pop_front() {
            let result = if q.refused {
                Err(MgmError::CanNotComplete)
            } else {
                self.execute(q.from, &q.request, now)
            };
            self.call(q.from, now, |p, cx| p.request_done(cx, &q.request, result));
        }
    }

    fn execute(
        &mut self,
        from: ProtocolHandle,
        request: &Request,
        now: Instant,
    ) -> Result<(), MgmError> {
        match *request {
            Request::TakeInterfaceOwnership(id) => self.take_ownership(from, id, now),
            Request::ReleaseInterfaceOwnership(id) => self.release_ownership(from, id, now),
            Request::AddGroupMembership { sg, if_id, flags } => {
                self.add_membership(from, sg, if_id, flags, now)
            }
            Request::DeleteGroupMembership { sg, if_id, flags } => {
                self.delete_membership(from, sg, if_id, flags, now)
            }
            Request::SetMfe {
                source,
                group,
                upstream,
            } => self.set_mfe(from, source, group, upstream),
        }
    }
}
