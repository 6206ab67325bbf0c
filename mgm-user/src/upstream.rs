//! The daemon's edge of the IGMP proxy's host side: the upstream interface's report socket and
//! link-layer filter, driven by [`Upstream`] from the merged downstream state of the groups
//! whose receivers changed, the IGMP heard upstream and the entries a previous daemon left.
//! The reports and filter changes it decides go to a worker thread ([`crate::offload`]): a
//! send on a full buffer or an ioctl waiting for the kernel's rtnl lock never holds up the
//! event loop.

use std::{collections::BTreeSet, io, net::Ipv4Addr, time::Duration};

use anyhow::Context;
use log::{debug, info, warn};

use crate::{
    core::{DataPlaneEntry, GroupFilter, Instant, InterfaceId, Mgm},
    dataplane::netdev::NetDev,
    igmp::{codec, host, querier},
    offload::{Failure, UpstreamSink, UpstreamWorker},
    protocols::igmp_proxy::{downstream_state, FilterChange, Upstream, UpstreamQueue},
    ratelimit::{suppressed, RateLimit},
    sockets::{LinkFilter, QuerySocket},
};

/// Least time between two warnings of the worker's failures or of reports it fell behind on.
const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// Upstream changes logged at info per interval; the rest go to debug.
const CHANGES_LOGGED: u32 = 20;
const CHANGES_INTERVAL: Duration = Duration::from_secs(1);

/// The upstream interface's report socket and link-layer filter, where the worker's calls go.
struct Wire {
    socket: QuerySocket,
    filter: LinkFilter,
}

impl UpstreamSink for Wire {
    fn send(&mut self, destination: Ipv4Addr, igmp: &[u8]) -> io::Result<()> {
        self.socket.send(destination, igmp)
    }

    fn filter(&mut self, group: Ipv4Addr, receive: bool) -> io::Result<()> {
        if receive {
            self.filter.add(group)
        } else {
            self.filter.remove(group)
        }
    }
}

/// The proxy's host side on its upstream interface, with its sockets.
pub struct UpstreamEdge {
    ifindex: u32,
    name: String,
    state: Upstream,
    /// Where the routing side notes the groups its alerts were about.
    changes: UpstreamQueue,
    /// Makes the system calls: sends the reports, changes the filter; none while the
    /// interface is gone.
    worker: Option<UpstreamWorker>,
    /// Reports dropped behind the workers of the interface's earlier links.
    dropped_before: u64,
    /// Times the host side started on a link after waiting for it.
    relinks: u64,
    /// The worker's failures so far, and their warnings' limit.
    failures: u64,
    failed: RateLimit,
    /// The limit of the warnings of reports dropped over the worker's queue.
    behind: RateLimit,
    /// The limit of the info lines of what upstream is told.
    changed: RateLimit,
}

impl UpstreamEdge {
    /// The host side on upstream `name`, which is `dev` at start, taking the groups the
    /// routing side's alerts were about from `changes`; its robustness and intervals are
    /// those IGMP runs with downstream. It reports at once if `dev` is up with an IPv4
    /// address, else from when the interface is ([`UpstreamEdge::relink`]): the proxy waits
    /// for its upstream as for any managed interface (spec §10).
    ///
    /// # Errors
    /// A socket or the worker thread cannot be opened.
    pub fn open(
        name: &str,
        dev: Option<&NetDev>,
        changes: UpstreamQueue,
        igmp: &querier::Config,
    ) -> anyhow::Result<UpstreamEdge> {
        let mut edge = UpstreamEdge::new(name, dev.map_or(0, |d| d.ifindex), changes, igmp);
        match dev {
            Some(d) if d.up && d.ipv4.is_some() => edge.worker = Some(wire(d)?),
            _ => warn!(
                "upstream: {name} does not exist, is down or has no IPv4 address; the proxy \
                 reports there once it is up with one"
            ),
        }
        Ok(edge)
    }

    /// The interface is gone, down or without an address: its sockets are stale or cannot
    /// send, and what the host would send is dropped until [`UpstreamEdge::relink`]. The
    /// worker finishes its queue on its own.
    pub fn gone(&mut self) {
        if let Some(w) = self.worker.take() {
            self.dropped_before += w.dropped();
            warn!(
                "upstream: {} is gone, down or without an IPv4 address; the proxy reports \
                 there again once it is up with one",
                self.name
            );
        }
    }

    /// Whether the host side runs on `ifindex` (not gone, not on an earlier link).
    pub fn runs_on(&self, ifindex: u32) -> bool {
        self.worker.is_some() && self.ifindex == ifindex
    }

    /// The interface appeared again as `dev`: the host side moves to it and reports every
    /// group at once there, as a host that starts (RFC 3376 §5.1).
    ///
    /// # Errors
    /// `dev` has no IPv4 address, or a socket cannot be opened: the host side stays gone.
    pub fn relink(&mut self, now: Instant, dev: &NetDev) -> anyhow::Result<()> {
        self.gone();
        self.worker = Some(wire(dev)?);
        self.ifindex = dev.ifindex;
        self.relinks += 1;
        self.state.relink(now);
        info!(
            "upstream: {} is up (ifindex {}): reporting {} groups there again",
            self.name,
            self.ifindex,
            self.state.groups().count()
        );
        self.flush(now);
        Ok(())
    }

    /// The host side on `name`, ifindex `ifindex`, with no worker yet.
    fn new(
        name: &str,
        ifindex: u32,
        changes: UpstreamQueue,
        igmp: &querier::Config,
    ) -> UpstreamEdge {
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
        UpstreamEdge {
            ifindex,
            name: name.to_owned(),
            state: Upstream::new(config, seed),
            changes,
            worker: None,
            dropped_before: 0,
            relinks: 0,
            failures: 0,
            failed: RateLimit::new(WARN_INTERVAL),
            behind: RateLimit::new(WARN_INTERVAL),
            changed: RateLimit::burst(CHANGES_INTERVAL, CHANGES_LOGGED),
        }
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn name(&self) -> &str {
        &self.name
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
        self.flush(now);
    }

    /// The core has reconciled the adopted entries: only its joins count now.
    pub fn end_adoption(&mut self, now: Instant) {
        self.state.end_adoption(now);
        self.flush(now);
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
            let state = downstream_state(mgm, g, upstream);
            if self.state.wanted(g) != state.as_ref() {
                // Each change at info while they are few; a downstream flood of random
                // groups shows at debug, its volume in the next info line's note.
                match self.changed.allow(now) {
                    Some(n) => info!(
                        "upstream: {}{}",
                        Wanted(g, state.as_ref()),
                        suppressed(n, CHANGES_INTERVAL)
                    ),
                    None => debug!("upstream: {}", Wanted(g, state.as_ref())),
                }
            }
            self.state.set(now, g, state);
        }
        self.flush(now);
    }

    /// Hands the pending reports and filter changes to the worker, in the order decided;
    /// drops them while the interface is gone (a relink reports the state anew).
    fn flush(&mut self, now: Instant) {
        let Some(worker) = &mut self.worker else {
            while self.state.poll_transmit().is_some() {}
            while self.state.poll_filter().is_some() {}
            return;
        };
        while let Some(t) = self.state.poll_transmit() {
            if !worker.report(t.destination, codec::encode(&t.message)) {
                let total = self.dropped_before + worker.dropped();
                if let Some(n) = self.behind.allow(now) {
                    warn!(
                        "upstream: the oldest IGMP report waiting for {} dropped, the worker \
                         being {} reports behind ({total} dropped so far; the host's \
                         retransmissions and query answers carry the state){}",
                        self.name,
                        crate::offload::REPORT_QUEUE,
                        suppressed(n, WARN_INTERVAL)
                    );
                }
            }
        }
        while let Some(change) = self.state.poll_filter() {
            let (group, receive) = match change {
                FilterChange::Add(g) => (g, true),
                FilterChange::Remove(g) => (g, false),
            };
            debug!(
                "upstream: {} {} {group} at the link layer",
                self.name,
                if receive {
                    "receives"
                } else {
                    "stops receiving"
                }
            );
            worker.filter(group, receive);
        }
    }

    /// The next failure of the worker's system calls; never, once the worker has ended or
    /// while the interface is gone.
    pub async fn next_failure(&mut self) -> Failure {
        let Some(worker) = &mut self.worker else {
            return std::future::pending().await;
        };
        match worker.next_failure().await {
            Some(f) => f,
            None => std::future::pending().await,
        }
    }

    /// Times the host side started on a link after waiting for it.
    pub fn relinks(&self) -> u64 {
        self.relinks
    }

    /// The worker's calls that failed so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Reports dropped so far because the worker was behind.
    pub fn reports_dropped(&self) -> u64 {
        self.dropped_before + self.worker.as_ref().map_or(0, UpstreamWorker::dropped)
    }

    /// Counts a failure of the worker's system calls and logs it, rate-limited.
    pub fn failed(&mut self, now: Instant, failure: &Failure) {
        self.failures += 1;
        if let Some(n) = self.failed.allow(now) {
            warn!(
                "upstream on {}: {failure} ({} failures so far){}",
                self.name,
                self.failures,
                suppressed(n, WARN_INTERVAL)
            );
        }
    }

    /// A planned stop: every group is left upstream and the link-layer entries go; waits a
    /// bounded time for the worker to do that.
    pub fn stop(mut self, now: Instant) {
        self.state.leave_all(now);
        self.flush(now);
        let name = self.name.clone();
        let failures = self.failures;
        let dropped = self.reports_dropped();
        let Some(worker) = self.worker.take() else {
            return;
        };
        match worker.stop() {
            Ok(()) => info!(
                "upstream: left every group on {name} ({failures} calls failed, {dropped} \
                 reports dropped behind the worker)"
            ),
            Err(waited) => warn!(
                "upstream: the worker on {name} did not finish leaving in {waited:?}: a system \
                 call is stuck; the groups it did not leave time out upstream"
            ),
        }
    }
}

/// The worker making the host side's system calls on `dev`, with its sockets.
fn wire(dev: &NetDev) -> anyhow::Result<UpstreamWorker> {
    let address = dev.ipv4.with_context(|| {
        format!(
            "{} has no IPv4 address; the proxy reports upstream from it",
            dev.name
        )
    })?;
    let socket = QuerySocket::new(dev, address)
        .with_context(|| format!("cannot open the upstream report socket on {}", dev.name))?;
    let filter = LinkFilter::new(dev).context("cannot open a socket for SIOCADDMULTI")?;
    UpstreamWorker::spawn(&dev.name, Wire { socket, filter })
        .context("cannot start the upstream's worker thread")
}

/// What the downstreams want of `group`, in the words of the log: "join (*, 239.1.1.1)",
/// "join (*, 239.1.1.1) except 198.18.0.2", "join (198.18.0.2, 232.1.1.1)", "leave 239.1.1.1".
struct Wanted<'a>(Ipv4Addr, Option<&'a GroupFilter>);

impl std::fmt::Display for Wanted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Wanted(g, state) = *self;
        let list = |s: &BTreeSet<Ipv4Addr>| {
            s.iter()
                .map(Ipv4Addr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match state {
            None => write!(f, "leave {g}"),
            Some(GroupFilter::Exclude(x)) if x.is_empty() => write!(f, "join (*, {g})"),
            Some(GroupFilter::Exclude(x)) => write!(f, "join (*, {g}) except {}", list(x)),
            Some(GroupFilter::Include(s)) => {
                let entries: Vec<String> = s.iter().map(|s| format!("({s}, {g})")).collect();
                write!(f, "join {}", entries.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_downstreams_want_reads_as_the_operator_writes_it() {
        let g = Ipv4Addr::new(232, 1, 1, 1);
        let s = Ipv4Addr::new(198, 18, 0, 2);
        let t = Ipv4Addr::new(198, 18, 0, 3);
        let line = |state: Option<GroupFilter>| Wanted(g, state.as_ref()).to_string();
        assert_eq!(line(None), "leave 232.1.1.1");
        assert_eq!(
            line(Some(GroupFilter::Exclude(BTreeSet::new()))),
            "join (*, 232.1.1.1)"
        );
        assert_eq!(
            line(Some(GroupFilter::Exclude([s, t].into()))),
            "join (*, 232.1.1.1) except 198.18.0.2, 198.18.0.3"
        );
        assert_eq!(
            line(Some(GroupFilter::Include([s].into()))),
            "join (198.18.0.2, 232.1.1.1)"
        );
    }
}
