//! The staff web UI over HTTPS: the router, its security headers, and the page helpers every area
//! shares. Every page needs a signed-in session (`auth`); every change is a POST carrying the
//! session's CSRF token; guest-typed text is autoescaped. The areas (`dashboard`, `courses`,
//! `guests`, `audit`) hold the handlers; none of them reads a cookie or a token itself.

mod audit;
mod auth;
mod courses;
mod dashboard;
mod guests;
mod oidc;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use tower_http::set_header::SetResponseHeaderLayer;

pub use auth::{Auditor, CsrfForm, Fields, Staff};

use crate::access::staff::{AdminState, StaffError};
use crate::config::Config;
use crate::web::Pages;

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
    /// The school's OpenID provider, when `[admin.oidc]` is set.
    pub oidc: Option<Arc<crate::admin::oidc::Provider>>,
}

/// The admin's routes, with its security headers.
pub fn router(state: WebState) -> Router {
    const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
    Router::new()
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/login/oidc", get(oidc::begin))
        .route("/login/oidc/callback", get(oidc::callback))
        .route("/logout", post(auth::logout))
        .route("/", get(dashboard::dashboard))
        .route("/courses", get(courses::courses).post(courses::create_course))
        .route("/courses/{id}/end", post(courses::end_course))
        .route("/courses/{id}/poster", get(courses::poster))
        .route("/courses/{id}/revoke-all", post(guests::revoke_course))
        .route("/guests", get(guests::guests))
        .route("/guests/revoke", post(guests::revoke))
        .route("/exceptions", post(guests::grant_exception))
        .route("/exceptions/{id}/end", post(guests::end_exception))
        .route("/metrics", get(metrics))
        .route("/audit", get(audit::audit))
        .route("/audit/export", post(audit::audit_export))
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

fn ser<T: Serialize>(value: &T) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(value))
}

/// Renders `name` with `ctx`, plus the signed-in member of staff (`none` on the sign-in pages).
fn page(st: &WebState, status: StatusCode, name: &str, staff: Option<&Staff>, ctx: minijinja::Value) -> Response {
    st.pages.render(
        status,
        name,
        minijinja::context! { staff => staff.map_or_else(|| minijinja::Value::from(()), ser), ..ctx },
    )
}

/// The pages one handler answers with: who is signed in, and where the message pages' Back link
/// goes. Built once at the top of a handler, so each answer names only what differs.
#[derive(Clone, Copy)]
struct Reply<'a> {
    st: &'a WebState,
    staff: Option<&'a Staff>,
    back: &'a str,
}

impl<'a> Reply<'a> {
    /// Pages for `staff`, whose messages link back to `back`.
    fn new(st: &'a WebState, staff: &'a Staff, back: &'a str) -> Self {
        Self {
            st,
            staff: Some(staff),
            back,
        }
    }

    /// Pages for someone not signed in (the sign-in pages).
    fn anonymous(st: &'a WebState, back: &'a str) -> Self {
        Self { st, staff: None, back }
    }

    /// The same, with the Back link going to `back` instead.
    fn back(self, back: &'a str) -> Self {
        Self { back, ..self }
    }

    /// The template `name` with `ctx`, as 200.
    fn page(self, name: &str, ctx: minijinja::Value) -> Response {
        page(self.st, StatusCode::OK, name, self.staff, ctx)
    }

    /// The message page, with `status`; any status but a success shows as an error. `title`
    /// and `text` are keys of `admin/words.txt`, filled in from `ctx`.
    fn message(self, status: StatusCode, title: &str, text: &str, ctx: minijinja::Value) -> Response {
        let (error, back) = (!status.is_success(), self.back);
        let (title, message) = (words(self.st, title, ctx.clone()), words(self.st, text, ctx));
        page(
            self.st,
            status,
            "admin/message.html",
            self.staff,
            minijinja::context! { title, message, back, error },
        )
    }

    /// A change that worked: the message page as 200.
    fn done(self, title: &str, text: &str, ctx: minijinja::Value) -> Response {
        self.message(StatusCode::OK, title, text, ctx)
    }

    /// The page for a staff action that did not happen, `title` above the reason, with the
    /// status its cause calls for: bad input 422, unknown 404, already there 409, our failure 503.
    fn refused(self, title: &str, e: &StaffError) -> Response {
        let status = match e {
            StaffError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            StaffError::NotFound(_) => StatusCode::NOT_FOUND,
            StaffError::Exists(_) => StatusCode::CONFLICT,
            StaffError::Store { .. } | StaffError::Hashing(_) => {
                tracing::error!(error = %e, "a staff action failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        let (text, ctx) = why(e);
        self.message(status, title, text, ctx)
    }

    /// The page for a store that cannot be read (a disk or database failure).
    fn unavailable(self) -> Response {
        self.message(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "store_unreadable",
            minijinja::context! {},
        )
    }
}

/// The words template: every sentence staff read on a message page or the sign-in form.
const WORDS: &str = "admin/words.txt";

/// Staff's words for `key` from `admin/words.txt` with `ctx`'s variables, so IT support can
/// reword or translate them without a rebuild. A broken override (logged by `text`) or an
/// entry that is not there shows the key in plain words rather than nothing.
fn words(st: &WebState, key: &str, ctx: minijinja::Value) -> String {
    match st.pages.text(WORDS, minijinja::context! { key, ..ctx }) {
        Some(text) if !text.is_empty() => text,
        Some(_) => {
            tracing::warn!(template = WORDS, key, "no words for this key; showing the key");
            key.replace('_', " ")
        }
        None => key.replace('_', " "),
    }
}

/// Why a staff action was refused: its key in `admin/words.txt` and the variables it names.
fn why(e: &StaffError) -> (&'static str, minijinja::Value) {
    use crate::access::staff::{Missing, Problem};
    use minijinja::context;
    match e {
        StaffError::Invalid(p @ Problem::NotDevice(mac)) => (p.as_str(), context! { mac => mac.to_string() }),
        StaffError::Invalid(p @ Problem::PasswordShort) => {
            (p.as_str(), context! { min => crate::access::staff::MIN_PASSWORD })
        }
        StaffError::Invalid(p) => (p.as_str(), context! {}),
        StaffError::NotFound(m @ (Missing::Course(id) | Missing::Exception(id))) => (m.as_str(), context! { id }),
        StaffError::NotFound(m @ Missing::Account(name)) => (m.as_str(), context! { name }),
        StaffError::NotFound(m @ Missing::Device(mac)) => (m.as_str(), context! { mac => mac.to_string() }),
        StaffError::Exists(name) => ("account_exists", context! { name }),
        StaffError::Store { .. } => ("store_failed", context! {}),
        StaffError::Hashing(_) => ("hashing_failed", context! {}),
    }
}

/// `t` in the school's time zone, as staff read it ("Mon 23 Nov 10:00").
fn local(st: &WebState, t: Timestamp) -> String {
    t.to_zoned(st.config.school.timezone.clone())
        .strftime("%a %-d %b %H:%M")
        .to_string()
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
