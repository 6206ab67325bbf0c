//! Ethernet. VLAN-tagged frames are recognised, not read into: they belong to the VLAN's own
//! interface, so the caller passes them to the host stack.

use super::cursor::Cursor;

pub const ETH_P_IP: u16 = 0x0800;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
/// Ethernet header length; with tagged frames passed, the IPv4 header always starts here.
pub const ETH_HLEN: usize = 14;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: u16,
}

/// What the rest of the program needs from layer 2.
pub struct Eth {
    pub hdr: *mut EthHdr,
    /// EtherType, host byte order.
    pub proto: u16,
}

impl Eth {
    /// An 802.1Q or 802.1ad tag follows the addresses (priority tags, VLAN 0, included).
    #[inline(always)]
    pub fn is_vlan_tagged(&self) -> bool {
        self.proto == ETH_P_8021Q || self.proto == ETH_P_8021AD
    }
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
    let proto = u16::from_be(unsafe { (*hdr).proto });
    Some(Eth { hdr, proto })
}
