//! The multicast forwarding entry record (spec §5.1) with its per-OIF state (spec §4.7) and the
//! counters the data plane reports (spec §6.3). The life cycle that creates, updates and expires
//! MFEs lives in `mod.rs`; nothing here performs I/O.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;

use std::time::Duration;

use super::action::MapOp;
use super::error::MgmError;
use super::protocol::{Answer, MgmIfEntry, RouteInfo};
use super::time::Instant;
use super::types::{InterfaceId, MembershipKey, ProtocolHandle, ProtocolId, SourceGroupEntry};
use super::waiting::{Alerting, Asked, Job, Step};
use super::Mgm;

/// An MFE's key. Field order makes MFEs sort by group, then source, as enumeration needs
/// (spec §6.2).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct MfeKey {
    pub(crate) group: Ipv4Addr,
    pub(crate) source: Ipv4Addr,
}

/// Per-OIF state that is not derived from memberships (spec §4.7). `by_join` is derived from
/// the membership table whenever it is needed, so it can never go stale.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct OifState {
    /// Set by a FORWARD-state add, cleared by a FORWARD-state delete.
    pub(crate) forward_pin: bool,
    /// Set when the owner disabled the id in the creation alert.
    pub(crate) vetoed: bool,
}

/// Egress counters of one outgoing interface (spec §6.3, `MIB_IPMCAST_OIF_STATS`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct OifCounters {
    /// Not sent: TTL below the interface's threshold.
    pub ttl_too_low: u64,
    /// Not sent: larger than the egress MTU.
    pub frag_needed: u64,
    /// Sent.
    pub out_packets: u64,
    /// Bytes of the copies sent (IPv4 total length), for operator views; the Windows-shaped
    /// records have no field for it.
    pub out_bytes: u64,
    /// Other egress drops.
    pub out_discards: u64,
}

/// A snapshot of one MFE's data-plane counters, summed over CPUs by the adapter (spec §6.3).
/// Counters are kept as u64 and wrap to u32 only in the Windows-shaped records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MfeCounters {
    /// `ulInPkts`: matched and arrived on the iif.
    pub in_pkts: u64,
    /// `ulInOctets`: IP total length of those packets.
    pub in_octets: u64,
    /// `ulPktsDifferentIf`: matched but arrived on another interface.
    pub different_if: u64,
    /// `ulQueueOverflow`: dropped because the pending queue was full.
    pub queue_overflow: u64,
    /// `ulUninitMfe`: matched while the MFE was being resolved.
    pub uninit_mfe: u64,
    /// `ulNegativeMfe`: dropped because the OIF list is empty.
    pub negative_mfe: u64,
    /// `ulInDiscards`: every drop of a packet that arrived on the iif.
    pub in_discards: u64,
    /// `ulInHdrErrors`: bad header or TTL ≤ 1.
    pub in_hdr_errors: u64,
    /// Per-OIF egress counters; an OIF with no entry reports zeros.
    pub oifs: BTreeMap<InterfaceId, OifCounters>,
}

/// One MFE (spec §5.1).
#[derive(Clone, Debug)]
pub(crate) struct Mfe {
    /// The incoming interface as fixed by the RPF callback.
    pub(crate) iif: InterfaceId,
    pub(crate) upstream: Ipv4Addr,
    /// Protocol id of the iif owner at creation, 0 if none (`dwInIfProtocol`).
    pub(crate) iif_protocol: ProtocolId,
    pub(crate) route: RouteInfo,
    /// FORWARD pins and vetoes, by OIF; ids with neither are absent.
    pub(crate) oif_state: BTreeMap<InterfaceId, OifState>,
    /// Nobody owned the candidate iif at creation: the MFE stays negative for its whole life
    /// (spec §5.2 step 2).
    pub(crate) forced_negative: bool,
    pub(crate) created_at: Instant,
    /// Lifetime in seconds, from `created_at` or from the last prune-alert reset (spec §5.6).
    pub(crate) timeout_s: u32,
    pub(crate) expires_at: Instant,
    pub(crate) counters: MfeCounters,
    /// [`MfeCounters::packets`] when the current lifetime began: the flow is active at expiry
    /// if the count moved since (spec §5.6 refresh in place).
    pub(crate) packets_at_start: u64,
    /// What the RPF table said when the MFE was last resolved, so that a route change refreshes
    /// only the MFEs whose answer it changed (spec §9 item 11).
    pub(crate) rpf_candidate: Candidate,
    /// The first bytes of the packet that created the MFE: the RPF callback of a refresh gets
    /// them too, as no packet triggers it.
    pub(crate) hdr: Vec<u8>,
    /// When the last wrong-interface callback ran, for the per-MFE rate limit (spec §5.5).
    pub(crate) last_wrong_if: Option<Instant>,
}

/// Step 1 of spec §5.2: the candidate iif, upstream neighbour and route.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) iif: InterfaceId,
    pub(crate) upstream: Ipv4Addr,
    pub(crate) route: RouteInfo,
}

impl MfeCounters {
    /// Every packet that matched the MFE, forwarded, dropped or on the wrong interface: what
    /// tells an active flow from an idle one at expiry.
    pub(crate) fn packets(&self) -> u64 {
        self.in_pkts
            .wrapping_add(self.in_discards)
            .wrapping_add(self.different_if)
    }
}

impl Mfe {
    /// The forwarding list: `(by_join || forward_pin) && !vetoed`, never the iif (spec §4.7,
    /// §5.3). `by_join` is the set of ids some JOIN entry covering this MFE names.
    pub(crate) fn active_oifs(&self, by_join: BTreeSet<InterfaceId>) -> BTreeSet<InterfaceId> {
        if self.forced_negative {
            return BTreeSet::new();
        }
        let pinned = self
            .oif_state
            .iter()
            .filter(|(_, s)| s.forward_pin)
            .map(|(id, _)| *id);
        by_join
            .into_iter()
            .chain(pinned)
            .filter(|id| *id != self.iif && !self.oif_state.get(id).is_some_and(|s| s.vetoed))
            .collect()
    }

    /// Applies `f` to the state of `id` and drops the record if it became default.
    pub(crate) fn update_oif(&mut self, id: InterfaceId, f: impl FnOnce(&mut OifState)) {
        let state = self.oif_state.entry(id).or_default();
        f(state);
        if *state == OifState::default() {
            self.oif_state.remove(&id);
        }
    }
}

impl Mgm {
    /// The forwarder found no MFE for (source, group) on a packet that arrived on `in_if`
    /// (spec §5.2). Runs route lookup, the RPF callback, the OIF computation and the creation
    /// alerts, then queues the install. `hdr` is the packet's first bytes, for the RPF callback.
    ///
    /// An upcall for an MFE that exists (a data-plane race) re-queues its install and invokes
    /// no callback.
    ///
    /// # Errors
    /// `NotEnoughMemory` when [`Config::max_mfes`](super::Config) is reached; the packet is
    /// dropped and the data plane raises the upcall again later.
    pub fn no_cache_upcall(
        &mut self,
        source: Ipv4Addr,
        group: Ipv4Addr,
        in_if: InterfaceId,
        hdr: &[u8],
        now: Instant,
    ) -> Result<(), MgmError> {
        let result = self.create_mfe(source, group, in_if, hdr, now);
        self.run_queued(now);
        result
    }

    /// A packet for an existing MFE arrived on `in_if`, not on its iif (spec §5.5). Invokes
    /// `wrong_if` on the arrival interface's owner, at most once per
    /// [`Config::wrong_if_interval`](super::Config) per MFE, and only if enabled.
    pub fn wrong_if_upcall(
        &mut self,
        source: Ipv4Addr,
        group: Ipv4Addr,
        in_if: InterfaceId,
        hdr: &[u8],
        now: Instant,
    ) {
        if !self.config.wrong_if_enabled {
            return;
        }
        let interval = self.config.wrong_if_interval;
        let Some(mfe) = self.mfes.get_mut(&MfeKey { group, source }) else {
            return;
        };
        let limited = mfe
            .last_wrong_if
            .is_some_and(|last| now.saturating_since(last) < interval);
        if mfe.iif == in_if || limited {
            return;
        }
        mfe.last_wrong_if = Some(now);
        if let Some(owner) = self.owner_of(in_if) {
            self.call(owner, now, |p, cx| {
                p.wrong_if(cx, source, group, in_if, hdr)
            });
        }
        self.run_queued(now);
    }

    /// Stores the latest counter snapshot of an MFE for the statistics calls (spec §6.2).
    ///
    /// # Errors
    /// `NotFound` if there is no such MFE.
    pub fn set_mfe_counters(
        &mut self,
        source: Ipv4Addr,
        group: Ipv4Addr,
        counters: MfeCounters,
    ) -> Result<(), MgmError> {
        let mfe = self
            .mfes
            .get_mut(&MfeKey { group, source })
            .ok_or(MgmError::NotFound)?;
        mfe.counters = counters;
        Ok(())
    }

    /// `MgmSetMfe`: changes the MFE's upstream neighbour and nothing else (spec §5.7). The other
    /// fields of the Windows structure are ignored there, so they are not taken here.
    ///
    /// # Errors
    /// `InvalidParameter` for a bad handle or if the caller does not own the MFE's iif;
    /// `NotFound` if there is no such MFE.
    pub fn set_mfe(
        &mut self,
        handle: ProtocolHandle,
        source: Ipv4Addr,
        group: Ipv4Addr,
        upstream: Ipv4Addr,
    ) -> Result<(), MgmError> {
        self.registration(handle)?;
        let mfe = self
            .mfes
            .get(&MfeKey { group, source })
            .ok_or(MgmError::NotFound)?;
        if !self
            .interfaces
            .get(&mfe.iif)
            .is_some_and(|o| o.is_owned_by(handle))
        {
            return Err(MgmError::InvalidParameter);
        }
        if let Some(mfe) = self.mfes.get_mut(&MfeKey { group, source }) {
            mfe.upstream = upstream;
        }
        Ok(())
    }

    /// Steps 1–5 of spec §5.2 for one (S,G). A creation already waiting for a client's answer
    /// is not started again: the data plane's placeholder holds the flow until it ends.
    pub(super) fn create_mfe(
        &mut self,
        source: Ipv4Addr,
        group: Ipv4Addr,
        in_if: InterfaceId,
        hdr: &[u8],
        now: Instant,
    ) -> Result<(), MgmError> {
        let key = MfeKey { group, source };
        if self.mfes.contains_key(&key) {
            self.installed.remove(&key);
            self.install_current(key);
            return Ok(());
        }
        if self.is_waiting(key, Job::is_create) {
            return Ok(());
        }
        if self.mfes.len() >= self.config.max_mfes {
            return Err(MgmError::NotEnoughMemory);
        }
        // Step 1: with no route, the arrival interface is the candidate [Dec].
        let candidate = self.rpf_candidate(source, in_if);
        let job = Job::Create {
            in_if,
            hdr: hdr.to_vec(),
        };
        self.resolve(key, job, candidate, now);
        Ok(())
    }

    /// Step 1 of spec §5.2: the RPF table's answer for `source`, or `fallback` with no upstream
    /// and no route when no route covers it.
    pub(super) fn rpf_candidate(&self, source: Ipv4Addr, fallback: InterfaceId) -> Candidate {
        match self.routes.lookup(source) {
            Some(r) => Candidate {
                iif: r.if_id,
                upstream: r.upstream,
                route: r.info(),
            },
            None => Candidate {
                iif: fallback,
                upstream: Ipv4Addr::UNSPECIFIED,
                route: RouteInfo::default(),
            },
        }
    }

    /// Steps 2–5 of spec §5.2 for `job` from the step-1 `candidate`: the RPF callback, the
    /// creation alerts, the install. The job waits at a callback whose answer comes later and
    /// goes on from there when it comes ([`Mgm::answer`]).
    pub(super) fn resolve(&mut self, key: MfeKey, job: Job, candidate: Candidate, now: Instant) {
        let Some(owner) = self.owner_of(candidate.iif) else {
            return self.after_rpf(key, job, candidate, None, now);
        };
        let hdr = self.job_header(key, &job);
        match self.rpf_callback(owner, key, candidate, &hdr, None, now) {
            Asked::Now(r) => self.after_rpf(key, job, candidate, Some(r), now),
            Asked::Later(ticket, deadline) => {
                self.park(owner, ticket, deadline, key, Step::Rpf { job, candidate });
            }
        }
    }

    /// The first bytes of the packet behind `job`, for the RPF callback: a refresh has no
    /// packet of its own and reuses the creating one's (spec §5.6).
    pub(super) fn job_header(&self, key: MfeKey, job: &Job) -> Vec<u8> {
        match job {
            Job::Create { hdr, .. } => hdr.clone(),
            Job::Refresh => self
                .mfes
                .get(&key)
                .map(|m| m.hdr.clone())
                .unwrap_or_default(),
        }
    }

    /// Step 2 of spec §5.2: the RPF callback on `owner`, the owner of the candidate iif, which
    /// may rewrite iif, upstream and route. With `answer` it resumes a waiting job.
    pub(super) fn rpf_callback(
        &mut self,
        owner: ProtocolHandle,
        key: MfeKey,
        candidate: Candidate,
        hdr: &[u8],
        answer: Option<Answer>,
        now: Instant,
    ) -> Asked<Candidate> {
        let sg = SourceGroupEntry::sg(key.source, key.group);
        let Candidate {
            mut iif,
            mut upstream,
            mut route,
        } = candidate;
        match self.ask(owner, now, answer, |p, cx| {
            p.rpf(cx, sg, &mut iif, &mut upstream, hdr, &mut route)
        }) {
            Some((ticket, deadline)) => Asked::Later(ticket, deadline),
            None => Asked::Now(Candidate {
                iif,
                upstream,
                route,
            }),
        }
    }

    /// After step 2 of spec §5.2, with the RPF `answer`, or `None` if nobody owned the
    /// candidate iif: a creation then makes a negative MFE with no callbacks [Dec]; a refresh
    /// has no owner to vouch for the MFE, which goes as at expiry, as it does when the answer
    /// moved the iif to an interface nobody owns.
    pub(super) fn after_rpf(
        &mut self,
        key: MfeKey,
        job: Job,
        candidate: Candidate,
        answer: Option<Candidate>,
        now: Instant,
    ) {
        let Some(rpf) = answer else {
            return match job {
                Job::Refresh => self.remove_mfe(key),
                Job::Create { .. } => {
                    let alerting = Alerting {
                        job,
                        candidate,
                        rpf: candidate,
                        vetoed: BTreeSet::new(),
                        offers: VecDeque::new(),
                    };
                    self.finish(key, alerting, true, now)
                }
            };
        };
        if matches!(job, Job::Refresh) && self.owner_of(rpf.iif).is_none() {
            return self.remove_mfe(key);
        }
        let alerting = Alerting {
            job,
            candidate,
            rpf,
            vetoed: BTreeSet::new(),
            offers: self.creation_offers(key, rpf.iif),
        };
        self.creation_alerts(key, alerting, now);
    }

    /// Step 3 of spec §5.3: the OIFs a creation alert offers, grouped by owner in the order
    /// the alerts go out (spec §5.2 step 4).
    fn creation_offers(
        &self,
        key: MfeKey,
        iif: InterfaceId,
    ) -> VecDeque<(ProtocolHandle, Vec<MgmIfEntry>)> {
        let mut by_owner: BTreeMap<_, Vec<MgmIfEntry>> = BTreeMap::new();
        for id in self.members.covering_ids(key.source, key.group) {
            if id == iif {
                continue;
            }
            let Some(owner) = self.interfaces.get(&id) else {
                continue;
            };
            let Some(h) = owner.primary() else {
                continue;
            };
            by_owner
                .entry((self.sort_key(h), h))
                .or_default()
                .push(MgmIfEntry {
                    if_id: id,
                    igmp: owner.igmp.is_some(),
                    enabled: true,
                });
        }
        by_owner.into_iter().map(|((_, h), o)| (h, o)).collect()
    }

    /// Step 4 of spec §5.2: the creation alerts still to send, one per owner in order, then
    /// the install. Waits at an alert whose answer comes later.
    pub(super) fn creation_alerts(&mut self, key: MfeKey, mut alerting: Alerting, now: Instant) {
        while let Some((h, offered)) = alerting.offers.pop_front() {
            match self.creation_alert(h, key, alerting.rpf.iif, &offered, None, now) {
                Asked::Now(vetoed) => alerting.vetoed.extend(vetoed),
                Asked::Later(ticket, deadline) => {
                    let step = Step::Alert { alerting, offered };
                    return self.park(h, ticket, deadline, key, step);
                }
            }
        }
        self.finish(key, alerting, false, now);
    }

    /// One creation alert to `h` with its `offered` OIFs; the ones it disabled. With
    /// `answer` it resumes a waiting job.
    pub(super) fn creation_alert(
        &mut self,
        h: ProtocolHandle,
        key: MfeKey,
        iif: InterfaceId,
        offered: &[MgmIfEntry],
        answer: Option<Answer>,
        now: Instant,
    ) -> Asked<Vec<InterfaceId>> {
        let sg = SourceGroupEntry::sg(key.source, key.group);
        let mut entries = offered.to_vec();
        if let Some((ticket, deadline)) = self.ask(h, now, answer, |p, cx| {
            p.creation_alert(cx, sg, iif, &mut entries)
        }) {
            return Asked::Later(ticket, deadline);
        }
        // Match by position: the callee may only flip `enabled` on its own entries.
        let vetoed = offered
            .iter()
            .zip(&entries)
            .filter(|(_, answer)| !answer.enabled)
            .map(|(offer, _)| offer.if_id)
            .collect();
        Asked::Now(vetoed)
    }

    /// Step 5 of spec §5.2: the job's MFE from its callbacks' answers, installed. Membership
    /// changes while the job waited count, as the OIF list comes from the table as it is now.
    fn finish(&mut self, key: MfeKey, alerting: Alerting, forced_negative: bool, now: Instant) {
        let Alerting {
            job,
            candidate,
            rpf,
            vetoed,
            ..
        } = alerting;
        match job {
            Job::Create { hdr, .. } => {
                self.finish_create(key, candidate, rpf, vetoed, forced_negative, hdr, now)
            }
            Job::Refresh => self.finish_refresh(key, candidate, rpf, vetoed, now),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_create(
        &mut self,
        key: MfeKey,
        candidate: Candidate,
        r: Candidate,
        vetoed: BTreeSet<InterfaceId>,
        forced_negative: bool,
        hdr: Vec<u8>,
        now: Instant,
    ) {
        // A creation that waited may find the table full: the data plane raises it again.
        if self.mfes.contains_key(&key) || self.mfes.len() >= self.config.max_mfes {
            return;
        }
        let oif_state = vetoed
            .iter()
            .map(|id| {
                let vetoed = OifState {
                    forward_pin: false,
                    vetoed: true,
                };
                (*id, vetoed)
            })
            .collect();
        let iif_protocol = self
            .owner_of(r.iif)
            .map_or(ProtocolId(0), |h| self.sort_key(h).0);
        let lifetime = self.config.mfe_lifetime_s;
        let mfe = Mfe {
            iif: r.iif,
            upstream: r.upstream,
            iif_protocol,
            route: r.route,
            oif_state,
            forced_negative,
            created_at: now,
            timeout_s: lifetime,
            expires_at: now + Duration::from_secs(lifetime.into()),
            counters: MfeCounters::default(),
            packets_at_start: 0,
            rpf_candidate: candidate,
            hdr,
            last_wrong_if: None,
        };
        self.expiry.insert((mfe.expires_at, key));
        self.mfes.insert(key, mfe);
        // Step 5: install, then let the iif owner prune upstream if nobody wants the traffic.
        let negative = self.install_current(key);
        if negative {
            // An adopted entry the data plane already holds is installed with no change.
            self.track_negative(key, Some((r.iif, now)));
            self.enforce_negative_budget(r.iif);
        }
        if negative && !forced_negative {
            self.mfe_alert(key, true, now);
        }
    }

    /// Re-creates MFE `key` in place (spec §5.6 refresh in place [Dec], §9 item 11): route
    /// lookup, the RPF callback with the header of the packet that created it, the creation
    /// alerts, then one install that *replaces* the data-plane entry (only if the result
    /// differs), so no packet of the flow is dropped, even while the refresh waits for an
    /// answer. The new iif, upstream, route and vetoes are the refresh's answers; FORWARD pins
    /// stay, as the MFE is not deleted. A negative result sends the prune alert as creation
    /// does. With `new_lifetime` (an expiry) the lifetime starts again now.
    ///
    /// The RPF step fails when it ends on an interface nobody owns (the RPF table points where
    /// no protocol runs, or the callback moved the iif there): there is no owner to vouch for
    /// the MFE, so it is deleted as at expiry, and the next packet goes through §5.2.
    pub(super) fn refresh_mfe(&mut self, key: MfeKey, new_lifetime: bool, now: Instant) {
        let lifetime = self.config.mfe_lifetime_s;
        let Some(mfe) = self.mfes.get_mut(&key) else {
            return;
        };
        if new_lifetime {
            self.expiry.remove(&(mfe.expires_at, key));
            mfe.created_at = now;
            mfe.timeout_s = lifetime;
            mfe.expires_at = now + Duration::from_secs(lifetime.into());
            mfe.packets_at_start = mfe.counters.packets();
            self.expiry.insert((mfe.expires_at, key));
        }
        let iif = mfe.iif;
        // A refresh waiting for an answer asks afresh if its question changed meanwhile.
        if self.is_waiting(key, |job| matches!(job, Job::Refresh)) {
            return;
        }
        // Without a route, the flow's packets arrive on the MFE's iif: that is the arrival
        // interface §5.2 step 1 falls back to.
        let candidate = self.rpf_candidate(key.source, iif);
        self.resolve(key, Job::Refresh, candidate, now);
    }

    fn finish_refresh(
        &mut self,
        key: MfeKey,
        candidate: Candidate,
        r: Candidate,
        vetoed: BTreeSet<InterfaceId>,
        now: Instant,
    ) {
        // The iif's owner may have left while the refresh waited.
        let Some(iif_owner) = self.owner_of(r.iif) else {
            return self.remove_mfe(key);
        };
        let iif_protocol = self.sort_key(iif_owner).0;
        let Some(mfe) = self.mfes.get_mut(&key) else {
            return;
        };
        mfe.iif = r.iif;
        mfe.upstream = r.upstream;
        mfe.route = r.route;
        mfe.iif_protocol = iif_protocol;
        mfe.forced_negative = false;
        mfe.rpf_candidate = candidate;
        mfe.oif_state.retain(|_, s| s.forward_pin);
        for state in mfe.oif_state.values_mut() {
            state.vetoed = false;
        }
        for id in &vetoed {
            mfe.oif_state.entry(*id).or_default().vetoed = true;
        }
        // The MFE-level alerts a change of the OIF list sends (spec §4.7), plus the prune
        // alert a negative result gets at creation, which lets the owner choose the lifetime.
        let was_negative = self.installed.get(&key).is_some_and(|(_, o)| o.is_empty());
        let negative = self.install_current(key);
        if negative || was_negative {
            self.mfe_alert(key, negative, now);
        }
    }

    /// Queues whatever ops bring the data plane in line with every MFE. With `alerts`, an OIF
    /// list that went empty ↔ non-empty sends the MFE-level alert to the iif owner, after all
    /// map writes (spec §4.7 ordering).
    pub(super) fn sync_mfes(&mut self, now: Instant, alerts: bool) {
        let keys: Vec<MfeKey> = self.mfes.keys().copied().collect();
        self.sync_some_mfes(keys, now, alerts);
    }

    /// [`Mgm::sync_mfes`] for the MFEs a membership change of `key` can move: the only ones
    /// whose OIF candidates it changes (spec §5.3), so its cost follows them, not the table.
    pub(super) fn sync_covered_mfes(&mut self, key: MembershipKey, now: Instant) {
        let keys = self.covered_mfes(key);
        self.sync_some_mfes(keys, now, true);
    }

    /// The MFEs `key` covers. MFEs sort by group, then source, so a (*,G) is a range of the
    /// table and an (S,G) one entry; only (*,*) covers them all.
    pub(super) fn covered_mfes(&self, key: MembershipKey) -> Vec<MfeKey> {
        if key.group.is_unspecified() {
            return self.mfes.keys().copied().collect();
        }
        if key.is_source_specific() {
            let one = MfeKey {
                group: key.group,
                source: key.source,
            };
            return self
                .mfes
                .get_key_value(&one)
                .map(|(k, _)| *k)
                .into_iter()
                .collect();
        }
        let first = MfeKey {
            group: key.group,
            source: Ipv4Addr::UNSPECIFIED,
        };
        let last = MfeKey {
            group: key.group,
            source: Ipv4Addr::BROADCAST,
        };
        self.mfes.range(first..=last).map(|(k, _)| *k).collect()
    }

    fn sync_some_mfes(&mut self, keys: Vec<MfeKey>, now: Instant, alerts: bool) {
        let mut transitions = Vec::new();
        for key in keys {
            let was_negative = self.installed.get(&key).map(|(_, o)| o.is_empty());
            let negative = self.install_current(key);
            if was_negative.is_some_and(|w| w != negative) {
                transitions.push((key, negative));
            }
        }
        if alerts {
            for (key, negative) in transitions {
                self.mfe_alert(key, negative, now);
            }
        }
    }

    /// Queues an install if the data plane differs from MFE `key`; returns whether the MFE is
    /// negative.
    fn install_current(&mut self, key: MfeKey) -> bool {
        let Some(mfe) = self.mfes.get(&key) else {
            return false;
        };
        let oifs = self.active_oifs(key, mfe);
        let negative = oifs.is_empty();
        let tracked = negative.then_some((mfe.iif, mfe.created_at));
        let iif = mfe.iif;
        let installed = self.installed.entry(key);
        let same =
            matches!(&installed, Entry::Occupied(e) if e.get().0 == iif && e.get().1 == oifs);
        if !same {
            self.map_ops.push_back(MapOp::InstallMfe {
                source: key.source,
                group: key.group,
                iif,
                oifs: oifs.clone(),
            });
            installed.insert_entry((iif, oifs));
            // Only here can the MFE turn negative or not, or move: tracking it on every call
            // would cost a lookup per MFE in each membership change's walk.
            self.track_negative(key, tracked);
        }
        negative
    }

    /// Keeps `negatives` in step with MFE `key`: negative on an iif since a creation time, or
    /// not (any more).
    fn track_negative(&mut self, key: MfeKey, now: Option<(InterfaceId, Instant)>) {
        if self.negative_at.get(&key).copied() == now {
            return;
        }
        if let Some((iif, at)) = self.negative_at.remove(&key) {
            if let Some(set) = self.negatives.get_mut(&iif) {
                set.remove(&(at, key));
                if set.is_empty() {
                    self.negatives.remove(&iif);
                }
            }
        }
        if let Some((iif, at)) = now {
            self.negatives.entry(iif).or_default().insert((at, key));
            self.negative_at.insert(key, (iif, at));
        }
    }

    /// Evicts `iif`'s oldest negative MFEs while it holds more than its budget.
    fn enforce_negative_budget(&mut self, iif: InterfaceId) {
        loop {
            let oldest = match self.negatives.get(&iif) {
                Some(set) if set.len() > self.config.negative_budget => {
                    set.first().map(|(_, k)| *k)
                }
                _ => None,
            };
            let Some(key) = oldest else {
                return;
            };
            self.remove_mfe(key);
            self.negative_evictions += 1;
        }
    }

    /// Negative MFEs evicted over [`Config::negative_budget`](super::Config) so far.
    pub fn negative_evictions(&self) -> u64 {
        self.negative_evictions
    }

    pub(super) fn active_oifs(&self, key: MfeKey, mfe: &Mfe) -> BTreeSet<InterfaceId> {
        mfe.active_oifs(self.members.covering_ids(key.source, key.group))
    }

    /// The MFE-level alert to the iif owner (spec §4.7): a graft becomes a join alert, a turn
    /// to negative a prune alert whose timeout output restarts the MFE's lifetime (spec §5.6).
    /// MGM's proposal stands while the owner's answer is on its way.
    fn mfe_alert(&mut self, key: MfeKey, negative: bool, now: Instant) {
        let Some(mfe) = self.mfes.get(&key) else {
            return;
        };
        let (iif, timeout_in) = (mfe.iif, mfe.timeout_s);
        let Some(owner) = self.owner_of(iif) else {
            return;
        };
        let sg = SourceGroupEntry::sg(key.source, key.group);
        if !negative {
            self.call(owner, now, |p, cx| p.join_alert(cx, sg, false));
            return;
        }
        let mut timeout = timeout_in;
        let later = self.ask(owner, now, None, |p, cx| {
            p.prune_alert(cx, sg, iif, false, &mut timeout)
        });
        match later {
            Some((ticket, deadline)) => {
                self.set_lifetime(key, timeout_in, now);
                let step = Step::Prune {
                    at: now,
                    iif,
                    timeout_in,
                };
                self.park(owner, ticket, deadline, key, step);
            }
            None => self.set_lifetime(key, timeout, now),
        }
    }

    /// MFE `key` lives `timeout_s` from `from` (spec §5.6).
    pub(super) fn set_lifetime(&mut self, key: MfeKey, timeout_s: u32, from: Instant) {
        if let Some(mfe) = self.mfes.get_mut(&key) {
            self.expiry.remove(&(mfe.expires_at, key));
            mfe.timeout_s = timeout_s;
            mfe.expires_at = from + Duration::from_secs(timeout_s.into());
            self.expiry.insert((mfe.expires_at, key));
        }
    }

    /// Deletes one MFE and queues the matching data-plane delete.
    pub(super) fn remove_mfe(&mut self, key: MfeKey) {
        if let Some(mfe) = self.mfes.remove(&key) {
            self.expiry.remove(&(mfe.expires_at, key));
            self.forget_waiting(key);
        }
        self.track_negative(key, None);
        if self.installed.remove(&key).is_some() {
            self.map_ops.push_back(MapOp::DeleteMfe {
                source: key.source,
                group: key.group,
            });
        }
    }

    /// Deletes every MFE whose iif is `id`, without callbacks (spec §3.1 step 3, §3.2 step 2).
    pub(super) fn delete_mfes_with_iif(&mut self, id: InterfaceId) {
        let keys: Vec<MfeKey> = self
            .mfes
            .iter()
            .filter(|(_, m)| m.iif == id)
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            self.remove_mfe(key);
        }
    }

    /// Forgets FORWARD pins and vetoes on `id` when its owner leaves.
    pub(super) fn clear_oif_state(&mut self, id: InterfaceId) {
        for mfe in self.mfes.values_mut() {
            mfe.oif_state.remove(&id);
        }
    }
}
