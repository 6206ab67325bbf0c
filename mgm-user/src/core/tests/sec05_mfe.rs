//! Spec §5: the MFE life cycle — creation, negative MFEs, wrong interface, expiry, MgmSetMfe.

use super::harness::*;
use crate::core::{
    Config, MfeCounters, MgmError, MgmIfEntry, ProtocolHandle, RouteInfo, SourceGroupEntry,
};
use std::net::Ipv4Addr;
use std::time::Duration;

/// pim owns ETH1 (toward S1) and ETH2, dvmrp owns ETH3, igmp co-owns ETH2 and owns ETH4.
fn routers() -> (Harness, ProtocolHandle, ProtocolHandle, ProtocolHandle) {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    let dvmrp = t.register("dvmrp", DVMRP);
    let igmp = t.register("igmp", IGMP);
    t.own(pim, ETH1);
    t.own(pim, ETH2);
    t.own(igmp, ETH2);
    t.own(dvmrp, ETH3);
    t.own(igmp, ETH4);
    (t, pim, dvmrp, igmp)
}

fn rpf(s: Ipv4Addr, g: Ipv4Addr, iif: crate::core::InterfaceId, up: Ipv4Addr) -> Cb {
    Cb::Rpf {
        sg: sg(s, g),
        iif,
        upstream: up,
        hdr_len: 20,
        route: RouteInfo {
            protocol: 2,
            network: Ipv4Addr::new(s.octets()[0], s.octets()[1], 0, 0),
            mask: Ipv4Addr::new(255, 255, 0, 0),
        },
    }
}

fn entry(if_id: crate::core::InterfaceId, igmp: bool) -> MgmIfEntry {
    MgmIfEntry {
        if_id,
        igmp,
        enabled: true,
    }
}

#[test]
fn sec5_2_doc_full_creation_sequence_rpf_then_creation_alerts_per_owner_then_install() {
    // given: receivers behind pim's ETH2, dvmrp's ETH3 and igmp's ETH4
    let (mut t, pim, dvmrp, igmp) = routers();
    t.join(pim, star(G1), ETH2);
    t.join(dvmrp, star(G1), ETH3);
    t.join(igmp, star(G1), ETH4);
    t.settle();
    // when: a packet from S1 arrives (on ETH3, but the route says ETH1)
    t.packet(S1, G1, ETH3);
    // then: RPF to the owner of the interface toward S1, then one creation alert per owner in
    // (protocol id, component id) order, each with its own interfaces only
    let c = |iif| Cb::CreationAlert {
        sg: sg(S1, G1),
        iif: ETH1,
        oifs: iif,
    };
    assert_eq!(
        t.calls(),
        [
            ("pim", rpf(S1, G1, ETH1, UP1)),
            ("igmp", c(vec![entry(ETH4, true)])),
            ("pim", c(vec![entry(ETH2, true)])),
            ("dvmrp", c(vec![entry(ETH3, false)])),
        ]
    );
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH2, ETH3, ETH4])]);
}

#[test]
fn sec5_2_dec_no_route_uses_arrival_interface_with_upstream_zero() {
    let (mut t, _pim, _dvmrp, _igmp) = routers();
    t.packet(S_NOROUTE, G1, ETH3);
    assert_eq!(
        t.calls(),
        [
            (
                "dvmrp",
                Cb::Rpf {
                    sg: sg(S_NOROUTE, G1),
                    iif: ETH3,
                    upstream: Ipv4Addr::UNSPECIFIED,
                    hdr_len: 20,
                    route: RouteInfo::default(),
                }
            ),
            prune_alert("dvmrp", sg(S_NOROUTE, G1), ETH3, false, 900),
        ]
    );
}

#[test]
fn sec5_2_doc_rpf_callback_may_rewrite_iif_and_upstream() {
    let (mut t, pim, _dvmrp, _igmp) = routers();
    t.join(pim, star(G1), ETH2);
    t.settle();
    let up = Ipv4Addr::new(10, 3, 0, 1);
    t.script("pim").rpf_answer = Some((ETH2, up));
    t.packet(S1, G1, ETH1);
    // ETH2 became the iif, so it is no OIF: the MFE is negative and its iif owner is told
    assert_eq!(t.ops(), [install(S1, G1, ETH2, &[])]);
    let rec = t.mgm.get_mfe(S1, G1, 1000, t.now).unwrap();
    assert_eq!((rec.in_if, rec.upstream), (ETH2, up));
}

#[test]
fn sec5_2_dec_unowned_candidate_iif_gives_negative_mfe_without_callbacks() {
    let (mut t, pim, _dvmrp, _igmp) = routers();
    t.join(pim, star(G1), ETH2);
    t.settle();
    t.packet(S_NOROUTE, G1, ETH77);
    assert_eq!(t.calls(), []);
    assert_eq!(t.ops(), [install(S_NOROUTE, G1, ETH77, &[])]);
    // and it stays negative when receivers come and go
    t.join(pim, star(G1), ETH1);
    assert_eq!(t.ops(), []);
}

const ETH77: crate::core::InterfaceId = crate::core::InterfaceId::new(77);

#[test]
fn sec5_2_doc_disabled_entries_are_vetoed() {
    let (mut t, pim, dvmrp, _igmp) = routers();
    t.join(pim, star(G1), ETH2);
    t.join(dvmrp, star(G1), ETH3);
    t.script("pim").veto.insert(ETH2);
    t.settle();
    t.packet(S1, G1, ETH1);
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH3])]);
}

#[test]
fn sec5_2_dec_negative_at_creation_prune_alerts_iif_owner_who_chooses_lifetime() {
    let (mut t, _pim, _dvmrp, _igmp) = routers();
    t.script("pim").prune_timeout = Some(60);
    t.packet(S1, G1, ETH1);
    assert_eq!(
        t.calls(),
        [
            ("pim", rpf(S1, G1, ETH1, UP1)),
            prune_alert("pim", sg(S1, G1), ETH1, false, 900),
        ]
    );
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[])]);
    assert_eq!(t.mgm.poll_timeout(), Some(t.now + Duration::from_secs(60)));
}

#[test]
fn sec5_4_doc_later_add_turns_negative_mfe_positive_with_graft_alert() {
    let (mut t, pim, _dvmrp, _igmp) = routers();
    t.packet(S1, G1, ETH1);
    t.settle();
    t.join(pim, star(G1), ETH2);
    assert_eq!(
        t.calls(),
        [
            join_alert("igmp", star(G1), true),
            join_alert("dvmrp", star(G1), true),
            join_alert("pim", sg(S1, G1), false),
        ]
    );
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH2])]);
}

#[test]
fn sec5_5_doc_wrong_interface_goes_to_owner_of_arrival_interface() {
    let (mut t, _pim, _dvmrp, _igmp) = routers();
    t.packet(S1, G1, ETH1);
    t.settle();
    t.wrong_if(S1, G1, ETH3);
    assert_eq!(
        t.calls(),
        [(
            "dvmrp",
            Cb::WrongIf {
                source: S1,
                group: G1,
                if_id: ETH3,
                hdr_len: 20
            }
        )]
    );
}

#[test]
fn sec5_5_dec_wrong_interface_is_rate_limited_per_mfe_and_can_be_disabled() {
    let (mut t, _pim, _dvmrp, _igmp) = routers();
    t.packet(S1, G1, ETH1);
    t.packet(S1, G2, ETH1);
    t.settle();
    t.wrong_if(S1, G1, ETH3);
    t.wrong_if(S1, G1, ETH3);
    t.wrong_if(S1, G2, ETH3);
    assert_eq!(t.calls().len(), 2, "one per MFE");
    t.advance(3);
    t.wrong_if(S1, G1, ETH3);
    assert_eq!(t.calls().len(), 1);
    // the iif itself is never "wrong"
    t.advance(3);
    t.wrong_if(S1, G1, ETH1);
    assert_eq!(t.calls(), []);

    let mut off = Harness::with_config(Config {
        wrong_if_enabled: false,
        ..Config::default()
    });
    let pim = off.register("pim", PIM);
    off.own(pim, ETH1);
    off.own(pim, ETH2);
    off.packet(S1, G1, ETH1);
    off.settle();
    off.wrong_if(S1, G1, ETH2);
    assert_eq!(off.calls(), []);
}

#[test]
fn sec5_6_doc_default_lifetime_is_absolute_900_s_then_packet_recreates() {
    let (mut t, pim, _dvmrp, _igmp) = routers();
    t.join(pim, star(G1), ETH2);
    t.packet(S1, G1, ETH1);
    t.settle();
    assert_eq!(t.mgm.poll_timeout(), Some(t.now + Duration::from_secs(900)));
    // it is not an idle timer: the lifetime ends at 900 s (traffic would refresh it in place,
    // see sec05_refresh), and an idle MFE is deleted without any callback [Dec]
    t.advance(899);
    assert_eq!(t.ops(), []);
    t.advance(1);
    assert_eq!(t.calls(), []);
    assert_eq!(t.ops(), [delete(S1, G1)]);
    assert_eq!(t.mgm.poll_timeout(), None);
    // the next packet repeats RPF and creation alerts
    t.packet(S1, G1, ETH1);
    let calls = t.calls();
    assert!(matches!(calls[0], ("pim", Cb::Rpf { .. })));
    assert!(matches!(calls[1], ("pim", Cb::CreationAlert { .. })));
}

#[test]
fn sec5_6_doc_uptime_counts_up_and_expiry_counts_down() {
    let (mut t, _pim, _dvmrp, _igmp) = routers();
    t.packet(S1, G1, ETH1);
    t.advance(100);
    let rec = t.mgm.get_mfe(S1, G1, 1000, t.now).unwrap();
    assert_eq!(
        (rec.up_time_s, rec.expiry_time_s, rec.timeout_s),
        (100, 800, 900)
    );
}

#[test]
fn sec5_6_doc_release_of_iif_deletes_mfes() {
    let (mut t, pim, _dvmrp, _igmp) = routers();
    t.packet(S1, G1, ETH1);
    t.settle();
    t.release(pim, ETH1).unwrap();
    assert_eq!(t.ops(), [delete(S1, G1)]);
}

#[test]
fn sec5_2_no_cache_for_existing_mfe_reinstalls_without_callbacks() {
    let (mut t, _pim, _dvmrp, _igmp) = routers();
    t.packet(S1, G1, ETH1);
    t.settle();
    t.packet(S1, G1, ETH1);
    assert_eq!(t.calls(), []);
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[])]);
}

#[test]
fn sec5_2_mfe_table_full_is_not_enough_memory() {
    let mut t = Harness::with_config(Config {
        max_mfes: 1,
        ..Config::default()
    });
    let pim = t.register("pim", PIM);
    t.own(pim, ETH1);
    t.packet(S1, G1, ETH1);
    let now = t.now;
    assert_eq!(
        t.mgm.no_cache_upcall(S1, G2, ETH1, &[], now),
        Err(MgmError::NotEnoughMemory)
    );
}

#[test]
fn sec5_7_doc_set_mfe_changes_upstream_only_without_callbacks_or_map_ops() {
    let (mut t, pim, _dvmrp, _igmp) = routers();
    t.packet(S1, G1, ETH1);
    t.settle();
    let up = Ipv4Addr::new(10, 1, 0, 9);
    assert_eq!(t.mgm.set_mfe(pim, S1, G1, up), Ok(()));
    assert_eq!(t.calls(), []);
    assert_eq!(t.ops(), []);
    let rec = t.mgm.get_mfe(S1, G1, 1000, t.now).unwrap();
    assert_eq!((rec.upstream, rec.in_if, rec.timeout_s), (up, ETH1, 900));
}

#[test]
fn sec5_7_doc_set_mfe_errors() {
    let (mut t, pim, dvmrp, _igmp) = routers();
    t.packet(S1, G1, ETH1);
    // no such MFE
    assert_eq!(t.mgm.set_mfe(pim, S2, G1, UP1), Err(MgmError::NotFound));
    // [Dec] the caller must own the iif
    assert_eq!(
        t.mgm.set_mfe(dvmrp, S1, G1, UP1),
        Err(MgmError::InvalidParameter)
    );
    // bad handle
    t.release(dvmrp, ETH3).unwrap();
    t.mgm.deregister(dvmrp).unwrap();
    assert_eq!(
        t.mgm.set_mfe(dvmrp, S1, G1, UP1),
        Err(MgmError::InvalidParameter)
    );
}

#[test]
fn sec6_3_counters_for_unknown_mfe_are_not_found() {
    let (mut t, _pim, _dvmrp, _igmp) = routers();
    assert_eq!(
        t.mgm.set_mfe_counters(S1, G1, MfeCounters::default()),
        Err(MgmError::NotFound)
    );
}

#[test]
fn sec0_doc_source_group_entry_constructors_use_spec_masks() {
    let e = SourceGroupEntry::star_g(G1);
    assert_eq!(
        (e.source_mask, e.group_mask),
        (Ipv4Addr::UNSPECIFIED, crate::core::ALL_ONES)
    );
}

#[test]
fn sec5_6_dec_vanished_iif_deletes_its_mfes() {
    // given: MFEs with iif ETH1 (S1,G1) and iif ETH2 (S2,G1)
    let (mut t, _pim, _dvmrp, _igmp) = routers();
    t.packet(S1, G1, ETH1);
    t.packet(S2, G1, ETH2);
    t.settle();
    // when: the Linux interface behind ETH1 disappears
    let now = t.now;
    t.mgm.interface_removed(ETH1.ifindex, now);
    // then: only the MFE whose iif vanished is deleted
    assert_eq!(t.ops(), [delete(S1, G1)]);
    assert_eq!(t.mgm.get_mfe(S1, G1, 1000, t.now), Err(MgmError::NotFound));
    assert!(t.mgm.get_mfe(S2, G1, 1000, t.now).is_ok());
}

#[test]
fn sec5_1_doc_mfe_records_the_unicast_route_used_for_rpf() {
    let (mut t, _pim, _dvmrp, _igmp) = routers();
    t.packet(S1, G1, ETH3);
    let rec = t.mgm.get_mfe(S1, G1, 1000, t.now).unwrap();
    assert_eq!(rec.src_mask, crate::core::ALL_ONES);
    assert_eq!((rec.in_if, rec.in_if_protocol), (ETH1, PIM));
    assert_eq!(
        rec.route,
        RouteInfo {
            protocol: 2,
            network: Ipv4Addr::new(10, 1, 0, 0),
            mask: Ipv4Addr::new(255, 255, 0, 0),
        }
    );
}

/// An RPF owner that answers with another route and another next hop of the iif index.
struct Rewriter;

const REWRITTEN: RouteInfo = RouteInfo {
    protocol: 13,
    network: Ipv4Addr::new(10, 0, 0, 0),
    mask: Ipv4Addr::new(255, 0, 0, 0),
};

impl crate::core::RoutingProtocol for Rewriter {
    fn rpf(
        &mut self,
        _cx: &mut crate::core::Cx,
        _sg: SourceGroupEntry,
        iif: &mut crate::core::InterfaceId,
        _upstream: &mut Ipv4Addr,
        _hdr: &[u8],
        route: &mut RouteInfo,
    ) {
        *iif = NBMA_B;
        *route = REWRITTEN;
    }
}

#[test]
fn sec5_2_doc_rpf_callback_may_rewrite_next_hop_and_route() {
    // given: the rewriter owns both peers of the NBMA interface; the packet arrives on NBMA_A
    let mut t = Harness::new();
    let h = t
        .mgm
        .register(Box::new(Rewriter), DVMRP, crate::core::ComponentId(1))
        .unwrap();
    t.own(h, NBMA_A);
    t.own(h, NBMA_B);
    // when
    t.packet(S_NOROUTE, G1, NBMA_A);
    // then: the MFE uses the rewritten next hop and route
    assert_eq!(t.ops(), [install(S_NOROUTE, G1, NBMA_B, &[])]);
    let rec = t.mgm.get_mfe(S_NOROUTE, G1, 1000, t.now).unwrap();
    assert_eq!((rec.in_if, rec.route), (NBMA_B, REWRITTEN));
}

#[test]
fn sec5_2_dec_creation_alerts_with_equal_protocol_ids_go_in_component_order() {
    // given: two PIM instances, component 2 registered before component 1, each with a receiver
    let mut t = Harness::new();
    let dvmrp = t.register("dvmrp", DVMRP);
    let pim_b = t.try_register("pim_b", PIM, 2).unwrap();
    let pim_a = t.try_register("pim_a", PIM, 1).unwrap();
    t.own(dvmrp, ETH1);
    t.own(pim_b, ETH2);
    t.own(pim_a, ETH3);
    t.join(pim_b, star(G1), ETH2);
    t.join(pim_a, star(G1), ETH3);
    t.settle();
    // when
    t.packet(S1, G1, ETH1);
    // then: (PIM, 1) before (PIM, 2)
    let order: Vec<_> = t
        .calls()
        .into_iter()
        .filter(|(_, cb)| matches!(cb, Cb::CreationAlert { .. }))
        .map(|(to, _)| to)
        .collect();
    assert_eq!(order, ["pim_a", "pim_b"]);
}

#[test]
fn negative_mfes_past_the_budget_evict_the_interfaces_oldest_only() {
    const G3: Ipv4Addr = Ipv4Addr::new(239, 3, 3, 3);
    let mut t = Harness::with_config(Config {
        negative_budget: 2,
        ..Config::default()
    });
    let pim = t.register("pim", PIM);
    t.own(pim, ETH1);
    t.own(pim, ETH2);
    t.join(pim, star(G1), ETH2);
    // given: a forwarding MFE and two negative ones with iif ETH1, one negative with iif ETH2
    t.packet(S1, G1, ETH1);
    t.advance(1);
    t.packet(S1, G2, ETH1);
    t.advance(1);
    t.packet(S_NOROUTE, G2, ETH1);
    t.packet(S2, G2, ETH2);
    t.settle();
    assert_eq!(t.mgm.negative_evictions(), 0);
    // when: a third negative MFE comes on ETH1
    t.advance(1);
    t.packet(S1, G3, ETH1);
    // then: ETH1's oldest negative MFE goes; the forwarding one and ETH2's stay
    assert_eq!(t.ops(), [install(S1, G3, ETH1, &[]), delete(S1, G2)]);
    assert_eq!(t.mgm.negative_evictions(), 1);
    let now = t.now;
    assert!(t.mgm.get_mfe(S1, G1, 1000, now).is_ok());
    assert!(t.mgm.get_mfe(S1, G2, 1000, now).is_err());
    assert!(t.mgm.get_mfe(S_NOROUTE, G2, 1000, now).is_ok());
    assert!(t.mgm.get_mfe(S2, G2, 1000, now).is_ok());
}
