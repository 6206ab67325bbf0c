//! The IGMP codec on arbitrary bytes. Input: the IGMP length from the IP header (2 bytes, big
//! endian), then the bytes the XDP program copied.
//!
//! Contract: no panic; a message whose copy is shorter than its length is accepted only as a
//! v3 report; an accepted message re-encodes to bytes that decode to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mgm_user::igmp::{codec::encode, decode, IgmpMessage};

fuzz_target!(|data: &[u8]| {
    let Some((len, bytes)) = data.split_first_chunk::<2>() else {
        return;
    };
    let igmp_len = usize::from(u16::from_be_bytes(*len));
    let Ok(message) = decode(bytes, igmp_len) else {
        return;
    };
    let truncated = bytes.len() < igmp_len;
    let message = match message {
        IgmpMessage::V3Report {
            records,
            truncated: t,
        } => {
            assert_eq!(t, truncated, "truncation flag");
            IgmpMessage::V3Report {
                records,
                truncated: false,
            }
        }
        other => {
            assert!(!truncated, "a truncated copy was accepted as {other:?}");
            other
        }
    };
    let encoded = encode(&message);
    assert_eq!(
        decode(&encoded, encoded.len()).as_ref(),
        Ok(&message),
        "re-encoding changed the message"
    );
});
