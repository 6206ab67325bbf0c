//! The system calls the event loop must not wait for, and the worker that makes them.
//!
//! What the loop calls into the kernel for, per event (issue 19: none of it may hold the loop up):
//!
//! | where | system call | can it wait? | where it runs |
//! |---|---|---|---|
//! | ring buffer, timers, control, modules | epoll (tokio), ring-buffer reads | no: readiness-driven | loop |
//! | map operations of the core and the handover (`dataplane/maps.rs`), placeholder removals, `on_no_cache` | `bpf(BPF_MAP_UPDATE_ELEM / DELETE_ELEM)` on hash and array maps | no: bounded, a few µs, never takes rtnl, and a full map is an error, not a wait | loop (see below) |
//! | counter sync every 5 s | `bpf(BPF_MAP_LOOKUP_ELEM)` on per-CPU maps, per MFE | no, but its cost grows with the table | loop |
//! | IGMP queries downstream (`sockets::QuerySocket::try_send`) | `sendto(MSG_DONTWAIT)` on a raw socket | no: a full send buffer is `EAGAIN`, counted as a query not sent; robustness covers it | loop |
//! | the proxy's reports upstream | `sendto` on a raw socket | yes: blocks on a full send buffer | [`UpstreamWorker`] |
//! | the upstream's link-layer filter (`sockets::LinkFilter`) | `ioctl(SIOCADDMULTI / SIOCDELMULTI)` | yes: takes the kernel's rtnl lock, held by any netlink change of any interface (and long on a busy device) | [`UpstreamWorker`] |
//! | link events and reloads: interface lookups (`dataplane/netdev.rs`) | `ioctl(SIOCGIFHWADDR / MTU / ADDR)` | yes: `SIOCGIFADDR` takes rtnl, and a name that does not exist has the kernel try to load a module of that name | `dataplane::attacher::Attacher` |
//! | link events and reloads: XDP attach and detach (`dataplane/loader.rs`) | `bpf_link_create` (or netlink `RTM_SETLINK` with `IFLA_XDP`), link pins and their removal | yes: rtnl, and the driver's reconfiguration | `dataplane::attacher::Attacher` |
//! | start: lookups and XDP attach of the interfaces there | as above | yes | before the loop starts |
//! | IGMP starting on an interface: its query socket (`sockets::QuerySocket::new`) | `socket`, `SO_BINDTODEVICE`, `bind`, `IP_MULTICAST_IF`, `IP_OPTIONS` | no: none takes rtnl (tried against a held rtnl) | loop |
//! | RPF routes: the dump at start, then changes (`routes.rs`, `links.rs`) | netlink dump, then subscriptions | the dump yes, before the loop starts; changes no: readiness-driven | start / loop |
//!
//! Map writes stay on the loop: they are the core's output, must land in the order the core
//! emitted them (an MFE's placeholder before its entry, an oif set before the entry naming it),
//! and each is a bounded, non-blocking call on a hash or array map, so a worker would only add a
//! queue and a thread hop to every join's first packet.
//!
//! Attaching an interface that appears is a two-step event: the loop asks the attach worker
//! (see `dataplane/attacher.rs`), and hands the interface to its protocols when the worker's
//! outcome comes back; an interface that vanished meanwhile makes that outcome stale.
//!
//! The upstream's reports and filter changes go to one worker thread, in the order the proxy's
//! host side emitted them: reports are a bounded FIFO (a host retransmits its state changes and
//! answers every query with its whole state, so when the worker is stuck long enough to fill
//! it, the oldest reports are dropped and counted, never the newest state); the filter is the
//! desired state per group, so a later change of a group replaces one not yet applied and none
//! is ever lost. The worker's failures come back to the loop as events, counted and logged
//! rate-limited there.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    io,
    net::Ipv4Addr,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::Duration,
};

use log::{debug, warn};

/// Reports waiting for the worker at most: at one report per group change, a stuck worker
/// holds this many before the oldest go.
pub const REPORT_QUEUE: usize = 1024;

/// Failures waiting for the loop to log them at most; past it they are only counted.
const FAILURE_QUEUE: usize = 64;

/// How long a plain stop waits for the worker's last leaves and filter removals.
const STOP_WITHIN: Duration = Duration::from_secs(5);

/// Where the worker's system calls go: the upstream's report socket and link-layer filter, or
/// a test's stand-in.
pub trait UpstreamSink: Send + 'static {
    /// Sends one encoded IGMP report to `destination`; may block.
    ///
    /// # Errors
    /// The send failed.
    fn send(&mut self, destination: Ipv4Addr, igmp: &[u8]) -> io::Result<()>;
    /// Lets `group`'s frames in (`true`) or stops them (`false`); may block.
    ///
    /// # Errors
    /// The kernel refused.
    fn filter(&mut self, group: Ipv4Addr, receive: bool) -> io::Result<()>;
}

/// What the worker could not do, for the loop to count and log.
#[derive(Debug)]
pub enum Failure {
    Send(io::Error),
    Filter {
        group: Ipv4Addr,
        receive: bool,
        error: io::Error,
    },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Send(e) => write!(f, "cannot send an IGMP report: {e}"),
            Failure::Filter {
                group,
                receive: true,
                error,
            } => write!(f, "adding {group} to the link-layer filter failed: {error}"),
            Failure::Filter {
                group,
                receive: false,
                error,
            } => write!(
                f,
                "removing {group} from the link-layer filter failed: {error}"
            ),
        }
    }
}

/// What waits for the worker.
#[derive(Default)]
struct Pending {
    reports: VecDeque<(Ipv4Addr, Vec<u8>)>,
    /// The newest wanted state of each group whose filter entry may have to change.
    filter: BTreeMap<Ipv4Addr, bool>,
    /// The groups the worker has in the filter.
    applied: BTreeSet<Ipv4Addr>,
    /// Set when the worker must remove every group it added, then end.
    clear: bool,
    /// The edge is gone: end once everything pending is done.
    closed: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Signalled when work arrives.
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The worker thread that makes the upstream's system calls, and the loop's end of it.
pub struct UpstreamWorker {
    shared: Arc<Shared>,
    failures: tokio::sync::mpsc::Receiver<Failure>,
    /// Ends when the worker thread does.
    done: std::sync::mpsc::Receiver<()>,
    /// Reports dropped over [`REPORT_QUEUE`].
    dropped: u64,
}

impl UpstreamWorker {
    /// Starts the worker on `sink`, named after interface `name`.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn spawn(name: &str, sink: impl UpstreamSink) -> io::Result<UpstreamWorker> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
        });
        let (fail_tx, failures) = tokio::sync::mpsc::channel(FAILURE_QUEUE);
        let (done_tx, done) = std::sync::mpsc::channel();
        let worker = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("mgm-up-{name}"))
            .spawn(move || {
                work(&worker, sink, &fail_tx);
                drop(done_tx);
            })?;
        Ok(UpstreamWorker {
            shared,
            failures,
            done,
            dropped: 0,
        })
    }

    /// Queues a report after every one queued before; `false` if the queue was full and the
    /// oldest report went to make room (counted in [`UpstreamWorker::dropped`]).
    pub fn report(&mut self, destination: Ipv4Addr, igmp: Vec<u8>) -> bool {
        let mut p = self.shared.lock();
        let room = p.reports.len() < REPORT_QUEUE;
        if !room {
            p.reports.pop_front();
            self.dropped += 1;
        }
        p.reports.push_back((destination, igmp));
        drop(p);
        self.shared.wake.notify_all();
        room
    }

    /// The interface must receive `group`'s frames (`true`) or no longer (`false`); replaces
    /// a change of the group the worker has not applied yet.
    pub fn filter(&mut self, group: Ipv4Addr, receive: bool) {
        self.shared.lock().filter.insert(group, receive);
        self.shared.wake.notify_all();
    }

    /// Reports dropped so far because the worker was behind by [`REPORT_QUEUE`].
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The next failure of the worker, for the loop to count and log.
    pub async fn next_failure(&mut self) -> Option<Failure> {
        self.failures.recv().await
    }

    /// A failure already back, if any.
    pub fn try_failure(&mut self) -> Option<Failure> {
        self.failures.try_recv().ok()
    }

    /// For a plain stop: the worker finishes what is queued, removes every filter entry it
    /// added and ends; waits for that up to [`STOP_WITHIN`].
    ///
    /// # Errors
    /// The worker did not finish in time (a system call is stuck).
    pub fn stop(self) -> Result<(), Duration> {
        self.shared.lock().clear = true;
        self.shared.wake.notify_all();
        match self.done.recv_timeout(STOP_WITHIN) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(STOP_WITHIN),
            _ => Ok(()),
        }
    }
}

impl Drop for UpstreamWorker {
    /// The worker finishes what is queued on its own (the groups stay joined and in the filter,
    /// for the next daemon to take over); nobody waits for it.
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

/// The worker thread: takes everything pending at once, sends the reports in order, then
/// brings each changed group's filter entry to its newest wanted state.
fn work(
    shared: &Shared,
    mut sink: impl UpstreamSink,
    failures: &tokio::sync::mpsc::Sender<Failure>,
) {
    let fail = |f: Failure| {
        if let Err(tokio::sync::mpsc::error::TrySendError::Full(f)) = failures.try_send(f) {
            warn!("upstream: {f} (the loop is behind on the worker's failures)");
        }
    };
    loop {
        let mut p = shared.lock();
        while p.reports.is_empty() && p.filter.is_empty() && !p.clear && !p.closed {
            p = shared
                .wake
                .wait(p)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let reports = std::mem::take(&mut p.reports);
        let mut filter = std::mem::take(&mut p.filter);
        let last = (p.clear || p.closed) && reports.is_empty() && filter.is_empty();
        if last && p.clear {
            // Every group leaves the filter before the worker ends.
            filter = p.applied.iter().map(|g| (*g, false)).collect();
        }
        let applied = p.applied.clone();
        drop(p);
        for (destination, igmp) in reports {
            if let Err(e) = sink.send(destination, &igmp) {
                fail(Failure::Send(e));
            }
        }
        let mut now_applied = applied;
        for (group, receive) in filter {
            if receive == now_applied.contains(&group) {
                continue;
            }
            debug!("upstream: link-layer filter {group} -> {receive}");
            match sink.filter(group, receive) {
                Ok(()) if receive => {
                    now_applied.insert(group);
                }
                Ok(()) => {
                    now_applied.remove(&group);
                }
                Err(error) => fail(Failure::Filter {
                    group,
                    receive,
                    error,
                }),
            }
        }
        shared.lock().applied = now_applied;
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// A call the sink was asked to make, told as it starts.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Call {
        Send(Vec<u8>),
        Filter(Ipv4Addr, bool),
    }

    /// A sink that tells each call as it starts, then waits for the test's permission to
    /// finish it: a stuck kernel call, under the test's control. Group x.x.x.99 is refused.
    struct Gated {
        gate: mpsc::Receiver<()>,
        calls: mpsc::Sender<Call>,
    }

    impl UpstreamSink for Gated {
        fn send(&mut self, _: Ipv4Addr, igmp: &[u8]) -> io::Result<()> {
            let _ = self.calls.send(Call::Send(igmp.to_vec()));
            let _ = self.gate.recv();
            Ok(())
        }
        fn filter(&mut self, group: Ipv4Addr, receive: bool) -> io::Result<()> {
            let _ = self.calls.send(Call::Filter(group, receive));
            let _ = self.gate.recv();
            if group.octets()[3] == 99 {
                return Err(io::Error::from_raw_os_error(libc::EADDRNOTAVAIL));
            }
            Ok(())
        }
    }

    const WAIT: Duration = Duration::from_secs(10);

    fn g(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(239, 1, 1, n)
    }

    const TO: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 22);

    /// A gated worker, its gate (each send lets one call finish) and the calls it started.
    fn gated() -> (UpstreamWorker, mpsc::SyncSender<()>, mpsc::Receiver<Call>) {
        let (open, gate) = mpsc::sync_channel(0);
        let (calls, made) = mpsc::channel();
        let w = UpstreamWorker::spawn("test", Gated { gate, calls }).expect("thread");
        (w, open, made)
    }

    /// Lets every call from now on finish, until the worker ends.
    fn release(open: mpsc::SyncSender<()>) {
        std::thread::spawn(move || while open.send(()).is_ok() {});
    }

    /// While the first report's send is stuck in the kernel, the loop's side goes on
    /// queueing (reports, joins and leaves) without waiting; released, the reports go out in
    /// the order queued, each group's filter entry takes its newest state, and a group's leave
    /// queued after its join lands after it.
    #[test]
    fn the_loop_keeps_queueing_while_a_call_is_stuck_and_everything_lands_in_order() {
        let (mut w, open, made) = gated();
        w.report(TO, vec![0]);
        assert_eq!(made.recv_timeout(WAIT), Ok(Call::Send(vec![0])));
        // The worker is stuck in that send now. The loop, on a thread of its own here, queues
        // on: it must be done while the call is still stuck.
        let (served, done) = mpsc::channel();
        let event_loop = std::thread::spawn(move || {
            for i in 1..=100u8 {
                w.report(TO, vec![i]);
                // g2 joins and leaves by turns and ends joined; g3 ends left.
                w.filter(g(2), i % 2 == 0);
                w.filter(g(3), i % 2 == 1);
            }
            w.filter(g(1), true);
            let _ = served.send(());
            w
        });
        let queued = done.recv_timeout(Duration::from_secs(2));
        // Unstick the worker whatever happened, so a failure ends rather than hangs.
        release(open);
        assert!(queued.is_ok(), "queueing waited for the stuck call");
        let mut w = event_loop.join().expect("the loop's thread");
        assert_eq!(w.dropped(), 0);
        let mut calls = vec![Call::Send(vec![0])];
        while calls.last() != Some(&Call::Filter(g(2), true)) {
            calls.push(made.recv_timeout(WAIT).expect("the worker goes on"));
        }
        w.filter(g(1), false);
        w.stop().expect("the worker ends");
        calls.extend(made.try_iter());
        let mut expected: Vec<Call> = (0..=100).map(|i| Call::Send(vec![i])).collect();
        expected.extend([
            Call::Filter(g(1), true),
            Call::Filter(g(2), true),
            Call::Filter(g(1), false),
            // The stop's clearing.
            Call::Filter(g(2), false),
        ]);
        assert_eq!(calls, expected);
    }

    /// A worker stuck past the queue drops the oldest reports, counted, never the newest; no
    /// filter change is dropped.
    #[test]
    fn a_stuck_worker_loses_the_oldest_reports_counted_and_no_filter_state() {
        let (mut w, open, made) = gated();
        w.report(TO, vec![0, 0]);
        assert_eq!(made.recv_timeout(WAIT), Ok(Call::Send(vec![0, 0])));
        let extra = 10usize;
        for i in 0..REPORT_QUEUE + extra {
            let fitted = w.report(TO, (i as u16).to_be_bytes().to_vec());
            assert_eq!(fitted, i < REPORT_QUEUE);
        }
        for n in 1..=50 {
            w.filter(g(n), true);
        }
        assert_eq!(w.dropped(), extra as u64);
        release(open);
        w.stop().expect("the worker ends");
        let calls: Vec<Call> = made.try_iter().collect();
        let mut expected: Vec<Call> = (extra..REPORT_QUEUE + extra)
            .map(|i| Call::Send((i as u16).to_be_bytes().to_vec()))
            .collect();
        expected.extend((1..=50).map(|n| Call::Filter(g(n), true)));
        expected.extend((1..=50).map(|n| Call::Filter(g(n), false)));
        assert_eq!(calls, expected);
    }

    /// Failures come back as events; a stop removes what the worker added (not what the
    /// kernel refused) and ends the thread.
    #[test]
    fn failures_come_back_and_a_stop_removes_every_entry_added() {
        let (mut w, open, made) = gated();
        release(open);
        w.filter(g(1), true);
        w.filter(g(99), true);
        let failure = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
            .block_on(async { tokio::time::timeout(WAIT, w.next_failure()).await });
        match failure {
            Ok(Some(Failure::Filter {
                group,
                receive: true,
                ..
            })) => assert_eq!(group, g(99)),
            other => panic!("expected 239.1.1.99's refusal, got {other:?}"),
        }
        w.stop().expect("the worker ends");
        let calls: Vec<Call> = made.try_iter().collect();
        assert_eq!(
            calls,
            vec![
                Call::Filter(g(1), true),
                Call::Filter(g(99), true),
                Call::Filter(g(1), false),
            ]
        );
    }
}
