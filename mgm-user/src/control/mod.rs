//! The control socket: how an operator asks a running daemon what it knows (`mgm show`) and
//! changes it at run time (`mgm route`, `mgm join`, `mgm leave`, `mgm reload`).
//!
//! Separate from the module socket: a module takes interfaces and decides forwarding over a
//! long session; an operator's command is one request and one answer. Its protocol is one JSON
//! object per line ([`proto`]; `docs/control-schema.json` is its schema): the client sends a
//! [`proto::Request`], the daemon answers one [`proto::Answer`] and closes. Who may connect is
//! decided as for the module socket ([`crate::protocols::remote::access`]).
//!
//! [`server`] is the I/O edge; [`answer`] turns a request into its answer over the daemon's
//! state, with no I/O of its own (data-plane counters come through a function the daemon
//! passes); [`render`] draws the tables.

mod changes;
pub use changes::Followed;
pub mod client;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fixture;
pub mod proto;
pub mod render;
pub mod server;
mod snapshot;
pub mod view;

use crate::{
    core::{Instant, Mgm, ProtocolHandle},
    managed::Names,
    protocols::{igmp::Igmp, static_routes::StaticTable},
};
use proto::{Answer, Request};

/// The default path of the control socket.
pub const DEFAULT_SOCKET: &str = "/run/mgm/control.sock";

/// The interfaces mgm was told to manage, by role.
#[derive(Debug, Clone, Default)]
pub struct Roles {
    pub upstream: Option<String>,
    pub downstream: Vec<String>,
    pub external: Vec<String>,
}

impl Roles {
    /// Every named interface with its role, upstream first.
    fn all(&self) -> Vec<(&str, &'static str)> {
        self.upstream
            .iter()
            .map(|n| (n.as_str(), "upstream"))
            .chain(self.downstream.iter().map(|n| (n.as_str(), "downstream")))
            .chain(self.external.iter().map(|n| (n.as_str(), "external")))
            .collect()
    }
}

/// The daemon's own counters, besides the data plane's.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub igmp: u64,
    pub igmp_rejected: u64,
    pub no_cache: u64,
    pub wrong_if: u64,
    pub unknown: u64,
    pub map_errors: u64,
    pub unresolved: u64,
    pub memberships_refused: u64,
    pub queries_not_sent: u64,
    pub rpf_routes_refused: u64,
    pub queue_full: u64,
    pub negative_evictions: u64,
    pub stalls: u64,
    pub module_out_full: u64,
    pub module_replies_too_large: u64,
    pub module_answers_dropped: u64,
    pub module_decisions_not_waited: u64,
    pub upstream_reports_dropped: u64,
    pub upstream_failures: u64,
    pub upstream_relinks: u64,
    pub attach_failures: u64,
    /// Each IGMP querier's counters, by ifindex.
    pub queriers: Vec<(u32, crate::igmp::querier::Counters)>,
}

/// The daemon's counters as it last published them, for readers on other threads (the
/// metrics endpoint): a copy behind a lock held only to copy, so no reader holds up the loop.
pub type SharedCounters = std::sync::Arc<std::sync::Mutex<Counters>>;

/// Everything a request reads or changes, lent by the daemon for one request.
pub struct Daemon<'a> {
    pub now: Instant,
    pub mgm: &'a mut Mgm,
    pub igmp: &'a Igmp,
    pub names: &'a Names,
    pub roles: &'a Roles,
    pub statics: &'a StaticTable,
    /// The static-routes module's registration.
    pub static_handle: Option<ProtocolHandle>,
    /// Connected modules: (connection number, protocol id).
    pub modules: Vec<(u64, u32)>,
    pub counters: Counters,
    /// The data plane's counters of an interface, by ifindex.
    pub if_stats: &'a dyn Fn(u32) -> Option<mgm_common::counters::IfStats>,
}

/// Runs `request` on the daemon's state. `reload` is the daemon's to answer: it goes to the
/// same place SIGHUP does.
pub fn answer(request: Request, d: &mut Daemon<'_>) -> Answer {
    let result = match request {
        Request::Show { view, after, limit } => {
            snapshot::document(view, after.as_deref(), limit, d).map(|(document, next)| Answer {
                next,
                ..Answer::document(document)
            })
        }
        Request::RouteAdd { route } => changes::route_add(&route, d),
        Request::RouteDel { route } => changes::route_del(&route, d),
        Request::Join {
            interface,
            group,
            source,
        } => changes::join(&interface, group, source, d),
        Request::Leave {
            interface,
            group,
            source,
        } => changes::leave(&interface, group, source, d),
        Request::Reload {} => Err("reload is handled by the daemon, not here".to_owned()),
    };
    result.unwrap_or_else(Answer::error)
}

/// A reload's part: the static routes become what the configuration says (`added` and
/// `removed` from those held now, run-time ones included) and the static joins go, each
/// through the steps `mgm route` and `mgm leave` take.
pub fn follow_config(
    added: &[crate::protocols::static_routes::StaticRoute],
    removed: &[crate::protocols::static_routes::StaticRoute],
    d: &mut Daemon<'_>,
) -> Followed {
    changes::follow_config(added, removed, d)
}

#[cfg(test)]
mod tests;
