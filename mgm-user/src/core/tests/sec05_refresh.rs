//! Spec §5.6 refresh in place [Dec] and §9 item 11 [Dec]: an MFE whose lifetime ends while its
//! flow is active, or whose RPF answer a route change moved, is resolved again (RPF callback,
//! creation alerts) and its entry replaced, never deleted first; an idle one is deleted.

use super::harness::*;
use crate::core::{InterfaceId, MfeCounters, MgmIfEntry, ProtocolHandle, Route, RouteInfo};
use std::net::Ipv4Addr;
use std::time::Duration;

/// pim owns ETH1 (toward S1) and ETH2 (toward S2), dvmrp owns ETH3; receivers of G1 behind ETH2
/// and ETH3; the MFE (S1, G1) exists and its creation was logged and drained.
fn flowing() -> (Harness, ProtocolHandle, ProtocolHandle) {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    let dvmrp = t.register("dvmrp", DVMRP);
    t.own(pim, ETH1);
    t.own(pim, ETH2);
    t.own(dvmrp, ETH3);
    t.join(pim, star(G1), ETH2);
    t.join(dvmrp, star(G1), ETH3);
    t.packet(S1, G1, ETH1);
    t.settle();
    (t, pim, dvmrp)
}

const ETH77: InterfaceId = InterfaceId::new(77);

impl Harness {
    /// The data plane reports `pkts` packets matched (S,G) so far.
    fn flow(&mut self, s: Ipv4Addr, g: Ipv4Addr, pkts: u64) {
        let c = MfeCounters {
            in_pkts: pkts,
            ..MfeCounters::default()
        };
        self.mgm.set_mfe_counters(s, g, c).unwrap();
    }

    fn route(&mut self, network: Ipv4Addr, prefix_len: u8, if_id: InterfaceId, up: Ipv4Addr) {
        self.route_metric(network, prefix_len, if_id, up, 0);
    }

    fn route_metric(
        &mut self,
        network: Ipv4Addr,
        prefix_len: u8,
        if_id: InterfaceId,
        up: Ipv4Addr,
        metric: u32,
    ) {
        let route = Route {
            network,
            prefix_len,
            if_id,
            upstream: up,
            protocol: 4,
            metric,
        };
        let now = self.now;
        self.mgm.add_route(route, now).unwrap();
    }
}

fn rpf(iif: InterfaceId, upstream: Ipv4Addr, route: RouteInfo) -> Cb {
    Cb::Rpf {
        sg: sg(S1, G1),
        iif,
        upstream,
        hdr_len: 20,
        route,
    }
}

fn via_eth1() -> RouteInfo {
    RouteInfo {
        protocol: 2,
        network: Ipv4Addr::new(10, 1, 0, 0),
        mask: Ipv4Addr::new(255, 255, 0, 0),
    }
}

fn creation(iif: InterfaceId, oifs: &[InterfaceId]) -> Cb {
    Cb::CreationAlert {
        sg: sg(S1, G1),
        iif,
        oifs: oifs
            .iter()
            .map(|id| MgmIfEntry {
                if_id: *id,
                igmp: false,
                enabled: true,
            })
            .collect(),
    }
}

#[test]
fn sec5_6_dec_active_mfe_is_resolved_again_at_expiry_and_keeps_its_entry() {
    // given: the flow carried packets during the lifetime
    let (mut t, _pim, _dvmrp) = flowing();
    t.advance(600);
    t.flow(S1, G1, 10);
    // when: the lifetime ends
    t.advance(300);
    // then: RPF (with the creating packet's header) and the creation alerts run again
    assert_eq!(
        t.calls(),
        [
            ("pim", rpf(ETH1, UP1, via_eth1())),
            ("pim", creation(ETH1, &[ETH2])),
            ("dvmrp", creation(ETH1, &[ETH3])),
        ]
    );
    // the entry already holds the answer: no op at all, so nothing was deleted in between
    assert_eq!(t.ops(), []);
    t.assert_map_matches();
    // and a new lifetime starts
    assert_eq!(t.mgm.poll_timeout(), Some(t.now + Duration::from_secs(900)));
    let rec = t.mgm.get_mfe(S1, G1, 1000, t.now).unwrap();
    assert_eq!((rec.up_time_s, rec.expiry_time_s), (0, 900));
}

#[test]
fn sec5_6_dec_idle_mfe_is_deleted_at_expiry_without_callbacks() {
    // given: a flow that was active in the first lifetime, then stopped
    let (mut t, _pim, _dvmrp) = flowing();
    t.flow(S1, G1, 10);
    t.advance(900);
    t.settle();
    // when: the second lifetime ends with the count where it was
    t.advance(900);
    // then
    assert_eq!(t.calls(), []);
    assert_eq!(t.ops(), [delete(S1, G1)]);
    assert_eq!(t.mgm.poll_timeout(), None);
}

#[test]
fn sec5_6_dec_refresh_carries_new_vetoes_and_a_new_iif_in_one_replacing_install() {
    // given: an active flow; at refresh dvmrp vetoes ETH3 and pim's RPF answer moves the iif
    // to ETH2
    let (mut t, _pim, _dvmrp) = flowing();
    t.flow(S1, G1, 10);
    t.script("dvmrp").veto.insert(ETH3);
    t.script("pim").rpf_answer = Some((ETH2, UP2));
    // when
    t.advance(900);
    // then: ETH2, now the iif, is offered to nobody; dvmrp's veto leaves no OIF, so the
    // replacement is negative and its iif owner hears so
    let calls = t.calls();
    assert_eq!(calls[0], ("pim", rpf(ETH1, UP1, via_eth1())));
    assert_eq!(calls[1], ("dvmrp", creation(ETH2, &[ETH3])));
    assert_eq!(calls[2], prune_alert("pim", sg(S1, G1), ETH2, false, 900));
    assert_eq!(t.ops(), [install(S1, G1, ETH2, &[])]);
    let rec = t.mgm.get_mfe(S1, G1, 1000, t.now).unwrap();
    assert_eq!((rec.in_if, rec.upstream), (ETH2, UP2));
    // the next refresh asks again: without the veto ETH3 comes back, with a graft alert
    t.script("dvmrp").veto.clear();
    t.flow(S1, G1, 20);
    t.advance(900);
    assert!(t.calls().contains(&join_alert("pim", sg(S1, G1), false)));
    assert_eq!(t.ops(), [install(S1, G1, ETH2, &[ETH3])]);
}

#[test]
fn sec5_6_dec_refresh_whose_rpf_ends_on_an_unowned_interface_deletes() {
    // given: an active flow whose RPF owner now points it at an interface nobody owns
    let (mut t, _pim, _dvmrp) = flowing();
    t.flow(S1, G1, 10);
    t.script("pim").rpf_answer = Some((ETH77, UP1));
    // when
    t.advance(900);
    // then: RPF ran, nobody can vouch for the result: deleted as at expiry
    let calls = t.calls();
    assert_eq!(calls, [("pim", rpf(ETH1, UP1, via_eth1()))]);
    assert_eq!(t.ops(), [delete(S1, G1)]);
}

#[test]
fn sec9_11_dec_route_change_moves_the_iif_within_a_second_in_place() {
    // given: the flow enters on ETH1
    let (mut t, _pim, _dvmrp) = flowing();
    t.advance(10);
    // when: a more specific route sends S1's traffic in through ETH2
    t.route(S1, 32, ETH2, UP2);
    // then: nothing before the burst delay, then the refresh: RPF to ETH2's owner, creation
    // alerts without ETH2 (the new iif), one install that replaces the entry
    assert_eq!(t.calls(), []);
    t.advance_by(crate::core::REROUTE_DELAY);
    assert!(crate::core::REROUTE_DELAY < Duration::from_secs(1));
    let route32 = RouteInfo {
        protocol: 4,
        network: S1,
        mask: Ipv4Addr::BROADCAST,
    };
    assert_eq!(
        t.calls(),
        [
            ("pim", rpf(ETH2, UP2, route32)),
            ("dvmrp", creation(ETH2, &[ETH3])),
        ]
    );
    assert_eq!(t.ops(), [install(S1, G1, ETH2, &[ETH3])]);
    // the lifetime goes on: a route change is not an expiry
    assert_eq!(
        t.mgm.poll_timeout(),
        Some(t.now + (Duration::from_secs(890) - crate::core::REROUTE_DELAY))
    );
    // and removing the route moves it back
    let now = t.now;
    t.mgm.delete_route(S1, 32, 0, now);
    t.advance_by(crate::core::REROUTE_DELAY);
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH2, ETH3])]);
}

#[test]
fn sec9_11_dec_route_changes_that_leave_the_rpf_answer_alone_move_nothing() {
    // given
    let (mut t, _pim, _dvmrp) = flowing();
    // when: a less specific route covering S1, and a change of another source's route
    t.route(
        Ipv4Addr::new(10, 0, 0, 0),
        8,
        ETH3,
        Ipv4Addr::new(10, 9, 0, 1),
    );
    t.route(
        Ipv4Addr::new(10, 2, 0, 0),
        16,
        ETH3,
        Ipv4Addr::new(10, 9, 0, 1),
    );
    t.advance(1);
    // then
    assert_eq!(t.calls(), []);
    assert_eq!(t.ops(), []);
}

#[test]
fn sec9_11_dec_a_burst_of_changes_moves_the_mfe_once_to_where_it_ends() {
    // given
    let (mut t, _pim, _dvmrp) = flowing();
    // when: a routing daemon withdraws S1's route, then installs one via ETH2
    let now = t.now;
    t.mgm.delete_route(Ipv4Addr::new(10, 1, 0, 0), 16, 0, now);
    t.route(Ipv4Addr::new(10, 1, 0, 0), 16, ETH2, UP2);
    t.advance(1);
    // then: one refresh, one install
    let rpfs = t
        .calls()
        .into_iter()
        .filter(|(_, cb)| matches!(cb, Cb::Rpf { .. }))
        .count();
    assert_eq!(rpfs, 1);
    assert_eq!(t.ops(), [install(S1, G1, ETH2, &[ETH3])]);
}

#[test]
fn sec9_11_dec_the_lowest_metric_counts_and_its_withdrawal_falls_back_to_the_next() {
    // given: a backup route to S1's prefix via ETH2 with a higher metric than the route via ETH1
    let (mut t, _pim, _dvmrp) = flowing();
    let net = Ipv4Addr::new(10, 1, 0, 0);
    t.route_metric(net, 16, ETH2, UP2, 100);
    t.advance(1);
    assert_eq!(t.ops(), [], "the backup does not win");
    // when: the preferred route is withdrawn
    let now = t.now;
    t.mgm.delete_route(net, 16, 0, now);
    t.advance(1);
    // then: the backup takes over
    assert_eq!(t.ops(), [install(S1, G1, ETH2, &[ETH3])]);
    // and deleting a metric that does not exist changes nothing
    let now = t.now;
    assert_eq!(t.mgm.delete_route(net, 16, 7, now), None);
    t.advance(1);
    assert_eq!(t.ops(), []);
}

/// `n` groups 239.9.x.y with an MFE from S1 each, created now.
fn many_mfes(t: &mut Harness, n: u32) -> Vec<Ipv4Addr> {
    let groups: Vec<Ipv4Addr> = (0..n)
        .map(|i| Ipv4Addr::from(u32::from(Ipv4Addr::new(239, 9, 0, 0)) + i))
        .collect();
    for g in &groups {
        t.packet(S1, *g, ETH1);
    }
    t.settle();
    groups
}

#[test]
fn sec5_6_dec_mfes_ending_together_expire_a_bounded_batch_per_call_until_none_is_due() {
    use crate::core::TIMEOUTS_PER_CALL;
    // given: more MFEs than one call expires, all created in the same instant (as a restart's
    // adopted ones are); every third carried packets, (S1, G1) did not
    let (mut t, _pim, _dvmrp) = flowing();
    let groups = many_mfes(&mut t, 2 * TIMEOUTS_PER_CALL as u32 + 7);
    let active: Vec<Ipv4Addr> = groups.iter().step_by(3).copied().collect();
    t.advance(600);
    for g in &active {
        t.flow(S1, *g, 4);
    }
    // when: their lifetime ends, one call at a time at that instant
    t.advance(299);
    let at = t.mgm.poll_timeout().unwrap();
    t.now = at;
    let mut calls = 0;
    while t.mgm.poll_timeout().is_some_and(|d| d <= at) {
        let due = t.mgm.expiring(at);
        assert!(!due.is_empty() && due.len() <= TIMEOUTS_PER_CALL);
        let before = t.mgm.forwarding_table();
        t.mgm.handle_timeout(at);
        calls += 1;
        let after = t.mgm.forwarding_table();
        // then: the call handled exactly the MFEs `expiring` named: idle ones deleted, active
        // ones refreshed in place; the others untouched until their turn
        for key in before.keys() {
            let named = due.contains(key);
            let kept = after.contains_key(key);
            let was_active = active.contains(&key.1);
            assert_eq!(kept, !named || was_active, "{key:?} named {named}");
            if named && was_active {
                let rec = t.mgm.get_mfe(key.0, key.1, 1000, at).unwrap();
                assert_eq!(rec.up_time_s, 0, "{key:?} refreshed");
            }
        }
        assert!(calls <= groups.len(), "no progress");
    }
    assert_eq!(calls, (groups.len() + 1).div_ceil(TIMEOUTS_PER_CALL));
    // and the survivors are the flows, each with a new lifetime
    let left: Vec<Ipv4Addr> = t.mgm.forwarding_table().keys().map(|k| k.1).collect();
    assert_eq!(left, active);
    assert_eq!(t.mgm.poll_timeout(), Some(at + Duration::from_secs(900)));
    t.assert_map_matches();
}

#[test]
fn sec9_11_dec_a_route_change_under_many_mfes_moves_them_a_bounded_batch_per_call() {
    use crate::core::{REROUTE_DELAY, TIMEOUTS_PER_CALL};
    // given: more MFEs from S1 than one call moves
    let (mut t, _pim, _dvmrp) = flowing();
    let groups = many_mfes(&mut t, 2 * TIMEOUTS_PER_CALL as u32 + 7);
    // when: a route sends S1 in through ETH2, and its burst delay passes
    t.route(S1, 32, ETH2, UP2);
    let at = t.now + REROUTE_DELAY;
    t.now = at;
    let on_eth2 = |t: &Harness| {
        t.mgm
            .forwarding_table()
            .values()
            .filter(|(iif, _)| *iif == ETH2)
            .count()
    };
    let mut calls = 0;
    while t.mgm.poll_timeout().is_some_and(|d| d <= at) {
        let before = on_eth2(&t);
        t.mgm.handle_timeout(at);
        calls += 1;
        // then: each call moves at most its share, and at least one
        let moved = on_eth2(&t) - before;
        assert!((1..=TIMEOUTS_PER_CALL).contains(&moved), "{moved} moved");
    }
    // all of them, within that instant, and the lifetimes go on
    assert_eq!(on_eth2(&t), groups.len() + 1);
    assert_eq!(calls, (groups.len() + 1).div_ceil(TIMEOUTS_PER_CALL));
    assert!(t.mgm.poll_timeout().unwrap() > at);
    t.assert_map_matches();
}
