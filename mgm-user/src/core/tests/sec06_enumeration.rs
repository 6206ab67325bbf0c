//! Spec §6: MFE, MFE-statistics and group-membership enumeration with the buffer protocol.

use super::harness::*;
use crate::core::{
    Config, MfeCounters, MgmError, OifCounters, ProtocolHandle, SourceGroupEntry, WireSize,
    ALL_ONES, ALL_SOURCES, ANY_SOURCE, MGM_MFE_STATS_0, MGM_MFE_STATS_1,
};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

const G0: Ipv4Addr = Ipv4Addr::new(224, 1, 1, 1);

/// pim owns ETH1–ETH3 and forwards G1 on ETH3: MFEs (S1,G0) [], (S1,G1) [ETH3], (S2,G1) [ETH3].
fn three_mfes() -> (Harness, ProtocolHandle) {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    t.own(pim, ETH1);
    t.own(pim, ETH2);
    t.own(pim, ETH3);
    t.join(pim, star(G1), ETH3);
    t.packet(S2, G1, ETH2);
    t.packet(S1, G1, ETH1);
    t.packet(S1, G0, ETH1);
    t.settle();
    (t, pim)
}

#[test]
fn sec0_dec_and_sec6_2_doc_mfes_are_ordered_by_group_then_source_as_big_endian_numbers() {
    let (t, _) = three_mfes();
    let b = t.mgm.get_first_mfe(10_000, t.now).unwrap();
    let keys: Vec<_> = b.records.iter().map(|r| (r.group, r.source)).collect();
    assert_eq!(keys, [(G0, S1), (G1, S1), (G1, S2)]);
    assert_eq!(b.status(), MgmError::NoMoreItems);
}

#[test]
fn sec6_1_doc_insufficient_buffer_reports_the_next_record_size_and_writes_nothing() {
    let (t, _) = three_mfes();
    // (G0,S1) has no OIF: 60 bytes
    assert_eq!(
        t.mgm.get_first_mfe(59, t.now),
        Err(MgmError::InsufficientBuffer { needed: 60 })
    );
    // after it comes (G1,S1) with one OIF: 60 + 16
    assert_eq!(
        t.mgm.get_next_mfe(S1, G0, 75, t.now),
        Err(MgmError::InsufficientBuffer { needed: 76 })
    );
}

#[test]
fn sec6_1_doc_whole_records_that_fit_then_more_data_then_no_more_items() {
    let (t, _) = three_mfes();
    let first = t.mgm.get_first_mfe(60 + 76, t.now).unwrap();
    assert_eq!(first.records.len(), 2);
    assert_eq!(first.status(), MgmError::MoreData);
    assert_eq!(first.status().win32(), 234);
    let last = &first.records[1];
    let rest = t
        .mgm
        .get_next_mfe(last.source, last.group, 76, t.now)
        .unwrap();
    assert_eq!(rest.records.len(), 1);
    assert_eq!(rest.status(), MgmError::NoMoreItems);
    assert_eq!(rest.status().win32(), 259);
    let none = t.mgm.get_next_mfe(S2, G1, 60, t.now).unwrap();
    assert!(none.records.is_empty());
    assert_eq!(
        none.status(),
        MgmError::NoMoreItems,
        "zero records, end reached"
    );
}

#[test]
fn sec6_1_dec_first_and_next_never_return_no_error() {
    let (t, _) = three_mfes();
    for budget in [60, 136, 10_000] {
        let b = t.mgm.get_first_mfe(budget, t.now).unwrap();
        assert!(matches!(
            b.status(),
            MgmError::MoreData | MgmError::NoMoreItems
        ));
    }
}

#[test]
fn sec6_2_dec_get_next_starts_after_a_key_that_no_longer_exists() {
    let (t, _) = three_mfes();
    let b = t
        .mgm
        .get_next_mfe(Ipv4Addr::new(10, 1, 5, 5), G1, 10_000, t.now)
        .unwrap();
    let keys: Vec<_> = b.records.iter().map(|r| (r.group, r.source)).collect();
    assert_eq!(keys, [(G1, S2)]);
}

#[test]
fn sec6_2_doc_get_mfe_not_found_and_insufficient_buffer() {
    let (t, _) = three_mfes();
    assert_eq!(t.mgm.get_mfe(S2, G0, 1000, t.now), Err(MgmError::NotFound));
    assert_eq!(
        t.mgm.get_mfe(S1, G1, 75, t.now),
        Err(MgmError::InsufficientBuffer { needed: 76 })
    );
    let rec = t.mgm.get_mfe(S1, G1, 76, t.now).unwrap();
    assert_eq!(rec.wire_size(), 76);
    assert_eq!(rec.src_mask, ALL_ONES);
    assert_eq!(rec.oifs, [ETH3]);
    assert_eq!(rec.in_if_protocol, PIM);
    assert_eq!(rec.route.mask, Ipv4Addr::new(255, 255, 0, 0));
}

#[test]
fn sec6_2_doc_stats_flags_select_the_record_type_and_others_are_invalid() {
    let (t, _) = three_mfes();
    let s0 = t
        .mgm
        .get_mfe_stats(S1, G1, 1000, MGM_MFE_STATS_0, t.now)
        .unwrap();
    assert_eq!((s0.ex.is_none(), s0.wire_size()), (true, 64 + 28));
    let s1 = t
        .mgm
        .get_mfe_stats(S1, G1, 1000, MGM_MFE_STATS_1, t.now)
        .unwrap();
    assert_eq!((s1.ex.is_some(), s1.wire_size()), (true, 84 + 28));
    for bad in [0, 3, 4] {
        assert_eq!(
            t.mgm.get_mfe_stats(S1, G1, 1000, bad, t.now),
            Err(MgmError::InvalidParameter)
        );
        assert_eq!(
            t.mgm.get_first_mfe_stats(1000, bad, t.now),
            Err(MgmError::InvalidParameter)
        );
        assert_eq!(
            t.mgm.get_next_mfe_stats(S1, G1, 1000, bad, t.now),
            Err(MgmError::InvalidParameter)
        );
    }
    assert_eq!(
        t.mgm.get_mfe_stats(S2, G0, 1000, MGM_MFE_STATS_0, t.now),
        Err(MgmError::NotFound)
    );
    assert_eq!(
        t.mgm.get_mfe_stats(S1, G1, 91, MGM_MFE_STATS_0, t.now),
        Err(MgmError::InsufficientBuffer { needed: 92 })
    );
}

#[test]
fn sec6_2_stats_enumeration_follows_the_same_order_and_buffer_rules() {
    let (t, _) = three_mfes();
    let b = t
        .mgm
        .get_first_mfe_stats(64 + 92, MGM_MFE_STATS_0, t.now)
        .unwrap();
    assert_eq!(b.records.len(), 2);
    assert_eq!(b.status(), MgmError::MoreData);
    let n = t
        .mgm
        .get_next_mfe_stats(S1, G1, 1000, MGM_MFE_STATS_1, t.now)
        .unwrap();
    assert_eq!(n.records.len(), 1);
    assert_eq!(n.status(), MgmError::NoMoreItems);
}

#[test]
fn sec6_3_doc_mfe_times_in_seconds_and_stats_times_in_hundredths() {
    let (mut t, _) = three_mfes();
    t.advance(12);
    let rec = t.mgm.get_mfe(S1, G1, 1000, t.now).unwrap();
    assert_eq!(
        (rec.up_time_s, rec.expiry_time_s, rec.timeout_s),
        (12, 888, 900)
    );
    let st = t
        .mgm
        .get_mfe_stats(S1, G1, 1000, MGM_MFE_STATS_0, t.now)
        .unwrap();
    assert_eq!((st.up_time_cs, st.expiry_time_cs), (1200, 88_800));
}

#[test]
fn sec6_3_doc_counters_wrap_to_32_bits_and_total_out_sums_oifs() {
    let (mut t, pim) = three_mfes();
    t.own(pim, ETH4);
    t.join(pim, star(G1), ETH4);
    let mut oifs = BTreeMap::new();
    oifs.insert(
        ETH3,
        OifCounters {
            out_packets: 5,
            ttl_too_low: 1,
            ..OifCounters::default()
        },
    );
    oifs.insert(
        ETH4,
        OifCounters {
            out_packets: 7,
            ..OifCounters::default()
        },
    );
    let counters = MfeCounters {
        in_pkts: (1u64 << 32) + 3,
        in_octets: 1500,
        different_if: 2,
        negative_mfe: 4,
        oifs,
        ..MfeCounters::default()
    };
    t.mgm.set_mfe_counters(S1, G1, counters).unwrap();
    let st = t
        .mgm
        .get_mfe_stats(S1, G1, 1000, MGM_MFE_STATS_1, t.now)
        .unwrap();
    assert_eq!(
        (st.in_pkts, st.in_octets, st.pkts_different_if),
        (3, 1500, 2)
    );
    let ex = st.ex.unwrap();
    assert_eq!((ex.negative_mfe, ex.total_out_packets), (4, 12));
    assert_eq!(st.oifs.len(), 2);
    assert_eq!(
        (
            st.oifs[0].if_id,
            st.oifs[0].out_packets,
            st.oifs[0].ttl_too_low
        ),
        (ETH3, 5, 1)
    );
}

#[test]
fn sec6_3_dec_vetoed_oifs_are_omitted() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    t.own(pim, ETH1);
    t.own(pim, ETH2);
    t.own(pim, ETH3);
    t.join(pim, star(G1), ETH2);
    t.join(pim, star(G1), ETH3);
    t.script("pim").veto.insert(ETH2);
    t.packet(S1, G1, ETH1);
    let rec = t.mgm.get_mfe(S1, G1, 1000, t.now).unwrap();
    assert_eq!(rec.oifs, [ETH3]);
}

/// pim on ETH2 and dvmrp on ETH3 with overlapping memberships; IGMP local on ETH2.
fn members() -> (Harness, ProtocolHandle) {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    let dvmrp = t.register("dvmrp", DVMRP);
    let igmp = t.register("igmp", IGMP);
    t.own(pim, ETH2);
    t.own(igmp, ETH2);
    t.own(dvmrp, ETH3);
    t.join(pim, star(G1), ETH2);
    t.join(dvmrp, star(G1), ETH3);
    t.join(dvmrp, sg(S2, G1), ETH3);
    t.join(dvmrp, star_star(), ETH3);
    t.join(igmp, star(G2), ETH2); // local
    t.settle();
    (t, pim)
}

#[test]
fn sec6_4_dec_all_sources_one_record_per_key_sorted_local_included() {
    let (mut t, pim) = members();
    let e = t.mgm.group_enumeration_start(pim, ALL_SOURCES).unwrap();
    let b = t.mgm.group_enumeration_get_next(e, 1000).unwrap();
    assert_eq!(b.records, [star_star(), star(G1), sg(S2, G1), star(G2)]);
    assert_eq!(b.status(), MgmError::NoMoreItems);
    t.mgm.group_enumeration_end(e).unwrap();
}

#[test]
fn sec6_4_dec_any_source_one_star_g_record_per_group() {
    let (mut t, pim) = members();
    let e = t.mgm.group_enumeration_start(pim, ANY_SOURCE).unwrap();
    let b = t.mgm.group_enumeration_get_next(e, 1000).unwrap();
    assert_eq!(b.records, [star(G1), star(G2)]);
}

#[test]
fn sec6_4_dec_snapshot_at_start_and_buffer_protocol() {
    let (mut t, pim) = members();
    let e = t.mgm.group_enumeration_start(pim, ALL_SOURCES).unwrap();
    // changes after Start are not seen
    t.leave(pim, star(G1), ETH2);
    assert_eq!(
        t.mgm.group_enumeration_get_next(e, 15),
        Err(MgmError::InsufficientBuffer {
            needed: SourceGroupEntry::WIRE_SIZE
        })
    );
    let b = t.mgm.group_enumeration_get_next(e, 40).unwrap();
    assert_eq!((b.records.len(), b.status()), (2, MgmError::MoreData));
    let b = t.mgm.group_enumeration_get_next(e, 40).unwrap();
    assert_eq!((b.records.len(), b.status()), (2, MgmError::NoMoreItems));
    let b = t.mgm.group_enumeration_get_next(e, 40).unwrap();
    assert_eq!((b.records.len(), b.status()), (0, MgmError::NoMoreItems));
}

#[test]
fn sec6_4_doc_start_get_next_and_end_errors() {
    let (mut t, pim) = members();
    assert_eq!(
        t.mgm.group_enumeration_start(pim, 2),
        Err(MgmError::InvalidParameter)
    );
    let gone = t.register("gone", OTHER);
    t.mgm.deregister(gone).unwrap();
    assert_eq!(
        t.mgm.group_enumeration_start(gone, ALL_SOURCES),
        Err(MgmError::InvalidParameter)
    );
    let e = t.mgm.group_enumeration_start(pim, ALL_SOURCES).unwrap();
    t.mgm.group_enumeration_end(e).unwrap();
    assert_eq!(
        t.mgm.group_enumeration_end(e),
        Err(MgmError::InvalidParameter)
    );
    assert_eq!(
        t.mgm.group_enumeration_get_next(e, 100),
        Err(MgmError::InvalidParameter)
    );
}

const OTHER: crate::core::ProtocolId = crate::core::ProtocolId(200);

#[test]
fn sec6_4_too_many_open_enumerations_is_not_enough_memory() {
    let mut t = Harness::with_config(Config {
        max_enumerations: 1,
        ..Config::default()
    });
    let pim = t.register("pim", PIM);
    t.mgm.group_enumeration_start(pim, ALL_SOURCES).unwrap();
    assert_eq!(
        t.mgm.group_enumeration_start(pim, ANY_SOURCE),
        Err(MgmError::NotEnoughMemory)
    );
}

#[test]
fn sec6_2_doc_mfe_calls_need_no_handle_and_see_next_hops() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    t.own(pim, NBMA_A);
    t.own(pim, NBMA_B);
    t.join(pim, star(G1), NBMA_B);
    t.packet(S_NOROUTE, G1, NBMA_A);
    let rec = t.mgm.get_mfe(S_NOROUTE, G1, 1000, t.now).unwrap();
    assert_eq!(rec.oifs, [NBMA_B]);
    assert_eq!(rec.in_if, NBMA_A);
}

#[test]
fn sec6_2_dec_mfe_enumeration_reads_the_current_table_without_snapshot() {
    let (mut t, _) = three_mfes();
    let first = t.mgm.get_first_mfe(60, t.now).unwrap();
    assert_eq!((first.records[0].group, first.records[0].source), (G0, S1));
    // an MFE appears after the batch position, another one before it
    t.packet(S2, G2, ETH2);
    t.packet(S2, G0, ETH2);
    let rest = t.mgm.get_next_mfe(S1, G0, 10_000, t.now).unwrap();
    let keys: Vec<_> = rest.records.iter().map(|r| (r.group, r.source)).collect();
    assert_eq!(keys, [(G0, S2), (G1, S1), (G1, S2), (G2, S2)]);
}

#[test]
fn sec0_dec_addresses_order_as_big_endian_numbers_not_host_order() {
    // In little-endian u32 order these pairs would sort the other way round.
    let ga = Ipv4Addr::new(224, 0, 1, 2);
    let gb = Ipv4Addr::new(225, 0, 1, 1);
    let sa = Ipv4Addr::new(192, 0, 2, 2);
    let sb = Ipv4Addr::new(193, 0, 2, 1);
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    t.own(pim, ETH1);
    t.own(pim, ETH2);
    for (s, g) in [(sb, gb), (sb, ga), (sa, gb), (sa, ga)] {
        t.packet(s, g, ETH1);
        t.join(pim, sg(s, g), ETH2);
    }
    let b = t.mgm.get_first_mfe(10_000, t.now).unwrap();
    let keys: Vec<_> = b.records.iter().map(|r| (r.group, r.source)).collect();
    assert_eq!(keys, [(ga, sa), (ga, sb), (gb, sa), (gb, sb)]);
    let e = t.mgm.group_enumeration_start(pim, ALL_SOURCES).unwrap();
    let b = t.mgm.group_enumeration_get_next(e, 1000).unwrap();
    assert_eq!(b.records, [sg(sa, ga), sg(sb, ga), sg(sa, gb), sg(sb, gb)]);
}

#[test]
fn sec6_4_dec_any_source_reports_a_group_that_has_only_sg_memberships() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    t.own(pim, ETH2);
    t.join(pim, sg(S1, G1), ETH2);
    t.join(pim, sg(S2, G1), ETH2);
    let e = t.mgm.group_enumeration_start(pim, ANY_SOURCE).unwrap();
    let b = t.mgm.group_enumeration_get_next(e, 1000).unwrap();
    assert_eq!(b.records, [star(G1)]);
    assert_eq!(
        (b.records[0].source_mask, b.records[0].group_mask),
        (Ipv4Addr::UNSPECIFIED, ALL_ONES)
    );
}

/// The paged enumeration the sockets use (GetFirst/GetNext with a record count).
mod pages {
    use super::*;
    use crate::core::mfe::MfeKey;

    fn group(i: u8) -> Ipv4Addr {
        Ipv4Addr::new(239, 0, 0, i)
    }

    /// pim owns ETH1 and ETH2; one MFE from S1 for each of `groups`.
    fn mfes(groups: impl IntoIterator<Item = u8>) -> Harness {
        let mut t = Harness::new();
        let pim = t.register("pim", PIM);
        t.own(pim, ETH1);
        t.own(pim, ETH2);
        for i in groups {
            t.packet(S1, group(i), ETH1);
        }
        t.settle();
        t
    }

    /// Walks the MFEs `limit` at a time, calling `between` after each page with the pages so
    /// far; returns the groups seen and the size of each page.
    fn walk(
        t: &mut Harness,
        limit: usize,
        mut between: impl FnMut(&mut Harness, usize),
    ) -> (Vec<Ipv4Addr>, Vec<usize>) {
        let (mut seen, mut sizes, mut after) = (Vec::new(), Vec::new(), None);
        loop {
            let b = t.mgm.mfe_page(after, limit, t.now);
            assert!(b.records.len() <= limit);
            sizes.push(b.records.len());
            seen.extend(b.records.iter().map(|r| r.group));
            if !b.more {
                return (seen, sizes);
            }
            let last = b.records.last().expect("a page with more has records");
            after = Some((last.group, last.source));
            between(t, sizes.len());
        }
    }

    #[test]
    fn an_empty_table_is_one_empty_last_page() {
        let mut t = mfes([]);
        assert_eq!(walk(&mut t, 3, |_, _| ()), (vec![], vec![0]));
        let pim = t.register("other", DVMRP);
        let b = t.mgm.group_page(pim, ALL_SOURCES, None, 3).unwrap();
        assert_eq!((b.records.len(), b.more), (0, false));
    }

    #[test]
    fn a_table_of_a_whole_number_of_pages_ends_without_an_empty_page() {
        let mut t = mfes(1..=6);
        let all: Vec<_> = (1..=6).map(group).collect();
        assert_eq!(walk(&mut t, 3, |_, _| ()), (all.clone(), vec![3, 3]));
        assert_eq!(walk(&mut t, 2, |_, _| ()), (all.clone(), vec![2, 2, 2]));
        assert_eq!(walk(&mut t, 6, |_, _| ()), (all.clone(), vec![6]));
        assert_eq!(walk(&mut t, 5, |_, _| ()), (all, vec![5, 1]));
        let stats = t.mgm.mfe_stats_page(Some((group(4), S1)), 2, t.now);
        let groups: Vec<_> = stats.records.iter().map(|r| r.group).collect();
        assert_eq!((groups, stats.more), (vec![group(5), group(6)], false));
        assert!(stats.records.iter().all(|r| r.ex.is_some()));
    }

    #[test]
    fn entries_that_stay_are_seen_once_whatever_comes_and_goes_between_pages() {
        // Groups 10, 20, …, 100.
        let mut t = mfes((1..=10).map(|i| i * 10));
        let (seen, _) = walk(&mut t, 3, |t, page| {
            if page != 1 {
                return;
            }
            // After 10, 20, 30: the cursor's own entry goes, as do one already seen and one
            // still ahead; new ones come before the cursor (not seen: already passed), between
            // the cursor and the next entry, and at the end.
            for gone in [30, 10, 60] {
                t.mgm.remove_mfe(MfeKey {
                    group: group(gone),
                    source: S1,
                });
            }
            for new in [15, 35, 200] {
                t.packet(S1, group(new), ETH1);
            }
        });
        let want: Vec<_> = [10, 20, 30, 35, 40, 50, 70, 80, 90, 100, 200]
            .into_iter()
            .map(group)
            .collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn group_pages_follow_the_table_between_pages() {
        let mut t = Harness::new();
        let pim = t.register("pim", PIM);
        t.own(pim, ETH2);
        for i in 1..=5 {
            t.join(pim, star(group(i)), ETH2);
        }
        let first = t.mgm.group_page(pim, ANY_SOURCE, None, 2).unwrap();
        assert_eq!(
            (first.records.clone(), first.more),
            (vec![star(group(1)), star(group(2))], true)
        );
        t.leave(pim, star(group(2)), ETH2);
        t.leave(pim, star(group(3)), ETH2);
        t.join(pim, sg(S1, group(4)), ETH2);
        t.join(pim, star(group(9)), ETH2);
        let rest = t
            .mgm
            .group_page(
                pim,
                ALL_SOURCES,
                Some((group(2), Ipv4Addr::UNSPECIFIED)),
                10,
            )
            .unwrap();
        assert_eq!(
            (rest.records, rest.more),
            (
                vec![
                    star(group(4)),
                    sg(S1, group(4)),
                    star(group(5)),
                    star(group(9))
                ],
                false
            )
        );
        assert_eq!(
            t.mgm.group_page(pim, 7, None, 1),
            Err(MgmError::InvalidParameter)
        );
    }
}
