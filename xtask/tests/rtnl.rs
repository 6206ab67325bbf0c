//! The event loop never waits on the kernel's rtnl lock for an interface that appears or a
//! reload (issue 19), under the real `mgm` binary. While another process holds rtnl, a managed
//! downstream appears, and a new stream to a kernel IGMP host on another downstream is
//! forwarded within 1 s; then, rtnl held again, a reload adds a downstream: the reload
//! completes and another new stream is forwarded within 1 s. Each interface is attached once
//! rtnl is free. Needs root and userfaultfd; run through `cargo xtask test`.
//!
//! rtnl is held the way a slow netlink or ioctl caller holds it: an ethtool ioctl
//! (`SIOCETHTOOL`, `ETHTOOL_GSET`) copies its answer to a buffer whose second page is
//! registered with userfaultfd, so the copy, made under rtnl, waits until the test fills that
//! page.

mod events;

use std::{
    io,
    net::{Ipv4Addr, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use events::{mgm_bin, Counter, Stream, FAST_IGMP, PATIENCE};
use xtask::{
    kernel::announce_skip,
    lab::{
        receiver_addr, traffic::Receiver, traffic::Sender, unique_tag, Daemon, IgmpVersion, Lab,
        Netns, HOST_IF, SENDER_ADDR,
    },
};

/// The host on dn1 joins them; their streams start while rtnl is held, one per phase.
const G: Ipv4Addr = Ipv4Addr::new(239, 6, 6, 6);
const G2: Ipv4Addr = Ipv4Addr::new(239, 6, 6, 8);
/// Streamed before, to show the host's joins were heard.
const G0: Ipv4Addr = Ipv4Addr::new(239, 6, 6, 7);
/// The bound on a join's first packet under load.
const WITHIN: Duration = Duration::from_secs(1);

const PAGE: usize = 4096;
// linux/userfaultfd.h: _IOWR(0xAA, nr, size).
const UFFD_API: u64 = 0xAA;
const UFFDIO_API: libc::Ioctl = 0xC018_AA3F;
const UFFDIO_REGISTER: libc::Ioctl = 0xC020_AA00;
const UFFDIO_ZEROPAGE: libc::Ioctl = 0xC020_AA04;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
const ETHTOOL_GSET: u32 = 1;

/// rtnl held by a thread of this test, stuck in an ethtool ioctl until dropped.
struct RtnlHeld {
    uffd: OwnedFd,
    /// Two pages: the ioctl's command at the end of the first, its answer running into the
    /// second, which is missing until the drop fills it.
    map: usize,
    ioctl: Option<JoinHandle<io::Result<()>>>,
}

fn check(rc: libc::c_int, what: &str) -> io::Result<()> {
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

impl RtnlHeld {
    /// Holds rtnl through an ethtool ioctl on `ifname` in `ns`; `Ok(None)` if this kernel does
    /// not stop in it (the page was not touched under the lock within 5 s).
    fn take(ns: &Netns, ifname: &str) -> anyhow::Result<Option<RtnlHeld>> {
        // SAFETY: plain syscalls on fds and a mapping this function owns.
        unsafe {
            let fd = libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK);
            check(fd as libc::c_int, "userfaultfd")?;
            let uffd = OwnedFd::from_raw_fd(fd as libc::c_int);
            let mut api = [UFFD_API, 0, 0];
            check(
                libc::ioctl(uffd.as_raw_fd(), UFFDIO_API, api.as_mut_ptr()),
                "UFFDIO_API",
            )?;
            let map = libc::mmap(
                std::ptr::null_mut(),
                2 * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if map == libc::MAP_FAILED {
                return Err(io::Error::last_os_error().into());
            }
            let held = RtnlHeld {
                uffd,
                map: map as usize,
                ioctl: None,
            };
            let second = held.map + PAGE;
            let mut register = [second as u64, PAGE as u64, UFFDIO_REGISTER_MODE_MISSING, 0];
            check(
                libc::ioctl(
                    held.uffd.as_raw_fd(),
                    UFFDIO_REGISTER,
                    register.as_mut_ptr(),
                ),
                "UFFDIO_REGISTER",
            )?;
            let cmd = second - 4;
            *(cmd as *mut u32) = ETHTOOL_GSET;
            let sock = ns.run(|| UdpSocket::bind("0.0.0.0:0"))??;
            let name = ifname.to_owned();
            let mut held = held;
            held.ioctl = Some(std::thread::spawn(move || {
                let mut req: libc::ifreq = std::mem::zeroed();
                for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
                    *d = s as libc::c_char;
                }
                req.ifr_ifru.ifru_data = cmd as *mut libc::c_char;
                check(
                    libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req),
                    "SIOCETHTOOL",
                )
            }));
            let mut poll = libc::pollfd {
                fd: held.uffd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            check(libc::poll(&mut poll, 1, 5_000), "poll")?;
            if poll.revents & libc::POLLIN == 0 {
                return Ok(None);
            }
            let mut msg = [0u8; 32];
            let n = libc::read(held.uffd.as_raw_fd(), msg.as_mut_ptr().cast(), msg.len());
            check(n as libc::c_int, "read userfaultfd")?;
            if msg[0] != UFFD_EVENT_PAGEFAULT {
                anyhow::bail!("userfaultfd said {:#x}, not a page fault", msg[0]);
            }
            Ok(Some(held))
        }
    }
}

impl Drop for RtnlHeld {
    /// Fills the missing page: the ioctl finishes and lets rtnl go.
    fn drop(&mut self) {
        let mut zero = [(self.map + PAGE) as u64, PAGE as u64, 0, 0];
        // SAFETY: the range is this struct's registered page.
        unsafe { libc::ioctl(self.uffd.as_raw_fd(), UFFDIO_ZEROPAGE, zero.as_mut_ptr()) };
        if let Some(t) = self.ioctl.take() {
            let _ = t.join();
        }
        // SAFETY: the mapping is this struct's, and the ioctl using it has ended.
        unsafe { libc::munmap(self.map as *mut libc::c_void, 2 * PAGE) };
    }
}

/// Sends SIGSTOP now and SIGCONT when dropped (or [`Stopped::go_on`]).
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        // SAFETY: kill(2) on the daemon this test started.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) }, 0);
        Stopped(pid)
    }

    fn go_on(self) {}
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGCONT) };
    }
}

fn fail(daemon: &Daemon, what: &str) -> ! {
    panic!("{what}\nmgm log (last 60 lines):\n{}", {
        let log = daemon.log();
        log[log.len().saturating_sub(60)..].join("\n")
    })
}

/// The configuration at start: dn2 does not exist yet, dn3 is not managed.
const BEFORE: &str = "\
[interfaces]
upstream = \"up0\"
downstream = [\"dn1\", \"dn2\"]
";

/// The reload adds dn3.
const AFTER: &str = "\
[interfaces]
upstream = \"up0\"
downstream = [\"dn1\", \"dn2\", \"dn3\"]
";

/// A configuration file of the test's own, removed when dropped.
struct ConfigFile(PathBuf);

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const SELF: &str = "rtnl::the_loop_serves_streams_while_rtnl_is_held_as_an_interface_appears_and_a_reload_adds_one";

/// Holds rtnl through the first receiver's link; `None` (the skip announced) if it cannot.
fn hold(lab: &Lab) -> Option<RtnlHeld> {
    match RtnlHeld::take(&lab.receivers[0], HOST_IF) {
        Ok(Some(held)) => Some(held),
        Ok(None) => {
            announce_skip(
                SELF,
                "this kernel's ethtool ioctl does not copy its answer under rtnl",
            );
            None
        }
        Err(e) => {
            announce_skip(
                SELF,
                &format!("cannot hold rtnl through userfaultfd: {e:#}"),
            );
            None
        }
    }
}

/// With rtnl `held`: `counter`'s stream starts through `tx` and its first datagram must come
/// within [`WITHIN`]; the loop must have logged `taken` meanwhile, and not `attached` (the
/// attach waits for rtnl). Then rtnl goes free and `attached` must follow.
fn served_while_held(
    daemon: &mut Daemon,
    held: RtnlHeld,
    (tx, group, counter): (Sender, Ipv4Addr, &mut Counter),
    what: &str,
    (taken, attached): (&str, &str),
) -> Stream {
    let started = Instant::now();
    let stream = Stream::from_sender(tx, group);
    let forwarded = counter.more(1, WITHIN);
    let took = started.elapsed();
    // Its log line may reach this test after the datagram.
    let logged = forwarded && daemon.wait_for(taken, PATIENCE).is_ok();
    let attached_meanwhile = daemon.log().iter().any(|l| l.contains(attached));
    drop(held);
    if !forwarded {
        fail(
            daemon,
            &format!(
                "a new stream to the host on dn1 was not forwarded within {WITHIN:?} while \
                 rtnl was held and {what}"
            ),
        );
    }
    assert!(
        logged && !attached_meanwhile,
        "{taken:?} logged: {logged}; {attached:?} logged while rtnl was held: \
         {attached_meanwhile} (then the test held nothing)"
    );
    if let Err(e) = daemon.wait_for(attached, PATIENCE) {
        fail(daemon, &format!("not attached once rtnl was free: {e:#}"));
    }
    println!("{what}: first datagram of a new stream after {took:?} with rtnl held");
    stream
}

#[test]
fn the_loop_serves_streams_while_rtnl_is_held_as_an_interface_appears_and_a_reload_adds_one() {
    let tag = unique_tag("t");
    let v3 = IgmpVersion::V3;
    let lab = Lab::up(&tag, &[v3, v3, v3]).expect("lab up");
    lab.router.ip(&["link", "del", "dn2"]).unwrap();
    let config = ConfigFile(std::env::temp_dir().join(format!("mgm-{tag}.toml")));
    std::fs::write(&config.0, BEFORE).unwrap();
    let mut daemon = start(&tag, &lab, &config.0);
    if let Err(e) = daemon.wait_for("manages dn2 once it appears", PATIENCE) {
        fail(&daemon, &format!("{e:#}"));
    }
    // The kernel host on dn1 joins G and G2, then G0; G0's stream shows the joins were heard.
    // Joining a group or opening a socket in a namespace may want rtnl: all done now.
    let receiver = || Receiver::new(&lab.receivers[0], receiver_addr(0)).unwrap();
    let (joined, joined2, shown) = (receiver(), receiver(), receiver());
    joined.join(G).unwrap();
    joined2.join(G2).unwrap();
    shown.join(G0).unwrap();
    let before = Stream::start(&lab, G0);
    let mut heard = Counter::start(shown, G0);
    if !heard.more(20, PATIENCE) {
        fail(&daemon, "the host on dn1 never got its first stream");
    }
    let (mut counter, mut counter2) = (Counter::start(joined, G), Counter::start(joined2, G2));
    let sender = || Sender::new(&lab.sender, SENDER_ADDR, 8).unwrap();
    let (tx, tx2) = (sender(), sender());

    // dn2 appears while mgm is stopped, so its announcement waits in mgm's socket until rtnl
    // is held; resumed, mgm takes it at once, and dn2's attach waits for rtnl.
    let stopped = Stopped::new(daemon.pid());
    lab.rewire_downstream(1, "dn2", v3).unwrap();
    let Some(held) = hold(&lab) else {
        return;
    };
    stopped.go_on();
    let first = served_while_held(
        &mut daemon,
        held,
        (tx, G, &mut counter),
        "dn2 appeared",
        ("dn2 exists now", "dn2 appeared"),
    );

    // A reload adds dn3, which exists: the reload completes while rtnl is held, and dn3's
    // lookup and attach wait for rtnl.
    std::fs::write(&config.0, AFTER).unwrap();
    let Some(held) = hold(&lab) else {
        return;
    };
    daemon.hang_up();
    if let Err(e) = daemon.wait_for("reload: downstream added: dn3", WITHIN) {
        drop(held);
        fail(&daemon, &format!("the reload waited on rtnl: {e:#}"));
    }
    let second = served_while_held(
        &mut daemon,
        held,
        (tx2, G2, &mut counter2),
        "a reload added dn3",
        ("reload: downstream added: dn3", "dn3 appeared"),
    );
    drop((first, second, before));
}

fn start(tag: &str, lab: &Lab, config: &Path) -> Daemon {
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let config_arg = config.display().to_string();
    let mut extra = vec!["--config", &config_arg];
    extra.extend(FAST_IGMP);
    Daemon::start_as(&mgm_bin(), lab, &pin_dir, &[], &extra, false).expect("mgm")
}
