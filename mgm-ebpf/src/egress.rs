//! Runs once per copy, from the outgoing-set devmaps: per-output policy and counters. The
//! ingress program already decremented the TTL, so every copy shares that work. The MTU needs
//! no check here: the devmap drops copies larger than the device's MTU before this runs.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};

use crate::{
    counters::if_stats,
    maps::MGM_IFCFG,
    parse::{cursor::Cursor, eth, ipv4},
};

/// `None` drops the copy: the ingress program only redirects frames it parsed, so a copy we
/// cannot read again is not ours to send.
#[inline(always)]
pub fn egress(ctx: &XdpContext) -> Option<u32> {
    // SAFETY: the devmap program context carries the egress ifindex.
    let ifindex = unsafe { (*ctx.ctx).egress_ifindex };
    // SAFETY: read-only lookup of a plain value.
    let cfg = unsafe { MGM_IFCFG.get(ifindex) }?;
    let stats = if_stats(cfg.stats_slot)?;
    let mut cur = Cursor::new(ctx);
    let eth = eth::parse(&mut cur)?;
    let ip = ipv4::parse(&mut cur)?;
    // SAFETY: both headers were bounds-checked by the parsers.
    let ttl = unsafe { (*ip.hdr).ttl };
    if ttl < cfg.ttl_threshold {
        stats.ttl_too_low += 1;
        return Some(xdp_action::XDP_DROP);
    }
    // SAFETY: as above.
    unsafe { (*eth.hdr).src = cfg.mac };
    stats.tx_pkts += 1;
    stats.tx_bytes += ip.tot_len as u64;
    Some(xdp_action::XDP_PASS)
}
