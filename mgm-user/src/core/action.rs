//! Outputs of the core that the data-plane adapter must apply: the map operations that keep the
//! BPF forwarding table equal to the core's MFE table (spec §10). The core only queues them;
//! it performs no I/O.

use std::collections::BTreeSet;
use std::fmt;
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

/// "install (*, 239.1.1.1) from ifindex 2 to 3, 4", "delete (198.18.0.2, 232.1.1.1)".
impl fmt::Display for MapOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sg = |source: &Ipv4Addr, group: &Ipv4Addr| {
            let source = if source.is_unspecified() {
                "*".to_owned()
            } else {
                source.to_string()
            };
            format!("({source}, {group})")
        };
        match self {
            MapOp::InstallMfe {
                source,
                group,
                iif,
                oifs,
            } if oifs.is_empty() => write!(
                f,
                "install {} from ifindex {} as negative",
                sg(source, group),
                iif.ifindex
            ),
            MapOp::InstallMfe {
                source,
                group,
                iif,
                oifs,
            } => {
                let oifs: Vec<String> = oifs.iter().map(|o| o.ifindex.to_string()).collect();
                write!(
                    f,
                    "install {} from ifindex {} to {}",
                    sg(source, group),
                    iif.ifindex,
                    oifs.join(", ")
                )
            }
            MapOp::DeleteMfe { source, group } => write!(f, "delete {}", sg(source, group)),
        }
    }
}
