//! Run-time changes: static routes (`mgm route add|del`) and static memberships (`mgm join`,
//! `mgm leave`), held by the static-routes module until the daemon stops or reloads; a reload
//! makes them what the configuration says through the same steps ([`follow_config`]).

use std::net::Ipv4Addr;

use super::{proto::Answer, Daemon};
use crate::{
    cli::show::addr,
    config::static_route_problem,
    core::{InterfaceId, ProtocolHandle, Route, SourceGroupEntry},
    protocols::static_routes::StaticRoute,
};

/// `RTPROT_STATIC`: how the RPF host route of an (S,G) route is marked.
const RTPROT_STATIC: u32 = 4;

/// Lasts until the daemon stops or reloads: said with every change.
const UNTIL: &str = "until mgm stops or reloads; put it in the configuration to keep it";

/// What a reload did to the static routes and joins.
#[derive(Debug, Default)]
pub struct Followed {
    pub added: Vec<StaticRoute>,
    pub removed: Vec<StaticRoute>,
    /// The static joins dropped, in operator words: "dn1 (*, 239.1.1.1)".
    pub joins_removed: Vec<String>,
    /// Each change refused, and why.
    pub refused: Vec<String>,
}

/// Makes the held routes `added` and `removed` different, as `mgm route add|del` would, and
/// drops every static join: the configuration holds none, so none outlives a reload. A route
/// replacing one that forwards the same (S,G) needs that one gone first; every other removal
/// waits until the additions hold their memberships, so an interface both want never loses
/// its membership. A refused change is reported, and the others still apply.
pub(super) fn follow_config(
    added: &[StaticRoute],
    removed: &[StaticRoute],
    d: &mut Daemon<'_>,
) -> Followed {
    let mut done = Followed::default();
    let same_sg = |r: &StaticRoute| {
        added
            .iter()
            .any(|a| r.source.is_some() && a.source == r.source && a.group == r.group)
    };
    let (first, last): (Vec<&StaticRoute>, Vec<&StaticRoute>) =
        removed.iter().partition(|r| same_sg(r));
    let remove = |r: &StaticRoute, d: &mut Daemon<'_>, done: &mut Followed| match route_del(
        &r.to_string(),
        d,
    ) {
        Ok(_) => done.removed.push(r.clone()),
        Err(e) => done
            .refused
            .push(format!("static route \"{r}\" not removed: {e}")),
    };
    for r in first {
        remove(r, d, &mut done);
    }
    for r in added {
        match route_add(&r.to_string(), d) {
            Ok(_) => done.added.push(r.clone()),
            Err(e) => done
                .refused
                .push(format!("static route \"{r}\" not added: {e}")),
        }
    }
    for r in last {
        remove(r, d, &mut done);
    }
    for (sg, interface) in d.statics.joins() {
        match drop_join(sg, &interface, d) {
            Ok(()) => done
                .joins_removed
                .push(format!("{interface} {}", words(sg))),
            Err(e) => done.refused.push(format!("static join not removed: {e}")),
        }
    }
    done
}

fn handle(d: &Daemon<'_>) -> Result<ProtocolHandle, String> {
    d.static_handle
        .ok_or_else(|| "the static-routes module is not running in this daemon".to_owned())
}

fn present(d: &Daemon<'_>, interface: &str) -> Result<u32, String> {
    d.names
        .ifindex(interface)
        .ok_or_else(|| format!("{interface} does not exist now; try again once it does"))
}

fn unicast(source: Ipv4Addr) -> Result<(), String> {
    if source.is_multicast() || source.is_unspecified() || source.is_broadcast() {
        return Err(format!("{source} is not a unicast source address"));
    }
    Ok(())
}

fn parse(text: &str, d: &Daemon<'_>) -> Result<StaticRoute, String> {
    let route: StaticRoute = text.parse().map_err(|e| format!("{e}"))?;
    if let Some(s) = route.source {
        unicast(s)?;
    }
    let downstream: Vec<&str> = d.roles.downstream.iter().map(String::as_str).collect();
    if let Some(why) = static_route_problem(&route, d.roles.upstream.as_deref(), &downstream) {
        return Err(format!("static route \"{route}\": {why}"));
    }
    Ok(route)
}

fn rpf_route(source: Ipv4Addr, iif: u32) -> Route {
    Route {
        network: source,
        prefix_len: 32,
        if_id: InterfaceId::new(iif),
        upstream: Ipv4Addr::UNSPECIFIED,
        protocol: RTPROT_STATIC,
        metric: 0,
    }
}

pub(super) fn route_add(text: &str, d: &mut Daemon<'_>) -> Result<Answer, String> {
    let route = parse(text, d)?;
    let held = d.statics.routes();
    if held.contains(&route) {
        return Err(format!("static route \"{route}\" is there already"));
    }
    if let Some(other) = held
        .iter()
        .find(|r| r.source.is_some() && r.source == route.source && r.group == route.group)
    {
        return Err(format!(
            "static route \"{other}\" already forwards ({}, {}); delete it first",
            addr(other.source.unwrap_or(Ipv4Addr::UNSPECIFIED)),
            other.group
        ));
    }
    let h = handle(d)?;
    let iif = present(d, &route.iif)?;
    let oifs = route
        .oifs
        .iter()
        .map(|o| present(d, o).map(|i| (o.as_str(), i)))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(s) = route.source {
        d.mgm
            .add_route(rpf_route(s, iif), d.now)
            .map_err(|e| format!("MGM refused the RPF route of {s}: {e}"))?;
    }
    let sg = route.entry();
    for (k, (oif, ifindex)) in oifs.iter().enumerate() {
        if let Err(e) = d.statics.hold(d.mgm, h, sg, oif, *ifindex, d.now) {
            for (done, i) in &oifs[..k] {
                d.statics.release(d.mgm, h, sg, done, Some(*i), d.now);
            }
            if let Some(s) = route.source {
                d.mgm.delete_route(s, 32, 0, d.now);
            }
            return Err(e);
        }
    }
    d.statics.add_route(route.clone());
    Ok(Answer::done(format!(
        "static route \"{route}\" added ({UNTIL})"
    )))
}

pub(super) fn route_del(text: &str, d: &mut Daemon<'_>) -> Result<Answer, String> {
    let route: StaticRoute = text.parse().map_err(|e| format!("{e}"))?;
    if !d.statics.remove_route(&route) {
        let held: Vec<String> = d
            .statics
            .routes()
            .iter()
            .map(|r| format!("\"{r}\""))
            .collect();
        return Err(format!(
            "no static route \"{route}\" (held now: {})",
            if held.is_empty() {
                "none".to_owned()
            } else {
                held.join(", ")
            }
        ));
    }
    let h = handle(d)?;
    for oif in &route.oifs {
        let ifindex = d.names.ifindex(oif);
        d.statics
            .release(d.mgm, h, route.entry(), oif, ifindex, d.now);
    }
    if let Some(s) = route.source {
        if !d.statics.routes().iter().any(|r| r.source == Some(s)) {
            d.mgm.delete_route(s, 32, 0, d.now);
        }
    }
    Ok(Answer::done(format!("static route \"{route}\" deleted")))
}

/// The membership a join names, after checking the interface may hold one.
fn membership(
    interface: &str,
    group: Ipv4Addr,
    source: Option<Ipv4Addr>,
    d: &Daemon<'_>,
) -> Result<SourceGroupEntry, String> {
    if !group.is_multicast() {
        return Err(format!("{group} is not a multicast group address"));
    }
    if !d.roles.downstream.iter().any(|n| n == interface) {
        let role = d
            .roles
            .all()
            .into_iter()
            .find(|(n, _)| *n == interface)
            .map(|(_, r)| r);
        let downstreams = d.roles.downstream.join(", ");
        return Err(match role {
            Some(role) => format!(
                "{interface} is the {role} interface; static joins go on downstreams \
                 ({downstreams})"
            ),
            None => format!(
                "unknown interface {interface}: static joins go on the downstreams mgm \
                 manages ({downstreams})"
            ),
        });
    }
    Ok(match source {
        Some(s) => {
            unicast(s)?;
            SourceGroupEntry::sg(s, group)
        }
        None => SourceGroupEntry::star_g(group),
    })
}

fn words(sg: SourceGroupEntry) -> String {
    format!("({}, {})", addr(sg.source), sg.group)
}

pub(super) fn join(
    interface: &str,
    group: Ipv4Addr,
    source: Option<Ipv4Addr>,
    d: &mut Daemon<'_>,
) -> Result<Answer, String> {
    let sg = membership(interface, group, source, d)?;
    let h = handle(d)?;
    let ifindex = present(d, interface)?;
    if !d.statics.add_join(sg, interface) {
        return Err(format!(
            "{interface} has joined {} statically already",
            words(sg)
        ));
    }
    if let Err(e) = d.statics.hold(d.mgm, h, sg, interface, ifindex, d.now) {
        d.statics.remove_join(sg, interface);
        return Err(e);
    }
    Ok(Answer::done(format!(
        "{interface} joins {} statically ({UNTIL})",
        words(sg)
    )))
}

pub(super) fn leave(
    interface: &str,
    group: Ipv4Addr,
    source: Option<Ipv4Addr>,
    d: &mut Daemon<'_>,
) -> Result<Answer, String> {
    let sg = membership(interface, group, source, d)?;
    drop_join(sg, interface, d)?;
    Ok(Answer::done(format!(
        "{interface} leaves {} (static join removed)",
        words(sg)
    )))
}

/// Forgets the static join of `sg` on `interface` and releases its membership.
fn drop_join(sg: SourceGroupEntry, interface: &str, d: &mut Daemon<'_>) -> Result<(), String> {
    if !d.statics.remove_join(sg, interface) {
        return Err(format!(
            "{interface} has no static join of {} (mgm leave undoes mgm join)",
            words(sg)
        ));
    }
    let h = handle(d)?;
    let ifindex = d.names.ifindex(interface);
    d.statics.release(d.mgm, h, sg, interface, ifindex, d.now);
    Ok(())
}
