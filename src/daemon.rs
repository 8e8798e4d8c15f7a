//! `aupgate run`: `start` (our table first, then the store, then the table from the store),
//! `bind` the listeners, `serve` until told to stop. Each takes what it works with (`Deps`,
//! `Listeners`, a `Signal` channel), so the assembled daemon runs in tests on fakes, without
//! root. READY is sent only once the table is in the kernel and the listeners are bound.
//! Stopping leaves the table in place: guests stay closed, accepted devices stay open.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::access::gatekeeper::Writer;
use crate::admin::control::{self, AdminState};
use crate::assets::{self, Policy};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::firewall::{Firewall, NftFirewall, TableSpec};
use crate::neighbours::{KernelNeighbours, Neighbours};
use crate::portal::{self, PortalState};
use crate::store::{Store, StoreError};
use crate::web::{self, Pages, SchoolView};

/// How long in-flight requests get to finish on shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// What the daemon works with, given to it rather than built inside it: the kernel's firewall,
/// neighbour table and clock in production; the fakes in tests.
pub struct Deps<F> {
    /// The firewall mechanism (`NftFirewall`).
    pub firewall: F,
    /// IP → MAC on the guest network.
    pub neighbours: Arc<dyn Neighbours>,
    /// Time.
    pub clock: Arc<dyn Clock>,
}

/// The sockets the daemon serves on, bound by [`bind`] (tests bind loopback ports).
pub struct Listeners {
    /// The portal's, each with its TLS acceptor if it is the HTTPS port.
    pub portal: Vec<(TcpListener, Option<TlsAcceptor>)>,
    /// The staff admin's, with its TLS acceptor.
    pub admin: Option<(TcpListener, TlsAcceptor)>,
    /// The CLI's control socket.
    pub control: UnixListener,
}

/// What the daemon is told while it serves: signals in production, a channel in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Re-read the policy and the page templates (SIGHUP).
    Reload,
    /// Stop (SIGTERM, SIGINT).
    Stop,
}

/// The daemon once started: the table is in the kernel, built from the store.
pub struct Started<F> {
    /// The store.
    pub store: Store,
    policy: Arc<Policy>,
    env: minijinja::Environment<'static>,
    writer: Writer<F>,
    devices: usize,
    spec: TableSpec,
    neighbours: Arc<dyn Neighbours>,
    clock: Arc<dyn Clock>,
}

/// Runs the daemon until SIGTERM or SIGINT: `start`, `bind`, then `serve` with the signals.
///
/// # Errors
/// Anything that stops start-up, with context naming what to fix.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let neighbours = KernelNeighbours::new(config.guest.interface.clone());
    // Read now, so the first guest does not wait for a dump of the table.
    neighbours.follow();
    let deps = Deps {
        firewall: NftFirewall::default(),
        neighbours: Arc::new(neighbours),
        clock: Arc::new(SystemClock),
    };
    let started = start(&config, deps).await?;
    let listeners = bind(&config).await?;
    let signals = forward_signals()?;
    serve(config, started, listeners, signals).await
}

/// Start-up, in the order that keeps guests closed whatever fails: our table first, then the
/// store, the policy and the templates, then the table rebuilt from the store.
///
/// # Errors
/// Anything that stops start-up, with context naming what to fix.
pub async fn start<F: Firewall>(config: &Arc<Config>, deps: Deps<F>) -> anyhow::Result<Started<F>> {
    let Deps {
        firewall,
        neighbours,
        clock,
    } = deps;
    // First, before anything that can fail (policy, templates, store, certificates, ports): our
    // table in the kernel. After a boot it goes in closed; a daemon that stops below leaves it
    // so, and guests stay closed however start-up ends (invariant 1).
    let spec = TableSpec::for_config(config);
    let kept = crate::firewall::close_at_start(&firewall, &spec)
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
    // RADIUS accounting on before anything changes access, so every change writes its record.
    if let Some(radius) = &config.radius {
        store.set_accounting(radius.user_name);
    }
    let policy = Arc::new(Policy::load(config.portal.policy.as_deref())?);
    let env = assets::templates(config.portal.assets.as_deref())?;
    store
        .record_policy(&policy.hash, &policy.markdown, clock.now())
        .context("recording the policy text in the store")?;
    // A changed policy means everyone accepts it (`access::staff`'s rule); consents it ends end
    // here, before the table is built from the store, so the reconcile closes them.
    crate::access::staff::end_consents_to_old_policies(&store, &policy.hash, config.reaccept, clock.now())
        .context("ending consents given to an earlier policy")?;

    // Now the table from the store: exactly the devices that accepted.
    let writer = Writer::new(firewall, store.clone(), clock.clone(), spec.clone());
    // The minute's check reads through a connection of its own (WAL lets it read beside the
    // writer); without one it shares the store's, which is only slower with many guests.
    let writer = match Store::open_read_only(&config.store_path) {
        Ok(reader) => writer.with_reader(reader),
        Err(e) => {
            tracing::warn!(error = %e, "no second connection for the firewall's checks; sharing the store's");
            writer
        }
    };
    let devices = writer
        .reconcile_all()
        .await
        .context("installing the nftables table inet aupgate")?;
    Ok(Started {
        store,
        policy,
        env,
        writer,
        devices,
        spec,
        neighbours,
        clock,
    })
}

/// Binds every listener the config asks for. TLS is loaded first: a bad certificate is a
/// configuration error, found before anything is bound.
///
/// # Errors
/// A certificate that does not load, or an address or port that cannot be bound.
pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
    let tls = match &config.portal.tls {
        Some(tls) => Some((tls.port, TlsAcceptor::from(web::tls::server_config(tls)?))),
        None => None,
    };
    let mut portal: Vec<_> = bind_portal(config.portal.port)
        .await?
        .into_iter()
        .map(|l| (l, None))
        .collect();
    if let Some((port, acceptor)) = &tls {
        for l in bind_portal(*port).await? {
            portal.push((l, Some(acceptor.clone())));
        }
    }
    let control = bind_control(&config.control_socket)?;
    // The staff admin: bound to its staff-side address only (config refuses the guest ones).
    let admin = match &config.admin {
        None => None,
        Some(admin) => {
            let (cert, key) = crate::admin::tls::certificate(config, admin.listen.ip())?;
            let acceptor = TlsAcceptor::from(web::tls::server_config_from(&cert, &key, "admin")?);
            let listener = TcpListener::bind(admin.listen).await.with_context(|| {
                format!(
                    "binding the admin to {} (fix: [admin] listen must be an address of this router, with a free port)",
                    admin.listen
                )
            })?;
            Some((listener, acceptor))
        }
    };
    Ok(Listeners { portal, admin, control })
}

/// SIGTERM and SIGINT as `Stop`, SIGHUP as `Reload`.
fn forward_signals() -> anyhow::Result<mpsc::Receiver<Signal>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let signal = tokio::select! {
                _ = term.recv() => Signal::Stop,
                _ = int.recv() => Signal::Stop,
                _ = hup.recv() => Signal::Reload,
            };
            if tx.send(signal).await.is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// Serves until told to stop (or `signals` closes): the firewall writer, the portal, the admin,
/// the control socket, housekeeping and the watchdog; READY once all are up. Stopping leaves
/// the table in place.
///
/// # Errors
/// None today once started; the `Result` is for what start-up of a part may return later.
pub async fn serve<F: Firewall>(
    config: Arc<Config>,
    started: Started<F>,
    listeners: Listeners,
    mut signals: mpsc::Receiver<Signal>,
) -> anyhow::Result<()> {
    let Started {
        store,
        policy,
        env,
        writer,
        devices,
        spec,
        neighbours,
        clock,
    } = started;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (firewall, firewall_task) = writer.spawn(shutdown_rx.clone());
    let pages = Pages::new(env, SchoolView::of(&config));
    let admin_pages = pages.clone();
    let live_policy = web::Live::new((*policy).clone());
    let reloadable = Reloadable {
        config: config.clone(),
        policy: live_policy.clone(),
        pages: admin_pages.clone(),
    };
    let radius = config
        .radius
        .as_ref()
        .map(|r| crate::radius::Sender::new(r, store.clone(), neighbours.clone(), clock.clone()));
    let mut metrics = crate::metrics::Metrics::new(config.store_path.clone());
    if let Some(sender) = &radius {
        metrics.add_radius(&sender.status());
    }
    let metrics = Arc::new(metrics);
    let radius_task = radius.map(|sender| sender.spawn(shutdown_rx.clone()));
    let portal_state = PortalState {
        prepared: Arc::new(portal::Prepared::new(&config)),
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
    let portal_app = portal::app(portal_state);
    // One gate for all the portal's listeners (v4, v6, HTTPS): a device's share and the total
    // are counted across them.
    let portal_gate = web::Gate::portal(neighbours, metrics.clone());
    let portal_tasks: Vec<_> = listeners
        .portal
        .into_iter()
        .map(|(l, tls)| {
            tokio::spawn(web::serve(
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
    let idle = config.admin.as_ref().map(|a| a.session_idle).unwrap_or_default();
    let oidc = config
        .admin
        .as_ref()
        .and_then(|a| a.oidc.clone())
        .map(|s| Arc::new(crate::admin::oidc::Provider::new(s)));
    if let Some(provider) = oidc.clone() {
        // Fetched now, so the first sign-in does not wait and a problem is in the journal early.
        let now = clock.now();
        tokio::spawn(async move { provider.warm(now).await });
    }
    let admin_task = listeners.admin.map(|(listener, acceptor)| {
        let gate = web::Gate::admin(metrics.clone());
        let web = crate::admin::web::WebState {
            actions: admin.clone(),
            pages: admin_pages,
            config: config.clone(),
            idle,
            metrics,
            oidc: oidc.clone(),
        };
        tokio::spawn(web::serve(
            listener,
            crate::admin::web::router(web).into(),
            Some(acceptor),
            gate,
            shutdown_rx.clone(),
        ))
    });
    let control_task = tokio::spawn(control::serve(listeners.control, admin.clone(), shutdown_rx.clone()));

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

    while let Some(Signal::Reload) = signals.recv().await {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
        reloadable.reload(&admin).await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }
    tracing::info!("stopping; the firewall table stays in place");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let _ = shutdown_tx.send(true);
    let all = async {
        for task in portal_tasks.into_iter().chain(admin_task).chain(radius_task) {
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

/// What SIGHUP re-reads: the policy text and the page templates. (Everything else in the config
/// needs a restart: listeners, interface and store are bound at start.)
struct Reloadable {
    config: Arc<Config>,
    policy: web::Live<Policy>,
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
        crate::access::staff::apply_policy_change(admin, hash.clone(), self.config.reaccept).await;
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
    if let Err(e) = crate::access::staff::purge(admin).await {
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
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::clients::AccessCode;
    use crate::clock::ManualClock;
    use crate::firewall::fake::FakeFirewall;
    use crate::neighbours::StaticNeighbours;

    /// One HTTP/1.1 exchange over TCP; the whole answer as text.
    async fn http(addr: SocketAddr, request: String) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// Issue 11: the assembled daemon (start, then serve) on the fake firewall, a static
    /// neighbour table and a manual clock, with a loopback listener: no root, no kernel. A
    /// guest loads the page, accepts, and the fake firewall lets exactly its MAC through; the
    /// control socket answers; `Stop` ends it with the table left in place.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_assembled_daemon_serves_a_guest_without_root() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[school]\nname = \"Claremont\"\ntimezone = \"UTC\"\ndsl_contact = \"the office\"\n\
             [guest]\ninterface = \"guest0\"\naddress = \"192.0.2.1\"\n\
             [store]\npath = \"{d}/state/aupgate.db\"\n[control]\nsocket = \"{d}/run/control.sock\"\n",
            d = dir.path().display()
        );
        let config = Arc::new(Config::parse(&text, Path::new("t.toml")).unwrap());
        let clock = ManualClock::new("2026-11-23T10:00:00Z".parse().unwrap());
        let fake = FakeFirewall::default();
        let mac: crate::clients::MacAddr = "02:00:00:00:00:10".parse().unwrap();
        let deps = Deps {
            firewall: fake.clone(),
            neighbours: Arc::new(StaticNeighbours(vec![("127.0.0.1".parse().unwrap(), mac)])),
            clock: Arc::new(clock.clone()),
        };
        let started = start(&config, deps).await.unwrap();
        assert!(fake.0.lock().unwrap().table, "the table went in first");
        started
            .store
            .add_course(
                "Phonics",
                "2026-11-23T09:00:00Z".parse().unwrap(),
                "2026-11-23T16:00:00Z".parse().unwrap(),
                5,
                clock.now(),
                "test",
                || AccessCode::normalise("ABCDEFGH").unwrap(),
            )
            .unwrap();
        let portal = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = portal.local_addr().unwrap();
        let listeners = Listeners {
            portal: vec![(portal, None)],
            admin: None,
            control: bind_control(&config.control_socket).unwrap(),
        };
        let (signals, rx) = mpsc::channel(1);
        let daemon = tokio::spawn(serve(config.clone(), started, listeners, rx));

        let page = http(
            addr,
            "GET / HTTP/1.1\r\nHost: 192.0.2.1:8080\r\nConnection: close\r\n\r\n".into(),
        )
        .await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        let at = page.find("name=\"policy\" value=\"").unwrap() + "name=\"policy\" value=\"".len();
        let policy = page[at..].split('"').next().unwrap();
        let form = format!("code=ABCDEFGH&name=Ann&organisation=Org&agree=yes&policy={policy}");
        let answer = http(
            addr,
            format!(
                "POST /accept HTTP/1.1\r\nHost: 192.0.2.1:8080\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
                form.len()
            ),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("connected"), "{answer}");
        let set: Vec<_> = fake.0.lock().unwrap().set.keys().copied().collect();
        assert_eq!(set, vec![mac]);

        // Staff revoke it over the control socket, as the CLI does: closed again.
        let socket = config.control_socket.clone();
        let revoked =
            tokio::task::spawn_blocking(move || control::call(&socket, &control::Request::SessionRevoke { mac }))
                .await
                .unwrap();
        assert!(revoked.is_ok(), "{revoked:?}");
        assert!(fake.0.lock().unwrap().set.is_empty());

        signals.send(Signal::Stop).await.unwrap();
        daemon.await.unwrap().unwrap();
        assert!(fake.0.lock().unwrap().table, "stopping leaves the table in place");
        assert!(
            crate::firewall::boot::path_for(&config.store_path).exists(),
            "the boot file was saved"
        );
    }

    #[test]
    fn group_ids_come_from_etc_group() {
        let text = "root:x:0:\nstaff:x:50:\naupgate:x:998:office,dsl\naupgate2:x:997:\n";
        assert_eq!(group_id(text, "aupgate"), Some(998));
        assert_eq!(group_id(text, "nobody"), None);
        assert_eq!(group_id("aupgate:x:notanumber:", "aupgate"), None);
    }
}
