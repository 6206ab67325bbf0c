//! The configuration file: TOML with one table per concern, its keys named like the `mgm run`
//! flags they stand for (`--igmp-query-interval` is `query-interval` in `[igmp]`). Flags given
//! on the command line override the file; what neither gives takes the flag's default.
//! `mgm-user/examples/mgm.toml` is the commented example.
//!
//! Every value keeps where it stood in the file, so `mgm check` can say on which line an error
//! is and what to write instead.

use std::{fmt, ops::Range, path::Path};

use serde::Deserialize;
use toml::Spanned;

use crate::protocols::static_routes::StaticRoute;

/// A value from the file, with its place there.
pub type Value<T> = Option<Spanned<T>>;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// `--log-level`.
    pub log_level: Value<String>,
    /// `--netns`.
    pub netns: Value<String>,
    /// `--metrics`.
    pub metrics: Value<String>,
    #[serde(default)]
    pub interfaces: Interfaces,
    #[serde(default)]
    pub igmp: Igmp,
    #[serde(default)]
    pub routes: Routes,
    #[serde(default)]
    pub modules: Modules,
    #[serde(default)]
    pub dataplane: Dataplane,
    #[serde(default)]
    pub rpf: Rpf,
}

/// `[interfaces]`: the roles, as `--upstream`, `--downstream` and `--external`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Interfaces {
    pub upstream: Value<String>,
    pub downstream: Option<Vec<Spanned<String>>>,
    pub external: Option<Vec<Spanned<String>>>,
}

/// `[igmp]`: the `--igmp-*` flags, the same on every downstream.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Igmp {
    pub version: Value<u8>,
    pub query_interval: Value<u64>,
    pub query_response_ms: Value<u64>,
    pub robustness: Value<u8>,
    pub last_member_interval_ms: Value<u64>,
    pub fast_leave: Value<bool>,
    pub max_groups: Value<usize>,
    pub max_sources: Value<usize>,
}

/// `[routes]`: `static` holds routes in `--static-route`'s words.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Routes {
    #[serde(rename = "static")]
    pub static_routes: Option<Vec<Spanned<String>>>,
}

/// `[modules]`: the socket out-of-process routing protocols connect to.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Modules {
    pub socket: Value<String>,
    pub socket_group: Value<String>,
    pub answer_ms: Value<u64>,
}

/// `[dataplane]`: how XDP is attached and what it is told.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Dataplane {
    pub xdp_mode: Value<String>,
    pub pin_dir: Value<String>,
    pub ttl_threshold: Value<u8>,
    pub pending_retry_ms: Value<u64>,
    pub wrong_if_interval_ms: Value<u64>,
    pub igmp_admit_rate: Value<u32>,
    pub upcall_admit_rate: Value<u32>,
    pub negative_budget: Value<usize>,
    pub keep_forwarding: Value<bool>,
    pub ebpf_log_level: Value<String>,
}

/// `[rpf]`: where the incoming interface of each source comes from, and how often it is
/// resolved again.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Rpf {
    pub table: Value<u32>,
    pub mfe_lifetime: Value<u32>,
}

/// One thing wrong in the file: where, what, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, 0 when the problem has no place (the file as a whole).
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: ", self.line)?;
        }
        f.write_str(&self.message)
    }
}

/// Everything wrong with one file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems {
    pub path: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {n} problem{}",
            self.path,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// The valid values of the settings that take a word.
const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
const XDP_MODES: [&str; 3] = ["native", "skb", "auto"];

/// Reads and checks the file at `path`.
///
/// # Errors
/// The file cannot be read, is not TOML of this shape, or a value is not allowed; every
/// problem found is listed with its line.
pub fn load(path: &Path) -> Result<Config, Problems> {
    let problems = |problems| Problems {
        path: path.display().to_string(),
        problems,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        problems(vec![Problem {
            line: 0,
            message: format!("cannot read it: {e}"),
        }])
    })?;
    parse(&text).map_err(problems)
}

/// Parses and checks a file's text.
///
/// # Errors
/// As for [`load`], without the path.
pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    let config: Config = toml::from_str(text).map_err(|e| {
        vec![Problem {
            line: e.span().map_or(0, |s| line_of(text, &s)),
            message: e.message().trim_end().to_owned(),
        }]
    })?;
    let problems = config.check(text);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

fn line_of(text: &str, span: &Range<usize>) -> usize {
    text[..span.start.min(text.len())].matches('\n').count() + 1
}

impl Config {
    /// The checks a value's type cannot express, each problem with its line.
    fn check(&self, text: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut at = |span: Range<usize>, message: String| {
            out.push(Problem {
                line: line_of(text, &span),
                message,
            })
        };
        for (value, key, allowed) in [
            (&self.log_level, "log-level", &LOG_LEVELS[..]),
            (
                &self.dataplane.ebpf_log_level,
                "ebpf-log-level",
                &LOG_LEVELS[..],
            ),
            (&self.dataplane.xdp_mode, "xdp-mode", &XDP_MODES[..]),
        ] {
            if let Some(v) = value {
                if !allowed.contains(&v.get_ref().as_str()) {
                    at(
                        v.span(),
                        format!(
                            "{key} = {:?} is not one of {}",
                            v.get_ref(),
                            quoted(allowed)
                        ),
                    );
                }
            }
        }
        if let Some(v) = &self.metrics {
            if v.get_ref().parse::<std::net::SocketAddr>().is_err() {
                at(
                    v.span(),
                    format!(
                        "metrics = {:?} is not ADDR:PORT: write e.g. \"127.0.0.1:9464\"",
                        v.get_ref()
                    ),
                );
            }
        }
        if let Some(v) = &self.igmp.version {
            if !(2..=3).contains(v.get_ref()) {
                at(
                    v.span(),
                    format!("version = {} is not served: write 3 or 2", v.get_ref()),
                );
            }
        }
        for (value, key) in [
            (self.igmp.query_interval.as_ref(), "query-interval"),
            (self.igmp.query_response_ms.as_ref(), "query-response-ms"),
            (
                self.igmp.last_member_interval_ms.as_ref(),
                "last-member-interval-ms",
            ),
        ] {
            if let Some(v) = value.filter(|v| *v.get_ref() == 0) {
                at(v.span(), format!("{key} = 0: it must be at least 1"));
            }
        }
        if let Some(v) = self.rpf.mfe_lifetime.as_ref().filter(|v| *v.get_ref() == 0) {
            at(
                v.span(),
                "mfe-lifetime = 0: it must be at least 1".to_owned(),
            );
        }
        if let Some(v) = self.igmp.robustness.as_ref().filter(|v| *v.get_ref() == 0) {
            at(v.span(), "robustness = 0: it must be at least 1".to_owned());
        }
        if let Some(v) = &self.modules.answer_ms {
            if !(1..=10_000).contains(v.get_ref()) {
                at(
                    v.span(),
                    format!("answer-ms = {}: write 1 to 10000", v.get_ref()),
                );
            }
        }
        let named = self.interfaces.named();
        let spanned = named
            .iter()
            .map(|(r, n)| (*r, n.get_ref().as_str(), n.span()));
        if let Some((first, role, name, span)) = named_twice(spanned) {
            at(
                span,
                format!(
                    "{name} is named as {first} and again as {role}: give each interface one role"
                ),
            );
        }
        for r in self.routes.static_routes.iter().flatten() {
            match r.get_ref().parse::<StaticRoute>() {
                Ok(route) => {
                    if let Some(why) = self.interfaces.route_problem(&route) {
                        at(r.span(), format!("static route {:?}: {why}", r.get_ref()));
                    }
                }
                Err(e) => at(r.span(), e.to_string()),
            }
        }
        out
    }
}

impl Interfaces {
    /// Every interface named, with its role, in the file's order of roles.
    fn named(&self) -> Vec<(&'static str, &Spanned<String>)> {
        self.upstream
            .iter()
            .map(|n| ("upstream", n))
            .chain(self.downstream.iter().flatten().map(|n| ("downstream", n)))
            .chain(self.external.iter().flatten().map(|n| ("external", n)))
            .collect()
    }

    /// Why `route` does not fit these roles, where the file names the roles it needs.
    fn route_problem(&self, route: &StaticRoute) -> Option<String> {
        let downstream: Vec<&str> = self
            .downstream
            .iter()
            .flatten()
            .map(|n| n.get_ref().as_str())
            .collect();
        let upstream = self.upstream.as_ref().map(|u| u.get_ref().as_str());
        static_route_problem(route, upstream, &downstream)
    }
}

/// Why a static route does not fit the interface roles: it must come in on the upstream or a
/// downstream, and go out on downstreams only (IGMP keeps running there).
pub fn static_route_problem(
    route: &StaticRoute,
    upstream: Option<&str>,
    downstream: &[&str],
) -> Option<String> {
    if upstream != Some(route.iif.as_str()) && !downstream.contains(&route.iif.as_str()) {
        return Some(format!(
            "{} is neither the upstream nor a downstream",
            route.iif
        ));
    }
    route
        .oifs
        .iter()
        .find(|o| !downstream.contains(&o.as_str()))
        .map(|o| format!("outgoing interface {o} is not a downstream"))
}

/// The first interface named in two roles: the role it had first, its second role, its name,
/// and what came with that second naming.
pub fn named_twice<'a, T>(
    named: impl IntoIterator<Item = (&'a str, &'a str, T)>,
) -> Option<(&'a str, &'a str, &'a str, T)> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (role, name, extra) in named {
        if let Some((first, _)) = seen.iter().find(|(_, n)| *n == name) {
            return Some((first, role, name, extra));
        }
        seen.push((role, name));
    }
    None
}

fn quoted(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("\"{w}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The value of an optional setting, without its place.
pub fn value<T: Clone>(v: &Value<T>) -> Option<T> {
    v.as_ref().map(|s| s.get_ref().clone())
}

/// The names of a list of interfaces, without their places.
pub fn names(v: &Option<Vec<Spanned<String>>>) -> Option<Vec<String>> {
    v.as_ref()
        .map(|l| l.iter().map(|n| n.get_ref().clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        parse(text)
            .err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn the_example_file_is_valid_and_says_what_the_defaults_say() {
        let text = include_str!("../examples/mgm.toml");
        let c = parse(text).unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(value(&c.interfaces.upstream).as_deref(), Some("eth0"));
        assert_eq!(
            names(&c.interfaces.downstream),
            Some(vec!["eth1".to_owned(), "eth2".to_owned()])
        );
        assert_eq!(value(&c.igmp.version), Some(3));
        assert_eq!(value(&c.igmp.query_interval), Some(125));
        assert_eq!(value(&c.dataplane.xdp_mode).as_deref(), Some("auto"));
    }

    #[test]
    fn an_empty_file_is_valid_and_sets_nothing() {
        let c = parse("").unwrap();
        assert!(c.interfaces.upstream.is_none() && c.igmp.version.is_none());
    }

    #[test]
    fn toml_syntax_errors_give_their_line() {
        let p = problems("[igmp]\nversion = 3\nrobustness = \n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("line 3: "), "{p:?}");
    }

    #[test]
    fn an_unknown_key_gives_its_line_and_the_keys_that_exist() {
        let p = problems("[igmp]\nversion = 3\nquery-intervall = 10\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("line 3: "), "{p:?}");
        assert!(
            p[0].contains("query-intervall") && p[0].contains("`query-interval`"),
            "{p:?}"
        );
    }

    #[test]
    fn an_unknown_table_gives_its_line_and_the_tables_that_exist() {
        let p = problems("log-level = \"info\"\n\n[igmpv3]\nversion = 3\n");
        assert!(
            p[0].starts_with("line 3: ") && p[0].contains("`igmp`"),
            "{p:?}"
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_gives_its_line() {
        let p = problems("[igmp]\nfast-leave = \"yes\"\n");
        assert!(
            p[0].starts_with("line 2: ") && p[0].contains("bool"),
            "{p:?}"
        );
        let p = problems("[dataplane]\nttl-threshold = 300\n");
        assert!(p[0].starts_with("line 2: "), "{p:?}");
    }

    #[test]
    fn values_out_of_range_are_each_reported_with_what_to_write() {
        let p = problems(
            "log-level = \"loud\"\n[igmp]\nversion = 4\nrobustness = 0\nquery-interval = 0\n\
             [modules]\nanswer-ms = 0\n[dataplane]\nxdp-mode = \"fast\"\n",
        );
        let expect = [
            ("line 1: ", "\"error\", \"warn\""),
            ("line 9: ", "\"native\", \"skb\", \"auto\""),
            ("line 3: ", "write 3 or 2"),
            ("line 5: ", "at least 1"),
            ("line 4: ", "at least 1"),
            ("line 7: ", "1 to 10000"),
        ];
        assert_eq!(p.len(), expect.len(), "{p:?}");
        for (line, hint) in expect {
            assert!(
                p.iter().any(|m| m.starts_with(line) && m.contains(hint)),
                "no {line}…{hint} in {p:?}"
            );
        }
    }

    #[test]
    fn an_interface_in_two_roles_is_reported_where_it_is_named_again() {
        let p = problems(
            "[interfaces]\nupstream = \"eth0\"\ndownstream = [\n  \"eth1\",\n  \"eth0\",\n]\n",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("line 5: ") && p[0].contains("as upstream and again as downstream"),
            "{p:?}"
        );
    }

    #[test]
    fn static_routes_are_parsed_and_checked_against_the_roles() {
        let p = problems(
            "[interfaces]\nupstream = \"eth0\"\ndownstream = [\"eth1\"]\n[routes]\nstatic = [\n  \
             \"from eth0 group 239.1.1.1 to eth1\",\n  \"from eth0 group 10.0.0.1 to eth1\",\n  \
             \"from eth0 group 239.1.1.2 to eth9\",\n  \"from eth7 group 239.1.1.3 to eth1\",\n]\n",
        );
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("line 7: ") && p[0].contains("not a multicast group"));
        assert!(p[1].starts_with("line 8: ") && p[1].contains("eth9 is not a downstream"));
        assert!(p[2].starts_with("line 9: ") && p[2].contains("eth7 is neither"));
    }

    #[test]
    fn a_missing_file_is_one_problem_naming_it() {
        let e = load(Path::new("/nonexistent/mgm.toml")).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("/nonexistent/mgm.toml: 1 problem"));
        assert!(e.to_string().contains("cannot read it"));
    }
}
