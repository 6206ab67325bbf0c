//! Spec §10 (consistency): start-up reconciliation with entries already in the data plane.

use super::harness::*;
use crate::core::{DataPlaneEntry, InterfaceId};
use std::net::Ipv4Addr;

fn entry(s: Ipv4Addr, g: Ipv4Addr, iif: InterfaceId, oifs: &[InterfaceId]) -> DataPlaneEntry {
    DataPlaneEntry {
        source: s,
        group: g,
        iif,
        oifs: set(oifs),
    }
}

#[test]
fn sec10_dec_entry_equal_to_core_mfe_is_kept_without_ops() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    t.own(pim, ETH1);
    t.own(pim, ETH2);
    t.join(pim, star(G1), ETH2);
    t.packet(S1, G1, ETH1);
    t.settle();
    t.reconcile(vec![entry(S1, G1, ETH1, &[ETH2])]);
    assert_eq!(t.ops(), []);
    assert_eq!(t.calls(), []);
    t.assert_map_matches();
}

#[test]
fn sec10_dec_differing_entry_is_replaced_in_place_and_missing_one_installed() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    t.own(pim, ETH1);
    t.own(pim, ETH2);
    t.join(pim, star(G1), ETH2);
    t.packet(S1, G1, ETH1);
    t.packet(S1, G2, ETH1);
    t.settle();
    t.reconcile(vec![entry(S1, G1, ETH1, &[ETH2, ETH3])]);
    assert_eq!(
        t.ops(),
        [install(S1, G1, ETH1, &[ETH2]), install(S1, G2, ETH1, &[])]
    );
    assert_eq!(t.calls(), [], "data-plane drift sends no MFE-level alert");
    t.assert_map_matches();
}

#[test]
fn sec10_dec_foreign_entry_with_owned_iif_is_re_resolved_and_kept_if_it_matches() {
    // given: a restarted daemon whose protocols are back, and a pinned entry it never created
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    t.own(pim, ETH1);
    t.own(pim, ETH2);
    t.join(pim, star(G1), ETH2);
    t.settle();
    // when
    t.reconcile(vec![entry(S1, G1, ETH1, &[ETH2])]);
    // then: the protocol is consulted as for a new packet, but the entry is not flushed
    let calls = t.calls();
    assert!(
        matches!(calls[0], ("pim", Cb::Rpf { hdr_len: 0, .. })),
        "{calls:?}"
    );
    assert!(matches!(calls[1], ("pim", Cb::CreationAlert { .. })));
    assert_eq!(t.ops(), []);
    assert_eq!(
        t.mgm.poll_timeout(),
        Some(t.now + std::time::Duration::from_secs(900))
    );
    t.assert_map_matches();
}

#[test]
fn sec10_dec_foreign_entry_is_rewritten_when_re_resolution_differs() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    t.own(pim, ETH1);
    t.own(pim, ETH2);
    t.join(pim, star(G1), ETH2);
    t.script("pim").veto.insert(ETH2);
    t.settle();
    t.reconcile(vec![entry(S1, G1, ETH1, &[ETH2])]);
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[])]);
    t.assert_map_matches();
}

#[test]
fn sec10_dec_entry_nobody_can_vouch_for_is_deleted() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    t.own(pim, ETH2);
    t.settle();
    // route toward S1 is ETH1, which nobody owns
    t.reconcile(vec![
        entry(S1, G1, ETH1, &[ETH2]),
        entry(S_NOROUTE, G2, ETH4, &[]),
    ]);
    assert_eq!(t.ops(), [delete(S1, G1), delete(S_NOROUTE, G2)]);
    assert_eq!(t.calls(), []);
    t.assert_map_matches();
}
