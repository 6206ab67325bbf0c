//! The queries the querier sends (RFC 3376 §4.1, RFC 2236 §2), as messages for the codec.

use std::{net::Ipv4Addr, time::Duration};

use super::Version;
use crate::igmp::codec::{IgmpMessage, QueryV3};

/// 224.0.0.1, where general queries go (RFC 3376 §4.1.12).
pub const ALL_SYSTEMS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 1);

/// The fields every query of one interface shares.
#[derive(Debug, Clone, Copy)]
pub(super) struct QueryFields {
    pub(super) version: Version,
    pub(super) robustness: u32,
    pub(super) query_interval: Duration,
}

impl QueryFields {
    /// A query for `group` (0.0.0.0: general) and `sources`, answered within `max_resp`.
    pub(super) fn build(
        &self,
        group: Ipv4Addr,
        sources: Vec<Ipv4Addr>,
        max_resp: Duration,
        s_flag: bool,
    ) -> IgmpMessage {
        let tenths = u32::try_from(max_resp.as_millis() / 100).unwrap_or(u32::MAX);
        match self.version {
            // RFC 2236 §2.2: Max Response Time in 1/10 s, 8 bits, no floating point.
            Version::V1 | Version::V2 => IgmpMessage::Query {
                max_resp_code: u8::try_from(tenths).unwrap_or(u8::MAX),
                group,
                v3: None,
            },
            Version::V3 => IgmpMessage::Query {
                max_resp_code: encode_float_code(tenths),
                group,
                v3: Some(QueryV3 {
                    s_flag,
                    // RFC 3376 §4.1.6: a robustness above 7 is sent as 0.
                    qrv: u8::try_from(self.robustness)
                        .ok()
                        .filter(|r| *r <= 7)
                        .unwrap_or(0),
                    qqic: encode_float_code(
                        u32::try_from(self.query_interval.as_secs()).unwrap_or(u32::MAX),
                    ),
                    sources,
                }),
            },
        }
    }
}

/// Encodes `value` as the 8-bit code of Max Resp Code and QQIC (RFC 3376 §4.1.1, §4.1.7),
/// rounding down to the nearest value the code can carry (at most 31744).
pub fn encode_float_code(value: u32) -> u8 {
    if value < 128 {
        return value as u8;
    }
    // value ≈ (0x10 | mant) << (exp + 3): pick the largest exp that does not overshoot.
    for exp in (0..8u32).rev() {
        if value >= 0x10 << (exp + 3) {
            let mant = ((value >> (exp + 3)) - 0x10).min(0x0f);
            return 0x80 | ((exp as u8) << 4) | mant as u8;
        }
    }
    unreachable!("values of 128 and above have an exponent")
}
