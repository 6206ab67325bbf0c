//! The module protocol's messages: JSON, one object per line, both ways. These types are the
//! schema; `docs/module-protocol.schema.json` is generated from them (see the test below) and
//! `docs/module-protocol.md` explains the exchange.
//!
//! Addresses are dotted quads. Interfaces are the names of interfaces this mgm manages; a
//! point-to-multipoint next hop goes beside the name (`next_hop`, default 0.0.0.0).

use std::net::Ipv4Addr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::core::{RouteInfo, SourceGroupEntry};

/// The version in [`Hello`]; bumped on any incompatible change of these messages.
pub const WIRE_VERSION: u32 = 1;

/// The longest line either side may send, in bytes.
pub const MAX_LINE: usize = 64 * 1024;

/// A line from a module: a request for MGM, or the answer to a callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ModuleLine {
    /// Echoed in the response, so a module can match responses to requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(flatten)]
    pub op: Op,
}

impl ModuleLine {
    /// Parses one line. Unknown fields are refused, so a misspelt one is never silently
    /// ignored. On failure, returns the line's `id` if it had a readable one, and why.
    pub fn parse(text: &str) -> Result<Self, (Option<u64>, String)> {
        let mut value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| (None, format!("not JSON: {e}")))?;
        let object = value
            .as_object_mut()
            .ok_or((None, "not a JSON object".to_owned()))?;
        let id = match object.remove("id") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or((None, format!("id {v} is not a whole number")))?,
            ),
        };
        let op = serde_json::from_value(value).map_err(|e| (id, e.to_string()))?;
        Ok(Self { id, op })
    }
}

/// What a module asks. Every op but `answer` gets exactly one [`Response`], in order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// `MgmRegisterMProtocol` (spec §2.1); one registration per connection.
    Register { protocol_id: u32, component_id: u32 },
    /// `MgmDeRegisterMProtocol` (spec §2.2).
    Deregister {},
    /// `MgmTakeInterfaceOwnership` (spec §3.1).
    TakeInterface(Iface),
    /// `MgmReleaseInterfaceOwnership` (spec §3.2).
    ReleaseInterface(Iface),
    /// `MgmGetProtocolOnInterface` (spec §3.3); needs no registration.
    GetProtocolOnInterface(Iface),
    /// `MgmAddGroupMembershipEntry` (spec §4.2).
    AddMembership(Membership),
    /// `MgmDeleteGroupMembershipEntry` (spec §4.3).
    DeleteMembership(Membership),
    /// `MgmSetMfe` (spec §5.7): changes an MFE's upstream neighbour.
    SetMfe {
        source: Ipv4Addr,
        group: Ipv4Addr,
        upstream: Ipv4Addr,
    },
    /// A page of MFEs in (group, source) order: `MgmGetFirstMfe`, or `MgmGetNextMfe` from
    /// `after` (spec §6.2).
    Mfes(Page),
    /// A page of MFE statistics with the EX fields: `MgmGetFirstMfeStats`/`Next` with
    /// `MGM_MFE_STATS_1` (spec §6.2).
    MfeStats(Page),
    /// A page of the memberships of the whole router, sorted by (group, source): the group
    /// enumeration of spec §6.4. `all_sources` false gives one (*,G) record per group. Each
    /// page reads the current table. (Spelt out rather than flattened, so unknown fields can
    /// be refused.)
    Groups {
        #[serde(default)]
        all_sources: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<Key>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// The answer to the callback numbered `to`. Fields the callback has no use for are
    /// refused; absent fields keep MGM's proposal.
    Answer(Answer),
}

/// Entries a page holds when the request names no `limit`.
pub const DEFAULT_PAGE: u32 = 1000;

/// The most entries a page holds; a larger `limit` is cut to this. Whatever the count, a page
/// also ends before its reply would pass [`PAGE_BYTES`].
pub const MAX_PAGE: u32 = 10_000;

/// The JSON bytes of entries one reply carries at most (besides at least one entry, however
/// large), well under the link's largest reply, so a page is never refused for its size.
pub const PAGE_BYTES: usize = 2 << 20;

/// Which page of an enumeration to return. Without `after`, the first; without `limit`,
/// [`DEFAULT_PAGE`] entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// Start strictly after this entry, which need not exist any more: the `continue_after`
    /// of the previous page (spec §6.2 GetNext).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Key>,
    /// At most this many entries, 1 to [`MAX_PAGE`]; more is cut to [`MAX_PAGE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// The position of an entry in an enumeration, which is ordered by group, then source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Key {
    pub source: Ipv4Addr,
    pub group: Ipv4Addr,
}

/// An interface and its next hop.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Iface {
    /// The interface's name, e.g. "eth0".
    pub interface: String,
    /// The neighbour on a point-to-multipoint interface; 0.0.0.0 (the default) otherwise.
    #[serde(
        default = "unspecified",
        skip_serializing_if = "Ipv4Addr::is_unspecified"
    )]
    pub next_hop: Ipv4Addr,
}

fn unspecified() -> Ipv4Addr {
    Ipv4Addr::UNSPECIFIED
}

/// A source/group pair with masks (`SOURCE_GROUP_ENTRY`). A mask left out is 0.0.0.0 for the
/// address 0.0.0.0 (a wildcard) and 255.255.255.255 for any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct Entry {
    pub source: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_mask: Option<Ipv4Addr>,
    pub group: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_mask: Option<Ipv4Addr>,
}

impl From<SourceGroupEntry> for Entry {
    fn from(e: SourceGroupEntry) -> Self {
        Self {
            source: e.source,
            source_mask: Some(e.source_mask),
            group: e.group,
            group_mask: Some(e.group_mask),
        }
    }
}

/// The arguments of Add/Delete membership: an [`Entry`] on an [`Iface`], with flags. (Spelt
/// out rather than flattened, so unknown fields can be refused.)
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    pub source: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_mask: Option<Ipv4Addr>,
    pub group: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_mask: Option<Ipv4Addr>,
    pub interface: String,
    #[serde(
        default = "unspecified",
        skip_serializing_if = "Ipv4Addr::is_unspecified"
    )]
    pub next_hop: Ipv4Addr,
    /// `MGM_JOIN_STATE_FLAG` ("join") and/or `MGM_FORWARD_STATE_FLAG` ("forward"), or
    /// `MGM_EXCLUDE_STATE_FLAG` ("exclude") alone on an (S,G) (spec §4.8).
    pub flags: Vec<Flag>,
}

impl Membership {
    pub fn entry(&self) -> Entry {
        Entry {
            source: self.source,
            source_mask: self.source_mask,
            group: self.group,
            group_mask: self.group_mask,
        }
    }

    pub fn iface(&self) -> Iface {
        Iface {
            interface: self.interface.clone(),
            next_hop: self.next_hop,
        }
    }
}

/// A membership state flag (spec §1, §4.1, §4.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    Join,
    Forward,
    /// An (S,G) not to forward on the interface under the caller's own (*,G) or (*,*).
    Exclude,
}

/// Out-parameters of a callback, by the callback they answer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// The `cb` of the callback answered.
    pub to: u64,
    /// rpf: the incoming interface (and `iif_next_hop`) to expect the data on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iif: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iif_next_hop: Option<Ipv4Addr>,
    /// rpf: the upstream neighbour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Ipv4Addr>,
    /// rpf: the route used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Route>,
    /// creation_alert: the offered interfaces not to forward on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disable: Vec<String>,
    /// prune_alert without `member_delete`: the negative MFE's lifetime, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u32>,
}

/// The unicast route behind an RPF decision (spec §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct Route {
    /// The routing protocol that installed it (Linux `rtm_protocol`).
    pub protocol: u32,
    pub network: Ipv4Addr,
    pub mask: Ipv4Addr,
}

impl From<RouteInfo> for Route {
    fn from(r: RouteInfo) -> Self {
        Self {
            protocol: r.protocol,
            network: r.network,
            mask: r.mask,
        }
    }
}

impl From<Route> for RouteInfo {
    fn from(r: Route) -> Self {
        Self {
            protocol: r.protocol,
            network: r.network,
            mask: r.mask,
        }
    }
}

/// The first line mgm sends on a new connection.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct Hello {
    /// Always "mgm".
    pub hello: String,
    /// [`WIRE_VERSION`].
    pub version: u32,
    /// How long mgm waits for an answer to rpf, creation_alert and prune_alert.
    pub answer_within_ms: u64,
    /// The interfaces this mgm manages, which modules may name.
    pub interfaces: Vec<Interface>,
}

/// A managed interface.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
}

/// mgm's reply to one request, carrying the request's `id`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct Response {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    pub ok: bool,
    /// Present when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// Present when `ok` is true and the request returns something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Output>,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct ErrorBody {
    /// The MGM error (spec §8) in words, e.g. "InvalidParameter"; "BadRequest" for a line
    /// that is not a valid request.
    pub code: String,
    /// The Win32 value of `code` (spec §1); absent for "BadRequest".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub win32: Option<u32>,
    /// What was wrong, for people.
    pub message: String,
}

/// What a successful request returns.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Output {
    Registered {
        handle: u32,
    },
    Protocol {
        protocol_id: u32,
        component_id: u32,
    },
    Mfes {
        mfes: Vec<Mfe>,
        #[serde(flatten)]
        rest: Rest,
    },
    MfeStats {
        mfe_stats: Vec<MfeStats>,
        #[serde(flatten)]
        rest: Rest,
    },
    Groups {
        groups: Vec<Entry>,
        #[serde(flatten)]
        rest: Rest,
    },
}

/// What follows a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
pub struct Rest {
    /// Entries follow this page (`ERROR_MORE_DATA`, spec §6.1); ask for them with `after`
    /// set to `continue_after`.
    #[serde(default)]
    pub more: bool,
    /// The last entry of this page, present when `more` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_after: Option<Key>,
}

/// One MFE (`MIB_IPMCAST_MFE`, spec §6.3).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct Mfe {
    pub source: Ipv4Addr,
    pub group: Ipv4Addr,
    pub upstream: Ipv4Addr,
    pub iif: String,
    pub iif_protocol: u32,
    pub route: Route,
    pub up_time_s: u32,
    pub expiry_time_s: u32,
    pub timeout_s: u32,
    /// The interfaces it forwards on; vetoed ones are left out.
    pub oifs: Vec<String>,
}

/// One MFE's counters (`MIB_IPMCAST_MFE_STATS_EX`, spec §6.3).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct MfeStats {
    pub source: Ipv4Addr,
    pub group: Ipv4Addr,
    pub iif: String,
    pub in_pkts: u32,
    pub in_octets: u32,
    pub pkts_different_if: u32,
    pub negative_mfe: u32,
    pub in_discards: u32,
    pub in_hdr_errors: u32,
    /// Packets of the flow dropped while the MFE was being resolved.
    pub uninit_mfe: u32,
    /// Those of them no queue held: all of them, as mgm queues none.
    pub queue_overflow: u32,
    /// Copies sent, summed over every outgoing interface the MFE has had.
    pub total_out_packets: u32,
    pub oifs: Vec<OifStats>,
}

/// One outgoing interface's counters.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct OifStats {
    pub interface: String,
    pub out_packets: u32,
    pub out_discards: u32,
    pub ttl_too_low: u32,
    pub frag_needed: u32,
}

/// A callback (spec §7), numbered by `cb`. Those with `answer_within_ms` want an [`Answer`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct Callback {
    /// Numbers this module's callbacks, from 1.
    pub cb: u64,
    /// Present when mgm waits this long for an [`Answer`]; 0 means it does not wait this time
    /// (the module missed an earlier deadline and has not answered since, or too many of its
    /// answers are due already).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_within_ms: Option<u64>,
    #[serde(flatten)]
    pub body: CallbackBody,
}

/// The callbacks of spec §7 and their arguments.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "callback", rename_all = "snake_case")]
pub enum CallbackBody {
    /// A packet for (S,G) has no MFE; confirm or change where it is expected (spec §5.2).
    Rpf {
        #[serde(flatten)]
        entry: Entry,
        /// MGM's proposal, from the RPF table.
        iif: String,
        iif_next_hop: Ipv4Addr,
        upstream: Ipv4Addr,
        route: Route,
        /// The IP header and the first payload bytes, in hex.
        header: String,
    },
    /// A new MFE will forward on `oifs`, this module's interfaces (spec §5.2).
    CreationAlert {
        #[serde(flatten)]
        entry: Entry,
        iif: String,
        oifs: Vec<OfferedOif>,
    },
    /// Receivers went away (`member_delete`, spec §4.6) or an MFE turned negative (spec §4.7).
    PruneAlert {
        #[serde(flatten)]
        entry: Entry,
        #[serde(flatten)]
        iface: Iface,
        member_delete: bool,
        /// MGM's proposed lifetime of the negative MFE (without `member_delete`).
        timeout_s: u32,
    },
    /// New receivers (`member_update`, spec §4.5) or a negative MFE gained an OIF (spec §4.7).
    JoinAlert {
        #[serde(flatten)]
        entry: Entry,
        member_update: bool,
    },
    /// Data for an MFE arrived on another interface than its iif (spec §5.5).
    WrongIf {
        source: Ipv4Addr,
        group: Ipv4Addr,
        #[serde(flatten)]
        iface: Iface,
        /// In hex.
        header: String,
    },
    /// IGMP hosts joined on an interface this module co-owns with IGMP (spec §4.4).
    LocalJoin {
        #[serde(flatten)]
        entry: Entry,
        #[serde(flatten)]
        iface: Iface,
    },
    /// IGMP hosts left on an interface this module co-owns with IGMP (spec §4.4).
    LocalLeave {
        #[serde(flatten)]
        entry: Entry,
        #[serde(flatten)]
        iface: Iface,
    },
}

/// One interface offered in a creation alert (`MGM_IF_ENTRY`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct OfferedOif {
    pub interface: String,
    pub next_hop: Ipv4Addr,
    /// IGMP runs there too.
    pub igmp: bool,
}

/// The JSON Schema of every message, as committed in `docs/module-protocol.schema.json`: the
/// line a module sends, and the three kinds of line mgm sends.
pub fn schema() -> String {
    crate::schema::document(
        &format!("mgm module protocol, version {WIRE_VERSION}"),
        "One JSON object per line over mgm's Unix socket. A module sends ModuleLine; mgm sends Hello first, then Response and Callback lines.",
        |g| {
            vec![
                g.subschema_for::<ModuleLine>(),
                g.subschema_for::<Hello>(),
                g.subschema_for::<Response>(),
                g.subschema_for::<Callback>(),
            ]
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<ModuleLine, (Option<u64>, String)> {
        ModuleLine::parse(line)
    }

    #[test]
    fn requests_parse_with_defaults() {
        let l = parse(r#"{"id":4,"op":"take_interface","interface":"eth1"}"#).unwrap();
        assert_eq!(l.id, Some(4));
        assert_eq!(
            l.op,
            Op::TakeInterface(Iface {
                interface: "eth1".into(),
                next_hop: Ipv4Addr::UNSPECIFIED
            })
        );
        let l = parse(
            r#"{"op":"add_membership","source":"0.0.0.0","group":"239.1.1.1","interface":"eth2","flags":["join"]}"#,
        )
        .unwrap();
        let Op::AddMembership(m) = l.op else {
            panic!("{l:?}")
        };
        assert_eq!(m.group, Ipv4Addr::new(239, 1, 1, 1));
        assert_eq!(m.source_mask, None);
        assert_eq!(m.flags, [Flag::Join]);
        let l = parse(
            r#"{"op":"delete_membership","source":"10.1.1.1","group":"239.1.1.1","interface":"eth2","flags":["exclude"]}"#,
        )
        .unwrap();
        let Op::DeleteMembership(m) = l.op else {
            panic!("{l:?}")
        };
        assert_eq!(m.flags, [Flag::Exclude], "spec §4.8");
        assert_eq!(
            parse(r#"{"op":"groups"}"#).unwrap().op,
            Op::Groups {
                all_sources: false,
                after: None,
                limit: None
            }
        );
        assert_eq!(
            parse(r#"{"op":"mfes"}"#).unwrap().op,
            Op::Mfes(Page::default())
        );
        assert_eq!(
            parse(
                r#"{"op":"mfe_stats","after":{"source":"10.1.1.1","group":"239.1.1.1"},"limit":5}"#
            )
            .unwrap()
            .op,
            Op::MfeStats(Page {
                after: Some(Key {
                    source: Ipv4Addr::new(10, 1, 1, 1),
                    group: Ipv4Addr::new(239, 1, 1, 1)
                }),
                limit: Some(5)
            })
        );
        assert_eq!(
            parse(r#"{"op":"deregister"}"#).unwrap().op,
            Op::Deregister {}
        );
    }

    #[test]
    fn answers_parse() {
        let l = parse(r#"{"op":"answer","to":9,"disable":["eth2"]}"#).unwrap();
        assert_eq!(
            l.op,
            Op::Answer(Answer {
                to: 9,
                disable: vec!["eth2".into()],
                ..Answer::default()
            })
        );
    }

    #[test]
    fn bad_lines_are_refused() {
        for bad in [
            r#"{"op":"take_interface"}"#,
            r#"{"op":"fly"}"#,
            r#"{"op":"register","protocol_id":-1,"component_id":0}"#,
            r#"{"op":"add_membership","source":"1.2.3","group":"239.1.1.1","interface":"e","flags":[]}"#,
            r#"{"op":"answer","to":1,"colour":"red"}"#,
            r#"{"id":"x","op":"mfes"}"#,
            r#"{"op":"take_interface","interface":"e","nexthop":"1.2.3.4"}"#,
            r#"{"op":"add_membership","source":"0.0.0.0","group":"239.1.1.1","interface":"e","flags":[],"sauce":1}"#,
            r#"{"op":"mfes","all":true}"#,
            r#"{"op":"mfes","after":{"group":"239.1.1.1"}}"#,
            r#"{"op":"mfes","limit":-1}"#,
            r#"{"op":"groups","after":{"source":"0.0.0.0","group":"239.1.1.1","x":1}}"#,
            "[]",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn callbacks_serialise_flat() {
        let cb = Callback {
            cb: 3,
            answer_within_ms: None,
            body: CallbackBody::LocalJoin {
                entry: Entry {
                    source: Ipv4Addr::UNSPECIFIED,
                    source_mask: Some(Ipv4Addr::UNSPECIFIED),
                    group: Ipv4Addr::new(239, 1, 1, 1),
                    group_mask: Some(Ipv4Addr::BROADCAST),
                },
                iface: Iface {
                    interface: "eth2".into(),
                    next_hop: Ipv4Addr::UNSPECIFIED,
                },
            },
        };
        assert_eq!(
            serde_json::to_string(&cb).unwrap(),
            r#"{"cb":3,"callback":"local_join","source":"0.0.0.0","source_mask":"0.0.0.0","group":"239.1.1.1","group_mask":"255.255.255.255","interface":"eth2"}"#
        );
    }

    /// The committed schema is what these types say; regenerate it with
    /// `MGM_WRITE_SCHEMA=1 cargo test -p mgm-user schema_file`.
    #[test]
    fn schema_file_is_current() {
        crate::schema::assert_committed(
            "docs/module-protocol.schema.json",
            &schema(),
            "schema_file",
        );
    }
}
