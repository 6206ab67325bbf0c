//! Map names, pin location, capacities and loop bounds shared by both sides.
//!
//! Map names are what `bpftool map dump pinned <PIN_DIR>/<NAME>` takes, and what the README's
//! map table lists.

/// Where the daemon pins its maps by default (`mgm run --pin-dir` overrides it).
pub const PIN_DIR: &str = "/sys/fs/bpf/mgm";

/// Version of the layout of every pinned map. A daemon only adopts pinned maps whose
/// [`META`] map holds the same version.
pub const LAYOUT_VERSION: u32 = 1;

/// `HASH` [`crate::fwd::FwdKey`] → [`crate::fwd::FwdEntry`]: the forwarding entries.
pub const FWD: &str = "MGM_FWD";
/// `ARRAY_OF_MAPS` set id → `DEVMAP_HASH` ifindex → `bpf_devmap_val`: outgoing sets. Id 0
/// is never used (an entry with set 0 has no outgoing set).
pub const OIF_SETS: &str = "MGM_OIF_SETS";
/// `HASH` ifindex (`u32`) → [`crate::fwd::IfConfig`]: the interfaces mgm manages.
pub const IFCFG: &str = "MGM_IFCFG";
/// `RINGBUF` of [`crate::event`] records: IGMP messages and upcalls.
pub const EVENTS: &str = "MGM_EVENTS";
/// `PERCPU_ARRAY` slot → [`crate::counters::EntryStats`]: per forwarding entry counters.
pub const ENTRY_STATS: &str = "MGM_ENTRY_STATS";
/// `PERCPU_ARRAY` slot → [`crate::counters::IfStats`]: per interface counters.
pub const IF_STATS: &str = "MGM_IF_STATS";
/// `ARRAY` with one [`crate::fwd::Meta`]: layout version of the pinned maps.
pub const META: &str = "MGM_META";

/// Every map the daemon pins, in the order the README lists them.
pub const ALL: [&str; 7] = [FWD, OIF_SETS, IFCFG, EVENTS, ENTRY_STATS, IF_STATS, META];

/// Forwarding entries ((S,G) and (*,G)); sized for the 100k-entry scale target.
pub const FWD_CAPACITY: u32 = 131_072;
/// Distinct outgoing sets (entries with equal outgoing lists share one), id 0 included.
pub const OIF_SETS_CAPACITY: u32 = 16_384;
/// Interfaces in one outgoing set.
pub const OIF_SET_WIDTH: u32 = 64;
/// Managed interfaces, and so per-interface counter slots (slot 0 counts unmanaged ones).
pub const IF_CAPACITY: u32 = 256;
/// Per-entry counter slots; slot 0 collects packets that matched no installed entry.
pub const ENTRY_STATS_CAPACITY: u32 = FWD_CAPACITY;
/// Ring buffer size in bytes (a power of two, a multiple of the page size).
pub const EVENTS_BYTES: u32 = 1 << 21;
