//! `mgm show`: the forwarding entries and interfaces of a running daemon, from its pinned maps.

use std::{ffi::CStr, net::Ipv4Addr};

use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use mgm_common::fwd::{FWD_NEGATIVE, FWD_PENDING};

use crate::dataplane::inspect::PinnedState;

/// Renders the state as two tables.
pub fn render(state: &PinnedState) -> String {
    let mut entries = Table::new();
    entries.load_preset(UTF8_BORDERS_ONLY).set_header([
        "source", "group", "in", "out", "state", "packets", "bytes", "wrong if", "ttl drop",
    ]);
    for e in &state.entries {
        let source = if e.source == Ipv4Addr::UNSPECIFIED {
            "*".to_owned()
        } else {
            e.source.to_string()
        };
        let group = if e.group == Ipv4Addr::UNSPECIFIED {
            "*".to_owned()
        } else {
            e.group.to_string()
        };
        let state = if e.entry.flags & FWD_PENDING != 0 {
            "pending"
        } else if e.entry.flags & FWD_NEGATIVE != 0 {
            "negative"
        } else {
            "forward"
        };
        let out: Vec<String> = e.oifs.iter().map(|i| ifname(*i)).collect();
        entries.add_row([
            source,
            group,
            ifname(e.entry.iif),
            out.join(","),
            state.to_owned(),
            e.stats.pkts.to_string(),
            e.stats.bytes.to_string(),
            e.stats.wrong_if.to_string(),
            e.stats.ttl_expired.to_string(),
        ]);
    }
    let mut ifs = Table::new();
    ifs.load_preset(UTF8_BORDERS_ONLY).set_header([
        "interface",
        "IGMP in (q/v1/v2/leave/v3)",
        "malformed",
        "no entry",
        "sent",
        "sent bytes",
        "ttl/mtu drops",
        "ring full",
    ]);
    for i in &state.interfaces {
        let s = &i.stats;
        ifs.add_row([
            ifname(i.ifindex),
            format!(
                "{}/{}/{}/{}/{}",
                s.igmp_query, s.igmp_v1_report, s.igmp_v2_report, s.igmp_v2_leave, s.igmp_v3_report
            ),
            s.malformed.to_string(),
            s.no_entry.to_string(),
            s.tx_pkts.to_string(),
            s.tx_bytes.to_string(),
            format!("{}/{}", s.ttl_too_low, s.mtu_drop),
            s.ring_full.to_string(),
        ]);
    }
    format!(
        "forwarding entries ({}):\n{entries}\ninterfaces:\n{ifs}\n",
        state.entries.len()
    )
}

/// The interface's name in this namespace, or its index.
fn ifname(ifindex: u32) -> String {
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
