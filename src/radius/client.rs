//! One record to the first server that takes it: sent over UDP, retransmitted on time-out with
//! backoff, then the next server in order. Taken only when an answer's Response
//! Authenticator verifies with the secret.
//!
//! One request is outstanding at a time, so records arrive in the order they were written.
//! The server that last answered is tried first; after `FAILBACK` on a later one, the first
//! is tried first again.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::packet::{self, MAX_PACKET, Request, Status};
use super::settings::Server;
use crate::secret::Secret;
use crate::store::accounting::{AccountingRecord, AcctStatus, station_id};

/// Waits for an answer, one per send: three sends per server, 7 s in all (RFC 5080 §2.2.1's
/// doubling, shortened: a dead server should not hold every record for long).
pub const TRIES: [Duration; 3] = [Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(4)];
/// How long a later server stays first before the first is tried first again.
const FAILBACK: Duration = Duration::from_secs(600);

/// How one server failed, for the log and the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The name did not resolve, or no socket could be made.
    Unreachable(String),
    /// It refused (ICMP port unreachable): nothing listens there.
    Refused,
    /// No valid answer in time; `invalid` answers came that did not verify (another secret?).
    NoAnswer {
        /// Answers that were not a valid response to the request.
        invalid: u32,
    },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(why) => write!(f, "unreachable ({why})"),
            Self::Refused => f.write_str("refused (nothing listens on that port)"),
            Self::NoAnswer { invalid: 0 } => f.write_str("no answer"),
            Self::NoAnswer { invalid } => write!(
                f,
                "{invalid} answer(s) that did not verify (is radius.secret_file the secret the server has for this router?)"
            ),
        }
    }
}

struct Link {
    socket: UdpSocket,
    local: IpAddr,
}

/// The servers, their sockets, and whom to try first.
pub struct Client {
    servers: Vec<Server>,
    links: Vec<Option<Link>>,
    secret: Secret,
    nas_identifier: String,
    identifier: u8,
    first: usize,
    first_since: Instant,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("servers", &self.servers)
            .field("first", &self.first)
            .finish_non_exhaustive()
    }
}

/// Seconds since 1970, as RADIUS counts them.
fn seconds(t: jiff::Timestamp) -> u32 {
    u32::try_from(t.as_second().max(0)).unwrap_or(u32::MAX)
}

impl Client {
    /// A client of `servers`, in order.
    pub fn new(servers: Vec<Server>, secret: Secret, nas_identifier: String) -> Self {
        let links = servers.iter().map(|_| None).collect();
        Self {
            servers,
            links,
            secret,
            nas_identifier,
            identifier: 0,
            first: 0,
            first_since: Instant::now(),
        }
    }

    async fn link(&mut self, i: usize) -> Result<&Link, Failure> {
        if self.links[i].is_none() {
            let server = &self.servers[i];
            let unreachable = |e: std::io::Error| Failure::Unreachable(e.to_string());
            let addr: SocketAddr = tokio::net::lookup_host((server.host.as_str(), server.port))
                .await
                .map_err(unreachable)?
                .next()
                .ok_or_else(|| Failure::Unreachable("the name has no address".into()))?;
            let any: SocketAddr = if addr.is_ipv4() {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let socket = UdpSocket::bind(any).await.map_err(unreachable)?;
            socket.connect(addr).await.map_err(unreachable)?;
            // The router's address towards the server: NAS-IP-Address.
            let local = socket.local_addr().map_err(unreachable)?.ip();
            self.links[i] = Some(Link { socket, local });
        }
        self.links[i]
            .as_ref()
            .ok_or_else(|| Failure::Unreachable("no socket".into()))
    }

    /// Sends `record` (its Acct-Delay-Time counted from `now`) until a server takes it.
    /// Returns the server that did; or, when none did, how each failed.
    pub async fn deliver(&mut self, record: &AccountingRecord, now: jiff::Timestamp) -> Result<String, String> {
        if self.first != 0 && self.first_since.elapsed() >= FAILBACK {
            self.first = 0;
        }
        let mut failures = Vec::with_capacity(self.servers.len());
        for k in 0..self.servers.len() {
            let i = (self.first + k) % self.servers.len();
            match self.exchange(i, record, now).await {
                Ok(()) => {
                    if i != self.first {
                        self.first = i;
                        self.first_since = Instant::now();
                    }
                    return Ok(self.servers[i].to_string());
                }
                Err(failure) => {
                    // A socket that failed may be stale (a changed route or address): a new one next time.
                    if !matches!(failure, Failure::NoAnswer { invalid: 1.. }) {
                        self.links[i] = None;
                    }
                    failures.push(format!("{}: {failure}", self.servers[i]));
                }
            }
        }
        Err(failures.join("; "))
    }

    async fn exchange(&mut self, i: usize, record: &AccountingRecord, now: jiff::Timestamp) -> Result<(), Failure> {
        self.identifier = self.identifier.wrapping_add(1);
        let identifier = self.identifier;
        let nas_identifier = self.nas_identifier.clone();
        let secret = self.secret.clone();
        let link = self.link(i).await?;
        let station = station_id(record.mac);
        let session_time = match record.status {
            AcctStatus::Start => None,
            AcctStatus::Stop | AcctStatus::InterimUpdate => {
                Some(seconds(record.at).saturating_sub(seconds(record.started_at)))
            }
        };
        let request = Request {
            status: match record.status {
                AcctStatus::Start => Status::Start,
                AcctStatus::Stop => Status::Stop,
                AcctStatus::InterimUpdate => Status::InterimUpdate,
            },
            session_id: &record.session,
            user_name: &record.user_name,
            calling_station_id: &station,
            class: &record.class,
            nas_identifier: &nas_identifier,
            nas_ip: Some(link.local).filter(|ip| !ip.is_unspecified()),
            framed_ipv4: record.addresses.ipv4,
            framed_ipv6: &record.addresses.ipv6,
            event_timestamp: seconds(record.at),
            delay: seconds(now).saturating_sub(seconds(record.at)),
            session_time,
            terminate_cause: record.cause.map(|c| c.code()),
        };
        // Retransmissions are the same packet (same identifier and authenticator), so a server
        // that took an earlier copy answers again rather than counting it twice.
        let bytes = packet::encode(&request, identifier, secret.bytes());
        let mut invalid = 0;
        let mut buf = vec![0u8; MAX_PACKET];
        for wait in TRIES {
            match link.socket.send(&bytes).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Err(Failure::Refused),
                Err(e) => return Err(Failure::Unreachable(e.to_string())),
            }
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                match tokio::time::timeout_at(deadline, link.socket.recv(&mut buf)).await {
                    Err(_) => break,
                    Ok(Ok(n)) => {
                        if packet::is_response_to(&buf[..n], &bytes, secret.bytes()) {
                            return Ok(());
                        }
                        // A late answer to an earlier request has another identifier: not a
                        // sign of a wrong secret.
                        if n >= 2 && buf[1] == identifier {
                            invalid += 1;
                        }
                    }
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Err(Failure::Refused),
                    Ok(Err(e)) => return Err(Failure::Unreachable(e.to_string())),
                }
            }
        }
        Err(Failure::NoAnswer { invalid })
    }
}

#[cfg(test)]
mod tests;
