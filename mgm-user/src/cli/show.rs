//! `mgm show` without a daemon: the forwarding entries and interfaces of the pinned maps, as
//! JSON here and as tables by [`crate::control::render::pinned`], beside the daemon's views.

use std::{ffi::CStr, net::Ipv4Addr};

use mgm_common::fwd::{FWD_NEGATIVE, FWD_PENDING};
use serde_json::json;

use crate::dataplane::{inspect::PinnedState, netdev::mac_string};

/// Renders the state as JSON: addresses as dotted quads ("*" for a wildcard), interfaces by
/// name and index. This shape is the interface scripts rely on; it does not follow map layouts.
pub fn render_json(state: &PinnedState) -> String {
    let entries: Vec<serde_json::Value> = state
        .entries
        .iter()
        .map(|e| {
            let s = &e.stats;
            json!({
                "source": addr(e.source),
                "group": addr(e.group),
                "iif": ifname(e.entry.iif),
                "iif_index": e.entry.iif,
                "oifs": e.oifs.iter().map(|i| ifname(*i)).collect::<Vec<_>>(),
                "oif_indexes": e.oifs,
                "state": entry_state(e.entry.flags),
                "stats": {
                    "pkts": s.pkts, "bytes": s.bytes, "wrong_if": s.wrong_if,
                    "ttl_expired": s.ttl_expired, "negative": s.negative,
                    "no_oif_set": s.no_oif_set, "uninit": s.uninit,
                    "total_out_packets": e.total_out_packets(),
                },
                "oif_stats": e.oif_stats.iter().map(|(i, o)| json!({
                    "interface": ifname(*i), "ifindex": i, "packets": o.packets,
                    "bytes": o.bytes, "ttl_too_low": o.ttl_too_low,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let interfaces: Vec<serde_json::Value> = state
        .interfaces
        .iter()
        .map(|i| {
            let s = &i.stats;
            json!({
                "name": ifname(i.ifindex),
                "ifindex": i.ifindex,
                "mac": mac_string(&i.config.mac),
                "mtu": i.config.mtu,
                "ttl_threshold": i.config.ttl_threshold,
                "stats": {
                    "igmp_query": s.igmp_query, "igmp_v1_report": s.igmp_v1_report,
                    "igmp_v2_report": s.igmp_v2_report, "igmp_v2_leave": s.igmp_v2_leave,
                    "igmp_v3_report": s.igmp_v3_report, "igmp_other": s.igmp_other,
                    "malformed": s.malformed, "truncated": s.truncated,
                    "ring_full": s.ring_full, "no_entry": s.no_entry,
                    "tx_pkts": s.tx_pkts, "tx_bytes": s.tx_bytes,
                    "ttl_too_low": s.ttl_too_low, "vlan_tagged": s.vlan_tagged,
                    "igmp_limited": s.igmp_limited, "upcall_limited": s.upcall_limited,
                },
            })
        })
        .collect();
    let u = &state.uncounted;
    let doc = json!({
        "layout_version": state.layout_version,
        "entries": entries,
        "interfaces": interfaces,
        "uncounted_copies": {
            "packets": u.packets, "bytes": u.bytes, "ttl_too_low": u.ttl_too_low,
        },
    });
    format!("{doc:#}\n")
}

pub(crate) fn addr(a: Ipv4Addr) -> String {
    if a == Ipv4Addr::UNSPECIFIED {
        "*".to_owned()
    } else {
        a.to_string()
    }
}

pub(crate) fn entry_state(flags: u32) -> &'static str {
    if flags & FWD_PENDING != 0 {
        "pending"
    } else if flags & FWD_NEGATIVE != 0 {
        "negative"
    } else {
        "forward"
    }
}

/// The interface's name in this namespace, or its index.
pub(crate) fn ifname(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return format!("#{ifindex}");
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}
