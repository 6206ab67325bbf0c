//! Forwarding state written by the daemon and read per packet by the XDP programs.

use crate::user_pod;

/// Key of a forwarding entry. Addresses are in network byte order; `source == 0` is (*,G) and
/// `source == group == 0` is (*,*).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FwdKey {
    pub source: u32,
    pub group: u32,
}
const _: () = assert!(core::mem::size_of::<FwdKey>() == 8);

/// The entry forwards nothing: matching packets are dropped and counted (spec §5.4).
pub const FWD_NEGATIVE: u32 = 1 << 0;
/// A placeholder the XDP program inserted on a miss, waiting for the daemon (spec §5.2).
pub const FWD_PENDING: u32 = 1 << 1;

/// Value of a forwarding entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FwdEntry {
    /// Expected incoming interface; packets arriving elsewhere are "wrong interface".
    pub iif: u32,
    /// Key into the outgoing-set map of the interfaces to copy to.
    pub oif_set: u32,
    /// `FWD_*` bits.
    pub flags: u32,
    /// Slot in the per-entry counter array.
    pub stats_slot: u32,
    /// When the entry was written (`bpf_ktime_get_ns` clock), for placeholder ageing.
    pub created_ns: u64,
    /// Last wrong-interface upcall, for its rate limit.
    pub last_upcall_ns: u64,
    /// A placeholder's count of the packets that matched it, all dropped; the daemon carries
    /// it into [`crate::counters::EntryStats::uninit`] when it installs the entry. 0 in an
    /// installed entry.
    pub pending_pkts: u64,
    /// First slot of the entry's block in the per-outgoing-interface counters
    /// ([`crate::maps::OIF_STATS`]): one slot per member of its set, in the set's ascending
    /// ifindex order, so a copy's counters are an array index away. 0: no block (the array was
    /// full, or the entry has no set); its copies count in slot 0, "uncounted".
    pub oif_base: u32,
    /// Slots in the block: its set's members when it was written, 0 without a block.
    pub oif_slots: u32,
}
const _: () = assert!(core::mem::size_of::<FwdEntry>() == 48);

/// What the ingress program knows about an outgoing set besides its devmap, by set id.
///
/// The ingress program does the work of one copy itself (source MAC, TTL threshold, counters):
/// the copy to `prepared_ifindex`. A set of one interface is then served without its devmap,
/// by a plain redirect, which skips the devmap walk and the egress program run, about a third
/// of a one-copy flow's cost. In a larger set that member's devmap entry runs no egress
/// program, which spares one program run (30–45 ns) per packet. `members == 0` (an unwritten
/// slot) means "use the devmap".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetInfo {
    /// Interfaces in the set.
    pub members: u32,
    /// The member whose copy the ingress program prepares: the set's highest ifindex.
    pub prepared_ifindex: u32,
}
const _: () = assert!(core::mem::size_of::<SetInfo>() == 8);

/// The interfaces of a set of several, in ascending order, 0 after the last. The devmap holds
/// the same, but a program cannot walk a devmap; the ingress program walks this when a packet
/// is below the prepared member's TTL threshold, to count it on every member it is not sent to,
/// and `mgm_egress` searches it for its copy's position in the entry's counter block.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetMembers {
    pub ifindex: [u32; crate::maps::OIF_SET_WIDTH as usize],
}

impl Default for SetMembers {
    fn default() -> Self {
        SetMembers {
            ifindex: [0; crate::maps::OIF_SET_WIDTH as usize],
        }
    }
}

/// The interface takes part in forwarding and snooping.
pub const IF_ENABLED: u8 = 1 << 0;

/// Per-interface settings, keyed by ifindex.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfConfig {
    /// Source MAC written into every copy sent out of this interface.
    pub mac: [u8; 6],
    /// `IF_*` bits.
    pub flags: u8,
    /// Copies whose TTL (after the decrement) is below this are not sent here.
    pub ttl_threshold: u8,
    /// The link MTU as the daemon last read it (at start, then from each link change).
    /// Copies larger than the link's MTU are dropped by the kernel's devmap before the egress
    /// program runs; the prepared copy asks the kernel only for frames larger than this one.
    pub mtu: u16,
    pub _pad: u16,
    /// Slot in the per-interface counter array.
    pub stats_slot: u32,
}
const _: () = assert!(core::mem::size_of::<IfConfig>() == 16);

/// Contents of the one-element meta map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub layout_version: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Meta>() == 8);

user_pod!(FwdKey, FwdEntry, SetInfo, SetMembers, IfConfig, Meta);
