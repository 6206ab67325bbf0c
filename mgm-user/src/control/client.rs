//! The CLI's side of the control socket: one request, one answer.

use std::{
    io::{BufRead, BufReader, ErrorKind, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use super::proto::{Answer, Document, Request, View, MAX_REQUEST};

/// How long the daemon may take to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// Why no answer came.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens there: no daemon runs with this control socket.
    #[error("no mgm daemon answers on {path}: {source}")]
    NoDaemon {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon on {path} did not answer: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon on {path} answered something that is not an answer: {why}")]
    Garbled { path: String, why: String },
}

/// Sends `request` to the daemon listening on `path` and returns its answer.
///
/// # Errors
/// No daemon listens there ([`ClientError::NoDaemon`]), or the exchange failed.
pub fn ask(path: &Path, request: &Request) -> Result<Answer, ClientError> {
    let p = path.display().to_string();
    let io = |source| ClientError::Io {
        path: p.clone(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(|source| match source.kind() {
        ErrorKind::NotFound | ErrorKind::ConnectionRefused => ClientError::NoDaemon {
            path: p.clone(),
            source,
        },
        _ => io(source),
    })?;
    stream.set_read_timeout(Some(ANSWER_WITHIN)).map_err(io)?;
    let mut line = serde_json::to_string(request).map_err(|e| ClientError::Garbled {
        path: p.clone(),
        why: e.to_string(),
    })?;
    debug_assert!(line.len() < MAX_REQUEST);
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(io)?;
    serde_json::from_str(&answer).map_err(|e| ClientError::Garbled {
        path: p.clone(),
        why: e.to_string(),
    })
}

/// `show` of `view` with every page: asks page after page and answers with one document of
/// all the rows, as one answer would hold them.
///
/// # Errors
/// As [`ask`]; [`ClientError::Garbled`] if a page does not move on from the one before.
pub fn show(path: &Path, view: View) -> Result<Answer, ClientError> {
    let mut answer = ask(path, &Request::show(view))?;
    while let Some(after) = answer.next.take() {
        let request = Request::Show {
            view,
            after: Some(after.clone()),
            limit: None,
        };
        let mut page = ask(path, &request)?;
        if !page.ok {
            return Ok(page);
        }
        if page.next.as_ref() == Some(&after) {
            return Err(ClientError::Garbled {
                path: path.display().to_string(),
                why: format!("the page after {after:?} ends at it again"),
            });
        }
        match (&mut answer.document, page.document.take()) {
            (Some(Document::Mfe { mfes }), Some(Document::Mfe { mfes: more })) => mfes.extend(more),
            (Some(Document::Groups { groups }), Some(Document::Groups { groups: more })) => {
                groups.extend(more);
            }
            _ => {
                return Err(ClientError::Garbled {
                    path: path.display().to_string(),
                    why: format!("a page of {view:?} is another view or none"),
                })
            }
        }
        answer.next = page.next;
    }
    Ok(answer)
}
