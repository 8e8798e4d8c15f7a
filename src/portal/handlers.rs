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
use super::form;
use crate::clients::{self, AccessCode, CourseState, MAX_NAME_CHARS, MAX_WRONG_CODES, WRONG_CODE_WINDOW};
use crate::store::{NewConsent, StoreError};
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

/// POST /accept. In order: who is this device, brute-force guard, the form, the course; then
/// consent committed; then the firewall opened; only then the "connected" page.
async fn accept_inner(
    State(st): State<PortalState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let ip = peer.ip().to_canonical();
    // DESIGN.md: no personal data above info beyond MAC and course, so the client's address
    // is logged here, at debug, and warnings below name only the MAC.
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
    let field = |k: &str| fields.get(k).map(String::as_str).unwrap_or("");
    let mut typed = Typed {
        code: field("code").chars().take(32).collect(),
        name: field("name").chars().take(MAX_NAME_CHARS).collect(),
        organisation: field("organisation").chars().take(MAX_NAME_CHARS).collect(),
        agree: !field("agree").is_empty(),
    };

    // 1. Which device is this? Without a MAC nothing can be opened, so ask the guest to retry.
    let neighbour = match st.neighbours.lookup(ip).await {
        Ok(Some(n)) => n,
        Ok(None) => {
            tracing::warn!("no neighbour entry for the client; asked it to retry");
            return refused(
                pages.message(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "We couldn't recognise your device",
                    "Please make sure you are connected to the guest Wi-Fi, then reload this page and try again.",
                    true,
                ),
                "unknown_device",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "neighbour lookup failed");
            return pages.message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Something went wrong on our side",
                "Nothing has been opened. Please try again in a minute, or ask a member of staff.",
                true,
            );
        }
    };
    let mac = neighbour.mac;
    let device = mac.to_string();
    let now = st.clock.now();

    // 2. Brute-force guard: too many wrong codes lately means wait, whatever was typed now. The
    // check and the recording of this attempt are one transaction, so parallel guesses count.
    let since = now - WRONG_CODE_WINDOW;
    let (dev, at) = (device.clone(), ip.to_string());
    let attempt = match st
        .store
        .run(move |s| s.begin_code_attempt(&dev, &at, now, since, MAX_WRONG_CODES))
        .await
    {
        Ok(Ok(id)) => id,
        Ok(Err((n, oldest))) => {
            let free_at = oldest.unwrap_or(now) + WRONG_CODE_WINDOW;
            let minutes = (free_at.duration_since(now).as_secs() + 59) / 60;
            tracing::warn!(%mac, failures = n, "code attempt refused: device is locked out");
            return pages.message(
                StatusCode::TOO_MANY_REQUESTS,
                "Please wait before trying again",
                &format!("Too many incorrect access codes were entered on this device. Please wait {} minute{} before trying again, or ask at reception.", minutes.max(1), if minutes == 1 { "" } else { "s" }),
                true,
            );
        }
        Err(e) => return store_failed(&st, mac, &e),
    };

    // 3. The code. Only a wrong one counts towards the lock-out (an empty one does not).
    let code = AccessCode::normalise(field("code"));
    let course = match &code {
        Some(code) => {
            let code = code.clone();
            match st.store.run(move |s| s.course_by_code(&code)).await {
                Ok(c) => c,
                Err(e) => return store_failed(&st, mac, &e),
            }
        }
        None => None,
    };
    let empty = field("code").trim().is_empty();
    let outcome = match (&course, empty) {
        (Some(_), _) => "right-code",
        (None, true) => "empty",
        (None, false) => "wrong-code",
    };
    if let Err(e) = st
        .store
        .run(move |s| s.finish_code_attempt(attempt, outcome, now))
        .await
    {
        return store_failed(&st, mac, &e);
    }
    let Some(course) = course else {
        if empty {
            return terms_page(&st, &typed, "Please enter your course access code.");
        }
        tracing::warn!(%mac, "wrong access code");
        return refused(
            terms_page(
                &st,
                &typed,
                "That access code isn't right. Please check it (8 letters and numbers) and try again.",
            ),
            "wrong_code",
        );
    };

    // 4. The rest of the form. The policy shown must be the policy in force now.
    let policy = st.policy.get();
    if field("policy") != policy.hash {
        typed.agree = false;
        return refused(
            terms_page(
                &st,
                &typed,
                "The policy has been updated since this page was loaded. Please read it again and accept.",
            ),
            "policy_changed",
        );
    }
    let local = |t: Timestamp, fmt: &str| t.to_zoned(st.config.school.timezone.clone()).strftime(fmt).to_string();
    match course.state(now) {
        CourseState::Running => {}
        CourseState::Upcoming => {
            let msg = format!(
                "That code is for a course that starts at {} on {}. Please try again then.",
                local(course.starts_at, "%H:%M"),
                local(course.starts_at, "%A %-d %B")
            );
            tracing::info!(%mac, course = course.id, "code of a course not started yet");
            return refused(terms_page(&st, &typed, &msg), "course_not_started");
        }
        CourseState::Ended => {
            tracing::info!(%mac, course = course.id, "code of an ended course");
            return refused(
                terms_page(
                    &st,
                    &typed,
                    "That course has ended, so its access code no longer works.",
                ),
                "course_ended",
            );
        }
    }
    let name = match clients::clean_text("Your name", field("name")) {
        Ok(n) if n.is_empty() => return terms_page(&st, &typed, "Please enter your name."),
        Ok(n) => n,
        Err(msg) => {
            return terms_page(
                &st,
                &Typed {
                    name: String::new(),
                    ..typed
                },
                &msg,
            );
        }
    };
    let organisation = match clients::clean_text("Organisation", field("organisation")) {
        Ok(o) => o,
        Err(msg) => {
            return terms_page(
                &st,
                &Typed {
                    organisation: String::new(),
                    ..typed
                },
                &msg,
            );
        }
    };
    if !typed.agree {
        return terms_page(
            &st,
            &typed,
            "Please tick the box to confirm you have read, understood and agree to the policy.",
        );
    }

    // 5. Consent, committed durably before anything is opened.
    let user_agent: String = headers
        .get(header::USER_AGENT)
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .filter(|c| !c.is_control())
                .take(512)
                .collect()
        })
        .unwrap_or_default();
    let consent = NewConsent {
        course_id: course.id,
        max_devices: course.max_devices,
        mac,
        ip: ip.to_string(),
        accepted_at: now,
        expires_at: course.ends_at,
        name,
        organisation,
        user_agent,
        policy_hash: policy.hash.clone(),
    };
    let consent_id = match st.store.run(move |s| s.record_consent(&consent)).await {
        Ok(id) => id,
        Err(StoreError::CourseFull) => {
            tracing::info!(%mac, course = course.id, "course full");
            // Counted for the staff dashboard's refusals; failing to count does not change the answer.
            let detail = serde_json::json!({"course": course.id});
            let _ = st
                .store
                .run(move |s| s.record_device_event(now, "refused-course-full", detail, mac))
                .await;
            return pages.message(
                StatusCode::CONFLICT,
                "This course's Wi-Fi places are all taken",
                "Every device place for this course is in use. Please ask your course organiser or reception.",
                true,
            );
        }
        Err(StoreError::CourseNotRunning) => {
            tracing::info!(%mac, course = course.id, "course ended while the guest was accepting");
            return refused(
                terms_page(
                    &st,
                    &typed,
                    "That course has ended, so its access code no longer works.",
                ),
                "course_ended",
            );
        }
        Err(StoreError::RevokedForCourse) => {
            tracing::info!(%mac, course = course.id, "revoked device tried to accept again");
            return pages.message(StatusCode::FORBIDDEN, "Access withdrawn", "Staff have withdrawn this device's Wi-Fi access for this course. Please speak to reception or your course organiser.", false);
        }
        Err(e) => return store_failed(&st, mac, &e),
    };

    // 6. Open the firewall for this MAC, and make its existing connections start afresh. Every
    // address the device has on the guest network is forgotten, not only this request's.
    let mut addresses = neighbour.addresses.clone();
    if !addresses.contains(&ip) {
        addresses.push(ip);
    }
    // On failure the writer has already withdrawn the consent and closed the MAC, before
    // answering, so its periodic check cannot re-open it behind the guest's back.
    if let Err(e) = st.firewall.open(mac, addresses, consent_id).await {
        tracing::error!(%mac, error = %e, "could not open the firewall; consent withdrawn");
        return pages.message(StatusCode::SERVICE_UNAVAILABLE, "We couldn't connect your device", "Your acceptance was received, but connecting failed, so nothing has been opened. Please try again in a minute, or ask a member of staff.", true);
    }
    tracing::info!(%mac, %ip, course = course.id, consent = consent_id, "consent recorded and device opened");

    // 7. Only now: the short confirmation (pop-ups often close as soon as the internet answers).
    st.pages.render(
        StatusCode::OK,
        "accepted.html",
        minijinja::context! {
            until => local(course.ends_at, "%H:%M"),
            until_date => local(course.ends_at, "%A %-d %B"),
            course_title => &course.title,
        },
    )
}

fn store_failed(st: &PortalState, mac: clients::MacAddr, e: &StoreError) -> Response {
    tracing::error!(%mac, error = %e, "store failure during accept; nothing opened");
    st.pages.message(
        StatusCode::SERVICE_UNAVAILABLE,
        "We couldn't record your acceptance",
        "Nothing has been opened. Please try again in a minute, or ask a member of staff.",
        true,
    )
}
