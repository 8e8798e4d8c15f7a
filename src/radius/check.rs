//! What `aupgate check` says of RADIUS accounting: the secret file (never its content), each
//! server (an address off the school's LAN is a warning: names and MACs go in clear), and the
//! records still waiting in the store.

use std::net::{IpAddr, ToSocketAddrs};
use std::path::Path;

use super::{Secret, Settings};
use crate::doctor::Level;
use crate::store::Store;
use crate::store::accounting::{RADIUS, UserName};

/// Whether `ip` stays on a private network.
fn private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00 || v6.is_loopback() || v6.is_unicast_link_local(),
    }
}

/// The findings for `settings`; `store` is the store's file (opened read-only, if it exists).
pub fn findings(settings: Option<&Settings>, store: &Path) -> Vec<(Level, String)> {
    let Some(s) = settings else {
        return vec![(
            Level::Ok,
            "off (no [radius]): the web filter sees guests' addresses only".to_owned(),
        )];
    };
    let mut out = Vec::new();
    match Secret::load("radius.secret_file", &s.secret_file) {
        Ok(secret) if secret.len() < 16 => out.push((
            Level::Warn,
            format!(
                "radius.secret_file {}: the secret is shorter than 16 characters (fix: use a long random one on both ends, e.g. openssl rand -hex 16)",
                s.secret_file.display()
            ),
        )),
        Ok(_) => out.push((Level::Ok, format!("shared secret read from {}", s.secret_file.display()))),
        Err(e) => out.push((Level::Fail, format!("config key {e}"))),
    }
    for server in &s.servers {
        match (server.host.as_str(), server.port).to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(addr)) if !private(addr.ip()) => out.push((
                Level::Warn,
                format!(
                    "radius.servers: {server} ({}) is not on a private network, and accounting carries names and MACs in clear (fix: send it to a server on the school's LAN)",
                    addr.ip()
                ),
            )),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => out.push((
                Level::Warn,
                format!("radius.servers: {server} does not resolve (fix: use its address, or a name this router resolves)"),
            )),
        }
    }
    let carries = match s.user_name {
        UserName::Name => "the name each guest typed",
        UserName::Course => "the course title",
        UserName::Device => "the device's MAC",
    };
    let interim = s.interim.map_or_else(
        || "no Interim-Updates".to_owned(),
        |i| format!("Interim-Update every {} min", i.as_secs() / 60),
    );
    let servers: Vec<String> = s.servers.iter().map(ToString::to_string).collect();
    out.push((
        Level::Ok,
        format!(
            "accounting to {} as NAS-Identifier {:?}; User-Name carries {carries}; {interim}",
            servers.join(", then "),
            s.nas_identifier
        ),
    ));
    if store.exists() {
        match Store::open_read_only(store).and_then(|st| st.outbox_backlog(RADIUS)) {
            Ok(b) if b.pending == 0 => out.push((Level::Ok, "all accounting records delivered".to_owned())),
            Ok(b) => out.push((
                Level::Warn,
                format!(
                    "{} accounting record(s) waiting since {}; last try: {} (fix: check that the server is up, lists this router as a client with the same secret, and that UDP to it is not blocked; nothing is lost meanwhile)",
                    b.pending,
                    b.oldest.map_or_else(|| "?".to_owned(), |t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()),
                    b.last_error.as_deref().unwrap_or("not sent yet"),
                ),
            )),
            // An older schema (before migration 8) has no outbox yet: nothing waits.
            Err(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::radius::settings::Server;

    fn settings(secret_file: &Path, host: &str) -> Settings {
        Settings {
            servers: vec![Server {
                host: host.into(),
                port: 1813,
            }],
            secret_file: secret_file.to_owned(),
            nas_identifier: "gw".into(),
            interim: Some(std::time::Duration::from_secs(600)),
            user_name: UserName::Course,
        }
    }

    fn level_of(found: &[(Level, String)], needle: &str) -> Option<Level> {
        found.iter().find(|(_, m)| m.contains(needle)).map(|(l, _)| *l)
    }

    #[test]
    fn off_secret_servers_and_backlog_are_each_reported_and_the_secret_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("a.db");
        let off = findings(None, &store);
        assert_eq!(off[0].0, Level::Ok);
        assert!(off[0].1.starts_with("off"));

        let secret = dir.path().join("secret");
        let missing = findings(Some(&settings(&secret, "10.0.0.5")), &store);
        assert_eq!(
            level_of(&missing, "radius.secret_file"),
            Some(Level::Fail),
            "{missing:?}"
        );

        std::fs::write(&secret, "short-secret\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
        let found = findings(Some(&settings(&secret, "192.0.2.77")), &store);
        assert_eq!(level_of(&found, "shorter than 16"), Some(Level::Warn), "{found:?}");
        assert_eq!(
            level_of(&found, "not on a private network"),
            Some(Level::Warn),
            "{found:?}"
        );
        assert_eq!(
            level_of(
                &found,
                "User-Name carries the course title; Interim-Update every 10 min"
            ),
            Some(Level::Ok),
            "{found:?}"
        );
        assert!(found.iter().all(|(_, m)| !m.contains("short-secret")), "{found:?}");

        std::fs::write(&secret, "a-long-enough-shared-secret\n").unwrap();
        let s = Store::open(&store).unwrap();
        s.set_accounting(UserName::Course);
        let mac = "02:99:00:00:00:07".parse().unwrap();
        let now = "2026-11-23T10:00:00Z".parse().unwrap();
        s.grant_exception(mac, "x", "staff", now, "2026-11-23T12:00:00Z".parse().unwrap())
            .unwrap();
        let seen = crate::store::accounting::Addresses::from_recent(&["10.50.0.20".parse().unwrap()]);
        s.account_addresses(mac, seen, now).unwrap();
        let found = findings(Some(&settings(&secret, "10.0.0.5")), &store);
        assert_eq!(level_of(&found, "shared secret read"), Some(Level::Ok), "{found:?}");
        assert_eq!(
            level_of(
                &found,
                "1 accounting record(s) waiting since 2026-11-23 10:00:00 UTC; last try: not sent yet"
            ),
            Some(Level::Warn),
            "{found:?}"
        );
    }
}
