//! Baselines for `cargo xtask bench`, built beside the data plane but never shipped in `mgm`:
//! the same work stripped to what the hardware path needs, so mgm's cost is reported as a
//! ratio against it from the same run.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{xdp_action, BPF_F_BROADCAST, BPF_F_EXCLUDE_INGRESS},
    btf_maps::DevMapHash,
    macros::{btf_map, xdp},
    programs::XdpContext,
};

/// The outgoing interfaces of the raw redirect.
#[btf_map]
static BENCH_OIFS: DevMapHash<64> = DevMapHash::new();

/// A parse-nothing broadcast redirect: the least any multicast forwarder in XDP can do.
#[xdp]
pub fn bench_raw_redirect(_ctx: XdpContext) -> u32 {
    BENCH_OIFS
        .redirect(0, (BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS) as u64)
        .unwrap_or(xdp_action::XDP_ABORTED)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
