//! Static multicast routes, in smcroute's words: `from IF [source ADDR] group ADDR to IF...`.
//! They forward whatever IGMP says. The module is an MGM client that owns each outgoing
//! interface of its routes and holds a membership there for every route; IGMP co-owns those
//! interfaces, so the hosts' joins and leaves reach this module as local joins and leaves
//! (spec §4.4), which it passes on as memberships of its own, so IGMP keeps working there.
//! For (S,G) routes the daemon adds a host route S/32 via the incoming interface to the RPF
//! table; (\*,G) routes take their incoming interface from unicast routing.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::Ipv4Addr,
    str::FromStr,
    sync::{Arc, Mutex, MutexGuard},
};

use crate::{
    core::{
        ComponentId, Cx, Instant, InterfaceId, Mgm, ProtocolHandle, ProtocolId, Request,
        RoutingProtocol, SourceGroupEntry, MGM_JOIN_STATE_FLAG,
    },
    managed::Names,
};

/// The static-routes module's protocol id: outside the ids Windows assigns.
pub const PROTOCOL_ID: ProtocolId = ProtocolId(0x4d47_0002);
pub const COMPONENT_ID: ComponentId = ComponentId(1);

/// One route as written on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRoute {
    pub iif: String,
    pub source: Option<Ipv4Addr>,
    pub group: Ipv4Addr,
    pub oifs: Vec<String>,
}

impl StaticRoute {
    /// The membership this route holds on each outgoing interface.
    pub fn entry(&self) -> SourceGroupEntry {
        match self.source {
            Some(s) => SourceGroupEntry::sg(s, self.group),
            None => SourceGroupEntry::star_g(self.group),
        }
    }
}

/// Why a route does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("static route {route:?}: {why} (expected: from IF [source ADDR] group ADDR to IF [IF...])")]
pub struct ParseError {
    route: String,
    why: String,
}

impl FromStr for StaticRoute {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let err = |why: &str| ParseError {
            route: s.to_owned(),
            why: why.to_owned(),
        };
        let words: Vec<&str> = s.split_whitespace().collect();
        let mut at = 0;
        let mut next = |what: &str| -> Result<&str, ParseError> {
            let w = words
                .get(at)
                .copied()
                .ok_or_else(|| err(&format!("{what} missing")))?;
            at += 1;
            Ok(w)
        };
        if next("\"from\"")? != "from" {
            return Err(err("must start with \"from\""));
        }
        let iif = next("incoming interface")?.to_owned();
        let mut source = None;
        let mut word = next("\"group\" or \"source\"")?;
        if word == "source" {
            let a = next("source address")?;
            source = Some(
                a.parse()
                    .map_err(|_| err(&format!("{a:?} is not an IPv4 address")))?,
            );
            word = next("\"group\"")?;
        }
        if word != "group" {
            return Err(err(&format!("expected \"group\", found {word:?}")));
        }
        let g = next("group address")?;
        let group: Ipv4Addr = g
            .parse()
            .map_err(|_| err(&format!("{g:?} is not an IPv4 address")))?;
        if !group.is_multicast() {
            return Err(err(&format!("{group} is not a multicast group")));
        }
        if next("\"to\"")? != "to" {
            return Err(err("expected \"to\" after the group"));
        }
        let oifs: Vec<String> = words[at..].iter().map(|w| (*w).to_owned()).collect();
        if oifs.is_empty() {
            return Err(err("no outgoing interface"));
        }
        if oifs.contains(&iif) {
            return Err(err("the incoming interface cannot also be an outgoing one"));
        }
        Ok(StaticRoute {
            iif,
            source,
            group,
            oifs,
        })
    }
}

impl fmt::Display for StaticRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "from {}", self.iif)?;
        if let Some(s) = self.source {
            write!(f, " source {s}")?;
        }
        write!(f, " group {} to {}", self.group, self.oifs.join(" "))
    }
}

/// The routes and joins the module holds, shared between its registration in the core (called
/// back by MGM) and the daemon, which adds and deletes them at run time (`mgm route`, `mgm
/// join`). Both run on the daemon's one thread; the lock is never held across a call into MGM,
/// because MGM may call back.
#[derive(Debug, Clone, Default)]
pub struct StaticTable(Arc<Mutex<Table>>);

#[derive(Debug, Default)]
struct Table {
    routes: Vec<StaticRoute>,
    /// Static memberships (`mgm join`), by interface name.
    joins: BTreeSet<(SourceGroupEntry, String)>,
    /// How many routes and joins hold each membership, by interface name; local leaves never
    /// remove these.
    held: BTreeMap<(SourceGroupEntry, String), usize>,
    /// Memberships passed on for IGMP's hosts.
    passed: BTreeSet<(SourceGroupEntry, InterfaceId)>,
}

impl StaticTable {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The routes held now, in the order they were added.
    pub fn routes(&self) -> Vec<StaticRoute> {
        self.lock().routes.clone()
    }

    /// The static memberships (`mgm join`) held now, by interface name.
    pub fn joins(&self) -> Vec<(SourceGroupEntry, String)> {
        self.lock().joins.iter().cloned().collect()
    }

    /// Every membership routes and joins hold, by interface name.
    pub fn held(&self) -> Vec<(SourceGroupEntry, String)> {
        self.lock().held.keys().cloned().collect()
    }

    /// Records `route` as held; the caller has made its memberships with [`StaticTable::hold`].
    pub fn add_route(&self, route: StaticRoute) {
        self.lock().routes.push(route);
    }

    /// Forgets `route`; `false` if it was not held.
    pub fn remove_route(&self, route: &StaticRoute) -> bool {
        let mut t = self.lock();
        let before = t.routes.len();
        t.routes.retain(|r| r != route);
        t.routes.len() < before
    }

    /// Records a static membership; `false` if it was held already.
    pub fn add_join(&self, sg: SourceGroupEntry, interface: &str) -> bool {
        self.lock().joins.insert((sg, interface.to_owned()))
    }

    /// Forgets a static membership; `false` if it was not held.
    pub fn remove_join(&self, sg: SourceGroupEntry, interface: &str) -> bool {
        self.lock().joins.remove(&(sg, interface.to_owned()))
    }

    /// Holds `sg` on `interface` (ifindex `ifindex`) once more. The first hold takes the
    /// interface for the module (beside IGMP) unless it owns it already, and adds the
    /// membership unless a host's join made it already.
    ///
    /// # Errors
    /// MGM refused the interface (another routing protocol owns it) or the membership.
    pub fn hold(
        &self,
        mgm: &mut Mgm,
        handle: ProtocolHandle,
        sg: SourceGroupEntry,
        interface: &str,
        ifindex: u32,
        now: Instant,
    ) -> Result<(), String> {
        let key = (sg, interface.to_owned());
        let id = InterfaceId::new(ifindex);
        if self.lock().held.get(&key).is_none_or(|n| *n == 0) {
            let owned = mgm
                .protocols()
                .iter()
                .any(|(p, _, ids)| *p == PROTOCOL_ID && ids.contains(&id));
            if !owned {
                mgm.take_interface_ownership(handle, id, now).map_err(|e| {
                    match mgm.get_protocol_on_interface(id) {
                        Ok((p, _)) if p != ProtocolId::IGMP => format!(
                            "{interface} belongs to routing protocol {:#x}; static routes and \
                             joins use only interfaces no other routing protocol owns",
                            p.0
                        ),
                        _ => format!("MGM refused {interface} to the static routes: {e}"),
                    }
                })?;
            }
            if !self.lock().passed.contains(&(sg, id)) {
                mgm.add_group_membership_entry(handle, sg, id, MGM_JOIN_STATE_FLAG, now)
                    .map_err(|e| format!("MGM refused the membership on {interface}: {e}"))?;
            }
        }
        *self.lock().held.entry(key).or_default() += 1;
        Ok(())
    }

    /// Undoes one [`StaticTable::hold`]; the last one deletes the membership unless a host
    /// there still wants it. `ifindex` is `None` while the interface does not exist.
    pub fn release(
        &self,
        mgm: &mut Mgm,
        handle: ProtocolHandle,
        sg: SourceGroupEntry,
        interface: &str,
        ifindex: Option<u32>,
        now: Instant,
    ) {
        let key = (sg, interface.to_owned());
        let last = {
            let mut t = self.lock();
            match t.held.get_mut(&key) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    t.held.remove(&key);
                    true
                }
                None => false,
            }
        };
        if let (true, Some(ifindex)) = (last, ifindex) {
            let id = InterfaceId::new(ifindex);
            if !self.lock().passed.contains(&(sg, id)) {
                // NotFound when the interface vanished and came back since: nothing to delete.
                let _ = mgm.delete_group_membership_entry(handle, sg, id, MGM_JOIN_STATE_FLAG, now);
            }
        }
    }
}

/// The module's MGM client.
#[derive(Debug, Default)]
pub struct StaticRoutes {
    table: StaticTable,
    /// The managed interfaces' names now: an outgoing interface created again has another
    /// ifindex but the same name (spec §10).
    names: Names,
}

impl StaticRoutes {
    /// A module that holds `routes` from the start (the caller adds their memberships on each
    /// outgoing interface), whose interfaces `names` names.
    pub fn new(routes: &[StaticRoute], names: Names) -> Self {
        let table = StaticTable::default();
        {
            let mut t = table.lock();
            for r in routes {
                for oif in &r.oifs {
                    *t.held.entry((r.entry(), oif.clone())).or_default() += 1;
                }
            }
            t.routes = routes.to_vec();
        }
        StaticRoutes { table, names }
    }

    /// The table the daemon changes at run time.
    pub fn table(&self) -> StaticTable {
        self.table.clone()
    }

    fn is_held(&self, sg: SourceGroupEntry, if_id: InterfaceId) -> bool {
        self.names
            .get(if_id.ifindex)
            .is_some_and(|name| self.table.lock().held.contains_key(&(sg, name)))
    }
}

impl RoutingProtocol for StaticRoutes {
    fn local_join(&mut self, cx: &mut Cx, sg: SourceGroupEntry, if_id: InterfaceId) {
        if !self.is_held(sg, if_id) && self.table.lock().passed.insert((sg, if_id)) {
            cx.queue(Request::AddGroupMembership {
                sg,
                if_id,
                flags: MGM_JOIN_STATE_FLAG,
            });
        }
    }

    fn local_leave(&mut self, cx: &mut Cx, sg: SourceGroupEntry, if_id: InterfaceId) {
        if self.table.lock().passed.remove(&(sg, if_id)) && !self.is_held(sg, if_id) {
            cx.queue(Request::DeleteGroupMembership {
                sg,
                if_id,
                flags: MGM_JOIN_STATE_FLAG,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Ipv4Addr = Ipv4Addr::new(239, 6, 6, 6);

    #[test]
    fn smcroute_style_routes_parse() {
        let r: StaticRoute = "from up0 source 198.18.0.2 group 239.6.6.6 to dn1 dn2"
            .parse()
            .unwrap();
        assert_eq!(
            r,
            StaticRoute {
                iif: "up0".into(),
                source: Some(Ipv4Addr::new(198, 18, 0, 2)),
                group: G,
                oifs: vec!["dn1".into(), "dn2".into()],
            }
        );
        assert_eq!(
            r.to_string(),
            "from up0 source 198.18.0.2 group 239.6.6.6 to dn1 dn2"
        );
        let star: StaticRoute = "from up0 group 239.6.6.6 to dn1".parse().unwrap();
        assert_eq!(star.entry(), SourceGroupEntry::star_g(G));
    }

    #[test]
    fn bad_routes_say_what_is_wrong() {
        for (route, why) in [
            ("", "missing"),
            ("to dn1", "must start with \"from\""),
            ("from up0 group 10.0.0.1 to dn1", "not a multicast group"),
            ("from up0 group 239.1.1.1", "\"to\" missing"),
            ("from up0 group 239.1.1.1 to", "no outgoing interface"),
            (
                "from up0 source x group 239.1.1.1 to dn1",
                "not an IPv4 address",
            ),
            (
                "from up0 group 239.1.1.1 to up0",
                "cannot also be an outgoing",
            ),
        ] {
            let e = route.parse::<StaticRoute>().unwrap_err().to_string();
            assert!(e.contains(why), "{route:?}: {e}");
        }
    }

    #[test]
    fn spec4_4_local_joins_pass_through_and_never_remove_a_configured_membership() {
        use crate::core::{Config, Instant, Mgm};
        let dn = InterfaceId::new(2);
        let star = SourceGroupEntry::star_g(G);
        let other = SourceGroupEntry::star_g(Ipv4Addr::new(239, 1, 1, 1));
        let mut mgm = Mgm::new(Config::default());
        let now = Instant::from_millis(0);
        let st = mgm
            .register(
                Box::new(StaticRoutes::new(
                    &["from up0 group 239.6.6.6 to dn2".parse().unwrap()],
                    Names::new([(2, "dn2".to_owned())].into()),
                )),
                PROTOCOL_ID,
                COMPONENT_ID,
            )
            .unwrap();
        mgm.take_interface_ownership(st, dn, now).unwrap();
        mgm.add_group_membership_entry(st, star, dn, MGM_JOIN_STATE_FLAG, now)
            .unwrap();
        let igmp = crate::protocols::igmp::Igmp::register(&mut mgm)
            .unwrap()
            .handle();
        mgm.take_interface_ownership(igmp, dn, now).unwrap();
        // A host joins and leaves the configured group and another group.
        for sg in [star, other] {
            mgm.add_group_membership_entry(igmp, sg, dn, MGM_JOIN_STATE_FLAG, now)
                .unwrap();
        }
        let mut e = mgm
            .group_enumeration_start(st, crate::core::ANY_SOURCE)
            .unwrap();
        let groups: Vec<Ipv4Addr> = mgm
            .group_enumeration_get_next(e, 1 << 16)
            .unwrap()
            .records
            .iter()
            .map(|r| r.group)
            .collect();
        assert!(
            groups.contains(&G) && groups.contains(&other.group),
            "{groups:?}"
        );
        mgm.group_enumeration_end(e).unwrap();
        for sg in [star, other] {
            mgm.delete_group_membership_entry(igmp, sg, dn, MGM_JOIN_STATE_FLAG, now)
                .unwrap();
        }
        e = mgm
            .group_enumeration_start(st, crate::core::ANY_SOURCE)
            .unwrap();
        let groups: Vec<Ipv4Addr> = mgm
            .group_enumeration_get_next(e, 1 << 16)
            .map(|b| b.records.iter().map(|r| r.group).collect())
            .unwrap_or_default();
        assert_eq!(
            groups,
            [G],
            "the configured route stays, the passed-on one goes"
        );
    }
}
