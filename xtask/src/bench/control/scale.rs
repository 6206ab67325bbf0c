//! The control plane with a full table (issue 19): the real daemon's join-to-first-packet
//! latency and the membership changes per second it sustains with 100k MFEs installed,
//! against a daemon whose table holds only the entries the changes touch, in the same run.
//!
//! Two labs built alike (64 router interfaces: the upstream, 61 downstreams whose hosts hold
//! the table's memberships, one burst host, one receiver host), each with its own `mgm run`:
//! "full" gets [`Plan::entries`] (S,G) entries the way a deployment fills them
//! ([`crate::bench::table`]), "empty" only the [`Plan::changes`] groups the bursts change.
//! Then rounds alternate between the two (A B, then B A), each doing on one lab:
//! - joins: the receiver host joins a new group through its kernel's IGMP stack while the
//!   sender streams to it (a packet every ms), as in the control part's latency runs; the
//!   time from the join to the first datagram at the host;
//! - a burst of IGMPv3 reports from the burst host, one `ALLOW_NEW_SOURCES {S}` record per
//!   group, then one of `BLOCK_OLD_SOURCES {S}` (fast leave: the leave takes effect at once):
//!   each record adds the burst host's interface to, or removes it from, one existing entry's
//!   outgoing set. A burst ends when the pinned maps show every entry with its new set (not
//!   when the last report was sent); changes/s = records / that time.

use std::{
    collections::HashSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use aya::maps::{Array, HashMap, Map, MapData};
use mgm_common::{
    fwd::{FwdEntry, FwdKey, SetInfo, FWD_PENDING},
    maps as m,
};
use serde_json::{json, Value};

use super::latency::{join_latency, summary};
use crate::{
    bench::table,
    lab::{
        self, receiver_addr,
        traffic::{Receiver, Reporter, Sender, ALLOW_NEW_SOURCES, BLOCK_OLD_SOURCES},
        unique_tag, Daemon, IgmpVersion, Lab, SENDER_ADDR,
    },
};

/// Router interfaces, as in the forwarding part's scale runs.
const INTERFACES: usize = 64;
/// Downstream hosts that hold the table's memberships (the lab's first receivers).
const FILL_HOSTS: usize = INTERFACES - 3;
/// The host whose reports make the measured membership changes.
const BURST_HOST: usize = FILL_HOSTS;
/// The host whose kernel joins for the latency runs.
const JOIN_HOST: usize = FILL_HOSTS + 1;
/// Packets per call when filling, then a pause: a 256-frame veth ring on the router's side
/// holds them while its miss path raises the upcalls.
const FILL_PACE: usize = 128;
/// A burst not reflected in the maps after this long is a failure of the daemon, not a rate.
const BURST_LIMIT: Duration = Duration::from_secs(60);
/// How often a burst's end is looked for.
const POLL: Duration = Duration::from_micros(200);

/// Sizes of one run.
struct Plan {
    /// The full table's entries.
    entries: u32,
    /// Records per burst: groups whose entry each burst changes (the empty table's entries;
    /// as many as the core's `core_scale` bench measures).
    changes: u32,
    /// Rounds; each does [`Plan::joins`] joins and two bursts on each lab.
    rounds: usize,
    joins: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                entries: 10_000,
                changes: 2_000,
                rounds: 3,
                joins: 10,
            }
        } else {
            Plan {
                entries: 100_000,
                changes: 10_000,
                rounds: 8,
                joins: 13,
            }
        }
    }
}

/// One lab with its daemon, its table filled, and the measurements so far. Fields drop in
/// order: sockets and maps, then the daemon, then the lab's namespaces.
struct Bed {
    name: &'static str,
    fwd: HashMap<MapData, FwdKey, FwdEntry>,
    sets: Array<MapData, SetInfo>,
    burst: Reporter,
    rx: Receiver,
    tx: Sender,
    latencies: Vec<Duration>,
    misses: usize,
    /// Every join in order: round, latency, and how long after this lab's last burst.
    trials: Vec<Value>,
    /// When this lab's last burst showed in its maps.
    burst_done: Option<Instant>,
    bursts: Vec<Value>,
    fill: Value,
    daemon: Daemon,
    _lab: Lab,
}

impl Bed {
    /// A lab whose daemon holds `entries` entries, room for `per_interface` memberships on
    /// each downstream.
    fn new(
        name: &'static str,
        mgm: &Path,
        entries: u32,
        per_interface: usize,
    ) -> anyhow::Result<Bed> {
        println!("control-scale: {name}: building a router with {INTERFACES} interfaces");
        let lab = Lab::up(&unique_tag("t"), &[IgmpVersion::V3; INTERFACES - 1])?;
        table::prepare_router(&lab.router, entries)?;
        let mut args = table::daemon_args(per_interface);
        // Fast leave makes a leave one change, with no last-member queries to wait for; short
        // last-member timers end the latency runs' leaves quickly (each join is a new group).
        args.extend(
            [
                "--xdp-mode",
                "native",
                "--igmp-fast-leave",
                "--igmp-last-member-interval-ms",
                "100",
            ]
            .map(str::to_owned),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{}", lab.tag));
        let daemon = Daemon::start(mgm, &lab, &pin_dir, &args, false)?;
        let mut tx = Sender::new(&lab.sender, SENDER_ADDR, 8)?;
        let start = Instant::now();
        let (reports_secs, resolved) = table::fill(
            &lab.receivers[..FILL_HOSTS],
            &daemon,
            entries,
            &mut |groups: &[Ipv4Addr]| {
                for chunk in groups.chunks(FILL_PACE) {
                    chunk.iter().try_for_each(|g| tx.send(*g, 16))?;
                    // Pacing, not synchronisation: see FILL_PACE.
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(())
            },
            &|| Ok(()),
        )
        .with_context(|| format!("filling the {name} table"))?;
        let fill = json!({
            "entries": entries,
            "resolved": resolved,
            "seconds": start.elapsed().as_secs_f64(),
            "seconds_to_handle_reports": reports_secs,
        });
        println!(
            "control-scale: {name}: {resolved} of {entries} entries in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        let open = |name: &str| -> anyhow::Result<Map> {
            let path = pin_dir.join(name);
            let data =
                MapData::from_pin(&path).with_context(|| format!("open {}", path.display()))?;
            Ok(Map::from_map_data(data)?)
        };
        Ok(Bed {
            name,
            fwd: HashMap::try_from(open(m::FWD)?)?,
            sets: Array::try_from(open(m::SET_INFO)?)?,
            burst: Reporter::new(&lab.receivers[BURST_HOST], receiver_addr(BURST_HOST))?,
            rx: Receiver::new(&lab.receivers[JOIN_HOST], receiver_addr(JOIN_HOST))?,
            tx,
            latencies: Vec::new(),
            misses: 0,
            trials: Vec::new(),
            burst_done: None,
            bursts: Vec::new(),
            fill,
            daemon,
            _lab: lab,
        })
    }

    /// Joins of round `round`, each on a group of its own (the same groups in both labs).
    fn joins(&mut self, round: usize, joins: usize) -> anyhow::Result<()> {
        for k in 0..joins {
            let group = Ipv4Addr::new(239, 77, round as u8, k as u8);
            let since_burst = self.burst_done.map(|t| t.elapsed().as_secs_f64() * 1e3);
            let latency = join_latency(&mut self.tx, &self.rx, group)
                .with_context(|| format!("{} join of {group}", self.name))?;
            match latency {
                Some(d) => self.latencies.push(d),
                None => self.misses += 1,
            }
            self.trials.push(json!({
                "round": round,
                "ms": latency.map(|d| d.as_secs_f64() * 1e3),
                "ms_since_own_burst": since_burst,
            }));
        }
        Ok(())
    }

    /// One burst: the burst host adds itself to (`join`) or removes itself from the outgoing
    /// set of each of `groups`' entries, whose sets then have `members` interfaces.
    fn burst(&mut self, groups: &[Ipv4Addr], join: bool, members: u32) -> anyhow::Result<()> {
        let kind = if join {
            ALLOW_NEW_SOURCES
        } else {
            BLOCK_OLD_SOURCES
        };
        let start = Instant::now();
        self.burst.send(kind, groups, &[SENDER_ADDR])?;
        let sent = start.elapsed();
        let mut pending = groups.to_vec();
        let done = loop {
            // The daemon takes the reports in order: until the last group is done, the others
            // need not be looked at.
            // The sweep after it only confirms that, so the burst ends when the last one showed.
            let last = *pending.last().expect("pending is never empty here");
            if self.has_members(last, members)? {
                let seen = start.elapsed();
                let mut still = Vec::new();
                for &g in &pending {
                    if !self.has_members(g, members)? {
                        still.push(g);
                    }
                }
                pending = still;
                if pending.is_empty() {
                    self.burst_done = Some(start + seen);
                    break seen;
                }
            }
            if start.elapsed() > BURST_LIMIT {
                bail!(
                    "{}: {} of {} entries still without their new outgoing set {BURST_LIMIT:?} after a burst",
                    self.name,
                    pending.len(),
                    groups.len()
                );
            }
            std::thread::sleep(POLL);
        };
        self.bursts.push(json!({
            "kind": if join { "join" } else { "leave" },
            "changes": groups.len(),
            "seconds_to_send": sent.as_secs_f64(),
            "seconds": done.as_secs_f64(),
            "changes_per_second": groups.len() as f64 / done.as_secs_f64(),
        }));
        Ok(())
    }

    /// Whether `group`'s (S,G) entry is installed with an outgoing set of `members` interfaces.
    fn has_members(&self, group: Ipv4Addr, members: u32) -> anyhow::Result<bool> {
        let key = FwdKey {
            source: u32::from_ne_bytes(SENDER_ADDR.octets()),
            group: u32::from_ne_bytes(group.octets()),
        };
        let entry = match self.fwd.get(&key, 0) {
            Ok(e) => e,
            Err(aya::maps::MapError::KeyNotFound) => return Ok(false),
            Err(e) => return Err(e).context("read the forwarding map"),
        };
        if entry.flags & FWD_PENDING != 0 {
            return Ok(false);
        }
        let set = self
            .sets
            .get(&entry.oif_set, 0)
            .context("read the outgoing-set info")?;
        Ok(set.members == members)
    }

    fn json(&self) -> Value {
        let rates = |kind: Option<&str>| -> Vec<f64> {
            self.bursts
                .iter()
                .filter(|b| kind.is_none_or(|k| b["kind"] == k))
                .filter_map(|b| b["changes_per_second"].as_f64())
                .collect()
        };
        json!({
            "fill": self.fill,
            "join_latency": summary(&self.latencies, self.misses),
            "joins_in_order": self.trials,
            "changes_per_second_median": median(rates(None)),
            "join_changes_per_second_median": median(rates(Some("join"))),
            "leave_changes_per_second_median": median(rates(Some("leave"))),
            "bursts": self.bursts,
        })
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs the comparison, prints its table and returns the `control_scale` JSON.
///
/// # Errors
/// A lab or daemon could not be set up, a table did not fill, or a burst never showed in the
/// maps.
pub fn scale(mgm: &Path, quick: bool) -> anyhow::Result<Value> {
    lab::sweep_stale()?;
    let plan = Plan::new(quick);
    println!("control-scale: {}", table::ADMISSION);
    // Room on every downstream for its share of the table, the bursts' groups and the joins.
    let per_interface = (plan.entries as usize)
        .div_ceil(FILL_HOSTS)
        .max(plan.changes as usize)
        + plan.rounds * plan.joins
        + 64;
    let mut beds = [
        Bed::new("empty", mgm, plan.changes, per_interface)?,
        Bed::new("full", mgm, plan.entries, per_interface)?,
    ];
    // The bursts change entries both tables resolved (the fill may leave 1 % pending).
    let resolved: Vec<HashSet<Ipv4Addr>> = beds
        .iter()
        .map(|b| table::resolved_groups(b.daemon.pin_dir()))
        .collect::<anyhow::Result<_>>()?;
    let groups: Vec<Ipv4Addr> = (0..plan.changes)
        .map(table::group)
        .filter(|g| resolved.iter().all(|r| r.contains(g)))
        .collect();
    println!(
        "control-scale: {} rounds, each {} joins and a burst of {} joins and one of {} leaves per table",
        plan.rounds,
        plan.joins,
        groups.len(),
        groups.len()
    );
    for round in 0..plan.rounds {
        // A B, then B A: neither table always goes first after the other's turn.
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let bed = &mut beds[i];
            bed.joins(round, plan.joins)?;
            // Every entry's set is its fill host's interface, plus the burst host's after a join.
            bed.burst(&groups, true, 2)?;
            bed.burst(&groups, false, 1)?;
        }
    }
    let [empty, full] = &beds;
    let (e, f) = (empty.json(), full.json());
    let ratio = |key: &[&str]| -> f64 {
        let get = |v: &Value| {
            key.iter()
                .fold(v, |v, k| &v[*k])
                .as_f64()
                .unwrap_or(f64::NAN)
        };
        get(&f) / get(&e)
    };
    let p99_ratio = ratio(&["join_latency", "p99_ms"]);
    let changes_ratio = ratio(&["changes_per_second_median"]);
    let out = json!({
        "kernel": crate::bench::kernel_release(),
        "interfaces": INTERFACES,
        "admission": table::ADMISSION,
        "rounds": plan.rounds,
        "joins_per_round": plan.joins,
        "changes_per_burst": groups.len(),
        "full": f,
        "empty": e,
        "join_p99_full_vs_empty": p99_ratio,
        "changes_per_second_full_vs_empty": changes_ratio,
        "target_join_p99_within_2x": p99_ratio <= 2.0,
        "target_changes_within_0_8x": changes_ratio >= 0.8,
    });
    print(&out);
    Ok(out)
}

fn print(out: &Value) {
    let (f, e) = (&out["full"], &out["empty"]);
    println!(
        "\ncontrol plane with a full table (kernel {}): the real daemon with {} entries against one with only the {}\n\
         it changes, {INTERFACES} interfaces, {} rounds interleaved; {}:",
        out["kernel"].as_str().unwrap_or("?"),
        f["fill"]["resolved"],
        e["fill"]["resolved"],
        out["rounds"],
        out["admission"].as_str().unwrap_or("?"),
    );
    println!(
        "  {:<44} {:>12} {:>12} {:>7} {:>12}",
        "", "full table", "empty table", "ratio", "target"
    );
    let ms = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.2}"));
    let rate = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.0}"));
    let row = |name: &str, key: &[&str], fmt: &dyn Fn(&Value) -> String, target: &str| {
        let get = |v: &Value| key.iter().fold(v, |v, k| &v[*k]).clone();
        let (a, b) = (get(f), get(e));
        let r = a.as_f64().unwrap_or(f64::NAN) / b.as_f64().unwrap_or(f64::NAN);
        println!(
            "  {name:<44} {:>12} {:>12} {r:>7.2} {target:>12}",
            fmt(&a),
            fmt(&b)
        );
    };
    let joins = format!(
        "join → first packet p99, ms ({} joins)",
        f["join_latency"]["joins"]
    );
    row(&joins, &["join_latency", "p99_ms"], &ms, "≤ 2×");
    row(
        "join → first packet p50, ms",
        &["join_latency", "p50_ms"],
        &ms,
        "",
    );
    let changes = format!(
        "membership changes/s, median ({} bursts)",
        f["bursts"].as_array().map_or(0, Vec::len)
    );
    row(&changes, &["changes_per_second_median"], &rate, "≥ 0.8×");
    row(
        "  joins (ALLOW {S})",
        &["join_changes_per_second_median"],
        &rate,
        "",
    );
    row(
        "  leaves (BLOCK {S}, fast leave)",
        &["leave_changes_per_second_median"],
        &rate,
        "",
    );
    println!(
        "  misses (no packet within 3 s): full {}, empty {}; targets met: join p99 {}, changes/s {}",
        f["join_latency"]["misses"],
        e["join_latency"]["misses"],
        out["target_join_p99_within_2x"],
        out["target_changes_within_0_8x"],
    );
}
