//! Spec §4.8: excluded sources (IGMPv3 EXCLUDE mode): the EXCLUDE flag's validity, the OIF rule,
//! its alerts, and how exclusions reach a routing protocol co-owning with IGMP.

use super::harness::*;
use crate::core::{Config, GroupFilter, MgmError, ProtocolHandle};

/// pim owns ETH1 (toward S1), ETH2 (toward S2), ETH3 and ETH4; MFEs (S1,G1) and (S2,G1) exist
/// with no receivers.
fn pim_with_two_mfes() -> (Harness, ProtocolHandle) {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    for id in [ETH1, ETH2, ETH3, ETH4] {
        t.own(pim, id);
    }
    t.packet(S1, G1, ETH1);
    t.packet(S2, G1, ETH2);
    t.settle();
    (t, pim)
}

#[test]
fn sec4_8_dec_exclude_with_join_or_forward_is_invalid_parameter() {
    let (mut t, pim) = pim_with_two_mfes();
    t.join(pim, star(G1), ETH3);
    t.settle();
    for flags in [EXCLUDE | JOIN, EXCLUDE | FORWARD, EXCLUDE | JOIN | FORWARD] {
        assert_eq!(
            t.add(pim, sg(S1, G1), ETH3, flags),
            Err(MgmError::InvalidParameter),
            "{flags:#x}"
        );
        assert_eq!(
            t.del(pim, sg(S1, G1), ETH3, flags),
            Err(MgmError::InvalidParameter),
            "{flags:#x}"
        );
    }
    assert_eq!(t.calls(), []);
    assert_eq!(t.ops(), []);
}

#[test]
fn sec4_8_dec_exclude_needs_an_all_ones_source_and_group() {
    let (mut t, pim) = pim_with_two_mfes();
    t.join(pim, star(G1), ETH3);
    t.join(pim, star_star(), ETH3);
    t.settle();
    for e in [star(G1), star_star()] {
        assert_eq!(
            t.add(pim, e, ETH3, EXCLUDE),
            Err(MgmError::InvalidParameter),
            "{e:?}"
        );
        assert_eq!(
            t.del(pim, e, ETH3, EXCLUDE),
            Err(MgmError::InvalidParameter),
            "{e:?}"
        );
    }
    assert_eq!(t.ops(), []);
}

#[test]
fn sec4_8_dec_exclude_needs_the_callers_own_wildcard_on_that_interface() {
    let (mut t, pim) = pim_with_two_mfes();
    // no wildcard at all, or an (S,G) join only
    assert_eq!(
        t.add(pim, sg(S1, G1), ETH3, EXCLUDE),
        Err(MgmError::InvalidParameter)
    );
    t.join(pim, sg(S1, G1), ETH3);
    assert_eq!(
        t.add(pim, sg(S1, G1), ETH3, EXCLUDE),
        Err(MgmError::InvalidParameter)
    );
    // a wildcard on another interface, or for another group
    t.join(pim, star(G1), ETH4);
    t.join(pim, star(G2), ETH3);
    assert_eq!(
        t.add(pim, sg(S1, G1), ETH3, EXCLUDE),
        Err(MgmError::InvalidParameter)
    );
    // another client's wildcard on the interface does not do either
    let igmp = t.register("igmp", IGMP);
    t.own(igmp, ETH3);
    t.join(igmp, star(G1), ETH3);
    assert_eq!(
        t.add(pim, sg(S2, G1), ETH3, EXCLUDE),
        Err(MgmError::InvalidParameter)
    );
    // the caller's (*,*) or (*,G) there does
    t.join(pim, star_star(), ETH3);
    assert_eq!(t.add(pim, sg(S2, G1), ETH3, EXCLUDE), Ok(()));
    assert_eq!(t.add(pim, sg(S2, G1), ETH4, EXCLUDE), Ok(()));
}

#[test]
fn sec4_8_dec_excluded_source_leaves_only_its_own_mfe_on_that_interface() {
    // given: (*,G1) on ETH3 and ETH4
    let (mut t, pim) = pim_with_two_mfes();
    t.join(pim, star(G1), ETH3);
    t.join(pim, star(G1), ETH4);
    t.settle();
    // when
    t.add(pim, sg(S1, G1), ETH3, EXCLUDE).unwrap();
    // then: S1 stops on ETH3 only; S2 and ETH4 keep forwarding; no alert (the list stays
    // non-empty)
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH4])]);
    assert_eq!(t.calls(), []);
    // and an MFE created later honours the exclusion from the start
    t.advance(900);
    t.settle();
    t.packet(S1, G1, ETH1);
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH4])]);
    let offered: Vec<_> = t
        .calls()
        .into_iter()
        .filter_map(|(_, cb)| match cb {
            Cb::CreationAlert { oifs, .. } => {
                Some(oifs.iter().map(|e| e.if_id).collect::<Vec<_>>())
            }
            _ => None,
        })
        .collect();
    assert_eq!(offered, [vec![ETH4]], "the excluded id is not offered");
    // and removing the exclusion puts ETH3 back at once
    t.del(pim, sg(S1, G1), ETH3, EXCLUDE).unwrap();
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH3, ETH4])]);
}

#[test]
fn sec4_8_dec_an_sg_join_wins_over_the_exclusion() {
    let (mut t, pim) = pim_with_two_mfes();
    t.join(pim, star(G1), ETH3);
    t.join(pim, sg(S1, G1), ETH3);
    t.settle();
    t.add(pim, sg(S1, G1), ETH3, EXCLUDE).unwrap();
    assert_eq!(t.ops(), [], "(S1,G1) JOIN keeps ETH3");
    t.leave(pim, sg(S1, G1), ETH3);
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[])]);
}

#[test]
fn sec4_8_dec_exclusion_covers_both_wildcards_of_the_client() {
    let (mut t, pim) = pim_with_two_mfes();
    t.join(pim, star(G1), ETH3);
    t.join(pim, star_star(), ETH3);
    t.settle();
    t.add(pim, sg(S2, G1), ETH3, EXCLUDE).unwrap();
    assert_eq!(t.ops(), [install(S2, G1, ETH2, &[])]);
    // with (*,G1) gone, (*,*) still carries the exclusion
    t.leave(pim, star(G1), ETH3);
    assert_eq!(t.ops(), []);
    assert_eq!(t.del(pim, sg(S2, G1), ETH3, EXCLUDE), Ok(()));
    assert_eq!(t.ops(), [install(S2, G1, ETH2, &[ETH3])]);
}

#[test]
fn sec4_8_dec_exclusion_raises_only_the_mfe_level_alerts() {
    // given: ETH3 is the only OIF of (S1,G1); dvmrp is registered and would hear any
    // membership alert
    let (mut t, pim) = pim_with_two_mfes();
    t.register("dvmrp", DVMRP);
    t.join(pim, star(G1), ETH3);
    t.settle();
    // when: the exclusion empties the list
    t.add(pim, sg(S1, G1), ETH3, EXCLUDE).unwrap();
    // then: the map write, then the §4.7 prune alert to the iif owner, nothing else
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[])]);
    assert_eq!(
        t.calls(),
        [prune_alert("pim", sg(S1, G1), ETH1, false, 900)]
    );
    // when: it goes, the graft alert
    t.del(pim, sg(S1, G1), ETH3, EXCLUDE).unwrap();
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH3])]);
    assert_eq!(t.calls(), [join_alert("pim", sg(S1, G1), false)]);
}

#[test]
fn sec4_8_dec_adding_an_existing_exclusion_does_nothing_and_a_missing_one_is_not_found() {
    let (mut t, pim) = pim_with_two_mfes();
    t.join(pim, star(G1), ETH3);
    t.add(pim, sg(S1, G1), ETH3, EXCLUDE).unwrap();
    t.settle();
    assert_eq!(t.add(pim, sg(S1, G1), ETH3, EXCLUDE), Ok(()));
    assert_eq!(t.calls(), []);
    assert_eq!(t.ops(), []);
    assert_eq!(
        t.del(pim, sg(S2, G1), ETH3, EXCLUDE),
        Err(MgmError::NotFound)
    );
    // an exclusion is no JOIN entry: deleting (S1,G1) JOIN finds nothing
    assert_eq!(t.del(pim, sg(S1, G1), ETH3, JOIN), Err(MgmError::NotFound));
}

#[test]
fn sec4_8_dec_removing_the_last_wildcard_removes_its_exclusions() {
    let (mut t, pim) = pim_with_two_mfes();
    t.join(pim, star(G1), ETH3);
    t.add(pim, sg(S1, G1), ETH3, EXCLUDE).unwrap();
    t.leave(pim, star(G1), ETH3);
    t.settle();
    assert_eq!(
        t.del(pim, sg(S1, G1), ETH3, EXCLUDE),
        Err(MgmError::NotFound)
    );
    // a new (*,G1) forwards S1 again
    t.join(pim, star(G1), ETH3);
    assert_eq!(
        t.ops(),
        [
            install(S1, G1, ETH1, &[ETH3]),
            install(S2, G1, ETH2, &[ETH3])
        ]
    );
}

#[test]
fn sec4_8_dec_igmp_exclusion_on_co_owned_interface_is_a_local_leave_and_its_removal_a_local_join() {
    // given: IGMP co-owns ETH3 with pim and holds a local (*,G1) there
    let (mut t, _pim) = pim_with_two_mfes();
    let igmp = t.register("igmp", IGMP);
    t.own(igmp, ETH3);
    assert_eq!(
        t.add(igmp, sg(S1, G1), ETH3, EXCLUDE),
        Err(MgmError::InvalidParameter),
        "no local wildcard yet"
    );
    t.join(igmp, star(G1), ETH3);
    t.settle();
    let local = |leave: bool| {
        let (sg, if_id) = (sg(S1, G1), ETH3);
        let cb = if leave {
            Cb::LocalLeave { sg, if_id }
        } else {
            Cb::LocalJoin { sg, if_id }
        };
        ("pim", cb)
    };
    // when / then
    t.add(igmp, sg(S1, G1), ETH3, EXCLUDE).unwrap();
    assert_eq!(t.calls(), [local(true)]);
    t.del(igmp, sg(S1, G1), ETH3, EXCLUDE).unwrap();
    assert_eq!(t.calls(), [local(false)]);
    assert_eq!(t.ops(), [], "local entries never change MFEs");
    // and the (*,G1) leave takes a standing exclusion with it, without a local join
    t.add(igmp, sg(S1, G1), ETH3, EXCLUDE).unwrap();
    t.settle();
    t.leave(igmp, star(G1), ETH3);
    assert_eq!(
        t.calls(),
        [(
            "pim",
            Cb::LocalLeave {
                sg: star(G1),
                if_id: ETH3
            }
        )]
    );
    assert_eq!(
        t.del(igmp, sg(S1, G1), ETH3, EXCLUDE),
        Err(MgmError::NotFound)
    );
}

#[test]
fn sec4_8_dec_igmp_releasing_a_co_owned_interface_drops_its_exclusions_silently() {
    let (mut t, _pim) = pim_with_two_mfes();
    let igmp = t.register("igmp", IGMP);
    t.own(igmp, ETH3);
    t.join(igmp, star(G1), ETH3);
    t.add(igmp, sg(S1, G1), ETH3, EXCLUDE).unwrap();
    t.settle();
    t.release(igmp, ETH3).unwrap();
    assert_eq!(
        t.calls(),
        [(
            "pim",
            Cb::LocalLeave {
                sg: star(G1),
                if_id: ETH3
            }
        )]
    );
    // IGMP takes it again: nothing of the old exclusion is left
    t.own(igmp, ETH3);
    assert_eq!(
        t.del(igmp, sg(S1, G1), ETH3, EXCLUDE),
        Err(MgmError::NotFound)
    );
}

#[test]
fn sec4_8_dec_exclusions_count_toward_the_membership_capacity() {
    let mut t = Harness::with_config(Config {
        max_memberships: 1,
        ..Config::default()
    });
    let pim = t.register("pim", PIM);
    t.own(pim, ETH3);
    t.join(pim, star(G1), ETH3);
    assert_eq!(
        t.add(pim, sg(S1, G1), ETH3, EXCLUDE),
        Err(MgmError::NotEnoughMemory)
    );
}

fn sources(s: &[std::net::Ipv4Addr]) -> std::collections::BTreeSet<std::net::Ipv4Addr> {
    s.iter().copied().collect()
}

#[test]
fn sec4_8_dec_group_filters_state_what_each_interface_forwards_of_the_group() {
    let (mut t, pim) = pim_with_two_mfes();
    t.join(pim, star(G1), ETH3);
    t.add(pim, sg(S1, G1), ETH3, EXCLUDE).unwrap();
    t.add(pim, sg(S2, G1), ETH3, EXCLUDE).unwrap();
    t.join(pim, sg(S1, G1), ETH4);
    t.join(pim, sg(S2, G1), ETH4);
    t.join(pim, star(G2), ETH4);
    // IGMP's local entries forward nothing, so they state no filter.
    let igmp = t.register("igmp", IGMP);
    t.own(igmp, ETH2);
    t.join(igmp, star(G1), ETH2);
    let filters = |t: &Harness| t.mgm.group_filters(G1).into_iter().collect::<Vec<_>>();
    assert_eq!(
        filters(&t),
        [
            (ETH3, GroupFilter::Exclude(sources(&[S1, S2]))),
            (ETH4, GroupFilter::Include(sources(&[S1, S2]))),
        ]
    );
    // An (S,G) join on the interface wants the source despite the exclusion; (*,*) makes an
    // EXCLUDE filter of every group.
    t.join(pim, sg(S2, G1), ETH3);
    t.join(pim, star_star(), ETH1);
    assert_eq!(
        filters(&t),
        [
            (ETH1, GroupFilter::Exclude(sources(&[]))),
            (ETH3, GroupFilter::Exclude(sources(&[S1]))),
            (ETH4, GroupFilter::Include(sources(&[S1, S2]))),
        ]
    );
}

#[test]
fn rfc3376_3_2_merged_filter_is_exclude_of_common_blocks_minus_included_sources() {
    use GroupFilter::{Exclude, Include};
    assert_eq!(GroupFilter::merge([]), None);
    assert_eq!(
        GroupFilter::merge(&[Include(sources(&[S1])), Include(sources(&[S2]))]),
        Some(Include(sources(&[S1, S2])))
    );
    let (a, b) = (sources(&[S1, S2]), sources(&[S2, S_NOROUTE]));
    assert_eq!(
        GroupFilter::merge(&[Exclude(a.clone()), Exclude(b.clone())]),
        Some(Exclude(sources(&[S2])))
    );
    assert_eq!(
        GroupFilter::merge(&[Exclude(a), Include(sources(&[S2])), Exclude(b)]),
        Some(Exclude(sources(&[])))
    );
}
