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
use std::net::IpAddr;
use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};
use openidconnect::core::{CoreAuthenticationFlow, CoreJwsSigningAlgorithm, CoreProviderMetadata};
use openidconnect::{
    AuthType, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, EndpointNotSet, IssuerUrl,
    JsonWebKeySet, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope,
    SignatureVerificationError, TokenResponse,
};

pub use settings::{CALLBACK_PATH, DEFAULT_DISPLAY_NAME, RawOidc, Settings, origin};

use crate::secret::Secret;

/// How far the provider's clock may be from ours, either way, for `exp` and `iat`.
pub const SKEW: SignedDuration = SignedDuration::from_secs(120);
/// How long a sign-in may take at the provider before its `state` is forgotten.
pub const PENDING_FOR: SignedDuration = SignedDuration::from_mins(10);
/// Sign-ins under way at most; past it the oldest is forgotten (a GET of /login/oidc needs no
/// session, so this bounds what anyone on the staff side can make the daemon hold).
pub const MAX_PENDING: usize = 1024;
/// Sign-ins under way from one address at most; past it that address's oldest is forgotten, so
/// one computer cannot push out everyone else's.
pub const MAX_PENDING_PER_ADDRESS: usize = 8;
/// Sign-ins one address may begin in [`PENDING_FOR`]: each may end in a request to the
/// provider with the client secret, which a loop must not be able to make without end.
pub const MAX_BEGUN_PER_ADDRESS: usize = 30;
/// A discovery that failed is not tried again for this long (sign-ins meanwhile are refused at
/// once rather than each waiting for the provider's timeout).
pub const DISCOVERY_RETRY: SignedDuration = SignedDuration::from_secs(30);
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
    /// This address began too many sign-ins lately.
    #[error("too many sign-ins begun from this address in the last {} minutes", PENDING_FOR.as_mins())]
    TooMany,
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
    /// The provider says the address is not verified (or its domain's owner is not).
    #[error("{0}: the provider says this e-mail address is not verified")]
    Unverified(String),
    /// A Google account not managed by the Workspace of its address's domain.
    #[error("{0}: not an account of the domain's Google Workspace (no matching hd claim)")]
    NotWorkspace(String),
}

impl Refusal {
    /// Its label in the audit log and the metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::TooMany => "too-many",
            Self::Provider { .. } => "provider-error",
            Self::NoPending => "no-pending-sign-in",
            Self::StateMismatch => "state-mismatch",
            Self::Exchange(_) => "code-refused",
            Self::Token(_) => "token-refused",
            Self::NoEmail => "no-email",
            Self::Unverified(_) => "email-unverified",
            Self::NotWorkspace(_) => "not-workspace",
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
    from: IpAddr,
}

/// The sign-ins under way, each taken at most once, and when each address began its recent
/// ones.
#[derive(Default)]
struct Pending {
    by_state: HashMap<String, Started>,
    begun: HashMap<IpAddr, Vec<Timestamp>>,
}

impl Pending {
    /// Whether `from` may begin another sign-in at `now` (counting it if so).
    fn may_begin(&mut self, from: IpAddr, now: Timestamp) -> bool {
        self.begun.retain(|_, times| {
            times.retain(|t| now.duration_since(*t) < PENDING_FOR);
            !times.is_empty()
        });
        if self.begun.len() >= MAX_PENDING && !self.begun.contains_key(&from) {
            // Bounded like the sign-ins: the address that began least lately is forgotten.
            if let Some(stale) = self
                .begun
                .iter()
                .min_by_key(|(_, t)| t.last().copied())
                .map(|(a, _)| *a)
            {
                self.begun.remove(&stale);
            }
        }
        let times = self.begun.entry(from).or_default();
        if times.len() >= MAX_BEGUN_PER_ADDRESS {
            return false;
        }
        times.push(now);
        true
    }

    fn insert(&mut self, state: String, started: Started) {
        let (now, from) = (started.at, started.from);
        self.by_state.retain(|_, s| now.duration_since(s.at) < PENDING_FOR);
        let oldest = |m: &HashMap<String, Started>, only: Option<IpAddr>| {
            m.iter()
                .filter(|(_, s)| only.is_none_or(|a| s.from == a))
                .min_by_key(|(_, s)| s.at)
                .map(|(k, _)| k.clone())
        };
        let theirs = self.by_state.values().filter(|s| s.from == from).count();
        let evict = if theirs >= MAX_PENDING_PER_ADDRESS {
            oldest(&self.by_state, Some(from))
        } else if self.by_state.len() >= MAX_PENDING {
            oldest(&self.by_state, None)
        } else {
            None
        };
        if let Some(k) = evict {
            self.by_state.remove(&k);
        }
        self.by_state.insert(state, started);
    }

    /// The sign-in with `state`, removed, if it is still within [`PENDING_FOR`].
    fn take(&mut self, state: &str, now: Timestamp) -> Option<Started> {
        self.by_state
            .remove(state)
            .filter(|s| now.duration_since(s.at) < PENDING_FOR)
    }
}

/// What is known of the provider: the last discovery that worked, and a failure since.
#[derive(Default)]
struct Cached {
    last: Option<Metadata>,
    failed: Option<(Timestamp, Refusal)>,
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
    metadata: tokio::sync::Mutex<Cached>,
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

/// Google's issuer: its tokens name consumer accounts too.
pub const GOOGLE: &str = "https://accounts.google.com";

/// Whether the e-mail an ID token carries can be trusted as the account's:
/// - `email_verified`, where the provider sends it, is not false;
/// - with Google, the account is managed by the Workspace of the address's own domain (`hd`):
///   a consumer Google account can carry a school address that Google verified once, by mail;
/// - with Entra ID, the domain of the address is verified by the user's own tenant
///   (`xms_edov`), where it is sent: a guest from another tenant could otherwise carry any
///   address its own tenant let it set.
fn trusted(issuer: &str, email: &str, verified: Option<bool>, extra: &Extra) -> Result<(), Refusal> {
    let unverified = || Refusal::Unverified(email.to_owned());
    if verified == Some(false) {
        return Err(unverified());
    }
    let domain = email.rsplit_once('@').map_or("", |(_, d)| d);
    if issuer.trim_end_matches('/') == GOOGLE
        && extra.hd.as_deref().map(str::to_ascii_lowercase).as_deref() != Some(domain)
    {
        return Err(Refusal::NotWorkspace(email.to_owned()));
    }
    if extra.domain_owner_verified() == Some(false) {
        return Err(unverified());
    }
    Ok(())
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
            metadata: tokio::sync::Mutex::new(Cached::default()),
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
        match cached.last.as_mut() {
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
        let recent_failure = cached
            .failed
            .as_ref()
            .filter(|(at, _)| now.duration_since(*at) < DISCOVERY_RETRY)
            .map(|(_, e)| e.clone());
        let fetched = match recent_failure {
            Some(e) => Err(e),
            None => self.discover().await,
        };
        match fetched {
            Ok(doc) => {
                let m = Metadata {
                    doc,
                    fetched: now,
                    keys_refreshed: None,
                };
                *cached = Cached {
                    last: Some(m.clone()),
                    failed: None,
                };
                Ok(m)
            }
            Err(e) => {
                if cached
                    .failed
                    .as_ref()
                    .is_none_or(|(at, _)| now.duration_since(*at) >= DISCOVERY_RETRY)
                {
                    cached.failed = Some((now, e.clone()));
                    if cached.last.is_some() {
                        tracing::warn!(error = %e, "keeping the OpenID provider's last discovery document");
                    }
                }
                cached.last.clone().ok_or(e)
            }
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
            ClientOf::from_provider_metadata(doc, ClientId::new(self.settings.client_id.clone()), Some(secret))
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
    /// [`Refusal::TooMany`]: `from` began [`MAX_BEGUN_PER_ADDRESS`] in [`PENDING_FOR`];
    /// [`Refusal::Unavailable`]: the provider cannot be reached, or the secret is unreadable.
    pub async fn begin(&self, now: Timestamp, from: IpAddr) -> Result<Begun, Refusal> {
        if !self.lock_pending().may_begin(from, now) {
            return Err(Refusal::TooMany);
        }
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
                from,
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
        if !crate::secret::same(cookie, state) {
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
        // What the token vouches for: its e-mail address, whether that is verified, `sub`, and
        // the claims that say whether the address can be trusted.
        type Vouched = (Option<String>, Option<bool>, String, Extra);
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
                claims.email().map(|e| printable(e.as_str().trim())),
                claims.email_verified(),
                claims.subject().as_str().to_owned(),
                claims.additional_claims().clone(),
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
        let (email, verified, subject, extra) = checked.map_err(|e| Refusal::Token(e.to_string()))?;
        let email = email.filter(|e| !e.is_empty()).ok_or(Refusal::NoEmail)?;
        // Only plain addresses are matched: a Unicode one could fold onto a listed one.
        if !email.is_ascii() {
            return Err(Refusal::Unverified(email));
        }
        let email = email.to_ascii_lowercase();
        trusted(&self.settings.issuer, &email, verified, &extra)?;
        Ok(Identity { email, subject })
    }
}

/// The claims beyond the standard ones that decide whether an address can be trusted: Google's
/// `hd` (the Workspace domain that manages the account; absent for a consumer account) and
/// Entra ID's `xms_edov` (whether the domain of `email` is verified by the user's own tenant,
/// sent when the optional claim is added).
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
struct Extra {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    xms_edov: Option<serde_json::Value>,
}

impl openidconnect::AdditionalClaims for Extra {}

impl Extra {
    /// `xms_edov` as a truth value (Entra sends a boolean; some tenants a string or number).
    fn domain_owner_verified(&self) -> Option<bool> {
        match self.xms_edov.as_ref()? {
            serde_json::Value::Bool(b) => Some(*b),
            serde_json::Value::String(t) => Some(matches!(t.as_str(), "true" | "1")),
            serde_json::Value::Number(n) => Some(n.as_u64() == Some(1)),
            _ => None,
        }
    }
}

/// The token response, with [`Extra`] in its ID token.
type TokenResponseOf = openidconnect::StandardTokenResponse<
    openidconnect::IdTokenFields<
        Extra,
        openidconnect::EmptyExtraTokenFields,
        openidconnect::core::CoreGenderClaim,
        openidconnect::core::CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    openidconnect::core::CoreTokenType,
>;

/// The client, with [`Extra`] claims, as `from_provider_metadata` makes it: the authorization
/// URL set, the token and userinfo URLs maybe.
type ClientOf = openidconnect::Client<
    Extra,
    openidconnect::core::CoreAuthDisplay,
    openidconnect::core::CoreGenderClaim,
    openidconnect::core::CoreJweContentEncryptionAlgorithm,
    openidconnect::core::CoreJsonWebKey,
    openidconnect::core::CoreAuthPrompt,
    openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    TokenResponseOf,
    openidconnect::core::CoreTokenIntrospectionResponse,
    openidconnect::core::CoreRevocableToken,
    openidconnect::core::CoreRevocationErrorResponse,
    openidconnect::EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

#[cfg(test)]
mod tests {
    use super::*;

    fn started(at: Timestamp) -> Started {
        from(at, [10, 0, 0, 5])
    }

    fn from(at: Timestamp, ip: [u8; 4]) -> Started {
        Started {
            nonce: "n".into(),
            verifier: "v".into(),
            at,
            from: IpAddr::from(ip),
        }
    }

    #[test]
    fn an_address_is_trusted_only_as_far_as_its_provider_vouches_for_it() {
        let e = "dpo@claremont.example.sch.uk";
        let extra = |hd: Option<&str>, edov: Option<serde_json::Value>| Extra {
            hd: hd.map(str::to_owned),
            xms_edov: edov,
        };
        let entra = "https://login.microsoftonline.com/0b5a6f0e-1111-2222-3333-444455556666/v2.0";
        let generic = "https://idp.example";
        // Any provider: email_verified false is refused; absent is the provider's silence.
        assert!(trusted(generic, e, None, &Extra::default()).is_ok());
        assert!(trusted(generic, e, Some(true), &Extra::default()).is_ok());
        assert_eq!(
            trusted(generic, e, Some(false), &Extra::default()),
            Err(Refusal::Unverified(e.into()))
        );
        // Google: only an account of the address's own Workspace.
        assert!(trusted(GOOGLE, e, Some(true), &extra(Some("Claremont.Example.sch.uk"), None)).is_ok());
        for hd in [None, Some("other.example"), Some("example.sch.uk")] {
            assert_eq!(
                trusted(GOOGLE, e, Some(true), &extra(hd, None)),
                Err(Refusal::NotWorkspace(e.into())),
                "{hd:?}"
            );
        }
        // Entra ID: xms_edov, where sent, must say the domain's owner verified it.
        assert!(trusted(entra, e, None, &extra(None, None)).is_ok());
        for yes in [serde_json::json!(true), serde_json::json!("1"), serde_json::json!(1)] {
            assert!(trusted(entra, e, None, &extra(None, Some(yes))).is_ok());
        }
        for no in [serde_json::json!(false), serde_json::json!("0"), serde_json::json!(0)] {
            assert_eq!(
                trusted(entra, e, None, &extra(None, Some(no))),
                Err(Refusal::Unverified(e.into()))
            );
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
        // Many addresses: the oldest of all goes.
        for i in 0..=MAX_PENDING {
            let ip = [10, 1, (i / 250) as u8, (i % 250) as u8];
            p.insert(format!("s{i}"), from(t0 + SignedDuration::from_millis(i as i64), ip));
        }
        assert_eq!(p.by_state.len(), MAX_PENDING);
        assert!(!p.by_state.contains_key("s0"), "the oldest went");
        assert!(p.by_state.contains_key(&format!("s{MAX_PENDING}")));
        // Expired ones go first, whatever the count.
        p.insert("late".into(), started(t0 + PENDING_FOR + SignedDuration::from_secs(5)));
        assert_eq!(p.by_state.len(), 1);
    }

    #[test]
    fn one_address_cannot_push_out_anyone_elses_sign_in_nor_begin_without_end() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let mut p = Pending::default();
        p.insert("staff".into(), from(t0, [10, 0, 0, 7]));
        for i in 0..100 {
            p.insert(
                format!("loop{i}"),
                from(t0 + SignedDuration::from_millis(i), [10, 0, 0, 66]),
            );
        }
        assert_eq!(p.by_state.len(), 1 + MAX_PENDING_PER_ADDRESS);
        assert!(p.take("staff", t0 + SignedDuration::from_mins(2)).is_some());
        let looping = IpAddr::from([10, 0, 0, 66]);
        let allowed = (0..100).filter(|_| p.may_begin(looping, t0)).count();
        assert_eq!(allowed, MAX_BEGUN_PER_ADDRESS);
        assert!(p.may_begin(IpAddr::from([10, 0, 0, 7]), t0), "others still may");
        assert!(p.may_begin(looping, t0 + PENDING_FOR), "and it may again later");
    }
}
