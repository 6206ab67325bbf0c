//! Reload (SIGHUP, and `mgm reload` through [`ReloadRequest`]): the settings in force and the
//! ones just read are compared here, without I/O, into a [`Diff`] the daemon applies. What
//! the diff does not name is not touched, so its forwarding entries keep forwarding. Static
//! routes are compared with those the static-routes module holds, run-time ones included, so
//! the file decides which stay. Settings
//! only a restart can change are listed in [`Diff::needs_restart`], never silently dropped.

use std::{collections::BTreeMap, fmt};

use crate::{igmp::querier, protocols::static_routes::StaticRoute};

/// The resolved settings of a running daemon (flags over the configuration file over the
/// defaults), in the terms a reload compares. The default is a daemon built without them
/// (tests): each downstream's IGMP then runs with the daemon's default settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub upstream: Option<String>,
    pub downstream: Vec<String>,
    pub external: Vec<String>,
    /// The IGMP settings of each downstream.
    pub igmp: BTreeMap<String, querier::Config>,
    pub static_routes: Vec<StaticRoute>,
    pub keep_forwarding: bool,
    /// Settings only a restart applies (paths, the XDP mode, the RPF table, the log level...), by their key
    /// in the configuration file, as text.
    pub fixed: BTreeMap<&'static str, String>,
}

/// A setting whose change waits for the next restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeedsRestart {
    /// Its key in the configuration file.
    pub key: &'static str,
    pub running: String,
    pub configured: String,
}

impl fmt::Display for NeedsRestart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} stays {} until a restart (configured now: {})",
            self.key, self.running, self.configured
        )
    }
}

/// What a reload changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Downstreams to manage and run IGMP on, with their IGMP settings.
    pub downstream_added: Vec<(String, querier::Config)>,
    /// Downstreams to release and detach.
    pub downstream_removed: Vec<String>,
    /// Downstreams kept whose IGMP settings change.
    pub igmp_changed: Vec<(String, querier::Config)>,
    /// Static routes to add and to remove: the running side is what the static-routes module
    /// holds, so a route added at run time and not in the configuration goes.
    pub routes_added: Vec<StaticRoute>,
    pub routes_removed: Vec<StaticRoute>,
    /// Static joins made at run time, dropped (the configuration holds none), in operator words.
    pub joins_removed: Vec<String>,
    /// Changes the daemon refused, and why; the rest applied.
    pub refused: Vec<String>,
    pub keep_forwarding: Option<bool>,
    pub needs_restart: Vec<NeedsRestart>,
}

impl Diff {
    /// Whether the reload changes nothing (nothing to apply, nothing waits for a restart).
    pub fn is_empty(&self) -> bool {
        *self == Diff::default()
    }
}

impl fmt::Display for Diff {
    /// One clause per kind of change, for the log: "downstream added: dn2; ...".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let names = |l: &mut dyn Iterator<Item = &String>| {
            l.map(String::as_str).collect::<Vec<_>>().join(", ")
        };
        if !self.downstream_added.is_empty() {
            let n = names(&mut self.downstream_added.iter().map(|(n, _)| n));
            parts.push(format!("downstream added: {n}"));
        }
        if !self.downstream_removed.is_empty() {
            let n = names(&mut self.downstream_removed.iter());
            parts.push(format!("downstream removed: {n}"));
        }
        if !self.igmp_changed.is_empty() {
            let n = names(&mut self.igmp_changed.iter().map(|(n, _)| n));
            parts.push(format!("IGMP settings changed on {n}"));
        }
        for (verb, routes) in [
            ("added", &self.routes_added),
            ("removed", &self.routes_removed),
        ] {
            for r in routes {
                parts.push(format!("static route {verb}: \"{r}\""));
            }
        }
        for j in &self.joins_removed {
            parts.push(format!("static join removed: {j}"));
        }
        for why in &self.refused {
            parts.push(format!("refused: {why}"));
        }
        if let Some(k) = self.keep_forwarding {
            parts.push(format!("keep-forwarding = {k}"));
        }
        if parts.is_empty() {
            parts.push("nothing changed".to_owned());
        }
        f.write_str(&parts.join("; "))
    }
}

/// What changes from `running` to `read`.
pub fn diff(running: &Settings, read: &Settings) -> Diff {
    let mut d = Diff::default();
    for name in &read.downstream {
        let config = read.igmp.get(name).cloned().unwrap_or_default();
        if !running.downstream.contains(name) {
            d.downstream_added.push((name.clone(), config));
        } else if running.igmp.get(name) != Some(&config) {
            d.igmp_changed.push((name.clone(), config));
        }
    }
    d.downstream_removed = running
        .downstream
        .iter()
        .filter(|n| !read.downstream.contains(n))
        .cloned()
        .collect();
    d.routes_added = read
        .static_routes
        .iter()
        .filter(|r| !running.static_routes.contains(r))
        .cloned()
        .collect();
    d.routes_removed = running
        .static_routes
        .iter()
        .filter(|r| !read.static_routes.contains(r))
        .cloned()
        .collect();
    d.keep_forwarding =
        (running.keep_forwarding != read.keep_forwarding).then_some(read.keep_forwarding);
    // The upstream and external roles belong to protocols registered at start.
    let roles = [
        ("upstream", words(&running.upstream), words(&read.upstream)),
        ("external", words(&running.external), words(&read.external)),
    ];
    for (key, was, now) in roles {
        if was != now {
            d.needs_restart.push(NeedsRestart {
                key,
                running: was,
                configured: now,
            });
        }
    }
    for (key, was) in &running.fixed {
        let now = read.fixed.get(key).cloned().unwrap_or_default();
        if *was != now {
            d.needs_restart.push(NeedsRestart {
                key,
                running: was.clone(),
                configured: now,
            });
        }
    }
    d
}

/// A role's interfaces as the log names them: "none" when there are none.
fn words<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    let all: Vec<&str> = names.into_iter().map(String::as_str).collect();
    if all.is_empty() {
        "none".to_owned()
    } else {
        all.join(", ")
    }
}

/// Reads the settings again (the configuration file, with the command line's flags over it).
pub type Reader = Box<dyn Fn() -> anyhow::Result<Settings> + Send>;

/// One request to reload, answered with what changed or why nothing did.
#[derive(Debug)]
pub struct ReloadRequest {
    /// Where the outcome goes; `None` for SIGHUP, whose outcome is only logged.
    pub reply: Option<tokio::sync::oneshot::Sender<Result<Diff, String>>>,
}

/// Where reload requests reach the daemon ([`crate::daemon::Options::reload`]).
pub type ReloadSender = tokio::sync::mpsc::UnboundedSender<ReloadRequest>;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings() -> Settings {
        Settings {
            upstream: Some("up0".into()),
            downstream: vec!["dn1".into(), "dn2".into()],
            external: Vec::new(),
            igmp: [
                ("dn1".to_owned(), querier::Config::default()),
                ("dn2".to_owned(), querier::Config::default()),
            ]
            .into(),
            static_routes: vec!["from up0 group 239.1.1.1 to dn1".parse().unwrap()],
            keep_forwarding: false,
            fixed: [
                ("pin-dir", "/sys/fs/bpf/mgm".to_owned()),
                ("socket", "/run/mgm/mgm.sock".to_owned()),
            ]
            .into(),
        }
    }

    #[test]
    fn the_same_settings_change_nothing() {
        let d = diff(&settings(), &settings());
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(d.to_string(), "nothing changed");
    }

    #[test]
    fn downstreams_added_and_removed_carry_their_igmp_settings() {
        let mut read = settings();
        read.downstream = vec!["dn2".into(), "dn3".into()];
        let fast = querier::Config {
            fast_leave: true,
            ..querier::Config::default()
        };
        read.igmp.remove("dn1");
        read.igmp.insert("dn3".into(), fast.clone());
        let d = diff(&settings(), &read);
        assert_eq!(d.downstream_added, [("dn3".to_owned(), fast)]);
        assert_eq!(d.downstream_removed, ["dn1"]);
        assert!(
            d.igmp_changed.is_empty() && d.needs_restart.is_empty(),
            "{d:?}"
        );
        assert_eq!(
            d.to_string(),
            "downstream added: dn3; downstream removed: dn1"
        );
    }

    #[test]
    fn changed_igmp_settings_name_only_the_interfaces_they_change() {
        let mut read = settings();
        let short = querier::Config {
            query_interval: Duration::from_secs(30),
            ..querier::Config::default()
        };
        read.igmp.insert("dn2".into(), short.clone());
        let d = diff(&settings(), &read);
        assert_eq!(d.igmp_changed, [("dn2".to_owned(), short)]);
        assert!(d.downstream_added.is_empty() && d.downstream_removed.is_empty());
    }

    #[test]
    fn static_routes_are_compared_route_by_route() {
        let mut read = settings();
        let new: StaticRoute = "from up0 source 198.18.0.2 group 232.1.1.1 to dn2"
            .parse()
            .unwrap();
        read.static_routes = vec![new.clone()];
        let d = diff(&settings(), &read);
        assert_eq!(d.routes_added, [new]);
        assert_eq!(d.routes_removed, settings().static_routes);
        assert!(d
            .to_string()
            .contains("static route added: \"from up0 source 198.18.0.2 group 232.1.1.1 to dn2\""));
    }

    #[test]
    fn fixed_settings_and_roles_need_a_restart_and_say_both_values() {
        let mut read = settings();
        read.fixed.insert("pin-dir", "/sys/fs/bpf/other".into());
        read.upstream = None;
        read.external = vec!["eth9".into()];
        let d = diff(&settings(), &read);
        let said: Vec<String> = d.needs_restart.iter().map(ToString::to_string).collect();
        assert_eq!(
            said,
            [
                "upstream stays up0 until a restart (configured now: none)",
                "external stays none until a restart (configured now: eth9)",
                "pin-dir stays /sys/fs/bpf/mgm until a restart (configured now: /sys/fs/bpf/other)",
            ]
        );
        assert!(d.downstream_added.is_empty() && d.igmp_changed.is_empty());
    }
}
