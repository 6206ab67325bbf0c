//! The lab: a sender host, a router and receiver hosts, each in its own network namespace,
//! joined by veth pairs. Addresses come from 198.18.0.0/15 (RFC 2544's benchmarking range) and
//! exist only inside these namespaces.
//!
//! ```text
//!  sender eth0 ── up0 router dn1 ── eth0 r1
//!  198.18.0.2     198.18.0.1 │ dn2 ── eth0 r2     (198.18.N.1 ── 198.18.N.2)
//!                            └ dn3 ── eth0 r3
//! ```

pub mod daemon;
pub mod netns;
pub mod stream;
pub mod traffic;

use std::net::Ipv4Addr;

use anyhow::Context;
pub use daemon::{mgm_bin, Daemon, FAST_IGMP};
pub use netns::{unique_tag, Netns};

/// Router's interface towards the sender.
pub const UPSTREAM: &str = "up0";
/// Every host's interface.
pub const HOST_IF: &str = "eth0";
pub const SENDER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// Router interface towards receiver `i` (0-based).
pub fn downstream(i: usize) -> String {
    format!("dn{}", i + 1)
}

/// Address of receiver `i` (0-based).
pub fn receiver_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, i as u8 + 1, 2)
}

/// IGMP version a receiver host speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgmpVersion {
    V2,
    V3,
}

impl IgmpVersion {
    /// The value of `net.ipv4.conf.IF.force_igmp_version`.
    fn sysctl_value(self) -> &'static str {
        match self {
            IgmpVersion::V2 => "2",
            IgmpVersion::V3 => "3",
        }
    }
}

/// The namespaces of one lab. Dropping it deletes them all, and with them every veth.
pub struct Lab {
    pub tag: String,
    pub sender: Netns,
    pub router: Netns,
    pub receivers: Vec<Netns>,
    /// Hosts that share the router's [`LAN_IF`] through a bridge (see [`Lab::add_lan`]).
    pub lan_hosts: Vec<Netns>,
    /// The bridge's namespace, when there is a LAN.
    pub switch: Option<Netns>,
    /// The source host behind the upstream switch (see [`Lab::add_upstream_switch`]).
    pub upstream_source: Option<Netns>,
}

/// The upstream switch's port towards the router: the sender host's veth, now a bridge port.
pub const SWITCH_ROUTER_PORT: &str = HOST_IF;
/// Address of the source host behind the upstream switch, on the router's upstream subnet.
pub const SWITCHED_SOURCE_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
/// The upstream switch's own address, which its querier sends from.
pub const SWITCH_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
/// The upstream switch's query interval.
pub const SWITCH_QUERY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// How long the upstream switch keeps a port in a group without a report: four query
/// intervals, so a router that stops answering loses the group within seconds.
pub const SWITCH_MEMBERSHIP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(4);

/// Router interface towards the shared LAN of [`Lab::add_lan`].
pub const LAN_IF: &str = "lan1";

/// Address of host `k` (0-based) on the shared LAN.
pub fn lan_host_addr(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 100, k as u8 + 2)
}

/// Removes namespaces and pins left by test processes that were killed before their guards
/// ran (names carry the creating pid: `mgm-t<pid>x<n>-…`). Namespaces of live processes and
/// of `cargo xtask lab up` are left alone.
pub fn sweep_stale() -> anyhow::Result<()> {
    let dead = |name: &str| -> bool {
        name.strip_prefix("mgm-t")
            .and_then(|rest| rest.split('x').next())
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    };
    for dir in ["/run/netns", "/sys/fs/bpf"] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let tag = name.strip_prefix("mgm-").map(|t| format!("mgm-{t}"));
            if tag.as_deref().is_some_and(dead) {
                eprintln!("removing {dir}/{name}, left by a killed test run");
                if dir == "/run/netns" {
                    drop(Netns::adopt(&name));
                } else {
                    std::fs::remove_dir_all(e.path())
                        .with_context(|| format!("remove {}", e.path().display()))?;
                }
            }
        }
    }
    Ok(())
}

/// Namespace names of the lab tagged `tag`.
fn names(tag: &str, receivers: usize) -> (String, String, Vec<String>) {
    (
        format!("mgm-{tag}-snd"),
        format!("mgm-{tag}-rtr"),
        (0..receivers)
            .map(|i| format!("mgm-{tag}-r{}", i + 1))
            .collect(),
    )
}

impl Lab {
    /// Builds the topology with one receiver per entry of `versions`.
    ///
    /// # Errors
    /// Any namespace, link or address could not be made; what was made is removed again.
    pub fn up(tag: &str, versions: &[IgmpVersion]) -> anyhow::Result<Lab> {
        let (snd, rtr, rcv) = names(tag, versions.len());
        let sender = Netns::create(&snd)?;
        let router = Netns::create(&rtr)?;
        let mut receivers = Vec::new();
        for name in &rcv {
            receivers.push(Netns::create(name)?);
        }
        let lab = Lab {
            tag: tag.to_owned(),
            sender,
            router,
            receivers,
            lan_hosts: Vec::new(),
            switch: None,
            upstream_source: None,
        };
        lab.wire(
            &lab.sender,
            UPSTREAM,
            Ipv4Addr::new(198, 18, 0, 1),
            SENDER_ADDR,
        )
        .context("wiring the sender")?;
        lab.sender.disable_tx_checksum(HOST_IF)?;
        for (i, version) in versions.iter().enumerate() {
            let host = &lab.receivers[i];
            lab.wire(
                host,
                &downstream(i),
                Ipv4Addr::new(198, 18, i as u8 + 1, 1),
                receiver_addr(i),
            )
            .with_context(|| format!("wiring receiver {}", i + 1))?;
            host.enable_gro(HOST_IF)?;
            host.sysctl(
                &format!("net.ipv4.conf.{HOST_IF}.force_igmp_version"),
                version.sysctl_value(),
            )?;
        }
        Ok(lab)
    }

    /// Removes the namespaces of a lab left up by `cargo xtask lab up`; returns how many
    /// existed.
    pub fn down(tag: &str, receivers: usize) -> usize {
        let (snd, rtr, rcv) = names(tag, receivers);
        let existing: Vec<String> = [snd, rtr]
            .into_iter()
            .chain(rcv)
            .filter(|n| std::path::Path::new("/run/netns").join(n).exists())
            .collect();
        existing.iter().for_each(|n| drop(Netns::adopt(n)));
        existing.len()
    }

    /// The router's downstream interface names.
    pub fn downstreams(&self) -> Vec<String> {
        let mut names: Vec<String> = (0..self.receivers.len()).map(downstream).collect();
        if self.switch.is_some() {
            names.push(LAN_IF.to_owned());
        }
        names
    }

    /// Adds a LAN behind the router's [`LAN_IF`] (198.18.100.1/24): a bridge (IGMP snooping
    /// off, so it floods like a plain switch) with one host per entry of `versions`, at
    /// [`lan_host_addr`]. Hosts on a LAN hear each other, as on a real segment.
    ///
    /// # Errors
    /// A namespace, link or address could not be made; what was made goes with the lab.
    pub fn add_lan(&mut self, versions: &[IgmpVersion]) -> anyhow::Result<()> {
        let sw = Netns::create(&format!("mgm-{}-sw", self.tag))?;
        sw.ip(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        sw.ip(&["link", "set", "br0", "up"])?;
        let router_addr = Ipv4Addr::new(198, 18, 100, 1);
        veth(&sw, "p0", &self.router, LAN_IF)?;
        self.router
            .ip(&["addr", "add", &format!("{router_addr}/24"), "dev", LAN_IF])?;
        // The router's XDP redirects into this veth: its far end needs GRO, set before the
        // port joins the bridge.
        sw.enable_gro("p0")?;
        self.router.ip(&["link", "set", LAN_IF, "up"])?;
        sw.ip(&["link", "set", "p0", "master", "br0", "up"])?;
        self.switch = Some(sw);
        for (k, version) in versions.iter().enumerate() {
            let host = Netns::create(&format!("mgm-{}-lan{}", self.tag, k + 1))?;
            let port = format!("p{}", k + 1);
            let sw = self.switch.as_ref().expect("just set");
            veth(&host, HOST_IF, sw, &port)?;
            sw.ip(&["link", "set", &port, "master", "br0", "up"])?;
            configure_host(&host, lan_host_addr(k), router_addr)?;
            host.sysctl(
                &format!("net.ipv4.conf.{HOST_IF}.force_igmp_version"),
                version.sysctl_value(),
            )?;
            self.lan_hosts.push(host);
        }
        Ok(())
    }

    /// Turns the sender host into an IGMP-snooping switch upstream of the router
    /// ([`snooping_switch`], IGMPv3, forgetting the router [`SWITCH_MEMBERSHIP_INTERVAL`]
    /// after its last report; [`switch_port_to_router`] on its port towards the router), so
    /// the router gets a group only while it reports it. A new source host sits behind the
    /// switch at [`SWITCHED_SOURCE_ADDR`], on the router's upstream subnet.
    ///
    /// # Errors
    /// A namespace, link or address could not be made; what was made goes with the lab.
    pub fn add_upstream_switch(&mut self) -> anyhow::Result<()> {
        let sw = &self.sender;
        sw.ip(&["addr", "flush", "dev", HOST_IF])?;
        snooping_switch(sw, IgmpVersion::V3, SWITCH_MEMBERSHIP_INTERVAL)?;
        switch_port_to_router(sw, SWITCH_ROUTER_PORT)?;
        let src = Netns::create(&format!("mgm-{}-src", self.tag))?;
        veth(&src, HOST_IF, sw, "p1")?;
        sw.ip(&["link", "set", "p1", "master", "br0", "up"])?;
        configure_host(&src, SWITCHED_SOURCE_ADDR, Ipv4Addr::new(198, 18, 0, 1))?;
        src.disable_tx_checksum(HOST_IF)?;
        self.upstream_source = Some(src);
        Ok(())
    }

    /// Whether the upstream switch holds `group` on its port towards the router (its mdb).
    ///
    /// # Errors
    /// `bridge mdb` failed or printed something that is not its JSON.
    pub fn switch_forwards_to_router(&self, group: Ipv4Addr) -> anyhow::Result<bool> {
        let out = self.sender.bridge(&["-j", "mdb", "show", "dev", "br0"])?;
        let mdb: serde_json::Value =
            serde_json::from_str(&out).with_context(|| format!("bridge mdb: {out}"))?;
        let group = group.to_string();
        Ok(mdb
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["mdb"].as_array())
            .flatten()
            .any(|e| e["grp"] == group.as_str() && e["port"] == SWITCH_ROUTER_PORT))
    }

    /// Creates the router's link to the upstream switch again after a test deleted it (`ip
    /// link del up0` in the router, which takes the switch's port with it), as
    /// [`Lab::add_upstream_switch`] made it: the address before the link goes up, as a
    /// re-dialled PPP or VPN link comes.
    ///
    /// # Errors
    /// A link, address or setting could not be made.
    pub fn rewire_upstream_switch(&self) -> anyhow::Result<()> {
        veth(&self.sender, HOST_IF, &self.router, UPSTREAM)?;
        switch_port_to_router(&self.sender, SWITCH_ROUTER_PORT)?;
        self.router
            .ip(&["addr", "add", "198.18.0.1/24", "dev", UPSTREAM])?;
        self.router.ip(&["link", "set", UPSTREAM, "up"])
    }

    /// Creates receiver `i`'s link again after a test deleted it (`ip link del dn<i+1>` in the
    /// router), as [`Lab::up`] made it. The router's end is created as `created_as` and, if
    /// that is not its downstream name, renamed to it before it gets its address, as udev
    /// names interfaces.
    ///
    /// # Errors
    /// A link, address or setting could not be made.
    pub fn rewire_downstream(
        &self,
        i: usize,
        created_as: &str,
        version: IgmpVersion,
    ) -> anyhow::Result<()> {
        let host = &self.receivers[i];
        let name = downstream(i);
        let router_addr = Ipv4Addr::new(198, 18, i as u8 + 1, 1);
        veth(host, HOST_IF, &self.router, created_as)?;
        if created_as != name {
            self.router
                .ip(&["link", "set", created_as, "name", &name])?;
        }
        host.sysctl(
            &format!("net.ipv4.conf.{HOST_IF}.force_igmp_version"),
            version.sysctl_value(),
        )?;
        host.enable_gro(HOST_IF)?;
        self.router
            .ip(&["addr", "add", &format!("{router_addr}/24"), "dev", &name])?;
        self.router.ip(&["link", "set", &name, "up"])?;
        configure_host(host, receiver_addr(i), router_addr)
    }

    /// A veth from the router (`router_if`, `router_addr`) to `host` (`eth0`, `host_addr`),
    /// with the host's default route through the router.
    fn wire(
        &self,
        host: &Netns,
        router_if: &str,
        router_addr: Ipv4Addr,
        host_addr: Ipv4Addr,
    ) -> anyhow::Result<()> {
        veth(host, HOST_IF, &self.router, router_if)?;
        self.router.ip(&[
            "addr",
            "add",
            &format!("{router_addr}/24"),
            "dev",
            router_if,
        ])?;
        self.router.ip(&["link", "set", router_if, "up"])?;
        configure_host(host, host_addr, router_addr)
    }
}

/// Makes `br0` in `sw` the kernel bridge as an IGMP-snooping switch, as network engineers
/// deploy it: snooping and its own querier on (IGMP `version`, from [`SWITCH_ADDR`], every
/// [`SWITCH_QUERY_INTERVAL`]), forgetting a port that did not report for `membership`.
///
/// # Errors
/// `ip` failed.
pub fn snooping_switch(
    sw: &Netns,
    version: IgmpVersion,
    membership: std::time::Duration,
) -> anyhow::Result<()> {
    // The bridge takes its timers in centiseconds.
    let cs = |d: std::time::Duration| (d.as_millis() / 10).to_string();
    sw.ip(&[
        "link",
        "add",
        "br0",
        "type",
        "bridge",
        "mcast_snooping",
        "1",
        "mcast_igmp_version",
        version.sysctl_value(),
        "mcast_query_use_ifaddr",
        "1",
        "mcast_query_interval",
        &cs(SWITCH_QUERY_INTERVAL),
        "mcast_query_response_interval",
        &cs(SWITCH_QUERY_INTERVAL / 2),
        "mcast_startup_query_interval",
        &cs(SWITCH_QUERY_INTERVAL / 4),
        "mcast_membership_interval",
        &cs(membership),
    ])?;
    // The querier only once its timers are set: turning it on holds snooped forwarding back
    // for one query response interval, which would be the default 10 s if it came in the same
    // command.
    sw.ip(&["link", "set", "br0", "type", "bridge", "mcast_querier", "1"])?;
    sw.ip(&["addr", "add", &format!("{SWITCH_ADDR}/24"), "dev", "br0"])?;
    sw.ip(&["link", "set", "br0", "up"])
}

/// Puts `port` of [`snooping_switch`]'s bridge towards a multicast router that gets a group
/// only while it reports it: fast leave, no flooding of unregistered groups, and never a
/// router port.
///
/// # Errors
/// `ip` or `bridge` failed.
pub fn switch_port_to_router(sw: &Netns, port: &str) -> anyhow::Result<()> {
    sw.ip(&["link", "set", port, "master", "br0", "up"])?;
    sw.bridge(&[
        "link",
        "set",
        "dev",
        port,
        "fastleave",
        "on",
        "mcast_flood",
        "off",
        "mcast_router",
        "0",
    ])?;
    Ok(())
}

/// A veth pair with `a_if` in `a` and `b_if` in `b`, created directly inside them.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> anyhow::Result<()> {
    crate::run(std::process::Command::new("ip").args([
        "link",
        "add",
        a_if,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]))
}

/// Gives a host's `eth0` its address, brings it up, routes everything through `gateway` and
/// turns reverse-path filtering off (lab multicast arrives from off-link sources).
fn configure_host(host: &Netns, addr: Ipv4Addr, gateway: Ipv4Addr) -> anyhow::Result<()> {
    host.ip(&["addr", "add", &format!("{addr}/24"), "dev", HOST_IF])?;
    host.ip(&["link", "set", HOST_IF, "up"])?;
    host.ip(&["route", "add", "default", "via", &gateway.to_string()])?;
    host.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
    host.sysctl(&format!("net.ipv4.conf.{HOST_IF}.rp_filter"), "0")
}
