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
