//! The work of one copy: TTL threshold, source MAC, per-output counters. Copies of a set of
//! several interfaces get it from `mgm_egress`, which the devmaps run once per copy; the one
//! copy of a one-interface set gets it in the ingress program ([`one_copy`]), which then
//! redirects to the interface directly. The ingress program already decremented the TTL, so
//! every copy shares that work.

use core::ptr::addr_of_mut;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_check_mtu, bpf_redirect},
    programs::XdpContext,
};
use mgm_common::fwd::IfConfig;

use crate::{
    counters::if_stats,
    maps::if_config,
    parse::{
        cursor::Cursor,
        eth::{self, EthHdr},
        ipv4,
    },
};

/// The slack the kernel's redirect allows over MTU + Ethernet header (one VLAN tag).
const VLAN_HLEN: i32 = 4;
const ETH_HLEN: usize = 14;

/// `mgm_egress`: the MTU needs no check here, the devmap drops copies larger than the
/// device's MTU before this runs. `None` drops the copy: the ingress program only redirects
/// frames it parsed, so a copy we cannot read again is not ours to send.
#[inline(always)]
pub fn egress(ctx: &XdpContext) -> Option<u32> {
    // SAFETY: the devmap program context carries the egress ifindex.
    let ifindex = unsafe { (*ctx.ctx).egress_ifindex };
    let cfg = if_config(ifindex)?;
    let mut cur = Cursor::new(ctx);
    let eth = eth::parse(&mut cur)?;
    let ip = ipv4::parse(&mut cur)?;
    // SAFETY: the parser bounds-checked the header.
    let ttl = unsafe { (*ip.hdr).ttl };
    Some(if prepare(cfg, eth.hdr, ttl, ip.tot_len) {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    })
}

/// The one copy of a one-interface set, out of `oif`, by a plain redirect. `ttl` is the
/// decremented TTL. `None`: `oif` is not an interface mgm manages.
#[inline(always)]
pub fn one_copy(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    ttl: u8,
    tot_len: usize,
    oif: u32,
) -> Option<u32> {
    let cfg = if_config(oif)?;
    // The redirect refuses a frame longer than MTU + Ethernet header + one VLAN tag, as the
    // devmap does for its copies. A frame that fits the MTU the daemon recorded needs no
    // question (the kernel's costs a device lookup, a third of this path); a longer one asks
    // the kernel, whose MTU may have grown since.
    if ctx.data_end() - ctx.data() > usize::from(cfg.mtu) + ETH_HLEN + VLAN_HLEN as usize {
        let mut mtu = 0u32;
        // SAFETY: `ctx` is this program's context and `mtu` a live stack slot.
        if unsafe { bpf_check_mtu(ctx.ctx.cast(), oif, &mut mtu, -VLAN_HLEN, 0) } != 0 {
            return Some(xdp_action::XDP_DROP);
        }
    }
    if !prepare(cfg, eth, ttl, tot_len) {
        return Some(xdp_action::XDP_DROP);
    }
    // SAFETY: no preconditions; an interface that vanished fails the redirect in the kernel.
    Some(unsafe { bpf_redirect(oif, 0) } as u32)
}

/// Checks and rewrites one copy for `cfg`'s interface and counts it there; `false`: the copy
/// is not sent. `eth` must be the bounds-checked Ethernet header of the copy.
#[inline(always)]
fn prepare(cfg: &IfConfig, eth: *mut EthHdr, ttl: u8, tot_len: usize) -> bool {
    let Some(stats) = if_stats(cfg.stats_slot) else {
        return false;
    };
    if ttl < cfg.ttl_threshold {
        stats.ttl_too_low += 1;
        return false;
    }
    // SAFETY: `eth` was bounds-checked by the parser; `cfg` is a live map value.
    unsafe { eth::copy_mac(addr_of_mut!((*eth).src), &cfg.mac) };
    stats.tx_pkts += 1;
    stats.tx_bytes += tot_len as u64;
    true
}
