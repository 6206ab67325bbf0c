//! Test harness: an [`Mgm`] with a simulated clock, recording fake protocols, and a model of the
//! data-plane map that every polled [`MapOp`] is applied to.
//!
//! Time moves only through [`Harness::advance`]. Fakes record every callback, in order, into one
//! shared log, and can be scripted to answer RPF and creation alerts or to queue requests.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::core::Instant;
use crate::core::{
    ComponentId, Config, Cx, DataPlaneEntry, InterfaceId, MapOp, Mgm, MgmError, MgmIfEntry, NoWait,
    ProtocolHandle, ProtocolId, Request, Route, RouteInfo, RoutingProtocol, SourceGroupEntry,
    MGM_EXCLUDE_STATE_FLAG, MGM_FORWARD_STATE_FLAG, MGM_JOIN_STATE_FLAG,
};
use crate::igmp::{codec::IgmpMessage, querier};
use crate::protocols::igmp::Igmp;

pub const ETH1: InterfaceId = InterfaceId::new(1);
pub const ETH2: InterfaceId = InterfaceId::new(2);
pub const ETH3: InterfaceId = InterfaceId::new(3);
pub const ETH4: InterfaceId = InterfaceId::new(4);
/// Two peers of one point-to-multipoint interface (spec §0).
pub const NBMA_A: InterfaceId = InterfaceId::with_next_hop(9, Ipv4Addr::new(172, 16, 0, 1));
pub const NBMA_B: InterfaceId = InterfaceId::with_next_hop(9, Ipv4Addr::new(172, 16, 0, 2));

pub const G1: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);
pub const G2: Ipv4Addr = Ipv4Addr::new(239, 2, 2, 2);
/// Routed via ETH1 (10.1.0.0/16, upstream 10.1.0.254).
pub const S1: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 1);
/// Routed via ETH2 (10.2.0.0/16, upstream 10.2.0.254).
pub const S2: Ipv4Addr = Ipv4Addr::new(10, 2, 2, 2);
/// No route.
pub const S_NOROUTE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const UP1: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 254);
pub const UP2: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 254);

pub const PIM: ProtocolId = ProtocolId(103);
pub const DVMRP: ProtocolId = ProtocolId(104);
pub const IGMP: ProtocolId = ProtocolId::IGMP;

pub const JOIN: u32 = MGM_JOIN_STATE_FLAG;
pub const FORWARD: u32 = MGM_FORWARD_STATE_FLAG;
pub const EXCLUDE: u32 = MGM_EXCLUDE_STATE_FLAG;

pub fn sg(s: Ipv4Addr, g: Ipv4Addr) -> SourceGroupEntry {
    SourceGroupEntry::sg(s, g)
}

pub fn star(g: Ipv4Addr) -> SourceGroupEntry {
    SourceGroupEntry::star_g(g)
}

pub fn star_star() -> SourceGroupEntry {
    SourceGroupEntry::star_star()
}

pub fn set(ids: &[InterfaceId]) -> BTreeSet<InterfaceId> {
    ids.iter().copied().collect()
}

/// One callback as a fake saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cb {
    Rpf {
        sg: SourceGroupEntry,
        iif: InterfaceId,
        upstream: Ipv4Addr,
        hdr_len: usize,
        route: RouteInfo,
    },
    CreationAlert {
        sg: SourceGroupEntry,
        iif: InterfaceId,
        oifs: Vec<MgmIfEntry>,
    },
    PruneAlert {
        sg: SourceGroupEntry,
        if_id: InterfaceId,
        member_delete: bool,
        timeout_s: u32,
    },
    JoinAlert {
        sg: SourceGroupEntry,
        member_update: bool,
    },
    WrongIf {
        source: Ipv4Addr,
        group: Ipv4Addr,
        if_id: InterfaceId,
        hdr_len: usize,
    },
    LocalJoin {
        sg: SourceGroupEntry,
        if_id: InterfaceId,
    },
    LocalLeave {
        sg: SourceGroupEntry,
        if_id: InterfaceId,
    },
    DisableIgmp(InterfaceId),
    EnableIgmp(InterfaceId),
    RequestDone {
        request: Request,
        result: Result<(), MgmError>,
    },
    AnswerMissed(u64),
}

/// A callback and the name of the fake that received it.
pub type Call = (&'static str, Cb);

pub fn join_alert(to: &'static str, sg: SourceGroupEntry, member_update: bool) -> Call {
    (to, Cb::JoinAlert { sg, member_update })
}

pub fn prune_alert(
    to: &'static str,
    sg: SourceGroupEntry,
    if_id: InterfaceId,
    member_delete: bool,
    timeout_s: u32,
) -> Call {
    (
        to,
        Cb::PruneAlert {
            sg,
            if_id,
            member_delete,
            timeout_s,
        },
    )
}

pub fn install(s: Ipv4Addr, g: Ipv4Addr, iif: InterfaceId, oifs: &[InterfaceId]) -> MapOp {
    MapOp::InstallMfe {
        source: s,
        group: g,
        iif,
        oifs: set(oifs),
    }
}

pub fn delete(s: Ipv4Addr, g: Ipv4Addr) -> MapOp {
    MapOp::DeleteMfe {
        source: s,
        group: g,
    }
}

/// What a fake answers and queues. Queued requests are handed out on the next callback of the
/// named kind (e.g. "enable_igmp"), once.
#[derive(Default)]
pub struct Script {
    pub rpf_answer: Option<(InterfaceId, Ipv4Addr)>,
    pub veto: BTreeSet<InterfaceId>,
    pub prune_timeout: Option<u32>,
    pub queue_on: BTreeMap<&'static str, Vec<Request>>,
    /// Callback kinds ("rpf", "creation_alert", "prune_alert") the fake answers later, within
    /// [`ANSWER_WITHIN`]: its scripted answer then applies when [`Harness::answer`] hands the
    /// answer back.
    pub later: BTreeSet<&'static str>,
    /// Tickets of the answers MGM waits for, in promise order.
    pub promised: Vec<u64>,
    /// Why MGM did not wait, for each promise it turned down.
    pub not_waited: Vec<NoWait>,
    next_ticket: u64,
}

/// How long a fake that answers later asks MGM to wait.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(5);

struct Fake {
    name: &'static str,
    log: Arc<Mutex<Vec<Call>>>,
    script: Arc<Mutex<Script>>,
}

impl Fake {
    /// Whether this callback's answer comes later: not when it resumes with one (then it is
    /// not recorded again), nor when MGM does not wait.
    fn later(&self, cx: &mut Cx, kind: &'static str, cb: Cb) -> bool {
        if cx.take_answer().is_some() {
            return false;
        }
        self.record(cx, kind, cb);
        let mut script = self.script.lock().unwrap();
        if !script.later.contains(kind) {
            return false;
        }
        script.next_ticket += 1;
        let ticket = script.next_ticket;
        match cx.answer_later(ticket, ANSWER_WITHIN) {
            Ok(()) => script.promised.push(ticket),
            Err(why) => script.not_waited.push(why),
        }
        script.promised.last() == Some(&ticket)
    }

    fn record(&self, cx: &mut Cx, kind: &'static str, cb: Cb) {
        self.log.lock().unwrap().push((self.name, cb));
        let queued = self.script.lock().unwrap().queue_on.remove(kind);
        for r in queued.into_iter().flatten() {
            cx.queue(r);
        }
    }
}

impl RoutingProtocol for Fake {
    fn rpf(
        &mut self,
        cx: &mut Cx,
        sg: SourceGroupEntry,
        iif: &mut InterfaceId,
        upstream: &mut Ipv4Addr,
        hdr: &[u8],
        route: &mut RouteInfo,
    ) {
        let cb = Cb::Rpf {
            sg,
            iif: *iif,
            upstream: *upstream,
            hdr_len: hdr.len(),
            route: *route,
        };
        if self.later(cx, "rpf", cb) {
            return;
        }
        if let Some((i, u)) = self.script.lock().unwrap().rpf_answer {
            *iif = i;
            *upstream = u;
        }
    }

    fn creation_alert(
        &mut self,
        cx: &mut Cx,
        sg: SourceGroupEntry,
        iif: InterfaceId,
        oifs: &mut [MgmIfEntry],
    ) {
        let cb = Cb::CreationAlert {
            sg,
            iif,
            oifs: oifs.to_vec(),
        };
        if self.later(cx, "creation_alert", cb) {
            return;
        }
        let script = self.script.lock().unwrap();
        for e in oifs.iter_mut() {
            if script.veto.contains(&e.if_id) {
                e.enabled = false;
            }
        }
    }

    fn prune_alert(
        &mut self,
        cx: &mut Cx,
        sg: SourceGroupEntry,
        if_id: InterfaceId,
        member_delete: bool,
        timeout_s: &mut u32,
    ) {
        let cb = Cb::PruneAlert {
            sg,
            if_id,
            member_delete,
            timeout_s: *timeout_s,
        };
        if self.later(cx, "prune_alert", cb) {
            return;
        }
        if let Some(t) = self.script.lock().unwrap().prune_timeout {
            *timeout_s = t;
        }
    }

    fn join_alert(&mut self, cx: &mut Cx, sg: SourceGroupEntry, member_update: bool) {
        self.record(cx, "join_alert", Cb::JoinAlert { sg, member_update });
    }

    fn wrong_if(
        &mut self,
        cx: &mut Cx,
        source: Ipv4Addr,
        group: Ipv4Addr,
        if_id: InterfaceId,
        hdr: &[u8],
    ) {
        let cb = Cb::WrongIf {
            source,
            group,
            if_id,
            hdr_len: hdr.len(),
        };
        self.record(cx, "wrong_if", cb);
    }

    fn local_join(&mut self, cx: &mut Cx, sg: SourceGroupEntry, if_id: InterfaceId) {
        self.record(cx, "local_join", Cb::LocalJoin { sg, if_id });
    }

    fn local_leave(&mut self, cx: &mut Cx, sg: SourceGroupEntry, if_id: InterfaceId) {
        self.record(cx, "local_leave", Cb::LocalLeave { sg, if_id });
    }

    fn disable_igmp(&mut self, cx: &mut Cx, if_id: InterfaceId) {
        self.record(cx, "disable_igmp", Cb::DisableIgmp(if_id));
    }

    fn enable_igmp(&mut self, cx: &mut Cx, if_id: InterfaceId) {
        self.record(cx, "enable_igmp", Cb::EnableIgmp(if_id));
    }

    fn request_done(&mut self, cx: &mut Cx, request: &Request, result: Result<(), MgmError>) {
        let cb = Cb::RequestDone {
            request: request.clone(),
            result,
        };
        self.record(cx, "request_done", cb);
    }

    fn answer_missed(&mut self, cx: &mut Cx, ticket: u64) {
        self.record(cx, "answer_missed", Cb::AnswerMissed(ticket));
    }
}

pub type Table = BTreeMap<(Ipv4Addr, Ipv4Addr), (InterfaceId, BTreeSet<InterfaceId>)>;

/// Applies `op` to a model of the data-plane map.
pub fn apply(model: &mut Table, op: &MapOp) {
    match op {
        MapOp::InstallMfe {
            source,
            group,
            iif,
            oifs,
        } => {
            model.insert((*source, *group), (*iif, oifs.clone()));
        }
        MapOp::DeleteMfe { source, group } => {
            model.remove(&(*source, *group));
        }
    }
}

pub struct Harness {
    pub mgm: Mgm,
    pub now: Instant,
    log: Arc<Mutex<Vec<Call>>>,
    scripts: BTreeMap<&'static str, Arc<Mutex<Script>>>,
    /// The data-plane map after every op polled so far.
    pub map: Table,
}

impl Harness {
    /// Default config, routes 10.1/16 via ETH1 and 10.2/16 via ETH2, clock at 1000 s.
    pub fn new() -> Self {
        Self::with_config(Config::default())
    }

    pub fn with_config(config: Config) -> Self {
        let mut mgm = Mgm::new(config);
        let now = Instant::from_millis(1_000_000);
        for (net, if_id, upstream) in [
            (Ipv4Addr::new(10, 1, 0, 0), ETH1, UP1),
            (Ipv4Addr::new(10, 2, 0, 0), ETH2, UP2),
        ] {
            let route = Route {
                network: net,
                prefix_len: 16,
                if_id,
                upstream,
                protocol: 2,
                metric: 0,
            };
            mgm.add_route(route, now).unwrap();
        }
        Self {
            mgm,
            now,
            log: Arc::default(),
            scripts: BTreeMap::new(),
            map: Table::new(),
        }
    }

    pub fn try_register(
        &mut self,
        name: &'static str,
        protocol: ProtocolId,
        component: u32,
    ) -> Result<ProtocolHandle, MgmError> {
        let script = self.scripts.entry(name).or_default().clone();
        let fake = Fake {
            name,
            log: self.log.clone(),
            script,
        };
        self.mgm
            .register(Box::new(fake), protocol, ComponentId(component))
    }

    pub fn register(&mut self, name: &'static str, protocol: ProtocolId) -> ProtocolHandle {
        self.try_register(name, protocol, 1).unwrap()
    }

    pub fn script(&self, name: &'static str) -> MutexGuard<'_, Script> {
        self.scripts[name].lock().unwrap()
    }

    pub fn own(&mut self, h: ProtocolHandle, id: InterfaceId) {
        let now = self.now;
        self.mgm.take_interface_ownership(h, id, now).unwrap();
    }

    pub fn release(&mut self, h: ProtocolHandle, id: InterfaceId) -> Result<(), MgmError> {
        let now = self.now;
        self.mgm.release_interface_ownership(h, id, now)
    }

    pub fn add(
        &mut self,
        h: ProtocolHandle,
        e: SourceGroupEntry,
        id: InterfaceId,
        flags: u32,
    ) -> Result<(), MgmError> {
        let now = self.now;
        self.mgm.add_group_membership_entry(h, e, id, flags, now)
    }

    pub fn del(
        &mut self,
        h: ProtocolHandle,
        e: SourceGroupEntry,
        id: InterfaceId,
        flags: u32,
    ) -> Result<(), MgmError> {
        let now = self.now;
        self.mgm.delete_group_membership_entry(h, e, id, flags, now)
    }

    pub fn join(&mut self, h: ProtocolHandle, e: SourceGroupEntry, id: InterfaceId) {
        self.add(h, e, id, JOIN).unwrap();
    }

    pub fn leave(&mut self, h: ProtocolHandle, e: SourceGroupEntry, id: InterfaceId) {
        self.del(h, e, id, JOIN).unwrap();
    }

    /// A packet with no MFE arrives on `in_if` (a 20-byte header).
    pub fn packet(&mut self, s: Ipv4Addr, g: Ipv4Addr, in_if: InterfaceId) {
        let now = self.now;
        self.mgm
            .no_cache_upcall(s, g, in_if, &[0x45; 20], now)
            .unwrap();
    }

    /// `h` answers the callback it promised under `ticket`; its script says what the answer
    /// is.
    pub fn answer(&mut self, h: ProtocolHandle, ticket: u64) -> Result<(), MgmError> {
        let now = self.now;
        self.mgm.answer(h, ticket, Box::new(()), now)
    }

    /// The ticket of the last answer `name` promised.
    pub fn promised(&self, name: &'static str) -> u64 {
        *self.script(name).promised.last().expect("nothing promised")
    }

    pub fn wrong_if(&mut self, s: Ipv4Addr, g: Ipv4Addr, in_if: InterfaceId) {
        let now = self.now;
        self.mgm.wrong_if_upcall(s, g, in_if, &[0x45; 20], now);
    }

    pub fn reconcile(&mut self, entries: Vec<DataPlaneEntry>) {
        self.map = entries
            .iter()
            .map(|e| ((e.source, e.group), (e.iif, e.oifs.clone())))
            .collect();
        let now = self.now;
        self.mgm.reconcile(entries, now);
    }

    /// Registers the real IGMP module (protocol 10, component 0), not a fake: its callbacks
    /// are not logged; what it does shows in the other clients' callbacks and in the map.
    pub fn real_igmp(&mut self) -> Igmp {
        Igmp::register(&mut self.mgm).unwrap()
    }

    /// Starts the real IGMP on `id` (owning it, or co-owning beside a routing protocol).
    pub fn start_igmp(&mut self, igmp: &mut Igmp, id: InterfaceId) {
        let now = self.now;
        igmp.start(
            &mut self.mgm,
            id.ifindex,
            Ipv4Addr::new(192, 0, 2, 1),
            querier::Config::default(),
            now,
        )
        .unwrap();
    }

    /// A host on `id` sends an IGMPv2 report for `g`; IGMP's querier hears it and adds its
    /// membership.
    pub fn host_reports(&mut self, igmp: &mut Igmp, id: InterfaceId, g: Ipv4Addr) {
        let now = self.now;
        let report = IgmpMessage::V2Report { group: g };
        let host = querier::IpHeader::conforming(Ipv4Addr::new(192, 0, 2, 9));
        assert!(igmp
            .handle_message(id.ifindex, now, host, &report)
            .is_some());
        for applied in igmp.apply_memberships(&mut self.mgm, now) {
            assert_eq!(applied.result, Ok(()), "{applied:?}");
        }
    }

    /// Moves the clock forward and fires every timer that fell due on the way, at its deadline.
    pub fn advance(&mut self, secs: u64) {
        self.advance_by(Duration::from_secs(secs));
    }

    /// [`Harness::advance`] by any duration.
    pub fn advance_by(&mut self, d: Duration) {
        let target = self.now + d;
        while let Some(at) = self.mgm.poll_timeout().filter(|at| *at <= target) {
            self.now = self.now.max(at);
            self.mgm.handle_timeout(self.now);
        }
        self.now = target;
    }

    /// Callbacks recorded since the last call, in order.
    pub fn calls(&mut self) -> Vec<Call> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }

    /// Map ops emitted since the last call, in order; they are applied to [`Harness::map`].
    pub fn ops(&mut self) -> Vec<MapOp> {
        let mut out = Vec::new();
        while let Some(op) = self.mgm.poll_map_op() {
            apply(&mut self.map, &op);
            out.push(op);
        }
        out
    }

    /// Drains both logs and discards them: the "given" part of a test is done.
    pub fn settle(&mut self) {
        self.calls();
        self.ops();
    }

    /// Drains pending ops and checks the map model equals the core's table.
    pub fn assert_map_matches(&mut self) {
        self.ops();
        assert_eq!(self.map, self.mgm.forwarding_table());
    }
}
