//! IGMP v1/v2/v3 messages to and from bytes (RFC 1112, RFC 2236, RFC 3376).
//!
//! Decoding verifies the checksum: the XDP program copies IGMP verbatim and leaves all checks
//! here, so a malformed or corrupted message is an error value, never a panic and never acted on.

use std::net::Ipv4Addr;

use thiserror::Error;

const TYPE_QUERY: u8 = 0x11;
const TYPE_V1_REPORT: u8 = 0x12;
const TYPE_V2_REPORT: u8 = 0x16;
const TYPE_V2_LEAVE: u8 = 0x17;
const TYPE_V3_REPORT: u8 = 0x22;

/// Why bytes are not an IGMP message we act on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("IGMP message of {len} bytes is shorter than its type needs ({needed} bytes)")]
    TooShort { len: usize, needed: usize },
    #[error("IGMP checksum is 0x{found:04x}, expected 0x{expected:04x}")]
    BadChecksum { found: u16, expected: u16 },
    #[error("IGMP query of {len} bytes: 9 to 11 bytes is invalid (RFC 3376 §7.1)")]
    BadQueryLength { len: usize },
    #[error("IGMP type 0x{0:02x} is not one mgm handles")]
    UnknownType(u8),
    #[error("IGMPv3 group record type {0} is unknown (RFC 3376 §4.2.12)")]
    UnknownRecordType(u8),
}

/// IGMPv3 group record types (RFC 3376 §4.2.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordType {
    ModeIsInclude = 1,
    ModeIsExclude = 2,
    ChangeToInclude = 3,
    ChangeToExclude = 4,
    AllowNewSources = 5,
    BlockOldSources = 6,
}

impl TryFrom<u8> for RecordType {
    type Error = DecodeError;
    fn try_from(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            1 => Self::ModeIsInclude,
            2 => Self::ModeIsExclude,
            3 => Self::ChangeToInclude,
            4 => Self::ChangeToExclude,
            5 => Self::AllowNewSources,
            6 => Self::BlockOldSources,
            other => return Err(DecodeError::UnknownRecordType(other)),
        })
    }
}

/// One group record of a v3 report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub kind: RecordType,
    pub group: Ipv4Addr,
    pub sources: Vec<Ipv4Addr>,
}

/// A decoded IGMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgmpMessage {
    /// A membership query. v1 queries have `max_resp_code == 0`; `v3` is present for v3 queries.
    Query {
        max_resp_code: u8,
        group: Ipv4Addr,
        v3: Option<QueryV3>,
    },
    V1Report {
        group: Ipv4Addr,
    },
    V2Report {
        group: Ipv4Addr,
    },
    V2Leave {
        group: Ipv4Addr,
    },
    /// A v3 report. `truncated` is set when the XDP program could not copy the whole message:
    /// the records are those that fit, and the checksum could not be verified.
    V3Report {
        records: Vec<GroupRecord>,
        truncated: bool,
    },
}

/// One line per message for the debug log: "v3 report: 239.1.1.1 change-to-exclude [],
/// 239.1.1.2 allow [198.18.0.2]", "v2 query for 239.1.1.1".
impl std::fmt::Display for IgmpMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IgmpMessage::Query {
                max_resp_code,
                group,
                v3,
            } => {
                let version = match (v3, max_resp_code) {
                    (Some(_), _) => "v3",
                    (None, 0) => "v1",
                    (None, _) => "v2",
                };
                if group.is_unspecified() {
                    write!(f, "{version} general query")?;
                } else {
                    write!(f, "{version} query for {group}")?;
                }
                if let Some(v3) = v3.as_ref().filter(|v| !v.sources.is_empty()) {
                    write!(f, " and sources {}", addresses(&v3.sources))?;
                }
                Ok(())
            }
            IgmpMessage::V1Report { group } => write!(f, "v1 report for {group}"),
            IgmpMessage::V2Report { group } => write!(f, "v2 report for {group}"),
            IgmpMessage::V2Leave { group } => write!(f, "v2 leave of {group}"),
            IgmpMessage::V3Report { records, truncated } => {
                f.write_str("v3 report:")?;
                for (i, r) in records.iter().enumerate() {
                    let kind = match r.kind {
                        RecordType::ModeIsInclude => "is-include",
                        RecordType::ModeIsExclude => "is-exclude",
                        RecordType::ChangeToInclude => "change-to-include",
                        RecordType::ChangeToExclude => "change-to-exclude",
                        RecordType::AllowNewSources => "allow",
                        RecordType::BlockOldSources => "block",
                    };
                    let sep = if i == 0 { " " } else { ", " };
                    write!(f, "{sep}{} {kind} {}", r.group, addresses(&r.sources))?;
                }
                if *truncated {
                    f.write_str(" (truncated)")?;
                }
                Ok(())
            }
        }
    }
}

/// "[198.18.0.2 198.18.0.3]".
fn addresses(list: &[Ipv4Addr]) -> String {
    let words: Vec<String> = list.iter().map(ToString::to_string).collect();
    format!("[{}]", words.join(" "))
}

/// The v3-only fields of a query (RFC 3376 §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryV3 {
    /// Suppress router-side processing.
    pub s_flag: bool,
    /// Querier's robustness variable.
    pub qrv: u8,
    /// Querier's query interval code.
    pub qqic: u8,
    pub sources: Vec<Ipv4Addr>,
}

/// Decodes `bytes`, the first bytes of an IGMP message whose full length is `igmp_len`.
///
/// # Errors
/// [`DecodeError`] when the message is short, has a bad checksum or an unknown type. A message
/// longer than `bytes` is only accepted for v3 reports (see [`IgmpMessage::V3Report`]).
pub fn decode(bytes: &[u8], igmp_len: usize) -> Result<IgmpMessage, DecodeError> {
    let truncated = bytes.len() < igmp_len;
    let msg = &bytes[..bytes.len().min(igmp_len)];
    need(msg, 8)?;
    // Only a v3 report is worth reading in part: any other type is whole within a copy, so a
    // short copy of one is oversized, and its checksum could not be verified.
    if truncated && msg[0] != TYPE_V3_REPORT {
        return Err(DecodeError::TooShort {
            len: msg.len(),
            needed: igmp_len,
        });
    }
    if !truncated {
        let found = u16::from_be_bytes([msg[2], msg[3]]);
        let expected = checksum_with_zeroed_field(msg);
        if found != expected {
            return Err(DecodeError::BadChecksum { found, expected });
        }
    }
    let group = addr(msg, 4);
    match msg[0] {
        TYPE_QUERY => decode_query(msg, group),
        TYPE_V1_REPORT => Ok(IgmpMessage::V1Report { group }),
        TYPE_V2_REPORT => Ok(IgmpMessage::V2Report { group }),
        TYPE_V2_LEAVE => Ok(IgmpMessage::V2Leave { group }),
        TYPE_V3_REPORT => decode_v3_report(msg, truncated),
        other => Err(DecodeError::UnknownType(other)),
    }
}

fn decode_query(msg: &[u8], group: Ipv4Addr) -> Result<IgmpMessage, DecodeError> {
    let max_resp_code = msg[1];
    match msg.len() {
        8 => Ok(IgmpMessage::Query {
            max_resp_code,
            group,
            v3: None,
        }),
        9..=11 => Err(DecodeError::BadQueryLength { len: msg.len() }),
        _ => {
            need(msg, 12)?;
            let count = u16::from_be_bytes([msg[10], msg[11]]) as usize;
            need(msg, 12 + 4 * count)?;
            Ok(IgmpMessage::Query {
                max_resp_code,
                group,
                v3: Some(QueryV3 {
                    s_flag: msg[8] & 0x08 != 0,
                    qrv: msg[8] & 0x07,
                    qqic: msg[9],
                    sources: (0..count).map(|i| addr(msg, 12 + 4 * i)).collect(),
                }),
            })
        }
    }
}

fn decode_v3_report(msg: &[u8], truncated: bool) -> Result<IgmpMessage, DecodeError> {
    let count = u16::from_be_bytes([msg[6], msg[7]]) as usize;
    let mut records = Vec::with_capacity(count.min(256));
    let mut at = 8;
    for _ in 0..count {
        // A truncated copy ends somewhere inside the records: keep the ones that are whole.
        let fits = |end: usize| end <= msg.len();
        if truncated && !fits(at + 8) {
            break;
        }
        need(msg, at + 8)?;
        let kind = RecordType::try_from(msg[at])?;
        let aux_words = msg[at + 1] as usize;
        let n_sources = u16::from_be_bytes([msg[at + 2], msg[at + 3]]) as usize;
        let group = addr(msg, at + 4);
        let end = at + 8 + 4 * n_sources + 4 * aux_words;
        if truncated && !fits(end) {
            break;
        }
        need(msg, end)?;
        let sources = (0..n_sources).map(|i| addr(msg, at + 8 + 4 * i)).collect();
        records.push(GroupRecord {
            kind,
            group,
            sources,
        });
        at = end;
    }
    Ok(IgmpMessage::V3Report { records, truncated })
}

fn need(msg: &[u8], needed: usize) -> Result<(), DecodeError> {
    if msg.len() < needed {
        Err(DecodeError::TooShort {
            len: msg.len(),
            needed,
        })
    } else {
        Ok(())
    }
}

fn addr(msg: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(msg[at], msg[at + 1], msg[at + 2], msg[at + 3])
}

/// The Internet checksum (RFC 1071) of `msg` with its checksum field (bytes 2..4) taken as 0.
fn checksum_with_zeroed_field(msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for (i, chunk) in msg.chunks(2).enumerate() {
        if i == 1 {
            continue;
        }
        let word = match chunk {
            [hi, lo] => u16::from_be_bytes([*hi, *lo]),
            [hi] => u16::from_be_bytes([*hi, 0]),
            _ => 0,
        };
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Encodes `msg` with a valid checksum. Truncation flags are ignored.
pub fn encode(msg: &IgmpMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let mut header = |kind: u8, code: u8, group: Ipv4Addr| {
        out.extend_from_slice(&[kind, code, 0, 0]);
        out.extend_from_slice(&group.octets());
    };
    match msg {
        IgmpMessage::Query {
            max_resp_code,
            group,
            v3,
        } => {
            header(TYPE_QUERY, *max_resp_code, *group);
            if let Some(q) = v3 {
                out.push((u8::from(q.s_flag) << 3) | (q.qrv & 0x07));
                out.push(q.qqic);
                out.extend_from_slice(&(q.sources.len() as u16).to_be_bytes());
                for s in &q.sources {
                    out.extend_from_slice(&s.octets());
                }
            }
        }
        IgmpMessage::V1Report { group } => header(TYPE_V1_REPORT, 0, *group),
        IgmpMessage::V2Report { group } => header(TYPE_V2_REPORT, 0, *group),
        IgmpMessage::V2Leave { group } => header(TYPE_V2_LEAVE, 0, *group),
        IgmpMessage::V3Report { records, .. } => {
            out.extend_from_slice(&[TYPE_V3_REPORT, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&(records.len() as u16).to_be_bytes());
            for r in records {
                out.extend_from_slice(&[r.kind as u8, 0]);
                out.extend_from_slice(&(r.sources.len() as u16).to_be_bytes());
                out.extend_from_slice(&r.group.octets());
                for s in &r.sources {
                    out.extend_from_slice(&s.octets());
                }
            }
        }
    }
    let sum = checksum_with_zeroed_field(&out);
    out[2..4].copy_from_slice(&sum.to_be_bytes());
    out
}

/// Decodes the 8-bit floating-point code of Max Resp Code and QQIC (RFC 3376 §4.1.1, §4.1.7)
/// into its value (tenths of a second for Max Resp Code, seconds for QQIC).
pub fn decode_float_code(code: u8) -> u32 {
    if code < 128 {
        u32::from(code)
    } else {
        let mant = u32::from(code & 0x0f);
        let exp = u32::from((code >> 4) & 0x07);
        (mant | 0x10) << (exp + 3)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const G: Ipv4Addr = Ipv4Addr::new(239, 1, 2, 3);
    const S1: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const S2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);

    #[test]
    fn messages_read_as_operator_words_without_braces() {
        let report = IgmpMessage::V3Report {
            records: vec![
                GroupRecord {
                    kind: RecordType::ChangeToExclude,
                    group: G,
                    sources: vec![],
                },
                GroupRecord {
                    kind: RecordType::AllowNewSources,
                    group: G,
                    sources: vec![S1],
                },
            ],
            truncated: false,
        };
        assert_eq!(
            report.to_string(),
            "v3 report: 239.1.2.3 change-to-exclude [], 239.1.2.3 allow [198.18.0.2]"
        );
        let query = IgmpMessage::Query {
            max_resp_code: 100,
            group: Ipv4Addr::UNSPECIFIED,
            v3: None,
        };
        assert_eq!(query.to_string(), "v2 general query");
        assert_eq!(
            IgmpMessage::V2Leave { group: G }.to_string(),
            "v2 leave of 239.1.2.3"
        );
    }

    fn roundtrip(msg: IgmpMessage) {
        let bytes = encode(&msg);
        assert_eq!(decode(&bytes, bytes.len()), Ok(msg));
    }

    #[test]
    fn rfc2236_v1_v2_reports_and_leave_roundtrip() {
        roundtrip(IgmpMessage::V1Report { group: G });
        roundtrip(IgmpMessage::V2Report { group: G });
        roundtrip(IgmpMessage::V2Leave { group: G });
    }

    #[test]
    fn rfc3376_queries_of_every_version_roundtrip() {
        roundtrip(IgmpMessage::Query {
            max_resp_code: 0,
            group: Ipv4Addr::UNSPECIFIED,
            v3: None,
        });
        roundtrip(IgmpMessage::Query {
            max_resp_code: 100,
            group: G,
            v3: None,
        });
        roundtrip(IgmpMessage::Query {
            max_resp_code: 100,
            group: G,
            v3: Some(QueryV3 {
                s_flag: true,
                qrv: 2,
                qqic: 125,
                sources: vec![S1, S2],
            }),
        });
    }

    #[test]
    fn rfc3376_v3_report_with_many_records_roundtrips() {
        let records = (0..40u8)
            .map(|i| GroupRecord {
                kind: RecordType::try_from(1 + i % 6).unwrap(),
                group: Ipv4Addr::new(239, 0, 0, i),
                sources: (0..u32::from(i % 5))
                    .map(|s| Ipv4Addr::from(0x0a00_0000 + s))
                    .collect(),
            })
            .collect();
        roundtrip(IgmpMessage::V3Report {
            records,
            truncated: false,
        });
    }

    #[test]
    fn bad_checksum_is_an_error() {
        let mut bytes = encode(&IgmpMessage::V2Report { group: G });
        bytes[7] ^= 1;
        assert!(matches!(
            decode(&bytes, bytes.len()),
            Err(DecodeError::BadChecksum { .. })
        ));
    }

    #[test]
    fn rfc3376_7_1_query_of_nine_to_eleven_bytes_is_invalid() {
        let mut bytes = encode(&IgmpMessage::Query {
            max_resp_code: 10,
            group: G,
            v3: None,
        });
        bytes.push(0);
        let sum = checksum_with_zeroed_field(&bytes);
        bytes[2..4].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(
            decode(&bytes, bytes.len()),
            Err(DecodeError::BadQueryLength { len: 9 })
        );
    }

    #[test]
    fn a_short_copy_of_anything_but_a_v3_report_is_refused() {
        // Its checksum covers bytes that were not copied, so it cannot be trusted.
        for msg in [
            IgmpMessage::V2Report { group: G },
            IgmpMessage::Query {
                max_resp_code: 100,
                group: G,
                v3: None,
            },
        ] {
            let bytes = encode(&msg);
            assert_eq!(
                decode(&bytes, 256),
                Err(DecodeError::TooShort {
                    len: 8,
                    needed: 256
                })
            );
        }
    }

    #[test]
    fn truncated_v3_report_keeps_whole_records_only() {
        let records = vec![
            GroupRecord {
                kind: RecordType::ModeIsInclude,
                group: G,
                sources: vec![S1],
            },
            GroupRecord {
                kind: RecordType::ModeIsExclude,
                group: Ipv4Addr::new(239, 9, 9, 9),
                sources: vec![],
            },
        ];
        let bytes = encode(&IgmpMessage::V3Report {
            records: records.clone(),
            truncated: false,
        });
        // Cut inside the second record.
        let cut = &bytes[..bytes.len() - 2];
        assert_eq!(
            decode(cut, bytes.len()),
            Ok(IgmpMessage::V3Report {
                records: records[..1].to_vec(),
                truncated: true,
            })
        );
    }

    #[test]
    fn rfc3376_4_1_1_float_codes() {
        assert_eq!(decode_float_code(100), 100);
        // 0x80: mant 0, exp 0 → 0x10 << 3.
        assert_eq!(decode_float_code(0x80), 128);
        assert_eq!(decode_float_code(0xff), 31744);
    }

    proptest! {
        /// No byte string makes the decoder panic, at any claimed length.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), extra in 0usize..64) {
            let _ = decode(&bytes, bytes.len());
            let _ = decode(&bytes, bytes.len() + extra);
        }

        /// Every prefix of a valid report is either rejected or decoded as truncated.
        #[test]
        fn prefixes_of_valid_reports_are_safe(cut in 0usize..200) {
            let bytes = encode(&IgmpMessage::V3Report {
                records: vec![GroupRecord { kind: RecordType::ModeIsInclude, group: G, sources: vec![S1; 30] }],
                truncated: false,
            });
            let cut = cut.min(bytes.len());
            match decode(&bytes[..cut], bytes.len()) {
                Ok(IgmpMessage::V3Report { truncated, .. }) => prop_assert!(truncated || cut == bytes.len()),
                Ok(other) => prop_assert!(false, "decoded {:?}", other),
                Err(_) => {}
            }
        }
    }
}
