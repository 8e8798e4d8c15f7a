//! Sign-in, sign-out and sessions, and the extractors every other area relies on: [`Staff`] (a
//! signed-in session, or a redirect to /login), [`Auditor`] (an auditor, or the 403 page) and
//! [`CsrfForm`] (a POSTed form whose token matches the session's). Handlers never read the
//! cookie or the token themselves. A session id is kept in the store only as its SHA-256.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::SignedDuration;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Reply, WebState, page};
use crate::access::staff as actions;
use crate::store::{Role, SignedInWith};
use crate::web::form;

/// Session cookie name.
const COOKIE: &str = "aupgate_session";
/// Failed sign-ins allowed per account, and per address, in the window below.
const MAX_FAILED_PER_ACCOUNT: u32 = 5;
const MAX_FAILED_PER_ADDRESS: u32 = 20;
const SIGN_IN_WINDOW: SignedDuration = SignedDuration::from_mins(15);
/// Why a sign-in needing the store could not go on (a key of `admin/words.txt`).
pub(super) const STORE_UNWRITABLE: &str = "store_unwritable";

pub(super) fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn random_hex() -> Option<String> {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf).ok()?;
    Some(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A new session's id and CSRF token; `None` if the kernel gave no randomness.
pub(super) fn new_session_ids() -> Option<(String, String)> {
    Some((random_hex()?, random_hex()?))
}

/// The session cookie for `id`: Strict, so no other site's page can make a request with it.
pub(super) fn session_cookie(id: &str) -> String {
    format!("{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict")
}

/// The value of the cookie `name` in a request's headers.
pub(super) fn cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

// === the extractors ===

/// A signed-in member of staff; extracting it signs the request in or redirects to /login.
/// Pages see it as `staff` (name, role, CSRF token).
#[derive(Debug, Clone, Serialize)]
pub struct Staff {
    pub(super) name: String,
    pub(super) role: Role,
    pub(super) csrf: String,
    #[serde(skip)]
    id_hash: String,
}

fn to_login() -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/login")]).into_response()
}

impl FromRequestParts<WebState> for Staff {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &WebState) -> Result<Self, Self::Rejection> {
        // Kept in the request once found, so `Auditor` and `CsrfForm` reuse this request's
        // session instead of looking it up (and touching it) again.
        if let Some(staff) = parts.extensions.get::<Staff>() {
            return Ok(staff.clone());
        }
        let Some(id) = cookie(&parts.headers, COOKIE) else {
            return Err(to_login());
        };
        let id_hash = sha256_hex(&id);
        let now = st.actions.clock.now();
        let idle_since = now - st.idle;
        let lookup = id_hash.clone();
        match st
            .actions
            .store
            .run(move |s| s.use_session(&lookup, idle_since, now))
            .await
        {
            Ok(Some(s)) => {
                // A school account's role is the config's lists' now: one taken off them, or
                // the section gone, is signed out at their next request.
                let role = match s.via {
                    SignedInWith::Password => Some(s.role),
                    SignedInWith::Oidc => st.oidc.as_ref().and_then(|p| p.settings().role_of(&s.admin)),
                };
                let Some(role) = role else {
                    tracing::warn!(admin = %s.admin, "session ended: the school account is no longer listed in [admin.oidc]");
                    let _ = st.actions.store.run(move |store| store.end_session(&id_hash)).await;
                    return Err(to_login());
                };
                let staff = Staff {
                    name: s.admin,
                    role,
                    csrf: s.csrf,
                    id_hash,
                };
                parts.extensions.insert(staff.clone());
                Ok(staff)
            }
            _ => Err(to_login()),
        }
    }
}

/// A signed-in auditor account (the DSL, the data-protection officer): the audit pages are theirs
/// only. Anyone else signed in gets the 403 page; no session, the redirect to /login.
#[derive(Debug, Clone)]
pub struct Auditor(pub Staff);

impl FromRequestParts<WebState> for Auditor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &WebState) -> Result<Self, Self::Rejection> {
        let staff = Staff::from_request_parts(parts, st).await?;
        if staff.role != Role::Auditor {
            return Err(Reply::new(st, &staff, "/").message(
                StatusCode::FORBIDDEN,
                "auditors_only_title",
                "auditors_only",
                minijinja::context! {},
            ));
        }
        Ok(Self(staff))
    }
}

/// The fields of a POSTed form.
#[derive(Debug, Clone, Default)]
pub struct Fields(HashMap<String, String>);

impl Fields {
    /// The field `key` without surrounding spaces; empty if the form has none.
    pub fn get(&self, key: &str) -> &str {
        self.0.get(key).map_or("", |v| v.trim())
    }
}

/// A POSTed form from a signed-in session whose `csrf` field matches the session's token. Every
/// handler that changes something takes one, so none can skip the check. No session: the
/// redirect to /login; an unreadable form: 400; a missing or wrong token: 403, and nothing done.
#[derive(Debug, Clone)]
pub struct CsrfForm(pub Fields);

impl FromRequest<WebState> for CsrfForm {
    type Rejection = Response;

    async fn from_request(req: Request, st: &WebState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let staff = Staff::from_request_parts(&mut parts, st).await?;
        let body = Bytes::from_request(Request::from_parts(parts, body), st)
            .await
            .map_err(IntoResponse::into_response)?;
        let reply = Reply::new(st, &staff, "/");
        let fields = form::parse(&body).map_err(|_| {
            reply.message(
                StatusCode::BAD_REQUEST,
                "form_unreadable_title",
                "form_unreadable",
                minijinja::context! {},
            )
        })?;
        let token = fields.get("csrf").map_or("", String::as_str);
        if !crate::secret::same(token, &staff.csrf) {
            tracing::warn!(admin = %staff.name, "form refused: missing or wrong CSRF token");
            return Err(reply.message(
                StatusCode::FORBIDDEN,
                "form_expired_title",
                "form_expired",
                minijinja::context! {},
            ));
        }
        Ok(Self(Fields(fields)))
    }
}

// === sign-in and sign-out ===

/// The sign-in form again, with `error` (a key of `admin/words.txt`; "" for none) above it and
/// the name typed kept.
fn login_form(st: &WebState, status: StatusCode, error: &str, username: &str) -> Response {
    let error = if error.is_empty() {
        String::new()
    } else {
        super::words(st, error, minijinja::context! { minutes => SIGN_IN_WINDOW.as_mins() })
    };
    // The school account's button, above the form, when [admin.oidc] is set.
    let school_account = st.oidc.as_ref().map(|p| p.settings().display_name.clone());
    page(
        st,
        status,
        "admin/login.html",
        None,
        minijinja::context! { error, username, school_account },
    )
}

/// Sign-in cannot go on (the store cannot be written, or no randomness): `why` says which.
pub(super) fn sign_in_unavailable(st: &WebState, why: &str) -> Response {
    Reply::anonymous(st, "/login").message(
        StatusCode::SERVICE_UNAVAILABLE,
        "sign_in_unavailable",
        why,
        minijinja::context! {},
    )
}

pub(super) async fn login_page(State(st): State<WebState>) -> Response {
    login_form(&st, StatusCode::OK, "", "")
}

pub(super) async fn login(
    State(st): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let Ok(fields) = form::parse(&body) else {
        return login_form(&st, StatusCode::BAD_REQUEST, "login_unreadable", "");
    };
    let username = fields.get("username").map(|u| u.trim().to_owned()).unwrap_or_default();
    let password = fields.get("password").cloned().unwrap_or_default();
    let address = peer.ip().to_canonical().to_string();
    let now = st.actions.clock.now();
    let since = now - SIGN_IN_WINDOW;
    let (u, a) = (username.clone(), address.clone());
    // Counted as a failure before the check, atomically: parallel attempts cannot all slip
    // under the limit.
    let reserved = st
        .actions
        .store
        .run(move |s| s.reserve_login(&u, &a, now, since, (MAX_FAILED_PER_ACCOUNT, MAX_FAILED_PER_ADDRESS)))
        .await;
    let attempt = match reserved {
        Ok(Some(id)) => id,
        Ok(None) => {
            tracing::warn!(admin = %username, "sign-in refused: too many failures");
            st.metrics.staff_sign_in("password", "locked");
            return login_form(&st, StatusCode::TOO_MANY_REQUESTS, "login_locked", &username);
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot record a sign-in; refusing it");
            return sign_in_unavailable(&st, STORE_UNWRITABLE);
        }
    };
    let role = match actions::verify_password(&st.actions, &username, password).await {
        actions::PasswordCheck::Valid(role) => Some(role),
        actions::PasswordCheck::Invalid => None,
        actions::PasswordCheck::Busy => {
            // Nothing was checked, so it is not counted against the account.
            if let Err(e) = st.actions.store.run(move |s| s.cancel_login(attempt)).await {
                tracing::error!(error = %e, "cannot withdraw an unchecked sign-in attempt");
            }
            tracing::warn!(admin = %username, "sign-in refused: every password check is busy");
            st.metrics.staff_sign_in("password", "busy");
            let mut busy = login_form(&st, StatusCode::TOO_MANY_REQUESTS, "login_busy", &username);
            busy.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            return busy;
        }
    };
    let ok = role.is_some();
    if let Err(e) = st.actions.store.run(move |s| s.settle_login(attempt, ok, now)).await {
        tracing::error!(error = %e, "cannot record a sign-in; refusing it");
        return sign_in_unavailable(&st, STORE_UNWRITABLE);
    }
    if !ok {
        tracing::warn!(admin = %username, "sign-in failed");
        st.metrics.staff_sign_in("password", "wrong");
        return login_form(&st, StatusCode::UNAUTHORIZED, "login_wrong", &username);
    }
    let Some((id, csrf)) = new_session_ids() else {
        return sign_in_unavailable(&st, "no_randomness");
    };
    let (hash, who) = (sha256_hex(&id), username.clone());
    if st
        .actions
        .store
        .run(move |s| s.create_session(&hash, &who, &csrf, now))
        .await
        .is_err()
    {
        return sign_in_unavailable(&st, STORE_UNWRITABLE);
    }
    tracing::info!(admin = %username, "signed in");
    st.metrics.staff_sign_in("password", "ok");
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(v) = HeaderValue::from_str(&session_cookie(&id)) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

pub(super) async fn logout(State(st): State<WebState>, staff: Staff, _: CsrfForm) -> Response {
    let hash = staff.id_hash.clone();
    let _ = st.actions.store.run(move |s| s.end_session(&hash)).await;
    let mut response = to_login();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("aupgate_session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}
