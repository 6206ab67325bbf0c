//! The IGMP proxy's routing side (after RFC 4605): it owns the upstream interface, so every
//! MFE whose traffic arrives there has an owner to ask (spec §5.2). Downstream memberships
//! come from IGMP, which owns the downstream interfaces alone (spec §4.4).
//!
//! Not yet (README "Not yet"): the proxy does not report the merged membership upstream as a
//! host, and traffic from downstream sources is not sent upstream.

use crate::core::{ComponentId, ProtocolId, RoutingProtocol};

/// The proxy's protocol id: outside the ids Windows assigns to routing protocols.
pub const PROTOCOL_ID: ProtocolId = ProtocolId(0x4d47_0001);
pub const COMPONENT_ID: ComponentId = ComponentId(1);

/// Owner of the upstream interface. The RPF interface the core picks and the outgoing list it
/// computes from memberships are what a proxy wants, so every callback keeps its default.
#[derive(Debug, Default)]
pub struct ProxyUpstream;

impl RoutingProtocol for ProxyUpstream {}
