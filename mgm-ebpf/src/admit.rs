//! Per-interface admission of the work the program hands the daemon: IGMP messages and
//! no-cache upcalls each pass a token bucket of their incoming interface before they take ring
//! buffer space, so a flood on one interface spends its own budget, not the ring buffer every
//! interface shares. What a bucket refuses is counted on the interface; refused IGMP still goes
//! to the host stack.
//!
//! The buckets are GCRA: one "theoretical arrival time" per bucket, which each admission moves
//! one interval on; a message is refused while that time is more than the burst window ahead
//! of now. The buckets are shared by all CPUs: two CPUs racing on one can admit one message
//! too many, never block one.

use aya_ebpf::{
    btf_maps::{Array, LruHashMap},
    helpers::bpf_ktime_get_ns,
    macros::btf_map,
    Global,
};
use mgm_common::{fwd::FwdKey, maps as m};

/// Nanoseconds between two admitted IGMP tokens of one interface (0: no limit), and how far
/// ahead of now its bucket may run (interval × burst). A message costs one token, an IGMPv3
/// report one per group record. Set by the daemon at load time.
#[unsafe(no_mangle)]
static IGMP_ADMIT_INTERVAL_NS: Global<u64> = Global::new(0);
#[unsafe(no_mangle)]
static IGMP_ADMIT_WINDOW_NS: Global<u64> = Global::new(0);
/// The same for no-cache upcalls (each one also inserts a placeholder).
#[unsafe(no_mangle)]
static UPCALL_ADMIT_INTERVAL_NS: Global<u64> = Global::new(0);
#[unsafe(no_mangle)]
static UPCALL_ADMIT_WINDOW_NS: Global<u64> = Global::new(0);

/// Flows that recently missed over budget. A stream repeats its (S,G) every few
/// milliseconds, a flood to random groups hardly ever: (S,G)s found here draw on a second
/// bucket of the interface, which the flood seldom reaches, so a new stream gets its upcall
/// within a few packets however hard the flood fills the first.
const RECENT_MISSES: u32 = 16_384;

/// Theoretical arrival times, per interface counter slot.
#[repr(C)]
#[derive(Clone, Copy)]
struct Buckets {
    igmp: u64,
    upcall: u64,
    repeat: u64,
}

#[btf_map]
static MGM_ADMIT: Array<Buckets, { m::IF_CAPACITY as usize }> = Array::new();

#[btf_map]
static MGM_RECENT_MISSES: LruHashMap<FwdKey, u8, { RECENT_MISSES as usize }> = LruHashMap::new();

/// GCRA step for a message of `cost` tokens: true (and the bucket moved on) if it fits.
#[inline(always)]
fn take(tat: *mut u64, now: u64, interval: u64, window: u64, cost: u16) -> bool {
    if interval == 0 {
        return true;
    }
    // SAFETY: `tat` points into a live array value; a racing CPU's write is a lost update at
    // worst, which admits one message too many.
    let at = unsafe { tat.read_volatile() };
    let next = if at > now { at } else { now } + interval * u64::from(cost);
    // An idle bucket takes any one message, however costly: none is refused for its size.
    if at > now && next - now > window {
        return false;
    }
    unsafe { tat.write_volatile(next) };
    true
}

fn buckets(slot: u32) -> Option<*mut Buckets> {
    MGM_ADMIT.get_ptr_mut(slot)
}

/// Whether an IGMP message of `cost` tokens (its group records) of the interface with counter
/// slot `slot` goes to the daemon.
#[inline(always)]
pub fn igmp(slot: u32, cost: u16) -> bool {
    let Some(b) = buckets(slot) else {
        return true;
    };
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: `b` is a live array value.
    let tat = unsafe { core::ptr::addr_of_mut!((*b).igmp) };
    take(
        tat,
        now,
        IGMP_ADMIT_INTERVAL_NS.load(),
        IGMP_ADMIT_WINDOW_NS.load(),
        cost,
    )
}

/// Whether a miss of `key` on the interface with slot `slot` may insert a placeholder and
/// raise its upcall.
#[inline(always)]
pub fn upcall(slot: u32, key: &FwdKey) -> bool {
    let Some(b) = buckets(slot) else {
        return true;
    };
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let (interval, window) = (
        UPCALL_ADMIT_INTERVAL_NS.load(),
        UPCALL_ADMIT_WINDOW_NS.load(),
    );
    // SAFETY: `b` is a live array value.
    let (first, repeat) = unsafe {
        (
            core::ptr::addr_of_mut!((*b).upcall),
            core::ptr::addr_of_mut!((*b).repeat),
        )
    };
    if take(first, now, interval, window, 1) {
        return true;
    }
    if MGM_RECENT_MISSES.get_ptr(key).is_some() {
        return take(repeat, now, interval, window, 1);
    }
    let _ = MGM_RECENT_MISSES.insert(key, 0, 0);
    false
}
