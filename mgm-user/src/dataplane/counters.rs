//! The per-CPU counter arrays read in bulk and in bounded steps. A sweep reads the slots in
//! use with `BPF_MAP_LOOKUP_BATCH`, 2048 slots a step, into sums kept here, then hands the
//! entries' counters out a slice at a time: the periodic sync never holds the event loop for
//! more than one step, however large the table.

use std::{
    collections::BTreeMap,
    io,
    ops::{Bound, Range},
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use aya::maps::{IterableMap, MapData, MapError, PerCpuArray};
use log::info;
use mgm_common::counters::{EntryStats, OifStats};

/// Slots one sweep step reads (one batch call): about 1 ms on the project's VM (0.45 µs a
/// slot, 2 CPUs).
pub(super) const READ_SLOTS: u32 = 2048;
/// Slots a batch call reads in the time the two single lookups of one entry's counters take
/// (6.7 µs with 100k entries installed, same VM).
pub(super) const SLOTS_PER_ENTRY: u64 = 15;
/// Entries one sweep step hands out: about 1 ms with the core's update of each.
pub(super) const DELIVER_KEYS: usize = 512;

/// A counter record, summed over CPUs field by field.
pub(super) trait Summed: aya::Pod + Default {
    fn add(&mut self, other: &Self);
}

impl Summed for EntryStats {
    fn add(&mut self, other: &Self) {
        self.accumulate(other);
    }
}

impl Summed for OifStats {
    fn add(&mut self, other: &Self) {
        self.accumulate(other);
    }
}

/// The sums of a per-CPU array's slots as last read or written by the daemon.
#[derive(Debug, Default)]
pub(super) struct Sums<V> {
    by_slot: Vec<V>,
}

impl<V: Summed> Sums<V> {
    pub(super) fn get(&self, slot: u32) -> V {
        self.by_slot.get(slot as usize).copied().unwrap_or_default()
    }

    pub(super) fn set(&mut self, slot: u32, value: V) {
        let ix = slot as usize;
        if ix >= self.by_slot.len() {
            self.by_slot.resize(ix + 1, V::default());
        }
        self.by_slot[ix] = value;
    }
}

/// Reads `slots` of `array` into `sums`: in batches while `batch` holds, one slot at a time
/// once the kernel refused a batch (it then stays off for the run).
///
/// # Errors
/// A read failed.
pub(super) fn read_slots<V: Summed>(
    array: &PerCpuArray<MapData, V>,
    slots: Range<u32>,
    nr_cpus: usize,
    batch: &mut bool,
    sums: &mut Sums<V>,
) -> Result<(), MapError> {
    if *batch {
        match read_batch(array.map().fd().as_fd(), slots.clone(), nr_cpus, sums) {
            Ok(()) => return Ok(()),
            Err(e) if refused(&e) => {
                info!("the kernel refuses batch reads of the counter arrays ({e}); reading them one slot at a time");
                *batch = false;
            }
            Err(e) => return Err(MapError::IoError(e)),
        }
    }
    for slot in slots {
        let mut total = V::default();
        array.get(&slot, 0)?.iter().for_each(|v| total.add(v));
        sums.set(slot, total);
    }
    Ok(())
}

/// Errors of a kernel without batch operations on this map type (before 5.6 the command is
/// unknown: `EINVAL`).
fn refused(e: &io::Error) -> bool {
    const ENOTSUPP: i32 = 524;
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS | ENOTSUPP)
    )
}

/// `BPF_MAP_LOOKUP_BATCH` over `slots` of a per-CPU array of `V`, summed into `sums`.
fn read_batch<V: Summed>(
    map: BorrowedFd<'_>,
    slots: Range<u32>,
    nr_cpus: usize,
    sums: &mut Sums<V>,
) -> io::Result<()> {
    const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
    /// The `batch` member of `union bpf_attr`.
    #[repr(C)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    // The kernel lays each slot out as one value per possible CPU, each rounded up to 8 bytes.
    const { assert!(size_of::<V>().is_multiple_of(8)) };
    let mut next = slots.start;
    while next < slots.end {
        let want = slots.end - next;
        let mut keys = vec![0u32; want as usize];
        let mut values = vec![V::default(); want as usize * nr_cpus];
        // The kernel continues after `in_batch`; none starts at slot 0.
        let prev = next.wrapping_sub(1);
        let mut out_batch = 0u32;
        let mut attr = BatchAttr {
            in_batch: if next == 0 {
                0
            } else {
                &prev as *const u32 as u64
            },
            out_batch: &mut out_batch as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: want,
            map_fd: map.as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: every pointer in `attr` outlives the call; `keys` holds `count` keys and
        // `values` `count` slots of `nr_cpus` values, as the kernel writes them.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>(),
            )
        };
        let got = attr.count.min(want) as usize;
        if rc < 0 {
            let e = io::Error::last_os_error();
            // ENOENT: the array ended before `count` slots; what was read is still good.
            if e.raw_os_error() != Some(libc::ENOENT) || got == 0 {
                return Err(e);
            }
        }
        if got == 0 {
            return Err(io::Error::other("a batch read returned no slot"));
        }
        for (&slot, per_cpu) in keys[..got].iter().zip(values.chunks_exact(nr_cpus)) {
            let mut total = V::default();
            per_cpu.iter().for_each(|v| total.add(v));
            sums.set(slot, total);
        }
        next = keys[got - 1].saturating_add(1);
        if rc < 0 {
            break;
        }
    }
    Ok(())
}

/// What one step of a sweep does.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step<K> {
    /// Read these slots of the entry counter array.
    Entries(Range<u32>),
    /// Read these slots of the outgoing-interface counter array.
    Oifs(Range<u32>),
    /// Hand out these entries' counters.
    Deliver(Vec<K>),
}

/// Where a sweep stands: both arrays read up to the slots in use, then every entry handed
/// out once, in key order. Entries added behind the cursor wait for the next sweep (their
/// counters were written with them); entries removed are skipped.
#[derive(Debug)]
pub(super) enum Sweep<K> {
    Idle,
    Entries(u32),
    Oifs(u32),
    /// Every key after this one is still to be handed out.
    Deliver(Option<K>),
}

impl<K: Ord + Copy> Sweep<K> {
    /// Starts a sweep, unless one is under way.
    pub(super) fn start(&mut self) {
        if matches!(self, Sweep::Idle) {
            *self = Sweep::Entries(1);
        }
    }

    pub(super) fn running(&self) -> bool {
        !matches!(self, Sweep::Idle)
    }

    /// The next step over `keys`, with slots in use below `entry_end` and `oif_end`; `None`
    /// once the sweep is over (or none runs).
    pub(super) fn next<V>(
        &mut self,
        keys: &BTreeMap<K, V>,
        entry_end: u32,
        oif_end: u32,
    ) -> Option<Step<K>> {
        loop {
            match *self {
                Sweep::Idle => return None,
                Sweep::Entries(from) if from < entry_end => {
                    let to = from.saturating_add(READ_SLOTS).min(entry_end);
                    *self = Sweep::Entries(to);
                    return Some(Step::Entries(from..to));
                }
                Sweep::Entries(_) => *self = Sweep::Oifs(1),
                Sweep::Oifs(from) if from < oif_end => {
                    let to = from.saturating_add(READ_SLOTS).min(oif_end);
                    *self = Sweep::Oifs(to);
                    return Some(Step::Oifs(from..to));
                }
                Sweep::Oifs(_) => *self = Sweep::Deliver(None),
                Sweep::Deliver(after) => {
                    let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
                    let slice: Vec<K> = keys
                        .range((lower, Bound::Unbounded))
                        .take(DELIVER_KEYS)
                        .map(|(k, _)| *k)
                        .collect();
                    *self = match slice.last() {
                        Some(&last) if slice.len() == DELIVER_KEYS => Sweep::Deliver(Some(last)),
                        _ => Sweep::Idle,
                    };
                    if slice.is_empty() {
                        return None;
                    }
                    return Some(Step::Deliver(slice));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Runs `sweep` to its end over `keys`, changing the table through `churn` before each
    /// step (by step number); returns the slots read and the keys handed out, in order.
    fn run(
        keys: &mut BTreeMap<u32, ()>,
        ends: (u32, u32),
        mut churn: impl FnMut(usize, &mut BTreeMap<u32, ()>),
    ) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
        let mut sweep = Sweep::Idle;
        sweep.start();
        let (mut entry_slots, mut oif_slots, mut handed) = (Vec::new(), Vec::new(), Vec::new());
        let mut n = 0;
        while let Some(step) = {
            churn(n, keys);
            sweep.next(keys, ends.0, ends.1)
        } {
            n += 1;
            match step {
                Step::Entries(r) => {
                    assert!(r.len() <= READ_SLOTS as usize);
                    entry_slots.extend(r);
                }
                Step::Oifs(r) => {
                    assert!(r.len() <= READ_SLOTS as usize);
                    oif_slots.extend(r);
                }
                Step::Deliver(k) => {
                    assert!(!k.is_empty() && k.len() <= DELIVER_KEYS);
                    handed.extend(k);
                }
            }
        }
        assert!(!sweep.running());
        (entry_slots, oif_slots, handed)
    }

    /// A sweep reads every slot in use once, then hands out every key once, in bounded steps.
    #[test]
    fn a_sweep_reads_each_slot_and_hands_out_each_key_once() {
        let mut keys: BTreeMap<u32, ()> = (0..5000).map(|k| (k * 3, ())).collect();
        let (entry_end, oif_end) = (9000, 2 * READ_SLOTS + 1);
        let (entries, oifs, handed) = run(&mut keys, (entry_end, oif_end), |_, _| {});
        assert_eq!(entries, (1..entry_end).collect::<Vec<_>>());
        assert_eq!(oifs, (1..oif_end).collect::<Vec<_>>());
        assert_eq!(handed, keys.keys().copied().collect::<Vec<_>>());
    }

    /// Keys added or removed while a sweep hands out: each key there throughout is handed out
    /// exactly once, none twice, none removed before its turn; one added ahead of the cursor
    /// comes in this sweep.
    #[test]
    fn keys_added_or_removed_mid_sweep_are_handed_out_at_most_once() {
        let mut keys: BTreeMap<u32, ()> =
            (0..4 * DELIVER_KEYS as u32).map(|k| (k * 10, ())).collect();
        let original: BTreeSet<u32> = keys.keys().copied().collect();
        let mut removed = BTreeSet::new();
        let (_, _, handed) = run(&mut keys, (2, 2), |n, keys| {
            // Steps 0 and 1 read the two arrays; the churn goes between the deliveries.
            if n >= 3 {
                for k in [5, 15_005, 20_000 + n as u32, 40_000 + n as u32] {
                    keys.insert(k, ());
                }
                let gone = 10 * (DELIVER_KEYS as u32 * (n as u32 - 1) + 7);
                if keys.remove(&gone).is_some() {
                    removed.insert(gone);
                }
            }
        });
        let unique: BTreeSet<u32> = handed.iter().copied().collect();
        assert_eq!(unique.len(), handed.len(), "a key handed out twice");
        let stayed: BTreeSet<u32> = original.difference(&removed).copied().collect();
        assert!(stayed.is_subset(&unique), "a key never handed out");
        assert!(removed.is_disjoint(&unique), "a removed key handed out");
        assert!(!removed.is_empty());
        assert!(unique.contains(&40_003), "added ahead of the cursor");
        assert!(!unique.contains(&5), "added behind the cursor waits");
    }

    /// An empty table still reads nothing past the ends and stops.
    #[test]
    fn a_sweep_over_nothing_ends() {
        let mut keys = BTreeMap::new();
        let (entries, oifs, handed) = run(&mut keys, (1, 1), |_, _| {});
        assert!(entries.is_empty() && oifs.is_empty() && handed.is_empty());
    }
}
