//! The managed interfaces as the programs see them: their settings in `MGM_IFCFG` by ifindex
//! (and `MGM_IFCFG_DIRECT` for ifindexes below its limit) and their counters in
//! `MGM_IF_STATS`. Written at start, again when a link's MAC or MTU changes.
//!
//! A daemon that adopts pinned maps keeps each interface's counter slot, so its counters go
//! on whatever order the interfaces are given in. Settings of interfaces it no longer names
//! stay: adopted entries may still copy to them until the core has reconciled, and a copy
//! must leave with its interface's MAC.

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use mgm_common::{
    counters::IfStats,
    fwd::{IfConfig, IF_ENABLED},
    maps as m,
};

use super::{error::map_err, netdev::NetDev, DataplaneError};

/// The settings and counters of every managed interface, and the maps that hold them.
pub struct InterfaceSettings {
    hash: HashMap<MapData, u32, IfConfig>,
    direct: Array<MapData, IfConfig>,
    stats: PerCpuArray<MapData, IfStats>,
    /// ifindex → what the maps hold, in the order the interfaces were given.
    written: Vec<(u32, IfConfig)>,
}

/// A link change that moved an interface's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingsChange {
    pub before: IfConfig,
    pub after: IfConfig,
}

impl InterfaceSettings {
    /// Writes each interface's settings. An interface the maps already hold (adopted from a
    /// previous daemon) keeps its counter slot and counts; every other gets the lowest slot
    /// no interface in the maps holds, which no program has counted into.
    ///
    /// # Errors
    /// A map cannot be read or written, or there are more interfaces than counter slots.
    pub fn write_all(
        hash: HashMap<MapData, u32, IfConfig>,
        direct: Array<MapData, IfConfig>,
        stats: PerCpuArray<MapData, IfStats>,
        interfaces: &[NetDev],
        ttl_threshold: u8,
    ) -> Result<InterfaceSettings, DataplaneError> {
        let pinned: Vec<(u32, IfConfig)> = hash
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(m::IFCFG))?;
        let mut settings = InterfaceSettings {
            hash,
            direct,
            stats,
            written: Vec::new(),
        };
        let kept = |ifindex: u32| {
            pinned
                .iter()
                .find(|(i, _)| *i == ifindex)
                .map(|(_, c)| c.stats_slot)
        };
        let mut taken: Vec<u32> = pinned.iter().map(|(_, c)| c.stats_slot).collect();
        for dev in interfaces {
            let slot = match kept(dev.ifindex) {
                Some(slot) => slot,
                None => {
                    let slot = free_slot(&taken)?;
                    taken.push(slot);
                    slot
                }
            };
            settings.add_in_slot(dev, ttl_threshold, slot)?;
        }
        Ok(settings)
    }

    /// Writes the settings of an interface that appeared while running, in a counter slot no
    /// managed interface holds, its counters zeroed (a slot freed by [`Self::remove`] may
    /// hold a vanished interface's counts).
    ///
    /// # Errors
    /// A map cannot be written, or every counter slot is taken.
    pub fn add(&mut self, dev: &NetDev, ttl_threshold: u8) -> Result<(), DataplaneError> {
        self.remove(dev.ifindex)?;
        let taken: Vec<u32> = self.written.iter().map(|(_, c)| c.stats_slot).collect();
        let slot = free_slot(&taken)?;
        let zero = aya::maps::PerCpuValues::try_from(vec![
            IfStats::default();
            aya::util::nr_cpus().map_err(
                |(_, e)| DataplaneError::Cpus(e)
            )?
        ])
        .map_err(|e| map_err(m::IF_STATS)(aya::maps::MapError::IoError(e)))?;
        self.stats
            .set(slot, zero, 0)
            .map_err(map_err(m::IF_STATS))?;
        self.add_in_slot(dev, ttl_threshold, slot)
    }

    /// Removes the settings of an interface that vanished, so no copy goes there and its
    /// counter slot is free. Nothing happens for an interface that is not managed.
    ///
    /// # Errors
    /// A map cannot be written.
    pub fn remove(&mut self, ifindex: u32) -> Result<(), DataplaneError> {
        let Some(at) = self.written.iter().position(|(i, _)| *i == ifindex) else {
            return Ok(());
        };
        match self.hash.remove(&ifindex) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(m::IFCFG)(e)),
        }
        if ifindex < m::IFCFG_DIRECT_LIMIT {
            // An all-zero entry has IF_ENABLED clear: the programs skip the interface.
            let off = IfConfig {
                mac: [0; 6],
                flags: 0,
                ttl_threshold: 0,
                mtu: 0,
                _pad: 0,
                stats_slot: 0,
            };
            self.direct
                .set(ifindex, off, 0)
                .map_err(map_err(m::IFCFG_DIRECT))?;
        }
        self.written.remove(at);
        Ok(())
    }

    fn add_in_slot(
        &mut self,
        dev: &NetDev,
        ttl_threshold: u8,
        slot: u32,
    ) -> Result<(), DataplaneError> {
        let cfg = IfConfig {
            mac: dev.mac,
            flags: IF_ENABLED,
            ttl_threshold,
            mtu: dev.mtu,
            _pad: 0,
            stats_slot: slot,
        };
        self.write(dev.ifindex, cfg)?;
        self.written.push((dev.ifindex, cfg));
        Ok(())
    }

    /// Counters of a managed interface, summed over CPUs; `None` for any other.
    ///
    /// # Errors
    /// Reading the per-CPU array failed.
    pub fn stats(&self, ifindex: u32) -> Result<Option<IfStats>, DataplaneError> {
        let Some(slot) = self.slot(ifindex) else {
            return Ok(None);
        };
        let per_cpu = self.stats.get(&slot, 0).map_err(map_err(m::IF_STATS))?;
        let mut total = IfStats::default();
        per_cpu.iter().for_each(|s| total.accumulate(s));
        Ok(Some(total))
    }

    /// The counter slot of a managed interface; `None` for any other.
    pub fn slot(&self, ifindex: u32) -> Option<u32> {
        self.written
            .iter()
            .find(|(i, _)| *i == ifindex)
            .map(|(_, c)| c.stats_slot)
    }

    /// Takes a link's new MAC or MTU into its settings. `None`: the interface is not managed,
    /// or nothing the programs read changed. An MTU above 65535 is recorded as 65535: frames
    /// longer than the recorded MTU are checked with the kernel, which knows the real one.
    ///
    /// A packet forwarded while the array slot is rewritten may still carry the old MAC.
    ///
    /// # Errors
    /// A map cannot be written.
    pub fn follow(
        &mut self,
        ifindex: u32,
        mac: Option<[u8; 6]>,
        mtu: Option<u32>,
    ) -> Result<Option<SettingsChange>, DataplaneError> {
        let Some(at) = self.written.iter().position(|(i, _)| *i == ifindex) else {
            return Ok(None);
        };
        let before = self.written[at].1;
        let mut after = before;
        if let Some(mac) = mac {
            after.mac = mac;
        }
        if let Some(mtu) = mtu {
            after.mtu = u16::try_from(mtu).unwrap_or(u16::MAX);
        }
        if after == before {
            return Ok(None);
        }
        self.write(ifindex, after)?;
        self.written[at].1 = after;
        Ok(Some(SettingsChange { before, after }))
    }

    fn write(&mut self, ifindex: u32, cfg: IfConfig) -> Result<(), DataplaneError> {
        self.hash
            .insert(ifindex, cfg, 0)
            .map_err(map_err(m::IFCFG))?;
        if ifindex < m::IFCFG_DIRECT_LIMIT {
            self.direct
                .set(ifindex, cfg, 0)
                .map_err(map_err(m::IFCFG_DIRECT))?;
        }
        Ok(())
    }
}

/// The lowest counter slot not in `taken` (slot 0 is never handed out).
fn free_slot(taken: &[u32]) -> Result<u32, DataplaneError> {
    (1..m::IF_CAPACITY)
        .find(|s| !taken.contains(s))
        .ok_or(DataplaneError::Full {
            table: m::IF_STATS,
            capacity: m::IF_CAPACITY - 1,
        })
}
