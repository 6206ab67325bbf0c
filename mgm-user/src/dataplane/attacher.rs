//! Attaching the ingress program to interfaces that appear while running, and detaching it
//! from ones that vanish, on a worker thread (issue 19): the lookups' `SIOCGIFADDR` and the
//! attach's `bpf_link_create` take the kernel's rtnl lock, which any other process's netlink
//! change holds, and removing a link pin can release the link, which takes it too. The loop
//! queues what it wants and acts on the outcomes as events; attaching at start stays in
//! [`Dataplane::load`](super::Dataplane::load).
//!
//! What waits for the worker is the newest wanted state of each interface name (attached to
//! an ifindex, or not at all) and the interfaces whose address to read, so the queue is
//! bounded by the managed interfaces and a flapping link does not pile up work. The worker
//! takes everything pending at once and removes the link pin of every name in it before it
//! attaches any: a pin of a name that moved must not hold an interface another name now
//! attaches to (one XDP link per interface), and an attach always makes its name's pin anew.
//!
//! Each attach carries a number; an outcome whose name was wanted otherwise since (it
//! vanished, was renamed, or appeared again) is stale and never reaches the loop: whatever
//! made it stale queued that name's pin removal or a newer attach after it, which the worker
//! applies after it, so nothing needs undoing. MAC and MTU changes the loop hears of while an
//! interface waits are applied to the outcome, whose lookup may be older.

use std::{
    collections::BTreeMap,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::Duration,
};

use log::debug;

use super::{netdev::NetDev, DataplaneError};

/// Outcomes waiting for the loop at most; the worker waits when the loop is this far behind.
const OUTCOME_QUEUE: usize = 64;

/// How long a stop that removes the pins waits for an attach under way.
const STOP_WITHIN: Duration = Duration::from_secs(5);

/// The system calls the worker makes: the kernel's, or a test's stand-in.
pub trait Kernel: Send + 'static {
    /// The interface called `name` now.
    ///
    /// # Errors
    /// It does not exist or cannot be queried.
    fn lookup(&mut self, name: &str) -> Result<NetDev, DataplaneError>;
    /// Attaches the ingress program to `dev` through a link pinned under its name; the mode
    /// it was attached in.
    ///
    /// # Errors
    /// The kernel refused.
    fn attach(&mut self, dev: &NetDev) -> Result<&'static str, DataplaneError>;
    /// Removes the link pinned under `name`, if any: the program leaves the interface it was
    /// attached to, if that still exists.
    fn detach(&mut self, name: &str);
}

/// What became of a request, for the loop to act on.
#[derive(Debug)]
pub enum Outcome {
    /// The ingress program runs on `dev` now.
    Attached { dev: NetDev, mode: &'static str },
    /// `name` cannot be attached.
    Failed { name: String, error: DataplaneError },
    /// The interface was not there under the name and ifindex announced (gone or renamed
    /// again): a later announcement says what it is.
    Gone { name: String, ifindex: u32 },
    /// An interface asked for with [`Attacher::lookup`], as it is now, address included.
    Found(NetDev),
}

/// What waits for the worker.
#[derive(Default)]
struct Pending {
    /// Per name, the newest request's number and the ifindex to attach to (`None`: detach).
    links: BTreeMap<String, (u64, Option<u32>)>,
    /// Interfaces to read again, by name, with the ifindex they must have, if one.
    lookups: BTreeMap<String, Option<u32>>,
    /// The loop's end is gone: the worker ends without doing what is pending.
    closed: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A MAC or MTU change announced while an interface waited for its attach.
#[derive(Debug, Default, Clone, Copy)]
struct Moved {
    mac: Option<[u8; 6]>,
    mtu: Option<u32>,
}

/// The attach worker thread and the loop's end of it.
pub struct Attacher {
    shared: Arc<Shared>,
    outcomes: tokio::sync::mpsc::Receiver<(u64, Outcome)>,
    /// Ends when the worker thread does.
    done: std::sync::mpsc::Receiver<()>,
    /// The last request's number.
    seq: u64,
    /// The newest request's number per name: only its outcome is current.
    latest: BTreeMap<String, u64>,
    /// Interfaces waiting for their attach's outcome: name and changes announced meanwhile.
    waiting: BTreeMap<u32, (String, Moved)>,
}

impl Attacher {
    /// Starts the worker on `kernel`.
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn spawn(kernel: impl Kernel) -> std::io::Result<Attacher> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
        });
        let (tx, outcomes) = tokio::sync::mpsc::channel(OUTCOME_QUEUE);
        let (done_tx, done) = std::sync::mpsc::channel();
        let worker = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("mgm-attach".to_owned())
            .spawn(move || {
                work(&worker, kernel, &tx);
                drop(done_tx);
            })?;
        Ok(Attacher {
            shared,
            outcomes,
            done,
            seq: 0,
            latest: BTreeMap::new(),
            waiting: BTreeMap::new(),
        })
    }

    fn request(&mut self, name: &str, ifindex: Option<u32>) {
        self.seq += 1;
        self.latest.insert(name.to_owned(), self.seq);
        self.waiting.retain(|_, (n, _)| n != name);
        if let Some(i) = ifindex {
            self.waiting.insert(i, (name.to_owned(), Moved::default()));
        }
        self.shared
            .lock()
            .links
            .insert(name.to_owned(), (self.seq, ifindex));
        self.shared.wake.notify_all();
    }

    /// `name` appeared as `ifindex`: look it up and attach to it; replaces any request of
    /// `name` not yet applied.
    pub fn attach(&mut self, name: &str, ifindex: u32) {
        self.request(name, Some(ifindex));
    }

    /// `name` is no longer managed: remove its link pin; replaces any request of `name` not
    /// yet applied, and makes the outcome of one under way stale.
    pub fn detach(&mut self, name: &str) {
        self.request(name, None);
    }

    /// Read `name` again (for its address, or whether it exists): an [`Outcome::Found`]
    /// follows if it exists, as `ifindex` when that is given.
    pub fn lookup(&mut self, name: &str, ifindex: Option<u32>) {
        self.shared.lock().lookups.insert(name.to_owned(), ifindex);
        self.shared.wake.notify_all();
    }

    /// Whether `ifindex` waits for its attach's outcome.
    pub fn waiting(&self, ifindex: u32) -> bool {
        self.waiting.contains_key(&ifindex)
    }

    /// `ifindex`'s MAC or MTU changed: `true` if it waits for its attach, whose outcome then
    /// carries the change.
    pub fn moved(&mut self, ifindex: u32, mac: Option<[u8; 6]>, mtu: Option<u32>) -> bool {
        let Some((_, moved)) = self.waiting.get_mut(&ifindex) else {
            return false;
        };
        moved.mac = mac.or(moved.mac);
        moved.mtu = mtu.or(moved.mtu);
        true
    }

    /// The next current outcome; stale ones are left out. Cancel-safe.
    pub async fn next(&mut self) -> Outcome {
        loop {
            let Some((seq, outcome)) = self.outcomes.recv().await else {
                // The worker ended (it panicked): nothing more comes.
                return std::future::pending().await;
            };
            if let Some(outcome) = self.current(seq, outcome) {
                return outcome;
            }
        }
    }

    /// `outcome` as the loop must see it, or `None` when it is stale.
    fn current(&mut self, seq: u64, outcome: Outcome) -> Option<Outcome> {
        let name = match &outcome {
            Outcome::Found(_) => return Some(outcome),
            Outcome::Attached { dev, .. } => &dev.name,
            Outcome::Failed { name, .. } | Outcome::Gone { name, .. } => name,
        };
        if !self.is_latest(name, seq) {
            debug!("{name}: a stale attach outcome left out");
            return None;
        }
        let mut moved = Moved::default();
        self.waiting.retain(|_, (n, m)| {
            let mine = n == name;
            if mine {
                moved = *m;
            }
            !mine
        });
        match outcome {
            Outcome::Attached { mut dev, mode } => {
                if let Some(mac) = moved.mac {
                    dev.mac = mac;
                }
                if let Some(mtu) = moved.mtu {
                    dev.mtu = u16::try_from(mtu).unwrap_or(u16::MAX);
                }
                Some(Outcome::Attached { dev, mode })
            }
            outcome => Some(outcome),
        }
    }

    fn is_latest(&self, name: &str, seq: u64) -> bool {
        self.latest.get(name) == Some(&seq)
    }

    /// Ends the worker, pending requests left undone, and waits up to [`STOP_WITHIN`] for a
    /// call under way: for a stop that removes the pins after it.
    ///
    /// # Errors
    /// The worker is still in a system call.
    pub fn stop(&mut self) -> Result<(), Duration> {
        self.close();
        // A worker waiting for room for an outcome is let go.
        self.outcomes.close();
        match self.done.recv_timeout(STOP_WITHIN) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(STOP_WITHIN),
            _ => Ok(()),
        }
    }

    fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

impl Drop for Attacher {
    /// The worker ends after the call under way; nobody waits (a crash or a kept-forwarding
    /// stop: the next daemon attaches what is missing at its start).
    fn drop(&mut self) {
        self.close();
    }
}

/// The worker thread: takes everything pending at once, removes the link pin of every name
/// in it, attaches the names wanted attached, then reads the interfaces asked for.
fn work(
    shared: &Shared,
    mut kernel: impl Kernel,
    outcomes: &tokio::sync::mpsc::Sender<(u64, Outcome)>,
) {
    let closed = || shared.lock().closed;
    loop {
        let mut p = shared.lock();
        while p.links.is_empty() && p.lookups.is_empty() && !p.closed {
            p = shared
                .wake
                .wait(p)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if p.closed {
            return;
        }
        let links = std::mem::take(&mut p.links);
        let lookups = std::mem::take(&mut p.lookups);
        drop(p);
        for name in links.keys() {
            kernel.detach(name);
        }
        for (name, (seq, ifindex)) in links {
            let Some(ifindex) = ifindex else {
                continue;
            };
            if closed() {
                return;
            }
            let outcome = match kernel.lookup(&name) {
                Ok(dev) if dev.ifindex == ifindex => match kernel.attach(&dev) {
                    Ok(mode) => Outcome::Attached { dev, mode },
                    Err(error) => Outcome::Failed { name, error },
                },
                Ok(_) | Err(_) => Outcome::Gone { name, ifindex },
            };
            if outcomes.blocking_send((seq, outcome)).is_err() {
                return;
            }
        }
        for (name, ifindex) in lookups {
            if closed() {
                return;
            }
            match kernel.lookup(&name) {
                Ok(dev) if ifindex.is_none_or(|i| i == dev.ifindex) => {
                    if outcomes.blocking_send((0, Outcome::Found(dev))).is_err() {
                        return;
                    }
                }
                Ok(_) | Err(_) => debug!("{name} is gone or renamed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{io, sync::mpsc};

    use super::*;

    /// The kernel as the tests make it: interfaces by name, link pins by name (each holding
    /// the ifindex it attached to), and a gate each attach waits at.
    #[derive(Default)]
    struct World {
        interfaces: BTreeMap<String, u32>,
        pins: BTreeMap<String, u32>,
    }

    struct Fake {
        world: Arc<Mutex<World>>,
        /// Each attach tells its name as it starts, then waits for the test's permission.
        started: mpsc::Sender<String>,
        gate: mpsc::Receiver<()>,
    }

    fn refused(name: &str, errno: i32) -> DataplaneError {
        DataplaneError::Interface {
            name: name.to_owned(),
            source: io::Error::from_raw_os_error(errno),
        }
    }

    impl Kernel for Fake {
        fn lookup(&mut self, name: &str) -> Result<NetDev, DataplaneError> {
            let ifindex = *self
                .world
                .lock()
                .unwrap()
                .interfaces
                .get(name)
                .ok_or_else(|| refused(name, libc::ENODEV))?;
            Ok(NetDev {
                name: name.to_owned(),
                ifindex,
                mac: [2, 0, 0, 0, 0, ifindex as u8],
                mtu: 1500,
                ipv4: None,
                ipv4_subnets: Vec::new(),
                up: true,
            })
        }

        fn attach(&mut self, dev: &NetDev) -> Result<&'static str, DataplaneError> {
            let _ = self.started.send(dev.name.clone());
            let _ = self.gate.recv();
            let mut w = self.world.lock().unwrap();
            // As the kernel: one XDP link per interface, and a pin path is taken once.
            if w.pins.values().any(|i| *i == dev.ifindex) {
                return Err(refused(&dev.name, libc::EBUSY));
            }
            if w.pins.contains_key(&dev.name) {
                return Err(refused(&dev.name, libc::EEXIST));
            }
            w.pins.insert(dev.name.clone(), dev.ifindex);
            Ok("native")
        }

        fn detach(&mut self, name: &str) {
            self.world.lock().unwrap().pins.remove(name);
        }
    }

    const WAIT: Duration = Duration::from_secs(10);

    struct Rig {
        attacher: Attacher,
        world: Arc<Mutex<World>>,
        started: mpsc::Receiver<String>,
        open: mpsc::SyncSender<()>,
        runtime: tokio::runtime::Runtime,
    }

    impl Rig {
        fn new(interfaces: &[(&str, u32)]) -> Rig {
            let world = Arc::new(Mutex::new(World::default()));
            world.lock().unwrap().interfaces = interfaces
                .iter()
                .map(|(n, i)| ((*n).to_owned(), *i))
                .collect();
            let (started_tx, started) = mpsc::channel();
            let (open, gate) = mpsc::sync_channel(0);
            let attacher = Attacher::spawn(Fake {
                world: Arc::clone(&world),
                started: started_tx,
                gate,
            })
            .expect("thread");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("runtime");
            Rig {
                attacher,
                world,
                started,
                open,
                runtime,
            }
        }

        /// Waits until the worker is in `name`'s attach, stuck at the gate.
        fn stuck_in(&self, name: &str) {
            assert_eq!(self.started.recv_timeout(WAIT).as_deref(), Ok(name));
        }

        /// Lets every attach from now on finish.
        fn release(&self) {
            let open = self.open.clone();
            std::thread::spawn(move || while open.send(()).is_ok() {});
        }

        fn next(&mut self) -> Outcome {
            let attacher = &mut self.attacher;
            self.runtime
                .block_on(async { tokio::time::timeout(WAIT, attacher.next()).await })
                .expect("an outcome in time")
        }

        fn rename(&self, from: &str, to: &str) {
            let mut w = self.world.lock().unwrap();
            let i = w.interfaces.remove(from).expect("exists");
            w.interfaces.insert(to.to_owned(), i);
        }

        fn pins(&self) -> Vec<(String, u32)> {
            let w = self.world.lock().unwrap();
            w.pins.iter().map(|(n, i)| (n.clone(), *i)).collect()
        }
    }

    fn attached(outcome: Outcome) -> NetDev {
        match outcome {
            Outcome::Attached { dev, .. } => dev,
            other => panic!("expected an attach, got {other:?}"),
        }
    }

    fn pins(expected: &[(&str, u32)]) -> Vec<(String, u32)> {
        expected
            .iter()
            .map(|(n, i)| ((*n).to_owned(), *i))
            .collect()
    }

    /// While an attach is stuck in the kernel, the loop goes on asking: the interface is
    /// deleted and created again under a new ifindex, its MTU changes, its address comes.
    /// The stuck attach's outcome is stale and never reaches the loop; the new interface is
    /// attached with the MTU announced meanwhile, and the address lookup comes after it; the
    /// name's pin ends on the new interface.
    #[test]
    fn an_interface_that_comes_back_while_its_attach_is_stuck_ends_attached_once_as_it_is_now() {
        let mut rig = Rig::new(&[("dn1", 5), ("dn2", 6)]);
        rig.attacher.attach("dn1", 5);
        rig.stuck_in("dn1");
        {
            let mut w = rig.world.lock().unwrap();
            w.interfaces.insert("dn1".to_owned(), 9);
        }
        // As the daemon does: the vanish queues the pin's removal, the appearance an attach.
        rig.attacher.detach("dn1");
        rig.attacher.attach("dn1", 9);
        assert!(!rig.attacher.waiting(5));
        assert!(rig.attacher.waiting(9));
        assert!(rig.attacher.moved(9, None, Some(9000)));
        assert!(
            !rig.attacher.moved(6, None, Some(9000)),
            "dn2 waits for nothing"
        );
        rig.attacher.lookup("dn1", Some(9));
        rig.release();
        let dev = attached(rig.next());
        assert_eq!((dev.name.as_str(), dev.ifindex, dev.mtu), ("dn1", 9, 9000));
        assert!(!rig.attacher.waiting(9));
        match rig.next() {
            Outcome::Found(dev) => assert_eq!((dev.name.as_str(), dev.ifindex), ("dn1", 9)),
            other => panic!("expected dn1 found, got {other:?}"),
        }
        assert_eq!(rig.pins(), pins(&[("dn1", 9)]));
    }

    /// dn1 is renamed dn2 and another interface takes the name dn1, all while the worker is
    /// stuck elsewhere: dn1's old pin must leave the renamed interface before dn2's attach
    /// (one XDP link per interface), and dn1's new attach must not take over or trip on that
    /// pin. Both end attached, each pin on its own interface.
    #[test]
    fn a_rename_between_managed_names_frees_the_interface_before_it_is_attached_again() {
        let mut rig = Rig::new(&[("dn1", 7), ("dn3", 8)]);
        rig.attacher.attach("dn1", 7);
        rig.stuck_in("dn1");
        rig.open.send(()).unwrap();
        assert_eq!(attached(rig.next()).ifindex, 7);
        rig.attacher.attach("dn3", 8);
        rig.stuck_in("dn3");
        rig.rename("dn1", "dn2");
        rig.world
            .lock()
            .unwrap()
            .interfaces
            .insert("dn1".to_owned(), 11);
        rig.attacher.detach("dn1");
        rig.attacher.attach("dn2", 7);
        rig.attacher.attach("dn1", 11);
        rig.release();
        let mut got: Vec<(String, u32)> = (0..3)
            .map(|_| attached(rig.next()))
            .map(|d| (d.name, d.ifindex))
            .collect();
        got.sort();
        assert_eq!(got, pins(&[("dn1", 11), ("dn2", 7), ("dn3", 8)]));
        assert_eq!(rig.pins(), pins(&[("dn1", 11), ("dn2", 7), ("dn3", 8)]));
    }

    /// An interface gone before its attach, and one that cannot be attached, come back as
    /// such; a stop with an attach stuck does not wait for ever, and nothing queued runs.
    #[test]
    fn gone_and_refused_interfaces_are_told_and_a_stop_leaves_queued_work_undone() {
        let mut rig = Rig::new(&[("dn1", 5), ("dn2", 6)]);
        rig.world.lock().unwrap().pins.insert("x".to_owned(), 6);
        rig.attacher.attach("dn4", 4);
        rig.attacher.attach("dn2", 6);
        rig.stuck_in("dn2");
        rig.open.send(()).unwrap();
        let mut outcomes = [rig.next(), rig.next()];
        outcomes.sort_by_key(|o| format!("{o:?}"));
        match &outcomes[..] {
            [Outcome::Failed { name, .. }, Outcome::Gone {
                name: gone,
                ifindex: 4,
            }] => {
                assert_eq!((name.as_str(), gone.as_str()), ("dn2", "dn4"));
            }
            other => panic!("expected dn2 refused and dn4 gone, got {other:?}"),
        }
        rig.attacher.attach("dn1", 5);
        rig.stuck_in("dn1");
        rig.attacher.attach("dn2", 6);
        // The stop's first step, then the stuck call returns.
        rig.attacher.close();
        rig.open.send(()).unwrap();
        rig.attacher.stop().expect("the worker ends");
        assert_eq!(rig.pins(), pins(&[("dn1", 5), ("x", 6)]));
        assert!(
            rig.started.try_recv().is_err(),
            "dn2's attach ran after the stop"
        );
    }
}
