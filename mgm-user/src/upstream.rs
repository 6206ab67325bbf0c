//! The daemon's edge of the IGMP proxy's host side: the upstream interface's report socket and
//! link-layer filter, driven by [`Upstream`] from the merged downstream state of the groups
//! whose receivers changed, the IGMP heard upstream and the entries a previous daemon left.

use std::{collections::BTreeSet, net::Ipv4Addr};

use anyhow::Context;
use log::{info, warn};

use crate::{
    core::{DataPlaneEntry, Instant, InterfaceId, Mgm},
    dataplane::netdev::NetDev,
    igmp::{codec, host, querier},
    protocols::igmp_proxy::{downstream_state, FilterChange, Upstream, UpstreamQueue},
    sockets::{LinkFilter, QuerySocket},
};

/// The proxy's host side on its upstream interface, with its sockets.
pub struct UpstreamEdge {
    ifindex: u32,
    name: String,
    state: Upstream,
    /// Where the routing side notes the groups its alerts were about.
    changes: UpstreamQueue,
    socket: QuerySocket,
    filter: LinkFilter,
}

impl UpstreamEdge {
    /// The host side on `dev`, taking the groups the routing side's alerts were about from
    /// `changes`; its robustness and intervals are those IGMP runs with downstream.
    ///
    /// # Errors
    /// `dev` has no IPv4 address to report from, or a socket cannot be opened.
    pub fn open(
        dev: &NetDev,
        changes: UpstreamQueue,
        igmp: &querier::Config,
    ) -> anyhow::Result<UpstreamEdge> {
        let address = dev.ipv4.with_context(|| {
            format!(
                "{} has no IPv4 address; the proxy reports upstream from it",
                dev.name
            )
        })?;
        let socket = QuerySocket::new(dev, address)
            .with_context(|| format!("cannot open the upstream report socket on {}", dev.name))?;
        let filter = LinkFilter::new(dev).context("cannot open a socket for SIOCADDMULTI")?;
        let config = host::Config {
            robustness: igmp.robustness,
            query_interval: igmp.query_interval,
            query_response_interval: igmp.query_response_interval,
            ..host::Config::default()
        };
        // Report delays need only differ between hosts, not be unpredictable.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        Ok(UpstreamEdge {
            ifindex: dev.ifindex,
            name: dev.name.clone(),
            state: Upstream::new(config, seed),
            changes,
            socket,
            filter,
        })
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Reports the groups of the adopted entries that arrive upstream and go somewhere, at once.
    pub fn adopt(&mut self, now: Instant, entries: &[DataPlaneEntry]) {
        let upstream = entries
            .iter()
            .filter(|e| e.iif.ifindex == self.ifindex && !e.oifs.is_empty())
            .map(|e| (e.source, e.group));
        self.state.adopt(now, upstream);
        let n = self.state.groups().count();
        info!(
            "upstream: announcing {n} groups of adopted entries on {}",
            self.name
        );
        self.flush();
    }

    /// The core has reconciled the adopted entries: only its joins count now.
    pub fn end_adoption(&mut self, now: Instant) {
        self.state.end_adoption(now);
        self.flush();
    }

    /// An IGMP message heard on the upstream interface.
    pub fn handle_message(&mut self, now: Instant, msg: &codec::IgmpMessage) {
        self.state.handle_message(now, msg);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.state.handle_timeout(now);
    }

    /// An interface changed owner: see [`Upstream::hold`].
    pub fn hold(&mut self, now: Instant) {
        self.state.hold(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.state.poll_timeout()
    }

    /// Reports upstream the merged downstream state of the groups the routing side's alerts
    /// were about, of `touched` and, with `all`, of every group some receiver wants (after
    /// changes no alert tells of, such as an exclusion or a module's request), then sends the
    /// reports and applies the filter changes that made.
    pub fn pump(&mut self, now: Instant, mgm: &Mgm, touched: &[Ipv4Addr], all: bool) {
        let mut groups: BTreeSet<Ipv4Addr> = std::mem::take(
            &mut *self
                .changes
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        groups.extend(touched);
        if all {
            groups.extend(self.state.wanted_groups());
        }
        let upstream = InterfaceId::new(self.ifindex);
        for g in groups {
            self.state.set(now, g, downstream_state(mgm, g, upstream));
        }
        self.flush();
    }

    /// Sends the pending reports and applies the pending filter changes.
    fn flush(&mut self) {
        while let Some(t) = self.state.poll_transmit() {
            let bytes = codec::encode(&t.message);
            if let Err(e) = self.socket.send(t.destination, &bytes) {
                warn!("cannot send an IGMP report on {}: {e}", self.name);
            }
        }
        while let Some(change) = self.state.poll_filter() {
            info!("upstream: {change:?} on {}", self.name);
            let result = match change {
                FilterChange::Add(g) => self.filter.add(g),
                FilterChange::Remove(g) => self.filter.remove(g),
            };
            if let Err(e) = result {
                warn!("{}: link-layer filter {change:?} failed: {e}", self.name);
            }
        }
    }

    /// A planned stop: every group is left upstream and the link-layer entries go.
    pub fn stop(mut self, now: Instant) {
        self.state.leave_all(now);
        self.flush();
        if let Err(e) = self.filter.clear() {
            warn!("{}: cannot clear the link-layer filter: {e}", self.name);
        }
        info!("upstream: left every group on {}", self.name);
    }
}
