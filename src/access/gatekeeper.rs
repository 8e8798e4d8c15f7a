//! The one writer that keeps the kernel equal to the store: every change to who may pass goes
//! through it, store first, then kernel (ARCHITECTURE.md, invariant 2). Once a second it looks
//! whether anything else touched our table (the kernel's change events, read by the firewall)
//! and logs the devices whose access ran out; only when something did, or once a minute, does
//! it list the kernel's table and set and compare them with the store, putting right what it
//! finds. So its idle cost does not grow with the number of guests.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use jiff::SignedDuration;
use tokio::sync::{mpsc, oneshot, watch};

use crate::clients::MacAddr;
use crate::clock::Clock;
use crate::firewall::{Became, Firewall, FirewallError, OutsideChanges, TABLE, TableSpec};
use crate::store::{Store, StoreError};

/// The most accepted devices opened in one transaction.
const MAX_OPENS: usize = 128;

/// One accepted device waiting to be opened, and where its answer goes.
type Open = (MacAddr, Vec<IpAddr>, i64, oneshot::Sender<Result<(), GatekeeperError>>);

/// How often the writer looks for outside changes and for access that ran out.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// How often the writer lists the kernel's table and set even when no change was reported: a
/// safety net under the change events.
pub const FULL_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// What can go wrong keeping the kernel equal to the store.
#[derive(Debug, thiserror::Error)]
pub enum GatekeeperError {
    /// netfilter refused, or a helper program failed.
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    /// The store could not say who is allowed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The writer task has stopped (the daemon is shutting down).
    #[error("the firewall writer has stopped")]
    Stopped,
}

enum Command {
    Open {
        mac: MacAddr,
        ips: Vec<IpAddr>,
        consent: i64,
        reply: oneshot::Sender<Result<(), GatekeeperError>>,
    },
    Sync {
        macs: Vec<MacAddr>,
        reply: oneshot::Sender<Result<(), GatekeeperError>>,
    },
}

/// What the writer's last checks saw, for the staff dashboard.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FirewallStatus {
    /// Whether our table was there at the last check.
    pub table_present: bool,
    /// Devices in the `allowed` set at the last check.
    pub elements: usize,
    /// When the last check ran.
    pub last_check: Option<Timestamp>,
    /// When the table was last rebuilt (start-up, or a restore after outside changes).
    pub last_rebuild: Option<Timestamp>,
    /// The last check's error, if it failed.
    pub last_error: Option<String>,
    /// Checks since start (for `/metrics`).
    pub checks: u64,
    /// Of those, the ones that listed the kernel's table and set (an outside change, the
    /// minute's safety check, or a failed check being retried).
    pub full_checks: u64,
    /// Rebuilds since start, the first included.
    pub rebuilds: u64,
}

type SharedStatus = Arc<std::sync::Mutex<FirewallStatus>>;

fn update(status: &SharedStatus, f: impl FnOnce(&mut FirewallStatus)) {
    f(&mut status.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
}

/// Cheap-clone handle to the firewall writer.
#[derive(Debug, Clone)]
pub struct FirewallHandle {
    tx: mpsc::Sender<Command>,
    status: SharedStatus,
}

impl FirewallHandle {
    /// Opens `mac` until its latest open consent ends, then forgets the connections each of
    /// `ips` started. Returns only once the element is in the kernel. If anything fails, the
    /// writer withdraws `consent` and closes `mac` before answering: nothing stays open.
    ///
    /// # Errors
    /// If nft or conntrack fail, or the store has no open consent for `mac`.
    pub async fn open(&self, mac: MacAddr, ips: Vec<IpAddr>, consent: i64) -> Result<(), GatekeeperError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Open {
                mac,
                ips,
                consent,
                reply,
            })
            .await
            .map_err(|_| GatekeeperError::Stopped)?;
        rx.await.map_err(|_| GatekeeperError::Stopped)?
    }

    /// What the writer's last checks saw.
    pub fn status(&self) -> FirewallStatus {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Makes the set agree with the store for `macs` (after a revoke or a course end).
    ///
    /// # Errors
    /// If nft fails.
    pub async fn sync(&self, macs: Vec<MacAddr>) -> Result<(), GatekeeperError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Sync { macs, reply })
            .await
            .map_err(|_| GatekeeperError::Stopped)?;
        rx.await.map_err(|_| GatekeeperError::Stopped)?
    }
}

/// The writer: owns the firewall; started by the daemon.
pub struct Writer<F> {
    firewall: Arc<F>,
    store: Store,
    /// Where the minute's check reads the allowed devices: a second, read-only connection in
    /// the daemon, so 50,000 rows read do not hold the writer's connection; the store itself
    /// otherwise.
    reader: Store,
    clock: Arc<dyn Clock>,
    spec: TableSpec,
    /// The table's listing right after our last full install.
    installed: std::sync::Mutex<Option<String>>,
    status: SharedStatus,
    /// The devices let through and until when, to log the ones whose access runs out.
    expiries: std::sync::Mutex<Expiries>,
    /// The firewall's counts of outside changes when the last check began.
    outside_seen: std::sync::Mutex<OutsideChanges>,
    /// A full check failed (or none has run): the next tick makes one.
    dirty: AtomicBool,
    /// When the last full check began.
    last_full: std::sync::Mutex<Instant>,
    /// The running task makes the minute's check in the background (`spawn`); without it
    /// (unit tests driving `tick`), `tick` makes it inline.
    background: AtomicBool,
}

/// What the kernel's set and the store held at one moment, listed off the writer's path.
struct Snapshot {
    now: Timestamp,
    desired: Vec<(MacAddr, Timestamp)>,
    present: BTreeSet<MacAddr>,
}

/// Lists the store's allowed devices and the kernel's set, for the minute's check. Runs beside
/// the writer, so accepts and revokes do not wait behind it with many guests.
async fn snapshot<F: Firewall>(firewall: Arc<F>, store: Store, now: Timestamp) -> Result<Snapshot, GatekeeperError> {
    let desired = store.run(move |s| s.allowed(now)).await?;
    let present = firewall.elements().await?;
    Ok(Snapshot { now, desired, present })
}

/// The devices let through and when their access ends, soonest first.
#[derive(Debug, Default)]
struct Expiries {
    at: HashMap<MacAddr, Timestamp>,
    order: BTreeSet<(Timestamp, MacAddr)>,
}

impl Expiries {
    fn insert(&mut self, mac: MacAddr, until: Timestamp) {
        if let Some(old) = self.at.insert(mac, until) {
            self.order.remove(&(old, mac));
        }
        self.order.insert((until, mac));
    }

    fn remove(&mut self, mac: MacAddr) {
        if let Some(old) = self.at.remove(&mac) {
            self.order.remove(&(old, mac));
        }
    }

    /// Takes out the devices whose access ends at or before `now`.
    fn take_due(&mut self, now: Timestamp) -> Vec<MacAddr> {
        let mut due = Vec::new();
        while let Some(&(until, mac)) = self.order.first() {
            if until > now {
                break;
            }
            self.order.pop_first();
            self.at.remove(&mac);
            due.push(mac);
        }
        due
    }

    /// Becomes exactly `allowed`; returns the devices that were in and are no longer.
    fn replace_all(&mut self, allowed: &[(MacAddr, Timestamp)]) -> Vec<MacAddr> {
        let wanted: std::collections::HashSet<MacAddr> = allowed.iter().map(|(m, _)| *m).collect();
        let mut gone: Vec<MacAddr> = self.at.keys().filter(|m| !wanted.contains(m)).copied().collect();
        gone.sort();
        self.at.clear();
        self.order.clear();
        for &(mac, until) in allowed {
            self.insert(mac, until);
        }
        gone
    }

    fn len(&self) -> usize {
        self.at.len()
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<F: Firewall> Writer<F> {
    /// A writer for `firewall`, whose source of truth is `store`.
    pub fn new(firewall: F, store: Store, clock: Arc<dyn Clock>, spec: TableSpec) -> Self {
        Self {
            firewall: Arc::new(firewall),
            reader: store.clone(),
            store,
            clock,
            spec,
            installed: std::sync::Mutex::new(None),
            status: SharedStatus::default(),
            expiries: std::sync::Mutex::default(),
            outside_seen: std::sync::Mutex::default(),
            dirty: AtomicBool::new(true),
            last_full: std::sync::Mutex::new(Instant::now()),
            background: AtomicBool::new(false),
        }
    }

    /// The minute's check reads the allowed devices through `reader` (a read-only connection
    /// to the same file), not the store's own connection.
    pub fn with_reader(mut self, reader: Store) -> Self {
        self.reader = reader;
        self
    }

    /// Builds the whole table from the store and applies it in one transaction. Devices in the
    /// set without an open consent are dropped by this; accepted devices never see a gap.
    ///
    /// # Errors
    /// If the store cannot be read or nft fails.
    pub async fn reconcile_all(&self) -> Result<usize, GatekeeperError> {
        let now = self.clock.now();
        let allowed = self.store_call(move |s| s.allowed(now)).await?;
        let n = allowed.len();
        lock(&self.expiries).replace_all(&allowed);
        let ruleset = self.spec.ruleset(
            allowed
                .into_iter()
                .map(|(mac, until)| (mac, until.duration_since(now)))
                .collect(),
        );
        self.firewall.replace(&ruleset).await?;
        let listing = self.firewall.fingerprint().await?;
        *self.installed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = listing;
        update(&self.status, |s| {
            s.table_present = true;
            s.elements = n;
            s.last_rebuild = Some(now);
            s.last_check = Some(now);
            s.last_error = None;
            s.rebuilds += 1;
        });
        Ok(n)
    }

    /// Runs the writer until `shutdown` turns true. Call `reconcile_all` first.
    pub fn spawn(self, mut shutdown: watch::Receiver<bool>) -> (FirewallHandle, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Command>(256);
        let status = self.status.clone();
        self.background.store(true, Ordering::Relaxed);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut routine: Option<tokio::task::JoinHandle<Result<Snapshot, GatekeeperError>>> = None;
            loop {
                tokio::select! {
                    cmd = rx.recv() => match cmd {
                        Some(Command::Open { mac, ips, consent, reply }) => {
                            // Every accept waiting goes in with this one: one netlink
                            // transaction and one conntrack pass for all of them.
                            let mut opens = vec![(mac, ips, consent, reply)];
                            let mut next = None;
                            while opens.len() < MAX_OPENS {
                                match rx.try_recv() {
                                    Ok(Command::Open { mac, ips, consent, reply }) => opens.push((mac, ips, consent, reply)),
                                    Ok(other) => { next = Some(other); break; }
                                    Err(_) => break,
                                }
                            }
                            self.open_all(opens).await;
                            if let Some(Command::Sync { macs, reply }) = next { let _ = reply.send(self.sync(&macs).await); }
                        }
                        Some(Command::Sync { macs, reply }) => { let _ = reply.send(self.sync(&macs).await); }
                        None => break,
                    },
                    _ = tick.tick() => {
                        if routine.is_none() && lock(&self.last_full).elapsed() >= FULL_CHECK_INTERVAL {
                            *lock(&self.last_full) = Instant::now();
                            tracing::debug!(why = "routine", "looking at the kernel's set");
                            let (firewall, store, now) = (self.firewall.clone(), self.reader.clone(), self.clock.now());
                            routine = Some(tokio::spawn(snapshot(firewall, store, now)));
                        }
                        if let Err(e) = self.tick().await {
                            tracing::error!(error = %e, "firewall check failed; retrying in 1 s");
                            update(&self.status, |s| s.last_error = Some(e.to_string()));
                        }
                    }
                    listed = async {
                        match routine.as_mut() {
                            Some(task) => task.await,
                            None => std::future::pending().await,
                        }
                    } => {
                        routine = None;
                        let settled = match listed {
                            Ok(Ok(snap)) => self.settle(snap, false).await,
                            Ok(Err(e)) => Err(e),
                            Err(e) => Err(GatekeeperError::Firewall(FirewallError::Io {
                                what: "listing the set",
                                source: std::io::Error::other(e.to_string()),
                            })),
                        };
                        if let Err(e) = settled {
                            tracing::error!(error = %e, "the minute's firewall check failed; retrying in a minute");
                            update(&self.status, |s| s.last_error = Some(e.to_string()));
                        }
                    }
                    _ = shutdown.changed() => break,
                }
            }
            tracing::debug!("firewall writer stopped; the table stays in the kernel");
        });
        (FirewallHandle { tx, status }, task)
    }

    async fn store_call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, GatekeeperError> {
        Ok(self.store.run(f).await?)
    }

    /// Opens several accepted devices together: each checked against the store, then one
    /// transaction adding all their elements and one pass over conntrack for all their
    /// addresses. If that fails, each is opened on its own, so a failure is its own guest's.
    async fn open_all(&self, opens: Vec<Open>) {
        if opens.len() == 1 {
            for (mac, ips, consent, reply) in opens {
                let _ = reply.send(self.open(mac, &ips, consent).await);
            }
            return;
        }
        let now = self.clock.now();
        let macs: Vec<MacAddr> = opens.iter().map(|o| o.0).collect();
        let untils = self
            .store_call(move |s| {
                macs.iter()
                    .map(|&m| s.allowed_until(m, now))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await;
        let together = match &untils {
            Ok(untils) if untils.iter().all(Option::is_some) => {
                let elements: Vec<(MacAddr, SignedDuration)> = opens
                    .iter()
                    .zip(untils.iter().flatten())
                    .map(|(o, until)| (o.0, until.duration_since(now)))
                    .collect();
                let ips: Vec<IpAddr> = opens.iter().flat_map(|o| o.1.iter().copied()).collect();
                match self.firewall.allow_all(&elements).await {
                    Ok(()) => self
                        .firewall
                        .forget_connections(&ips, Became::Open)
                        .await
                        .map_err(GatekeeperError::from),
                    Err(e) => Err(e.into()),
                }
            }
            Ok(_) => Err(GatekeeperError::Store(StoreError::NotFound(
                "an open consent for every device".into(),
            ))),
            Err(e) => Err(GatekeeperError::Store(StoreError::Shared(e.to_string()))),
        };
        match (together, untils) {
            (Ok(()), Ok(untils)) => {
                tracing::debug!(devices = opens.len(), "devices opened together");
                for ((mac, _, _, reply), until) in opens.into_iter().zip(untils.into_iter().flatten()) {
                    lock(&self.expiries).insert(mac, until);
                    tracing::info!(%mac, until = %until, "device allowed");
                    let _ = reply.send(Ok(()));
                }
            }
            (result, _) => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "opening devices together failed; opening each on its own");
                }
                for (mac, ips, consent, reply) in opens {
                    let _ = reply.send(self.open(mac, &ips, consent).await);
                }
            }
        }
    }

    async fn open(&self, mac: MacAddr, ips: &[IpAddr], consent: i64) -> Result<(), GatekeeperError> {
        let result = self.try_open(mac, ips).await;
        if let Err(e) = &result {
            // Withdraw first, then close: done here, inside the one writer, so the periodic
            // check cannot see the consent still open and re-add the device in between.
            let now = self.clock.now();
            if let Err(w) = self
                .store_call(move |s| s.withdraw_consent(consent, now, crate::store::EndReason::FirewallError.as_str()))
                .await
            {
                tracing::error!(%mac, error = %w, "could not withdraw the consent after {e}");
            }
            if let Err(d) = self.sync(&[mac]).await {
                tracing::error!(%mac, error = %d, "could not close the device; the periodic check retries");
            }
        }
        result
    }

    async fn try_open(&self, mac: MacAddr, ips: &[IpAddr]) -> Result<(), GatekeeperError> {
        let now = self.clock.now();
        let Some(until) = self.store_call(move |s| s.allowed_until(mac, now)).await? else {
            return Err(GatekeeperError::Store(StoreError::NotFound(format!(
                "open consent for {mac}"
            ))));
        };
        self.firewall.open_device(mac, until.duration_since(now), ips).await?;
        lock(&self.expiries).insert(mac, until);
        tracing::info!(%mac, until = %until, "device allowed");
        Ok(())
    }

    async fn sync(&self, macs: &[MacAddr]) -> Result<(), GatekeeperError> {
        let now = self.clock.now();
        for &mac in macs {
            match self.store_call(move |s| s.allowed_until(mac, now)).await? {
                Some(until) => {
                    self.firewall.allow(mac, until.duration_since(now)).await?;
                    lock(&self.expiries).insert(mac, until);
                }
                None => {
                    self.firewall.deny(mac).await?;
                    lock(&self.expiries).remove(mac);
                    self.forget_device(mac).await;
                    tracing::info!(%mac, "device closed");
                }
            }
        }
        Ok(())
    }

    /// Ends the connections of every address `mac` accepted from, so nothing it had open keeps
    /// flowing (e.g. through a flowtable in the school's own rules). Best effort: the element
    /// is already gone, and our forward chain refuses its packets either way.
    async fn forget_device(&self, mac: MacAddr) {
        let addresses = match self.store_call(move |s| s.addresses_of(mac)).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(%mac, error = %e, "cannot list the device's addresses");
                return;
            }
        };
        let ips: Vec<IpAddr> = addresses.iter().filter_map(|a| a.parse().ok()).collect();
        if let Err(e) = self.firewall.forget_connections(&ips, Became::Closed).await {
            tracing::warn!(%mac, error = %e, "could not forget the device's connections");
        }
    }

    /// The check every second: a full check (table and set, with `nft`) if the firewall
    /// reports an outside change to the table, if the last such check failed, or once a
    /// minute; the set alone (over netlink) if only its elements were changed from outside;
    /// otherwise only the devices whose access ran out, from memory and the store, without
    /// listing the kernel at all.
    async fn tick(&self) -> Result<(), GatekeeperError> {
        let outside = self.firewall.outside_changes();
        let seen = std::mem::replace(&mut *lock(&self.outside_seen), outside);
        let table_changed = seen.table != outside.table;
        let retry = self.dirty.swap(false, Ordering::Relaxed);
        let due = !self.background.load(Ordering::Relaxed) && lock(&self.last_full).elapsed() >= FULL_CHECK_INTERVAL;
        if table_changed || retry || due {
            *lock(&self.last_full) = Instant::now();
            let why = if table_changed {
                "a change from outside was reported"
            } else if retry {
                "the last check failed"
            } else {
                "routine"
            };
            tracing::debug!(why, "looking at the kernel's table and set");
            let result = self.watch().await;
            // Retried each second after an outside change; a routine check waits its minute.
            self.dirty
                .store(result.is_err() && (table_changed || retry), Ordering::Relaxed);
            return result;
        }
        if seen.elements != outside.elements {
            tracing::debug!(
                why = "a change from outside was reported",
                "looking at the kernel's set"
            );
            let result = self.check_set().await;
            if result.is_err() {
                // Looked at again next second.
                *lock(&self.outside_seen) = seen;
            }
            return result;
        }
        let now = self.clock.now();
        self.expire_due(now).await?;
        let elements = lock(&self.expiries).len();
        update(&self.status, |s| {
            s.elements = elements;
            s.last_check = Some(now);
            s.last_error = None;
            s.checks += 1;
        });
        Ok(())
    }

    /// Logs each device whose access ran out (the kernel's timeout has closed it already),
    /// one line each; a device whose access was extended meanwhile is kept with its new end.
    async fn expire_due(&self, now: Timestamp) -> Result<(), GatekeeperError> {
        let due = lock(&self.expiries).take_due(now);
        let mut closed = Vec::new();
        for mac in due {
            match self.store_call(move |s| s.allowed_until(mac, now)).await {
                Ok(Some(until)) => {
                    lock(&self.expiries).insert(mac, until);
                    // One consent ran out and another holds it: its session changes holder.
                    closed.push(mac);
                }
                Ok(None) => {
                    // The kernel's timeout closes it within the second; this closes it now.
                    self.firewall.deny(mac).await?;
                    tracing::info!(%mac, "access expired (the course is over); device closed");
                    closed.push(mac);
                }
                Err(e) => {
                    // Looked at again on the next tick.
                    lock(&self.expiries).insert(mac, now);
                    return Err(e);
                }
            }
        }
        self.account_closed(closed, now).await;
        Ok(())
    }

    /// Accounting's Stops for devices whose access ran out, or whose consent ran out while
    /// another still holds them (nothing when it is off). A failure is only logged: the
    /// accounting sweep finds them again.
    async fn account_closed(&self, macs: Vec<MacAddr>, now: Timestamp) {
        if macs.is_empty() || self.store.accounting().is_none() {
            return;
        }
        if let Err(e) = self.store_call(move |s| s.account_closed(&macs, now)).await {
            tracing::error!(error = %e, "cannot record accounting Stops for expired devices; the accounting sweep retries");
        }
    }

    /// The full check: table present and unchanged, set equal to the store.
    async fn watch(&self) -> Result<(), GatekeeperError> {
        let listed = self.firewall.fingerprint().await?;
        let expected = self
            .installed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if listed.is_none() || listed != expected {
            // Shown as missing until the restore below succeeds (it sets it back).
            update(&self.status, |s| s.table_present = listed.is_some());
            let what = if listed.is_none() { "deleted" } else { "changed" };
            tracing::warn!(
                table = TABLE,
                "our nftables table was {what} from outside; restoring it"
            );
            let n = self.reconcile_all().await?;
            tracing::info!(devices = n, "table restored");
            return Ok(());
        }
        self.check_set().await
    }

    /// The set equal to the store: strangers removed, missing devices put back.
    async fn check_set(&self) -> Result<(), GatekeeperError> {
        let snap = snapshot(self.firewall.clone(), self.store.clone(), self.clock.now()).await?;
        self.settle(snap, true).await
    }

    /// Puts right what `snap` shows. `fresh`: taken by the writer itself, so nothing changed
    /// since. Otherwise (the minute's check, listed in the background) each difference is only a
    /// lead: the device is looked up in the store again, now, and brought in line with that.
    async fn settle(&self, snap: Snapshot, fresh: bool) -> Result<(), GatekeeperError> {
        let Snapshot { now, desired, present } = snap;
        if !fresh {
            return self.settle_leads(&desired, &present).await;
        }
        update(&self.status, |s| {
            s.table_present = true;
            s.elements = present.len();
            s.last_check = Some(now);
            s.last_error = None;
            s.checks += 1;
            s.full_checks += 1;
        });
        let wanted: BTreeSet<MacAddr> = desired.iter().map(|(m, _)| *m).collect();
        // Devices that were let through and no longer are, without anyone closing them (revoke
        // and course end go through `sync`, which logs them): their course is over. One line
        // each, for the journal.
        let ended = lock(&self.expiries).replace_all(&desired);
        for mac in &ended {
            tracing::info!(%mac, "access expired (the course is over); device closed");
        }
        self.account_closed(ended, now).await;
        for mac in present.difference(&wanted) {
            tracing::warn!(%mac, "device in the allowed set without an open consent; removing it");
            self.firewall.deny(*mac).await?;
        }
        for (mac, until) in desired.iter().filter(|(m, _)| !present.contains(m)) {
            // Expiry races (the kernel timed it out a moment before the store) end here too,
            // harmlessly: re-added with at most a second left, then dropped on the next check.
            let left = until.duration_since(now);
            if left >= SignedDuration::from_secs(2) {
                tracing::warn!(mac = %mac, "accepted device missing from the allowed set; restoring it");
                self.firewall.allow(*mac, left).await?;
            }
        }
        Ok(())
    }

    /// `settle` for a snapshot taken beside the writer: every device the snapshot shows out of
    /// line is looked up in the store now and put right by that (a device accepted or revoked
    /// after the listing is then left as it is).
    async fn settle_leads(
        &self,
        desired: &[(MacAddr, Timestamp)],
        present: &BTreeSet<MacAddr>,
    ) -> Result<(), GatekeeperError> {
        let wanted: BTreeSet<MacAddr> = desired.iter().map(|(m, _)| *m).collect();
        let strangers = present.difference(&wanted).copied();
        let missing = desired.iter().map(|(m, _)| *m).filter(|m| !present.contains(m));
        let leads: Vec<MacAddr> = strangers.chain(missing).collect();
        let now = self.clock.now();
        for mac in leads {
            let in_kernel = present.contains(&mac);
            match self.store_call(move |s| s.allowed_until(mac, now)).await? {
                None if in_kernel => {
                    tracing::warn!(%mac, "device in the allowed set without an open consent; removing it");
                    self.firewall.deny(mac).await?;
                    lock(&self.expiries).remove(mac);
                }
                Some(until) if !in_kernel && until.duration_since(now) >= SignedDuration::from_secs(2) => {
                    tracing::warn!(%mac, "accepted device missing from the allowed set; restoring it");
                    self.firewall.allow(mac, until.duration_since(now)).await?;
                    lock(&self.expiries).insert(mac, until);
                }
                _ => {}
            }
        }
        let elements = present.len();
        update(&self.status, |s| {
            s.elements = elements;
            s.last_check = Some(now);
            s.last_error = None;
            s.checks += 1;
            s.full_checks += 1;
        });
        Ok(())
    }
}

/// For unit tests: a gatekeeper over the fake firewall (for `guest0`, portal port 8080), its
/// table built from `store` and its task running until the returned sender is dropped.
#[cfg(test)]
pub(crate) async fn fake(
    store: &Store,
    clock: Arc<dyn Clock>,
) -> (crate::firewall::fake::FakeFirewall, FirewallHandle, watch::Sender<bool>) {
    let fake = crate::firewall::fake::FakeFirewall::default();
    let writer = Writer::new(fake.clone(), store.clone(), clock, TEST_SPEC.clone());
    #[allow(clippy::unwrap_used)]
    writer.reconcile_all().await.unwrap();
    let (stop, rx) = watch::channel(false);
    let (handle, _task) = writer.spawn(rx);
    (fake, handle, stop)
}

/// The table the unit tests' gatekeepers keep.
#[cfg(test)]
pub(crate) static TEST_SPEC: std::sync::LazyLock<TableSpec> = std::sync::LazyLock::new(|| TableSpec {
    interface: "guest0".into(),
    portal_port: 8080,
    https_port: None,
    garden_secs: None,
});

#[cfg(test)]
mod tests;
