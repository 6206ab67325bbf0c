//! The daemon's driver: one task that owns all state and serialises ring-buffer events and
//! shutdown. Sans-IO modules decide; this file only moves their decisions to the maps.

use std::{collections::BTreeMap, future::Future, net::Ipv4Addr, path::PathBuf};

use anyhow::{bail, Context};
use log::{debug, error, info, warn};
use mgm_common::fwd::FwdKey;
use tokio::io::unix::AsyncFd;

use crate::{
    dataplane::netdev::NetDev,
    dataplane::{ringbuf, Dataplane, Event, LoadOptions, Tunables, XdpMode},
    protocols::igmp_proxy::IgmpProxy,
};

/// Everything `mgm run` needs, validated by the CLI.
#[derive(Debug, Clone)]
pub struct Options {
    pub upstream: String,
    pub downstream: Vec<String>,
    pub mode: XdpMode,
    pub pin_dir: PathBuf,
    pub ttl_threshold: u8,
    pub tunables: Tunables,
}

/// Counts of what the daemon saw that the XDP counters cannot: IGMP it rejected after
/// decoding, and upcalls.
#[derive(Debug, Default)]
struct Seen {
    igmp: u64,
    bad_igmp: u64,
    no_cache: u64,
    wrong_if: u64,
    unknown: u64,
    map_errors: u64,
}

/// Loads the data plane, runs until `shutdown` resolves, then detaches.
///
/// # Errors
/// An interface is missing, or loading or attaching failed.
pub async fn run(opts: Options, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let upstream = NetDev::lookup(&opts.upstream)?;
    let mut interfaces = vec![upstream.clone()];
    for name in &opts.downstream {
        interfaces.push(NetDev::lookup(name)?);
    }
    let names: BTreeMap<u32, String> = interfaces
        .iter()
        .map(|d| (d.ifindex, d.name.clone()))
        .collect();
    if names.len() != interfaces.len() {
        bail!("an interface is named twice (upstream and downstream must all differ)");
    }
    let mut dp = Dataplane::load(&LoadOptions {
        interfaces: interfaces.clone(),
        mode: opts.mode,
        pin_dir: opts.pin_dir.clone(),
        ttl_threshold: opts.ttl_threshold,
        tunables: opts.tunables.clone(),
    })
    .context("cannot start the data plane")?;
    let mut events = watch(dp.take_events().context("event ring already taken")?)
        .context("cannot poll the event ring buffer")?;
    let mut logger = match dp.take_logger() {
        Some(l) => Some(watch(l).context("cannot poll the XDP log ring buffer")?),
        None => None,
    };
    let mut proxy = IgmpProxy::new(upstream.ifindex, interfaces[1..].iter().map(|d| d.ifindex));
    let name = |i: u32| {
        names
            .get(&i)
            .cloned()
            .unwrap_or_else(|| format!("ifindex {i}"))
    };
    info!(
        "mgm running: upstream {}, downstream {}; maps pinned in {}",
        opts.upstream,
        opts.downstream.join(", "),
        opts.pin_dir.display()
    );

    let mut seen = Seen::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            guard = events.readable_mut() => {
                let mut guard = guard.context("event ring buffer poll failed")?;
                while let Some(record) = guard.get_inner_mut().next() {
                    let event = ringbuf::decode(&record);
                    handle(&mut dp, &mut proxy, &mut seen, &name, event);
                }
                guard.clear_ready();
            }
            guard = readable_logger(&mut logger) => {
                let mut guard = guard.context("XDP log ring buffer poll failed")?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            () = &mut shutdown => break,
        }
    }
    info!(
        "shutting down: {} IGMP messages, {} rejected, {} no-cache and {} wrong-interface upcalls, {} unknown records, {} map errors",
        seen.igmp, seen.bad_igmp, seen.no_cache, seen.wrong_if, seen.unknown, seen.map_errors
    );
    for dev in &interfaces {
        if let Ok(Some(s)) = dp.if_stats(dev.ifindex) {
            info!("{}: {s:?}", dev.name);
        }
    }
    drop(dp);
    info!("XDP detached and pins removed");
    Ok(())
}

/// Registers a ring buffer's fd with the runtime for readability.
fn watch<T: std::os::fd::AsRawFd>(inner: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: ring buffers own their map fd and keep it open, unchanged, until dropped, and
    // the AsyncFd owns the ring buffer.
    unsafe { AsyncFd::register_with_interest(inner, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)
}

async fn readable_logger<T: std::os::fd::AsRawFd>(
    logger: &mut Option<AsyncFd<T>>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'_, T>> {
    match logger {
        Some(l) => l.readable_mut().await,
        None => std::future::pending().await,
    }
}

fn handle(
    dp: &mut Dataplane,
    proxy: &mut IgmpProxy,
    seen: &mut Seen,
    name: &impl Fn(u32) -> String,
    event: Event,
) {
    match event {
        Event::Igmp {
            ifindex,
            reporter,
            message,
            vlan,
            ..
        } => {
            seen.igmp += 1;
            let vlan = match vlan {
                [0, 0] => String::new(),
                [outer, 0] => format!(" vlan {outer}"),
                [outer, inner] => format!(" vlan {outer}.{inner}"),
            };
            info!(
                "IGMP on {}{vlan} from {reporter}: {message:?}",
                name(ifindex)
            );
            let (changes, ops) = proxy.on_igmp(ifindex, &message);
            for c in changes {
                match c.filter {
                    Some(f) => info!("membership: {} wants {} ({f})", name(c.ifindex), c.group),
                    None => info!("membership: {} left {}", name(c.ifindex), c.group),
                }
            }
            for op in ops {
                debug!("map op: {op:?}");
                if let Err(e) = dp.forwarding.apply(&op) {
                    seen.map_errors += 1;
                    error!("cannot apply {op:?}: {e:#}");
                }
            }
        }
        Event::BadIgmp {
            ifindex,
            reporter,
            error,
        } => {
            seen.bad_igmp += 1;
            warn!(
                "IGMP from {reporter} on {} rejected: {error}",
                name(ifindex)
            );
        }
        Event::NoCache {
            ifindex,
            source,
            group,
        } => {
            seen.no_cache += 1;
            debug!(
                "no entry for ({source}, {group}) arriving on {}",
                name(ifindex)
            );
            if let Err(e) = dp.forwarding.on_no_cache(key(source, group)) {
                seen.map_errors += 1;
                error!("cannot clear the placeholder of ({source}, {group}): {e:#}");
            }
        }
        Event::WrongIf {
            ifindex,
            source,
            group,
            expected_iif,
        } => {
            seen.wrong_if += 1;
            debug!(
                "({source}, {group}) arrived on {} instead of {}",
                name(ifindex),
                name(expected_iif)
            );
        }
        Event::Unknown { kind, len } => {
            seen.unknown += 1;
            warn!("unknown ring-buffer record (kind {kind}, {len} bytes) ignored");
        }
    }
}

fn key(source: Ipv4Addr, group: Ipv4Addr) -> FwdKey {
    FwdKey {
        source: u32::from(source).to_be(),
        group: u32::from(group).to_be(),
    }
}
