//! Start-up reconciliation with a data plane that outlived the previous daemon (pinned maps),
//! so that restarting mgm does not flush forwarding that is still right. Pure: it only queues
//! [`MapOp`](super::MapOp)s and performs no I/O.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::mfe::MfeKey;
use super::time::Instant;
use super::types::InterfaceId;
use super::Mgm;

/// One forwarding entry found in the data plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataPlaneEntry {
    /// The entry's source; 0.0.0.0 for a (*,G) entry.
    pub source: Ipv4Addr,
    /// The entry's group.
    pub group: Ipv4Addr,
    /// The incoming interface.
    pub iif: InterfaceId,
    /// The outgoing interfaces; empty for a negative entry.
    pub oifs: BTreeSet<InterfaceId>,
}

impl Mgm {
    /// Takes the entries the data plane holds now and queues the ops that turn them into the
    /// core's table, touching as little as possible. Map ops queued before this call and not
    /// yet polled are dropped: the ops queued here start from `entries`.
    ///
    /// For each (S,G):
    /// - the core has the MFE and the entry matches: kept, no op;
    /// - the core has the MFE and the entry differs: one `InstallMfe` replaces it in place;
    /// - the core has no MFE, but the interface toward S (by route, else the entry's iif) has an
    ///   owner: the MFE is **re-resolved** as if a packet had arrived on the entry's iif (§5.2,
    ///   with an empty header): the RPF callback and creation alerts run, the MFE gets a fresh
    ///   lifetime, and the entry is only rewritten if the result differs. Adopting entries
    ///   blindly would skip the callbacks that let owners veto OIFs and learn about the MFE;
    ///   re-resolving keeps traffic flowing and still lets every protocol have its say;
    /// - the core has no MFE and nobody owns that interface (or the MFE table is full): the
    ///   core cannot vouch for it, so it is deleted, and the next packet raises an upcall;
    /// - core MFEs missing from `entries` are installed.
    ///
    /// MFE-level alerts are not sent for differences found here: they report changes of the
    /// core's own OIF lists (spec §4.7), not drift in the data plane.
    pub fn reconcile(&mut self, entries: impl IntoIterator<Item = DataPlaneEntry>, now: Instant) {
        self.map_ops.clear();
        self.installed = entries
            .into_iter()
            .map(|e| {
                let key = MfeKey {
                    group: e.group,
                    source: e.source,
                };
                (key, (e.iif, e.oifs))
            })
            .collect();
        let foreign: Vec<(MfeKey, InterfaceId)> = self
            .installed
            .iter()
            .filter(|(k, _)| !self.mfes.contains_key(k))
            .map(|(k, (iif, _))| (*k, *iif))
            .collect();
        for (key, iif) in foreign {
            let candidate = self.routes.lookup(key.source).map_or(iif, |r| r.if_id);
            let vouched = self.owner_of(candidate).is_some()
                && self
                    .create_mfe(key.source, key.group, iif, &[], now)
                    .is_ok();
            if !vouched {
                self.remove_mfe(key);
            }
        }
        self.sync_mfes(now, false);
        self.run_queued(now);
    }
}
