//! Portal router driven with `oneshot` against the in-memory store and the fake firewall. The
//! same behaviours are tested through the real kernel in tests/integration.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use jiff::Timestamp;
use tower::ServiceExt;

use super::*;
use crate::clients::AccessCode;
use crate::clock::{Clock as _, ManualClock};
use crate::firewall::fake::FakeFirewall;
use crate::neighbours::StaticNeighbours;
use crate::store::Store;

struct Lab {
    app: Router,
    metrics: Arc<crate::metrics::Metrics>,
    fake: FakeFirewall,
    store: Store,
    policy: String,
    state: PortalState,
    _stop: tokio::sync::watch::Sender<bool>,
}

async fn lab() -> Lab {
    let config = crate::testing::config();
    let clock = ManualClock::new("2026-11-23T10:00:00Z".parse().unwrap());
    let store = Store::open_in_memory().unwrap();
    let policy = Arc::new(Policy::load(None).unwrap());
    store
        .record_policy(&policy.hash, &policy.markdown, clock.now())
        .unwrap();
    let t = |s: &str| s.parse::<Timestamp>().unwrap();
    store
        .add_course(
            "Phonics training",
            t("2026-11-23T09:00:00Z"),
            t("2026-11-23T16:00:00Z"),
            1,
            clock.now(),
            "test",
            || AccessCode::normalise("ABCDEFGH").unwrap(),
        )
        .unwrap();
    store
        .add_course(
            "Tomorrow",
            t("2026-11-24T09:00:00Z"),
            t("2026-11-24T16:00:00Z"),
            5,
            clock.now(),
            "test",
            || AccessCode::normalise("ZZZZZZZZ").unwrap(),
        )
        .unwrap();
    let (fake, firewall, stop) = crate::access::gatekeeper::fake(&store, Arc::new(clock.clone())).await;
    let live_policy = crate::web::Live::new((*policy).clone());
    let metrics = Arc::new(crate::metrics::Metrics::new("unused.db".into()));
    let state = PortalState {
        prepared: Arc::new(Prepared::new(&config)),
        pages: crate::testing::pages(&config),
        config,
        policy: live_policy.clone(),
        metrics: metrics.clone(),
        access: crate::access::Admissions::new(
            store.clone(),
            firewall,
            Arc::new(StaticNeighbours(vec![
                ("192.0.2.10".parse().unwrap(), "02:00:00:00:00:10".parse().unwrap()),
                ("192.0.2.11".parse().unwrap(), "02:00:00:00:00:11".parse().unwrap()),
            ])),
            Arc::new(clock),
            live_policy,
        ),
    };
    Lab {
        app: router(state.clone()),
        state,
        metrics,
        fake,
        store,
        policy: policy.hash.clone(),
        _stop: stop,
    }
}

async fn send(app: &Router, from: &str, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut req = req;
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(from.parse().unwrap(), 40000)));
    let resp = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn post(body: impl Into<Body>) -> Request<Body> {
    Request::post("/accept")
        .header(header::HOST, "192.0.2.1:8080")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::USER_AGENT, "TestPhone/1.0")
        .body(body.into())
        .unwrap()
}

fn form(l: &Lab, code: &str, name: &str, agree: bool) -> String {
    format!(
        "code={code}&name={name}&organisation=Org&policy={}{}",
        l.policy,
        if agree { "&agree=yes" } else { "" }
    )
}

#[tokio::test]
async fn any_other_host_or_path_is_redirected_with_302() {
    let l = lab().await;
    for (host, path) in [
        ("example.com", "/"),
        ("198.51.100.2", "/some/path?q=1"),
        ("192.0.2.1:8080", "/nope"),
    ] {
        let req = Request::get(path)
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        let (status, headers, _) = send(&l.app, "192.0.2.10", req).await;
        assert_eq!(status, StatusCode::FOUND, "{host}{path}");
        assert_eq!(headers[header::LOCATION], "http://192.0.2.1:8080/");
    }
}

#[tokio::test]
async fn portal_page_shows_policy_dsl_and_form() {
    let l = lab().await;
    let req = Request::get("/")
        .header(header::HOST, "192.0.2.1:8080")
        .body(Body::empty())
        .unwrap();
    let (status, headers, body) = send(&l.app, "192.0.2.10", req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    for needle in [
        "Claremont Primary School",
        "Jenny James",
        "Wi-Fi Acceptable Use Policy",
        "name=\"code\"",
        "name=\"name\"",
        "name=\"organisation\"",
        "name=\"agree\"",
        &l.policy,
    ] {
        assert!(body.contains(needle), "missing {needle}");
    }
    assert!(!body.contains("<script"), "no JavaScript on the portal");
}

#[tokio::test]
async fn accept_records_consent_then_opens() {
    let l = lab().await;
    let (status, _, body) = send(&l.app, "192.0.2.10", post(form(&l, "abcd-efgh", "Ann+Smith", true))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("16:00"), "connected until the course's local end: {body}");
    assert!(
        l.fake
            .0
            .lock()
            .unwrap()
            .set
            .contains_key(&"02:00:00:00:00:10".parse().unwrap())
    );
    let sessions = l.store.sessions("2026-11-23T10:00:00Z".parse().unwrap()).unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        (sessions[0].name.as_str(), sessions[0].ip.as_str()),
        ("Ann Smith", "192.0.2.10")
    );
    assert_eq!(sessions[0].policy_hash, l.policy);
    // The course holds one device: a second one is refused politely and stays closed.
    let (status, _, body) = send(&l.app, "192.0.2.11", post(form(&l, "ABCDEFGH", "Bob", true))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body.contains("all taken"));
    assert!(
        !l.fake
            .0
            .lock()
            .unwrap()
            .set
            .contains_key(&"02:00:00:00:00:11".parse().unwrap())
    );
}

#[tokio::test]
async fn form_problems_reshow_the_form_and_open_nothing() {
    let l = lab().await;
    let cases = [
        (form(&l, "ABCDEFGH", "Ann", false), "tick the box"),
        (form(&l, "ABCDEFGH", "", true), "enter your name"),
        (form(&l, "ZZZZZZZZ", "Ann", true), "starts at"),
        (form(&l, "", "Ann", true), "enter your course access code"),
        (
            "code=ABCDEFGH&name=Ann&agree=yes&policy=old".to_owned(),
            "policy has been updated",
        ),
        (form(&l, "ABCDEFGH", &"x".repeat(10_000), true), "too long"),
        (form(&l, "ABCDEFGH", "Ann%07", true), "cannot store"),
    ];
    for (body, expect) in cases {
        let (status, _, page) = send(&l.app, "192.0.2.10", post(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(page.contains(expect), "expected {expect:?}");
    }
    let (status, _, page) = send(&l.app, "192.0.2.10", post(form(&l, "ABCDEFGH", "%FF%FE", true))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("not valid text"));
    let (status, _, page) = send(&l.app, "192.0.2.10", post(vec![b'a'; MAX_BODY + 1])).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(page.contains("too much text"));
    let (status, _, _) = send(&l.app, "192.0.2.99", post(form(&l, "ABCDEFGH", "Ann", true))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "unknown device: retry");
    assert!(l.fake.0.lock().unwrap().set.is_empty());
    assert!(
        l.store
            .sessions("2026-11-23T10:00:00Z".parse().unwrap())
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn five_wrong_codes_lock_the_device_out() {
    let l = lab().await;
    for _ in 0..5 {
        let (status, _, page) = send(&l.app, "192.0.2.10", post(form(&l, "WRWRWRWR", "Ann", true))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            page.contains("isn&#x27;t right") || page.contains("isn't right"),
            "{page}"
        );
    }
    // Now even the right code is refused until the window passes.
    let (status, _, page) = send(&l.app, "192.0.2.10", post(form(&l, "ABCDEFGH", "Ann", true))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(page.contains("wait 10 minutes"), "{page}");
    assert!(l.fake.0.lock().unwrap().set.is_empty());
    // Another device is not affected.
    let (status, _, _) = send(&l.app, "192.0.2.11", post(form(&l, "ABCDEFGH", "Bob", true))).await;
    assert_eq!(status, StatusCode::OK);
}

/// Issue 11: each refusal is counted under its own reason, not a guess from the status code
/// (an empty code, a missing name and an unticked box all answer 422).
#[tokio::test]
async fn refusals_are_counted_by_their_own_reason() {
    let l = lab().await;
    for body in [
        form(&l, "", "Ann", true),
        form(&l, "ABCDEFGH", "", true),
        form(&l, "ABCDEFGH", "Ann", false),
        form(&l, "WRNGWRNG", "Ann", true),
    ] {
        let (status, _, _) = send(&l.app, "192.0.2.10", post(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let text = l.metrics.encode(&crate::access::gatekeeper::FirewallStatus::default());
    for reason in ["empty_code", "bad_name", "not_agreed", "wrong_code"] {
        let line = format!("aupgate_refusals_total{{reason=\"{reason}\"}} 1");
        assert!(text.lines().any(|l| l == line), "{line} missing in:\n{text}");
    }
    assert!(!text.contains("incomplete_form"), "{text}");
}

/// Issue 11: the words of every refusal come from the `refusals.txt` template (each reason has
/// its own, none falls through to the generic text), so IT support can reword them in the
/// override folder without a rebuild.
#[test]
fn every_refusal_has_words_in_the_template_and_an_override_rewords_them() {
    let reasons = [
        "unknown_device",
        "locked_out",
        "empty_code",
        "wrong_code",
        "policy_changed",
        "course_not_started",
        "course_ended",
        "bad_name",
        "bad_organisation",
        "not_agreed",
        "course_full",
        "revoked",
        "unavailable_neighbours",
        "unavailable_store",
        "unavailable_firewall",
        "form_too_large",
        "form_unreadable",
        "form_not_text",
    ];
    let env = crate::assets::templates(None).unwrap();
    let render = |env: &minijinja::Environment<'_>, reason: &str, part: &str| {
        env.get_template("refusals.txt")
            .unwrap()
            .render(minijinja::context! { reason, part, minutes => 3, starts_time => "09:00", starts_date => "Tuesday 24 November", problem => "Please enter your name." })
            .unwrap()
            .trim()
            .to_owned()
    };
    let generic = render(&env, "no such reason", "text");
    for reason in reasons {
        let text = render(&env, reason, "text");
        assert!(!text.is_empty() && text != generic, "{reason}: {text:?}");
    }
    assert_eq!(
        render(&env, "locked_out", "text"),
        "Too many incorrect access codes were entered on this device. Please wait 3 minutes before trying again, or ask at reception."
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("templates")).unwrap();
    std::fs::write(
        dir.path().join("templates/refusals.txt"),
        "{% if reason == 'wrong_code' %}Dieser Zugangscode stimmt nicht.{% else %}?{% endif %}",
    )
    .unwrap();
    let env = crate::assets::templates(Some(dir.path())).unwrap();
    assert_eq!(render(&env, "wrong_code", "text"), "Dieser Zugangscode stimmt nicht.");
}

/// Issue 12: the blank portal page is rendered once per policy and template version and then
/// served as the same bytes; a new policy or a reload of the templates is seen at once.
#[tokio::test]
async fn the_blank_page_is_rendered_once_per_policy_and_template_version() {
    let l = lab().await;
    let page = || async {
        let req = Request::get("/")
            .header(header::HOST, "192.0.2.1:8080")
            .body(Body::empty())
            .unwrap();
        let (status, headers, body) = send(&l.app, "192.0.2.10", req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        body
    };
    let first = page().await;
    let kept = l.state.prepared.blank.lock().unwrap().as_ref().unwrap().page.clone();
    assert_eq!(page().await, first);
    let again = l.state.prepared.blank.lock().unwrap().as_ref().unwrap().page.clone();
    assert_eq!(
        kept.as_ptr(),
        again.as_ptr(),
        "served from the same bytes, not rendered again"
    );
    // A reload brings a new policy: the next page shows it, with its version in the form.
    let new = Policy::new("# Wi-Fi rules\n\nBe kind online.".into());
    l.state.policy.set(new.clone());
    let after = page().await;
    assert!(
        after.contains("Be kind online.") && after.contains(&new.hash),
        "{after}"
    );
    // And new templates (an operator's override): seen at once too.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("templates")).unwrap();
    std::fs::write(
        dir.path().join("templates/terms.html"),
        "Overridden {{ policy_version }}",
    )
    .unwrap();
    l.state
        .pages
        .replace(crate::assets::templates(Some(dir.path())).unwrap());
    assert_eq!(page().await, format!("Overridden {}", new.hash));
}

/// The redirect and the blank page the served portal answers before its router (`app`'s quick
/// answer) are the router's own, and are given only where the router would give them: every
/// method, path and host here is sent to both, and the answers compared whole.
#[tokio::test]
async fn the_quick_answers_are_exactly_the_routers() {
    use axum::http::Method;
    let l = lab().await;
    let quick = app(l.state.clone()).quick.expect("the portal answers redirects quick");
    let mut answered = Vec::new();
    for method in [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::OPTIONS,
        Method::DELETE,
    ] {
        for path in [
            "/",
            "/?x=1",
            "/policy",
            "/api/captive",
            "/accept",
            "/generate_204",
            "/hotspot-detect.html",
            "/a/b?x=1",
            "//",
            "/policy/",
            "/ACCEPT",
        ] {
            for host in [
                Some("192.0.2.1:8080"),
                Some("example.com"),
                Some("captive.apple.com"),
                None,
            ] {
                let request = || {
                    let mut r = Request::builder().method(method.clone()).uri(path);
                    if let Some(h) = host {
                        r = r.header(header::HOST, h);
                    }
                    r.body(Body::empty()).unwrap()
                };
                let head = request();
                let Some(quick) = quick(head.method(), head.uri(), head.headers()) else {
                    continue;
                };
                let (q_status, q_headers, q_body) = {
                    let (parts, body) = quick.into_parts();
                    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
                };
                let (status, headers, body) = send(&l.app, "192.0.2.10", request()).await;
                let what = format!("{method} {path} Host {host:?}");
                assert_eq!(q_status, status, "{what}");
                assert!(
                    matches!(q_status, StatusCode::FOUND | StatusCode::OK),
                    "{what}: {q_status}"
                );
                assert_eq!(q_headers, headers, "{what}");
                assert_eq!(String::from_utf8_lossy(&q_body), body, "{what}");
                answered.push(what);
            }
        }
    }
    // What phones send while closed is answered quick: their captive checks, and pages of
    // other sites; the portal's own page, policy, API and accept never are.
    for expected in [
        "GET /generate_204 Host Some(\"captive.apple.com\")",
        "GET /hotspot-detect.html Host Some(\"captive.apple.com\")",
        "GET / Host Some(\"example.com\")",
        "HEAD / Host None",
        "GET / Host Some(\"192.0.2.1:8080\")",
        "GET /?x=1 Host Some(\"192.0.2.1:8080\")",
        "POST /a/b?x=1 Host Some(\"example.com\")",
    ] {
        assert!(answered.iter().any(|a| a == expected), "{expected} not answered quick");
    }
    for never in [
        "POST / Host",
        "GET /policy Host",
        "GET /api/captive Host",
        "POST /accept Host",
    ] {
        assert!(!answered.iter().any(|a| a.starts_with(never)), "{never} answered quick");
    }
    // Each counted as the router counts it (a page request under "portal", redirected or not).
    let text = l.metrics.encode(&crate::access::gatekeeper::FirewallStatus::default());
    let count = |kind: &str| -> usize {
        let prefix = format!("aupgate_portal_requests_total{{kind=\"{kind}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {kind} count in:\n{text}"))
    };
    let to_page = answered
        .iter()
        .filter(|a| a.split(' ').nth(1).is_some_and(|p| p == "/" || p.starts_with("/?")))
        .count();
    assert_eq!(count("portal"), 2 * to_page, "{text}");
    assert_eq!(count("redirect"), 2 * (answered.len() - to_page), "{text}");
}
