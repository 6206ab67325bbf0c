//! The forwarders under test, each started on the router's interfaces and stopped again by
//! dropping its guard, so only one ever holds them: mgm (the real daemon with static routes),
//! the kernel's ipmr (configured by smcroute, a real daemon), and two XDP programs from the
//! bench object that bound what any XDP forwarder can do on this harness.

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use aya::{
    maps::{xdp::DevMapHash, Array, MapData},
    programs::{loaded_programs, ProgramFd, Xdp, XdpMode},
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
            Forwarder::Raw => "raw_redirect",
            Forwarder::RawMac => "raw_redirect_mac",
            Forwarder::Drop => "xdp_drop",
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
    Xdp(Ebpf),
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
            Forwarder::Raw | Forwarder::RawMac | Forwarder::Drop => self
                .load_xdp(fw, flow, true)
                .map(|(ebpf, _)| Running::Xdp(ebpf)),
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
