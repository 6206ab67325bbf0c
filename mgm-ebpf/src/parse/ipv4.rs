//! IPv4 header, options included (IGMP carries Router Alert, so IHL is 6).

use super::cursor::Cursor;

pub const IPPROTO_IGMP: u8 = 2;

/// Option types (RFC 791): end of the list, no-operation, and Router Alert (RFC 2113).
const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_ROUTER_ALERT: u8 = 148;
/// The options of the longest header (60 bytes) less its fixed part.
const OPTIONS_MAX: usize = 40;

#[repr(C)]
pub struct Ipv4Hdr {
    pub ver_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub saddr: u32,
    pub daddr: u32,
}

pub struct Ipv4 {
    pub hdr: *mut Ipv4Hdr,
    /// Total length from the header, host byte order.
    pub tot_len: usize,
    /// Header length in bytes, options included.
    pub hdr_len: usize,
}

/// Parses the header and skips its options, leaving the cursor on the payload.
/// `None` if the header is cut short or inconsistent.
#[inline(always)]
pub fn parse(cur: &mut Cursor) -> Option<Ipv4> {
    let hdr: *mut Ipv4Hdr = cur.take()?;
    // SAFETY: `take` checked that the fixed header lies inside the frame.
    let (ver_ihl, tot_len) = unsafe { ((*hdr).ver_ihl, u16::from_be((*hdr).tot_len) as usize) };
    let hdr_len = ((ver_ihl & 0x0f) as usize) * 4;
    // A frame shorter than its IPv4 total length was cut somewhere: not ours to forward.
    if ver_ihl >> 4 != 4 || hdr_len < 20 || tot_len < hdr_len || hdr as usize + tot_len > cur.end {
        return None;
    }
    cur.skip(hdr_len - 20)?;
    Some(Ipv4 {
        hdr,
        tot_len,
        hdr_len,
    })
}

/// Whether the options of `ip` (whose frame ends at `end`) hold Router Alert with its length
/// of 4. Walks the list as RFC 791 lays it out; a malformed list ends the walk with `false`.
#[inline(always)]
pub fn has_router_alert(ip: &Ipv4, end: usize) -> bool {
    let options = ip.hdr as usize + 20;
    let len = ip.hdr_len - 20;
    // Read opaquely: the compiler would prove the first bound below from `parse`'s total
    // length check and drop it, which the verifier cannot follow.
    // SAFETY: a read of a local.
    let end = unsafe { core::ptr::read_volatile(&end) };
    let mut at = 0;
    // Each turn moves on by a byte at least, so the walk ends within OPTIONS_MAX turns. No
    // turn counter: the verifier would tell every turn apart by it, where without one it
    // prunes a walk that reaches an offset another walk already checked from.
    while at < len && at < OPTIONS_MAX {
        let p = options + at;
        if p + 2 > end {
            return false;
        }
        // SAFETY: both bytes lie inside the frame, checked against `end` just above.
        let (kind, olen) = unsafe { (*(p as *const u8), *((p + 1) as *const u8)) };
        match kind {
            OPT_END => return false,
            OPT_NOP => at += 1,
            _ if kind == OPT_ROUTER_ALERT && olen == 4 => return at + 4 <= len,
            _ if olen < 2 => return false,
            _ => at += olen as usize,
        }
    }
    false
}

/// First octet 224..=239.
#[inline(always)]
pub fn is_multicast(addr_be: u32) -> bool {
    (u32::from_be(addr_be) >> 28) == 0xe
}

/// 224.0.0.0/24: link-local control traffic (OSPF, VRRP, mDNS, …) is never routed.
#[inline(always)]
pub fn is_link_local_multicast(addr_be: u32) -> bool {
    (u32::from_be(addr_be) >> 8) == 0x00e0_0000
}
