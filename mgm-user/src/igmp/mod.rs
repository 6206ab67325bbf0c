//! IGMP: the wire codec, the router-side querier and the host side a proxy reports upstream
//! with, all pure (no I/O).

pub mod codec;
pub mod host;
pub mod querier;

pub use codec::{decode, DecodeError, GroupRecord, IgmpMessage, RecordType};
