//! `[radius]`: the file's keys (`RawRadius`, read by `config`) and what they resolve to
//! (`Settings`). The shared secret is a [`crate::secret::Secret`], read from its own file.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;
use crate::store::accounting::UserName;

/// The accounting port (RFC 2866).
pub const DEFAULT_PORT: u16 = 1813;
/// `interim_minutes` when the key is left out.
pub const DEFAULT_INTERIM_MINUTES: u32 = 10;

/// `[radius]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRadius {
    servers: Vec<String>,
    secret_file: PathBuf,
    nas_identifier: Option<String>,
    interim_minutes: Option<u32>,
    user_name: Option<String>,
}

/// One accounting server, as configured (a name is looked up at each send).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// An address or a DNS name.
    pub host: String,
    /// Its accounting port.
    pub port: u16,
}

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// RADIUS accounting, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Tried in order.
    pub servers: Vec<Server>,
    /// The shared secret's file.
    pub secret_file: PathBuf,
    /// NAS-Identifier.
    pub nas_identifier: String,
    /// How often an open session gets an Interim-Update; `None`: never.
    pub interim: Option<Duration>,
    /// What User-Name carries.
    pub user_name: UserName,
}

fn invalid(key: &'static str, problem: impl Into<String>, fix: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
        fix: fix.to_owned(),
    }
}

/// `host:port`, `[v6]:port`, or a host alone (port 1813).
fn server(text: &str) -> Option<Server> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Some(Server {
            host: ip.to_string(),
            port: DEFAULT_PORT,
        });
    }
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return (addr.port() != 0).then(|| Server {
            host: addr.ip().to_string(),
            port: addr.port(),
        });
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok().filter(|p| *p != 0)?),
        None => (text, DEFAULT_PORT),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    crate::config::valid_hostname(&host).then_some(Server { host, port })
}

/// The school's name as a NAS-Identifier: lower-case letters, digits and dashes.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-');
    let cut = out.len().min(64);
    out[..cut].trim_end_matches('-').to_owned()
}

impl RawRadius {
    /// Validates `[radius]`; `school` names the default NAS-Identifier.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key and the fix.
    pub fn resolve(self, school: &str) -> Result<Settings, ConfigError> {
        if self.servers.is_empty() {
            return Err(invalid(
                "radius.servers",
                "is empty",
                "list the filter's or RADIUS server's accounting address, e.g. [\"10.0.0.5:1813\"], or remove [radius]",
            ));
        }
        let servers = self
            .servers
            .iter()
            .map(|s| {
                server(s).ok_or_else(|| {
                    invalid(
                        "radius.servers",
                        format!("{s:?} is not host:port"),
                        "give each as an address or name and its accounting port, e.g. \"10.0.0.5:1813\"",
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let nas_identifier = match self.nas_identifier {
            Some(id) => {
                let id = id.trim().to_owned();
                if id.is_empty() || id.len() > 64 || id.chars().any(|c| c.is_control()) {
                    return Err(invalid(
                        "radius.nas_identifier",
                        "must be 1 to 64 printable characters",
                        "name this router as the filter knows it, e.g. \"claremont-gw\", or remove the key",
                    ));
                }
                id
            }
            None => match slug(school) {
                s if s.is_empty() => "aupgate".to_owned(),
                s => s,
            },
        };
        let minutes = self.interim_minutes.unwrap_or(DEFAULT_INTERIM_MINUTES);
        if minutes > 24 * 60 {
            return Err(invalid(
                "radius.interim_minutes",
                format!("{minutes} is out of range"),
                "use 0 (no Interim-Update) to 1440 minutes; 10 by default",
            ));
        }
        let user_name = match self.user_name.as_deref().map(str::trim) {
            None | Some("name") => UserName::Name,
            Some("course") => UserName::Course,
            Some("device") => UserName::Device,
            Some(other) => {
                return Err(invalid(
                    "radius.user_name",
                    format!("{other:?} is not a choice"),
                    "use \"name\" (as the guest typed it), \"course\" (the course title) or \"device\" (the MAC)",
                ));
            }
        };
        Ok(Settings {
            servers,
            secret_file: self.secret_file,
            nas_identifier,
            interim: (minutes > 0).then(|| Duration::from_secs(60 * u64::from(minutes))),
            user_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(servers: &[&str]) -> RawRadius {
        RawRadius {
            servers: servers.iter().map(|s| (*s).to_owned()).collect(),
            secret_file: "/etc/aupgate/radius-secret".into(),
            nas_identifier: None,
            interim_minutes: None,
            user_name: None,
        }
    }

    #[test]
    fn servers_defaults_and_choices() {
        let s = raw(&["10.0.0.5:1813", "radius.school.lan", "[fd00::5]:1814", "fd00::6"])
            .resolve("Claremont Primary School!")
            .unwrap();
        let shown: Vec<String> = s.servers.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "10.0.0.5:1813",
                "radius.school.lan:1813",
                "[fd00::5]:1814",
                "[fd00::6]:1813"
            ]
        );
        assert_eq!(s.nas_identifier, "claremont-primary-school");
        assert_eq!(s.interim, Some(Duration::from_secs(600)));
        assert_eq!(s.user_name, UserName::Name);
        let mut r = raw(&["10.0.0.5"]);
        r.interim_minutes = Some(0);
        r.user_name = Some("device".into());
        r.nas_identifier = Some("claremont-gw".into());
        let s = r.resolve("x").unwrap();
        assert_eq!(
            (s.interim, s.user_name, s.nas_identifier.as_str()),
            (None, UserName::Device, "claremont-gw")
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        for (r, key) in [
            (raw(&[]), "radius.servers"),
            (raw(&["10.0.0.5:0"]), "radius.servers"),
            (raw(&["http://10.0.0.5/"]), "radius.servers"),
            (
                RawRadius {
                    interim_minutes: Some(5000),
                    ..raw(&["10.0.0.5"])
                },
                "radius.interim_minutes",
            ),
            (
                RawRadius {
                    user_name: Some("email".into()),
                    ..raw(&["10.0.0.5"])
                },
                "radius.user_name",
            ),
            (
                RawRadius {
                    nas_identifier: Some(" ".into()),
                    ..raw(&["10.0.0.5"])
                },
                "radius.nas_identifier",
            ),
        ] {
            let e = r.resolve("School").unwrap_err().to_string();
            assert!(e.starts_with(&format!("config key {key}:")), "{e}");
            assert!(e.contains("fix:"), "{e}");
        }
    }
}
