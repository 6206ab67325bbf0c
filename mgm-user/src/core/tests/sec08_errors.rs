//! Spec §1 and §8: the Win32 codes, and every code each function can return.

use super::harness::*;
use crate::core::{Config, MgmError, ALL_SOURCES, MGM_MFE_STATS_0};

#[test]
fn sec1_doc_win32_values_are_the_standard_ones() {
    let codes = [
        (MgmError::NotEnoughMemory, 8),
        (MgmError::InvalidParameter, 87),
        (MgmError::InsufficientBuffer { needed: 60 }, 122),
        (MgmError::AlreadyExists, 183),
        (MgmError::MoreData, 234),
        (MgmError::NoMoreItems, 259),
        (MgmError::CanNotComplete, 1003),
        (MgmError::NotFound, 1168),
    ];
    for (e, code) in codes {
        assert_eq!(e.win32(), code, "{e}");
    }
}

#[test]
fn sec8_dec_every_code_is_produced_by_the_api() {
    // One scenario that walks the §8 table and collects each code the API returned.
    let mut t = Harness::with_config(Config {
        max_enumerations: 1,
        ..Config::default()
    });
    let mut seen = Vec::new();
    let pim = t.register("pim", PIM);
    seen.push(t.try_register("pim", PIM, 1).unwrap_err()); // ALREADY_EXISTS
    t.own(pim, ETH1);
    seen.push(t.mgm.deregister(pim).unwrap_err()); // CAN_NOT_COMPLETE
    seen.push(t.add(pim, star(G1), ETH9, JOIN).unwrap_err()); // INVALID_PARAMETER
    seen.push(t.mgm.get_protocol_on_interface(ETH9).unwrap_err()); // NOT_FOUND
    t.packet(S1, G1, ETH1);
    t.packet(S1, G2, ETH1);
    seen.push(t.mgm.get_first_mfe(1, t.now).unwrap_err()); // INSUFFICIENT_BUFFER
    seen.push(t.mgm.get_first_mfe(60, t.now).unwrap().status()); // MORE_DATA
    seen.push(
        t.mgm
            .get_first_mfe_stats(1000, MGM_MFE_STATS_0, t.now)
            .unwrap()
            .status(),
    ); // NO_MORE_ITEMS
    t.mgm.group_enumeration_start(pim, ALL_SOURCES).unwrap();
    seen.push(t.mgm.group_enumeration_start(pim, ALL_SOURCES).unwrap_err()); // NOT_ENOUGH_MEMORY
    let mut codes: Vec<u32> = seen.iter().map(MgmError::win32).collect();
    codes.sort();
    assert_eq!(codes, [8, 87, 122, 183, 234, 259, 1003, 1168]);
}

const ETH9: crate::core::InterfaceId = crate::core::InterfaceId::new(9);

#[test]
fn sec8_doc_delete_membership_codes() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    let dvmrp = t.register("dvmrp", DVMRP);
    t.own(pim, ETH1);
    t.own(dvmrp, ETH2);
    assert_eq!(
        t.del(pim, star(G1), ETH2, JOIN),
        Err(MgmError::InvalidParameter)
    );
    assert_eq!(t.del(pim, star(G1), ETH9, JOIN), Err(MgmError::NotFound));
    assert_eq!(t.del(pim, star(G1), ETH1, JOIN), Err(MgmError::NotFound));
}

#[test]
fn sec8_doc_get_mfe_codes() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    t.own(pim, ETH1);
    assert_eq!(t.mgm.get_mfe(S1, G1, 100, t.now), Err(MgmError::NotFound));
    t.packet(S1, G1, ETH1);
    assert_eq!(
        t.mgm.get_mfe(S1, G1, 10, t.now),
        Err(MgmError::InsufficientBuffer { needed: 60 })
    );
}

#[test]
fn sec1_doc_state_flag_values() {
    assert_eq!(crate::core::MGM_JOIN_STATE_FLAG, 0x1);
    assert_eq!(crate::core::MGM_FORWARD_STATE_FLAG, 0x2);
}

#[test]
fn sec8_dec_mfe_stats_functions_add_invalid_parameter_for_flags() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    t.own(pim, ETH1);
    t.packet(S1, G1, ETH1);
    let bad = MGM_MFE_STATS_0 | 0x4;
    for r in [
        t.mgm.get_mfe_stats(S1, G1, 1000, bad, t.now).map(|_| ()),
        t.mgm.get_first_mfe_stats(1000, bad, t.now).map(|_| ()),
        t.mgm
            .get_next_mfe_stats(S1, G1, 1000, bad, t.now)
            .map(|_| ()),
    ] {
        assert_eq!(r.map_err(|e| e.win32()), Err(87));
    }
}
