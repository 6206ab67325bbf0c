//! A querier told of a stall of its driver (the daemon stopped or starved) does not take the
//! hosts' silence over that time for leaves.

use super::*;

/// Runs the querier at `ms` after the start without running the deadlines before it, as a
/// daemon that was stopped does, telling it first how late its earliest deadline is.
fn resume_at(t: &mut Harness, ms: u64) {
    t.now = Instant::from_millis(t.now.as_millis() - t.elapsed() + ms);
    let now = t.now;
    let due = t.q.poll_timeout().expect("a deadline");
    t.q.postpone(now.saturating_since(due));
    t.q.handle_timeout(now);
    t.collect();
}

#[test]
fn a_stall_longer_than_the_membership_interval_keeps_memberships_and_queries_at_once() {
    let mut t = Harness::v3_router();
    t.v3(H1, RecordType::ModeIsExclude, G, &[]);
    assert_eq!(t.members(), [join(None, G)]);
    t.take_sent();
    // Stopped for two membership intervals: no query went out, so no host could answer.
    resume_at(&mut t, 2 * GMI);
    assert_eq!(t.members(), [], "a membership expired over the stall");
    assert_eq!(t.q.counters().stalls, 1);
    let sent = t.take_sent();
    assert_eq!(
        sent.first().map(|(at, q)| (*at, q)),
        Some((2 * GMI, &general_query()))
    );
    // A host that does not answer after it is still forgotten, one interval later.
    t.advance(GMI);
    assert_eq!(t.members(), [leave(None, G)]);
}
