//! Read-only enumeration of MFEs, MFE statistics and group memberships (spec §6).
//!
//! Records are typed Rust values, but each knows the byte size of its Windows layout (§6.3),
//! and the caller's buffer is modelled as a byte budget, so the §6.1 buffer protocol
//! (`InsufficientBuffer { needed }`, `MoreData`, `NoMoreItems`) behaves exactly as specified.
//! Nothing here performs I/O.

use std::{net::Ipv4Addr, ops::Bound};

use super::error::MgmError;
use super::mfe::{Mfe, MfeKey};
use super::protocol::RouteInfo;
use super::time::Instant;
use super::types::{
    EnumHandle, InterfaceId, MembershipKey, ProtocolHandle, ProtocolId, SourceGroupEntry, ALL_ONES,
};
use super::Mgm;

/// `MGM_MFE_STATS_0`: return [`MfeStatsRecord`]s without the EX fields (spec §6.2).
pub const MGM_MFE_STATS_0: u32 = 0x1;
/// `MGM_MFE_STATS_1`: return [`MfeStatsRecord`]s with [`MfeStatsEx`] (spec §6.2).
pub const MGM_MFE_STATS_1: u32 = 0x2;
/// Group enumeration type: one (*,G) record per group (spec §6.4).
pub const ANY_SOURCE: u32 = 0;
/// Group enumeration type: every distinct membership key (spec §6.4).
pub const ALL_SOURCES: u32 = 1;

/// A record with a Windows byte size, so the byte budget can be applied (spec §6.3).
pub trait WireSize {
    /// Bytes this record takes in the caller's buffer.
    fn wire_size(&self) -> usize;
}

impl WireSize for SourceGroupEntry {
    fn wire_size(&self) -> usize {
        Self::WIRE_SIZE
    }
}

/// The result of a First/Next call: the records that fit, and whether more remain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch<T> {
    /// Whole records that fit in the budget, in enumeration order.
    pub records: Vec<T>,
    /// More records follow the last one returned.
    pub more: bool,
}

impl<T> Batch<T> {
    /// The code Windows returns with this batch: `MoreData` or `NoMoreItems`, never `NO_ERROR`
    /// (spec §6.1 \[Dec\]).
    pub fn status(&self) -> MgmError {
        if self.more {
            MgmError::MoreData
        } else {
            MgmError::NoMoreItems
        }
    }
}

/// Applies the §6.1 buffer protocol to `records` with `budget` bytes.
fn fill<T: WireSize>(
    records: impl Iterator<Item = T>,
    budget: usize,
) -> Result<Batch<T>, MgmError> {
    let mut records = records.peekable();
    let mut out = Vec::new();
    let mut used = 0;
    while let Some(next) = records.peek() {
        let size = next.wire_size();
        if used + size > budget {
            if out.is_empty() {
                return Err(MgmError::InsufficientBuffer { needed: size });
            }
            break;
        }
        used += size;
        out.extend(records.next());
    }
    Ok(Batch {
        more: records.peek().is_some(),
        records: out,
    })
}

/// At most `limit` of `records`, and whether more follow: the buffer protocol with a record
/// count for a buffer, as the sockets page their enumerations.
fn page<T>(records: impl Iterator<Item = T>, limit: usize) -> Batch<T> {
    let mut records = records.peekable();
    let out: Vec<T> = records.by_ref().take(limit).collect();
    Batch {
        more: records.peek().is_some(),
        records: out,
    }
}

/// `MIB_IPMCAST_MFE` (spec §6.3). Times are in seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MfeRecord {
    /// `dwGroup`.
    pub group: Ipv4Addr,
    /// `dwSource`.
    pub source: Ipv4Addr,
    /// `dwSrcMask`: always all-ones, MFEs are exact (spec §5.1).
    pub src_mask: Ipv4Addr,
    /// `dwUpStrmNgbr`.
    pub upstream: Ipv4Addr,
    /// `dwInIfIndex`, with the next hop the Windows record has no room for.
    pub in_if: InterfaceId,
    /// `dwInIfProtocol`: protocol id of the iif owner at creation, 0 if none.
    pub in_if_protocol: ProtocolId,
    /// `dwRouteProtocol`, `dwRouteNetwork`, `dwRouteMask`.
    pub route: RouteInfo,
    /// `ulUpTime`: seconds since creation.
    pub up_time_s: u32,
    /// `ulExpiryTime`: seconds until expiry.
    pub expiry_time_s: u32,
    /// `ulTimeOut`: the lifetime.
    pub timeout_s: u32,
    /// `rgmioOutInfo`: the active OIFs only; vetoed ones are omitted (spec §6.3 \[Dec\]).
    pub oifs: Vec<InterfaceId>,
}

impl WireSize for MfeRecord {
    fn wire_size(&self) -> usize {
        60 + 16 * self.oifs.len()
    }
}

/// `MIB_IPMCAST_OIF_STATS` (spec §6.3). Counters wrap to 32 bits.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct OifStatsRecord {
    /// `dwOutIfIndex` and `dwNextHopAddr`.
    pub if_id: InterfaceId,
    /// `ulTtlTooLow`.
    pub ttl_too_low: u32,
    /// `ulFragNeeded`.
    pub frag_needed: u32,
    /// `ulOutPackets`.
    pub out_packets: u32,
    /// `ulOutDiscards`.
    pub out_discards: u32,
}

/// The fields `MIB_IPMCAST_MFE_STATS_EX` adds (spec §6.3).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct MfeStatsEx {
    /// `ulUninitMfe`.
    pub uninit_mfe: u32,
    /// `ulNegativeMfe`.
    pub negative_mfe: u32,
    /// `ulInDiscards`.
    pub in_discards: u32,
    /// `ulInHdrErrors`.
    pub in_hdr_errors: u32,
    /// `ulTotalOutPackets`: Σ `out_packets` over the OIFs.
    pub total_out_packets: u32,
}

/// `MIB_IPMCAST_MFE_STATS`, or `_STATS_EX` when `ex` is present (spec §6.3). Times are in
/// hundredths of a second (spec §9 item 7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MfeStatsRecord {
    /// `dwGroup`.
    pub group: Ipv4Addr,
    /// `dwSource`.
    pub source: Ipv4Addr,
    /// `dwSrcMask`.
    pub src_mask: Ipv4Addr,
    /// `dwUpStrmNgbr`.
    pub upstream: Ipv4Addr,
    /// `dwInIfIndex`.
    pub in_if: InterfaceId,
    /// `dwInIfProtocol`.
    pub in_if_protocol: ProtocolId,
    /// `dwRouteProtocol`, `dwRouteNetwork`, `dwRouteMask`.
    pub route: RouteInfo,
    /// `ulUpTime`, in 1/100 s.
    pub up_time_cs: u32,
    /// `ulExpiryTime`, in 1/100 s.
    pub expiry_time_cs: u32,
    /// `ulInPkts`.
    pub in_pkts: u32,
    /// `ulInOctets`.
    pub in_octets: u32,
    /// `ulPktsDifferentIf`.
    pub pkts_different_if: u32,
    /// `ulQueueOverflow`.
    pub queue_overflow: u32,
    /// The EX fields, for `MGM_MFE_STATS_1`.
    pub ex: Option<MfeStatsEx>,
    /// `rgmiosOutStats`, one per active OIF.
    pub oifs: Vec<OifStatsRecord>,
}

impl WireSize for MfeStatsRecord {
    fn wire_size(&self) -> usize {
        let fixed = if self.ex.is_some() { 84 } else { 64 };
        fixed + 28 * self.oifs.len()
    }
}

/// An open group enumeration: a snapshot taken at Start (spec §6.4 \[Dec\]).
#[derive(Debug)]
pub(crate) struct Enumeration {
    pub(crate) owner: ProtocolHandle,
    records: Vec<SourceGroupEntry>,
    next: usize,
}

/// Legacy layouts hold 32-bit counters; wrap rather than saturate (spec §6.3).
fn wrap32(v: u64) -> u32 {
    v as u32
}

fn elapsed_ms(from: Instant, to: Instant) -> u64 {
    to.as_millis().saturating_sub(from.as_millis())
}

/// Whole `per`-millisecond units in `ms`, saturating at the 32-bit field's maximum.
fn millis_u32(ms: u64, per: u64) -> u32 {
    u32::try_from(ms / per).unwrap_or(u32::MAX)
}

impl Mgm {
    /// `MgmGetMfe` (spec §6.2). Needs no handle.
    ///
    /// # Errors
    /// `NotFound` if there is no such MFE; `InsufficientBuffer` if the record exceeds
    /// `buffer_size` bytes.
    pub fn get_mfe(
        &self,
        source: Ipv4Addr,
        group: Ipv4Addr,
        buffer_size: usize,
        now: Instant,
    ) -> Result<MfeRecord, MgmError> {
        let key = MfeKey { group, source };
        let mfe = self.mfes.get(&key).ok_or(MgmError::NotFound)?;
        single(self.mfe_record(key, mfe, now), buffer_size)
    }

    /// `MgmGetFirstMfe`: MFEs in (group, source) order (spec §6.2).
    ///
    /// # Errors
    /// `InsufficientBuffer` if not even the first record fits.
    pub fn get_first_mfe(
        &self,
        buffer_size: usize,
        now: Instant,
    ) -> Result<Batch<MfeRecord>, MgmError> {
        self.get_mfes_from(None, buffer_size, now)
    }

    /// `MgmGetNextMfe`: MFEs strictly after (`group`, `source`), which need not exist any more
    /// (spec §6.2 \[Dec\]).
    ///
    /// # Errors
    /// `InsufficientBuffer` if not even the first record fits.
    pub fn get_next_mfe(
        &self,
        source: Ipv4Addr,
        group: Ipv4Addr,
        buffer_size: usize,
        now: Instant,
    ) -> Result<Batch<MfeRecord>, MgmError> {
        self.get_mfes_from(Some(MfeKey { group, source }), buffer_size, now)
    }

    /// GetFirst (`after` None) or GetNext (strictly after `after`, a (group, source) that need
    /// not exist any more) with a record count instead of a buffer: at most `limit` MFEs.
    /// Entries that stay in the table between pages are each returned exactly once.
    pub fn mfe_page(
        &self,
        after: Option<(Ipv4Addr, Ipv4Addr)>,
        limit: usize,
        now: Instant,
    ) -> Batch<MfeRecord> {
        let records = self
            .mfes_after(after)
            .map(|(k, m)| self.mfe_record(*k, m, now));
        page(records, limit)
    }

    /// [`Mgm::mfe_page`] for the statistics, with the EX fields (`MGM_MFE_STATS_1`).
    pub fn mfe_stats_page(
        &self,
        after: Option<(Ipv4Addr, Ipv4Addr)>,
        limit: usize,
        now: Instant,
    ) -> Batch<MfeStatsRecord> {
        let records = self
            .mfes_after(after)
            .map(|(k, m)| self.stats_record(*k, m, true, now));
        page(records, limit)
    }

    /// The MFEs strictly after (group, source), or all of them, in enumeration order: a range
    /// of the ordered table, so a page costs its own length, not the table's.
    fn mfes_after(
        &self,
        after: Option<(Ipv4Addr, Ipv4Addr)>,
    ) -> impl Iterator<Item = (&MfeKey, &Mfe)> {
        let from = match after {
            Some((group, source)) => Bound::Excluded(MfeKey { group, source }),
            None => Bound::Unbounded,
        };
        self.mfes.range((from, Bound::Unbounded))
    }

    /// `MgmGetMfeStats` (spec §6.2).
    ///
    /// # Errors
    /// `InvalidParameter` for flags other than `MGM_MFE_STATS_0`/`_1`; `NotFound`;
    /// `InsufficientBuffer`.
    pub fn get_mfe_stats(
        &self,
        source: Ipv4Addr,
        group: Ipv4Addr,
        buffer_size: usize,
        flags: u32,
        now: Instant,
    ) -> Result<MfeStatsRecord, MgmError> {
        let ex = stats_ex(flags)?;
        let key = MfeKey { group, source };
        let mfe = self.mfes.get(&key).ok_or(MgmError::NotFound)?;
        single(self.stats_record(key, mfe, ex, now), buffer_size)
    }

    /// `MgmGetFirstMfeStats` (spec §6.2).
    ///
    /// # Errors
    /// `InvalidParameter` for bad flags; `InsufficientBuffer`.
    pub fn get_first_mfe_stats(
        &self,
        buffer_size: usize,
        flags: u32,
        now: Instant,
    ) -> Result<Batch<MfeStatsRecord>, MgmError> {
        self.get_stats_from(None, buffer_size, flags, now)
    }

    /// `MgmGetNextMfeStats` (spec §6.2).
    ///
    /// # Errors
    /// `InvalidParameter` for bad flags; `InsufficientBuffer`.
    pub fn get_next_mfe_stats(
        &self,
        source: Ipv4Addr,
        group: Ipv4Addr,
        buffer_size: usize,
        flags: u32,
        now: Instant,
    ) -> Result<Batch<MfeStatsRecord>, MgmError> {
        self.get_stats_from(Some(MfeKey { group, source }), buffer_size, flags, now)
    }

    /// `MgmGroupEnumerationStart`: snapshots the router's memberships, all clients and local
    /// entries included (spec §6.4).
    ///
    /// # Errors
    /// `InvalidParameter` for a bad handle or type; `NotEnoughMemory` when
    /// [`Config::max_enumerations`](super::Config) is reached.
    pub fn group_enumeration_start(
        &mut self,
        handle: ProtocolHandle,
        enum_type: u32,
    ) -> Result<EnumHandle, MgmError> {
        self.registration(handle)?;
        let records = self.group_records(enum_type)?;
        if self.enumerations.len() >= self.config.max_enumerations {
            return Err(MgmError::NotEnoughMemory);
        }
        let handle_id = EnumHandle(self.next_handle);
        self.next_handle += 1;
        self.enumerations.insert(
            handle_id,
            Enumeration {
                owner: handle,
                records,
                next: 0,
            },
        );
        Ok(handle_id)
    }

    /// The group enumeration of `enum_type` as one page, with no enumeration left open: at
    /// most `limit` records strictly after `after`, a (group, source) that need not exist any
    /// more. Each page reads the current table, as [`Mgm::mfe_page`] does.
    ///
    /// # Errors
    /// `InvalidParameter` for a bad handle or type.
    pub fn group_page(
        &self,
        handle: ProtocolHandle,
        enum_type: u32,
        after: Option<(Ipv4Addr, Ipv4Addr)>,
        limit: usize,
    ) -> Result<Batch<SourceGroupEntry>, MgmError> {
        self.registration(handle)?;
        let records = self.group_records(enum_type)?;
        let after = |e: &SourceGroupEntry| after.is_none_or(|a| (e.group, e.source) > a);
        Ok(page(records.into_iter().filter(after), limit))
    }

    /// The records of a group enumeration of `enum_type`, sorted by (G, S) (spec §6.4).
    fn group_records(&self, enum_type: u32) -> Result<Vec<SourceGroupEntry>, MgmError> {
        let keys = self.members.keys();
        Ok(match enum_type {
            ALL_SOURCES => keys.into_iter().map(MembershipKey::entry).collect(),
            // One (*,G) record per group; (*,*) names no group, so it has none [Dec].
            ANY_SOURCE => {
                let mut groups: Vec<Ipv4Addr> = keys
                    .into_iter()
                    .map(|k| k.group)
                    .filter(|g| !g.is_unspecified())
                    .collect();
                groups.dedup();
                groups.into_iter().map(SourceGroupEntry::star_g).collect()
            }
            _ => return Err(MgmError::InvalidParameter),
        })
    }

    /// `MgmGroupEnumerationGetNext`: the next records, sorted by (G, S) (spec §6.4).
    ///
    /// # Errors
    /// `InvalidParameter` for a bad or closed enumeration handle; `InsufficientBuffer` with
    /// `needed: 16` for a budget below one record.
    pub fn group_enumeration_get_next(
        &mut self,
        handle: EnumHandle,
        buffer_size: usize,
    ) -> Result<Batch<SourceGroupEntry>, MgmError> {
        let e = self
            .enumerations
            .get_mut(&handle)
            .ok_or(MgmError::InvalidParameter)?;
        let batch = fill(e.records[e.next..].iter().copied(), buffer_size)?;
        e.next += batch.records.len();
        Ok(batch)
    }

    /// `MgmGroupEnumerationEnd` (spec §6.4).
    ///
    /// # Errors
    /// `InvalidParameter` for a bad or closed enumeration handle.
    pub fn group_enumeration_end(&mut self, handle: EnumHandle) -> Result<(), MgmError> {
        self.enumerations
            .remove(&handle)
            .map(|_| ())
            .ok_or(MgmError::InvalidParameter)
    }

    fn get_mfes_from(
        &self,
        after: Option<MfeKey>,
        buffer_size: usize,
        now: Instant,
    ) -> Result<Batch<MfeRecord>, MgmError> {
        let records = self
            .mfes_after(after.map(|k| (k.group, k.source)))
            .map(|(k, m)| self.mfe_record(*k, m, now));
        fill(records, buffer_size)
    }

    fn get_stats_from(
        &self,
        after: Option<MfeKey>,
        buffer_size: usize,
        flags: u32,
        now: Instant,
    ) -> Result<Batch<MfeStatsRecord>, MgmError> {
        let ex = stats_ex(flags)?;
        let records = self
            .mfes_after(after.map(|k| (k.group, k.source)))
            .map(|(k, m)| self.stats_record(*k, m, ex, now));
        fill(records, buffer_size)
    }

    fn mfe_record(&self, key: MfeKey, mfe: &Mfe, now: Instant) -> MfeRecord {
        MfeRecord {
            group: key.group,
            source: key.source,
            src_mask: ALL_ONES,
            upstream: mfe.upstream,
            in_if: mfe.iif,
            in_if_protocol: mfe.iif_protocol,
            route: mfe.route,
            up_time_s: millis_u32(elapsed_ms(mfe.created_at, now), 1000),
            expiry_time_s: millis_u32(elapsed_ms(now, mfe.expires_at), 1000),
            timeout_s: mfe.timeout_s,
            oifs: self.active_oifs(key, mfe).into_iter().collect(),
        }
    }

    fn stats_record(&self, key: MfeKey, mfe: &Mfe, ex: bool, now: Instant) -> MfeStatsRecord {
        let c = &mfe.counters;
        let oifs: Vec<OifStatsRecord> = self
            .active_oifs(key, mfe)
            .into_iter()
            .map(|id| {
                let o = c.oifs.get(&id).copied().unwrap_or_default();
                OifStatsRecord {
                    if_id: id,
                    ttl_too_low: wrap32(o.ttl_too_low),
                    frag_needed: wrap32(o.frag_needed),
                    out_packets: wrap32(o.out_packets),
                    out_discards: wrap32(o.out_discards),
                }
            })
            .collect();
        let total_out: u64 = c.oifs.values().map(|o| o.out_packets).sum();
        MfeStatsRecord {
            group: key.group,
            source: key.source,
            src_mask: ALL_ONES,
            upstream: mfe.upstream,
            in_if: mfe.iif,
            in_if_protocol: mfe.iif_protocol,
            route: mfe.route,
            up_time_cs: millis_u32(elapsed_ms(mfe.created_at, now), 10),
            expiry_time_cs: millis_u32(elapsed_ms(now, mfe.expires_at), 10),
            in_pkts: wrap32(c.in_pkts),
            in_octets: wrap32(c.in_octets),
            pkts_different_if: wrap32(c.different_if),
            queue_overflow: wrap32(c.queue_overflow),
            ex: ex.then(|| MfeStatsEx {
                uninit_mfe: wrap32(c.uninit_mfe),
                negative_mfe: wrap32(c.negative_mfe),
                in_discards: wrap32(c.in_discards),
                in_hdr_errors: wrap32(c.in_hdr_errors),
                total_out_packets: wrap32(total_out),
            }),
            oifs,
        }
    }
}

fn stats_ex(flags: u32) -> Result<bool, MgmError> {
    match flags {
        MGM_MFE_STATS_0 => Ok(false),
        MGM_MFE_STATS_1 => Ok(true),
        _ => Err(MgmError::InvalidParameter),
    }
}

/// The Get (single record) form of the buffer protocol.
fn single<T: WireSize>(record: T, buffer_size: usize) -> Result<T, MgmError> {
    let needed = record.wire_size();
    if needed > buffer_size {
        return Err(MgmError::InsufficientBuffer { needed });
    }
    Ok(record)
}
