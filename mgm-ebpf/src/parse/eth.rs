//! Ethernet with up to two VLAN tags (802.1Q inside 802.1ad, or two 802.1Q).

use super::cursor::Cursor;

pub const ETH_P_IP: u16 = 0x0800;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
/// Tags read before giving up; a third tag is passed to the host as not ours.
const MAX_VLAN_TAGS: usize = 2;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: u16,
}

#[repr(C)]
struct VlanTag {
    tci: u16,
    proto: u16,
}

/// What the rest of the program needs from layer 2.
pub struct Eth {
    pub hdr: *mut EthHdr,
    /// Outer and inner VLAN ids, 0 where absent.
    pub vlan: [u16; 2],
    /// EtherType after the tags, host byte order.
    pub proto: u16,
}

/// Copies a MAC address between two places the compiler cannot prove apart (packet and map
/// value, packet and ring buffer). A plain assignment becomes a call to a byte-wise `memmove`
/// subprogram; six separate stores are a third of its cost on the per-copy path.
///
/// # Safety
/// `dst` and `src` must each be valid for six bytes.
#[inline(always)]
pub unsafe fn copy_mac(dst: *mut [u8; 6], src: *const [u8; 6]) {
    let (d, s) = (dst as *mut u8, src as *const u8);
    // SAFETY: both are valid for six bytes, by the caller.
    unsafe {
        for i in 0..6 {
            d.add(i).write_volatile(s.add(i).read_volatile());
        }
    }
}

#[inline(always)]
pub fn parse(cur: &mut Cursor) -> Option<Eth> {
    let hdr: *mut EthHdr = cur.take()?;
    // SAFETY: `take` checked that the header lies inside the frame.
    let mut proto = u16::from_be(unsafe { (*hdr).proto });
    let mut vlan = [0u16; 2];
    for slot in vlan.iter_mut().take(MAX_VLAN_TAGS) {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        let tag: *mut VlanTag = cur.take()?;
        // SAFETY: bounds checked by `take`.
        let (tci, next) = unsafe { ((*tag).tci, (*tag).proto) };
        *slot = u16::from_be(tci) & 0x0fff;
        proto = u16::from_be(next);
    }
    Some(Eth { hdr, vlan, proto })
}
