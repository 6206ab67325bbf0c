//! Spec §7 and §10: the callback contract — synchronous callbacks, deferred requests.

use super::harness::*;
use crate::core::{
    ComponentId, Cx, Instant, InterfaceId, MgmError, Request, RoutingProtocol, SourceGroupEntry,
    MGM_JOIN_STATE_FLAG,
};
use std::sync::{Arc, Mutex};

#[test]
fn sec7_doc_callbacks_run_inside_the_call_that_caused_them() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    t.register("dvmrp", DVMRP);
    t.own(pim, ETH2);
    t.join(pim, star(G1), ETH2);
    // already delivered when Add returned
    assert_eq!(t.calls(), [join_alert("dvmrp", star(G1), true)]);
}

#[test]
fn sec7_doc_local_join_can_queue_an_add_that_runs_after_the_operation() {
    // given: pim answers a local join by forwarding on the interface itself (§4.4)
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    let igmp = t.register("igmp", IGMP);
    t.own(pim, ETH1);
    t.own(pim, ETH2);
    t.own(igmp, ETH2);
    t.packet(S1, G1, ETH1);
    t.settle();
    let add = Request::AddGroupMembership {
        sg: star(G1),
        if_id: ETH2,
        flags: JOIN,
    };
    t.script("pim")
        .queue_on
        .insert("local_join", vec![add.clone()]);
    // when
    t.join(igmp, star(G1), ETH2);
    // then: local join first, then pim's own Add with its effects, then its result
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
            join_alert("igmp", star(G1), true),
            join_alert("pim", sg(S1, G1), false),
            (
                "pim",
                Cb::RequestDone {
                    request: add,
                    result: Ok(())
                }
            ),
        ]
    );
    assert_eq!(t.ops(), [install(S1, G1, ETH1, &[ETH2])]);
}

#[test]
fn sec7_queued_request_errors_come_back_through_request_done() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    let dvmrp = t.register("dvmrp", DVMRP);
    t.own(dvmrp, ETH3);
    t.own(pim, ETH2);
    let take = Request::TakeInterfaceOwnership(ETH3);
    t.script("pim")
        .queue_on
        .insert("join_alert", vec![take.clone()]);
    t.join(dvmrp, star(G1), ETH3);
    assert_eq!(
        t.calls(),
        [
            join_alert("pim", star(G1), true),
            (
                "pim",
                Cb::RequestDone {
                    request: take,
                    result: Err(MgmError::AlreadyExists)
                }
            ),
        ]
    );
}

#[test]
fn sec7_every_request_kind_can_be_queued() {
    let mut t = Harness::new();
    let pim = t.register("pim", PIM);
    let dvmrp = t.register("dvmrp", DVMRP);
    t.own(pim, ETH1);
    t.own(dvmrp, ETH3);
    t.packet(S1, G1, ETH1);
    t.settle();
    let up = std::net::Ipv4Addr::new(10, 1, 0, 7);
    let reqs = vec![
        Request::TakeInterfaceOwnership(ETH2),
        Request::AddGroupMembership {
            sg: star(G1),
            if_id: ETH2,
            flags: JOIN,
        },
        Request::DeleteGroupMembership {
            sg: star(G1),
            if_id: ETH2,
            flags: JOIN,
        },
        Request::SetMfe {
            source: S1,
            group: G1,
            upstream: up,
        },
        Request::ReleaseInterfaceOwnership(ETH2),
    ];
    t.script("pim").queue_on.insert("join_alert", reqs.clone());
    t.join(dvmrp, star(G2), ETH3);
    let done: Vec<_> = t
        .calls()
        .into_iter()
        .filter_map(|(_, cb)| match cb {
            Cb::RequestDone { request, result } => Some((request, result)),
            _ => None,
        })
        .collect();
    assert_eq!(
        done,
        reqs.into_iter().map(|r| (r, Ok(()))).collect::<Vec<_>>()
    );
    assert_eq!(t.mgm.get_mfe(S1, G1, 1000, t.now).unwrap().upstream, up);
}

/// Records what its [`Cx`] says about the callee and the time.
struct CxProbe(Arc<Mutex<Vec<(crate::core::ProtocolHandle, Instant)>>>);

impl RoutingProtocol for CxProbe {
    fn join_alert(&mut self, cx: &mut Cx, _sg: SourceGroupEntry, _member_update: bool) {
        self.0.lock().unwrap().push((cx.handle(), cx.now()));
    }
}

#[test]
fn sec10_cx_tells_the_callee_its_handle_and_the_time() {
    let mut t = Harness::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let probe = t
        .mgm
        .register(Box::new(CxProbe(seen.clone())), DVMRP, ComponentId(1))
        .unwrap();
    let pim = t.register("pim", PIM);
    t.own(pim, ETH2);
    t.advance(5);
    t.join(pim, star(G1), ETH2);
    assert_eq!(*seen.lock().unwrap(), [(probe, t.now)]);
}

/// An IGMP that re-adds from inside enable_igmp, which deadlocks Windows (spec §3.1).
struct EagerIgmp;

impl RoutingProtocol for EagerIgmp {
    fn enable_igmp(&mut self, cx: &mut Cx, if_id: InterfaceId) {
        cx.queue(Request::AddGroupMembership {
            sg: SourceGroupEntry::star_g(G1),
            if_id,
            flags: MGM_JOIN_STATE_FLAG,
        });
    }
}

#[test]
fn sec7_doc_calls_from_inside_enable_igmp_are_deferred_not_refused() {
    let mut t = Harness::new();
    let igmp = t
        .mgm
        .register(Box::new(EagerIgmp), IGMP, ComponentId(1))
        .unwrap();
    let pim = t.register("pim", PIM);
    t.own(igmp, ETH3);
    t.own(pim, ETH3);
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
