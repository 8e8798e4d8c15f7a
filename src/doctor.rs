//! `aupgate check`: the doctor IT support runs first. Each finding is one line, `ok`, `warn` or
//! `fail`, naming what was checked and, when it is not ok, the fix. `--json` gives the same for
//! monitoring. Nothing here changes the machine: the ruleset is checked by the kernel in a
//! transaction that is thrown away (`nft --check`), and the store is opened read-only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use serde::Serialize;

use crate::config::Config;
use crate::firewall::{Firewall as _, GARDEN_SETS, NftFirewall, TABLE, TableSpec, boot};
use crate::store::Store;

/// How a finding came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but something IT support should look at.
    Warn,
    /// aupgate will not work (or not safely) until it is fixed.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// ok, warn or fail.
    pub level: Level,
    /// What was checked, e.g. `firewall`.
    pub check: &'static str,
    /// What was found, with the fix when it is not ok.
    pub message: String,
    /// A failure of the machine rather than the config (exit 69 rather than 78).
    #[serde(skip)]
    pub machine: bool,
}

/// The doctor's findings, in the order they were made.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Every finding.
    pub findings: Vec<Finding>,
}

impl Report {
    fn add(&mut self, level: Level, check: &'static str, message: impl Into<String>) {
        self.findings.push(Finding {
            level,
            check,
            message: message.into(),
            machine: false,
        });
    }
    fn ok(&mut self, check: &'static str, message: impl Into<String>) {
        self.add(Level::Ok, check, message);
    }
    fn warn(&mut self, check: &'static str, message: impl Into<String>) {
        self.add(Level::Warn, check, message);
    }
    fn fail(&mut self, check: &'static str, message: impl Into<String>) {
        self.add(Level::Fail, check, message);
    }
    fn fail_machine(&mut self, check: &'static str, message: impl Into<String>) {
        self.add(Level::Fail, check, message);
        if let Some(f) = self.findings.last_mut() {
            f.machine = true;
        }
    }

    /// Failures: (all, those of the config rather than the machine).
    pub fn failures(&self) -> (usize, usize) {
        let fails = self.findings.iter().filter(|f| f.level == Level::Fail);
        (fails.clone().count(), fails.filter(|f| !f.machine).count())
    }

    /// The report as text, one line per finding.
    pub fn text(&self) -> String {
        self.findings
            .iter()
            .map(|f| {
                let tag = match f.level {
                    Level::Ok => "ok  ",
                    Level::Warn => "warn",
                    Level::Fail => "FAIL",
                };
                format!("{tag} {}: {}\n", f.check, f.message)
            })
            .collect()
    }
}

/// Examines `config` and this machine.
pub fn examine(config: &Config, path: &Path) -> Report {
    let mut r = Report::default();
    r.ok("config", format!("{} is valid", path.display()));
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            r.fail_machine("doctor", format!("cannot start its async runtime: {e}"));
            return r;
        }
    };
    guest_side(config, &runtime, &mut r);
    assets(config, &mut r);
    let nft = NftFirewall::default();
    firewall(config, &runtime, &nft, &mut r);
    let running = std::os::unix::net::UnixStream::connect(&config.control_socket).is_ok();
    listeners(config, running, &mut r);
    certificates(config, &mut r);
    store(config, &mut r);
    boot_protection(config, Path::new("/"), &mut r);
    walled_garden(config, Path::new("/"), &mut r);
    let oidc = config.admin.as_ref().and_then(|a| a.oidc.as_ref());
    for (level, message) in crate::admin::oidc::check::findings(oidc, &runtime) {
        r.add(level, "staff sign-in", message);
    }
    for (level, message) in crate::radius::check::findings(config.radius.as_ref(), &config.store_path) {
        r.add(level, "radius", message);
    }
    daemon(running, &runtime, &nft, &mut r);
    r
}

/// The dnsmasq line that puts `domain`'s addresses in the walled garden's sets as dnsmasq
/// answers for it (dnsmasq 2.87 or later).
pub fn garden_line(domain: &str) -> String {
    let [v4, v6] = GARDEN_SETS;
    format!("nftset=/{domain}/4#inet#{TABLE}#{v4},6#inet#{TABLE}#{v6}")
}

/// The walled garden: off, or its dnsmasq lines, and whether dnsmasq's configuration (under
/// `root`, which is `/` but for tests) has each of them.
fn walled_garden(config: &Config, root: &Path, r: &mut Report) {
    let domains = &config.guest.walled_garden;
    if domains.is_empty() {
        return r.ok("walled garden", "off (no [guest] walled_garden domains)");
    }
    let mut files = vec![root.join("etc/dnsmasq.conf")];
    if let Ok(dir) = std::fs::read_dir(root.join("etc/dnsmasq.d")) {
        // As Debian's dnsmasq reads the folder (conf-dir=/etc/dnsmasq.d,.dpkg-dist,.dpkg-old,
        // .dpkg-new): every file but those, and editors' backups.
        let skipped = |name: &str| {
            [".dpkg-dist", ".dpkg-old", ".dpkg-new", "~"]
                .iter()
                .any(|s| name.ends_with(s))
                || name.starts_with('.')
        };
        let mut more: Vec<_> = dir
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter(|e| !skipped(&e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .collect();
        more.sort();
        files.extend(more);
    }
    let text: String = files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .collect::<Vec<_>>()
        .join("\n");
    let lines: Vec<String> = domains.iter().map(|d| garden_line(d)).collect();
    let missing: Vec<&String> = lines
        .iter()
        .filter(|line| !text.lines().any(|l| l.trim() == line.as_str()))
        .collect();
    let secs = config.guest.walled_garden_seconds;
    if missing.is_empty() {
        r.ok(
            "walled garden",
            format!("{} domain(s); dnsmasq has the line for each, and each address stays {secs} s after dnsmasq resolved it", lines.len()),
        );
    } else {
        let all = missing.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("\n  ");
        r.warn(
            "walled garden",
            format!("dnsmasq's configuration (/etc/dnsmasq.conf, /etc/dnsmasq.d/) lacks these lines, so guests cannot reach those domains before they accept (fix: add them to /etc/dnsmasq.d/aupgate-guest.conf and restart dnsmasq; it needs version 2.87 or later):\n  {all}"),
        );
    }
}

/// The boot-time protection: the closed table the daemon saved, and the unit that loads it
/// before the network comes up. `root` is `/` but for tests.
fn boot_protection(config: &Config, root: &Path, r: &mut Report) {
    let path = boot::path_for(&config.store_path);
    let shown = path.display();
    match boot::state(&path, &TableSpec::for_config(config)) {
        boot::State::Current => r.ok("boot ruleset", format!("{shown} holds the closed table for this config")),
        boot::State::Missing => r.warn("boot ruleset", format!("{shown} is missing, so after a reboot guests are unrestricted until the daemon has started (fix: start the daemon once, systemctl restart aupgate; it writes the file)")),
        boot::State::Stale => r.warn("boot ruleset", format!("{shown} is stale: it was written for another config or aupgate version, so after a reboot it would close the wrong interface or ports (fix: systemctl restart aupgate, which rewrites it)")),
        boot::State::Unreadable(e) => r.warn("boot ruleset", format!("cannot read {shown}: {e} (fix: let root read the store's folder)")),
    }
    let unit = boot::UNIT;
    let installed = ["etc/systemd/system", "usr/lib/systemd/system", "lib/systemd/system"]
        .iter()
        .map(|d| root.join(d).join(unit))
        .find(|p| p.exists());
    let Some(installed) = installed else {
        return r.warn("boot unit", format!("{unit} is not installed, so nothing closes the guest network at boot before the daemon starts (fix: install the aupgate package, or copy systemd/{unit} to /etc/systemd/system and run systemctl enable {unit})"));
    };
    if !root.join("etc/systemd/system/sysinit.target.wants").join(unit).exists() {
        return r.warn("boot unit", format!("{unit} is not enabled, so nothing closes the guest network at boot before the daemon starts (fix: systemctl enable {unit})"));
    }
    let mut texts = vec![std::fs::read_to_string(&installed).unwrap_or_default()];
    let dropins = root.join("etc/systemd/system").join(format!("{unit}.d"));
    let mut confs: Vec<_> = std::fs::read_dir(&dropins)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conf"))
        .collect();
    confs.sort();
    texts.extend(confs.iter().map(|p| std::fs::read_to_string(p).unwrap_or_default()));
    match loaded_by(&texts) {
        Some(loads) if Path::new(&loads) == path => {
            r.ok("boot unit", format!("{unit} is enabled and loads {shown} before the network comes up"));
        }
        loads => r.warn("boot unit", format!("{unit} loads {}, but the daemon keeps the closed table in {shown} (beside [store] path) (fix: systemctl edit {unit}, with the lines ExecStart= and ExecStart=/usr/sbin/nft -f {shown})", loads.as_deref().unwrap_or("nothing"))),
    }
}

/// The file `nft -f` loads in the unit's effective `ExecStart` (drop-ins in order; an empty
/// `ExecStart=` clears the ones before it, as systemd does).
fn loaded_by(texts: &[String]) -> Option<String> {
    let mut exec = None;
    for line in texts.iter().flat_map(|t| t.lines()) {
        if let Some(cmd) = line.trim().strip_prefix("ExecStart=") {
            exec = Some(cmd.trim().to_owned()).filter(|c| !c.is_empty());
        }
    }
    let exec = exec?;
    let mut words = exec.split_whitespace();
    words.find(|w| *w == "-f" || *w == "--file")?;
    words.next().map(str::to_owned)
}

fn guest_side(config: &Config, runtime: &tokio::runtime::Runtime, r: &mut Report) {
    let iface = &config.guest.interface;
    if !Path::new("/sys/class/net").join(iface).exists() {
        r.fail("guest interface", format!("config key guest.interface: no interface {iface:?} on this machine (fix: use a name `ip link` shows, or bring the interface up first)"));
        return;
    }
    let have = match runtime.block_on(crate::neighbours::interface_addresses(iface)) {
        Ok(have) => have,
        Err(e) => {
            r.fail_machine("guest interface", format!("cannot read the addresses of {iface}: {e}"));
            return;
        }
    };
    let list: Vec<String> = have.iter().map(ToString::to_string).collect();
    let wanted = [
        ("guest.address", Some(IpAddr::V4(config.guest.address))),
        ("guest.address6", config.guest.address6.map(IpAddr::V6)),
    ];
    let mut good = true;
    for (key, want) in wanted.iter().filter_map(|(k, w)| w.map(|w| (k, w))) {
        if !have.contains(&want) {
            good = false;
            r.fail(
                "guest interface",
                format!(
                    "config key {key}: {want} is not an address of {iface} (it has: {}) (fix: give the router's own address on the guest network)",
                    if list.is_empty() { "none".to_owned() } else { list.join(", ") }
                ),
            );
        }
    }
    if good {
        r.ok("guest interface", format!("{iface} has {}", list.join(", ")));
    }
    // A dual-stack guest network the config is silent about: guests stay closed over IPv6 (the
    // table is inet), but the portal cannot be named there.
    let global_v6: Vec<String> = have
        .iter()
        .filter(|ip| matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) != 0xfe80))
        .map(ToString::to_string)
        .collect();
    match (config.guest.address6, global_v6.is_empty()) {
        (None, false) => r.warn(
            "ipv6",
            format!(
                "config key guest.address6 is not set, but {iface} has IPv6 ({}) (fix: set guest.address6 to the router's address there, so guests on IPv6 are sent to the portal by it)",
                global_v6.join(", ")
            ),
        ),
        (None, true) => r.ok("ipv6", format!("{iface} has no global IPv6; guests use IPv4")),
        (Some(a), _) => r.ok("ipv6", format!("guests on IPv6 are sent to the portal at [{a}]")),
    }
    // DNS and DHCP for guests: aupgate redirects their DNS to the router and lets DHCP through,
    // but something on the router must answer.
    for (port, what) in [(53u16, "DNS"), (67, "DHCP")] {
        match udp_listening(port, config.guest.address) {
            Some(true) => r.ok("guest services", format!("{what} (udp/{port}) is listening for guests")),
            Some(false) => r.warn(
                "guest services",
                format!("nothing listens on udp/{port} ({what}) for {} (fix: run dnsmasq on the guest interface; deploy/dnsmasq-guest.conf is a snippet)", config.guest.address),
            ),
            None => r.warn("guest services", format!("cannot read /proc/net/udp to look for {what}")),
        }
    }
}

/// Whether a UDP socket is bound to `port` on `addr` or on every address, in this namespace.
fn udp_listening(port: u16, addr: Ipv4Addr) -> Option<bool> {
    let v4 = std::fs::read_to_string("/proc/net/udp").ok()?;
    let v6 = std::fs::read_to_string("/proc/net/udp6").unwrap_or_default();
    let want = format!("{:08X}", u32::from_le_bytes(addr.octets()));
    let found = v4.lines().chain(v6.lines()).skip(1).any(|line| {
        let Some(local) = line.split_whitespace().nth(1) else {
            return false;
        };
        let Some((ip, p)) = local.rsplit_once(':') else {
            return false;
        };
        u16::from_str_radix(p, 16).ok() == Some(port) && (ip.chars().all(|c| c == '0') || ip == want)
    });
    Some(found)
}

fn assets(config: &Config, r: &mut Report) {
    match crate::assets::Policy::load(config.portal.policy.as_deref()) {
        Ok(p) => r.ok(
            "policy",
            format!("version {} ({} bytes)", &p.hash[..12], p.markdown.len()),
        ),
        Err(e) => r.fail("policy", e.to_string()),
    }
    match crate::assets::templates(config.portal.assets.as_deref()) {
        Ok(_) => r.ok("pages", "templates load"),
        Err(e) => r.fail("pages", e.to_string()),
    }
}

fn firewall(config: &Config, runtime: &tokio::runtime::Runtime, nft: &NftFirewall, r: &mut Report) {
    if let Err(e) = runtime.block_on(nft.probe()) {
        r.fail_machine("firewall", e.to_string());
        return;
    }
    let ruleset = TableSpec::for_config(config).ruleset(Vec::new());
    match runtime.block_on(nft.check_ruleset(&ruleset)) {
        Ok(()) => r.ok("firewall", "nft present and netlink permitted; the kernel accepts aupgate's ruleset"),
        Err(e) => r.fail_machine(
            "firewall",
            format!("the kernel refuses aupgate's ruleset: {e} (fix: a kernel with nf_tables, and the nftables package from Debian 12 or later)"),
        ),
    }
    match runtime.block_on(nft.ruleset_json()) {
        Ok(json) => school_rules(&json, r),
        Err(e) => r.warn("school rules", format!("cannot list the ruleset: {e}")),
    }
}

/// Warns about the school's own rules dropping forwarded traffic by default: aupgate can only
/// restrict, so an accepted guest still needs the school's forward chain to let it out.
fn school_rules(json: &str, r: &mut Report) {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(json) else {
        r.warn("school rules", "cannot read nft's JSON listing");
        return;
    };
    let dropping: Vec<String> = doc["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("chain"))
        .filter(|c| c["hook"] == "forward" && c["policy"] == "drop" && c["table"] != TABLE)
        .map(|c| {
            format!(
                "{} {} chain {}",
                c["family"].as_str().unwrap_or("?"),
                c["table"].as_str().unwrap_or("?"),
                c["name"].as_str().unwrap_or("?")
            )
        })
        .collect();
    if dropping.is_empty() {
        r.ok("school rules", "no other table drops forwarded traffic by default");
    } else {
        r.warn(
            "school rules",
            format!(
                "{} drop forwarded traffic by default (fix: make sure they accept traffic from the guest interface to the internet, or accepted guests get no internet; see deploy/nftables-router.conf)",
                dropping.join(", ")
            ),
        );
    }
}

/// `running`: the daemon answers on its control socket.
fn listeners(config: &Config, running: bool, r: &mut Report) {
    let mut ports = vec![("portal.port", config.portal.port)];
    if let Some(tls) = &config.portal.tls {
        ports.push(("portal.https_port", tls.port));
    }
    for &(key, port) in &ports {
        match std::net::TcpListener::bind((Ipv6Addr::UNSPECIFIED, port))
            .or_else(|_| std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))
        {
            Ok(_) => r.ok("ports", format!("port {port} ({key}) is free")),
            Err(_) if running => r.ok("ports", format!("port {port} ({key}) is in use by the running aupgate")),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => r.fail_machine(
                "ports",
                format!("port {port} ({key}) is used by another program (fix: `ss -ltnp 'sport = :{port}'` names it; stop it or change {key})"),
            ),
            Err(e) => r.warn("ports", format!("cannot test port {port} ({key}): {e}")),
        }
    }
    if let Some(admin) = &config.admin {
        admin_listener(admin.listen, &ports, running, r);
    }
}

/// The admin's `listen`, bound here as `run` binds it: an address this machine lacks, or a port
/// another program holds, would stop `run` at start.
fn admin_listener(listen: SocketAddr, portal_ports: &[(&str, u16)], running: bool, r: &mut Report) {
    let (ip, port) = (listen.ip(), listen.port());
    // The portal listens on every address, so the admin cannot share its port on any of them.
    if let Some((key, _)) = portal_ports.iter().find(|(_, p)| *p == port) {
        return r.fail(
            "admin",
            format!("config key admin.listen: port {port} is also {key}, which listens on every address (fix: give the admin another port, e.g. {ip}:8443)"),
        );
    }
    match std::net::TcpListener::bind(listen) {
        Ok(_) => r.ok("ports", format!("{listen} (admin.listen) is free")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => r.fail(
            "admin",
            format!("config key admin.listen: {ip} is not an address of this machine, so aupgate run would stop at start (fix: give the router's own address on the staff side, as `ip -brief address` lists it)"),
        ),
        Err(_) if running => r.ok("ports", format!("{listen} (admin.listen) is in use by the running aupgate")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => r.fail_machine(
            "ports",
            format!("port {port} on {ip} (admin.listen) is used by another program, so aupgate run would stop at start (fix: `ss -ltnp 'sport = :{port}'` names it; stop it or change admin.listen)"),
        ),
        Err(e) => r.warn("ports", format!("cannot test {listen} (admin.listen): {e}")),
    }
}

fn certificates(config: &Config, r: &mut Report) {
    if let Some(tls) = &config.portal.tls {
        match crate::web::tls::server_config(tls) {
            Err(e) => r.fail("tls", e.to_string()),
            Ok(_) => certificate("tls", &tls.cert, config.portal.hostname.as_deref(), r),
        }
    }
    if let Some(admin) = &config.admin {
        let (cert, key) = match &admin.tls {
            Some((c, k)) => (c.clone(), Some(k.clone())),
            None => (crate::admin::tls::self_signed_paths(config).0, None),
        };
        if let Some(key) = &key
            && let Err(e) = crate::web::tls::server_config_from(&cert, key, "admin")
        {
            r.fail("admin", e.to_string());
        } else if cert.exists() {
            match crate::web::tls::fingerprint(&cert, "admin") {
                Ok(fp) => r.ok(
                    "admin",
                    format!("https://{}/ certificate SHA-256 fingerprint {fp}", admin.listen),
                ),
                Err(e) => r.fail("admin", e.to_string()),
            }
            if key.is_some() {
                certificate("admin", &cert, None, r);
            }
        } else {
            r.ok(
                "admin",
                format!(
                    "https://{}/ will use a self-signed certificate made on first start ({})",
                    admin.listen,
                    cert.display()
                ),
            );
        }
    }
}

/// Expiry (and, for the portal, the host name) of the first certificate in `path`.
fn certificate(check: &'static str, path: &Path, hostname: Option<&str>, r: &mut Report) {
    let Ok(pem) = std::fs::read(path) else { return };
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(&pem) else {
        r.fail(check, format!("{}: not a PEM certificate", path.display()));
        return;
    };
    let Ok(cert) = pem.parse_x509() else {
        r.fail(check, format!("{}: the certificate cannot be parsed", path.display()));
        return;
    };
    let now = x509_parser::time::ASN1Time::now();
    let left = cert.validity().time_to_expiration().map(|d| d.whole_days());
    if let Some(host) = hostname {
        let names: Vec<String> = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let matches = names.iter().any(|n| {
            n.eq_ignore_ascii_case(host)
                || n.strip_prefix("*.").is_some_and(|rest| {
                    host.split_once('.')
                        .is_some_and(|(_, parent)| parent.eq_ignore_ascii_case(rest))
                })
        });
        if !matches {
            r.fail(
                check,
                format!(
                    "{}: the certificate is for {} but [portal] hostname is {host} (fix: a certificate for {host})",
                    path.display(),
                    if names.is_empty() {
                        "no DNS name".to_owned()
                    } else {
                        names.join(", ")
                    }
                ),
            );
            return;
        }
    }
    match left {
        None if cert.validity().not_before > now => {
            r.fail(check, format!("{}: the certificate is not valid yet", path.display()))
        }
        None => r.fail(
            check,
            format!(
                "{}: the certificate has expired (fix: renew it, then restart aupgate)",
                path.display()
            ),
        ),
        Some(days) if days < 14 => r.warn(
            check,
            format!(
                "{}: the certificate expires in {days} days (fix: renew it, then restart aupgate)",
                path.display()
            ),
        ),
        Some(days) => r.ok(check, format!("{}: valid for {days} more days", path.display())),
    }
}

fn store(config: &Config, r: &mut Report) {
    let path = &config.store_path;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if path.exists() {
        match Store::open_read_only(path).and_then(|s| s.schema_versions()) {
            Ok((have, latest)) if have == latest => r.ok("store", format!("{} (schema {have})", path.display())),
            Ok((have, latest)) if have < latest => r.ok(
                "store",
                format!("{} (schema {have}; this version migrates it to {latest} when the daemon starts)", path.display()),
            ),
            Ok((have, latest)) => r.fail(
                "store",
                format!("config key store.path: {} has schema {have}, newer than this aupgate knows ({latest}) (fix: install the newer aupgate again)", path.display()),
            ),
            Err(e) => r.fail("store", format!("config key store.path: cannot open {}: {e}", path.display())),
        }
        let writable = std::fs::OpenOptions::new().append(true).open(path);
        if let Err(e) = writable {
            r.fail(
                "store",
                format!(
                    "config key store.path: {} cannot be written: {e} (fix: make it writable by the aupgate service)",
                    path.display()
                ),
            );
        }
    } else if dir.exists() {
        let probe = dir.join(".aupgate-check");
        match std::fs::write(&probe, b"") {
            Ok(()) => {
                let _ = std::fs::remove_file(&probe);
                r.ok("store", format!("{} will be created on first start", path.display()));
            }
            Err(e) => r.fail("store", format!("config key store.path: folder {} is not writable: {e} (fix: make it writable by the aupgate service)", dir.display())),
        }
    } else {
        // systemd's StateDirectory (or the daemon) creates it.
        r.ok("store", format!("{} will be created on first start", path.display()));
    }
    // The daemon creates the socket's folder, but not a whole missing tree above it.
    if let Some(d) = config
        .control_socket
        .parent()
        .filter(|d| !d.exists() && d.parent().is_some_and(|p| !p.exists()))
    {
        r.fail("control", format!("config key control.socket: folder {} does not exist and cannot be created (fix: choose a path under /run)", d.display()));
    }
    match free_mib(if dir.exists() { dir } else { Path::new("/") }) {
        Some(mib) if mib < 100 => r.warn(
            "disk",
            format!("only {mib} MiB free for the store (fix: free space; a full disk stops new guests from accepting)"),
        ),
        Some(mib) => r.ok("disk", format!("{mib} MiB free for the store")),
        None => r.warn("disk", "cannot tell how much space is free (df failed)"),
    }
}

/// Free space under `dir` in MiB, from `df` (coreutils; std has no statvfs).
fn free_mib(dir: &Path) -> Option<u64> {
    let out = std::process::Command::new("df").args(["-Pk"]).arg(dir).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let kib: u64 = text.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib / 1024)
}

fn daemon(running: bool, runtime: &tokio::runtime::Runtime, nft: &NftFirewall, r: &mut Report) {
    let table = runtime.block_on(nft.fingerprint()).ok().flatten().is_some();
    let allowed = if table {
        runtime.block_on(nft.elements()).map(|e| e.len()).ok()
    } else {
        None
    };
    match (running, table) {
        (true, true) => r.ok("daemon", format!("running; table inet aupgate present with {} allowed device(s)", allowed.unwrap_or(0))),
        (true, false) => r.fail_machine("daemon", "running, but table inet aupgate is missing (fix: it is restored within seconds; if not, see journalctl -u aupgate)"),
        (false, true) => r.warn("daemon", format!("not running (fix: systemctl start aupgate); table inet aupgate is in place with {} allowed device(s), so guests stay closed", allowed.unwrap_or(0))),
        (false, false) => r.warn("daemon", "not running and table inet aupgate is absent: the guest network is not restricted (fix: systemctl enable --now aupgate)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_for(dir: &Path, name: &str) -> std::path::PathBuf {
        let pair = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, pair.cert.pem()).unwrap();
        path
    }

    /// Issue 13: `check` prints the dnsmasq line for each walled-garden domain and warns about
    /// each one dnsmasq's configuration lacks.
    #[test]
    fn walled_garden_lines_are_printed_and_looked_for_in_dnsmasqs_config() {
        let root = tempfile::tempdir().unwrap();
        let mut config = (*crate::testing::config()).clone();
        let mut r = Report::default();
        walled_garden(&config, root.path(), &mut r);
        assert_eq!(r.findings[0].level, Level::Ok);
        assert!(r.findings[0].message.starts_with("off"), "{}", r.text());

        config.guest.walled_garden = vec!["www.claremont.sch.uk".into(), "lgfl.net".into()];
        let line = |d: &str| format!("nftset=/{d}/4#inet#aupgate#garden4,6#inet#aupgate#garden6");
        let mut r = Report::default();
        walled_garden(&config, root.path(), &mut r);
        assert_eq!(r.findings[0].level, Level::Warn, "{}", r.text());
        for d in ["www.claremont.sch.uk", "lgfl.net"] {
            assert!(r.findings[0].message.contains(&line(d)), "{}", r.text());
        }
        std::fs::create_dir_all(root.path().join("etc/dnsmasq.d")).unwrap();
        std::fs::write(
            root.path().join("etc/dnsmasq.d/aupgate-guest"),
            format!("interface=guest0\n{}\n", line("lgfl.net")),
        )
        .unwrap();
        // A packaging leftover is not read, as dnsmasq does not read it.
        std::fs::write(
            root.path().join("etc/dnsmasq.d/aupgate-guest.dpkg-old"),
            format!("{}\n", line("www.claremont.sch.uk")),
        )
        .unwrap();
        let mut r = Report::default();
        walled_garden(&config, root.path(), &mut r);
        assert_eq!(r.findings[0].level, Level::Warn, "{}", r.text());
        assert!(
            r.findings[0].message.contains(&line("www.claremont.sch.uk")),
            "{}",
            r.text()
        );
        assert!(!r.findings[0].message.contains(&line("lgfl.net")), "{}", r.text());
        std::fs::write(
            root.path().join("etc/dnsmasq.conf"),
            format!("  {}\n", line("www.claremont.sch.uk")),
        )
        .unwrap();
        let mut r = Report::default();
        walled_garden(&config, root.path(), &mut r);
        assert_eq!(r.findings[0].level, Level::Ok, "{}", r.text());
    }

    #[test]
    fn a_certificate_must_name_the_portal_host_and_its_days_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = cert_for(dir.path(), "portal.school.example");
        let mut r = Report::default();
        certificate("tls", &path, Some("portal.school.example"), &mut r);
        certificate("tls", &path, Some("PORTAL.school.example"), &mut r);
        certificate("tls", &path, Some("wifi.school.example"), &mut r);
        let wild = cert_for(dir.path(), "*.school.example");
        certificate("tls", &wild, Some("wifi.school.example"), &mut r);
        certificate("tls", &wild, Some("a.b.school.example"), &mut r);
        let levels: Vec<Level> = r.findings.iter().map(|f| f.level).collect();
        assert_eq!(
            levels,
            [Level::Ok, Level::Ok, Level::Fail, Level::Ok, Level::Fail],
            "{}",
            r.text()
        );
        assert!(r.findings[0].message.contains("more days"), "{}", r.text());
        assert!(
            r.findings[2]
                .message
                .contains("fix: a certificate for wifi.school.example"),
            "{}",
            r.text()
        );
    }

    #[test]
    fn school_rules_that_drop_forwarding_are_a_warning_ours_are_not() {
        let listing = |table: &str, policy: &str| {
            format!(
                r#"{{"nftables":[{{"chain":{{"family":"inet","table":"{table}","name":"forward","hook":"forward","policy":"{policy}"}}}}]}}"#
            )
        };
        let mut r = Report::default();
        school_rules(&listing("filter", "drop"), &mut r);
        school_rules(&listing("filter", "accept"), &mut r);
        school_rules(&listing(TABLE, "drop"), &mut r);
        let levels: Vec<Level> = r.findings.iter().map(|f| f.level).collect();
        assert_eq!(levels, [Level::Warn, Level::Ok, Level::Ok], "{}", r.text());
        assert!(
            r.findings[0].message.contains("inet filter chain forward"),
            "{}",
            r.text()
        );
    }

    #[test]
    fn boot_protection_says_when_the_file_or_the_unit_is_missing_or_stale() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let text = format!(
            "[school]\nname = \"S\"\ntimezone = \"UTC\"\ndsl_contact = \"office\"\n[guest]\ninterface = \"guest0\"\naddress = \"10.50.0.1\"\n[store]\npath = \"{}/state/aupgate.db\"\n",
            root.display()
        );
        let config = Config::parse(&text, Path::new("t.toml")).unwrap();
        let run = || {
            let mut r = Report::default();
            boot_protection(&config, root, &mut r);
            r.findings
                .iter()
                .map(|f| (f.check, f.level, f.message.clone()))
                .collect::<Vec<_>>()
        };
        let file = root.join("state/closed.nft");
        let found = run();
        assert_eq!(found[0].1, Level::Warn);
        assert!(found[0].2.contains("is missing"), "{found:?}");
        assert_eq!((found[1].0, found[1].1), ("boot unit", Level::Warn));
        assert!(found[1].2.contains("is not installed"), "{found:?}");

        std::fs::create_dir_all(root.join("state")).unwrap();
        boot::save(&file, &TableSpec::for_config(&config)).unwrap();
        let units = root.join("usr/lib/systemd/system");
        std::fs::create_dir_all(&units).unwrap();
        std::fs::write(
            units.join(boot::UNIT),
            include_str!("../systemd/aupgate-closed.service"),
        )
        .unwrap();
        let found = run();
        assert_eq!((found[0].0, found[0].1), ("boot ruleset", Level::Ok), "{found:?}");
        assert!(found[1].2.contains("is not enabled"), "{found:?}");

        let wants = root.join("etc/systemd/system/sysinit.target.wants");
        std::fs::create_dir_all(&wants).unwrap();
        std::os::unix::fs::symlink(units.join(boot::UNIT), wants.join(boot::UNIT)).unwrap();
        let found = run();
        assert_eq!(
            found[1].1,
            Level::Warn,
            "the shipped unit loads /var/lib/aupgate: {found:?}"
        );
        assert!(found[1].2.contains("systemctl edit"), "{found:?}");

        let dropin = root.join("etc/systemd/system").join(format!("{}.d", boot::UNIT));
        std::fs::create_dir_all(&dropin).unwrap();
        std::fs::write(
            dropin.join("store.conf"),
            format!("[Service]\nExecStart=\nExecStart=/usr/sbin/nft -f {}\n", file.display()),
        )
        .unwrap();
        let found = run();
        assert_eq!(found[1].1, Level::Ok, "{found:?}");

        std::fs::write(&file, "table inet aupgate {}\n").unwrap();
        let found = run();
        assert_eq!(found[0].1, Level::Warn);
        assert!(found[0].2.contains("stale"), "{found:?}");
    }

    #[test]
    fn issue_11_the_admin_must_listen_on_an_address_here_and_a_port_nobody_else_holds() {
        let run = |listen: SocketAddr, running: bool| {
            let mut r = Report::default();
            admin_listener(listen, &[("portal.port", 8080)], running, &mut r);
            assert_eq!(r.findings.len(), 1, "{}", r.text());
            let f = &r.findings[0];
            (f.level, f.machine, f.message.clone())
        };
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let free_addr = free.local_addr().unwrap();
        drop(free);
        let (level, _, msg) = run(free_addr, false);
        assert_eq!(level, Level::Ok, "{msg}");
        assert!(msg.contains("is free"), "{msg}");

        // TEST-NET-3: no machine running these tests has it.
        let (level, machine, msg) = run("203.0.113.77:8443".parse().unwrap(), false);
        assert_eq!((level, machine), (Level::Fail, false), "a config failure: {msg}");
        assert!(
            msg.contains("config key admin.listen: 203.0.113.77 is not an address of this machine"),
            "{msg}"
        );
        assert!(msg.contains("(fix: "), "{msg}");
        let (level, _, msg) = run("203.0.113.77:8443".parse().unwrap(), true);
        assert_eq!(
            level,
            Level::Fail,
            "no daemon can hold an address the machine lacks: {msg}"
        );

        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let held_addr = held.local_addr().unwrap();
        let (level, machine, msg) = run(held_addr, false);
        assert_eq!((level, machine), (Level::Fail, true), "{msg}");
        assert!(
            msg.contains("is used by another program") && msg.contains("ss -ltnp"),
            "{msg}"
        );
        let (level, _, msg) = run(held_addr, true);
        assert_eq!(level, Level::Ok, "{msg}");
        assert!(msg.contains("in use by the running aupgate"), "{msg}");
        drop(held);

        let (level, _, msg) = run("127.0.0.1:8080".parse().unwrap(), false);
        assert_eq!(level, Level::Fail, "{msg}");
        assert!(msg.contains("port 8080 is also portal.port"), "{msg}");
    }

    #[test]
    fn text_lines_say_ok_warn_or_fail_and_failures_are_split_by_cause() {
        let mut r = Report::default();
        r.ok("a", "fine");
        r.warn("b", "hmm (fix: x)");
        r.fail("c", "bad config (fix: y)");
        r.fail_machine("d", "bad machine (fix: z)");
        assert_eq!(
            r.text(),
            "ok   a: fine\nwarn b: hmm (fix: x)\nFAIL c: bad config (fix: y)\nFAIL d: bad machine (fix: z)\n"
        );
        assert_eq!(r.failures(), (2, 1));
    }
}
