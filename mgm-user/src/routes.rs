//! The kernel's IPv4 unicast routes, read over rtnetlink, as the core's RPF table (spec §10:
//! "RTM_GETROUTE … on a configurable table that stands in for the multicast view").

use std::net::Ipv4Addr;

use anyhow::Context;
use futures::{channel::mpsc::UnboundedReceiver, StreamExt, TryStreamExt};
use rtnetlink::{
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteType},
        AddressFamily, RouteNetlinkMessage,
    },
    sys::SocketAddr,
    MulticastGroup,
};

use crate::core::{InterfaceId, Route};

/// The main routing table's id.
pub const RT_TABLE_MAIN: u32 = 254;

/// Every IPv4 unicast route of `table` with a single outgoing interface, in the form the core
/// takes. Multipath routes are left out (their first hop would be a guess) and counted in the
/// second value.
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
    let mut skipped = 0;
    let routes = messages
        .iter()
        .filter(|m| route_table(m) == table)
        .filter_map(|m| {
            let r = to_route(m);
            if r.is_none() && is_multipath(m) {
                skipped += 1;
            }
            r
        })
        .collect();
    Ok((routes, skipped))
}

/// A change to the routes of the watched table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteChange {
    Added(Route),
    Deleted { network: Ipv4Addr, prefix_len: u8 },
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

    /// The next change to a unicast single-path route of the table; `None` if the socket closed.
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

fn is_multipath(m: &RouteMessage) -> bool {
    m.attributes
        .iter()
        .any(|a| matches!(a, RouteAttribute::MultiPath(_)))
}

/// A unicast IPv4 route with one outgoing interface; `None` for anything else.
fn to_route(m: &RouteMessage) -> Option<Route> {
    if m.header.address_family != AddressFamily::Inet || m.header.kind != RouteType::Unicast {
        return None;
    }
    let mut network = Ipv4Addr::UNSPECIFIED;
    let mut upstream = Ipv4Addr::UNSPECIFIED;
    let mut oif = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => network = *d,
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => upstream = *g,
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    Some(Route {
        network,
        prefix_len: m.header.destination_prefix_length,
        if_id: InterfaceId::new(oif?),
        upstream,
        protocol: u32::from(u8::from(m.header.protocol)),
    })
}
