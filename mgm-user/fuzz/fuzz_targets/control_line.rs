//! Lines on the control socket (any bytes), answered over a real core with a small fixed state.
//! Each line is one connection's request, as the server reads it, so one input can join, leave
//! and add routes in turn; every view is shown at the end.
//!
//! Contract: no panic; a line that parses serializes to JSON that parses back to the same
//! request; a refused one says why; every answer is one line of JSON that reads back as the
//! same answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mgm_user::control::{
    fixture::Fixture,
    proto::{Answer, Request, View, MAX_REQUEST},
};

fuzz_target!(|data: &[u8]| {
    let mut daemon = Fixture::default();
    for line in data.split(|&b| b == b'\n') {
        // The server refuses both before parsing.
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        if line.len() > MAX_REQUEST {
            continue;
        }
        match Request::parse(line.trim_end()) {
            Ok(request) => {
                let json = serde_json::to_string(&request).expect("a request serializes");
                assert_eq!(
                    Request::parse(&json).as_ref(),
                    Ok(&request),
                    "round trip through {json}"
                );
                check(&daemon.ask(request));
            }
            Err(why) => assert!(!why.is_empty(), "refused without a reason"),
        }
    }
    for view in [
        View::Interfaces,
        View::Groups,
        View::Mfe,
        View::Protocols,
        View::Stats,
    ] {
        let answer = daemon.ask(Request::show(view));
        assert!(answer.ok, "show {view:?}: {answer:?}");
        check(&answer);
    }
});

fn check(answer: &Answer) {
    let json = serde_json::to_string(answer).expect("an answer serializes");
    assert!(!json.contains('\n'), "an answer is one line: {json}");
    let back: Answer = serde_json::from_str(&json).expect("an answer reads back");
    assert_eq!(&back, answer, "round trip through {json}");
    assert_eq!(
        answer.ok,
        answer.error.is_none(),
        "an answer fails exactly when it says why: {json}"
    );
}
