//! The router CPU's time during a feed, split between the router's own path and the
//! receivers. Fed by turns, the receivers take their copies in on the router's CPU, inside the
//! feeder's timed batch: the softirq that runs when the batch re-enables bottom halves. perf
//! samples that CPU with call stacks. A sample inside the batch (`xdp_test_run_batch`) is the
//! receivers' work when its stack passes through the receive softirq (`net_rx_action`), and the
//! router's otherwise.
//!
//! The router's ingress is the test run itself, not a NAPI poll, so nothing of the router runs
//! under `net_rx_action`: the copies reach the receivers through their veths' NAPI (XDP
//! receivers, and XDP frames to TC receivers) or the backlog (the stack's skbs to TC
//! receivers). Freeing a copy after the receiver dropped it counts as the receiver's, where a
//! real NIC would free it on transmit completion.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::Context;

use super::{
    cpu::{PinGuard, HOST_CPU, ROUTER_CPU},
    profile::PERF,
};
use crate::output;

/// The kernel function that runs one batch of a live-frames test run, timed as the feed.
pub const BATCH: &str = "xdp_test_run_batch";
/// The softirq that takes frames in: the receivers' side of every copy.
const RECEIVE: &str = "net_rx_action";
/// Samples per second. A slice passes partly between batches (each test run's setup), so a
/// forwarder gets from about 500 (a short path, many calls) to 12,000 over 25 turns of 0.1 s.
const FREQUENCY: &str = "4000";
/// Functions kept in a `--profile` report.
const TOP: usize = 30;

/// Samples of one thread's feed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// Inside the timed batch.
    pub timed: u64,
    /// Of those, in the receive softirq.
    pub receivers: u64,
}

/// One thread's samples inside the timed batch: the split, and the router's own samples by the
/// function they landed in.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Samples {
    pub split: Split,
    pub own: HashMap<String, u64>,
}

impl Samples {
    pub fn add(&mut self, other: &Samples) {
        self.split.add(other.split);
        for (symbol, n) in &other.own {
            *self.own.entry(symbol.clone()).or_default() += n;
        }
    }
}

impl Split {
    pub fn add(&mut self, other: Split) {
        self.timed += other.timed;
        self.receivers += other.receivers;
    }

    /// The receivers' share of the timed samples; `None` with no timed sample.
    pub fn receivers_share(&self) -> Option<f64> {
        (self.timed > 0).then(|| self.receivers as f64 / self.timed as f64)
    }
}

/// A running `perf record -g` of the router's CPU; [`Recording::finish`] stops it and splits
/// its samples by thread.
pub struct Recording {
    child: Child,
    data: PathBuf,
}

/// Starts sampling CPU [`ROUTER_CPU`] with call stacks into `dir/<name>.data`. perf itself
/// runs on [`HOST_CPU`], off the CPU it samples.
///
/// # Errors
/// perf does not start.
pub fn record(dir: &Path, name: &str) -> anyhow::Result<Recording> {
    let data = dir.join(format!("{name}.data"));
    let child = {
        let _pin = PinGuard::new(HOST_CPU)?;
        Command::new(PERF)
            .args(["record", "-q", "-g", "-F", FREQUENCY, "-C"])
            .arg(ROUTER_CPU.to_string())
            .arg("-o")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {PERF}"))?
    };
    // perf needs a moment to open its events; samples before that would be lost.
    std::thread::sleep(std::time::Duration::from_millis(300));
    Ok(Recording { child, data })
}

impl Recording {
    /// Stops perf and splits the timed samples of every thread; the data file is removed.
    ///
    /// # Errors
    /// perf failed to stop or to read its data back.
    pub fn finish(mut self) -> anyhow::Result<HashMap<libc::pid_t, Samples>> {
        // SAFETY: signalling our own child by pid; SIGINT makes perf flush its data.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait().context("perf record did not stop")?;
        let script = output(
            Command::new(PERF)
                .args(["script", "-F", "tid,ip,sym", "-i"])
                .arg(&self.data),
        )?;
        Ok(by_thread(&script))
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = fs::remove_file(&self.data);
    }
}

/// Splits `perf script -F tid,ip,sym` output: each sample is a line with its thread id, then
/// one indented line per frame of its stack, innermost first.
fn by_thread(script: &str) -> HashMap<libc::pid_t, Samples> {
    /// The sample being read: thread, innermost function, in the batch, in the softirq.
    struct Open<'s> {
        tid: libc::pid_t,
        leaf: Option<&'s str>,
        batch: bool,
        receive: bool,
    }
    let mut threads: HashMap<libc::pid_t, Samples> = HashMap::new();
    let mut close = |sample: Option<Open>| {
        let Some(s) = sample.filter(|s| s.batch) else {
            return;
        };
        let t = threads.entry(s.tid).or_default();
        t.split.add(Split {
            timed: 1,
            receivers: u64::from(s.receive),
        });
        if !s.receive {
            *t.own.entry(s.leaf.unwrap_or("?").to_owned()).or_default() += 1;
        }
    };
    let mut sample: Option<Open> = None;
    for line in script.lines() {
        if let Ok(tid) = line.trim().parse() {
            close(sample.replace(Open {
                tid,
                leaf: None,
                batch: false,
                receive: false,
            }));
        } else if let (Some(s), Some(symbol)) = (sample.as_mut(), line.split_whitespace().nth(1)) {
            s.leaf.get_or_insert(symbol);
            s.batch |= symbol.starts_with(BATCH);
            s.receive |= symbol == RECEIVE;
        }
    }
    close(sample);
    threads
}

/// Writes the functions the router's own samples landed in, most first, each as a share of
/// those samples and as ns of `router_ns` per packet.
///
/// # Errors
/// The file cannot be written.
pub fn write_top(path: &Path, own: &HashMap<String, u64>, router_ns: f64) -> anyhow::Result<()> {
    let total: u64 = own.values().sum();
    let mut top: Vec<(&String, &u64)> = own.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut text = format!(
        "router's own samples: {total}, {router_ns:.0} ns per packet\n  share   ns/pkt  function\n"
    );
    for (symbol, n) in top.into_iter().take(TOP) {
        let share = *n as f64 / total as f64;
        text += &format!(
            "{:>6.1}% {:>8.1}  {symbol}\n",
            100.0 * share,
            share * router_ns
        );
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_split_by_thread_and_stack() {
        // As perf prints it: the thread id right-aligned, a tab before each frame.
        let script = concat!(
            "    31046 \n",
            "\tffffffff81f06d19 veth_xdp_rcv\n",
            "\tffffffff81f06d19 veth_poll\n",
            "\tffffffff81f06d19 net_rx_action\n",
            "\tffffffff81f06d19 __local_bh_enable_ip\n",
            "\tffffffff81f06d19 xdp_test_run_batch.constprop.0\n",
            "\tffffffff81f06d19 bpf_test_run_xdp_live\n",
            "\n",
            "    31046 \n",
            "\tffffffff81f06d19 bpf_prog_3b185187f1855c4c_mgm_ingress\n",
            "\tffffffff81f06d19 xdp_test_run_batch.constprop.0\n",
            "\n",
            "    31046 \n",
            "\tffffffff81f06d19 __sys_bpf\n",
            "\n",
            "    31047 \n",
            "\tffffffff81f06d19 net_rx_action\n",
            "\tffffffff81f06d19 xdp_test_run_batch.constprop.0\n",
            "\n",
            "    31048 \n",
            "\tffffffff81f06d19 net_rx_action\n",
            "\n",
        );
        let threads = by_thread(script);
        let split = |tid| threads[&tid].split;
        assert_eq!(
            split(31046),
            Split {
                timed: 2,
                receivers: 1
            }
        );
        assert_eq!(
            split(31047),
            Split {
                timed: 1,
                receivers: 1
            }
        );
        // Outside the batch: neither the feed's time nor its receivers'.
        assert!(!threads.contains_key(&31048));
        assert_eq!(split(31046).receivers_share(), Some(0.5));
        // The router's own sample, by its innermost function; none for the receivers'.
        let own = |tid| threads[&tid].own.clone().into_iter().collect::<Vec<_>>();
        assert_eq!(
            own(31046),
            [("bpf_prog_3b185187f1855c4c_mgm_ingress".to_owned(), 1)]
        );
        assert!(own(31047).is_empty());
        assert_eq!(Split::default().receivers_share(), None);
    }
}
