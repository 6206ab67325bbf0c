//! The core's view of an out-of-process module: a [`RoutingProtocol`] whose callbacks become
//! lines on the module's connection. Callbacks with out-parameters (rpf, creation alert, and
//! the prune alert of a negative MFE) wait for the module's answer up to a deadline; without
//! one in time, MGM's proposal stands, as if the callback were the trait's no-op default.
//! A module that misses a deadline is not waited for again until an answer (even a late one)
//! shows it is alive, so a hung module costs the daemon one deadline, not one per packet.

use std::{
    net::Ipv4Addr,
    sync::mpsc::RecvTimeoutError,
    time::{Duration, Instant},
};

use log::warn;

use super::{
    link::{Answers, ConnId, Writer},
    wire::{self, Answer, Callback, CallbackBody, OfferedOif},
};
use crate::core::{Cx, InterfaceId, MgmIfEntry, RouteInfo, RoutingProtocol, SourceGroupEntry};

pub use crate::managed::Names;

/// One registered out-of-process module.
pub struct RemoteModule {
    conn: ConnId,
    writer: Writer,
    answers: Answers,
    names: Names,
    answer_within: Duration,
    next_cb: u64,
    /// False after a missed deadline, until an answer arrives.
    responsive: bool,
}

impl RemoteModule {
    pub fn new(
        conn: ConnId,
        writer: Writer,
        answers: Answers,
        names: Names,
        answer_within: Duration,
    ) -> Self {
        Self {
            conn,
            writer,
            answers,
            names,
            answer_within,
            next_cb: 0,
            responsive: true,
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

    /// Sends a callback that wants an answer and waits for it, within the deadline.
    fn ask(&mut self, body: CallbackBody) -> Option<Answer> {
        self.next_cb += 1;
        let cb = self.next_cb;
        let answers = self.answers.clone();
        let answers = answers.lock().unwrap_or_else(|p| p.into_inner());
        // Answers that came after their deadline: the module is alive again.
        while answers.try_recv().is_ok() {
            self.responsive = true;
        }
        let wait = if self.responsive {
            self.answer_within
        } else {
            Duration::ZERO
        };
        let sent = self.writer.send(&Callback {
            cb,
            answer_within_ms: Some(wait.as_millis() as u64),
            body,
        });
        if !sent || wait.is_zero() {
            return None;
        }
        let until = Instant::now() + wait;
        loop {
            match answers.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(a) if a.to == cb => return Some(a),
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => {
                    warn!(
                        "module connection {}: no answer to callback {cb} within {wait:?}; MGM's \
                         proposal stands, and callbacks stop waiting until the module answers",
                        self.conn
                    );
                    self.responsive = false;
                    return None;
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
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
        _cx: &mut Cx,
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
        let Some(a) = self.ask(body) else { return };
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
        _cx: &mut Cx,
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
        let Some(a) = self.ask(body) else { return };
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
        _cx: &mut Cx,
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
        let Some(a) = self.ask(body) else { return };
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
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::core::Instant as CoreInstant;
    use crate::protocols::remote::link;

    const G: Ipv4Addr = Ipv4Addr::new(239, 1, 1, 1);
    const S: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    /// A module over a socket pair; the test plays the module's side.
    fn remote(answer_within: Duration) -> (RemoteModule, BufReader<UnixStream>, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (tx, _rx) = tokio::sync::mpsc::channel(8);
        let (writer, answers) = link::spawn(7, ours, tx).unwrap();
        let names = Names::new(BTreeMap::from([(2, "up0".into()), (3, "dn1".into())]));
        let module = RemoteModule::new(7, writer, answers, names, answer_within);
        (module, BufReader::new(theirs.try_clone().unwrap()), theirs)
    }

    fn next(lines: &mut BufReader<UnixStream>) -> serde_json::Value {
        let mut l = String::new();
        lines.read_line(&mut l).unwrap();
        serde_json::from_str(&l).unwrap()
    }

    fn rpf(m: &mut RemoteModule) -> (InterfaceId, Ipv4Addr) {
        let mut cx = Cx::new(crate::core::ProtocolHandle(1), CoreInstant::from_millis(0));
        let (mut iif, mut upstream, mut route) = (
            InterfaceId::new(2),
            Ipv4Addr::UNSPECIFIED,
            RouteInfo::default(),
        );
        m.rpf(
            &mut cx,
            SourceGroupEntry::sg(S, G),
            &mut iif,
            &mut upstream,
            &[0x45],
            &mut route,
        );
        (iif, upstream)
    }

    #[test]
    fn an_answer_rewrites_the_rpf_out_parameters() {
        let (mut m, mut lines, mut theirs) = remote(Duration::from_secs(5));
        let answerer = std::thread::spawn(move || {
            let cb = next(&mut lines);
            assert_eq!(
                (&cb["callback"], &cb["iif"]),
                (&"rpf".into(), &"up0".into())
            );
            assert_eq!(cb["answer_within_ms"], 5000);
            let a = format!(
                "{{\"op\":\"answer\",\"to\":{},\"iif\":\"dn1\",\"upstream\":\"198.18.1.9\"}}\n",
                cb["cb"]
            );
            theirs.write_all(a.as_bytes()).unwrap();
        });
        assert_eq!(
            rpf(&mut m),
            (InterfaceId::new(3), Ipv4Addr::new(198, 18, 1, 9))
        );
        answerer.join().unwrap();
    }

    #[test]
    fn a_missed_deadline_keeps_the_proposal_and_stops_waiting_until_an_answer_comes() {
        let (mut m, mut lines, mut theirs) = remote(Duration::from_millis(50));
        assert_eq!(rpf(&mut m), (InterfaceId::new(2), Ipv4Addr::UNSPECIFIED));
        let first = next(&mut lines);
        assert_eq!(first["answer_within_ms"], 50);
        // Not waited for now: the proposal stands at once.
        let t = Instant::now();
        assert_eq!(rpf(&mut m).0, InterfaceId::new(2));
        assert!(t.elapsed() < Duration::from_millis(50));
        assert_eq!(next(&mut lines)["answer_within_ms"], 0);
        // A late answer shows the module is alive: the next callback waits again.
        let late = format!("{{\"op\":\"answer\",\"to\":{}}}\n", first["cb"]);
        theirs.write_all(late.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        rpf(&mut m);
        assert_eq!(next(&mut lines)["answer_within_ms"], 50);
    }

    #[test]
    fn a_creation_alert_answer_vetoes_the_named_interfaces_only() {
        let (mut m, mut lines, mut theirs) = remote(Duration::from_secs(5));
        let answerer = std::thread::spawn(move || {
            let cb = next(&mut lines);
            assert_eq!(cb["oifs"][0]["interface"], "dn1");
            let a = format!(
                "{{\"op\":\"answer\",\"to\":{},\"disable\":[\"dn1\"]}}\n",
                cb["cb"]
            );
            theirs.write_all(a.as_bytes()).unwrap();
        });
        let mut cx = Cx::new(crate::core::ProtocolHandle(1), CoreInstant::from_millis(0));
        let entry = |ifindex| MgmIfEntry {
            if_id: InterfaceId::new(ifindex),
            igmp: true,
            enabled: true,
        };
        let mut oifs = [entry(3), entry(9)];
        m.creation_alert(
            &mut cx,
            SourceGroupEntry::sg(S, G),
            InterfaceId::new(2),
            &mut oifs,
        );
        answerer.join().unwrap();
        assert_eq!((oifs[0].enabled, oifs[1].enabled), (false, true));
    }
}
