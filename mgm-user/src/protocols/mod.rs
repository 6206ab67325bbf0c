//! Routing-protocol modules: they decide where traffic goes. Each is sans-IO: messages in,
//! forwarding changes out.

pub mod igmp_proxy;
