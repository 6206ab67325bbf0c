//! The "multicast view" of the unicast routing table that RPF lookups use (spec §5.2 step 1,
//! §4.5 for (S,G) alerts). The driver feeds it from rtnetlink (spec §10); the core only does
//! longest-prefix matches on it and performs no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use super::error::MgmError;
use super::protocol::RouteInfo;
use super::types::InterfaceId;

/// One unicast route toward a set of sources.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The prefix's network address; host bits must be zero.
    pub network: Ipv4Addr,
    /// The prefix length, 0..=32.
    pub prefix_len: u8,
    /// The interface toward the sources: the RPF interface.
    pub if_id: InterfaceId,
    /// The next hop toward the sources: the upstream neighbour.
    pub upstream: Ipv4Addr,
    /// The routing protocol that installed the route (`rtm_protocol`).
    pub protocol: u32,
    /// The route's metric (`RTA_PRIORITY`): of several routes to one prefix, the lowest
    /// counts, as in the kernel's forwarding.
    pub metric: u32,
}

/// "198.18.0.0/24 via ifindex 2 metric 0" (and "next hop A" when there is one).
impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} via ifindex {}",
            self.network, self.prefix_len, self.if_id.ifindex
        )?;
        if !self.upstream.is_unspecified() {
            write!(f, " next hop {}", self.upstream)?;
        }
        write!(f, " metric {}", self.metric)
    }
}

impl Route {
    /// The prefix's mask, e.g. 255.255.0.0 for a /16.
    pub fn mask(&self) -> Ipv4Addr {
        prefix_mask(self.prefix_len)
    }

    /// The route as the RPF callback and the MFE record report it (spec §5.1).
    pub fn info(&self) -> RouteInfo {
        RouteInfo {
            protocol: self.protocol,
            network: self.network,
            mask: self.mask(),
        }
    }
}

fn prefix_mask(len: u8) -> Ipv4Addr {
    match len {
        0 => Ipv4Addr::UNSPECIFIED,
        n => Ipv4Addr::from(u32::MAX << (32 - u32::from(n.min(32)))),
    }
}

/// Routes keyed by (prefix length, network, metric), so a lookup tries at most 33 prefixes
/// and takes each one's lowest metric.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    routes: BTreeMap<(u8, Ipv4Addr, u32), Route>,
}

impl RouteTable {
    /// Adds a route, or replaces the one with the same prefix and metric (as the kernel's
    /// `ip route replace` does); a prefix longer than 32 or with host bits set is invalid.
    pub(crate) fn insert(&mut self, route: Route) -> Result<(), MgmError> {
        if route.prefix_len > 32 || u32::from(route.network) & !u32::from(route.mask()) != 0 {
            return Err(MgmError::InvalidParameter);
        }
        self.routes
            .insert((route.prefix_len, route.network, route.metric), route);
        Ok(())
    }

    /// Removes the route with this prefix and metric.
    pub(crate) fn remove(
        &mut self,
        network: Ipv4Addr,
        prefix_len: u8,
        metric: u32,
    ) -> Option<Route> {
        self.routes.remove(&(prefix_len, network, metric))
    }

    /// Longest-prefix match for `addr`, the lowest metric among that prefix's routes.
    pub(crate) fn lookup(&self, addr: Ipv4Addr) -> Option<&Route> {
        (0..=32u8).rev().find_map(|len| {
            let net = Ipv4Addr::from(u32::from(addr) & u32::from(prefix_mask(len)));
            self.routes
                .range((len, net, 0)..=(len, net, u32::MAX))
                .next()
                .map(|(_, r)| r)
        })
    }
}
