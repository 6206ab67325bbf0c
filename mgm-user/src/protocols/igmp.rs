//! IGMP as an MGM client (protocol id 10). The per-interface router side of IGMP lives in
//! [`crate::igmp::querier`]; the daemon feeds it what it hears and turns the memberships it
//! outputs into Add/Delete calls with IGMP's handle. Where a routing protocol owns the
//! interface too, MGM turns those calls into local joins and leaves for it (spec §4.4).

use crate::core::RoutingProtocol;

/// IGMP's registration with the core. No callback needs an answer while IGMP owns its
/// interfaces alone, so the defaults are right. The disable/enable-IGMP re-add of spec §3.1
/// (a routing protocol taking an interface IGMP already runs on) is not handled yet: the
/// daemon registers routing protocols before IGMP, so it never happens in `mgm run`.
#[derive(Debug, Default)]
pub struct IgmpClient;

impl RoutingProtocol for IgmpClient {}
