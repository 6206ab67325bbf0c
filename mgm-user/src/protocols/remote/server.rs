//! The module socket: accepts connections, keeps one session per connection, and turns each
//! request into the MGM call it names. A session's registration lives in the core as a
//! [`RemoteModule`]; when the connection closes, the session releases every interface the
//! module still owns, with the steps of spec §3.2, and deregisters it.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use log::{info, warn};
use tokio::net::UnixListener;

use super::{
    access::Access,
    link::{self, ConnId, LinkEvent, Writer, BOUND_HITS},
    module::{Names, RemoteModule},
    wire::{self, ErrorBody, Flag, Hello, Iface, ModuleLine, Op, Output, Response, WIRE_VERSION},
};
use crate::core::{
    self, ComponentId, InterfaceId, Mgm, MgmError, ProtocolHandle, ProtocolId, SourceGroupEntry,
    ALL_ONES, ALL_SOURCES, ANY_SOURCE, MGM_EXCLUDE_STATE_FLAG, MGM_FORWARD_STATE_FLAG,
    MGM_JOIN_STATE_FLAG,
};
use crate::daemon::sleep_until;
use crate::ratelimit::{self, RateLimit};

/// At most one warning per interval about answers no decision waited for.
const STRAY_LOG: Duration = Duration::from_secs(10);

/// Requests and answers waiting for the daemon before a module's reader stops reading.
const IN_QUEUE: usize = 256;

/// Connections served at once (MGM takes 64 registrations); more are turned away.
const MAX_CONNECTIONS: usize = 64;

/// How long a connection may stay without a registration (from its start or its
/// `deregister`) before it is closed: an idle connection would hold one of
/// [`MAX_CONNECTIONS`] forever.
pub const REGISTER_WITHIN: Duration = Duration::from_secs(10);

/// Something for the daemon to hand to [`ModuleServer::handle`].
pub enum ServerEvent {
    /// A new connection, with its peer's user and group ids.
    Accepted {
        stream: std::os::unix::net::UnixStream,
        uid: u32,
        gid: u32,
    },
    Link(LinkEvent),
}

struct Session {
    writer: Writer,
    registration: Option<Registration>,
    /// Since when it has had no registration; it is closed [`REGISTER_WITHIN`] after.
    unregistered_since: Option<std::time::Instant>,
}

struct Registration {
    handle: ProtocolHandle,
    protocol_id: u32,
    /// Interfaces it owns, released for it when it disconnects.
    owned: BTreeSet<InterfaceId>,
}

/// The listening socket and every connected module.
pub struct ModuleServer {
    path: PathBuf,
    listener: UnixListener,
    access: Access,
    /// Connections turned away for their peer's credentials.
    refused: u64,
    /// [`REGISTER_WITHIN`], shorter in tests.
    register_within: Duration,
    /// Connections closed for staying unregistered.
    unregistered_closed: u64,
    names: Names,
    answer_within: Duration,
    sessions: BTreeMap<ConnId, Session>,
    next_conn: ConnId,
    events_tx: tokio::sync::mpsc::Sender<LinkEvent>,
    events_rx: tokio::sync::mpsc::Receiver<LinkEvent>,
    stray_log: RateLimit,
}

impl ModuleServer {
    /// Listens on `path` for the modules `access` allows (see [`Access`]). A socket left by a
    /// dead daemon is replaced; one a live daemon answers on, or any other file, is an error.
    ///
    /// # Errors
    /// Another mgm listens there, something else is there, or the socket cannot be made.
    pub fn bind(
        path: &Path,
        access: Access,
        names: Names,
        answer_within: Duration,
    ) -> anyhow::Result<Self> {
        access.prepare(path)?;
        let listener = UnixListener::bind(path)
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        access.restrict(path)?;
        let (events_tx, events_rx) = tokio::sync::mpsc::channel(IN_QUEUE);
        Ok(Self {
            path: path.to_owned(),
            listener,
            access,
            refused: 0,
            register_within: REGISTER_WITHIN,
            unregistered_closed: 0,
            names,
            answer_within,
            sessions: BTreeMap::new(),
            next_conn: 1,
            events_tx,
            events_rx,
            stray_log: RateLimit::new(STRAY_LOG),
        })
    }

    /// The next connection or request. Closes the connections that stayed unregistered too
    /// long on the way.
    pub async fn next(&mut self) -> ServerEvent {
        loop {
            let unregistered_until = self
                .sessions
                .values()
                .filter_map(|s| s.unregistered_since)
                .min()
                .map(|t| tokio::time::Instant::from_std(t + self.register_within));
            tokio::select! {
                () = sleep_until(unregistered_until) => self.close_unregistered(),
                conn = self.listener.accept() => match conn.and_then(|(s, _)| {
                    let cred = s.peer_cred()?;
                    Ok((s.into_std()?, cred))
                }) {
                    Ok((stream, cred)) => {
                        return ServerEvent::Accepted { stream, uid: cred.uid(), gid: cred.gid() }
                    }
                    Err(e) => {
                        // Out of descriptors, say: try again later rather than spin.
                        warn!("module socket: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(event) = self.events_rx.recv() => return ServerEvent::Link(event),
            }
        }
    }

    /// Acts on `event`: starts a session, runs a request on `mgm`, or ends a session.
    pub fn handle(&mut self, event: ServerEvent, mgm: &mut Mgm, now: core::Instant) {
        match event {
            ServerEvent::Accepted { stream, uid, gid } => {
                if self.access.allows(uid, gid) {
                    self.accept(stream);
                } else {
                    self.refused += 1;
                    warn!(
                        "module socket: refused a connection from uid {uid} gid {gid} ({} allowed; \
                         {} refused so far)",
                        self.access.describe(),
                        self.refused
                    );
                    let why = format!("mgm accepts modules from {}", self.access.describe());
                    refuse(stream, MgmError::CanNotComplete, why);
                }
            }
            ServerEvent::Link(LinkEvent::Request { conn, line }) => {
                let Some(session) = self.sessions.get_mut(&conn) else {
                    return;
                };
                let cx = Requests {
                    conn,
                    names: &self.names,
                    answer_within: self.answer_within,
                };
                let id = line.id;
                let response = match cx.run(session, line, mgm, now) {
                    Ok(result) => Response {
                        id,
                        ok: true,
                        error: None,
                        result,
                    },
                    Err(error) => Response {
                        id,
                        ok: false,
                        error: Some(error),
                        result: None,
                    },
                };
                session.writer.reply(&response);
            }
            ServerEvent::Link(LinkEvent::Answer { conn, answer }) => {
                self.answer(conn, answer, mgm, now)
            }
            ServerEvent::Link(LinkEvent::Closed { conn }) => self.close(conn, mgm, now),
        }
    }

    /// Hands a module's answer to the decision waiting for it. One nobody waits for (late,
    /// repeated, to no callback, or from a connection with no registration) is counted.
    fn answer(&mut self, conn: ConnId, answer: wire::Answer, mgm: &mut Mgm, now: core::Instant) {
        let to = answer.to;
        let handle = self
            .sessions
            .get(&conn)
            .and_then(|s| s.registration.as_ref())
            .map(|r| r.handle);
        let taken = handle.is_some_and(|h| mgm.answer(h, to, Box::new(answer), now).is_ok());
        if taken {
            return;
        }
        let n = BOUND_HITS
            .answers_dropped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if let Some(left_out) = self.stray_log.allow(now) {
            warn!(
                "module connection {conn}: no decision waits for an answer to callback {to} (it \
                 came late, twice, or to no callback); dropped ({n} so far){}",
                ratelimit::suppressed(left_out, STRAY_LOG)
            );
        }
    }

    fn accept(&mut self, stream: std::os::unix::net::UnixStream) {
        if self.sessions.len() >= MAX_CONNECTIONS {
            warn!("module socket: {MAX_CONNECTIONS} connections open, turning a new one away");
            let why = format!("mgm serves at most {MAX_CONNECTIONS} module connections");
            refuse(stream, MgmError::NotEnoughMemory, why);
            return;
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        let writer = match link::spawn(conn, stream, self.events_tx.clone()) {
            Ok(l) => l,
            Err(e) => {
                warn!("module socket: cannot serve a new connection: {e}");
                return;
            }
        };
        info!("module connection {conn} opened");
        writer.send(&Hello {
            hello: "mgm".into(),
            version: WIRE_VERSION,
            answer_within_ms: self.answer_within.as_millis() as u64,
            interfaces: self
                .names
                .all()
                .into_iter()
                .map(|(ifindex, name)| wire::Interface { name, ifindex })
                .collect(),
        });
        self.sessions.insert(
            conn,
            Session {
                writer,
                registration: None,
                unregistered_since: Some(std::time::Instant::now()),
            },
        );
    }

    /// Disconnects every connection unregistered for [`REGISTER_WITHIN`]; its reader then
    /// reports it closed. No error line: the writer could not be sure to send it before the
    /// socket closes, and the log says why.
    fn close_unregistered(&mut self) {
        let now = std::time::Instant::now();
        for (conn, s) in &mut self.sessions {
            if s.unregistered_since
                .is_some_and(|t| now >= t + self.register_within)
            {
                s.unregistered_since = None;
                self.unregistered_closed += 1;
                warn!(
                    "module connection {conn}: no registration within {:?}, closing it ({} so \
                     far)",
                    self.register_within, self.unregistered_closed
                );
                s.writer.disconnect();
            }
        }
    }

    /// The module is gone: release what it owns (spec §3.2), then deregister it.
    fn close(&mut self, conn: ConnId, mgm: &mut Mgm, now: core::Instant) {
        let Some(session) = self.sessions.remove(&conn) else {
            return;
        };
        session.writer.disconnect();
        let Some(reg) = session.registration else {
            info!("module connection {conn} closed");
            return;
        };
        let mut released = Vec::new();
        for id in &reg.owned {
            match mgm.release_interface_ownership(reg.handle, *id, now) {
                Ok(()) => released.push(name(&self.names, *id)),
                Err(e) => warn!(
                    "module connection {conn}: cannot release {}: {e}",
                    name(&self.names, *id)
                ),
            }
        }
        if let Err(e) = mgm.deregister(reg.handle) {
            warn!(
                "module connection {conn}: cannot deregister protocol {}: {e}",
                reg.protocol_id
            );
        }
        info!(
            "module connection {conn} closed: protocol {:#x} deregistered, released [{}]",
            reg.protocol_id,
            released.join(", ")
        );
    }

    /// The interface `ifindex` vanished and the core released it for every owner (spec §10):
    /// no module owns it any more.
    pub fn interface_removed(&mut self, ifindex: u32) {
        for s in self.sessions.values_mut() {
            if let Some(reg) = &mut s.registration {
                reg.owned.retain(|id| id.ifindex != ifindex);
            }
        }
    }

    /// The registered modules: (connection number, protocol id), for `mgm show`.
    pub fn modules(&self) -> Vec<(ConnId, u32)> {
        self.sessions
            .iter()
            .filter_map(|(c, s)| s.registration.as_ref().map(|r| (*c, r.protocol_id)))
            .collect()
    }

    /// Closes every connection and removes the socket file.
    pub fn shutdown(self) {
        for s in self.sessions.values() {
            s.writer.disconnect();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Tells a connection it is turned away, in one response line, and closes it.
fn refuse(mut stream: std::os::unix::net::UnixStream, code: MgmError, why: String) {
    let refusal = Response {
        id: None,
        ok: false,
        error: Some(mgm_error(code, why)),
        result: None,
    };
    // A fresh socket's buffer takes one short line without blocking.
    if let Ok(line) = serde_json::to_string(&refusal) {
        let _ = std::io::Write::write_all(&mut stream, format!("{line}\n").as_bytes());
    }
}

fn name(names: &Names, id: InterfaceId) -> String {
    let n = names
        .get(id.ifindex)
        .unwrap_or_else(|| format!("ifindex {}", id.ifindex));
    if id.next_hop.is_unspecified() {
        n
    } else {
        format!("{n} via {}", id.next_hop)
    }
}

/// What running one request needs besides the session.
struct Requests<'a> {
    conn: ConnId,
    names: &'a Names,
    answer_within: Duration,
}

fn mgm_error(e: MgmError, message: impl Into<String>) -> ErrorBody {
    ErrorBody {
        code: format!("{e:?}")
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned(),
        win32: Some(e.win32()),
        message: message.into(),
    }
}

impl Requests<'_> {
    fn run(
        &self,
        session: &mut Session,
        line: ModuleLine,
        mgm: &mut Mgm,
        now: core::Instant,
    ) -> Result<Option<Output>, ErrorBody> {
        let plain = |r: Result<(), MgmError>, what: &str| {
            r.map(|()| None)
                .map_err(|e| mgm_error(e, format!("{what}: {e}")))
        };
        match line.op {
            Op::Register {
                protocol_id,
                component_id,
            } => self.register(session, protocol_id, component_id, mgm),
            Op::Deregister {} => {
                let reg = registration(session)?;
                mgm.deregister(reg.handle).map_err(|e| {
                    mgm_error(
                        e,
                        "cannot deregister while owning interfaces; release them first",
                    )
                })?;
                session.registration = None;
                session.unregistered_since = Some(std::time::Instant::now());
                Ok(None)
            }
            Op::TakeInterface(iface) => {
                let id = self.interface(&iface)?;
                let reg = registration_mut(session)?;
                plain(
                    mgm.take_interface_ownership(reg.handle, id, now),
                    &format!("taking {}", iface.interface),
                )?;
                reg.owned.insert(id);
                Ok(None)
            }
            Op::ReleaseInterface(iface) => {
                let id = self.interface(&iface)?;
                let reg = registration_mut(session)?;
                plain(
                    mgm.release_interface_ownership(reg.handle, id, now),
                    &format!("releasing {}", iface.interface),
                )?;
                reg.owned.remove(&id);
                Ok(None)
            }
            Op::GetProtocolOnInterface(iface) => {
                let id = self.interface(&iface)?;
                let (p, c) = mgm
                    .get_protocol_on_interface(id)
                    .map_err(|e| mgm_error(e, format!("nobody owns {}", iface.interface)))?;
                Ok(Some(Output::Protocol {
                    protocol_id: p.0,
                    component_id: c.0,
                }))
            }
            Op::AddMembership(m) => self.membership(session, &m, true, mgm, now),
            Op::DeleteMembership(m) => self.membership(session, &m, false, mgm, now),
            Op::SetMfe {
                source,
                group,
                upstream,
            } => {
                let handle = registration(session)?.handle;
                plain(
                    mgm.set_mfe(handle, source, group, upstream),
                    &format!("setting ({source}, {group})"),
                )
            }
            Op::Mfes(page) => {
                let limit = page_limit(page.limit)?;
                let batch = mgm.mfe_page(after(page.after), limit, now);
                let (mfes, rest) = paged(batch, |r| self.mfe(r), |m| (m.source, m.group));
                Ok(Some(Output::Mfes { mfes, rest }))
            }
            Op::MfeStats(page) => {
                let limit = page_limit(page.limit)?;
                let batch = mgm.mfe_stats_page(after(page.after), limit, now);
                let (mfe_stats, rest) =
                    paged(batch, |r| self.mfe_stats(r), |m| (m.source, m.group));
                Ok(Some(Output::MfeStats { mfe_stats, rest }))
            }
            Op::Groups {
                all_sources,
                after: from,
                limit,
            } => {
                let handle = registration(session)?.handle;
                let kind = if all_sources { ALL_SOURCES } else { ANY_SOURCE };
                let batch = mgm
                    .group_page(handle, kind, after(from), page_limit(limit)?)
                    .map_err(|e| mgm_error(e, "enumerating groups"))?;
                let (groups, rest) =
                    paged(batch, |e| wire::Entry::from(*e), |e| (e.source, e.group));
                Ok(Some(Output::Groups { groups, rest }))
            }
            // The reader hands answers over as their own events.
            Op::Answer(_) => Ok(None),
        }
    }

    fn register(
        &self,
        session: &mut Session,
        protocol_id: u32,
        component_id: u32,
        mgm: &mut Mgm,
    ) -> Result<Option<Output>, ErrorBody> {
        if let Some(reg) = &session.registration {
            return Err(mgm_error(
                MgmError::AlreadyExists,
                format!(
                    "this connection already registered protocol {:#x}",
                    reg.protocol_id
                ),
            ));
        }
        if ProtocolId(protocol_id) == ProtocolId::IGMP {
            return Err(mgm_error(
                MgmError::InvalidParameter,
                "protocol id 10 is IGMP, which runs inside mgm",
            ));
        }
        let module = RemoteModule::new(
            self.conn,
            session.writer.clone(),
            self.names.clone(),
            self.answer_within,
        );
        let handle = mgm
            .register(
                Box::new(module),
                ProtocolId(protocol_id),
                ComponentId(component_id),
            )
            .map_err(|e| {
                mgm_error(
                    e,
                    format!("registering protocol {protocol_id:#x} component {component_id}: {e}"),
                )
            })?;
        info!(
            "module connection {}: protocol {protocol_id:#x} component {component_id} registered",
            self.conn
        );
        session.registration = Some(Registration {
            handle,
            protocol_id,
            owned: BTreeSet::new(),
        });
        session.unregistered_since = None;
        Ok(Some(Output::Registered { handle: handle.0 }))
    }

    fn membership(
        &self,
        session: &Session,
        m: &wire::Membership,
        add: bool,
        mgm: &mut Mgm,
        now: core::Instant,
    ) -> Result<Option<Output>, ErrorBody> {
        let iface = m.iface();
        let id = self.interface(&iface)?;
        let handle = registration(session)?.handle;
        let sg = source_group(m.entry());
        let flags = m.flags.iter().fold(0, |f, flag| {
            f | match flag {
                Flag::Join => MGM_JOIN_STATE_FLAG,
                Flag::Forward => MGM_FORWARD_STATE_FLAG,
                Flag::Exclude => MGM_EXCLUDE_STATE_FLAG,
            }
        });
        let (result, verb) = if add {
            (
                mgm.add_group_membership_entry(handle, sg, id, flags, now),
                "adding",
            )
        } else {
            (
                mgm.delete_group_membership_entry(handle, sg, id, flags, now),
                "deleting",
            )
        };
        result.map(|()| None).map_err(|e| {
            mgm_error(
                e,
                format!("{verb} the membership on {}: {e}", iface.interface),
            )
        })
    }

    fn mfe(&self, r: &core::MfeRecord) -> wire::Mfe {
        wire::Mfe {
            source: r.source,
            group: r.group,
            upstream: r.upstream,
            iif: name(self.names, r.in_if),
            iif_protocol: r.in_if_protocol.0,
            route: r.route.into(),
            up_time_s: r.up_time_s,
            expiry_time_s: r.expiry_time_s,
            timeout_s: r.timeout_s,
            oifs: r.oifs.iter().map(|o| name(self.names, *o)).collect(),
        }
    }

    fn mfe_stats(&self, r: &core::MfeStatsRecord) -> wire::MfeStats {
        // Asked for with MGM_MFE_STATS_1, so the EX fields are there.
        let ex = r.ex.unwrap_or(core::MfeStatsEx {
            uninit_mfe: 0,
            negative_mfe: 0,
            in_discards: 0,
            in_hdr_errors: 0,
            total_out_packets: 0,
        });
        wire::MfeStats {
            source: r.source,
            group: r.group,
            iif: name(self.names, r.in_if),
            in_pkts: r.in_pkts,
            in_octets: r.in_octets,
            pkts_different_if: r.pkts_different_if,
            negative_mfe: ex.negative_mfe,
            in_discards: ex.in_discards,
            in_hdr_errors: ex.in_hdr_errors,
            uninit_mfe: ex.uninit_mfe,
            queue_overflow: r.queue_overflow,
            total_out_packets: ex.total_out_packets,
            oifs: r
                .oifs
                .iter()
                .map(|o| wire::OifStats {
                    interface: name(self.names, o.if_id),
                    out_packets: o.out_packets,
                    out_discards: o.out_discards,
                    ttl_too_low: o.ttl_too_low,
                    frag_needed: o.frag_needed,
                })
                .collect(),
        }
    }

    /// The managed interface `iface` names.
    fn interface(&self, iface: &Iface) -> Result<InterfaceId, ErrorBody> {
        self.names
            .ifindex(&iface.interface)
            .map(|i| InterfaceId::with_next_hop(i, iface.next_hop))
            .ok_or_else(|| {
                let managed: Vec<String> = self.names.all().into_iter().map(|(_, n)| n).collect();
                mgm_error(
                    MgmError::InvalidParameter,
                    format!(
                        "{} is not an interface this mgm manages ({})",
                        iface.interface,
                        managed.join(", ")
                    ),
                )
            })
    }
}

/// A page's entry count: [`wire::DEFAULT_PAGE`] when the request names none, at most
/// [`wire::MAX_PAGE`].
fn page_limit(limit: Option<u32>) -> Result<usize, ErrorBody> {
    match limit.unwrap_or(wire::DEFAULT_PAGE) {
        0 => Err(mgm_error(
            MgmError::InvalidParameter,
            "limit 0: a page holds at least one entry",
        )),
        n => Ok(n.min(wire::MAX_PAGE) as usize),
    }
}

/// The core's (group, source) of a wire key.
fn after(key: Option<wire::Key>) -> Option<(Ipv4Addr, Ipv4Addr)> {
    key.map(|k| (k.group, k.source))
}

/// Turns a page of records into wire entries, ending it early when their JSON would pass
/// [`wire::PAGE_BYTES`], and says where the next page starts.
fn paged<R, T: serde::Serialize>(
    batch: core::Batch<R>,
    entry: impl Fn(&R) -> T,
    key: impl Fn(&T) -> (Ipv4Addr, Ipv4Addr),
) -> (Vec<T>, wire::Rest) {
    let mut out: Vec<T> = Vec::with_capacity(batch.records.len());
    let mut bytes = 0;
    for r in &batch.records {
        let e = entry(r);
        // The entry and the comma before it.
        bytes += serde_json::to_vec(&e).map_or(0, |v| v.len()) + 1;
        if bytes > wire::PAGE_BYTES && !out.is_empty() {
            break;
        }
        out.push(e);
    }
    let more = batch.more || out.len() < batch.records.len();
    let continue_after = out.last().filter(|_| more).map(|e| {
        let (source, group) = key(e);
        wire::Key { source, group }
    });
    (
        out,
        wire::Rest {
            more,
            continue_after,
        },
    )
}

fn registration(session: &Session) -> Result<&Registration, ErrorBody> {
    session.registration.as_ref().ok_or_else(not_registered)
}

fn registration_mut(session: &mut Session) -> Result<&mut Registration, ErrorBody> {
    session.registration.as_mut().ok_or_else(not_registered)
}

fn not_registered() -> ErrorBody {
    mgm_error(
        MgmError::InvalidParameter,
        "register first: this op needs a registration",
    )
}

/// A wire entry with its masks filled in: a wildcard address gets the wildcard mask.
fn source_group(e: wire::Entry) -> SourceGroupEntry {
    let mask = |a: std::net::Ipv4Addr| {
        if a.is_unspecified() {
            std::net::Ipv4Addr::UNSPECIFIED
        } else {
            ALL_ONES
        }
    };
    SourceGroupEntry {
        source: e.source,
        source_mask: e.source_mask.unwrap_or(mask(e.source)),
        group: e.group,
        group_mask: e.group_mask.unwrap_or(mask(e.group)),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;

    use super::*;

    struct Fixture {
        server: ModuleServer,
        mgm: Mgm,
        dir: PathBuf,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn fixture(tag: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("mgm-sock-{tag}-{}", std::process::id()));
        let names = Names::new(BTreeMap::from([(2, "up0".into()), (3, "dn1".into())]));
        let server = ModuleServer::bind(
            &dir.join("m.sock"),
            Access::root_only(),
            names,
            Duration::from_millis(50),
        )
        .unwrap();
        Fixture {
            server,
            mgm: Mgm::default(),
            dir,
        }
    }

    impl Fixture {
        /// Lets the server act on its next event.
        async fn step(&mut self) {
            let event = self.server.next().await;
            self.server
                .handle(event, &mut self.mgm, core::Instant::from_millis(0));
        }

        async fn connect(&mut self) -> (UnixStream, BufReader<UnixStream>) {
            let s = UnixStream::connect(self.dir.join("m.sock")).unwrap();
            self.step().await;
            let mut r = BufReader::new(s.try_clone().unwrap());
            let hello = line(&mut r);
            assert_eq!(
                (&hello["hello"], &hello["version"]),
                (&"mgm".into(), &1.into())
            );
            (s, r)
        }

        async fn ask(
            &mut self,
            s: &mut UnixStream,
            r: &mut BufReader<UnixStream>,
            req: &str,
        ) -> serde_json::Value {
            writeln!(s, "{req}").unwrap();
            self.step().await;
            line(r)
        }
    }

    fn line(r: &mut BufReader<UnixStream>) -> serde_json::Value {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        serde_json::from_str(&l).unwrap()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_connection_that_does_not_register_in_time_is_closed() {
        runtime().block_on(async {
            let mut f = fixture("unregistered");
            f.server.register_within = Duration::from_millis(100);
            let (_s, mut r) = f.connect().await;
            let (mut s2, mut r2) = f.connect().await;
            let reply = f
                .ask(
                    &mut s2,
                    &mut r2,
                    r#"{"id":1,"op":"register","protocol_id":256,"component_id":1}"#,
                )
                .await;
            assert_eq!(reply["ok"], true);
            // The first connection's reader reports it closed once the server closed it.
            tokio::time::timeout(Duration::from_secs(10), f.step())
                .await
                .expect("the unregistered connection was not closed");
            let mut rest = String::new();
            assert_eq!(r.read_line(&mut rest).unwrap(), 0, "not closed: {rest}");
            assert_eq!(f.server.sessions.len(), 1);
            // The registered one stays.
            let reply = f.ask(&mut s2, &mut r2, r#"{"id":2,"op":"mfes"}"#).await;
            assert_eq!(reply["ok"], true);
        });
    }

    #[test]
    fn requests_run_on_the_core_and_a_closed_connection_releases_its_interfaces() {
        runtime().block_on(async {
            let mut f = fixture("release");
            let (mut s, mut r) = f.connect().await;
            let reply = f
                .ask(&mut s, &mut r, r#"{"id":1,"op":"take_interface","interface":"up0"}"#)
                .await;
            assert_eq!(reply["error"]["message"], "register first: this op needs a registration");
            let reply = f
                .ask(&mut s, &mut r, r#"{"id":2,"op":"register","protocol_id":256,"component_id":1}"#)
                .await;
            assert_eq!((&reply["id"], &reply["ok"]), (&2.into(), &true.into()));
            let reply = f
                .ask(&mut s, &mut r, r#"{"id":3,"op":"take_interface","interface":"eth9"}"#)
                .await;
            assert_eq!(
                (&reply["error"]["code"], &reply["error"]["win32"]),
                (&"InvalidParameter".into(), &87.into())
            );
            let reply = f
                .ask(&mut s, &mut r, r#"{"id":4,"op":"take_interface","interface":"up0"}"#)
                .await;
            assert_eq!(reply["ok"], true, "{reply}");
            let reply = f
                .ask(
                    &mut s,
                    &mut r,
                    r#"{"id":5,"op":"add_membership","source":"0.0.0.0","group":"239.1.1.1","interface":"up0","flags":["join"]}"#,
                )
                .await;
            assert_eq!(reply["ok"], true, "{reply}");
            let reply = f.ask(&mut s, &mut r, r#"{"id":6,"op":"groups"}"#).await;
            assert_eq!(reply["result"]["groups"][0]["group"], "239.1.1.1");
            let reply = f.ask(&mut s, &mut r, r#"{"id":7,"op":"deregister"}"#).await;
            assert_eq!(reply["error"]["code"], "CanNotComplete", "{reply}");
            let owner = f.mgm.get_protocol_on_interface(core::InterfaceId::new(2));
            assert_eq!(owner, Ok((ProtocolId(256), ComponentId(1))));

            drop((s, r));
            f.step().await;
            assert_eq!(
                f.mgm.get_protocol_on_interface(core::InterfaceId::new(2)),
                Err(MgmError::NotFound)
            );
            // The registration is gone too: the ids can register again.
            let (mut s, mut r) = f.connect().await;
            let reply = f
                .ask(&mut s, &mut r, r#"{"op":"register","protocol_id":256,"component_id":1}"#)
                .await;
            assert_eq!(reply["ok"], true, "{reply}");
        });
    }

    /// The raw reply line to `req`, and it parsed.
    async fn ask_raw(
        f: &mut Fixture,
        s: &mut UnixStream,
        r: &mut BufReader<UnixStream>,
        req: &str,
    ) -> (usize, serde_json::Value) {
        writeln!(s, "{req}").unwrap();
        f.step().await;
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        (l.len(), serde_json::from_str(&l).unwrap())
    }

    #[test]
    fn a_100k_table_is_enumerated_completely_in_pages_under_the_reply_cap() {
        const N: u32 = 100_000;
        runtime().block_on(async {
            let mut f = fixture("pages");
            f.mgm = Mgm::new(core::Config {
                max_mfes: 2 * N as usize,
                negative_budget: 2 * N as usize,
                ..Default::default()
            });
            let now = core::Instant::from_millis(0);
            for i in 0..N {
                let [_, a, b, c] = i.to_be_bytes();
                let (source, group) = (Ipv4Addr::new(10, a, b, c), Ipv4Addr::new(239, 1, a, b));
                f.mgm
                    .no_cache_upcall(source, group, InterfaceId::new(2), &[], now)
                    .unwrap();
            }
            let (mut s, mut r) = f.connect().await;
            // Without paging fields: the first page, saying there is more.
            let (_, first) = ask_raw(&mut f, &mut s, &mut r, r#"{"id":1,"op":"mfes"}"#).await;
            let first = &first["result"];
            assert_eq!(
                first["mfes"].as_array().unwrap().len(),
                wire::DEFAULT_PAGE as usize
            );
            assert_eq!(first["more"], true, "{first:#}");
            // A limit over the cap is cut to it; none under 1 is taken.
            let (_, zero) = ask_raw(&mut f, &mut s, &mut r, r#"{"op":"mfes","limit":0}"#).await;
            assert_eq!(zero["error"]["code"], "InvalidParameter", "{zero}");
            for (op, field) in [("mfes", "mfes"), ("mfe_stats", "mfe_stats")] {
                let mut keys = Vec::new();
                let mut after = serde_json::Value::Null;
                let mut pages = 0;
                loop {
                    let mut req = serde_json::json!({"op": op, "limit": 50_000});
                    if !after.is_null() {
                        req["after"] = after.clone();
                    }
                    let (len, reply) = ask_raw(&mut f, &mut s, &mut r, &req.to_string()).await;
                    assert!(len <= link::MAX_REPLY, "a {len}-byte reply");
                    let page = &reply["result"];
                    let entries = page[field].as_array().unwrap_or_else(|| panic!("{reply}"));
                    assert!(entries.len() <= wire::MAX_PAGE as usize);
                    keys.extend(entries.iter().map(|e| {
                        let a = |k: &str| e[k].as_str().unwrap().parse::<Ipv4Addr>().unwrap();
                        (a("group"), a("source"))
                    }));
                    pages += 1;
                    if page["more"] == false {
                        assert!(page.get("continue_after").is_none());
                        break;
                    }
                    let last = entries.last().unwrap();
                    assert_eq!(
                        (
                            &page["continue_after"]["source"],
                            &page["continue_after"]["group"]
                        ),
                        (&last["source"], &last["group"])
                    );
                    after = page["continue_after"].clone();
                }
                assert!(pages >= N.div_ceil(wire::MAX_PAGE), "{op}: {pages} pages");
                let want: Vec<_> = f
                    .mgm
                    .forwarding_table()
                    .keys()
                    .map(|(s, g)| (*g, *s))
                    .collect();
                let mut sorted = want.clone();
                sorted.sort();
                assert_eq!(keys.len(), N as usize, "{op}");
                assert_eq!(
                    keys, sorted,
                    "{op}: every entry once, in (group, source) order"
                );
            }
        });
    }

    #[test]
    fn igmp_ids_and_a_second_registration_are_refused() {
        runtime().block_on(async {
            let mut f = fixture("refuse");
            let (mut s, mut r) = f.connect().await;
            let reply = f
                .ask(
                    &mut s,
                    &mut r,
                    r#"{"op":"register","protocol_id":10,"component_id":0}"#,
                )
                .await;
            assert_eq!(reply["error"]["code"], "InvalidParameter");
            f.ask(
                &mut s,
                &mut r,
                r#"{"op":"register","protocol_id":7,"component_id":0}"#,
            )
            .await;
            let reply = f
                .ask(
                    &mut s,
                    &mut r,
                    r#"{"op":"register","protocol_id":8,"component_id":0}"#,
                )
                .await;
            assert_eq!(reply["error"]["code"], "AlreadyExists");
        });
    }

    #[test]
    fn a_second_daemon_cannot_take_a_live_socket_but_replaces_a_stale_one() {
        runtime().block_on(async {
            let f = fixture("stale");
            let names = Names::default();
            let live = ModuleServer::bind(
                &f.dir.join("m.sock"),
                Access::root_only(),
                names.clone(),
                Duration::ZERO,
            );
            assert!(live.is_err_and(|e| e.to_string().contains("another mgm")));
            let stale = f.dir.join("stale.sock");
            drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
            assert!(stale.exists());
            assert!(ModuleServer::bind(&stale, Access::root_only(), names, Duration::ZERO).is_ok());
        });
    }
}
