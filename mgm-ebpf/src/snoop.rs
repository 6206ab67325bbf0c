//! IGMP snooping: copy every IGMP message into the ring buffer, count it by type, and let the
//! caller pass it to the host. Parsing group records and verifying the checksum is left to the
//! daemon, which has no loop bounds to fit under; the program only bounds the copy.

use core::{
    mem::MaybeUninit,
    ptr::{addr_of, addr_of_mut},
};

use aya_ebpf::{helpers::bpf_xdp_load_bytes, programs::XdpContext};
use aya_log_ebpf::debug;
use mgm_common::{
    counters::IfStats,
    event::{IgmpEvent, EVENT_IGMP, IGMP_FLAG_ROUTER_ALERT, IGMP_PAYLOAD_MAX},
};

use crate::{
    counters::if_stats,
    maps::MGM_EVENTS,
    parse::{
        cursor::Cursor,
        eth::{copy_mac, Eth},
        ipv4::{self, Ipv4},
    },
};

const IGMP_QUERY: u8 = 0x11;
const IGMP_V1_REPORT: u8 = 0x12;
const IGMP_V2_REPORT: u8 = 0x16;
const IGMP_V2_LEAVE: u8 = 0x17;
const IGMP_V3_REPORT: u8 = 0x22;
/// Shortest IGMP message (v1/v2: type, code, checksum, group).
const IGMP_MIN_LEN: usize = 8;

/// Snoops the IGMP message under `cur`, which sits on the IGMP header.
#[inline(always)]
pub fn igmp(ctx: &XdpContext, cur: &Cursor, eth: &Eth, ip: &Ipv4, ifindex: u32, slot: u32) {
    let Some(stats) = if_stats(slot) else {
        return;
    };
    // Read the type through a pointer check first: the verifier follows pointer comparisons,
    // not the length arithmetic below, which the compiler would otherwise reuse for it.
    let mut peek = Cursor { ..*cur };
    let Some(head) = peek.take::<[u8; IGMP_MIN_LEN]>() else {
        stats.malformed += 1;
        return;
    };
    let igmp_len = ip.tot_len - ip.hdr_len;
    if igmp_len < IGMP_MIN_LEN || cur.remaining() < igmp_len {
        stats.malformed += 1;
        return;
    }
    // SAFETY: `take` checked the bytes lie inside the frame.
    let head = unsafe { *head };
    count_type(stats, head[0]);
    // A report costs the daemon by its group records, so it is charged by them.
    let cost = match head[0] {
        IGMP_V3_REPORT => u16::from_be_bytes([head[6], head[7]]).max(1),
        _ => 1,
    };
    if !crate::admit::igmp(slot, cost) {
        stats.igmp_limited += 1;
        return;
    }

    let copied = if igmp_len > IGMP_PAYLOAD_MAX {
        stats.truncated += 1;
        IGMP_PAYLOAD_MAX
    } else {
        igmp_len
    };
    // Hosts send IGMP with TTL 1 and Router Alert; the daemon decides what a report without
    // them is worth.
    let flags = if ipv4::has_router_alert(ip, cur.end) {
        IGMP_FLAG_ROUTER_ALERT
    } else {
        0
    };
    let Some(mut entry) = MGM_EVENTS.reserve_untyped::<IgmpEvent>(0) else {
        stats.ring_full += 1;
        debug!(
            ctx,
            "ring buffer full: IGMP message on ifindex {} lost", ifindex
        );
        return;
    };
    let ev: &mut MaybeUninit<IgmpEvent> = &mut entry;
    let ev = ev.as_mut_ptr();
    // SAFETY: `ev` points at a reserved ring-buffer record of the right size; fields are
    // written through raw pointers because the record is uninitialised.
    let loaded = unsafe {
        addr_of_mut!((*ev).kind).write(EVENT_IGMP);
        addr_of_mut!((*ev).ifindex).write(ifindex);
        addr_of_mut!((*ev).src_ip).write((*ip.hdr).saddr);
        addr_of_mut!((*ev).dst_ip).write((*ip.hdr).daddr);
        copy_mac(addr_of_mut!((*ev).src_mac), addr_of!((*eth.hdr).src));
        addr_of_mut!((*ev).igmp_len).write(igmp_len as u16);
        addr_of_mut!((*ev).copied).write(copied as u16);
        addr_of_mut!((*ev).ttl).write((*ip.hdr).ttl);
        addr_of_mut!((*ev).flags).write(flags);
        addr_of_mut!((*ev)._pad).write([0; 2]);
        // The verifier needs the length proven in [1, IGMP_PAYLOAD_MAX] right here.
        let len = (copied as u32) & 0x7ff;
        if len == 0 || len as usize > IGMP_PAYLOAD_MAX {
            -1
        } else {
            bpf_xdp_load_bytes(
                ctx.ctx,
                cur.offset() as u32,
                addr_of_mut!((*ev).payload).cast(),
                len,
            )
        }
    };
    if loaded < 0 {
        stats.malformed += 1;
        entry.discard(0);
    } else {
        entry.submit(0);
    }
}

#[inline(always)]
fn count_type(stats: &mut IfStats, kind: u8) {
    let counter = match kind {
        IGMP_QUERY => &mut stats.igmp_query,
        IGMP_V1_REPORT => &mut stats.igmp_v1_report,
        IGMP_V2_REPORT => &mut stats.igmp_v2_report,
        IGMP_V2_LEAVE => &mut stats.igmp_v2_leave,
        IGMP_V3_REPORT => &mut stats.igmp_v3_report,
        _ => &mut stats.igmp_other,
    };
    *counter += 1;
}
