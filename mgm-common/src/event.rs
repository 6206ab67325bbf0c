//! Records the XDP program writes to the ring buffer.
//!
//! Every record starts with a `u32` kind, so the reader can tell them apart before it looks
//! at the rest.

use crate::user_pod;

/// An IGMP message, as received ([`IgmpEvent`]).
pub const EVENT_IGMP: u32 = 1;
/// A data packet matched no forwarding entry ([`UpcallEvent`], spec §5.2).
pub const EVENT_NO_CACHE: u32 = 2;
/// A data packet arrived on another interface than its entry's ([`UpcallEvent`], spec §5.5).
pub const EVENT_WRONG_IF: u32 = 3;

/// Most IGMP bytes one event carries: a full 1500-byte IPv4 packet with a 24-byte header.
/// Longer messages (jumbo frames) are delivered up to this bound and counted as truncated.
pub const IGMP_PAYLOAD_MAX: usize = 1476;

/// [`IgmpEvent::flags`]: the IPv4 header carried the Router Alert option (RFC 2113: type 148,
/// length 4), as hosts and routers send IGMP (RFC 2236 §2, RFC 3376 §4).
pub const IGMP_FLAG_ROUTER_ALERT: u8 = 1;

/// An IGMP message and where it came from. The IGMP bytes are copied verbatim; the daemon
/// parses them and verifies the checksum, so malformed reports never reach the core.
///
/// `ttl` and `flags` took two bytes that were padding: a program from before them wrote 0
/// there, which reads as TTL 0 without Router Alert, so records keep their size and every
/// other field its place and the pinned layout version stays.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IgmpEvent {
    /// [`EVENT_IGMP`].
    pub kind: u32,
    /// Interface the message arrived on.
    pub ifindex: u32,
    /// IPv4 source and destination, network byte order.
    pub src_ip: u32,
    pub dst_ip: u32,
    pub src_mac: [u8; 6],
    /// IGMP length according to the IPv4 header (total length minus header length).
    pub igmp_len: u16,
    /// Bytes of `payload` that hold the message (`min(igmp_len, IGMP_PAYLOAD_MAX)`).
    pub copied: u16,
    /// The IPv4 TTL it arrived with, not decremented.
    pub ttl: u8,
    /// [`IGMP_FLAG_ROUTER_ALERT`] or 0.
    pub flags: u8,
    pub _pad: [u16; 2],
    pub payload: [u8; IGMP_PAYLOAD_MAX],
}
const _: () = assert!(core::mem::size_of::<IgmpEvent>() == 32 + IGMP_PAYLOAD_MAX);
const _: () = assert!(core::mem::offset_of!(IgmpEvent, ttl) == 26);
const _: () = assert!(core::mem::offset_of!(IgmpEvent, payload) == 32);

/// Packet bytes an upcall carries from the IPv4 header on: the longest IPv4 header (60 bytes)
/// and a UDP header, rounded up so the record stays 8-byte sized.
pub const UPCALL_HEADER_MAX: usize = 72;

/// A no-cache or wrong-interface upcall.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpcallEvent {
    /// [`EVENT_NO_CACHE`] or [`EVENT_WRONG_IF`].
    pub kind: u32,
    /// Interface the packet arrived on.
    pub ifindex: u32,
    /// Packet source and group, network byte order.
    pub source: u32,
    pub group: u32,
    /// For wrong-interface: the entry's incoming interface. Zero for no-cache.
    pub expected_iif: u32,
    /// Bytes of `header` that hold the packet: `min(frame from the IPv4 header, 72)`.
    pub header_len: u32,
    /// The packet's first bytes from the IPv4 header on, for the RPF and wrong-interface
    /// callbacks (spec §5.2, §5.5).
    pub header: [u8; UPCALL_HEADER_MAX],
}
const _: () = assert!(core::mem::size_of::<UpcallEvent>() == 24 + UPCALL_HEADER_MAX);

user_pod!(IgmpEvent, UpcallEvent);
