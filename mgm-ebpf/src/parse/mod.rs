//! Header parsers, in the order a frame is read. Only `cursor` makes raw pointers.

pub mod cursor;
pub mod eth;
pub mod ipv4;
