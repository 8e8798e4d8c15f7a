//! Portal handlers: the terms page, the redirect, and accept.

use crate::metrics::refused;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
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
pub(super) async fn terms(State(st): State<PortalState>, headers: HeaderMap) -> Response {
    if !for_portal(&st, &headers) {
        return redirect(&st);
    }
    terms_page(&st, &Typed::default(), "")
}

/// GET /policy: the policy alone (the API's `venue-info-url`).
pub(super) async fn policy(State(st): State<PortalState>) -> Response {
    st.pages.render(
        StatusCode::OK,
        "policy.html",
        minijinja::context! { policy_html => minijinja::Value::from_safe_string(st.policy.get().html.clone()) },
    )
}

/// Everything else: 302 to the portal page (what every OS's captive-portal check expects).
pub(super) async fn to_portal(State(st): State<PortalState>) -> Response {
    redirect(&st)
}

fn redirect(st: &PortalState) -> Response {
    let mut response = (StatusCode::FOUND, guest_headers()).into_response();
    if let Ok(url) = HeaderValue::from_str(&st.config.portal_url()) {
        response.headers_mut().insert(header::LOCATION, url);
    }
    response
}

/// True if the Host header names the portal itself (`Config::is_portal_host`).
fn for_portal(st: &PortalState, headers: &HeaderMap) -> bool {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|host| st.config.is_portal_host(host))
}

fn terms_page(st: &PortalState, typed: &Typed, error: &str) -> Response {
    let policy = st.policy.get();
    let status = if error.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    st.pages.render(
        status,
        "terms.html",
        minijinja::context! {
            policy_html => minijinja::Value::from_safe_string(policy.html.clone()),
            policy_version => &policy.hash,
            form => minijinja::Value::from(minijinja::value::Serde(typed)),
            error,
            max_name => MAX_NAME_CHARS,
        },
    )
}

/// POST /accept, timed and counted for `/metrics`.
pub(super) async fn accept(
    State(st): State<PortalState>,
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
    State(st): State<PortalState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let ip = peer.ip().to_canonical();
    // No personal data above info beyond MAC and course, so the client's address is logged
    // here, at debug, and the warnings in `access` name only the MAC.
    tracing::debug!(%ip, "accept request");
    let pages = &st.pages;
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            tracing::warn!("oversized form refused");
            return pages.message(
                StatusCode::PAYLOAD_TOO_LARGE,
                "That was too much text",
                "The form was larger than we accept. Please go back and shorten what you typed.",
                true,
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "unreadable form body");
            return pages.message(
                StatusCode::BAD_REQUEST,
                "We couldn't read the form",
                "Please go back and send the form again.",
                true,
            );
        }
    };
    let fields = match form::parse(&body) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "malformed form refused");
            return pages.message(
                StatusCode::BAD_REQUEST,
                "We couldn't read the form",
                "Some of what was sent is not valid text. Please go back, type your details again and resend.",
                true,
            );
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

/// The page for a refusal: the form again with the reason above it where the guest can put it
/// right, a message page otherwise.
fn refusal_page(
    st: &PortalState,
    mut typed: Typed,
    refusal: Refusal,
    local: &dyn Fn(Timestamp, &str) -> String,
) -> Response {
    let pages = &st.pages;
    let form = |typed: &Typed, error: &str| terms_page(st, typed, error);
    match refusal {
        Refusal::UnknownDevice => pages.message(
            StatusCode::SERVICE_UNAVAILABLE,
            "We couldn't recognise your device",
            "Please make sure you are connected to the guest Wi-Fi, then reload this page and try again.",
            true,
        ),
        Refusal::LockedOut { until } => {
            let minutes = ((until.duration_since(st.access.now()).as_secs() + 59) / 60).max(1);
            pages.message(
                StatusCode::TOO_MANY_REQUESTS,
                "Please wait before trying again",
                &format!("Too many incorrect access codes were entered on this device. Please wait {minutes} minute{} before trying again, or ask at reception.", if minutes == 1 { "" } else { "s" }),
                true,
            )
        }
        Refusal::EmptyCode => form(&typed, "Please enter your course access code."),
        Refusal::WrongCode => form(
            &typed,
            "That access code isn't right. Please check it (8 letters and numbers) and try again.",
        ),
        Refusal::PolicyChanged => {
            typed.agree = false;
            form(
                &typed,
                "The policy has been updated since this page was loaded. Please read it again and accept.",
            )
        }
        Refusal::CourseNotStarted { starts_at } => form(
            &typed,
            &format!(
                "That code is for a course that starts at {} on {}. Please try again then.",
                local(starts_at, "%H:%M"),
                local(starts_at, "%A %-d %B")
            ),
        ),
        Refusal::CourseEnded => form(&typed, "That course has ended, so its access code no longer works."),
        Refusal::BadName(problem) => {
            typed.name = String::new();
            form(&typed, &problem)
        }
        Refusal::BadOrganisation(problem) => {
            typed.organisation = String::new();
            form(&typed, &problem)
        }
        Refusal::NotAgreed => form(
            &typed,
            "Please tick the box to confirm you have read, understood and agree to the policy.",
        ),
        Refusal::CourseFull => pages.message(
            StatusCode::CONFLICT,
            "This course's Wi-Fi places are all taken",
            "Every device place for this course is in use. Please ask your course organiser or reception.",
            true,
        ),
        Refusal::Revoked => pages.message(StatusCode::FORBIDDEN, "Access withdrawn", "Staff have withdrawn this device's Wi-Fi access for this course. Please speak to reception or your course organiser.", false),
        Refusal::Unavailable(Unavailable::Neighbours) => pages.message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Something went wrong on our side",
            "Nothing has been opened. Please try again in a minute, or ask a member of staff.",
            true,
        ),
        Refusal::Unavailable(Unavailable::Store) => pages.message(
            StatusCode::SERVICE_UNAVAILABLE,
            "We couldn't record your acceptance",
            "Nothing has been opened. Please try again in a minute, or ask a member of staff.",
            true,
        ),
        Refusal::Unavailable(Unavailable::Firewall) => pages.message(StatusCode::SERVICE_UNAVAILABLE, "We couldn't connect your device", "Your acceptance was received, but connecting failed, so nothing has been opened. Please try again in a minute, or ask a member of staff.", true),
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
