//! mgm's forwarding table filled the way a deployment fills it, for the parts that measure the
//! daemon with a full table (`scale` and `control-scale`).
//!
//! Each receiver host reports (S,G) memberships with IGMPv3 (`MODE_IS_INCLUDE {S}` records,
//! crafted on a raw socket so one report carries 100 groups), and then one packet per group
//! makes the daemon resolve its entry, as any new stream would. The command line cannot carry
//! 100k `--static-route` flags (Linux caps argv at 6 MiB), and mgm has no route file, so IGMP
//! is the honest way in.

use std::{
    collections::HashSet,
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use aya::maps::{HashMap, Map, MapData};
use mgm_common::{
    fwd::{FwdEntry, FwdKey, FWD_PENDING},
    maps as m,
};

use crate::lab::{
    receiver_addr,
    traffic::{Reporter, MODE_IS_INCLUDE},
    Daemon, Netns, SENDER_ADDR,
};

/// The first of the table's groups (other streams of the benches use 239.1.1.1 and 239.77/16).
const FIRST_GROUP: u32 = u32::from_be_bytes([239, 2, 0, 0]);
/// The daemon's `--pending-retry-ms`: a placeholder whose upcall was lost raises it again on
/// the first packet after this long.
const PENDING_RETRY: Duration = Duration::from_millis(200);

/// Group `i` of the table; its source is [`SENDER_ADDR`].
pub fn group(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(FIRST_GROUP + i)
}

/// `mgm run` arguments for a daemon that takes up to `per_interface` memberships on each
/// downstream and a table filled by [`fill`]:
/// - room for every membership;
/// - quick retries of upcalls lost to a full ring;
/// - memberships that outlive the bench: the hosts report once and answer no query, and with
///   the default timers all would expire 260 s later, in the middle of the runs;
/// - no admission limits (`--igmp-admit-rate 0`, `--upcall-admit-rate 0`): by default each
///   interface hands the daemon 1,000 group records and 1,000 unknown flows a second, and a
///   fill or a burst would measure that limiter instead of the daemon. Callers say so in
///   their output ([`ADMISSION`]).
pub fn daemon_args(per_interface: usize) -> Vec<String> {
    let n = per_interface.to_string();
    [
        "--igmp-max-groups",
        &n,
        "--igmp-max-sources",
        &n,
        "--pending-retry-ms",
        &PENDING_RETRY.as_millis().to_string(),
        "--igmp-query-interval",
        "3600",
        "--igmp-admit-rate",
        "0",
        "--upcall-admit-rate",
        "0",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// What the output says about the daemon's admission limits under [`daemon_args`].
pub const ADMISSION: &str =
    "admission limits off (--igmp-admit-rate 0 --upcall-admit-rate 0; defaults are 1000/s per interface)";

/// Lets `router`'s kernel take `entries` upstream memberships: mgm proxies every membership
/// upstream with a socket join, and the kernel's defaults allow 20 groups per socket, in
/// 20 KiB of option memory.
///
/// # Errors
/// A sysctl could not be written.
pub fn prepare_router(router: &Netns, entries: u32) -> anyhow::Result<()> {
    router.sysctl("net.ipv4.igmp_max_memberships", &(entries + 64).to_string())?;
    router.sysctl(
        "net.core.optmem_max",
        &(u64::from(entries) * 256).to_string(),
    )
}

/// Fills `daemon`'s forwarding table with `entries` (S,G) entries, groups [`group`]`(0..entries)`:
/// memberships by IGMP, group `i` from host `i % hosts.len()` (the lab's first receivers, in
/// order), then one packet for each group without an entry (`send_each`), round after round,
/// until the daemon has resolved them (all, or 99 % and no progress for 15 s). `check` runs
/// between steps and ends the fill with its error. Returns the seconds until the daemon had
/// handled every report, and how many entries it resolved.
///
/// # Errors
/// A report or packet could not be sent, `check` failed, or the entries did not appear.
pub fn fill(
    hosts: &[Netns],
    daemon: &Daemon,
    entries: u32,
    send_each: &mut dyn FnMut(&[Ipv4Addr]) -> anyhow::Result<()>,
    check: &dyn Fn() -> anyhow::Result<()>,
) -> anyhow::Result<(f64, usize)> {
    let start = Instant::now();
    let mut joins = 0;
    for (h, host) in hosts.iter().enumerate() {
        let groups: Vec<Ipv4Addr> = (h as u32..entries)
            .step_by(hosts.len())
            .map(group)
            .collect();
        Reporter::new(host, receiver_addr(h))?.send(MODE_IS_INCLUDE, &groups, &[SENDER_ADDR])?;
        joins += groups.len();
        // The snooped reports queue in a 2 MiB ring (~1400 of them): let the daemon drain it.
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every membership before the first entry. Allow a second per 500 entries, the pace of
    // the slowest fill seen (upstream joins once walked the kernel's list per group).
    let limit = Duration::from_secs(60 + u64::from(entries) / 500);
    wait_for_joins(daemon, joins, limit, check)?;
    let reports_secs = start.elapsed().as_secs_f64();
    let end = Instant::now() + limit;
    let (mut last, mut since) = (0, Instant::now());
    loop {
        check()?;
        let resolved = resolved_groups(daemon.pin_dir())?;
        let missing: Vec<Ipv4Addr> = (0..entries)
            .map(group)
            .filter(|g| !resolved.contains(g))
            .collect();
        let n = entries as usize - missing.len();
        if missing.is_empty() {
            return Ok((reports_secs, n));
        }
        if n != last {
            println!("table: {n} of {entries} entries resolved");
            (last, since) = (n, Instant::now());
        }
        // A few placeholders can stay pending for long (BENCHMARKS.md); 99 % of the table is
        // enough for the comparisons, and the count is reported.
        let nearly = n as f64 >= 0.99 * f64::from(entries);
        if nearly && since.elapsed() > Duration::from_secs(15) {
            println!(
                "table: {} entries still pending, going on",
                entries as usize - n
            );
            return Ok((reports_secs, n));
        }
        if Instant::now() > end {
            bail!("only {n} of {entries} forwarding entries appeared within {limit:?}");
        }
        // One packet per missing group, paced by `send_each`. A group whose upcall was lost
        // gets its next packet after the retry time.
        send_each(&missing)?;
        std::thread::sleep(PENDING_RETRY + Duration::from_millis(100));
    }
}

/// Waits until the daemon has logged `joins` memberships (one per group record reported;
/// each IGMP message is logged at debug only).
fn wait_for_joins(
    daemon: &Daemon,
    joins: usize,
    limit: Duration,
    check: &dyn Fn() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let end = Instant::now() + limit;
    loop {
        check()?;
        let seen = daemon
            .log()
            .iter()
            .filter(|l| l.contains("membership: dn") && l.contains(" joins ("))
            .count();
        if seen >= joins {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("mgm applied {seen} of {joins} reported memberships within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Groups of the resolved (not pending) entries in the pinned forwarding map.
///
/// # Errors
/// The map cannot be opened or read.
pub fn resolved_groups(pin_dir: &Path) -> anyhow::Result<HashSet<Ipv4Addr>> {
    let path = pin_dir.join(m::FWD);
    let data = MapData::from_pin(&path).with_context(|| format!("open {}", path.display()))?;
    let fwd: HashMap<MapData, FwdKey, FwdEntry> = HashMap::try_from(Map::from_map_data(data)?)?;
    let mut groups = HashSet::new();
    for item in fwd.iter() {
        let (key, entry) = item?;
        if entry.flags & FWD_PENDING == 0 {
            groups.insert(Ipv4Addr::from(u32::from_be(key.group)));
        }
    }
    Ok(groups)
}
