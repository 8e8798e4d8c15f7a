//! `[admin.oidc]`: the file's keys (`RawOidc`, read by `config`) and what they resolve to
//! (`Settings`), with who may sign in (`Allowed`) and as what.

use std::path::PathBuf;

use openidconnect::url::Url;
use serde::Deserialize;

use crate::config::ConfigError;
use crate::store::Role;

/// The button's words when `display_name` is left out: "Sign in with School account".
pub const DEFAULT_DISPLAY_NAME: &str = "School account";
/// Where the provider sends staff back, under the admin's address.
pub const CALLBACK_PATH: &str = "/login/oidc/callback";

/// `[admin.oidc]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    issuer: String,
    client_id: String,
    client_secret_file: PathBuf,
    ca_file: Option<PathBuf>,
    display_name: Option<String>,
    #[serde(default)]
    staff: Vec<String>,
    #[serde(default)]
    auditors: Vec<String>,
}

/// One entry of `staff` or `auditors`: a whole address, or every address of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// `it.support@claremont.example.sch.uk`, lower-cased.
    Address(String),
    /// `@claremont.example.sch.uk`: the domain, lower-cased, without the `@`.
    Domain(String),
}

/// Who may sign in: e-mail addresses and `@domain`s. Matching ignores case; a domain matches
/// its own addresses only, not its subdomains'.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed(Vec<Entry>);

impl Allowed {
    fn parse(key: &'static str, entries: &[String]) -> Result<Self, ConfigError> {
        let bad = |e: &str| {
            invalid(
                key,
                format!("{e:?} is neither an e-mail address nor @domain"),
                "list addresses (\"it.support@school.sch.uk\") or whole domains (\"@school.sch.uk\")",
            )
        };
        let mut out = Vec::with_capacity(entries.len());
        for raw in entries {
            let e = raw.trim().to_ascii_lowercase();
            if !e.is_ascii() {
                return Err(bad(raw));
            }
            let entry = match e.split_once('@') {
                Some(("", domain)) if valid_domain(domain) => Entry::Domain(domain.to_owned()),
                Some((local, domain)) if !local.is_empty() && valid_local(local) && valid_domain(domain) => {
                    Entry::Address(e.clone())
                }
                _ => return Err(bad(raw)),
            };
            out.push(entry);
        }
        Ok(Self(out))
    }

    /// Whether `email` is listed, itself or by its domain. Only a plain (ASCII) address can be:
    /// Unicode case folding could turn another address into a listed one.
    pub fn contains(&self, email: &str) -> bool {
        if !email.is_ascii() {
            return false;
        }
        let email = email.trim().to_ascii_lowercase();
        let Some((local, domain)) = email.rsplit_once('@') else {
            return false;
        };
        if local.is_empty() {
            return false;
        }
        self.0.iter().any(|e| match e {
            Entry::Address(a) => *a == email,
            Entry::Domain(d) => d == domain,
        })
    }

    /// How many entries it has.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn valid_local(local: &str) -> bool {
    !local.chars().any(|c| c.is_whitespace() || c.is_control() || c == '@')
}

fn valid_domain(domain: &str) -> bool {
    domain.contains('.') && crate::config::valid_hostname(domain)
}

/// OpenID Connect sign-in for staff, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The issuer, exactly as the provider's tokens name it; discovery is under it.
    pub issuer: String,
    /// The client id the provider gave aupgate.
    pub client_id: String,
    /// The file holding the client secret (read when it is first needed).
    pub client_secret_file: PathBuf,
    /// An extra CA to trust for the provider, beside the system's.
    pub ca_file: Option<PathBuf>,
    /// The button reads "Sign in with" this.
    pub display_name: String,
    /// The redirect URI to register at the provider.
    pub redirect_uri: String,
    /// `scheme://host:port` of the admin as staff reach it (the redirect URI's origin).
    pub origin: String,
    /// Signed in as staff.
    pub staff: Allowed,
    /// Signed in as auditors (first: an address in both lists is an auditor).
    pub auditors: Allowed,
}

impl Settings {
    /// The role `email` signs in with, or `None` if it is in neither list.
    pub fn role_of(&self, email: &str) -> Option<Role> {
        if self.auditors.contains(email) {
            Some(Role::Auditor)
        } else if self.staff.contains(email) {
            Some(Role::Staff)
        } else {
            None
        }
    }

    /// The `Host` the admin is reached by in the redirect URI (`host` or `host:port`).
    pub fn host(&self) -> &str {
        self.origin.split_once("://").map_or(&self.origin, |(_, h)| h)
    }
}

fn invalid(key: &'static str, problem: impl Into<String>, fix: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
        fix: fix.to_owned(),
    }
}

/// The admin's address as staff type it, `https://host[:port]`: `url` from `[admin] url`, or
/// the listening address. Returns the origin, with the port only when it is not 443.
///
/// # Errors
/// `admin.url` is not an https origin.
pub fn origin(url: Option<&str>, listen: std::net::SocketAddr) -> Result<String, ConfigError> {
    let Some(text) = url else {
        return Ok(match listen.port() {
            443 => format!("https://{}", bracketed(listen.ip())),
            port => format!("https://{}:{port}", bracketed(listen.ip())),
        });
    };
    let fix = "give the address staff type to reach the admin, e.g. \"https://gateway.school.sch.uk:8443\"";
    let parsed = Url::parse(text.trim()).map_err(|e| invalid("admin.url", format!("{text:?}: {e}"), fix))?;
    if parsed.scheme() != "https"
        || parsed.host_str().is_none()
        || !matches!(parsed.path(), "" | "/")
        || parsed.query().is_some()
        || parsed.fragment().is_some()
        || !parsed.username().is_empty()
    {
        return Err(invalid(
            "admin.url",
            format!("{text:?} is not https://host[:port]"),
            fix,
        ));
    }
    let host = parsed.host_str().unwrap_or_default();
    Ok(match parsed.port() {
        None => format!("https://{host}"),
        Some(port) => format!("https://{host}:{port}"),
    })
}

fn bracketed(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

impl RawOidc {
    /// Validates `[admin.oidc]`; `origin` is the admin's address as staff reach it.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key and the fix.
    pub fn resolve(self, origin: String) -> Result<Settings, ConfigError> {
        let issuer = self.issuer.trim().to_owned();
        let issuer_ok = Url::parse(&issuer).is_ok_and(|u| {
            u.scheme() == "https" && u.host_str().is_some() && u.query().is_none() && u.fragment().is_none()
        });
        if !issuer_ok {
            return Err(invalid(
                "admin.oidc.issuer",
                format!("{issuer:?} is not an https URL"),
                "give the provider's issuer, e.g. \"https://login.microsoftonline.com/TENANT-ID/v2.0\" or \"https://accounts.google.com\"",
            ));
        }
        let client_id = self.client_id.trim().to_owned();
        if client_id.is_empty() || client_id.chars().any(char::is_control) {
            return Err(invalid(
                "admin.oidc.client_id",
                "is empty",
                "copy the client (application) id from the provider's app registration",
            ));
        }
        let display_name = match self.display_name.as_deref().map(str::trim) {
            None => DEFAULT_DISPLAY_NAME.to_owned(),
            Some(d) if !d.is_empty() && d.chars().count() <= 60 && !d.chars().any(char::is_control) => d.to_owned(),
            Some(_) => {
                return Err(invalid(
                    "admin.oidc.display_name",
                    "must be 1 to 60 printable characters",
                    "name the account as staff know it, e.g. \"School account\"",
                ));
            }
        };
        let staff = Allowed::parse("admin.oidc.staff", &self.staff)?;
        let auditors = Allowed::parse("admin.oidc.auditors", &self.auditors)?;
        if staff.is_empty() && auditors.is_empty() {
            return Err(invalid(
                "admin.oidc.staff",
                "and admin.oidc.auditors are both empty, so nobody could sign in",
                "list staff's addresses or \"@school.sch.uk\" in staff, and the DSL's and DPO's in auditors",
            ));
        }
        Ok(Settings {
            issuer,
            client_id,
            client_secret_file: self.client_secret_file,
            ca_file: self.ca_file,
            display_name,
            redirect_uri: format!("{origin}{CALLBACK_PATH}"),
            origin,
            staff,
            auditors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawOidc {
        RawOidc {
            issuer: "https://login.microsoftonline.com/0b5a6f0e-1111-2222-3333-444455556666/v2.0".into(),
            client_id: "9f1c".into(),
            client_secret_file: "/etc/aupgate/oidc-secret".into(),
            ca_file: None,
            display_name: None,
            staff: vec![
                "it.support@claremont.example.sch.uk".into(),
                "@Claremont.Example.sch.uk".into(),
            ],
            auditors: vec!["dpo@claremont.example.sch.uk".into()],
        }
    }

    fn listen(s: &str) -> std::net::SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn roles_by_address_and_domain_auditors_first_ignoring_case() {
        let s = raw().resolve("https://10.0.0.1:8443".into()).unwrap();
        assert_eq!(s.role_of("DPO@claremont.example.sch.uk"), Some(Role::Auditor));
        assert_eq!(s.role_of("j.bloggs@claremont.example.sch.uk"), Some(Role::Staff));
        assert_eq!(s.role_of("it.support@claremont.example.sch.uk"), Some(Role::Staff));
        for stranger in [
            "someone@gmail.com",
            "a@sub.claremont.example.sch.uk",
            "a@claremont.example.sch.uk.evil.example",
            "\u{212A}im@claremont.example.sch.uk",
            "@claremont.example.sch.uk",
            "claremont.example.sch.uk",
            "",
        ] {
            assert_eq!(s.role_of(stranger), None, "{stranger}");
        }
        assert_eq!(s.display_name, "School account");
        assert_eq!(s.redirect_uri, "https://10.0.0.1:8443/login/oidc/callback");
        assert_eq!(s.host(), "10.0.0.1:8443");
    }

    #[test]
    fn the_origin_is_the_admin_url_or_the_listening_address() {
        assert_eq!(origin(None, listen("10.0.0.1:8443")).unwrap(), "https://10.0.0.1:8443");
        assert_eq!(origin(None, listen("[fd00::1]:443")).unwrap(), "https://[fd00::1]");
        assert_eq!(
            origin(Some("https://Gateway.School.sch.uk:8443/"), listen("10.0.0.1:8443")).unwrap(),
            "https://gateway.school.sch.uk:8443"
        );
        assert_eq!(
            origin(Some("https://gateway.school.sch.uk:443"), listen("10.0.0.1:8443")).unwrap(),
            "https://gateway.school.sch.uk"
        );
        for bad in [
            "http://gateway:8443",
            "https://gateway/admin",
            "gateway:8443",
            "https://gateway/?a=1",
        ] {
            let e = origin(Some(bad), listen("10.0.0.1:8443")).unwrap_err().to_string();
            assert!(
                e.starts_with("config key admin.url:") && e.contains("fix:"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        for (r, key) in [
            (
                RawOidc {
                    issuer: "http://idp.example".into(),
                    ..raw()
                },
                "admin.oidc.issuer",
            ),
            (
                RawOidc {
                    client_id: " ".into(),
                    ..raw()
                },
                "admin.oidc.client_id",
            ),
            (
                RawOidc {
                    display_name: Some(String::new()),
                    ..raw()
                },
                "admin.oidc.display_name",
            ),
            (
                RawOidc {
                    staff: vec!["claremont.example.sch.uk".into()],
                    ..raw()
                },
                "admin.oidc.staff",
            ),
            (
                RawOidc {
                    auditors: vec!["dpo@".into()],
                    ..raw()
                },
                "admin.oidc.auditors",
            ),
            (
                RawOidc {
                    staff: vec![],
                    auditors: vec![],
                    ..raw()
                },
                "admin.oidc.staff",
            ),
        ] {
            let e = r.resolve("https://10.0.0.1:8443".into()).unwrap_err().to_string();
            assert!(e.starts_with(&format!("config key {key}:")), "{e}");
            assert!(e.contains("fix:"), "{e}");
        }
    }
}
