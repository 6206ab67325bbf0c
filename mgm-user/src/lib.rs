//! mgm: an XDP-accelerated IPv4 multicast group manager.
//!
//! Layers talk only through named types; only `dataplane` touches aya.

/// Read-only operator commands (`mgm show`).
pub mod cli;
/// The configuration file (`mgm run --config`, `mgm check`).
pub mod config;
/// The operators' control socket: `mgm show` from the daemon's state, run-time changes.
pub mod control;
/// The Multicast Group Manager core: sans-IO, no clock, no sockets.
pub mod core;
/// The daemon's driver loop: ring buffer, signals, shutdown.
pub mod daemon;
/// Loading, attaching and updating the XDP data plane (the only user of aya).
pub mod dataplane;
/// Fair service of ring-buffer events by interface.
pub mod fair;
/// Make before break when an interface changes owner (map operations held briefly).
pub mod handover;
/// IGMP wire codec.
pub mod igmp;
/// Link changes (MAC, MTU, names, addresses) of the interfaces (rtnetlink).
pub mod links;
/// Which interfaces are managed as they come, go and are renamed (spec §10).
pub mod managed;
/// The system calls kept off the event loop, and the worker thread that makes them.
pub mod offload;
/// Routing-protocol modules (IGMP and the IGMP proxy today).
pub mod protocols;
/// Warnings a peer could repeat with every packet, logged at most once per interval.
pub mod ratelimit;
/// Reload: the settings in force against the ones read again, as a diff (sans-IO).
pub mod reload;
/// The kernel's unicast routes as the RPF table (rtnetlink).
pub mod routes;
pub mod schema;
/// The daemon's own sockets (IGMP queries and reports out, the upstream's link-layer filter).
pub mod sockets;
/// The IGMP proxy's host side on the upstream interface, with its sockets.
pub mod upstream;
