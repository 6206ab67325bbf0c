//! Decisions waiting for a client's answer. A client that answers from elsewhere (an
//! out-of-process module) may promise a callback's out-parameters for later
//! ([`Cx::answer_later`](super::Cx::answer_later)): the RPF callback (spec §5.2 step 2), a
//! creation alert (step 4), the prune alert of a negative MFE (§4.7, §5.6). The decision that
//! needs them (an MFE creation or refresh, a lifetime) waits here under the client's ticket,
//! and MGM goes on with everything else; the data plane keeps what it has meanwhile (a
//! creation's placeholder, a refreshed MFE's entry). The answer, or MGM's proposal at the
//! deadline, takes the decision up exactly where the synchronous path would have gone on.
//! Nothing here performs I/O.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use super::error::MgmError;
use super::mfe::{Candidate, MfeKey};
use super::protocol::{Answer, Cx, MgmIfEntry, NoWait, RoutingProtocol};
use super::time::Instant;
use super::types::{InterfaceId, ProtocolHandle, SourceGroupEntry};
use super::Mgm;

/// What a callback with out-parameters came back with: its answer, or the promise of one by
/// the deadline under a ticket.
pub(super) enum Asked<T> {
    Now(T),
    Later(u64, Instant),
}

/// What an MFE decision is for.
pub(super) enum Job {
    /// Spec §5.2 for a packet that arrived on `in_if`; `hdr` holds its first bytes.
    Create { in_if: InterfaceId, hdr: Vec<u8> },
    /// Spec §5.6 refresh in place of an MFE that exists.
    Refresh,
}

impl Job {
    pub(super) fn is_create(&self) -> bool {
        matches!(self, Job::Create { .. })
    }
}

/// A creation or refresh past its RPF step: the creation alerts still to send, then the
/// install (spec §5.2 steps 3–5).
pub(super) struct Alerting {
    pub(super) job: Job,
    /// The step-1 candidate, which the RPF step started from.
    pub(super) candidate: Candidate,
    /// The RPF step's answer.
    pub(super) rpf: Candidate,
    /// OIFs the alerts so far disabled.
    pub(super) vetoed: BTreeSet<InterfaceId>,
    /// The alerts still to send, by owner in order.
    pub(super) offers: VecDeque<(ProtocolHandle, Vec<MgmIfEntry>)>,
}

/// Where a waiting decision stopped.
pub(super) enum Step {
    /// At the RPF callback of `job`, asked with `candidate`.
    Rpf { job: Job, candidate: Candidate },
    /// At the creation alert offering `offered`.
    Alert {
        alerting: Alerting,
        offered: Vec<MgmIfEntry>,
    },
    /// At the prune alert sent at `at` for the MFE's iif `iif`, proposing `timeout_in`; the
    /// proposal has stood since.
    Prune {
        at: Instant,
        iif: InterfaceId,
        timeout_in: u32,
    },
}

impl Step {
    fn job(&self) -> Option<&Job> {
        match self {
            Step::Rpf { job, .. } => Some(job),
            Step::Alert { alerting, .. } => Some(&alerting.job),
            Step::Prune { .. } => None,
        }
    }

    /// Whether the client's letting go of `id` makes the question moot.
    fn concerns(&self, id: InterfaceId) -> bool {
        match self {
            Step::Rpf { candidate, .. } => candidate.iif == id,
            Step::Alert { alerting, offered } => {
                alerting.rpf.iif == id || offered.iter().any(|o| o.if_id == id)
            }
            Step::Prune { iif, .. } => *iif == id,
        }
    }
}

/// One decision waiting for an answer.
pub(super) struct Waiting {
    key: MfeKey,
    deadline: Instant,
    step: Step,
}

impl Mgm {
    /// An answer `h` promised under `ticket` through [`Cx::answer_later`]: MGM hands it back
    /// to the same callback, which sets the out-parameters from it, and the decision goes on.
    /// Any answer, even a late one, shows the client is alive: its callbacks are waited for
    /// again.
    ///
    /// # Errors
    /// `InvalidParameter` for a bad handle; `NotFound` when no decision waits for `ticket`:
    /// it was answered already, its deadline passed, or the client never promised it.
    pub fn answer(
        &mut self,
        h: ProtocolHandle,
        ticket: u64,
        answer: Answer,
        now: Instant,
    ) -> Result<(), MgmError> {
        self.registration(h)?;
        self.unresponsive.remove(&h);
        let waiting = self.unpark(h, ticket).ok_or(MgmError::NotFound)?;
        self.resume(h, waiting, Some(answer), now);
        self.run_queued(now);
        Ok(())
    }

    /// Times `h` found [`Config::max_waiting`](super::Config) decisions waiting already and
    /// was not waited for.
    pub fn waiting_full(&self) -> u64 {
        self.waiting_full
    }

    /// [`Mgm::call`] for a callback with out-parameters: the client may promise them for later,
    /// unless `answer` resumes a decision with them. Returns the promise's ticket and deadline.
    pub(super) fn ask(
        &mut self,
        to: ProtocolHandle,
        now: Instant,
        answer: Option<Answer>,
        f: impl FnOnce(&mut dyn RoutingProtocol, &mut Cx),
    ) -> Option<(u64, Instant)> {
        let may_wait = if answer.is_some() {
            Err(NoWait::NothingToWait)
        } else if self.unresponsive.contains(&to) {
            Err(NoWait::Unresponsive)
        } else if self.waiting.range((to, 0)..=(to, u64::MAX)).count() >= self.config.max_waiting {
            Err(NoWait::Full)
        } else {
            Ok(())
        };
        let cx = Cx::asking(to, now, may_wait, answer);
        let (ticket, within): (u64, Duration) = match self.invoke(to, cx, f).flatten()? {
            Ok(promise) => promise,
            Err(why) => {
                if why == NoWait::Full {
                    self.waiting_full += 1;
                }
                return None;
            }
        };
        // A ticket already waiting is the client's mistake; its proposal stands.
        if self.waiting.contains_key(&(to, ticket)) {
            return None;
        }
        Some((ticket, now + within))
    }

    pub(super) fn park(
        &mut self,
        h: ProtocolHandle,
        ticket: u64,
        deadline: Instant,
        key: MfeKey,
        step: Step,
    ) {
        self.answer_deadlines.insert((deadline, h, ticket));
        self.waiting.insert(
            (h, ticket),
            Waiting {
                key,
                deadline,
                step,
            },
        );
    }

    fn unpark(&mut self, h: ProtocolHandle, ticket: u64) -> Option<Waiting> {
        let waiting = self.waiting.remove(&(h, ticket))?;
        self.answer_deadlines.remove(&(waiting.deadline, h, ticket));
        Some(waiting)
    }

    /// Whether a creation or refresh of `key` whose job matches `job` waits for an answer.
    pub(super) fn is_waiting(&self, key: MfeKey, job: impl Fn(&Job) -> bool) -> bool {
        self.waiting
            .values()
            .any(|w| w.key == key && w.step.job().is_some_and(&job))
    }

    /// The earliest deadline of a waiting decision.
    pub(super) fn next_answer_deadline(&self) -> Option<Instant> {
        self.answer_deadlines.first().map(|(at, _, _)| *at)
    }

    /// Decisions whose deadline passed go on with MGM's proposal, as with the trait's no-op
    /// default; their clients are not waited for again until they answer.
    pub(super) fn answers_due(&mut self, now: Instant) {
        while let Some(&(at, h, ticket)) = self.answer_deadlines.first() {
            if at > now {
                break;
            }
            self.answer_deadlines.pop_first();
            if let Some(waiting) = self.waiting.remove(&(h, ticket)) {
                self.unresponsive.insert(h);
                self.call(h, now, |p, cx| p.answer_missed(cx, ticket));
                self.resume(h, waiting, None, now);
            }
        }
    }

    /// `h` let go of `id`: what it was asked about there goes on at once with MGM's
    /// proposal, against the ownership as it is now.
    pub(super) fn settle_waiting(&mut self, h: ProtocolHandle, id: InterfaceId, now: Instant) {
        let moot: Vec<u64> = self
            .waiting
            .range((h, 0)..=(h, u64::MAX))
            .filter(|(_, w)| w.step.concerns(id))
            .map(|((_, ticket), _)| *ticket)
            .collect();
        for ticket in moot {
            if let Some(waiting) = self.unpark(h, ticket) {
                self.resume(h, waiting, None, now);
            }
        }
    }

    /// `h` deregisters: nothing waits for it, nor is it remembered as unresponsive.
    pub(super) fn forget_client(&mut self, h: ProtocolHandle) {
        let tickets: Vec<u64> = self
            .waiting
            .range((h, 0)..=(h, u64::MAX))
            .map(|((_, ticket), _)| *ticket)
            .collect();
        for ticket in tickets {
            self.unpark(h, ticket);
        }
        self.unresponsive.remove(&h);
    }

    /// MFE `key` is gone: its refresh and prune timeout wait for nothing any more.
    pub(super) fn forget_waiting(&mut self, key: MfeKey) {
        if self.waiting.is_empty() {
            return;
        }
        let gone: Vec<(ProtocolHandle, u64)> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.key == key && !w.step.job().is_some_and(Job::is_create))
            .map(|(k, _)| *k)
            .collect();
        for (h, ticket) in gone {
            self.unpark(h, ticket);
        }
    }

    /// Takes a waiting decision up with `answer`, or with MGM's proposal (`None`).
    fn resume(
        &mut self,
        h: ProtocolHandle,
        waiting: Waiting,
        answer: Option<Answer>,
        now: Instant,
    ) {
        let key = waiting.key;
        match waiting.step {
            Step::Rpf { job, candidate } => {
                let Some(fresh) = self.job_candidate(key, &job) else {
                    return;
                };
                // A route or the owner changed meanwhile: the question is not the one asked.
                if fresh != candidate || self.owner_of(candidate.iif) != Some(h) {
                    return self.resolve(key, job, fresh, now);
                }
                let asked = match answer {
                    None => Asked::Now(candidate),
                    Some(answer) => {
                        let hdr = self.job_header(key, &job);
                        self.rpf_callback(h, key, candidate, &hdr, Some(answer), now)
                    }
                };
                match asked {
                    Asked::Now(r) => self.after_rpf(key, job, candidate, Some(r), now),
                    Asked::Later(ticket, deadline) => {
                        self.park(h, ticket, deadline, key, Step::Rpf { job, candidate });
                    }
                }
            }
            Step::Alert {
                mut alerting,
                offered,
            } => {
                if self.job_candidate(key, &alerting.job).is_none() {
                    return;
                }
                if let Some(answer) = answer {
                    let iif = alerting.rpf.iif;
                    match self.creation_alert(h, key, iif, &offered, Some(answer), now) {
                        Asked::Now(vetoed) => alerting.vetoed.extend(vetoed),
                        Asked::Later(ticket, deadline) => {
                            let step = Step::Alert { alerting, offered };
                            return self.park(h, ticket, deadline, key, step);
                        }
                    }
                }
                self.creation_alerts(key, alerting, now);
            }
            Step::Prune {
                at,
                iif,
                timeout_in,
            } => {
                let Some(answer) = answer else {
                    return;
                };
                if self.mfes.get(&key).is_none_or(|m| m.iif != iif) {
                    return;
                }
                let sg = SourceGroupEntry::sg(key.source, key.group);
                let mut timeout = timeout_in;
                self.ask(h, now, Some(answer), |p, cx| {
                    p.prune_alert(cx, sg, iif, false, &mut timeout)
                });
                self.set_lifetime(key, timeout, at);
            }
        }
    }

    /// The step-1 candidate `job` would start from now, or `None` if the job has nothing to
    /// do any more (its MFE came, or went).
    fn job_candidate(&self, key: MfeKey, job: &Job) -> Option<Candidate> {
        match job {
            Job::Create { in_if, .. } => {
                (!self.mfes.contains_key(&key)).then(|| self.rpf_candidate(key.source, *in_if))
            }
            Job::Refresh => self
                .mfes
                .get(&key)
                .map(|m| self.rpf_candidate(key.source, m.iif)),
        }
    }
}
