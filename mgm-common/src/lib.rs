//! Types that cross the kernel/user line in mgm.
//!
//! Both the XDP program (`mgm-ebpf`, `no_std`) and the manager (`mgm-user`) use these, so every
//! type is `#[repr(C)]` with explicit padding and a size assertion: a layout change must be a
//! deliberate, versioned change ([`maps::LAYOUT_VERSION`]), because a restarted daemon adopts the
//! maps a previous one left pinned. `aya::Pod` is implemented only behind the `user` feature, so
//! the kernel side never links aya.
#![no_std]

pub mod bench;
pub mod counters;
pub mod event;
pub mod fwd;
pub mod maps;

/// Implements `aya::Pod` for plain-old-data types when building for userspace.
macro_rules! user_pod {
    ($($ty:ty),+ $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: the type is `#[repr(C)]`, `Copy`, has explicit padding fields and only
            // integer/array fields, so every bit pattern is valid.
            unsafe impl aya::Pod for $ty {}
        )+
    };
}
pub(crate) use user_pod;
