//! Given/when/then tests of the querier: inputs in, polled outputs checked in order, time
//! moved only by the harness. One file per RFC area; `prop.rs` runs random sequences.

mod compat;
mod election;
mod exclude;
mod fast_leave;
mod limits;
mod prop;
mod reload;
mod rfc2236;
mod rfc3376;
mod stall;
mod strict;

use std::net::Ipv4Addr;

use super::{
    Config, Heard, Instant, IpHeader, Membership, Querier, Transmit, Version, ALL_SYSTEMS,
};
use crate::igmp::codec::{GroupRecord, IgmpMessage, QueryV3, RecordType};

pub(super) const IF: u32 = 7;
pub(super) const OWN: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
pub(super) const LOWER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub(super) const HIGHER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);
pub(super) const H1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 101);
pub(super) const H2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 102);
pub(super) const G: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);
pub(super) const G2: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 2);
pub(super) const G3: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 3);
pub(super) const S1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub(super) const S2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub(super) const S3: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
pub(super) const S4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 4);

/// RFC defaults in milliseconds.
pub(super) const QI: u64 = 125_000;
pub(super) const GMI: u64 = 260_000;
pub(super) const OQPI: u64 = 255_000;
pub(super) const SQI: u64 = 31_250;
pub(super) const LMQI: u64 = 1_000;
pub(super) const LMQT: u64 = 2_000;

/// One querier, a simulated clock, and everything it output with the time it did.
pub(super) struct Harness {
    pub q: Querier,
    pub now: Instant,
    start: Instant,
    sent: Vec<(u64, Transmit)>,
    members: Vec<(u64, Membership)>,
}

impl Harness {
    pub fn new(config: Config) -> Self {
        let start = Instant::from_millis(1_000_000);
        let q = Querier::new(IF, OWN, config, start).expect("valid config");
        let mut h = Harness {
            q,
            now: start,
            start,
            sent: Vec::new(),
            members: Vec::new(),
        };
        h.collect();
        h
    }

    /// RFC 3376 defaults, startup queries already drained.
    pub fn v3_router() -> Self {
        let mut h = Self::new(Config::default());
        h.sent.clear();
        h
    }

    /// RFC 2236 defaults, startup queries already drained.
    pub fn v2_router() -> Self {
        let mut h = Self::new(Config {
            version: Version::V2,
            ..Config::default()
        });
        h.sent.clear();
        h
    }

    /// Milliseconds since the harness started.
    pub fn elapsed(&self) -> u64 {
        self.now.as_millis() - self.start.as_millis()
    }

    pub fn collect(&mut self) {
        let at = self.elapsed();
        while let Some(t) = self.q.poll_transmit() {
            self.sent.push((at, t));
        }
        while let Some(m) = self.q.poll_membership() {
            self.members.push((at, m));
        }
    }

    /// Moves time `ms` on, running every deadline on the way at its own time.
    pub fn advance(&mut self, ms: u64) {
        let target = Instant::from_millis(self.now.as_millis() + ms);
        while let Some(t) = self.q.poll_timeout() {
            if t > target {
                break;
            }
            assert!(t >= self.now, "deadline {t:?} before now {:?}", self.now);
            self.now = t;
            self.q.handle_timeout(t);
            self.collect();
        }
        self.now = target;
    }

    /// Moves time on to `ms` after the start.
    pub fn advance_to(&mut self, ms: u64) {
        let elapsed = self.elapsed();
        assert!(ms >= elapsed);
        self.advance(ms - elapsed);
    }

    pub fn recv(&mut self, from: Ipv4Addr, msg: IgmpMessage) -> Heard {
        self.recv_with(IpHeader::conforming(from), msg)
    }

    /// [`Harness::recv`] with the IPv4 header `ip`.
    pub fn recv_with(&mut self, ip: IpHeader, msg: IgmpMessage) -> Heard {
        let heard = self.q.handle_message(self.now, ip, &msg);
        self.collect();
        heard
    }

    /// Sends one v3 record from `from`.
    pub fn v3(&mut self, from: Ipv4Addr, kind: RecordType, group: Ipv4Addr, sources: &[Ipv4Addr]) {
        self.recv(from, v3_report(kind, group, sources));
    }

    /// Queries sent since the last call, with the time they were sent.
    pub fn take_sent(&mut self) -> Vec<(u64, Transmit)> {
        std::mem::take(&mut self.sent)
    }

    /// Queries sent since the last call.
    pub fn sent(&mut self) -> Vec<Transmit> {
        self.take_sent().into_iter().map(|(_, t)| t).collect()
    }

    /// Membership changes since the last call, with their time.
    pub fn take_members(&mut self) -> Vec<(u64, Membership)> {
        std::mem::take(&mut self.members)
    }

    /// Membership changes since the last call.
    pub fn members(&mut self) -> Vec<Membership> {
        self.take_members().into_iter().map(|(_, m)| m).collect()
    }

    /// The sources of `group` and whether each timer runs, or `None` without a record.
    pub fn sources(&self, group: Ipv4Addr) -> Option<Vec<(Ipv4Addr, bool)>> {
        self.q
            .group(group)
            .map(|g| g.sources().map(|(s, t)| (s, t.is_some())).collect())
    }

    /// The timer of one source, in ms after the start.
    pub fn source_timer(&self, group: Ipv4Addr, source: Ipv4Addr) -> Option<u64> {
        let g = self.q.group(group)?;
        let (_, t) = g.sources().find(|(s, _)| *s == source)?;
        t.map(|t| t.as_millis() - self.start.as_millis())
    }

    /// The group timer, in ms after the start.
    pub fn group_timer(&self, group: Ipv4Addr) -> Option<u64> {
        let t = self.q.group(group)?.group_timer()?;
        Some(t.as_millis() - self.start.as_millis())
    }
}

pub(super) fn v3_report(kind: RecordType, group: Ipv4Addr, sources: &[Ipv4Addr]) -> IgmpMessage {
    IgmpMessage::V3Report {
        records: vec![GroupRecord {
            kind,
            group,
            sources: sources.to_vec(),
        }],
        truncated: false,
    }
}

/// A v3 query as the default configuration sends it.
pub(super) fn v3_query(group: Ipv4Addr, sources: &[Ipv4Addr], s_flag: bool) -> IgmpMessage {
    let max_resp_code = if group.is_unspecified() { 100 } else { 10 };
    IgmpMessage::Query {
        max_resp_code,
        group,
        v3: Some(QueryV3 {
            s_flag,
            qrv: 2,
            qqic: 125,
            sources: sources.to_vec(),
        }),
    }
}

/// The general query of the default v3 configuration.
pub(super) fn general_query() -> Transmit {
    Transmit {
        destination: ALL_SYSTEMS,
        message: v3_query(Ipv4Addr::UNSPECIFIED, &[], false),
    }
}

/// A group-specific query for `group`, to `group`.
pub(super) fn group_query(group: Ipv4Addr, s_flag: bool) -> Transmit {
    Transmit {
        destination: group,
        message: v3_query(group, &[], s_flag),
    }
}

/// A group-and-source-specific query, to `group`.
pub(super) fn source_query(group: Ipv4Addr, sources: &[Ipv4Addr], s_flag: bool) -> Transmit {
    Transmit {
        destination: group,
        message: v3_query(group, sources, s_flag),
    }
}

pub(super) fn join(source: Option<Ipv4Addr>, group: Ipv4Addr) -> Membership {
    Membership {
        ifindex: IF,
        source,
        group,
        exclude: false,
        join: true,
    }
}

pub(super) fn leave(source: Option<Ipv4Addr>, group: Ipv4Addr) -> Membership {
    Membership {
        join: false,
        ..join(source, group)
    }
}

/// An exclusion of `source` under the (*,G) starts (spec §4.8).
pub(super) fn exclusion(source: Ipv4Addr, group: Ipv4Addr) -> Membership {
    Membership {
        exclude: true,
        ..join(Some(source), group)
    }
}

/// An exclusion of `source` ends while the (*,G) stays.
pub(super) fn end_exclusion(source: Ipv4Addr, group: Ipv4Addr) -> Membership {
    Membership {
        exclude: true,
        ..leave(Some(source), group)
    }
}
