//! A small fixed daemon state for the control answers: the unit tests' and the `control_line`
//! fuzz target's (through the `fuzzing` feature), so both ask the same core.

use std::{collections::BTreeMap, net::Ipv4Addr};

use super::{
    proto::{Answer, Request},
    Counters, Daemon, Roles,
};
use crate::{
    core::{Config, Instant, InterfaceId, Mgm, Route},
    managed::Names,
    protocols::{
        igmp::Igmp,
        igmp_proxy,
        static_routes::{self, StaticRoutes},
    },
};

pub const UP: u32 = 2;
pub const DN1: u32 = 3;
pub const DN2: u32 = 4;

/// A core with IGMP on dn1 and dn2 and the static-routes module registered, as the daemon
/// has them.
pub struct Fixture {
    pub(crate) mgm: Mgm,
    pub(crate) igmp: Igmp,
    names: Names,
    roles: Roles,
    pub(crate) statics: static_routes::StaticTable,
    static_handle: crate::core::ProtocolHandle,
    /// The daemon's own counters the requests are answered with.
    pub(crate) counters: Counters,
}

impl Default for Fixture {
    fn default() -> Self {
        let names = Names::new(BTreeMap::from([
            (UP, "up0".to_owned()),
            (DN1, "dn1".to_owned()),
            (DN2, "dn2".to_owned()),
        ]));
        let mut mgm = Mgm::new(Config::default());
        let module = StaticRoutes::new(&[], names.clone());
        let statics = module.table();
        let static_handle = mgm
            .register(
                Box::new(module),
                static_routes::PROTOCOL_ID,
                static_routes::COMPONENT_ID,
            )
            .unwrap();
        let mut igmp = Igmp::register(&mut mgm).unwrap();
        let now = Instant::from_millis(0);
        // The proxy owns up0, where the sources are, as in the daemon.
        let proxy = mgm
            .register(
                Box::new(igmp_proxy::ProxyUpstream::new(Default::default())),
                igmp_proxy::PROTOCOL_ID,
                igmp_proxy::COMPONENT_ID,
            )
            .unwrap();
        mgm.take_interface_ownership(proxy, InterfaceId::new(UP), now)
            .unwrap();
        let sources = Route {
            network: Ipv4Addr::new(198, 18, 0, 0),
            prefix_len: 24,
            if_id: InterfaceId::new(UP),
            upstream: Ipv4Addr::UNSPECIFIED,
            protocol: 2,
            metric: 0,
        };
        mgm.add_route(sources, now).unwrap();
        for (i, a) in [(DN1, 1), (DN2, 2)] {
            igmp.start(
                &mut mgm,
                i,
                Ipv4Addr::new(198, 18, a, 1),
                Default::default(),
                now,
            )
            .unwrap();
        }
        Fixture {
            mgm,
            igmp,
            names,
            roles: Roles {
                upstream: Some("up0".into()),
                downstream: vec!["dn1".into(), "dn2".into()],
                external: vec![],
            },
            statics,
            static_handle,
            counters: Counters::default(),
        }
    }
}

impl Fixture {
    /// The answer to `request`, at 5 s after the fixture's start.
    pub fn ask(&mut self, request: Request) -> Answer {
        self.lend(|d| super::answer(request, d))
    }

    /// Runs `f` over the fixture's state, as the daemon lends it.
    pub(crate) fn lend<R>(&mut self, f: impl FnOnce(&mut Daemon<'_>) -> R) -> R {
        let stats = |_: u32| None;
        let mut d = Daemon {
            now: Instant::from_millis(5_000),
            mgm: &mut self.mgm,
            igmp: &self.igmp,
            names: &self.names,
            roles: &self.roles,
            statics: &self.statics,
            static_handle: Some(self.static_handle),
            modules: vec![],
            counters: self.counters.clone(),
            if_stats: &stats,
        };
        f(&mut d)
    }
}
