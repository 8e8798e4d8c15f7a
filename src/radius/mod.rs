//! RADIUS accounting (RFC 2866) to the school's web filter or RADIUS server, so the filter
//! knows which guest holds which address.
//!
//! The store writes each Start and Stop to its outbox in the transaction that caused it
//! (`store::accounting`). This task sends them, oldest first, one at a time, and deletes each
//! only once a server's answer verifies (`client`); a server that is down, or a restart, loses
//! nothing. Beside that it:
//! - follows each open device's addresses in the neighbour table's copy (every
//!   `FOLLOW`), so a new lease or a second address reaches the filter as a Stop and a Start;
//! - sends Interim-Updates every `interim_minutes`, only while the outbox is empty, and does
//!   not keep them (the next one comes soon enough);
//! - sweeps every session against the store every `SWEEP` (and at start), for access that ran
//!   out while nobody looked.

pub mod check;
pub mod client;
pub mod packet;
pub mod settings;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

pub use crate::secret::Secret;
pub use settings::{RawRadius, Settings};

use crate::clients::MacAddr;
use crate::clock::Clock;
use crate::neighbours::Neighbours;
use crate::store::Store;
use crate::store::accounting::{AccountingRecord, AcctStatus, Addresses, RADIUS};

/// How often open devices' addresses are compared with the neighbour table's copy.
const FOLLOW: Duration = Duration::from_secs(5);
/// How often every session is checked against the store.
const SWEEP: Duration = Duration::from_secs(300);
/// The wait after a round in which no server took the record: doubled each time, up to `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(120);

/// The sender's figures, for `/metrics` (read at scrape, kept as prometheus values here).
#[derive(Debug, Default)]
pub struct Status {
    /// Records waiting in the outbox.
    pub pending: Gauge,
    /// When the oldest waiting record was written (seconds since 1970; 0 when none waits).
    pub oldest: Gauge,
    /// Records a server took.
    pub delivered: Counter,
    /// Rounds in which no server took the record.
    pub failed_rounds: Counter,
    /// Interim-Updates a server took.
    pub interims: Counter,
    /// What the last failed round said, for the log's once-a-change line.
    last_failure: Mutex<Option<String>>,
}

/// What the task works with.
pub struct Sender {
    store: Store,
    neighbours: Arc<dyn Neighbours>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    /// Made once the secret has been read (it is read again until it can be).
    client: Option<client::Client>,
    status: Arc<Status>,
    /// Each open session's addresses as last written, to compare with the neighbour table.
    open: HashMap<MacAddr, Addresses>,
    /// When the backlog was last counted.
    counted: Option<std::time::Instant>,
    /// The next `follow` looks at every open device, not only those the copy says changed
    /// (set by each sweep: a change seen before a session's Start was delivered is not lost).
    look_at_all: bool,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// A sender for `settings`. The secret is read when the first record goes: a secret file
    /// that cannot be read holds records back (the log, the dashboard and `aupgate check` say
    /// why) but never the daemon.
    pub fn new(settings: &Settings, store: Store, neighbours: Arc<dyn Neighbours>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            neighbours,
            clock,
            settings: settings.clone(),
            client: None,
            status: Arc::default(),
            open: HashMap::new(),
            counted: None,
            look_at_all: true,
        }
    }

    /// Its figures.
    pub fn status(&self) -> Arc<Status> {
        self.status.clone()
    }

    /// Runs until `shutdown`.
    pub fn spawn(mut self, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let store = self.store.clone();
            let Some(wake) = store.outbox_wakeup() else {
                tracing::error!("RADIUS accounting is not on in the store; nothing is sent");
                return;
            };
            let servers: Vec<String> = self.settings.servers.iter().map(ToString::to_string).collect();
            tracing::info!(
                servers = %servers.join(", "),
                nas_identifier = %self.settings.nas_identifier,
                "RADIUS accounting on: the filter is told who holds each guest address"
            );
            self.sweep().await;
            let start = tokio::time::Instant::now();
            let mut next_follow = start + FOLLOW;
            let mut next_sweep = start + SWEEP;
            let mut next_interim = self.settings.interim.map(|i| start + i);
            let mut backoff = MIN_BACKOFF;
            // While no server takes the oldest record, it is tried again at `retry`; following
            // addresses and the sweep go on meanwhile, so an outage loses no change.
            let mut retry: Option<tokio::time::Instant> = None;
            loop {
                if *shutdown.borrow() {
                    return;
                }
                let now = tokio::time::Instant::now();
                if now >= next_follow {
                    self.follow().await;
                    next_follow = now + FOLLOW;
                    continue;
                }
                if now >= next_sweep {
                    self.sweep().await;
                    next_sweep = now + SWEEP;
                    continue;
                }
                if retry.is_none_or(|at| now >= at) {
                    match self.send_next().await {
                        Some(true) => {
                            (backoff, retry) = (MIN_BACKOFF, None);
                            continue;
                        }
                        Some(false) => {
                            // The same record again later: order is kept.
                            retry = Some(tokio::time::Instant::now() + backoff);
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                            continue;
                        }
                        None => retry = None,
                    }
                }
                // Interim-Updates only while nothing waits.
                if retry.is_none()
                    && let (Some(due), Some(every)) = (next_interim, self.settings.interim)
                    && now >= due
                {
                    self.interims().await;
                    next_interim = Some(tokio::time::Instant::now() + every);
                    continue;
                }
                let mut until = next_follow.min(next_sweep);
                if let Some(at) = retry {
                    until = until.min(at);
                } else if let Some(at) = next_interim {
                    until = until.min(at);
                }
                tokio::select! {
                    // A new record: sent now, unless a retry is pending (it waits its turn).
                    () = wake.notified(), if retry.is_none() => {}
                    () = tokio::time::sleep_until(until) => {}
                    _ = shutdown.changed() => return,
                }
            }
        })
    }

    /// The oldest waiting record to a server: `Some(true)` delivered, `Some(false)` not (it
    /// waits), `None` when the outbox is empty.
    async fn send_next(&mut self) -> Option<bool> {
        let next = self.store.run(|s| s.outbox_next(RADIUS)).await;
        let pending = match next {
            Ok(Some(p)) => p,
            Ok(None) => {
                self.status.pending.set(0);
                self.status.oldest.set(0);
                return None;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the RADIUS outbox; trying again shortly");
                return Some(false);
            }
        };
        self.status.oldest.set(pending.created_at.as_second());
        // Counted at most once a second: a count per record would make a long catch-up
        // quadratic.
        if self.counted.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            if let Ok(backlog) = self.store.run(|s| s.outbox_backlog(RADIUS)).await {
                self.status
                    .pending
                    .set(i64::try_from(backlog.pending).unwrap_or(i64::MAX));
            }
            self.counted = Some(std::time::Instant::now());
        }
        let record: AccountingRecord = match serde_json::from_str(&pending.payload) {
            Ok(r) => r,
            Err(e) => {
                // Only a hand edit makes one; it must not hold up everything after it.
                tracing::error!(record = pending.id, error = %e, "dropping an unreadable RADIUS record from the outbox");
                let id = pending.id;
                // If it cannot even be removed, wait like a failed round rather than spin.
                return Some(self.store.run(move |s| s.outbox_delivered(id)).await.is_ok());
            }
        };
        let now = self.clock.now();
        match self.deliver(&record, now).await {
            Ok(server) => {
                let id = pending.id;
                if let Err(e) = self.store.run(move |s| s.outbox_delivered(id)).await {
                    // Sent again later: the server sees a duplicate, which accounting tolerates.
                    tracing::error!(error = %e, "cannot mark a RADIUS record delivered");
                    return Some(false);
                }
                self.status.delivered.inc();
                self.delivered(&record);
                let recovered = self.lock_failure().take();
                if let Some(was) = recovered {
                    tracing::info!(%server, previously = %was, "RADIUS accounting delivered again");
                }
                tracing::debug!(%server, status = ?record.status, session = %record.session, "RADIUS record delivered");
                Some(true)
            }
            Err(why) => {
                self.status.failed_rounds.inc();
                let id = pending.id;
                let text = why.clone();
                let _ = self.store.run(move |s| s.outbox_failed(id, &text)).await;
                let mut last = self.lock_failure();
                if last.as_deref() != Some(why.as_str()) {
                    tracing::warn!(
                        waiting = self.status.pending.get(),
                        error = %why,
                        "no RADIUS server took an accounting record; it stays queued and is sent again (fix: check [radius] servers, the server's client entry for this router, and radius.secret_file)"
                    );
                    *last = Some(why);
                }
                Some(false)
            }
        }
    }

    /// `record` to the servers, once the secret is read.
    async fn deliver(&mut self, record: &AccountingRecord, now: jiff::Timestamp) -> Result<String, String> {
        if self.client.is_none() {
            let secret = Secret::load("radius.secret_file", &self.settings.secret_file).map_err(|e| e.to_string())?;
            let (servers, id) = (self.settings.servers.clone(), self.settings.nas_identifier.clone());
            self.client = Some(client::Client::new(servers, secret, id));
        }
        match &mut self.client {
            Some(client) => client.deliver(record, now).await,
            None => Err("no RADIUS client".into()),
        }
    }

    fn lock_failure(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.status
            .last_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `open` in step with what the filter has been told.
    fn delivered(&mut self, record: &AccountingRecord) {
        match record.status {
            AcctStatus::Start => {
                self.open.insert(record.mac, record.addresses.clone());
            }
            AcctStatus::Stop => {
                self.open.remove(&record.mac);
            }
            AcctStatus::InterimUpdate => {}
        }
    }

    /// Every session against the store, a batch at a time; then `open` from the store's sessions.
    async fn sweep(&mut self) {
        let now = self.clock.now();
        // Bounded: a device the store cannot start (no usable address) is found again by
        // every batch, and must not keep the sweep going.
        for _ in 0..10_000 {
            match self.store.run(move |s| s.account_all(now)).await {
                Ok((looked, changed)) if looked < crate::store::accounting::SWEEP_BATCH || changed == 0 => break,
                Ok(_) => tokio::task::yield_now().await,
                Err(e) => {
                    tracing::error!(error = %e, "cannot check RADIUS sessions against the store");
                    break;
                }
            }
        }
        self.look_at_all = true;
        match self.store.run(|s| s.accounting_sessions()).await {
            Ok(sessions) => self.open = sessions.into_iter().map(|s| (s.mac, s.addresses)).collect(),
            Err(e) => tracing::error!(error = %e, "cannot check RADIUS sessions against the store"),
        }
    }

    /// Devices whose addresses in the neighbour table differ from what the filter was told,
    /// and devices let in by an exception whose first address has appeared.
    async fn follow(&mut self) {
        let now = self.clock.now();
        let waiting = match self.store.run(move |s| s.accounting_waiting(now)).await {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot read which devices wait for an accounting Start");
                Vec::new()
            }
        };
        // Only devices whose entries changed since the last look, when the copy can say which
        // (so an idle router with 50,000 guests looks at none); all of them after each sweep.
        let changed = self.neighbours.take_changed();
        let mut macs: Vec<MacAddr> = match changed {
            Some(changed) if !std::mem::take(&mut self.look_at_all) => {
                changed.into_iter().filter(|m| self.open.contains_key(m)).collect()
            }
            _ => self.open.keys().copied().collect(),
        };
        macs.extend(waiting);
        if macs.is_empty() {
            return;
        }
        let seen = self.neighbours.recent(&macs);
        let mut moved = Vec::new();
        for (mac, recent) in macs.into_iter().zip(seen) {
            let seen = Addresses::from_recent(&recent);
            let changed = match self.open.get(&mac) {
                // A new address, not one of those already told moving about in the order (a
                // phone with several temporary IPv6 addresses must not churn sessions).
                Some(told) => {
                    (seen.ipv4.is_some() && seen.ipv4 != told.ipv4) || seen.ipv6.iter().any(|a| !told.ipv6.contains(a))
                }
                None => !seen.is_empty(),
            };
            if changed {
                moved.push((mac, seen));
            }
        }
        for (mac, addresses) in moved {
            tracing::info!(%mac, ipv4 = ?addresses.ipv4, ipv6 = ?addresses.ipv6, "a device's address is new to the RADIUS server; telling it");
            let told = addresses.clone();
            match self.store.run(move |s| s.account_addresses(mac, addresses, now)).await {
                // Not what the filter has yet, but written: not asked again every FOLLOW.
                Ok(()) => {
                    let entry = self.open.entry(mac).or_default();
                    *entry = entry.updated(&told);
                }
                Err(e) => tracing::error!(%mac, error = %e, "cannot record a device's new address for RADIUS"),
            }
        }
    }

    /// An Interim-Update for each open session, while nothing waits in the outbox.
    async fn interims(&mut self) {
        let sessions = match self.store.run(|s| s.accounting_sessions()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot read RADIUS sessions for Interim-Updates");
                return;
            }
        };
        let mut sent = 0u64;
        for (n, mut session) in sessions.into_iter().enumerate() {
            if n % 32 == 0 && matches!(self.store.run(|s| s.outbox_next(RADIUS)).await, Ok(Some(_))) {
                // A Start or Stop came in: it goes first; the rest wait for the next round.
                break;
            }
            let now = self.clock.now();
            session.status = AcctStatus::InterimUpdate;
            session.at = now;
            if let Err(why) = self.deliver(&session, now).await {
                tracing::warn!(error = %why, "no RADIUS server took an Interim-Update; the rest wait for the next round");
                break;
            }
            self.status.interims.inc();
            sent += 1;
        }
        tracing::debug!(sent, "RADIUS Interim-Updates sent");
    }
}

#[cfg(test)]
mod tests;
