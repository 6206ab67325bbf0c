//! Identifiers and value types shared by every part of the core: interface ids, client ids,
//! handles, source/group entries and the membership flags (spec §0, §1, §4.1).
//!
//! Pure data; nothing here performs I/O.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use super::error::MgmError;

/// The all-ones mask that marks a specific address (spec §1).
pub const ALL_ONES: Ipv4Addr = Ipv4Addr::BROADCAST;

/// Membership (join) state (spec §1, `MGM_JOIN_STATE_FLAG`).
pub const MGM_JOIN_STATE_FLAG: u32 = 0x1;
/// Forwarding state only (spec §1, `MGM_FORWARD_STATE_FLAG`).
pub const MGM_FORWARD_STATE_FLAG: u32 = 0x2;
/// An excluded source under a (*,G) or (*,*) of the same client (spec §1, §4.8).
pub const MGM_EXCLUDE_STATE_FLAG: u32 = 0x4;

/// An interface as MGM sees it: the Linux ifindex plus a next hop that tells apart the peers of a
/// point-to-multipoint interface; `next_hop` is 0.0.0.0 everywhere else (spec §0, §10).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InterfaceId {
    /// The Linux interface index (`dwIfIndex`).
    pub ifindex: u32,
    /// The peer on a point-to-multipoint interface, or 0.0.0.0.
    pub next_hop: Ipv4Addr,
}

impl InterfaceId {
    /// An id on a broadcast or point-to-point link (`next_hop == 0.0.0.0`).
    pub const fn new(ifindex: u32) -> Self {
        Self {
            ifindex,
            next_hop: Ipv4Addr::UNSPECIFIED,
        }
    }

    /// An id for one peer of a point-to-multipoint interface.
    pub const fn with_next_hop(ifindex: u32, next_hop: Ipv4Addr) -> Self {
        Self { ifindex, next_hop }
    }
}

impl fmt::Display for InterfaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ifindex, self.next_hop)
    }
}

/// A client's protocol id; IGMP is recognised by [`ProtocolId::IGMP`] (spec §1).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolId(pub u32);

impl ProtocolId {
    /// `PROTO_IP_IGMP`: the only client that may co-own an interface (spec §1, §3).
    pub const IGMP: Self = Self(10);
}

/// Tells apart instances of one protocol (spec §2.1).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ComponentId(pub u32);

/// Opaque handle of a registration. Handles are never reused, so a released one stays invalid
/// (spec §1, §2.2).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolHandle(pub(crate) u32);

/// Opaque handle of an open group enumeration (spec §6.4).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnumHandle(pub(crate) u32);

/// `SOURCE_GROUP_ENTRY`: an address/mask pair for the source and the group, as passed to
/// Add/Delete and to the callbacks, and as returned by group enumeration (spec §4, §6.3).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceGroupEntry {
    /// Source address, 0.0.0.0 for a wildcard.
    pub source: Ipv4Addr,
    /// 0.0.0.0 (wildcard) or 255.255.255.255 (one address).
    pub source_mask: Ipv4Addr,
    /// Group address, 0.0.0.0 for a wildcard.
    pub group: Ipv4Addr,
    /// 0.0.0.0 (wildcard) or 255.255.255.255 (one address).
    pub group_mask: Ipv4Addr,
}

/// "(*, 239.1.1.1)", "(198.18.0.2, 232.1.1.1)", "(*, *)": the operator's notation. A mask
/// other than none or all bits (not made by mgm's own protocols) shows as ADDR/MASK.
impl fmt::Display for SourceGroupEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let part = |addr: Ipv4Addr, mask: Ipv4Addr| {
            if mask.is_unspecified() {
                "*".to_owned()
            } else if mask == ALL_ONES {
                addr.to_string()
            } else {
                format!("{addr}/{mask}")
            }
        };
        write!(
            f,
            "({}, {})",
            part(self.source, self.source_mask),
            part(self.group, self.group_mask)
        )
    }
}

impl SourceGroupEntry {
    /// Size of the Windows record, used by the enumeration byte budget (spec §6.3).
    pub const WIRE_SIZE: usize = 16;

    /// An (S,G) entry.
    pub const fn sg(source: Ipv4Addr, group: Ipv4Addr) -> Self {
        Self {
            source,
            source_mask: ALL_ONES,
            group,
            group_mask: ALL_ONES,
        }
    }

    /// A (*,G) entry.
    pub const fn star_g(group: Ipv4Addr) -> Self {
        Self {
            source: Ipv4Addr::UNSPECIFIED,
            source_mask: Ipv4Addr::UNSPECIFIED,
            group,
            group_mask: ALL_ONES,
        }
    }

    /// The (*,*) entry.
    pub const fn star_star() -> Self {
        Self {
            source: Ipv4Addr::UNSPECIFIED,
            source_mask: Ipv4Addr::UNSPECIFIED,
            group: Ipv4Addr::UNSPECIFIED,
            group_mask: Ipv4Addr::UNSPECIFIED,
        }
    }
}

/// A validated membership key. A wildcard is stored as 0.0.0.0, which the mask rules make
/// unambiguous; the field order makes keys sort by group, then source (spec §1, §4.1).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct MembershipKey {
    pub(crate) group: Ipv4Addr,
    pub(crate) source: Ipv4Addr,
}

impl MembershipKey {
    /// The smallest key, (*,*), as a range bound.
    pub(crate) const MIN: Self = Self {
        group: Ipv4Addr::UNSPECIFIED,
        source: Ipv4Addr::UNSPECIFIED,
    };

    /// Applies the mask rules of spec §1: 0 goes with mask 0, anything else with all-ones, and
    /// (S specific, G wildcard) is invalid.
    pub(crate) fn parse(e: &SourceGroupEntry) -> Result<Self, MgmError> {
        let exact = |addr: Ipv4Addr, mask: Ipv4Addr| {
            if addr.is_unspecified() {
                mask.is_unspecified()
            } else {
                mask == ALL_ONES
            }
        };
        if !exact(e.source, e.source_mask) || !exact(e.group, e.group_mask) {
            return Err(MgmError::InvalidParameter);
        }
        if !e.source.is_unspecified() && e.group.is_unspecified() {
            return Err(MgmError::InvalidParameter);
        }
        Ok(Self {
            group: e.group,
            source: e.source,
        })
    }

    /// The entry callbacks and enumeration report for this key.
    pub(crate) fn entry(self) -> SourceGroupEntry {
        let mask = |a: Ipv4Addr| {
            if a.is_unspecified() {
                Ipv4Addr::UNSPECIFIED
            } else {
                ALL_ONES
            }
        };
        SourceGroupEntry {
            source: self.source,
            source_mask: mask(self.source),
            group: self.group,
            group_mask: mask(self.group),
        }
    }

    /// (S,G) keys alert the RPF owner; wildcard keys use the holder-count rules (spec §4.5).
    pub(crate) fn is_source_specific(self) -> bool {
        !self.source.is_unspecified()
    }

    /// The three keys that can cover an MFE (S,G): (S,G), (*,G) and (*,*) (spec §5.3).
    pub(crate) fn covering(source: Ipv4Addr, group: Ipv4Addr) -> [Self; 3] {
        let any = Ipv4Addr::UNSPECIFIED;
        [
            Self { group, source },
            Self { group, source: any },
            Self {
                group: any,
                source: any,
            },
        ]
    }
}

/// Validated Add/Delete flags (spec §4.2, §4.8): non-zero, no unknown bits, and EXCLUDE alone
/// on an (S,G) key.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum StateFlags {
    /// JOIN and/or FORWARD.
    Forward { join: bool, forward: bool },
    /// EXCLUDE: an (S,G) the client's wildcard entries must not forward on the interface.
    Exclude,
}

impl StateFlags {
    pub(crate) fn parse(flags: u32, key: MembershipKey) -> Result<Self, MgmError> {
        let known = MGM_JOIN_STATE_FLAG | MGM_FORWARD_STATE_FLAG | MGM_EXCLUDE_STATE_FLAG;
        if flags == 0 || flags & !known != 0 {
            return Err(MgmError::InvalidParameter);
        }
        if flags & MGM_EXCLUDE_STATE_FLAG != 0 {
            // §4.8: never with JOIN or FORWARD, and only for one source of one group.
            if flags != MGM_EXCLUDE_STATE_FLAG || !key.is_source_specific() {
                return Err(MgmError::InvalidParameter);
            }
            return Ok(Self::Exclude);
        }
        Ok(Self::Forward {
            join: flags & MGM_JOIN_STATE_FLAG != 0,
            forward: flags & MGM_FORWARD_STATE_FLAG != 0,
        })
    }
}

/// What an interface wants of one group, as an IGMPv3 source filter (RFC 3376 §3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupFilter {
    /// Only these sources: (S,G) joins.
    Include(BTreeSet<Ipv4Addr>),
    /// Every source but these: a (*,G) or (*,*) join minus its exclusions (spec §4.8).
    Exclude(BTreeSet<Ipv4Addr>),
}

impl GroupFilter {
    /// The union of several filters, by the rules RFC 3376 §3.2 gives for merging socket
    /// states into an interface state: EXCLUDE of the sources every EXCLUDE filter blocks and
    /// no INCLUDE filter lists, if any filter is EXCLUDE; else INCLUDE of all listed sources.
    /// `None` for no filters.
    pub fn merge<'a>(filters: impl IntoIterator<Item = &'a GroupFilter>) -> Option<GroupFilter> {
        filters.into_iter().cloned().reduce(|a, b| match (a, b) {
            (Self::Include(a), Self::Include(b)) => Self::Include(&a | &b),
            (Self::Include(i), Self::Exclude(x)) | (Self::Exclude(x), Self::Include(i)) => {
                Self::Exclude(&x - &i)
            }
            (Self::Exclude(a), Self::Exclude(b)) => Self::Exclude(&a & &b),
        })
    }
}
