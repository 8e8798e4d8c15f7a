//! `aupgate run`: open the store, install and reconcile the firewall, bind the listeners, serve,
//! and stop cleanly. READY is sent only once the table is in the kernel and the listeners are
//! bound. Stopping leaves the table in place: guests stay closed, accepted devices stay open.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use crate::admin::control::{self, AdminState};
use crate::assets::{self, Policy};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::firewall::{NftFirewall, TableSpec, Writer};
use crate::neighbours::KernelNeighbours;
use crate::portal::{self, PortalState};
use crate::store::{Store, StoreError};
use crate::web::{Pages, SchoolView};

/// How long in-flight requests get to finish on shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Runs the daemon until SIGTERM or SIGINT.
///
/// # Errors
/// Anything that stops start-up, with context naming what to fix.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);

    // First, before anything that can fail (policy, templates, store, certificates, ports): our
    // table in the kernel. After a boot it goes in closed; a daemon that stops below leaves it
    // so, and guests stay closed however start-up ends (DESIGN, invariant 1).
    let spec = TableSpec::for_config(&config);
    let kept = crate::firewall::close_at_start(&NftFirewall::default(), &spec)
        .await
        .context("installing the nftables table inet aupgate")?;
    tracing::info!(
        devices_kept = kept,
        "table inet aupgate in place: guests stay closed until the store says who accepted"
    );

    if let Some(dir) = config.store_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "creating the store's folder {} (fix: check [store] path)",
                dir.display()
            )
        })?;
    }
    let store = Store::open(&config.store_path).map_err(|e| {
        let shown = config.store_path.display();
        match e {
            // The error names its own fix.
            StoreError::Damaged | StoreError::DiskFull | StoreError::ReadOnly => {
                anyhow::Error::new(e).context(format!("opening the store {shown}"))
            }
            e => anyhow::Error::new(e).context(format!(
                "opening the store {shown} (fix: check [store] path and its folder's permissions)"
            )),
        }
    })?;
    let policy = Arc::new(Policy::load(config.portal.policy.as_deref())?);
    let env = assets::templates(config.portal.assets.as_deref())?;
    store
        .record_policy(&policy.hash, &policy.markdown, clock.now())
        .context("recording the policy text in the store")?;
    // A changed policy means everyone accepts it: by default the next time they join (open
    // sessions run until their course ends); with [policy] reaccept = "immediately", their
    // consents end here, before the table is built from the store, so the reconcile closes them.
    if config.reaccept == crate::config::Reaccept::Immediately {
        let outdated = store
            .end_consents_to_other_policies(&policy.hash, clock.now())
            .context("ending consents given to an earlier policy")?;
        if !outdated.is_empty() {
            tracing::info!(devices = outdated.len(), policy = %&policy.hash[..12], "policy changed: devices closed until they accept the new policy");
        }
    }

    // Now the table from the store: exactly the devices that accepted.
    let writer = Writer::new(NftFirewall::default(), store.clone(), clock.clone(), spec.clone());
    let devices = writer
        .reconcile_all()
        .await
        .context("installing the nftables table inet aupgate")?;

    // TLS first: a bad certificate is a configuration error, found before anything is bound.
    let tls = match &config.portal.tls {
        Some(tls) => Some((
            tls.port,
            tokio_rustls::TlsAcceptor::from(portal::tls::server_config(tls)?),
        )),
        None => None,
    };
    let mut portal_listeners: Vec<_> = bind_portal(config.portal.port)
        .await?
        .into_iter()
        .map(|l| (l, None))
        .collect();
    if let Some((port, acceptor)) = &tls {
        for l in bind_portal(*port).await? {
            portal_listeners.push((l, Some(acceptor.clone())));
        }
    }
    let control_listener = bind_control(&config.control_socket)?;
    // The staff admin: bound to its staff-side address only (config refuses the guest ones).
    let admin_listener = match &config.admin {
        None => None,
        Some(admin) => {
            let (cert, key) = crate::admin::tls::certificate(&config, admin.listen.ip())?;
            let acceptor = tokio_rustls::TlsAcceptor::from(portal::tls::server_config_from(&cert, &key, "admin")?);
            let listener = TcpListener::bind(admin.listen).await.with_context(|| {
                format!(
                    "binding the admin to {} (fix: [admin] listen must be an address of this router, with a free port)",
                    admin.listen
                )
            })?;
            Some((listener, acceptor, admin.session_idle))
        }
    };

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (firewall, firewall_task) = writer.spawn(shutdown_rx.clone());
    let pages = Pages::new(
        env,
        SchoolView {
            name: config.school.name.clone(),
            dsl_contact: config.school.dsl_contact.clone(),
        },
    );
    let admin_pages = pages.clone();
    let live_policy = crate::web::Live::new((*policy).clone());
    let reloadable = Reloadable {
        config: config.clone(),
        policy: live_policy.clone(),
        pages: admin_pages.clone(),
    };
    let metrics = Arc::new(crate::metrics::Metrics::new(config.store_path.clone()));
    let neighbours: Arc<dyn crate::neighbours::Neighbours> =
        Arc::new(KernelNeighbours::new(config.guest.interface.clone()));
    let portal_state = PortalState {
        metrics: metrics.clone(),
        config: config.clone(),
        pages,
        policy: live_policy.clone(),
        access: crate::access::Admissions::new(
            store.clone(),
            firewall.clone(),
            neighbours.clone(),
            clock.clone(),
            live_policy.clone(),
        ),
    };
    let portal_app = portal::router(portal_state);
    // One gate for all the portal's listeners (v4, v6, HTTPS): a device's share and the total
    // are counted across them.
    let portal_gate = portal::Gate::portal(neighbours, metrics.clone());
    let portal_tasks: Vec<_> = portal_listeners
        .into_iter()
        .map(|(l, tls)| {
            tokio::spawn(portal::serve(
                l,
                portal_app.clone(),
                tls,
                portal_gate.clone(),
                shutdown_rx.clone(),
            ))
        })
        .collect();
    let admin = AdminState {
        store: store.clone(),
        firewall,
        clock: clock.clone(),
        retention: config.retention(),
    };
    let admin_task = admin_listener.map(|(listener, acceptor, idle)| {
        let gate = portal::Gate::admin(metrics.clone());
        let web = crate::admin::web::WebState {
            actions: admin.clone(),
            pages: admin_pages,
            config: config.clone(),
            idle,
            metrics,
        };
        tokio::spawn(portal::serve(
            listener,
            crate::admin::web::router(web),
            Some(acceptor),
            gate,
            shutdown_rx.clone(),
        ))
    });
    let control_task = tokio::spawn(control::serve(control_listener, admin.clone(), shutdown_rx.clone()));

    // Retention, then the audit chain's head to the journal: at start, before "ready" (so both
    // are done once the daemon is up), and daily. The head's copy outside the database is what
    // shows the newest events were deleted.
    housekeeping(&admin).await;
    let daily_task = tokio::spawn(daily(admin.clone(), shutdown_rx.clone()));
    let watchdog_task = tokio::spawn(watchdog(admin.clone(), shutdown_rx.clone()));
    save_boot_ruleset(&config, &spec);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(
        portal = %config.portal_url(),
        interface = %config.guest.interface,
        devices_allowed = devices,
        policy = %&policy.hash[..12],
        "aupgate ready"
    );

    wait_for_signal(&reloadable, &admin).await?;
    tracing::info!("stopping; the firewall table stays in place");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let _ = shutdown_tx.send(true);
    let all = async {
        for task in portal_tasks.into_iter().chain(admin_task) {
            let _ = task.await;
        }
        let _ = tokio::join!(control_task, firewall_task, daily_task, watchdog_task);
    };
    if tokio::time::timeout(DRAIN, all).await.is_err() {
        tracing::warn!("requests still running after {} s; stopping anyway", DRAIN.as_secs());
    }
    let _ = std::fs::remove_file(&config.control_socket);
    Ok(())
}

/// Keeps the closed table for the next boot beside the store: this start worked, so its table
/// is known to be good. Not fatal: guests are closed now, and `aupgate check` reports the file
/// missing or stale.
fn save_boot_ruleset(config: &Config, spec: &TableSpec) {
    let path = crate::firewall::boot::path_for(&config.store_path);
    match crate::firewall::boot::save(&path, spec) {
        Ok(()) => tracing::debug!(path = %path.display(), "saved the closed table for the next boot"),
        Err(e) => tracing::error!(
            path = %path.display(),
            error = %e,
            "cannot save the closed table for the next boot, so after a reboot guests are unrestricted until the daemon starts (fix: make the store's folder writable by the aupgate service)"
        ),
    }
}

/// The portal's listeners: IPv4 on all addresses, and IPv6 (v6-only, so this does not depend
/// on the system's `bindv6only`) where the kernel has IPv6. The firewall refuses the port on
/// every interface but the guest one and loopback.
async fn bind_portal(port: u16) -> anyhow::Result<Vec<TcpListener>> {
    let fix = || format!("binding the portal to port {port} (fix: stop whatever uses it, or change [portal] port)");
    let v4 = TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
        .await
        .with_context(fix)?;
    let mut listeners = vec![v4];
    match bind_v6_only(port) {
        Ok(v6) => listeners.push(v6),
        // EAFNOSUPPORT / EADDRNOTAVAIL: this kernel or namespace has no IPv6.
        Err(e) if matches!(e.raw_os_error(), Some(97 | 99)) => {
            tracing::info!("IPv6 is not available here; the portal listens on IPv4 only");
        }
        Err(e) => return Err(e).with_context(fix),
    }
    Ok(listeners)
}

fn bind_v6_only(port: u16) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_only_v6(true)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// The gid of the `aupgate` group in `/etc/group` text, if there is one.
fn group_id(etc_group: &str, name: &str) -> Option<u32> {
    etc_group.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

/// Binds the control socket: root only (socket 0600 in a 0700 folder), or root and the
/// `aupgate` group when that group exists (0660 in 0750), so staff in it can use the CLI.
fn bind_control(path: &Path) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    // Only a group we can give the socket to: as root, or running as that group (the unit).
    let gid = std::fs::read_to_string("/etc/group")
        .ok()
        .and_then(|g| group_id(&g, "aupgate"))
        .filter(|gid| {
            let ids = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let effective = |key: &str| {
                ids.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|rest| rest.split_whitespace().nth(1))
                    .and_then(|n| n.parse::<u32>().ok())
            };
            effective("Uid:") == Some(0) || effective("Gid:") == Some(*gid)
        });
    let (dir_mode, sock_mode) = if gid.is_some() { (0o750, 0o660) } else { (0o700, 0o600) };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating {} (fix: check [control] socket)", dir.display()))?;
        // Restricted before the socket exists, so it is never reachable by others even briefly.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dir_mode))
            .with_context(|| format!("restricting {}", dir.display()))?;
        if gid.is_some() {
            std::os::unix::fs::chown(dir, None, gid)
                .with_context(|| format!("giving {} to the aupgate group", dir.display()))?;
        }
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        anyhow::bail!(
            "another aupgate daemon is already answering on {} (fix: stop it first)",
            path.display()
        );
    }
    match std::fs::symlink_metadata(path) {
        // A socket left by a daemon that was killed: nobody answers on it, so it is safe to remove.
        Ok(meta) if meta.file_type().is_socket() => {
            let _ = std::fs::remove_file(path);
        }
        Ok(_) => anyhow::bail!(
            "{} exists and is not a socket (fix: point [control] socket at another path)",
            path.display()
        ),
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).with_context(|| {
        format!(
            "binding the control socket {} (fix: check [control] socket)",
            path.display()
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(sock_mode))
        .with_context(|| format!("restricting {}", path.display()))?;
    // Run as the aupgate group (the systemd unit), the socket is its already; chown is then not
    // needed, and the unit's system-call filter would refuse it.
    let socket_gid = std::fs::metadata(path)
        .map(|m| std::os::unix::fs::MetadataExt::gid(&m))
        .ok();
    if gid.is_some() && gid != socket_gid {
        std::os::unix::fs::chown(path, None, gid)
            .with_context(|| format!("giving {} to the aupgate group", path.display()))?;
    }
    Ok(listener)
}

/// Waits for SIGTERM or SIGINT; on SIGHUP, reloads the policy and templates and goes on.
async fn wait_for_signal(reloadable: &Reloadable, admin: &AdminState) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
                reloadable.reload(admin).await;
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            }
        }
    }
}

/// What SIGHUP re-reads: the policy text and the page templates. (Everything else in the config
/// needs a restart: listeners, interface and store are bound at start.)
struct Reloadable {
    config: Arc<Config>,
    policy: crate::web::Live<Policy>,
    pages: Pages,
}

impl Reloadable {
    /// Loads both before swapping either, so a broken file leaves the old ones in place. A new
    /// policy text is recorded before guests see it, and with `[policy] reaccept = "immediately"`
    /// devices that accepted another version are closed, as at start.
    async fn reload(&self, admin: &AdminState) {
        let loaded = Policy::load(self.config.portal.policy.as_deref())
            .and_then(|p| Ok((p, assets::templates(self.config.portal.assets.as_deref())?)));
        let (policy, env) = match loaded {
            Ok(both) => both,
            Err(e) => {
                tracing::error!(error = %e, "reload refused: still showing the previous policy and pages");
                return;
            }
        };
        let now = admin.clock.now();
        let (hash, text) = (policy.hash.clone(), policy.markdown.clone());
        if let Err(e) = admin.store.run(move |s| s.record_policy(&hash, &text, now)).await {
            tracing::error!(error = %e, "reload refused: cannot record the new policy text");
            return;
        }
        let changed = self.policy.get().hash != policy.hash;
        let hash = policy.hash.clone();
        self.pages.replace(env);
        self.policy.set(policy);
        // Not only when the text changed: if closing failed at an earlier reload, this retries
        // it (it ends nothing when every open consent names the current text).
        if self.config.reaccept == crate::config::Reaccept::Immediately {
            let current = hash.clone();
            match admin
                .store
                .run(move |s| s.end_consents_to_other_policies(&current, now))
                .await
            {
                Ok(macs) if !macs.is_empty() => {
                    tracing::info!(
                        devices = macs.len(),
                        "policy changed: devices closed until they accept the new policy"
                    );
                    if let Err(e) = admin.firewall.sync(macs).await {
                        tracing::error!(error = %e, "closing devices after the policy change failed; the daemon retries every second");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot end consents given to the previous policy"),
            }
        }
        tracing::info!(policy = %&hash[..12], changed, "reloaded the policy and page templates");
    }
}

/// Pings systemd's watchdog (when the unit sets `WatchdogSec`) only while the daemon works: the
/// firewall writer checked the table within the last 10 s and the store answers.
async fn watchdog(admin: AdminState, mut stop: watch::Receiver<bool>) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut every = tokio::time::interval(period / 3);
    loop {
        tokio::select! {
            _ = every.tick() => {
                let now = admin.clock.now();
                let firewall_ok = admin
                    .firewall
                    .status()
                    .last_check
                    .is_some_and(|t| now.duration_since(t) < jiff::SignedDuration::from_secs(10));
                let store_ok = tokio::time::timeout(period / 3, admin.store.run(|s| s.chain_head()))
                    .await
                    .is_ok_and(|r| r.is_ok());
                if firewall_ok && store_ok {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                } else {
                    tracing::warn!(firewall_ok, store_ok, "not pinging the watchdog: the daemon is stuck");
                }
            }
            _ = stop.changed() => break,
        }
    }
}

/// Purges personal data older than the retention period, then logs the audit chain's head.
async fn housekeeping(admin: &AdminState) {
    if let Err(e) = crate::admin::actions::purge(admin).await {
        tracing::error!(error = %e, "retention purge failed; it runs again in a day");
    }
    match admin.store.run(|s| s.chain_head()).await {
        Ok(head) => tracing::info!(head = %head, "audit chain head"),
        Err(e) => tracing::error!(error = %e, "cannot read the audit chain head"),
    }
}

/// `housekeeping` every day (the start-up run is done before "ready").
async fn daily(admin: AdminState, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_secs(24 * 3600));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; start-up has done it.
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => housekeeping(&admin).await,
            _ = stop.changed() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn group_ids_come_from_etc_group() {
        let text = "root:x:0:\nstaff:x:50:\naupgate:x:998:office,dsl\naupgate2:x:997:\n";
        assert_eq!(super::group_id(text, "aupgate"), Some(998));
        assert_eq!(super::group_id(text, "nobody"), None);
        assert_eq!(super::group_id("aupgate:x:notanumber:", "aupgate"), None);
    }
}
