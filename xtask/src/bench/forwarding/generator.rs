//! The traffic generator: the `bench_gen` XDP program run by BPF_PROG_TEST_RUN in live-frames
//! mode on the sender's interface. The kernel builds frames from one buffer in a page pool,
//! runs the program on each and, for `XDP_TX`, transmits it out of that interface, so frames
//! reach the router's veth as from a NIC, with no socket or qdisc in between, at a few Mpps
//! from one CPU. The program stores the whole header before each `XDP_TX` because pages come
//! back from the router with the TTL, checksum and MACs it rewrote.
//!
//! The same object feeds the router directly ([`Generator::feed`]): `bench_feed`, run the same
//! way on the router's ingress interface, tail-calls the forwarder under test (or passes the
//! frame to the kernel's stack), so the kernel times the router's whole forwarding path on
//! one CPU, with no wake-ups between CPUs and no ring between generator and router.
//!
//! Some kernel builds refuse live-frames test runs (EPERM even to root). There the frames go
//! out of an AF_PACKET socket on the same interface instead ([`PacketSocket`]): the same bytes,
//! built once, handed to the veth by `sendmmsg` past the qdisc. Each frame then costs the
//! sender an skb, so it offers less; and the router's veth receives skbs, which it copies into
//! a page before an XDP program runs. Nothing can feed the router directly there: a plain test
//! run performs no redirect and transmits nothing.

use std::{
    io,
    marker::PhantomData,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use aya::{
    maps::{Array, MapData, ProgramArray},
    programs::{
        ProgramError, ProgramFd, TestRun, TestRunAttrs, TestRunOptions, TestRunResult, Xdp,
    },
    Ebpf, EbpfLoader,
};
use mgm_common::bench::{self as b, GenTemplate, GEN_GROUP_AT, GEN_HEADER_LEN, GEN_IP_CSUM_AT};
use serde_json::{json, Value};

use super::cpu;
use crate::lab::{Netns, HOST_IF};

/// Frames per test-run call: long enough that the per-call setup does not count, short enough
/// to stop close to the requested duration.
const FRAMES_PER_CALL: u32 = 1 << 16;
/// Frames the kernel builds and transmits per batch (its maximum is 256).
const BATCH: u32 = 64;
/// Frames per call of [`Generator::send_to_each`], under the 256 of a veth ring.
const PACED_PER_CALL: u32 = 128;
/// After each such call: about what a router takes to resolve that many new entries.
const PACED_PAUSE: Duration = Duration::from_millis(1);
/// Frames per feeding call: ipmr at fan-out 8 takes about 15 µs a frame, so a call stays well
/// under a second.
const FEED_PER_CALL: u32 = 1 << 13;
/// Frames per `sendmmsg` of the socket generator: a live-frames batch.
const SOCKET_BATCH: usize = BATCH as usize;
/// The socket generator's send buffer: more than the skbs of full veth rings take.
const SEND_BUFFER: libc::c_int = 256 << 20;

/// The loaded generator.
pub struct Generator {
    ebpf: Ebpf,
    /// `bench_feed`'s one slot: the forwarder it hands frames to.
    feed_next: ProgramArray<MapData>,
    /// The header `bench_gen` and `bench_feed` store into every frame.
    template: Array<MapData, GenTemplate>,
    /// The groups [`Generator::send_to_each`] cycles through.
    groups: Array<MapData, u32>,
    /// The frame handed to the kernel: the header plus zeroed payload.
    frame: Vec<u8>,
    /// How frames leave the sender.
    sender: Sender,
}

/// How the generator's frames leave the sender's interface.
enum Sender {
    /// `bench_gen` in live-frames test runs.
    LiveFrames,
    /// An AF_PACKET socket, where the kernel refuses live-frames test runs (why: `refused`).
    Socket {
        socket: PacketSocket,
        refused: String,
    },
}

/// What one [`Generator::send`] offered.
#[derive(Debug, Clone, Copy)]
pub struct Offered {
    /// Frames handed to the sender's interface: every frame built in live-frames mode, every
    /// frame the socket took otherwise (the veth's refusals are in its tx_dropped).
    pub frames: u64,
    pub seconds: f64,
    /// The sending thread's CPU time over `seconds`: how much of its CPU the generator got.
    pub cpu_share: f64,
}

/// What one [`Generator::feed`] measured.
#[derive(Debug, Clone, Copy)]
pub struct Fed {
    pub frames: u64,
    /// The kernel's time for the forwarding path, per frame: the program run, the redirect or
    /// the stack, and every copy's transmit, on the calling CPU.
    pub ns_per_frame: f64,
    /// The thread that fed, to find its samples in a perf recording.
    pub tid: libc::pid_t,
}

/// A UDP frame of `len` bytes (Ethernet header included, no FCS) from `source`/`src_mac` to
/// `group`, TTL 64, with a valid IPv4 checksum and no UDP checksum (0, allowed in IPv4).
pub fn udp_frame(src_mac: [u8; 6], source: Ipv4Addr, group: Ipv4Addr, len: usize) -> Vec<u8> {
    let g = group.octets();
    let mut f = vec![0u8; len.max(GEN_HEADER_LEN)];
    f[..6].copy_from_slice(&[0x01, 0x00, 0x5e, g[1] & 0x7f, g[2], g[3]]);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = (f.len() - 14) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&source.octets());
    ip[16..20].copy_from_slice(&g);
    let sum = ipv4_checksum(&f);
    f[GEN_IP_CSUM_AT..GEN_IP_CSUM_AT + 2].copy_from_slice(&sum.to_be_bytes());
    let udp_len = ip_len - 20;
    let port = crate::lab::traffic::PORT.to_be_bytes();
    f[34..36].copy_from_slice(&port);
    f[36..38].copy_from_slice(&port);
    f[38..40].copy_from_slice(&udp_len.to_be_bytes());
    f
}

/// The IPv4 header checksum of `frame` (20 bytes after the Ethernet header), its own field
/// taken as 0.
fn ipv4_checksum(frame: &[u8]) -> u16 {
    let mut sum: u32 = (14..34)
        .step_by(2)
        .filter(|&at| at != GEN_IP_CSUM_AT)
        .map(|at| u32::from(u16::from_be_bytes([frame[at], frame[at + 1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// `frame` sent to `group`: what `bench_gen` makes of the template when it cycles through
/// groups (destination and IPv4 checksum; the destination MAC stays the template's).
fn with_group(frame: &[u8], group: Ipv4Addr) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(
        frame.len() >= GEN_HEADER_LEN,
        "a frame shorter than its headers"
    );
    let mut f = frame.to_vec();
    f[GEN_GROUP_AT..GEN_GROUP_AT + 4].copy_from_slice(&group.octets());
    let sum = ipv4_checksum(&f);
    f[GEN_IP_CSUM_AT..GEN_IP_CSUM_AT + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(f)
}

impl Generator {
    /// Loads `bench_gen` and `bench_feed` from the bench object with `frame` set, and tries one
    /// live-frames run of it out of the interface of `sender`: where the kernel refuses
    /// those, frames go out of an AF_PACKET socket instead.
    ///
    /// # Errors
    /// The object does not load or lacks the program or its map, the probe failed otherwise
    /// than by a refusal, or the socket cannot be opened.
    pub fn load(object: &Path, sender: &Netns, frame: Vec<u8>) -> anyhow::Result<Generator> {
        let mut ebpf = EbpfLoader::new()
            .load_file(object)
            .with_context(|| format!("cannot load {}", object.display()))?;
        let prog: &mut Xdp = ebpf
            .program_mut("bench_gen")
            .context("no bench_gen in the bench object")?
            .try_into()?;
        prog.load().context("the verifier rejected bench_gen")?;
        let feed: &mut Xdp = ebpf
            .program_mut("bench_feed")
            .context("no bench_feed in the bench object")?
            .try_into()?;
        feed.load().context("the verifier rejected bench_feed")?;
        let feed_next = ProgramArray::try_from(
            ebpf.take_map(b::FEED_NEXT)
                .context("no feeder slot map in the bench object")?,
        )?;
        let template = Array::try_from(
            ebpf.take_map(b::GEN_TEMPLATE)
                .context("no template map in the bench object")?,
        )?;
        let groups = Array::try_from(
            ebpf.take_map(b::GEN_GROUPS)
                .context("no group list in the bench object")?,
        )?;
        let mut generator = Generator {
            ebpf,
            feed_next,
            template,
            groups,
            frame: Vec::new(),
            sender: Sender::LiveFrames,
        };
        generator.set_frame(frame)?;
        if let Some(refused) = generator.probe_live_frames(sender)? {
            let socket = sender.run(|| PacketSocket::open(HOST_IF))??;
            generator.sender = Sender::Socket { socket, refused };
        }
        Ok(generator)
    }

    /// One live-frames run of the frame, out of the sender's interface: why the kernel refused
    /// it, if it did.
    fn probe_live_frames(&self, sender: &Netns) -> anyhow::Result<Option<String>> {
        let (prog, frame) = (program(&self.ebpf, "bench_gen")?, &self.frame);
        sender.run(|| -> anyhow::Result<Option<String>> {
            let ctx = xdp_md(HOST_IF, frame.len())?;
            match live_run(prog, frame, &ctx, 1) {
                Ok(_) => Ok(None),
                Err(e) => match refusal(&e) {
                    Some(why) => Ok(Some(why)),
                    None => Err(e).context("the live-frames probe of bench_gen failed"),
                },
            }
        })?
    }

    /// Why the kernel refused live-frames test runs, where it did: frames then go out of a
    /// socket, and [`Generator::feed`] cannot run.
    pub fn live_frames_refused(&self) -> Option<&str> {
        match &self.sender {
            Sender::LiveFrames => None,
            Sender::Socket { refused, .. } => Some(refused),
        }
    }

    /// Which generator sends, and why: one line for the output.
    pub fn announce(&self) -> String {
        match &self.sender {
            Sender::LiveFrames => "generator: bench_gen in live-frames test runs (XDP_TX out of the sender's eth0)".into(),
            Sender::Socket { refused, .. } => format!(
                "generator: an AF_PACKET socket on the sender's eth0 (PACKET_QDISC_BYPASS, sendmmsg of {SOCKET_BATCH} frames): {refused}"
            ),
        }
    }

    /// What results.json says of the generator.
    pub fn describe(&self) -> Value {
        match &self.sender {
            Sender::LiveFrames => json!({
                "kind": "live_frames",
                "detail": format!("bench_gen by BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES (batches of {BATCH}), XDP_TX out of the sender's eth0"),
            }),
            Sender::Socket { refused, .. } => json!({
                "kind": "af_packet",
                "detail": format!("AF_PACKET SOCK_RAW on the sender's eth0, PACKET_QDISC_BYPASS, sendmmsg of {SOCKET_BATCH} frames built once from the template"),
                "why": refused,
            }),
        }
    }

    /// Sets the frame to send.
    ///
    /// # Errors
    /// The template map cannot be written.
    pub fn set_frame(&mut self, frame: Vec<u8>) -> anyhow::Result<()> {
        set_template(&mut self.template, &frame, 0)?;
        self.frame = frame;
        Ok(())
    }

    /// Sends the frame out of the sender's interface for `duration` (at least one call), from
    /// a thread inside `sender` pinned to the host CPU, as fast as the kernel takes frames.
    ///
    /// # Errors
    /// No frame was set, or the test run or the socket failed.
    pub fn send(&self, sender: &Netns, duration: Duration) -> anyhow::Result<Offered> {
        anyhow::ensure!(!self.frame.is_empty(), "no frame set for the generator");
        let frame = self.frame.as_slice();
        let prog = program(&self.ebpf, "bench_gen")?;
        sender.run(|| -> anyhow::Result<Offered> {
            cpu::pin_current(cpu::HOST_CPU)?;
            cpu::idle_priority()?;
            let (start, cpu_start) = (Instant::now(), thread_cpu_seconds());
            let mut frames = 0u64;
            match &self.sender {
                Sender::LiveFrames => {
                    // XDP_TX goes out of the ingress interface.
                    let ctx = xdp_md(HOST_IF, frame.len())?;
                    while frames == 0 || start.elapsed() < duration {
                        live_run(prog, frame, &ctx, FRAMES_PER_CALL)
                            .context("live-frames test run of bench_gen failed")?;
                        frames += u64::from(FRAMES_PER_CALL);
                    }
                }
                Sender::Socket { socket, .. } => {
                    // All the same frame: after a refusal, sending on from the first is right.
                    let mut batch = Batch::new(&socket.to, &[frame; SOCKET_BATCH]);
                    while frames == 0 || start.elapsed() < duration {
                        frames += socket.send(&mut batch, 0)? as u64;
                    }
                }
            }
            let seconds = start.elapsed().as_secs_f64();
            Ok(Offered {
                frames,
                seconds,
                cpu_share: (thread_cpu_seconds() - cpu_start) / seconds,
            })
        })?
    }

    /// Sends one frame to each of `groups`: the frame set by [`Generator::set_frame`] with
    /// each group in turn as destination, in calls of [`PACED_PER_CALL`] frames with a pause
    /// after each, so that they arrive at the pace of a router that resolves a new entry for
    /// each, and none is lost at its ring as in a burst from [`Generator::send`].
    ///
    /// # Errors
    /// Too many groups, a map cannot be written, or a test run or the socket failed.
    pub fn send_to_each(&mut self, sender: &Netns, groups: &[Ipv4Addr]) -> anyhow::Result<()> {
        anyhow::ensure!(!self.frame.is_empty(), "no frame set for the generator");
        if let Sender::Socket { socket, .. } = &self.sender {
            let frames = groups
                .iter()
                .map(|&g| with_group(&self.frame, g))
                .collect::<anyhow::Result<Vec<_>>>()?;
            return sender.run(|| -> anyhow::Result<()> {
                cpu::pin_current(cpu::HOST_CPU)?;
                for call in frames.chunks(PACED_PER_CALL as usize) {
                    let call: Vec<&[u8]> = call.iter().map(Vec::as_slice).collect();
                    let mut batch = Batch::new(&socket.to, &call);
                    // A refused frame is sent again: each group needs its frame.
                    let mut at = 0;
                    while at < call.len() {
                        at += socket.send(&mut batch, at)?;
                    }
                    std::thread::sleep(PACED_PAUSE);
                }
                Ok(())
            })?;
        }
        let n = u32::try_from(groups.len())
            .ok()
            .filter(|&n| n <= b::GEN_GROUPS_SIZE)
            .with_context(|| format!("at most {} groups at once", b::GEN_GROUPS_SIZE))?;
        for (i, g) in (0u32..).zip(groups) {
            self.groups
                .set(i, u32::from_ne_bytes(g.octets()), 0)
                .context("cannot write the generator's groups")?;
        }
        set_template(&mut self.template, &self.frame, n)?;
        let (prog, frame) = (program(&self.ebpf, "bench_gen")?, &self.frame);
        let sent = sender.run(|| -> anyhow::Result<()> {
            cpu::pin_current(cpu::HOST_CPU)?;
            let ctx = xdp_md(HOST_IF, frame.len())?;
            let mut left = n;
            while left > 0 {
                let calls = left.min(PACED_PER_CALL);
                live_run(prog, frame, &ctx, calls)
                    .context("live-frames test run of bench_gen failed")?;
                left -= calls;
                std::thread::sleep(PACED_PAUSE);
            }
            Ok(())
        });
        // Back to the one frame, also when sending failed.
        set_template(&mut self.template, &self.frame, 0)?;
        sent?
    }

    /// Feeds the frame to `ifname` in `router` for `duration` (at least one call) from a
    /// thread pinned to `cpu`: each frame gets the template header and goes to `next`, the
    /// XDP program under test, or with none to the kernel's stack.
    ///
    /// # Errors
    /// The kernel refuses live-frames test runs, no frame was set, the slot cannot be
    /// written, or the test run failed.
    pub fn feed(
        &mut self,
        router: &Netns,
        ifname: &str,
        next: Option<&ProgramFd>,
        cpu: usize,
        duration: Duration,
    ) -> anyhow::Result<Fed> {
        if let Some(why) = self.live_frames_refused() {
            bail!("the router cannot be fed directly: {why}");
        }
        anyhow::ensure!(!self.frame.is_empty(), "no frame set for the feeder");
        if let Some(fd) = next {
            self.feed_next
                .set(0, fd, 0)
                .context("cannot set the feeder's forwarder")?;
        }
        let (prog, frame) = (program(&self.ebpf, "bench_feed")?, &self.frame);
        let fed = router.run(|| -> anyhow::Result<Fed> {
            cpu::pin_current(cpu)?;
            let ctx = xdp_md(ifname, frame.len())?;
            let start = Instant::now();
            let (mut frames, mut ns) = (0u64, 0f64);
            while frames == 0 || start.elapsed() < duration {
                let run = live_run(prog, frame, &ctx, FEED_PER_CALL)
                    .context("live-frames test run of bench_feed failed")?;
                frames += u64::from(FEED_PER_CALL);
                ns += run.duration.as_nanos() as f64 * f64::from(FEED_PER_CALL);
            }
            Ok(Fed {
                frames,
                ns_per_frame: ns / frames as f64,
                // SAFETY: no preconditions.
                tid: unsafe { libc::gettid() },
            })
        });
        // The slot holds a reference to the forwarder's program: let it go with its forwarder.
        // Clearing an empty slot fails, which is fine.
        let _ = self.feed_next.clear_index(&0);
        fed?
    }
}

/// Why a live-frames test run failed, when the failure says the kernel refuses the mode
/// (rather than that something else went wrong).
fn refusal(e: &ProgramError) -> Option<String> {
    let ProgramError::SyscallError(e) = e else {
        return None;
    };
    matches!(
        e.io_error.raw_os_error(),
        Some(libc::EPERM | libc::EOPNOTSUPP | libc::EINVAL)
    )
    .then(|| {
        format!(
            "this kernel refuses live-frames test runs (BPF_F_TEST_XDP_LIVE_FRAMES: {})",
            e.io_error
        )
    })
}

/// An AF_PACKET socket that sends whole frames out of one interface, past its qdisc: a veth
/// has none, and the frames reach the router's ring as directly as a socket allows.
struct PacketSocket {
    fd: OwnedFd,
    /// Every frame's address: the interface, and IPv4 as the protocol (the frame carries its
    /// own Ethernet header).
    to: libc::sockaddr_ll,
}

impl PacketSocket {
    /// Opens it on `ifname` in the calling thread's namespace, where it stays. Protocol 0: it
    /// receives nothing.
    fn open(ifname: &str) -> anyhow::Result<PacketSocket> {
        // SAFETY: no pointers.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("cannot open an AF_PACKET socket");
        }
        // SAFETY: a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        set_option(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)
            .context("cannot set PACKET_QDISC_BYPASS")?;
        // Each frame's skb holds send buffer until the router or a receiver frees it. With the
        // default buffer the sender would sleep on it and every free would wake it, a cost
        // that falls on the router's CPU; with room for more than the rings hold it never
        // sleeps, and the router's ring alone refuses frames, as with live frames.
        set_option(&fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, SEND_BUFFER)
            .context("cannot set SO_SNDBUFFORCE")?;
        // SAFETY: sockaddr_ll is plain data; zero is valid.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        to.sll_ifindex = ifindex(ifname)? as libc::c_int;
        Ok(PacketSocket { fd, to })
    }

    /// One `sendmmsg` of `batch`'s frames from the `at`th: how many the socket took. A frame
    /// the veth refused (its peer's ring full; counted in its tx_dropped) ends the call, and
    /// fails it when it is the first, which is 0 taken here: the caller sends on.
    fn send(&self, batch: &mut Batch<'_>, at: usize) -> anyhow::Result<usize> {
        let msgs = &mut batch.msgs[at..];
        // SAFETY: each message points at the batch's address, iovec and frame, which the batch
        // keeps alive and in place while it is borrowed.
        let n = unsafe {
            libc::sendmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                msgs.len() as libc::c_uint,
                0,
            )
        };
        if let Ok(n) = usize::try_from(n) {
            return Ok(n);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOBUFS | libc::EINTR) => Ok(0),
            _ => Err(err).context("sendmmsg on the sender's AF_PACKET socket failed"),
        }
    }
}

/// Sets the integer socket option `name` at `level` on `fd`.
fn set_option(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` outlives the call, which reads its size.
    let set = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `sendmmsg`'s messages for a list of frames, one each, all to one address. The messages
/// point into the boxed address and the iovecs' buffer, which stay in place when the batch
/// moves, and at the frames, which the lifetime keeps alive.
struct Batch<'f> {
    msgs: Vec<libc::mmsghdr>,
    _iovs: Vec<libc::iovec>,
    _to: Box<libc::sockaddr_ll>,
    _frames: PhantomData<&'f [u8]>,
}

impl<'f> Batch<'f> {
    fn new(to: &libc::sockaddr_ll, frames: &[&'f [u8]]) -> Batch<'f> {
        let mut to = Box::new(*to);
        let name: *mut libc::sockaddr_ll = &mut *to;
        let mut iovs: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr().cast_mut().cast(),
                iov_len: f.len(),
            })
            .collect();
        let msgs = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: mmsghdr is plain data; zero is valid.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = name.cast();
                m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        Batch {
            msgs,
            _iovs: iovs,
            _to: to,
            _frames: PhantomData,
        }
    }
}

/// The loaded program `name` of the bench object.
fn program<'e>(ebpf: &'e Ebpf, name: &str) -> anyhow::Result<&'e Xdp> {
    let prog = ebpf
        .program(name)
        .with_context(|| format!("no {name} in the bench object"))?;
    Ok(prog.try_into()?)
}

/// Makes `frame`'s header the one the programs store into every frame, with the first
/// `groups` of the group list in turn as destination when `groups` is more than 0.
fn set_template(
    template: &mut Array<MapData, GenTemplate>,
    frame: &[u8],
    groups: u32,
) -> anyhow::Result<()> {
    let mut header = [0u8; GEN_HEADER_LEN];
    header.copy_from_slice(
        frame
            .get(..GEN_HEADER_LEN)
            .context("a frame shorter than its headers")?,
    );
    template
        .set(
            0,
            GenTemplate {
                header,
                _pad: [0; 2],
                groups,
                seq: 0,
            },
            0,
        )
        .context("cannot write the generator's template")
}

/// `n` frames built from `frame` in live-frames mode, in batches of [`BATCH`].
fn live_run(prog: &Xdp, frame: &[u8], ctx: &[u8], n: u32) -> Result<TestRunResult, ProgramError> {
    prog.test_run(TestRunOptions {
        data_in: Some(frame),
        ctx_in: Some(ctx),
        repeat: n,
        attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
        ..TestRunOptions::new()
    })
}

/// The calling thread's CPU time.
fn thread_cpu_seconds() -> f64 {
    // SAFETY: timespec is plain data; zero is valid.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `t` outlives the call; this clock always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// The index of `ifname` in the calling thread's namespace.
fn ifindex(ifname: &str) -> anyhow::Result<u32> {
    let name = std::ffi::CString::new(ifname)?;
    // SAFETY: `name` is NUL-terminated.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    anyhow::ensure!(ifindex != 0, "no interface {ifname}");
    Ok(ifindex)
}

/// A test run's `struct xdp_md` for a frame of `len` bytes arriving on `ifname` (in the
/// calling thread's namespace): data, data_end, data_meta, ingress_ifindex, rx_queue_index,
/// egress_ifindex.
fn xdp_md(ifname: &str, len: usize) -> anyhow::Result<Vec<u8>> {
    let md: [u32; 6] = [0, len as u32, 0, ifindex(ifname)?, 0, 0];
    Ok(md.iter().flat_map(|v| v.to_ne_bytes()).collect())
}

#[cfg(test)]
mod tests {
    use aya::sys::SyscallError;

    use super::*;

    const SOURCE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

    #[test]
    fn frames_to_each_group_are_the_template_with_its_destination_and_checksum() {
        let (a, b) = (Ipv4Addr::new(239, 1, 1, 1), Ipv4Addr::new(239, 2, 3, 4));
        let template = udp_frame(MAC, SOURCE, a, 64);
        let to_b = with_group(&template, b).expect("a whole header");
        let built = udp_frame(MAC, SOURCE, b, 64);
        // As bench_gen does: only the group and the checksum change, not the MAC.
        assert_eq!(to_b[..6], template[..6]);
        assert_eq!(to_b[6..], built[6..]);
        assert_eq!(ipv4_checksum(&to_b).to_be_bytes(), to_b[24..26]);
        assert!(with_group(&template[..GEN_HEADER_LEN - 1], b).is_err());
    }

    #[test]
    fn checksum_folds_carries() {
        let mut f = udp_frame(MAC, SOURCE, Ipv4Addr::new(239, 255, 255, 255), 1514);
        f[26..30].copy_from_slice(&[0xff; 4]);
        let sum = ipv4_checksum(&f);
        f[24..26].copy_from_slice(&sum.to_be_bytes());
        // The ones' complement sum of a header with its checksum in place is 0xffff.
        let total: u32 = f[14..34]
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        assert_eq!((total & 0xffff) + (total >> 16), 0xffff);
    }

    #[test]
    fn a_batch_sends_each_frame_whole_to_the_one_address() {
        // SAFETY: sockaddr_ll is plain data; zero is valid.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_ifindex = 7;
        let (one, two) = (vec![1u8; 64], vec![2u8; 1514]);
        let batch = Batch::new(&to, &[&one, &two, &one]);
        assert_eq!(batch.msgs.len(), 3);
        for (m, f) in batch.msgs.iter().zip([&one, &two, &one]) {
            let h = &m.msg_hdr;
            assert_eq!(h.msg_iovlen, 1);
            // SAFETY: the batch keeps its iovecs alive.
            let iov = unsafe { &*h.msg_iov };
            assert_eq!(
                (iov.iov_base.cast_const().cast(), iov.iov_len),
                (f.as_ptr(), f.len())
            );
            // SAFETY: the batch keeps its address alive.
            assert_eq!(
                unsafe { (*h.msg_name.cast::<libc::sockaddr_ll>()).sll_ifindex },
                7
            );
        }
    }

    #[test]
    fn only_a_refusal_of_the_mode_falls_back() {
        let failed = |errno| {
            ProgramError::SyscallError(SyscallError {
                call: "bpf_prog_test_run",
                io_error: io::Error::from_raw_os_error(errno),
            })
        };
        for errno in [libc::EPERM, libc::EOPNOTSUPP, libc::EINVAL] {
            assert!(refusal(&failed(errno)).is_some(), "errno {errno}");
        }
        assert!(refusal(&failed(libc::ENOMEM)).is_none());
        assert!(refusal(&ProgramError::NotLoaded).is_none());
    }
}
