//! The work of one copy: TTL threshold, source MAC, per-output counters. Copies of a set of
//! several interfaces get it from `mgm_egress`, which the devmaps run once per copy, except
//! the copy to the set's prepared member ([`prepared_copy`]), whose devmap entry runs no
//! program: the ingress program does its work before the broadcast. The one copy of a
//! one-interface set gets it in the ingress program too ([`one_copy`]), which then redirects to
//! the interface directly. The ingress program already decremented the TTL, so every copy
//! shares that work.
//!
//! Each copy counts twice: on its interface (`IfStats`, an array slot) and on its entry's
//! outgoing interface (`OifStats`, also an array slot: the entry's block starts at
//! `FwdEntry::oif_base`, one slot per member of its set in ascending ifindex order).
//! `mgm_egress` learns the block and the set from the XDP metadata the ingress program put in
//! front of the frame ([`tag`]), which the broadcast clones with each copy, and its position
//! from the set's member list; where there is no metadata, it looks the entry up again: generic
//! XDP drops it at the redirect, and some kernels refuse `bpf_xdp_adjust_meta` to XDP programs
//! altogether ([`XDP_META`]).

use core::ptr::addr_of_mut;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_check_mtu, bpf_redirect, bpf_xdp_adjust_meta},
    programs::XdpContext,
    Global,
};
use mgm_common::{
    counters::{IfStats, OifStats},
    fwd::IfConfig,
    maps::OIF_SET_WIDTH,
};

use crate::{
    counters::{if_stats, oif_slot, oif_stats},
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

/// What [`tag`] puts in front of a frame: the entry's counter block and its set.
#[repr(C)]
#[derive(Clone, Copy)]
struct Tag {
    oif_base: u32,
    oif_set: u32,
}

const TAG_LEN: usize = core::mem::size_of::<Tag>();

/// Whether this kernel lets XDP programs call `bpf_xdp_adjust_meta`: the daemon probes it and
/// sets 0 where it does not (seen on a 6.18 build), and the verifier, reading the read-only
/// global as a constant, then never walks the call it would reject.
#[unsafe(no_mangle)]
static XDP_META: Global<u8> = Global::new(1);

/// Puts the entry's counter block `oif_base` and set `oif_set` in front of the frame as XDP
/// metadata, for `mgm_egress` to count each copy on its entry without looking it up again.
#[inline(always)]
pub fn tag(ctx: &XdpContext, oif_base: u32, oif_set: u32) {
    if XDP_META.load() == 0 {
        return;
    }
    // SAFETY: `ctx` is this program's context.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -(TAG_LEN as i32)) } != 0 {
        return;
    }
    let meta = ctx.metadata();
    if meta + TAG_LEN > ctx.metadata_end() {
        return;
    }
    // SAFETY: the check above keeps the write inside the metadata just made.
    unsafe { (meta as *mut Tag).write_unaligned(Tag { oif_base, oif_set }) };
}

/// The [`Tag`] in front of the copy, if there is one.
#[inline(always)]
fn tagged(ctx: &XdpContext) -> Option<Tag> {
    let meta = ctx.metadata();
    if meta + TAG_LEN > ctx.metadata_end() {
        return None;
    }
    let field = meta as *const u32;
    // SAFETY: the check above keeps both reads inside the metadata. Field by field: a read of
    // the whole struct leaves the verifier a register it never sees written.
    Some(unsafe {
        Tag {
            oif_base: field.read_unaligned(),
            oif_set: field.add(1).read_unaligned(),
        }
    })
}

/// The counter slot of the copy to `ifindex` of the entry the untagged packet belongs to,
/// found as the ingress program found it: generic XDP (`skb` mode) keeps no metadata across
/// the redirect. Slower (up to three hash lookups), but only there. A subprogram, so the
/// verifier walks it once.
#[inline(never)]
fn untagged_slot(saddr: u32, daddr: u32, ifindex: u32) -> u32 {
    // SAFETY: a map value pointer, read once while valid.
    forward::lookup(saddr, daddr).map_or(0, |e| unsafe {
        slot_in_set((*e).oif_base, (*e).oif_set, ifindex)
    })
}

/// The counter slot of the copy to `ifindex` of an entry whose block is `base` and set `set`:
/// the block's slot at the interface's position among the set's members (ascending, 0 after
/// the last). A binary search of the 64 members a set can hold, six steps; slot 0,
/// "uncounted", if the interface is not there.
#[inline(always)]
fn slot_in_set(base: u32, set: u32, ifindex: u32) -> u32 {
    if base == 0 {
        return 0;
    }
    let Some(members) = MGM_SET_MEMBERS.get(set) else {
        return 0;
    };
    // The zeros after the last member sort after every ifindex.
    let key = |i: usize| members.ifindex[i & (OIF_SET_WIDTH as usize - 1)].wrapping_sub(1);
    let target = ifindex.wrapping_sub(1);
    let mut pos = 0usize;
    let mut step = OIF_SET_WIDTH as usize / 2;
    while step > 0 {
        if key(pos + step - 1) < target {
            pos += step;
        }
        step /= 2;
    }
    if pos < OIF_SET_WIDTH as usize && key(pos) == target {
        oif_slot(base, pos as u32)
    } else {
        0
    }
}

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
    let (ttl, saddr, daddr) = unsafe { ((*ip.hdr).ttl, (*ip.hdr).saddr, (*ip.hdr).daddr) };
    let slot = match tagged(ctx) {
        Some(t) => slot_in_set(t.oif_base, t.oif_set, ifindex),
        None => untagged_slot(saddr, daddr, ifindex),
    };
    let stats = admit(cfg, ttl, oif_stats(slot))?;
    stamp(cfg, stats, eth.hdr, ip.tot_len);
    Some(xdp_action::XDP_PASS)
}

/// The one copy of a one-interface set, out of `oif`, by a plain redirect. `ttl` is the
/// decremented TTL, `slot` the copy's counter slot. `None`: `oif` is not an interface mgm
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
    let Some(stats) = admit(cfg, ttl, oif_stats(slot)) else {
        return Some(xdp_action::XDP_DROP);
    };
    stamp(cfg, stats, eth, tot_len);
    // SAFETY: no preconditions; an interface that vanished fails the redirect in the kernel.
    Some(unsafe { bpf_redirect(oif, 0) } as u32)
}

/// The copy to a set's prepared member `oif`, made before the broadcast clones the frame (the
/// other members' `mgm_egress` rewrites the MAC written here). `ttl` is the decremented TTL,
/// `slot` the copy's counter slot. `Some(false)`: the packet is below `oif`'s TTL threshold,
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
    let Some(stats) = admit(cfg, ttl, oif_stats(slot)) else {
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
/// interface gets no copy anyway. `ttl` is the decremented TTL, `base` the entry's counter
/// block.
#[inline(never)]
pub fn below_threshold(set: u32, ttl: u8, prepared: u32, ingress: u32, base: u32) {
    let Some(members) = MGM_SET_MEMBERS.get(set) else {
        return;
    };
    for (pos, &oif) in members.ifindex.iter().enumerate() {
        if oif == 0 {
            break;
        }
        if oif != prepared && oif != ingress {
            count_ttl_too_low(oif, ttl, oif_slot(base, pos as u32));
        }
    }
}

/// `admit` for a copy that is not sent, for its count. A subprogram, so the verifier walks its
/// branches once, not in each of the loop's 64 steps (110k instructions inlined).
#[inline(never)]
fn count_ttl_too_low(oif: u32, ttl: u8, slot: u32) {
    if let Some(cfg) = if_config(oif) {
        let _ = admit(cfg, ttl, oif_stats(slot));
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
