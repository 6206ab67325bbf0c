//! Which interfaces mgm manages as they come and go (spec §10): the operator names them, the
//! kernel numbers them. An interface is managed while it exists under a name mgm was given;
//! one that vanishes, or is renamed away from that name, stops being managed, and one that
//! appears under it (again, with a new ifindex, or by a rename as udev does at boot) is
//! managed from then on. Pure bookkeeping over link announcements: no I/O.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

/// What a link announcement means for the managed interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `name` exists now, as `ifindex`: attach and take it.
    Appeared { name: String, ifindex: u32 },
    /// `name` no longer names `ifindex`: everything of `ifindex` goes.
    Vanished { name: String, ifindex: u32 },
}

/// The names mgm was told to manage and the ifindex each has now, if it exists.
#[derive(Debug, Default)]
pub struct Managed {
    present: BTreeMap<String, Option<u32>>,
}

impl Managed {
    /// Manages `names`, none of them present yet.
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        Managed {
            present: names.into_iter().map(|n| (n, None)).collect(),
        }
    }

    /// Manages `name` from now on (a reload added it); [`Managed::link`] says when it exists.
    pub fn add(&mut self, name: &str) {
        self.present.entry(name.to_owned()).or_insert(None);
    }

    /// Stops managing `name` (a reload removed it); the ifindex it had, if it existed.
    pub fn forget(&mut self, name: &str) -> Option<u32> {
        self.present.remove(name).flatten()
    }

    /// The managed name of `ifindex`, if it is managed.
    pub fn name(&self, ifindex: u32) -> Option<&str> {
        self.present
            .iter()
            .find(|(_, i)| **i == Some(ifindex))
            .map(|(n, _)| n.as_str())
    }

    /// The ifindex `name` has now, if it is managed and present.
    pub fn ifindex(&self, name: &str) -> Option<u32> {
        self.present.get(name).copied().flatten()
    }

    /// Managed names that do not exist now.
    pub fn missing(&self) -> impl Iterator<Item = &str> {
        self.present
            .iter()
            .filter(|(_, i)| i.is_none())
            .map(|(n, _)| n.as_str())
    }

    /// The kernel announced `ifindex` under `name` (new, changed or renamed).
    pub fn link(&mut self, ifindex: u32, name: &str) -> Vec<Change> {
        if self.name(ifindex) == Some(name) {
            return Vec::new();
        }
        // Renamed away from a managed name.
        let mut changes = self.removed(ifindex);
        if let Some(slot) = self.present.get_mut(name) {
            if let Some(old) = slot.replace(ifindex) {
                // Its former holder left without an announcement we saw.
                changes.push(Change::Vanished {
                    name: name.to_owned(),
                    ifindex: old,
                });
            }
            changes.push(Change::Appeared {
                name: name.to_owned(),
                ifindex,
            });
        }
        changes
    }

    /// The kernel deleted `ifindex` (or moved it to another namespace).
    pub fn removed(&mut self, ifindex: u32) -> Vec<Change> {
        let mut changes = Vec::new();
        for (name, slot) in &mut self.present {
            if *slot == Some(ifindex) {
                *slot = None;
                changes.push(Change::Vanished {
                    name: name.clone(),
                    ifindex,
                });
            }
        }
        changes
    }
}

/// Interface names by ifindex: the interfaces this daemon manages now. The daemon changes
/// it as interfaces come and go (spec §10); sessions and modules read it for every message.
#[derive(Debug, Clone, Default)]
pub struct Names(Arc<RwLock<BTreeMap<u32, String>>>);

impl Names {
    pub fn new(names: BTreeMap<u32, String>) -> Self {
        Names(Arc::new(RwLock::new(names)))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u32, String>> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The name of `ifindex`, if it is managed.
    pub fn get(&self, ifindex: u32) -> Option<String> {
        self.read().get(&ifindex).cloned()
    }

    /// The ifindex of the managed interface `name`.
    pub fn ifindex(&self, name: &str) -> Option<u32> {
        self.read()
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(i, _)| *i)
    }

    /// Every managed interface, by ifindex.
    pub fn all(&self) -> Vec<(u32, String)> {
        self.read().iter().map(|(i, n)| (*i, n.clone())).collect()
    }

    /// `ifindex` is managed as `name` from now on.
    pub fn set(&self, ifindex: u32, name: &str) {
        let mut names = self.0.write().unwrap_or_else(|p| p.into_inner());
        names.retain(|_, n| n != name);
        names.insert(ifindex, name.to_owned());
    }

    /// `ifindex` is no longer managed.
    pub fn remove(&self, ifindex: u32) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ifindex);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn appeared(name: &str, ifindex: u32) -> Change {
        Change::Appeared {
            name: name.into(),
            ifindex,
        }
    }

    fn vanished(name: &str, ifindex: u32) -> Change {
        Change::Vanished {
            name: name.into(),
            ifindex,
        }
    }

    #[test]
    fn a_name_added_is_managed_when_announced_and_a_name_forgotten_no_longer() {
        let mut m = Managed::new(["dn1".to_owned()]);
        assert_eq!(m.link(6, "dn2"), []);
        m.add("dn2");
        assert_eq!(m.link(6, "dn2"), [appeared("dn2", 6)]);
        assert_eq!(m.forget("dn2"), Some(6));
        assert_eq!((m.ifindex("dn2"), m.name(6)), (None, None));
        assert_eq!(m.link(6, "dn2"), []);
        assert_eq!(m.forget("dn1"), None);
    }

    #[test]
    fn spec10_an_interface_deleted_and_created_again_is_managed_under_its_new_ifindex() {
        let mut m = Managed::new(["dn1".to_owned(), "dn2".to_owned()]);
        assert_eq!(m.link(5, "dn2"), [appeared("dn2", 5)]);
        // Announced again (a MAC or MTU change): nothing new.
        assert_eq!(m.link(5, "dn2"), []);
        assert_eq!(m.removed(5), [vanished("dn2", 5)]);
        assert_eq!(m.removed(5), []);
        assert_eq!(m.missing().collect::<Vec<_>>(), ["dn1", "dn2"]);
        assert_eq!(m.link(9, "dn2"), [appeared("dn2", 9)]);
        assert_eq!((m.ifindex("dn2"), m.name(9)), (Some(9), Some("dn2")));
        // Interfaces mgm was not told about are none of its business.
        assert_eq!(m.link(10, "eth7"), []);
        assert_eq!(m.removed(10), []);
    }

    #[test]
    fn spec10_renames_are_followed_both_ways() {
        let mut m = Managed::new(["dn3".to_owned()]);
        // udev style: created under a temporary name, then renamed to the managed one.
        assert_eq!(m.link(7, "veth-tmp"), []);
        assert_eq!(m.link(7, "dn3"), [appeared("dn3", 7)]);
        // Renamed away: no longer the interface mgm was told to manage.
        assert_eq!(m.link(7, "old-dn3"), [vanished("dn3", 7)]);
        assert_eq!(m.ifindex("dn3"), None);
        // Another interface takes the name.
        assert_eq!(m.link(8, "dn3"), [appeared("dn3", 8)]);
        // A missed delete: the new holder of the name replaces the old one.
        assert_eq!(m.link(11, "dn3"), [vanished("dn3", 8), appeared("dn3", 11)]);
    }
}
