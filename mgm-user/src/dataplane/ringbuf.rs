//! Turns ring-buffer records into typed events. A record that does not decode is an error
//! value the daemon counts and logs, never a panic.

use std::net::Ipv4Addr;

use aya::maps::{MapData, RingBuf};

use mgm_common::event::{
    IgmpEvent, UpcallEvent, EVENT_IGMP, EVENT_NO_CACHE, EVENT_WRONG_IF, IGMP_FLAG_ROUTER_ALERT,
    IGMP_PAYLOAD_MAX, UPCALL_HEADER_MAX,
};

use crate::igmp::{self, DecodeError, IgmpMessage};

/// One record from the XDP program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An IGMP message heard on `ifindex`, already decoded.
    Igmp {
        ifindex: u32,
        reporter: Ipv4Addr,
        destination: Ipv4Addr,
        src_mac: [u8; 6],
        /// The IPv4 TTL it arrived with.
        ttl: u8,
        /// Whether its IPv4 header carried Router Alert.
        router_alert: bool,
        message: IgmpMessage,
    },
    /// An IGMP message that failed to decode (bad checksum, short, unknown type).
    BadIgmp {
        ifindex: u32,
        reporter: Ipv4Addr,
        error: DecodeError,
    },
    /// No forwarding entry matched (source, group) arriving on `ifindex`. `header` is the
    /// packet's first bytes from the IPv4 header on, for the RPF callback.
    NoCache {
        ifindex: u32,
        source: Ipv4Addr,
        group: Ipv4Addr,
        header: Vec<u8>,
    },
    /// (source, group) arrived on `ifindex` instead of `expected_iif`; `header` as above.
    WrongIf {
        ifindex: u32,
        source: Ipv4Addr,
        group: Ipv4Addr,
        expected_iif: u32,
        header: Vec<u8>,
    },
    /// A record this daemon does not understand (a newer or corrupt program).
    Unknown { kind: u32, len: usize },
}

impl Event {
    /// The interface the record came from; 0 for an unknown record.
    pub fn ifindex(&self) -> u32 {
        match self {
            Event::Igmp { ifindex, .. }
            | Event::BadIgmp { ifindex, .. }
            | Event::NoCache { ifindex, .. }
            | Event::WrongIf { ifindex, .. } => *ifindex,
            Event::Unknown { .. } => 0,
        }
    }
}

/// The ring buffer the XDP program writes its records to.
pub type EventRing = RingBuf<MapData>;

/// Decodes every record waiting in `ring`, oldest first, into `f`. Reading the ring needs no
/// system call, so the daemon calls this on every loop turn as well as on readiness: a
/// wakeup the ring gives while the last one is being cleared would otherwise leave records
/// unread until the next, and the kernel sends none while records wait unread.
pub fn drain(ring: &mut EventRing, mut f: impl FnMut(Event)) {
    while let Some(record) = ring.next() {
        f(decode(&record));
    }
}

fn be_addr(v: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from_be(v))
}

/// Decodes one ring-buffer record.
pub fn decode(record: &[u8]) -> Event {
    let kind = record
        .get(..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0);
    match kind {
        EVENT_IGMP if record.len() >= size_of::<IgmpEvent>() => {
            // SAFETY: the record is at least as long as IgmpEvent, which is plain data;
            // read_unaligned copes with the ring buffer's 8-byte alignment.
            let ev: IgmpEvent = unsafe { record.as_ptr().cast::<IgmpEvent>().read_unaligned() };
            let copied = usize::from(ev.copied).min(IGMP_PAYLOAD_MAX);
            let reporter = be_addr(ev.src_ip);
            match igmp::decode(&ev.payload[..copied], usize::from(ev.igmp_len)) {
                Ok(message) => Event::Igmp {
                    ifindex: ev.ifindex,
                    reporter,
                    destination: be_addr(ev.dst_ip),
                    src_mac: ev.src_mac,
                    ttl: ev.ttl,
                    router_alert: ev.flags & IGMP_FLAG_ROUTER_ALERT != 0,
                    message,
                },
                Err(error) => Event::BadIgmp {
                    ifindex: ev.ifindex,
                    reporter,
                    error,
                },
            }
        }
        EVENT_NO_CACHE | EVENT_WRONG_IF if record.len() >= size_of::<UpcallEvent>() => {
            // SAFETY: as above, for UpcallEvent.
            let ev: UpcallEvent = unsafe { record.as_ptr().cast::<UpcallEvent>().read_unaligned() };
            let (source, group) = (be_addr(ev.source), be_addr(ev.group));
            let copied = usize::try_from(ev.header_len).map_or(0, |n| n.min(UPCALL_HEADER_MAX));
            let header = ev.header[..copied].to_vec();
            if kind == EVENT_NO_CACHE {
                Event::NoCache {
                    ifindex: ev.ifindex,
                    source,
                    group,
                    header,
                }
            } else {
                Event::WrongIf {
                    ifindex: ev.ifindex,
                    source,
                    group,
                    expected_iif: ev.expected_iif,
                    header,
                }
            }
        }
        kind => Event::Unknown {
            kind,
            len: record.len(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::igmp::codec::encode;

    fn igmp_record(payload: &[u8], igmp_len: u16) -> Vec<u8> {
        igmp_record_with(payload, igmp_len, 1, IGMP_FLAG_ROUTER_ALERT)
    }

    fn igmp_record_with(payload: &[u8], igmp_len: u16, ttl: u8, flags: u8) -> Vec<u8> {
        let mut ev = IgmpEvent {
            kind: EVENT_IGMP,
            ifindex: 7,
            src_ip: u32::from(Ipv4Addr::new(198, 18, 1, 2)).to_be(),
            dst_ip: u32::from(Ipv4Addr::new(239, 1, 1, 1)).to_be(),
            src_mac: [2, 0, 0, 0, 0, 1],
            igmp_len,
            copied: payload.len() as u16,
            ttl,
            flags,
            _pad: [0; 2],
            payload: [0; IGMP_PAYLOAD_MAX],
        };
        ev.payload[..payload.len()].copy_from_slice(payload);
        // SAFETY: IgmpEvent is plain data.
        unsafe {
            std::slice::from_raw_parts(
                (&ev as *const IgmpEvent).cast::<u8>(),
                size_of::<IgmpEvent>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn igmp_record_decodes_with_its_metadata() {
        let group = Ipv4Addr::new(239, 1, 1, 1);
        let bytes = encode(&IgmpMessage::V2Report { group });
        let ev = decode(&igmp_record(&bytes, bytes.len() as u16));
        assert_eq!(
            ev,
            Event::Igmp {
                ifindex: 7,
                reporter: Ipv4Addr::new(198, 18, 1, 2),
                destination: group,
                src_mac: [2, 0, 0, 0, 0, 1],
                ttl: 1,
                router_alert: true,
                message: IgmpMessage::V2Report { group },
            }
        );
    }

    #[test]
    fn igmp_record_carries_its_ttl_and_router_alert_and_ignores_unknown_flags() {
        let bytes = encode(&IgmpMessage::V2Report {
            group: Ipv4Addr::new(239, 1, 1, 1),
        });
        let len = bytes.len() as u16;
        let header = |ev| match ev {
            Event::Igmp {
                ttl, router_alert, ..
            } => (ttl, router_alert),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            header(decode(&igmp_record_with(&bytes, len, 1, 0))),
            (1, false)
        );
        assert_eq!(
            header(decode(&igmp_record_with(&bytes, len, 64, 1))),
            (64, true)
        );
        // Bits no program sets yet say nothing about Router Alert.
        assert_eq!(
            header(decode(&igmp_record_with(&bytes, len, 2, 0xfe))),
            (2, false)
        );
    }

    #[test]
    fn corrupted_igmp_is_a_bad_igmp_event() {
        let mut bytes = encode(&IgmpMessage::V2Leave {
            group: Ipv4Addr::new(239, 1, 1, 1),
        });
        bytes[5] ^= 0xff;
        assert!(matches!(
            decode(&igmp_record(&bytes, bytes.len() as u16)),
            Event::BadIgmp { ifindex: 7, .. }
        ));
    }

    #[test]
    fn short_and_unknown_records_do_not_panic() {
        assert_eq!(decode(&[]), Event::Unknown { kind: 0, len: 0 });
        assert_eq!(
            decode(&EVENT_IGMP.to_ne_bytes()),
            Event::Unknown {
                kind: EVENT_IGMP,
                len: 4
            }
        );
        assert_eq!(
            decode(&99u32.to_ne_bytes()),
            Event::Unknown { kind: 99, len: 4 }
        );
    }

    #[test]
    fn upcalls_decode_with_the_header_bytes_they_carry() {
        let mut ev = UpcallEvent {
            kind: EVENT_WRONG_IF,
            ifindex: 3,
            source: u32::from(Ipv4Addr::new(198, 18, 0, 2)).to_be(),
            group: u32::from(Ipv4Addr::new(239, 2, 2, 2)).to_be(),
            expected_iif: 2,
            header_len: 3,
            header: [0xee; UPCALL_HEADER_MAX],
        };
        ev.header[..3].copy_from_slice(&[0x45, 0, 0x1c]);
        // SAFETY: UpcallEvent is plain data.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const UpcallEvent).cast::<u8>(),
                size_of::<UpcallEvent>(),
            )
        };
        assert_eq!(
            decode(bytes),
            Event::WrongIf {
                ifindex: 3,
                source: Ipv4Addr::new(198, 18, 0, 2),
                group: Ipv4Addr::new(239, 2, 2, 2),
                expected_iif: 2,
                header: vec![0x45, 0, 0x1c],
            }
        );
        // a length past the array is cut to it, never read beyond
        ev.header_len = 1000;
        // SAFETY: as above.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const UpcallEvent).cast::<u8>(),
                size_of::<UpcallEvent>(),
            )
        };
        assert!(
            matches!(decode(bytes), Event::WrongIf { header, .. } if header.len() == UPCALL_HEADER_MAX)
        );
    }
}
