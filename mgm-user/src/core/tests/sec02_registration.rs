//! Spec §2: registration and deregistration.

use super::harness::*;
use crate::core::{
    ComponentId, Config, Cx, Instant, InterfaceId, MgmError, MgmIfEntry, RouteInfo,
    RoutingProtocol, SourceGroupEntry, ALL_SOURCES,
};
use std::net::Ipv4Addr;

#[test]
fn sec2_1_doc_register_returns_handle_and_duplicate_pair_is_already_exists() {
    let mut t = Harness::new();
    let pim = t.try_register("pim", PIM, 1);
    assert!(pim.is_ok());
    assert_eq!(t.try_register("pim2", PIM, 1), Err(MgmError::AlreadyExists));
}

#[test]
fn sec2_1_doc_same_protocol_other_component_is_separate_instance() {
    let mut t = Harness::new();
    let a = t.try_register("pim", PIM, 1).unwrap();
    let b = t.try_register("pim2", PIM, 2).unwrap();
    assert_ne!(a, b);
    t.own(a, ETH1);
    t.own(b, ETH2);
    assert_eq!(
        t.mgm.get_protocol_on_interface(ETH2),
        Ok((PIM, ComponentId(2)))
    );
}

#[test]
fn sec2_1_capacity_used_up_is_not_enough_memory() {
    let mut t = Harness::with_config(Config {
        max_registrations: 1,
        ..Config::default()
    });
    t.register("pim", PIM);
    assert_eq!(
        t.try_register("dvmrp", DVMRP, 1),
        Err(MgmError::NotEnoughMemory)
    );
}

/// A client that implements no callback at all.
struct Silent;
impl RoutingProtocol for Silent {}

/// A client that only records the out-parameters its predecessor (the default) left.
struct Probe;
impl RoutingProtocol for Probe {
    fn rpf(
        &mut self,
        cx: &mut Cx,
        sg: SourceGroupEntry,
        iif: &mut InterfaceId,
        upstream: &mut Ipv4Addr,
        hdr: &[u8],
        route: &mut RouteInfo,
    ) {
        // Delegate to the default body: it must leave every out-parameter untouched.
        let before = (*iif, *upstream, *route);
        Silent.rpf(cx, sg, iif, upstream, hdr, route);
        assert_eq!(before, (*iif, *upstream, *route));
    }

    fn creation_alert(
        &mut self,
        cx: &mut Cx,
        sg: SourceGroupEntry,
        iif: InterfaceId,
        oifs: &mut [MgmIfEntry],
    ) {
        let before = oifs.to_vec();
        Silent.creation_alert(cx, sg, iif, oifs);
        assert_eq!(before, oifs);
    }
}

#[test]
fn sec2_1_dec_absent_callbacks_are_noops_that_keep_out_parameters() {
    // given: a client with no callbacks owns the RPF interface, another owns the OIF
    let mut t = Harness::new();
    let silent = t
        .mgm
        .register(Box::new(Silent), PIM, ComponentId(1))
        .unwrap();
    let probe = t
        .mgm
        .register(Box::new(Probe), DVMRP, ComponentId(1))
        .unwrap();
    t.own(silent, ETH1);
    t.own(probe, ETH2);
    t.join(probe, star(G1), ETH2);
    t.ops();
    // when: a packet arrives
    t.packet(S1, G1, ETH1);
    // then: the RPF answer is the route's, the OIF is not vetoed, the lifetime is the default
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH2])]);
    let rec = t.mgm.get_mfe(S1, G1, 1000, t.now).unwrap();
    assert_eq!((rec.upstream, rec.timeout_s), (UP1, 900));
    // and a silent client turning the MFE negative keeps the 900 s timeout
    t.leave(probe, star(G1), ETH2);
    let rec = t.mgm.get_mfe(S1, G1, 1000, t.now).unwrap();
    assert_eq!(rec.timeout_s, 900);
}

#[test]
fn sec2_1_doc_only_igmp_gets_disable_and_enable() {
    let mut t = Harness::new();
    let igmp = t.register("igmp", IGMP);
    let pim = t.register("pim", PIM);
    let dvmrp = t.register("dvmrp", DVMRP);
    t.own(igmp, ETH3);
    t.own(dvmrp, ETH4);
    t.own(pim, ETH3);
    t.release(pim, ETH3).unwrap();
    let calls = t.calls();
    assert!(calls
        .iter()
        .filter(|(_, cb)| matches!(cb, Cb::DisableIgmp(_) | Cb::EnableIgmp(_)))
        .all(|(to, _)| *to == "igmp"));
    assert_eq!(calls.len(), 4);
}

#[test]
fn sec2_1_doc_add_before_take_ownership_is_invalid_parameter() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    assert_eq!(
        t.add(pim, star(G1), ETH1, JOIN),
        Err(MgmError::InvalidParameter)
    );
}

#[test]
fn sec2_1_inf_registration_alone_makes_a_client_an_alert_target() {
    // given: dvmrp registered but owns nothing
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    t.register("dvmrp", DVMRP);
    t.own(pim, ETH2);
    // when
    t.join(pim, star(G1), ETH2);
    // then
    assert_eq!(t.calls(), [join_alert("dvmrp", star(G1), true)]);
}

#[test]
fn sec2_2_doc_deregister_while_owning_is_can_not_complete_and_handle_stays_valid() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    t.own(pim, ETH1);
    assert_eq!(t.mgm.deregister(pim), Err(MgmError::CanNotComplete));
    assert_eq!(t.release(pim, ETH1), Ok(()));
    assert_eq!(t.mgm.deregister(pim), Ok(()));
}

#[test]
fn sec2_2_doc_invalid_handle_is_invalid_parameter() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    t.mgm.deregister(pim).unwrap();
    assert_eq!(t.mgm.deregister(pim), Err(MgmError::InvalidParameter));
}

#[test]
fn sec2_2_dec_deregister_invalidates_handle_and_closes_enumerations() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    let e = t.mgm.group_enumeration_start(pim, ALL_SOURCES).unwrap();
    t.mgm.deregister(pim).unwrap();
    assert_eq!(
        t.mgm.group_enumeration_get_next(e, 160),
        Err(MgmError::InvalidParameter)
    );
    assert_eq!(
        t.mgm.group_enumeration_end(e),
        Err(MgmError::InvalidParameter)
    );
    let now = Instant::from_millis(0);
    assert_eq!(
        t.mgm.take_interface_ownership(pim, ETH1, now),
        Err(MgmError::InvalidParameter)
    );
}

#[test]
fn sec2_2_doc_deregister_invokes_no_callback_and_pair_can_register_again() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    t.register("dvmrp", DVMRP);
    t.mgm.deregister(pim).unwrap();
    assert_eq!(t.calls(), []);
    let again = t.try_register("pim", PIM, 1).unwrap();
    assert_ne!(again, pim, "handles are never reused");
}
