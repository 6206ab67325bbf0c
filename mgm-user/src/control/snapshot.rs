//! The `mgm show` documents, filled from the daemon's state at the moment of the request.

use std::net::Ipv4Addr;

use super::{
    proto::{Document, View, DEFAULT_PAGE, MAX_PAGE},
    view, Daemon,
};
use crate::{
    cli::show::addr,
    core::{Instant, InterfaceId, ProtocolId},
    igmp::querier::{FilterMode, Querier, Version},
    protocols::{igmp_proxy, static_routes},
};

/// The document of `which`: for the paged views, the page after `after` (a `next` of an
/// earlier answer) of at most `limit` rows, and the `next` of this page if more rows follow.
pub(super) fn document(
    which: View,
    after: Option<&str>,
    limit: Option<u32>,
    d: &Daemon<'_>,
) -> Result<(Document, Option<String>), String> {
    let limit = match limit.unwrap_or(DEFAULT_PAGE) {
        0 => return Err("limit 0: a page holds at least one row".to_owned()),
        n => n.min(MAX_PAGE) as usize,
    };
    let whole = |document| match after {
        Some(_) => Err(format!(
            "the {} view comes in one answer; ask without after",
            format!("{which:?}").to_lowercase()
        )),
        None => Ok((document, None)),
    };
    match which {
        View::Interfaces => whole(Document::Interfaces {
            interfaces: interfaces(d),
        }),
        View::Groups => {
            let after = after.map(RowKey::parse).transpose()?;
            let (groups, next) = groups(d, after, limit);
            Ok((Document::Groups { groups }, next))
        }
        View::Mfe => {
            let after = after.map(mfe_after).transpose()?;
            let (mfes, next) = mfes(d, after, limit);
            Ok((Document::Mfe { mfes }, next))
        }
        View::Protocols => whole(Document::Protocols {
            protocols: protocols(d),
        }),
        View::Stats => whole(Document::Stats { stats: stats(d) }),
    }
}

/// Whole seconds from `now` until `at`, rounded up, so a running timer never shows 0.
fn until(at: Instant, now: Instant) -> u64 {
    at.as_millis()
        .saturating_sub(now.as_millis())
        .div_ceil(1000)
}

fn version(v: Version) -> u8 {
    match v {
        Version::V1 => 1,
        Version::V2 => 2,
        Version::V3 => 3,
    }
}

fn name(d: &Daemon<'_>, ifindex: u32) -> String {
    d.names
        .get(ifindex)
        .unwrap_or_else(|| format!("#{ifindex}"))
}

fn protocol_name(d: &Daemon<'_>, id: ProtocolId) -> String {
    if id == ProtocolId::IGMP {
        "igmp".to_owned()
    } else if id == igmp_proxy::PROTOCOL_ID {
        "igmp-proxy".to_owned()
    } else if id == static_routes::PROTOCOL_ID {
        "static".to_owned()
    } else if d.modules.iter().any(|(_, p)| *p == id.0) {
        "module".to_owned()
    } else {
        format!("protocol {:#x}", id.0)
    }
}

fn interfaces(d: &Daemon<'_>) -> Vec<view::Interface> {
    let protocols = d.mgm.protocols();
    d.roles
        .all()
        .into_iter()
        .map(|(n, role)| {
            let ifindex = d.names.ifindex(n);
            let mut owners: Vec<(bool, String)> = protocols
                .iter()
                .filter(|(_, _, ids)| ifindex.is_some_and(|i| ids.contains(&InterfaceId::new(i))))
                .map(|(p, _, _)| (*p == ProtocolId::IGMP, protocol_name(d, *p)))
                .collect();
            // The routing protocol first: it is the one callbacks go to (spec §3.3).
            owners.sort();
            let igmp = ifindex.and_then(|i| {
                d.igmp.queriers(|qs| {
                    qs.get(&i).map(|q| view::Querier {
                        version: version(q.config().version),
                        querier: q.is_querier(),
                        querier_address: q.querier_address().to_string(),
                        groups: q.groups().count(),
                    })
                })
            });
            let tx = ifindex.and_then(|i| (d.if_stats)(i)).unwrap_or_default();
            view::Interface {
                name: n.to_owned(),
                ifindex,
                role: role.to_owned(),
                owners: owners.into_iter().map(|(_, o)| o).collect(),
                igmp,
                tx_packets: tx.tx_pkts,
                tx_bytes: tx.tx_bytes,
            }
        })
        .collect()
}

/// Where a groups row stands in the view: interface, group, origin, and a static row's
/// source (the only field that tells static rows of one interface and group apart).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RowKey(String, Option<Ipv4Addr>, String, Option<Ipv4Addr>);

impl RowKey {
    fn of(g: &view::Group) -> Self {
        let source = match g.origin.as_str() {
            "static" => g.sources.first().and_then(|s| s.address.parse().ok()),
            _ => None,
        };
        Self(
            g.interface.clone(),
            group_key(&g.group),
            g.origin.clone(),
            source,
        )
    }

    /// The `next` naming this row: its four parts, `*` for no source. Interface names hold
    /// no spaces, so spaces part them.
    fn cursor(&self) -> String {
        let Self(interface, group, origin, source) = self;
        let or_star = |a: &Option<Ipv4Addr>| a.map_or("*".to_owned(), |a| a.to_string());
        format!(
            "{interface} {} {origin} {}",
            or_star(group),
            or_star(source)
        )
    }

    fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("after {s:?} is not the next of a groups answer");
        let addr = |a: &str| match a {
            "*" => Ok(None),
            a => a.parse().map(Some).map_err(|_| bad()),
        };
        match s.split(' ').collect::<Vec<_>>()[..] {
            [interface, group, origin, source] => Ok(Self(
                interface.to_owned(),
                addr(group)?,
                origin.to_owned(),
                addr(source)?,
            )),
            _ => Err(bad()),
        }
    }
}

/// The MFE an mfe `next` names: "group source".
fn mfe_after(s: &str) -> Result<(Ipv4Addr, Ipv4Addr), String> {
    let bad = || format!("after {s:?} is not the next of an mfe answer");
    let (group, source) = s.split_once(' ').ok_or_else(bad)?;
    Ok((
        group.parse().map_err(|_| bad())?,
        source.parse().map_err(|_| bad())?,
    ))
}

/// At most `limit` rows after `after`, and the `next` of the last if more follow.
fn groups(
    d: &Daemon<'_>,
    after: Option<RowKey>,
    limit: usize,
) -> (Vec<view::Group>, Option<String>) {
    let mut rows: Vec<(RowKey, view::Group)> = all_groups(d)
        .into_iter()
        .map(|g| (RowKey::of(&g), g))
        .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let next = (rows.len() > limit).then(|| rows[limit - 1].0.cursor());
    rows.truncate(limit);
    (rows.into_iter().map(|(_, g)| g).collect(), next)
}

fn all_groups(d: &Daemon<'_>) -> Vec<view::Group> {
    let now = d.now;
    let mut out: Vec<view::Group> = d.igmp.queriers(|qs| {
        qs.iter()
            .flat_map(|(ifindex, q)| {
                let interface = name(d, *ifindex);
                q.groups()
                    .map(|g| {
                        let sources: Vec<view::Source> = g
                            .sources()
                            .map(|(s, t)| view::Source {
                                address: s.to_string(),
                                expires_s: t.map(|t| until(t, now)),
                            })
                            .collect();
                        let expires = match g.filter_mode() {
                            FilterMode::Exclude => g.group_timer(),
                            // An INCLUDE-mode group lasts as long as its last source.
                            FilterMode::Include => g.sources().filter_map(|(_, t)| t).max(),
                        };
                        view::Group {
                            interface: interface.clone(),
                            group: g.address().to_string(),
                            origin: "igmp".to_owned(),
                            filter_mode: mode(g.filter_mode()).to_owned(),
                            version: Some(version(g.compatibility())),
                            sources,
                            reporter: g.last_reporter().map(|r| r.to_string()),
                            expires_s: expires.map(|t| until(t, now)),
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    });
    for (sg, interface) in d.statics.held() {
        let wildcard = sg.source == Ipv4Addr::UNSPECIFIED;
        out.push(view::Group {
            interface,
            group: sg.group.to_string(),
            origin: "static".to_owned(),
            filter_mode: if wildcard { "exclude" } else { "include" }.to_owned(),
            version: None,
            sources: if wildcard {
                Vec::new()
            } else {
                vec![view::Source {
                    address: sg.source.to_string(),
                    expires_s: None,
                }]
            },
            reporter: None,
            expires_s: None,
        });
    }
    out
}

fn group_key(g: &str) -> Option<Ipv4Addr> {
    g.parse().ok()
}

fn mode(m: FilterMode) -> &'static str {
    match m {
        FilterMode::Include => "include",
        FilterMode::Exclude => "exclude",
    }
}

/// At most `limit` MFEs after (group, source) `after`, and the `next` of the last if more
/// follow.
fn mfes(
    d: &Daemon<'_>,
    after: Option<(Ipv4Addr, Ipv4Addr)>,
    limit: usize,
) -> (Vec<view::Mfe>, Option<String>) {
    let batch = d.mgm.mfe_page(after, limit, d.now);
    let next = batch
        .records
        .last()
        .filter(|_| batch.more)
        .map(|r| format!("{} {}", r.group, r.source));
    let rows = batch
        .records
        .into_iter()
        .map(|r| {
            let counters = d.mgm.mfe_counters(r.source, r.group);
            let oifs: Vec<view::Oif> = r
                .oifs
                .iter()
                .map(|id| {
                    let c = counters
                        .and_then(|c| c.oifs.get(id))
                        .copied()
                        .unwrap_or_default();
                    view::Oif {
                        interface: name(d, id.ifindex),
                        packets: c.out_packets,
                        bytes: c.out_bytes,
                    }
                })
                .collect();
            let c = counters.cloned().unwrap_or_default();
            view::Mfe {
                source: addr(r.source),
                group: r.group.to_string(),
                iif: name(d, r.in_if.ifindex),
                upstream: r.upstream.to_string(),
                total_out_packets: oifs.iter().map(|o| o.packets).sum(),
                oifs,
                packets: c.in_pkts,
                bytes: c.in_octets,
                wrong_if: c.different_if,
                discards: c.in_discards,
                uptime_s: u64::from(r.up_time_s),
                expires_s: u64::from(r.expiry_time_s),
            }
        })
        .collect();
    (rows, next)
}

fn protocols(d: &Daemon<'_>) -> Vec<view::Protocol> {
    d.mgm
        .protocols()
        .into_iter()
        .map(|(p, c, ids)| {
            let mut interfaces: Vec<String> = ids.iter().map(|id| name(d, id.ifindex)).collect();
            interfaces.sort();
            interfaces.dedup();
            let detail = if p == static_routes::PROTOCOL_ID {
                d.statics
                    .routes()
                    .iter()
                    .map(|r| format!("route {r}"))
                    .chain(
                        d.statics
                            .joins()
                            .iter()
                            .map(|(sg, i)| format!("join {i} ({}, {})", addr(sg.source), sg.group)),
                    )
                    .collect()
            } else {
                d.modules
                    .iter()
                    .filter(|(_, id)| *id == p.0)
                    .map(|(conn, _)| format!("module connection {conn}"))
                    .collect()
            };
            view::Protocol {
                name: protocol_name(d, p),
                protocol_id: p.0,
                component_id: c.0,
                interfaces,
                detail,
            }
        })
        .collect()
}

fn stats(d: &Daemon<'_>) -> view::Stats {
    let c = &d.counters;
    view::Stats {
        uptime_s: d.now.as_millis() / 1000,
        igmp_messages: c.igmp,
        igmp_rejected: c.igmp_rejected,
        no_cache_upcalls: c.no_cache,
        wrong_if_upcalls: c.wrong_if,
        unknown_records: c.unknown,
        map_errors: c.map_errors,
        unresolved_upcalls: c.unresolved,
        memberships_refused: c.memberships_refused,
        queries_not_sent: c.queries_not_sent,
        rpf_routes_refused: c.rpf_routes_refused,
        events_dropped_queue_full: c.queue_full,
        negative_evictions: c.negative_evictions,
        loop_stalls: c.stalls,
        module_out_full: c.module_out_full,
        module_replies_too_large: c.module_replies_too_large,
        module_answers_dropped: c.module_answers_dropped,
        module_decisions_not_waited: c.module_decisions_not_waited,
        upstream_reports_dropped: c.upstream_reports_dropped,
        upstream_failures: c.upstream_failures,
        upstream_relinks: c.upstream_relinks,
        attach_failures: c.attach_failures,
        mfes: d.mgm.forwarding_table().len(),
        interfaces: d
            .roles
            .all()
            .into_iter()
            .filter_map(|(n, _)| {
                let i = d.names.ifindex(n)?;
                let igmp = d.igmp.queriers(|q| q.get(&i).map(Querier::counters));
                Some(view::InterfaceStats::new(
                    n.to_owned(),
                    &(d.if_stats)(i).unwrap_or_default(),
                    &igmp.unwrap_or_default(),
                ))
            })
            .collect(),
    }
}
