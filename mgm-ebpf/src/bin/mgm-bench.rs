//! Programs for `cargo xtask bench`, built beside the data plane but never shipped in `mgm`:
//! baselines (the same work stripped to what the hardware path needs, so mgm's cost is
//! reported as a ratio against it from the same run), the other eBPF design a user could pick
//! (replication at TC with `bpf_clone_redirect`), a traffic generator and a receiver that
//! counts.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{xdp_action, BPF_F_BROADCAST, BPF_F_EXCLUDE_INGRESS, TC_ACT_OK, TC_ACT_SHOT},
    btf_maps::{Array, DevMapHash, HashMap, PerCpuArray, ProgramArray},
    macros::{btf_map, classifier, xdp},
    programs::{TcContext, XdpContext},
};
use mgm_common::bench::{
    GenTemplate, TcGroup, GEN_GROUPS_SIZE, GEN_GROUP_AT, GEN_HEADER_LEN, GEN_IP_CSUM_AT,
    TC_GROUPS_SIZE,
};

/// The outgoing interfaces of the raw redirect (`mgm_common::bench::OIFS`).
#[btf_map]
static BENCH_OIFS: DevMapHash<64> = DevMapHash::new();

/// What the generator writes into every frame (`mgm_common::bench::GEN_TEMPLATE`).
#[btf_map]
static BENCH_GEN_TEMPLATE: Array<GenTemplate, 1> = Array::new();

/// The groups the generator cycles through (`mgm_common::bench::GEN_GROUPS`).
#[btf_map]
static BENCH_GEN_GROUPS: Array<u32, { GEN_GROUPS_SIZE as usize }> = Array::new();

/// Slot 0: the forwarder `bench_feed` hands frames to (`mgm_common::bench::FEED_NEXT`).
#[btf_map]
static BENCH_FEED_NEXT: ProgramArray<1> = ProgramArray::new();

/// Source MACs by egress ifindex for `bench_set_mac` (`mgm_common::bench::MACS`).
#[btf_map]
static BENCH_MACS: Array<[u8; 8], { mgm_common::bench::MACS_SIZE as usize }> = Array::new();

/// IPv4 UDP frames seen by a receiver (`mgm_common::bench::RX_COUNT`).
#[btf_map]
static BENCH_RX_COUNT: PerCpuArray<u64, 1> = PerCpuArray::new();

/// Each group's outgoing interfaces for `bench_tc_clone` (`mgm_common::bench::TC_GROUPS`).
#[btf_map]
static BENCH_TC_GROUPS: HashMap<u32, TcGroup, { TC_GROUPS_SIZE as usize }> = HashMap::new();

const ETH_P_IP: [u8; 2] = 0x0800u16.to_be_bytes();
const IPPROTO_UDP: u8 = 17;
/// Offsets in an untagged Ethernet frame.
const ETH_SRC_AT: usize = 6;
const IP_TTL_AT: usize = 14 + 8;
const IP_DST_AT: usize = 14 + 16;

/// A parse-nothing broadcast redirect: the least any multicast forwarder in XDP can do.
#[xdp]
pub fn bench_raw_redirect(_ctx: XdpContext) -> u32 {
    BENCH_OIFS
        .redirect(0, (BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS) as u64)
        .unwrap_or(xdp_action::XDP_ABORTED)
}

/// The raw redirect's egress program when it runs as the least a correct router does: every
/// copy leaves with its outgoing interface's MAC as source (the devmap runs this per copy).
/// A copy to an interface with no MAC in the map is dropped.
#[xdp(map = "devmap")]
pub fn bench_set_mac(ctx: XdpContext) -> u32 {
    // SAFETY: the devmap program context carries the egress ifindex.
    let ifindex = unsafe { (*ctx.ctx).egress_ifindex };
    let (start, end) = (ctx.data(), ctx.data_end());
    match BENCH_MACS.get(ifindex) {
        Some(mac) if start + 12 <= end => {
            let (d, s) = ((start + 6) as *mut u8, mac.as_ptr());
            // SAFETY: the frame holds 12 bytes from `start`; `mac` is a live map value.
            unsafe {
                for i in 0..6 {
                    d.add(i).write_volatile(s.add(i).read_volatile());
                }
            }
            xdp_action::XDP_PASS
        }
        _ => xdp_action::XDP_DROP,
    }
}

/// The other eBPF design: a router at TC ingress that replicates the skb with one
/// `bpf_clone_redirect` per outgoing interface (the way Cilium forwards multicast), each copy
/// leaving with its interface's MAC as source and the TTL decremented (checksum updated). A
/// group it does not know, or a frame that is not IPv4, goes on to the stack; one whose TTL
/// runs out is dropped.
#[classifier]
pub fn bench_tc_clone(ctx: TcContext) -> i32 {
    try_tc_clone(&ctx).unwrap_or(TC_ACT_SHOT)
}

#[inline(always)]
fn try_tc_clone(ctx: &TcContext) -> Option<i32> {
    if ctx.load::<[u8; 2]>(12).ok()? != ETH_P_IP {
        return Some(TC_ACT_OK);
    }
    let group = ctx.load::<u32>(IP_DST_AT).ok()?;
    // SAFETY: the value is only read, and the control plane does not change it while the bench
    // runs.
    let Some(entry) = (unsafe { BENCH_TC_GROUPS.get(group) }) else {
        return Some(TC_ACT_OK);
    };
    // TTL and protocol: one 16-bit word of the header checksum.
    let old = ctx.load::<[u8; 2]>(IP_TTL_AT).ok()?;
    if old[0] <= 1 {
        return Some(TC_ACT_SHOT);
    }
    let new = [old[0] - 1, old[1]];
    ctx.store(IP_TTL_AT, &new[0], 0).ok()?;
    ctx.l3_csum_replace(
        GEN_IP_CSUM_AT,
        u64::from(u16::from_ne_bytes(old)),
        u64::from(u16::from_ne_bytes(new)),
        2,
    )
    .ok()?;
    for oif in &entry.oifs {
        if oif.ifindex == 0 {
            break;
        }
        // The first write after a clone copies the header: the price of this design.
        ctx.store(ETH_SRC_AT, &oif.mac, 0).ok()?;
        ctx.clone_redirect(oif.ifindex, 0).ok()?;
    }
    // Every copy is out; the original goes no further.
    Some(TC_ACT_SHOT)
}

/// The ceiling of the harness: a router that drops every frame it is handed.
#[xdp]
pub fn bench_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// The generator, run by a live-frames test run on the sender's interface: stores the whole
/// template header, so frames a forwarder rewrote (TTL, checksum, MACs) go out as new, and
/// transmits. Frames shorter than the header are dropped.
#[xdp]
pub fn bench_gen(ctx: XdpContext) -> u32 {
    try_bench_gen(&ctx).unwrap_or(xdp_action::XDP_DROP)
}

/// The router's side of the same: run by a live-frames test run on the router's ingress
/// interface, stores the template header and tail-calls the forwarder under test, so the
/// kernel times the forwarding path alone on the calling CPU. With no forwarder in the slot
/// (the kernel's ipmr), the frame passes to the stack, which forwards it in the same call.
#[xdp]
pub fn bench_feed(ctx: XdpContext) -> u32 {
    if write_template(&ctx).is_none() {
        return xdp_action::XDP_DROP;
    }
    // SAFETY: a tail call that fails returns here.
    unsafe { BENCH_FEED_NEXT.tail_call(&ctx, 0) };
    xdp_action::XDP_PASS
}

#[inline(always)]
fn try_bench_gen(ctx: &XdpContext) -> Option<u32> {
    write_template(ctx)?;
    Some(xdp_action::XDP_TX)
}

/// Stores the template header (with the next group of the list, when cycling) at the frame's
/// start.
#[inline(always)]
fn write_template(ctx: &XdpContext) -> Option<()> {
    let t = BENCH_GEN_TEMPLATE.get_ptr_mut(0)?;
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + GEN_HEADER_LEN > end {
        return None;
    }
    // SAFETY: `t` points at the map's only value; one CPU runs the generator.
    let mut header = unsafe { (*t).header };
    // SAFETY: as above.
    let (groups, seq) = unsafe { ((*t).groups, (*t).seq) };
    if groups > 0 {
        let group = BENCH_GEN_GROUPS.get(seq % groups)?.to_ne_bytes();
        header[GEN_GROUP_AT..GEN_GROUP_AT + 4].copy_from_slice(&group);
        let csum = ipv4_checksum(&header).to_be_bytes();
        header[GEN_IP_CSUM_AT..GEN_IP_CSUM_AT + 2].copy_from_slice(&csum);
        // SAFETY: as above.
        unsafe { (*t).seq = seq.wrapping_add(1) };
    }
    // SAFETY: the bounds check above covers GEN_HEADER_LEN bytes from `start`.
    unsafe { (start as *mut [u8; GEN_HEADER_LEN]).write_unaligned(header) };
    Some(())
}

/// The IPv4 header checksum of `frame`'s header (20 bytes after Ethernet), its own field
/// taken as zero.
#[inline(always)]
fn ipv4_checksum(frame: &[u8; GEN_HEADER_LEN]) -> u16 {
    let mut sum = 0u32;
    for i in 0..10 {
        let at = 14 + 2 * i;
        if at != GEN_IP_CSUM_AT {
            sum += u32::from(u16::from_be_bytes([frame[at], frame[at + 1]]));
        }
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// A receiver: counts untagged IPv4 UDP frames and drops everything. In XDP, a frame the
/// router's stack sent (an skb, which ipmr clones) must first be copied into an XDP buffer;
/// `bench_count_tc` counts without that copy.
#[xdp]
pub fn bench_count(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 14 + 20 <= end {
        // SAFETY: the check above covers the Ethernet and the fixed IPv4 header.
        let (proto, l4) = unsafe {
            (
                *((start + 12) as *const [u8; 2]),
                *((start + 23) as *const u8),
            )
        };
        count_if_udp(proto, l4);
    }
    xdp_action::XDP_DROP
}

/// The same receiver at TC ingress, where every frame arrives as an skb: the stack's clones
/// as they are, XDP frames built into skbs by the veth. Both are dropped.
#[classifier]
pub fn bench_count_tc(ctx: TcContext) -> i32 {
    if let (Ok(proto), Ok(l4)) = (ctx.load::<[u8; 2]>(12), ctx.load::<u8>(23)) {
        count_if_udp(proto, l4);
    }
    TC_ACT_SHOT
}

#[inline(always)]
fn count_if_udp(ethertype: [u8; 2], l4: u8) {
    if ethertype == ETH_P_IP && l4 == IPPROTO_UDP {
        if let Some(n) = BENCH_RX_COUNT.get_ptr_mut(0) {
            // SAFETY: a per-CPU slot, written only by this CPU.
            unsafe { *n += 1 };
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
