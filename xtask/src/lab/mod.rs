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
pub use daemon::Daemon;
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
}

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
