//! The forwarders under test, each started on the router's interfaces and stopped again by
//! dropping its guard, so only one ever holds them: mgm (the real daemon with static routes),
//! the kernel's ipmr (configured by smcroute, a real daemon) where the kernel has it, the
//! kernel's bridge with IGMP snooping, a TC program that replicates with
//! `bpf_clone_redirect`, and two XDP programs from the bench object that bound what any XDP
//! forwarder can do on this harness.

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use aya::{
    maps::{xdp::DevMapHash, Array, HashMap, MapData},
    programs::{loaded_programs, ProgramFd, SchedClassifier, TcAttachType, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use mgm_common::bench as b;

use crate::lab::{Daemon, Lab, Netns, UPSTREAM};

/// One forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Forwarder {
    /// `mgm run` with one static (S,G) route: its XDP ingress and egress programs.
    Mgm,
    /// The kernel's ipmr with smcroute's static `mroute`.
    Kernel,
    /// The kernel's bridge with IGMP snooping and a static mdb entry per outgoing port: the
    /// stack's skb replication, at L2 (no TTL or MAC rewrite).
    Bridge,
    /// `bench_tc_clone` at TC ingress: one `bpf_clone_redirect` per outgoing interface, each
    /// copy with its interface's MAC as source and the TTL decremented.
    Tc,
    /// `bench_raw_redirect`: broadcast into a devmap of the outgoing interfaces, parsing
    /// nothing and rewriting nothing.
    Raw,
    /// The same with `bench_set_mac` as the devmap's egress program: each copy gets its
    /// outgoing interface's MAC as source, the least per-copy work a router must do.
    RawMac,
    /// `bench_drop`: the harness's ceiling; forwards nothing.
    Drop,
}

impl Forwarder {
    pub fn name(self) -> &'static str {
        match self {
            Forwarder::Mgm => "mgm",
            Forwarder::Kernel => "kernel",
            Forwarder::Bridge => "bridge",
            Forwarder::Tc => "tc_clone_redirect",
            Forwarder::Raw => "raw_redirect",
            Forwarder::RawMac => "raw_redirect_mac",
            Forwarder::Drop => "xdp_drop",
        }
    }

    /// The name in table headings.
    pub fn short(self) -> &'static str {
        match self {
            Forwarder::Mgm => "mgm",
            Forwarder::Kernel => "kernel",
            Forwarder::Bridge => "bridge",
            Forwarder::Tc => "tc",
            Forwarder::Raw => "raw",
            Forwarder::RawMac => "raw+mac",
            Forwarder::Drop => "drop",
        }
    }
}

/// One flow: (source, group) to the first `fanout` downstream interfaces.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    pub source: Ipv4Addr,
    pub group: Ipv4Addr,
    pub fanout: usize,
}

impl Flow {
    fn oifs(&self) -> Vec<String> {
        (0..self.fanout).map(crate::lab::downstream).collect()
    }

    /// The route in smcroute's words, which `mgm run --static-route` takes too.
    pub fn route(&self) -> String {
        format!(
            "from {UPSTREAM} source {} group {} to {}",
            self.source,
            self.group,
            self.oifs().join(" ")
        )
    }
}

/// A started forwarder; dropping it stops it and frees the router's interfaces.
#[expect(dead_code, reason = "held for its Drop, which stops the forwarder")]
pub enum Running {
    Mgm(Daemon),
    Kernel(Smcroute),
    Bridge(Bridge),
    Bpf(Ebpf),
}

/// What starting a forwarder needs besides the flow.
pub struct Harness<'a> {
    pub lab: &'a Lab,
    pub mgm: &'a Path,
    pub bench_object: &'a Path,
    /// For smcroute's configuration, socket and log.
    pub scratch: &'a Path,
    /// mgm's pin directory (unique to this run).
    pub pin_dir: PathBuf,
}

impl Harness<'_> {
    /// Starts `fw` forwarding `flow`; `mgm_args` go to `mgm run` (the scale run's settings).
    ///
    /// # Errors
    /// The forwarder did not start or did not become ready.
    pub fn start(&self, fw: Forwarder, flow: &Flow, mgm_args: &[&str]) -> anyhow::Result<Running> {
        self.start_on(fw, flow, mgm_args, UPSTREAM)
    }

    /// [`Harness::start`] with the bridge's or the TC program's ingress on `ingress` instead
    /// of the upstream interface (the feed by turns gives each stack forwarder its own).
    ///
    /// # Errors
    /// The forwarder did not start or did not become ready.
    pub fn start_on(
        &self,
        fw: Forwarder,
        flow: &Flow,
        mgm_args: &[&str],
        ingress: &str,
    ) -> anyhow::Result<Running> {
        match fw {
            Forwarder::Mgm => {
                let route = flow.route();
                let mut args = vec!["--xdp-mode", "native", "--static-route", &route];
                args.extend_from_slice(mgm_args);
                Ok(Running::Mgm(Daemon::start(
                    self.mgm,
                    self.lab,
                    &self.pin_dir,
                    &args,
                    false,
                )?))
            }
            Forwarder::Kernel => Ok(Running::Kernel(Smcroute::start(
                self.lab,
                self.scratch,
                flow,
            )?)),
            Forwarder::Bridge => Ok(Running::Bridge(Bridge::start(self.lab, ingress, flow)?)),
            Forwarder::Tc => self.load_tc(flow, ingress).map(Running::Bpf),
            Forwarder::Raw | Forwarder::RawMac | Forwarder::Drop => self
                .load_xdp(fw, flow, true)
                .map(|(ebpf, _)| Running::Bpf(ebpf)),
        }
    }

    /// Loads the XDP forwarder `fw` for `flow` ready to run but attached nowhere, for a
    /// feeder to hand frames to: the object (which holds its maps) and the program.
    ///
    /// # Errors
    /// `fw` is not one of the bench object's forwarders, or it did not load.
    pub fn load_unattached(&self, fw: Forwarder, flow: &Flow) -> anyhow::Result<(Ebpf, ProgramFd)> {
        anyhow::ensure!(
            matches!(fw, Forwarder::Raw | Forwarder::RawMac),
            "{} is not an XDP program of the bench object",
            fw.name()
        );
        self.load_xdp(fw, flow, false)
    }

    /// Loads `fw` with its devmap filled and, if `attach`, attaches it to the router's
    /// upstream interface.
    fn load_xdp(
        &self,
        fw: Forwarder,
        flow: &Flow,
        attach: bool,
    ) -> anyhow::Result<(Ebpf, ProgramFd)> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(b::OIFS, flow.fanout as u32)
            .load_file(self.bench_object)
            .with_context(|| format!("cannot load {}", self.bench_object.display()))?;
        let name = if fw == Forwarder::Drop {
            "bench_drop"
        } else {
            "bench_raw_redirect"
        };
        let oifs = flow.oifs();
        let macs = match fw {
            Forwarder::RawMac => oifs
                .iter()
                .map(|oif| mac_of(&self.lab.router, oif))
                .collect::<anyhow::Result<Vec<_>>>()?,
            _ => Vec::new(),
        };
        // Devmap entries and the attach resolve ifindexes in the calling thread's namespace.
        let fd = self.lab.router.run(|| -> anyhow::Result<ProgramFd> {
            let egress = match fw {
                Forwarder::RawMac => Some(set_mac_program(&mut ebpf, &oifs, &macs)?),
                _ => None,
            };
            if fw != Forwarder::Drop {
                let mut map: DevMapHash<&mut MapData> =
                    DevMapHash::try_from(ebpf.map_mut(b::OIFS).context("no BENCH_OIFS map")?)?;
                for oif in &oifs {
                    let ifindex = ifindex(oif)?;
                    map.insert(ifindex, ifindex, egress.as_ref(), 0)
                        .with_context(|| format!("cannot add {oif} to BENCH_OIFS"))?;
                }
            }
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("no {name} in the bench object"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("the verifier rejected {name}"))?;
            if attach {
                prog.attach(UPSTREAM, XdpMode::Driver)
                    .with_context(|| format!("cannot attach {name} to {UPSTREAM}"))?;
            }
            Ok(prog.fd()?.try_clone()?)
        })??;
        Ok((ebpf, fd))
    }
}

impl Harness<'_> {
    /// Loads `bench_tc_clone` with `flow`'s group and attaches it at TC ingress of `ingress`
    /// (tcx on kernels from 6.6, as aya picks). Dropping the object detaches it.
    fn load_tc(&self, flow: &Flow, ingress: &str) -> anyhow::Result<Ebpf> {
        anyhow::ensure!(
            flow.fanout <= b::TC_MAX_OIFS,
            "bench_tc_clone takes at most {} interfaces",
            b::TC_MAX_OIFS
        );
        let mut ebpf = EbpfLoader::new()
            .load_file(self.bench_object)
            .with_context(|| format!("cannot load {}", self.bench_object.display()))?;
        let oifs = flow.oifs();
        let macs = oifs
            .iter()
            .map(|oif| mac_of(&self.lab.router, oif))
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Ifindexes and the attach resolve in the calling thread's namespace.
        self.lab.router.run(|| -> anyhow::Result<()> {
            let mut entry = b::TcGroup::default();
            for ((slot, oif), mac) in entry.oifs.iter_mut().zip(&oifs).zip(&macs) {
                *slot = b::TcOif {
                    ifindex: ifindex(oif)?,
                    mac: *mac,
                    _pad: [0; 2],
                };
            }
            let mut groups: HashMap<&mut MapData, u32, b::TcGroup> = HashMap::try_from(
                ebpf.map_mut(b::TC_GROUPS)
                    .context("no BENCH_TC_GROUPS map")?,
            )?;
            groups
                .insert(u32::from_ne_bytes(flow.group.octets()), entry, 0)
                .context("cannot add the group to BENCH_TC_GROUPS")?;
            let prog: &mut SchedClassifier = ebpf
                .program_mut("bench_tc_clone")
                .context("no bench_tc_clone in the bench object")?
                .try_into()?;
            prog.load()
                .context("the verifier rejected bench_tc_clone")?;
            prog.attach(ingress, TcAttachType::Ingress)
                .with_context(|| format!("cannot attach bench_tc_clone to {ingress}"))?;
            Ok(())
        })??;
        Ok(ebpf)
    }
}

/// Loads `bench_set_mac` and gives it each of `oifs`' MAC (`macs`, same order); returns the
/// program for the devmap entries. Runs in the router's namespace (ifindexes).
fn set_mac_program(
    ebpf: &mut Ebpf,
    oifs: &[String],
    macs: &[[u8; 6]],
) -> anyhow::Result<ProgramFd> {
    let prog: &mut Xdp = ebpf
        .program_mut("bench_set_mac")
        .context("no bench_set_mac in the bench object")?
        .try_into()?;
    prog.load().context("the verifier rejected bench_set_mac")?;
    let fd = prog.fd()?.try_clone()?;
    let mut map: Array<&mut MapData, [u8; 8]> =
        Array::try_from(ebpf.map_mut(b::MACS).context("no BENCH_MACS map")?)?;
    for (oif, mac) in oifs.iter().zip(macs) {
        let mut value = [0u8; 8];
        value[..6].copy_from_slice(mac);
        map.set(ifindex(oif)?, value, 0)
            .with_context(|| format!("cannot add {oif} to BENCH_MACS"))?;
    }
    Ok(fd)
}

/// The ifindex of `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> anyhow::Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: `c` is NUL-terminated.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => bail!("no interface {name}"),
        i => Ok(i),
    }
}

/// `ifname` in `ns` as `ip -j link show` describes it.
fn link(ns: &Netns, ifname: &str) -> anyhow::Result<serde_json::Value> {
    let out = ns.ip_output(&["-j", "link", "show", ifname])?;
    let v: serde_json::Value =
        serde_json::from_str(&out).context("ip -j link printed invalid JSON")?;
    Ok(v[0].clone())
}

/// The MAC address of `ifname` in `ns`.
///
/// # Errors
/// `ip` fails or prints no address.
pub fn mac_of(ns: &Netns, ifname: &str) -> anyhow::Result<[u8; 6]> {
    let link = link(ns, ifname)?;
    let text = link["address"]
        .as_str()
        .context("no address in ip -j link")?;
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for m in &mut mac {
        let part = parts.next().with_context(|| format!("bad MAC {text}"))?;
        *m = u8::from_str_radix(part, 16).with_context(|| format!("bad MAC {text}"))?;
    }
    Ok(mac)
}

/// The XDP program attached to `ifname` in `ns`, if any, by its id in `ip -j link`.
///
/// # Errors
/// `ip` fails, or the program it names is gone.
pub fn attached_xdp(ns: &Netns, ifname: &str) -> anyhow::Result<Option<ProgramFd>> {
    let Some(id) = link(ns, ifname)?["xdp"]["prog"]["id"].as_u64() else {
        return Ok(None);
    };
    let info = loaded_programs()
        .filter_map(Result::ok)
        .find(|p| u64::from(p.id()) == id)
        .with_context(|| format!("program {id} on {ifname} is not loaded"))?;
    Ok(Some(info.fd()?))
}

/// `smcrouted` in the router's namespace, in the foreground, with one `mroute` line. It turns
/// `mc_forwarding` on when it opens the kernel's multicast routing socket; when it exits the
/// kernel removes its routes and interfaces again.
pub struct Smcroute {
    child: Child,
}

/// `smcrouted` as Debian installs it.
pub const SMCROUTED: &str = "/usr/sbin/smcrouted";

impl Smcroute {
    /// Starts smcrouted for `flow` and waits until the kernel shows the route.
    ///
    /// # Errors
    /// It did not start, or the route did not appear within 10 s (the error holds its log).
    pub fn start(lab: &Lab, scratch: &Path, flow: &Flow) -> anyhow::Result<Smcroute> {
        let conf = scratch.join("smcroute.conf");
        let log = scratch.join("smcroute.log");
        fs::write(&conf, format!("mroute {}\n", flow.route()))
            .with_context(|| format!("write {}", conf.display()))?;
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                lab.router.name(),
                SMCROUTED,
                "-n",
                "-l",
                "info",
            ])
            .arg("-f")
            .arg(&conf)
            .arg("-u")
            .arg(scratch.join("smcroute.sock"))
            .arg("-P")
            .arg(scratch.join("smcroute.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).with_context(|| format!("create {}", log.display()))?)
            .spawn()
            .with_context(|| format!("cannot start {SMCROUTED}"))?;
        let mut smc = Smcroute { child };
        let needle = format!("({},{})", flow.source, flow.group);
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let routes = lab.router.ip_output(&["mroute", "show"])?;
            if routes.contains(&needle) {
                return Ok(smc);
            }
            if let Some(status) = smc.child.try_wait()? {
                bail!(
                    "smcrouted exited ({status}):\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if Instant::now() > end {
                bail!(
                    "smcrouted did not install {needle} within 10 s:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Smcroute {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling our own child (`ip netns exec` execs smcrouted) by pid.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bridge's name in the router's namespace; one bridge at a time.
const BRIDGE: &str = "mgmbench0";

/// The kernel's bridge as the forwarder: `ingress` and every downstream interface of the lab
/// as ports, IGMP snooping on, and a permanent mdb entry for the flow's group on each of the
/// flow's ports, so it forwards to those ports and no others. Static entries rather than the
/// receivers' joins: mgm (in place on the same ports during the feed by turns) would snoop the
/// joins too, and learned entries would tie the runs to the querier's timers; the other
/// forwarders also run from static configuration. The bridge's own querier is on because a
/// snooping bridge that knows of no querier floods every group to every port; and since the
/// kernel also floods for one query response interval after the querier is turned on (to hear
/// the hosts' answers first), that interval is made short and waited out. Deleting the bridge
/// (on drop) frees its ports.
pub struct Bridge {
    router: String,
}

impl Bridge {
    /// Builds the bridge for `flow` with `ingress` as the port the stream arrives on, and
    /// waits until every port forwards and the kernel shows each entry.
    ///
    /// # Errors
    /// A command failed, or the bridge was not ready within 5 s.
    pub fn start(lab: &Lab, ingress: &str, flow: &Flow) -> anyhow::Result<Bridge> {
        // In centiseconds, as `ip` takes it.
        const RESPONSE_INTERVAL_CS: u64 = 10;
        let router = &lab.router;
        router.ip(&[
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
            "mcast_snooping",
            "1",
            "mcast_query_response_interval",
            &RESPONSE_INTERVAL_CS.to_string(),
        ])?;
        let bridge = Bridge {
            router: router.name().to_owned(),
        };
        // After the interval is set: turning the querier on starts the flooding interval.
        router.ip(&[
            "link",
            "set",
            BRIDGE,
            "type",
            "bridge",
            "mcast_querier",
            "1",
        ])?;
        let trusted = Instant::now() + Duration::from_millis(2 * 10 * RESPONSE_INTERVAL_CS);
        let mut ports = vec![ingress.to_owned()];
        ports.extend(lab.downstreams());
        for port in &ports {
            router.ip(&["link", "set", "dev", port, "master", BRIDGE])?;
        }
        router.ip(&["link", "set", "dev", BRIDGE, "up"])?;
        let group = flow.group.to_string();
        let oifs = flow.oifs();
        for oif in &oifs {
            bridge.command(&[
                "mdb",
                "add",
                "dev",
                BRIDGE,
                "port",
                oif,
                "grp",
                &group,
                "permanent",
            ])?;
        }
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let links: serde_json::Value =
                serde_json::from_str(&bridge.output(&["-j", "link", "show"])?)
                    .context("bridge -j link printed invalid JSON")?;
            let forwarding = |port: &String| {
                links.as_array().into_iter().flatten().any(|l| {
                    l["ifname"] == port.as_str()
                        && l["master"] == BRIDGE
                        && l["state"] == "forwarding"
                })
            };
            let mdb: serde_json::Value =
                serde_json::from_str(&bridge.output(&["-j", "mdb", "show", "dev", BRIDGE])?)
                    .context("bridge -j mdb printed invalid JSON")?;
            let entries: Vec<&serde_json::Value> = mdb
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|m| m["mdb"].as_array().into_iter().flatten())
                .collect();
            let has_entry = |oif: &String| {
                entries
                    .iter()
                    .any(|e| e["port"] == oif.as_str() && e["grp"] == group.as_str())
            };
            if ports.iter().all(forwarding)
                && oifs.iter().all(has_entry)
                && Instant::now() > trusted
            {
                return Ok(bridge);
            }
            if Instant::now() > end {
                bail!("the bridge was not ready within 5 s:\n{links:#}\n{mdb:#}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `bridge -n <router> ARGS`.
    fn command(&self, args: &[&str]) -> anyhow::Result<()> {
        crate::run(
            Command::new("bridge")
                .arg("-n")
                .arg(&self.router)
                .args(args),
        )
    }

    /// `bridge -n <router> ARGS`, returning standard output.
    fn output(&self, args: &[&str]) -> anyhow::Result<String> {
        crate::output(
            Command::new("bridge")
                .arg("-n")
                .arg(&self.router)
                .args(args),
        )
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["-n", &self.router, "link", "del", BRIDGE])
            .stderr(Stdio::null())
            .status();
    }
}

/// An interface in the router's namespace, up, for the feed by turns to hand a stack
/// forwarder its frames on (its own, so that the other stack forwarders, in place at the
/// same time, do not see them): one end of a veth pair whose other end, up beside it, takes
/// nothing but what a bridge sends every port. Kernels may lack dummy interfaces; every lab
/// has veth. Deleted (with its peer) on drop.
pub struct FeedIngress {
    router: String,
    name: &'static str,
}

impl FeedIngress {
    /// `name` and its peer `<name>p`.
    ///
    /// # Errors
    /// `ip` failed.
    pub fn new(router: &Netns, name: &'static str) -> anyhow::Result<FeedIngress> {
        let peer = format!("{name}p");
        router.ip(&["link", "add", name, "type", "veth", "peer", "name", &peer])?;
        let ingress = FeedIngress {
            router: router.name().to_owned(),
            name,
        };
        router.ip(&["link", "set", "dev", &peer, "up"])?;
        router.ip(&["link", "set", "dev", name, "up"])?;
        Ok(ingress)
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl Drop for FeedIngress {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["-n", &self.router, "link", "del", self.name])
            .stderr(Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use aya::programs::{TestRun, TestRunOptions};

    use super::*;
    use crate::lab::unique_tag;

    /// The IPv4 header checksum over `frame`'s header, its own field included: 0 when right.
    fn header_sum(frame: &[u8]) -> u16 {
        let mut sum: u32 = frame[14..34]
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// `bench_tc_clone` run once on `frame` (test run) with `group` going out of one veth in
    /// a namespace of its own with `mac` as source: its verdict and the frame it left.
    fn tc_clone_once(group: Ipv4Addr, mac: [u8; 6], frame: &[u8]) -> (u32, Vec<u8>) {
        let object = crate::build::ebpf_target_dir().join("bpfel-unknown-none/release/mgm-bench");
        let ns = Netns::create(&format!("mgm-{}-tc", unique_tag("u"))).expect("namespace");
        ns.ip(&["link", "add", "tca", "type", "veth", "peer", "name", "tcb"])
            .expect("veth");
        ns.ip(&["link", "set", "tca", "up"]).expect("up");
        ns.ip(&["link", "set", "tcb", "up"]).expect("up");
        ns.run(|| {
            let mut ebpf = EbpfLoader::new()
                .load_file(&object)
                .expect("the bench object (cargo xtask build)");
            let mut entry = b::TcGroup::default();
            entry.oifs[0] = b::TcOif {
                ifindex: ifindex("tca").expect("tca"),
                mac,
                _pad: [0; 2],
            };
            let mut groups: HashMap<&mut MapData, u32, b::TcGroup> =
                HashMap::try_from(ebpf.map_mut(b::TC_GROUPS).expect("map")).expect("hash");
            groups
                .insert(u32::from_ne_bytes(group.octets()), entry, 0)
                .expect("insert");
            let prog: &mut SchedClassifier = ebpf
                .program_mut("bench_tc_clone")
                .expect("program")
                .try_into()
                .expect("classifier");
            prog.load().expect("verifier");
            let mut out = vec![0u8; frame.len()];
            let run = prog
                .test_run(TestRunOptions {
                    data_in: Some(frame),
                    data_out: Some(&mut out),
                    ..TestRunOptions::new()
                })
                .expect("test run");
            (run.return_value, out)
        })
        .expect("in the namespace")
    }

    #[test]
    fn tc_forwarder_writes_ttl_checksum_and_source_mac() {
        let group = Ipv4Addr::new(239, 1, 1, 1);
        let mac = [0x02, 0, 0, 0, 0, 0x09];
        let frame = super::super::generator::udp_frame(
            [0x02, 0, 0, 0, 0, 0x01],
            Ipv4Addr::new(198, 18, 0, 2),
            group,
            64,
        );
        assert_eq!(header_sum(&frame), 0, "the generator's frame is sound");
        let (verdict, out) = tc_clone_once(group, mac, &frame);
        assert_eq!(
            verdict, 2,
            "TC_ACT_SHOT: the copies went out, the original goes no further"
        );
        assert_eq!(out[22], frame[22] - 1, "TTL decremented");
        assert_eq!(header_sum(&out), 0, "IPv4 checksum updated");
        assert_eq!(out[6..12], mac, "source MAC of the outgoing interface");

        // A group it does not know goes on to the stack untouched.
        let (verdict, out) = tc_clone_once(Ipv4Addr::new(239, 9, 9, 9), mac, &frame);
        assert_eq!(verdict, 0, "TC_ACT_OK");
        assert_eq!(out, frame);
    }
}
