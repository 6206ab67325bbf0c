//! The daemon's edge of the IGMP proxy's host side: the upstream interface's report socket and
//! link-layer filter, driven by [`Upstream`] from the routing side's membership changes, the
//! IGMP heard upstream and the entries a previous daemon left.

use anyhow::Context;
use log::{info, warn};

use crate::{
    core::{DataPlaneEntry, Instant},
    dataplane::netdev::NetDev,
    igmp::{codec, host, querier},
    protocols::igmp_proxy::{FilterChange, Upstream, UpstreamQueue},
    sockets::{LinkFilter, QuerySocket},
};

/// The proxy's host side on its upstream interface, with its sockets.
pub struct UpstreamEdge {
    ifindex: u32,
    name: String,
    state: Upstream,
    /// Where the routing side queues its membership changes.
    changes: UpstreamQueue,
    socket: QuerySocket,
    filter: LinkFilter,
}

impl UpstreamEdge {
    /// The host side on `dev`, taking the routing side's changes from `changes`; its
    /// robustness and intervals are those IGMP runs with downstream.
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
        self.pump(now);
    }

    /// The core has reconciled the adopted entries: only its joins count now.
    pub fn end_adoption(&mut self, now: Instant) {
        self.state.end_adoption(now);
        self.pump(now);
    }

    /// An IGMP message heard on the upstream interface.
    pub fn handle_message(&mut self, now: Instant, msg: &codec::IgmpMessage) {
        self.state.handle_message(now, msg);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.state.handle_timeout(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.state.poll_timeout()
    }

    /// Takes the routing side's queued changes, then sends the reports and applies the filter
    /// changes they made.
    pub fn pump(&mut self, now: Instant) {
        let pending: Vec<_> = self
            .changes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .drain(..)
            .collect();
        for change in pending {
            info!("upstream: {change}");
            self.state.apply(now, change);
        }
        while let Some(t) = self.state.poll_transmit() {
            let bytes = codec::encode(&t.message);
            if let Err(e) = self.socket.send(t.destination, &bytes) {
                warn!("cannot send an IGMP report on {}: {e}", self.name);
            }
        }
        while let Some(change) = self.state.poll_filter() {
            let result = match change {
                FilterChange::Add(g) => self.filter.add(g),
                FilterChange::Remove(g) => self.filter.remove(g),
            };
            if let Err(e) = result {
                let (verb, group) = match change {
                    FilterChange::Add(g) => ("adding", g),
                    FilterChange::Remove(g) => ("removing", g),
                };
                warn!(
                    "{}: {verb} {group} to the link-layer filter failed: {e}",
                    self.name
                );
            }
        }
    }

    /// A planned stop: every group is left upstream and the link-layer entries go.
    pub fn stop(mut self, now: Instant) {
        self.pump(now);
        self.state.leave_all(now);
        self.pump(now);
        if let Err(e) = self.filter.clear() {
            warn!("{}: cannot clear the link-layer filter: {e}", self.name);
        }
        info!("upstream: left every group on {}", self.name);
    }
}
