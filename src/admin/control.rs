//! The control socket: one JSON request per line, one JSON reply per line, over a Unix socket
//! only root (or the socket's group) can open. Mutations go through the store first, then the
//! firewall writer, exactly as the portal's accept does.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::watch;

pub use crate::access::staff::AdminState;
use crate::access::staff::{self as actions, Outcome};
use crate::clients::MacAddr;
use crate::store::Role;

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
    /// Create a staff account.
    AdminAdd {
        /// Sign-in name.
        name: String,
        /// Role.
        role: Role,
        /// The password, over the root-only socket; hashed by the daemon, never stored.
        password: String,
    },
    /// Remove a staff account.
    AdminRemove {
        /// Sign-in name.
        name: String,
    },
    /// Erase everything personal held about a device.
    AuditErase {
        /// The device.
        mac: MacAddr,
        /// Why (recorded in the log).
        reason: String,
    },
    /// Purge personal data older than the retention period now.
    AuditPurge,
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
    if line.is_empty() {
        // Connected and closed without a request: `check` and `firewall remove` asking whether
        // the daemon is up. Nothing to answer, and nothing to log.
        return Ok(());
    }
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

/// Who the control socket acts as, in the events it records: root, through the CLI.
const BY: &str = "root (cli)";

async fn handle(req: Request, st: &AdminState) -> Reply {
    let done = |r: Outcome<Value>| match r {
        Ok(data) => Reply::Ok { data },
        Err(e) => Reply::Error { message: e.to_string() },
    };
    match req {
        Request::CourseAdd {
            title,
            starts_at,
            ends_at,
            max_devices,
        } => done(
            actions::add_course(st, &title, starts_at, ends_at, max_devices, BY)
                .await
                .map(|c| json!(c)),
        ),
        Request::CourseEnd { id } => done(
            actions::end_course(st, id, BY)
                .await
                .map(|(course, closed)| json!({"course": course, "devices_closed": closed})),
        ),
        Request::SessionRevoke { mac } => done(
            actions::revoke(st, mac, BY)
                .await
                .map(|n| json!({"mac": mac, "sessions_ended": n})),
        ),
        Request::AdminAdd { name, role, password } => done(
            actions::add_admin(st, &name, role, password)
                .await
                .map(|()| json!({"name": name, "role": role})),
        ),
        Request::AdminRemove { name } => done(actions::remove_admin(st, &name).await.map(|()| json!({"name": name}))),
        Request::AuditErase { mac, reason } => done(actions::erase(st, mac, &reason, BY).await.map(|e| json!(e))),
        Request::AuditPurge => done(actions::purge(st).await.map(|p| json!(p))),
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
