//! The hub's own configuration file (`aupgate hub --config /etc/aupgate/hub.toml`), with the
//! issue's keys: `[hub] listen, database, tls_cert, tls_key, client_ca, retention_days`. Errors
//! are the school config's (`ConfigError`): one line naming the key and the fix.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::ConfigError;

/// Where the hub's config is when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/aupgate/hub.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    hub: RawHub,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHub {
    listen: String,
    database: String,
    tls_cert: PathBuf,
    tls_key: PathBuf,
    client_ca: PathBuf,
    retention_days: Option<u32>,
}

/// The hub's settings, validated.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// Where sites send their events.
    pub listen: SocketAddr,
    /// The libpq connection string of its PostgreSQL database.
    pub database: String,
    /// Its certificate and key (PEM).
    pub tls: (PathBuf, PathBuf),
    /// The CA whose certificates sites prove who they are with (the CN is the site's name).
    pub client_ca: PathBuf,
    /// Days personal data is kept after a session ends, at the hub.
    pub retention_days: u32,
}

fn invalid(key: &'static str, problem: impl Into<String>, fix: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
        fix: fix.to_owned(),
    }
}

impl HubSettings {
    /// Reads and validates the file at `path`.
    ///
    /// # Errors
    /// The file cannot be read, is not valid TOML with exactly these keys, or a value is bad.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::resolve(crate::config::toml_file(path, "deploy/hub.toml")?)
    }

    /// Validates `text` (read from `origin`).
    ///
    /// # Errors
    /// As [`HubSettings::load`].
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        Self::resolve(crate::config::toml_text(text, origin)?)
    }

    fn resolve(raw: RawFile) -> Result<Self, ConfigError> {
        let h = raw.hub;
        let listen: SocketAddr = h.listen.trim().parse().map_err(|_| {
            invalid(
                "hub.listen",
                format!("{:?} is not an address:port", h.listen),
                "give the hub's address on the trust's network and a port, e.g. \"10.0.0.10:8743\"",
            )
        })?;
        let database = h.database.trim().to_owned();
        if database.parse::<tokio_postgres::Config>().is_err() {
            return Err(invalid(
                "hub.database",
                format!("{database:?} is not a PostgreSQL connection string"),
                "e.g. \"host=/run/postgresql dbname=aupgate user=aupgate\"",
            ));
        }
        let retention_days = crate::config::retention_days("hub.retention_days", h.retention_days, "trust")?;
        Ok(Self {
            listen,
            database,
            tls: (h.tls_cert, h.tls_key),
            client_ca: h.client_ca,
            retention_days,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[hub]
listen = "10.0.0.10:8743"
database = "host=/run/postgresql dbname=aupgate user=aupgate"
tls_cert = "/etc/aupgate/hub.pem"
tls_key = "/etc/aupgate/hub.key"
client_ca = "/etc/aupgate/sites-ca.pem"
retention_days = 365
"#;

    #[test]
    fn the_shipped_example_parses() {
        let s = HubSettings::parse(include_str!("../../deploy/hub.toml"), Path::new("deploy/hub.toml")).unwrap();
        assert_eq!(s.listen.to_string(), "10.0.0.10:8743");
        assert_eq!(s.retention_days, 365);
        let e = HubSettings::load(Path::new("/nonexistent/hub.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("from deploy/hub.toml in the aupgate source"), "{e}");
    }

    #[test]
    fn the_issues_example_parses() {
        let s = HubSettings::parse(GOOD, Path::new("hub.toml")).unwrap();
        assert_eq!(s.listen.to_string(), "10.0.0.10:8743");
        assert_eq!(s.database, "host=/run/postgresql dbname=aupgate user=aupgate");
        assert_eq!(s.retention_days, 365);
        assert_eq!(s.client_ca, Path::new("/etc/aupgate/sites-ca.pem"));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (from, to, key) in [
            ("10.0.0.10:8743", "hub.trust.example", "hub.listen"),
            (
                "host=/run/postgresql dbname=aupgate user=aupgate",
                "host='unclosed",
                "hub.database",
            ),
            ("retention_days = 365", "retention_days = 0", "hub.retention_days"),
        ] {
            let e = HubSettings::parse(&GOOD.replace(from, to), Path::new("hub.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("config key {key}:")) && e.contains("fix:"),
                "{e}"
            );
        }
        let e = HubSettings::parse(&GOOD.replace("retention_days", "retention"), Path::new("hub.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("hub.toml") && e.contains("retention"), "{e}");
    }
}
