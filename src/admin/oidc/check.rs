//! What `aupgate check` says of staff sign-in with the school's account: the redirect URI to
//! register, the client secret file (never its content), the CA file, and whether the
//! provider's discovery document can be fetched (a warning only: the router may be offline,
//! and local accounts still work).

use super::{Provider, Refusal, Settings};
use crate::doctor::Level;
use crate::secret::Secret;

/// The findings for `settings` (`None`: the section is absent), fetching discovery on `runtime`.
pub fn findings(settings: Option<&Settings>, runtime: &tokio::runtime::Runtime) -> Vec<(Level, String)> {
    let Some(s) = settings else {
        return vec![(
            Level::Ok,
            "off (no [admin.oidc]): staff sign in with local accounts only".to_owned(),
        )];
    };
    let mut out = vec![(
        Level::Ok,
        format!(
            "register this redirect URI at the provider: {} (scopes openid email profile)",
            s.redirect_uri
        ),
    )];
    match Secret::load("admin.oidc.client_secret_file", &s.client_secret_file) {
        Ok(secret) if std::str::from_utf8(secret.bytes()).is_err() => out.push((
            Level::Fail,
            format!(
                "config key admin.oidc.client_secret_file {}: it is not UTF-8 text (fix: paste the secret's value as the provider shows it)",
                s.client_secret_file.display()
            ),
        )),
        Ok(_) => out.push((
            Level::Ok,
            format!("client secret read from {}", s.client_secret_file.display()),
        )),
        Err(e) => out.push((Level::Fail, format!("config key {e}"))),
    }
    let provider = Provider::new(s.clone());
    if let Err(e) = &provider.http {
        out.push((Level::Fail, format!("config key {e}")));
        return out;
    }
    match runtime.block_on(provider.discover()) {
        Ok(doc) => out.push((
            Level::Ok,
            format!(
                "{} answers discovery ({} signing key(s)); staff listed: {}, auditors: {}",
                s.issuer,
                doc.jwks().keys().len(),
                s.staff.len(),
                s.auditors.len()
            ),
        )),
        Err(Refusal::Unavailable(e) | Refusal::Token(e)) => out.push((
            Level::Warn,
            format!(
                "{e} (fix: check admin.oidc.issuer, and that this router reaches the provider over HTTPS; until then staff sign in with local accounts)"
            ),
        )),
        Err(e) => out.push((Level::Warn, e.to_string())),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn settings(secret: &std::path::Path) -> Settings {
        let text = format!(
            "{}[admin]\nlisten = \"10.0.0.1:8443\"\n[admin.oidc]\nissuer = \"https://127.0.0.1:9\"\nclient_id = \"aupgate\"\nclient_secret_file = \"{}\"\nstaff = [\"@school.sch.uk\"]\n",
            crate::testing::CONFIG,
            secret.display()
        );
        let config = crate::config::Config::parse(&text, std::path::Path::new("t")).unwrap();
        config.admin.unwrap().oidc.unwrap()
    }

    #[test]
    fn an_offline_provider_is_a_warning_and_a_missing_secret_a_failure() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("oidc-secret");
        let found = findings(Some(&settings(&secret)), &runtime);
        assert_eq!(found[0].0, Level::Ok);
        assert!(
            found[0].1.contains("https://10.0.0.1:8443/login/oidc/callback"),
            "{found:?}"
        );
        assert!(
            found.iter().any(|(l, m)| *l == Level::Fail
                && m.starts_with("config key admin.oidc.client_secret_file ")
                && m.contains("fix:")),
            "{found:?}"
        );
        std::fs::write(&secret, "s3cret-value\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let found = findings(Some(&settings(&secret)), &runtime);
        assert!(found.iter().all(|(l, _)| *l != Level::Fail), "{found:?}");
        let offline = found.last().unwrap();
        assert_eq!(offline.0, Level::Warn, "{found:?}");
        assert!(
            offline.1.contains("discovery at https://127.0.0.1:9") && offline.1.contains("local accounts"),
            "{offline:?}"
        );
        assert!(!format!("{found:?}").contains("s3cret"));
        assert_eq!(findings(None, &runtime)[0].0, Level::Ok);
    }
}
