//! An independent reference model of registration, ownership, membership results, the
//! membership-driven callbacks (join/prune alerts with `bMember* = TRUE`, local join/leave,
//! disable/enable IGMP) of spec §2–§4 and the membership part of every OIF list (§4.8, §5.3).
//! Written from the spec, sharing no code with the core: plain vectors and sets, clients named
//! by index.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::harness::{Cb, ETH1, ETH2, S1, S2};
use crate::core::{InterfaceId, MgmError, SourceGroupEntry};

/// The fixed clients of the property test: (name, protocol id, component id).
pub const CLIENTS: [(&str, u32, u32); 4] = [
    ("igmp", 10, 1),
    ("pim", 103, 1),
    ("dvmrp", 104, 1),
    ("pim2", 103, 2),
];

fn is_igmp(c: usize) -> bool {
    CLIENTS[c].1 == 10
}

/// A membership key as (group, source) numbers; 0 is the wildcard.
type Key = (u32, u32);

#[derive(Default)]
pub struct Model {
    registered: BTreeSet<usize>,
    /// interface → (routing owner, igmp owner)
    owners: BTreeMap<InterfaceId, (Option<usize>, Option<usize>)>,
    joins: BTreeSet<(usize, Key, InterfaceId)>,
    /// (S,G) exclusions under the same client's wildcard on the interface (§4.8).
    excludes: BTreeSet<(usize, Key, InterfaceId)>,
    locals: BTreeSet<(Key, InterfaceId)>,
    local_excludes: BTreeSet<(Key, InterfaceId)>,
    /// Callbacks predicted since the last drain.
    pub expected: Vec<(&'static str, Cb)>,
}

fn entry(k: Key) -> SourceGroupEntry {
    let (g, s) = (Ipv4Addr::from(k.0), Ipv4Addr::from(k.1));
    if g.is_unspecified() {
        SourceGroupEntry::star_star()
    } else if s.is_unspecified() {
        SourceGroupEntry::star_g(g)
    } else {
        SourceGroupEntry::sg(s, g)
    }
}

/// The §1 mask rules, from scratch.
fn parse(e: &SourceGroupEntry) -> Option<Key> {
    let ones = Ipv4Addr::new(255, 255, 255, 255);
    let zero = Ipv4Addr::new(0, 0, 0, 0);
    let ok = |a: Ipv4Addr, m: Ipv4Addr| (a == zero && m == zero) || (a != zero && m == ones);
    if !ok(e.source, e.source_mask) || !ok(e.group, e.group_mask) {
        return None;
    }
    if e.source != zero && e.group == zero {
        return None;
    }
    Some((u32::from(e.group), u32::from(e.source)))
}

/// The §4.2/§4.8 flag rules: `Some(true)` for EXCLUDE, `Some(false)` for JOIN and/or FORWARD.
fn parse_flags(flags: u32, k: Key) -> Option<bool> {
    match flags {
        1..=3 => Some(false),
        4 if k.1 != 0 => Some(true),
        _ => None,
    }
}

/// The wildcard keys that cover the (S,G) key `k`.
fn wildcards(k: Key) -> [Key; 2] {
    [(k.0, 0), (0, 0)]
}

impl Model {
    fn say(&mut self, to: usize, cb: Cb) {
        self.expected.push((CLIENTS[to].0, cb));
    }

    fn primary(&self, id: InterfaceId) -> Option<usize> {
        self.owners.get(&id).and_then(|(r, i)| r.or(*i))
    }

    fn rpf_owner(&self, source: u32) -> Option<usize> {
        let s = Ipv4Addr::from(source);
        // The harness routes: 10.1/16 via ETH1, 10.2/16 via ETH2.
        let via = if s.octets()[..2] == S1.octets()[..2] {
            ETH1
        } else if s.octets()[..2] == S2.octets()[..2] {
            ETH2
        } else {
            return None;
        };
        self.primary(via)
    }

    fn holders(&self, k: Key) -> BTreeSet<usize> {
        self.joins
            .iter()
            .filter(|(_, key, _)| *key == k)
            .map(|(c, _, _)| *c)
            .collect()
    }

    /// The interfaces whose membership puts them in the OIF list of an MFE (s,g): an (S,G) join
    /// of anyone, or a wildcard join of a client without its own (S,G) exclusion there (§4.8).
    pub fn by_join(&self, s: Ipv4Addr, g: Ipv4Addr) -> BTreeSet<InterfaceId> {
        let sg: Key = (u32::from(g), u32::from(s));
        self.joins
            .iter()
            .filter(|(c, k, id)| {
                *k == sg || (wildcards(sg).contains(k) && !self.excludes.contains(&(*c, sg, *id)))
            })
            .map(|(_, _, id)| *id)
            .collect()
    }

    fn holds(&self, c: usize, k: Key) -> bool {
        self.joins.iter().any(|(h, key, _)| *h == c && *key == k)
    }

    /// Registered clients, in (protocol id, component id) order, except `me`.
    fn others(&self, me: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .registered
            .iter()
            .copied()
            .filter(|c| *c != me)
            .collect();
        v.sort_by_key(|c| (CLIENTS[*c].1, CLIENTS[*c].2));
        v
    }

    pub fn register(&mut self, c: usize) -> Result<(), MgmError> {
        if !self.registered.insert(c) {
            return Err(MgmError::AlreadyExists);
        }
        Ok(())
    }

    pub fn deregister(&mut self, c: usize) -> Result<(), MgmError> {
        if !self.registered.contains(&c) {
            return Err(MgmError::InvalidParameter);
        }
        if self
            .owners
            .values()
            .any(|(r, i)| *r == Some(c) || *i == Some(c))
        {
            return Err(MgmError::CanNotComplete);
        }
        self.registered.remove(&c);
        Ok(())
    }

    pub fn take(&mut self, c: usize, id: InterfaceId) -> Result<(), MgmError> {
        if !self.registered.contains(&c) {
            return Err(MgmError::InvalidParameter);
        }
        let (routing, igmp) = self.owners.get(&id).copied().unwrap_or((None, None));
        if is_igmp(c) {
            if igmp.is_some() {
                return Err(MgmError::AlreadyExists);
            }
            self.owners.insert(id, (routing, Some(c)));
            return Ok(());
        }
        if routing.is_some() {
            return Err(MgmError::AlreadyExists);
        }
        if let Some(i) = igmp {
            self.say(i, Cb::DisableIgmp(id));
            let keys: Vec<Key> = self
                .joins
                .iter()
                .filter(|(h, _, at)| *h == i && *at == id)
                .map(|(_, k, _)| *k)
                .collect();
            for k in keys {
                self.unjoin(i, k, id);
            }
            self.owners.insert(id, (Some(c), Some(i)));
            self.say(i, Cb::EnableIgmp(id));
        } else {
            self.owners.insert(id, (Some(c), None));
        }
        Ok(())
    }

    pub fn release(&mut self, c: usize, id: InterfaceId) -> Result<(), MgmError> {
        if !self.registered.contains(&c) {
            return Err(MgmError::InvalidParameter);
        }
        let Some(&(routing, igmp)) = self.owners.get(&id) else {
            return Err(MgmError::InvalidParameter);
        };
        if routing != Some(c) && igmp != Some(c) {
            return Err(MgmError::InvalidParameter);
        }
        if igmp == Some(c) && routing.is_some() {
            let r = routing.unwrap_or_default();
            let locals: Vec<Key> = self
                .locals
                .iter()
                .filter(|(_, at)| *at == id)
                .map(|(k, _)| *k)
                .collect();
            for k in locals {
                self.locals.remove(&(k, id));
                self.say(
                    r,
                    Cb::LocalLeave {
                        sg: entry(k),
                        if_id: id,
                    },
                );
            }
            self.local_excludes.retain(|(_, at)| *at != id);
            self.owners.insert(id, (routing, None));
            return Ok(());
        }
        let co_igmp = if routing == Some(c) { igmp } else { None };
        if let Some(i) = co_igmp {
            self.say(i, Cb::DisableIgmp(id));
        }
        let keys: Vec<Key> = self
            .joins
            .iter()
            .filter(|(h, _, at)| *h == c && *at == id)
            .map(|(_, k, _)| *k)
            .collect();
        for k in keys {
            self.unjoin(c, k, id);
        }
        self.locals.retain(|(_, at)| *at != id);
        self.local_excludes.retain(|(_, at)| *at != id);
        if let Some(i) = co_igmp {
            self.owners.insert(id, (None, Some(i)));
            self.say(i, Cb::EnableIgmp(id));
        } else {
            self.owners.remove(&id);
        }
        Ok(())
    }

    pub fn add(
        &mut self,
        c: usize,
        e: &SourceGroupEntry,
        id: InterfaceId,
        flags: u32,
    ) -> Result<(), MgmError> {
        if !self.registered.contains(&c) {
            return Err(MgmError::InvalidParameter);
        }
        let k = parse(e).ok_or(MgmError::InvalidParameter)?;
        let exclude = parse_flags(flags, k).ok_or(MgmError::InvalidParameter)?;
        let (routing, igmp) = self.owners.get(&id).copied().unwrap_or((None, None));
        if routing != Some(c) && igmp != Some(c) {
            return Err(MgmError::InvalidParameter);
        }
        if igmp == Some(c) && routing.is_some() && exclude {
            if !wildcards(k).iter().any(|w| self.locals.contains(&(*w, id))) {
                return Err(MgmError::InvalidParameter);
            }
            if self.local_excludes.insert((k, id)) {
                self.say(
                    routing.unwrap_or_default(),
                    Cb::LocalLeave {
                        sg: entry(k),
                        if_id: id,
                    },
                );
            }
            return Ok(());
        }
        if igmp == Some(c) && routing.is_some() {
            if self.locals.insert((k, id)) {
                self.say(
                    routing.unwrap_or_default(),
                    Cb::LocalJoin {
                        sg: entry(k),
                        if_id: id,
                    },
                );
            }
            return Ok(());
        }
        if exclude {
            if !wildcards(k)
                .iter()
                .any(|w| self.joins.contains(&(c, *w, id)))
            {
                return Err(MgmError::InvalidParameter);
            }
            self.excludes.insert((c, k, id));
            return Ok(());
        }
        if flags & 1 == 0 || self.joins.contains(&(c, k, id)) {
            return Ok(());
        }
        let first_for_client = !self.holds(c, k);
        self.joins.insert((c, k, id));
        if !first_for_client {
            return Ok(());
        }
        let holders = self.holders(k);
        let targets: Vec<usize> = if k.1 != 0 {
            match self.rpf_owner(k.1) {
                Some(o) if holders.len() == 1 && o != c => vec![o],
                _ => vec![],
            }
        } else if holders.len() == 1 {
            self.others(c)
        } else if holders.len() == 2 {
            holders.into_iter().filter(|h| *h != c).collect()
        } else {
            vec![]
        };
        for to in targets {
            self.say(
                to,
                Cb::JoinAlert {
                    sg: entry(k),
                    member_update: true,
                },
            );
        }
        Ok(())
    }

    pub fn delete(
        &mut self,
        c: usize,
        e: &SourceGroupEntry,
        id: InterfaceId,
        flags: u32,
    ) -> Result<(), MgmError> {
        if !self.registered.contains(&c) {
            return Err(MgmError::InvalidParameter);
        }
        let k = parse(e).ok_or(MgmError::InvalidParameter)?;
        let exclude = parse_flags(flags, k).ok_or(MgmError::InvalidParameter)?;
        let Some(&(routing, igmp)) = self.owners.get(&id) else {
            return Err(MgmError::NotFound);
        };
        if routing != Some(c) && igmp != Some(c) {
            return Err(MgmError::InvalidParameter);
        }
        if igmp == Some(c) && routing.is_some() && exclude {
            if !self.local_excludes.remove(&(k, id)) {
                return Err(MgmError::NotFound);
            }
            self.say(
                routing.unwrap_or_default(),
                Cb::LocalJoin {
                    sg: entry(k),
                    if_id: id,
                },
            );
            return Ok(());
        }
        if igmp == Some(c) && routing.is_some() {
            if !self.locals.remove(&(k, id)) {
                return Err(MgmError::NotFound);
            }
            // Local exclusions without a local wildcard over them go silently.
            let locals = &self.locals;
            self.local_excludes.retain(|(x, at)| {
                *at != id || wildcards(*x).iter().any(|w| locals.contains(&(*w, id)))
            });
            self.say(
                routing.unwrap_or_default(),
                Cb::LocalLeave {
                    sg: entry(k),
                    if_id: id,
                },
            );
            return Ok(());
        }
        if exclude {
            return match self.excludes.remove(&(c, k, id)) {
                true => Ok(()),
                false => Err(MgmError::NotFound),
            };
        }
        if flags & 1 == 0 {
            return Ok(());
        }
        if !self.joins.contains(&(c, k, id)) {
            return Err(MgmError::NotFound);
        }
        self.unjoin(c, k, id);
        Ok(())
    }

    /// Removes one JOIN entry with the §4.6 prune rules.
    fn unjoin(&mut self, c: usize, k: Key, id: InterfaceId) {
        self.joins.remove(&(c, k, id));
        // Exclusions without a wildcard of their client over them go silently.
        let joins = &self.joins;
        self.excludes.retain(|(xc, x, at)| {
            *xc != c || *at != id || wildcards(*x).iter().any(|w| joins.contains(&(c, *w, id)))
        });
        if self.holds(c, k) {
            return;
        }
        let holders = self.holders(k);
        let targets: Vec<usize> = if k.1 != 0 {
            match self.rpf_owner(k.1) {
                Some(o) if holders.is_empty() && o != c => vec![o],
                _ => vec![],
            }
        } else if holders.is_empty() {
            self.others(c)
        } else if holders.len() == 1 {
            holders.into_iter().collect()
        } else {
            vec![]
        };
        for to in targets {
            self.say(
                to,
                Cb::PruneAlert {
                    sg: entry(k),
                    if_id: id,
                    member_delete: true,
                    timeout_s: 900,
                },
            );
        }
    }
}

/// Whether a recorded callback is one the model predicts.
pub fn modelled(cb: &Cb) -> bool {
    match cb {
        Cb::JoinAlert { member_update, .. } => *member_update,
        Cb::PruneAlert { member_delete, .. } => *member_delete,
        Cb::LocalJoin { .. } | Cb::LocalLeave { .. } | Cb::DisableIgmp(_) | Cb::EnableIgmp(_) => {
            true
        }
        _ => false,
    }
}
