//! One module connection: a reader thread and a writer thread around its blocking Unix stream.
//! The daemon's single task never touches the socket, so a module that stops reading or
//! writing cannot stall it; requests and answers to callbacks alike reach it as events.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::Shutdown,
    os::unix::net::UnixStream,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        mpsc, Arc,
    },
    thread,
};

use log::{debug, warn};
use serde::Serialize;
use tokio::sync::mpsc::Sender;

use super::wire::{Answer, ErrorBody, ModuleLine, Op, Response, MAX_LINE};

/// Numbers connections for the daemon's log and its session table.
pub type ConnId = u64;

/// Bytes queued for a module before it counts as not reading and is disconnected: bytes, not
/// lines, as one reply can be large (see [`MAX_REPLY`]).
pub const OUT_BYTES: usize = 16 << 20;

/// The largest reply line; a larger one is answered with an error instead, so one request
/// cannot take the whole of [`OUT_BYTES`] (enumerations come in pages well under it).
pub const MAX_REPLY: usize = 4 << 20;

/// What the bounds of every module connection turned away, since the daemon started.
#[derive(Debug, Default)]
pub struct BoundHits {
    /// Connections disconnected with [`OUT_BYTES`] unread.
    pub out_full: AtomicU64,
    /// Replies over [`MAX_REPLY`] answered with an error.
    pub reply_too_large: AtomicU64,
    /// Answers no decision waited for: late, repeated, or to no callback.
    pub answers_dropped: AtomicU64,
}

/// The daemon's one set of [`BoundHits`].
pub static BOUND_HITS: BoundHits = BoundHits {
    out_full: AtomicU64::new(0),
    reply_too_large: AtomicU64::new(0),
    answers_dropped: AtomicU64::new(0),
};

/// Counts a hit of `counter` and whether it is one to log: the first and then every power of
/// two, so a module that keeps hitting a bound cannot flood the log.
fn hit(counter: &AtomicU64) -> (u64, bool) {
    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
    (n, n.is_power_of_two())
}

/// What a connection's reader hands the daemon.
#[derive(Debug)]
pub enum LinkEvent {
    /// A request (every op but `answer`).
    Request { conn: ConnId, line: ModuleLine },
    /// An answer to a callback.
    Answer { conn: ConnId, answer: Answer },
    /// The module closed the connection, or was disconnected.
    Closed { conn: ConnId },
}

/// Sends lines to one module without blocking.
#[derive(Clone)]
pub struct Writer {
    conn: ConnId,
    tx: mpsc::Sender<String>,
    /// Bytes queued and not yet written, against [`OUT_BYTES`].
    queued: Arc<AtomicUsize>,
    stream: Arc<UnixStream>,
}

impl Writer {
    /// Queues `msg` as one line. A module whose queue is full is not reading: it is
    /// disconnected, and its reader reports [`LinkEvent::Closed`]. Returns whether the line
    /// was queued.
    pub fn send(&self, msg: &impl Serialize) -> bool {
        match serde_json::to_string(msg) {
            Ok(line) => self.send_line(line),
            Err(e) => {
                warn!(
                    "module connection {}: cannot encode a message: {e}",
                    self.conn
                );
                false
            }
        }
    }

    /// Queues the reply to a request; one over [`MAX_REPLY`] becomes an error reply saying so.
    pub fn reply(&self, response: &Response) -> bool {
        let line = match serde_json::to_string(response) {
            Ok(line) if line.len() <= MAX_REPLY => line,
            Ok(line) => {
                let (n, log) = hit(&BOUND_HITS.reply_too_large);
                if log {
                    warn!(
                        "module connection {}: a {}-byte reply is over the {MAX_REPLY}-byte \
                         limit; answered with an error ({n} so far)",
                        self.conn,
                        line.len()
                    );
                }
                return self.send(&too_large(response.id, line.len()));
            }
            Err(e) => {
                warn!(
                    "module connection {}: cannot encode a reply: {e}",
                    self.conn
                );
                return false;
            }
        };
        self.send_line(line)
    }

    fn send_line(&self, mut line: String) -> bool {
        line.push('\n');
        let len = line.len();
        if self.queued.fetch_add(len, Ordering::AcqRel) + len > OUT_BYTES {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            let (n, log) = hit(&BOUND_HITS.out_full);
            if log {
                warn!(
                    "module connection {}: {OUT_BYTES} bytes unread, disconnecting it ({n} so \
                     far)",
                    self.conn
                );
            }
            self.disconnect();
            return false;
        }
        if self.tx.send(line).is_err() {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Closes the connection both ways; the reader then reports it closed.
    pub fn disconnect(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Starts the reader and writer threads of connection `conn`.
///
/// # Errors
/// The stream cannot be cloned or a thread cannot start.
pub fn spawn(
    conn: ConnId,
    stream: UnixStream,
    events: Sender<LinkEvent>,
) -> std::io::Result<Writer> {
    stream.set_nonblocking(false)?;
    let stream = Arc::new(stream);
    let (tx, rx) = mpsc::channel::<String>();
    let queued = Arc::new(AtomicUsize::new(0));
    let writer = Writer {
        conn,
        tx,
        queued: queued.clone(),
        stream: stream.clone(),
    };
    let mut out = stream.try_clone()?;
    thread::Builder::new()
        .name(format!("mgm-module-{conn}-out"))
        .spawn(move || {
            for line in rx {
                if let Err(e) = out.write_all(line.as_bytes()) {
                    debug!("module connection {conn}: write failed: {e}");
                    let _ = out.shutdown(Shutdown::Both);
                    return;
                }
                queued.fetch_sub(line.len(), Ordering::AcqRel);
            }
            // Every sender is gone: the daemon forgot the module. Whatever was queued is out.
            let _ = out.shutdown(Shutdown::Write);
        })?;
    let replies = writer.clone();
    thread::Builder::new()
        .name(format!("mgm-module-{conn}-in"))
        .spawn(move || {
            read_lines(conn, &stream, &replies, &events);
            // The writer may still owe the module an error line; it closes the other half.
            let _ = stream.shutdown(Shutdown::Read);
            let _ = events.blocking_send(LinkEvent::Closed { conn });
        })?;
    Ok(writer)
}

/// Reads until the module closes or breaks the protocol. Bad lines get an error response;
/// a line longer than [`MAX_LINE`] ends the connection, as nothing after it can be trusted.
fn read_lines(conn: ConnId, stream: &UnixStream, replies: &Writer, events: &Sender<LinkEvent>) {
    let mut input = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let limit = (MAX_LINE + 1) as u64;
        match input.by_ref().take(limit).read_until(b'\n', &mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                debug!("module connection {conn}: read failed: {e}");
                return;
            }
        }
        if buf.last() != Some(&b'\n') {
            if buf.len() > MAX_LINE {
                replies.send(&bad_request(
                    None,
                    format!("line longer than {MAX_LINE} bytes"),
                ));
            }
            // Otherwise the module closed in the middle of a line.
            return;
        }
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let event = match ModuleLine::parse(text) {
            Ok(ModuleLine {
                op: Op::Answer(answer),
                ..
            }) => LinkEvent::Answer { conn, answer },
            Ok(line) => LinkEvent::Request { conn, line },
            Err((id, why)) => {
                warn!("module connection {conn}: bad request: {why}");
                replies.send(&bad_request(id, why));
                continue;
            }
        };
        if events.blocking_send(event).is_err() {
            return;
        }
    }
}

fn too_large(id: Option<u64>, len: usize) -> Response {
    Response {
        id,
        ok: false,
        error: Some(ErrorBody {
            code: "NotEnoughMemory".into(),
            win32: Some(crate::core::MgmError::NotEnoughMemory.win32()),
            message: format!(
                "the reply would be {len} bytes, over the {MAX_REPLY}-byte limit of a module \
                 connection"
            ),
        }),
        result: None,
    }
}

fn bad_request(id: Option<u64>, message: String) -> Response {
    Response {
        id,
        ok: false,
        error: Some(ErrorBody {
            code: "BadRequest".into(),
            win32: None,
            message,
        }),
        result: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &UnixStream) -> impl Iterator<Item = serde_json::Value> + '_ {
        BufReader::new(s)
            .lines()
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
    }

    #[test]
    fn requests_answers_and_bad_lines_go_their_ways() {
        let (ours, module) = UnixStream::pair().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let _writer = spawn(1, ours, tx).unwrap();
        let mut m = &module;
        m.write_all(
            b"{\"id\":1,\"op\":\"mfes\"}\n\n{\"op\":\"answer\",\"to\":5}\n{\"id\":2,\"op\":\"nope\"}\nnot json\n",
        )
        .unwrap();
        let Some(LinkEvent::Request { conn: 1, line }) = rx.blocking_recv() else {
            panic!("no request")
        };
        assert_eq!((line.id, line.op), (Some(1), Op::Mfes(Default::default())));
        let Some(LinkEvent::Answer { conn: 1, answer }) = rx.blocking_recv() else {
            panic!("no answer")
        };
        assert_eq!(answer.to, 5);
        let mut out = lines(&module);
        let e = out.next().unwrap();
        assert_eq!(
            (e["id"].as_u64(), e["ok"].as_bool()),
            (Some(2), Some(false))
        );
        assert_eq!(e["error"]["code"], "BadRequest");
        let e = out.next().unwrap();
        assert!(e["id"].is_null());
        drop(out);
        module.shutdown(Shutdown::Both).unwrap();
        assert!(matches!(
            rx.blocking_recv(),
            Some(LinkEvent::Closed { conn: 1 })
        ));
    }

    #[test]
    fn an_overlong_line_ends_the_connection_with_an_error() {
        let (ours, module) = UnixStream::pair().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let _link = spawn(2, ours, tx).unwrap();
        let writer = thread::spawn({
            let mut m = module.try_clone().unwrap();
            move || {
                let _ = m.write_all(&vec![b'x'; MAX_LINE + 10]);
            }
        });
        assert!(matches!(
            rx.blocking_recv(),
            Some(LinkEvent::Closed { conn: 2 })
        ));
        let e = lines(&module).next().unwrap();
        assert_eq!(e["error"]["code"], "BadRequest");
        writer.join().unwrap();
    }

    #[test]
    fn a_module_that_does_not_read_is_disconnected_by_the_bytes_it_left_unread() {
        let (ours, _module) = UnixStream::pair().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let writer = spawn(3, ours, tx).unwrap();
        // Few long lines: a bound in lines would take them all.
        let big = "y".repeat(1 << 20);
        let sent = (0..64).take_while(|_| writer.send(&big)).count();
        // OUT_BYTES in the queue, plus what the socket buffer took.
        assert!(sent <= OUT_BYTES / (1 << 20) + 4, "{sent} MiB queued");
        assert!(matches!(
            rx.blocking_recv(),
            Some(LinkEvent::Closed { conn: 3 })
        ));
    }

    #[test]
    fn a_reply_over_the_limit_becomes_an_error_with_its_id() {
        let (ours, module) = UnixStream::pair().unwrap();
        let (tx, _rx) = tokio::sync::mpsc::channel(8);
        let writer = spawn(4, ours, tx).unwrap();
        let mfe = |oif: String| super::super::wire::Mfe {
            source: "198.18.0.2".parse().unwrap(),
            group: "239.1.1.1".parse().unwrap(),
            upstream: "0.0.0.0".parse().unwrap(),
            iif: "up0".into(),
            iif_protocol: 0,
            route: crate::core::RouteInfo::default().into(),
            up_time_s: 0,
            expiry_time_s: 0,
            timeout_s: 0,
            oifs: vec![oif],
        };
        let reply = |id, oif| Response {
            id: Some(id),
            ok: true,
            error: None,
            result: Some(super::super::wire::Output::Mfes {
                mfes: vec![mfe(oif)],
                rest: Default::default(),
            }),
        };
        assert!(writer.reply(&reply(7, "z".repeat(MAX_REPLY))));
        assert!(writer.reply(&reply(8, "dn1".into())));
        let mut out = lines(&module);
        let e = out.next().unwrap();
        assert_eq!(
            (e["id"].as_u64(), e["ok"].as_bool()),
            (Some(7), Some(false))
        );
        assert_eq!(e["error"]["code"], "NotEnoughMemory");
        let ok = out.next().unwrap();
        assert_eq!(
            (ok["id"].as_u64(), ok["ok"].as_bool()),
            (Some(8), Some(true))
        );
    }
}
