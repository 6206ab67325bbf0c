//! What `mgm show` shows: plain values the daemon fills from its state at the moment of the
//! request, serialised as the `--json` documents and rendered as the tables. These types are
//! the schema of the documents (`docs/control-schema.json` is generated from them).
//!
//! Times are whole seconds; a timer that is not running is `null`. Addresses are dotted quads,
//! `*` for a wildcard source.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One interface mgm was told to manage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    pub name: String,
    /// The kernel's index; `null` while the interface does not exist.
    pub ifindex: Option<u32>,
    /// `upstream`, `downstream` or `external`.
    pub role: String,
    /// The protocols that own it, by name (a routing protocol first, then IGMP).
    pub owners: Vec<String>,
    /// IGMP's querier there, if IGMP runs there.
    pub igmp: Option<Querier>,
    /// Copies sent out of it, and their bytes (the data plane's counters).
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

/// IGMP on one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Querier {
    /// The version of the queries sent there: 2 or 3.
    pub version: u8,
    /// Whether this router is the querier there (RFC 3376 §6.6.2).
    pub querier: bool,
    /// The querier's address: this router's, or the other router's that won the election.
    pub querier_address: String,
    /// Groups with members there.
    pub groups: usize,
}

/// One group with members on one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub interface: String,
    pub group: String,
    /// `igmp` (hosts reported it) or `static` (`mgm join` or a static route).
    pub origin: String,
    /// `include` or `exclude` (RFC 3376 §6.2.1); `exclude` for a static (*,G).
    pub filter_mode: String,
    /// The group's compatibility mode, 1 to 3 (RFC 3376 §7.3.2); `null` for a static one.
    pub version: Option<u8>,
    /// The source records: in INCLUDE mode the sources forwarded, in EXCLUDE mode those
    /// blocked ones whose timer is 0 have `expires_s` `null`.
    pub sources: Vec<Source>,
    /// The host that reported last; `null` for a static group.
    pub reporter: Option<String>,
    /// Seconds until the group goes without another report; `null` if it does not expire.
    pub expires_s: Option<u64>,
}

/// One source record of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub address: String,
    pub expires_s: Option<u64>,
}

/// One forwarding entry (MFE).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mfe {
    /// The source, `*` for a wildcard.
    pub source: String,
    pub group: String,
    /// The incoming interface.
    pub iif: String,
    /// The upstream neighbour, 0.0.0.0 when none is known.
    pub upstream: String,
    /// The outgoing interfaces, each with its own counters; empty for a negative entry.
    pub oifs: Vec<Oif>,
    /// Packets and bytes that arrived on the incoming interface.
    pub packets: u64,
    pub bytes: u64,
    /// Packets of the flow that arrived on another interface.
    pub wrong_if: u64,
    /// Copies sent, over every outgoing interface.
    pub total_out_packets: u64,
    /// Packets dropped: no outgoing interface, TTL expired, or no outgoing set.
    pub discards: u64,
    pub uptime_s: u64,
    /// Seconds until it is resolved again (refreshed if it carried traffic, else deleted).
    pub expires_s: u64,
}

/// One outgoing interface of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Oif {
    pub interface: String,
    /// Copies sent there for this entry, and their bytes.
    pub packets: u64,
    pub bytes: u64,
}

/// One routing protocol registered with MGM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Protocol {
    /// `igmp`, `igmp-proxy`, `static`, or `module` for one connected over the module socket.
    pub name: String,
    pub protocol_id: u32,
    pub component_id: u32,
    /// The interfaces it owns (or co-owns, for IGMP).
    pub interfaces: Vec<String>,
    /// What it holds: static routes and joins for `static`, the module connection for a
    /// module.
    pub detail: Vec<String>,
}

/// The counters: the daemon's own, and the data plane's per interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    pub uptime_s: u64,
    pub igmp_messages: u64,
    /// IGMP messages the daemon rejected after decoding.
    pub igmp_rejected: u64,
    pub no_cache_upcalls: u64,
    pub wrong_if_upcalls: u64,
    /// Ring-buffer records of an unknown kind.
    pub unknown_records: u64,
    /// Map writes that failed.
    pub map_errors: u64,
    /// No-entry upcalls MGM could not resolve (no route, no owner of the interface).
    pub unresolved_upcalls: u64,
    /// Membership changes IGMP decided that MGM refused.
    pub memberships_refused: u64,
    /// IGMP queries the query socket did not send.
    pub queries_not_sent: u64,
    /// Routing-table routes the RPF table refused.
    pub rpf_routes_refused: u64,
    /// Ring-buffer events dropped because their interface's queue to the core was full.
    pub events_dropped_queue_full: u64,
    /// Negative forwarding entries evicted to stay within the negative-entry budget.
    pub negative_evictions: u64,
    /// Times the event loop ran more than a second late (stopped or starved), each of which
    /// postponed IGMP's timers.
    pub loop_stalls: u64,
    /// Module connections disconnected because they did not read their replies.
    pub module_out_full: u64,
    /// Module replies over the size limit, answered with an error instead.
    pub module_replies_too_large: u64,
    /// Module answers no decision waited for: late, repeated, or to no callback.
    pub module_answers_dropped: u64,
    /// Module callbacks MGM did not wait for, as too many of the module's decisions were
    /// waiting already: MGM's proposal stood.
    pub module_decisions_not_waited: u64,
    /// Proxy reports dropped because the upstream worker fell behind.
    pub upstream_reports_dropped: u64,
    /// The upstream worker's system calls that failed.
    pub upstream_failures: u64,
    /// Times the proxy's host side started on its upstream after waiting for it (missing,
    /// down or without an IPv4 address: created again, re-dialled, or later than mgm).
    pub upstream_relinks: u64,
    /// Managed interfaces that appeared but whose XDP attach failed (the log names each).
    pub attach_failures: u64,
    pub mfes: usize,
    pub interfaces: Vec<InterfaceStats>,
}

/// Declares [`InterfaceStats`] and its constructor from one list: each counter shown, with
/// the field of `mgm_common::counters::IfStats` it is read from. The data plane's struct is
/// the one list of what exists; this one says which of them `mgm show stats` shows, and under
/// which name, so a counter renamed or removed there fails to build here. The IGMP querier's
/// counters of the interface follow.
macro_rules! interface_stats {
    ($($shown:ident from $field:ident),+ $(,)?) => {
        /// The data plane's counters of one interface, and what its IGMP querier set aside or
        /// flagged (0 where IGMP does not run).
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct InterfaceStats {
            pub interface: String,
            $(pub $shown: u64,)+
            /// IGMP queries from outside the interface's subnets: kept out of the querier
            /// election.
            pub igmp_foreign_queries: u64,
            /// IGMP reports and leaves without the Router Alert option.
            pub igmp_no_router_alert: u64,
            /// IGMP reports and leaves with a TTL other than 1.
            pub igmp_ttl_not_1: u64,
            /// IGMP reports and leaves dropped for either (`--igmp-strict-reports`).
            pub igmp_nonconforming_dropped: u64,
        }

        impl InterfaceStats {
            /// The named interface's counters as the data plane and the querier keep them.
            pub fn new(
                interface: String,
                s: &mgm_common::counters::IfStats,
                igmp: &crate::igmp::querier::Counters,
            ) -> Self {
                InterfaceStats {
                    interface,
                    $($shown: s.$field,)+
                    igmp_foreign_queries: igmp.foreign_queries,
                    igmp_no_router_alert: igmp.reports_without_router_alert,
                    igmp_ttl_not_1: igmp.reports_ttl_not_1,
                    igmp_nonconforming_dropped: igmp.nonconforming_dropped,
                }
            }
        }
    };
}

interface_stats! {
    igmp_query from igmp_query,
    igmp_v1_report from igmp_v1_report,
    igmp_v2_report from igmp_v2_report,
    igmp_v2_leave from igmp_v2_leave,
    igmp_v3_report from igmp_v3_report,
    igmp_other from igmp_other,
    malformed from malformed,
    truncated from truncated,
    ring_full from ring_full,
    no_entry from no_entry,
    tx_packets from tx_pkts,
    tx_bytes from tx_bytes,
    ttl_too_low from ttl_too_low,
    vlan_tagged from vlan_tagged,
}
