//! CPU placement and accounting: threaded NAPI for a veth, its kernel thread pinned to one CPU,
//! and how busy a CPU was over a run (`/proc/stat`, which is not namespaced).

use std::{collections::BTreeSet, fs, process::Command};

use anyhow::{bail, Context};

use crate::{lab::Netns, run};

/// The CPU that does the router's work.
pub const ROUTER_CPU: usize = 0;
/// The CPU of the generator and the receivers.
pub const HOST_CPU: usize = 1;

/// Pins the calling thread to `cpu`.
///
/// # Errors
/// `sched_setaffinity` failed (no such CPU).
pub fn pin_current(cpu: usize) -> anyhow::Result<()> {
    pin(0, cpu)
}

/// Gives the calling thread `SCHED_IDLE`, so the receivers' NAPI threads on the same CPU
/// always run first and the generator takes only the time they leave: receivers that fall
/// behind would drop frames and make the router look slower than it is.
///
/// # Errors
/// `sched_setscheduler` failed.
pub fn idle_priority() -> anyhow::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is valid for the call; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot set SCHED_IDLE");
    }
    Ok(())
}

/// Keeps the calling thread, and so every process it starts (the daemons under test, `ip`),
/// on one CPU until dropped, then restores its CPU set.
pub struct PinGuard {
    saved: libc::cpu_set_t,
}

impl PinGuard {
    /// Pins the calling thread to `cpu`.
    ///
    /// # Errors
    /// The affinity could not be read or set.
    pub fn new(cpu: usize) -> anyhow::Result<PinGuard> {
        // SAFETY: cpu_set_t is plain data; zero is the empty set.
        let mut saved: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid cpu_set_t for the duration of the call.
        if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut saved) } != 0 {
            return Err(std::io::Error::last_os_error()).context("sched_getaffinity");
        }
        pin_current(cpu)?;
        Ok(PinGuard { saved })
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        // SAFETY: `saved` is the set read in `new`.
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &self.saved) };
    }
}

fn pin(pid: libc::pid_t, cpu: usize) -> anyhow::Result<()> {
    // SAFETY: cpu_set_t is plain data; zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is checked against the set's size by CPU_SET itself (it ignores larger).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t for the duration of the call.
    if unsafe { libc::sched_setaffinity(pid, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot pin pid {pid} to CPU {cpu}"));
    }
    Ok(())
}

/// Pids of the kernel's NAPI threads (`napi/<dev>-<id>`), from every namespace.
fn napi_threads() -> BTreeSet<libc::pid_t> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.starts_with("napi/"))
        })
        .collect()
}

/// Switches `ifname` in `ns` to threaded NAPI and pins its new NAPI thread(s) to `cpu`;
/// returns their pids. The device's NAPI must exist already (XDP attached or GRO on, link up).
/// Thread names are not unique across namespaces (every host has an `eth0`), so the threads
/// are told apart by which appeared when this device turned threaded.
///
/// # Errors
/// sysfs refused the write, or no thread appeared.
pub fn threaded_napi(ns: &Netns, ifname: &str, cpu: usize) -> anyhow::Result<Vec<libc::pid_t>> {
    let before = napi_threads();
    set_threaded(ns, ifname, true)?;
    let new: Vec<libc::pid_t> = napi_threads().difference(&before).copied().collect();
    if new.is_empty() {
        bail!(
            "no NAPI thread appeared for {ifname} in {} (is GRO on or XDP attached?)",
            ns.name()
        );
    }
    for &pid in &new {
        pin(pid, cpu)?;
    }
    Ok(new)
}

/// Switches `ifname` in `ns` back to NAPI in softirq, which runs on the CPU that scheduled it:
/// a veth's peer, handed frames on one CPU, then takes them in on that CPU with no wake-up of
/// another.
///
/// # Errors
/// sysfs refused the write.
fn softirq_napi(ns: &Netns, ifname: &str) -> anyhow::Result<()> {
    set_threaded(ns, ifname, false)
}

/// Runs `f` with `ifname` of every one of `hosts` switched to NAPI in softirq
/// ([`softirq_napi`]), then back to threaded NAPI pinned to `cpu`, also when `f` failed.
///
/// # Errors
/// `f` failed, or sysfs refused a switch.
pub fn with_softirq_napi<T>(
    hosts: &[Netns],
    ifname: &str,
    cpu: usize,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    for host in hosts {
        softirq_napi(host, ifname)?;
    }
    let out = f();
    for host in hosts {
        threaded_napi(host, ifname, cpu)?;
    }
    out
}

fn set_threaded(ns: &Netns, ifname: &str, on: bool) -> anyhow::Result<()> {
    // `ip netns exec` mounts a sysfs of the namespace, where the device is visible.
    run(Command::new("ip").args([
        "netns",
        "exec",
        ns.name(),
        "sh",
        "-c",
        &format!("echo {} > /sys/class/net/{ifname}/threaded", u8::from(on)),
    ]))
    .with_context(|| format!("cannot switch threaded NAPI of {ifname} in {}", ns.name()))
}

/// Busy and total time of one CPU, in clock ticks (`/proc/stat`).
#[derive(Debug, Clone, Copy)]
pub struct CpuTimes {
    busy: u64,
    total: u64,
}

impl CpuTimes {
    /// Reads `cpu`'s line of `/proc/stat`.
    ///
    /// # Errors
    /// The file or the line could not be read.
    pub fn read(cpu: usize) -> anyhow::Result<CpuTimes> {
        let stat = fs::read_to_string("/proc/stat").context("read /proc/stat")?;
        let prefix = format!("cpu{cpu} ");
        let line = stat
            .lines()
            .find(|l| l.starts_with(&prefix))
            .with_context(|| format!("no {prefix:?} line in /proc/stat"))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        // user nice system idle iowait irq softirq steal …; idle and iowait are not busy.
        let total: u64 = v.iter().take(8).sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        Ok(CpuTimes {
            busy: total - idle,
            total,
        })
    }

    /// Busy share (0..1) between `self` and a later `end`. Tick-based: coarse over short runs.
    pub fn busy_until(self, end: CpuTimes) -> f64 {
        let busy = end.busy.saturating_sub(self.busy) as f64;
        let total = end.total.saturating_sub(self.total).max(1) as f64;
        busy / total
    }
}

/// Nanoseconds thread `pid` has run (`/proc/<pid>/schedstat`, first field).
///
/// # Errors
/// The thread is gone or the file is unreadable.
pub fn run_time_ns(pid: libc::pid_t) -> anyhow::Result<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .with_context(|| format!("read /proc/{pid}/schedstat (NAPI thread gone?)"))?;
    s.split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .with_context(|| format!("bad /proc/{pid}/schedstat: {s:?}"))
}
