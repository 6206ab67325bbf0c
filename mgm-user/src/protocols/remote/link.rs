//! One module connection: a reader thread and a writer thread around its blocking Unix stream.
//! The daemon's single task never touches the socket, so a module that stops reading or
//! writing cannot stall it; and answers to callbacks reach a waiting callback while that task
//! is busy inside the core (the reader hands them over on their own channel).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::Shutdown,
    os::unix::net::UnixStream,
    sync::{
        mpsc::{self, Receiver, SyncSender, TrySendError},
        Arc, Mutex,
    },
    thread,
};

use log::{debug, warn};
use serde::Serialize;
use tokio::sync::mpsc::Sender;

use super::wire::{Answer, ErrorBody, ModuleLine, Op, Response, MAX_LINE};

/// Numbers connections for the daemon's log and its session table.
pub type ConnId = u64;

/// Lines queued for a module before it counts as not reading and is disconnected.
const OUT_QUEUE: usize = 4096;

/// What a connection's reader hands the daemon.
#[derive(Debug)]
pub enum LinkEvent {
    /// A request (every op but `answer`).
    Request { conn: ConnId, line: ModuleLine },
    /// The module closed the connection, or was disconnected.
    Closed { conn: ConnId },
}

/// Sends lines to one module without blocking.
#[derive(Clone)]
pub struct Writer {
    conn: ConnId,
    tx: SyncSender<String>,
    stream: Arc<UnixStream>,
}

impl Writer {
    /// Queues `msg` as one line. A module whose queue is full is not reading: it is
    /// disconnected, and its reader reports [`LinkEvent::Closed`]. Returns whether the line
    /// was queued.
    pub fn send(&self, msg: &impl Serialize) -> bool {
        let mut line = match serde_json::to_string(msg) {
            Ok(l) => l,
            Err(e) => {
                warn!(
                    "module connection {}: cannot encode a message: {e}",
                    self.conn
                );
                return false;
            }
        };
        line.push('\n');
        match self.tx.try_send(line) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                warn!(
                    "module connection {}: {OUT_QUEUE} messages unread, disconnecting it",
                    self.conn
                );
                self.disconnect();
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Closes the connection both ways; the reader then reports it closed.
    pub fn disconnect(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Answers to this connection's callbacks, shared by the registrations it makes over time.
pub type Answers = Arc<Mutex<Receiver<Answer>>>;

/// Starts the reader and writer threads of connection `conn`.
///
/// # Errors
/// The stream cannot be cloned or a thread cannot start.
pub fn spawn(
    conn: ConnId,
    stream: UnixStream,
    events: Sender<LinkEvent>,
) -> std::io::Result<(Writer, Answers)> {
    stream.set_nonblocking(false)?;
    let stream = Arc::new(stream);
    let (tx, rx) = mpsc::sync_channel::<String>(OUT_QUEUE);
    let writer = Writer {
        conn,
        tx,
        stream: stream.clone(),
    };
    let (answer_tx, answer_rx) = mpsc::channel();
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
            }
            // Every sender is gone: the daemon forgot the module. Whatever was queued is out.
            let _ = out.shutdown(Shutdown::Write);
        })?;
    let replies = writer.clone();
    thread::Builder::new()
        .name(format!("mgm-module-{conn}-in"))
        .spawn(move || {
            read_lines(conn, &stream, &replies, &answer_tx, &events);
            // The writer may still owe the module an error line; it closes the other half.
            let _ = stream.shutdown(Shutdown::Read);
            let _ = events.blocking_send(LinkEvent::Closed { conn });
        })?;
    Ok((writer, Arc::new(Mutex::new(answer_rx))))
}

/// Reads until the module closes or breaks the protocol. Bad lines get an error response;
/// a line longer than [`MAX_LINE`] ends the connection, as nothing after it can be trusted.
fn read_lines(
    conn: ConnId,
    stream: &UnixStream,
    replies: &Writer,
    answers: &mpsc::Sender<Answer>,
    events: &Sender<LinkEvent>,
) {
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
        match ModuleLine::parse(text) {
            Ok(ModuleLine {
                op: Op::Answer(a), ..
            }) => {
                // The registration may be gone; a late answer then has nobody to go to.
                let _ = answers.send(a);
            }
            Ok(line) => {
                if events
                    .blocking_send(LinkEvent::Request { conn, line })
                    .is_err()
                {
                    return;
                }
            }
            Err((id, why)) => {
                warn!("module connection {conn}: bad request: {why}");
                replies.send(&bad_request(id, why));
            }
        }
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
    use std::time::Duration;

    fn lines(s: &UnixStream) -> impl Iterator<Item = serde_json::Value> + '_ {
        BufReader::new(s)
            .lines()
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
    }

    #[test]
    fn requests_answers_and_bad_lines_go_their_ways() {
        let (ours, module) = UnixStream::pair().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let (_writer, answers) = spawn(1, ours, tx).unwrap();
        let mut m = &module;
        m.write_all(
            b"{\"id\":1,\"op\":\"mfes\"}\n\n{\"op\":\"answer\",\"to\":5}\n{\"id\":2,\"op\":\"nope\"}\nnot json\n",
        )
        .unwrap();
        let Some(LinkEvent::Request { conn: 1, line }) = rx.blocking_recv() else {
            panic!("no request")
        };
        assert_eq!((line.id, line.op), (Some(1), Op::Mfes {}));
        let a = answers
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(5))
            .unwrap();
        assert_eq!(a.to, 5);
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
    fn a_module_that_does_not_read_is_disconnected() {
        let (ours, _module) = UnixStream::pair().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let (writer, _answers) = spawn(3, ours, tx).unwrap();
        let big = "y".repeat(4096);
        // The socket buffer takes some lines, the queue OUT_QUEUE more; then it must give up.
        let sent = (0..OUT_QUEUE * 8).take_while(|_| writer.send(&big)).count();
        assert!(sent < OUT_QUEUE * 8);
        assert!(matches!(
            rx.blocking_recv(),
            Some(LinkEvent::Closed { conn: 3 })
        ));
    }
}
