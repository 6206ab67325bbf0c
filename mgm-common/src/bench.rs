//! The benchmark programs' shared layout (`mgm-bench` object, `cargo xtask bench`): never part
//! of `mgm` itself.

use crate::user_pod;

/// `ARRAY` with one [`GenTemplate`]: what the traffic generator writes into every frame.
pub const GEN_TEMPLATE: &str = "BENCH_GEN_TEMPLATE";
/// `PERCPU_ARRAY` with one `u64`: IPv4 UDP frames a receiver counted (and dropped).
pub const RX_COUNT: &str = "BENCH_RX_COUNT";
/// `DEVMAP_HASH` ifindex → ifindex: the outgoing interfaces of the raw broadcast redirect.
pub const OIFS: &str = "BENCH_OIFS";

/// `ARRAY` egress ifindex → source MAC (6 bytes, 2 of padding), for `bench_set_mac`.
pub const MACS: &str = "BENCH_MACS";
/// Entries of [`MACS`]: ifindexes in the bench's router namespace stay small.
pub const MACS_SIZE: u32 = 1024;

/// `ARRAY` of `u32` groups (network byte order) for the generator to cycle through
/// ([`GenTemplate::groups`]).
pub const GEN_GROUPS: &str = "BENCH_GEN_GROUPS";
/// Entries of [`GEN_GROUPS`].
pub const GEN_GROUPS_SIZE: u32 = 1 << 17;

/// `PROG_ARRAY`, one slot: the forwarder the router-side feeder tail-calls.
pub const FEED_NEXT: &str = "BENCH_FEED_NEXT";

/// Ethernet + IPv4 (no options) + UDP.
pub const GEN_HEADER_LEN: usize = 14 + 20 + 8;
/// Offset of the IPv4 header checksum in the frame.
pub const GEN_IP_CSUM_AT: usize = 14 + 10;
/// Offset of the IPv4 destination (the group) in the frame.
pub const GEN_GROUP_AT: usize = 14 + 16;

/// The header the generator program stores at the start of every frame before `XDP_TX`.
/// Live-frames test runs recycle pages without restoring them, and forwarders rewrite TTL,
/// checksum and MACs in place, so every frame gets the whole header again.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenTemplate {
    /// The frame's first [`GEN_HEADER_LEN`] bytes.
    pub header: [u8; GEN_HEADER_LEN],
    pub _pad: [u8; 2],
    /// With more than 0, frame `n` goes to group `n % groups` of [`GEN_GROUPS`] (checksum
    /// recomputed), to reach that many forwarding entries once each.
    pub groups: u32,
    /// Frames written so far; the program's own counter for `groups`.
    pub seq: u32,
}
const _: () = assert!(core::mem::size_of::<GenTemplate>() == 52);

user_pod!(GenTemplate);

/// `HASH` group (IPv4 destination, network byte order) → [`TcGroup`]: where `bench_tc_clone`
/// sends a group's copies.
pub const TC_GROUPS: &str = "BENCH_TC_GROUPS";
/// Entries of [`TC_GROUPS`]: the bench forwards one group.
pub const TC_GROUPS_SIZE: u32 = 16;
/// Outgoing interfaces of one [`TcGroup`]: the lab's largest fan-out.
pub const TC_MAX_OIFS: usize = 8;

/// One outgoing interface of `bench_tc_clone`: where a copy goes and the source MAC it gets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcOif {
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<TcOif>() == 12);

/// A group's outgoing interfaces for `bench_tc_clone`, up to the first with ifindex 0 (no
/// interface has it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcGroup {
    pub oifs: [TcOif; TC_MAX_OIFS],
}
const _: () = assert!(core::mem::size_of::<TcGroup>() == 12 * TC_MAX_OIFS);

user_pod!(TcOif, TcGroup);
