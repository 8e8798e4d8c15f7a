//! Shared web plumbing: page rendering, the one error type handlers return, and the guest-facing
//! response headers. Guests see a friendly page with no internals; causes are logged here.

pub mod form;
pub mod serve;
pub mod tls;

pub use serve::{App, Gate, HEADER_TIMEOUT, HEADER_TIMEOUT_PRESSED, MAX_HEAD, MAX_PER_CLIENT, MAX_TOTAL, Quick, serve};

use std::sync::{Arc, RwLock};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;

/// The school as templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct SchoolView {
    /// Name.
    pub name: String,
    /// DSL contact line.
    pub dsl_contact: String,
}

impl SchoolView {
    /// The school of `config`.
    pub fn of(config: &crate::config::Config) -> Self {
        Self {
            name: config.school.name.clone(),
            dsl_contact: config.school.dsl_contact.clone(),
        }
    }
}

/// A value the daemon can replace while running (on SIGHUP); readers take the current one and
/// keep it for the whole request. Cheap to clone; clones share the value.
#[derive(Debug)]
pub struct Live<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Live<T> {
    /// Starts with `value`.
    pub fn new(value: T) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(value))))
    }

    /// The current value.
    pub fn get(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Replaces the value for every clone; requests already running keep the old one.
    pub fn set(&self, value: T) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(value);
    }
}

/// Renders pages; cheap to clone. Clones share the templates, which `replace` swaps.
#[derive(Debug, Clone)]
pub struct Pages {
    env: Live<minijinja::Environment<'static>>,
    school: SchoolView,
}

impl Pages {
    /// Wraps a template environment.
    pub fn new(env: minijinja::Environment<'static>, school: SchoolView) -> Self {
        Self {
            env: Live::new(env),
            school,
        }
    }

    /// Swaps in re-read templates (every clone sees them).
    pub fn replace(&self, env: minijinja::Environment<'static>) {
        self.env.set(env);
    }

    /// Renders `name` with `ctx` plus `school`, or a plain fallback page if the template fails
    /// (an operator's broken override must not leave guests with nothing).
    pub fn render(&self, status: StatusCode, name: &str, ctx: minijinja::Value) -> Response {
        let ctx =
            minijinja::context! { school => minijinja::Value::from(minijinja::value::Serde(&self.school)), ..ctx };
        let env = self.env.get();
        match env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(html) => (status, guest_headers(), Html(html)).into_response(),
            Err(e) => {
                tracing::error!(template = name, error = %format!("{e:#}"), "template failed to render; showing the plain fallback page");
                fallback(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }

    /// The templates in force now; kept by a caller that caches what it rendered with them,
    /// so a reload (which swaps them) is seen as a new version.
    pub fn templates(&self) -> Arc<minijinja::Environment<'static>> {
        self.env.get()
    }

    /// Renders `name` with `ctx` plus `school` in `env`, or `None` if the template fails (logged).
    pub fn render_in(
        &self,
        env: &minijinja::Environment<'static>,
        name: &str,
        ctx: minijinja::Value,
    ) -> Option<String> {
        let ctx =
            minijinja::context! { school => minijinja::Value::from(minijinja::value::Serde(&self.school)), ..ctx };
        match env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(html) => Some(html),
            Err(e) => {
                tracing::error!(template = name, error = %format!("{e:#}"), "template failed to render; showing the plain fallback page");
                None
            }
        }
    }

    /// Text from a plain-text template (no HTML escaping: the page it goes into escapes it), or
    /// `None` if the template fails (logged; an operator's broken override).
    pub fn text(&self, name: &str, ctx: minijinja::Value) -> Option<String> {
        let env = self.env.get();
        match env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(text) => Some(text.trim().to_owned()),
            Err(e) => {
                tracing::error!(template = name, error = %format!("{e:#}"), "template failed to render");
                None
            }
        }
    }

    /// A message page: a title, a sentence, and optionally a link back to the form.
    pub fn message(&self, status: StatusCode, title: &str, message: &str, retry: bool) -> Response {
        self.render(status, "message.html", minijinja::context! { title, message, retry })
    }
}

/// Headers on every guest page: never cached (the answer depends on the device's state), never
/// framed, no referrer leaks.
pub fn guest_headers() -> [(header::HeaderName, HeaderValue); 4] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
    ]
}

/// A page that needs no template at all.
pub fn fallback(status: StatusCode) -> Response {
    let body = "<!doctype html><html lang=\"en-GB\"><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
        <title>Guest Wi-Fi</title><h1>Sorry, something went wrong</h1><p>Please try again in a moment, or ask a member of staff for help.</p>\
        <p><a href=\"/\">Back to the Wi-Fi page</a></p></html>";
    (status, guest_headers(), Html(body)).into_response()
}
