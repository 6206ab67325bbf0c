//! The forwarding table as the XDP program sees it, kept in step with the core's map
//! operations. Outgoing sets are shared by content and reference-counted here, and every
//! change is make-before-break: the new set exists before an entry points at it, and an old
//! set goes only once nothing does.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    io,
    net::Ipv4Addr,
    ops::Range,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
};

use aya::{
    maps::{xdp::DevMapHash, Array, ArrayOfMaps, HashMap, Map, MapData, PerCpuArray, PerCpuValues},
    programs::ProgramFd,
};
use aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_DEVMAP_HASH;
use log::warn;
use mgm_common::{
    counters::{EntryStats, OifStats},
    fwd::{FwdEntry, FwdKey, SetInfo, SetMembers, FWD_NEGATIVE, FWD_PENDING},
    maps as m,
};

use super::{
    counters::{self, Step, Sums, Sweep},
    error::map_err,
    DataplaneError,
};
use crate::core::{DataPlaneEntry, InterfaceId, MapOp};

/// Size of `struct bpf_devmap_val` (ifindex + program fd), which egress programs need.
const DEVMAP_VALUE_SIZE: u32 = 8;

/// Outgoing sets kept in place after their last entry went, for the next entry with the same
/// outgoing interfaces. Putting a set into the array of maps or taking it out waits for an
/// RCU grace period (10–20 ms on the project's VM), which a receiver's join would otherwise
/// pay whenever its interface's set had gone with the last stream before.
const IDLE_SETS_KEPT: usize = 64;

/// One installed entry, as this adapter remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Installed {
    /// The incoming interface.
    iif: u32,
    /// The outgoing interfaces; empty for a negative entry (which has no set).
    oifs: BTreeSet<u32>,
    stats_slot: u32,
    /// First slot of the entry's block in `MGM_OIF_STATS`, one slot per member of `oifs` in
    /// ascending order; 0 without one (no set, or the array was full).
    oif_base: u32,
}

/// Blocks of consecutive slots of `MGM_OIF_STATS`, one per entry with a set, as long as the
/// set. A freed block is kept by its length and reused whole, or split for a shorter one;
/// blocks are not merged, so a table whose sets keep growing may run out before every slot is
/// taken (an entry without a block still forwards, its copies counted as "uncounted").
#[derive(Debug)]
struct OifBlocks {
    /// First slots of the free blocks, by length (index 1 to `OIF_SET_WIDTH`).
    free: Vec<Vec<u32>>,
    /// Slots from here on were never handed out; slot 0 is the "uncounted" one.
    next: u32,
}

impl OifBlocks {
    fn new() -> Self {
        OifBlocks {
            free: vec![Vec::new(); m::OIF_SET_WIDTH as usize + 1],
            next: 1,
        }
    }

    /// The first slot of a free block of `len` (1 to `OIF_SET_WIDTH`) slots, if one is left.
    fn alloc(&mut self, len: u32) -> Option<u32> {
        let len_ix = len as usize;
        if let Some(base) = self.free.get_mut(len_ix)?.pop() {
            return Some(base);
        }
        if m::OIF_STATS_CAPACITY - self.next >= len {
            self.next += len;
            return Some(self.next - len);
        }
        let longer = (len_ix + 1..self.free.len()).find(|&l| !self.free[l].is_empty())?;
        let base = self.free[longer].pop()?;
        self.free[longer - len_ix].push(base + len);
        Some(base)
    }

    fn release(&mut self, base: u32, len: u32) {
        if let Some(list) = self.free.get_mut(len as usize) {
            list.push(base);
        }
    }

    /// The allocator over the blocks a previous daemon left in use (first slot → length):
    /// what lies between them is free.
    fn adopted(used: &BTreeMap<u32, u32>) -> Self {
        let mut blocks = OifBlocks::new();
        for (&base, &len) in used {
            let mut gap = blocks.next;
            while gap < base {
                let n = (base - gap).min(m::OIF_SET_WIDTH);
                blocks.release(gap, n);
                gap += n;
            }
            blocks.next = blocks.next.max(base + len);
        }
        blocks
    }
}

#[derive(Debug)]
struct SharedSet {
    id: u32,
    users: usize,
}

/// Typed handles on the forwarding maps plus the bookkeeping to update them safely.
pub struct Forwarding {
    fwd: HashMap<MapData, FwdKey, FwdEntry>,
    sets: ArrayOfMaps<MapData, DevMapHash<MapData>>,
    /// A second fd on `sets`: aya has no delete for arrays of maps (see [`delete_elem`]).
    sets_fd: OwnedFd,
    /// Member count and prepared member of each set, written before the set is.
    set_info: Array<MapData, SetInfo>,
    /// The members of each set of several, written before the set is.
    set_members: Array<MapData, SetMembers>,
    entry_stats: PerCpuArray<MapData, EntryStats>,
    oif_stats: PerCpuArray<MapData, OifStats>,
    oif_blocks: OifBlocks,
    /// An entry found no block since the last one that did (warned once per run of them).
    oif_blocks_exhausted: bool,
    /// The devmap program every copy runs (`mgm_egress`).
    egress: ProgramFd,
    entries: BTreeMap<FwdKey, Installed>,
    sets_by_oifs: BTreeMap<BTreeSet<u32>, SharedSet>,
    /// Sets in `sets_by_oifs` that no entry uses, oldest first (at most [`IDLE_SETS_KEPT`]).
    idle_sets: VecDeque<BTreeSet<u32>>,
    free_set_ids: Vec<u32>,
    next_set_id: u32,
    free_slots: Vec<u32>,
    /// Slot 0 is shared by placeholders and packets that matched nothing.
    next_slot: u32,
    /// Placeholders the XDP program inserted and no install has replaced yet.
    pending: BTreeSet<FwdKey>,
    nr_cpus: usize,
    /// The counter arrays' sums as last read or written, for [`Forwarding::sweep_counters`].
    entry_sums: Sums<EntryStats>,
    oif_sums: Sums<OifStats>,
    sweep: Sweep<FwdKey>,
    /// The kernel has not refused a batch read of a counter array.
    batch: bool,
}

/// One entry's counters, summed over CPUs; its outgoing interfaces' by ifindex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub source: Ipv4Addr,
    pub group: Ipv4Addr,
    pub stats: EntryStats,
    pub oifs: BTreeMap<u32, OifStats>,
}

impl Forwarding {
    pub(super) fn new(
        fwd: HashMap<MapData, FwdKey, FwdEntry>,
        (sets, sets_fd): (ArrayOfMaps<MapData, DevMapHash<MapData>>, OwnedFd),
        set_info: Array<MapData, SetInfo>,
        set_members: Array<MapData, SetMembers>,
        (entry_stats, oif_stats): (
            PerCpuArray<MapData, EntryStats>,
            PerCpuArray<MapData, OifStats>,
        ),
        egress: ProgramFd,
        nr_cpus: usize,
    ) -> Self {
        Forwarding {
            fwd,
            sets,
            sets_fd,
            set_info,
            set_members,
            entry_stats,
            oif_stats,
            oif_blocks: OifBlocks::new(),
            oif_blocks_exhausted: false,
            egress,
            entries: BTreeMap::new(),
            sets_by_oifs: BTreeMap::new(),
            idle_sets: VecDeque::new(),
            free_set_ids: Vec::new(),
            next_set_id: 1,
            free_slots: Vec::new(),
            next_slot: 1,
            pending: BTreeSet::new(),
            nr_cpus,
            entry_sums: Sums::default(),
            oif_sums: Sums::default(),
            sweep: Sweep::Idle,
            batch: true,
        }
    }

    /// Applies one operation from the core.
    ///
    /// # Errors
    /// A map write failed or a table is full; the table is left as it was before the op.
    pub fn apply(&mut self, op: &MapOp) -> Result<(), DataplaneError> {
        match op {
            MapOp::InstallMfe {
                source,
                group,
                iif,
                oifs,
            } => self.install(
                FwdKey {
                    source: u32::from(*source).to_be(),
                    group: u32::from(*group).to_be(),
                },
                *iif,
                oifs,
            ),
            MapOp::DeleteMfe { source, group } => self.delete(FwdKey {
                source: u32::from(*source).to_be(),
                group: u32::from(*group).to_be(),
            }),
        }
    }

    fn install(
        &mut self,
        key: FwdKey,
        iif: InterfaceId,
        oifs: &BTreeSet<InterfaceId>,
    ) -> Result<(), DataplaneError> {
        let fast: BTreeSet<u32> = oifs
            .iter()
            .filter(|o| {
                let ok = o.next_hop.is_unspecified();
                if !ok {
                    warn!(
                        "outgoing interface {} has next hop {}; XDP serves broadcast links only",
                        o.ifindex, o.next_hop
                    );
                }
                ok
            })
            .map(|o| o.ifindex)
            .collect();
        let old = self.entries.get(&key).cloned();
        let set_id = if fast.is_empty() {
            None
        } else {
            Some(self.acquire_set(&fast)?)
        };
        let stats_slot = match &old {
            Some(o) => o.stats_slot,
            None => match self.alloc_slot(self.held_by_placeholder(key)) {
                Ok(slot) => slot,
                Err(e) => {
                    self.release_set(&fast)?;
                    return Err(e);
                }
            },
        };
        // Counters before the entry that counts into them: a copy sent before would be lost.
        let old_base = old.as_ref().map_or(0, |o| o.oif_base);
        let oif_base = match &old {
            Some(o) if o.oifs == fast && old_base != 0 => old_base,
            _ => self.oif_block(&fast, old.as_ref()),
        };
        let new_block = oif_base != old_base;
        let entry = FwdEntry {
            iif: iif.ifindex,
            oif_set: set_id.unwrap_or(0),
            flags: if set_id.is_none() { FWD_NEGATIVE } else { 0 },
            stats_slot,
            created_ns: 0,
            last_upcall_ns: 0,
            pending_pkts: 0,
            oif_base,
            oif_slots: if oif_base == 0 { 0 } else { fast.len() as u32 },
        };
        if let Err(e) = self.fwd.insert(key, entry, 0) {
            if new_block {
                self.release_oif_block(oif_base, fast.len());
            }
            return Err(map_err(m::FWD)(e));
        }
        self.entries.insert(
            key,
            Installed {
                iif: iif.ifindex,
                oifs: fast,
                stats_slot,
                oif_base,
            },
        );
        if let Some(old) = old {
            if new_block {
                self.release_oif_block(old.oif_base, old.oifs.len());
            }
            self.release_set(&old.oifs)?;
        }
        self.pending.remove(&key);
        if key.source == 0 {
            self.clear_pending_covered_by(key)?;
        }
        Ok(())
    }

    fn delete(&mut self, key: FwdKey) -> Result<(), DataplaneError> {
        let Some(old) = self.entries.remove(&key) else {
            return Ok(());
        };
        self.fwd.remove(&key).map_err(map_err(m::FWD))?;
        self.release_set(&old.oifs)?;
        self.release_oif_block(old.oif_base, old.oifs.len());
        self.free_slots.push(old.stats_slot);
        Ok(())
    }

    /// A block of counters for `oifs` (ascending, one slot each) before the entry that counts
    /// into it: zero, but for the interfaces `old` had, whose counts it carries on. Copies
    /// `old`'s block counts between this read and the entry's rewrite are lost. 0 (and a
    /// warning) when no block is free or one cannot be written: the entry's copies then count
    /// as "uncounted".
    fn oif_block(&mut self, oifs: &BTreeSet<u32>, old: Option<&Installed>) -> u32 {
        if oifs.is_empty() {
            return 0;
        }
        let Some(base) = self.oif_blocks.alloc(oifs.len() as u32) else {
            if !self.oif_blocks_exhausted {
                warn!(
                    "no free per-interface counters ({} slots in {}); entries count their \
                     copies as uncounted until some are freed",
                    m::OIF_STATS_CAPACITY,
                    m::OIF_STATS
                );
            }
            self.oif_blocks_exhausted = true;
            return 0;
        };
        self.oif_blocks_exhausted = false;
        let carried: BTreeMap<u32, u32> = old
            .filter(|o| o.oif_base != 0)
            .map(|o| o.oifs.iter().copied().zip(o.oif_base..).collect())
            .unwrap_or_default();
        for (&oif, slot) in oifs.iter().zip(base..) {
            let written = match carried.get(&oif) {
                Some(from) => self.oif_stats.get(from, 0),
                None => PerCpuValues::try_from(vec![OifStats::default(); self.nr_cpus])
                    .map_err(aya::maps::MapError::IoError),
            }
            .and_then(|values| {
                let mut total = OifStats::default();
                values.iter().for_each(|v| total.accumulate(v));
                self.oif_stats.set(slot, values, 0)?;
                self.oif_sums.set(slot, total);
                Ok(())
            });
            if let Err(e) = written {
                warn!("cannot write the counters of ifindex {oif} in slot {slot} ({e}); the entry's copies count as uncounted");
                self.oif_blocks.release(base, oifs.len() as u32);
                return 0;
            }
        }
        base
    }

    /// Gives a block back; the next entry that gets it zeroes it first.
    fn release_oif_block(&mut self, base: u32, len: usize) {
        if base != 0 {
            self.oif_blocks.release(base, len as u32);
        }
    }

    /// How many packets the placeholder for `key` dropped while the entry was resolved (0 if
    /// there is none): they become the new entry's `uninit`. Packets that hit the placeholder
    /// between this read and the install are not counted.
    fn held_by_placeholder(&self, key: FwdKey) -> u64 {
        if !self.pending.contains(&key) {
            return 0;
        }
        match self.fwd.get(&key, 0) {
            Ok(e) if e.flags & FWD_PENDING != 0 => e.pending_pkts,
            _ => 0,
        }
    }

    /// The XDP program raised a no-cache upcall for `key` and left a placeholder. If an
    /// installed wildcard entry covers it (the upcall raced the install), the placeholder only
    /// shadows that entry, so it goes at once.
    ///
    /// # Errors
    /// Removing the placeholder failed.
    pub fn on_no_cache(&mut self, key: FwdKey) -> Result<bool, DataplaneError> {
        let star_g = FwdKey {
            source: 0,
            group: key.group,
        };
        let star_star = FwdKey {
            source: 0,
            group: 0,
        };
        if self.entries.contains_key(&star_g) || self.entries.contains_key(&star_star) {
            self.remove_placeholder(key)?;
            return Ok(true);
        }
        if !self.entries.contains_key(&key) {
            self.pending.insert(key);
        }
        Ok(false)
    }

    fn clear_pending_covered_by(&mut self, wildcard: FwdKey) -> Result<(), DataplaneError> {
        let covered: Vec<FwdKey> = self
            .pending
            .iter()
            .filter(|k| wildcard.group == 0 || k.group == wildcard.group)
            .copied()
            .collect();
        for key in covered {
            self.remove_placeholder(key)?;
        }
        Ok(())
    }

    /// Removes the placeholder at `key`, if that is what the key holds: its upcall was
    /// dropped, and the flow's next packet raises another.
    ///
    /// # Errors
    /// The map delete failed.
    pub fn forget_placeholder(&mut self, key: FwdKey) -> Result<(), DataplaneError> {
        if self.entries.contains_key(&key) {
            return Ok(());
        }
        self.remove_placeholder(key)
    }

    fn remove_placeholder(&mut self, key: FwdKey) -> Result<(), DataplaneError> {
        self.pending.remove(&key);
        match self.fwd.remove(&key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(map_err(m::FWD)(source)),
        }
    }

    fn acquire_set(&mut self, oifs: &BTreeSet<u32>) -> Result<u32, DataplaneError> {
        if let Some(shared) = self.sets_by_oifs.get_mut(oifs) {
            if shared.users == 0 {
                self.idle_sets.retain(|idle| idle != oifs);
            }
            shared.users += 1;
            return Ok(shared.id);
        }
        if oifs.len() > m::OIF_SET_WIDTH as usize {
            return Err(DataplaneError::Full {
                table: "an outgoing set",
                capacity: m::OIF_SET_WIDTH,
            });
        }
        let id = match self.free_set_ids.pop() {
            Some(id) => id,
            None if self.next_set_id < m::OIF_SETS_CAPACITY => {
                self.next_set_id += 1;
                self.next_set_id - 1
            }
            // Every slot is taken: the new set replaces the oldest idle one in its slot.
            None => match self
                .idle_sets
                .pop_front()
                .and_then(|idle| self.sets_by_oifs.remove(&idle))
            {
                Some(idle) => idle.id,
                None => {
                    return Err(DataplaneError::Full {
                        table: m::OIF_SETS,
                        capacity: m::OIF_SETS_CAPACITY,
                    })
                }
            },
        };
        // Any member would do while every interface has the same TTL threshold; with
        // thresholds per interface it must be one with the lowest (`SetInfo`).
        let info = SetInfo {
            members: oifs.len() as u32,
            prepared_ifindex: oifs.last().copied().unwrap_or(0),
        };
        // No entry points at `id` yet, so the info may go first. A one-interface set needs
        // nothing else: the ingress program redirects by the info alone, and leaving the
        // array of maps alone spares the join that creates the set an RCU grace period.
        let written = self
            .set_info
            .set(id, info, 0)
            .map_err(map_err(m::SET_INFO))
            .and_then(|()| {
                if oifs.len() == 1 {
                    return Ok(());
                }
                let mut members = SetMembers::default();
                for (slot, &oif) in members.ifindex.iter_mut().zip(oifs) {
                    *slot = oif;
                }
                self.set_members
                    .set(id, members, 0)
                    .map_err(map_err(m::SET_MEMBERS))?;
                let devmap = self.new_devmap(oifs, info.prepared_ifindex)?;
                self.sets.set(id, &devmap, 0).map_err(map_err(m::OIF_SETS))
            });
        if let Err(e) = written {
            self.free_set_ids.push(id);
            return Err(e);
        }
        self.sets_by_oifs
            .insert(oifs.clone(), SharedSet { id, users: 1 });
        Ok(id)
    }

    /// A devmap of `oifs`, each copy but `prepared`'s through the egress program (the ingress
    /// program does that one's work), sized to its members: a broadcast redirect walks every
    /// bucket, and 64 empty ones cost a copy about 100 ns. Sets never change, so none needs
    /// room to grow.
    fn new_devmap(
        &self,
        oifs: &BTreeSet<u32>,
        prepared: u32,
    ) -> Result<DevMapHash<MapData>, DataplaneError> {
        let def = aya_obj::Map::new_from_params(
            BPF_MAP_TYPE_DEVMAP_HASH as u32,
            4,
            DEVMAP_VALUE_SIZE,
            oifs.len() as u32,
            0,
        );
        let mut devmap = MapData::create(def, "mgm_oif_set", None)
            .and_then(|data| DevMapHash::try_from(Map::DevMapHash(data)))
            .map_err(map_err(m::OIF_SETS))?;
        for &ifindex in oifs {
            let program = (ifindex != prepared).then_some(&self.egress);
            devmap.insert(ifindex, ifindex, program, 0)?;
        }
        Ok(devmap)
    }

    fn release_set(&mut self, oifs: &BTreeSet<u32>) -> Result<(), DataplaneError> {
        let Some(shared) = self.sets_by_oifs.get_mut(oifs) else {
            return Ok(());
        };
        if shared.users == 0 {
            return Ok(());
        }
        shared.users -= 1;
        if shared.users > 0 {
            return Ok(());
        }
        self.idle_sets.push_back(oifs.clone());
        if self.idle_sets.len() <= IDLE_SETS_KEPT {
            return Ok(());
        }
        let Some((oldest, id)) = self.idle_sets.pop_front().and_then(|oldest| {
            let id = self.sets_by_oifs.remove(&oldest)?.id;
            Some((oldest, id))
        }) else {
            return Ok(());
        };
        self.free_set_ids.push(id);
        if oldest.len() == 1 {
            return Ok(());
        }
        delete_elem(self.sets_fd.as_fd(), id).map_err(|e| DataplaneError::Map {
            map: m::OIF_SETS,
            source: aya::maps::MapError::IoError(e),
        })
    }

    /// A zeroed counter slot, with `uninit` placeholder drops carried in (on the first CPU's
    /// copy; the sum over CPUs is what counts).
    fn alloc_slot(&mut self, uninit: u64) -> Result<u32, DataplaneError> {
        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None if self.next_slot < m::ENTRY_STATS_CAPACITY => {
                self.next_slot += 1;
                self.next_slot - 1
            }
            None => {
                return Err(DataplaneError::Full {
                    table: m::ENTRY_STATS,
                    capacity: m::ENTRY_STATS_CAPACITY,
                })
            }
        };
        // A reused slot still holds the counts of the entry that had it.
        let mut values = vec![EntryStats::default(); self.nr_cpus];
        if let Some(first) = values.first_mut() {
            first.uninit = uninit;
        }
        let sum = EntryStats {
            uninit,
            ..EntryStats::default()
        };
        let zero = PerCpuValues::try_from(values).map_err(|e| DataplaneError::Map {
            map: m::ENTRY_STATS,
            source: aya::maps::MapError::IoError(e),
        })?;
        self.entry_stats
            .set(slot, zero, 0)
            .map_err(map_err(m::ENTRY_STATS))?;
        self.entry_sums.set(slot, sum);
        Ok(slot)
    }

    /// Starts a sweep of every entry's counters ([`Forwarding::sweep_counters`]), unless one
    /// is under way.
    pub fn start_counter_sweep(&mut self) {
        self.sweep.start();
    }

    /// A sweep is under way: [`Forwarding::sweep_counters`] has more to do.
    pub fn sweeping(&self) -> bool {
        self.sweep.running()
    }

    /// One bounded step of the sweep (about 1 ms): reads 2048 counter slots in one batch call,
    /// or hands out the counters of up to 512 entries (then returned), each entry once
    /// a sweep. Counters are at most one sweep old, never older than the entry's install.
    ///
    /// # Errors
    /// Reading a counter array failed; the sweep ends (the next one starts over).
    pub fn sweep_counters(&mut self) -> Result<Vec<Counted>, DataplaneError> {
        let step = self
            .sweep
            .next(&self.entries, self.next_slot, self.oif_blocks.next);
        let read = match step {
            None => return Ok(Vec::new()),
            Some(Step::Deliver(keys)) => {
                return Ok(keys.iter().filter_map(|&k| self.counted(k)).collect())
            }
            Some(Step::Entries(slots)) => self.read_entry_sums(slots),
            Some(Step::Oifs(slots)) => self.read_oif_sums(slots),
        };
        if read.is_err() {
            self.sweep = Sweep::Idle;
        }
        read.map(|()| Vec::new())
    }

    /// Fresh counters of the entries `keys` names (those installed): two reads an entry, or
    /// both arrays whole in batches when that costs less (many MFEs expiring at once).
    ///
    /// # Errors
    /// Reading a counter array failed.
    pub fn read_counters(&mut self, keys: &[FwdKey]) -> Result<Vec<Counted>, DataplaneError> {
        let in_use = self.next_slot + self.oif_blocks.next;
        if keys.len() as u64 * counters::SLOTS_PER_ENTRY > u64::from(in_use) {
            self.read_entry_sums(1..self.next_slot)?;
            self.read_oif_sums(1..self.oif_blocks.next)?;
        } else {
            for k in keys {
                let Some(e) = self.entries.get(k) else {
                    continue;
                };
                let slot = e.stats_slot;
                let block = if e.oif_base == 0 {
                    0..0
                } else {
                    e.oif_base..e.oif_base + e.oifs.len() as u32
                };
                self.read_entry_sums(slot..slot + 1)?;
                self.read_oif_sums(block)?;
            }
        }
        Ok(keys.iter().filter_map(|&k| self.counted(k)).collect())
    }

    fn read_entry_sums(&mut self, slots: Range<u32>) -> Result<(), DataplaneError> {
        if slots.is_empty() {
            return Ok(());
        }
        let (array, sums) = (&self.entry_stats, &mut self.entry_sums);
        counters::read_slots(array, slots, self.nr_cpus, &mut self.batch, sums)
            .map_err(map_err(m::ENTRY_STATS))
    }

    fn read_oif_sums(&mut self, slots: Range<u32>) -> Result<(), DataplaneError> {
        if slots.is_empty() {
            return Ok(());
        }
        let (array, sums) = (&self.oif_stats, &mut self.oif_sums);
        counters::read_slots(array, slots, self.nr_cpus, &mut self.batch, sums)
            .map_err(map_err(m::OIF_STATS))
    }

    /// The counters of the entry for `key` from the sums.
    fn counted(&self, key: FwdKey) -> Option<Counted> {
        let e = self.entries.get(&key)?;
        let oifs = if e.oif_base == 0 {
            BTreeMap::new()
        } else {
            e.oifs
                .iter()
                .zip(e.oif_base..)
                .map(|(&ifindex, slot)| (ifindex, self.oif_sums.get(slot)))
                .collect()
        };
        Some(Counted {
            source: Ipv4Addr::from(u32::from_be(key.source)),
            group: Ipv4Addr::from(u32::from_be(key.group)),
            stats: self.entry_sums.get(e.stats_slot),
            oifs,
        })
    }

    /// Counters of the entry for `key`, summed over CPUs; `None` if no such entry.
    ///
    /// # Errors
    /// Reading the per-CPU array failed.
    pub fn stats(&self, key: FwdKey) -> Result<Option<EntryStats>, DataplaneError> {
        let Some(e) = self.entries.get(&key) else {
            return Ok(None);
        };
        let per_cpu = self
            .entry_stats
            .get(&e.stats_slot, 0)
            .map_err(map_err(m::ENTRY_STATS))?;
        let mut total = EntryStats::default();
        per_cpu.iter().for_each(|s| total.accumulate(s));
        Ok(Some(total))
    }

    /// Counters of each outgoing interface of the entry for `key`, by ifindex, summed over
    /// CPUs; empty if no such entry, or it has no counters.
    ///
    /// # Errors
    /// Reading the per-CPU array failed.
    pub fn oif_stats(&self, key: FwdKey) -> Result<BTreeMap<u32, OifStats>, DataplaneError> {
        let Some(e) = self.entries.get(&key) else {
            return Ok(BTreeMap::new());
        };
        if e.oif_base == 0 {
            return Ok(BTreeMap::new());
        }
        let mut all = BTreeMap::new();
        for (&ifindex, slot) in e.oifs.iter().zip(e.oif_base..) {
            let per_cpu = self
                .oif_stats
                .get(&slot, 0)
                .map_err(map_err(m::OIF_STATS))?;
            let mut total = OifStats::default();
            per_cpu.iter().for_each(|s| total.accumulate(s));
            all.insert(ifindex, total);
        }
        Ok(all)
    }

    /// Rebuilds the bookkeeping (entries, shared sets and their users, counter slots) from
    /// maps a previous daemon filled, so updates continue where it stopped. Set ids no entry
    /// uses (idle or removed sets) become free. Returns how many forwarding entries were
    /// found; placeholders are remembered as pending.
    ///
    /// # Errors
    /// Reading a map failed.
    pub fn adopt(&mut self) -> Result<usize, DataplaneError> {
        let mut found = Vec::new();
        let mut used_sets = BTreeSet::new();
        for item in self.fwd.iter() {
            found.push(item.map_err(map_err(m::FWD))?);
        }
        let mut blocks = BTreeMap::new();
        for (key, e) in found {
            if e.flags & FWD_PENDING != 0 {
                self.pending.insert(key);
                continue;
            }
            let oifs: BTreeSet<u32> = if e.flags & FWD_NEGATIVE != 0 || e.oif_set == 0 {
                BTreeSet::new()
            } else {
                set_members(&self.sets, &self.set_info, e.oif_set).unwrap_or_default()
            };
            if !oifs.is_empty() {
                let shared = self.sets_by_oifs.entry(oifs.clone()).or_insert(SharedSet {
                    id: e.oif_set,
                    users: 0,
                });
                if shared.id == e.oif_set {
                    shared.users += 1;
                } else {
                    let list: Vec<String> = oifs.iter().map(ToString::to_string).collect();
                    warn!(
                        "two outgoing sets hold ifindexes {}; set {} stays unshared",
                        list.join(", "),
                        e.oif_set
                    );
                }
            }
            used_sets.insert(e.oif_set);
            self.next_set_id = self.next_set_id.max(e.oif_set + 1);
            self.next_slot = self.next_slot.max(e.stats_slot + 1);
            // The entry counts into its block whatever it is, so no other may get it; but a block
            // that does not match its set (one gone with the daemon) is not read or freed.
            let in_range = e.oif_base != 0
                && e.oif_slots <= m::OIF_SET_WIDTH
                && e.oif_base
                    .checked_add(e.oif_slots)
                    .is_some_and(|end| end <= m::OIF_STATS_CAPACITY);
            if in_range {
                blocks.insert(e.oif_base, e.oif_slots);
            }
            let fits = in_range && e.oif_slots as usize == oifs.len();
            self.entries.insert(
                key,
                Installed {
                    iif: e.iif,
                    oifs,
                    stats_slot: e.stats_slot,
                    oif_base: if fits { e.oif_base } else { 0 },
                },
            );
        }
        self.oif_blocks = OifBlocks::adopted(&blocks);
        self.free_set_ids = (1..self.next_set_id)
            .filter(|id| !used_sets.contains(id))
            .collect();
        Ok(self.entries.len())
    }

    /// Every installed entry, as the core's reconciliation takes them.
    pub fn snapshot(&self) -> Vec<DataPlaneEntry> {
        self.entries
            .iter()
            .map(|(k, e)| DataPlaneEntry {
                source: Ipv4Addr::from(u32::from_be(k.source)),
                group: Ipv4Addr::from(u32::from_be(k.group)),
                iif: InterfaceId::new(e.iif),
                oifs: e.oifs.iter().map(|i| InterfaceId::new(*i)).collect(),
            })
            .collect()
    }

    /// The entry for `key` as the kernel holds it, placeholders included.
    ///
    /// # Errors
    /// Reading the map failed.
    pub fn read_entry(&self, key: FwdKey) -> Result<Option<FwdEntry>, DataplaneError> {
        match self.fwd.get(&key, 0) {
            Ok(e) => Ok(Some(e)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(map_err(m::FWD)(source)),
        }
    }
}

/// The interfaces of outgoing set `id`: its lone member by [`SetInfo`], or the keys of its
/// devmap; none if the set is gone.
///
/// # Errors
/// A map could not be read.
pub(super) fn set_members(
    sets: &ArrayOfMaps<MapData, DevMapHash<MapData>>,
    info: &Array<MapData, SetInfo>,
    id: u32,
) -> Result<BTreeSet<u32>, aya::maps::MapError> {
    match info.get(&id, 0)? {
        SetInfo {
            members: 1,
            prepared_ifindex,
        } => Ok(BTreeSet::from([prepared_ifindex])),
        _ => match sets.get(&id, 0) {
            Ok(set) => Ok(set.keys().filter_map(Result::ok).collect()),
            Err(aya::maps::MapError::KeyNotFound) => Ok(BTreeSet::new()),
            Err(e) => Err(e),
        },
    }
}

/// `BPF_MAP_DELETE_ELEM` of `index` in an array of maps: it drops the slot's reference to its
/// inner map, which aya 0.14 offers for hash maps of maps only.
fn delete_elem(map: BorrowedFd<'_>, index: u32) -> io::Result<()> {
    const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
    /// The `BPF_MAP_*_ELEM` member of `union bpf_attr`.
    #[repr(C)]
    struct ElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: &index as *const u32 as u64,
        value: 0,
        flags: 0,
    };
    // SAFETY: `attr` and the key it points to outlive the call; the size matches the struct.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_DELETE_ELEM,
            &attr as *const ElemAttr,
            size_of::<ElemAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks never overlap, slot 0 is never handed out, a freed block is reused whole or
    /// split for a shorter one, and the array running out is a `None`, not a panic.
    #[test]
    fn counter_blocks_are_disjoint_reused_and_bounded() {
        let mut b = OifBlocks::new();
        let first = b.alloc(3).unwrap();
        let second = b.alloc(2).unwrap();
        assert_eq!((first, second), (1, 4), "slot 0 is the uncounted one");
        b.release(first, 3);
        assert_eq!(b.alloc(3), Some(first), "a freed block of the length asked");
        b.release(first, 3);
        assert_eq!(
            b.alloc(m::OIF_STATS_CAPACITY - 6),
            None,
            "longer than the set width"
        );
        // Take every never-used slot, in blocks of the widest sets.
        let mut taken = 0;
        while b.alloc(m::OIF_SET_WIDTH).is_some() {
            taken += 1;
        }
        assert!(taken > 0 && b.next <= m::OIF_STATS_CAPACITY);
        let left = m::OIF_STATS_CAPACITY - b.next;
        assert!(left < m::OIF_SET_WIDTH);
        // What is left at the end, then the freed block of 3, split.
        for _ in 0..left {
            assert!(b.alloc(1).is_some());
        }
        assert_eq!(b.alloc(2), Some(first), "split from the freed block of 3");
        assert_eq!(b.alloc(1), Some(first + 2), "and its remainder");
        assert_eq!(b.alloc(1), None, "every slot taken");
    }

    /// A restarted daemon sees the blocks in use through the entries; the gaps between them
    /// are free again, and the blocks in use are not handed out twice.
    #[test]
    fn adopted_counter_blocks_free_only_the_gaps() {
        let used = BTreeMap::from([(3, 2), (100, 4)]);
        let mut b = OifBlocks::adopted(&used);
        assert_eq!(b.next, 104);
        // The gaps: 1-2, then 5-99 in blocks of the widest set and the rest.
        assert_eq!(b.alloc(2), Some(1));
        assert_eq!(b.alloc(m::OIF_SET_WIDTH), Some(5));
        assert_eq!(b.alloc(31), Some(5 + m::OIF_SET_WIDTH));
        assert_eq!(b.alloc(2), Some(104), "past every block in use");
    }
}
