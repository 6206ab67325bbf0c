//! The work of one copy: TTL threshold, source MAC, per-output counters. Copies of a set of
//! several interfaces get it from `mgm_egress`, which the devmaps run once per copy, except
//! the copy to the set's prepared member ([`prepared_copy`]), whose devmap entry runs no
//! program: the ingress program does its work before the broadcast. The one copy of a
//! one-interface set gets it in the ingress program too ([`one_copy`]), which then redirects to
//! the interface directly. The ingress program already decremented the TTL, so every copy
//! shares that work.
//!
//! Each copy counts twice: on its interface (`IfStats`, an array slot) and on its entry's
//! outgoing interface (`OifStats`, a per-CPU hash lookup). `mgm_egress` learns the entry from
//! the counter slot the ingress program put in front of the frame as XDP metadata ([`tag`]),
//! which the broadcast clones with each copy; where the kernel drops metadata (generic XDP),
//! it looks the entry up again.

use core::ptr::addr_of_mut;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_check_mtu, bpf_redirect, bpf_xdp_adjust_meta},
    programs::XdpContext,
};
use mgm_common::{
    counters::{IfStats, OifStats},
    fwd::IfConfig,
};

use crate::{
    counters::{if_stats, oif_stats},
    forward,
    maps::{if_config, MGM_SET_MEMBERS},
    parse::{
        cursor::Cursor,
        eth::{self, EthHdr, ETH_HLEN},
        ipv4,
    },
};

/// The slack the kernel's redirect allows over MTU + Ethernet header (one VLAN tag).
const VLAN_HLEN: i32 = 4;

/// Bytes of metadata [`tag`] puts in front of a frame: the entry's counter slot.
const SLOT_META_LEN: usize = 4;

/// Puts the entry's counter `slot` in front of the frame as XDP metadata, for `mgm_egress` to
/// count each copy on its entry without looking the entry up again.
#[inline(always)]
pub fn tag(ctx: &XdpContext, slot: u32) {
    // SAFETY: `ctx` is this program's context.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -(SLOT_META_LEN as i32)) } != 0 {
        return;
    }
    let meta = ctx.metadata();
    if meta + SLOT_META_LEN > ctx.metadata_end() {
        return;
    }
    // SAFETY: the check above keeps the write inside the metadata just made.
    unsafe { (meta as *mut u32).write_unaligned(slot) };
}

/// The counter slot [`tag`] left in front of the copy; 0 (no entry) without one.
#[inline(always)]
fn tagged_slot(ctx: &XdpContext) -> u32 {
    let meta = ctx.metadata();
    if meta + SLOT_META_LEN > ctx.metadata_end() {
        return 0;
    }
    // SAFETY: the check above keeps the read inside the metadata.
    unsafe { (meta as *const u32).read_unaligned() }
}

/// The counter slot of the entry a copy without a tag belongs to, found as the ingress
/// program found it: generic XDP (`skb` mode) keeps no metadata across the redirect. Slower
/// (up to three hash lookups), but only there. A subprogram, so the verifier walks it once.
#[inline(never)]
fn untagged_slot(saddr: u32, daddr: u32) -> u32 {
    // SAFETY: a map value pointer, read once while valid.
    forward::lookup(saddr, daddr).map_or(0, |e| unsafe { (*e).stats_slot })
}

/// `mgm_egress`: the MTU needs no check here, the devmap drops copies larger than the
/// device's MTU before this runs. `None` drops the copy: the ingress program only redirects
/// frames it parsed, so a copy we cannot read again is not ours to send.
#[inline(always)]
pub fn egress(ctx: &XdpContext) -> Option<u32> {
    // SAFETY: the devmap program context carries the egress ifindex.
    let ifindex = unsafe { (*ctx.ctx).egress_ifindex };
    let cfg = if_config(ifindex)?;
    let tagged = tagged_slot(ctx);
    let mut cur = Cursor::new(ctx);
    let eth = eth::parse(&mut cur)?;
    let ip = ipv4::parse(&mut cur)?;
    // SAFETY: the parser bounds-checked the header.
    let (ttl, saddr, daddr) = unsafe { ((*ip.hdr).ttl, (*ip.hdr).saddr, (*ip.hdr).daddr) };
    let slot = if tagged != 0 {
        tagged
    } else {
        untagged_slot(saddr, daddr)
    };
    let stats = admit(cfg, ttl, oif_stats(slot, ifindex))?;
    stamp(cfg, stats, eth.hdr, ip.tot_len);
    Some(xdp_action::XDP_PASS)
}

/// The one copy of a one-interface set, out of `oif`, by a plain redirect. `ttl` is the
/// decremented TTL, `slot` the entry's counter slot. `None`: `oif` is not an interface mgm
/// manages.
#[inline(always)]
pub fn one_copy(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    ttl: u8,
    tot_len: usize,
    oif: u32,
    slot: u32,
) -> Option<u32> {
    let cfg = if_config(oif)?;
    if !fits(ctx, cfg, oif) {
        return Some(xdp_action::XDP_DROP);
    }
    let Some(stats) = admit(cfg, ttl, oif_stats(slot, oif)) else {
        return Some(xdp_action::XDP_DROP);
    };
    stamp(cfg, stats, eth, tot_len);
    // SAFETY: no preconditions; an interface that vanished fails the redirect in the kernel.
    Some(unsafe { bpf_redirect(oif, 0) } as u32)
}

/// The copy to a set's prepared member `oif`, made before the broadcast clones the frame (the
/// other members' `mgm_egress` rewrites the MAC written here). `ttl` is the decremented TTL,
/// `slot` the entry's counter slot. `Some(false)`: the packet is below `oif`'s TTL threshold,
/// and every interface has the same threshold, so no copy may leave. `None`: `oif` is not an
/// interface mgm manages.
#[inline(always)]
pub fn prepared_copy(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    ttl: u8,
    tot_len: usize,
    oif: u32,
    slot: u32,
) -> Option<bool> {
    let cfg = if_config(oif)?;
    let Some(stats) = admit(cfg, ttl, oif_stats(slot, oif)) else {
        return Some(false);
    };
    // The devmap skips a member the copy is too long for: not sent, so not counted.
    if fits(ctx, cfg, oif) {
        stamp(cfg, stats, eth, tot_len);
    }
    Some(true)
}

/// A packet below the TTL threshold of a set's prepared member, whose threshold is the set's
/// lowest (every interface has the same today): no copy leaves. Each other member counts it,
/// as its `mgm_egress` would have; the prepared member counted it already, and the incoming
/// interface gets no copy anyway. `ttl` is the decremented TTL, `slot` the entry's counter
/// slot.
#[inline(never)]
pub fn below_threshold(set: u32, ttl: u8, prepared: u32, ingress: u32, slot: u32) {
    let Some(members) = MGM_SET_MEMBERS.get(set) else {
        return;
    };
    for &oif in members.ifindex.iter() {
        if oif == 0 {
            break;
        }
        if oif != prepared && oif != ingress {
            count_ttl_too_low(oif, ttl, slot);
        }
    }
}

/// `admit` for a copy that is not sent, for its count. A subprogram, so the verifier walks its
/// branches once, not in each of the loop's 64 steps (110k instructions inlined).
#[inline(never)]
fn count_ttl_too_low(oif: u32, ttl: u8, slot: u32) {
    if let Some(cfg) = if_config(oif) {
        let _ = admit(cfg, ttl, oif_stats(slot, oif));
    }
}

/// Whether the frame fits `oif`'s MTU as the kernel's redirect and devmap judge it: MTU +
/// Ethernet header + one VLAN tag. A frame that fits the MTU the daemon recorded needs no
/// question (the kernel's costs a device lookup, a third of the one-copy path); a longer one
/// asks the kernel, whose MTU may have grown since.
#[inline(always)]
fn fits(ctx: &XdpContext, cfg: &IfConfig, oif: u32) -> bool {
    if ctx.data_end() - ctx.data() <= usize::from(cfg.mtu) + ETH_HLEN + VLAN_HLEN as usize {
        return true;
    }
    let mut mtu = 0u32;
    // SAFETY: `ctx` is this program's context and `mtu` a live stack slot.
    unsafe { bpf_check_mtu(ctx.ctx.cast(), oif, &mut mtu, -VLAN_HLEN, 0) == 0 }
}

/// The counters a copy counts on: its interface's and, where the daemon made them, its
/// entry's for that interface.
struct CopyStats {
    port: &'static mut IfStats,
    flow: Option<&'static mut OifStats>,
}

/// The counters of a copy that may leave `cfg`'s interface with TTL `ttl`; `None`: it may
/// not, below the interface's TTL threshold (counted there and on `flow`, the entry's
/// counters of the interface), or the counter slot is missing.
#[inline(always)]
fn admit(cfg: &IfConfig, ttl: u8, flow: Option<&'static mut OifStats>) -> Option<CopyStats> {
    let port = if_stats(cfg.stats_slot)?;
    if ttl < cfg.ttl_threshold {
        port.ttl_too_low += 1;
        if let Some(f) = flow {
            f.ttl_too_low += 1;
        }
        return None;
    }
    Some(CopyStats { port, flow })
}

/// Writes `cfg`'s source MAC into the copy and counts it sent. `eth` must be the
/// bounds-checked Ethernet header of the copy.
#[inline(always)]
fn stamp(cfg: &IfConfig, stats: CopyStats, eth: *mut EthHdr, tot_len: usize) {
    // SAFETY: `eth` was bounds-checked by the parser; `cfg` is a live map value.
    unsafe { eth::copy_mac(addr_of_mut!((*eth).src), &cfg.mac) };
    stats.port.tx_pkts += 1;
    stats.port.tx_bytes += tot_len as u64;
    if let Some(f) = stats.flow {
        f.packets += 1;
        f.bytes += tot_len as u64;
    }
}
