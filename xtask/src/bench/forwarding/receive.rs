//! The receivers' side: `bench_count` on every receiver's interface counts IPv4 UDP frames
//! and drops them, at the same cost whether the router sent them by XDP or by its stack.

use std::path::Path;

use anyhow::Context;
use aya::{
    maps::{MapData, PerCpuArray},
    programs::{Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use mgm_common::bench as b;

use crate::lab::{Lab, Netns, HOST_IF};

/// One loaded `bench_count` per receiver, each with its own counter.
pub struct Receivers {
    ebpfs: Vec<Ebpf>,
}

impl Receivers {
    /// Attaches a counter to every receiver's interface (native XDP).
    ///
    /// # Errors
    /// The object does not load or a program does not attach.
    pub fn attach(lab: &Lab, object: &Path) -> anyhow::Result<Receivers> {
        let mut ebpfs = Vec::new();
        for host in &lab.receivers {
            let mut ebpf = EbpfLoader::new()
                .load_file(object)
                .with_context(|| format!("cannot load {}", object.display()))?;
            host.run(|| -> anyhow::Result<()> {
                let prog: &mut Xdp = ebpf
                    .program_mut("bench_count")
                    .context("no bench_count in the bench object")?
                    .try_into()?;
                prog.load().context("the verifier rejected bench_count")?;
                prog.attach(HOST_IF, XdpMode::Driver)
                    .with_context(|| format!("cannot attach bench_count in {}", host.name()))?;
                Ok(())
            })??;
            ebpfs.push(ebpf);
        }
        Ok(Receivers { ebpfs })
    }

    /// Frames counted so far by each receiver.
    ///
    /// # Errors
    /// A counter map could not be read.
    pub fn counts(&self) -> anyhow::Result<Vec<u64>> {
        self.ebpfs
            .iter()
            .map(|e| -> anyhow::Result<u64> {
                let map: PerCpuArray<&MapData, u64> =
                    PerCpuArray::try_from(e.map(b::RX_COUNT).context("no BENCH_RX_COUNT map")?)?;
                Ok(map.get(&0, 0)?.iter().sum())
            })
            .collect()
    }
}

/// Frames `ifname` in `ns` has taken in (its NAPI processed them, whatever the verdict) and
/// frames dropped on the way in because its ring was full.
///
/// # Errors
/// `ip -s -j link` failed or printed something unexpected.
pub fn rx_stats(ns: &Netns, ifname: &str) -> anyhow::Result<(u64, u64)> {
    let stats = link_stats(ns, ifname)?;
    let rx = &stats["rx"];
    Ok((
        rx["packets"]
            .as_u64()
            .context("no rx packets in ip -s -j link")?,
        rx["dropped"].as_u64().unwrap_or(0),
    ))
}

/// Frames `ifname` in `ns` could not hand to its peer (a full ring behind a veth).
///
/// # Errors
/// As for [`rx_stats`].
pub fn tx_dropped(ns: &Netns, ifname: &str) -> anyhow::Result<u64> {
    Ok(link_stats(ns, ifname)?["tx"]["dropped"]
        .as_u64()
        .unwrap_or(0))
}

fn link_stats(ns: &Netns, ifname: &str) -> anyhow::Result<serde_json::Value> {
    let out = ns.ip_output(&["-s", "-j", "link", "show", ifname])?;
    let mut v: serde_json::Value =
        serde_json::from_str(&out).context("ip -s -j link printed invalid JSON")?;
    Ok(v[0]["stats64"].take())
}
