//! The traffic generator: the `bench_gen` XDP program run by BPF_PROG_TEST_RUN in live-frames
//! mode on the sender's interface. The kernel builds frames from one buffer in a page pool,
//! runs the program on each and, for `XDP_TX`, transmits it out of that interface, so frames
//! reach the router's veth as from a NIC, with no socket or qdisc in between, at a few Mpps
//! from one CPU. The program stores the whole header before each `XDP_TX` because pages come
//! back from the router with the TTL, checksum and MACs it rewrote.

use std::{
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context;
use aya::{
    maps::{Array, MapData},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
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

/// The loaded generator.
pub struct Generator {
    ebpf: Ebpf,
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
        Ok(Generator {
            ebpf,
            frame: Vec::new(),
        })
    }

    /// Sets the frame to send; with `sweep` > 1, frame n goes to group + n % sweep.
    ///
    /// # Errors
    /// The template map is missing or cannot be written.
    pub fn set_frame(&mut self, frame: Vec<u8>, sweep: u32) -> anyhow::Result<()> {
        let mut template: Array<&mut MapData, GenTemplate> = Array::try_from(
            self.ebpf
                .map_mut(b::GEN_TEMPLATE)
                .context("no template map in the bench object")?,
        )?;
        let mut header = [0u8; GEN_HEADER_LEN];
        header.copy_from_slice(&frame[..GEN_HEADER_LEN]);
        template.set(
            0,
            GenTemplate {
                header,
                _pad: [0; 2],
                sweep,
                seq: 0,
            },
            0,
        )?;
        self.frame = frame;
        Ok(())
    }

    /// Sends the frame out of the sender's interface for `duration` (at least one call), from
    /// a thread inside `sender` pinned to the host CPU, as fast as the kernel takes frames.
    ///
    /// # Errors
    /// No frame was set, or the test run failed.
    pub fn send(&self, sender: &Netns, duration: Duration) -> anyhow::Result<Offered> {
        self.send_frames(sender, duration, u64::MAX)
    }

    /// Like [`Generator::send`], but stops after `limit` frames (rounded up to whole calls of
    /// up to [`FRAMES_PER_CALL`]).
    ///
    /// # Errors
    /// As for [`Generator::send`].
    pub fn send_frames(
        &self,
        sender: &Netns,
        duration: Duration,
        limit: u64,
    ) -> anyhow::Result<Offered> {
        anyhow::ensure!(!self.frame.is_empty(), "no frame set for the generator");
        let prog: &Xdp = self
            .ebpf
            .program("bench_gen")
            .context("no bench_gen in the bench object")?
            .try_into()?;
        let frame = &self.frame;
        sender.run(|| -> anyhow::Result<Offered> {
            cpu::pin_current(cpu::HOST_CPU)?;
            cpu::idle_priority()?;
            let name = std::ffi::CString::new(HOST_IF)?;
            // SAFETY: `name` is NUL-terminated.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            anyhow::ensure!(ifindex != 0, "no {HOST_IF} in {}", sender.name());
            // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
            // egress_ifindex. XDP_TX goes out of the ingress interface.
            let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
            let ctx: Vec<u8> = md.iter().flat_map(|v| v.to_ne_bytes()).collect();
            let start = Instant::now();
            let mut frames = 0u64;
            while frames < limit && (frames == 0 || start.elapsed() < duration) {
                let n = FRAMES_PER_CALL.min(u32::try_from(limit - frames).unwrap_or(u32::MAX));
                prog.test_run(TestRunOptions {
                    data_in: Some(frame),
                    ctx_in: Some(&ctx),
                    repeat: n,
                    attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                    ..TestRunOptions::new()
                })
                .context("live-frames test run of bench_gen failed")?;
                frames += u64::from(n);
            }
            Ok(Offered {
                frames,
                seconds: start.elapsed().as_secs_f64(),
            })
        })?
    }
}
