//! The configuration file: TOML with one table per concern, its keys named like the `mgm run`
//! flags they stand for (`--igmp-query-interval` is `query-interval` in `[igmp]`). Flags given
//! on the command line override the file; what neither gives takes the flag's default.
//! `mgm-user/examples/mgm.toml` is the commented example.
//!
//! Every value keeps where it stood in the file, so `mgm check` can say on which line an error
//! is and what to write instead.

use std::{collections::BTreeMap, fmt, ops::Range, path::Path, time::Duration};

use serde::Deserialize;
use toml::Spanned;

use crate::{igmp::querier, protocols::static_routes::StaticRoute};

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
    pub control: Control,
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

/// `[igmp]`: the `--igmp-*` flags, the default of every downstream; `[igmp.interface.IF]`
/// takes the same keys for one downstream, and what it sets overrides the default there.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Igmp {
    /// Per-downstream settings by interface name. Only `[igmp]` itself may have them.
    #[serde(default)]
    pub interface: BTreeMap<String, Spanned<Igmp>>,
    pub version: Value<u8>,
    pub query_interval: Value<u64>,
    pub query_response_ms: Value<u64>,
    pub robustness: Value<u8>,
    pub last_member_interval_ms: Value<u64>,
    pub fast_leave: Value<bool>,
    pub max_groups: Value<usize>,
    pub max_sources: Value<usize>,
    pub strict_reports: Value<bool>,
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

/// `[control]`: the socket operators' commands (`mgm show`, `mgm route`...) connect to.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Control {
    pub socket: Value<String>,
    pub group: Value<String>,
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
        self.igmp.check("", &mut at);
        if let Some(v) = self.rpf.mfe_lifetime.as_ref().filter(|v| *v.get_ref() == 0) {
            at(
                v.span(),
                "mfe-lifetime = 0: it must be at least 1".to_owned(),
            );
        }
        self.igmp.check_timing(&self.igmp, "", 0..0, &mut at);
        for (name, table) in &self.igmp.interface {
            let here = format!("[igmp.interface.{name}] ");
            let span = table.span();
            let table = table.get_ref();
            if !table.interface.is_empty() {
                at(
                    span.clone(),
                    format!(
                        "{here}has its own interface tables: only [igmp] has them; write \
                         [igmp.interface.IF] for each interface"
                    ),
                );
            }
            if let Some(why) = self.interfaces.igmp_problem(name) {
                at(span.clone(), format!("{here}{why}"));
            }
            table.check(&here, &mut at);
            table.check_timing(&self.igmp, &here, span, &mut at);
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

impl Igmp {
    /// The values each key allows, each problem reported as `{here}KEY = VALUE: ...`.
    fn check(&self, here: &str, at: &mut impl FnMut(Range<usize>, String)) {
        if let Some(v) = &self.version {
            if !(2..=3).contains(v.get_ref()) {
                at(
                    v.span(),
                    format!(
                        "{here}version = {} is not served: write 3 or 2",
                        v.get_ref()
                    ),
                );
            }
        }
        for (value, key) in [
            (self.query_interval.as_ref(), "query-interval"),
            (self.query_response_ms.as_ref(), "query-response-ms"),
            (
                self.last_member_interval_ms.as_ref(),
                "last-member-interval-ms",
            ),
        ] {
            if let Some(v) = value.filter(|v| *v.get_ref() == 0) {
                at(v.span(), format!("{here}{key} = 0: it must be at least 1"));
            }
        }
        if let Some(v) = self.robustness.as_ref().filter(|v| *v.get_ref() == 0) {
            at(
                v.span(),
                format!("{here}robustness = 0: it must be at least 1"),
            );
        }
    }

    /// The query response interval must end before the next general query (RFC 3376 §8.3),
    /// where the file sets both, here or in `[igmp]` (`global`); with a flag or a default in
    /// play, `mgm run` checks the values it runs with. The problem is placed at the key of
    /// this table that set one of the two, or at `span`.
    fn check_timing(
        &self,
        global: &Igmp,
        here: &str,
        span: Range<usize>,
        at: &mut impl FnMut(Range<usize>, String),
    ) {
        let set = |mine: &Value<u64>, global: &Value<u64>| value(mine).or(value(global));
        let (Some(qri), Some(qi)) = (
            set(&self.query_response_ms, &global.query_response_ms),
            set(&self.query_interval, &global.query_interval),
        ) else {
            return;
        };
        let (qri, qi) = (Duration::from_millis(qri), Duration::from_secs(qi));
        if qri.is_zero() || qi.is_zero() || qri < qi {
            return;
        }
        let place = match (&self.query_response_ms, &self.query_interval) {
            (Some(v), _) => v.span(),
            (None, Some(v)) => v.span(),
            (None, None) if span.is_empty() => return,
            (None, None) => span,
        };
        at(
            place,
            format!(
                "{here}query-response-ms = {} is not below query-interval = {} s: write \
                 query-response-ms below {}, or a longer query-interval",
                qri.as_millis(),
                qi.as_secs(),
                qi.as_millis()
            ),
        );
    }

    /// `base` with what this table sets.
    pub fn over(&self, base: querier::Config) -> querier::Config {
        querier::Config {
            version: match value(&self.version) {
                Some(2) => querier::Version::V2,
                Some(_) => querier::Version::V3,
                None => base.version,
            },
            robustness: value(&self.robustness).unwrap_or(base.robustness),
            query_interval: value(&self.query_interval)
                .map_or(base.query_interval, Duration::from_secs),
            query_response_interval: value(&self.query_response_ms)
                .map_or(base.query_response_interval, Duration::from_millis),
            last_member_query_interval: value(&self.last_member_interval_ms)
                .map_or(base.last_member_query_interval, Duration::from_millis),
            fast_leave: value(&self.fast_leave).unwrap_or(base.fast_leave),
            max_groups: value(&self.max_groups).or(base.max_groups),
            max_sources: value(&self.max_sources).or(base.max_sources),
            strict_reports: value(&self.strict_reports).unwrap_or(base.strict_reports),
            ..base
        }
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

    /// Why IGMP settings for `name` cannot apply: it must be a downstream, where the file
    /// names the downstreams.
    fn igmp_problem(&self, name: &str) -> Option<String> {
        let downstream = self.downstream.as_ref()?;
        (!downstream.iter().any(|d| d.get_ref() == name)).then(|| {
            format!(
                "{name} is not a downstream, and IGMP runs on downstreams only: add \"{name}\" \
                 to [interfaces] downstream, or remove this table"
            )
        })
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
        assert_eq!(value(&c.igmp.strict_reports), Some(false));
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
    fn per_interface_igmp_settings_override_the_default_there_only() {
        let c = parse(
            "[interfaces]\ndownstream = [\"dn1\", \"dn2\"]\n[igmp]\nquery-interval = 60\n\
             robustness = 3\n[igmp.interface.dn2]\nquery-interval = 20\nfast-leave = true\n\
             strict-reports = true\n",
        )
        .unwrap();
        let base = c.igmp.over(querier::Config::default());
        assert_eq!(base.query_interval, Duration::from_secs(60));
        assert_eq!(base.robustness, 3);
        let dn2 = c.igmp.interface["dn2"].get_ref().over(base.clone());
        assert_eq!(dn2.query_interval, Duration::from_secs(20));
        assert!(dn2.fast_leave);
        assert!(dn2.strict_reports && !base.strict_reports);
        assert_eq!(dn2.robustness, 3, "what dn2 does not set comes from [igmp]");
        assert!(!c.igmp.interface.contains_key("dn1"));
    }

    #[test]
    fn per_interface_igmp_problems_name_the_table_and_their_line() {
        let p = problems(
            "[interfaces]\ndownstream = [\"dn1\"]\n[igmp.interface.dn1]\nversion = 1\n\
             robustness = 0\n[igmp.interface.dn9]\nfast-leave = true\n",
        );
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p.iter().any(
                |m| m.starts_with("line 4: [igmp.interface.dn1] version = 1")
                    && m.contains("write 3 or 2")
            ),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("line 5: [igmp.interface.dn1] robustness = 0")),
            "{p:?}"
        );
        assert!(
            p.iter().any(
                |m| m.contains("[igmp.interface.dn9] dn9 is not a downstream")
                    && m.contains("add \"dn9\" to [interfaces] downstream")
            ),
            "{p:?}"
        );
    }

    #[test]
    fn a_response_interval_not_below_the_query_interval_says_what_to_write() {
        let p = problems("[igmp]\nquery-interval = 5\nquery-response-ms = 5000\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("line 3: query-response-ms = 5000 is not below query-interval = 5 s")
                && p[0].contains("below 5000"),
            "{p:?}"
        );
        // [igmp]'s response interval against one interface's short query interval.
        let p = problems(
            "[igmp]\nquery-response-ms = 9000\n[igmp.interface.dn1]\n\nquery-interval = 8\n",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("line 5: [igmp.interface.dn1] query-response-ms = 9000"),
            "{p:?}"
        );
        // Where a flag or the default gives one of the two, `mgm run` checks what runs.
        assert_eq!(
            problems("[igmp.interface.dn1]\nquery-interval = 3\n"),
            [] as [String; 0]
        );
    }

    #[test]
    fn interface_tables_do_not_nest() {
        let p = problems("[igmp.interface.dn1.interface.dn2]\nrobustness = 3\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("only [igmp] has them"), "{p:?}");
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
