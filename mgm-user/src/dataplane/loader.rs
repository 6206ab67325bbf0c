//! Loads the embedded XDP object, pins its maps, attaches the ingress program to every managed
//! interface and hands out typed map handles; interfaces that come and go later are attached
//! and detached by the [`Attacher`]'s worker. Only [`Dataplane::detach_all`] detaches the
//! programs and removes the pins: dropping the [`Dataplane`] (an error return, a panic) leaves
//! XDP forwarding with the last state, as a crash does.
//!
//! Maps a crashed or killed daemon left pinned are adopted: their entries keep forwarding as
//! soon as the programs are attached again.

use std::{
    ffi::CString,
    fs, io,
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
    sync::OnceLock,
    time::Duration,
};

use aya::{
    maps::{Array, MapData, RingBuf},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
        ProgramFd, ProgramType, Xdp, XdpMode as AyaXdpMode,
    },
    sys::{is_helper_supported, BpfHelper},
    Ebpf, EbpfLoader,
};
use log::{info, warn};
use mgm_common::{
    fwd::Meta,
    maps::{self as m, LAYOUT_VERSION},
};

use super::{
    attacher::{Attacher, Kernel, Outcome},
    error::{map_err, report},
    interfaces::{InterfaceSettings, SettingsChange},
    maps::Forwarding,
    netdev::NetDev,
    DataplaneError,
};

const INGRESS: &str = "mgm_ingress";
const EGRESS: &str = "mgm_egress";
/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[cfg(not(mgm_ebpf_missing))]
static OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!(env!("MGM_EBPF_OBJECT")));
#[cfg(mgm_ebpf_missing)]
static OBJECT: Option<&[u8]> = None;

/// How the ingress program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver: fastest; needs driver support (veth, most 10G+ NICs).
    Native,
    /// In the kernel's generic path: works everywhere, slower.
    Skb,
    /// Native where the driver allows it, generic elsewhere (with a warning).
    Auto,
}

/// Settings compiled into the programs at load time.
#[derive(Debug, Clone)]
pub struct Tunables {
    /// How long a no-cache placeholder waits before its upcall is raised again.
    pub pending_retry: Duration,
    /// Least time between two wrong-interface upcalls of one entry.
    pub wrong_if_interval: Duration,
    /// Most verbose level the XDP program logs at (it checks this before formatting).
    pub ebpf_log_level: log::LevelFilter,
    /// IGMP group records (other messages count one) per second per interface the XDP
    /// program hands the daemon; 0: all.
    pub igmp_admit_rate: u32,
    /// No-cache upcalls per second per incoming interface; 0: all.
    pub upcall_admit_rate: u32,
}

/// A rate as the XDP program's GCRA buckets take it: nanoseconds between two admissions, and
/// how far ahead a bucket may run (a quarter second's worth of burst). 0 is no limit.
fn admission(rate: u32) -> (u64, u64) {
    if rate == 0 {
        return (0, 0);
    }
    let interval = 1_000_000_000 / u64::from(rate);
    (interval, interval * u64::from((rate / 4).max(1)))
}

impl Default for Tunables {
    fn default() -> Self {
        Tunables {
            pending_retry: Duration::from_secs(10),
            wrong_if_interval: Duration::from_secs(1),
            ebpf_log_level: log::LevelFilter::Warn,
            igmp_admit_rate: 1_000,
            upcall_admit_rate: 1_000,
        }
    }
}

/// What to load, where, and with which settings.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub interfaces: Vec<NetDev>,
    pub mode: XdpMode,
    pub pin_dir: PathBuf,
    /// Copies whose TTL is below this are not sent (per interface, same for all for now).
    pub ttl_threshold: u8,
    pub tunables: Tunables,
}

/// The object loaded into the kernel with both programs verified, nothing pinned or attached.
pub struct Loaded {
    pub ebpf: Ebpf,
    /// The devmap program every copy runs, for outgoing-set entries.
    pub egress: ProgramFd,
    /// Whether the programs pass each copy its entry's counters as XDP metadata
    /// ([`xdp_metadata`]).
    pub xdp_meta: bool,
}

/// Whether this kernel lets XDP programs call `bpf_xdp_adjust_meta`, which hands each copy of
/// a set its entry's counter block. Where it does not (a 6.18 build here refuses it), the
/// programs load without the call and `mgm_egress` looks the entry up again per copy: slower,
/// the same counts. A probe that fails counts as no, so the programs still load. Probed once.
pub fn xdp_metadata() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        is_helper_supported(ProgramType::Xdp, BpfHelper::BPF_FUNC_xdp_adjust_meta).unwrap_or(false)
    })
}

impl Loaded {
    /// Takes one map out of the object, typed.
    ///
    /// # Errors
    /// No such map (or already taken), or it is not of type `T`.
    pub fn take_map<T>(&mut self, name: &'static str) -> Result<T, DataplaneError>
    where
        T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self
            .ebpf
            .take_map(name)
            .ok_or(DataplaneError::MissingMap(name))?;
        T::try_from(map).map_err(|source| DataplaneError::Map { map: name, source })
    }

    /// Writes each interface's settings (see [`InterfaceSettings::write_all`]) and takes the
    /// interface maps, counters included.
    ///
    /// # Errors
    /// An interface map is missing or cannot be written.
    pub fn configure_interfaces(
        &mut self,
        interfaces: &[NetDev],
        ttl_threshold: u8,
    ) -> Result<InterfaceSettings, DataplaneError> {
        InterfaceSettings::write_all(
            self.take_map(m::IFCFG)?,
            self.take_map(m::IFCFG_DIRECT)?,
            self.take_map(m::IF_STATS)?,
            interfaces,
            ttl_threshold,
        )
    }

    /// Takes the forwarding maps as a [`Forwarding`] handle.
    ///
    /// # Errors
    /// A map is missing or the CPU count cannot be read.
    pub fn take_forwarding(&mut self) -> Result<Forwarding, DataplaneError> {
        let nr_cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Cpus(e))?;
        let egress = self
            .egress
            .try_clone()
            .map_err(|e| DataplaneError::Program {
                program: EGRESS,
                source: aya::programs::ProgramError::IOError(e),
            })?;
        let sets = self
            .ebpf
            .take_map(m::OIF_SETS)
            .ok_or(DataplaneError::MissingMap(m::OIF_SETS))?;
        let sets_fd = match &sets {
            aya::maps::Map::ArrayOfMaps(data) => data.fd().as_fd().try_clone_to_owned(),
            _ => Err(io::Error::other("not an array of maps")),
        }
        .map_err(|e| DataplaneError::Map {
            map: m::OIF_SETS,
            source: aya::maps::MapError::IoError(e),
        })?;
        let sets = aya::maps::ArrayOfMaps::try_from(sets).map_err(map_err(m::OIF_SETS))?;
        Ok(Forwarding::new(
            self.take_map(m::FWD)?,
            (sets, sets_fd),
            self.take_map(m::SET_INFO)?,
            self.take_map(m::SET_MEMBERS)?,
            (self.take_map(m::ENTRY_STATS)?, self.take_map(m::OIF_STATS)?),
            egress,
            nr_cpus,
        ))
    }
}

/// Names of the programs, ingress first.
pub const PROGRAMS: [&str; 2] = [INGRESS, EGRESS];

/// Loads the embedded object and both programs (the kernel verifies them here).
///
/// # Errors
/// The binary has no object, or the kernel rejects a map or a program.
pub fn load_programs(t: &Tunables) -> Result<Loaded, DataplaneError> {
    load_with_pins(t, None)
}

/// Like [`load_programs`]; with `pin_dir`, every shared map is opened from its pin there when
/// one exists (adopting its contents) and is created and pinned there otherwise.
fn load_with_pins(t: &Tunables, pin_dir: Option<&Path>) -> Result<Loaded, DataplaneError> {
    let object = OBJECT.ok_or(DataplaneError::NoObject)?;
    let pending = t.pending_retry.as_nanos() as u64;
    let wrong_if = t.wrong_if_interval.as_nanos() as u64;
    let level = t.ebpf_log_level as usize as u8;
    let (igmp_interval, igmp_window) = admission(t.igmp_admit_rate);
    let (upcall_interval, upcall_window) = admission(t.upcall_admit_rate);
    let xdp_meta = xdp_metadata();
    let meta_flag = u8::from(xdp_meta);
    let mut loader = EbpfLoader::new();
    loader
        .override_global("XDP_META", &meta_flag, true)
        .override_global("PENDING_RETRY_NS", &pending, true)
        .override_global("WRONG_IF_INTERVAL_NS", &wrong_if, true)
        .override_global("IGMP_ADMIT_INTERVAL_NS", &igmp_interval, true)
        .override_global("IGMP_ADMIT_WINDOW_NS", &igmp_window, true)
        .override_global("UPCALL_ADMIT_INTERVAL_NS", &upcall_interval, true)
        .override_global("UPCALL_ADMIT_WINDOW_NS", &upcall_window, true)
        .override_global(aya_log::LEVEL, &level, false);
    if let Some(dir) = pin_dir {
        for name in m::ALL {
            loader.map_pin_path(name, dir.join(name));
        }
    }
    let mut ebpf = loader.load(object)?;
    let egress = load_program(&mut ebpf, EGRESS)?;
    load_program(&mut ebpf, INGRESS)?;
    Ok(Loaded {
        ebpf,
        egress,
        xdp_meta,
    })
}

/// How many instructions the verifier processed for each program (kernel ≥ 5.16).
///
/// # Errors
/// A program is missing or its info cannot be read.
pub fn verified_instructions(
    ebpf: &Ebpf,
) -> Result<Vec<(&'static str, Option<u32>)>, DataplaneError> {
    PROGRAMS
        .iter()
        .map(|&name| {
            let prog = ebpf
                .program(name)
                .ok_or(DataplaneError::MissingProgram(name))?;
            let info = prog.info().map_err(|source| DataplaneError::Program {
                program: name,
                source,
            })?;
            Ok((name, info.verified_instruction_count()))
        })
        .collect()
}

/// The loaded and attached data plane.
pub struct Dataplane {
    /// Attaches interfaces that appear later, and detaches ones that vanish; owns the
    /// programs.
    attacher: Attacher,
    /// The TTL threshold interfaces that appear later get.
    ttl_threshold: u8,
    pub forwarding: Forwarding,
    /// Taken by the daemon's event loop ([`Dataplane::take_events`]).
    events: Option<RingBuf<MapData>>,
    /// Taken by the daemon's event loop ([`Dataplane::take_logger`]).
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// The managed interfaces' settings (kept to follow link changes) and counters.
    pub interfaces: InterfaceSettings,
    pin_dir: PathBuf,
    /// Where each interface's program is attached, for the log and `mgm show`.
    pub attached: Vec<(String, &'static str)>,
    /// Forwarding entries found in maps a previous daemon pinned (see [`prepare_pin_dir`]).
    pub adopted: usize,
    /// An exclusive lock on the pin directory, so a second daemon cannot adopt it live.
    _pin_lock: fs::File,
    /// Set by [`Dataplane::detach_all`]: dropping removes the pins.
    remove_pins: bool,
}

impl Dataplane {
    /// Loads, pins and attaches.
    ///
    /// # Errors
    /// Any step failing: the error names the step, the map or program, and the interface.
    /// Whatever was attached before the failure is detached again.
    pub fn load(opts: &LoadOptions) -> Result<Dataplane, DataplaneError> {
        let (adopt, pin_lock) = prepare_pin_dir(&opts.pin_dir)?;
        let mut loaded = load_with_pins(&opts.tunables, Some(&opts.pin_dir))?;
        if !loaded.xdp_meta {
            info!(
                "this kernel refuses bpf_xdp_adjust_meta to XDP programs: each copy to a set \
                 of several interfaces finds its entry's counters by a lookup instead"
            );
        }
        let logger = match aya_log::EbpfLogger::init(&mut loaded.ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                warn!("XDP program logs are not forwarded: {e}");
                None
            }
        };
        let mut meta: Array<MapData, Meta> = loaded.take_map(m::META)?;
        let version = Meta {
            layout_version: LAYOUT_VERSION,
            _pad: 0,
        };
        meta.set(0, version, 0).map_err(map_err(m::META))?;
        let interfaces = loaded.configure_interfaces(&opts.interfaces, opts.ttl_threshold)?;
        let mut forwarding = loaded.take_forwarding()?;
        let adopted = if adopt {
            let n = forwarding.adopt()?;
            info!(
                "adopted {n} forwarding entries from the maps pinned in {}",
                opts.pin_dir.display()
            );
            n
        } else {
            0
        };
        let events = Some(loaded.take_map(m::EVENTS)?);
        let attached = attach_all(&mut loaded.ebpf, &opts.interfaces, opts.mode, &opts.pin_dir)?;
        let attacher = Attacher::spawn(Ingress {
            ebpf: loaded.ebpf,
            mode: opts.mode,
            pin_dir: opts.pin_dir.clone(),
        })
        .map_err(DataplaneError::Worker)?;
        Ok(Dataplane {
            forwarding,
            events,
            logger,
            interfaces,
            pin_dir: opts.pin_dir.clone(),
            attached,
            adopted,
            _pin_lock: pin_lock,
            remove_pins: false,
            attacher,
            ttl_threshold: opts.ttl_threshold,
        })
    }

    /// Manages an interface that appeared while running (spec §10): the worker looks `name`
    /// up and attaches the ingress program to it if it is still `ifindex`, through a pinned
    /// link like the others; [`Dataplane::next_outcome`] tells.
    pub fn attach(&mut self, name: &str, ifindex: u32) {
        self.attacher.attach(name, ifindex);
    }

    /// Stops managing `name`, which vanished, was renamed away or is no longer configured
    /// (spec §10): the worker removes its link pin, which detaches the program from an
    /// interface that still exists (the kernel detached it from one that vanished). Its
    /// settings stay until [`Dataplane::forget`].
    pub fn detach(&mut self, name: &str) {
        self.attacher.detach(name);
        self.attached.retain(|(n, _)| n != name);
    }

    /// Removes the settings of an interface no longer managed from the maps, so its counter
    /// slot is free.
    ///
    /// # Errors
    /// A map cannot be written.
    pub fn forget(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        self.interfaces.remove(ifindex)
    }

    /// Has the worker read `name` again (for its address, or whether it exists): an
    /// [`Outcome::Found`] follows if it exists, as `ifindex` when that is given.
    pub fn lookup(&mut self, name: &str, ifindex: Option<u32>) {
        self.attacher.lookup(name, ifindex);
    }

    /// Whether `ifindex` waits for its attach.
    pub fn attaching(&self, ifindex: u32) -> bool {
        self.attacher.waiting(ifindex)
    }

    /// Takes a link's new MAC or MTU into its settings (see [`InterfaceSettings::follow`]);
    /// for an interface that waits for its attach, into the settings it gets then.
    ///
    /// # Errors
    /// A map cannot be written.
    pub fn follow(
        &mut self,
        ifindex: u32,
        mac: Option<[u8; 6]>,
        mtu: Option<u32>,
    ) -> Result<Option<SettingsChange>, DataplaneError> {
        if self.attacher.moved(ifindex, mac, mtu) {
            return Ok(None);
        }
        self.interfaces.follow(ifindex, mac, mtu)
    }

    /// The next current outcome of the worker. An interface attached has its settings in
    /// the maps by then (if they cannot be written, it is detached again and
    /// [`Outcome::Failed`]). Cancel-safe.
    pub async fn next_outcome(&mut self) -> Outcome {
        match self.attacher.next().await {
            Outcome::Attached { dev, mode } => {
                if let Err(error) = self.interfaces.add(&dev, self.ttl_threshold) {
                    self.detach(&dev.name);
                    return Outcome::Failed {
                        name: dev.name,
                        error,
                    };
                }
                self.attached.retain(|(n, _)| *n != dev.name);
                self.attached.push((dev.name.clone(), mode));
                Outcome::Attached { dev, mode }
            }
            outcome => outcome,
        }
    }

    /// The event ring buffer, once.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// The XDP program's log channel, once (`None` if it could not be set up).
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        self.logger.take()
    }

    /// Detaches the programs and removes the pins: the plain, intended stop. Without it the
    /// pinned links and maps stay, so traffic goes on with the last state until the next
    /// daemon adopts them.
    pub fn detach_all(mut self) {
        self.remove_pins = true;
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        if !self.remove_pins {
            return;
        }
        // An attach under way would pin its link after the pins are gone.
        if let Err(waited) = self.attacher.stop() {
            warn!("an XDP attach is still under way after {waited:?}; its link may stay pinned");
        }
        // Removing the link pins detaches the programs; the map pins would keep stale maps.
        if let Err(e) = remove_pins(&self.pin_dir) {
            warn!("could not remove pins in {}: {e}", self.pin_dir.display());
        }
    }
}

/// The program the [`Attacher`]'s worker attaches, and how.
struct Ingress {
    ebpf: Ebpf,
    mode: XdpMode,
    pin_dir: PathBuf,
}

impl Kernel for Ingress {
    fn lookup(&mut self, name: &str) -> Result<NetDev, DataplaneError> {
        NetDev::lookup(name)
    }

    fn attach(&mut self, dev: &NetDev) -> Result<&'static str, DataplaneError> {
        let mut attached = attach_all(
            &mut self.ebpf,
            std::slice::from_ref(dev),
            self.mode,
            &self.pin_dir,
        )?;
        Ok(attached.pop().map_or("adopted", |(_, mode)| mode))
    }

    fn detach(&mut self, name: &str) {
        let path = link_pin(&self.pin_dir, name);
        if let Err(e) = fs::remove_file(&path) {
            if e.kind() != io::ErrorKind::NotFound {
                warn!("cannot remove {}: {e}", path.display());
            }
        }
    }
}

/// Where the link of interface `name` is pinned.
fn link_pin(pin_dir: &Path, name: &str) -> PathBuf {
    pin_dir.join(format!("link_{name}"))
}

fn load_program(ebpf: &mut Ebpf, name: &'static str) -> Result<ProgramFd, DataplaneError> {
    let err = |source| DataplaneError::Program {
        program: name,
        source,
    };
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or(DataplaneError::MissingProgram(name))?
        .try_into()
        .map_err(err)?;
    prog.load().map_err(err)?;
    let fd = prog.fd().map_err(err)?;
    fd.try_clone()
        .map_err(|e| err(aya::programs::ProgramError::IOError(e)))
}

/// Attaches the ingress program to every interface through a bpf_link pinned in `pin_dir`
/// (`link_<interface>`), so forwarding goes on if the daemon dies. A link a previous daemon
/// pinned is taken over: its program is swapped for ours in one step (`bpf_link_update`), so
/// no packet meets an interface without XDP.
fn attach_all(
    ebpf: &mut Ebpf,
    interfaces: &[NetDev],
    mode: XdpMode,
    pin_dir: &Path,
) -> Result<Vec<(String, &'static str)>, DataplaneError> {
    let prog: &mut Xdp = ebpf
        .program_mut(INGRESS)
        .ok_or(DataplaneError::MissingProgram(INGRESS))?
        .try_into()
        .map_err(|source| DataplaneError::Program {
            program: INGRESS,
            source,
        })?;
    let mut attached = Vec::new();
    for dev in interfaces {
        let pin = link_pin(pin_dir, &dev.name);
        if let Some(link) = pinned_link(&pin) {
            prog.attach_to_link(link)
                .map_err(|source| DataplaneError::Attach {
                    interface: dev.name.clone(),
                    mode: "adopted",
                    source,
                })?;
            info!("XDP on {}: took over the pinned link", dev.name);
            attached.push((dev.name.clone(), "adopted"));
            continue;
        }
        let try_mode = |prog: &mut Xdp, m: AyaXdpMode, label: &'static str| {
            prog.attach_to_if_index(dev.ifindex, m)
                .map(|id| (id, label))
                .map_err(|source| DataplaneError::Attach {
                    interface: dev.name.clone(),
                    mode: label,
                    source,
                })
        };
        let (id, label) = match mode {
            XdpMode::Native => try_mode(prog, AyaXdpMode::Driver, "native")?,
            XdpMode::Skb => try_mode(prog, AyaXdpMode::Skb, "skb")?,
            XdpMode::Auto => match try_mode(prog, AyaXdpMode::Driver, "native") {
                Ok(attached) => attached,
                Err(e) => {
                    warn!(
                        "{}; falling back to skb (generic) mode, which is slower",
                        report(&e)
                    );
                    try_mode(prog, AyaXdpMode::Skb, "skb")?
                }
            },
        };
        pin_link(prog, id, &pin, &dev.name)?;
        info!(
            "XDP attached to {} (ifindex {}) in {label} mode",
            dev.name, dev.ifindex
        );
        attached.push((dev.name.clone(), label));
    }
    Ok(attached)
}

/// The XDP link pinned at `pin`, if one is there and usable; an unusable pin is removed.
fn pinned_link(pin: &Path) -> Option<XdpLink> {
    if !pin.exists() {
        return None;
    }
    let link = PinnedLink::from_pin(pin)
        .map_err(|e| e.to_string())
        .and_then(|p| XdpLink::try_from(FdLink::from(p)).map_err(|e| e.to_string()));
    match link {
        Ok(link) => Some(link),
        Err(e) => {
            warn!("ignoring the pinned link {}: {e}", pin.display());
            let _ = fs::remove_file(pin);
            None
        }
    }
}

/// Moves the link `id` out of the program and pins it, so it outlives this process.
fn pin_link(prog: &mut Xdp, id: XdpLinkId, pin: &Path, name: &str) -> Result<(), DataplaneError> {
    let err = |e: String| DataplaneError::PinDir {
        path: pin.to_owned(),
        source: io::Error::other(format!("cannot pin the XDP link of {name}: {e}")),
    };
    let link = prog.take_link(id).map_err(|e| err(e.to_string()))?;
    let fd = FdLink::try_from(link).map_err(|e| err(e.to_string()))?;
    fd.pin(pin).map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// Makes sure `pin_dir` is a directory on a BPF filesystem, mounting bpffs at /sys/fs/bpf
/// when nothing is mounted there (as under `ip netns exec`). Maps a previous daemon left
/// pinned there (it crashed, or was killed) are kept for adoption when they are complete and
/// of this [`LAYOUT_VERSION`]: returns `true` then. Anything else there is removed.
fn prepare_pin_dir(pin_dir: &Path) -> Result<(bool, fs::File), DataplaneError> {
    let err = |source| DataplaneError::PinDir {
        path: pin_dir.to_owned(),
        source,
    };
    let bpffs = Path::new("/sys/fs/bpf");
    if pin_dir.starts_with(bpffs) && !is_bpffs(bpffs).map_err(err)? {
        mount_bpffs(bpffs).map_err(err)?;
        info!("mounted a BPF filesystem at {}", bpffs.display());
    }
    fs::create_dir_all(pin_dir).map_err(err)?;
    if !is_bpffs(pin_dir).map_err(err)? {
        return Err(err(io::Error::other(
            "not on a BPF filesystem (mount -t bpf bpf <dir>)",
        )));
    }
    let lock = lock_dir(pin_dir).map_err(err)?;
    match pinned_layout(pin_dir) {
        Some(LAYOUT_VERSION) if m::ALL.iter().all(|n| pin_dir.join(n).exists()) => {
            return Ok((true, lock));
        }
        Some(v) => warn!(
            "{} holds maps of layout {v}, not {LAYOUT_VERSION}; they are removed",
            pin_dir.display()
        ),
        None => {
            if fs::read_dir(pin_dir).map_err(err)?.next().is_some() {
                warn!(
                    "{} holds an incomplete set of maps; they are removed",
                    pin_dir.display()
                );
            }
        }
    }
    remove_pinned_files(pin_dir).map_err(err)?;
    Ok((false, lock))
}

/// Takes an exclusive, non-blocking lock on `dir`: one daemon per pin directory.
fn lock_dir(dir: &Path) -> io::Result<fs::File> {
    let file = fs::File::open(dir)?;
    // SAFETY: `file` is an open descriptor for the duration of the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            io::Error::other("another mgm is running with this pin directory")
        } else {
            e
        });
    }
    Ok(file)
}

/// The layout version in the pinned meta map, if there is one to read.
fn pinned_layout(pin_dir: &Path) -> Option<u32> {
    let data = MapData::from_pin(pin_dir.join(m::META)).ok()?;
    let meta: Array<MapData, Meta> = aya::maps::Map::Array(data).try_into().ok()?;
    meta.get(&0, 0).ok().map(|m| m.layout_version)
}

/// Removes every pin in `pin_dir`, and the directory.
fn remove_pins(pin_dir: &Path) -> io::Result<()> {
    match remove_pinned_files(pin_dir) {
        Ok(()) => fs::remove_dir(pin_dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes every pin in `pin_dir` (maps and links: a removed link pin detaches its program).
fn remove_pinned_files(pin_dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(pin_dir)? {
        fs::remove_file(e?.path())?;
    }
    Ok(())
}

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    // SAFETY: statfs is plain data; `c` is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers for the duration of the call.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

fn mount_bpffs(at: &Path) -> io::Result<()> {
    let target = CString::new(at.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    // SAFETY: all pointers are NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
