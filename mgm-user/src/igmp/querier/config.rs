//! The querier's configuration: every timer and count of RFC 3376 §8 (RFC 2236 §8 for v2),
//! with the RFC defaults, plus mgm's own per-interface switches (version, fast leave, limits).

use std::time::Duration;

use thiserror::Error;

/// An IGMP version: what an interface speaks, or a group's compatibility mode
/// (RFC 3376 §7.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// RFC 1112. Only ever a group compatibility mode: mgm does not run a v1 querier.
    V1,
    /// RFC 2236.
    V2,
    /// RFC 3376.
    V3,
}

/// Why a [`Config`] cannot run.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("IGMP version {0:?} cannot be run by the querier (2 or 3 only)")]
    UnsupportedVersion(Version),
    #[error("robustness variable must not be 0 (RFC 3376 §8.1)")]
    ZeroRobustness,
    #[error("{name} must be longer than 0")]
    ZeroInterval { name: &'static str },
    #[error("{name} must be at least 1")]
    ZeroCount { name: &'static str },
    #[error(
        "query response interval {response:?} must be shorter than the query interval \
         {interval:?} (RFC 3376 §8.3)"
    )]
    ResponseNotBelowInterval {
        response: Duration,
        interval: Duration,
    },
}

/// How IGMP runs on one interface.
///
/// Values marked "derived" are `None` by default and then follow the RFC formula from the
/// robustness variable and intervals in use (which, on a non-querier, may be those adopted
/// from the querier's queries, RFC 3376 §4.1.6 and §4.1.7). Setting them pins them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The IGMP version of the queries we send and the reports we accept: `V2` ignores v3
    /// reports and sends 8-byte v2 queries (RFC 2236), `V3` runs RFC 3376.
    pub version: Version,
    /// Robustness Variable, the expected packet loss headroom (RFC 3376 §8.1). Default 2.
    pub robustness: u8,
    /// Query Interval between general queries (RFC 3376 §8.2). Default 125 s.
    pub query_interval: Duration,
    /// Query Response Interval, the Max Resp Time of general queries (RFC 3376 §8.3).
    /// Default 10 s. Sent in units of 100 ms.
    pub query_response_interval: Duration,
    /// Group Membership Interval (RFC 3376 §8.4). Derived: robustness × query interval +
    /// query response interval.
    pub group_membership_interval: Option<Duration>,
    /// Other Querier Present Interval (RFC 3376 §8.5). Derived: robustness × query
    /// interval + query response interval / 2.
    pub other_querier_present_interval: Option<Duration>,
    /// Startup Query Interval between the first general queries (RFC 3376 §8.6).
    /// Derived: query interval / 4.
    pub startup_query_interval: Option<Duration>,
    /// Startup Query Count, general queries sent at startup (RFC 3376 §8.7).
    /// Derived: robustness.
    pub startup_query_count: Option<u32>,
    /// Last Member Query Interval, the Max Resp Time of group(-and-source)-specific queries
    /// and the gap between their retransmissions (RFC 3376 §8.8). Default 1 s.
    pub last_member_query_interval: Duration,
    /// Last Member Query Count, how many specific queries are sent (RFC 3376 §8.9).
    /// Derived: robustness.
    pub last_member_query_count: Option<u32>,
    /// Older Host Present Interval, how long a group stays in v1/v2 compatibility mode
    /// after an old report (RFC 3376 §8.13). Derived: robustness × query interval + query
    /// response interval.
    pub older_host_present_interval: Option<Duration>,
    /// Track each reporting host per group and stop forwarding as soon as the last
    /// interested host leaves, without last-member queries (not in the RFCs; see
    /// [`super::Querier`]'s "Fast leave").
    pub fast_leave: bool,
    /// Most groups this interface keeps state for; reports for more are refused and
    /// counted in [`super::Counters::group_limit_hits`]. `None`: no limit.
    pub max_groups: Option<usize>,
    /// Most source records this interface keeps, over all its groups; more are refused and
    /// counted in [`super::Counters::source_limit_hits`]. `None`: no limit. With fast leave,
    /// also the most tracked-host units (a host per group plus each source in its filter),
    /// counted apart; more are refused and counted in [`super::Counters::host_limit_hits`].
    pub max_sources: Option<usize>,
    /// Drop reports and leaves that lack the Router Alert option or arrive with a TTL other
    /// than 1, which every host sends them with (RFC 2236 §2, RFC 3376 §4); RFC 3376 §9.2
    /// offers this as a defence against reports forged from off the link, at the cost of
    /// hosts that omit Router Alert. Off: they are handled all the same. Counted either way
    /// ([`super::Counters::reports_without_router_alert`] and the next two).
    pub strict_reports: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: Version::V3,
            robustness: 2,
            query_interval: Duration::from_secs(125),
            query_response_interval: Duration::from_secs(10),
            group_membership_interval: None,
            other_querier_present_interval: None,
            startup_query_interval: None,
            startup_query_count: None,
            last_member_query_interval: Duration::from_secs(1),
            last_member_query_count: None,
            older_host_present_interval: None,
            fast_leave: false,
            max_groups: None,
            max_sources: None,
            strict_reports: false,
        }
    }
}

impl Config {
    /// Most memberships one interface's querier hands the MGM core at these limits: one
    /// (\*,G) per group and one (S,G) join or exclusion per source record. `None` when either
    /// is unlimited.
    pub fn max_memberships(&self) -> Option<usize> {
        Some(self.max_groups?.saturating_add(self.max_sources?))
    }

    /// Checks that the values can run: no zero interval or count, and a response interval
    /// shorter than the query interval.
    ///
    /// # Errors
    /// The first [`ConfigError`] found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.version == Version::V1 {
            return Err(ConfigError::UnsupportedVersion(self.version));
        }
        if self.robustness == 0 {
            return Err(ConfigError::ZeroRobustness);
        }
        let intervals = [
            ("query interval", Some(self.query_interval)),
            (
                "query response interval",
                Some(self.query_response_interval),
            ),
            ("group membership interval", self.group_membership_interval),
            (
                "other querier present interval",
                self.other_querier_present_interval,
            ),
            ("startup query interval", self.startup_query_interval),
            (
                "last member query interval",
                Some(self.last_member_query_interval),
            ),
            (
                "older host present interval",
                self.older_host_present_interval,
            ),
        ];
        for (name, value) in intervals {
            // Time is counted in milliseconds: anything shorter is zero.
            if value.is_some_and(|d| d.as_millis() == 0) {
                return Err(ConfigError::ZeroInterval { name });
            }
        }
        let counts = [
            ("startup query count", self.startup_query_count),
            ("last member query count", self.last_member_query_count),
        ];
        for (name, value) in counts {
            if value == Some(0) {
                return Err(ConfigError::ZeroCount { name });
            }
        }
        if self.query_response_interval >= self.query_interval {
            return Err(ConfigError::ResponseNotBelowInterval {
                response: self.query_response_interval,
                interval: self.query_interval,
            });
        }
        Ok(())
    }

    /// The values in force, with the querier's robustness and query interval when a
    /// non-querier has adopted them (RFC 3376 §4.1.6, §4.1.7).
    pub(super) fn params(&self, adopted: Adopted) -> Params {
        let robustness = u32::from(adopted.robustness.unwrap_or(self.robustness));
        let qi = adopted.query_interval.unwrap_or(self.query_interval);
        let qri = self.query_response_interval;
        let gmi = qi * robustness + qri;
        let lmqc = self.last_member_query_count.unwrap_or(robustness);
        let lmqi = self.last_member_query_interval;
        Params {
            robustness,
            query_interval: qi,
            query_response_interval: qri,
            group_membership_interval: self.group_membership_interval.unwrap_or(gmi),
            other_querier_present_interval: self
                .other_querier_present_interval
                .unwrap_or(qi * robustness + qri / 2),
            startup_query_interval: self.startup_query_interval.unwrap_or(qi / 4),
            startup_query_count: self.startup_query_count.unwrap_or(robustness),
            last_member_query_interval: lmqi,
            last_member_query_count: lmqc,
            last_member_query_time: lmqi * lmqc,
            older_host_present_interval: self.older_host_present_interval.unwrap_or(gmi),
        }
    }
}

/// Values a non-querier took from the elected querier's last v3 query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Adopted {
    /// The query's QRV, unless 0 (RFC 3376 §4.1.6).
    pub(super) robustness: Option<u8>,
    /// The query's QQIC as an interval, unless 0 (RFC 3376 §4.1.7).
    pub(super) query_interval: Option<Duration>,
}

/// Every timer value and count in force, resolved from [`Config`] and [`Adopted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Params {
    pub(super) robustness: u32,
    pub(super) query_interval: Duration,
    pub(super) query_response_interval: Duration,
    pub(super) group_membership_interval: Duration,
    pub(super) other_querier_present_interval: Duration,
    pub(super) startup_query_interval: Duration,
    pub(super) startup_query_count: u32,
    pub(super) last_member_query_interval: Duration,
    pub(super) last_member_query_count: u32,
    /// LMQT = LMQI × LMQC (RFC 3376 §8.10).
    pub(super) last_member_query_time: Duration,
    pub(super) older_host_present_interval: Duration,
}
