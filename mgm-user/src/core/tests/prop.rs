//! Property test (style §9): seeded random operation sequences, with the invariants checked
//! after every step against the core itself and against the reference model in `model.rs`.

use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::harness::*;
use super::model::{modelled, Model, CLIENTS};
use crate::core::{
    GroupFilter, InterfaceId, ProtocolHandle, ProtocolId, SourceGroupEntry, ALL_ONES,
};

const IFS: [InterfaceId; 5] = [ETH1, ETH2, ETH3, ETH4, NBMA_A];
const SOURCES: [Ipv4Addr; 3] = [S1, S2, S_NOROUTE];
const GROUPS: [Ipv4Addr; 2] = [G1, G2];

fn keys() -> [SourceGroupEntry; 7] {
    [
        star_star(),
        star(G1),
        star(G2),
        sg(S1, G1),
        sg(S2, G1),
        sg(S_NOROUTE, G2),
        // invalid: (S specific, G wildcard)
        SourceGroupEntry {
            source: S1,
            source_mask: ALL_ONES,
            group: Ipv4Addr::UNSPECIFIED,
            group_mask: Ipv4Addr::UNSPECIFIED,
        },
    ]
}

/// One step of a scenario. Indices pick from the fixed tables above.
#[derive(Clone, Debug)]
pub enum Op {
    Register(usize),
    Deregister(usize),
    Take(usize, usize),
    Release(usize, usize),
    Add(usize, usize, usize, u32),
    Delete(usize, usize, usize, u32),
    Packet(usize, usize, usize),
    WrongIf(usize, usize, usize),
    Advance(u64),
    /// A wildcard join of client .0 on interface .2 ((*,*) with .3, else the (*,G) over key
    /// .1), then its exclusion of (S,G) key .1: two Adds, checked one by one. Exclusions need
    /// both, which random Adds rarely line up.
    WildcardExcluding(usize, usize, usize, bool),
}

/// The steps `op` stands for.
fn expand(op: &Op) -> Vec<Op> {
    match *op {
        Op::WildcardExcluding(c, k, i, star_star) => {
            let wildcard = match (star_star, k) {
                (true, _) => 0,
                (false, 5) => 2,
                (false, _) => 1,
            };
            vec![Op::Add(c, wildcard, i, JOIN), Op::Add(c, k, i, EXCLUDE)]
        }
        ref other => vec![other.clone()],
    }
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CLIENTS.len();
    let i = 0..IFS.len();
    prop_oneof![
        2 => c.clone().prop_map(Op::Register),
        1 => c.clone().prop_map(Op::Deregister),
        3 => (c.clone(), i.clone()).prop_map(|(c, i)| Op::Take(c, i)),
        1 => (c.clone(), i.clone()).prop_map(|(c, i)| Op::Release(c, i)),
        6 => (c.clone(), 0..7usize, i.clone(), flags()).prop_map(|(c, k, i, f)| Op::Add(c, k, i, f)),
        4 => (c.clone(), 0..7usize, i.clone(), flags())
            .prop_map(|(c, k, i, f)| Op::Delete(c, k, i, f)),
        3 => (0..3usize, 0..2usize, i.clone()).prop_map(|(s, g, i)| Op::Packet(s, g, i)),
        1 => (0..3usize, 0..2usize, i.clone()).prop_map(|(s, g, i)| Op::WrongIf(s, g, i)),
        1 => prop_oneof![0..10u64, 890..910u64].prop_map(Op::Advance),
        6 => (c, 3..6usize, i, any::<bool>())
            .prop_map(|(c, k, i, s)| Op::WildcardExcluding(c, k, i, s)),
    ]
}

/// Every combination of JOIN, FORWARD and EXCLUDE, one unknown bit, and extra weight on the
/// valid single flags so that exclusions under a wildcard come up often.
fn flags() -> impl Strategy<Value = u32> {
    prop_oneof![0..9u32, Just(JOIN), Just(EXCLUDE)]
}

/// Runs `ops`, checking every invariant after every step; panics on the first violation.
pub fn run(ops: &[Op]) {
    let mut t = Harness::new();
    let mut model = Model::default();
    let mut handles: [Option<ProtocolHandle>; 4] = [None; 4];
    // A handle that was never issued stands in for an unregistered client.
    let stale = ProtocolHandle(9_999);
    let ops: Vec<Op> = ops.iter().flat_map(expand).collect();
    for (step, op) in ops.iter().enumerate() {
        let h = |c: usize| handles[c].unwrap_or(stale);
        let (got, want) = match *op {
            Op::Register(c) => {
                let (name, pid, cid) = CLIENTS[c];
                let r = t.try_register(name, ProtocolId(pid), cid);
                if let Ok(handle) = r {
                    handles[c] = Some(handle);
                }
                (r.map(|_| ()), model.register(c))
            }
            Op::Deregister(c) => {
                let r = t.mgm.deregister(h(c));
                if r.is_ok() {
                    handles[c] = None;
                }
                (r, model.deregister(c))
            }
            Op::Take(c, i) => {
                let now = t.now;
                let r = t.mgm.take_interface_ownership(h(c), IFS[i], now);
                (r, model.take(c, IFS[i]))
            }
            Op::Release(c, i) => (t.release(h(c), IFS[i]), model.release(c, IFS[i])),
            Op::Add(c, k, i, f) => {
                let e = keys()[k];
                (t.add(h(c), e, IFS[i], f), model.add(c, &e, IFS[i], f))
            }
            Op::Delete(c, k, i, f) => {
                let e = keys()[k];
                (t.del(h(c), e, IFS[i], f), model.delete(c, &e, IFS[i], f))
            }
            Op::Packet(s, g, i) => {
                let now = t.now;
                let r = t
                    .mgm
                    .no_cache_upcall(SOURCES[s], GROUPS[g], IFS[i], &[], now);
                (r, Ok(()))
            }
            Op::WrongIf(s, g, i) => {
                t.wrong_if(SOURCES[s], GROUPS[g], IFS[i]);
                (Ok(()), Ok(()))
            }
            Op::Advance(secs) => {
                t.advance(secs);
                (Ok(()), Ok(()))
            }
            Op::WildcardExcluding(..) => unreachable!("expanded above"),
        };
        assert_eq!(got, want, "step {step}: result of {op:?}");
        check(&mut t, &mut model, step, op);
    }
}

fn check(t: &mut Harness, model: &mut Model, step: usize, op: &Op) {
    // At most one non-IGMP owner per interface, and IGMP only in the IGMP slot.
    for (id, owner) in &t.mgm.interfaces {
        assert!(
            owner.routing.is_none_or(|h| !t.mgm.is_igmp(h)),
            "step {step}: IGMP in the routing slot of {id}"
        );
        assert!(
            owner.igmp.is_none_or(|h| t.mgm.is_igmp(h)),
            "step {step}: non-IGMP client co-owning {id}"
        );
        assert!(!owner.is_empty(), "step {step}: {id} kept with no owner");
    }
    // No OIF list contains its incoming interface.
    let table = t.mgm.forwarding_table();
    for ((s, g), (iif, oifs)) in &table {
        assert!(
            !oifs.contains(iif),
            "step {step}: ({s},{g}) forwards to its iif"
        );
    }
    // Every OIF list is the model's membership part (spec §4.8, §5.3) plus the FORWARD pins,
    // minus the vetoes and the iif (§4.7); the MFEs themselves and their pins and vetoes come
    // from the core.
    for (key, mfe) in &t.mgm.mfes {
        let want: std::collections::BTreeSet<InterfaceId> = if mfe.forced_negative {
            Default::default()
        } else {
            let pins = mfe.oif_state.iter().filter(|(_, s)| s.forward_pin);
            model
                .by_join(key.source, key.group)
                .into_iter()
                .chain(pins.map(|(id, _)| *id))
                .filter(|id| *id != mfe.iif && !mfe.oif_state.get(id).is_some_and(|s| s.vetoed))
                .collect()
        };
        assert_eq!(
            table[&(key.source, key.group)].1,
            want,
            "step {step}: OIFs of ({},{}) after {op:?}",
            key.source,
            key.group
        );
        // The group's per-interface filters say the same as the OIF rule.
        let allowed: std::collections::BTreeSet<InterfaceId> = t
            .mgm
            .group_filters(key.group)
            .into_iter()
            .filter(|(_, f)| match f {
                GroupFilter::Include(a) => a.contains(&key.source),
                GroupFilter::Exclude(y) => !y.contains(&key.source),
            })
            .map(|(id, _)| id)
            .collect();
        assert_eq!(
            allowed,
            model.by_join(key.source, key.group),
            "step {step}: filters of {} after {op:?}",
            key.group
        );
    }
    // The ops emitted so far rebuild the core's table.
    t.ops();
    assert_eq!(t.map, table, "step {step}: map model after {op:?}");
    // The membership-driven callbacks are exactly what the reference model predicts.
    let got: Vec<Call> = t
        .calls()
        .into_iter()
        .filter(|(_, cb)| modelled(cb))
        .collect();
    let want = std::mem::take(&mut model.expected);
    assert_eq!(got, want, "step {step}: callbacks of {op:?}");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Fixed seed: the same sequences on every run and every machine.
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x6d67_6d00),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn prop_invariants_hold_after_every_step(ops in proptest::collection::vec(op(), 1..80)) {
        run(&ops);
    }
}

/// A fixed scenario through the same checks: IGMP alone with joins, a routing protocol takes
/// the interface (§3.1 case C), IGMP re-adds as local, then the routing protocol releases it.
/// (No shrunk failure has been found so far; any found is kept here as a literal list.)
#[test]
fn prop_scenario_take_over_and_hand_back_igmp_interface() {
    run(&[
        Op::Register(0),
        Op::Register(1),
        Op::Register(2),
        Op::Take(0, 2),
        Op::Take(1, 0),
        Op::Take(2, 3),
        Op::Add(0, 1, 2, JOIN),
        Op::Add(0, 3, 2, JOIN),
        Op::Add(2, 1, 3, JOIN),
        Op::Packet(0, 0, 0),
        Op::Take(1, 2),
        Op::Add(0, 1, 2, JOIN),
        Op::Add(1, 1, 2, JOIN | FORWARD),
        Op::Release(1, 2),
        Op::Advance(900),
        Op::Delete(2, 1, 3, JOIN),
        Op::Deregister(1),
        Op::Release(1, 0),
        Op::Deregister(1),
    ]);
}

/// Exclusions through the same checks: pim's (*,G1) on ETH3 and ETH4 with S1 excluded on
/// ETH3, an MFE made while it stands, the exclusion gone with its (*,G1), then IGMP's local
/// exclusion on an interface pim owns.
#[test]
fn prop_scenario_exclusions_follow_their_wildcard() {
    run(&[
        Op::Register(0),
        Op::Register(1),
        Op::Take(1, 0),
        Op::Take(1, 2),
        Op::Take(1, 3),
        Op::Packet(1, 0, 1),
        Op::WildcardExcluding(1, 3, 2, false),
        Op::Add(1, 1, 3, JOIN),
        Op::Packet(0, 0, 0),
        Op::WildcardExcluding(1, 4, 3, true),
        Op::Delete(1, 1, 2, JOIN),
        Op::Delete(1, 3, 2, EXCLUDE),
        Op::Take(0, 3),
        Op::WildcardExcluding(0, 3, 3, false),
        Op::Delete(0, 3, 3, EXCLUDE),
        Op::Release(0, 3),
    ]);
}
