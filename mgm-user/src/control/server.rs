//! The control socket's edge: accepts connections, checks each peer's credentials, reads one
//! request line and hands it to the daemon's task, then writes the answer back and closes.
//! Connections are served by tasks of their own, so a client that stalls mid-line never holds
//! up the daemon; the daemon sees only whole, parsed requests.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use log::{debug, warn};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot, Semaphore},
};

use super::proto::{Answer, Request, MAX_REQUEST};
use crate::protocols::remote::access::Access;

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;

/// How long a client may take to send its request line.
const READ_WITHIN: Duration = Duration::from_secs(5);

/// One request for the daemon, and where its answer goes.
pub struct Call {
    pub request: Request,
    reply: oneshot::Sender<Answer>,
}

impl Call {
    /// Sends the answer to the client (which may have gone: then nobody reads it).
    pub fn answer(self, answer: Answer) {
        let _ = self.reply.send(answer);
    }
}

/// The listening control socket.
pub struct ControlServer {
    path: PathBuf,
    listener: UnixListener,
    access: Arc<Access>,
    slots: Arc<Semaphore>,
    calls_tx: mpsc::Sender<Call>,
    calls_rx: mpsc::Receiver<Call>,
}

impl ControlServer {
    /// Listens on `path` for the operators `access` allows, with the module socket's rules:
    /// a stale socket is replaced, anything else there is refused.
    ///
    /// # Errors
    /// Another mgm answers there, something else is there, or the socket cannot be made.
    pub fn bind(path: &Path, access: Access) -> anyhow::Result<Self> {
        access.prepare(path)?;
        let listener = UnixListener::bind(path)
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        access.restrict(path)?;
        let (calls_tx, calls_rx) = mpsc::channel(MAX_CONNECTIONS);
        Ok(Self {
            path: path.to_owned(),
            listener,
            access: Arc::new(access),
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            calls_tx,
            calls_rx,
        })
    }

    /// The next request, from whichever connection sends one first.
    pub async fn next(&mut self) -> Call {
        loop {
            tokio::select! {
                Some(call) = self.calls_rx.recv() => return call,
                conn = self.listener.accept() => match conn {
                    Ok((stream, _)) => self.serve(stream),
                    Err(e) => {
                        // Out of descriptors, say: try again later rather than spin.
                        warn!("control socket: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }

    fn serve(&self, stream: UnixStream) {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            tokio::spawn(reply(
                stream,
                Answer::error(format!(
                    "mgm serves {MAX_CONNECTIONS} control connections at once; try again"
                )),
            ));
            return;
        };
        let access = self.access.clone();
        let calls = self.calls_tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(answer) = refusal(&stream, &access) {
                reply(stream, answer).await;
                return;
            }
            let mut reader = BufReader::new(stream).take(MAX_REQUEST as u64 + 1);
            let mut line = String::new();
            let read = reader.read_line(&mut line);
            let request = match tokio::time::timeout(READ_WITHIN, read).await {
                Ok(Ok(_)) if line.len() > MAX_REQUEST => {
                    Err(format!("bad request: longer than {MAX_REQUEST} bytes"))
                }
                Ok(Ok(_)) => Request::parse(line.trim_end()),
                Ok(Err(e)) => Err(format!("bad request: {e}")),
                Err(_) => Err(format!("bad request: no line within {READ_WITHIN:?}")),
            };
            let stream = reader.into_inner().into_inner();
            let answer = match request {
                Ok(request) => {
                    let (tx, rx) = oneshot::channel();
                    let call = Call { request, reply: tx };
                    if calls.send(call).await.is_err() {
                        return;
                    }
                    match rx.await {
                        Ok(a) => a,
                        Err(_) => return,
                    }
                }
                Err(why) => Answer::error(why),
            };
            reply(stream, answer).await;
        });
    }
}

/// Why this peer may not use the socket, as an answer; `None` if it may.
fn refusal(stream: &UnixStream, access: &Access) -> Option<Answer> {
    match stream.peer_cred() {
        Ok(c) if access.allows(c.uid(), c.gid()) => None,
        Ok(c) => {
            warn!(
                "control socket: refused uid {} gid {} ({} allowed)",
                c.uid(),
                c.gid(),
                access.describe()
            );
            Some(Answer::error(format!(
                "mgm takes control requests from {}",
                access.describe()
            )))
        }
        Err(e) => Some(Answer::error(format!("cannot read your credentials: {e}"))),
    }
}

async fn reply(mut stream: UnixStream, answer: Answer) {
    let mut line = serde_json::to_string(&answer).unwrap_or_default();
    line.push('\n');
    if let Err(e) = stream.write_all(line.as_bytes()).await {
        debug!("control socket: cannot answer: {e}");
    }
    let _ = stream.shutdown().await;
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        // Only the socket this daemon bound: `prepare` refused to start over anything else.
        let _ = std::fs::remove_file(&self.path);
    }
}
