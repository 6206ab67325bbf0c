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

use std::{
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context;
use aya::{
    maps::{Array, MapData, ProgramArray},
    programs::{
        ProgramError, ProgramFd, TestRun, TestRunAttrs, TestRunOptions, TestRunResult, Xdp,
    },
    Ebpf, EbpfLoader,
};
use mgm_common::bench::{self as b, GenTemplate, GEN_HEADER_LEN};

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
}

/// What one [`Generator::send`] offered.
#[derive(Debug, Clone, Copy)]
pub struct Offered {
    pub frames: u64,
    pub seconds: f64,
}

impl Offered {
    pub fn rate(&self) -> f64 {
        self.frames as f64 / self.seconds
    }
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
    let mut sum: u32 = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let udp_len = ip_len - 20;
    let port = crate::lab::traffic::PORT.to_be_bytes();
    f[34..36].copy_from_slice(&port);
    f[36..38].copy_from_slice(&port);
    f[38..40].copy_from_slice(&udp_len.to_be_bytes());
    f
}

impl Generator {
    /// Loads `bench_gen` from the bench object.
    ///
    /// # Errors
    /// The object does not load or lacks the program or its map.
    pub fn load(object: &Path) -> anyhow::Result<Generator> {
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
        Ok(Generator {
            ebpf,
            feed_next,
            template,
            groups,
            frame: Vec::new(),
        })
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
    /// No frame was set, or the test run failed.
    pub fn send(&self, sender: &Netns, duration: Duration) -> anyhow::Result<Offered> {
        anyhow::ensure!(!self.frame.is_empty(), "no frame set for the generator");
        let (prog, frame) = (program(&self.ebpf, "bench_gen")?, &self.frame);
        sender.run(|| -> anyhow::Result<Offered> {
            cpu::pin_current(cpu::HOST_CPU)?;
            cpu::idle_priority()?;
            // XDP_TX goes out of the ingress interface.
            let ctx = xdp_md(HOST_IF, frame.len())?;
            let start = Instant::now();
            let mut frames = 0u64;
            while frames == 0 || start.elapsed() < duration {
                live_run(prog, frame, &ctx, FRAMES_PER_CALL)
                    .context("live-frames test run of bench_gen failed")?;
                frames += u64::from(FRAMES_PER_CALL);
            }
            Ok(Offered {
                frames,
                seconds: start.elapsed().as_secs_f64(),
            })
        })?
    }

    /// Sends one frame to each of `groups`: the frame set by [`Generator::set_frame`] with
    /// each group in turn as destination, in calls of [`PACED_PER_CALL`] frames with a pause
    /// after each, so that they arrive at the pace of a router that resolves a new entry for
    /// each, and none is lost at its ring as in a burst from [`Generator::send`].
    ///
    /// # Errors
    /// Too many groups, a map cannot be written, or a test run failed.
    pub fn send_to_each(&mut self, sender: &Netns, groups: &[Ipv4Addr]) -> anyhow::Result<()> {
        anyhow::ensure!(!self.frame.is_empty(), "no frame set for the generator");
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
    /// No frame was set, the slot cannot be written, or the test run failed.
    pub fn feed(
        &mut self,
        router: &Netns,
        ifname: &str,
        next: Option<&ProgramFd>,
        cpu: usize,
        duration: Duration,
    ) -> anyhow::Result<Fed> {
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

/// A test run's `struct xdp_md` for a frame of `len` bytes arriving on `ifname` (in the
/// calling thread's namespace): data, data_end, data_meta, ingress_ifindex, rx_queue_index,
/// egress_ifindex.
fn xdp_md(ifname: &str, len: usize) -> anyhow::Result<Vec<u8>> {
    let name = std::ffi::CString::new(ifname)?;
    // SAFETY: `name` is NUL-terminated.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    anyhow::ensure!(ifindex != 0, "no interface {ifname}");
    let md: [u32; 6] = [0, len as u32, 0, ifindex, 0, 0];
    Ok(md.iter().flat_map(|v| v.to_ne_bytes()).collect())
}
