//! Warnings that one bad peer could repeat with every packet (malformed IGMP, refused
//! memberships, upcalls that cannot be resolved) are logged at most once per interval each;
//! the next one logged says how many were left out meanwhile. Every occurrence is counted
//! elsewhere too, so nothing is lost but log lines. Sans-IO: the caller passes the time.

use std::time::Duration;

use crate::core::Instant;

/// One kind of warning's limit.
#[derive(Debug, Clone)]
pub struct RateLimit {
    interval: Duration,
    /// Warnings logged per interval.
    burst: u32,
    /// When the current interval ends; `None` before the first warning.
    until: Option<Instant>,
    /// Warnings logged in the current interval.
    logged: u32,
    /// Warnings left out since the last one logged.
    suppressed: u64,
}

impl RateLimit {
    /// At most one warning per `interval`.
    pub const fn new(interval: Duration) -> Self {
        Self::burst(interval, 1)
    }

    /// At most `burst` lines per `interval`: for lines an operator wants one by one when
    /// they are few (an upstream join), which a flood must still not turn into a log flood.
    pub const fn burst(interval: Duration, burst: u32) -> Self {
        RateLimit {
            interval,
            burst,
            until: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// A warning happens at `now`: `Some(n)` to log it, `n` being how many were left out
    /// since the last one logged; `None` to leave it out (it is counted for the next).
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.until.is_none_or(|until| now >= until) {
            self.until = Some(now + self.interval);
            self.logged = 0;
        }
        if self.logged >= self.burst {
            self.suppressed += 1;
            return None;
        }
        self.logged += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// ", and 12 more like it in the last 10 s" after a warning that followed suppressed ones;
/// nothing otherwise.
pub fn suppressed(n: u64, interval: Duration) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" (and {n} more like it left out of the log in the last {interval:?})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn the_first_warning_is_logged_and_the_next_ones_within_the_interval_are_counted() {
        let mut r = RateLimit::new(SECOND);
        assert_eq!(r.allow(at(0)), Some(0));
        assert_eq!(r.allow(at(1)), None);
        assert_eq!(r.allow(at(999)), None);
        // The interval is over: logged, saying two were left out.
        assert_eq!(r.allow(at(1000)), Some(2));
        assert_eq!(r.allow(at(1500)), None);
        assert_eq!(r.allow(at(5000)), Some(1));
        assert_eq!(r.allow(at(7000)), Some(0));
    }

    #[test]
    fn a_burst_logs_that_many_per_interval_and_the_next_interval_says_how_many_were_left_out() {
        let mut r = RateLimit::burst(SECOND, 3);
        assert_eq!(r.allow(at(0)), Some(0));
        assert_eq!(r.allow(at(10)), Some(0));
        assert_eq!(r.allow(at(20)), Some(0));
        assert_eq!(r.allow(at(30)), None);
        assert_eq!(r.allow(at(999)), None);
        assert_eq!(r.allow(at(1000)), Some(2));
        assert_eq!(r.allow(at(1001)), Some(0));
    }

    #[test]
    fn the_note_says_how_many_were_left_out_only_when_some_were() {
        assert_eq!(suppressed(0, SECOND), "");
        assert_eq!(
            suppressed(3, Duration::from_secs(10)),
            " (and 3 more like it left out of the log in the last 10s)"
        );
    }
}
