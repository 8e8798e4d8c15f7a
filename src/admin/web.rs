//! The staff web UI over HTTPS: sign-in, dashboard, courses, live guests and revoke. Every page
//! needs a signed-in session (cookie: Secure, HttpOnly, SameSite=Strict, ended after idle time);
//! every change is a POST carrying the session's CSRF token; guest-typed text is autoescaped.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jiff::civil::DateTime;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tower_http::set_header::SetResponseHeaderLayer;

use super::actions::{self, AdminState};
use crate::clients::{CourseState, MacAddr};
use crate::config::Config;
use crate::portal::form;
use crate::web::Pages;

/// Session cookie name.
const COOKIE: &str = "aupgate_session";
/// Failed sign-ins allowed per account, and per address, in the window below.
const MAX_FAILED_PER_ACCOUNT: u32 = 5;
const MAX_FAILED_PER_ADDRESS: u32 = 20;
const SIGN_IN_WINDOW: SignedDuration = SignedDuration::from_mins(15);

/// What the admin's handlers use.
#[derive(Debug, Clone)]
pub struct WebState {
    /// Staff actions (store, firewall, clock).
    pub actions: AdminState,
    /// Page renderer.
    pub pages: Pages,
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Idle time after which a session ends.
    pub idle: SignedDuration,
    /// Counters for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The admin's routes, with its security headers.
pub fn router(state: WebState) -> Router {
    const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/", get(dashboard))
        .route("/courses", get(courses).post(create_course))
        .route("/courses/{id}/end", post(end_course))
        .route("/courses/{id}/poster", get(poster))
        .route("/courses/{id}/revoke-all", post(revoke_course))
        .route("/guests", get(guests))
        .route("/guests/revoke", post(revoke))
        .route("/exceptions", post(grant_exception))
        .route("/exceptions/{id}/end", post(end_exception))
        .route("/metrics", get(metrics))
        .route("/audit", get(audit))
        .route("/audit/export", post(audit_export))
        .route("/admin.css", get(css))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024))
        .with_state(state)
}

fn sha256_hex(text: &str) -> String {
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

/// Constant-time comparison, so the CSRF check does not leak the token byte by byte.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A signed-in member of staff; extracting it signs the request in or redirects to /login.
#[derive(Debug, Clone, Serialize)]
pub struct Staff {
    name: String,
    role: String,
    csrf: String,
    #[serde(skip)]
    id_hash: String,
}

fn to_login() -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/login")]).into_response()
}

impl FromRequestParts<WebState> for Staff {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &WebState) -> Result<Self, Self::Rejection> {
        let cookie = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == COOKIE)
            .map(|(_, v)| v.to_owned());
        let Some(id) = cookie else { return Err(to_login()) };
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
            Ok(Some(s)) => Ok(Staff {
                name: s.admin,
                role: s.role.to_string(),
                csrf: s.csrf,
                id_hash,
            }),
            _ => Err(to_login()),
        }
    }
}

fn ser<T: Serialize>(value: &T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(value))
}

/// The page for a store that cannot be read (a disk or database failure).
fn unavailable(st: &WebState, staff: &Staff, back: &str) -> Response {
    message(
        st,
        Some(staff),
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        "The store cannot be read.",
        back,
    )
}

fn page(st: &WebState, status: StatusCode, name: &str, staff: Option<&Staff>, ctx: minijinja::Value) -> Response {
    st.pages.render(
        status,
        name,
        minijinja::context! { staff => staff.map_or_else(|| minijinja::Value::from(()), ser), ..ctx },
    )
}

fn message(
    st: &WebState,
    staff: Option<&Staff>,
    status: StatusCode,
    title: &str,
    message: &str,
    back: &str,
) -> Response {
    let error = !status.is_success();
    page(
        st,
        status,
        "admin/message.html",
        staff,
        minijinja::context! { title, message, back, error },
    )
}

/// Parses a POSTed form and checks its CSRF token against the session's. (The refusal is a
/// whole response, returned at once by every caller; its size does not matter here.)
#[allow(clippy::result_large_err)]
fn checked_form(
    st: &WebState,
    staff: &Staff,
    body: &[u8],
) -> Result<std::collections::HashMap<String, String>, Response> {
    let fields = form::parse(body).map_err(|_| {
        message(
            st,
            Some(staff),
            StatusCode::BAD_REQUEST,
            "Unreadable form",
            "The form could not be read; please try again.",
            "/",
        )
    })?;
    let token = fields.get("csrf").map(String::as_str).unwrap_or("");
    if !same(token, &staff.csrf) {
        tracing::warn!(admin = %staff.name, "form refused: missing or wrong CSRF token");
        return Err(message(
            st,
            Some(staff),
            StatusCode::FORBIDDEN,
            "Form expired",
            "This form is out of date; reload the page and try again.",
            "/",
        ));
    }
    Ok(fields)
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        crate::assets::ADMIN_CSS,
    )
        .into_response()
}

/// The sign-in form again, with `error` above it and the name typed kept.
fn login_form(st: &WebState, status: StatusCode, error: &str, username: &str) -> Response {
    page(
        st,
        status,
        "admin/login.html",
        None,
        minijinja::context! { error, username },
    )
}

/// Sign-in cannot go on (the store cannot be written, or no randomness): `why` says which.
fn sign_in_unavailable(st: &WebState, why: &str) -> Response {
    message(
        st,
        None,
        StatusCode::SERVICE_UNAVAILABLE,
        "Sign-in unavailable",
        why,
        "/login",
    )
}

/// Why a sign-in needing the store could not go on.
const STORE_UNWRITABLE: &str = "The store cannot be written; try again later.";

async fn login_page(State(st): State<WebState>) -> Response {
    login_form(&st, StatusCode::OK, "", "")
}

async fn login(
    State(st): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    let Ok(fields) = form::parse(&body) else {
        return login_form(&st, StatusCode::BAD_REQUEST, "The form could not be read.", "");
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
            return login_form(
                &st,
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed sign-ins. Please wait 15 minutes and try again.",
                &username,
            );
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
            let mut busy = login_form(
                &st,
                StatusCode::TOO_MANY_REQUESTS,
                "Too many sign-ins at once. Please try again in a minute.",
                &username,
            );
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
        return login_form(&st, StatusCode::UNAUTHORIZED, "Wrong name or password.", &username);
    }
    let (Some(id), Some(csrf)) = (random_hex(), random_hex()) else {
        return sign_in_unavailable(&st, "No randomness from the kernel; try again.");
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
    let cookie = format!("{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict");
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

async fn logout(State(st): State<WebState>, staff: Staff, body: axum::body::Bytes) -> Response {
    if let Err(r) = checked_form(&st, &staff, &body) {
        return r;
    }
    let hash = staff.id_hash.clone();
    let _ = st.actions.store.run(move |s| s.end_session(&hash)).await;
    let mut response = to_login();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("aupgate_session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

fn local(st: &WebState, t: Timestamp) -> String {
    t.to_zoned(st.config.school.timezone.clone())
        .strftime("%a %-d %b %H:%M")
        .to_string()
}

async fn dashboard(State(st): State<WebState>, staff: Staff) -> Response {
    let now = st.actions.clock.now();
    let midnight = now
        .to_zoned(st.config.school.timezone.clone())
        .start_of_day()
        .map(|z| z.timestamp())
        .unwrap_or(now);
    let counts = st
        .actions
        .store
        .run(move |s| Ok((s.sessions(now)?.len(), s.counts_since(midnight)?, s.courses()?)))
        .await;
    let Ok((guests_now, (accepted_today, wrong_codes_today, full_today), courses)) = counts else {
        return unavailable(&st, &staff, "/");
    };
    let courses_running = courses.iter().filter(|c| c.state(now) == CourseState::Running).count();
    let fw = st.actions.firewall.status();
    let firewall = minijinja::context! {
        present => fw.table_present,
        elements => fw.elements,
        last_check => fw.last_check.map(|t| t.to_zoned(st.config.school.timezone.clone()).strftime("%H:%M:%S").to_string()),
        last_rebuild => fw.last_rebuild.map(|t| local(&st, t)),
        error => fw.last_error,
    };
    page(
        &st,
        StatusCode::OK,
        "admin/dashboard.html",
        Some(&staff),
        minijinja::context! {
        guests_now, accepted_today, wrong_codes_today, full_today, courses_running, firewall },
    )
}

#[derive(Serialize)]
struct CourseRow {
    id: i64,
    title: String,
    code: String,
    starts: String,
    ends: String,
    max_devices: u32,
    state: &'static str,
}

async fn courses(State(st): State<WebState>, staff: Staff) -> Response {
    let now = st.actions.clock.now();
    let Ok(list) = st.actions.store.run(|s| s.courses()).await else {
        return unavailable(&st, &staff, "/");
    };
    let rows: Vec<CourseRow> = list
        .iter()
        .map(|c| CourseRow {
            id: c.id,
            title: c.title.clone(),
            code: c.code.to_string(),
            starts: local(&st, c.starts_at),
            ends: local(&st, c.ends_at),
            max_devices: c.max_devices,
            state: match c.state(now) {
                CourseState::Upcoming => "upcoming",
                CourseState::Running => "running",
                CourseState::Ended => "ended",
            },
        })
        .collect();
    page(
        &st,
        StatusCode::OK,
        "admin/courses.html",
        Some(&staff),
        minijinja::context! {
        courses => ser(&rows), timezone => &st.config.school.timezone_name },
    )
}

async fn create_course(State(st): State<WebState>, staff: Staff, body: axum::body::Bytes) -> Response {
    let fields = match checked_form(&st, &staff, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let field = |k: &str| fields.get(k).map(String::as_str).unwrap_or("").trim().to_owned();
    let tz = st.config.school.timezone.clone();
    let when = |k: &str| -> Option<Timestamp> {
        field(k)
            .parse::<DateTime>()
            .ok()?
            .to_zoned(tz.clone())
            .ok()
            .map(|z| z.timestamp())
    };
    let (Some(starts), Some(ends)) = (when("starts"), when("ends")) else {
        return message(
            &st,
            Some(&staff),
            StatusCode::UNPROCESSABLE_ENTITY,
            "Course not created",
            "Give the start and end as a date and time.",
            "/courses",
        );
    };
    let Ok(max) = field("max_devices").parse::<u32>() else {
        return message(
            &st,
            Some(&staff),
            StatusCode::UNPROCESSABLE_ENTITY,
            "Course not created",
            "Give the device limit as a whole number.",
            "/courses",
        );
    };
    match actions::add_course(&st.actions, &field("title"), starts, ends, max, &staff.name).await {
        Ok(_) => (StatusCode::SEE_OTHER, [(header::LOCATION, "/courses")]).into_response(),
        Err(e) => message(
            &st,
            Some(&staff),
            StatusCode::UNPROCESSABLE_ENTITY,
            "Course not created",
            &e,
            "/courses",
        ),
    }
}

async fn end_course(
    State(st): State<WebState>,
    staff: Staff,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = checked_form(&st, &staff, &body) {
        return r;
    }
    match actions::end_course(&st.actions, id, &staff.name).await {
        Ok((course, closed)) => message(
            &st,
            Some(&staff),
            StatusCode::OK,
            "Course ended",
            &format!("{} has ended; {closed} device(s) were closed.", course.title),
            "/courses",
        ),
        Err(e) => message(
            &st,
            Some(&staff),
            StatusCode::UNPROCESSABLE_ENTITY,
            "Course not ended",
            &e,
            "/courses",
        ),
    }
}

#[derive(Serialize)]
struct GuestRow {
    mac: String,
    randomised: bool,
    ip: String,
    name: String,
    organisation: String,
    course: String,
    since: String,
    until: String,
}

#[derive(serde::Deserialize)]
struct GuestFilter {
    course: Option<String>,
}

async fn guests(State(st): State<WebState>, staff: Staff, Query(filter): Query<GuestFilter>) -> Response {
    let now = st.actions.clock.now();
    let selected: Option<i64> = filter.course.as_deref().and_then(|c| c.parse().ok());
    let Ok((sessions, courses, exceptions)) = st
        .actions
        .store
        .run(move |s| Ok((s.sessions(now)?, s.courses()?, s.exceptions(now)?)))
        .await
    else {
        return unavailable(&st, &staff, "/");
    };
    let rows: Vec<GuestRow> = sessions
        .iter()
        .filter(|s| selected.is_none_or(|id| s.course_id == id))
        .map(|s| GuestRow {
            mac: s.mac.to_string(),
            // The locally administered bit: phones set it on their private (random) addresses.
            randomised: s.mac.octets()[0] & 0x02 != 0,
            ip: s.ip.clone(),
            name: s.name.clone(),
            organisation: s.organisation.clone(),
            course: s.course.clone(),
            since: local(&st, s.accepted_at),
            until: local(&st, s.expires_at),
        })
        .collect();
    #[derive(Serialize)]
    struct Opt {
        id: i64,
        title: String,
    }
    let options: Vec<Opt> = courses
        .iter()
        .map(|c| Opt {
            id: c.id,
            title: c.title.clone(),
        })
        .collect();
    #[derive(Serialize)]
    struct ExceptionRow {
        id: i64,
        mac: String,
        reason: String,
        granted_by: String,
        until: String,
    }
    let exceptions: Vec<ExceptionRow> = exceptions
        .iter()
        .map(|e| ExceptionRow {
            id: e.id,
            mac: e.mac.to_string(),
            reason: e.reason.clone(),
            granted_by: e.granted_by.clone(),
            until: local(&st, e.until),
        })
        .collect();
    page(
        &st,
        StatusCode::OK,
        "admin/guests.html",
        Some(&staff),
        minijinja::context! {
        guests => ser(&rows), courses => ser(&options), selected, exceptions => ser(&exceptions),
        timezone => &st.config.school.timezone_name },
    )
}

async fn revoke(State(st): State<WebState>, staff: Staff, body: axum::body::Bytes) -> Response {
    let fields = match checked_form(&st, &staff, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Ok(mac) = fields.get("mac").map(String::as_str).unwrap_or("").parse::<MacAddr>() else {
        return message(
            &st,
            Some(&staff),
            StatusCode::UNPROCESSABLE_ENTITY,
            "Not revoked",
            "That is not a device address.",
            "/guests",
        );
    };
    match actions::revoke(&st.actions, mac, &staff.name).await {
        Ok(_) => message(
            &st,
            Some(&staff),
            StatusCode::OK,
            "Revoked",
            &format!("{mac} is closed and cannot accept again for its course."),
            "/guests",
        ),
        Err(e) => message(
            &st,
            Some(&staff),
            StatusCode::SERVICE_UNAVAILABLE,
            "Not revoked",
            &e,
            "/guests",
        ),
    }
}

async fn revoke_course(
    State(st): State<WebState>,
    staff: Staff,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = checked_form(&st, &staff, &body) {
        return r;
    }
    let now = st.actions.clock.now();
    let Ok(sessions) = st.actions.store.run(move |s| s.sessions(now)).await else {
        return unavailable(&st, &staff, "/guests");
    };
    let mut macs: Vec<MacAddr> = sessions.iter().filter(|s| s.course_id == id).map(|s| s.mac).collect();
    macs.sort();
    macs.dedup();
    for mac in &macs {
        if let Err(e) = actions::revoke(&st.actions, *mac, &staff.name).await {
            return message(
                &st,
                Some(&staff),
                StatusCode::SERVICE_UNAVAILABLE,
                "Not all revoked",
                &e,
                "/guests",
            );
        }
    }
    message(
        &st,
        Some(&staff),
        StatusCode::OK,
        "Revoked",
        &format!("{} device(s) of the course are closed.", macs.len()),
        &format!("/guests?course={id}"),
    )
}

async fn grant_exception(State(st): State<WebState>, staff: Staff, body: axum::body::Bytes) -> Response {
    let fields = match checked_form(&st, &staff, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let field = |k: &str| fields.get(k).map(String::as_str).unwrap_or("").trim().to_owned();
    let Ok(mac) = field("mac").parse::<MacAddr>() else {
        return message(
            &st,
            Some(&staff),
            StatusCode::UNPROCESSABLE_ENTITY,
            "No exception granted",
            "Give the device's MAC address, like aa:bb:cc:dd:ee:ff.",
            "/guests",
        );
    };
    let tz = st.config.school.timezone.clone();
    let Some(until) = field("until")
        .parse::<DateTime>()
        .ok()
        .and_then(|d| d.to_zoned(tz).ok())
        .map(|z| z.timestamp())
    else {
        return message(
            &st,
            Some(&staff),
            StatusCode::UNPROCESSABLE_ENTITY,
            "No exception granted",
            "Give the end as a date and time.",
            "/guests",
        );
    };
    match actions::grant_exception(&st.actions, mac, &field("reason"), until, &staff.name).await {
        Ok(_) => message(
            &st,
            Some(&staff),
            StatusCode::OK,
            "Exception granted",
            &format!(
                "{mac} may use the Wi-Fi without the portal until {}.",
                local(&st, until)
            ),
            "/guests",
        ),
        Err(e) => message(
            &st,
            Some(&staff),
            StatusCode::UNPROCESSABLE_ENTITY,
            "No exception granted",
            &e,
            "/guests",
        ),
    }
}

async fn end_exception(
    State(st): State<WebState>,
    staff: Staff,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = checked_form(&st, &staff, &body) {
        return r;
    }
    match actions::end_exception(&st.actions, id, &staff.name).await {
        Ok(mac) => message(
            &st,
            Some(&staff),
            StatusCode::OK,
            "Exception ended",
            &format!("{mac} is closed unless a course still allows it."),
            "/guests",
        ),
        Err(e) => message(
            &st,
            Some(&staff),
            StatusCode::UNPROCESSABLE_ENTITY,
            "Not ended",
            &e,
            "/guests",
        ),
    }
}

/// GET /courses/{id}/poster: one printable A4 page with the course, the network, a QR code that
/// joins it, the access code in large type, and what accepting means.
async fn poster(State(st): State<WebState>, staff: Staff, Path(id): Path<i64>) -> Response {
    let Ok(courses) = st.actions.store.run(|s| s.courses()).await else {
        return unavailable(&st, &staff, "/courses");
    };
    let Some(course) = courses.into_iter().find(|c| c.id == id) else {
        return message(
            &st,
            Some(&staff),
            StatusCode::NOT_FOUND,
            "No such course",
            "That course does not exist.",
            "/courses",
        );
    };
    let guest = &st.config.guest;
    let qr_svg = match &guest.ssid {
        Some(ssid) => {
            let text = crate::clients::wifi_qr_text(ssid, guest.wifi_password.as_deref());
            match qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M) {
                Ok(code) => code
                    .render::<qrcode::render::svg::Color<'_>>()
                    .min_dimensions(240, 240)
                    .quiet_zone(true)
                    .build(),
                Err(e) => {
                    tracing::error!(error = %e, "cannot make the poster's QR code");
                    String::new()
                }
            }
        }
        None => String::new(),
    };
    #[derive(Serialize)]
    struct PosterCourse {
        title: String,
        code: String,
        starts: String,
        ends: String,
    }
    let c = PosterCourse {
        title: course.title.clone(),
        code: course.code.to_string(),
        starts: local(&st, course.starts_at),
        ends: local(&st, course.ends_at),
    };
    page(
        &st,
        StatusCode::OK,
        "admin/poster.html",
        Some(&staff),
        minijinja::context! {
            course => ser(&c),
            ssid => guest.ssid.as_deref(),
            // Made here from our own text; the SVG holds only rects and paths.
            qr_svg => minijinja::Value::from_safe_string(qr_svg),
        },
    )
}

/// Prometheus metrics: counts and timings only (no MAC, name or address), so it needs no
/// sign-in; the admin listener is on the staff side and guests are refused at the firewall.
async fn metrics(State(st): State<WebState>) -> Response {
    let text = st.metrics.encode(&st.actions.firewall.status());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The audit pages are for auditor accounts (the DSL, the data-protection officer) only.
fn auditor_only(st: &WebState, staff: &Staff) -> Option<Response> {
    (staff.role != crate::store::Role::Auditor.to_string()).then(|| {
        message(
            st,
            Some(staff),
            StatusCode::FORBIDDEN,
            "For auditors only",
            "The audit log and exports are open to auditor accounts only. Ask the school's IT support if you need one.",
            "/",
        )
    })
}

async fn audit(State(st): State<WebState>, staff: Staff) -> Response {
    if let Some(refused) = auditor_only(&st, &staff) {
        return refused;
    }
    let Ok((chain, versions, courses)) = st
        .actions
        .store
        .run(|s| Ok((s.verify()?, s.policy_versions()?, s.courses()?)))
        .await
    else {
        return unavailable(&st, &staff, "/");
    };
    let chain = match chain {
        Ok(ok) => {
            minijinja::context! { ok => true, events => ok.events, head => ok.head, continues_from => ok.continues_from }
        }
        Err(brk) => minijinja::context! { ok => false, event => brk.event, problem => brk.problem },
    };
    let when = |t: Option<&str>| {
        t.and_then(|t| t.parse::<Timestamp>().ok())
            .map_or_else(|| "-".to_owned(), |t| local(&st, t))
    };
    let versions: Vec<minijinja::Value> = versions
        .iter()
        .map(|v| {
            minijinja::context! {
                hash => &v.hash,
                first_shown => when(Some(&v.first_shown_at)),
                first_accepted => when(v.first_accepted_at.as_deref()),
                last_accepted => when(v.last_accepted_at.as_deref()),
                consents => v.consents,
            }
        })
        .collect();
    let courses: Vec<minijinja::Value> = courses
        .iter()
        .map(|c| minijinja::context! { id => c.id, title => &c.title })
        .collect();
    let today = st
        .actions
        .clock
        .now()
        .to_zoned(st.config.school.timezone.clone())
        .date();
    let month_start = today.first_of_month();
    page(
        &st,
        StatusCode::OK,
        "admin/audit.html",
        Some(&staff),
        minijinja::context! {
            chain, versions, courses, retention_days => st.config.retention_days,
            default_from => month_start.to_string(), default_to => today.to_string(),
        },
    )
}

/// The export as a download, recorded in the log (who, what range, how many rows) first: an
/// export that cannot be recorded is not given.
async fn audit_export(State(st): State<WebState>, staff: Staff, body: axum::body::Bytes) -> Response {
    if let Some(refused) = auditor_only(&st, &staff) {
        return refused;
    }
    let fields = match checked_form(&st, &staff, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let field = |k: &str| fields.get(k).map(String::as_str).unwrap_or("").trim();
    let bad = |text: &str| {
        message(
            &st,
            Some(&staff),
            StatusCode::BAD_REQUEST,
            "Export not made",
            text,
            "/audit",
        )
    };
    let tz = st.config.school.timezone.clone();
    let day = |k: &str, next: bool| {
        let date: jiff::civil::Date = field(k).parse().ok()?;
        let date = if next { date.tomorrow().ok()? } else { date };
        date.to_zoned(tz.clone()).ok().map(|z| z.timestamp())
    };
    let (Some(from), Some(to)) = (day("from", false), day("to", true)) else {
        return bad("Please give the first and last day as dates.");
    };
    if to <= from {
        return bad("The last day must not be before the first.");
    }
    let course = match field("course") {
        "" => None,
        c => match c.parse::<i64>() {
            Ok(id) => Some(id),
            Err(_) => return bad("Please choose a course from the list."),
        },
    };
    let mac = match field("mac") {
        "" => None,
        m => match m.parse::<MacAddr>() {
            Ok(mac) => Some(mac),
            Err(_) => return bad("The device address must be a MAC address like aa:bb:cc:dd:ee:ff."),
        },
    };
    let (format, extension, content_type) = match field("format") {
        "csv" => (crate::audit::Format::Csv, "csv", "text/csv; charset=utf-8"),
        "jsonl" => (crate::audit::Format::Jsonl, "jsonl", "application/jsonl; charset=utf-8"),
        _ => return bad("Please choose CSV or JSON Lines."),
    };
    let now = st.actions.clock.now();
    let detail = serde_json::json!({
        "by": staff.name,
        "from": crate::store::ts(from),
        "to": crate::store::ts(to),
        "course": course,
        "format": extension,
    });
    let records = st
        .actions
        .store
        .run(move |s| {
            let records = s.consents_between(from, to, course, mac)?;
            let mut detail = detail;
            detail["rows"] = records.len().into();
            match mac {
                Some(mac) => s.record_device_event(now, "exported", detail, mac)?,
                None => s.record_event(now, "exported", &detail)?,
            }
            Ok(records)
        })
        .await;
    let Ok(records) = records else {
        return unavailable(&st, &staff, "/audit");
    };
    let rows: Vec<crate::audit::Row> = records.iter().map(|r| crate::audit::Row::new(r, &tz, now)).collect();
    let mut out = Vec::new();
    if crate::audit::write(&rows, format, &mut out).is_err() {
        return unavailable(&st, &staff, "/audit");
    }
    tracing::info!(admin = %staff.name, rows = rows.len(), from = %from, to = %to, "audit export downloaded");
    let name = format!(
        "attachment; filename=\"aupgate-consents-{}-to-{}.{extension}\"",
        field("from"),
        field("to")
    );
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&name).unwrap_or(HeaderValue::from_static("attachment")),
            ),
        ],
        out,
    )
        .into_response()
}
