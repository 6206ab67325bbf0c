//! Programs for `cargo xtask bench`, built beside the data plane but never shipped in `mgm`:
//! baselines (the same work stripped to what the hardware path needs, so mgm's cost is
//! reported as a ratio against it from the same run), a traffic generator and a receiver that
//! counts.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{xdp_action, BPF_F_BROADCAST, BPF_F_EXCLUDE_INGRESS},
    btf_maps::{Array, DevMapHash, PerCpuArray},
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use mgm_common::bench::{GenTemplate, GEN_GROUP_AT, GEN_HEADER_LEN, GEN_IP_CSUM_AT};

/// The outgoing interfaces of the raw redirect (`mgm_common::bench::OIFS`).
#[btf_map]
static BENCH_OIFS: DevMapHash<64> = DevMapHash::new();

/// What the generator writes into every frame (`mgm_common::bench::GEN_TEMPLATE`).
#[btf_map]
static BENCH_GEN_TEMPLATE: Array<GenTemplate, 1> = Array::new();

/// IPv4 UDP frames seen by a receiver (`mgm_common::bench::RX_COUNT`).
#[btf_map]
static BENCH_RX_COUNT: PerCpuArray<u64, 1> = PerCpuArray::new();

const ETH_P_IP: [u8; 2] = 0x0800u16.to_be_bytes();
const IPPROTO_UDP: u8 = 17;

/// A parse-nothing broadcast redirect: the least any multicast forwarder in XDP can do.
#[xdp]
pub fn bench_raw_redirect(_ctx: XdpContext) -> u32 {
    BENCH_OIFS
        .redirect(0, (BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS) as u64)
        .unwrap_or(xdp_action::XDP_ABORTED)
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

#[inline(always)]
fn try_bench_gen(ctx: &XdpContext) -> Option<u32> {
    let t = BENCH_GEN_TEMPLATE.get_ptr_mut(0)?;
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + GEN_HEADER_LEN > end {
        return None;
    }
    // SAFETY: `t` points at the map's only value; one CPU runs the generator.
    let mut header = unsafe { (*t).header };
    // SAFETY: as above.
    let (sweep, seq) = unsafe { ((*t).sweep, (*t).seq) };
    if sweep > 1 {
        let base = u32::from_be_bytes([
            header[GEN_GROUP_AT],
            header[GEN_GROUP_AT + 1],
            header[GEN_GROUP_AT + 2],
            header[GEN_GROUP_AT + 3],
        ]);
        let group = base.wrapping_add(seq % sweep).to_be_bytes();
        header[GEN_GROUP_AT..GEN_GROUP_AT + 4].copy_from_slice(&group);
        let csum = ipv4_checksum(&header).to_be_bytes();
        header[GEN_IP_CSUM_AT..GEN_IP_CSUM_AT + 2].copy_from_slice(&csum);
        // SAFETY: as above.
        unsafe { (*t).seq = seq.wrapping_add(1) };
    }
    // SAFETY: the bounds check above covers GEN_HEADER_LEN bytes from `start`.
    unsafe { (start as *mut [u8; GEN_HEADER_LEN]).write_unaligned(header) };
    Some(xdp_action::XDP_TX)
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

/// A receiver: counts untagged IPv4 UDP frames and drops everything, so the count costs the
/// same whether the frames came from XDP or the kernel's stack.
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
        if proto == ETH_P_IP && l4 == IPPROTO_UDP {
            if let Some(n) = BENCH_RX_COUNT.get_ptr_mut(0) {
                // SAFETY: a per-CPU slot, written only by this CPU.
                unsafe { *n += 1 };
            }
        }
    }
    xdp_action::XDP_DROP
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
