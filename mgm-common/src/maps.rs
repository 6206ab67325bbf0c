//! Map names, pin location, capacities and loop bounds shared by both sides.
//!
//! Map names are what `bpftool map dump pinned <PIN_DIR>/<NAME>` takes, and what the README's
//! map table lists.

/// Where the daemon pins its maps by default (`mgm run --pin-dir` overrides it).
pub const PIN_DIR: &str = "/sys/fs/bpf/mgm";

/// Version of the layout of every pinned map. A daemon only adopts pinned maps whose
/// [`META`] map holds the same version. (4: interface counters count VLAN-tagged frames, and
/// upcall records carry the packet's first bytes. 5: counters per outgoing interface per
/// entry ([`OIF_STATS`]), and placeholders count the packets they drop. 6: interface
/// counters count what admission refused. 7: [`OIF_STATS`] is an array of blocks the entries
/// point at, [`crate::fwd::FwdEntry::oif_base`].)
pub const LAYOUT_VERSION: u32 = 7;

/// `HASH` [`crate::fwd::FwdKey`] → [`crate::fwd::FwdEntry`]: the forwarding entries.
pub const FWD: &str = "MGM_FWD";
/// `ARRAY_OF_MAPS` set id → `DEVMAP_HASH` ifindex → `bpf_devmap_val`: outgoing sets. Id 0
/// is never used (an entry with set 0 has no outgoing set).
pub const OIF_SETS: &str = "MGM_OIF_SETS";
/// `ARRAY` set id → [`crate::fwd::SetInfo`]: member count of each outgoing set, and the member
/// whose copy the ingress program prepares.
pub const SET_INFO: &str = "MGM_SET_INFO";
/// `ARRAY` set id → [`crate::fwd::SetMembers`]: the interfaces of each set of several, read only
/// to count a packet below the TTL threshold on every one of them.
pub const SET_MEMBERS: &str = "MGM_SET_MEMBERS";
/// `HASH` ifindex (`u32`) → [`crate::fwd::IfConfig`]: the interfaces mgm manages.
pub const IFCFG: &str = "MGM_IFCFG";
/// `ARRAY` ifindex → [`crate::fwd::IfConfig`] for ifindexes below [`IFCFG_DIRECT_LIMIT`]: the
/// same entries as [`IFCFG`], for the per-copy lookup without hashing. Unmanaged indexes are
/// zero (no `IF_ENABLED`).
pub const IFCFG_DIRECT: &str = "MGM_IFCFG_DIRECT";
/// `RINGBUF` of [`crate::event`] records: IGMP messages and upcalls.
pub const EVENTS: &str = "MGM_EVENTS";
/// `PERCPU_ARRAY` slot → [`crate::counters::EntryStats`]: per forwarding entry counters.
pub const ENTRY_STATS: &str = "MGM_ENTRY_STATS";
/// `PERCPU_ARRAY` slot → [`crate::counters::IfStats`]: per interface counters.
pub const IF_STATS: &str = "MGM_IF_STATS";
/// `PERCPU_ARRAY` slot → [`crate::counters::OifStats`]: per outgoing interface of each
/// forwarding entry, in a block of consecutive slots per entry
/// ([`crate::fwd::FwdEntry::oif_base`]). The daemon hands out blocks (zeroed) and takes them
/// back with the entry or its set; slot 0 counts the copies of entries that got no block.
pub const OIF_STATS: &str = "MGM_OIF_STATS";
/// `ARRAY` with one [`crate::fwd::Meta`]: layout version of the pinned maps.
pub const META: &str = "MGM_META";

/// Every map the daemon pins, in the order the README lists them.
pub const ALL: [&str; 11] = [
    FWD,
    OIF_SETS,
    SET_INFO,
    SET_MEMBERS,
    IFCFG,
    IFCFG_DIRECT,
    EVENTS,
    ENTRY_STATS,
    IF_STATS,
    OIF_STATS,
    META,
];

/// Forwarding entries ((S,G) and (*,G)); sized for the 100k-entry scale target.
pub const FWD_CAPACITY: u32 = 131_072;
/// Distinct outgoing sets (entries with equal outgoing lists share one), id 0 included.
pub const OIF_SETS_CAPACITY: u32 = 16_384;
/// Most interfaces in one outgoing set (each set's devmap is sized to its members).
pub const OIF_SET_WIDTH: u32 = 64;
/// Managed interfaces, and so per-interface counter slots (slot 0 counts unmanaged ones).
pub const IF_CAPACITY: u32 = 256;
/// Interfaces with an ifindex below this are also in [`IFCFG_DIRECT`] (16 bytes each). Every
/// copy looks its interface up; an array index costs a few ns where a hash lookup costs
/// about 25, and most routers' interfaces have small ifindexes.
pub const IFCFG_DIRECT_LIMIT: u32 = 4096;
/// Per-entry counter slots; slot 0 collects packets that matched no installed entry.
pub const ENTRY_STATS_CAPACITY: u32 = FWD_CAPACITY;
/// (Entry, outgoing interface) counter slots: two per entry at the 100k-entry scale target,
/// 6 MiB per CPU (preallocated, 24 bytes each). An entry that finds no free block still
/// forwards; its copies count in slot 0, "uncounted" (the daemon logs it).
pub const OIF_STATS_CAPACITY: u32 = 2 * FWD_CAPACITY;
/// Ring buffer size in bytes (a power of two, a multiple of the page size).
pub const EVENTS_BYTES: u32 = 1 << 21;
