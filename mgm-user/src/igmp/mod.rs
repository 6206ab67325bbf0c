//! IGMP: the wire codec and the router-side querier state machine, both pure (no I/O).

pub mod codec;
pub mod querier;

pub use codec::{decode, DecodeError, GroupRecord, IgmpMessage, RecordType};
