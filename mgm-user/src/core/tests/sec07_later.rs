//! Spec §7 callbacks answered later (issue 19): a client that answers from elsewhere promises
//! the out-parameters of rpf (§5.2 step 2), a creation alert (step 4) or the prune alert of a
//! negative MFE (§4.7); only the decision that needs the answer waits.

use super::harness::*;
use crate::core::{Config, MgmError, NoWait, ProtocolHandle};
use std::time::Duration;

/// pim owns ETH1 (toward S1) and ETH2 (toward S2), dvmrp owns ETH3; pim answers rpf later.
fn routers() -> (Harness, ProtocolHandle, ProtocolHandle) {
    let mut t = Harness::with_config(Config {
        max_waiting: 2,
        ..Config::default()
    });
    let pim = t.register("pim", PIM);
    let dvmrp = t.register("dvmrp", DVMRP);
    t.own(pim, ETH1);
    t.own(pim, ETH2);
    t.own(dvmrp, ETH3);
    t.script("pim").later.insert("rpf");
    (t, pim, dvmrp)
}

fn kinds(calls: &[Call]) -> Vec<(&'static str, &'static str)> {
    calls
        .iter()
        .map(|(to, cb)| {
            let kind = match cb {
                Cb::Rpf { .. } => "rpf",
                Cb::CreationAlert { .. } => "creation_alert",
                Cb::PruneAlert { .. } => "prune_alert",
                Cb::JoinAlert { .. } => "join_alert",
                Cb::AnswerMissed(_) => "answer_missed",
                _ => "other",
            };
            (*to, kind)
        })
        .collect()
}

#[test]
fn a_creation_waits_at_rpf_while_other_work_goes_on_and_the_answer_resumes_it() {
    let (mut t, pim, dvmrp) = routers();
    t.join(dvmrp, star(G1), ETH3);
    t.join(dvmrp, star(G2), ETH3);
    t.settle();
    t.packet(S1, G1, ETH1);
    assert_eq!(kinds(&t.calls()), [("pim", "rpf")]);
    assert_eq!(t.ops(), []);
    // The placeholder's repeated upcalls do not ask again.
    t.packet(S1, G1, ETH1);
    assert_eq!(t.calls(), []);
    // Another flow, whose iif dvmrp owns, resolves meanwhile.
    t.packet(S_NOROUTE, G2, ETH3);
    assert_eq!(t.ops(), [install(S_NOROUTE, G2, ETH3, &[])]);
    t.settle();
    // The answer goes on where the synchronous path would: creation alerts, then install.
    t.script("pim").rpf_answer = Some((ETH1, UP2));
    let ticket = t.promised("pim");
    t.answer(pim, ticket).unwrap();
    assert_eq!(kinds(&t.calls()), [("dvmrp", "creation_alert")]);
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH3])]);
    // A second answer to the same ticket has nothing to resume.
    assert_eq!(t.answer(pim, ticket), Err(MgmError::NotFound));
    t.assert_map_matches();
}

#[test]
fn a_membership_that_changes_while_a_creation_waits_counts_when_it_resumes() {
    let (mut t, pim, dvmrp) = routers();
    t.join(pim, star(G1), ETH2);
    t.settle();
    t.packet(S1, G1, ETH1);
    t.settle();
    t.join(dvmrp, star(G1), ETH3);
    t.leave(pim, star(G1), ETH2);
    t.settle();
    t.answer(pim, t.promised("pim")).unwrap();
    assert_eq!(kinds(&t.calls()), [("dvmrp", "creation_alert")]);
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH3])]);
}

#[test]
fn a_missed_deadline_resolves_with_the_proposal_and_stops_waiting_until_an_answer() {
    let (mut t, pim, dvmrp) = routers();
    t.join(dvmrp, star(G1), ETH3);
    t.script("pim").rpf_answer = Some((ETH2, UP2));
    t.settle();
    t.packet(S1, G1, ETH1);
    let late = t.promised("pim");
    t.settle();
    t.advance_by(ANSWER_WITHIN - Duration::from_millis(1));
    assert_eq!(t.ops(), []);
    // At the deadline MGM's proposal stands: ETH1, not the scripted ETH2.
    t.advance_by(Duration::from_millis(1));
    assert_eq!(
        kinds(&t.calls()),
        [("pim", "answer_missed"), ("dvmrp", "creation_alert")]
    );
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH3])]);
    // Not waited for now: the next flow resolves at once, with the scripted answer.
    t.packet(S1, G2, ETH1);
    assert_eq!(t.script("pim").not_waited, [NoWait::Unresponsive]);
    assert_eq!(t.ops(), [install(S1, G2, ETH2, &[])]);
    // A late answer resumes nothing, but shows pim is alive: it is waited for again.
    assert_eq!(t.answer(pim, late), Err(MgmError::NotFound));
    t.packet(S2, G2, ETH2);
    assert_eq!(t.script("pim").promised.len(), 2);
    assert_eq!(t.ops(), []);
}

#[test]
fn releasing_the_interface_asked_about_resolves_at_once_against_the_new_ownership() {
    let (mut t, pim, dvmrp) = routers();
    t.join(dvmrp, star(G1), ETH3);
    t.settle();
    t.packet(S1, G1, ETH1);
    t.settle();
    // Nobody owns ETH1 now: the creation makes a negative MFE with no callbacks [Dec].
    t.release(pim, ETH1).unwrap();
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[])]);
    assert_eq!(kinds(&t.calls()), []);
    assert_eq!(t.answer(pim, t.promised("pim")), Err(MgmError::NotFound));
}

#[test]
fn a_module_that_goes_away_leaves_nothing_waiting() {
    let (mut t, pim, dvmrp) = routers();
    t.join(dvmrp, star(G1), ETH3);
    t.settle();
    t.packet(S1, G1, ETH1);
    t.packet(S2, G1, ETH2);
    t.settle();
    t.release(pim, ETH1).unwrap();
    t.release(pim, ETH2).unwrap();
    t.mgm.deregister(pim).unwrap();
    assert_eq!(
        t.mgm.poll_timeout().map(|at| at > t.now + ANSWER_WITHIN),
        Some(true)
    );
    assert_eq!(
        t.ops(),
        [install(S1, G1, ETH1, &[]), install(S2, G1, ETH2, &[])]
    );
}

#[test]
fn a_creation_alert_answered_later_applies_its_vetoes_then_installs() {
    let (mut t, pim, dvmrp) = routers();
    t.script("pim").later.clear();
    t.script("dvmrp").later.insert("creation_alert");
    t.script("dvmrp").veto.insert(ETH3);
    t.join(pim, star(G1), ETH2);
    t.join(dvmrp, star(G1), ETH3);
    t.settle();
    t.packet(S1, G1, ETH1);
    assert_eq!(
        kinds(&t.calls()),
        [
            ("pim", "rpf"),
            ("pim", "creation_alert"),
            ("dvmrp", "creation_alert")
        ]
    );
    assert_eq!(t.ops(), []);
    t.answer(dvmrp, t.promised("dvmrp")).unwrap();
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH2])]);
}

#[test]
fn a_prune_timeout_answered_later_sets_the_lifetime_from_the_alert() {
    let (mut t, pim, _dvmrp) = routers();
    t.script("pim").later = ["prune_alert"].into();
    t.script("pim").prune_timeout = Some(30);
    t.packet(S1, G1, ETH1);
    assert_eq!(kinds(&t.calls()), [("pim", "rpf"), ("pim", "prune_alert")]);
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[])]);
    t.advance(2);
    t.answer(pim, t.promised("pim")).unwrap();
    // 30 s from the alert, not from the answer nor MGM's 900 s.
    t.advance(27);
    assert_eq!(t.ops(), []);
    t.advance(1);
    assert_eq!(t.ops(), [delete(S1, G1)]);
}

#[test]
fn a_module_with_too_many_decisions_waiting_gets_the_proposal_at_once_counted() {
    let (mut t, _pim, _dvmrp) = routers();
    t.packet(S1, G1, ETH1);
    t.packet(S1, G2, ETH1);
    t.settle();
    t.packet(S2, G1, ETH2);
    assert_eq!(t.script("pim").not_waited, [NoWait::Full]);
    assert_eq!(t.mgm.waiting_full(), 1);
    assert_eq!(t.ops(), [install(S2, G1, ETH2, &[])]);
}

#[test]
fn a_refresh_that_waits_keeps_the_entry_and_is_dropped_with_its_mfe() {
    let (mut t, pim, dvmrp) = routers();
    t.script("pim").later.clear();
    t.join(dvmrp, star(G1), ETH3);
    t.packet(S1, G1, ETH1);
    t.settle();
    // The route to S1 moves to ETH2: the refresh asks pim and waits.
    t.script("pim").later.insert("rpf");
    let route = crate::core::Route {
        network: std::net::Ipv4Addr::new(10, 1, 1, 0),
        prefix_len: 24,
        if_id: ETH2,
        upstream: UP2,
        protocol: 2,
        metric: 0,
    };
    let now = t.now;
    t.mgm.add_route(route, now).unwrap();
    t.advance(1);
    assert_eq!(kinds(&t.calls()), [("pim", "rpf")]);
    assert_eq!(t.ops(), []);
    // The MFE goes (its iif's owner leaves): the refresh waits for nothing any more.
    t.release(pim, ETH1).unwrap();
    assert_eq!(t.ops(), [delete(S1, G1)]);
    assert_eq!(t.answer(pim, t.promised("pim")), Err(MgmError::NotFound));
}
