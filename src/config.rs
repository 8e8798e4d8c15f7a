//! The TOML configuration: stage one deserializes and rejects unknown keys (`RawConfig`), stage two
//! resolves it into domain types (`Config`). Every error names the key and the fix. The rest of the
//! program only ever sees a validated `Config`; nothing here touches the network or the firewall.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use jiff::tz::TimeZone;
use serde::Deserialize;

/// Default path of the configuration file.
pub const DEFAULT_PATH: &str = "/etc/aupgate/aupgate.toml";

/// One problem with the configuration, printable as a single line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error(
        "cannot read config file {path}: {reason} (fix: create it, from {example} in the aupgate source, or pass --config FILE)"
    )]
    Unreadable {
        /// The path that was tried.
        path: PathBuf,
        /// The commented example to start from (`deploy/aupgate.toml`, `deploy/hub.toml`).
        example: &'static str,
        /// Why reading failed. Shown in the message, and deliberately not the error's `source`:
        /// `main` prints the whole chain (`{:#}`), which would repeat it after the fix.
        reason: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error(
        "config {path}: {message} (fix: correct that line; the example config lists every key, and aupgate check tests the file)"
    )]
    Syntax {
        /// The file.
        path: PathBuf,
        /// toml's own description, which names the key and line.
        message: String,
    },
    /// A key has a value that parsed but is not acceptable.
    #[error("config key {key}: {problem} (fix: {fix})")]
    Invalid {
        /// Dotted key, e.g. `guest.interface`.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
        /// What the operator should do.
        fix: String,
    },
}

impl ConfigError {
    fn invalid(key: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

// === stage one: the file as written ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    school: RawSchool,
    guest: RawGuest,
    #[serde(default)]
    portal: RawPortal,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    control: RawControl,
    admin: Option<RawAdmin>,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    audit: RawAudit,
    radius: Option<crate::radius::RawRadius>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    retention_days: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    reaccept: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: String,
    url: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    session_idle_minutes: Option<u32>,
    oidc: Option<crate::admin::oidc::RawOidc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchool {
    name: String,
    timezone: String,
    dsl_contact: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGuest {
    interface: String,
    address: String,
    address6: Option<String>,
    ssid: Option<String>,
    wifi_password: Option<String>,
    #[serde(default)]
    walled_garden: Vec<String>,
    walled_garden_seconds: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPortal {
    hostname: Option<String>,
    port: Option<u16>,
    https_port: Option<u16>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    assets: Option<PathBuf>,
    policy: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    socket: Option<PathBuf>,
}

// === stage two: what the program uses ===

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The school, as guests see it.
    pub school: School,
    /// The guest network.
    pub guest: Guest,
    /// The guest-facing web server.
    pub portal: Portal,
    /// The SQLite database file.
    pub store_path: PathBuf,
    /// The control socket the CLI talks to.
    pub control_socket: PathBuf,
    /// The staff web UI; `None` when `[admin]` is absent.
    pub admin: Option<Admin>,
    /// What happens to open sessions when the policy text changes.
    pub reaccept: Reaccept,
    /// How many days personal data is kept after a session ends (`[audit] retention_days`).
    pub retention_days: u32,
    /// RADIUS accounting to the school's filter; `None` when `[radius]` is absent.
    pub radius: Option<crate::radius::Settings>,
}

impl Config {
    /// The retention period as a duration.
    pub fn retention(&self) -> jiff::SignedDuration {
        jiff::SignedDuration::from_hours(24 * i64::from(self.retention_days))
    }
}

/// When devices that accepted an earlier policy text must accept the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaccept {
    /// The next time they join (their open sessions run until their course ends).
    NextJoin,
    /// At once: their sessions end when the daemon starts with the new text.
    Immediately,
}

/// The staff-facing HTTPS admin.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Address and port on the staff side; nothing else is bound.
    pub listen: std::net::SocketAddr,
    /// The school's certificate and key, or `None` for a self-signed one in the state folder.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Sessions end after this long without a request.
    pub session_idle: jiff::SignedDuration,
    /// Sign-in with the school's Microsoft or Google account; `None` when `[admin.oidc]` is
    /// absent (local accounts only).
    pub oidc: Option<crate::admin::oidc::Settings>,
}

/// Who runs this network.
#[derive(Debug, Clone)]
pub struct School {
    /// Shown on every page.
    pub name: String,
    /// Local time zone: times are stored in UTC and shown in this zone.
    pub timezone: TimeZone,
    /// Name of the zone as configured, e.g. `Europe/London`.
    pub timezone_name: String,
    /// Who the Designated Safeguarding Lead is and how to reach them.
    pub dsl_contact: String,
}

/// The guest side of the router.
#[derive(Debug, Clone)]
pub struct Guest {
    /// Interface name (validated to be a legal Linux interface name).
    pub interface: String,
    /// The router's IPv4 address on the guest network; the portal URL uses it.
    pub address: Ipv4Addr,
    /// The router's IPv6 address on the guest network, if any.
    pub address6: Option<Ipv6Addr>,
    /// The guest Wi-Fi's network name, for the course poster and its QR code.
    pub ssid: Option<String>,
    /// The guest Wi-Fi's WPA passphrase, if it has one (the QR code carries it).
    pub wifi_password: Option<String>,
    /// Domains a device may reach before it accepts (lower-case, each with its subdomains, as
    /// dnsmasq's `nftset=` matches them); empty means no walled garden.
    pub walled_garden: Vec<String>,
    /// How long an address dnsmasq put in the garden's sets stays there (dnsmasq adds them
    /// without a timeout of their own).
    pub walled_garden_seconds: u32,
}

/// The default of `[guest] walled_garden_seconds`: longer than the TTL of a typical school
/// website's records, short enough that an address the name left is soon closed again.
pub const WALLED_GARDEN_SECONDS: u32 = 600;

/// Hosts the phones' captive-portal checks fetch. With one of them (or a domain above one) in
/// the walled garden, a phone's check succeeds before the guest accepts, and the portal never
/// pops up.
pub const CAPTIVE_PROBE_HOSTS: &[&str] = &[
    "captive.apple.com",
    "www.apple.com",
    "connectivitycheck.gstatic.com",
    "connectivitycheck.android.com",
    "clients3.google.com",
    "www.google.com",
    "www.gstatic.com",
    "www.msftconnecttest.com",
    "www.msftncsi.com",
    "ipv6.msftconnecttest.com",
    "detectportal.firefox.com",
    "nmcheck.gnome.org",
    "connectivity-check.ubuntu.com",
    "network-test.debian.org",
    "networkcheck.kde.org",
    "ping.archlinux.org",
    "fedoraproject.org",
    "connectivitycheck.platform.hicloud.com",
    "connect.rom.miui.com",
    "spectrum.s3.amazonaws.com",
    "appleiphonecell.com",
    "ibook.info",
    "itools.info",
    "airport.us",
    "thinkdifferent.us",
];

/// The captive-portal check `domain` would let through: a probe host that is `domain` or
/// under it.
pub fn garden_takes_probe(domain: &str) -> Option<&'static str> {
    CAPTIVE_PROBE_HOSTS
        .iter()
        .copied()
        .find(|probe| *probe == domain || probe.ends_with(&format!(".{domain}")))
}

/// The portal web server.
#[derive(Debug, Clone)]
pub struct Portal {
    /// The portal's DNS name on the guest network (lower-case), used in every URL aupgate hands
    /// out; `None` means URLs use `[guest] address`.
    pub hostname: Option<String>,
    /// TCP port the portal listens on; guests' tcp/80 is redirected here.
    pub port: u16,
    /// HTTPS for the portal and the captive-portal API; `None` when no certificate is set.
    pub tls: Option<Tls>,
    /// Optional folder whose files override the built-in assets.
    pub assets: Option<PathBuf>,
    /// Optional policy Markdown file; `None` means the built-in example policy.
    pub policy: Option<PathBuf>,
}

/// The portal's HTTPS listener.
#[derive(Debug, Clone)]
pub struct Tls {
    /// TCP port (default 443).
    pub port: u16,
    /// PEM certificate chain for `[portal] hostname`.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl Portal {
    /// Default HTTPS port.
    pub const DEFAULT_HTTPS_PORT: u16 = 443;
    /// Default portal port.
    pub const DEFAULT_PORT: u16 = 8080;
}

/// A retention period in days as `key` gives it (365 when left out; 1 to 3650), the policy of
/// `whose` ("school", "trust").
///
/// # Errors
/// Out of range, naming `key`.
pub(crate) fn retention_days(key: &'static str, days: Option<u32>, whose: &str) -> Result<u32, ConfigError> {
    let days = days.unwrap_or(365);
    if !(1..=3650).contains(&days) {
        return Err(ConfigError::invalid(
            key,
            format!("{days} is out of range"),
            format!("choose 1 to 3650 days (the {whose}'s retention policy; 365 by default)"),
        ));
    }
    Ok(days)
}

/// The TOML file at `path`, as `T` (stage one of a config: the school's or the hub's);
/// `example` names the commented example to start from when there is no file.
///
/// # Errors
/// `Unreadable` or `Syntax`, naming the file.
pub(crate) fn toml_file<T: serde::de::DeserializeOwned>(path: &Path, example: &'static str) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|reason| ConfigError::Unreadable {
        path: path.to_owned(),
        example,
        reason,
    })?;
    toml_text(&text, path)
}

/// `text` (read from `origin`, named in messages) as `T`.
///
/// # Errors
/// `Syntax`: toml's description, on one line.
pub(crate) fn toml_text<T: serde::de::DeserializeOwned>(text: &str, origin: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: origin.to_owned(),
        message: one_line(&e.to_string()),
    })
}

impl Config {
    /// Reads and validates the file at `path`.
    ///
    /// # Errors
    /// Any [`ConfigError`]; the message names the key and the fix.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::resolve(toml_file(path, "deploy/aupgate.toml")?)
    }

    /// Validates configuration text; `origin` is only used in messages.
    ///
    /// # Errors
    /// Any [`ConfigError`].
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        Self::resolve(toml_text(text, origin)?)
    }

    fn resolve(raw: RawConfig) -> Result<Self, ConfigError> {
        let name = raw.school.name.trim().to_owned();
        if name.is_empty() {
            return Err(ConfigError::invalid(
                "school.name",
                "is empty",
                "set it to the school's name as guests know it",
            ));
        }
        let timezone = TimeZone::get(raw.school.timezone.trim()).map_err(|_| {
            ConfigError::invalid(
                "school.timezone",
                format!("{:?} is not a known time zone", raw.school.timezone),
                "use an IANA name such as \"Europe/London\"",
            )
        })?;
        let dsl_contact = raw.school.dsl_contact.trim().to_owned();
        if dsl_contact.is_empty() {
            return Err(ConfigError::invalid(
                "school.dsl_contact",
                "is empty",
                "name the Designated Safeguarding Lead and how guests reach them",
            ));
        }
        let interface = raw.guest.interface.trim().to_owned();
        if !valid_interface_name(&interface) {
            return Err(ConfigError::invalid(
                "guest.interface",
                format!("{interface:?} is not a valid interface name"),
                "use the name `ip link` shows for the guest network, e.g. \"wlan1\" or \"br-guest\"",
            ));
        }
        let address: Ipv4Addr = raw.guest.address.trim().parse().map_err(|_| {
            ConfigError::invalid(
                "guest.address",
                format!("{:?} is not an IPv4 address", raw.guest.address),
                "give the router's own IPv4 address on the guest network, e.g. \"10.50.0.1\"",
            )
        })?;
        if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
            return Err(ConfigError::invalid(
                "guest.address",
                format!("{address} cannot be the router's address"),
                "give the router's own IPv4 address on the guest network",
            ));
        }
        let address6 = match raw.guest.address6 {
            None => None,
            Some(text) => Some(text.trim().parse::<Ipv6Addr>().map_err(|_| {
                ConfigError::invalid(
                    "guest.address6",
                    format!("{text:?} is not an IPv6 address"),
                    "give the router's IPv6 address on the guest network, or remove the key",
                )
            })?),
        };
        let hostname = match raw.portal.hostname {
            None => None,
            Some(h) => {
                let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
                if !valid_hostname(&h) {
                    return Err(ConfigError::invalid(
                        "portal.hostname",
                        format!("{h:?} is not a DNS name"),
                        "use the name your guest DNS (dnsmasq) answers with the router's guest address, e.g. \"wifi.claremont.sch.uk\"",
                    ));
                }
                Some(h)
            }
        };
        let ssid = raw.guest.ssid.map(|s| s.trim().to_owned());
        if ssid.as_ref().is_some_and(|s| s.is_empty() || s.len() > 32) {
            return Err(ConfigError::invalid(
                "guest.ssid",
                "must be 1 to 32 bytes",
                "use the guest Wi-Fi's network name exactly as phones show it",
            ));
        }
        let mut walled_garden = Vec::with_capacity(raw.guest.walled_garden.len());
        for d in &raw.guest.walled_garden {
            let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
            if !valid_hostname(&d) || !d.contains('.') {
                return Err(ConfigError::invalid(
                    "guest.walled_garden",
                    format!("{d:?} is not a DNS domain"),
                    "list domains such as \"www.claremont.sch.uk\" (each with its subdomains; no wildcards, addresses or URLs)",
                ));
            }
            if let Some(probe) = garden_takes_probe(&d) {
                return Err(ConfigError::invalid(
                    "guest.walled_garden",
                    format!(
                        "{d:?} would let phones' captive-portal check ({probe}) through before they accept, so the portal would never pop up"
                    ),
                    "remove it; list the school's own sites only",
                ));
            }
            if !walled_garden.contains(&d) {
                walled_garden.push(d);
            }
        }
        let walled_garden_seconds = raw.guest.walled_garden_seconds.unwrap_or(WALLED_GARDEN_SECONDS);
        if !(1..=86_400).contains(&walled_garden_seconds) {
            return Err(ConfigError::invalid(
                "guest.walled_garden_seconds",
                format!("{walled_garden_seconds} is out of range"),
                "use 1 to 86400 seconds (default 600, longer than the sites' DNS records live)",
            ));
        }
        let wifi_password = raw.guest.wifi_password;
        if wifi_password.as_ref().is_some_and(|p| !(8..=63).contains(&p.len())) {
            return Err(ConfigError::invalid(
                "guest.wifi_password",
                "must be 8 to 63 characters (WPA)",
                "use the guest Wi-Fi's passphrase, or remove the key for an open network",
            ));
        }
        let port = raw.portal.port.unwrap_or(Portal::DEFAULT_PORT);
        if port == 0 {
            return Err(ConfigError::invalid(
                "portal.port",
                "is 0",
                "choose a free TCP port such as 8080",
            ));
        }
        let tls = match (raw.portal.tls_cert, raw.portal.tls_key) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    "portal.tls_key",
                    "is missing while portal.tls_cert is set",
                    "set both, or neither to leave HTTPS off",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "portal.tls_cert",
                    "is missing while portal.tls_key is set",
                    "set both, or neither to leave HTTPS off",
                ));
            }
            (Some(cert), Some(key)) => {
                if hostname.is_none() {
                    return Err(ConfigError::invalid(
                        "portal.hostname",
                        "is needed for HTTPS (certificates name a host, not an address)",
                        "set it to the name in the certificate",
                    ));
                }
                let https_port = raw.portal.https_port.unwrap_or(Portal::DEFAULT_HTTPS_PORT);
                if https_port == 0 || https_port == port {
                    return Err(ConfigError::invalid(
                        "portal.https_port",
                        format!("{https_port} cannot be used"),
                        "choose a free port other than portal.port, normally 443",
                    ));
                }
                Some(Tls {
                    port: https_port,
                    cert,
                    key,
                })
            }
        };
        let admin = match raw.admin {
            None => None,
            Some(a) => {
                let listen: std::net::SocketAddr = a.listen.trim().parse().map_err(|_| {
                    ConfigError::invalid(
                        "admin.listen",
                        format!("{:?} is not an address:port", a.listen),
                        "give the router's staff-side address and a port, e.g. \"10.0.0.1:8443\"",
                    )
                })?;
                if listen.ip().is_unspecified()
                    || listen.ip() == IpAddr::V4(address)
                    || Some(listen.ip()) == address6.map(IpAddr::V6)
                {
                    return Err(ConfigError::invalid(
                        "admin.listen",
                        format!("{} is reachable from the guest side", listen.ip()),
                        "bind it to the router's staff-side address only",
                    ));
                }
                let tls = match (a.tls_cert, a.tls_key) {
                    (None, None) => None,
                    (Some(c), Some(k)) => Some((c, k)),
                    _ => {
                        return Err(ConfigError::invalid(
                            "admin.tls_cert",
                            "and admin.tls_key must be set together",
                            "set both, or neither for a self-signed certificate",
                        ));
                    }
                };
                let minutes = a.session_idle_minutes.unwrap_or(30);
                if !(1..=24 * 60).contains(&minutes) {
                    return Err(ConfigError::invalid(
                        "admin.session_idle_minutes",
                        format!("{minutes} is out of range"),
                        "choose 1 to 1440 minutes",
                    ));
                }
                let origin = crate::admin::oidc::origin(a.url.as_deref(), listen)?;
                Some(Admin {
                    listen,
                    tls,
                    session_idle: jiff::SignedDuration::from_mins(i64::from(minutes)),
                    oidc: a.oidc.map(|o| o.resolve(origin)).transpose()?,
                })
            }
        };
        let reaccept = match raw.policy.reaccept.as_deref().map(str::trim) {
            None | Some("next-join") => Reaccept::NextJoin,
            Some("immediately") => Reaccept::Immediately,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "policy.reaccept",
                    format!("{other:?} is not a choice"),
                    "use \"next-join\" (the default) or \"immediately\"",
                ));
            }
        };
        let retention_days = retention_days("audit.retention_days", raw.audit.retention_days, "school")?;
        let radius = raw.radius.map(|r| r.resolve(&name)).transpose()?;
        Ok(Self {
            admin,
            reaccept,
            retention_days,
            radius,
            school: School {
                name,
                timezone,
                timezone_name: raw.school.timezone.trim().to_owned(),
                dsl_contact,
            },
            guest: Guest {
                interface,
                address,
                address6,
                ssid,
                wifi_password,
                walled_garden,
                walled_garden_seconds,
            },
            portal: Portal {
                hostname,
                port,
                tls,
                assets: raw.portal.assets,
                policy: raw.portal.policy,
            },
            store_path: raw
                .store
                .path
                .unwrap_or_else(|| PathBuf::from("/var/lib/aupgate/aupgate.db")),
            control_socket: raw
                .control
                .socket
                .unwrap_or_else(|| PathBuf::from("/run/aupgate/control.sock")),
        })
    }

    /// The portal's own URL as guests are redirected to it.
    pub fn portal_url(&self) -> String {
        let host = self.portal_host();
        if self.portal.port == 80 {
            format!("http://{host}/")
        } else {
            format!("http://{host}:{}/", self.portal.port)
        }
    }

    /// The portal page over HTTPS (for the captive-portal API), or plain HTTP when HTTPS is off.
    pub fn portal_https_url(&self, path: &str) -> String {
        match &self.portal.tls {
            Some(tls) if tls.port == 443 => format!("https://{}{path}", self.portal_host()),
            Some(tls) => format!("https://{}:{}{path}", self.portal_host(), tls.port),
            None => format!("{}{}", self.portal_url().trim_end_matches('/'), path),
        }
    }

    /// The host part of every URL aupgate hands out: `[portal] hostname`, else the address.
    pub fn portal_host(&self) -> String {
        self.portal
            .hostname
            .clone()
            .unwrap_or_else(|| self.guest.address.to_string())
    }

    /// Whether `host`, a request's `Host` header, names this portal: `[portal] hostname` (in any
    /// case, with or without the final dot) or the router's guest address, v4 or v6 (bracketed
    /// or bare), with or without a port. The portal shows its page only then and redirects every
    /// other host to [`Self::portal_url`], so that URL's host must always pass this test.
    pub fn is_portal_host(&self, host: &str) -> bool {
        // A bare IPv6 address is read whole before any port is looked for: its last group can be
        // all digits (`2001:db8::1:80`), which would otherwise be taken for a port.
        let host = match host.rsplit_once(':') {
            _ if host.parse::<Ipv6Addr>().is_ok() => host,
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
            _ => host,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if self
            .portal
            .hostname
            .as_deref()
            .is_some_and(|name| host.trim_end_matches('.').eq_ignore_ascii_case(name))
        {
            return true;
        }
        match host.parse::<IpAddr>() {
            Ok(ip) => ip == IpAddr::V4(self.guest.address) || Some(ip) == self.guest.address6.map(IpAddr::V6),
            Err(_) => false,
        }
    }
}

/// Linux interface names: 1–15 bytes, no `/`, whitespace, quotes or control characters. The name is
/// interpolated into the nft script, so this check is also what keeps that script well-formed.
fn valid_interface_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@' | b':'))
}

/// RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens, at least two
/// labels (a bare name would not resolve everywhere), at most 253 bytes.
pub(crate) fn valid_hostname(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        && !labels.last().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

/// toml's message as one printable line. It quotes the offending line of the file, so a control
/// character there (an escape sequence pasted by mistake) would otherwise reach the terminal raw.
fn one_line(message: &str) -> String {
    let mut line = String::with_capacity(message.len());
    for word in message.split_whitespace() {
        if !line.is_empty() {
            line.push(' ');
        }
        push_printable(&mut line, word);
    }
    line
}

/// Appends `text` to `out` with its control characters escaped (`\u{1b}`, `\n`), so text from
/// a file or a guest cannot drive the terminal it is shown on.
pub(crate) fn push_printable(out: &mut String, text: &str) {
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[school]
name = "Claremont Primary School"
timezone = "Europe/London"
dsl_contact = "Jenny James, school office"
[guest]
interface = "guest0"
address = "10.50.0.1"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(GOOD, Path::new("t.toml")).unwrap();
        assert_eq!(c.portal.port, 8080);
        assert_eq!(c.store_path, PathBuf::from("/var/lib/aupgate/aupgate.db"));
        assert_eq!(c.control_socket, PathBuf::from("/run/aupgate/control.sock"));
        assert_eq!(c.portal_url(), "http://10.50.0.1:8080/");
        assert!(c.guest.address6.is_none());
    }

    /// Issue 13: the walled garden's domains are checked, lower-cased and kept once; a domain
    /// that would let a phone's captive-portal check through is refused with the probe named.
    #[test]
    fn walled_garden_domains_are_checked() {
        let with = |lines: &str| Config::parse(&format!("{GOOD}{lines}\n"), Path::new("t.toml"));
        let c = Config::parse(GOOD, Path::new("t.toml")).unwrap();
        assert!(c.guest.walled_garden.is_empty(), "off unless configured");
        let c = with("walled_garden = [\"WWW.Claremont.sch.uk.\", \"www.claremont.sch.uk\", \"lgfl.net\"]").unwrap();
        assert_eq!(c.guest.walled_garden, ["www.claremont.sch.uk", "lgfl.net"]);
        assert_eq!(c.guest.walled_garden_seconds, WALLED_GARDEN_SECONDS);
        for (bad, says) in [
            ("\"captive.apple.com\"", "captive.apple.com"),
            ("\"apple.com\"", "captive.apple.com"),
            ("\"gstatic.com\"", "connectivitycheck.gstatic.com"),
            ("\"https://www.claremont.sch.uk/\"", "not a DNS domain"),
            ("\"*.claremont.sch.uk\"", "not a DNS domain"),
            ("\"localhost\"", "not a DNS domain"),
        ] {
            let e = with(&format!("walled_garden = [{bad}]")).unwrap_err().to_string();
            assert!(e.contains("guest.walled_garden") && e.contains(says), "{bad}: {e}");
        }
        let e = with("walled_garden = [\"a.example\"]\nwalled_garden_seconds = 0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("guest.walled_garden_seconds"), "{e}");
        assert_eq!(
            with("walled_garden = [\"a.example\"]\nwalled_garden_seconds = 5")
                .unwrap()
                .guest
                .walled_garden_seconds,
            5
        );
    }

    #[test]
    fn shipped_example_parses() {
        let text = include_str!("../deploy/aupgate.toml");
        let c = Config::parse(text, Path::new("deploy/aupgate.toml")).unwrap();
        assert_eq!(c.school.timezone_name, "Europe/London");
    }

    #[test]
    fn the_examples_admin_oidc_table_parses_once_uncommented() {
        let text = include_str!("../deploy/aupgate.toml");
        let (start, end) = (text.find("# url = ").unwrap(), text.find("# [radius]").unwrap());
        let mut t = text[..start].to_owned();
        for line in text[start..end].lines().filter_map(|l| l.strip_prefix("# ")) {
            let key = line.split_once(" = ").map(|(k, _)| k);
            if line.starts_with('[') || key.is_some_and(|k| k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')) {
                t.push_str(line);
                t.push('\n');
            }
        }
        let a = Config::parse(&t, Path::new("t")).unwrap().admin.expect("[admin]");
        let o = a.oidc.expect("[admin.oidc]");
        assert_eq!(
            o.redirect_uri,
            "https://gateway.claremont.example.sch.uk:8443/login/oidc/callback"
        );
        assert_eq!(o.issuer, "https://login.microsoftonline.com/TENANT-ID/v2.0");
        assert_eq!(o.client_secret_file, Path::new("/etc/aupgate/oidc-secret"));
        assert_eq!(o.display_name, "School account");
        assert_eq!(
            o.role_of("dpo@claremont.example.sch.uk"),
            Some(crate::store::Role::Auditor)
        );
        assert_eq!(
            o.role_of("head@claremont.example.sch.uk"),
            Some(crate::store::Role::Staff)
        );
    }

    #[test]
    fn the_examples_radius_table_parses_once_uncommented() {
        let text = include_str!("../deploy/aupgate.toml");
        let at = text.find("# [radius]").unwrap();
        let mut t = text[..at].to_owned();
        for line in text[at..].lines().filter_map(|l| l.strip_prefix("# ")) {
            let key = line.split_once(" = ").map(|(k, _)| k);
            if line.starts_with('[') || key.is_some_and(|k| k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')) {
                t.push_str(line);
                t.push('\n');
            }
        }
        let r = Config::parse(&t, Path::new("t")).unwrap().radius.expect("[radius]");
        assert_eq!(r.servers[0].to_string(), "10.0.0.5:1813");
        assert_eq!(r.secret_file, Path::new("/etc/aupgate/radius-secret"));
        assert_eq!(r.nas_identifier, "claremont-gw");
        assert_eq!(r.interim, Some(std::time::Duration::from_secs(600)));
        assert_eq!(r.user_name, crate::store::accounting::UserName::Name);
        assert!(
            Config::parse(text, Path::new("t")).unwrap().radius.is_none(),
            "off in the example as shipped"
        );
    }

    #[test]
    fn unknown_key_is_rejected_and_named() {
        let text = include_str!("../deploy/aupgate.toml").replace("[guest]", "[guest]\nintreface = \"x\"");
        let e = Config::parse(&text, Path::new("a.toml")).unwrap_err().to_string();
        assert!(e.contains("intreface"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn syntax_errors_escape_control_characters_from_the_file() {
        // Found by the fuzzer (issue 10): toml quotes the bad line, control characters and all.
        let e = Config::parse("[school]\nname = \"a\x1b[2Jb\x7f\"\n", Path::new("t"))
            .unwrap_err()
            .to_string();
        assert!(!e.chars().any(char::is_control), "{e:?}");
        assert!(e.contains("\\u{1b}[2J"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (from, to, key) in [
            ("Europe/London", "Mars/Olympus", "school.timezone"),
            ("\"guest0\"", "\"bad name; drop\"", "guest.interface"),
            ("10.50.0.1", "10.50.0.300", "guest.address"),
        ] {
            let e = Config::parse(&GOOD.replace(from, to), Path::new("t"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{e}");
            assert!(e.contains("fix"), "{e}");
        }
    }

    #[test]
    fn hostname_is_used_in_urls_and_validated() {
        let c = Config::parse(
            &format!("{GOOD}[portal]\nhostname = \"WiFi.Claremont.sch.uk.\"\n"),
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(c.portal_url(), "http://wifi.claremont.sch.uk:8080/");
        for bad in ["portal", "-a.example", "a..example", "a b.example", "10.0.0.1"] {
            let e = Config::parse(&format!("{GOOD}[portal]\nhostname = \"{bad}\"\n"), Path::new("t"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("portal.hostname"), "{bad}: {e}");
        }
    }

    #[test]
    fn bare_ipv6_host_whose_last_group_is_digits_is_not_split_at_a_port() {
        // Found by the fuzzer (issue 10): the last group was taken for a port, so the portal's
        // own bare address was redirected and another address was served the portal page.
        let own = Config::parse(&format!("{GOOD}address6 = \"2001:db8::1:80\"\n"), Path::new("t")).unwrap();
        assert!(own.is_portal_host("2001:db8::1:80"));
        assert!(own.is_portal_host("[2001:db8::1:80]:8080"));
        assert!(!own.is_portal_host("2001:db8::1"));
        let other = Config::parse(&format!("{GOOD}address6 = \"fd00::1\"\n"), Path::new("t")).unwrap();
        assert!(!other.is_portal_host("fd00::1:8080"));
        assert!(!other.is_portal_host("fd00:0:0:0:0:0:1:1"));
        for host in [
            "fd00::1",
            "FD00::1",
            "[fd00::1]",
            "[fd00::1]:8080",
            "fd00:0:0:0:0:0:0:1",
            "10.50.0.1:8080",
        ] {
            assert!(other.is_portal_host(host), "{host}");
        }
    }

    #[test]
    fn tls_keys_come_in_pairs_and_need_a_hostname() {
        let with = |extra: &str| Config::parse(&format!("{GOOD}[portal]\n{extra}"), Path::new("t"));
        let c = with("hostname = \"wifi.school.test\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n").unwrap();
        assert_eq!(c.portal.tls.as_ref().unwrap().port, 443);
        assert_eq!(
            c.portal_https_url("/api/captive"),
            "https://wifi.school.test/api/captive"
        );
        let e = with("hostname = \"wifi.school.test\"\ntls_cert = \"c.pem\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("portal.tls_key"), "{e}");
        let e = with("tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("portal.hostname"), "{e}");
        assert!(with("").unwrap().portal.tls.is_none());
        assert_eq!(with("").unwrap().portal_https_url("/x"), "http://10.50.0.1:8080/x");
    }

    #[test]
    fn admin_listens_on_the_staff_side_only() {
        let with = |extra: &str| Config::parse(&format!("{GOOD}[admin]\n{extra}"), Path::new("t"));
        let a = with("listen = \"10.0.0.1:8443\"\n").unwrap().admin.unwrap();
        assert_eq!(a.listen.port(), 8443);
        assert_eq!(a.session_idle, jiff::SignedDuration::from_mins(30));
        for bad in ["0.0.0.0:8443", "10.50.0.1:8443", "nonsense"] {
            let e = with(&format!("listen = \"{bad}\"\n")).unwrap_err().to_string();
            assert!(e.contains("admin.listen"), "{bad}: {e}");
        }
        assert!(
            with("listen = \"10.0.0.1:8443\"\ntls_cert = \"c\"\n")
                .unwrap_err()
                .to_string()
                .contains("admin.tls_cert")
        );
        assert!(Config::parse(GOOD, Path::new("t")).unwrap().admin.is_none());
    }

    #[test]
    fn policy_reaccept_defaults_to_next_join() {
        assert_eq!(
            Config::parse(GOOD, Path::new("t")).unwrap().reaccept,
            Reaccept::NextJoin
        );
        let now = Config::parse(&format!("{GOOD}[policy]\nreaccept = \"immediately\"\n"), Path::new("t")).unwrap();
        assert_eq!(now.reaccept, Reaccept::Immediately);
        let e = Config::parse(&format!("{GOOD}[policy]\nreaccept = \"never\"\n"), Path::new("t"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("policy.reaccept"), "{e}");
    }

    #[test]
    fn audit_retention_defaults_to_a_year_and_is_bounded() {
        assert_eq!(Config::parse(GOOD, Path::new("t")).unwrap().retention_days, 365);
        let c = Config::parse(&format!("{GOOD}[audit]\nretention_days = 90\n"), Path::new("t")).unwrap();
        assert_eq!(c.retention(), jiff::SignedDuration::from_hours(90 * 24));
        let e = Config::parse(&format!("{GOOD}[audit]\nretention_days = 0\n"), Path::new("t"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("audit.retention_days") && e.contains("fix"), "{e}");
    }

    #[test]
    fn interface_names() {
        assert!(valid_interface_name("br-guest"));
        assert!(valid_interface_name("wlan0.10"));
        assert!(!valid_interface_name(""));
        assert!(!valid_interface_name("a\"b"));
        assert!(!valid_interface_name("sixteen-chars-xx"));
    }
}
