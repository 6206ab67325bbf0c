//! Ring-buffer records as the XDP program might write them, or a corrupt or newer one would.
//!
//! Contract: no panic; a record of a known kind that is long enough decodes as that kind, and
//! anything else is `Unknown` with its kind and length, for the daemon to count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mgm_common::event::{IgmpEvent, UpcallEvent, EVENT_IGMP, EVENT_NO_CACHE, EVENT_WRONG_IF};
use mgm_user::dataplane::ringbuf::{decode, Event};

fuzz_target!(|record: &[u8]| {
    let kind = record
        .first_chunk::<4>()
        .map_or(0, |b| u32::from_ne_bytes(*b));
    let event = decode(record);
    match (&event, kind) {
        (Event::Igmp { .. } | Event::BadIgmp { .. }, EVENT_IGMP)
            if record.len() >= size_of::<IgmpEvent>() => {}
        (Event::NoCache { .. }, EVENT_NO_CACHE) | (Event::WrongIf { .. }, EVENT_WRONG_IF)
            if record.len() >= size_of::<UpcallEvent>() => {}
        (Event::Unknown { kind: k, len }, _) => {
            assert_eq!(
                (*k, *len),
                (kind, record.len()),
                "unknown record described wrongly"
            );
            let whole = match kind {
                EVENT_IGMP => record.len() >= size_of::<IgmpEvent>(),
                EVENT_NO_CACHE | EVENT_WRONG_IF => record.len() >= size_of::<UpcallEvent>(),
                _ => false,
            };
            assert!(!whole, "a whole record of kind {kind} was not decoded");
        }
        _ => panic!(
            "record of kind {kind}, {} bytes, decoded as {event:?}",
            record.len()
        ),
    }
});
