//! The tables `mgm show` prints by default, aligned for a terminal: one per view of the
//! daemon, and those of the pinned maps when no daemon answers.

use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};

use super::{proto::Document, view};
use crate::{
    cli::show::{addr, entry_state, ifname},
    dataplane::inspect::PinnedState,
};

/// The view as text: a title line and its table.
pub fn render(doc: &Document) -> String {
    match doc {
        Document::Interfaces { interfaces } => interfaces_table(interfaces),
        Document::Groups { groups } => groups_table(groups),
        Document::Mfe { mfes } => mfe_table(mfes),
        Document::Protocols { protocols } => protocols_table(protocols),
        Document::Stats { stats } => stats_tables(stats),
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_header(header);
    t
}

/// "245s", or "-" for a timer that does not run.
fn secs(s: Option<u64>) -> String {
    s.map_or_else(|| "-".to_owned(), |s| format!("{s}s"))
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

fn interfaces_table(rows: &[view::Interface]) -> String {
    let mut t = table(&[
        "interface",
        "index",
        "role",
        "owners",
        "IGMP",
        "querier",
        "groups",
        "sent",
        "sent bytes",
    ]);
    for i in rows {
        let (igmp, querier, groups) = match &i.igmp {
            Some(q) => (
                format!("v{}", q.version),
                if q.querier {
                    format!("{} (this router)", q.querier_address)
                } else {
                    q.querier_address.clone()
                },
                q.groups.to_string(),
            ),
            None => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
        };
        t.add_row([
            i.name.clone(),
            i.ifindex
                .map_or_else(|| "absent".to_owned(), |x| x.to_string()),
            i.role.clone(),
            list(&i.owners),
            igmp,
            querier,
            groups,
            i.tx_packets.to_string(),
            i.tx_bytes.to_string(),
        ]);
    }
    format!("interfaces ({}):\n{t}\n", rows.len())
}

fn groups_table(rows: &[view::Group]) -> String {
    let mut t = table(&[
        "interface",
        "group",
        "origin",
        "mode",
        "version",
        "sources",
        "reporter",
        "expires",
    ]);
    for g in rows {
        let sources: Vec<String> = g
            .sources
            .iter()
            .map(|s| match (s.expires_s, g.filter_mode.as_str()) {
                (Some(e), _) => format!("{} ({e}s)", s.address),
                (None, "exclude") => format!("{} (blocked)", s.address),
                // A static (S,G): forwarded for as long as it is held.
                (None, _) => s.address.clone(),
            })
            .collect();
        t.add_row([
            g.interface.clone(),
            g.group.clone(),
            g.origin.clone(),
            g.filter_mode.clone(),
            g.version
                .map_or_else(|| "-".to_owned(), |v| format!("v{v}")),
            if sources.is_empty() {
                "-".to_owned()
            } else {
                sources.join("\n")
            },
            g.reporter.clone().unwrap_or_else(|| "-".to_owned()),
            secs(g.expires_s),
        ]);
    }
    format!("groups ({}):\n{t}\n", rows.len())
}

fn mfe_table(rows: &[view::Mfe]) -> String {
    let mut t = table(&[
        "source",
        "group",
        "in",
        "out",
        "out packets",
        "out bytes",
        "packets",
        "bytes",
        "wrong if",
        "discards",
        "uptime",
        "expires",
    ]);
    for m in rows {
        // One line per outgoing interface, its counters beside it.
        let column = |f: fn(&view::Oif) -> String| -> String {
            if m.oifs.is_empty() {
                "-".to_owned()
            } else {
                m.oifs.iter().map(f).collect::<Vec<_>>().join("\n")
            }
        };
        t.add_row([
            m.source.clone(),
            m.group.clone(),
            m.iif.clone(),
            column(|o| o.interface.clone()),
            column(|o| o.packets.to_string()),
            column(|o| o.bytes.to_string()),
            m.packets.to_string(),
            m.bytes.to_string(),
            m.wrong_if.to_string(),
            m.discards.to_string(),
            format!("{}s", m.uptime_s),
            format!("{}s", m.expires_s),
        ]);
    }
    format!("forwarding entries ({}):\n{t}\n", rows.len())
}

fn protocols_table(rows: &[view::Protocol]) -> String {
    let mut t = table(&["protocol", "id", "component", "interfaces", "holds"]);
    for p in rows {
        t.add_row([
            p.name.clone(),
            format!("{:#x}", p.protocol_id),
            p.component_id.to_string(),
            list(&p.interfaces),
            if p.detail.is_empty() {
                "-".to_owned()
            } else {
                p.detail.join("\n")
            },
        ]);
    }
    format!("protocols ({}):\n{t}\n", rows.len())
}

fn stats_tables(s: &view::Stats) -> String {
    let mut daemon = table(&["counter", "value"]);
    for (name, value) in [
        ("uptime (s)", s.uptime_s),
        ("forwarding entries", s.mfes as u64),
        ("IGMP messages", s.igmp_messages),
        ("IGMP rejected", s.igmp_rejected),
        ("no-entry upcalls", s.no_cache_upcalls),
        ("wrong-interface upcalls", s.wrong_if_upcalls),
        ("unresolved upcalls", s.unresolved_upcalls),
        ("memberships refused by MGM", s.memberships_refused),
        ("IGMP queries not sent", s.queries_not_sent),
        ("RPF routes refused", s.rpf_routes_refused),
        ("events dropped (queue full)", s.events_dropped_queue_full),
        ("negative entries evicted", s.negative_evictions),
        ("event loop stalls", s.loop_stalls),
        ("modules cut off (unread replies)", s.module_out_full),
        ("module replies too large", s.module_replies_too_large),
        ("module answers dropped", s.module_answers_dropped),
        (
            "module decisions not waited for",
            s.module_decisions_not_waited,
        ),
        ("upstream reports dropped", s.upstream_reports_dropped),
        ("upstream calls failed", s.upstream_failures),
        ("upstream links taken again", s.upstream_relinks),
        ("interface attaches failed", s.attach_failures),
        ("unknown ring records", s.unknown_records),
        ("map write errors", s.map_errors),
    ] {
        daemon.add_row([name.to_owned(), value.to_string()]);
    }
    let mut ifs = table(&[
        "interface",
        "IGMP in (q/v1/v2/leave/v3/other)",
        "malformed",
        "truncated",
        "no entry",
        "sent",
        "sent bytes",
        "ttl drops",
        "ring full",
        "vlan tagged",
        "foreign queries",
        "reports no RA/TTL/dropped",
    ]);
    for i in &s.interfaces {
        ifs.add_row([
            i.interface.clone(),
            format!(
                "{}/{}/{}/{}/{}/{}",
                i.igmp_query,
                i.igmp_v1_report,
                i.igmp_v2_report,
                i.igmp_v2_leave,
                i.igmp_v3_report,
                i.igmp_other
            ),
            i.malformed.to_string(),
            i.truncated.to_string(),
            i.no_entry.to_string(),
            i.tx_packets.to_string(),
            i.tx_bytes.to_string(),
            i.ttl_too_low.to_string(),
            i.ring_full.to_string(),
            i.vlan_tagged.to_string(),
            i.igmp_foreign_queries.to_string(),
            format!(
                "{}/{}/{}",
                i.igmp_no_router_alert, i.igmp_ttl_not_1, i.igmp_nonconforming_dropped
            ),
        ]);
    }
    format!("daemon:\n{daemon}\ninterfaces:\n{ifs}\n")
}

/// The pinned maps' state, for `mgm show` when no daemon answers: its forwarding entries and
/// its interfaces' counters, as two tables.
pub fn pinned(state: &PinnedState) -> String {
    let mut entries = table(&[
        "source", "group", "in", "out", "state", "packets", "bytes", "wrong if", "ttl drop",
    ]);
    for e in &state.entries {
        let out: Vec<String> = e.oifs.iter().map(|i| ifname(*i)).collect();
        entries.add_row([
            addr(e.source),
            addr(e.group),
            ifname(e.entry.iif),
            out.join(","),
            entry_state(e.entry.flags).to_owned(),
            e.stats.pkts.to_string(),
            e.stats.bytes.to_string(),
            e.stats.wrong_if.to_string(),
            e.stats.ttl_expired.to_string(),
        ]);
    }
    let mut ifs = table(&[
        "interface",
        "IGMP in (q/v1/v2/leave/v3)",
        "malformed",
        "no entry",
        "sent",
        "sent bytes",
        "ttl drops",
        "ring full",
        "vlan tagged",
        "limited (igmp/upcall)",
    ]);
    for i in &state.interfaces {
        let s = &i.stats;
        ifs.add_row([
            ifname(i.ifindex),
            format!(
                "{}/{}/{}/{}/{}",
                s.igmp_query, s.igmp_v1_report, s.igmp_v2_report, s.igmp_v2_leave, s.igmp_v3_report
            ),
            s.malformed.to_string(),
            s.no_entry.to_string(),
            s.tx_pkts.to_string(),
            s.tx_bytes.to_string(),
            s.ttl_too_low.to_string(),
            s.ring_full.to_string(),
            s.vlan_tagged.to_string(),
            format!("{}/{}", s.igmp_limited, s.upcall_limited),
        ]);
    }
    format!(
        "forwarding entries ({}):\n{entries}\ninterfaces:\n{ifs}\n",
        state.entries.len()
    )
}
