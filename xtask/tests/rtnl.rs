//! The event loop never waits on the kernel's rtnl lock for an interface that appears (issue
//! 19), under the real `mgm` binary: while another process holds rtnl, a managed downstream
//! appears, and a new stream to a kernel IGMP host on another downstream is forwarded within
//! 1 s; dn2's attach completes once rtnl is free. Needs root and userfaultfd; run through
//! `cargo xtask test`.
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
    path::PathBuf,
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

/// The host on dn1 joins it; its stream starts while rtnl is held.
const G: Ipv4Addr = Ipv4Addr::new(239, 6, 6, 6);
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

const SELF: &str =
    "rtnl::a_new_stream_is_forwarded_within_a_second_while_rtnl_is_held_and_an_interface_appears";

#[test]
fn a_new_stream_is_forwarded_within_a_second_while_rtnl_is_held_and_an_interface_appears() {
    let tag = unique_tag("t");
    let lab = Lab::up(&tag, &[IgmpVersion::V3, IgmpVersion::V3]).expect("lab up");
    // dn2 does not exist when mgm starts.
    lab.router.ip(&["link", "del", "dn2"]).unwrap();
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mgm-{tag}"));
    let mut daemon = Daemon::start(&mgm_bin(), &lab, &pin_dir, &FAST_IGMP, false).expect("mgm");
    if let Err(e) = daemon.wait_for("manages dn2 once it appears", PATIENCE) {
        fail(&daemon, &format!("{e:#}"));
    }
    // The kernel host on dn1 joins G, then G0; G0's stream shows both joins were heard.
    let joined = Receiver::new(&lab.receivers[0], receiver_addr(0)).unwrap();
    joined.join(G).unwrap();
    let shown = Receiver::new(&lab.receivers[0], receiver_addr(0)).unwrap();
    shown.join(G0).unwrap();
    let before = Stream::start(&lab, G0);
    let mut heard = Counter::start(shown, G0);
    if !heard.more(20, PATIENCE) {
        fail(&daemon, "the host on dn1 never got its first stream");
    }
    let mut counter = Counter::start(joined, G);
    // Opened now: joining a group or opening a socket in a namespace may want rtnl.
    let tx = Sender::new(&lab.sender, SENDER_ADDR, 8).unwrap();

    // dn2 appears while mgm is stopped, so its announcement waits in mgm's socket until
    // rtnl is held.
    let stopped = Stopped::new(daemon.pid());
    lab.rewire_downstream(1, "dn2", IgmpVersion::V3).unwrap();
    let held = match RtnlHeld::take(&lab.receivers[0], HOST_IF) {
        Ok(Some(held)) => held,
        Ok(None) => {
            announce_skip(
                SELF,
                "this kernel's ethtool ioctl does not copy its answer under rtnl",
            );
            return;
        }
        Err(e) => {
            announce_skip(
                SELF,
                &format!("cannot hold rtnl through userfaultfd: {e:#}"),
            );
            return;
        }
    };
    // mgm goes on: it takes dn2's announcement at once (it waits in its socket), and the
    // attach of dn2 waits for rtnl; the loop must not, so the new stream's first packet (an
    // upcall) is served.
    stopped.go_on();
    let started = Instant::now();
    let stream = Stream::from_sender(tx, G);
    let forwarded = counter.more(1, WITHIN);
    let took = started.elapsed();
    // Its log line may reach this test after the datagram.
    let taken = forwarded && daemon.wait_for("dn2 exists now", PATIENCE).is_ok();
    let attached_meanwhile = daemon.log().iter().any(|l| l.contains("dn2 appeared"));
    drop(held);
    if !forwarded {
        fail(
            &daemon,
            &format!(
                "a new stream to the host on dn1 was not forwarded within {WITHIN:?} while \
                 rtnl was held and dn2 appeared"
            ),
        );
    }
    assert!(
        taken && !attached_meanwhile,
        "dn2's announcement taken: {taken}, dn2 attached while rtnl was held: \
         {attached_meanwhile} (then the test held nothing)"
    );
    // With rtnl free, dn2's attach completes.
    if let Err(e) = daemon.wait_for("dn2 appeared", PATIENCE) {
        fail(&daemon, &format!("dn2 was never attached: {e:#}"));
    }
    drop(stream);
    drop(before);
    println!("first datagram of the new stream after {took:?} with rtnl held");
}
