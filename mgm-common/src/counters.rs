//! Per-CPU counters. The XDP programs increment them; the daemon sums them across CPUs.
//!
//! Fields are named so that `bpftool map dump` shows what each number means.

use crate::user_pod;

/// Counters of one forwarding entry (spec §6.3 `MIB_IPMCAST_MFE_STATS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryStats {
    /// Packets forwarded (`ulInPkts`).
    pub pkts: u64,
    /// Bytes forwarded (`ulInOctets`), counting the IPv4 packet.
    pub bytes: u64,
    /// Packets that arrived on another interface than the entry's (`ulPktsDifferentIf`).
    pub wrong_if: u64,
    /// Packets dropped because their TTL was 1 or 0 (`ulInHdrErrors`).
    pub ttl_expired: u64,
    /// Packets dropped by a negative entry (`ulNegativeMfe`).
    pub negative: u64,
    /// Packets dropped because the entry had nowhere to send them: its outgoing set was
    /// missing, or held only the interface they arrived on.
    pub no_oif_set: u64,
    /// Packets of the flow that arrived while its entry was still a placeholder, being
    /// resolved, and were dropped (`ulUninitMfe`). The placeholder counts them
    /// ([`crate::fwd::FwdEntry::pending_pkts`]); the daemon writes that count here when it
    /// installs the entry in the placeholder's place. The XDP programs never write it.
    pub uninit: u64,
}
const _: () = assert!(core::mem::size_of::<EntryStats>() == 56);

/// Counters of one outgoing interface of one forwarding entry (spec §6.3
/// `MIB_IPMCAST_OIF_STATS`). A copy counts here when the XDP program hands it to the kernel
/// for that interface: after the TTL threshold and the MTU check, before the driver's
/// transmit. So `packets` is what left unless the driver dropped it (a full veth or NIC ring,
/// counted by the device, not here); a copy longer than the MTU is not counted at all.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OifStats {
    /// Copies handed to the kernel for this interface (`ulOutPackets`).
    pub packets: u64,
    /// Bytes of those copies, counting the IPv4 packet.
    pub bytes: u64,
    /// Copies not made because their TTL was below the interface's threshold (`ulTtlTooLow`).
    pub ttl_too_low: u64,
}
const _: () = assert!(core::mem::size_of::<OifStats>() == 24);

/// Counters of one interface, on both its receive and its send side.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfStats {
    /// IGMP membership queries received (any version).
    pub igmp_query: u64,
    /// IGMPv1 membership reports received.
    pub igmp_v1_report: u64,
    /// IGMPv2 membership reports received.
    pub igmp_v2_report: u64,
    /// IGMPv2 leave-group messages received.
    pub igmp_v2_leave: u64,
    /// IGMPv3 membership reports received.
    pub igmp_v3_report: u64,
    /// IGMP messages of another type (passed to the host, not acted on).
    pub igmp_other: u64,
    /// Frames that could not be parsed (cut short, bad IHL, …); passed to the host.
    pub malformed: u64,
    /// IGMP messages longer than an event holds; delivered up to the bound.
    pub truncated: u64,
    /// Events lost because the ring buffer was full.
    pub ring_full: u64,
    /// Data packets that matched no entry (no-cache upcall raised or pending).
    pub no_entry: u64,
    /// Copies sent out of this interface.
    pub tx_pkts: u64,
    /// Bytes of the copies sent out of this interface.
    pub tx_bytes: u64,
    /// Copies not sent because their TTL was below the interface's threshold.
    pub ttl_too_low: u64,
    /// VLAN-tagged frames (802.1Q or 802.1ad, priority tags too), passed to the host untouched:
    /// they belong to the VLAN's interface, not to the untagged link mgm manages.
    pub vlan_tagged: u64,
    /// IGMP messages over the interface's admission rate: passed to the host, not to the
    /// daemon.
    pub igmp_limited: u64,
    /// Data packets that matched no entry over the interface's upcall budget: dropped with
    /// no placeholder and no upcall.
    pub upcall_limited: u64,
}
const _: () = assert!(core::mem::size_of::<IfStats>() == 128);

/// Adds `other` field by field: the daemon sums per-CPU copies with it.
macro_rules! impl_accumulate {
    ($ty:ident { $($f:ident),+ $(,)? }) => {
        impl $ty {
            pub fn accumulate(&mut self, other: &$ty) {
                $(self.$f += other.$f;)+
            }
        }
    };
}

impl_accumulate!(EntryStats {
    pkts,
    bytes,
    wrong_if,
    ttl_expired,
    negative,
    no_oif_set,
    uninit
});
impl_accumulate!(OifStats {
    packets,
    bytes,
    ttl_too_low
});
impl_accumulate!(IfStats {
    igmp_query,
    igmp_v1_report,
    igmp_v2_report,
    igmp_v2_leave,
    igmp_v3_report,
    igmp_other,
    malformed,
    truncated,
    ring_full,
    no_entry,
    tx_pkts,
    tx_bytes,
    ttl_too_low,
    vlan_tagged,
    igmp_limited,
    upcall_limited
});

user_pod!(EntryStats, IfStats, OifStats);
