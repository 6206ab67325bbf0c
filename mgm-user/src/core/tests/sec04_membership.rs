//! Spec §1 (masks), §4.1–§4.4 and §5.3: membership entries and how they drive OIF lists.

use super::harness::*;
use crate::core::{Config, MgmError, SourceGroupEntry, ALL_ONES};
use std::net::Ipv4Addr;

/// pim owns ETH1 (toward S1) and ETH2; an MFE (S1,G1) exists with no receivers.
fn pim_with_negative_mfe() -> (Harness, crate::core::ProtocolHandle) {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    t.own(pim, ETH1);
    t.own(pim, ETH2);
    t.own(pim, ETH4);
    t.packet(S1, G1, ETH1);
    t.settle();
    (t, pim)
}

#[test]
fn sec1_dec_masks_must_be_zero_for_wildcard_and_all_ones_otherwise() {
    let (mut t, pim) = pim_with_negative_mfe();
    let any = Ipv4Addr::UNSPECIFIED;
    let bad = [
        // address 0 with the all-ones mask
        SourceGroupEntry {
            source: any,
            source_mask: ALL_ONES,
            group: G1,
            group_mask: ALL_ONES,
        },
        // specific source with mask 0
        SourceGroupEntry {
            source: S1,
            source_mask: any,
            group: G1,
            group_mask: ALL_ONES,
        },
        // a range mask
        SourceGroupEntry {
            source: any,
            source_mask: any,
            group: G1,
            group_mask: Ipv4Addr::new(255, 255, 0, 0),
        },
        // (S specific, G wildcard)
        SourceGroupEntry {
            source: S1,
            source_mask: ALL_ONES,
            group: any,
            group_mask: any,
        },
    ];
    for e in bad {
        assert_eq!(
            t.add(pim, e, ETH2, JOIN),
            Err(MgmError::InvalidParameter),
            "{e:?}"
        );
        assert_eq!(
            t.del(pim, e, ETH2, JOIN),
            Err(MgmError::InvalidParameter),
            "{e:?}"
        );
    }
    assert_eq!(t.calls(), []);
    assert_eq!(t.ops(), []);
}

#[test]
fn sec4_1_dec_adding_an_existing_entry_does_nothing() {
    let (mut t, pim) = pim_with_negative_mfe();
    t.register("dvmrp", DVMRP);
    t.join(pim, star(G1), ETH2);
    t.settle();
    assert_eq!(t.add(pim, star(G1), ETH2, JOIN), Ok(()));
    assert_eq!(t.calls(), []);
    assert_eq!(t.ops(), []);
}

#[test]
fn sec4_2_dec_zero_or_unknown_flags_are_invalid_parameter() {
    let (mut t, pim) = pim_with_negative_mfe();
    assert_eq!(
        t.add(pim, star(G1), ETH2, 0),
        Err(MgmError::InvalidParameter)
    );
    assert_eq!(
        t.add(pim, star(G1), ETH2, 0x4),
        Err(MgmError::InvalidParameter)
    );
    assert_eq!(
        t.del(pim, star(G1), ETH2, 0),
        Err(MgmError::InvalidParameter)
    );
}

#[test]
fn sec4_2_doc_invalid_handle_is_invalid_parameter() {
    let (mut t, _pim) = pim_with_negative_mfe();
    let dvmrp = t.register("dvmrp", DVMRP);
    t.mgm.deregister(dvmrp).unwrap();
    assert_eq!(
        t.add(dvmrp, star(G1), ETH2, JOIN),
        Err(MgmError::InvalidParameter)
    );
    assert_eq!(
        t.del(dvmrp, star(G1), ETH2, JOIN),
        Err(MgmError::InvalidParameter)
    );
}

#[test]
fn sec4_2_inf_add_on_interface_caller_does_not_own_is_invalid_parameter() {
    let (mut t, _pim) = pim_with_negative_mfe();
    let dvmrp = t.register("dvmrp", DVMRP);
    assert_eq!(
        t.add(dvmrp, star(G1), ETH2, JOIN),
        Err(MgmError::InvalidParameter)
    );
    assert_eq!(
        t.add(dvmrp, star(G1), ETH3, JOIN),
        Err(MgmError::InvalidParameter)
    );
}

#[test]
fn sec4_2_capacity_used_up_is_not_enough_memory() {
    let mut t = Harness::with_config(Config {
        max_memberships: 1,
        ..Config::default()
    });
    let pim = t.register("pim", PIM);
    t.own(pim, ETH2);
    t.join(pim, star(G1), ETH2);
    assert_eq!(
        t.add(pim, star(G2), ETH2, JOIN),
        Err(MgmError::NotEnoughMemory)
    );
    // re-adding the existing entry still works
    assert_eq!(t.add(pim, star(G1), ETH2, JOIN), Ok(()));
}

#[test]
fn sec4_2_doc_join_adds_the_interface_to_covered_mfes() {
    let (mut t, pim) = pim_with_negative_mfe();
    t.join(pim, star(G1), ETH2);
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH2])]);
    // a later MFE for the same group is covered too
    t.packet(S2, G1, ETH2);
    t.join(pim, star(G1), ETH4);
    assert_eq!(
        t.ops(),
        [
            install(S2, G1, ETH2, &[]),
            install(S1, G1, ETH1, &[ETH2, ETH4]),
            install(S2, G1, ETH2, &[ETH4]),
        ]
    );
}

#[test]
fn sec4_2_doc_forward_flag_touches_existing_mfes_only_and_sends_no_membership_alert() {
    // given
    let (mut t, pim) = pim_with_negative_mfe();
    t.register("dvmrp", DVMRP);
    // when
    t.add(pim, star(G1), ETH2, FORWARD).unwrap();
    // then: no membership alert (only the MFE-level graft to the iif owner)
    assert_eq!(t.calls(), [join_alert("pim", sg(S1, G1), false)]);
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH2])]);
    // and a later MFE is not affected
    t.packet(S2, G1, ETH2);
    assert_eq!(t.ops(), [install(S2, G1, ETH2, &[])]);
}

#[test]
fn sec4_2_dec_forward_flag_with_no_matching_mfe_is_no_error() {
    let (mut t, pim) = pim_with_negative_mfe();
    assert_eq!(t.add(pim, star(G2), ETH2, FORWARD), Ok(()));
    assert_eq!(t.calls(), []);
    assert_eq!(t.ops(), []);
}

#[test]
fn sec4_2_doc_igmp_add_on_co_owned_interface_is_a_local_join_only() {
    let (mut t, _pim) = pim_with_negative_mfe();
    let igmp = t.register("igmp", IGMP);
    t.own(igmp, ETH2);
    t.join(igmp, star(G1), ETH2);
    assert_eq!(
        t.calls(),
        [(
            "pim",
            Cb::LocalJoin {
                sg: star(G1),
                if_id: ETH2
            }
        )]
    );
    assert_eq!(t.ops(), [], "local memberships do not change MFEs");
    // a duplicate local add is silent
    t.join(igmp, star(G1), ETH2);
    assert_eq!(t.calls(), []);
}

#[test]
fn sec4_3_doc_delete_errors() {
    let (mut t, pim) = pim_with_negative_mfe();
    let dvmrp = t.register("dvmrp", DVMRP);
    t.own(dvmrp, ETH3);
    // interface owned by another protocol
    assert_eq!(
        t.del(dvmrp, star(G1), ETH2, JOIN),
        Err(MgmError::InvalidParameter)
    );
    // unknown interface
    assert_eq!(
        t.del(pim, star(G1), crate::core::InterfaceId::new(77), JOIN),
        Err(MgmError::NotFound)
    );
}

#[test]
fn sec4_3_dec_missing_membership_entry_is_not_found() {
    let (mut t, pim) = pim_with_negative_mfe();
    assert_eq!(t.del(pim, star(G1), ETH2, JOIN), Err(MgmError::NotFound));
    let igmp = t.register("igmp", IGMP);
    t.own(igmp, ETH2);
    assert_eq!(t.del(igmp, star(G1), ETH2, JOIN), Err(MgmError::NotFound));
}

#[test]
fn sec4_3_doc_igmp_delete_on_co_owned_interface_is_a_local_leave() {
    let (mut t, _pim) = pim_with_negative_mfe();
    let igmp = t.register("igmp", IGMP);
    t.own(igmp, ETH2);
    t.join(igmp, star(G1), ETH2);
    t.settle();
    t.leave(igmp, star(G1), ETH2);
    assert_eq!(
        t.calls(),
        [(
            "pim",
            Cb::LocalLeave {
                sg: star(G1),
                if_id: ETH2
            }
        )]
    );
    assert_eq!(t.ops(), []);
}

#[test]
fn sec4_3_doc_oif_stays_while_another_entry_covers_it() {
    let (mut t, pim) = pim_with_negative_mfe();
    let dvmrp = t.register("dvmrp", DVMRP);
    t.own(dvmrp, ETH3);
    t.join(pim, star(G1), ETH2);
    t.join(pim, sg(S1, G1), ETH2);
    t.settle();
    t.leave(pim, star(G1), ETH2);
    assert_eq!(t.ops(), [], "(S1,G1) still covers ETH2");
    t.leave(pim, sg(S1, G1), ETH2);
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[])]);
}

#[test]
fn sec4_3_doc_forward_pin_keeps_oif_until_forward_delete() {
    let (mut t, pim) = pim_with_negative_mfe();
    t.join(pim, star(G1), ETH2);
    t.add(pim, star(G1), ETH2, FORWARD).unwrap();
    t.settle();
    t.leave(pim, star(G1), ETH2);
    assert_eq!(t.ops(), [], "pinned by FORWARD state");
    t.del(pim, star(G1), ETH2, FORWARD).unwrap();
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[])]);
}

#[test]
fn sec4_3_dec_forward_delete_with_nothing_pinned_is_no_error() {
    let (mut t, pim) = pim_with_negative_mfe();
    assert_eq!(t.del(pim, star(G2), ETH2, FORWARD), Ok(()));
}

#[test]
fn sec4_4_doc_igmp_sole_owner_memberships_are_ordinary() {
    let (mut t, _pim) = pim_with_negative_mfe();
    let igmp = t.register("igmp", IGMP);
    t.own(igmp, ETH3);
    t.join(igmp, star(G1), ETH3);
    // an ordinary membership: alerts every other registered client and forwards
    assert_eq!(
        t.calls(),
        [
            join_alert("pim", star(G1), true),
            join_alert("pim", sg(S1, G1), false),
        ]
    );
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH3])]);
}

#[test]
fn sec4_4_doc_no_local_callback_without_a_routing_owner() {
    let mut t = Harness::new();
    let igmp = t.register("igmp", IGMP);
    t.own(igmp, ETH3);
    t.join(igmp, star(G1), ETH3);
    assert!(t
        .calls()
        .iter()
        .all(|(_, cb)| !matches!(cb, Cb::LocalJoin { .. })));
}

#[test]
fn sec5_3_doc_incoming_interface_is_never_an_oif() {
    let (mut t, pim) = pim_with_negative_mfe();
    t.join(pim, star(G1), ETH1);
    assert_eq!(t.ops(), []);
    t.join(pim, star(G1), ETH2);
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH2])]);
}

#[test]
fn sec5_3_dec_other_next_hops_of_the_iif_index_stay_eligible() {
    // given: the iif is NBMA_A and a receiver sits behind NBMA_B on the same ifindex
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    t.own(pim, NBMA_A);
    t.own(pim, NBMA_B);
    t.join(pim, star(G1), NBMA_A);
    t.join(pim, star(G1), NBMA_B);
    t.settle();
    // when
    t.packet(S_NOROUTE, G1, NBMA_A);
    // then
    assert_eq!(t.ops(), [install(S_NOROUTE, G1, NBMA_A, &[NBMA_B])]);
}

#[test]
fn sec4_2_dec_igmp_add_is_refused_only_for_the_id_between_disable_and_enable() {
    // given: IGMP owns ETH3 and ETH4 alone, and adds on both from inside disable_igmp(ETH3)
    let mut t = Harness::new();
    let igmp = t.register("igmp", IGMP);
    let pim = t.register("pim", PIM);
    t.own(igmp, ETH3);
    t.own(igmp, ETH4);
    let on3 = crate::core::Request::AddGroupMembership {
        sg: star(G1),
        if_id: ETH3,
        flags: JOIN,
    };
    let on4 = crate::core::Request::AddGroupMembership {
        sg: star(G1),
        if_id: ETH4,
        flags: JOIN,
    };
    t.script("igmp")
        .queue_on
        .insert("disable_igmp", vec![on3.clone(), on4.clone()]);
    // when: pim takes ETH3
    t.own(pim, ETH3);
    // then: the ETH3 add is CAN_NOT_COMPLETE; the ETH4 add is an ordinary membership
    assert_eq!(
        t.calls(),
        [
            ("igmp", Cb::DisableIgmp(ETH3)),
            ("igmp", Cb::EnableIgmp(ETH3)),
            (
                "igmp",
                Cb::RequestDone {
                    request: on3,
                    result: Err(MgmError::CanNotComplete)
                }
            ),
            join_alert("pim", star(G1), true),
            (
                "igmp",
                Cb::RequestDone {
                    request: on4,
                    result: Ok(())
                }
            ),
        ]
    );
}

#[test]
fn sec4_4_doc_co_owned_interface_forwards_only_when_the_routing_owner_adds() {
    // given: pim owns ETH2 with IGMP co-owning it, and an MFE (S1,G1) with no receivers
    let (mut t, pim) = pim_with_negative_mfe();
    let igmp = t.register("igmp", IGMP);
    t.own(igmp, ETH2);
    t.settle();
    // when: IGMP reports a receiver, then a leave, and pim ignores both
    t.join(igmp, star(G1), ETH2);
    t.leave(igmp, star(G1), ETH2);
    // then: pim is told both times and nothing forwards
    assert_eq!(
        t.calls(),
        [
            (
                "pim",
                Cb::LocalJoin {
                    sg: star(G1),
                    if_id: ETH2
                }
            ),
            (
                "pim",
                Cb::LocalLeave {
                    sg: star(G1),
                    if_id: ETH2
                }
            ),
        ]
    );
    assert_eq!(t.ops(), []);
    // and when pim decides to forward, it is its own Add that grafts the MFE
    t.join(igmp, star(G1), ETH2);
    t.join(pim, star(G1), ETH2);
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH2])]);
}
