//! The admin router driven with `oneshot`, without root: the in-memory store, the fake firewall,
//! the built-in templates and a config parsed from text. Sign-in, sessions, the CSRF check and the
//! auditor-only pages; tests/integration/admin.rs drives the same pages over real HTTPS.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use jiff::SignedDuration;
use tower::ServiceExt;

use super::{WebState, router};
use crate::access::staff::{self as actions, AdminState};
use crate::clock::{Clock, ManualClock};
use crate::firewall::fake::FakeFirewall;
use crate::store::{Role, Store};

/// Every account's password (at least `actions::MIN_PASSWORD` characters), and as a form sends it.
const PASSWORD: &str = "correct horse battery";
const PASSWORD_FORM: &str = "correct+horse+battery";

struct Lab {
    app: Router,
    store: Store,
    fake: FakeFirewall,
    _stop: tokio::sync::watch::Sender<bool>,
}

/// The admin over a fresh store with two accounts: `sam` (staff) and `ada` (auditor).
async fn lab() -> Lab {
    lab_with(crate::testing::config()).await
}

/// `[admin.oidc]` for the router tests: a provider that is never reached (nothing listens on
/// port 9 of loopback), so only what is decided before asking it is tested here;
/// tests/integration/oidc.rs runs the whole flow against a real one.
const OIDC: &str = r#"
[admin]
listen = "10.0.0.1:8443"
[admin.oidc]
issuer = "https://127.0.0.1:9"
client_id = "aupgate"
client_secret_file = "/nonexistent/oidc-secret"
display_name = "Claremont account"
staff = ["@claremont.example.sch.uk"]
auditors = ["dpo@claremont.example.sch.uk"]
"#;

/// The same with sign-in by the school's account configured as in [`OIDC`].
async fn lab_with_oidc() -> Lab {
    let text = format!("{}{OIDC}", crate::testing::CONFIG);
    let config = Arc::new(crate::config::Config::parse(&text, std::path::Path::new("t")).unwrap());
    lab_with(config).await
}

async fn lab_with(config: Arc<crate::config::Config>) -> Lab {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new("2026-11-23T10:00:00Z".parse().unwrap()));
    let store = Store::open_in_memory().unwrap();
    let (fake, firewall, stop) = crate::access::gatekeeper::fake(&store, clock.clone()).await;
    let actions = AdminState {
        store: store.clone(),
        firewall,
        clock,
        retention: config.retention(),
    };
    actions::add_admin(&actions, "sam", Role::Staff, PASSWORD.into())
        .await
        .unwrap();
    actions::add_admin(&actions, "ada", Role::Auditor, PASSWORD.into())
        .await
        .unwrap();
    let pages = crate::testing::pages(&config);
    let state = WebState {
        actions,
        pages,
        idle: SignedDuration::from_mins(30),
        metrics: Arc::new(crate::metrics::Metrics::new("unused.db".into())),
        oidc: config
            .admin
            .as_ref()
            .and_then(|a| a.oidc.clone())
            .map(|s| Arc::new(crate::admin::oidc::Provider::new(s))),
        config,
    };
    Lab {
        app: router(state),
        store,
        fake,
        _stop: stop,
    }
}

/// Sends `req` from a staff-side address, as the accept loop would.
async fn send(app: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let mut req = req;
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 5], 40000))));
    let resp = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut req = Request::get(path);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    req.body(Body::empty()).unwrap()
}

fn post(path: &str, cookie: Option<&str>, body: &str) -> Request<Body> {
    let mut req = Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    req.body(Body::from(body.to_owned())).unwrap()
}

/// A signed-in session: the `Cookie` header to send, and the CSRF token its pages carry.
struct Session {
    cookie: String,
    csrf: String,
}

async fn sign_in(app: &Router, name: &str) -> Session {
    let (status, headers, body) = send(
        app,
        post("/login", None, &format!("username={name}&password={PASSWORD_FORM}")),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let set = headers[header::SET_COOKIE].to_str().unwrap();
    let cookie = set.split(';').next().unwrap().to_owned();
    let (status, _, page) = send(app, get("/", Some(&cookie))).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the dashboard carries the CSRF token")
        .to_owned();
    Session { cookie, csrf }
}

/// How many events the audit chain holds.
fn events(store: &Store) -> u64 {
    store.verify().unwrap().unwrap().events
}

/// A course form that would be accepted, bar the token.
const COURSE: &str = "title=Phonics&starts=2026-11-23T09:00&ends=2026-11-23T16:00&max_devices=5";

#[tokio::test]
async fn every_page_without_a_session_redirects_to_login() {
    let l = lab().await;
    for cookie in [None, Some("aupgate_session=not-a-session")] {
        for path in ["/", "/courses", "/guests", "/audit", "/courses/1/poster"] {
            let (status, headers, _) = send(&l.app, get(path, cookie)).await;
            assert_eq!(status, StatusCode::SEE_OTHER, "{path} {cookie:?}");
            assert_eq!(headers[header::LOCATION], "/login", "{path}");
        }
        let (status, headers, _) = send(&l.app, post("/courses", cookie, COURSE)).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[header::LOCATION], "/login");
    }
    assert!(l.store.courses().unwrap().is_empty());
}

#[tokio::test]
async fn sign_in_refuses_a_wrong_password_and_gives_a_strict_cookie_for_the_right_one() {
    let l = lab().await;
    let (status, headers, body) = send(&l.app, post("/login", None, "username=sam&password=wrong+password")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("Wrong name or password."), "{body}");
    assert!(body.contains("value=\"sam\""), "the name typed is kept: {body}");
    assert!(headers.get(header::SET_COOKIE).is_none());

    let (status, headers, _) = send(
        &l.app,
        post("/login", None, &format!("username=sam&password={PASSWORD_FORM}")),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/");
    let cookie = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.starts_with("aupgate_session="), "{cookie}");
    for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.split("; ").any(|f| f == flag), "{flag} missing: {cookie}");
    }
    let session = cookie.split(';').next().unwrap();
    let (status, _, body) = send(&l.app, get("/", Some(session))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Sign out sam"), "{body}");
}

#[tokio::test]
async fn a_post_without_the_right_csrf_token_is_refused_and_changes_nothing() {
    let l = lab().await;
    let s = sign_in(&l.app, "sam").await;
    let before = events(&l.store);
    for token in ["", "&csrf=", "&csrf=0000", &format!("&csrf={}x", s.csrf)] {
        let (status, _, body) = send(&l.app, post("/courses", Some(&s.cookie), &format!("{COURSE}{token}"))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{token}");
        assert!(body.contains("Form expired"), "{body}");
        let (status, _, _) = send(&l.app, post("/logout", Some(&s.cookie), token.trim_start_matches('&'))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{token}");
    }
    let (status, _, body) = send(&l.app, post("/guests/revoke", Some(&s.cookie), "mac=02:00:00:00:00:10")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(l.store.courses().unwrap().is_empty(), "no course was made");
    assert_eq!(events(&l.store), before, "nothing was recorded");
    let (status, _, _) = send(&l.app, get("/", Some(&s.cookie))).await;
    assert_eq!(status, StatusCode::OK, "the refused sign-outs left the session alone");

    // The same form with the session's token goes through.
    let (status, headers, body) = send(
        &l.app,
        post("/courses", Some(&s.cookie), &format!("{COURSE}&csrf={}", s.csrf)),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(headers[header::LOCATION], "/courses");
    assert_eq!(l.store.courses().unwrap().len(), 1);
}

#[tokio::test]
async fn the_audit_pages_are_refused_to_staff_and_open_to_auditors() {
    let l = lab().await;
    let export = "from=2026-11-01&to=2026-11-30&course=&mac=&format=csv";

    let staff = sign_in(&l.app, "sam").await;
    let (status, _, body) = send(&l.app, get("/audit", Some(&staff.cookie))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("For auditors only"), "{body}");
    let before = events(&l.store);
    let form = format!("{export}&csrf={}", staff.csrf);
    let (status, headers, body) = send(&l.app, post("/audit/export", Some(&staff.cookie), &form)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("For auditors only"), "{body}");
    assert!(headers.get(header::CONTENT_DISPOSITION).is_none());
    assert_eq!(events(&l.store), before, "a refused export is not recorded");

    let auditor = sign_in(&l.app, "ada").await;
    let before = events(&l.store);
    let (status, _, body) = send(&l.app, get("/audit", Some(&auditor.cookie))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let form = format!("{export}&csrf={}", auditor.csrf);
    let (status, headers, body) = send(&l.app, post("/audit/export", Some(&auditor.cookie), &form)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert_eq!(
        headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"aupgate-consents-2026-11-01-to-2026-11-30.csv\""
    );
    assert_eq!(events(&l.store), before + 1, "the export is recorded");
    // An auditor's export still needs the token.
    let (status, _, _) = send(&l.app, post("/audit/export", Some(&auditor.cookie), export)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(events(&l.store), before + 1);
}

#[tokio::test]
async fn sign_out_ends_the_session() {
    let l = lab().await;
    let s = sign_in(&l.app, "sam").await;
    let (status, headers, _) = send(&l.app, post("/logout", Some(&s.cookie), &format!("csrf={}", s.csrf))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/login");
    let cleared = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cleared.starts_with("aupgate_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    for path in ["/", "/courses"] {
        let (status, headers, _) = send(&l.app, get(path, Some(&s.cookie))).await;
        assert_eq!(
            status,
            StatusCode::SEE_OTHER,
            "{path}: the old cookie no longer signs in"
        );
        assert_eq!(headers[header::LOCATION], "/login");
    }
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let l = lab().await;
    for req in [
        get("/login", None),
        get("/", None),
        post("/login", None, "username=x&password=y"),
    ] {
        let (_, headers, _) = send(&l.app, req).await;
        assert!(
            headers[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .starts_with("default-src 'none'")
        );
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    }
}

/// Issue 11: a staff action's outcome is typed. Ending a course that the store has ended is
/// "Course ended" even when closing its devices failed in the kernel (the gatekeeper retries);
/// an unknown course is 404, not "bad input".
#[tokio::test]
async fn ending_a_course_is_done_once_the_store_has_it_and_unknown_ones_are_404() {
    let l = lab().await;
    let s = sign_in(&l.app, "sam").await;
    let course = l
        .store
        .add_course(
            "Phonics",
            "2026-11-23T09:00:00Z".parse().unwrap(),
            "2026-11-23T16:00:00Z".parse().unwrap(),
            5,
            "2026-11-23T08:00:00Z".parse().unwrap(),
            "test",
            || crate::clients::AccessCode::normalise("ABCDEFGH").unwrap(),
        )
        .unwrap();
    l.store
        .record_policy("p", "the policy", "2026-11-23T08:00:00Z".parse().unwrap())
        .unwrap();
    l.store
        .record_consent(&crate::store::NewConsent {
            course_id: course.id,
            max_devices: 5,
            mac: "02:00:00:00:00:10".parse().unwrap(),
            ip: "192.0.2.10".into(),
            accepted_at: "2026-11-23T09:30:00Z".parse().unwrap(),
            expires_at: course.ends_at,
            name: "Ann".into(),
            organisation: String::new(),
            user_agent: String::new(),
            policy_hash: "p".into(),
        })
        .unwrap();
    l.fake.0.lock().unwrap().fail_deny = true;
    let csrf = format!("csrf={}", s.csrf);
    let (status, _, body) = send(
        &l.app,
        post(&format!("/courses/{}/end", course.id), Some(&s.cookie), &csrf),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("Course ended") && body.contains("1 device(s) were closed"),
        "{body}"
    );
    let (status, _, body) = send(&l.app, post("/courses/9999/end", Some(&s.cookie), &csrf)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("no course with id 9999"), "{body}");
}

/// Issue 11: every reason a staff action can be refused has its own words in
/// `admin/words.txt` (none falls back to its key), the names it carries are filled in, and an
/// override in the operator's folder rewords them without a rebuild.
#[test]
fn every_staff_refusal_has_words_in_the_template_and_an_override_rewords_them() {
    use crate::access::staff::{Missing, Problem, StaffError};
    let device: crate::clients::MacAddr = "02:00:00:00:00:10".parse().unwrap();
    let store = || crate::store::StoreError::NotFound("x".into());
    let errors = [
        StaffError::Invalid(Problem::Title),
        StaffError::Invalid(Problem::EndBeforeStart),
        StaffError::Invalid(Problem::CourseEndPast),
        StaffError::Invalid(Problem::DeviceLimit),
        StaffError::Invalid(Problem::NotDevice(device)),
        StaffError::Invalid(Problem::ExceptionReason),
        StaffError::Invalid(Problem::ExceptionEndPast),
        StaffError::Invalid(Problem::ExceptionTooLong),
        StaffError::Invalid(Problem::AccountName),
        StaffError::Invalid(Problem::PasswordShort),
        StaffError::Invalid(Problem::ErasureReason),
        StaffError::NotFound(Missing::Course(7)),
        StaffError::NotFound(Missing::Exception(8)),
        StaffError::NotFound(Missing::Account("sam".into())),
        StaffError::NotFound(Missing::Device(device)),
        StaffError::Exists("sam".into()),
        StaffError::Store {
            what: "x",
            source: store(),
        },
        StaffError::Hashing("x".into()),
    ];
    // The compiler keeps this list whole: a new Problem or Missing fails to build here.
    for e in &errors {
        match e {
            StaffError::Invalid(
                Problem::Title
                | Problem::EndBeforeStart
                | Problem::CourseEndPast
                | Problem::DeviceLimit
                | Problem::NotDevice(_)
                | Problem::ExceptionReason
                | Problem::ExceptionEndPast
                | Problem::ExceptionTooLong
                | Problem::AccountName
                | Problem::PasswordShort
                | Problem::ErasureReason,
            )
            | StaffError::NotFound(
                Missing::Course(_) | Missing::Exception(_) | Missing::Account(_) | Missing::Device(_),
            )
            | StaffError::Exists(_)
            | StaffError::Store { .. }
            | StaffError::Hashing(_) => {}
        }
    }
    let env = crate::assets::templates(None).unwrap();
    let render = |env: &minijinja::Environment<'_>, key: &str, ctx: minijinja::Value| {
        env.get_template("admin/words.txt")
            .unwrap()
            .render(minijinja::context! { key, ..ctx })
            .unwrap()
            .trim()
            .to_owned()
    };
    let mut seen = std::collections::HashSet::new();
    for e in &errors {
        let (key, ctx) = super::why(e);
        let text = render(&env, key, ctx);
        assert!(!text.is_empty(), "{key}: no words");
        assert!(
            seen.insert(text.clone()),
            "{key}: the same words as another reason: {text}"
        );
    }
    let (key, ctx) = super::why(&errors[4]);
    assert_eq!(render(&env, key, ctx), "02:00:00:00:00:10 is not a device address.");
    let (key, ctx) = super::why(&errors[9]);
    assert_eq!(render(&env, key, ctx), "The password must have at least 10 characters.");
    let (key, ctx) = super::why(&errors[16]);
    assert!(
        !render(&env, key, ctx).contains("not found"),
        "no store internals shown to staff"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("templates/admin")).unwrap();
    std::fs::write(
        dir.path().join("templates/admin/words.txt"),
        "{% if key == 'no_course' %}Kein Kurs mit der Nummer {{ id }}.{% endif %}",
    )
    .unwrap();
    let env = crate::assets::templates(Some(dir.path())).unwrap();
    let (key, ctx) = super::why(&errors[11]);
    assert_eq!(render(&env, key, ctx), "Kein Kurs mit der Nummer 7.");
}

/// Issue 11: a refused course says why in the template's words, as 422, and adds nothing.
#[tokio::test]
async fn a_refused_course_says_why_in_the_templates_words() {
    let l = lab().await;
    let s = sign_in(&l.app, "sam").await;
    let form = format!(
        "title=Phonics&starts=2026-11-23T16:00&ends=2026-11-23T09:00&max_devices=5&csrf={}",
        s.csrf
    );
    let (status, _, body) = send(&l.app, post("/courses", Some(&s.cookie), &form)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("Course not created"), "{body}");
    assert!(body.contains("The end must be after the start."), "{body}");
    assert!(l.store.courses().unwrap().is_empty());
    let form = format!("title=Phonics&starts=soon&ends=later&max_devices=5&csrf={}", s.csrf);
    let (status, _, body) = send(&l.app, post("/courses", Some(&s.cookie), &form)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("Give the start and end as a date and time."), "{body}");
}

/// Issue 13: with RADIUS accounting on, the dashboard says how many records wait and why.
#[tokio::test]
async fn the_dashboard_shows_accounting_records_still_waiting() {
    let lab = lab().await;
    let session = sign_in(&lab.app, "sam").await;
    let (_, _, body) = send(&lab.app, get("/", Some(&session.cookie))).await;
    assert!(!body.contains("RADIUS"), "off: not mentioned");
    lab.store.set_accounting(crate::store::accounting::UserName::Name);
    let (_, _, body) = send(&lab.app, get("/", Some(&session.cookie))).await;
    assert!(body.contains("told of every guest"), "{body}");
    let (mac, now) = (
        "02:99:00:00:00:07".parse().unwrap(),
        "2026-11-23T10:00:00Z".parse().unwrap(),
    );
    lab.store
        .grant_exception(mac, "x", "sam", now, "2026-11-23T12:00:00Z".parse().unwrap())
        .unwrap();
    let seen = crate::store::accounting::Addresses::from_recent(&["192.0.2.20".parse().unwrap()]);
    lab.store.account_addresses(mac, seen, now).unwrap();
    let id = lab.store.outbox_next("radius").unwrap().unwrap().id;
    lab.store.outbox_failed(id, "10.0.0.5:1813: no answer").unwrap();
    let (_, _, body) = send(&lab.app, get("/", Some(&session.cookie))).await;
    assert!(body.contains("1 record(s) waiting since"), "{body}");
    assert!(body.contains("Last try: 10.0.0.5:1813: no answer."), "{body}");
}

/// Issue 11: every words key the handlers name (a snake_case literal in their source, bar the
/// cookie's and form fields' names) has its words in the built-in `admin/words.txt`, so no page
/// shows a bare key.
#[test]
fn every_key_the_handlers_name_has_words() {
    const NOT_KEYS: [&str; 2] = ["aupgate_session", "max_devices"];
    let sources = [
        include_str!("auth.rs"),
        include_str!("audit.rs"),
        include_str!("courses.rs"),
        include_str!("dashboard.rs"),
        include_str!("guests.rs"),
        include_str!("mod.rs"),
    ];
    let keys: std::collections::BTreeSet<&str> = sources
        .iter()
        .flat_map(|src| src.split('"').skip(1).step_by(2))
        .filter(|lit| {
            !lit.is_empty()
                && lit.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                && (lit.contains('_') || ["unavailable", "revoked"].contains(lit))
                && !NOT_KEYS.contains(lit)
        })
        .collect();
    assert!(keys.len() > 40, "the scan found the keys: {keys:?}");
    let env = crate::assets::templates(None).unwrap();
    let words = env.get_template("admin/words.txt").unwrap();
    for key in keys {
        let ctx = minijinja::context! { key, title => "T", closed => 1, mac => "m", count => 1, until => "u", minutes => 15, name => "n" };
        let text = words.render(ctx).unwrap();
        assert!(!text.trim().is_empty(), "{key} has no words in admin/words.txt");
    }
}

/// Issue 14: the sign-in page offers the school account only when it is configured, and the
/// routes answer plainly without it.
#[tokio::test]
async fn the_school_account_button_is_there_only_when_configured() {
    let l = lab_with_oidc().await;
    let (status, _, page) = send(&l.app, get("/login", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(r#"<a class="button" href="/login/oidc">Sign in with Claremont account</a>"#),
        "{page}"
    );
    assert!(page.contains(r#"action="/login""#), "the local form stays: {page}");
    let l = lab().await;
    let (_, _, page) = send(&l.app, get("/login", None)).await;
    assert!(!page.contains("/login/oidc"), "{page}");
    for path in ["/login/oidc", "/login/oidc/callback?code=c&state=s"] {
        let (status, _, page) = send(&l.app, get(path, None)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(page.contains("not set up"), "{page}");
    }
}

/// Issue 14: reached by another name than the redirect URI's, /login/oidc goes there first (so
/// the pending cookie is set where the provider comes back); a provider that cannot be reached
/// is a 503 page pointing at the local form, with no cookie.
#[tokio::test]
async fn beginning_goes_to_the_registered_host_and_an_unreachable_provider_is_a_clear_page() {
    let l = lab_with_oidc().await;
    let with_host = |host: &str| {
        Request::get("/login/oidc")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap()
    };
    let (status, headers, _) = send(&l.app, with_host("gateway.local:8443")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "https://10.0.0.1:8443/login/oidc");
    let (status, headers, page) = send(&l.app, with_host("10.0.0.1:8443")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{page}");
    assert!(
        page.contains("not working just now") && page.contains("local account"),
        "{page}"
    );
    assert!(headers.get(header::SET_COOKIE).is_none());
}

/// Issue 14: a callback with no pending sign-in, or whose state is not the one this browser's
/// cookie carries, is refused before the provider is asked and gets no session. The pending
/// cookie is cleared, except when the state was another's: a forged link must not cancel the
/// sign-in this browser has under way.
#[tokio::test]
async fn a_callback_without_its_pending_sign_in_or_with_another_state_is_refused() {
    let l = lab_with_oidc().await;
    let before = events(&l.store);
    let cleared = "__Host-aupgate_oidc=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax";
    for (cookie, set_cookie) in [
        (None, Some(cleared)),
        (Some("__Host-aupgate_oidc="), Some(cleared)),
        (Some("__Host-aupgate_oidc=abc"), None),
        (Some("aupgate_oidc=abd"), Some(cleared)),
    ] {
        let (status, headers, page) = send(&l.app, get("/login/oidc/callback?code=c&state=abd", cookie)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{cookie:?}");
        assert!(page.contains("expired or was already used"), "{page}");
        let set: Vec<&str> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(set, Vec::from_iter(set_cookie), "{cookie:?}");
    }
    assert_eq!(events(&l.store), before, "no e-mail was vouched for, so no event");
}

/// Issue 14: one computer beginning sign-ins in a loop is stopped after 30 in ten minutes (each
/// could end in a request to the provider with the client secret); others are not.
#[tokio::test]
async fn beginning_sign_ins_in_a_loop_is_refused_after_thirty() {
    let l = lab_with_oidc().await;
    let begin = |ip: [u8; 4]| {
        let mut req = Request::get("/login/oidc")
            .header(header::HOST, "10.0.0.1:8443")
            .body(Body::empty())
            .unwrap();
        req.extensions_mut().insert(ConnectInfo(SocketAddr::from((ip, 40000))));
        req
    };
    let mut statuses = Vec::new();
    for _ in 0..31 {
        let resp = l.app.clone().oneshot(begin([10, 0, 0, 66])).await.unwrap();
        statuses.push(resp.status());
    }
    // The provider cannot be reached here, so each that was let through is a 503.
    assert!(
        statuses[..30].iter().all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    assert_eq!(statuses[30], StatusCode::TOO_MANY_REQUESTS);
    let other = l.app.clone().oneshot(begin([10, 0, 0, 7])).await.unwrap();
    assert_eq!(other.status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// Issue 14: a school account's session takes its role from the config's lists at each request:
/// one no longer listed is signed out, and its session is gone.
#[tokio::test]
async fn a_school_account_no_longer_listed_is_signed_out() {
    let l = lab_with_oidc().await;
    let now = "2026-11-23T10:00:00Z".parse().unwrap();
    let hash = |id: &str| super::auth::sha256_hex(id);
    for (id, email, role) in [
        ("listed", "dpo@claremont.example.sch.uk", Role::Auditor),
        ("gone", "left@another.example.sch.uk", Role::Staff),
    ] {
        l.store
            .start_school_account_session(&hash(id), (email, role), "t0ken", "10.0.0.5", now)
            .unwrap();
    }
    let (status, _, page) = send(&l.app, get("/audit", Some("aupgate_session=listed"))).await;
    assert_eq!(status, StatusCode::OK, "an auditor by the lists: {page}");
    assert!(page.contains("dpo@claremont.example.sch.uk"), "{page}");
    let (status, headers, _) = send(&l.app, get("/", Some("aupgate_session=gone"))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/login");
    let idle_since = "2026-11-23T09:00:00Z".parse().unwrap();
    assert!(l.store.use_session(&hash("gone"), idle_since, now).unwrap().is_none());
    // A local account's session is not one of them, even under the same name.
    let (status, _, _) = send(&l.app, get("/", Some(&sign_in(&l.app, "sam").await.cookie))).await;
    assert_eq!(status, StatusCode::OK);
}
