//! The receivers' side: `bench_count` on every receiver's interface counts IPv4 UDP frames
//! and drops them. In XDP (the default) a frame the router's stack sent arrives as an skb the
//! veth must first copy into an XDP buffer, which XDP forwarders' frames need not; at TC
//! ingress every frame arrives as an skb, built by the veth for XDP forwarders' frames and
//! as it is for the stack's. Which of the two receivers costs less depends on the sender, so
//! measurements that put the receivers' work into the router's time are made with each.

use std::path::Path;

use anyhow::Context;
use aya::{
    maps::{MapData, PerCpuArray},
    programs::{
        tc::SchedClassifierLinkId, xdp::XdpLinkId, SchedClassifier, TcAttachType, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use mgm_common::bench as b;

use crate::lab::{Lab, Netns, HOST_IF};

/// Where the receivers count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// `bench_count`, native XDP.
    Xdp,
    /// `bench_count_tc` at TC ingress, with GRO on so the veth still takes redirected frames.
    Tc,
}

impl Counter {
    pub fn name(self) -> &'static str {
        match self {
            Counter::Xdp => "xdp",
            Counter::Tc => "tc",
        }
    }
}

/// One loaded bench object per receiver (both counters, one count map).
pub struct Receivers {
    hosts: Vec<Receiver>,
}

struct Receiver {
    ebpf: Ebpf,
    /// `None` only after a switch failed half-way.
    attached: Option<Attached>,
}

enum Attached {
    Xdp(XdpLinkId),
    Tc(SchedClassifierLinkId),
}

impl Attached {
    fn counter(&self) -> Counter {
        match self {
            Attached::Xdp(_) => Counter::Xdp,
            Attached::Tc(_) => Counter::Tc,
        }
    }
}

impl Receivers {
    /// Attaches a counter to every receiver's interface (native XDP).
    ///
    /// # Errors
    /// The object does not load or a program does not attach.
    pub fn attach(lab: &Lab, object: &Path) -> anyhow::Result<Receivers> {
        let mut hosts = Vec::new();
        for host in &lab.receivers {
            let mut ebpf = EbpfLoader::new()
                .load_file(object)
                .with_context(|| format!("cannot load {}", object.display()))?;
            let attached = host.run(|| -> anyhow::Result<Attached> {
                xdp_counter(&mut ebpf)?
                    .load()
                    .context("the verifier rejected bench_count")?;
                tc_counter(&mut ebpf)?
                    .load()
                    .context("the verifier rejected bench_count_tc")?;
                switch(&mut ebpf, host, None, Counter::Xdp)
            })??;
            hosts.push(Receiver {
                ebpf,
                attached: Some(attached),
            });
        }
        Ok(Receivers { hosts })
    }

    /// Moves the first `n` receivers' counting to `counter`.
    ///
    /// # Errors
    /// A program did not detach or attach, or GRO could not be switched.
    pub fn count_with(&mut self, lab: &Lab, n: usize, counter: Counter) -> anyhow::Result<()> {
        for (r, host) in self.hosts.iter_mut().zip(&lab.receivers).take(n) {
            if r.attached.as_ref().map(Attached::counter) == Some(counter) {
                continue;
            }
            let (old, ebpf) = (r.attached.take(), &mut r.ebpf);
            r.attached = Some(host.run(|| switch(ebpf, host, old, counter))??);
        }
        Ok(())
    }

    /// Frames counted so far by each receiver.
    ///
    /// # Errors
    /// A counter map could not be read.
    pub fn counts(&self) -> anyhow::Result<Vec<u64>> {
        self.hosts
            .iter()
            .map(|r| -> anyhow::Result<u64> {
                let map: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(
                    r.ebpf.map(b::RX_COUNT).context("no BENCH_RX_COUNT map")?,
                )?;
                Ok(map.get(&0, 0)?.iter().sum())
            })
            .collect()
    }
}

/// Detaches `old` and attaches `counter` to the receiver's interface; runs in `host`.
fn switch(
    ebpf: &mut Ebpf,
    host: &Netns,
    old: Option<Attached>,
    counter: Counter,
) -> anyhow::Result<Attached> {
    match old {
        Some(Attached::Xdp(id)) => xdp_counter(ebpf)?.detach(id)?,
        Some(Attached::Tc(id)) => tc_counter(ebpf)?.detach(id)?,
        None => {}
    }
    match counter {
        Counter::Xdp => {
            // Back as the lab made it: the XDP program alone keeps the veth's NAPI.
            host.disable_gro(HOST_IF)?;
            let id = xdp_counter(ebpf)?
                .attach(HOST_IF, XdpMode::Driver)
                .with_context(|| format!("cannot attach bench_count in {}", host.name()))?;
            Ok(Attached::Xdp(id))
        }
        Counter::Tc => {
            // Without an XDP program the veth takes redirected frames only with GRO on.
            host.enable_gro(HOST_IF)?;
            let id = tc_counter(ebpf)?
                .attach(HOST_IF, TcAttachType::Ingress)
                .with_context(|| format!("cannot attach bench_count_tc in {}", host.name()))?;
            Ok(Attached::Tc(id))
        }
    }
}

fn xdp_counter(ebpf: &mut Ebpf) -> anyhow::Result<&mut Xdp> {
    Ok(ebpf
        .program_mut("bench_count")
        .context("no bench_count in the bench object")?
        .try_into()?)
}

fn tc_counter(ebpf: &mut Ebpf) -> anyhow::Result<&mut SchedClassifier> {
    Ok(ebpf
        .program_mut("bench_count_tc")
        .context("no bench_count_tc in the bench object")?
        .try_into()?)
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
