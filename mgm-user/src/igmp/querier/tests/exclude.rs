//! RFC 3376 router state mapped to MGM memberships (spec §4.8): INCLUDE(A) is (S,G) per source
//! of A; EXCLUDE(X, Y) is (*,G) with an exclusion per source of Y. Checked at every kind of
//! transition: records, source and group timer expiry, last-member queries for sources, and
//! v1/v2 compatibility.

use super::*;
use RecordType::{
    AllowNewSources as ALLOW, BlockOldSources as BLOCK, ChangeToExclude as TO_EX,
    ChangeToInclude as TO_IN, ModeIsExclude as IS_EX, ModeIsInclude as IS_IN,
};

/// EXCLUDE(X = {S1, S2}, Y = {S3}) at time 0, reached from INCLUDE({S1, S2}).
fn exclude_s1_s2_blocking_s3() -> Harness {
    let mut t = Harness::v3_router();
    t.v3(H1, IS_IN, G, &[S1, S2]);
    t.v3(H1, IS_EX, G, &[S1, S2, S3]);
    t.take_members();
    t
}

#[test]
fn spec4_8_include_to_exclude_joins_star_g_excludes_the_new_sources_then_leaves_the_old() {
    let mut t = Harness::v3_router();
    t.v3(H1, IS_IN, G, &[S1, S2, S4]);
    t.take_members();
    // INCLUDE(A) + IS_EX(B) → EXCLUDE(A*B, B-A): (*,G) before the exclusion it carries, and
    // the (S,G) joins go last, so S1 and S2 never stop.
    t.v3(H1, IS_EX, G, &[S1, S2, S3]);
    assert_eq!(
        t.members(),
        [
            join(None, G),
            exclusion(S3, G),
            leave(Some(S1), G),
            leave(Some(S2), G),
            leave(Some(S4), G),
        ]
    );
}

#[test]
fn spec4_8_exclude_mode_records_move_sources_in_and_out_of_the_exclusions() {
    let mut t = exclude_s1_s2_blocking_s3();
    // ALLOW(A) → EXCLUDE(X+A, Y-A): S3 is wanted again.
    t.v3(H1, ALLOW, G, &[S3]);
    assert_eq!(t.members(), [end_exclusion(S3, G)]);
    // TO_EX(A) → EXCLUDE(A-Y, Y*A); Send Q(G, A-Y): S4 is asked for and nobody answers.
    t.advance(1_000);
    t.v3(H1, TO_EX, G, &[S4]);
    assert_eq!(t.members(), []);
    t.advance(LMQT);
    assert_eq!(t.take_members(), [(1_000 + LMQT, exclusion(S4, G))]);
}

#[test]
fn spec4_8_is_ex_in_exclude_mode_keeps_only_the_reported_blocks() {
    let mut t = exclude_s1_s2_blocking_s3();
    t.v3(H1, IS_IN, G, &[]);
    // EXCLUDE(X,Y) + IS_EX(A) → EXCLUDE(A-Y, Y*A): S3 is no longer in A, so it is deleted
    // and forwarded again under (*,G).
    t.v3(H1, IS_EX, G, &[S2]);
    assert_eq!(t.members(), [end_exclusion(S3, G)]);
}

#[test]
fn spec4_8_block_answered_by_nobody_excludes_the_source_after_the_last_member_queries() {
    let mut t = exclude_s1_s2_blocking_s3();
    t.advance(1_000);
    // EXCLUDE(X,Y) + BLOCK(A) → EXCLUDE(X+(A-Y), Y); Send Q(G, A-Y): S2 is queried.
    t.v3(H1, BLOCK, G, &[S2]);
    assert_eq!(t.members(), [], "still forwarded while queried");
    t.advance(LMQT);
    assert_eq!(t.take_members(), [(1_000 + LMQT, exclusion(S2, G))]);
}

#[test]
fn spec4_8_a_source_timer_running_out_in_exclude_mode_excludes_that_source() {
    let mut t = Harness::v3_router();
    t.v3(H1, IS_EX, G, &[]);
    t.v3(H1, ALLOW, G, &[S1]);
    t.take_members();
    // The group timer is pushed past S1's timer; S1 is not reported again.
    t.advance(100_000);
    t.v3(H1, IS_EX, G, &[S1]);
    assert_eq!(t.members(), []);
    t.advance(GMI - 100_000);
    assert_eq!(t.take_members(), [(GMI, exclusion(S1, G))]);
}

#[test]
fn spec4_8_group_timer_expiry_joins_the_requested_sources_and_leaves_star_g_with_its_blocks() {
    let mut t = exclude_s1_s2_blocking_s3();
    // S1 is refreshed, S2 is not; the group timer runs out at GMI.
    t.advance(1_000);
    t.v3(H1, ALLOW, G, &[S1]);
    t.advance(GMI - 1_000);
    // S2's timer and the group timer end together: INCLUDE({S1}) remains. The exclusion of
    // S3 goes with (*,G) in MGM, so it is not deleted on its own.
    assert_eq!(
        t.take_members(),
        [(GMI, join(Some(S1), G)), (GMI, leave(None, G))]
    );
    t.advance(1_000);
    assert_eq!(t.take_members(), [(GMI + 1_000, leave(Some(S1), G))]);
}

#[test]
fn spec4_8_to_in_answered_by_nobody_ends_in_include_of_the_new_sources() {
    let mut t = exclude_s1_s2_blocking_s3();
    t.advance(1_000);
    // EXCLUDE(X,Y) + TO_IN(A) → EXCLUDE(X+A, Y-A); Send Q(G, X-A); Send Q(G).
    t.v3(H1, TO_IN, G, &[S3, S4]);
    assert_eq!(t.members(), [end_exclusion(S3, G)]);
    t.advance(LMQT);
    assert_eq!(
        t.take_members(),
        [
            (1_000 + LMQT, join(Some(S3), G)),
            (1_000 + LMQT, join(Some(S4), G)),
            (1_000 + LMQT, leave(None, G)),
        ]
    );
}

#[test]
fn spec4_8_to_ex_in_include_mode_excludes_the_queried_sources_nobody_claims() {
    let mut t = Harness::v3_router();
    t.v3(H1, IS_IN, G, &[S1, S2]);
    t.take_members();
    t.advance(1_000);
    // INCLUDE(A) + TO_EX(B) → EXCLUDE(A*B, B-A); Send Q(G, A*B).
    t.v3(H1, TO_EX, G, &[S2, S3]);
    assert_eq!(
        t.members(),
        [
            join(None, G),
            exclusion(S3, G),
            leave(Some(S1), G),
            leave(Some(S2), G)
        ]
    );
    t.advance(LMQT);
    assert_eq!(t.take_members(), [(1_000 + LMQT, exclusion(S2, G))]);
}

#[test]
fn spec4_8_v2_report_in_exclude_mode_ends_every_exclusion() {
    let mut t = exclude_s1_s2_blocking_s3();
    // RFC 3376 §7.3.2: a v2 report is IS_EX({}), so Y*{} is empty.
    t.recv(H2, IgmpMessage::V2Report { group: G });
    assert_eq!(t.members(), [end_exclusion(S3, G)]);
    // In v2 compatibility, BLOCK is ignored and TO_EX loses its sources: nothing is excluded.
    t.v3(H1, BLOCK, G, &[S1]);
    t.v3(H1, TO_EX, G, &[S2]);
    t.advance(LMQT);
    assert_eq!(t.members(), []);
    assert!(t.q.forwarding().iter().all(|(_, (_, exclude))| !exclude));
}

#[test]
fn spec4_8_a_v2_interface_never_excludes() {
    let mut t = Harness::v2_router();
    t.recv(H1, IgmpMessage::V2Report { group: G });
    t.v3(H1, TO_EX, G, &[S1]);
    assert_eq!(t.members(), [join(None, G)]);
}
