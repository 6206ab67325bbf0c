//! The control-plane part of `cargo xtask bench`: how fast the real daemon turns IGMP reports
//! into state, how long a receiver waits from its join to its first packet, and what the daemon
//! costs in memory. Each runs the real `mgm run` (proxy mode) and, as the baseline in the same
//! run, igmpproxy on the kernel's ipmr, on lab namespaces of its own that go away on every exit
//! path. igmpproxy needs the kernel's multicast routing: on a kernel without it mgm is measured
//! alone and the output says why. BENCHMARKS.md ("Control plane") explains the method.

mod latency;
mod reports;
mod scale;

pub use scale::scale;

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    io::{BufRead, BufReader},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::lab::{self, traffic::Capture, Daemon, Lab, UPSTREAM};

/// Runs every control-plane measurement, prints its tables and returns the `control` JSON.
///
/// # Errors
/// A lab, mgm or igmpproxy could not be set up, or a measurement failed outright (a router
/// that is merely slow is reported, not an error).
pub fn bench(mgm: &Path, quick: bool) -> anyhow::Result<Value> {
    lab::sweep_stale()?;
    let kinds: &[Kind] = match super::ipmr_missing() {
        Some(why) => {
            println!("control: igmpproxy (the baseline) left out: {why}");
            &[Kind::Mgm]
        }
        None => {
            crate::setup::ensure_packages(
                &[("/usr/sbin/igmpproxy", "igmpproxy")],
                "the control-plane baseline",
            )?;
            &[Kind::Mgm, Kind::Igmpproxy]
        }
    };
    let scales: &[usize] = if quick {
        &[1_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    let mut runs = Vec::new();
    for &groups in scales {
        for version in [lab::IgmpVersion::V3, lab::IgmpVersion::V2] {
            for &kind in kinds {
                runs.push(reports::measure(kind, mgm, version, groups)?);
            }
        }
    }
    let joins = if quick { 10 } else { 40 };
    let latency = latency::measure(mgm, joins, kinds)?;

    let reports = reports::with_ratios(runs);
    reports::print(&reports);
    latency::print(&latency);
    let memory = memory_summary(&reports);
    print_memory(&memory);
    Ok(json!({
        "igmp_reports": reports,
        "join_latency": latency,
        "memory": memory,
    }))
}

/// The multicast router a lab runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `mgm run --upstream up0 --downstream dn1`: the IGMP proxy on XDP.
    Mgm,
    /// Debian's igmpproxy on the kernel's ipmr, with the same upstream and downstream.
    Igmpproxy,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Mgm => "mgm",
            Kind::Igmpproxy => "igmpproxy",
        }
    }
}

/// A router running in a lab's router namespace.
enum Router {
    Mgm(Daemon, Option<Reported>),
    Igmpproxy(Igmpproxy),
}

impl Router {
    /// Starts `kind` on `lab` and waits until it is ready; `mgm_args` go to `mgm run`. With
    /// `count_joins`, mgm's upstream reports are counted for [`Router::upstream_groups`].
    fn start(
        kind: Kind,
        mgm: &Path,
        lab: &Lab,
        mgm_args: &[&str],
        count_joins: bool,
    ) -> anyhow::Result<Router> {
        Ok(match kind {
            Kind::Mgm => {
                let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{}", lab.tag));
                // Capturing before the daemon starts: no report it sends is missed.
                let reported = if count_joins {
                    Some(Reported::new(&lab.sender)?)
                } else {
                    None
                };
                Router::Mgm(
                    Daemon::start(mgm, lab, &pin_dir, mgm_args, false)?,
                    reported,
                )
            }
            Kind::Igmpproxy => Router::Igmpproxy(Igmpproxy::start(lab)?),
        })
    }

    fn pid(&self) -> u32 {
        match self {
            Router::Mgm(d, _) => d.pid(),
            Router::Igmpproxy(p) => p.child.id(),
        }
    }

    /// How many groups the router has joined on the upstream interface: where a report's
    /// processing ends. igmpproxy joins on its host stack (IP_ADD_MEMBERSHIP), so that is the
    /// `Count` of `up0` in the router namespace's /proc/net/igmp, read only up to that line
    /// (the kernel formats the file as it is read). mgm is the host side itself: the groups
    /// its reports have joined, as they arrive upstream (see [`Reported`]).
    fn upstream_groups(&mut self) -> anyhow::Result<usize> {
        let pid = match self {
            Router::Mgm(_, Some(reported)) => return Ok(reported.count()),
            Router::Mgm(_, None) => bail!("mgm was started without counting its joins"),
            Router::Igmpproxy(p) => p.child.id(),
        };
        let path = format!("/proc/{pid}/net/igmp");
        let reader = BufReader::new(fs::File::open(&path).with_context(|| format!("open {path}"))?);
        for line in reader.lines() {
            let line = line.with_context(|| format!("read {path}"))?;
            // "3\tup0       :     5      V3": index, device, colon, count, version.
            if let Some((dev, rest)) = line.split_once(':') {
                if dev.split_whitespace().nth(1) == Some(UPSTREAM) {
                    let count = rest.split_whitespace().next().unwrap_or_default();
                    return count
                        .parse()
                        .with_context(|| format!("bad count in {path}: {line:?}"));
                }
            }
        }
        Ok(0)
    }

    /// IGMP messages lost on the way in: for mgm, those the XDP program could not queue
    /// because the ring buffer was full, or refused at admission (none with
    /// `--igmp-admit-rate 0`); for igmpproxy, those its raw sockets dropped (the `drops`
    /// column of /proc/net/raw; nothing else in its namespace has one).
    fn lost(&self) -> anyhow::Result<u64> {
        match self {
            Router::Mgm(d, _) => {
                let show = d.show()?;
                Ok(show["interfaces"]
                    .as_array()
                    .map(|all| {
                        all.iter()
                            .flat_map(|i| ["ring_full", "igmp_limited"].map(|c| &i["stats"][c]))
                            .filter_map(Value::as_u64)
                            .sum()
                    })
                    .unwrap_or(0))
            }
            Router::Igmpproxy(p) => {
                let path = format!("/proc/{}/net/raw", p.child.id());
                let raw = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
                Ok(raw
                    .lines()
                    .skip(1)
                    .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                    .sum())
            }
        }
    }
}

/// igmpproxy in a lab's router namespace, killed (and its config removed) on drop.
struct Igmpproxy {
    child: Child,
    conf: PathBuf,
}

impl Igmpproxy {
    /// Starts igmpproxy with `up0` upstream and every downstream of `lab`, and waits until it
    /// has made its multicast interfaces (they show in /proc/net/ip_mr_vif).
    fn start(lab: &Lab) -> anyhow::Result<Igmpproxy> {
        // The same settings as the interoperability test: quickleave (per-host tracking, like
        // mgm's fast leave) and no rate limit. Its own timers are compiled in.
        let mut conf = format!(
            "quickleave\nphyint {UPSTREAM} upstream ratelimit 0 threshold 1\nphyint lo disabled\n"
        );
        for dn in lab.downstreams() {
            conf.push_str(&format!("phyint {dn} downstream ratelimit 0 threshold 1\n"));
        }
        let path = std::env::temp_dir().join(format!("mgm-{}-igmpproxy.conf", lab.tag));
        fs::write(&path, conf).with_context(|| format!("write {}", path.display()))?;
        // `ip netns exec` execs igmpproxy in place, so the child's pid is igmpproxy's; -n keeps
        // it in the foreground without -d's debug output.
        let child = Command::new("ip")
            .args(["netns", "exec", lab.router.name(), "igmpproxy", "-n"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start igmpproxy")?;
        let mut proxy = Igmpproxy { child, conf: path };
        let vifs = format!("/proc/{}/net/ip_mr_vif", proxy.child.id());
        let wanted = 1 + lab.downstreams().len();
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = proxy.child.try_wait()? {
                bail!("igmpproxy exited ({status}) while starting");
            }
            // A header line, then one line per multicast interface.
            let made = fs::read_to_string(&vifs).map_or(0, |s| s.lines().count().saturating_sub(1));
            if made >= wanted {
                return Ok(proxy);
            }
            if Instant::now() > end {
                bail!("igmpproxy made {made} of {wanted} multicast interfaces within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Igmpproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.conf);
    }
}

/// The groups mgm's upstream host side has joined, from its reports as they arrive at the
/// upstream host (`eth0` of the lab's sender namespace). mgm sends a group's report and puts
/// the group into `up0`'s link-layer filter in one step; counting the filter's entries in
/// `/proc/net/dev_mcast` instead made every look cost a line per group joined, printed under
/// `up0`'s address-list lock, on which each join's `SIOCADDMULTI` then waited.
struct Reported {
    capture: Capture,
    groups: HashSet<Ipv4Addr>,
}

impl Reported {
    fn new(upstream_host: &lab::Netns) -> anyhow::Result<Reported> {
        let capture = Capture::new(upstream_host, lab::HOST_IF)?;
        // mgm sends a report per new group: an IGMPv3 window's 3,200 at once.
        capture.grow_buffer(32 << 20)?;
        Ok(Reported {
            capture,
            groups: HashSet::new(),
        })
    }

    /// Groups joined so far.
    fn count(&mut self) -> usize {
        const IPPROTO_IGMP: u8 = 2;
        let frames = self.capture.waiting_where(|f| f[23] == IPPROTO_IGMP);
        for f in frames {
            if let Some(igmp) = f.get(14 + usize::from(f[14] & 0x0f) * 4..) {
                self.groups.extend(joined_groups(igmp));
            }
        }
        self.groups.len()
    }
}

/// The groups an IGMP message joins: that of an IGMPv1/v2 report, and those of IGMPv3 records
/// that are not TO_IN {} or BLOCK (RFC 3376 §4.2.12: a join is IS_EX, TO_EX, or sources
/// allowed). A record cut short ends the list.
fn joined_groups(igmp: &[u8]) -> Vec<Ipv4Addr> {
    let group = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    match igmp.first() {
        Some(0x12 | 0x16) if igmp.len() >= 8 => vec![group(&igmp[4..8])],
        Some(0x22) if igmp.len() >= 8 => {
            let records = u16::from_be_bytes([igmp[6], igmp[7]]);
            let mut joined = Vec::new();
            let mut at = 8;
            for _ in 0..records {
                let Some(r) = igmp.get(at..at + 8) else {
                    break;
                };
                let sources = usize::from(u16::from_be_bytes([r[2], r[3]]));
                let joins = match r[0] {
                    2 | 4 => true,
                    1 | 5 => sources > 0,
                    _ => false,
                };
                if joins {
                    joined.push(group(&r[4..8]));
                }
                at += 8 + 4 * sources + 4 * usize::from(r[1]);
            }
            joined
        }
        _ => Vec::new(),
    }
}

/// How long a router process's threads ran on a CPU and waited runnable for one, summed
/// from `/proc/<pid>/task/*/schedstat`. On a machine shared with other work the waiting tells
/// a router starved of CPU from a router that is slow, or idle while work waits.
#[derive(Debug, Clone, Copy, Default)]
struct Sched {
    run: Duration,
    waited: Duration,
}

impl Sched {
    fn of(pid: u32) -> anyhow::Result<Sched> {
        let tasks = fs::read_dir(format!("/proc/{pid}/task"))
            .with_context(|| format!("list /proc/{pid}/task"))?;
        let mut total = Sched::default();
        for task in tasks.flatten() {
            // A thread may exit while we look: skip it.
            if let Ok(line) = fs::read_to_string(task.path().join("schedstat")) {
                total.add(&line);
            }
        }
        Ok(total)
    }

    /// The calling thread's.
    fn of_this_thread() -> anyhow::Result<Sched> {
        let line = fs::read_to_string("/proc/thread-self/schedstat")
            .context("read /proc/thread-self/schedstat")?;
        let mut total = Sched::default();
        total.add(&line);
        Ok(total)
    }

    /// Adds a schedstat line: "run_ns wait_ns timeslices".
    fn add(&mut self, line: &str) {
        let mut f = line
            .split_whitespace()
            .map(|v| v.parse::<u64>().unwrap_or(0));
        self.run += Duration::from_nanos(f.next().unwrap_or(0));
        self.waited += Duration::from_nanos(f.next().unwrap_or(0));
    }

    /// What `self` added since `before`.
    fn since(self, before: Sched) -> Sched {
        Sched {
            run: self.run.saturating_sub(before.run),
            waited: self.waited.saturating_sub(before.waited),
        }
    }
}

/// Memory a router process holds: resident set and BPF maps.
#[derive(Debug, Clone, Default)]
struct Memory {
    rss_kib: u64,
    /// Every BPF map the process has an fd of, by map id.
    maps: BTreeMap<u32, MapMemory>,
}

#[derive(Debug, Clone)]
struct MapMemory {
    name: String,
    map_type: u32,
    max_entries: u64,
    /// The kernel's own account of the map's memory (`memlock:` in fdinfo; since Linux 6.4
    /// what the map really uses, so it grows with entries where maps are not preallocated).
    bytes: u64,
}

impl Memory {
    /// Reads `pid`'s VmRSS and the fdinfo of each of its BPF map fds.
    fn of(pid: u32) -> anyhow::Result<Memory> {
        let status = fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("read /proc/{pid}/status"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no VmRSS in /proc/{pid}/status"))?;
        let names = map_names();
        let mut maps = BTreeMap::new();
        let fds = fs::read_dir(format!("/proc/{pid}/fdinfo"))
            .with_context(|| format!("list /proc/{pid}/fdinfo"))?;
        for fd in fds.flatten() {
            // An fd may close while we look: skip it.
            let Ok(info) = fs::read_to_string(fd.path()) else {
                continue;
            };
            let field = |key: &str| -> Option<u64> {
                info.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.trim().parse().ok())
            };
            let (Some(id), Some(bytes)) = (field("map_id:"), field("memlock:")) else {
                continue;
            };
            let id = u32::try_from(id).unwrap_or(u32::MAX);
            maps.insert(
                id,
                MapMemory {
                    name: names.get(&id).cloned().unwrap_or_default(),
                    map_type: field("map_type:").unwrap_or_default() as u32,
                    max_entries: field("max_entries:").unwrap_or_default(),
                    bytes,
                },
            );
        }
        Ok(Memory { rss_kib, maps })
    }

    fn map_bytes(&self) -> u64 {
        self.maps.values().map(|m| m.bytes).sum()
    }

    fn json(&self) -> Value {
        let maps: Vec<Value> = self
            .maps
            .iter()
            .map(|(id, m)| {
                json!({"id": id, "name": m.name, "type": m.map_type,
                       "max_entries": m.max_entries, "bytes": m.bytes})
            })
            .collect();
        json!({"rss_kib": self.rss_kib, "bpf_map_bytes": self.map_bytes(), "maps": maps})
    }
}

/// Map names by id from `bpftool map show` when bpftool is installed (fdinfo has no names);
/// empty otherwise, and the table shows ids only.
fn map_names() -> BTreeMap<u32, String> {
    let Ok(out) = crate::output(Command::new("bpftool").args(["--json", "map", "show"])) else {
        return BTreeMap::new();
    };
    let Ok(Value::Array(maps)) = serde_json::from_str(&out) else {
        return BTreeMap::new();
    };
    maps.iter()
        .filter_map(|m| {
            let id = u32::try_from(m["id"].as_u64()?).ok()?;
            Some((id, m["name"].as_str()?.to_owned()))
        })
        .collect()
}

/// One line per router and scale from the IGMPv3 report runs: memory before and after the
/// groups were learned.
fn memory_summary(reports: &[Value]) -> Vec<Value> {
    reports
        .iter()
        .filter(|r| r["version"] == "v3")
        .map(|r| {
            json!({
                "router": r["router"],
                "groups": r["completed"],
                "rss_kib_idle": r["memory_idle"]["rss_kib"],
                "rss_kib": r["memory"]["rss_kib"],
                "bpf_map_bytes_idle": r["memory_idle"]["bpf_map_bytes"],
                "bpf_map_bytes": r["memory"]["bpf_map_bytes"],
            })
        })
        .collect()
}

fn print_memory(memory: &[Value]) {
    println!("\ncontrol plane: router memory, before → after learning the IGMPv3 groups:");
    println!(
        "  {:<10} {:>8} {:>20} {:>26}",
        "router", "groups", "RSS KiB", "BPF map memory KiB"
    );
    for m in memory {
        let kib = |v: &Value| {
            v.as_u64()
                .map_or("?".to_owned(), |b| (b / 1024).to_string())
        };
        println!(
            "  {:<10} {:>8} {:>20} {:>26}",
            m["router"].as_str().unwrap_or("?"),
            m["groups"].to_string(),
            format!("{} → {}", m["rss_kib_idle"], m["rss_kib"]),
            format!(
                "{} → {}",
                kib(&m["bpf_map_bytes_idle"]),
                kib(&m["bpf_map_bytes"])
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::traffic::{v3_report, MODE_IS_EXCLUDE};

    #[test]
    fn joined_groups_reads_v2_reports_and_v3_join_records_only() {
        let (a, b) = (Ipv4Addr::new(239, 1, 0, 1), Ipv4Addr::new(239, 1, 0, 2));
        let source = Ipv4Addr::new(198, 18, 0, 2);
        assert_eq!(joined_groups(&[0x16, 0, 0, 0, 239, 1, 0, 1]), vec![a]);
        assert_eq!(
            joined_groups(&v3_report(MODE_IS_EXCLUDE, &[a, b], &[])),
            vec![a, b]
        );
        // TO_EX {} joins; TO_IN {} leaves; ALLOW with a source joins; BLOCK does not
        assert_eq!(joined_groups(&v3_report(4, &[a], &[])), vec![a]);
        assert!(joined_groups(&v3_report(3, &[a], &[])).is_empty());
        assert_eq!(joined_groups(&v3_report(5, &[b], &[source])), vec![b]);
        assert!(joined_groups(&v3_report(6, &[b], &[source])).is_empty());
        // the records after the sources of the first are read from the right place
        assert_eq!(
            joined_groups(&v3_report(MODE_IS_EXCLUDE, &[a, b], &[source])),
            vec![a, b]
        );
        // a report cut inside its second record yields the first only
        let cut = v3_report(MODE_IS_EXCLUDE, &[a, b], &[]);
        assert_eq!(joined_groups(&cut[..cut.len() - 1]), vec![a]);
        // a query is no join
        assert!(joined_groups(&[0x11, 0, 0, 0, 0, 0, 0, 0]).is_empty());
    }
}
