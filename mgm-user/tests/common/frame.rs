//! Ethernet/IPv4 frames for feeding the XDP program, shared by the test-run tests and the
//! per-packet benchmark.
#![allow(dead_code, reason = "each includer uses a different part")]

use std::net::Ipv4Addr;

use mgm_user::igmp::{codec::encode, IgmpMessage};

/// The lab receiver address IGMP frames come from.
pub const HOST: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);

/// IPv4 Router Alert option (RFC 2113), as IGMP carries it.
pub const ROUTER_ALERT: [u8; 4] = [0x94, 0x04, 0x00, 0x00];

/// A frame to feed the program.
#[derive(Clone)]
pub struct Frame {
    pub vlans: Vec<(u16, u16)>,
    pub options: Vec<u8>,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub proto: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn udp(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8) -> Frame {
        let mut payload = vec![0x13, 0x88, 0x13, 0x88, 0, 40, 0, 0];
        payload.resize(40, 0xab);
        Frame {
            vlans: Vec::new(),
            options: Vec::new(),
            src,
            dst,
            ttl,
            proto: 17,
            payload,
        }
    }

    pub fn igmp(msg: &IgmpMessage) -> Frame {
        Frame {
            vlans: Vec::new(),
            options: ROUTER_ALERT.to_vec(),
            src: HOST,
            dst: Ipv4Addr::new(224, 0, 0, 22),
            ttl: 1,
            proto: 2,
            payload: encode(msg),
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let g = self.dst.octets();
        let mut f = vec![0x01, 0x00, 0x5e, g[1] & 0x7f, g[2], g[3], 2, 0, 0, 0, 0, 1];
        for (tpid, vid) in &self.vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let ihl = 5 + self.options.len() / 4;
        let tot_len = (ihl * 4 + self.payload.len()) as u16;
        let mut ip = vec![0x40 | ihl as u8, 0];
        ip.extend_from_slice(&tot_len.to_be_bytes());
        ip.extend_from_slice(&[0x12, 0x34, 0, 0, self.ttl, self.proto, 0, 0]);
        ip.extend_from_slice(&self.src.octets());
        ip.extend_from_slice(&self.dst.octets());
        ip.extend_from_slice(&self.options);
        let sum = checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&self.payload);
        f
    }
}

pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The IPv4 header of an untagged frame is valid: its checksum sums to zero.
pub fn ipv4_header_ok(frame: &[u8]) -> bool {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    checksum(&frame[14..14 + ihl]) == 0
}
