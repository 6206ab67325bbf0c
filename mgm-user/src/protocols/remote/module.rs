//! The core's view of an out-of-process module: a [`RoutingProtocol`] whose callbacks become
//! lines on the module's connection. Callbacks with out-parameters (rpf, creation alert, and
//! the prune alert of a negative MFE) promise them for later ([`Cx::answer_later`]) and return
//! at once: the decision that needs the answer waits in the core, nothing else does. The
//! daemon hands the module's answer to [`Mgm::answer`](crate::core::Mgm::answer), which calls
//! the same callback again with it; without one by the deadline, MGM's proposal stands, as if
//! the callback were the trait's no-op default. A module that misses a deadline is not waited
//! for again until an answer (even a late one) shows it is alive, so a hung module costs each
//! decision nothing past one deadline.

use std::{net::Ipv4Addr, time::Duration};

use log::warn;

use super::{
    link::{ConnId, Writer},
    wire::{self, Answer, Callback, CallbackBody, OfferedOif},
};
use crate::core::{
    Cx, InterfaceId, MgmIfEntry, NoWait, RouteInfo, RoutingProtocol, SourceGroupEntry,
};
use crate::ratelimit::{self, RateLimit};

pub use crate::managed::Names;

/// At most one warning a minute that a module has too many decisions waiting.
const FULL_LOG: Duration = Duration::from_secs(60);

/// One registered out-of-process module.
pub struct RemoteModule {
    conn: ConnId,
    writer: Writer,
    names: Names,
    answer_within: Duration,
    next_cb: u64,
    /// False after a missed deadline until MGM waits again: one warning per episode.
    responsive: bool,
    full_log: RateLimit,
}

impl RemoteModule {
    pub fn new(conn: ConnId, writer: Writer, names: Names, answer_within: Duration) -> Self {
        Self {
            conn,
            writer,
            names,
            answer_within,
            next_cb: 0,
            responsive: true,
            full_log: RateLimit::new(FULL_LOG),
        }
    }

    fn name(&self, ifindex: u32) -> String {
        self.names
            .get(ifindex)
            .unwrap_or_else(|| format!("ifindex {ifindex}"))
    }

    fn ifindex(&self, name: &str) -> Option<u32> {
        self.names.ifindex(name)
    }

    fn iface(&self, id: InterfaceId) -> wire::Iface {
        wire::Iface {
            interface: self.name(id.ifindex),
            next_hop: id.next_hop,
        }
    }

    fn tell(&mut self, body: CallbackBody) {
        self.next_cb += 1;
        self.writer.send(&Callback {
            cb: self.next_cb,
            answer_within_ms: None,
            body,
        });
    }

    /// The answer this callback resumes with, if MGM hands one back; else sends the callback
    /// with the time MGM waits for its answer (0: it does not) and returns `None`, leaving
    /// the out-parameters as MGM proposed.
    fn ask(&mut self, cx: &mut Cx, body: CallbackBody) -> Option<Answer> {
        if let Some(answer) = cx.take_answer() {
            return answer.downcast::<Answer>().ok().map(|a| *a);
        }
        self.next_cb += 1;
        let cb = self.next_cb;
        let wait = match cx.answer_later(cb, self.answer_within) {
            Ok(()) => {
                self.responsive = true;
                self.answer_within
            }
            Err(why) => {
                self.log_no_wait(why, cx);
                Duration::ZERO
            }
        };
        self.writer.send(&Callback {
            cb,
            answer_within_ms: Some(wait.as_millis() as u64),
            body,
        });
        None
    }

    fn log_no_wait(&mut self, why: NoWait, cx: &Cx) {
        if why != NoWait::Full {
            return;
        }
        if let Some(left_out) = self.full_log.allow(cx.now()) {
            warn!(
                "module connection {}: too many decisions wait for its answers; MGM's proposal \
                 stands for this callback{}",
                self.conn,
                ratelimit::suppressed(left_out, FULL_LOG)
            );
        }
    }

    /// Logs the fields of `answer` that `callback` has no use for.
    fn check_unused(&self, callback: &str, answer: &Answer, used: &[&str]) {
        let present = [
            ("iif", answer.iif.is_some() || answer.iif_next_hop.is_some()),
            ("upstream", answer.upstream.is_some()),
            ("route", answer.route.is_some()),
            ("disable", !answer.disable.is_empty()),
            ("timeout_s", answer.timeout_s.is_some()),
        ];
        for (field, _) in present.iter().filter(|(f, p)| *p && !used.contains(f)) {
            warn!(
                "module connection {}: answer to {callback} callback {} sets {field}, which it \
                 has no use for; ignored",
                self.conn, answer.to
            );
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl RoutingProtocol for RemoteModule {
    fn rpf(
        &mut self,
        cx: &mut Cx,
        sg: SourceGroupEntry,
        iif: &mut InterfaceId,
        upstream: &mut Ipv4Addr,
        hdr: &[u8],
        route_info: &mut RouteInfo,
    ) {
        let body = CallbackBody::Rpf {
            entry: sg.into(),
            iif: self.name(iif.ifindex),
            iif_next_hop: iif.next_hop,
            upstream: *upstream,
            route: (*route_info).into(),
            header: hex(hdr),
        };
        let Some(a) = self.ask(cx, body) else { return };
        self.check_unused("rpf", &a, &["iif", "upstream", "route"]);
        if let Some(name) = &a.iif {
            match self.ifindex(name) {
                Some(ifindex) => {
                    *iif = InterfaceId::with_next_hop(
                        ifindex,
                        a.iif_next_hop.unwrap_or(Ipv4Addr::UNSPECIFIED),
                    )
                }
                None => warn!(
                    "module connection {}: rpf answer names {name}, which mgm does not manage; \
                     ignored",
                    self.conn
                ),
            }
        } else if let Some(nh) = a.iif_next_hop {
            iif.next_hop = nh;
        }
        if let Some(u) = a.upstream {
            *upstream = u;
        }
        if let Some(r) = a.route {
            *route_info = r.into();
        }
    }

    fn creation_alert(
        &mut self,
        cx: &mut Cx,
        sg: SourceGroupEntry,
        iif: InterfaceId,
        oifs: &mut [MgmIfEntry],
    ) {
        let body = CallbackBody::CreationAlert {
            entry: sg.into(),
            iif: self.name(iif.ifindex),
            oifs: oifs
                .iter()
                .map(|o| OfferedOif {
                    interface: self.name(o.if_id.ifindex),
                    next_hop: o.if_id.next_hop,
                    igmp: o.igmp,
                })
                .collect(),
        };
        let Some(a) = self.ask(cx, body) else { return };
        self.check_unused("creation_alert", &a, &["disable"]);
        for name in &a.disable {
            let mut found = false;
            for o in oifs.iter_mut() {
                if &self.name(o.if_id.ifindex) == name {
                    o.enabled = false;
                    found = true;
                }
            }
            if !found {
                warn!(
                    "module connection {}: creation alert answer disables {name}, which was not \
                     offered; ignored",
                    self.conn
                );
            }
        }
    }

    fn prune_alert(
        &mut self,
        cx: &mut Cx,
        sg: SourceGroupEntry,
        if_id: InterfaceId,
        member_delete: bool,
        timeout_s: &mut u32,
    ) {
        let body = CallbackBody::PruneAlert {
            entry: sg.into(),
            iface: self.iface(if_id),
            member_delete,
            timeout_s: *timeout_s,
        };
        if member_delete {
            // The timeout means nothing here (spec §4.6): nothing to wait for.
            return self.tell(body);
        }
        let Some(a) = self.ask(cx, body) else { return };
        self.check_unused("prune_alert", &a, &["timeout_s"]);
        if let Some(t) = a.timeout_s {
            *timeout_s = t;
        }
    }

    fn join_alert(&mut self, _cx: &mut Cx, sg: SourceGroupEntry, member_update: bool) {
        self.tell(CallbackBody::JoinAlert {
            entry: sg.into(),
            member_update,
        });
    }

    fn wrong_if(
        &mut self,
        _cx: &mut Cx,
        source: Ipv4Addr,
        group: Ipv4Addr,
        if_id: InterfaceId,
        hdr: &[u8],
    ) {
        let iface = self.iface(if_id);
        self.tell(CallbackBody::WrongIf {
            source,
            group,
            iface,
            header: hex(hdr),
        });
    }

    fn local_join(&mut self, _cx: &mut Cx, sg: SourceGroupEntry, if_id: InterfaceId) {
        let iface = self.iface(if_id);
        self.tell(CallbackBody::LocalJoin {
            entry: sg.into(),
            iface,
        });
    }

    fn local_leave(&mut self, _cx: &mut Cx, sg: SourceGroupEntry, if_id: InterfaceId) {
        let iface = self.iface(if_id);
        self.tell(CallbackBody::LocalLeave {
            entry: sg.into(),
            iface,
        });
    }

    fn answer_missed(&mut self, _cx: &mut Cx, ticket: u64) {
        if std::mem::replace(&mut self.responsive, false) {
            warn!(
                "module connection {}: no answer to callback {ticket} within {:?}; MGM's \
                 proposal stands, and callbacks stop waiting until the module answers",
                self.conn, self.answer_within
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::core::{Instant as CoreInstant, ProtocolHandle};
    use crate::protocols::remote::link;

    const G: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);
    const S: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    /// A module over a socket pair; the test reads the module's side.
    fn remote(answer_within: Duration) -> (RemoteModule, BufReader<UnixStream>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (tx, _rx) = tokio::sync::mpsc::channel(8);
        let writer = link::spawn(7, ours, tx).unwrap();
        let names = Names::new(BTreeMap::from([(2, "up0".into()), (3, "dn1".into())]));
        let module = RemoteModule::new(7, writer, names, answer_within);
        (module, BufReader::new(theirs))
    }

    fn next(lines: &mut BufReader<UnixStream>) -> serde_json::Value {
        let mut l = String::new();
        lines.read_line(&mut l).unwrap();
        serde_json::from_str(&l).unwrap()
    }

    /// A callback MGM may wait for (`may_wait`), or one that resumes with `answer`.
    fn cx(may_wait: Result<(), NoWait>, answer: Option<Answer>) -> Cx {
        let answer = answer.map(|a| Box::new(a) as crate::core::Answer);
        Cx::asking(
            ProtocolHandle(1),
            CoreInstant::from_millis(0),
            may_wait,
            answer,
        )
    }

    fn rpf(m: &mut RemoteModule, cx: &mut Cx) -> (InterfaceId, Ipv4Addr) {
        let (mut iif, mut upstream, mut route) = (
            InterfaceId::new(2),
            Ipv4Addr::UNSPECIFIED,
            RouteInfo::default(),
        );
        m.rpf(
            cx,
            SourceGroupEntry::sg(S, G),
            &mut iif,
            &mut upstream,
            &[0x45],
            &mut route,
        );
        (iif, upstream)
    }

    #[test]
    fn an_rpf_callback_promises_its_answer_and_takes_it_when_mgm_hands_it_back() {
        let (mut m, mut lines) = remote(Duration::from_secs(5));
        let mut asked = cx(Ok(()), None);
        // Returns at once with the proposal; the promise carries the callback's number.
        assert_eq!(
            rpf(&mut m, &mut asked),
            (InterfaceId::new(2), Ipv4Addr::UNSPECIFIED)
        );
        let cb = next(&mut lines);
        assert_eq!(
            (&cb["callback"], &cb["iif"], &cb["answer_within_ms"]),
            (&"rpf".into(), &"up0".into(), &5000.into())
        );
        let ticket = cb["cb"].as_u64().unwrap();
        let (_, later) = asked.into_parts();
        assert_eq!(later, Some(Ok((ticket, Duration::from_secs(5)))));
        let answer = Answer {
            to: ticket,
            iif: Some("dn1".into()),
            upstream: Some(Ipv4Addr::new(198, 18, 1, 9)),
            ..Answer::default()
        };
        assert_eq!(
            rpf(&mut m, &mut cx(Err(NoWait::NothingToWait), Some(answer))),
            (InterfaceId::new(3), Ipv4Addr::new(198, 18, 1, 9))
        );
        // Resuming sent nothing: the next line is the next callback.
        m.join_alert(
            &mut cx(Err(NoWait::NothingToWait), None),
            SourceGroupEntry::sg(S, G),
            true,
        );
        assert_eq!(next(&mut lines)["cb"], ticket + 1);
    }

    #[test]
    fn a_callback_mgm_does_not_wait_for_says_so_and_keeps_the_proposal() {
        let (mut m, mut lines) = remote(Duration::from_millis(50));
        for why in [NoWait::Unresponsive, NoWait::Full] {
            let mut c = cx(Err(why), None);
            assert_eq!(rpf(&mut m, &mut c).0, InterfaceId::new(2));
            assert_eq!(next(&mut lines)["answer_within_ms"], 0);
            assert_eq!(c.into_parts().1, Some(Err(why)));
        }
        // Waited for again: the deadline is back.
        rpf(&mut m, &mut cx(Ok(()), None));
        assert_eq!(next(&mut lines)["answer_within_ms"], 50);
    }

    #[test]
    fn a_creation_alert_answer_vetoes_the_named_interfaces_only() {
        let (mut m, mut lines) = remote(Duration::from_secs(5));
        let entry = |ifindex| MgmIfEntry {
            if_id: InterfaceId::new(ifindex),
            igmp: true,
            enabled: true,
        };
        let sg = SourceGroupEntry::sg(S, G);
        let mut oifs = [entry(3), entry(9)];
        m.creation_alert(&mut cx(Ok(()), None), sg, InterfaceId::new(2), &mut oifs);
        let cb = next(&mut lines);
        assert_eq!(cb["oifs"][0]["interface"], "dn1");
        assert_eq!((oifs[0].enabled, oifs[1].enabled), (true, true));
        let answer = Answer {
            to: cb["cb"].as_u64().unwrap(),
            disable: vec!["dn1".into()],
            ..Answer::default()
        };
        let mut resumed = cx(Err(NoWait::NothingToWait), Some(answer));
        m.creation_alert(&mut resumed, sg, InterfaceId::new(2), &mut oifs);
        assert_eq!((oifs[0].enabled, oifs[1].enabled), (false, true));
    }
}
