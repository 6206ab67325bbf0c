//! The control protocol: one JSON request per line from `mgm show`, `mgm route`, `mgm join`,
//! `mgm leave` or `mgm reload`, one JSON answer per line back. These types are the schema;
//! `docs/control-schema.json` is generated from them (see the test below).

use std::net::Ipv4Addr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::view;

/// The `version` of every answer; bumped on any incompatible change of these documents.
pub const CONTROL_VERSION: u32 = 1;

/// The longest request line the daemon reads, in bytes.
pub const MAX_REQUEST: usize = 4096;

/// Rows of a paged view an answer holds when the request names no `limit`.
pub const DEFAULT_PAGE: u32 = 1000;

/// The most rows of a paged view one answer holds; a larger `limit` is cut to this.
pub const MAX_PAGE: u32 = 10_000;

/// What an operator asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// One of the views of `mgm show`. The `mfe` and `groups` views come in pages: without
    /// `after`, the first; then each answer's `next` goes here for the page after it. `limit`
    /// is the rows a page holds at most: [`DEFAULT_PAGE`] if left out, [`MAX_PAGE`] at most
    /// (more is cut to it). The other views are one answer; `after` is refused there.
    Show {
        view: View,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Adds a static route, in `--static-route`'s words, until the daemon stops or reloads.
    RouteAdd { route: String },
    /// Deletes a static route, given as it was added.
    RouteDel { route: String },
    /// Forwards `group` (from `source` only, if given) to `interface` as if a host there had
    /// joined, until the daemon stops or reloads.
    Join {
        interface: String,
        group: Ipv4Addr,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<Ipv4Addr>,
    },
    /// Undoes a `join`.
    Leave {
        interface: String,
        group: Ipv4Addr,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<Ipv4Addr>,
    },
    /// Reads the configuration again, as SIGHUP does.
    Reload {},
}

/// The views of `mgm show`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum View {
    Interfaces,
    Groups,
    Mfe,
    Protocols,
    Stats,
}

/// The daemon's answer to one request. (Its fields are not closed: serde cannot refuse
/// unknown fields beside a flattened document.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Answer {
    /// [`CONTROL_VERSION`].
    pub version: u32,
    pub ok: bool,
    /// Why the request failed, in words for the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What a change did, in words for the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The view asked for by `show`.
    #[serde(flatten)]
    pub document: Option<Document>,
    /// More rows of this view follow: ask again with `after` set to this. It names the last
    /// row of this answer; the next page starts strictly after that row, whether or not it
    /// still exists, so rows present throughout are each shown once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One view's rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "view", rename_all = "snake_case")]
pub enum Document {
    Interfaces { interfaces: Vec<view::Interface> },
    Groups { groups: Vec<view::Group> },
    Mfe { mfes: Vec<view::Mfe> },
    Protocols { protocols: Vec<view::Protocol> },
    Stats { stats: view::Stats },
}

impl Answer {
    pub fn document(document: Document) -> Self {
        Answer {
            version: CONTROL_VERSION,
            ok: true,
            error: None,
            message: None,
            document: Some(document),
            next: None,
        }
    }

    pub fn done(message: impl Into<String>) -> Self {
        Answer {
            version: CONTROL_VERSION,
            ok: true,
            error: None,
            message: Some(message.into()),
            document: None,
            next: None,
        }
    }

    pub fn error(error: impl Into<String>) -> Self {
        Answer {
            version: CONTROL_VERSION,
            ok: false,
            error: Some(error.into()),
            message: None,
            document: None,
            next: None,
        }
    }
}

impl Request {
    /// `show` of `view`, its first page.
    pub fn show(view: View) -> Self {
        Request::Show {
            view,
            after: None,
            limit: None,
        }
    }

    /// Parses one request line; the error says what is wrong with it.
    pub fn parse(line: &str) -> Result<Request, String> {
        serde_json::from_str(line).map_err(|e| format!("bad request: {e}"))
    }
}

/// The JSON Schema of the requests and answers, as committed in `docs/control-schema.json`.
pub fn schema() -> String {
    crate::schema::document(
        &format!("mgm control protocol, version {CONTROL_VERSION}"),
        "One JSON object per line over mgm's control socket: the client sends a Request, the daemon answers with one Answer and closes. `mgm show VIEW --json` prints the Answer. The mfe and groups views come in pages (`after`, `limit`, `next`; optional fields added within version 1): a client that ignores `next` sees the first page only; `mgm show` asks for every page.",
        |g| vec![g.subschema_for::<Request>(), g.subschema_for::<Answer>()],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_say_why() {
        assert_eq!(
            Request::parse(r#"{"op":"show","view":"mfe"}"#),
            Ok(Request::show(View::Mfe))
        );
        assert_eq!(
            Request::parse(
                r#"{"op":"show","view":"groups","after":"dn1 239.1.1.1 igmp *","limit":5}"#
            ),
            Ok(Request::Show {
                view: View::Groups,
                after: Some("dn1 239.1.1.1 igmp *".into()),
                limit: Some(5)
            })
        );
        assert_eq!(
            Request::parse(r#"{"op":"join","interface":"dn1","group":"239.1.1.1"}"#),
            Ok(Request::Join {
                interface: "dn1".into(),
                group: Ipv4Addr::new(239, 1, 1, 1),
                source: None
            })
        );
        assert_eq!(Request::parse(r#"{"op":"reload"}"#), Ok(Request::Reload {}));
        for bad in [
            r#"{"op":"show","view":"routes"}"#,
            r#"{"op":"join","interface":"dn1","group":"239.1.1"}"#,
            r#"{"op":"show","view":"mfe","colour":1}"#,
            r#"{"op":"show","view":"mfe","limit":-1}"#,
            r#"{"op":"fly"}"#,
            "",
        ] {
            let e = Request::parse(bad).unwrap_err();
            assert!(e.starts_with("bad request: "), "{bad}: {e}");
        }
    }

    /// The committed schema is what these types say; regenerate it with
    /// `MGM_WRITE_SCHEMA=1 cargo test -p mgm-user control_schema_file`.
    #[test]
    fn control_schema_file_is_current() {
        crate::schema::assert_committed(
            "docs/control-schema.json",
            &schema(),
            "control_schema_file",
        );
    }
}
