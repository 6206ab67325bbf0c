//! Outputs of the core that the data-plane adapter must apply: the map operations that keep the
//! BPF forwarding table equal to the core's MFE table (spec §10). The core only queues them;
//! it performs no I/O.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::types::InterfaceId;

/// One change the data plane must make so its forwarding table equals the core's MFE table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapOp {
    /// Create or replace the entry for (source, group). `source == 0.0.0.0` is a (*,G) entry.
    /// An empty `oifs` is a negative entry: matching packets are dropped.
    InstallMfe {
        source: Ipv4Addr,
        group: Ipv4Addr,
        iif: InterfaceId,
        oifs: BTreeSet<InterfaceId>,
    },
    /// Remove the entry for (source, group); the next matching packet raises a fresh no-cache upcall.
    DeleteMfe { source: Ipv4Addr, group: Ipv4Addr },
}
