//! The only code that talks to netfilter. Owns exactly one table, `inet aupgate`, and nothing else
//! on the system. All changes go through one writer task (`FirewallHandle` → `run`), which also
//! notices a deleted or altered table and puts it back, and keeps the set equal to the store.

pub mod boot;
mod nft;
mod ruleset;

#[cfg(test)]
pub(crate) mod fake;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;
use tokio::sync::{mpsc, oneshot, watch};

pub use nft::NftFirewall;
pub use ruleset::{Ruleset, SET, TABLE};

use crate::clients::MacAddr;
use crate::clock::Clock;
use crate::store::{Store, StoreError};

/// How often the writer checks that the table is still there and the set matches the store.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// What can go wrong talking to netfilter.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The `nft` program is not installed.
    #[error("the nft program was not found (fix: apt-get install nftables)")]
    NftMissing,
    /// The `conntrack` program is not installed.
    #[error("the conntrack program was not found (fix: apt-get install conntrack)")]
    ConntrackMissing,
    /// The kernel refused: not root / no CAP_NET_ADMIN.
    #[error("{0}: operation not permitted (fix: run aupgate as root or with CAP_NET_ADMIN)")]
    NotPermitted(&'static str),
    /// A command failed; `stderr` is the tool's own message.
    #[error("{what} failed: {stderr}")]
    Failed {
        /// What we were doing.
        what: &'static str,
        /// The tool's error text.
        stderr: String,
    },
    /// A command did not finish in time.
    #[error("{0} did not finish within 10 s")]
    TimedOut(&'static str),
    /// The tool's output could not be understood.
    #[error("cannot parse the output of {what}: {detail}")]
    Unparsable {
        /// What we were doing.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The store could not say who is allowed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The writer task has stopped (the daemon is shutting down).
    #[error("the firewall writer has stopped")]
    Stopped,
    /// Spawning or talking to a helper program failed.
    #[error("running {what}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// The netfilter operations aupgate needs; `NftFirewall` is the real one.
pub trait Firewall: Send + Sync + 'static {
    /// Replaces our table, atomically, with `ruleset`.
    fn replace(&self, ruleset: &Ruleset) -> impl Future<Output = Result<(), FirewallError>> + Send;
    /// Our table's chains and set definitions as the kernel lists them (set elements left out),
    /// or `None` if the table does not exist. Compared with the listing taken right after we
    /// installed it, this shows any change made from outside.
    fn fingerprint(&self) -> impl Future<Output = Result<Option<String>, FirewallError>> + Send;
    /// The MACs in the `allowed` set now.
    fn elements(&self) -> impl Future<Output = Result<BTreeSet<MacAddr>, FirewallError>> + Send;
    /// The elements of the `allowed` set that time out, with the time each has left. Elements
    /// without a timeout are left out: aupgate never adds one, so they are not ours.
    fn timeouts(&self) -> impl Future<Output = Result<Vec<(MacAddr, SignedDuration)>, FirewallError>> + Send;
    /// Puts `mac` in the set (or refreshes it) with `left` until it times out.
    fn allow(&self, mac: MacAddr, left: SignedDuration) -> impl Future<Output = Result<(), FirewallError>> + Send;
    /// Removes `mac` from the set; absent is not an error.
    fn deny(&self, mac: MacAddr) -> impl Future<Output = Result<(), FirewallError>> + Send;
    /// Removes the conntrack entries of connections `ip` started, so its next connection is
    /// judged by the current rules (not still redirected to the portal).
    fn forget_connections(&self, ip: IpAddr) -> impl Future<Output = Result<(), FirewallError>> + Send;
}

/// What the table is built from, apart from who is allowed.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// The guest interface.
    pub interface: String,
    /// The portal port.
    pub portal_port: u16,
    /// The portal's HTTPS port, if HTTPS is on.
    pub https_port: Option<u16>,
}

impl TableSpec {
    /// The table `config` asks for.
    pub fn for_config(config: &crate::config::Config) -> Self {
        Self {
            interface: config.guest.interface.clone(),
            portal_port: config.portal.port,
            https_port: config.portal.tls.as_ref().map(|t| t.port),
        }
    }

    /// The whole table, letting exactly `allowed` through.
    pub fn ruleset(&self, allowed: Vec<(MacAddr, SignedDuration)>) -> Ruleset {
        Ruleset {
            interface: self.interface.clone(),
            portal_port: self.portal_port,
            https_port: self.https_port,
            allowed,
        }
    }
}

/// The daemon's first act, before it reads anything that could be broken (policy, templates,
/// store): our table goes into the kernel. After a boot it is absent, and goes in closed (an
/// empty `allowed`). After a restart or crash it is rebuilt in one transaction with exactly the
/// elements the kernel still holds and the time each has left, so accepted devices see no gap
/// (invariant 3) while chains changed from outside are put right. Who should really be allowed
/// is decided later, from the store, by `Writer::reconcile_all`; if the store cannot be opened,
/// nothing more is ever opened. Returns how many elements were kept.
///
/// # Errors
/// If nft is missing or the kernel refuses the table.
pub async fn close_at_start<F: Firewall>(firewall: &F, spec: &TableSpec) -> Result<usize, FirewallError> {
    let kept = match firewall.fingerprint().await? {
        None => Vec::new(),
        Some(_) => firewall.timeouts().await.unwrap_or_else(|e| {
            // Closed is always safe: accepted devices are let in again from the store.
            tracing::warn!(error = %e, "cannot list the devices let through; installing the table closed");
            Vec::new()
        }),
    };
    let n = kept.len();
    firewall.replace(&spec.ruleset(kept)).await?;
    Ok(n)
}

enum Command {
    Open {
        mac: MacAddr,
        ips: Vec<IpAddr>,
        consent: i64,
        reply: oneshot::Sender<Result<(), FirewallError>>,
    },
    Sync {
        macs: Vec<MacAddr>,
        reply: oneshot::Sender<Result<(), FirewallError>>,
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
    pub async fn open(&self, mac: MacAddr, ips: Vec<IpAddr>, consent: i64) -> Result<(), FirewallError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Open {
                mac,
                ips,
                consent,
                reply,
            })
            .await
            .map_err(|_| FirewallError::Stopped)?;
        rx.await.map_err(|_| FirewallError::Stopped)?
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
    pub async fn sync(&self, macs: Vec<MacAddr>) -> Result<(), FirewallError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Sync { macs, reply })
            .await
            .map_err(|_| FirewallError::Stopped)?;
        rx.await.map_err(|_| FirewallError::Stopped)?
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
    pub async fn reconcile_all(&self) -> Result<usize, FirewallError> {
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
    ) -> Result<T, FirewallError> {
        Ok(self.store.run(f).await?)
    }

    async fn open(&self, mac: MacAddr, ips: &[IpAddr], consent: i64) -> Result<(), FirewallError> {
        let result = self.try_open(mac, ips).await;
        if let Err(e) = &result {
            // Withdraw first, then close: done here, inside the one writer, so the periodic
            // check cannot see the consent still open and re-add the device in between.
            let now = self.clock.now();
            if let Err(w) = self
                .store_call(move |s| s.withdraw_consent(consent, now, "firewall error"))
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

    async fn try_open(&self, mac: MacAddr, ips: &[IpAddr]) -> Result<(), FirewallError> {
        let now = self.clock.now();
        let Some(until) = self.store_call(move |s| s.allowed_until(mac, now)).await? else {
            return Err(FirewallError::Store(StoreError::NotFound(format!(
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

    async fn sync(&self, macs: &[MacAddr]) -> Result<(), FirewallError> {
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
    async fn watch(&self) -> Result<(), FirewallError> {
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

#[cfg(test)]
mod tests;
