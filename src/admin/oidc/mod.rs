//! Staff sign-in with the school's own account (Microsoft Entra ID, Google Workspace or any
//! OpenID Connect provider): the authorization-code flow with PKCE, `state` and `nonce`.
//!
//! The protocol and every check of the ID token are the `openidconnect` crate's: discovery,
//! the authorization request, the code exchange, and the token's signature against the
//! provider's keys, `iss`, `aud`, `exp` (with [`SKEW`]) and `nonce`. What is ours: the HTTP
//! client it talks through ([`http`]), the cache of the discovery document and keys (fetched
//! again hourly, and at once, at most every [`KEYS_REFRESH`], when a token names a key it does
//! not hold), and the sign-ins under way ([`Pending`]), each used once. Who may sign in, and as
//! what, is [`Settings::role_of`]; the web side (`admin::web::oidc`) holds the cookies and pages.

pub mod check;
mod http;
mod settings;

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata};
use openidconnect::{
    AuthType, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IssuerUrl, JsonWebKeySet,
    Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope, SignatureVerificationError,
    TokenResponse,
};

pub use settings::{CALLBACK_PATH, DEFAULT_DISPLAY_NAME, RawOidc, Settings, origin};

use crate::secret::Secret;

/// How far the provider's clock may be from ours, either way, for `exp` and `iat`.
pub const SKEW: SignedDuration = SignedDuration::from_secs(120);
/// How long a sign-in may take at the provider before its `state` is forgotten.
pub const PENDING_FOR: SignedDuration = SignedDuration::from_mins(10);
/// Sign-ins under way at most; past it the oldest is forgotten (a GET of /login/oidc needs no
/// session, so this bounds what anyone on the staff side can make the daemon hold).
pub const MAX_PENDING: usize = 256;
/// The discovery document and keys are fetched again after this long.
pub const METADATA_FOR: SignedDuration = SignedDuration::from_hours(1);
/// The keys are fetched again for an unknown `kid` at most this often.
pub const KEYS_REFRESH: SignedDuration = SignedDuration::from_secs(30);

/// Signature algorithms accepted for ID tokens: public-key ones only (an HMAC token would be
/// keyed by the client secret, which is ours too).
const ALGORITHMS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// Why a sign-in with the school's account did not happen. `Display` is the one log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The provider cannot be used now (unreachable, misconfigured, no secret).
    #[error("the provider cannot be used: {0}")]
    Unavailable(String),
    /// The provider sent the staff member back with an error (they cancelled, or it refused).
    #[error("the provider answered {error}: {description}")]
    Provider {
        /// Its `error` code.
        error: String,
        /// Its `error_description`, if any.
        description: String,
    },
    /// No sign-in under way with this browser: no cookie, expired, or already used (replayed).
    #[error("state refused: no sign-in under way with it (expired, already used, or never started here)")]
    NoPending,
    /// The `state` returned does not match the one this browser's sign-in sent.
    #[error("state refused: it does not match this browser's sign-in")]
    StateMismatch,
    /// The provider refused the code exchange.
    #[error("code exchange refused: {0}")]
    Exchange(String),
    /// The ID token did not verify (signature, issuer, audience, expiry, nonce).
    #[error("ID token refused: {0}")]
    Token(String),
    /// The token carries no e-mail address.
    #[error("the ID token has no e-mail address (add the email claim at the provider)")]
    NoEmail,
    /// The provider says the address is not verified.
    #[error("{0}: the provider says this e-mail address is not verified")]
    Unverified(String),
}

impl Refusal {
    /// Its label in the audit log and the metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Provider { .. } => "provider-error",
            Self::NoPending => "no-pending-sign-in",
            Self::StateMismatch => "state-mismatch",
            Self::Exchange(_) => "code-refused",
            Self::Token(_) => "token-refused",
            Self::NoEmail => "no-email",
            Self::Unverified(_) => "email-unverified",
        }
    }
}

/// Who the provider vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The e-mail address, lower-cased.
    pub email: String,
    /// The provider's `sub` for the account.
    pub subject: String,
}

/// What the provider sent back to the callback (its query).
#[derive(Debug, Clone, Default)]
pub struct Callback {
    /// `code`.
    pub code: Option<String>,
    /// `state`.
    pub state: Option<String>,
    /// `error`.
    pub error: Option<String>,
    /// `error_description`.
    pub error_description: Option<String>,
}

/// A sign-in begun: where to send the browser, and the `state` its cookie carries.
#[derive(Debug, Clone)]
pub struct Begun {
    /// The provider's authorization URL with this sign-in's parameters.
    pub url: String,
    /// The sign-in's `state`, for the cookie that binds it to this browser.
    pub state: String,
}

/// One sign-in under way, kept by its `state`.
struct Started {
    nonce: String,
    verifier: String,
    at: Timestamp,
}

/// The sign-ins under way, each taken at most once.
#[derive(Default)]
struct Pending(HashMap<String, Started>);

impl Pending {
    fn insert(&mut self, state: String, started: Started) {
        let now = started.at;
        self.0.retain(|_, s| now.duration_since(s.at) < PENDING_FOR);
        if self.0.len() >= MAX_PENDING
            && let Some(oldest) = self.0.iter().min_by_key(|(_, s)| s.at).map(|(k, _)| k.clone())
        {
            self.0.remove(&oldest);
        }
        self.0.insert(state, started);
    }

    /// The sign-in with `state`, removed, if it is still within [`PENDING_FOR`].
    fn take(&mut self, state: &str, now: Timestamp) -> Option<Started> {
        self.0.remove(state).filter(|s| now.duration_since(s.at) < PENDING_FOR)
    }
}

/// The discovery document and keys, as last fetched.
#[derive(Clone)]
struct Metadata {
    doc: CoreProviderMetadata,
    fetched: Timestamp,
    /// When the keys were last fetched again for an unknown `kid`.
    keys_refreshed: Option<Timestamp>,
}

/// The provider, as the daemon uses it.
pub struct Provider {
    settings: Settings,
    http: Result<http::Client, String>,
    metadata: tokio::sync::Mutex<Option<Metadata>>,
    pending: Mutex<Pending>,
    /// Code exchanges at once: each is a request to the provider, which nobody signed in asked for.
    exchanges: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.settings.issuer)
            .finish_non_exhaustive()
    }
}

/// Text from the provider (or from whoever wrote the callback's query) as it goes into the log
/// and a page: one line of printable characters, at most 200.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect()
}

fn chrono_of(t: Timestamp) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().unsigned_abs()).unwrap_or_default()
}

impl Provider {
    /// The provider of `settings`; nothing is fetched yet.
    pub fn new(settings: Settings) -> Self {
        let http = http::Client::new(settings.ca_file.as_deref());
        Self {
            settings,
            http,
            metadata: tokio::sync::Mutex::new(None),
            pending: Mutex::new(Pending::default()),
            exchanges: tokio::sync::Semaphore::new(4),
        }
    }

    /// Its settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn http(&self) -> Result<&http::Client, Refusal> {
        self.http.as_ref().map_err(|e| Refusal::Unavailable(e.clone()))
    }

    fn secret(&self) -> Result<ClientSecret, Refusal> {
        let secret = Secret::load("admin.oidc.client_secret_file", &self.settings.client_secret_file)
            .map_err(|e| Refusal::Unavailable(e.to_string()))?;
        let text = std::str::from_utf8(secret.bytes()).map_err(|_| {
            Refusal::Unavailable(format!(
                "admin.oidc.client_secret_file {}: it is not UTF-8 text (fix: paste the secret's value as the provider shows it)",
                self.settings.client_secret_file.display()
            ))
        })?;
        Ok(ClientSecret::new(text.to_owned()))
    }

    /// Fetches the discovery document and keys into the cache, logging whether that worked.
    pub async fn warm(&self, now: Timestamp) {
        match self.metadata(now, false).await {
            Ok(m) => {
                tracing::info!(issuer = %self.settings.issuer, keys = m.doc.jwks().keys().len(), redirect_uri = %self.settings.redirect_uri, "school account sign-in ready")
            }
            Err(e) => tracing::warn!(
                "school account sign-in: {e}; it is tried again at the first sign-in (local accounts work meanwhile)"
            ),
        }
    }

    /// Fetches the discovery document and keys now.
    ///
    /// # Errors
    /// The provider cannot be reached, or its document is not for the configured issuer.
    pub async fn discover(&self) -> Result<CoreProviderMetadata, Refusal> {
        let http = self.http()?;
        let issuer = IssuerUrl::new(self.settings.issuer.clone()).map_err(|e| Refusal::Unavailable(e.to_string()))?;
        CoreProviderMetadata::discover_async(issuer, http)
            .await
            .map_err(|e| Refusal::Unavailable(format!("discovery at {}: {}", self.settings.issuer, http::chain(&e))))
    }

    /// The discovery document and keys: the cached ones, fetched again after [`METADATA_FOR`]
    /// (the old ones are kept if that fails), or with the keys fetched again if `refresh_keys`.
    async fn metadata(&self, now: Timestamp, refresh_keys: bool) -> Result<Metadata, Refusal> {
        let mut cached = self.metadata.lock().await;
        match cached.as_mut() {
            Some(m) if refresh_keys => {
                if m.keys_refreshed.is_none_or(|t| now.duration_since(t) >= KEYS_REFRESH) {
                    m.keys_refreshed = Some(now);
                    match JsonWebKeySet::fetch_async(m.doc.jwks_uri(), self.http()?).await {
                        Ok(keys) => m.doc = m.doc.clone().set_jwks(keys),
                        Err(e) => {
                            tracing::warn!(error = %http::chain(&e), "cannot fetch the OpenID provider's keys again")
                        }
                    }
                }
                return Ok(m.clone());
            }
            Some(m) if now.duration_since(m.fetched) < METADATA_FOR => return Ok(m.clone()),
            _ => {}
        }
        match self.discover().await {
            Ok(doc) => {
                let m = Metadata {
                    doc,
                    fetched: now,
                    keys_refreshed: None,
                };
                *cached = Some(m.clone());
                Ok(m)
            }
            Err(e) => match cached.as_ref() {
                Some(old) => {
                    tracing::warn!(error = %e, "keeping the OpenID provider's last discovery document");
                    Ok(old.clone())
                }
                None => Err(e),
            },
        }
    }

    fn client(&self, doc: CoreProviderMetadata, secret: ClientSecret) -> Result<ClientOf, Refusal> {
        let redirect =
            RedirectUrl::new(self.settings.redirect_uri.clone()).map_err(|e| Refusal::Unavailable(e.to_string()))?;
        // client_secret_basic unless the provider lists only client_secret_post (RFC 8414's
        // default is basic).
        let post_only = doc
            .token_endpoint_auth_methods_supported()
            .is_some_and(|m| m.iter().all(|m| m.as_ref() == "client_secret_post") && !m.is_empty());
        let client =
            CoreClient::from_provider_metadata(doc, ClientId::new(self.settings.client_id.clone()), Some(secret))
                .set_redirect_uri(redirect);
        Ok(if post_only {
            client.set_auth_type(AuthType::RequestBody)
        } else {
            client
        })
    }

    /// Begins a sign-in: the authorization URL (PKCE S256, a fresh `state` and `nonce`, scopes
    /// `openid email profile`) and the `state`, kept until [`PENDING_FOR`] has passed.
    ///
    /// # Errors
    /// [`Refusal::Unavailable`]: the provider cannot be reached, or the secret is unreadable.
    pub async fn begin(&self, now: Timestamp) -> Result<Begun, Refusal> {
        let secret = self.secret()?;
        let m = self.metadata(now, false).await?;
        let client = self.client(m.doc, secret)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        let state = state.secret().clone();
        self.lock_pending().insert(
            state.clone(),
            Started {
                nonce: nonce.secret().clone(),
                verifier: verifier.secret().clone(),
                at: now,
            },
        );
        Ok(Begun {
            url: url.to_string(),
            state,
        })
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Finishes a sign-in the provider sent back: `cookie` is the `state` this browser's cookie
    /// carries. The sign-in is taken (so it cannot be replayed), the code exchanged, and the ID
    /// token verified; then the e-mail it vouches for is returned.
    ///
    /// # Errors
    /// A [`Refusal`] saying which step failed.
    pub async fn finish(&self, cookie: Option<&str>, back: &Callback, now: Timestamp) -> Result<Identity, Refusal> {
        let cookie = cookie.filter(|c| !c.is_empty()).ok_or(Refusal::NoPending)?;
        let state = back.state.as_deref().unwrap_or_default();
        if !crate::admin::web::same(cookie, state) {
            // The pending sign-in stays: the browser that holds the cookie may still finish it.
            return Err(Refusal::StateMismatch);
        }
        let started = self.lock_pending().take(state, now).ok_or(Refusal::NoPending)?;
        if let Some(error) = &back.error {
            return Err(Refusal::Provider {
                error: printable(error),
                description: printable(back.error_description.as_deref().unwrap_or_default()),
            });
        }
        let code = back
            .code
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Refusal::Provider {
                error: "no code".into(),
                description: "the provider sent no authorization code".into(),
            })?;
        let secret = self.secret()?;
        let m = self.metadata(now, false).await?;
        let client = self.client(m.doc.clone(), secret.clone())?;
        let http = self.http()?;
        let _slot = self
            .exchanges
            .acquire()
            .await
            .map_err(|_| Refusal::Unavailable("shutting down".into()))?;
        let token = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| Refusal::Unavailable(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(started.verifier))
            .request_async(http)
            .await
            .map_err(|e| {
                Refusal::Exchange(printable(&match &e {
                    RequestTokenError::ServerResponse(r) => format!(
                        "{} {}",
                        r.error(),
                        r.error_description().map(String::as_str).unwrap_or_default()
                    ),
                    other => http::chain(other),
                }))
            })?;
        let id_token = token
            .id_token()
            .ok_or_else(|| Refusal::Token("the token response has no id_token".into()))?;
        let nonce = Nonce::new(started.nonce);
        // What the token vouches for: its e-mail address, whether that is verified, and `sub`.
        type Vouched = (Option<String>, Option<bool>, String);
        let verify = |doc: CoreProviderMetadata| -> Result<Vouched, ClaimsVerificationError> {
            let client = self
                .client(doc, secret.clone())
                .map_err(|e| ClaimsVerificationError::Other(e.to_string()))?;
            let earliest = now - SKEW;
            let latest = now + SKEW;
            let verifier = client
                .id_token_verifier()
                .set_allowed_algs(ALGORITHMS)
                .set_time_fn(move || chrono_of(earliest))
                .set_issue_time_verifier_fn(move |iat| {
                    if iat > chrono_of(latest) {
                        Err(format!("issued in the future ({iat})"))
                    } else {
                        Ok(())
                    }
                });
            let claims = id_token.claims(&verifier, &nonce)?;
            Ok((
                claims.email().map(|e| e.as_str().trim().to_lowercase()),
                claims.email_verified(),
                claims.subject().as_str().to_owned(),
            ))
        };
        let checked = match verify(m.doc) {
            Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)) => {
                // The provider may have rolled its keys since they were fetched.
                let fresh = self.metadata(now, true).await?;
                verify(fresh.doc)
            }
            other => other,
        };
        let (email, verified, subject) = checked.map_err(|e| Refusal::Token(e.to_string()))?;
        let email = email.filter(|e| !e.is_empty()).ok_or(Refusal::NoEmail)?;
        // Where the provider says (Google does, Entra ID does not: it sends only addresses of
        // the tenant's verified domains).
        if verified == Some(false) {
            return Err(Refusal::Unverified(email));
        }
        Ok(Identity { email, subject })
    }
}

/// The client, as `from_provider_metadata` makes it, with its redirect URI.
type ClientOf = openidconnect::Client<
    openidconnect::EmptyAdditionalClaims,
    openidconnect::core::CoreAuthDisplay,
    openidconnect::core::CoreGenderClaim,
    openidconnect::core::CoreJweContentEncryptionAlgorithm,
    openidconnect::core::CoreJsonWebKey,
    openidconnect::core::CoreAuthPrompt,
    openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    openidconnect::core::CoreTokenResponse,
    openidconnect::core::CoreTokenIntrospectionResponse,
    openidconnect::core::CoreRevocableToken,
    openidconnect::core::CoreRevocationErrorResponse,
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

#[cfg(test)]
mod tests {
    use super::*;

    fn started(at: Timestamp) -> Started {
        Started {
            nonce: "n".into(),
            verifier: "v".into(),
            at,
        }
    }

    #[test]
    fn text_from_the_provider_is_one_short_printable_line() {
        assert_eq!(
            printable("access_denied\r\nforged: line"),
            "access_denied  forged: line"
        );
        assert_eq!(printable(&"x".repeat(500)).len(), 200);
    }

    #[test]
    fn a_pending_sign_in_is_taken_once_and_not_after_it_expired() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let mut p = Pending::default();
        p.insert("a".into(), started(t0));
        p.insert("b".into(), started(t0));
        assert!(p.take("a", t0 + SignedDuration::from_mins(1)).is_some());
        assert!(p.take("a", t0 + SignedDuration::from_mins(1)).is_none(), "replayed");
        assert!(p.take("b", t0 + PENDING_FOR).is_none(), "expired");
        assert!(p.take("never", t0).is_none());
    }

    #[test]
    fn pending_sign_ins_are_bounded_and_the_oldest_goes_first() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let mut p = Pending::default();
        for i in 0..=MAX_PENDING {
            p.insert(format!("s{i}"), started(t0 + SignedDuration::from_millis(i as i64)));
        }
        assert_eq!(p.0.len(), MAX_PENDING);
        assert!(!p.0.contains_key("s0"), "the oldest went");
        assert!(p.0.contains_key(&format!("s{MAX_PENDING}")));
        // Expired ones go first, whatever the count.
        p.insert("late".into(), started(t0 + PENDING_FOR + SignedDuration::from_secs(1)));
        assert_eq!(p.0.len(), 1);
    }
}
