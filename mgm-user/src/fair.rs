//! Fair service of the events the XDP program hands the daemon, by incoming interface. The
//! ring buffer is one queue for every interface: served in its order, a flood on one interface
//! puts its whole backlog ahead of another interface's next report. The daemon drains the ring
//! into one bounded queue per interface instead, and always serves the interface with waiting
//! events that has used the least service time, so each busy interface gets an equal share of
//! the daemon's time whatever its events cost, a quiet interface's event waits for at most one
//! event of each busy interface, and a flood that outruns its share overflows only its own queue
//! (counted). The caller measures the time; this stays free of clocks.

use std::{
    collections::{BTreeMap, VecDeque},
    time::Duration,
};

use crate::dataplane::Event;

/// Events one interface may have waiting; a full queue drops its interface's new events.
pub const QUEUE_PER_INTERFACE: usize = 4096;

#[derive(Debug, Default)]
pub struct Fair {
    queues: BTreeMap<u32, VecDeque<Event>>,
    /// Service time used, by every interface seen.
    used: BTreeMap<u32, Duration>,
    /// Events dropped because their interface's queue was full, by interface, not yet taken.
    dropped: BTreeMap<u32, u64>,
}

impl Fair {
    /// Queues `event` behind its interface's others. A full queue gives it back (counted).
    pub fn push(&mut self, event: Event) -> Result<(), Event> {
        let ifindex = event.ifindex();
        if !self.queues.contains_key(&ifindex) {
            // Back from idle at the least any busy interface has used: idle time earns no
            // credit to spend on a later burst.
            let floor = self.busy_floor();
            let used = self.used.entry(ifindex).or_default();
            *used = (*used).max(floor);
        }
        let queue = self.queues.entry(ifindex).or_default();
        if queue.len() >= QUEUE_PER_INTERFACE {
            *self.dropped.entry(ifindex).or_default() += 1;
            return Err(event);
        }
        queue.push_back(event);
        Ok(())
    }

    fn busy_floor(&self) -> Duration {
        self.queues
            .keys()
            .filter_map(|i| self.used.get(i))
            .min()
            .copied()
            .unwrap_or_default()
    }

    /// The oldest event of the busy interface that has used the least service time.
    pub fn pop(&mut self) -> Option<Event> {
        let ifindex = *self
            .queues
            .keys()
            .min_by_key(|i| self.used.get(i).copied().unwrap_or_default())?;
        let queue = self.queues.get_mut(&ifindex)?;
        let event = queue.pop_front();
        if queue.is_empty() {
            self.queues.remove(&ifindex);
        }
        event
    }

    /// Charges `spent` serving an event to `ifindex`.
    pub fn charge(&mut self, ifindex: u32, spent: Duration) {
        *self.used.entry(ifindex).or_default() += spent;
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Drops counted since the last call, by interface.
    pub fn take_dropped(&mut self) -> BTreeMap<u32, u64> {
        std::mem::take(&mut self.dropped)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn upcall(ifindex: u32, n: u16) -> Event {
        Event::NoCache {
            ifindex,
            source: Ipv4Addr::from(0x0a00_0000 | u32::from(n)),
            group: Ipv4Addr::new(239, 0, 0, 1),
            header: Vec::new(),
        }
    }

    /// Serves `n` events, charging each its interface's cost; returns whom it served.
    fn serve(fair: &mut Fair, n: usize, cost: impl Fn(u32) -> Duration) -> Vec<u32> {
        let mut served = Vec::new();
        while served.len() < n {
            let Some(e) = fair.pop() else {
                break;
            };
            let i = e.ifindex();
            fair.charge(i, cost(i));
            served.push(i);
        }
        served
    }

    #[test]
    fn a_costly_flood_gets_its_share_of_time_and_overflows_alone() {
        let mut fair = Fair::default();
        for n in 0..QUEUE_PER_INTERFACE + 10 {
            assert_eq!(
                fair.push(upcall(3, n as u16)).is_ok(),
                n < QUEUE_PER_INTERFACE
            );
        }
        for n in 0..30 {
            fair.push(upcall(4, n)).unwrap();
        }
        // interface 3's events cost ten times interface 4's: 4 is served ten times as often
        let cost = |i| Duration::from_millis(if i == 3 { 10 } else { 1 });
        let served = serve(&mut fair, 22, cost);
        assert_eq!(served.iter().filter(|&&i| i == 3).count(), 2);
        assert_eq!(fair.take_dropped(), BTreeMap::from([(3, 10)]));
        assert!(fair.take_dropped().is_empty());
    }

    #[test]
    fn an_interface_back_from_idle_has_no_credit_saved_up() {
        let mut fair = Fair::default();
        fair.push(upcall(4, 0)).unwrap();
        serve(&mut fair, 1, |_| Duration::from_millis(1));
        // interface 3 is busy for a long time while 4 is idle
        for n in 0..100 {
            fair.push(upcall(3, n)).unwrap();
        }
        serve(&mut fair, 50, |_| Duration::from_millis(1));
        for n in 0..10 {
            fair.push(upcall(4, n)).unwrap();
        }
        // 4 comes back at 3's level: they alternate rather than 4 going ten times in a row
        let served = serve(&mut fair, 6, |_| Duration::from_millis(1));
        assert_eq!(served.iter().filter(|&&i| i == 4).count(), 3);
        // and a quiet interface's event goes within one event of each busy interface
        fair.push(upcall(5, 0)).unwrap();
        let served = serve(&mut fair, 3, |_| Duration::from_millis(1));
        assert!(served.contains(&5), "{served:?}");
        assert!(!fair.is_empty());
    }
}
