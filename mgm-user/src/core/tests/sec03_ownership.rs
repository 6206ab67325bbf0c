//! Spec §3: interface ownership, IGMP co-ownership and the disable/enable sequence.

use super::harness::*;
use crate::core::{ComponentId, Config, MgmError, Request};

#[test]
fn sec3_doc_at_most_one_non_igmp_owner() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    let dvmrp = t.register("dvmrp", DVMRP);
    t.own(pim, ETH1);
    let now = t.now;
    assert_eq!(
        t.mgm.take_interface_ownership(dvmrp, ETH1, now),
        Err(MgmError::AlreadyExists)
    );
    assert_eq!(
        t.mgm.get_protocol_on_interface(ETH1),
        Ok((PIM, ComponentId(1)))
    );
}

#[test]
fn sec3_doc_next_hops_are_distinct_interfaces() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    let dvmrp = t.register("dvmrp", DVMRP);
    t.own(pim, NBMA_A);
    t.own(dvmrp, NBMA_B);
    assert_eq!(
        t.mgm.get_protocol_on_interface(NBMA_B),
        Ok((DVMRP, ComponentId(1)))
    );
}

#[test]
fn sec3_1_doc_invalid_handle_is_invalid_parameter() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    t.mgm.deregister(pim).unwrap();
    let now = t.now;
    assert_eq!(
        t.mgm.take_interface_ownership(pim, ETH1, now),
        Err(MgmError::InvalidParameter)
    );
}

#[test]
fn sec3_1_dec_retake_is_already_exists() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    let igmp = t.register("igmp", IGMP);
    t.own(pim, ETH1);
    t.own(igmp, ETH1);
    let now = t.now;
    assert_eq!(
        t.mgm.take_interface_ownership(pim, ETH1, now),
        Err(MgmError::AlreadyExists)
    );
    assert_eq!(
        t.mgm.take_interface_ownership(igmp, ETH1, now),
        Err(MgmError::AlreadyExists)
    );
}

#[test]
fn sec3_1_capacity_used_up_is_not_enough_memory() {
    let mut t = Harness::with_config(Config {
        max_interfaces: 1,
        ..Config::default()
    });
    let pim = t.register("pim", PIM);
    t.own(pim, ETH1);
    let now = t.now;
    assert_eq!(
        t.mgm.take_interface_ownership(pim, ETH2, now),
        Err(MgmError::NotEnoughMemory)
    );
}

#[test]
fn sec3_1_case_a_unknown_id_makes_sole_owner_without_callbacks() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    t.register("igmp", IGMP);
    t.own(pim, ETH1);
    assert_eq!(t.calls(), []);
    assert_eq!(
        t.mgm.get_protocol_on_interface(ETH1),
        Ok((PIM, ComponentId(1)))
    );
}

#[test]
fn sec3_1_case_b_igmp_co_owns_without_callbacks_and_joins_become_local() {
    // given
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    let igmp = t.register("igmp", IGMP);
    t.own(pim, ETH3);
    // when
    t.own(igmp, ETH3);
    assert_eq!(t.calls(), []);
    t.join(igmp, star(G1), ETH3);
    // then
    assert_eq!(
        t.calls(),
        [(
            "pim",
            Cb::LocalJoin {
                sg: star(G1),
                if_id: ETH3
            }
        )]
    );
}

#[test]
fn sec3_1_case_c_routing_protocol_takes_igmp_interface_in_exact_order() {
    // given: IGMP alone on ETH3 with a (*,G1) receiver; an MFE forwards S1→ETH3, and an MFE
    // for S_NOROUTE arrived on ETH3 (so ETH3 is its iif)
    let mut t = Harness::new();
    let igmp = t.register("igmp", IGMP);
    let pim = t.register("pim", PIM);
    t.own(pim, ETH1);
    t.own(igmp, ETH3);
    t.join(igmp, star(G1), ETH3);
    t.packet(S1, G1, ETH1);
    t.packet(S_NOROUTE, G2, ETH3);
    t.settle();
    // when
    t.own(pim, ETH3);
    // then
    assert_eq!(
        t.calls(),
        [
            ("igmp", Cb::DisableIgmp(ETH3)),
            // step 2: the discarded (*,G1) entry prunes like a delete by its last holder
            prune_alert("pim", star(G1), ETH3, true, 900),
            // ... and the S1 MFE turned negative: MFE-level prune to its iif owner
            prune_alert("pim", sg(S1, G1), ETH1, false, 900),
            ("igmp", Cb::EnableIgmp(ETH3)),
        ]
    );
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[]), delete(S_NOROUTE, G2)]);
    assert_eq!(
        t.mgm.get_protocol_on_interface(ETH3),
        Ok((PIM, ComponentId(1)))
    );
}

#[test]
fn sec3_1_doc_igmp_readds_after_enable_and_they_become_local_joins() {
    // given: the real IGMP alone on ETH3, where a host reported G1; S1's MFE forwards there
    let mut t = Harness::new();
    let mut igmp = t.real_igmp();
    let pim = t.register("pim", PIM);
    t.own(pim, ETH1);
    t.start_igmp(&mut igmp, ETH3);
    t.host_reports(&mut igmp, ETH3, G1);
    t.packet(S1, G1, ETH1);
    t.settle();
    // when
    t.own(pim, ETH3);
    // then: IGMP's re-add runs after the ownership change and reaches pim as a local join
    assert_eq!(
        t.calls(),
        [
            prune_alert("pim", star(G1), ETH3, true, 900),
            prune_alert("pim", sg(S1, G1), ETH1, false, 900),
            (
                "pim",
                Cb::LocalJoin {
                    sg: star(G1),
                    if_id: ETH3
                }
            ),
        ]
    );
    assert_eq!(
        t.mgm.get_protocol_on_interface(ETH3),
        Ok((PIM, ComponentId(1)))
    );
}

#[test]
fn sec3_1_sec3_2_a_host_keeps_its_stream_through_a_take_and_a_release() {
    // given: the real IGMP alone on ETH3 with a host in G1, and S1's MFE forwarding there;
    // pim forwards wherever hosts ask, so it passes a local join on as its own membership
    let mut t = Harness::new();
    let mut igmp = t.real_igmp();
    let pim = t.register("pim", PIM);
    t.own(pim, ETH1);
    t.start_igmp(&mut igmp, ETH3);
    t.host_reports(&mut igmp, ETH3, G1);
    t.packet(S1, G1, ETH1);
    t.settle();
    assert_eq!(t.map[&(S1, G1)].1, set(&[ETH3]));
    t.script("pim").queue_on.insert(
        "local_join",
        vec![Request::AddGroupMembership {
            sg: star(G1),
            if_id: ETH3,
            flags: JOIN,
        }],
    );
    // when pim takes ETH3: the host's membership comes back as pim's
    t.own(pim, ETH3);
    t.assert_map_matches();
    assert_eq!(t.map[&(S1, G1)].1, set(&[ETH3]));
    // when pim releases it: IGMP re-adds the host's membership as its own
    t.release(pim, ETH3).unwrap();
    t.assert_map_matches();
    assert_eq!(t.map[&(S1, G1)].1, set(&[ETH3]));
    assert_eq!(
        t.mgm.get_protocol_on_interface(ETH3),
        Ok((IGMP, ComponentId(0)))
    );
    // then: what forwards there now is IGMP's ordinary membership, which its querier ends
    // when the host's membership times out (RFC 2236: no more reports)
    t.calls();
    t.advance(300);
    let now = t.now;
    igmp.handle_timeout(now);
    for applied in igmp.apply_memberships(&mut t.mgm, now) {
        assert_eq!(applied.result, Ok(()));
    }
    t.ops();
    assert!(t.map[&(S1, G1)].1.is_empty(), "{:?}", t.map);
}

#[test]
fn sec3_1_dec_igmp_membership_change_between_disable_and_enable_is_can_not_complete() {
    // given: IGMP tries to add from inside disable_igmp
    let mut t = Harness::new();
    let igmp = t.register("igmp", IGMP);
    let pim = t.register("pim", PIM);
    t.own(igmp, ETH3);
    let add = Request::AddGroupMembership {
        sg: star(G1),
        if_id: ETH3,
        flags: JOIN,
    };
    t.script("igmp")
        .queue_on
        .insert("disable_igmp", vec![add.clone()]);
    // when
    t.own(pim, ETH3);
    // then
    assert_eq!(
        t.calls(),
        [
            ("igmp", Cb::DisableIgmp(ETH3)),
            ("igmp", Cb::EnableIgmp(ETH3)),
            (
                "igmp",
                Cb::RequestDone {
                    request: add,
                    result: Err(MgmError::CanNotComplete)
                }
            ),
        ]
    );
}

#[test]
fn sec3_1_dec_owner_change_deletes_iif_mfes_and_next_rpf_goes_to_new_owner() {
    // given: an MFE whose iif ETH3 is owned by IGMP alone
    let mut t = Harness::new();
    let igmp = t.register("igmp", IGMP);
    let pim = t.register("pim", PIM);
    t.own(igmp, ETH3);
    t.packet(S_NOROUTE, G1, ETH3);
    assert!(matches!(t.calls()[0], ("igmp", Cb::Rpf { .. })));
    t.ops();
    // when
    t.own(pim, ETH3);
    assert_eq!(t.ops(), [delete(S_NOROUTE, G1)]);
    t.calls();
    t.packet(S_NOROUTE, G1, ETH3);
    // then
    let calls = t.calls();
    assert!(matches!(calls[0], ("pim", Cb::Rpf { .. })), "{calls:?}");
}

#[test]
fn sec3_2_doc_release_errors_are_invalid_parameter() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    let dvmrp = t.register("dvmrp", DVMRP);
    t.own(pim, ETH1);
    // not found
    assert_eq!(t.release(pim, ETH2), Err(MgmError::InvalidParameter));
    // found but not the caller's [Dec]
    assert_eq!(t.release(dvmrp, ETH1), Err(MgmError::InvalidParameter));
    t.mgm.deregister(dvmrp).unwrap();
    // bad handle
    assert_eq!(t.release(dvmrp, ETH1), Err(MgmError::InvalidParameter));
}

#[test]
fn sec3_2_doc_release_by_routing_protocol_runs_the_shutdown_sequence() {
    // given: pim owns ETH3 with IGMP co-owning; pim forwards G1 there; an MFE has iif ETH3
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    let igmp = t.register("igmp", IGMP);
    t.own(pim, ETH1);
    t.own(pim, ETH3);
    t.own(igmp, ETH3);
    t.join(igmp, star(G2), ETH3); // local
    t.join(pim, star(G1), ETH3);
    t.packet(S1, G1, ETH1);
    t.packet(S_NOROUTE, G1, ETH3);
    t.settle();
    // when
    t.release(pim, ETH3).unwrap();
    // then: disable, MFE deletion, membership deletion with alerts, local entries dropped
    // silently, enable
    assert_eq!(
        t.calls(),
        [
            ("igmp", Cb::DisableIgmp(ETH3)),
            prune_alert("igmp", star(G1), ETH3, true, 900),
            prune_alert("pim", sg(S1, G1), ETH1, false, 900),
            ("igmp", Cb::EnableIgmp(ETH3)),
        ]
    );
    assert_eq!(t.ops(), [delete(S_NOROUTE, G1), install(S1, G1, ETH1, &[])]);
    // IGMP is now sole owner: its re-add is an ordinary forwarding membership (§4.4)
    assert_eq!(
        t.mgm.get_protocol_on_interface(ETH3),
        Ok((IGMP, ComponentId(1)))
    );
    t.join(igmp, star(G1), ETH3);
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH3])]);
}

#[test]
fn sec3_2_doc_release_by_igmp_sends_local_leaves_and_no_disable_enable() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    let igmp = t.register("igmp", IGMP);
    t.own(pim, ETH3);
    t.own(igmp, ETH3);
    t.join(igmp, star(G1), ETH3);
    t.join(igmp, sg(S1, G2), ETH3);
    t.settle();
    t.release(igmp, ETH3).unwrap();
    assert_eq!(
        t.calls(),
        [
            (
                "pim",
                Cb::LocalLeave {
                    sg: star(G1),
                    if_id: ETH3
                }
            ),
            (
                "pim",
                Cb::LocalLeave {
                    sg: sg(S1, G2),
                    if_id: ETH3
                }
            ),
        ]
    );
    assert_eq!(
        t.mgm.get_protocol_on_interface(ETH3),
        Ok((PIM, ComponentId(1)))
    );
}

#[test]
fn sec3_2_inf_interface_with_no_owner_left_is_forgotten() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    t.own(pim, ETH1);
    t.release(pim, ETH1).unwrap();
    assert_eq!(
        t.mgm.get_protocol_on_interface(ETH1),
        Err(MgmError::NotFound)
    );
    // and a membership delete on it now finds no interface
    assert_eq!(t.del(pim, star(G1), ETH1, JOIN), Err(MgmError::NotFound));
}

#[test]
fn sec3_3_inf_reports_routing_protocol_over_igmp_and_igmp_when_alone() {
    let mut t = Harness::new();
    let igmp = t.try_register("igmp", IGMP, 7).unwrap();
    let pim = t.register("pim", PIM);
    t.own(igmp, ETH3);
    assert_eq!(
        t.mgm.get_protocol_on_interface(ETH3),
        Ok((IGMP, ComponentId(7)))
    );
    t.own(pim, ETH3);
    assert_eq!(
        t.mgm.get_protocol_on_interface(ETH3),
        Ok((PIM, ComponentId(1)))
    );
}

#[test]
fn sec3_3_doc_unknown_interface_is_not_found() {
    let t = Harness::new();
    assert_eq!(
        t.mgm.get_protocol_on_interface(ETH4),
        Err(MgmError::NotFound)
    );
}

#[test]
fn sec10_dec_vanished_interface_is_a_forced_release_for_every_owner() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    let igmp = t.register("igmp", IGMP);
    t.own(pim, ETH1);
    t.own(pim, ETH3);
    t.own(igmp, ETH3);
    t.join(pim, star(G1), ETH3);
    t.packet(S1, G1, ETH1);
    t.settle();
    let now = t.now;
    t.mgm.interface_removed(3, now);
    assert_eq!(
        t.calls(),
        [
            ("igmp", Cb::DisableIgmp(ETH3)),
            prune_alert("igmp", star(G1), ETH3, true, 900),
            prune_alert("pim", sg(S1, G1), ETH1, false, 900),
            ("igmp", Cb::EnableIgmp(ETH3)),
        ]
    );
    assert_eq!(
        t.mgm.get_protocol_on_interface(ETH3),
        Err(MgmError::NotFound)
    );
    assert_eq!(t.mgm.deregister(igmp), Ok(()));
}

#[test]
fn sec3_1_dec_igmp_delete_between_disable_and_enable_is_can_not_complete() {
    // given: IGMP alone on ETH3 with a (*,G1) receiver, and it deletes it from inside disable
    let mut t = Harness::new();
    let igmp = t.register("igmp", IGMP);
    let pim = t.register("pim", PIM);
    t.own(igmp, ETH3);
    t.join(igmp, star(G1), ETH3);
    t.settle();
    let del = Request::DeleteGroupMembership {
        sg: star(G1),
        if_id: ETH3,
        flags: JOIN,
    };
    t.script("igmp")
        .queue_on
        .insert("disable_igmp", vec![del.clone()]);
    // when
    t.own(pim, ETH3);
    // then: refused as CAN_NOT_COMPLETE (not NOT_FOUND, although step 2 discarded the entry)
    assert_eq!(
        t.calls(),
        [
            ("igmp", Cb::DisableIgmp(ETH3)),
            prune_alert("pim", star(G1), ETH3, true, 900),
            ("igmp", Cb::EnableIgmp(ETH3)),
            (
                "igmp",
                Cb::RequestDone {
                    request: del,
                    result: Err(MgmError::CanNotComplete)
                }
            ),
        ]
    );
}
