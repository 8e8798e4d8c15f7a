//! The accept loop of the portal and the admin. Guests are unauthenticated and many, so no one
//! device may starve the others: connections count against the device (its MAC, from the
//! neighbour table) rather than only its address, a device holds at most `MAX_PER_CLIENT`, and
//! when all `MAX_TOTAL` slots are taken a newcomer is let in by closing the longest-idle
//! connection of the device holding the most. Request heads are capped at `MAX_HEAD` and must
//! arrive within a header timeout that shortens under pressure. Refusals are counted for
//! `/metrics` and summarised in the log at most once a minute.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Uri};
use futures_util::future::Either;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;
use tower::Service as _;

use crate::clients::MacAddr;
use crate::metrics::Metrics;
use crate::neighbours::Neighbours;

/// Answers a request from its head alone, before the router, when it can; `None` leaves it to
/// the router. It must answer exactly as the router would (the portal's test compares them):
/// it is for what every stray request gets, made once, without the router's per-request work.
pub type Quick = Arc<dyn Fn(&Method, &Uri, &HeaderMap) -> Option<axum::response::Response> + Send + Sync>;

/// What a listener serves: a router, and the quick answers tried before it.
#[derive(Clone)]
pub struct App {
    /// Every request the quick answers leave.
    pub router: Router,
    /// Tried first.
    pub quick: Option<Quick>,
}

impl From<Router> for App {
    fn from(router: Router) -> Self {
        Self { router, quick: None }
    }
}

/// A client must send a complete request head within this time.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The header timeout for connections accepted while more than three quarters of the slots are
/// taken: a phone sends its head at once, a slow-header attacker does not.
pub const HEADER_TIMEOUT_PRESSED: Duration = Duration::from_secs(3);
/// Most simultaneous connections from one device (a phone opens a handful).
pub const MAX_PER_CLIENT: usize = 32;
/// Most simultaneous connections in all (well under the default 1024 file descriptors).
pub const MAX_TOTAL: usize = 512;
/// Largest request head (request line and headers); a phone's is under 2 kB. Larger gets 431.
pub const MAX_HEAD: usize = 16 * 1024;
/// How long open requests get to finish on shutdown.
const DRAIN: Duration = Duration::from_secs(5);
/// How often refusals are summarised in the log, at most.
const SUMMARY: Duration = Duration::from_secs(60);
/// How often the accept loop looks for news to summarise: the first refusals are in the log
/// within this time, the later ones a minute apart.
const SUMMARY_CHECK: Duration = Duration::from_secs(5);
/// A cached neighbour table older than this is read again.
const TABLE_FRESH: Duration = Duration::from_secs(30);

/// Whom a connection counts against: its device where the neighbour table knows it, else its
/// address (the admin, loopback, or a client the kernel has no entry for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Client {
    Device(MacAddr),
    Address(IpAddr),
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Device(mac) => write!(f, "{mac}"),
            Self::Address(ip) => write!(f, "{ip}"),
        }
    }
}

/// One open connection, as the slots see it.
#[derive(Debug)]
struct Conn {
    client: Client,
    /// In a handler now: never closed to make room.
    busy: bool,
    /// When it was accepted or last answered by the router: how long it has been idle (or
    /// slow) since.
    since: Instant,
    /// When a quick answer (`App::quick`) was last given on it, in microseconds after `EPOCH`
    /// (0: never). Written without the slots' lock, by the connection alone.
    answered: Arc<AtomicU64>,
    /// Closes it.
    evict: Option<oneshot::Sender<()>>,
}

/// What `Conn::answered` counts from.
static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

/// `at` as `Conn::answered` keeps it (never 0).
fn micros_after_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(*EPOCH).as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl Conn {
    /// When it was last answered or accepted, quick answers included.
    fn idle_since(&self) -> Instant {
        match self.answered.load(Ordering::Relaxed) {
            0 => self.since,
            us => self.since.max(*EPOCH + Duration::from_micros(us)),
        }
    }
}

/// Why a connection was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// Its device already holds `MAX_PER_CLIENT`.
    PerDevice,
    /// Every slot is taken by devices holding no more than it does.
    Total,
}

/// Every open connection of one surface, and what was refused since the last summary.
#[derive(Debug, Default)]
struct Slots {
    conns: HashMap<u64, Conn>,
    per_client: HashMap<Client, usize>,
    next: u64,
    refused_per_device: u64,
    refused_total: u64,
    evicted: u64,
    /// The client refused or evicted most since the last summary, for the log line.
    worst: HashMap<Client, u64>,
    last_summary: Option<Instant>,
}

impl Slots {
    /// Lets `client` in, closing another device's connection if every slot is taken; the
    /// receiver fires if this connection is later closed to make room.
    fn admit(&mut self, client: Client, now: Instant) -> Result<(u64, oneshot::Receiver<()>), Refused> {
        let held = self.per_client.get(&client).copied().unwrap_or(0);
        if held >= MAX_PER_CLIENT {
            self.refused_per_device += 1;
            *self.worst.entry(client).or_default() += 1;
            return Err(Refused::PerDevice);
        }
        if self.conns.len() >= MAX_TOTAL {
            // From the device holding the most (only if it holds more than the newcomer): an
            // idle connection (or one slow to send its head) before a busy one, and of those
            // the one idle or busy the longest. Busy ones too, or a device trickling request
            // bodies would keep every slot busy; a phone, holding a few, is the last to lose one.
            let victim = self
                .conns
                .iter()
                .map(|(id, c)| {
                    let n = self.per_client.get(&c.client).copied().unwrap_or(0);
                    (*id, (n, !c.busy, std::cmp::Reverse(c.idle_since())))
                })
                .filter(|(_, (n, _, _))| *n > held)
                .max_by_key(|(_, key)| *key)
                .map(|(id, _)| id);
            let Some(victim) = victim else {
                self.refused_total += 1;
                *self.worst.entry(client).or_default() += 1;
                return Err(Refused::Total);
            };
            if let Some(conn) = self.release(victim) {
                if let Some(evict) = conn.evict {
                    let _ = evict.send(());
                }
                self.evicted += 1;
                *self.worst.entry(conn.client).or_default() += 1;
            }
        }
        let (tx, rx) = oneshot::channel();
        let id = self.next;
        self.next += 1;
        self.conns.insert(
            id,
            Conn {
                client,
                busy: false,
                since: now,
                answered: Arc::default(),
                evict: Some(tx),
            },
        );
        *self.per_client.entry(client).or_default() += 1;
        Ok((id, rx))
    }

    /// Forgets connection `id`; returns it if it was still counted.
    fn release(&mut self, id: u64) -> Option<Conn> {
        let conn = self.conns.remove(&id)?;
        if let Some(n) = self.per_client.get_mut(&conn.client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&conn.client);
            }
        }
        Some(conn)
    }

    /// The summary line's figures, once `SUMMARY` has passed since the last one, and only if
    /// something was refused or closed; resets them.
    fn summary(&mut self, now: Instant) -> Option<Summary> {
        if self.last_summary.is_some_and(|t| now.duration_since(t) < SUMMARY) {
            return None;
        }
        if self.refused_per_device + self.refused_total + self.evicted == 0 {
            return None;
        }
        self.last_summary = Some(now);
        let worst = self.worst.drain().max_by_key(|(_, n)| *n);
        Some(Summary {
            per_device: std::mem::take(&mut self.refused_per_device),
            total: std::mem::take(&mut self.refused_total),
            evicted: std::mem::take(&mut self.evicted),
            worst,
        })
    }
}

/// What the log's summary line says.
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    per_device: u64,
    total: u64,
    evicted: u64,
    /// The client refused or closed most often, and how often.
    worst: Option<(Client, u64)>,
}

/// The devices of the addresses seen lately, to tell which device a connection comes from
/// without a kernel round trip per connection.
#[derive(Debug)]
struct Devices {
    neighbours: Arc<dyn Neighbours>,
    table: tokio::sync::Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    /// Each address's device, and when the kernel was asked.
    devices: HashMap<IpAddr, (MacAddr, Instant)>,
    /// Addresses the kernel did not have (loopback, say), not asked about again for a while.
    unknown: HashMap<IpAddr, Instant>,
    /// How many devices were kept at the last sweep of old answers.
    swept_at: usize,
}

/// How long an address the table did not have is counted by address without asking again.
const UNKNOWN_FOR: Duration = Duration::from_secs(1);
/// The longest the accept loop waits for the kernel's table.
const TABLE_WAIT: Duration = Duration::from_millis(200);

impl Devices {
    /// The device at `ip`. The neighbours are asked about `ip` (`Neighbours::mac`: one address,
    /// whatever the size of the table) when it has no answer from the last `TABLE_FRESH` (a new
    /// device, or a device's new address: every address must be known before its first
    /// connection is counted, or a device could take a share per address). An established
    /// connection implies the kernel has the entry (it answered the SYN).
    async fn of(&self, ip: IpAddr) -> Option<MacAddr> {
        let mut cached = self.table.lock().await;
        let now = Instant::now();
        if let Some((mac, _)) = cached
            .devices
            .get(&ip)
            .filter(|(_, read)| now.duration_since(*read) < TABLE_FRESH)
        {
            return Some(*mac);
        }
        if cached
            .unknown
            .get(&ip)
            .is_some_and(|t| now.duration_since(*t) < UNKNOWN_FOR)
        {
            return None;
        }
        let found = match tokio::time::timeout(TABLE_WAIT, self.neighbours.mac(ip)).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot read the neighbour table; counting by address");
                None
            }
            Err(_) => {
                tracing::debug!("the neighbour table took too long; counting by address");
                None
            }
        };
        match found {
            Some(mac) => {
                cached.devices.insert(ip, (mac, now));
                cached.unknown.remove(&ip);
            }
            None => {
                cached.devices.remove(&ip);
                cached.unknown.insert(ip, now);
            }
        }
        // Old answers go, so the cache stays the size of the devices seen lately.
        if cached.devices.len() > 4 * cached.swept_at.max(1024) {
            cached
                .devices
                .retain(|_, (_, read)| now.duration_since(*read) < TABLE_FRESH);
            cached.unknown.retain(|_, t| now.duration_since(*t) < UNKNOWN_FOR);
            cached.swept_at = cached.devices.len();
        }
        found
    }
}

/// What one surface's listeners share: its slots, and for the portal the neighbour table and
/// the metrics. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Gate {
    slots: Arc<Mutex<Slots>>,
    devices: Option<Arc<Devices>>,
    metrics: Option<Arc<Metrics>>,
    surface: &'static str,
}

impl Gate {
    /// The portal's: connections count against the device `neighbours` names.
    pub fn portal(neighbours: Arc<dyn Neighbours>, metrics: Arc<Metrics>) -> Self {
        Self {
            slots: Arc::default(),
            devices: Some(Arc::new(Devices {
                neighbours,
                table: tokio::sync::Mutex::default(),
            })),
            metrics: Some(metrics),
            surface: "portal",
        }
    }

    /// The admin's: staff are few; connections count against their address.
    pub fn admin(metrics: Arc<Metrics>) -> Self {
        Self {
            slots: Arc::default(),
            devices: None,
            metrics: Some(metrics),
            surface: "admin",
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn client(&self, ip: IpAddr) -> Client {
        match &self.devices {
            Some(devices) => devices.of(ip).await.map_or(Client::Address(ip), Client::Device),
            None => Client::Address(ip),
        }
    }

    /// Lets a connection from `ip` in, or says why not. The header timeout is chosen here: the
    /// short one while more than three quarters of the slots are taken.
    async fn admit(&self, ip: IpAddr) -> Result<(Ticket, oneshot::Receiver<()>, Duration), Refused> {
        let client = self.client(ip).await;
        let mut slots = self.slots();
        let evicted_before = slots.evicted;
        let admitted = slots.admit(client, Instant::now());
        let pressed = slots.conns.len() > MAX_TOTAL * 3 / 4;
        let evicted = slots.evicted - evicted_before;
        drop(slots);
        if let Some(m) = &self.metrics {
            match admitted {
                Err(Refused::PerDevice) => m.connections_refused("per_device", 1),
                Err(Refused::Total) => m.connections_refused("total", 1),
                Ok(_) if evicted > 0 => m.connection_evicted(),
                Ok(_) => {}
            }
        }
        if let Err(why) = admitted {
            tracing::debug!(surface = self.surface, %client, ?why, "connection refused");
        }
        let (id, evict) = admitted?;
        let answered = self
            .slots()
            .conns
            .get(&id)
            .map(|c| c.answered.clone())
            .unwrap_or_default();
        let timeout = if pressed {
            HEADER_TIMEOUT_PRESSED
        } else {
            HEADER_TIMEOUT
        };
        Ok((
            Ticket {
                gate: self.clone(),
                id,
                answered,
            },
            evict,
            timeout,
        ))
    }

    /// Logs what was refused and closed since the last summary (at most once a minute).
    fn summarise(&self) {
        let Some(Summary {
            per_device,
            total,
            evicted,
            worst,
        }) = self.slots().summary(Instant::now())
        else {
            return;
        };
        let (busiest, busiest_count) = worst.map_or((String::new(), 0), |(c, n)| (c.to_string(), n));
        tracing::warn!(
            surface = self.surface,
            refused_per_device = per_device,
            refused_full = total,
            closed_to_make_room = evicted,
            busiest = %busiest,
            busiest_count,
            "connections refused or closed in the last minute: a device is holding many connections"
        );
    }
}

/// A connection's slot: marks it busy or idle, and frees it on drop.
#[derive(Debug)]
struct Ticket {
    gate: Gate,
    id: u64,
    /// Its `Conn::answered`.
    answered: Arc<AtomicU64>,
}

impl Ticket {
    /// A quick answer was just given: the connection is not idle. No lock: the slots read it
    /// only when choosing whom to close.
    fn answered_quick(&self) {
        self.answered
            .store(micros_after_epoch(Instant::now()), Ordering::Relaxed);
    }

    fn busy(&self, busy: bool) {
        if let Some(c) = self.gate.slots().conns.get_mut(&self.id) {
            c.busy = busy;
            c.since = Instant::now();
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.gate.slots().release(self.id);
    }
}

/// Serves one HTTP/1.1 connection (plain or TLS) with the header-read timeout and head cap,
/// until it ends or a graceful shutdown finishes it.
async fn run_connection<I>(
    io: I,
    app: App,
    peer: SocketAddr,
    ticket: Arc<Ticket>,
    header_timeout: Duration,
    watcher: Watcher,
) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        // Answered at once, so the connection is never seen busy.
        if let Some(answer) = app
            .quick
            .as_ref()
            .and_then(|q| q(req.method(), req.uri(), req.headers()))
        {
            ticket.answered_quick();
            return Either::Left(std::future::ready(Ok(answer)));
        }
        req.extensions_mut().insert(ConnectInfo(peer));
        ticket.busy(true);
        let ticket = ticket.clone();
        let answer = app.router.clone().call(req);
        Either::Right(async move {
            let response = answer.await;
            ticket.busy(false);
            response
        })
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(io), service);
    watcher.watch(conn).await
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown` turns true, then
/// drains for up to 5 s. The TLS handshake counts against the same header timeout. Listeners
/// of one surface share `gate`.
pub async fn serve(
    listener: TcpListener,
    app: App,
    tls: Option<TlsAcceptor>,
    gate: Gate,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut summary = tokio::time::interval(SUMMARY_CHECK);
    summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = summary.tick() => {
                gate.summarise();
                continue;
            }
            _ = shutdown.changed() => break,
        };
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        // Refused: the stream is dropped, which closes it at once.
        let Ok((ticket, evicted, header_timeout)) = gate.admit(peer.ip()).await else {
            continue;
        };
        let ticket = Arc::new(ticket);
        let app = app.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let work = async {
                // Errors here are the client's (reset, timeout, bad TLS or HTTP): debug only.
                match tls {
                    None => run_connection(stream, app, peer, ticket, header_timeout, watcher).await,
                    Some(acceptor) => match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => run_connection(stream, app, peer, ticket, header_timeout, watcher).await,
                        Ok(Err(e)) => {
                            tracing::debug!(client = %peer.ip(), error = %e, "TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => Ok(()),
                    },
                }
            };
            tokio::select! {
                result = work => if let Err(e) = result {
                    tracing::debug!(client = %peer.ip(), error = %e, "connection ended");
                },
                // Dropping the connection closes its socket.
                _ = evicted => tracing::debug!(client = %peer.ip(), "closed to make room for another device"),
            }
        });
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still open after {} s; stopping anyway", DRAIN.as_secs());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(n: u8) -> Client {
        Client::Device(MacAddr::new([2, 0, 0, 0, 0, n]))
    }

    #[test]
    fn a_device_holds_at_most_its_share_whatever_its_addresses() {
        let mut slots = Slots::default();
        let now = Instant::now();
        for _ in 0..MAX_PER_CLIENT {
            slots.admit(device(1), now).unwrap();
        }
        assert_eq!(slots.admit(device(1), now).err(), Some(Refused::PerDevice));
        assert!(slots.admit(device(2), now).is_ok());
        assert_eq!(slots.refused_per_device, 1);
    }

    #[test]
    fn when_full_a_newcomer_closes_the_longest_idle_of_the_device_holding_most() {
        let mut slots = Slots::default();
        let start = Instant::now();
        let mut receivers = Vec::new();
        // 16 devices with 32 each fill all 512 slots; device 1's first connection is oldest.
        for d in 1..=16u8 {
            for i in 0..MAX_PER_CLIENT {
                let at = start + Duration::from_millis(u64::from(d) * 100 + i as u64);
                receivers.push((d, slots.admit(device(d), at).unwrap()));
            }
        }
        assert_eq!(slots.conns.len(), MAX_TOTAL);
        let (id, _) = slots.admit(device(99), start + Duration::from_secs(5)).unwrap();
        assert_eq!(slots.conns.len(), MAX_TOTAL);
        assert_eq!(slots.evicted, 1);
        assert!(slots.conns.contains_key(&id));
        // The evicted one was device 1's oldest: its receiver fired.
        let (_, (first, rx)) = &mut receivers[0];
        assert!(!slots.conns.contains_key(first));
        assert!(rx.try_recv().is_ok());
        assert_eq!(slots.per_client[&device(1)], MAX_PER_CLIENT - 1);
    }

    /// A connection answered only by quick answers (the portal's redirect) is not idle: when
    /// room is needed, the device's connection idle the longest goes, not the oldest.
    #[test]
    fn a_connection_given_quick_answers_is_not_taken_for_idle() {
        let mut slots = Slots::default();
        let start = Instant::now();
        let mut ids = Vec::new();
        for d in 1..=16u8 {
            for i in 0..MAX_PER_CLIENT {
                let at = start + Duration::from_millis(u64::from(d) * 100 + i as u64);
                ids.push(slots.admit(device(d), at).unwrap().0);
            }
        }
        // Device 1's oldest connection was given a quick answer a moment ago.
        let (oldest, second) = (ids[0], ids[1]);
        slots.conns[&oldest]
            .answered
            .store(micros_after_epoch(start + Duration::from_secs(4)), Ordering::Relaxed);
        slots.admit(device(99), start + Duration::from_secs(5)).unwrap();
        assert!(slots.conns.contains_key(&oldest), "answered lately: kept");
        assert!(!slots.conns.contains_key(&second), "idle the longest: closed");
    }

    #[test]
    fn idle_connections_go_first_and_lighter_devices_are_never_closed_for_a_newcomer() {
        let mut slots = Slots::default();
        let now = Instant::now();
        let mut ids = Vec::new();
        for d in 1..=16u8 {
            for _ in 0..MAX_PER_CLIENT {
                ids.push(slots.admit(device(d), now).unwrap().0);
            }
        }
        // Every connection is busy (trickling request bodies, say) but one of device 15's: a
        // newcomer still gets in, taking the idle one first, then a busy one of a device
        // holding the most (not device 15, which now holds fewer).
        for id in &ids {
            slots.conns.get_mut(id).unwrap().busy = true;
        }
        let idle = ids[14 * MAX_PER_CLIENT];
        slots.conns.get_mut(&idle).unwrap().busy = false;
        assert!(slots.admit(device(99), now).is_ok());
        assert!(!slots.conns.contains_key(&idle), "the idle one went first");
        assert!(slots.admit(device(98), now).is_ok(), "then a busy one");
        assert_eq!(slots.per_client[&device(15)], MAX_PER_CLIENT - 1);
        assert_eq!(slots.conns.len(), MAX_TOTAL);
        assert_eq!(
            slots.per_client.values().filter(|n| **n == MAX_PER_CLIENT - 1).count(),
            2
        );
        // A device that already holds as many as any other gets no one else's slot. (Which
        // device lost one to the newcomer depends on the map's order: take one that did not.)
        let full = *slots
            .per_client
            .iter()
            .find(|(_, n)| **n == MAX_PER_CLIENT)
            .expect("fourteen devices still hold their all")
            .0;
        assert_eq!(slots.admit(full, now).err(), Some(Refused::PerDevice));
        let mut even = Slots::default();
        for d in 0..(MAX_TOTAL / 4) as u8 {
            for _ in 0..4 {
                even.admit(device(d), now).unwrap();
            }
        }
        for _ in 0..4 {
            even.admit(device(200), now).ok();
        }
        assert!(
            even.admit(device(200), now).is_err(),
            "holding 4 like everyone else, it takes no one's slot"
        );
    }

    /// Counts its reads; each takes `delay`.
    #[derive(Debug)]
    struct SlowTable {
        reads: std::sync::atomic::AtomicUsize,
        delay: Duration,
        entries: Vec<(IpAddr, MacAddr)>,
    }

    impl Neighbours for SlowTable {
        fn table(&self) -> crate::neighbours::Table<'_> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(self.delay).await;
                Ok(self.entries.clone())
            })
        }
        fn lookup(&self, _: IpAddr) -> crate::neighbours::Lookup<'_> {
            Box::pin(async { Ok(None) })
        }
    }

    fn slow_devices(delay: Duration) -> (Devices, Arc<SlowTable>) {
        let table = Arc::new(SlowTable {
            reads: 0.into(),
            delay,
            entries: vec![("192.0.2.11".parse().unwrap(), MacAddr::new([2, 0, 0, 0, 0, 0x11]))],
        });
        let devices = Devices {
            neighbours: table.clone(),
            table: tokio::sync::Mutex::default(),
        };
        (devices, table)
    }

    #[tokio::test]
    async fn the_neighbour_table_is_read_once_per_new_address_and_never_waited_on_long() {
        let reads = |t: &SlowTable| t.reads.load(Ordering::SeqCst);
        let (devices, table) = slow_devices(Duration::from_millis(1));
        let known: IpAddr = "192.0.2.11".parse().unwrap();
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(devices.of(known).await, Some(MacAddr::new([2, 0, 0, 0, 0, 0x11])));
        assert_eq!(devices.of(known).await.map(|_| ()), Some(()));
        assert_eq!(reads(&table), 1, "a known address is answered from the cache");
        assert_eq!(devices.of(loopback).await, None);
        assert_eq!(devices.of(loopback).await, None);
        assert_eq!(reads(&table), 2, "an unknown one is not asked about again at once");
        tokio::time::sleep(UNKNOWN_FOR).await;
        assert_eq!(devices.of(loopback).await, None);
        assert_eq!(reads(&table), 3);
        // A kernel that does not answer in time: counted by address, without waiting long.
        let (slow, _) = slow_devices(Duration::from_secs(5));
        let started = Instant::now();
        assert_eq!(slow.of(known).await, None);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "gave up after about {TABLE_WAIT:?}"
        );
    }

    /// The real accept loop on loopback: a head over `MAX_HEAD` gets 431, a phone's gets its page.
    #[tokio::test]
    async fn issue_10_request_heads_are_capped_at_16_kib() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", axum::routing::get(|| async { "page" }));
        let dir = tempfile::tempdir().unwrap();
        let gate = Gate::admin(Arc::new(Metrics::new(dir.path().join("db"))));
        let (stop, shutdown) = watch::channel(false);
        let server = tokio::spawn(serve(listener, app.into(), None, gate, shutdown));
        let ask = |head: String| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(head.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            let _ = s.read_to_end(&mut answer).await;
            String::from_utf8_lossy(&answer).into_owned()
        };
        let padded = |n: usize| {
            format!(
                "GET / HTTP/1.1\r\nHost: portal\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
                "a".repeat(n)
            )
        };
        let small = ask(padded(2 * 1024)).await;
        assert!(small.starts_with("HTTP/1.1 200"), "{small}");
        let big = ask(padded(20 * 1024)).await;
        assert!(big.starts_with("HTTP/1.1 431"), "{big}");
        let _ = stop.send(true);
        server.await.unwrap();
    }

    #[test]
    fn the_summary_comes_at_most_once_a_minute_and_only_with_news() {
        let mut slots = Slots::default();
        let now = Instant::now();
        assert!(slots.summary(now).is_none());
        for _ in 0..=MAX_PER_CLIENT {
            let _ = slots.admit(device(1), now);
        }
        assert_eq!(
            slots.summary(now),
            Some(Summary {
                per_device: 1,
                total: 0,
                evicted: 0,
                worst: Some((device(1), 1))
            })
        );
        let _ = slots.admit(device(1), now);
        assert!(
            slots.summary(now + Duration::from_secs(30)).is_none(),
            "not twice in a minute"
        );
        assert!(slots.summary(now + Duration::from_secs(61)).is_some());
    }
}
