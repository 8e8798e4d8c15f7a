//! Sign-in with the school's account: `GET /login/oidc` sends the browser to the provider, and
//! the provider sends it back to `GET /login/oidc/callback`. The protocol is `admin::oidc`; this
//! is HTTP's part: the cookies and the pages.
//!
//! Two cookies. The pending sign-in's (`__Host-aupgate_oidc`) carries its `state`, is
//! `SameSite=Lax` (so it travels on the provider's top-level redirect back, which a Strict
//! cookie does not) and lasts as long as the sign-in may ([`PENDING_FOR`]); the callback clears
//! it, unless the state it was given is another's. The session cookie is the same as for a local account (Strict): the callback
//! answers 200 with a page that moves on to the dashboard by `<meta http-equiv="refresh">` and
//! a link, since a Strict cookie set on a cross-site redirect's answer would not be sent on a
//! 303 on from there.
//!
//! A refusal by the provider's side (a stale `state`, a token that does not verify) is one log
//! line; who is refused once the provider vouched for them (not listed, not verified) is also
//! an audit event with their e-mail. None counts towards the password sign-in's limits: no
//! password was guessed here, and the provider limits its own sign-ins.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::{cookie, new_session_ids, session_cookie, sha256_hex};
use super::{Reply, WebState, page};
use crate::admin::oidc::{Callback, PENDING_FOR, Refusal};
use crate::web::form;

/// The pending sign-in's cookie. `__Host-`: the browser takes it only from this host over
/// HTTPS, with `Path=/` and no `Domain`, so a sibling host (or a plain-HTTP answer) cannot plant
/// a state of its own choosing for a login CSRF.
const PENDING_COOKIE: &str = "__Host-aupgate_oidc";
/// Where the sign-in begins.
const PENDING_PATH: &str = "/login/oidc";

fn pending_cookie(state: &str) -> String {
    format!(
        "{PENDING_COOKIE}={state}; Path=/; Max-Age={}; Secure; HttpOnly; SameSite=Lax",
        PENDING_FOR.as_secs()
    )
}

fn clear_pending(response: &mut Response) {
    let gone = format!("{PENDING_COOKIE}=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax");
    if let Ok(v) = HeaderValue::from_str(&gone) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The message page for someone not signed in, linking back to /login.
fn refusal_page(st: &WebState, status: StatusCode, text: &str, ctx: minijinja::Value) -> Response {
    let name = st
        .oidc
        .as_ref()
        .map(|p| p.settings().display_name.clone())
        .unwrap_or_default();
    Reply::anonymous(st, "/login").message(
        status,
        "school_sign_in_refused",
        text,
        minijinja::context! { name, ..ctx },
    )
}

/// `GET /login/oidc`: begins a sign-in and sends the browser to the provider.
pub(super) async fn begin(
    State(st): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let Some(provider) = st.oidc.clone() else {
        return refusal_page(&st, StatusCode::NOT_FOUND, "oidc_off", minijinja::context! {});
    };
    let settings = provider.settings();
    // Reached by another name than the redirect URI's: go there first, so that the pending
    // sign-in's cookie is set where the provider sends the browser back.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !host.eq_ignore_ascii_case(settings.host()) {
        let there = format!("{}{PENDING_PATH}", settings.origin);
        return (StatusCode::SEE_OTHER, [(header::LOCATION, there)]).into_response();
    }
    match provider.begin(st.actions.clock.now(), peer.ip().to_canonical()).await {
        Ok(begun) => {
            let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, begun.url)]).into_response();
            if let Ok(v) = HeaderValue::from_str(&pending_cookie(&begun.state)) {
                response.headers_mut().insert(header::SET_COOKIE, v);
            }
            response
        }
        Err(Refusal::TooMany) => {
            let address = peer.ip().to_canonical();
            tracing::warn!(%address, "school account sign-in refused: {}", Refusal::TooMany);
            st.metrics.staff_sign_in("oidc", Refusal::TooMany.as_str());
            let mut page = refusal_page(
                &st,
                StatusCode::TOO_MANY_REQUESTS,
                "oidc_too_many",
                minijinja::context! { minutes => PENDING_FOR.as_mins() },
            );
            page.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("600"));
            page
        }
        Err(e) => {
            tracing::warn!(reason = e.as_str(), "school account sign-in cannot begin: {e}");
            refusal_page(
                &st,
                StatusCode::SERVICE_UNAVAILABLE,
                "oidc_unavailable",
                minijinja::context! {},
            )
        }
    }
}

/// What the provider's query says, read strictly (a query that is not a form is no callback).
fn callback_of(query: Option<&str>) -> Callback {
    let fields = form::parse(query.unwrap_or_default().as_bytes()).unwrap_or_default();
    let get = |k: &str| fields.get(k).cloned();
    Callback {
        code: get("code"),
        state: get("state"),
        error: get("error"),
        error_description: get("error_description"),
    }
}

/// `GET /login/oidc/callback`: finishes the sign-in the provider sent back, and signs the member
/// of staff in if the e-mail it vouches for is listed.
pub(super) async fn callback(
    State(st): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(provider) = st.oidc.clone() else {
        return refusal_page(&st, StatusCode::NOT_FOUND, "oidc_off", minijinja::context! {});
    };
    let address = peer.ip().to_canonical().to_string();
    let now = st.actions.clock.now();
    let back = callback_of(query.as_deref());
    let pending = cookie(&headers, PENDING_COOKIE);
    let finished = provider.finish(pending.as_deref(), &back, now).await;
    // A state that is not this browser's leaves its own sign-in be: a forged link to the
    // callback must not cancel one under way.
    let keep_pending = matches!(finished, Err(Refusal::StateMismatch));
    let mut response = match finished {
        Err(refusal) => refused(&st, &refusal, &address).await,
        Ok(identity) => match provider.settings().role_of(&identity.email) {
            None => {
                st.metrics.staff_sign_in("oidc", "not-listed");
                tracing::warn!(email = %identity.email, %address, "school account sign-in refused: not listed in admin.oidc.staff or admin.oidc.auditors");
                record_refusal(&st, &identity.email, &address, "not-listed").await;
                refusal_page(
                    &st,
                    StatusCode::FORBIDDEN,
                    "oidc_not_listed",
                    minijinja::context! { email => identity.email },
                )
            }
            Some(role) => signed_in(&st, &identity.email, role, &address).await,
        },
    };
    if !keep_pending {
        clear_pending(&mut response);
    }
    response
}

/// The page and the record for a sign-in the protocol refused.
async fn refused(st: &WebState, refusal: &Refusal, address: &str) -> Response {
    tracing::warn!(reason = refusal.as_str(), %address, "school account sign-in refused: {refusal}");
    st.metrics.staff_sign_in("oidc", refusal.as_str());
    let ctx = minijinja::context! {};
    match refusal {
        Refusal::Unavailable(_) => refusal_page(st, StatusCode::SERVICE_UNAVAILABLE, "oidc_unavailable", ctx),
        Refusal::TooMany => refusal_page(st, StatusCode::TOO_MANY_REQUESTS, "oidc_stale", ctx),
        Refusal::Provider { error, .. } => refusal_page(
            st,
            StatusCode::UNAUTHORIZED,
            "oidc_provider_error",
            minijinja::context! { error },
        ),
        Refusal::NoPending | Refusal::StateMismatch => refusal_page(st, StatusCode::BAD_REQUEST, "oidc_stale", ctx),
        Refusal::Exchange(_) | Refusal::Token(_) => refusal_page(st, StatusCode::UNAUTHORIZED, "oidc_failed", ctx),
        Refusal::NoEmail => refusal_page(st, StatusCode::FORBIDDEN, "oidc_no_email", ctx),
        Refusal::Unverified(email) | Refusal::NotWorkspace(email) => {
            record_refusal(st, email, address, refusal.as_str()).await;
            let text = if matches!(refusal, Refusal::NotWorkspace(_)) {
                "oidc_not_workspace"
            } else {
                "oidc_unverified"
            };
            refusal_page(st, StatusCode::FORBIDDEN, text, minijinja::context! { email })
        }
    }
}

async fn record_refusal(st: &WebState, email: &str, address: &str, reason: &'static str) {
    let (email, address) = (email.to_owned(), address.to_owned());
    let now = st.actions.clock.now();
    if let Err(e) = st
        .actions
        .store
        .run(move |s| s.school_account_refused(&email, &address, reason, now))
        .await
    {
        tracing::error!(error = %e, "cannot record a refused sign-in");
    }
}

/// Starts the session and answers with the page that moves on to the dashboard.
async fn signed_in(st: &WebState, email: &str, role: crate::store::Role, address: &str) -> Response {
    let Some((id, csrf)) = new_session_ids() else {
        return super::auth::sign_in_unavailable(st, "no_randomness");
    };
    let now = st.actions.clock.now();
    let (hash, who, at) = (sha256_hex(&id), email.to_owned(), address.to_owned());
    if let Err(e) = st
        .actions
        .store
        .run(move |s| s.start_school_account_session(&hash, (&who, role), &csrf, &at, now))
        .await
    {
        tracing::error!(error = %e, "cannot record a sign-in; refusing it");
        return super::auth::sign_in_unavailable(st, super::auth::STORE_UNWRITABLE);
    }
    tracing::info!(admin = %email, %role, %address, "signed in with the school account");
    st.metrics.staff_sign_in("oidc", "ok");
    let mut response = page(
        st,
        StatusCode::OK,
        "admin/signed_in.html",
        None,
        minijinja::context! { email, next => "/" },
    );
    if let Ok(v) = HeaderValue::from_str(&session_cookie(&id)) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}
