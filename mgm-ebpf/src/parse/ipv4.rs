//! IPv4 header, options included (IGMP carries Router Alert, so IHL is 6).

use super::cursor::Cursor;

pub const IPPROTO_IGMP: u8 = 2;

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
