//! The control socket: one JSON request per line, one JSON reply per line, over a Unix socket
//! only root (or the socket's group) can open. Mutations go through the store first, then the
//! firewall writer, exactly as the portal's accept does.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::clients::{AccessCode, MacAddr};
use crate::clock::Clock;
use crate::firewall::FirewallHandle;
use crate::store::{Store, StoreError};

/// Longest request line accepted.
const MAX_LINE: usize = 64 * 1024;

/// What the CLI can ask the daemon to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Create a course and issue its code.
    CourseAdd {
        /// Title.
        title: String,
        /// Start (UTC).
        starts_at: Timestamp,
        /// End (UTC).
        ends_at: Timestamp,
        /// Device limit.
        max_devices: u32,
    },
    /// End a course now and close its devices.
    CourseEnd {
        /// Course id.
        id: i64,
    },
    /// Close a device now.
    SessionRevoke {
        /// The device.
        mac: MacAddr,
    },
}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Reply {
    /// Done; `data` is the record(s) affected.
    Ok {
        /// Result.
        data: Value,
    },
    /// Refused or failed; `message` is one line for the operator.
    Error {
        /// What went wrong and how to fix it.
        message: String,
    },
}

/// What the control server needs.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The store.
    pub store: Store,
    /// The firewall writer.
    pub firewall: FirewallHandle,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

/// Serves `listener` until `shutdown` turns true.
pub async fn serve(listener: UnixListener, state: AdminState, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let state = state.clone();
                    tokio::spawn(async move {
                        if let Err(e) = connection(stream, state).await {
                            tracing::warn!(error = %e, "control connection failed");
                        }
                    });
                }
                Err(e) => {
                    tracing::error!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
}

async fn connection(stream: tokio::net::UnixStream, state: AdminState) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = tokio::io::BufReader::new(read).take(MAX_LINE as u64);
    reader.read_until(b'\n', &mut line).await?;
    let reply = match serde_json::from_slice::<Request>(&line) {
        Ok(req) => handle(req, &state).await,
        Err(e) => Reply::Error {
            message: format!("bad request: {e}"),
        },
    };
    let mut out = serde_json::to_vec(&reply)
        .unwrap_or_else(|_| b"{\"status\":\"error\",\"message\":\"reply encoding\"}".to_vec());
    out.push(b'\n');
    write.write_all(&out).await
}

fn err(message: impl Into<String>) -> Reply {
    Reply::Error {
        message: message.into(),
    }
}

/// A fresh random access code.
fn new_code() -> AccessCode {
    loop {
        let mut buf = [0u8; 32];
        // getrandom only fails if the kernel's RNG is unavailable; then retrying is all we can do.
        if getrandom::fill(&mut buf).is_ok()
            && let Some(code) = AccessCode::from_random(&buf)
        {
            return code;
        }
    }
}

async fn handle(req: Request, st: &AdminState) -> Reply {
    let now = st.clock.now();
    match req {
        Request::CourseAdd {
            title,
            starts_at,
            ends_at,
            max_devices,
        } => {
            let title = title.trim().to_owned();
            if title.is_empty() || title.chars().count() > 200 || title.chars().any(char::is_control) {
                return err("--title must be 1 to 200 printable characters");
            }
            if ends_at <= starts_at {
                return err("--ends must be after --starts");
            }
            if ends_at <= now {
                return err("--ends is in the past: a course must end in the future");
            }
            if !(1..=10_000).contains(&max_devices) {
                return err("--max-devices must be between 1 and 10000");
            }
            match st
                .store
                .run(move |s| s.add_course(&title, starts_at, ends_at, max_devices, now, new_code))
                .await
            {
                Ok(course) => {
                    tracing::info!(course = course.id, title = %course.title, "course added");
                    Reply::Ok { data: json!(course) }
                }
                Err(e) => err(format!("could not add the course: {e}")),
            }
        }
        Request::CourseEnd { id } => {
            let (course, macs) = match st.store.run(move |s| s.end_course(id, now)).await {
                Ok(r) => r,
                Err(StoreError::NotFound(_)) => {
                    return err(format!("no course with id {id} (see `aupgate course list`)"));
                }
                Err(e) => return err(format!("could not end the course: {e}")),
            };
            let closed = macs.len();
            if let Err(e) = st.firewall.sync(macs).await {
                return err(format!(
                    "course {id} ended in the store, but closing its devices failed: {e}; the daemon retries every second"
                ));
            }
            tracing::info!(course = id, devices = closed, "course ended");
            Reply::Ok {
                data: json!({"course": course, "devices_closed": closed}),
            }
        }
        Request::SessionRevoke { mac } => {
            let revoked = match st.store.run(move |s| s.revoke(mac, now, "control socket")).await {
                Ok(n) => n,
                Err(e) => return err(format!("could not revoke {mac}: {e}")),
            };
            if let Err(e) = st.firewall.sync(vec![mac]).await {
                return err(format!(
                    "{mac} revoked in the store, but closing it failed: {e}; the daemon retries every second"
                ));
            }
            tracing::info!(%mac, consents = revoked, "device revoked");
            Reply::Ok {
                data: json!({"mac": mac, "sessions_ended": revoked}),
            }
        }
    }
}

/// Why the CLI could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody is listening on the socket.
    #[error(
        "the aupgate daemon is not running (no answer on {0}) (fix: systemctl start aupgate, or check [control] socket)"
    )]
    NotRunning(String),
    /// Not allowed to open the socket.
    #[error("permission denied on {0} (fix: run as root)")]
    Permission(String),
    /// The daemon refused or failed.
    #[error("{0}")]
    Refused(String),
    /// The exchange broke off.
    #[error("talking to the daemon on {path}: {detail}")]
    Broken {
        /// Socket path.
        path: String,
        /// What happened.
        detail: String,
    },
}

/// Sends one request to the daemon at `socket` and waits (up to 30 s) for its answer.
///
/// # Errors
/// [`ClientError`], with a one-line message for the operator.
pub fn call(socket: &Path, req: &Request) -> Result<Value, ClientError> {
    let path = socket.display().to_string();
    let stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => ClientError::Permission(path.clone()),
        _ => ClientError::NotRunning(path.clone()),
    })?;
    let broken = |e: std::io::Error| ClientError::Broken {
        path: path.clone(),
        detail: e.to_string(),
    };
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(broken)?;
    let mut line = serde_json::to_vec(req).map_err(|e| ClientError::Broken {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(broken)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(broken)?;
    match serde_json::from_str::<Reply>(&answer) {
        Ok(Reply::Ok { data }) => Ok(data),
        Ok(Reply::Error { message }) => Err(ClientError::Refused(message)),
        Err(e) => Err(ClientError::Broken {
            path,
            detail: format!("unreadable reply: {e}"),
        }),
    }
}
