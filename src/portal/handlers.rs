//! Portal handlers: the terms page, the redirect, and accept.

use crate::metrics::refused;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Serialize;

use super::PortalState;
use crate::access::{Application, Refusal, Unavailable};
use crate::clients::MAX_NAME_CHARS;
use crate::web::form;
use crate::web::guest_headers;

/// What the guest typed, echoed back into the form after an error.
#[derive(Debug, Default, Serialize)]
struct Typed {
    code: String,
    name: String,
    organisation: String,
    agree: bool,
}

/// GET /: the policy and the form, for requests addressed to the portal itself; anything else
/// (a redirected `http://example.com/`) is sent to the portal's URL.
pub(super) async fn terms(State(st): State<Arc<PortalState>>, headers: HeaderMap) -> Response {
    if !for_portal(&st, &headers) {
        return redirect(&st);
    }
    blank(&st).unwrap_or_else(|| crate::web::fallback(StatusCode::INTERNAL_SERVER_ERROR))
}

/// The blank portal page, rendered once per policy and template version; `None` if it cannot
/// be rendered.
pub(super) fn blank(st: &PortalState) -> Option<Response> {
    let (policy, templates) = (st.policy.get(), st.pages.templates());
    let page = st.prepared.blank_page(&policy, &templates, || {
        st.pages
            .render_in(&templates, "terms.html", terms_context(&policy, &Typed::default(), ""))
    })?;
    let length = axum::http::HeaderValue::from(page.len());
    let mut response = (StatusCode::OK, guest_headers(), axum::response::Html(page)).into_response();
    // As the router would add it.
    response.headers_mut().insert(header::CONTENT_LENGTH, length);
    Some(response)
}

/// GET /policy: the policy alone (the API's `venue-info-url`).
pub(super) async fn policy(State(st): State<Arc<PortalState>>) -> Response {
    st.pages.render(
        StatusCode::OK,
        "policy.html",
        minijinja::context! { policy_html => minijinja::Value::from_safe_string(st.policy.get().html.clone()) },
    )
}

/// Everything else: 302 to the portal page (what every OS's captive-portal check expects).
pub(super) async fn to_portal(State(st): State<Arc<PortalState>>) -> Response {
    redirect(&st)
}

fn redirect(st: &PortalState) -> Response {
    redirect_from(&st.prepared)
}

/// The 302 to the portal page, its headers made once.
pub(super) fn redirect_from(prepared: &super::Prepared) -> Response {
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::FOUND;
    *response.headers_mut() = prepared.redirect.clone();
    response
}

/// True if the Host header names the portal itself (`Config::is_portal_host`).
fn for_portal(st: &PortalState, headers: &HeaderMap) -> bool {
    for_portal_host(&st.config, headers)
}

/// `for_portal`, from the configuration alone.
pub(super) fn for_portal_host(config: &crate::config::Config, headers: &HeaderMap) -> bool {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|host| config.is_portal_host(host))
}

/// What `terms.html` is rendered with: the policy, the form as typed, and the error above it.
fn terms_context(policy: &crate::assets::Policy, typed: &Typed, error: &str) -> minijinja::Value {
    minijinja::context! {
        policy_html => minijinja::Value::from_safe_string(policy.html.clone()),
        policy_version => &policy.hash,
        form => minijinja::Value::from(minijinja::value::Serde(typed)),
        error,
        max_name => MAX_NAME_CHARS,
    }
}

/// The portal page with what the guest typed and `error` above the form (422).
fn terms_page(st: &PortalState, typed: &Typed, error: &str) -> Response {
    let policy = st.policy.get();
    let status = if error.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    st.pages
        .render(status, "terms.html", terms_context(&policy, typed, error))
}

/// POST /accept, timed and counted for `/metrics`.
pub(super) async fn accept(
    State(st): State<Arc<PortalState>>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = std::time::Instant::now();
    let metrics = st.metrics.clone();
    let response = accept_inner(State(st), peer, headers, body).await;
    metrics.accept_finished(&response, started.elapsed());
    response
}

/// POST /accept: the form read (HTTP's part), the decision (`access::Admissions::accept`), and
/// its outcome as a page.
async fn accept_inner(
    State(st): State<Arc<PortalState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let ip = peer.ip().to_canonical();
    // No personal data above info beyond MAC and course, so the client's address is logged
    // here, at debug, and the warnings in `access` name only the MAC.
    tracing::debug!(%ip, "accept request");
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            tracing::warn!("oversized form refused");
            return message_for(&st, StatusCode::PAYLOAD_TOO_LARGE, "form_too_large", ().into(), true);
        }
        Err(e) => {
            tracing::warn!(error = %e, "unreadable form body");
            return message_for(&st, StatusCode::BAD_REQUEST, "form_unreadable", ().into(), true);
        }
    };
    let fields = match form::parse(&body) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "malformed form refused");
            return message_for(&st, StatusCode::BAD_REQUEST, "form_not_text", ().into(), true);
        }
    };
    let field = |k: &str| fields.get(k).map(String::as_str).unwrap_or("").to_owned();
    let typed = Typed {
        code: field("code").chars().take(32).collect(),
        name: field("name").chars().take(MAX_NAME_CHARS).collect(),
        organisation: field("organisation").chars().take(MAX_NAME_CHARS).collect(),
        agree: !field("agree").is_empty(),
    };
    let application = Application {
        ip,
        code: field("code"),
        name: field("name"),
        organisation: field("organisation"),
        agreed: typed.agree,
        policy_version: field("policy"),
        user_agent: user_agent(&headers),
    };
    let local = |t: Timestamp, fmt: &str| t.to_zoned(st.config.school.timezone.clone()).strftime(fmt).to_string();
    match st.access.accept(application).await {
        // Only now: the short confirmation (pop-ups often close as soon as the internet answers).
        Ok(admitted) => st.pages.render(
            StatusCode::OK,
            "accepted.html",
            minijinja::context! {
                until => local(admitted.course.ends_at, "%H:%M"),
                until_date => local(admitted.course.ends_at, "%A %-d %B"),
                course_title => &admitted.course.title,
            },
        ),
        Err(refusal) => {
            let label = refusal.as_str();
            refused(refusal_page(&st, typed, refusal, &local), label)
        }
    }
}

/// What a refusal is called in `refusals.txt`: its metrics label, with which part of ours
/// failed for `unavailable`.
fn reason_key(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::Unavailable(Unavailable::Neighbours) => "unavailable_neighbours",
        Refusal::Unavailable(Unavailable::Store) => "unavailable_store",
        Refusal::Unavailable(Unavailable::Firewall) => "unavailable_firewall",
        other => other.as_str(),
    }
}

/// The guest's words for `reason` (`part`: "title" or "text") from the `refusals.txt` template,
/// so IT support can reword or translate them without a rebuild.
fn words(st: &PortalState, reason: &str, part: &str, extra: minijinja::Value) -> String {
    let ctx = minijinja::context! { reason, part, ..extra };
    st.pages.text("refusals.txt", ctx).unwrap_or_else(|| {
        if part == "title" {
            "Sorry, something went wrong"
        } else {
            "Please try again in a moment, or ask a member of staff for help."
        }
        .to_owned()
    })
}

/// A message page for `reason`: its title and text, and whether to offer the way back.
fn message_for(st: &PortalState, status: StatusCode, reason: &str, extra: minijinja::Value, retry: bool) -> Response {
    let title = words(st, reason, "title", extra.clone());
    let text = words(st, reason, "text", extra);
    st.pages.message(status, &title, &text, retry)
}

/// The page for a refusal: the form again with the reason above it where the guest can put it
/// right, a message page otherwise. Status codes are ours; the words are the template's.
fn refusal_page(
    st: &PortalState,
    mut typed: Typed,
    refusal: Refusal,
    local: &dyn Fn(Timestamp, &str) -> String,
) -> Response {
    let key = reason_key(&refusal);
    let none = minijinja::Value::from(());
    let form = |typed: &Typed, extra: minijinja::Value| terms_page(st, typed, &words(st, key, "text", extra));
    match refusal {
        Refusal::UnknownDevice => message_for(st, StatusCode::SERVICE_UNAVAILABLE, key, none, true),
        Refusal::LockedOut { until } => {
            let minutes = ((until.duration_since(st.access.now()).as_secs() + 59) / 60).max(1);
            message_for(
                st,
                StatusCode::TOO_MANY_REQUESTS,
                key,
                minijinja::context! { minutes },
                true,
            )
        }
        Refusal::PolicyChanged => {
            typed.agree = false;
            form(&typed, none)
        }
        Refusal::CourseNotStarted { starts_at } => form(
            &typed,
            minijinja::context! {
                starts_time => local(starts_at, "%H:%M"),
                starts_date => local(starts_at, "%A %-d %B"),
            },
        ),
        Refusal::EmptyCode | Refusal::WrongCode | Refusal::CourseEnded | Refusal::NotAgreed => form(&typed, none),
        Refusal::BadName(problem) => {
            typed.name = String::new();
            form(&typed, minijinja::context! { problem })
        }
        Refusal::BadOrganisation(problem) => {
            typed.organisation = String::new();
            form(&typed, minijinja::context! { problem })
        }
        Refusal::CourseFull => message_for(st, StatusCode::CONFLICT, key, none, true),
        Refusal::Revoked => message_for(st, StatusCode::FORBIDDEN, key, none, false),
        Refusal::Unavailable(_) => message_for(st, StatusCode::SERVICE_UNAVAILABLE, key, none, true),
    }
}

/// The browser's User-Agent, printable and at most 512 characters.
fn user_agent(headers: &HeaderMap) -> String {
    headers
        .get(header::USER_AGENT)
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .filter(|c| !c.is_control())
                .take(512)
                .collect()
        })
        .unwrap_or_default()
}
