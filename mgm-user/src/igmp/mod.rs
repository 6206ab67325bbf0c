//! IGMP: the wire codec (pure, no I/O), used on every message the XDP program snoops.

pub mod codec;

pub use codec::{decode, DecodeError, GroupRecord, IgmpMessage, RecordType};
