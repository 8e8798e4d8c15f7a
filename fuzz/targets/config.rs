//! Target `config`: `Config::parse`, the TOML text → `RawConfig` → `Config` validation, fed whole
//! config files. A config it accepts keeps every documented invariant and gives URLs the portal
//! itself recognises; a refusal is one line naming what to fix. `@TMP@` in an input is replaced by
//! a temporary folder (holding a certificate, a key and a policy), so any path the resolve stage
//! may look at is inside it; the folder is checked after every case to hold exactly what it held.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use aupgate::config::{Config, ConfigError};
use axum::http::{HeaderValue, Uri};

use super::class_of;
use crate::driver::Target;

pub(crate) struct ConfigText {
    dir: tempfile::TempDir,
    dir_text: String,
    listing: Vec<PathBuf>,
}

impl ConfigText {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder for the config target");
        for (name, text) in [
            ("c.pem", "not a certificate\n"),
            ("k.pem", "not a key\n"),
            ("policy.md", "# Policy\n"),
        ] {
            std::fs::write(dir.path().join(name), text).expect("writing into the temporary folder");
        }
        std::fs::create_dir(dir.path().join("assets")).expect("creating a folder in the temporary folder");
        let dir_text = dir.path().display().to_string();
        let listing = listing(dir.path());
        Self { dir, dir_text, listing }
    }
}

impl Target for ConfigText {
    fn name(&self) -> &'static str {
        "config"
    }

    fn tokens(&self) -> &'static [&'static str] {
        &[
            "[school]\n",
            "[guest]\n",
            "[portal]\n",
            "[admin]\n",
            "[audit]\n",
            "[policy]\n",
            "[store]\n",
            "[control]\n",
            "name = ",
            "timezone = ",
            "\"Europe/London\"",
            "\"UTC\"",
            "\"../../etc/passwd\"",
            "dsl_contact = ",
            "interface = ",
            "\"br-guest\"",
            "address = ",
            "\"10.50.0.1\"",
            "address6 = ",
            "\"fd00::1\"",
            "hostname = ",
            "\"wifi.school.test\"",
            "\"WiFi.School.Test.\"",
            "port = ",
            "https_port = ",
            "= 0",
            "= 80",
            "= 443",
            "= 65535",
            "= 65536",
            "= -1",
            "= 1e400",
            "= true",
            "tls_cert = \"@TMP@/c.pem\"\n",
            "tls_key = \"@TMP@/k.pem\"\n",
            "assets = \"@TMP@/assets\"\n",
            "policy = \"@TMP@/policy.md\"\n",
            "path = \"@TMP@/x.db\"\n",
            "socket = \"@TMP@/s.sock\"\n",
            "listen = \"10.0.0.1:8443\"\n",
            "listen = \"[::1]:8443\"\n",
            "session_idle_minutes = ",
            "retention_days = ",
            "reaccept = \"immediately\"\n",
            "ssid = ",
            "wifi_password = ",
            "\"\"\"",
            "'''",
            "= { }",
            "[[school]]",
            "= [1, 2]",
            "\\u0000",
            "\\n",
            "#",
            "99999999999999999999",
            "\"@TMP@\"",
        ]
    }

    fn check(&mut self, input: &[u8]) -> Result<u64, String> {
        let text = String::from_utf8_lossy(input).replace("@TMP@", &self.dir_text);
        let origin = self.dir.path().join("aupgate.toml");
        let result = Config::parse(&text, &origin);
        let again = Config::parse(&text, &origin);
        if format!("{result:?}") != format!("{again:?}") {
            return Err("two parses of the same text disagree".into());
        }
        let class = match &result {
            Ok(c) => {
                accepted(c)?;
                1 + u64::from(c.portal.hostname.is_some())
                    + 2 * u64::from(c.portal.tls.is_some())
                    + 4 * u64::from(c.admin.is_some())
                    + 8 * u64::from(c.guest.address6.is_some())
            }
            Err(e) => refused(e, &origin)?,
        };
        if listing(self.dir.path()) != self.listing {
            return Err(format!("the temporary folder changed: {:?}", listing(self.dir.path())));
        }
        Ok(class)
    }
}

/// The invariants `Config` documents, and URLs that work: the redirect's `Location` is a valid
/// header, and its host (and the API's) is one the portal serves rather than redirects.
fn accepted(c: &Config) -> Result<(), String> {
    let fail = |what: &str| Err(format!("accepted config has {what}: {c:?}"));
    if c.school.name.is_empty() || c.school.name.trim() != c.school.name {
        return fail("an empty or untrimmed school.name");
    }
    if c.school.dsl_contact.is_empty() || c.school.dsl_contact.trim() != c.school.dsl_contact {
        return fail("an empty or untrimmed school.dsl_contact");
    }
    // The interface name goes into the nft script: nothing that could end a token.
    let iface = &c.guest.interface;
    if !(1..=15).contains(&iface.len())
        || !iface
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@:".contains(&b))
    {
        return fail("an interface name nft cannot take as one token");
    }
    let a = c.guest.address;
    if a.is_unspecified() || a.is_broadcast() || a.is_multicast() {
        return fail("a guest address that cannot be the router's");
    }
    if c.portal.port == 0 {
        return fail("portal.port 0");
    }
    if let Some(h) = &c.portal.hostname
        && (h.is_empty()
            || h.ends_with('.')
            || !h.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.')))
    {
        return fail("a hostname that is not lower-case letters, digits, '-' and '.'");
    }
    if let Some(tls) = &c.portal.tls
        && (c.portal.hostname.is_none() || tls.port == 0 || tls.port == c.portal.port)
    {
        return fail("HTTPS without a hostname, or on port 0 or the HTTP port");
    }
    if c.guest.ssid.as_ref().is_some_and(|s| !(1..=32).contains(&s.len())) {
        return fail("an SSID that is not 1 to 32 bytes");
    }
    if c.guest
        .wifi_password
        .as_ref()
        .is_some_and(|p| !(8..=63).contains(&p.len()))
    {
        return fail("a WPA passphrase that is not 8 to 63 characters");
    }
    if let Some(admin) = &c.admin {
        let ip = admin.listen.ip();
        if ip.is_unspecified() || ip == IpAddr::V4(a) || Some(ip) == c.guest.address6.map(IpAddr::V6) {
            return fail("an admin listener the guest side can reach");
        }
        if !(1..=24 * 60).contains(&admin.session_idle.as_mins()) {
            return fail("an admin idle time outside 1 to 1440 minutes");
        }
    }
    if !(1..=3650).contains(&c.retention_days) {
        return fail("a retention outside 1 to 3650 days");
    }
    let location = c.portal_url();
    if HeaderValue::from_str(&location).is_err() {
        return Err(format!("portal URL {location:?} is not a valid Location header"));
    }
    portal_serves(c, &location, "http", "/")?;
    let api = c.portal_https_url("/api/captive");
    let scheme = if c.portal.tls.is_some() { "https" } else { "http" };
    portal_serves(c, &api, scheme, "/api/captive")
}

/// `url` parses, has `scheme` and `path`, and the portal treats its host as itself (a guest sent
/// there must get the page, not another redirect).
fn portal_serves(c: &Config, url: &str, scheme: &str, path: &str) -> Result<(), String> {
    let uri: Uri = url.parse().map_err(|e| format!("URL {url:?} does not parse: {e}"))?;
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    if uri.scheme_str() != Some(scheme) || uri.path() != path || !c.is_portal_host(authority) {
        return Err(format!("URL {url:?} is not {scheme}://<the portal>{path}"));
    }
    Ok(())
}

/// A refusal is one printable line; an `Invalid` one names its key and the fix.
fn refused(e: &ConfigError, origin: &Path) -> Result<u64, String> {
    let msg = e.to_string();
    if msg.chars().any(char::is_control) {
        return Err(format!("error message is not one printable line: {msg:?}"));
    }
    match e {
        ConfigError::Invalid { key, .. } => {
            if !msg.contains(key) || !msg.contains("(fix: ") {
                return Err(format!("error does not name its key and fix: {msg:?}"));
            }
            Ok(100 + class_of(key) % 1000)
        }
        ConfigError::Syntax { path, .. } if path == origin => Ok(99),
        other => Err(format!("unexpected error from parse: {other:?}")),
    }
}

fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.sort();
    paths
}
