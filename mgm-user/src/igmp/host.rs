//! The host side of IGMP on one interface (RFC 3376 §5, with the older-version compatibility of
//! §7.2.1): what an IGMP proxy says upstream for the receivers it stands for (RFC 4605 §4.1).
//!
//! Each group's interface state is a filter mode and a source list. A change of it is
//! reported at once and repeated robustness − 1 more times, each repetition a random time of
//! at most the Unsolicited Report Interval later (§5.1); queries are answered from the state
//! after a random delay of at most their Max Resp Time (§5.2). Against a v1 or v2 querier the
//! reports are v1/v2 reports and leaves (§7.2.1) until no such querier was heard for the Older
//! Version Querier Present Timeout.
//!
//! Sans-IO like the querier (style §9): every input carries `now`, the reports to send are
//! polled with [`Host::poll_transmit`], and [`Host::poll_timeout`] says when to call
//! [`Host::handle_timeout`]. The state lives here and not in the kernel's sockets, so a daemon
//! that dies sends no leave: the upstream keeps forwarding until the next daemon reports.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::Ipv4Addr,
    time::Duration,
};

use super::{
    codec::{decode_float_code, GroupRecord, IgmpMessage, RecordType},
    querier::{FilterMode, Version},
};
use crate::core::Instant;

/// Where v3 reports go (RFC 3376 §4.2.14).
pub const ALL_IGMPV3_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 22);
/// Where v2 leaves go (RFC 2236 §3).
pub const ALL_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 2);

/// Most bytes of one v3 report, so it fits an Ethernet frame with the IP header and Router
/// Alert (RFC 3376 §4.2.16 splits what does not fit into several reports).
const MAX_REPORT_LEN: usize = 1400;
/// Bytes of a v3 report's header and of one group record without sources.
const REPORT_HEADER_LEN: usize = 8;
const RECORD_HEADER_LEN: usize = 8;

/// The host side's timers and counts (RFC 3376 §8), RFC defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Robustness Variable: how many times a state change is reported (§8.1). Default 2.
    pub robustness: u8,
    /// Query Interval, for the Older Version Querier Present Timeout (§8.2). Default 125 s.
    pub query_interval: Duration,
    /// Query Response Interval, for the same timeout (§8.3). Default 10 s.
    pub query_response_interval: Duration,
    /// Most time between the repetitions of a state-change report (§8.11). Default 1 s.
    pub unsolicited_report_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            robustness: 2,
            query_interval: Duration::from_secs(125),
            query_response_interval: Duration::from_secs(10),
            unsolicited_report_interval: Duration::from_secs(1),
        }
    }
}

impl Config {
    /// How long an older querier's version rules after its last query (§8.12).
    fn older_querier_timeout(&self) -> Duration {
        self.query_interval * u32::from(self.robustness) + self.query_response_interval
    }
}

/// A report to send: the daemon encodes `message` with [`crate::igmp::codec::encode`] and sends
/// it with IP TTL 1 and Router Alert from the interface address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub destination: Ipv4Addr,
    pub message: IgmpMessage,
}

/// One group's interface state, and what is pending for it.
#[derive(Debug, Clone)]
struct Group {
    mode: FilterMode,
    sources: BTreeSet<Ipv4Addr>,
    change: Option<Change>,
    /// A group(-and-source)-specific query to answer: when, and the queried sources (`None`
    /// for the whole group).
    response: Option<(Instant, Option<BTreeSet<Ipv4Addr>>)>,
}

impl Group {
    fn is_empty(&self) -> bool {
        self.mode == FilterMode::Include && self.sources.is_empty()
    }
}

/// A state change still to be reported (RFC 3376 §5.1).
#[derive(Debug, Clone)]
struct Change {
    kind: ChangeKind,
    /// Transmissions left, this one included.
    left: u8,
    due: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ChangeKind {
    /// The filter mode changed: reported as TO_IN/TO_EX of the sources at the time of sending.
    Mode,
    /// Only sources changed: ALLOW and BLOCK of the differences not yet reported.
    Sources {
        allow: BTreeSet<Ipv4Addr>,
        block: BTreeSet<Ipv4Addr>,
    },
}

/// The host side of IGMP on one interface.
#[derive(Debug, Clone)]
pub struct Host {
    config: Config,
    groups: BTreeMap<Ipv4Addr, Group>,
    /// Until when a v1 or v2 querier was heard (RFC 3376 §7.2.1).
    v1_querier_until: Option<Instant>,
    v2_querier_until: Option<Instant>,
    /// When to answer a general query with every group's current state (v3 only).
    general_due: Option<Instant>,
    /// When each group has a change or an answer due; entries may be stale (the group's own
    /// times decide), so a deadline is found without walking every group.
    due: BTreeSet<(Instant, Ipv4Addr)>,
    out: VecDeque<Transmit>,
    /// xorshift64 state for the random delays.
    rng: u64,
}

impl Host {
    /// A host side with no group; `seed` drives the random report delays.
    pub fn new(config: Config, seed: u64) -> Host {
        Host {
            config,
            groups: BTreeMap::new(),
            v1_querier_until: None,
            v2_querier_until: None,
            general_due: None,
            due: BTreeSet::new(),
            out: VecDeque::new(),
            rng: seed | 1,
        }
    }

    /// The version this host reports in at `now`: the oldest querier heard recently, else v3.
    pub fn version(&self, now: Instant) -> Version {
        if self.v1_querier_until.is_some_and(|t| t > now) {
            Version::V1
        } else if self.v2_querier_until.is_some_and(|t| t > now) {
            Version::V2
        } else {
            Version::V3
        }
    }

    /// Whether `group`'s state is not INCLUDE {}.
    pub fn is_member(&self, group: Ipv4Addr) -> bool {
        self.groups.get(&group).is_some_and(|g| !g.is_empty())
    }

    /// Groups whose state is not INCLUDE {}.
    pub fn groups(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.groups
            .iter()
            .filter(|(_, g)| !g.is_empty())
            .map(|(a, _)| *a)
    }

    /// Sets the interface state of `group`; a change is reported at once and repeated
    /// (RFC 3376 §5.1). INCLUDE {} is no membership.
    pub fn set(
        &mut self,
        now: Instant,
        group: Ipv4Addr,
        mode: FilterMode,
        sources: BTreeSet<Ipv4Addr>,
    ) {
        let robustness = self.config.robustness.max(1);
        let empty = mode == FilterMode::Include && sources.is_empty();
        if empty && !self.groups.contains_key(&group) {
            return;
        }
        let g = self.groups.entry(group).or_insert_with(|| Group {
            mode: FilterMode::Include,
            sources: BTreeSet::new(),
            change: None,
            response: None,
        });
        if g.mode == mode && g.sources == sources {
            return;
        }
        let kind = if g.mode != mode
            || matches!(
                g.change,
                Some(Change {
                    kind: ChangeKind::Mode,
                    ..
                })
            ) {
            ChangeKind::Mode
        } else {
            let (added, removed): (BTreeSet<_>, BTreeSet<_>) = (
                sources.difference(&g.sources).copied().collect(),
                g.sources.difference(&sources).copied().collect(),
            );
            // In INCLUDE mode new sources are allowed; in EXCLUDE mode they are blocked.
            let (allow, block) = match mode {
                FilterMode::Include => (added, removed),
                FilterMode::Exclude => (removed, added),
            };
            let (mut all_allow, mut all_block) = match g.change.take() {
                Some(Change {
                    kind: ChangeKind::Sources { allow, block },
                    ..
                }) => (allow, block),
                _ => (BTreeSet::new(), BTreeSet::new()),
            };
            all_allow.retain(|s| !block.contains(s));
            all_block.retain(|s| !allow.contains(s));
            all_allow.extend(allow);
            all_block.extend(block);
            ChangeKind::Sources {
                allow: all_allow,
                block: all_block,
            }
        };
        g.mode = mode;
        g.sources = sources;
        g.change = Some(Change {
            kind,
            left: robustness,
            due: now,
        });
        self.due.insert((now, group));
        self.send_due(now);
    }

    /// Forgets every group and every querier heard: the interface is a new link (created
    /// again), where nothing was reported yet.
    pub fn restart(&mut self) {
        *self = Host::new(self.config.clone(), self.rng);
    }

    /// Reports every group's leave at once, `robustness` times, and forgets them: for a
    /// daemon that stops on purpose and will send nothing later.
    pub fn leave_all(&mut self, now: Instant) {
        let groups: Vec<Ipv4Addr> = self.groups().collect();
        for g in groups {
            self.set(now, g, FilterMode::Include, BTreeSet::new());
        }
        for _ in 1..self.config.robustness.max(1) {
            for (address, g) in &mut self.groups {
                if let Some(c) = &mut g.change {
                    c.due = now;
                    self.due.insert((now, *address));
                }
            }
            self.send_due(now);
        }
        self.groups.clear();
        self.due.clear();
        self.general_due = None;
    }

    /// Takes a query heard on the interface (RFC 3376 §5.2, RFC 2236 §3); other messages are
    /// other hosts' business (reports are not suppressed: a snooping switch may not pass
    /// them on to us, and an extra report costs nothing).
    pub fn handle_message(&mut self, now: Instant, msg: &IgmpMessage) {
        let IgmpMessage::Query {
            max_resp_code,
            group,
            v3,
        } = msg
        else {
            return;
        };
        let timeout = self.config.older_querier_timeout();
        let tenths = match (v3, *max_resp_code) {
            (Some(_), code) => decode_float_code(code),
            (None, 0) => {
                // RFC 1112 queries carry no Max Resp Time: 10 s.
                self.v1_querier_until = Some(now + timeout);
                100
            }
            (None, code) => {
                self.v2_querier_until = Some(now + timeout);
                u32::from(code)
            }
        };
        let max_delay = Duration::from_millis(u64::from(tenths) * 100);
        let version = self.version(now);
        if group.is_unspecified() {
            if version == Version::V3 {
                let due = now + self.random_delay(max_delay);
                self.general_due = Some(self.general_due.map_or(due, |d| d.min(due)));
            } else {
                let groups: Vec<Ipv4Addr> = self.groups().collect();
                for g in groups {
                    let due = now + self.random_delay(max_delay);
                    self.schedule_response(g, None, due);
                }
            }
        } else if self.groups.get(group).is_some_and(|g| !g.is_empty()) {
            let due = now + self.random_delay(max_delay);
            // §5.2 rule 1: an earlier pending general answer covers it.
            if version == Version::V3 && self.general_due.is_some_and(|d| d <= due) {
                return;
            }
            let sources = match v3 {
                Some(q) if !q.sources.is_empty() && version == Version::V3 => {
                    Some(q.sources.iter().copied().collect())
                }
                _ => None,
            };
            self.schedule_response(*group, sources, due);
        }
    }

    /// Records an answer due for `group` (§5.2 rules 2–5: an answer already pending merges
    /// with it, at the earlier time; a whole-group query makes the answer whole-group).
    fn schedule_response(
        &mut self,
        group: Ipv4Addr,
        sources: Option<BTreeSet<Ipv4Addr>>,
        due: Instant,
    ) {
        let Some(g) = self.groups.get_mut(&group) else {
            return;
        };
        self.due.insert((due, group));
        g.response = Some(match g.response.take() {
            None => (due, sources),
            Some((at, pending)) => {
                let merged = match (pending, sources) {
                    (Some(mut a), Some(b)) => {
                        a.extend(b);
                        Some(a)
                    }
                    _ => None,
                };
                (at.min(due), merged)
            }
        });
    }

    /// Sends whatever is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.send_due(now);
    }

    /// When [`Host::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let first = self.due.first().map(|(at, _)| *at);
        first.into_iter().chain(self.general_due).min()
    }

    /// The next report to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn send_due(&mut self, now: Instant) {
        let version = self.version(now);
        let mut records = Vec::new();
        let general = self.general_due.is_some_and(|d| d <= now);
        if general {
            self.general_due = None;
        }
        let uri = self.config.unsolicited_report_interval;
        let mut next_delays = Vec::new();
        // Only the groups with something due, unless a general query makes it every group:
        // a join among 100k groups must not walk them all.
        let mut due = Vec::new();
        while let Some(&(at, address)) = self.due.first() {
            if at > now {
                break;
            }
            self.due.pop_first();
            due.push(address);
        }
        let todo: Vec<Ipv4Addr> = if general {
            self.groups.keys().copied().collect()
        } else {
            due.sort_unstable();
            due.dedup();
            due
        };
        for address in todo {
            let Some(g) = self.groups.get_mut(&address) else {
                continue;
            };
            let mut report = false;
            let empty = g.is_empty();
            if let Some(c) = g.change.as_mut().filter(|c| c.due <= now) {
                report = true;
                match (&c.kind, version) {
                    (ChangeKind::Mode, Version::V3) => records.push(GroupRecord {
                        kind: match g.mode {
                            FilterMode::Include => RecordType::ChangeToInclude,
                            FilterMode::Exclude => RecordType::ChangeToExclude,
                        },
                        group: address,
                        sources: g.sources.iter().copied().collect(),
                    }),
                    (ChangeKind::Sources { allow, block }, Version::V3) => {
                        for (kind, list) in [
                            (RecordType::AllowNewSources, allow),
                            (RecordType::BlockOldSources, block),
                        ] {
                            if !list.is_empty() {
                                records.push(GroupRecord {
                                    kind,
                                    group: address,
                                    sources: list.iter().copied().collect(),
                                });
                            }
                        }
                    }
                    // §7.2.1: an older querier hears of the group as a whole.
                    _ => self.out.extend(older_report(version, address, empty)),
                }
                c.left -= 1;
                if c.left == 0 {
                    g.change = None;
                } else {
                    next_delays.push(address);
                }
            }
            let answer = g.response.as_ref().is_some_and(|(at, _)| *at <= now);
            if (answer || general) && !report && !empty {
                let queried = if general {
                    None
                } else {
                    g.response.as_ref().and_then(|(_, s)| s.clone())
                };
                if version == Version::V3 {
                    records.extend(current_state(address, g, queried.as_ref()));
                } else {
                    self.out.extend(older_report(version, address, false));
                }
            }
            if answer || general {
                g.response = None;
            }
            if g.is_empty() && g.change.is_none() {
                self.groups.remove(&address);
            }
        }
        for address in next_delays {
            let due = now + self.random_delay(uri);
            if let Some(c) = self
                .groups
                .get_mut(&address)
                .and_then(|g| g.change.as_mut())
            {
                c.due = due;
                self.due.insert((due, address));
            }
        }
        for message in split_reports(records) {
            self.out.push_back(Transmit {
                destination: ALL_IGMPV3_ROUTERS,
                message,
            });
        }
    }

    /// A delay drawn evenly from [0, `max`], in milliseconds.
    fn random_delay(&mut self, max: Duration) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let max_ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(self.rng % max_ms.saturating_add(1))
    }
}

/// The v1/v2 message for a group: a report while it has state, a v2 leave when it has none
/// (v1 has no leave).
fn older_report(version: Version, group: Ipv4Addr, left: bool) -> Option<Transmit> {
    match (version, left) {
        (Version::V1, false) => Some(Transmit {
            destination: group,
            message: IgmpMessage::V1Report { group },
        }),
        (Version::V1, true) => None,
        (_, false) => Some(Transmit {
            destination: group,
            message: IgmpMessage::V2Report { group },
        }),
        (_, true) => Some(Transmit {
            destination: ALL_ROUTERS,
            message: IgmpMessage::V2Leave { group },
        }),
    }
}

/// The current-state record answering a query for `group`, and for `queried` sources only
/// when given (RFC 3376 §5.2: IS_IN of the queried sources the state lets through).
fn current_state(
    address: Ipv4Addr,
    g: &Group,
    queried: Option<&BTreeSet<Ipv4Addr>>,
) -> Option<GroupRecord> {
    let (kind, sources): (_, Vec<Ipv4Addr>) = match (queried, g.mode) {
        (None, FilterMode::Include) => (
            RecordType::ModeIsInclude,
            g.sources.iter().copied().collect(),
        ),
        (None, FilterMode::Exclude) => (
            RecordType::ModeIsExclude,
            g.sources.iter().copied().collect(),
        ),
        (Some(q), FilterMode::Include) => (
            RecordType::ModeIsInclude,
            q.intersection(&g.sources).copied().collect(),
        ),
        (Some(q), FilterMode::Exclude) => (
            RecordType::ModeIsInclude,
            q.difference(&g.sources).copied().collect(),
        ),
    };
    if queried.is_some() && sources.is_empty() {
        return None;
    }
    Some(GroupRecord {
        kind,
        group: address,
        sources,
    })
}

/// Packs records into v3 reports of at most [`MAX_REPORT_LEN`] bytes; a record with more
/// sources than one report holds is split into records of the same type.
fn split_reports(records: Vec<GroupRecord>) -> Vec<IgmpMessage> {
    let per_record = (MAX_REPORT_LEN - REPORT_HEADER_LEN - RECORD_HEADER_LEN) / 4;
    let mut reports = Vec::new();
    let mut current: Vec<GroupRecord> = Vec::new();
    let mut len = REPORT_HEADER_LEN;
    let pieces = records.into_iter().flat_map(|r| {
        let chunks: Vec<Vec<Ipv4Addr>> = if r.sources.is_empty() {
            vec![Vec::new()]
        } else {
            r.sources.chunks(per_record).map(<[_]>::to_vec).collect()
        };
        chunks.into_iter().map(move |sources| GroupRecord {
            kind: r.kind,
            group: r.group,
            sources,
        })
    });
    for record in pieces {
        let size = RECORD_HEADER_LEN + 4 * record.sources.len();
        if len + size > MAX_REPORT_LEN && !current.is_empty() {
            reports.push(IgmpMessage::V3Report {
                records: std::mem::take(&mut current),
                truncated: false,
            });
            len = REPORT_HEADER_LEN;
        }
        len += size;
        current.push(record);
    }
    if !current.is_empty() {
        reports.push(IgmpMessage::V3Report {
            records: current,
            truncated: false,
        });
    }
    reports
}

#[cfg(test)]
mod tests;
