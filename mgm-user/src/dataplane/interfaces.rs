//! The managed interfaces' settings as the programs read them: `MGM_IFCFG` by ifindex, and
//! `MGM_IFCFG_DIRECT` for ifindexes below its limit. Written at start and again when a link's
//! MAC or MTU changes.

use aya::maps::{Array, HashMap, MapData};
use mgm_common::{
    fwd::{IfConfig, IF_ENABLED},
    maps as m,
};

use super::{netdev::NetDev, DataplaneError};

/// The settings of every managed interface, and the maps that hold them.
pub struct InterfaceSettings {
    hash: HashMap<MapData, u32, IfConfig>,
    direct: Array<MapData, IfConfig>,
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
    /// Writes each interface's settings, with counter slots 1, 2, … in the order given.
    ///
    /// # Errors
    /// A map cannot be written.
    pub fn write_all(
        hash: HashMap<MapData, u32, IfConfig>,
        direct: Array<MapData, IfConfig>,
        interfaces: &[NetDev],
        ttl_threshold: u8,
    ) -> Result<InterfaceSettings, DataplaneError> {
        let mut settings = InterfaceSettings {
            hash,
            direct,
            written: Vec::new(),
        };
        for (i, dev) in interfaces.iter().enumerate() {
            let cfg = IfConfig {
                mac: dev.mac,
                flags: IF_ENABLED,
                ttl_threshold,
                mtu: dev.mtu,
                _pad: 0,
                stats_slot: i as u32 + 1,
            };
            settings.write(dev.ifindex, cfg)?;
            settings.written.push((dev.ifindex, cfg));
        }
        Ok(settings)
    }

    /// The counter slot of a managed interface; `None` for any other.
    pub fn slot(&self, ifindex: u32) -> Option<u32> {
        self.get(ifindex).map(|c| c.stats_slot)
    }

    fn get(&self, ifindex: u32) -> Option<&IfConfig> {
        self.written
            .iter()
            .find(|(i, _)| *i == ifindex)
            .map(|(_, c)| c)
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
        let Some(&before) = self.get(ifindex) else {
            return Ok(None);
        };
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
        if let Some((_, c)) = self.written.iter_mut().find(|(i, _)| *i == ifindex) {
            *c = after;
        }
        Ok(Some(SettingsChange { before, after }))
    }

    fn write(&mut self, ifindex: u32, cfg: IfConfig) -> Result<(), DataplaneError> {
        self.hash
            .insert(ifindex, cfg, 0)
            .map_err(|source| DataplaneError::Map {
                map: m::IFCFG,
                source,
            })?;
        if ifindex < m::IFCFG_DIRECT_LIMIT {
            self.direct
                .set(ifindex, cfg, 0)
                .map_err(|source| DataplaneError::Map {
                    map: m::IFCFG_DIRECT,
                    source,
                })?;
        }
        Ok(())
    }
}
