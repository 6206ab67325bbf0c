//! The one error type of the MGM API, one variant per Win32 code that spec §1 and §8 list.
//!
//! Pure data; nothing here performs I/O.

use thiserror::Error;

/// A failed or partial MGM call. [`MgmError::win32`] gives the code Windows would return, so
/// tests and the control socket can speak in the spec's terms (spec §1, §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum MgmError {
    /// A bad handle, mask, flag or interface; MGM never says which (spec §1).
    #[error("invalid parameter")]
    InvalidParameter,
    /// Duplicate registration or ownership (spec §2.1, §3.1).
    #[error("already exists")]
    AlreadyExists,
    /// The call is refused in the current state, e.g. deregistering while owning interfaces
    /// (spec §2.2) or IGMP acting between disable and enable (spec §3.1).
    #[error("cannot complete")]
    CanNotComplete,
    /// A configured capacity ([`crate::core::Config`]) is used up.
    #[error("not enough memory")]
    NotEnoughMemory,
    /// Unknown interface, membership or MFE.
    #[error("not found")]
    NotFound,
    /// Not even one record fits in the caller's budget; `needed` is the size of the next record
    /// (spec §6.1).
    #[error("insufficient buffer: the next record needs {needed} bytes")]
    InsufficientBuffer {
        /// Bytes the next record needs.
        needed: usize,
    },
    /// Records were returned and more remain (spec §6.1).
    #[error("more data")]
    MoreData,
    /// The end of the enumeration was reached (spec §6.1).
    #[error("no more items")]
    NoMoreItems,
}

impl MgmError {
    /// The standard Win32 value of this code (spec §1).
    pub fn win32(&self) -> u32 {
        match self {
            Self::NotEnoughMemory => 8,
            Self::InvalidParameter => 87,
            Self::InsufficientBuffer { .. } => 122,
            Self::AlreadyExists => 183,
            Self::MoreData => 234,
            Self::NoMoreItems => 259,
            Self::CanNotComplete => 1003,
            Self::NotFound => 1168,
        }
    }
}
