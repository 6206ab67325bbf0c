//! Reads the pinned maps of a running (or crashed) daemon into plain values, without loading
//! anything: what `mgm show` prints, and what adopting a data plane will start from.

use std::{collections::BTreeMap, net::Ipv4Addr, path::Path};

use aya::maps::{xdp::DevMapHash, Array, ArrayOfMaps, HashMap, Map, MapData, PerCpuArray};
use mgm_common::{
    counters::{EntryStats, IfStats, OifStats},
    fwd::{FwdEntry, FwdKey, IfConfig, Meta, SetInfo},
    maps as m,
};

use super::{error::map_err, DataplaneError};

/// One forwarding entry and its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryView {
    pub source: Ipv4Addr,
    pub group: Ipv4Addr,
    pub entry: FwdEntry,
    /// Outgoing ifindexes, sorted; empty for negative and pending entries.
    pub oifs: Vec<u32>,
    pub stats: EntryStats,
    /// Counters of each outgoing interface, by ifindex; empty for an entry whose copies count
    /// as uncounted ([`PinnedState::uncounted`]).
    pub oif_stats: BTreeMap<u32, OifStats>,
}

impl EntryView {
    /// `ulTotalOutPackets` (spec §6.3): copies sent, summed over the outgoing interfaces.
    pub fn total_out_packets(&self) -> u64 {
        self.oif_stats.values().map(|s| s.packets).sum()
    }
}

/// One managed interface, its settings and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceView {
    pub ifindex: u32,
    pub config: IfConfig,
    pub stats: IfStats,
}

/// Everything the pinned maps say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedState {
    pub layout_version: u32,
    pub entries: Vec<EntryView>,
    pub interfaces: Vec<InterfaceView>,
    /// Copies of entries that found no free per-interface counters, all entries together.
    pub uncounted: OifStats,
}

fn open<T>(dir: &Path, name: &'static str) -> Result<T, DataplaneError>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let err = |source| DataplaneError::Map { map: name, source };
    let data = MapData::from_pin(dir.join(name)).map_err(err)?;
    let map = Map::from_map_data(data).map_err(err)?;
    T::try_from(map).map_err(err)
}

/// Reads every pinned map under `dir`.
///
/// # Errors
/// A map is missing (no daemon ran with this pin directory) or has another layout.
pub fn read_pinned(dir: &Path) -> Result<PinnedState, DataplaneError> {
    let meta: Array<MapData, Meta> = open(dir, m::META)?;
    let layout_version = meta.get(&0, 0).map_err(map_err(m::META))?.layout_version;
    let fwd: HashMap<MapData, FwdKey, FwdEntry> = open(dir, m::FWD)?;
    let sets: ArrayOfMaps<MapData, DevMapHash<MapData>> = open(dir, m::OIF_SETS)?;
    let set_info: Array<MapData, SetInfo> = open(dir, m::SET_INFO)?;
    let entry_stats: PerCpuArray<MapData, EntryStats> = open(dir, m::ENTRY_STATS)?;
    let ifcfg: HashMap<MapData, u32, IfConfig> = open(dir, m::IFCFG)?;
    let if_stats: PerCpuArray<MapData, IfStats> = open(dir, m::IF_STATS)?;
    let oif_stats: PerCpuArray<MapData, OifStats> = open(dir, m::OIF_STATS)?;
    let oif_slot = |slot: u32| -> Result<OifStats, DataplaneError> {
        let per_cpu = oif_stats.get(&slot, 0).map_err(map_err(m::OIF_STATS))?;
        let mut total = OifStats::default();
        per_cpu.iter().for_each(|s| total.accumulate(s));
        Ok(total)
    };

    let mut entries = Vec::new();
    for item in fwd.iter() {
        let (key, entry) = item.map_err(map_err(m::FWD))?;
        let oifs = if entry.oif_set == 0 {
            Vec::new()
        } else {
            let mut v: Vec<u32> = match sets.get(&entry.oif_set, 0) {
                Ok(set) => set.keys().filter_map(Result::ok).collect(),
                // A one-interface set has no devmap, and an entry whose set is gone drops its
                // packets (counted as no_oif_set).
                Err(aya::maps::MapError::KeyNotFound) => Vec::new(),
                Err(e) => return Err(map_err(m::OIF_SETS)(e)),
            };
            // The prepared member is what a one-interface set consists of; in a set of several
            // it is in the devmap too.
            let info = set_info
                .get(&entry.oif_set, 0)
                .map_err(map_err(m::SET_INFO))?;
            if info.members > 0 && !v.contains(&info.prepared_ifindex) {
                v.push(info.prepared_ifindex);
            }
            v.sort_unstable();
            v
        };
        let mut stats = EntryStats::default();
        if let Ok(per_cpu) = entry_stats.get(&entry.stats_slot, 0) {
            per_cpu.iter().for_each(|s| stats.accumulate(s));
        }
        // The block holds one slot per member, in the order of `oifs`; a block that does not
        // match them (the set went) is not read.
        let mut oif_stats = BTreeMap::new();
        if entry.oif_base != 0 && entry.oif_slots as usize == oifs.len() {
            for (&ifindex, slot) in oifs.iter().zip(entry.oif_base..) {
                oif_stats.insert(ifindex, oif_slot(slot)?);
            }
        }
        entries.push(EntryView {
            source: Ipv4Addr::from(u32::from_be(key.source)),
            group: Ipv4Addr::from(u32::from_be(key.group)),
            entry,
            oifs,
            stats,
            oif_stats,
        });
    }
    entries.sort_by_key(|e| (e.group, e.source));

    let mut interfaces = Vec::new();
    for item in ifcfg.iter() {
        let (ifindex, config) = item.map_err(map_err(m::IFCFG))?;
        let mut stats = IfStats::default();
        if let Ok(per_cpu) = if_stats.get(&config.stats_slot, 0) {
            per_cpu.iter().for_each(|s| stats.accumulate(s));
        }
        interfaces.push(InterfaceView {
            ifindex,
            config,
            stats,
        });
    }
    interfaces.sort_by_key(|i| i.ifindex);
    Ok(PinnedState {
        layout_version,
        entries,
        interfaces,
        uncounted: oif_slot(0)?,
    })
}
