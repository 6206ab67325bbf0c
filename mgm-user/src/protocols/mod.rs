//! Routing-protocol modules: they decide where traffic goes, as clients of the MGM core.

pub mod igmp;
pub mod igmp_proxy;
pub mod remote;
pub mod static_routes;
