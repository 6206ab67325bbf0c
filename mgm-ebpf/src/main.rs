//! mgm's XDP data plane.
//!
//! `mgm_ingress` runs on every managed interface: it hands IGMP to the daemon (and to the host)
//! and forwards IPv4 multicast data by the forwarding entries the daemon wrote. `mgm_egress`
//! runs once per copy from the outgoing-set devmaps. Neither depends on the daemon being alive:
//! the maps alone decide every packet's fate. Anything the programs cannot read is passed to the
//! host stack and counted, never aborted.
#![no_std]
#![no_main]

mod admit;
mod counters;
mod egress;
mod forward;
mod maps;
mod parse;
mod snoop;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// Ingress: snoop IGMP, forward multicast data, pass everything else.
#[xdp]
pub fn mgm_ingress(ctx: XdpContext) -> u32 {
    forward::ingress(&ctx)
}

/// Egress, once per copy: source MAC, TTL threshold, per-output counters.
#[xdp(map = "devmap")]
pub fn mgm_egress(ctx: XdpContext) -> u32 {
    egress::egress(&ctx).unwrap_or(xdp_action::XDP_DROP)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic, so this is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
