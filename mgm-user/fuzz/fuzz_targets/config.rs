//! The configuration file's text (`mgm run --config`, `mgm check`).
//!
//! Contract: no panic; a refused file names at least one problem, each with a line inside the
//! file (0 when the parser gives none) and a message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(problems) = mgm_user::config::parse(text) {
        assert!(!problems.is_empty(), "refused without a problem");
        let lines = text.lines().count().max(1);
        for p in &problems {
            assert!(
                p.line <= lines + 1,
                "problem on line {} of {lines}: {p:?}",
                p.line
            );
            assert!(!p.message.is_empty(), "problem without a message");
        }
    }
});
