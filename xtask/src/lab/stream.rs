//! A paced stream from a sender to one receiver, both on threads of their own, with every
//! datagram counted by its sequence number: for measuring what an event in between costs.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Condvar, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use super::traffic::{Receiver, Sender};

/// What arrived so far, shared with the receiving thread.
#[derive(Default)]
struct Arrivals {
    seqs: BTreeSet<u64>,
}

/// A stream running until [`Stream::finish`].
pub struct Stream {
    stop: Arc<AtomicBool>,
    /// Datagrams sent so far.
    sent: Arc<AtomicU64>,
    sender: Option<JoinHandle<u64>>,
    receiver: Option<JoinHandle<()>>,
    arrivals: Arc<(Mutex<Arrivals>, Condvar)>,
}

/// The whole stream's count, from the first datagram that arrived to the last one sent.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Sequence number of the first datagram that arrived (they count from 1).
    pub first: u64,
    /// Sequence number of the last datagram sent.
    pub last_sent: u64,
    /// Datagrams from `first` to `last_sent` that did not arrive.
    pub lost: u64,
    /// The longest run of consecutive lost datagrams.
    pub longest_gap: u64,
}

impl Tally {
    /// Lost datagrams as a share of those sent from `first` on.
    pub fn loss(&self) -> f64 {
        self.lost as f64 / (self.last_sent - self.first + 1) as f64
    }
}

impl Stream {
    /// Starts sending to `group` from `tx` every `interval`, and counting what `rx` gets.
    pub fn start(mut tx: Sender, rx: Receiver, group: Ipv4Addr, interval: Duration) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let arrivals = Arc::new((Mutex::new(Arrivals::default()), Condvar::new()));
        let sent = Arc::new(AtomicU64::new(0));
        let sender = {
            let stop = Arc::clone(&stop);
            let sent = Arc::clone(&sent);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // A send can fail while routes change; the datagram then counts as lost.
                    let _ = tx.send(group, 100);
                    sent.store(tx.sent(), Ordering::Relaxed);
                    std::thread::sleep(interval);
                }
                tx.sent()
            })
        };
        let receiver = {
            let stop = Arc::clone(&stop);
            let arrivals = Arc::clone(&arrivals);
            std::thread::spawn(move || loop {
                match rx.next_datagram() {
                    Some((g, seq)) if g == group => {
                        let (lock, cv) = &*arrivals;
                        lock.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .seqs
                            .insert(seq);
                        cv.notify_all();
                    }
                    Some(_) => {}
                    // Read timeout: once the sender has stopped, nothing is in flight.
                    None if stop.load(Ordering::Relaxed) => break,
                    None => {}
                }
            })
        };
        Stream {
            stop,
            sent,
            sender: Some(sender),
            receiver: Some(receiver),
            arrivals,
        }
    }

    /// How many datagrams were sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// How many datagrams arrived so far.
    pub fn received(&self) -> usize {
        let (lock, _) = &*self.arrivals;
        lock.lock().unwrap_or_else(|e| e.into_inner()).seqs.len()
    }

    /// Waits until at least `n` datagrams arrived in all; false after `timeout`.
    pub fn wait_received(&self, n: usize, timeout: Duration) -> bool {
        let (lock, cv) = &*self.arrivals;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = cv
            .wait_timeout_while(guard, timeout, |a| a.seqs.len() < n)
            .unwrap_or_else(|e| e.into_inner());
        guard.seqs.len() >= n
    }

    /// Stops sending, lets the last datagrams arrive and counts; `None` if nothing arrived.
    pub fn finish(mut self) -> Option<Tally> {
        let last_sent = self.halt();
        let (lock, _) = &*self.arrivals;
        let arrivals = lock.lock().unwrap_or_else(|e| e.into_inner());
        let first = *arrivals.seqs.first()?;
        let (mut lost, mut gap, mut longest_gap) = (0, 0, 0);
        for seq in first..=last_sent {
            if arrivals.seqs.contains(&seq) {
                gap = 0;
            } else {
                lost += 1;
                gap += 1;
                longest_gap = longest_gap.max(gap);
            }
        }
        Some(Tally {
            first,
            last_sent,
            lost,
            longest_gap,
        })
    }

    /// Stops both threads; returns the last sequence number sent.
    fn halt(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let last = self.sender.take().and_then(|h| h.join().ok()).unwrap_or(0);
        if let Some(h) = self.receiver.take() {
            let _ = h.join();
        }
        last
    }
}

impl Drop for Stream {
    /// Stops the threads on every exit path, so a failing test cannot leave them running.
    fn drop(&mut self) {
        self.halt();
    }
}

/// Checks `condition` every 50 ms until it holds (true) or `timeout` passes (false): for
/// states outside this process, such as a switch's group table, that give no event to wait on.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if std::time::Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
