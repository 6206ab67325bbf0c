//! One group's router filter state (RFC 3376 §6.2) and what each record does to it
//! (§6.4 tables, §6.5 mode switch). Pure state transitions: sending queries, fast leave and
//! membership output are the caller's ([`super::Querier`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use super::{after, config::Params, Entry, Instant, Version};
use crate::igmp::codec::RecordType;

/// Router filter mode of a group (RFC 3376 §6.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterMode {
    /// Forward only the listed sources.
    Include,
    /// Forward every source except those whose timer is 0: (*,G) with those sources excluded
    /// (see [`super::Membership`]).
    Exclude,
}

/// The per-group timers, indexing [`Group::timers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GroupTimer {
    /// The group timer of EXCLUDE mode (RFC 3376 §6.2.2). Unused in INCLUDE mode.
    Filter = 0,
    /// IGMPv1 Host Present timer (RFC 3376 §7.3.2).
    V1Host = 1,
    /// IGMPv2 Host Present timer (RFC 3376 §7.3.2).
    V2Host = 2,
    /// Next retransmission of the group-specific query (RFC 3376 §6.6.3.1).
    GroupQuery = 3,
    /// Next retransmission of group-and-source-specific queries (RFC 3376 §6.6.3.2).
    SourceQuery = 4,
}

impl GroupTimer {
    pub(super) const COUNT: usize = 5;
}

/// What one host last told us about one group, kept only with fast leave on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Host {
    /// The host's own filter, or `Exclude({})` for a v1/v2 report.
    pub(super) mode: FilterMode,
    /// The sources of `mode`.
    pub(super) sources: BTreeSet<Ipv4Addr>,
    /// When we forget the host unless it reports again (group membership interval).
    pub(super) expires: Instant,
}

impl Host {
    /// What the host's record costs against the host budget: itself and each source.
    pub(super) fn cost(&self) -> usize {
        1 + self.sources.len()
    }

    /// Whether this host wants traffic from `source`.
    pub(super) fn wants(&self, source: Ipv4Addr) -> bool {
        match self.mode {
            FilterMode::Include => self.sources.contains(&source),
            FilterMode::Exclude => !self.sources.contains(&source),
        }
    }
}

/// Queries a record asks for (the "Send Q(..)" actions of RFC 3376 §6.4.2).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct QueryActions {
    /// Send Q(G).
    pub(super) group: bool,
    /// Send Q(G, sources).
    pub(super) sources: BTreeSet<Ipv4Addr>,
}

/// How many source records the interface may still create.
#[derive(Debug)]
pub(super) struct SourceBudget {
    /// Source records on the interface now.
    pub(super) used: usize,
    /// The limit, if any.
    pub(super) max: Option<usize>,
    /// Creations refused so far.
    pub(super) refused: u64,
}

impl SourceBudget {
    /// Trades a charge of `old` for one of `new`; `false` (and counted) when the limit
    /// refuses the growth.
    pub(super) fn recharge(&mut self, old: usize, new: usize) -> bool {
        let used = self.used - old + new;
        if new > old && self.max.is_some_and(|max| used > max) {
            self.refused += 1;
            return false;
        }
        self.used = used;
        true
    }

    fn take(&mut self) -> bool {
        if self.max.is_some_and(|max| self.used >= max) {
            self.refused += 1;
            false
        } else {
            self.used += 1;
            true
        }
    }
}

/// Router filter state of one group on one interface (RFC 3376 §6.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Group {
    pub(super) mode: FilterMode,
    /// Source records and their timers. `None` is a timer of 0, which only EXCLUDE mode has:
    /// those sources are the exclude list, the others the requested list (§6.2.3).
    pub(super) sources: BTreeMap<Ipv4Addr, Option<Instant>>,
    /// Deadlines indexed by [`GroupTimer`].
    pub(super) timers: [Option<Instant>; GroupTimer::COUNT],
    /// Group-specific queries still to retransmit.
    pub(super) group_queries_left: u32,
    /// Per source: group-and-source-specific queries still to carry it (§6.6.3.2).
    pub(super) source_queries_left: BTreeMap<Ipv4Addr, u32>,
    /// Reporting hosts, with fast leave only.
    pub(super) hosts: BTreeMap<Ipv4Addr, Host>,
    /// The host whose report about the group came last, for the operator.
    pub(super) last_reporter: Option<Ipv4Addr>,
    /// The deadline the querier's index files the group under: [`Self::next_deadline`] as
    /// of the querier's last look.
    pub(super) indexed: Option<Instant>,
}

impl Group {
    /// A group without a record: INCLUDE({}) (RFC 3376 §6.4).
    pub(super) fn new() -> Self {
        Group {
            mode: FilterMode::Include,
            sources: BTreeMap::new(),
            timers: [None; GroupTimer::COUNT],
            group_queries_left: 0,
            source_queries_left: BTreeMap::new(),
            hosts: BTreeMap::new(),
            last_reporter: None,
            indexed: None,
        }
    }

    pub(super) fn timer(&self, t: GroupTimer) -> Option<Instant> {
        self.timers[t as usize]
    }

    pub(super) fn set_timer(&mut self, t: GroupTimer, at: Option<Instant>) {
        self.timers[t as usize] = at;
    }

    /// The group compatibility mode (RFC 3376 §7.3.2), never above the interface's.
    pub(super) fn compatibility(&self, interface: Version) -> Version {
        if self.timer(GroupTimer::V1Host).is_some() {
            Version::V1
        } else if self.timer(GroupTimer::V2Host).is_some() {
            Version::V2
        } else {
            interface
        }
    }

    /// Nothing left to remember: INCLUDE({}) (RFC 3376 §6.2.3 deletes the group record).
    pub(super) fn is_empty(&self) -> bool {
        self.mode == FilterMode::Include && self.sources.is_empty()
    }

    /// What this group asks MGM for (RFC 3376 §6.3, spec §4.8): (*,G) and an exclusion per
    /// source whose timer is 0 in EXCLUDE mode, (S,G) for each source in INCLUDE mode.
    pub(super) fn forwarding(&self) -> BTreeSet<Entry> {
        match self.mode {
            FilterMode::Exclude => self
                .excluded()
                .into_iter()
                .map(|s| (Some(s), true))
                .chain([(None, false)])
                .collect(),
            FilterMode::Include => self.sources.keys().map(|s| (Some(*s), false)).collect(),
        }
    }

    /// Moves every deadline of the group, its sources and its hosts `by` later.
    pub(super) fn postpone(&mut self, by: std::time::Duration) {
        let timers = self.timers.iter_mut().flatten();
        let sources = self.sources.values_mut().flatten();
        let hosts = self.hosts.values_mut().map(|h| &mut h.expires);
        for t in timers.chain(sources).chain(hosts) {
            *t = after(*t, by);
        }
    }

    /// The earliest deadline of the group, its sources and its hosts.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let timers = self.timers.iter().flatten();
        let sources = self.sources.values().flatten();
        let hosts = self.hosts.values().map(|h| &h.expires);
        timers.chain(sources).chain(hosts).min().copied()
    }

    fn requested(&self) -> BTreeSet<Ipv4Addr> {
        self.sources
            .iter()
            .filter(|(_, t)| t.is_some())
            .map(|(s, _)| *s)
            .collect()
    }

    fn excluded(&self) -> BTreeSet<Ipv4Addr> {
        self.sources
            .iter()
            .filter(|(_, t)| t.is_none())
            .map(|(s, _)| *s)
            .collect()
    }

    /// Sets (or creates, within `budget`) the timer of `source`.
    fn set_source(&mut self, source: Ipv4Addr, timer: Option<Instant>, budget: &mut SourceBudget) {
        if let Some(t) = self.sources.get_mut(&source) {
            *t = timer;
        } else if budget.take() {
            self.sources.insert(source, timer);
        }
    }

    /// Deletes every source record not in `keep`.
    fn keep_only(&mut self, keep: &BTreeSet<Ipv4Addr>, budget: &mut SourceBudget) {
        let before = self.sources.len();
        self.sources.retain(|s, _| keep.contains(s));
        budget.used -= before - self.sources.len();
        self.source_queries_left.retain(|s, _| keep.contains(s));
    }

    /// Deletes one source record.
    pub(super) fn remove_source(&mut self, source: Ipv4Addr, budget: &mut SourceBudget) {
        if self.sources.remove(&source).is_some() {
            budget.used -= 1;
        }
        self.source_queries_left.remove(&source);
    }

    /// Applies one group record, already translated for the compatibility mode, and
    /// returns the queries it asks for (RFC 3376 §6.4.1 and §6.4.2; A, B, X, Y as there).
    pub(super) fn apply(
        &mut self,
        now: Instant,
        kind: RecordType,
        b: &BTreeSet<Ipv4Addr>,
        p: &Params,
        budget: &mut SourceBudget,
    ) -> QueryActions {
        let gmi = Some(after(now, p.group_membership_interval));
        let mut ask = QueryActions::default();
        match (self.mode, kind) {
            // INCLUDE(A) + IS_IN(B) | ALLOW(B) → INCLUDE(A+B); (B)=GMI.
            (FilterMode::Include, RecordType::ModeIsInclude | RecordType::AllowNewSources) => {
                b.iter().for_each(|s| self.set_source(*s, gmi, budget));
            }
            // INCLUDE(A) + IS_EX(B) | TO_EX(B) → EXCLUDE(A*B, B-A); (B-A)=0; Delete (A-B);
            // Group Timer=GMI; TO_EX also sends Q(G, A*B).
            (FilterMode::Include, RecordType::ModeIsExclude | RecordType::ChangeToExclude) => {
                let a: BTreeSet<Ipv4Addr> = self.sources.keys().copied().collect();
                self.keep_only(b, budget);
                b.difference(&a)
                    .for_each(|s| self.set_source(*s, None, budget));
                self.mode = FilterMode::Exclude;
                self.set_timer(GroupTimer::Filter, gmi);
                if kind == RecordType::ChangeToExclude {
                    ask.sources = &a & b;
                }
            }
            // INCLUDE(A) + BLOCK(B) → INCLUDE(A); Send Q(G, A*B).
            (FilterMode::Include, RecordType::BlockOldSources) => {
                ask.sources = b
                    .iter()
                    .filter(|s| self.sources.contains_key(s))
                    .copied()
                    .collect();
            }
            // INCLUDE(A) + TO_IN(B) → INCLUDE(A+B); (B)=GMI; Send Q(G, A-B).
            (FilterMode::Include, RecordType::ChangeToInclude) => {
                ask.sources = self
                    .sources
                    .keys()
                    .filter(|s| !b.contains(s))
                    .copied()
                    .collect();
                b.iter().for_each(|s| self.set_source(*s, gmi, budget));
            }
            // EXCLUDE(X,Y) + IS_IN(A) | ALLOW(A) → EXCLUDE(X+A, Y-A); (A)=GMI.
            (FilterMode::Exclude, RecordType::ModeIsInclude | RecordType::AllowNewSources) => {
                b.iter().for_each(|s| self.set_source(*s, gmi, budget));
            }
            // EXCLUDE(X,Y) + IS_EX(A) → EXCLUDE(A-Y, Y*A); (A-X-Y)=GMI; Delete (X-A),
            // (Y-A); Group Timer=GMI.
            (FilterMode::Exclude, RecordType::ModeIsExclude) => {
                self.keep_only(b, budget);
                for s in b {
                    if !self.sources.contains_key(s) {
                        self.set_source(*s, gmi, budget);
                    }
                }
                self.set_timer(GroupTimer::Filter, gmi);
            }
            // EXCLUDE(X,Y) + BLOCK(A) → EXCLUDE(X+(A-Y), Y); (A-X-Y)=Group Timer;
            // Send Q(G, A-Y).
            (FilterMode::Exclude, RecordType::BlockOldSources) => {
                let group_timer = self.timer(GroupTimer::Filter);
                let y = self.excluded();
                for s in b {
                    if !self.sources.contains_key(s) {
                        self.set_source(*s, group_timer, budget);
                    }
                }
                ask.sources = b.difference(&y).copied().collect();
            }
            // EXCLUDE(X,Y) + TO_EX(A) → EXCLUDE(A-Y, Y*A); (A-X-Y)=Group Timer; Delete
            // (X-A), (Y-A); Send Q(G, A-Y); Group Timer=GMI.
            (FilterMode::Exclude, RecordType::ChangeToExclude) => {
                let group_timer = self.timer(GroupTimer::Filter);
                let y = self.excluded();
                self.keep_only(b, budget);
                for s in b {
                    if !self.sources.contains_key(s) {
                        self.set_source(*s, group_timer, budget);
                    }
                }
                ask.sources = b.difference(&y).copied().collect();
                self.set_timer(GroupTimer::Filter, gmi);
            }
            // EXCLUDE(X,Y) + TO_IN(A) → EXCLUDE(X+A, Y-A); (A)=GMI; Send Q(G, X-A);
            // Send Q(G).
            (FilterMode::Exclude, RecordType::ChangeToInclude) => {
                ask.sources = self.requested().difference(b).copied().collect();
                b.iter().for_each(|s| self.set_source(*s, gmi, budget));
                ask.group = true;
            }
        }
        // A query about a source that the limit kept out has nothing to ask.
        ask.sources.retain(|s| self.sources.contains_key(s));
        ask
    }

    /// The group timer ran out (RFC 3376 §6.5): an EXCLUDE group switches to INCLUDE with
    /// the sources whose timers still run; the others are deleted.
    pub(super) fn group_timer_expired(&mut self, budget: &mut SourceBudget) {
        self.set_timer(GroupTimer::Filter, None);
        self.set_timer(GroupTimer::GroupQuery, None);
        self.group_queries_left = 0;
        if self.mode == FilterMode::Exclude {
            let keep = self.requested();
            self.keep_only(&keep, budget);
            self.mode = FilterMode::Include;
        }
    }

    /// Runs out every source timer due at `now` (RFC 3376 §6.2.3): INCLUDE deletes the
    /// source, EXCLUDE moves it to the exclude list.
    pub(super) fn expire_sources(&mut self, now: Instant, budget: &mut SourceBudget) {
        let due: Vec<Ipv4Addr> = self
            .sources
            .iter()
            .filter(|(_, t)| t.is_some_and(|t| t <= now))
            .map(|(s, _)| *s)
            .collect();
        for s in due {
            self.expire_source(s, budget);
        }
    }

    /// Runs out the timer of one source now.
    pub(super) fn expire_source(&mut self, source: Ipv4Addr, budget: &mut SourceBudget) {
        match self.mode {
            FilterMode::Include => self.remove_source(source, budget),
            FilterMode::Exclude => {
                if let Some(t) = self.sources.get_mut(&source) {
                    *t = None;
                }
                self.source_queries_left.remove(&source);
            }
        }
    }
}
