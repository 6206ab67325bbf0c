//! The one place raw packet pointers are made: every read is bounds-checked against
//! `data_end` right before it, in the form the verifier understands.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;

/// Read position in a frame.
pub struct Cursor {
    pub start: usize,
    pub pos: usize,
    pub end: usize,
}

impl Cursor {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        Cursor {
            start: ctx.data(),
            pos: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// The next `T` of the frame, advancing past it; `None` if the frame is too short.
    #[inline(always)]
    pub fn take<T>(&mut self) -> Option<*mut T> {
        let at = self.pos;
        if at + size_of::<T>() > self.end {
            return None;
        }
        self.pos = at + size_of::<T>();
        Some(at as *mut T)
    }

    /// Skips `n` bytes; `None` if the frame is shorter.
    #[inline(always)]
    pub fn skip(&mut self, n: usize) -> Option<()> {
        if self.pos + n > self.end {
            return None;
        }
        self.pos += n;
        Some(())
    }

    /// Offset of the read position from the frame start (for `bpf_xdp_load_bytes`).
    #[inline(always)]
    pub fn offset(&self) -> usize {
        self.pos - self.start
    }

    /// Bytes left after the read position.
    #[inline(always)]
    pub fn remaining(&self) -> usize {
        self.end - self.pos
    }
}
