//! The Prometheus text exposition of the data plane's counters (`mgm run --metrics ADDR:PORT`).
//! Each scrape reads the pinned maps, like `mgm show`, on a thread of its own: a slow or
//! hostile scraper never holds up IGMP, upcalls or timers. The daemon's own counters (what
//! `mgm show stats` lists under `daemon`) come from the copy the daemon publishes each loop
//! turn.
//!
//! Names follow Prometheus' conventions: `mgm_` prefix, `_total` on counters, bytes as the
//! unit. Labels are bounded: per interface (the managed ones), and per forwarding entry only
//! for the first [`MAX_ENTRY_SERIES`] entries by (group, source); how many were left out is a
//! metric of its own. Those entries also get series per outgoing interface (`oif`), one for
//! each interface the entry has forwarded to, so at most [`MAX_ENTRY_SERIES`] times the
//! managed interfaces.

use std::{fmt::Write, net::SocketAddr, path::PathBuf};

use anyhow::Context;
use log::{info, warn};
use mgm_common::counters::{EntryStats, IfStats, OifStats};

use super::show::{addr, entry_state, ifname};
use crate::{
    control::{Counters, SharedCounters},
    dataplane::inspect::{read_pinned, PinnedState},
    igmp::querier,
};

/// At most this many forwarding entries get series of their own.
pub const MAX_ENTRY_SERIES: usize = 1000;

/// One metric family: its name, help text, type, and how to read it from a counter struct.
struct Family<T> {
    name: &'static str,
    help: &'static str,
    value: fn(&T) -> u64,
}

const INTERFACE_COUNTERS: [Family<IfStats>; 15] = [
    family(
        "mgm_interface_igmp_queries_received_total",
        "IGMP membership queries received (any version).",
        |s| s.igmp_query,
    ),
    family(
        "mgm_interface_igmp_v1_reports_received_total",
        "IGMPv1 membership reports received.",
        |s| s.igmp_v1_report,
    ),
    family(
        "mgm_interface_igmp_v2_reports_received_total",
        "IGMPv2 membership reports received.",
        |s| s.igmp_v2_report,
    ),
    family(
        "mgm_interface_igmp_v2_leaves_received_total",
        "IGMPv2 leave-group messages received.",
        |s| s.igmp_v2_leave,
    ),
    family(
        "mgm_interface_igmp_v3_reports_received_total",
        "IGMPv3 membership reports received.",
        |s| s.igmp_v3_report,
    ),
    family(
        "mgm_interface_igmp_other_received_total",
        "IGMP messages of another type, passed to the host.",
        |s| s.igmp_other,
    ),
    family(
        "mgm_interface_malformed_frames_total",
        "Frames the XDP program could not parse, passed to the host.",
        |s| s.malformed,
    ),
    family(
        "mgm_interface_igmp_truncated_total",
        "IGMP messages longer than an event holds, decoded up to the bound.",
        |s| s.truncated,
    ),
    family(
        "mgm_interface_ring_full_drops_total",
        "Events lost because the ring buffer to the daemon was full.",
        |s| s.ring_full,
    ),
    family(
        "mgm_interface_no_entry_packets_total",
        "Data packets that matched no forwarding entry.",
        |s| s.no_entry,
    ),
    family(
        "mgm_interface_transmitted_packets_total",
        "Copies sent out of the interface.",
        |s| s.tx_pkts,
    ),
    family(
        "mgm_interface_transmitted_bytes_total",
        "Bytes of the copies sent out of the interface.",
        |s| s.tx_bytes,
    ),
    family(
        "mgm_interface_ttl_too_low_total",
        "Copies not sent because their TTL was below the interface's threshold.",
        |s| s.ttl_too_low,
    ),
    family(
        "mgm_interface_igmp_limited_total",
        "IGMP messages over the interface's admission rate, passed to the host only.",
        |s| s.igmp_limited,
    ),
    family(
        "mgm_interface_upcall_limited_total",
        "Packets of unknown flows over the interface's upcall budget, dropped.",
        |s| s.upcall_limited,
    ),
];

const ENTRY_COUNTERS: [Family<EntryStats>; 7] = [
    family(
        "mgm_entry_packets_total",
        "Packets that arrived on the entry's incoming interface.",
        |s| s.pkts,
    ),
    family("mgm_entry_bytes_total", "Bytes of those packets.", |s| {
        s.bytes
    }),
    family(
        "mgm_entry_wrong_interface_packets_total",
        "Packets of the flow that arrived on another interface, dropped.",
        |s| s.wrong_if,
    ),
    family(
        "mgm_entry_ttl_expired_packets_total",
        "Packets whose TTL ran out at this router, dropped.",
        |s| s.ttl_expired,
    ),
    family(
        "mgm_entry_negative_packets_total",
        "Packets dropped by a negative entry (nobody wants the flow).",
        |s| s.negative,
    ),
    family(
        "mgm_entry_no_outgoing_set_packets_total",
        "Packets dropped because their entry's outgoing set was gone.",
        |s| s.no_oif_set,
    ),
    family(
        "mgm_entry_uninitialized_packets_total",
        "Packets of the flow dropped while its entry was being resolved.",
        |s| s.uninit,
    ),
];

const ENTRY_OIF_COUNTERS: [Family<OifStats>; 3] = [
    family(
        "mgm_entry_outgoing_packets_total",
        "Copies of the entry's packets handed to the kernel for an outgoing interface.",
        |s| s.packets,
    ),
    family(
        "mgm_entry_outgoing_bytes_total",
        "Bytes of those copies.",
        |s| s.bytes,
    ),
    family(
        "mgm_entry_outgoing_ttl_too_low_total",
        "Copies not sent on the interface because their TTL was below its threshold.",
        |s| s.ttl_too_low,
    ),
];

const DAEMON_COUNTERS: [Family<Counters>; 21] = [
    family(
        "mgm_daemon_igmp_messages_total",
        "IGMP messages the daemon handled.",
        |c| c.igmp,
    ),
    family(
        "mgm_daemon_igmp_rejected_total",
        "IGMP messages the daemon rejected after decoding.",
        |c| c.igmp_rejected,
    ),
    family(
        "mgm_daemon_no_entry_upcalls_total",
        "Upcalls for packets no forwarding entry matched.",
        |c| c.no_cache,
    ),
    family(
        "mgm_daemon_wrong_interface_upcalls_total",
        "Upcalls for packets that arrived on another interface than their entry's.",
        |c| c.wrong_if,
    ),
    family(
        "mgm_daemon_unresolved_upcalls_total",
        "No-entry upcalls MGM could not resolve.",
        |c| c.unresolved,
    ),
    family(
        "mgm_daemon_memberships_refused_total",
        "Membership changes IGMP decided that MGM refused.",
        |c| c.memberships_refused,
    ),
    family(
        "mgm_daemon_queries_not_sent_total",
        "IGMP queries the query socket did not send.",
        |c| c.queries_not_sent,
    ),
    family(
        "mgm_daemon_rpf_routes_refused_total",
        "Routing-table routes the RPF table refused.",
        |c| c.rpf_routes_refused,
    ),
    family(
        "mgm_daemon_events_dropped_queue_full_total",
        "Ring-buffer events dropped over a full per-interface queue to the core.",
        |c| c.queue_full,
    ),
    family(
        "mgm_daemon_negative_evictions_total",
        "Negative forwarding entries evicted to stay within the negative-entry budget.",
        |c| c.negative_evictions,
    ),
    family(
        "mgm_daemon_loop_stalls_total",
        "Times the event loop ran more than a second late and IGMP's timers were postponed.",
        |c| c.stalls,
    ),
    family(
        "mgm_daemon_module_out_full_total",
        "Module connections disconnected with their replies unread.",
        |c| c.module_out_full,
    ),
    family(
        "mgm_daemon_module_replies_too_large_total",
        "Module replies over the size limit, answered with an error.",
        |c| c.module_replies_too_large,
    ),
    family(
        "mgm_daemon_module_answers_dropped_total",
        "Module answers no decision waited for (late, repeated or unknown).",
        |c| c.module_answers_dropped,
    ),
    family(
        "mgm_daemon_module_decisions_not_waited_total",
        "Module callbacks not waited for, with too many of the module's decisions waiting.",
        |c| c.module_decisions_not_waited,
    ),
    family(
        "mgm_daemon_upstream_reports_dropped_total",
        "Proxy reports dropped because the upstream worker fell behind.",
        |c| c.upstream_reports_dropped,
    ),
    family(
        "mgm_daemon_upstream_failures_total",
        "The upstream worker's system calls that failed.",
        |c| c.upstream_failures,
    ),
    family(
        "mgm_daemon_upstream_relinks_total",
        "Times the proxy's host side started on its upstream after waiting for it.",
        |c| c.upstream_relinks,
    ),
    family(
        "mgm_daemon_attach_failures_total",
        "Managed interfaces that appeared but whose XDP attach failed.",
        |c| c.attach_failures,
    ),
    family(
        "mgm_daemon_unknown_records_total",
        "Ring-buffer records of an unknown kind.",
        |c| c.unknown,
    ),
    family(
        "mgm_daemon_map_write_errors_total",
        "Map writes that failed.",
        |c| c.map_errors,
    ),
];

const QUERIER_COUNTERS: [Family<querier::Counters>; 4] = [
    family(
        "mgm_interface_igmp_foreign_queries_total",
        "IGMP queries from outside the interface's subnets, kept out of the querier election.",
        |c| c.foreign_queries,
    ),
    family(
        "mgm_interface_igmp_reports_without_router_alert_total",
        "IGMP reports and leaves without the Router Alert option.",
        |c| c.reports_without_router_alert,
    ),
    family(
        "mgm_interface_igmp_reports_ttl_not_1_total",
        "IGMP reports and leaves with a TTL other than 1.",
        |c| c.reports_ttl_not_1,
    ),
    family(
        "mgm_interface_igmp_nonconforming_dropped_total",
        "IGMP reports and leaves dropped for either (--igmp-strict-reports).",
        |c| c.nonconforming_dropped,
    ),
];

const fn family<T>(name: &'static str, help: &'static str, value: fn(&T) -> u64) -> Family<T> {
    Family { name, help, value }
}

/// The exposition of `state` and the daemon's `counters` in the Prometheus text format
/// (version 0.0.4).
pub fn render(state: &PinnedState, counters: &Counters) -> String {
    let mut out = String::new();
    for f in &DAEMON_COUNTERS {
        header(&mut out, f.name, f.help, "counter");
        let _ = writeln!(out, "{} {}", f.name, (f.value)(counters));
    }
    for f in &INTERFACE_COUNTERS {
        header(&mut out, f.name, f.help, "counter");
        for i in &state.interfaces {
            let _ = writeln!(
                out,
                "{}{{interface=\"{}\"}} {}",
                f.name,
                escape(&ifname(i.ifindex)),
                (f.value)(&i.stats)
            );
        }
    }
    for f in &QUERIER_COUNTERS {
        header(&mut out, f.name, f.help, "counter");
        for (ifindex, c) in &counters.queriers {
            let _ = writeln!(
                out,
                "{}{{interface=\"{}\"}} {}",
                f.name,
                escape(&ifname(*ifindex)),
                (f.value)(c)
            );
        }
    }
    header(
        &mut out,
        "mgm_entries",
        "Forwarding entries in the data plane, by state.",
        "gauge",
    );
    for state_name in ["forward", "negative", "pending"] {
        let n = state
            .entries
            .iter()
            .filter(|e| entry_state(e.entry.flags) == state_name)
            .count();
        let _ = writeln!(out, "mgm_entries{{state=\"{state_name}\"}} {n}");
    }
    header(
        &mut out,
        "mgm_entry_series_omitted",
        "Forwarding entries left without series of their own (the per-entry cap).",
        "gauge",
    );
    let shown = state.entries.len().min(MAX_ENTRY_SERIES);
    let _ = writeln!(
        out,
        "mgm_entry_series_omitted {}",
        state.entries.len() - shown
    );
    for f in &ENTRY_COUNTERS {
        header(&mut out, f.name, f.help, "counter");
        for e in &state.entries[..shown] {
            let _ = writeln!(
                out,
                "{}{{source=\"{}\",group=\"{}\",iif=\"{}\"}} {}",
                f.name,
                addr(e.source),
                addr(e.group),
                escape(&ifname(e.entry.iif)),
                (f.value)(&e.stats)
            );
        }
    }
    for f in &ENTRY_OIF_COUNTERS {
        header(&mut out, f.name, f.help, "counter");
        for e in &state.entries[..shown] {
            for (oif, s) in &e.oif_stats {
                let _ = writeln!(
                    out,
                    "{}{{source=\"{}\",group=\"{}\",iif=\"{}\",oif=\"{}\"}} {}",
                    f.name,
                    addr(e.source),
                    addr(e.group),
                    escape(&ifname(e.entry.iif)),
                    escape(&ifname(*oif)),
                    (f.value)(s)
                );
            }
        }
    }
    out
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped, as the format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `GET /metrics` on `addr` from the maps pinned in `pin_dir` and the counters the
/// daemon publishes in `daemon`, on a thread of its own, for the life of the process.
///
/// # Errors
/// `addr` cannot be listened on.
pub fn serve(addr: SocketAddr, pin_dir: PathBuf, daemon: SharedCounters) -> anyhow::Result<()> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    info!("metrics: http://{addr}/metrics");
    std::thread::Builder::new()
        .name("mgm-metrics".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let response = if request.url() != "/metrics" {
                    tiny_http::Response::from_string("mgm serves /metrics only\n")
                        .with_status_code(404)
                } else {
                    let counters = daemon
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone();
                    match read_pinned(&pin_dir) {
                        Ok(state) => tiny_http::Response::from_string(render(&state, &counters))
                            .with_header(
                                "Content-Type: text/plain; version=0.0.4; charset=utf-8"
                                    .parse::<tiny_http::Header>()
                                    .expect("a valid header"),
                            ),
                        Err(e) => {
                            warn!("metrics: cannot read the maps: {e}");
                            tiny_http::Response::from_string(format!("{e}\n")).with_status_code(503)
                        }
                    }
                };
                if let Err(e) = request.respond(response) {
                    warn!("metrics: cannot answer a scrape: {e}");
                }
            }
        })
        .context("cannot start the metrics thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use mgm_common::fwd::{FwdEntry, IfConfig};

    use super::*;
    use crate::dataplane::inspect::{EntryView, InterfaceView};

    fn state(entries: usize) -> PinnedState {
        PinnedState {
            layout_version: 1,
            interfaces: vec![InterfaceView {
                ifindex: 1,
                config: IfConfig {
                    mac: [0; 6],
                    flags: 0,
                    ttl_threshold: 1,
                    mtu: 1500,
                    _pad: 0,
                    stats_slot: 0,
                },
                stats: IfStats {
                    tx_pkts: 7,
                    tx_bytes: 700,
                    ..IfStats::default()
                },
            }],
            entries: (0..entries)
                .map(|k| EntryView {
                    source: Ipv4Addr::UNSPECIFIED,
                    group: Ipv4Addr::from(0xef00_0000 + k as u32),
                    entry: FwdEntry {
                        iif: 1,
                        oif_set: 1,
                        flags: 0,
                        stats_slot: 0,
                        created_ns: 0,
                        last_upcall_ns: 0,
                        pending_pkts: 0,
                        oif_base: 0,
                        oif_slots: 0,
                    },
                    oifs: vec![1],
                    stats: EntryStats {
                        pkts: 3,
                        ..EntryStats::default()
                    },
                    oif_stats: [(
                        1,
                        OifStats {
                            packets: 2,
                            bytes: 200,
                            ttl_too_low: 1,
                        },
                    )]
                    .into(),
                })
                .collect(),
            uncounted: OifStats::default(),
        }
    }

    #[test]
    fn counters_are_named_by_convention_and_labelled_by_interface() {
        let daemon = Counters {
            unresolved: 4,
            queue_full: 9,
            module_answers_dropped: 2,
            queriers: vec![(
                1,
                querier::Counters {
                    foreign_queries: 5,
                    reports_without_router_alert: 6,
                    reports_ttl_not_1: 7,
                    nonconforming_dropped: 8,
                    ..querier::Counters::default()
                },
            )],
            ..Counters::default()
        };
        let text = render(&state(1), &daemon);
        assert!(text.contains("# TYPE mgm_interface_transmitted_bytes_total counter\n"));
        assert!(text.contains("# TYPE mgm_daemon_unresolved_upcalls_total counter\n"));
        assert!(text.contains("\nmgm_daemon_unresolved_upcalls_total 4\n"));
        assert!(text.contains("\nmgm_daemon_events_dropped_queue_full_total 9\n"));
        assert!(text.contains("\nmgm_daemon_module_answers_dropped_total 2\n"));
        assert!(text.contains("\nmgm_daemon_loop_stalls_total 0\n"));
        assert!(text.contains("mgm_interface_transmitted_packets_total{interface=\"lo\"} 7\n"));
        assert!(text.contains("mgm_interface_transmitted_bytes_total{interface=\"lo\"} 700\n"));
        for (family, value) in [
            ("foreign_queries", 5),
            ("reports_without_router_alert", 6),
            ("reports_ttl_not_1", 7),
            ("nonconforming_dropped", 8),
        ] {
            let series = format!("mgm_interface_igmp_{family}_total{{interface=\"lo\"}} {value}\n");
            assert!(text.contains(&series), "{series}");
        }
        assert!(text
            .contains("mgm_entry_packets_total{source=\"*\",group=\"239.0.0.0\",iif=\"lo\"} 3\n"));
        assert!(text.contains(
            "mgm_entry_outgoing_packets_total{source=\"*\",group=\"239.0.0.0\",iif=\"lo\",oif=\"lo\"} 2\n"
        ));
        assert!(text.contains(
            "mgm_entry_outgoing_bytes_total{source=\"*\",group=\"239.0.0.0\",iif=\"lo\",oif=\"lo\"} 200\n"
        ));
        assert!(text.contains("mgm_entries{state=\"forward\"} 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                name.starts_with("mgm_")
                    && (name.ends_with("_total") || text.contains(&format!("# TYPE {name} gauge"))),
                "{line}"
            );
        }
    }

    #[test]
    fn entries_past_the_cap_are_counted_not_exported() {
        let text = render(&state(MAX_ENTRY_SERIES + 5), &Counters::default());
        for family in [
            "mgm_entry_packets_total{",
            "mgm_entry_outgoing_packets_total{",
        ] {
            let series = text.lines().filter(|l| l.starts_with(family)).count();
            assert_eq!(series, MAX_ENTRY_SERIES, "{family}");
        }
        assert!(text.contains("mgm_entry_series_omitted 5\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
