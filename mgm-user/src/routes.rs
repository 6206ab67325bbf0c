//! The kernel's IPv4 unicast routes, read over rtnetlink, as the core's RPF table (spec §10:
//! "RTM_GETROUTE … on a configurable table that stands in for the multicast view").

use std::net::Ipv4Addr;

use anyhow::Context;
use futures::{channel::mpsc::UnboundedReceiver, StreamExt, TryStreamExt};
use rtnetlink::{
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{
        route::{
            RouteAddress, RouteAttribute, RouteMessage, RouteNextHop, RouteNextHopFlags, RouteType,
        },
        AddressFamily, RouteNetlinkMessage,
    },
    sys::SocketAddr,
    MulticastGroup,
};

use crate::core::{InterfaceId, Route};

/// The main routing table's id.
pub const RT_TABLE_MAIN: u32 = 254;

/// Every IPv4 unicast route of `table`, in the form the core takes, and how many of them are
/// multipath (each reduced to one next hop, see [`rpf_next_hop`]).
///
/// # Errors
/// The netlink socket cannot be opened or the dump fails.
pub async fn dump_ipv4(table: u32) -> anyhow::Result<(Vec<Route>, usize)> {
    let (conn, handle, _) = rtnetlink::new_connection().context("cannot open rtnetlink")?;
    let task = tokio::spawn(conn);
    let request = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build();
    let messages: Vec<RouteMessage> = handle
        .route()
        .get(request)
        .execute()
        .try_collect()
        .await
        .context("dumping the IPv4 routes failed")?;
    task.abort();
    let ours: Vec<&RouteMessage> = messages
        .iter()
        .filter(|m| route_table(m) == table)
        .collect();
    let multipath = ours.iter().filter(|m| is_multipath(m)).count();
    let routes = ours.into_iter().filter_map(to_route).collect();
    Ok((routes, multipath))
}

/// A change to the routes of the watched table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteChange {
    Added(Route),
    Deleted {
        network: Ipv4Addr,
        prefix_len: u8,
        metric: u32,
    },
}

/// Route changes as the kernel announces them (RTNLGRP_IPV4_ROUTE). Start it before the dump,
/// so no change falls between the two.
pub struct RouteWatch {
    messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
    table: u32,
    task: tokio::task::JoinHandle<()>,
}

impl RouteWatch {
    /// Subscribes to IPv4 route changes of `table`.
    ///
    /// # Errors
    /// The netlink socket cannot be opened or bound to the group.
    pub fn start(table: u32) -> anyhow::Result<RouteWatch> {
        let (conn, _, messages) = rtnetlink::new_multicast_connection(&[MulticastGroup::Ipv4Route])
            .context("cannot subscribe to route changes")?;
        Ok(RouteWatch {
            messages,
            table,
            task: tokio::spawn(conn),
        })
    }

    /// The next change to a unicast route of the table; `None` if the socket closed.
    pub async fn next(&mut self) -> Option<RouteChange> {
        loop {
            let (msg, _) = self.messages.next().await?;
            let (m, added) = match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m)) => (m, true),
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(m)) => (m, false),
                _ => continue,
            };
            if route_table(&m) != self.table {
                continue;
            }
            let Some(route) = to_route(&m) else {
                continue;
            };
            return Some(if added {
                RouteChange::Added(route)
            } else {
                RouteChange::Deleted {
                    network: route.network,
                    prefix_len: route.prefix_len,
                    metric: route.metric,
                }
            });
        }
    }
}

impl Drop for RouteWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn route_table(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

/// The one next hop of a multipath route that RPF uses, as (ifindex, gateway): the highest
/// gateway address, then the lowest ifindex, among the hops the kernel does not mark dead (all
/// of them if it marks every one).
///
/// RPF needs one incoming interface per source, while the kernel spreads unicast over every
/// hop. The choice must not depend on the order the hops were configured or announced in, or
/// re-adding the same route could move every MFE; and the highest neighbour address is what
/// multicast routers commonly pick among equal-cost paths, so mgm expects traffic where a
/// PIM neighbour next to it would send its join.
fn rpf_next_hop(hops: &[RouteNextHop]) -> Option<(u32, Ipv4Addr)> {
    let gateway = |h: &RouteNextHop| {
        h.attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(*g),
                _ => None,
            })
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    };
    let live = |h: &&RouteNextHop| !h.flags.contains(RouteNextHopFlags::Dead);
    let pool: Vec<&RouteNextHop> = match hops.iter().filter(live).count() {
        0 => hops.iter().collect(),
        _ => hops.iter().filter(live).collect(),
    };
    pool.into_iter()
        .map(|h| (gateway(h), std::cmp::Reverse(h.interface_index)))
        .max()
        .map(|(g, std::cmp::Reverse(i))| (i, g))
}

fn is_multipath(m: &RouteMessage) -> bool {
    m.attributes
        .iter()
        .any(|a| matches!(a, RouteAttribute::MultiPath(_)))
}

/// A unicast IPv4 route, a multipath one reduced to its RPF next hop; `None` for anything
/// else.
fn to_route(m: &RouteMessage) -> Option<Route> {
    if m.header.address_family != AddressFamily::Inet || m.header.kind != RouteType::Unicast {
        return None;
    }
    let mut network = Ipv4Addr::UNSPECIFIED;
    let mut upstream = Ipv4Addr::UNSPECIFIED;
    let mut oif = None;
    let mut metric = 0;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => network = *d,
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => upstream = *g,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::MultiPath(hops) => {
                if let Some((i, g)) = rpf_next_hop(hops) {
                    (oif, upstream) = (Some(i), g);
                }
            }
            _ => {}
        }
    }
    Some(Route {
        network,
        prefix_len: m.header.destination_prefix_length,
        if_id: InterfaceId::new(oif?),
        upstream,
        protocol: u32::from(u8::from(m.header.protocol)),
        metric,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(ifindex: u32, gateway: [u8; 4], flags: RouteNextHopFlags) -> RouteNextHop {
        let mut h = RouteNextHop::default();
        h.flags = flags;
        h.interface_index = ifindex;
        h.attributes = vec![RouteAttribute::Gateway(RouteAddress::Inet(gateway.into()))];
        h
    }

    #[test]
    fn multipath_rpf_takes_the_highest_gateway_whatever_the_order() {
        let none = RouteNextHopFlags::empty();
        let a = hop(7, [10, 0, 0, 1], none);
        let b = hop(3, [10, 0, 0, 9], none);
        let c = hop(5, [10, 0, 0, 4], none);
        let want = Some((3, Ipv4Addr::new(10, 0, 0, 9)));
        assert_eq!(rpf_next_hop(&[a.clone(), b.clone(), c.clone()]), want);
        assert_eq!(rpf_next_hop(&[c, b, a]), want);
    }

    #[test]
    fn multipath_rpf_breaks_gateway_ties_by_lowest_ifindex_and_skips_dead_hops() {
        let none = RouteNextHopFlags::empty();
        let tie = [hop(9, [0; 4], none), hop(4, [0; 4], none)];
        assert_eq!(rpf_next_hop(&tie), Some((4, Ipv4Addr::UNSPECIFIED)));
        let dead = hop(2, [10, 0, 0, 200], RouteNextHopFlags::Dead);
        let live = hop(6, [10, 0, 0, 1], none);
        assert_eq!(
            rpf_next_hop(&[dead.clone(), live]),
            Some((6, Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert_eq!(
            rpf_next_hop(&[dead]),
            Some((2, Ipv4Addr::new(10, 0, 0, 200))),
            "all dead: still one answer"
        );
        assert_eq!(rpf_next_hop(&[]), None);
    }
}
