//! A network namespace that exists as long as its guard: created with `ip netns add`, deleted
//! (with every interface inside it) on drop, on every exit path.

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{bail, Context};

use crate::{output, run};

/// `SIOCETHTOOL` command that sets GRO on or off.
const ETHTOOL_SGRO: u32 = 0x2c;

/// A named namespace under /run/netns.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

/// A tag unique to this process and call, for namespace and pin names that parallel tests and
/// concurrent runs cannot share.
pub fn unique_tag(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl Netns {
    /// Creates the namespace and brings its loopback up.
    ///
    /// # Errors
    /// The name is taken, or `ip` failed.
    pub fn create(name: &str) -> anyhow::Result<Netns> {
        if PathBuf::from("/run/netns").join(name).exists() {
            bail!("network namespace {name} already exists (a lab is up? `cargo xtask lab down`)");
        }
        run(Command::new("ip").args(["netns", "add", name]))
            .with_context(|| format!("cannot create network namespace {name} (root needed)"))?;
        let ns = Netns {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Takes over an existing namespace (it is deleted when the guard drops).
    pub fn adopt(name: &str) -> Netns {
        Netns {
            name: name.to_owned(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> ARGS`.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// `ip -n <ns> ARGS`, returning standard output.
    pub fn ip_output(&self, args: &[&str]) -> anyhow::Result<String> {
        output(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// `bridge -n <ns> ARGS`, returning standard output.
    pub fn bridge(&self, args: &[&str]) -> anyhow::Result<String> {
        output(Command::new("bridge").arg("-n").arg(&self.name).args(args))
    }

    /// Runs `f` on a thread that has entered this namespace. Sockets made inside `f` stay in
    /// the namespace wherever they are used afterwards.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        let path = PathBuf::from("/run/netns").join(&self.name);
        let file = File::open(&path).with_context(|| format!("open {}", path.display()))?;
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: `file` is an open netns fd; setns affects only this thread.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error())
                        .with_context(|| format!("cannot enter {}", self.name));
                }
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread in {} panicked", self.name))?
        })
    }

    /// Writes a sysctl under /proc/sys/net inside this namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        self.run(|| std::fs::write(&path, value))?
            .with_context(|| format!("sysctl {key}={value} in {}", self.name))
    }

    /// Turns GRO on for `ifname`. A veth drops frames redirected into it by native XDP unless
    /// its peer has GRO on or an XDP program of its own.
    pub fn enable_gro(&self, ifname: &str) -> anyhow::Result<()> {
        self.ethtool_set(ifname, ETHTOOL_SGRO, 1)
            .with_context(|| format!("cannot enable GRO on {ifname} in {}", self.name))
    }

    /// Turns GRO off for `ifname`.
    pub fn disable_gro(&self, ifname: &str) -> anyhow::Result<()> {
        self.ethtool_set(ifname, ETHTOOL_SGRO, 0)
            .with_context(|| format!("cannot disable GRO on {ifname} in {}", self.name))
    }

    /// Turns transmit checksum offload off for `ifname`. A veth otherwise hands its peer UDP
    /// packets whose checksum is only partial, and XDP forwarding passes them on as they are,
    /// so receivers drop them; real NICs deliver complete checksums.
    pub fn disable_tx_checksum(&self, ifname: &str) -> anyhow::Result<()> {
        const ETHTOOL_STXCSUM: u32 = 0x17;
        self.ethtool_set(ifname, ETHTOOL_STXCSUM, 0)
            .with_context(|| {
                format!(
                    "cannot turn off tx checksum offload on {ifname} in {}",
                    self.name
                )
            })
    }

    /// One legacy `SIOCETHTOOL` set command with a `struct ethtool_value`.
    fn ethtool_set(&self, ifname: &str, cmd: u32, data: u32) -> anyhow::Result<()> {
        const SIOCETHTOOL: libc::c_ulong = 0x8946;
        #[repr(C)]
        struct EthtoolValue {
            cmd: u32,
            data: u32,
        }
        let name = ifname.to_owned();
        self.run(move || -> std::io::Result<()> {
            let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
            let mut value = EthtoolValue { cmd, data };
            // SAFETY: ifreq is plain data; zero is valid.
            let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
            for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
                *d = s as libc::c_char;
            }
            req.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
            // SAFETY: `req` and `value` outlive the call; SIOCETHTOOL reads them.
            if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut req) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })??;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let res = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        match res {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("warning: ip netns del {}: {e}", self.name),
        }
    }
}
