//! The ingress path: classify the frame, then forward IPv4 multicast data by the
//! (S,G) → (*,G) → (*,*) entries. The common (S,G) hit costs one hash lookup, one per-CPU
//! array slot and the redirect; everything rarer sits on the slow branches.

use core::{mem::MaybeUninit, ptr::addr_of_mut};

use aya_ebpf::{
    bindings::{xdp_action, xdp_md, BPF_F_BROADCAST, BPF_F_EXCLUDE_INGRESS, BPF_NOEXIST},
    helpers::{bpf_ktime_get_ns, bpf_xdp_load_bytes},
    programs::XdpContext,
    Global,
};
use mgm_common::{
    event::{UpcallEvent, EVENT_NO_CACHE, EVENT_WRONG_IF, UPCALL_HEADER_MAX},
    fwd::{FwdEntry, FwdKey, FWD_NEGATIVE, FWD_PENDING},
};

use crate::{
    admit,
    counters::{bump_if, entry_stats, oif_slot},
    egress,
    maps::{if_config, OifSet, MGM_EVENTS, MGM_FWD, MGM_OIF_SETS, MGM_SET_INFO},
    parse::{
        cursor::Cursor,
        eth::{self, EthHdr, ETH_HLEN, ETH_P_IP},
        ipv4::{self, Ipv4Hdr, IPPROTO_IGMP},
    },
    snoop,
};

/// A pending placeholder older than this raises its no-cache upcall again, as ipmr does for
/// unresolved entries. Set by the daemon at load time.
#[unsafe(no_mangle)]
static PENDING_RETRY_NS: Global<u64> = Global::new(10_000_000_000);

/// Least time between two wrong-interface upcalls of one entry. Set by the daemon at load time.
#[unsafe(no_mangle)]
static WRONG_IF_INTERVAL_NS: Global<u64> = Global::new(1_000_000_000);

pub fn ingress(ctx: &XdpContext) -> u32 {
    let ifindex = ctx.ingress_ifindex() as u32;
    match try_ingress(ctx, ifindex) {
        Some(action) => action,
        None => {
            // A router passes what it cannot read; the host decides.
            bump_if(if_slot(ifindex), |s| &mut s.malformed);
            xdp_action::XDP_PASS
        }
    }
}

/// `None`: the frame is cut short or its IPv4 header is inconsistent.
#[inline(always)]
fn try_ingress(ctx: &XdpContext, ifindex: u32) -> Option<u32> {
    let mut cur = Cursor::new(ctx);
    let eth = eth::parse(&mut cur)?;
    // A tagged frame is the VLAN interface's business, not the untagged link's: forwarding it
    // by the link's entries would put VLAN traffic on other links, tags and all.
    if eth.is_vlan_tagged() {
        bump_if(if_slot(ifindex), |s| &mut s.vlan_tagged);
        return Some(xdp_action::XDP_PASS);
    }
    if eth.proto != ETH_P_IP {
        return Some(xdp_action::XDP_PASS);
    }
    let ip = ipv4::parse(&mut cur)?;
    // SAFETY: `ipv4::parse` checked the fixed header lies inside the frame.
    let (saddr, daddr, proto) = unsafe { ((*ip.hdr).saddr, (*ip.hdr).daddr, (*ip.hdr).proto) };
    if !ipv4::is_multicast(daddr) {
        return Some(xdp_action::XDP_PASS);
    }
    if proto == IPPROTO_IGMP {
        snoop::igmp(ctx, &cur, &eth, &ip, ifindex, if_slot(ifindex));
        return Some(xdp_action::XDP_PASS);
    }
    if ipv4::is_link_local_multicast(daddr) {
        return Some(xdp_action::XDP_PASS);
    }
    Some(forward(
        ctx, eth.hdr, ip.hdr, ip.tot_len, saddr, daddr, ifindex,
    ))
}

#[inline(always)]
fn forward(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    hdr: *mut Ipv4Hdr,
    tot_len: usize,
    saddr: u32,
    daddr: u32,
    ifindex: u32,
) -> u32 {
    let Some(entry) = lookup(saddr, daddr) else {
        no_cache(ctx.ctx, saddr, daddr, ifindex);
        return xdp_action::XDP_DROP;
    };
    // SAFETY: the pointer came from a successful map lookup and stays valid for this run.
    let e = unsafe { &mut *entry };
    if e.flags & FWD_PENDING != 0 {
        pending(ctx.ctx, e, saddr, daddr, ifindex);
        return xdp_action::XDP_DROP;
    }
    let Some(stats) = entry_stats(e.stats_slot) else {
        return xdp_action::XDP_DROP;
    };
    if e.iif != ifindex {
        stats.wrong_if += 1;
        wrong_if(ctx.ctx, e, saddr, daddr);
        return xdp_action::XDP_DROP;
    }
    if e.flags & FWD_NEGATIVE != 0 {
        stats.negative += 1;
        return xdp_action::XDP_DROP;
    }
    // SAFETY: `hdr` was bounds-checked by the parser.
    let ttl = unsafe { (*hdr).ttl };
    if ttl <= 1 {
        stats.ttl_expired += 1;
        return xdp_action::XDP_DROP;
    }
    let info = MGM_SET_INFO.get(e.oif_set);
    let copies = match info {
        Some(info) if info.members == 1 => Copies::One(info.prepared_ifindex),
        _ => match MGM_OIF_SETS.get(e.oif_set) {
            Some(set) => Copies::Set(
                set,
                info.map_or((0, 0), |i| (i.prepared_ifindex, i.members)),
            ),
            None => {
                stats.no_oif_set += 1;
                return xdp_action::XDP_DROP;
            }
        },
    };
    // No copy goes back out of the incoming interface (the broadcast excludes it too).
    if matches!(copies, Copies::One(oif) if oif == ifindex) {
        stats.no_oif_set += 1;
        return xdp_action::XDP_DROP;
    }
    // SAFETY: as above; the header is inside the frame.
    unsafe { decrement_ttl(hdr) };
    stats.pkts += 1;
    stats.bytes += tot_len as u64;
    match copies {
        Copies::One(oif) => {
            egress::one_copy(ctx, eth, ttl - 1, tot_len, oif, oif_slot(e.oif_base, 0))
                .unwrap_or_else(|| {
                    stats.no_oif_set += 1;
                    xdp_action::XDP_DROP
                })
        }
        Copies::Set(set, (prepared, members)) => {
            // The broadcast skips the incoming interface, so its copy needs no work; 0 is none.
            if prepared != 0 && prepared != ifindex {
                // The prepared member is the set's highest ifindex: the block's last slot.
                let slot = oif_slot(e.oif_base, members.wrapping_sub(1));
                match egress::prepared_copy(ctx, eth, ttl - 1, tot_len, prepared, slot) {
                    Some(true) => {}
                    Some(false) => {
                        egress::below_threshold(e.oif_set, ttl - 1, prepared, ifindex, e.oif_base);
                        return xdp_action::XDP_DROP;
                    }
                    None => {
                        stats.no_oif_set += 1;
                        return xdp_action::XDP_DROP;
                    }
                }
            }
            egress::tag(ctx, e.oif_base, e.oif_set);
            set.redirect(0, (BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS) as u64)
                .unwrap_or(xdp_action::XDP_DROP)
        }
    }
}

/// Where an entry's copies go.
enum Copies {
    /// A one-interface set: a plain redirect, the copy's work done here.
    One(u32),
    /// Every interface of the devmap but the incoming one: the copy to the prepared member
    /// (the first `u32`, 0 for none) with its work done here, every other through
    /// `mgm_egress`. The second is the set's member count.
    Set(&'static OifSet, (u32, u32)),
}

/// (S,G), then (*,G), then (*,*).
#[inline(always)]
pub fn lookup(saddr: u32, daddr: u32) -> Option<*mut FwdEntry> {
    MGM_FWD
        .get_ptr_mut(FwdKey {
            source: saddr,
            group: daddr,
        })
        .or_else(|| {
            MGM_FWD.get_ptr_mut(FwdKey {
                source: 0,
                group: daddr,
            })
        })
        .or_else(|| {
            MGM_FWD.get_ptr_mut(FwdKey {
                source: 0,
                group: 0,
            })
        })
}

/// TTL minus one, with the checksum updated incrementally (RFC 1624): the 16-bit word holding
/// the TTL drops by 0x0100, so the checksum rises by 0x0100 with end-around carry.
///
/// # Safety
/// `hdr` must point at a bounds-checked IPv4 header.
#[inline(always)]
unsafe fn decrement_ttl(hdr: *mut Ipv4Hdr) {
    unsafe {
        (*hdr).ttl -= 1;
        let sum = u16::from_be((*hdr).check) as u32 + 0x0100;
        (*hdr).check = ((sum + (sum >> 16)) as u16).to_be();
    }
}

/// A miss: insert a placeholder so only this packet raises the upcall, then let the daemon
/// decide (spec §5.2, like ipmr's unresolved cache).
#[inline(never)]
fn no_cache(ctx: *mut xdp_md, saddr: u32, daddr: u32, ifindex: u32) {
    let slot = if_slot(ifindex);
    bump_if(slot, |s| &mut s.no_entry);
    let key = FwdKey {
        source: saddr,
        group: daddr,
    };
    if !admit::upcall(slot, &key) {
        bump_if(slot, |s| &mut s.upcall_limited);
        return;
    }
    let placeholder = FwdEntry {
        iif: ifindex,
        oif_set: 0,
        flags: FWD_PENDING,
        stats_slot: 0,
        // SAFETY: no preconditions.
        created_ns: unsafe { bpf_ktime_get_ns() },
        last_upcall_ns: 0,
        pending_pkts: 1,
        oif_base: 0,
        oif_slots: 0,
    };
    // With the ring buffer full the daemon never hears of the placeholder: it goes again, so
    // the flow's next packet retries rather than waiting out the placeholder's retry time.
    if MGM_FWD.insert(key, placeholder, BPF_NOEXIST as u64).is_ok() {
        if !upcall(ctx, EVENT_NO_CACHE, saddr, daddr, 0) {
            let _ = MGM_FWD.remove(key);
        }
    } else if let Some(e) = MGM_FWD.get_ptr_mut(key) {
        // Another CPU's packet made the placeholder first: count this one on it too.
        count_pending(e);
    }
}

/// A packet for a placeholder: re-raise the upcall once the placeholder is old.
#[inline(never)]
fn pending(ctx: *mut xdp_md, e: &mut FwdEntry, saddr: u32, daddr: u32, ifindex: u32) {
    let slot = if_slot(ifindex);
    bump_if(slot, |s| &mut s.no_entry);
    count_pending(e);
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if now.wrapping_sub(e.created_ns) > PENDING_RETRY_NS.load() {
        // SAFETY: `e` is a live map value; a racing CPU at worst raises one extra upcall.
        unsafe { addr_of_mut!(e.created_ns).write_volatile(now) };
        upcall(ctx, EVENT_NO_CACHE, saddr, daddr, 0);
    }
}

/// One more packet dropped by placeholder `e`. Every CPU shares it, and the BPF target has
/// no atomic add in Rust: two CPUs hitting one placeholder at the same instant may count one.
/// A flow's packets mostly arrive on one receive queue, so on one CPU.
#[inline(always)]
fn count_pending(e: *mut FwdEntry) {
    // SAFETY: `e` is a live map value.
    unsafe {
        let n = addr_of_mut!((*e).pending_pkts);
        n.write_volatile(n.read_volatile() + 1);
    }
}

/// Wrong incoming interface: at most one upcall per entry per interval (spec §5.5).
#[inline(never)]
fn wrong_if(ctx: *mut xdp_md, e: &mut FwdEntry, saddr: u32, daddr: u32) {
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if now.wrapping_sub(e.last_upcall_ns) > WRONG_IF_INTERVAL_NS.load() {
        // SAFETY: as in `pending`.
        unsafe { addr_of_mut!(e.last_upcall_ns).write_volatile(now) };
        upcall(ctx, EVENT_WRONG_IF, saddr, daddr, e.iif);
    }
}

/// Raises an upcall with the packet's first bytes from the IPv4 header on, for the callbacks
/// that take them (spec §5.2 RPF, §5.5 wrong interface); false if the ring buffer was full.
#[inline(always)]
fn upcall(ctx: *mut xdp_md, kind: u32, source: u32, group: u32, expected_iif: u32) -> bool {
    let ctx = XdpContext::new(ctx);
    let ifindex = ctx.ingress_ifindex() as u32;
    let Some(mut entry) = MGM_EVENTS.reserve_untyped::<UpcallEvent>(0) else {
        bump_if(if_slot(ifindex), |s| &mut s.ring_full);
        return false;
    };
    let ev: &mut MaybeUninit<UpcallEvent> = &mut entry;
    let ev = ev.as_mut_ptr();
    // The caller parsed an IPv4 header at ETH_HLEN, so at least 20 bytes follow it.
    let frame = ctx.data_end() - ctx.data();
    let len = frame.saturating_sub(ETH_HLEN).min(UPCALL_HEADER_MAX) as u32;
    // SAFETY: `ev` points at a reserved ring-buffer record of the right size; fields are
    // written through raw pointers because the record is uninitialised.
    let loaded = unsafe {
        addr_of_mut!((*ev).kind).write(kind);
        addr_of_mut!((*ev).ifindex).write(ifindex);
        addr_of_mut!((*ev).source).write(source);
        addr_of_mut!((*ev).group).write(group);
        addr_of_mut!((*ev).expected_iif).write(expected_iif);
        // The verifier needs the length proven in [1, UPCALL_HEADER_MAX] right here.
        let len = len & 0x7f;
        if len == 0 || len as usize > UPCALL_HEADER_MAX {
            -1
        } else {
            addr_of_mut!((*ev).header_len).write(len);
            bpf_xdp_load_bytes(
                ctx.ctx,
                ETH_HLEN as u32,
                addr_of_mut!((*ev).header).cast(),
                len,
            )
        }
    };
    if loaded < 0 {
        // SAFETY: as above; the callbacks then get no header rather than a wrong one.
        unsafe { addr_of_mut!((*ev).header_len).write(0) };
    }
    entry.submit(0);
    true
}

/// Counter slot of an interface; slot 0 for interfaces mgm has no config for.
#[inline(always)]
fn if_slot(ifindex: u32) -> u32 {
    if_config(ifindex).map(|c| c.stats_slot).unwrap_or(0)
}
