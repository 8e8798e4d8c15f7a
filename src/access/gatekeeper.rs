//! The one writer that keeps the kernel equal to the store: every change to who may pass goes
//! through it, store first, then kernel (ARCHITECTURE.md, invariant 2). Once a second it checks that our
//! table is still there and unchanged and that the set matches the store, and puts right what
//! it finds.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;
use tokio::sync::{mpsc, oneshot, watch};

use crate::clients::MacAddr;
use crate::clock::Clock;
use crate::firewall::{Firewall, FirewallError, TABLE, TableSpec};
use crate::store::{Store, StoreError};

/// How often the writer checks that the table is still there and the set matches the store.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

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
    pub last_check: Option<jiff::Timestamp>,
    /// When the table was last rebuilt (start-up, or a restore after outside changes).
    pub last_rebuild: Option<jiff::Timestamp>,
    /// The last check's error, if it failed.
    pub last_error: Option<String>,
    /// Checks since start (for `/metrics`).
    pub checks: u64,
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
    clock: Arc<dyn Clock>,
    spec: TableSpec,
    /// The table's listing right after our last full install.
    installed: std::sync::Mutex<Option<String>>,
    status: SharedStatus,
    /// The devices the last check found let through, to log the ones whose access expires.
    seen: std::sync::Mutex<BTreeSet<MacAddr>>,
}

impl<F: Firewall> Writer<F> {
    /// A writer for `firewall`, whose source of truth is `store`.
    pub fn new(firewall: F, store: Store, clock: Arc<dyn Clock>, spec: TableSpec) -> Self {
        Self {
            firewall: Arc::new(firewall),
            store,
            clock,
            spec,
            installed: std::sync::Mutex::new(None),
            status: SharedStatus::default(),
            seen: std::sync::Mutex::new(BTreeSet::new()),
        }
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
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    cmd = rx.recv() => match cmd {
                        Some(Command::Open { mac, ips, consent, reply }) => { let _ = reply.send(self.open(mac, &ips, consent).await); }
                        Some(Command::Sync { macs, reply }) => { let _ = reply.send(self.sync(&macs).await); }
                        None => break,
                    },
                    _ = tick.tick() => {
                        if let Err(e) = self.watch().await {
                            tracing::error!(error = %e, "firewall check failed; retrying in 1 s");
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
        self.firewall.allow(mac, until.duration_since(now)).await?;
        for &ip in ips {
            self.firewall.forget_connections(ip).await?;
        }
        tracing::info!(%mac, until = %until, "device allowed");
        Ok(())
    }

    async fn sync(&self, macs: &[MacAddr]) -> Result<(), GatekeeperError> {
        let now = self.clock.now();
        for &mac in macs {
            match self.store_call(move |s| s.allowed_until(mac, now)).await? {
                Some(until) => self.firewall.allow(mac, until.duration_since(now)).await?,
                None => {
                    self.firewall.deny(mac).await?;
                    self.seen
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .remove(&mac);
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
        for ip in addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
            if let Err(e) = self.firewall.forget_connections(ip).await {
                tracing::warn!(%mac, error = %e, "could not forget the device's connections");
            }
        }
    }

    /// The periodic check: table present, set equal to the store.
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
        let now = self.clock.now();
        let desired = self.store_call(move |s| s.allowed(now)).await?;
        let present = self.firewall.elements().await?;
        update(&self.status, |s| {
            s.table_present = true;
            s.elements = present.len();
            s.last_check = Some(now);
            s.last_error = None;
            s.checks += 1;
        });
        let wanted: BTreeSet<MacAddr> = desired.iter().map(|(m, _)| *m).collect();
        // Devices that were let through at the last check and no longer are, without anyone
        // closing them (revoke and course end go through `sync`, which logs them): their
        // course is over. One line each, for the journal.
        let ended: Vec<MacAddr> = {
            let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let ended = seen.difference(&wanted).copied().collect();
            seen.clone_from(&wanted);
            ended
        };
        for mac in ended {
            tracing::info!(%mac, "access expired (the course is over); device closed");
        }
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
});

#[cfg(test)]
mod tests;
