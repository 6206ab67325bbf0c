//! Membership changes through the sans-IO core with a full table against the same changes with
//! an empty one, in the same run: IGMPv3 report bytes are decoded, handed to the querier of a
//! downstream interface, applied to the MGM core (with the IGMP proxy owning the upstream, as
//! `mgm run --upstream` sets it up) and end as the core's map writes (`MapOp`s, what the
//! daemon writes to the BPF maps). No root, no kernel: the cost that grows with the table, if
//! any, is the control plane's own. Run by `cargo xtask bench`; prints one JSON object per line.
//!
//! The measured changes join and leave (fast leave, one host per group) groups that each have
//! an MFE from one source, so every change rewrites an MFE's outgoing list. The full table adds
//! `ENTRIES` other (S,G) MFEs, each with a downstream membership, before the measurement.

use std::{
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant as Clock},
};

use mgm_user::{
    core::{Config, Instant, InterfaceId, MapOp, Mgm},
    igmp::{self, codec, querier, GroupRecord, IgmpMessage, RecordType},
    protocols::{
        igmp::Igmp,
        igmp_proxy::{ProxyUpstream, COMPONENT_ID, PROTOCOL_ID},
    },
};

const UPSTREAM: u32 = 2;
const DOWNSTREAM: u32 = 3;
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const SOURCE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// Other entries in the full table.
const ENTRIES: u32 = 100_000;
/// Group records per report: a host's report after a burst of application joins.
const RECORDS: usize = 20;
/// The full table's groups, then the measured ones.
const TABLE_GROUPS: u32 = u32::from_be_bytes([232, 0, 0, 0]);
const MEASURED_GROUPS: u32 = u32::from_be_bytes([239, 100, 0, 0]);

/// The core, IGMP and the proxy, as the daemon wires them, with a clock that only moves forward.
struct Bed {
    mgm: Mgm,
    igmp: Igmp,
    upstream_changes: mgm_user::protocols::igmp_proxy::UpstreamQueue,
    now: u64,
    writes: u64,
}

impl Bed {
    fn new() -> Bed {
        let mut mgm = Mgm::new(Config {
            max_mfes: 2 * ENTRIES as usize,
            max_memberships: 2 * ENTRIES as usize,
            // The measured groups stream before anyone joins them: negative MFEs, which the
            // default budget would evict before the measurement.
            negative_budget: 2 * ENTRIES as usize,
            ..Config::default()
        });
        let upstream_changes = Arc::default();
        let proxy = ProxyUpstream::new(Arc::clone(&upstream_changes));
        let h = mgm
            .register(Box::new(proxy), PROTOCOL_ID, COMPONENT_ID)
            .expect("register the proxy");
        let now = Instant::from_millis(0);
        mgm.take_interface_ownership(h, InterfaceId::new(UPSTREAM), now)
            .expect("take upstream");
        let config = querier::Config {
            fast_leave: true,
            ..querier::Config::default()
        };
        let mut igmp = Igmp::register(&mut mgm).expect("register IGMP");
        igmp.start(&mut mgm, DOWNSTREAM, ROUTER, config, now)
            .expect("start IGMP");
        let mut bed = Bed {
            mgm,
            igmp,
            upstream_changes,
            now: 0,
            writes: 0,
        };
        bed.drain();
        bed
    }

    /// One report from the host through decode, querier and core to the map writes it causes.
    fn report(&mut self, bytes: &[u8]) -> usize {
        let now = Instant::from_millis(self.now);
        let msg = igmp::decode(bytes, bytes.len()).expect("a report we encoded");
        self.igmp
            .handle_message(DOWNSTREAM, now, querier::IpHeader::conforming(HOST), &msg);
        let applied = self.igmp.apply_memberships(&mut self.mgm, now);
        assert!(applied.iter().all(|a| a.result.is_ok()), "a change failed");
        self.drain();
        applied.len()
    }

    /// Takes the map writes and the proxy's upstream changes, as the daemon's loop does.
    fn drain(&mut self) {
        while let Some(op) = self.mgm.poll_map_op() {
            std::hint::black_box(&op);
            if matches!(op, MapOp::InstallMfe { .. } | MapOp::DeleteMfe { .. }) {
                self.writes += 1;
            }
        }
        self.upstream_changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        while self.igmp.poll_transmit().is_some() {}
    }

    /// A packet of (source, group) from upstream with no entry: the MFE the daemon creates.
    fn stream(&mut self, source: Ipv4Addr, group: Ipv4Addr) {
        let now = Instant::from_millis(self.now);
        self.mgm
            .no_cache_upcall(source, group, InterfaceId::new(UPSTREAM), &[], now)
            .expect("an MFE");
        self.drain();
    }
}

fn report(kind: RecordType, groups: impl Iterator<Item = Ipv4Addr>) -> Vec<u8> {
    let records = groups
        .map(|group| GroupRecord {
            kind,
            group,
            sources: Vec::new(),
        })
        .collect();
    codec::encode(&IgmpMessage::V3Report {
        records,
        truncated: false,
    })
}

fn group(base: u32, i: u32) -> Ipv4Addr {
    Ipv4Addr::from(base + i)
}

/// A bed with `entries` table entries and `measured` groups streaming, and the reports that
/// join and leave the measured groups.
struct Run {
    bed: Bed,
    joins: Vec<Vec<u8>>,
    leaves: Vec<Vec<u8>>,
    measured: u32,
}

impl Run {
    fn new(entries: u32, measured: u32) -> Run {
        let mut bed = Bed::new();
        for chunk in (0..entries).collect::<Vec<_>>().chunks(RECORDS) {
            let bytes = report(
                RecordType::ChangeToExclude,
                chunk.iter().map(|i| group(TABLE_GROUPS, *i)),
            );
            bed.report(&bytes);
        }
        for i in 0..entries {
            // Sources vary with the group so the table is (S,G), not one source's.
            let source = Ipv4Addr::from(u32::from(SOURCE) + i % 251);
            bed.stream(source, group(TABLE_GROUPS, i));
        }
        for i in 0..measured {
            bed.stream(SOURCE, group(MEASURED_GROUPS, i));
        }
        let ids: Vec<u32> = (0..measured).collect();
        let reports = |kind| {
            ids.chunks(RECORDS)
                .map(|c| report(kind, c.iter().map(|i| group(MEASURED_GROUPS, *i))))
                .collect()
        };
        Run {
            joins: reports(RecordType::ChangeToExclude),
            leaves: reports(RecordType::ChangeToInclude),
            bed,
            measured,
        }
    }

    /// Every measured group joined and left once, in reports of [`RECORDS`]: changes/s.
    fn changes_per_second(&mut self) -> f64 {
        let bed = &mut self.bed;
        bed.now += 1_000;
        let writes_before = bed.writes;
        let mut changes = 0;
        let start = Clock::now();
        for r in self.joins.iter().chain(&self.leaves) {
            changes += bed.report(r);
        }
        let elapsed = start.elapsed();
        // Every change rewrites its group's MFE: a run that skipped them would be fast and
        // wrong.
        assert_eq!(
            bed.writes - writes_before,
            changes as u64,
            "one map write per change"
        );
        changes as f64 / elapsed.as_secs_f64()
    }

    /// How long each measured group's single-record join takes to its map write (then it
    /// leaves again, untimed).
    fn join_latencies(&mut self, into: &mut Vec<Duration>) {
        for i in 0..self.measured {
            let g = [group(MEASURED_GROUPS, i)];
            let join = report(RecordType::ChangeToExclude, g.into_iter());
            let leave = report(RecordType::ChangeToInclude, g.into_iter());
            self.bed.now += 1;
            let t = Clock::now();
            self.bed.report(&join);
            into.push(t.elapsed());
            self.bed.report(&leave);
        }
    }
}

/// What one mass expiry cost the core: MFEs deleted, and each loop turn's share (the batch
/// `expiring` names, `handle_timeout`, its map writes taken, as the daemon's loop does them).
struct Expiry {
    deleted: u64,
    turns: Vec<Duration>,
}

impl Run {
    /// Every MFE's lifetime ends in one instant, none having carried packets (as a restart's
    /// adopted entries do): the turns until nothing is due. The daemon's loop runs its other
    /// work between two turns, so a turn is what a join can wait behind.
    fn expire_all(&mut self) -> Expiry {
        let bed = &mut self.bed;
        let at = Instant::from_millis(bed.now + 3_600_000);
        let writes_before = bed.writes;
        let mut turns = Vec::new();
        while bed.mgm.poll_timeout().is_some_and(|d| d <= at) {
            let t = Clock::now();
            std::hint::black_box(bed.mgm.expiring(at));
            bed.mgm.handle_timeout(at);
            bed.drain();
            turns.push(t.elapsed());
        }
        assert!(bed.mgm.forwarding_table().is_empty(), "every MFE expired");
        Expiry {
            deleted: bed.writes - writes_before,
            turns,
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() * 99 / 100]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (measured, rounds) = if quick { (2_000, 7) } else { (10_000, 15) };
    let mut empty = Run::new(0, measured);
    let mut full = Run::new(ENTRIES, measured);
    // Interleaved rounds (A B A B ...), so a neighbour's load on the machine hits both alike.
    let (mut rate_empty, mut rate_full) = (Vec::new(), Vec::new());
    let (mut lat_empty, mut lat_full) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        rate_empty.push(empty.changes_per_second());
        rate_full.push(full.changes_per_second());
        empty.join_latencies(&mut lat_empty);
        full.join_latencies(&mut lat_full);
    }
    let (rate_empty, rate_full) = (median(rate_empty), median(rate_full));
    let (p99_empty, p99_full) = (p99(lat_empty), p99(lat_full));
    println!(
        "{{\"control\":\"membership changes through the core (IGMPv3 reports decoded to map writes), {ENTRIES} entries\",\"per_second\":{rate_full:.0},\"baseline\":\"the same changes with an empty table\",\"baseline_per_second\":{rate_empty:.0},\"ratio\":{:.2}}}",
        rate_full / rate_empty
    );
    println!(
        "{{\"control\":\"single join to map write through the core, p99, {ENTRIES} entries\",\"micros\":{:.1},\"baseline\":\"the same joins with an empty table\",\"baseline_micros\":{:.1},\"ratio\":{:.2}}}",
        p99_full.as_secs_f64() * 1e6,
        p99_empty.as_secs_f64() * 1e6,
        p99_full.as_secs_f64() / p99_empty.as_secs_f64()
    );
    let (e_full, e_empty) = (full.expire_all(), empty.expire_all());
    let describe = |e: &Expiry| {
        let total: Duration = e.turns.iter().sum();
        format!(
            "{} MFEs end together: {} turns, {:.1} ms in all, p99 {:.0} us, longest {:.0} us",
            e.deleted,
            e.turns.len(),
            total.as_secs_f64() * 1e3,
            p99(e.turns.clone()).as_secs_f64() * 1e6,
            e.turns
                .iter()
                .max()
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
                * 1e6
        )
    };
    // The median: the baseline has few turns (40), whose p99 is their longest, a neighbour's
    // preemption as often as the core's work.
    let median_turn = |e: &Expiry| {
        let mut t = e.turns.clone();
        t.sort();
        t[t.len() / 2]
    };
    let (med_full, med_empty) = (median_turn(&e_full), median_turn(&e_empty));
    println!(
        "{{\"control\":\"mass expiry, the median loop turn while {}\",\"micros\":{:.1},\"baseline\":\"the same while {}\",\"baseline_micros\":{:.1},\"ratio\":{:.2}}}",
        describe(&e_full),
        med_full.as_secs_f64() * 1e6,
        describe(&e_empty),
        med_empty.as_secs_f64() * 1e6,
        med_full.as_secs_f64() / med_empty.as_secs_f64()
    );
}
