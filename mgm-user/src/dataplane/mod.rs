//! The only part of mgm that touches aya: loading and attaching the XDP programs, pinning
//! their maps, applying the core's map operations and reading events and counters.

pub mod attacher;
mod counters;
pub mod error;
pub mod inspect;
pub mod interfaces;
pub mod loader;
pub mod maps;
pub mod netdev;
pub mod ringbuf;

pub use attacher::Outcome;
pub use error::DataplaneError;
pub use loader::{Dataplane, LoadOptions, Tunables, XdpMode};
pub use ringbuf::Event;
