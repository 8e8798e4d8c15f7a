//! The guest-facing HTTP server: every stray request is redirected to the portal page; the page
//! shows the policy and one form; POST /accept records consent and only then opens the firewall.
//! It never reaches admin state: `PortalState` holds only what guests' requests need.

pub mod api;
mod handlers;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode};
use axum::routing::get;
use tower_http::timeout::TimeoutLayer;

use crate::assets::Policy;
use crate::config::Config;
use crate::web::Pages;

/// Largest request body the portal reads; the form is well under 1 kB.
pub const MAX_BODY: usize = 16 * 1024;
/// The longest an accept or an API request may take before the guest is told to try again.
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// What the portal's handlers may use.
#[derive(Debug, Clone)]
pub struct PortalState {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Page renderer.
    pub pages: Pages,
    /// The policy being shown (replaced on reload).
    pub policy: crate::web::Live<Policy>,
    /// Who may pass: the portal's only way to the store, the firewall and the neighbour table.
    pub access: crate::access::Admissions,
    /// Counters for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// What every request of a kind gets, made once.
    pub prepared: Arc<Prepared>,
}

/// What the portal answers the same way every time, made once: the redirect's `Location`, and
/// the blank portal page, rendered once per policy and template version (so again after a
/// reload). A request for either only copies bytes.
#[derive(Debug)]
pub struct Prepared {
    /// The redirect's headers: the guest headers, `Location` and its length.
    redirect: axum::http::HeaderMap,
    blank: Mutex<Option<Blank>>,
}

/// The blank page and the versions it was rendered from (held, so they cannot be mistaken for
/// newer ones at the same address).
#[derive(Debug)]
struct Blank {
    policy: Arc<Policy>,
    templates: Arc<minijinja::Environment<'static>>,
    page: Bytes,
}

impl Prepared {
    /// For `config`'s portal.
    pub fn new(config: &Config) -> Self {
        let mut redirect: axum::http::HeaderMap = crate::web::guest_headers().into_iter().collect();
        if let Ok(url) = HeaderValue::from_str(&config.portal_url()) {
            redirect.insert(axum::http::header::LOCATION, url);
        }
        // As the router would add it (the answer is the same with or without it).
        redirect.insert(axum::http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        Self {
            redirect,
            blank: Mutex::new(None),
        }
    }

    /// The blank page for `policy` in `templates`, rendered by `render` if it is not the one
    /// kept (or `None` if rendering fails; nothing is kept then).
    fn blank_page(
        &self,
        policy: &Arc<Policy>,
        templates: &Arc<minijinja::Environment<'static>>,
        render: impl FnOnce() -> Option<String>,
    ) -> Option<Bytes> {
        let mut kept = self.blank.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(b) = kept.as_ref()
            && Arc::ptr_eq(&b.policy, policy)
            && Arc::ptr_eq(&b.templates, templates)
        {
            return Some(b.page.clone());
        }
        let page = Bytes::from(render()?);
        *kept = Some(Blank {
            policy: policy.clone(),
            templates: templates.clone(),
            page: page.clone(),
        });
        Some(page)
    }
}

/// The portal as it is served: its routes, with the redirect and the blank page answered
/// before them.
pub fn app(state: PortalState) -> crate::web::App {
    let st = state.clone();
    let quick: crate::web::Quick = Arc::new(move |method, uri, headers| {
        let answer = match quick_answer(&st.config, method, uri.path(), headers)? {
            Quick::Redirect => handlers::redirect_from(&st.prepared),
            Quick::Page => handlers::blank(&st)?,
        };
        st.metrics.request(kind(method, uri.path()));
        if method == axum::http::Method::HEAD {
            // The head alone, as the router answers a HEAD.
            return Some(axum::response::Response::from_parts(
                answer.into_parts().0,
                axum::body::Body::empty(),
            ));
        }
        Some(answer)
    });
    crate::web::App {
        router: router(state),
        quick: Some(quick),
    }
}

/// What the router would answer from memory, judged from the request head alone.
enum Quick {
    /// The 302: a path it has no route for, or a page request for another host.
    Redirect,
    /// The blank page: a page request (`GET`/`HEAD /`) for the portal itself.
    Page,
}

/// `None`: left to the router (the policy, the API, an accept, and the router's own refusals,
/// such as a POST to `/`).
fn quick_answer(
    config: &Config,
    method: &axum::http::Method,
    path: &str,
    headers: &axum::http::HeaderMap,
) -> Option<Quick> {
    match path {
        "/policy" | "/api/captive" | "/accept" => None,
        "/" if !matches!(*method, axum::http::Method::GET | axum::http::Method::HEAD) => None,
        "/" if handlers::for_portal_host(config, headers) => Some(Quick::Page),
        _ => Some(Quick::Redirect),
    }
}

/// The portal's routes. Everything not listed is a redirect to the portal page.
pub fn router(state: PortalState) -> Router {
    // Only the routes that wait on something (the store, the firewall, the neighbour table)
    // have a deadline; the page and the redirect are made from memory, and a timer for each
    // of them was a tenth of the portal's time under load.
    let deadline = || TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_DEADLINE);
    Router::new()
        .route("/", get(handlers::terms))
        .route("/policy", get(handlers::policy))
        .route("/api/captive", get(api::captive).layer(deadline()))
        .route(
            "/accept",
            get(handlers::to_portal).post(handlers::accept).layer(deadline()),
        )
        .fallback(handlers::to_portal)
        .layer(count_requests(state.metrics.clone()))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // One Arc for the state: cloning it for each request is one count, not one per field.
        .with_state(Arc::new(state))
}

/// Counts each request by what it is, for `/metrics`. A plain map of the request (no boxed
/// future, no clone of the routes behind it per request, as `middleware::from_fn` makes), and
/// only the metrics captured.
fn count_requests(
    metrics: Arc<crate::metrics::Metrics>,
) -> tower::util::MapRequestLayer<impl Fn(axum::extract::Request) -> axum::extract::Request + Clone> {
    tower::util::MapRequestLayer::new(move |req: axum::extract::Request| {
        metrics.request(kind(req.method(), req.uri().path()));
        req
    })
}

/// What `/metrics` counts a request as, by its method and path.
fn kind(method: &axum::http::Method, path: &str) -> &'static str {
    match (method == axum::http::Method::POST, path) {
        (true, "/accept") => "accept",
        (false, "/") => "portal",
        (false, "/policy") => "policy",
        (false, "/api/captive") => "api",
        _ => "redirect",
    }
}

#[cfg(test)]
mod tests;
