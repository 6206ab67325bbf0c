//! The callback side of the MGM contract: the [`RoutingProtocol`] trait that every client
//! implements (spec §7), the [`Cx`] through which a callback queues MGM requests, and the
//! values callbacks exchange with MGM.
//!
//! Callbacks run synchronously inside the call that caused them, but they never call MGM
//! directly: requests queued on [`Cx`] run after the current operation finishes, so nothing
//! re-enters the core (spec §7, §10). A client that answers from elsewhere (an out-of-process
//! module) may instead say, through [`Cx::answer_later`], that a callback's out-parameters come
//! later: MGM parks the decision that needs them and goes on with other work (see
//! [`Mgm::answer`](super::Mgm::answer)). Nothing here performs I/O.

use std::any::Any;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::error::MgmError;
use super::time::Instant;
use super::types::{InterfaceId, ProtocolHandle, SourceGroupEntry};

/// The unicast route used for RPF: `route_protocol`, `route_net`, `route_mask` (spec §5.1).
/// All zero when there is no route (spec §5.2 step 1).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    /// The routing protocol that installed the route (`rtm_protocol` on Linux, spec §10).
    pub protocol: u32,
    /// The matched prefix.
    pub network: Ipv4Addr,
    /// The matched prefix's mask.
    pub mask: Ipv4Addr,
}

impl Default for RouteInfo {
    fn default() -> Self {
        Self {
            protocol: 0,
            network: Ipv4Addr::UNSPECIFIED,
            mask: Ipv4Addr::UNSPECIFIED,
        }
    }
}

/// `MGM_IF_ENTRY`: one outgoing interface offered to its owner in a creation alert (spec §5.2).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct MgmIfEntry {
    /// The outgoing interface.
    pub if_id: InterfaceId,
    /// `bIGMP`: IGMP is also enabled on this interface.
    pub igmp: bool,
    /// `bIsEnabled`: TRUE on input; the owner sets FALSE to veto forwarding there.
    pub enabled: bool,
}

/// An MGM request a callback queues on [`Cx`]. It runs with the queuing client's handle after
/// the current operation, and its result comes back through
/// [`RoutingProtocol::request_done`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `MgmTakeInterfaceOwnership` (spec §3.1).
    TakeInterfaceOwnership(InterfaceId),
    /// `MgmReleaseInterfaceOwnership` (spec §3.2).
    ReleaseInterfaceOwnership(InterfaceId),
    /// `MgmAddGroupMembershipEntry` (spec §4.2).
    AddGroupMembership {
        /// Source and group with their masks.
        sg: SourceGroupEntry,
        /// The interface with receivers.
        if_id: InterfaceId,
        /// `MGM_JOIN_STATE_FLAG` and/or `MGM_FORWARD_STATE_FLAG`.
        flags: u32,
    },
    /// `MgmDeleteGroupMembershipEntry` (spec §4.3).
    DeleteGroupMembership {
        /// Source and group with their masks.
        sg: SourceGroupEntry,
        /// The interface that lost its receivers.
        if_id: InterfaceId,
        /// `MGM_JOIN_STATE_FLAG` and/or `MGM_FORWARD_STATE_FLAG`.
        flags: u32,
    },
    /// `MgmSetMfe` (spec §5.7).
    SetMfe {
        /// The MFE's source.
        source: Ipv4Addr,
        /// The MFE's group.
        group: Ipv4Addr,
        /// The new upstream neighbour.
        upstream: Ipv4Addr,
    },
}

/// "add (*, 239.1.1.1) on ifindex 3", for the log.
impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::TakeInterfaceOwnership(i) => write!(f, "take ifindex {}", i.ifindex),
            Request::ReleaseInterfaceOwnership(i) => {
                write!(f, "release ifindex {}", i.ifindex)
            }
            Request::AddGroupMembership { sg, if_id, .. } => {
                write!(f, "add {sg} on ifindex {}", if_id.ifindex)
            }
            Request::DeleteGroupMembership { sg, if_id, .. } => {
                write!(f, "delete {sg} on ifindex {}", if_id.ifindex)
            }
            Request::SetMfe {
                source,
                group,
                upstream,
            } => write!(f, "set ({source}, {group}) upstream {upstream}"),
        }
    }
}

/// Why MGM does not wait for a callback's answer: its proposal stands at once.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum NoWait {
    /// The callback has no out-parameters, or it resumes a decision already.
    NothingToWait,
    /// The client missed a deadline and has not answered anything since.
    Unresponsive,
    /// The client has [`Config::max_waiting`](super::Config) decisions waiting already.
    Full,
}

/// A promise to answer later: its ticket and time limit, or why MGM turned it down.
pub(crate) type Promise = Result<(u64, Duration), NoWait>;

/// The answer of a client that answered later, handed back by
/// [`Mgm::answer`](super::Mgm::answer) to the client's own callback; MGM never looks inside.
pub type Answer = Box<dyn Any + Send>;

/// The context handed to every callback. It tells the callee who it is and when the callback
/// happens, and collects the requests it wants MGM to run afterwards (spec §10).
pub struct Cx {
    handle: ProtocolHandle,
    now: Instant,
    requests: Vec<Request>,
    /// Whether this callback may answer later.
    may_wait: Result<(), NoWait>,
    /// The ticket and time limit of an answer promised for later, or why MGM turned the
    /// promise down.
    later: Option<Promise>,
    /// The answer this callback resumes a decision with.
    answer: Option<Answer>,
}

impl Cx {
    pub(crate) fn new(handle: ProtocolHandle, now: Instant) -> Self {
        Self {
            handle,
            now,
            requests: Vec::new(),
            may_wait: Err(NoWait::NothingToWait),
            later: None,
            answer: None,
        }
    }

    /// A context for a callback whose out-parameters MGM can wait for (`may_wait`), or that
    /// resumes a decision with `answer`.
    pub(crate) fn asking(
        handle: ProtocolHandle,
        now: Instant,
        may_wait: Result<(), NoWait>,
        answer: Option<Answer>,
    ) -> Self {
        Self {
            may_wait,
            answer,
            ..Self::new(handle, now)
        }
    }

    /// The callee's own registration handle.
    pub fn handle(&self) -> ProtocolHandle {
        self.handle
    }

    /// The time of the operation that invoked the callback.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Queues `request`; it runs after the current MGM operation, in queuing order.
    pub fn queue(&mut self, request: Request) {
        self.requests.push(request);
    }

    /// The callee answers this callback later, as [`Mgm::answer`](super::Mgm::answer) with
    /// `ticket`, within `within`; until then the out-parameters mean nothing, and the
    /// decision that needs them waits while MGM goes on. Past `within`, MGM's proposal stands,
    /// as with the no-op default, and the callee's later callbacks are not waited for until it
    /// answers again. `Err` says why MGM does not wait: then the out-parameters count now.
    pub fn answer_later(&mut self, ticket: u64, within: Duration) -> Result<(), NoWait> {
        let promise = match self.may_wait {
            Ok(()) if within.is_zero() => Err(NoWait::NothingToWait),
            Ok(()) => Ok((ticket, within)),
            Err(why) => Err(why),
        };
        self.later = Some(promise);
        promise.map(|_| ())
    }

    /// The answer this callback resumes a decision with: the callee sets the out-parameters
    /// from it, as it would have at once, and asks nothing.
    pub fn take_answer(&mut self) -> Option<Answer> {
        self.answer.take()
    }

    pub(crate) fn into_parts(self) -> (Vec<Request>, Option<Promise>) {
        (self.requests, self.later)
    }
}

/// A multicast routing protocol, or IGMP, as an MGM client: one method per callback of spec §7.
///
/// Every method has a no-op default, which leaves every out-parameter as it was on input
/// (spec §2.1). MGM ignores return values (spec §7), so there are none. Methods run inside the
/// MGM call that caused them and must return promptly; `rpf`, `creation_alert` and the prune
/// alert of a negative MFE may promise their out-parameters for later ([`Cx::answer_later`]).
pub trait RoutingProtocol: Send {
    /// `PMGM_RPF_CALLBACK`: a packet for (S,G) has no MFE; confirm or rewrite the expected
    /// incoming interface, upstream neighbour and route (spec §5.2 step 2). `hdr` holds the IP
    /// header and the first payload bytes.
    fn rpf(
        &mut self,
        _cx: &mut Cx,
        _sg: SourceGroupEntry,
        _iif: &mut InterfaceId,
        _upstream: &mut Ipv4Addr,
        _hdr: &[u8],
        _route: &mut RouteInfo,
    ) {
    }

    /// `PMGM_CREATION_ALERT_CALLBACK`: a new MFE will forward on `oifs`, which are this client's
    /// interfaces only; set `enabled = false` to veto one (spec §5.2 step 4).
    fn creation_alert(
        &mut self,
        _cx: &mut Cx,
        _sg: SourceGroupEntry,
        _iif: InterfaceId,
        _oifs: &mut [MgmIfEntry],
    ) {
    }

    /// `PMGM_PRUNE_ALERT_CALLBACK`. With `member_delete` the last receivers for `sg` went away
    /// (spec §4.6) and `timeout_s` is ignored; without it, the MFE (S,G) turned negative and
    /// `timeout_s` is its new lifetime from now (spec §4.7).
    fn prune_alert(
        &mut self,
        _cx: &mut Cx,
        _sg: SourceGroupEntry,
        _if_id: InterfaceId,
        _member_delete: bool,
        _timeout_s: &mut u32,
    ) {
    }

    /// `PMGM_JOIN_ALERT_CALLBACK`. With `member_update` new receivers for `sg` appeared
    /// (spec §4.5); without it, a negative MFE gained an OIF (spec §4.7).
    fn join_alert(&mut self, _cx: &mut Cx, _sg: SourceGroupEntry, _member_update: bool) {}

    /// `PMGM_WRONG_IF_CALLBACK`: a packet for an existing MFE arrived on `if_id`, which is not
    /// its incoming interface (spec §5.5).
    fn wrong_if(
        &mut self,
        _cx: &mut Cx,
        _source: Ipv4Addr,
        _group: Ipv4Addr,
        _if_id: InterfaceId,
        _hdr: &[u8],
    ) {
    }

    /// `PMGM_LOCAL_JOIN_CALLBACK`: IGMP saw receivers on an interface this client owns
    /// (spec §4.4).
    fn local_join(&mut self, _cx: &mut Cx, _sg: SourceGroupEntry, _if_id: InterfaceId) {}

    /// `PMGM_LOCAL_LEAVE_CALLBACK`: IGMP's receivers on an interface this client owns left
    /// (spec §4.4).
    fn local_leave(&mut self, _cx: &mut Cx, _sg: SourceGroupEntry, _if_id: InterfaceId) {}

    /// `PMGM_DISABLE_IGMP_CALLBACK`, IGMP only: stop adding or deleting memberships on `if_id`
    /// until [`RoutingProtocol::enable_igmp`] (spec §3.1).
    fn disable_igmp(&mut self, _cx: &mut Cx, _if_id: InterfaceId) {}

    /// `PMGM_ENABLE_IGMP_CALLBACK`, IGMP only: re-add every membership on `if_id` by queuing
    /// requests on `cx` (spec §3.1).
    fn enable_igmp(&mut self, _cx: &mut Cx, _if_id: InterfaceId) {}

    /// Not a Windows callback: reports the result of a request queued on [`Cx`], because a
    /// deferred request cannot return its code to the caller (spec §10).
    fn request_done(&mut self, _cx: &mut Cx, _request: &Request, _result: Result<(), MgmError>) {}

    /// Not a Windows callback: the answer promised under `ticket` ([`Cx::answer_later`]) did
    /// not come in time. MGM's proposal stood, and this client's callbacks are not waited for
    /// until it answers again.
    fn answer_missed(&mut self, _cx: &mut Cx, _ticket: u64) {}
}
