//! What the tests of network events share: a paced stream that numbers its datagrams, a
//! receiver that records every number it gets, so a test can say exactly which datagrams were
//! lost across an event, and the example module as a child whose lines can be waited for.
//! Waits are on channels and socket timeouts with a deadline, never a fixed sleep.
#![allow(dead_code, reason = "each test file uses part of it")]

use std::{
    io::{BufRead, BufReader},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver as Rx, RecvTimeoutError, Sender as Tx},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use xtask::lab::{
    traffic::{Capture, Receiver, Sender},
    Lab, Netns, SENDER_ADDR,
};

pub use xtask::lab::{mgm_bin, FAST_IGMP};

/// How long anything the tests wait for may take.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Datagrams to one group from the lab's sender every [`Stream::PERIOD`], numbered from 1,
/// until stopped (or dropped).
pub struct Stream {
    stop: Option<Tx<()>>,
    thread: Option<JoinHandle<u64>>,
}

impl Stream {
    pub const PERIOD: Duration = Duration::from_millis(1);

    pub fn start(lab: &Lab, group: Ipv4Addr) -> Stream {
        Stream::from_host(&lab.sender, SENDER_ADDR, group)
    }

    /// The stream from `address` of `host`, such as the source behind an upstream switch.
    pub fn from_host(host: &Netns, address: Ipv4Addr, group: Ipv4Addr) -> Stream {
        Stream::from_sender(Sender::new(host, address, 8).expect("sender socket"), group)
    }

    /// The stream through `tx`, a socket opened beforehand.
    pub fn from_sender(mut tx: Sender, group: Ipv4Addr) -> Stream {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // The stop channel paces the stream: each timeout is the next datagram's turn.
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(Self::PERIOD) {
                tx.send(group, 100).expect("send");
            }
            tx.sent()
        });
        Stream {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops sending; returns the number of the last datagram sent.
    pub fn stop(mut self) -> u64 {
        self.stop.take();
        self.thread
            .take()
            .map_or(0, |t| t.join().expect("the sender thread failed"))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Records the number of every datagram of one group a receiver gets, from a thread.
pub struct Counter {
    seqs: Rx<u64>,
    got: Vec<u64>,
    stop: Option<Tx<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Counter {
    pub fn start(rx: Receiver, group: Ipv4Addr) -> Counter {
        Counter::reading(move |window| rx.collect_seq(group, window))
    }

    /// Counts what a capture sees of `group` on a link, for a host that never joins it.
    pub fn on_link(capture: Capture, group: Ipv4Addr) -> Counter {
        Counter::reading(move |window| capture.collect_seq(group, window))
    }

    /// Counts the numbers `read` returns for each window, from a thread.
    fn reading(read: impl Fn(Duration) -> Vec<u64> + Send + 'static) -> Counter {
        let (tx, seqs) = mpsc::channel();
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            while let Err(mpsc::TryRecvError::Empty) = stopped.try_recv() {
                for seq in read(Duration::from_millis(50)) {
                    if tx.send(seq).is_err() {
                        return;
                    }
                }
            }
        });
        Counter {
            seqs,
            got: Vec::new(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// How many arrived so far.
    pub fn count(&mut self) -> usize {
        self.got.extend(self.seqs.try_iter());
        self.got.len()
    }

    /// Waits until `quiet` passes with no datagram (true), or `timeout` with them still coming.
    pub fn stops(&mut self, quiet: Duration, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if !self.more(1, quiet) {
                return true;
            }
        }
        false
    }

    /// Waits until `more` datagrams beyond those counted now arrived; false after `timeout`.
    pub fn more(&mut self, more: usize, timeout: Duration) -> bool {
        let want = self.count() + more;
        self.until(timeout, |got| got.len() >= want)
    }

    /// Waits until a datagram numbered above `seq` arrives; false after `timeout`.
    pub fn beyond(&mut self, seq: u64, timeout: Duration) -> bool {
        self.count();
        self.until(timeout, |got| got.iter().any(|s| *s > seq))
    }

    fn until(&mut self, timeout: Duration, done: impl Fn(&[u64]) -> bool) -> bool {
        let end = Instant::now() + timeout;
        while !done(&self.got) {
            match self
                .seqs
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(seq) => self.got.push(seq),
                Err(_) => return false,
            }
        }
        true
    }

    /// Waits (up to `timeout`) for datagram `last` and returns the numbers missing between
    /// `from` and `last`, with how many arrived in that range.
    pub fn missing(mut self, from: u64, last: u64, timeout: Duration) -> (Vec<u64>, usize) {
        self.until(timeout, |got| got.contains(&last));
        let got: std::collections::BTreeSet<u64> = self.got.iter().copied().collect();
        let missing = (from..=last).filter(|s| !got.contains(s)).collect();
        (missing, got.range(from..=last).count())
    }

    /// The highest number that arrived so far, if any.
    pub fn last(&mut self) -> Option<u64> {
        self.count();
        self.got.iter().max().copied()
    }

    /// The first number that arrived, if any.
    pub fn first(&mut self) -> Option<u64> {
        self.count();
        self.got.iter().min().copied()
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The lab's stream to `group` with the hosts of `r1` and `r2` joined and each counted, once
/// both got it: what the tests of events on one downstream start from.
pub struct TwoHosts {
    pub stream: Stream,
    /// The host that stays joined through the event, and the first number it got.
    pub stays: Counter,
    pub from: u64,
    /// The host whose link the event touches.
    pub other: Counter,
}

impl TwoHosts {
    /// Joins both hosts to `group`, starts the stream and waits until each got 20 datagrams.
    ///
    /// # Errors
    /// One of them got none within [`PATIENCE`]: the failure message.
    pub fn start(
        lab: &Lab,
        group: Ipv4Addr,
        r1: Receiver,
        r2: Receiver,
    ) -> Result<TwoHosts, String> {
        r1.join(group).expect("join");
        r2.join(group).expect("join");
        let stream = Stream::start(lab, group);
        let mut stays = Counter::start(r1, group);
        let mut other = Counter::start(r2, group);
        if !stays.more(20, PATIENCE) || !other.more(20, PATIENCE) {
            return Err("the hosts on dn1 and dn2 never got the stream".to_owned());
        }
        let from = stays.first().expect("counted");
        Ok(TwoHosts {
            stream,
            stays,
            from,
            other,
        })
    }
}

/// Stops `stream` and checks that `stays` got every datagram from `from` to the last one sent.
///
/// # Errors
/// Some were missing: the failure message, which says they went missing `during` the event.
pub fn nothing_lost(stream: Stream, stays: Counter, from: u64, during: &str) -> Result<(), String> {
    let last = stream.stop();
    let (missing, got) = stays.missing(from, last, PATIENCE);
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the host on dn1 lost datagrams {during}: got {got} of {}, missing {}",
        last - from + 1,
        gaps(&missing)
    ))
}

/// `missing` datagram numbers as ranges, for a failure message.
pub fn gaps(missing: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < missing.len() {
        let mut j = i;
        while j + 1 < missing.len() && missing[j + 1] == missing[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            missing[i].to_string()
        } else {
            format!("{}-{}", missing[i], missing[j])
        });
        i = j + 1;
    }
    out.join(", ")
}

/// The example module (`mgm-user/examples/module.py`) as a child process; its lines (each
/// message it receives "<" or sends ">", and "ready") can be waited for. Killed on drop,
/// which closes its connection as a crash would.
pub struct Module {
    child: Child,
    lines: Rx<String>,
    pub seen: Vec<String>,
}

impl Module {
    pub fn start(socket: &Path, args: &[&str]) -> Module {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../mgm-user/examples/module.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--socket")
            .arg(socket)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs the example module");
        let (tx, lines) = mpsc::channel();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Module {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits until a line satisfies `want`; false after `timeout` (or if the module exited).
    pub fn wait(&mut self, timeout: Duration, want: impl Fn(&str) -> bool) -> bool {
        if self.seen.iter().any(|l| want(l)) {
            return true;
        }
        let end = Instant::now() + timeout;
        loop {
            match self
                .lines
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(l) => {
                    let hit = want(&l);
                    self.seen.push(l);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// The JSON messages it received ("<") or sent (">") so far.
    pub fn messages(&mut self, direction: &str) -> Vec<serde_json::Value> {
        self.seen.extend(self.lines.try_iter());
        self.seen
            .iter()
            .filter_map(|l| l.strip_prefix(direction))
            .filter_map(|l| serde_json::from_str(l.trim()).ok())
            .collect()
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request over the module socket, on a connection of its own; returns the response.
pub fn ask(socket: &Path, request: serde_json::Value) -> serde_json::Value {
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("module socket");
    writeln!(s, "{request}").unwrap();
    let mut lines = BufReader::new(s).lines();
    let hello: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(hello["hello"], "mgm");
    serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap()
}
