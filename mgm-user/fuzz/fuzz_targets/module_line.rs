//! A line from a module on the module socket (any bytes; the server refuses non-UTF-8 first).
//!
//! Contract: no panic; an accepted line serializes to JSON that parses back to the same value;
//! a refused one says why.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mgm_user::protocols::remote::wire::ModuleLine;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ModuleLine::parse(text) {
        Ok(line) => {
            let json = serde_json::to_string(&line).expect("an accepted line serializes");
            assert_eq!(
                ModuleLine::parse(&json).as_ref(),
                Ok(&line),
                "round trip through {json}"
            );
        }
        Err((_, why)) => assert!(!why.is_empty(), "refused without a reason"),
    }
});
