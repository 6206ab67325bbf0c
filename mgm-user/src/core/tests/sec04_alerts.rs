//! Spec §4.5–§4.7: membership-driven join and prune alerts, and MFE-level alerts.

use super::harness::*;
use crate::core::ProtocolHandle;

/// pim, dvmrp and igmp registered; pim owns ETH1 (toward S1) and ETH2, dvmrp ETH3, igmp ETH4.
fn three_clients() -> (Harness, ProtocolHandle, ProtocolHandle, ProtocolHandle) {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    let dvmrp = t.register("dvmrp", DVMRP);
    let igmp = t.register("igmp", IGMP);
    t.own(pim, ETH1);
    t.own(pim, ETH2);
    t.own(dvmrp, ETH3);
    t.own(igmp, ETH4);
    (t, pim, dvmrp, igmp)
}

#[test]
fn sec4_5_doc_star_g_first_holder_alerts_every_other_registered_client() {
    let (mut t, _pim, dvmrp, _igmp) = three_clients();
    t.join(dvmrp, star(G1), ETH3);
    // ascending (protocol id, component id): igmp (10), pim (103)
    assert_eq!(
        t.calls(),
        [
            join_alert("igmp", star(G1), true),
            join_alert("pim", star(G1), true),
        ]
    );
}

#[test]
fn sec4_5_doc_star_g_second_holder_alerts_only_the_first() {
    let (mut t, pim, dvmrp, _igmp) = three_clients();
    t.join(dvmrp, star(G1), ETH3);
    t.settle();
    t.join(pim, star(G1), ETH2);
    assert_eq!(t.calls(), [join_alert("dvmrp", star(G1), true)]);
}

#[test]
fn sec4_5_doc_star_g_third_holder_and_extra_interfaces_send_nothing() {
    let (mut t, pim, dvmrp, igmp) = three_clients();
    t.join(dvmrp, star(G1), ETH3);
    t.join(pim, star(G1), ETH2);
    t.settle();
    t.join(igmp, star(G1), ETH4);
    t.join(pim, star(G1), ETH1);
    assert_eq!(t.calls(), []);
}

#[test]
fn sec4_5_doc_sg_alerts_only_the_rpf_interface_owner() {
    let (mut t, _pim, dvmrp, _igmp) = three_clients();
    t.join(dvmrp, sg(S1, G1), ETH3);
    assert_eq!(t.calls(), [join_alert("pim", sg(S1, G1), true)]);
    // a second holder of (S1,G1) is not a first holder
    let igmp = t.mgm.get_protocol_on_interface(ETH4).unwrap();
    assert_eq!(igmp.0, IGMP);
}

#[test]
fn sec4_5_doc_sg_second_holder_sends_nothing() {
    let (mut t, _pim, dvmrp, igmp) = three_clients();
    t.join(dvmrp, sg(S1, G1), ETH3);
    t.settle();
    t.join(igmp, sg(S1, G1), ETH4);
    assert_eq!(t.calls(), []);
}

#[test]
fn sec4_5_dec_sg_no_alert_when_caller_owns_the_rpf_interface() {
    let (mut t, pim, _dvmrp, _igmp) = three_clients();
    t.join(pim, sg(S1, G1), ETH2);
    assert_eq!(t.calls(), []);
}

#[test]
fn sec4_5_dec_sg_no_alert_without_route_or_rpf_owner() {
    let (mut t, pim, dvmrp, _igmp) = three_clients();
    t.join(dvmrp, sg(S_NOROUTE, G1), ETH3);
    assert_eq!(t.calls(), [], "no route");
    t.release(pim, ETH2).unwrap();
    t.settle();
    t.join(dvmrp, sg(S2, G1), ETH3);
    assert_eq!(t.calls(), [], "route via unowned ETH2");
}

#[test]
fn sec4_5_dec_star_star_uses_the_star_g_rule_on_its_own_key() {
    let (mut t, pim, dvmrp, _igmp) = three_clients();
    t.join(pim, star(G1), ETH2);
    t.settle();
    // (*,*) holders do not count toward (*,G1): dvmrp is the first (*,*) holder
    t.join(dvmrp, star_star(), ETH3);
    assert_eq!(
        t.calls(),
        [
            join_alert("igmp", star_star(), true),
            join_alert("pim", star_star(), true),
        ]
    );
    t.join(pim, star_star(), ETH2);
    assert_eq!(t.calls(), [join_alert("dvmrp", star_star(), true)]);
    // and the reverse: a (*,G1) second holder is not affected by (*,*) holders
    t.join(dvmrp, star(G1), ETH3);
    assert_eq!(t.calls(), [join_alert("pim", star(G1), true)]);
}

#[test]
fn sec4_6_doc_star_g_one_remaining_holder_is_alerted() {
    let (mut t, pim, dvmrp, _igmp) = three_clients();
    t.join(dvmrp, star(G1), ETH3);
    t.join(pim, star(G1), ETH2);
    t.settle();
    t.leave(pim, star(G1), ETH2);
    assert_eq!(t.calls(), [prune_alert("dvmrp", star(G1), ETH2, true, 900)]);
}

#[test]
fn sec4_6_doc_star_g_no_holder_left_alerts_every_other_registered_client() {
    let (mut t, _pim, dvmrp, _igmp) = three_clients();
    t.join(dvmrp, star(G1), ETH3);
    t.settle();
    t.leave(dvmrp, star(G1), ETH3);
    assert_eq!(
        t.calls(),
        [
            prune_alert("igmp", star(G1), ETH3, true, 900),
            prune_alert("pim", star(G1), ETH3, true, 900),
        ]
    );
}

#[test]
fn sec4_6_doc_two_or_more_remaining_holders_or_remaining_interfaces_send_nothing() {
    let (mut t, pim, dvmrp, igmp) = three_clients();
    t.join(dvmrp, star(G1), ETH3);
    t.join(pim, star(G1), ETH2);
    t.join(pim, star(G1), ETH1);
    t.join(igmp, star(G1), ETH4);
    t.settle();
    t.leave(pim, star(G1), ETH2);
    assert_eq!(t.calls(), [], "pim still holds G1 on ETH1");
    t.leave(pim, star(G1), ETH1);
    assert_eq!(t.calls(), [], "two holders remain");
}

#[test]
fn sec4_6_dec_sg_prune_goes_to_rpf_owner_when_holder_set_empties() {
    let (mut t, _pim, dvmrp, igmp) = three_clients();
    t.join(dvmrp, sg(S1, G1), ETH3);
    t.join(igmp, sg(S1, G1), ETH4);
    t.settle();
    t.leave(dvmrp, sg(S1, G1), ETH3);
    assert_eq!(t.calls(), [], "igmp still holds (S1,G1)");
    t.leave(igmp, sg(S1, G1), ETH4);
    assert_eq!(t.calls(), [prune_alert("pim", sg(S1, G1), ETH4, true, 900)]);
}

#[test]
fn sec4_6_doc_timeout_output_is_ignored_in_membership_prunes() {
    let (mut t, pim, dvmrp, _igmp) = three_clients();
    t.packet(S2, G1, ETH2);
    t.join(dvmrp, star(G1), ETH3);
    t.join(pim, star(G1), ETH1);
    t.settle();
    t.script("dvmrp").prune_timeout = Some(5);
    t.leave(pim, star(G1), ETH1);
    assert_eq!(t.calls(), [prune_alert("dvmrp", star(G1), ETH1, true, 900)]);
    let rec = t.mgm.get_mfe(S2, G1, 1000, t.now).unwrap();
    assert_eq!(rec.timeout_s, 900);
}

#[test]
fn sec4_7_dec_graft_sends_join_alert_to_iif_owner() {
    // given: a negative MFE (S1,G1) with iif ETH1 (pim)
    let (mut t, _pim, dvmrp, _igmp) = three_clients();
    t.packet(S1, G1, ETH1);
    t.settle();
    // when: dvmrp joins (S1,G1)
    t.join(dvmrp, sg(S1, G1), ETH3);
    // then: membership alert, map write, then the MFE-level graft alert
    assert_eq!(
        t.calls(),
        [
            join_alert("pim", sg(S1, G1), true),
            join_alert("pim", sg(S1, G1), false),
        ]
    );
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH3])]);
}

#[test]
fn sec4_7_dec_turning_negative_sends_prune_alert_whose_timeout_restarts_lifetime() {
    let (mut t, _pim, dvmrp, _igmp) = three_clients();
    t.join(dvmrp, star(G1), ETH3);
    t.packet(S1, G1, ETH1);
    t.advance(100);
    t.settle();
    t.script("pim").prune_timeout = Some(30);
    t.leave(dvmrp, star(G1), ETH3);
    assert_eq!(
        t.calls(),
        [
            prune_alert("igmp", star(G1), ETH3, true, 900),
            prune_alert("pim", star(G1), ETH3, true, 900),
            prune_alert("pim", sg(S1, G1), ETH1, false, 900),
        ]
    );
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[])]);
    t.advance(29);
    assert_eq!(t.ops(), []);
    t.advance(1);
    assert_eq!(t.ops(), [delete(S1, G1)]);
}

#[test]
fn sec4_7_dec_owner_readd_clears_its_own_veto() {
    // given: dvmrp vetoed ETH3 at creation
    let (mut t, _pim, dvmrp, _igmp) = three_clients();
    t.join(dvmrp, star(G1), ETH3);
    t.script("dvmrp").veto.insert(ETH3);
    t.packet(S1, G1, ETH1);
    t.settle();
    // when: dvmrp re-adds the same membership
    t.join(dvmrp, star(G1), ETH3);
    // then: no membership alert (a duplicate), but the veto is gone: graft
    assert_eq!(t.calls(), [join_alert("pim", sg(S1, G1), false)]);
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH3])]);
}

#[test]
fn sec4_7_dec_incremental_updates_never_invoke_creation_alert_again() {
    let (mut t, pim, dvmrp, _igmp) = three_clients();
    t.join(dvmrp, star(G1), ETH3);
    t.packet(S1, G1, ETH1);
    t.settle();
    t.join(pim, star(G1), ETH2);
    t.leave(dvmrp, star(G1), ETH3);
    assert!(t
        .calls()
        .iter()
        .all(|(_, cb)| !matches!(cb, Cb::CreationAlert { .. })));
}

#[test]
fn sec4_7_dec_vetoed_oif_stays_out_while_join_state_changes() {
    let (mut t, pim, dvmrp, _igmp) = three_clients();
    t.join(dvmrp, star(G1), ETH3);
    t.join(pim, star(G1), ETH2);
    t.script("dvmrp").veto.insert(ETH3);
    t.packet(S1, G1, ETH1);
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH2])]);
    t.join(pim, sg(S1, G1), ETH2);
    t.leave(pim, star(G1), ETH2);
    assert_eq!(t.ops(), []);
}

#[test]
fn sec4_6_dec_star_star_prune_uses_the_star_g_rule_on_its_own_key() {
    let (mut t, pim, dvmrp, _igmp) = three_clients();
    t.join(pim, star(G1), ETH2);
    t.join(dvmrp, star_star(), ETH3);
    t.join(pim, star_star(), ETH2);
    t.settle();
    t.leave(pim, star_star(), ETH2);
    assert_eq!(
        t.calls(),
        [prune_alert("dvmrp", star_star(), ETH2, true, 900)]
    );
    t.leave(dvmrp, star_star(), ETH3);
    assert_eq!(
        t.calls(),
        [
            prune_alert("igmp", star_star(), ETH3, true, 900),
            prune_alert("pim", star_star(), ETH3, true, 900),
        ]
    );
}

#[test]
fn sec4_7_ordering_membership_alerts_then_map_writes_then_mfe_level_alerts() {
    // Membership alerts come first; the MFE-level graft alert follows the map write.
    let (mut t, _pim, dvmrp, _igmp) = three_clients();
    t.packet(S1, G1, ETH1);
    t.settle();
    t.join(dvmrp, star(G1), ETH3);
    let calls = t.calls();
    let graft = calls
        .iter()
        .position(|c| *c == join_alert("pim", sg(S1, G1), false))
        .unwrap();
    let member = calls
        .iter()
        .position(|c| *c == join_alert("pim", star(G1), true))
        .unwrap();
    assert!(member < graft, "{calls:?}");
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH3])]);
}

#[test]
fn sec4_7_dec_owner_forward_add_clears_its_own_veto() {
    // given: dvmrp vetoed ETH3 at creation, so the MFE is negative
    let (mut t, _pim, dvmrp, _igmp) = three_clients();
    t.join(dvmrp, star(G1), ETH3);
    t.script("dvmrp").veto.insert(ETH3);
    t.packet(S1, G1, ETH1);
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[])]);
    t.settle();
    // when: dvmrp adds FORWARD state on the vetoed interface
    t.add(dvmrp, star(G1), ETH3, FORWARD).unwrap();
    // then: the veto is gone and the MFE is grafted
    assert_eq!(t.calls(), [join_alert("pim", sg(S1, G1), false)]);
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH3])]);
}

#[test]
fn sec4_7_dec_no_mfe_level_alert_while_the_oif_list_stays_non_empty() {
    // given: a positive MFE (S1,G1) forwarding on dvmrp's ETH3
    let (mut t, pim, dvmrp, _igmp) = three_clients();
    t.join(dvmrp, star(G1), ETH3);
    t.packet(S1, G1, ETH1);
    t.settle();
    // when: an OIF is added, then removed again, and the list never becomes empty
    t.join(pim, star(G1), ETH2);
    // then: only the membership alerts, no bMemberUpdate = FALSE / bMemberDelete = FALSE
    assert_eq!(t.calls(), [join_alert("dvmrp", star(G1), true)]);
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH2, ETH3])]);
    t.leave(pim, star(G1), ETH2);
    assert_eq!(t.calls(), [prune_alert("dvmrp", star(G1), ETH2, true, 900)]);
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH3])]);
}
